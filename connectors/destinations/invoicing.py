"""What the ERP destinations (Tryton, Odoo) share: an invoice's values read from a payload, VAT
ids, line prices, the rate a document's amounts imply, and the choice of the ERP's tax for a
rate — so both book the same document the same way and say the same thing when they cannot.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Mapping
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation
from typing import Any

from connectors.base import ExportPayload, LineItem
from connectors.destinations.records import typed_value
from connectors.errors import TerminalError

PRICE_DIGITS = Decimal("0.0001")
AMOUNT_FIELDS = ("total_amount", "net_amount", "tax_amount", "amount_due")
_VAT_JUNK = re.compile(r"[\s.\-/]")


def text(payload: ExportPayload, name: str) -> str | None:
    """A field's text, stripped; None when missing or blank."""
    value = payload.result.get(name)
    if value is None or value.value_text is None:
        return None
    return value.value_text.strip() or None


def number(payload: ExportPayload, name: str) -> Decimal | None:
    value = payload.result.get(name)
    return None if value is None else value.value_number


def typed(payload: ExportPayload, name: str) -> Any:
    """A field's value as its type (Decimal, date, str); None when missing."""
    value = payload.result.get(name)
    return None if value is None else typed_value(value)


def currency_code(payload: ExportPayload) -> str | None:
    """The document's currency, else the one its amounts carry, upper case."""
    code = text(payload, "currency")
    if code:
        return code.upper()
    for name in AMOUNT_FIELDS:
        value = payload.result.get(name)
        if value is not None and value.currency:
            return value.currency.upper()
    return None


def compact_vat(value: str | None) -> str | None:
    """A VAT id as ERPs keep it: no separators, upper case."""
    if value is None:
        return None
    compact = _VAT_JUNK.sub("", value).upper()
    return compact or None


def line_price(item: LineItem, quantity: Decimal) -> Decimal | None:
    """The unit price without tax: the item's own, else its net amount, else its total less
    its tax rate, per unit; None when the item has no amount at all."""
    if item.unit_price is not None:
        price = item.unit_price
    elif item.net_amount is not None:
        price = item.net_amount / quantity
    elif item.total_amount is not None:
        rate = item.tax_rate or Decimal(0)
        price = item.total_amount / (1 + rate / 100) / quantity
    else:
        return None
    return Decimal(price).quantize(PRICE_DIGITS, ROUND_HALF_EVEN)


def implied_rate(
    net: Decimal, tax: Decimal | None, total: Decimal | None, lines: int = 1
) -> Decimal | None:
    """The VAT rate in percent (one decimal at most) that turns ``net`` into the document's
    tax (or total), when one does to within a cent per line (each may have been rounded);
    None when the amounts imply none."""
    if not net:
        return None
    if tax is None:
        if total is None:
            return None
        tax = total - net
    rate = (tax / net * 100).quantize(Decimal("0.1"), ROUND_HALF_EVEN)
    if rate < 0 or abs(net * rate / 100 - tax) > Decimal("0.01") * max(2, lines):
        return None
    return rate.normalize()


def rate_key(value: str | float | Decimal) -> Decimal:
    """A rate in percent as a dictionary key: ``19``, ``19.0`` and ``19.00`` are one rate."""
    return Decimal(str(value)).normalize()


def check_tax_rates(value: dict[str, str]) -> dict[str, str]:
    """The ``taxes`` setting (rate in percent → the ERP's tax name): every key a rate."""
    for rate in value:
        try:
            parsed = Decimal(rate)
        except InvalidOperation:
            raise ValueError(f"{rate!r} is not a rate in percent (19, 7.5)") from None
        if not parsed.is_finite() or parsed < 0:
            raise ValueError(f"{rate!r} is not a rate in percent (19, 7.5)")
    return value


Tax = tuple[int, str, Decimal | None]
"""One of the ERP's taxes: id, name, rate in percent (None for a tax that is not a rate)."""


def choose_tax(
    rate: Decimal,
    names: Mapping[str, str],
    read: Callable[[bool], list[Tax]],
    *,
    where: str,
    kind: str,
) -> int | None:
    """The ERP's tax for ``rate``: the one ``names`` (the ``taxes`` setting) gives for it, else
    the one tax of that rate; None for 0 % without a tax. ``read(fresh)`` lists the taxes,
    from a cache first and read again before giving up. None or several is a refusal that
    says how to fix it (``kind``: "supplier", "purchase")."""
    rate = rate_key(rate)
    mapped = {rate_key(r): name for r, name in names.items()}.get(rate)
    for fresh in (False, True):
        taxes = read(fresh)
        if mapped is not None:
            named = [tax_id for tax_id, name, _ in taxes if name == mapped]
            if named:
                return named[0]
            continue
        fits = [(tax_id, name) for tax_id, name, of in taxes if of is not None and of == rate]
        if len(fits) == 1:
            return fits[0][0]
        if len(fits) > 1:
            listed = ", ".join(sorted(name for _, name in fits))
            raise TerminalError(
                f"{where} has several {kind} taxes of {rate:f} % ({listed}); name the one to "
                f'use in the destination\'s taxes ("{rate:f}" = "<tax name>")'
            )
    if mapped is not None:
        raise TerminalError(f"{where} has no {kind} tax named {mapped!r} ({rate:f} %)")
    if rate == 0:
        return None
    raise TerminalError(
        f"{where} has no percentage {kind} tax of {rate:f} %; create one or map the rate in "
        "the destination's taxes"
    )


class KnownIds:
    """Ids of an ERP's records that do not change while docrelay runs (currencies, journals,
    accounts by code): read once, then shared by the delivery threads. A miss is not kept,
    so a record created later is found."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._ids: dict[tuple[str, str], int] = {}

    def get(self, kind: str, name: str, read: Callable[[], int | None]) -> int | None:
        with self._lock:
            if (kind, name) in self._ids:
                return self._ids[(kind, name)]
        found = read()
        if found is not None:
            with self._lock:
                self._ids[(kind, name)] = found
        return found
