"""Does a Factur-X PDF show what its XML says? The invoice number and the grand total must be
on the page: a PDF whose picture and data disagree is not trusted blindly.

Only these two, and only as "printed somewhere": they are what a person checks first, every
layout prints them, and both compare without guessing labels (the number as written, spaces
ignored; the total in any common notation: ``1234.56``, ``1234,56``, ``1.234,56``,
``1,234.56``, ``1'234.56``). A PDF without a text layer (a scan with XML attached) cannot be
compared and is not held against the invoice: the result says so.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from typing import Any, Final

_SPACE_RE: Final = re.compile(r"\s+")


def amount_forms(value: Decimal) -> set[str]:
    """The ways a two-decimal amount is commonly printed, without spaces or sign."""
    plain = f"{abs(value):.2f}"
    whole, cents = plain.split(".")
    grouped = f"{int(whole):,}"
    return {
        plain,
        f"{whole},{cents}",
        f"{grouped}.{cents}",
        f"{grouped.replace(',', '.')},{cents}",
        f"{grouped.replace(',', chr(39))}.{cents}",
    }


def disagreements(raw: Mapping[str, Any], pages: list[str]) -> list[str]:
    """What the XML says that the PDF's text does not show; empty when both agree."""
    flat = _SPACE_RE.sub("", "".join(pages))
    found: list[str] = []
    number = _SPACE_RE.sub("", str(raw.get("invoice_number") or ""))
    if number and number not in flat:
        found.append(f"the PDF's text does not show the XML's invoice number {number}")
    grand = (raw.get("totals") or {}).get("grand")
    try:
        total = None if grand is None else Decimal(str(grand))
    except InvalidOperation:
        total = None
    if total is not None and total.is_finite() and not _shows(pages, amount_forms(total)):
        found.append(f"the PDF's text does not show the XML's grand total {grand}")
    return found


def _shows(pages: list[str], forms: set[str]) -> bool:
    """One of ``forms`` stands in the text as a whole number (not inside a longer one)."""
    alternatives = "|".join(re.escape(form) for form in sorted(forms, key=len, reverse=True))
    pattern = re.compile(rf"(?<![\d.,'])(?:{alternatives})(?![\d]|[.,']\d)")
    return any(pattern.search(page) for page in pages)
