"""The rule-based finder's raw result (``rules.find_fields``) as canonical values. Pure.

Shared by the ``local`` vendor (whose mapping this is) and the emulators' extraction engine, so
both read a document the same way. ``vendor_label`` is the label text as printed (None for
inferred values such as a letterhead supplier name), ``raw_text`` the value as printed; the
caller decides the confidence (the rules have no calibrated probability to offer).
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from connectors.base import CanonicalResult, FieldValue, LineItem
from connectors.normalize import normalize_currency, normalize_field, normalize_line_item


def to_canonical(raw: Mapping[str, Any], *, confidence: float | None = None) -> CanonicalResult:
    """The canonical result for a raw ``find_fields`` result; every value gets ``confidence``."""
    decimal = raw.get("decimal_separator")
    entries: list[Mapping[str, Any]] = list(raw.get("fields") or [])
    currency = next(
        (normalize_currency(e.get("raw")) for e in entries if e.get("name") == "currency"), None
    )

    def field(entry: Mapping[str, Any]) -> FieldValue:
        return normalize_field(
            str(entry["name"]),
            entry.get("raw"),
            page=entry.get("page"),
            vendor_label=entry.get("label"),
            confidence=confidence,
            currency=currency,
            decimal=decimal,
        )

    fields = [field(e) for e in entries if e.get("name") != "tax_amount"]
    taxes = [field(e) for e in entries if e.get("name") == "tax_amount"]
    if taxes:
        by_name = {f.name: f for f in fields}
        tax = _combine_taxes(taxes, by_name.get("net_amount"), by_name.get("total_amount"))
        position = next((i for i, f in enumerate(fields) if f.name not in _BEFORE_TAX), len(fields))
        fields.insert(position, tax)

    items = [
        normalize_line_item(int(item.get("line_no", number)), _item_texts(item), decimal=decimal)
        for number, item in enumerate(raw.get("line_items") or [], start=1)
    ]
    _mark_net_lines(items, next((f for f in fields if f.name == "net_amount"), None))
    return CanonicalResult(fields=fields, line_items=items)


_BEFORE_TAX = frozenset(
    {"document_type", "invoice_number", "issue_date", "due_date", "currency", "total_amount",
     "net_amount"}
)  # fmt: skip
_ITEM_KEYS = ("description", "quantity", "unit_price", "tax_rate", "total_amount", "item_code")


def _item_texts(item: Mapping[str, Any]) -> dict[str, str | None]:
    texts: dict[str, str | None] = {key: item.get(key) for key in _ITEM_KEYS}
    if item.get("unit"):
        texts["unit"] = str(item["unit"])
    return texts


def _combine_taxes(
    taxes: list[FieldValue], net: FieldValue | None, total: FieldValue | None
) -> FieldValue:
    """One tax_amount from the per-rate tax lines: their sum, unless the totals say otherwise.

    When net + sum does not equal the total but net + one of the lines does, that line is the
    tax total (a repeated or summary line was picked up too).
    """
    if len(taxes) == 1:
        return taxes[0]
    numbers = [t.value_number for t in taxes]
    first = taxes[0]
    combined = FieldValue(
        name="tax_amount",
        value_text=" + ".join(t.value_text or "" for t in taxes),
        raw_text=" + ".join(t.raw_text or "" for t in taxes),
        currency=first.currency,
        confidence=first.confidence,
        page=first.page,
        vendor_label=" + ".join(t.vendor_label or "" for t in taxes),
    )
    if any(n is None for n in numbers):
        return combined
    amounts = [n for n in numbers if n is not None]
    value: Decimal = sum(amounts, Decimal(0))
    if net and total and net.value_number is not None and total.value_number is not None:
        expected = total.value_number - net.value_number
        if value != expected and expected in amounts:
            chosen = taxes[amounts.index(expected)]
            return chosen
    combined.value_number = value
    combined.value_text = str(value)
    return combined


def _mark_net_lines(items: list[LineItem], net: FieldValue | None) -> None:
    """Line amounts that add up to the document's net amount are net amounts: say so."""
    if not items or net is None or net.value_number is None:
        return
    amounts = [item.total_amount for item in items]
    if any(a is None for a in amounts):
        return
    if sum((a for a in amounts if a is not None), Decimal(0)) == net.value_number:
        for item in items:
            item.net_amount = item.total_amount
