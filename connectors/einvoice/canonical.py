"""The raw form (``raw``) as canonical fields and line items. Pure: no I/O.

* Values are exact: amounts are ``Decimal(text)`` as written, dates the ISO date, ids as
  written (IBAN/BIC/VAT ids in their validated compact form when they validate, else as
  written). ``vendor_label`` names the business term (``BT-112``), ``raw_text`` the text.
* ``document_type`` from the type code (UNTDID 1001): credit notes 81, 83, 261, 262, 296, 308,
  381, 396, 420, 458, 532 (and any UBL ``CreditNote``), every other code an invoice.
* ``total_amount`` is the grand total BT-112 and ``amount_due`` BT-115 (they differ after a
  prepayment); ``net_amount`` BT-109, ``tax_amount`` BT-110.
* The VAT breakdown becomes ``extra.vat.<category>.<rate>.taxable`` and ``….tax`` (numbers;
  the rate without trailing zeros, ``extra.vat.S.19.tax``, so CII's ``19.00`` and UBL's ``19``
  name the same extra);
  the specification id, type code, syntax, buyer reference, seller tax number and the other
  totals are extras too. Line items: BT-131 is ``net_amount`` (EN 16931 has no line gross, so
  ``total_amount`` stays None); unit code and base quantity go to the line's ``extra``.
* Placeholders docrelay's own UBL writer names (``raw["placeholders"]``) are left out.
* Confidence: 1.0 for an invoice that passed the checks (``raw["problems"]`` empty): the value
  is the document's own machine-readable statement, read without guessing, and its sums agree;
  None when it was passed on despite problems (``on_inconsistent = "trust"``).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date
from decimal import Decimal, InvalidOperation
from typing import Any, Final

from connectors.base import CanonicalResult, FieldValue, LineItem
from connectors.normalize import normalize_field

CREDIT_NOTE_CODES: Final = frozenset(
    {"81", "83", "261", "262", "296", "308", "381", "396", "420", "458", "532"}
)
CONFIDENCE: Final = 1.0

_AMOUNTS: Final = (
    ("total_amount", "grand", "BT-112"),
    ("net_amount", "net", "BT-109"),
    ("tax_amount", "tax", "BT-110"),
    ("amount_due", "due", "BT-115"),
)
_EXTRA_AMOUNTS: Final = (
    ("extra.line_total", "line_total", "BT-106"),
    ("extra.allowance_total", "allowance_total", "BT-107"),
    ("extra.charge_total", "charge_total", "BT-108"),
    ("extra.prepaid_amount", "prepaid", "BT-113"),
    ("extra.rounding_amount", "rounding", "BT-114"),
)
_HEAD_TEXTS: Final = (
    ("invoice_number", ("invoice_number",), "BT-1"),
    ("currency", ("currency",), "BT-5"),
)
"""Written before the dates and amounts, in ``DOCUMENT_FIELDS`` order."""
_TEXTS: Final = (
    ("supplier_name", ("seller", "name"), "BT-27"),
    ("supplier_vat_id", ("seller", "vat_id"), "BT-31"),
    ("supplier_iban", ("iban",), "BT-84"),
    ("supplier_bic", ("bic",), "BT-86"),
    ("customer_name", ("buyer", "name"), "BT-44"),
    ("customer_vat_id", ("buyer", "vat_id"), "BT-48"),
    ("order_number", ("order_number",), "BT-13"),
    ("payment_reference", ("payment_reference",), "BT-83"),
    ("payment_terms", ("payment_terms",), "BT-20"),
    ("extra.seller_tax_number", ("seller", "tax_number"), "BT-32"),
    ("extra.buyer_reference", ("buyer_reference",), "BT-10"),
    ("extra.specification", ("specification",), "BT-24"),
    ("extra.type_code", ("type_code",), "BT-3"),
    ("extra.syntax", ("syntax",), None),
)


def document_type(raw: Mapping[str, Any]) -> str:
    """``credit_note`` or ``invoice`` from the root and the type code (BT-3)."""
    if raw.get("root") == "CreditNote" or raw.get("type_code") in CREDIT_NOTE_CODES:
        return "credit_note"
    return "invoice"


def _decimal(text: Any) -> Decimal | None:
    if text is None:
        return None
    try:
        value = Decimal(str(text))
    except InvalidOperation:
        return None
    return value if value.is_finite() else None


def _date(text: Any) -> date | None:
    try:
        return None if text is None else date.fromisoformat(str(text))
    except ValueError:
        return None


def _dig(raw: Mapping[str, Any], path: tuple[str, ...]) -> Any:
    value: Any = raw
    for key in path:
        value = value.get(key) if isinstance(value, Mapping) else None
    return value


def to_canonical(raw: Mapping[str, Any]) -> CanonicalResult:
    """The canonical result of a raw e-invoice (see the module docstring)."""
    confidence = None if raw.get("problems") else CONFIDENCE
    dropped = set(raw.get("placeholders") or ())
    currency = raw.get("currency")
    totals = raw.get("totals") or {}
    fields: list[FieldValue] = [
        FieldValue(
            "document_type",
            document_type(raw),
            raw_text=raw.get("type_code"),
            confidence=confidence,
            vendor_label="BT-3",
        )
    ]

    def text(name: str, value: Any, label: str | None) -> None:
        if value is None:
            return
        field = normalize_field(name, str(value), confidence=confidence, vendor_label=label)
        fields.append(field)

    def day(name: str, key: str, label: str) -> None:
        parsed = _date(raw.get(key))
        if raw.get(key) is not None:
            fields.append(
                FieldValue(
                    name,
                    parsed.isoformat() if parsed else str(raw[key]),
                    raw_text=str(raw[key]),
                    value_date=parsed,
                    confidence=confidence,
                    vendor_label=label,
                )
            )

    def amount(name: str, value: Any, label: str) -> None:
        if value is None:
            return
        number = _decimal(value)
        fields.append(
            FieldValue(
                name,
                str(number) if number is not None else str(value),
                raw_text=str(value),
                value_number=number,
                currency=currency,
                confidence=confidence,
                vendor_label=label,
            )
        )

    for name, path, label in _HEAD_TEXTS:
        text(name, _dig(raw, path), label)
    day("issue_date", "issue_date", "BT-2")
    day("due_date", "due_date", "BT-9")
    for name, key, label in _AMOUNTS:
        amount(name, totals.get(key), label)
    for name, path, label in _TEXTS:
        text(name, _dig(raw, path), label)
    for name, key, label in _EXTRA_AMOUNTS:
        amount(name, totals.get(key), label)
    for group in raw.get("vat") or []:
        rate = _decimal(group.get("rate"))
        shown = "none" if rate is None else format(rate.normalize(), "f")
        where = f"extra.vat.{group.get('category') or 'unknown'}.{shown}"
        amount(f"{where}.taxable", group.get("taxable"), "BT-116")
        amount(f"{where}.tax", group.get("tax"), "BT-117")
    lines = [] if "line_items" in dropped else _lines(raw.get("lines") or [])
    for item in lines:
        if f"line_items.{item.line_no}.net_amount" in dropped:
            item.net_amount = None
    return CanonicalResult(fields=[f for f in fields if f.name not in dropped], line_items=lines)


def _lines(lines: list[Mapping[str, Any]]) -> list[LineItem]:
    items: list[LineItem] = []
    used: set[int] = set()
    for number, line in enumerate(lines, start=1):
        written = str(line.get("id") or "")
        line_no = int(written) if written.isdigit() and int(written) not in used else number
        used.add(line_no)
        item = LineItem(
            line_no=line_no,
            description=line.get("description"),
            quantity=_decimal(line.get("quantity")),
            unit_price=_decimal(line.get("unit_price")),
            net_amount=_decimal(line.get("net_amount")),
            tax_rate=_decimal(line.get("tax_rate")),
            item_code=line.get("item_code"),
        )
        for key in ("unit", "base_quantity"):
            if line.get(key) is not None:
                item.extra[key] = str(line[key])
        if written and written != str(line_no):
            item.extra["line_id"] = written
        items.append(item)
    return items
