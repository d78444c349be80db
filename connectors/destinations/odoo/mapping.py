"""From an export to the values of an Odoo vendor bill: pure functions, no I/O.

The destination looks the ids up (partner, currency, account, taxes) and hands them in; what
is left here is which field goes where, and where our key and version live on the bill.
"""

from __future__ import annotations

import html
import re
from datetime import date
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any
from urllib.parse import quote, unquote

from connectors.base import ExportPayload, LineItem
from connectors.destinations.invoicing import line_price, number, text
from connectors.destinations.records import typed_value

KEY_MARK = "docrelay-key: "
VERSION_MARK = "docrelay-version: "
_MARKS = re.compile(r"docrelay-(key|version): ([^\s<]+)")


def narration(payload: ExportPayload, key: str) -> str:
    """The bill's ``narration`` (an HTML field people see under the lines): where it came
    from, and the key and version it was made under, one paragraph each."""
    origin = (
        f"Imported by docrelay from {payload.filename} (document {payload.document_id}, "
        f"{payload.vendor})."
    )
    marks = f"<p>{KEY_MARK}{_key_text(key)}</p><p>{VERSION_MARK}{payload.version}</p>"
    return f"<p>{html.escape(origin)}</p>{marks}"


def _key_text(key: str) -> str:
    """The key as one word of plain ASCII (percent-encoded): whatever a destination's name
    holds (spaces, ``<``, ``&``), HTML and ``parse_narration`` keep it as it is."""
    return quote(key, safe="-._~")


def key_search(key: str) -> str:
    """What an ``ilike`` on ``narration`` looks for: the key mark as HTML holds it (a ``%``
    of the encoding is a wildcard there: ``is_ours`` compares exactly)."""
    return f"{KEY_MARK}{_key_text(key)}"


def parse_narration(text: str | bool | None) -> dict[str, str]:
    """The key (decoded) and version marks ``narration`` wrote, the first of each."""
    found: dict[str, str] = {}
    for kind, value in _MARKS.findall(str(text or "")):
        found.setdefault(kind, unquote(value) if kind == "key" else value)
    if not found.get("version", "1").isdigit():
        found["version"] = "1"
    return found


def is_ours(text: str | bool | None, key: str) -> bool:
    """The narration carries exactly this key (not one it is a prefix of)."""
    return parse_narration(text).get("key") == key


def iso_date(payload: ExportPayload, name: str) -> str | bool:
    """A date field as Odoo takes it (``YYYY-MM-DD``), else False (empty)."""
    value = payload.result.get(name)
    typed = None if value is None else typed_value(value)
    return typed.isoformat() if isinstance(typed, date) else False


def bill_values(
    payload: ExportPayload, key: str, *, partner: int, currency: int | None, journal: int | None
) -> dict[str, Any]:
    """The bill's own fields (the lines come separately): ``ref`` = the invoice number,
    ``payment_reference`` = the payment reference, the dates, our marks in ``narration``."""
    values: dict[str, Any] = {
        "move_type": "in_invoice",
        "partner_id": partner,
        "ref": text(payload, "invoice_number") or False,
        "payment_reference": text(payload, "payment_reference") or False,
        "invoice_date": iso_date(payload, "issue_date"),
        "invoice_date_due": iso_date(payload, "due_date"),
        "narration": narration(payload, key),
    }
    if currency is not None:
        values["currency_id"] = currency
    if journal is not None:
        values["journal_id"] = journal
    return values


def item_line(item: LineItem, account: int | None, taxes: list[int]) -> dict[str, Any]:
    """One line item as a bill line; an item without any amount becomes a note line."""
    label = item.description or item.item_code or f"Line {item.line_no}"
    quantity = item.quantity if item.quantity not in (None, Decimal(0)) else Decimal(1)
    price = line_price(item, quantity)
    if price is None:
        return {"display_type": "line_note", "name": label}
    line: dict[str, Any] = {
        "name": label,
        "quantity": float(quantity),
        "price_unit": float(price),
        "tax_ids": [[6, 0, taxes]],
    }
    if account is not None:
        line["account_id"] = account
    return line


def fallback_amounts(payload: ExportPayload) -> tuple[Decimal, Decimal | None] | None:
    """For a document without line items: the net amount of its one line and its tax rate in
    percent (``tax / net``), or None when it has no amount at all."""
    net = number(payload, "net_amount")
    tax = number(payload, "tax_amount")
    total = number(payload, "total_amount")
    if net is None and total is not None:
        net = total - tax if tax is not None else total
    if net is None:
        return None
    rate = None
    if tax and net:
        rate = (tax / net * 100).quantize(Decimal("0.01"), ROUND_HALF_EVEN)
    return net, rate


def fallback_line(
    payload: ExportPayload, net: Decimal, account: int | None, taxes: list[int]
) -> dict[str, Any]:
    number_ = text(payload, "invoice_number")
    line: dict[str, Any] = {
        "name": f"Invoice {number_}" if number_ else payload.filename,
        "quantity": 1.0,
        "price_unit": float(net.quantize(Decimal("0.0001"), ROUND_HALF_EVEN)),
        "tax_ids": [[6, 0, taxes]],
    }
    if account is not None:
        line["account_id"] = account
    return line
