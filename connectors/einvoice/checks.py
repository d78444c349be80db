"""What in an e-invoice does not add up, as sentences naming the EN 16931 rule.

A subset of EN 16931's business rules, the ones that decide whether the numbers we hand on can
be trusted: the mandatory fields we map (BR-02 number, BR-03 issue date, BR-05 currency, BR-06
seller name), and the sums (BR-CO-10 lines = BT-106, BR-CO-13 BT-109 = BT-106 - BT-107 + BT-108,
BR-CO-14 VAT breakdown = BT-110, BR-CO-15 BT-109 + BT-110 = BT-112, BR-CO-16 BT-112 - BT-113 +
BT-114 = BT-115, and each VAT category's tax = taxable x rate to the cent, BR-CO-17). All
arithmetic in Decimal, exactly as written; an amount that is not a number is a problem too.
This is not a validator (no code lists, no Schematron): a receiver that needs one runs the
KoSIT validator; we only refuse to pass on numbers that contradict each other.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any, Final

CENT: Final = Decimal("0.01")
TOLERANCE: Final = Decimal("0.01")
"""BR-CO-17 allows the per-category rounding; we allow one cent on it, nothing elsewhere."""

MANDATORY: Final = (
    ("invoice_number", "BR-02 invoice number (BT-1)"),
    ("issue_date", "BR-03 issue date (BT-2)"),
    ("currency", "BR-05 invoice currency (BT-5)"),
)


def number(text: Any) -> Decimal | None:
    """An amount as written (``198.00``, ``-5``), None when absent; ``ValueError`` when not a
    number."""
    if text is None:
        return None
    try:
        value = Decimal(str(text).strip())
    except InvalidOperation:
        raise ValueError(f"{text!r} is not a number") from None
    if not value.is_finite():
        raise ValueError(f"{text!r} is not a number")
    return value


def problems(raw: Mapping[str, Any]) -> list[str]:
    """Every problem found, in a fixed order; empty when the invoice is consistent."""
    found = [f"missing {what}" for key, what in MANDATORY if not raw.get(key)]
    if not (raw.get("seller") or {}).get("name"):
        found.append("missing BR-06 seller name (BT-27)")
    try:
        found += _sums(raw)
    except ValueError as exc:
        found.append(f"an amount is not a number: {exc}")
    return found


def _sums(raw: Mapping[str, Any]) -> list[str]:
    found: list[str] = []
    totals = raw.get("totals") or {}
    line_total = number(totals.get("line_total"))
    allowances = number(totals.get("allowance_total")) or Decimal(0)
    charges = number(totals.get("charge_total")) or Decimal(0)
    net = number(totals.get("net"))
    tax = number(totals.get("tax"))
    grand = number(totals.get("grand"))
    prepaid = number(totals.get("prepaid")) or Decimal(0)
    rounding = number(totals.get("rounding")) or Decimal(0)
    due = number(totals.get("due"))

    lines = [number(line.get("net_amount")) for line in raw.get("lines") or []]
    if grand is None:
        found.append("missing BR-14 invoice total with VAT (BT-112)")
    if due is None:
        found.append("missing BR-15 amount due for payment (BT-115)")
    if lines and None not in lines and line_total is not None:
        line_sum = sum((n for n in lines if n is not None), Decimal(0))
        if line_sum != line_total:
            found.append(
                f"BR-CO-10: the lines' net amounts add up to {line_sum}, "
                f"not the sum of line net amounts (BT-106) {line_total}"
            )
    if line_total is not None and net is not None and line_total - allowances + charges != net:
        found.append(
            f"BR-CO-13: BT-106 {line_total} - allowances {allowances} + charges {charges} "
            f"= {line_total - allowances + charges}, not the total without VAT (BT-109) {net}"
        )
    if net is not None and grand is not None and net + (tax or 0) != grand:
        found.append(
            f"BR-CO-15: total without VAT (BT-109) {net} + VAT (BT-110) {tax or 0} "
            f"= {net + (tax or 0)}, not the total with VAT (BT-112) {grand}"
        )
    if grand is not None and due is not None and grand - prepaid + rounding != due:
        found.append(
            f"BR-CO-16: total with VAT (BT-112) {grand} - prepaid (BT-113) {prepaid} + "
            f"rounding (BT-114) {rounding} = {grand - prepaid + rounding}, "
            f"not the amount due (BT-115) {due}"
        )
    found += _breakdown(raw.get("vat") or [], tax)
    return found


def _breakdown(groups: list[Mapping[str, Any]], tax: Decimal | None) -> list[str]:
    found: list[str] = []
    taxes: list[Decimal] = []
    for group in groups:
        taxable, amount = number(group.get("taxable")), number(group.get("tax"))
        rate = number(group.get("rate"))
        where = f"VAT category {group.get('category') or '?'} {rate if rate is not None else ''}%"
        if taxable is None or amount is None:
            found.append(f"BR-45/BR-46: {where} lacks its taxable or tax amount")
            continue
        taxes.append(amount)
        if rate is not None:
            expected = (taxable * rate / 100).quantize(CENT, rounding=ROUND_HALF_UP)
            if abs(expected - amount) > TOLERANCE:
                found.append(
                    f"BR-CO-17: {where}: {taxable} x {rate} % = {expected}, not its VAT {amount}"
                )
    if groups and tax is not None and len(taxes) == len(groups) and sum(taxes) != tax:
        found.append(
            f"BR-CO-14: the VAT breakdown adds up to {sum(taxes)}, not the VAT total (BT-110) {tax}"
        )
    return found
