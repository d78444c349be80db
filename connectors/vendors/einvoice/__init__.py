"""The offline ``einvoice`` vendor: reads the structured invoice (CII, UBL, Factur-X) exactly.

Importing this package is cheap: lxml and pypdf load on first use.
"""

from connectors.vendors.einvoice.client import EInvoiceSettings, EInvoiceVendor

__all__ = ["EInvoiceSettings", "EInvoiceVendor"]
