"""The common raw form both syntax readers produce: plain JSON, stored verbatim as the vendor's
raw result, so a stored extraction can be mapped again without the XML.

Every value is the element's text as written (amounts and quantities keep their digits, dates
are ISO ``YYYY-MM-DD``), or None/absent when the invoice does not carry it. Keys use the
EN 16931 business terms' meaning, so a CII and a UBL rendering of one invoice give equal dicts
(apart from ``syntax`` and ``specification`` wording)::

    {"engine": "docrelay-einvoice", "version": 1, "syntax": "cii" | "ubl",
     "container": "xml" | "pdf", "attachment": "factur-x.xml" | None,
     "specification": BT-24, "type_code": BT-3, "root": "Invoice" | "CreditNote" | ...,
     "invoice_number": BT-1, "issue_date": BT-2, "due_date": BT-9, "currency": BT-5,
     "buyer_reference": BT-10, "order_number": BT-13, "payment_reference": BT-83,
     "payment_terms": BT-20, "iban": BT-84, "bic": BT-86,
     "seller": {"name": BT-27, "vat_id": BT-31, "tax_number": BT-32},
     "buyer": {"name": BT-44, "vat_id": BT-48},
     "totals": {"line_total": BT-106, "allowance_total": BT-107, "charge_total": BT-108,
                "net": BT-109, "tax": BT-110, "grand": BT-112, "prepaid": BT-113,
                "rounding": BT-114, "due": BT-115},
     "vat": [{"category": BT-118, "rate": BT-119, "taxable": BT-116, "tax": BT-117}],
     "lines": [{"id": BT-126, "description": BT-153, "item_code": BT-155,
                "quantity": BT-129, "unit": BT-130, "unit_price": BT-146,
                "base_quantity": BT-149, "net_amount": BT-131, "tax_rate": BT-152}],
     "placeholders": [...] (only in docrelay's own UBL), "problems": [...]}

``problems`` is filled by the vendor (``checks.problems``) before the dict is stored.
"""

from __future__ import annotations

from typing import Any, Final

ENGINE: Final = "docrelay-einvoice"
VERSION: Final = 1


def clean(text: str | None) -> str | None:
    """Whitespace-collapsed text, None for nothing."""
    if text is None:
        return None
    cleaned = " ".join(text.split())
    return cleaned or None


def compact(values: dict[str, Any]) -> dict[str, Any]:
    """The dict without its None values (what the raw form stores)."""
    return {key: value for key, value in values.items() if value is not None}
