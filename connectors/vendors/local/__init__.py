"""The offline ``local`` vendor: text layer or OCR, then rule-based field finding.

Importing this package is cheap: pypdfium2, Pillow and the rule tables load on first use.
"""

from connectors.vendors.local.client import LocalSettings, LocalVendor

__all__ = ["LocalSettings", "LocalVendor"]
