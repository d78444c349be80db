"""Emulators that are wrong on purpose, so a test knows the right answer and what went wrong.

Every emulator's "AI engine" (``extraction.extract``) passes its result through ``apply``: with
``wrong_rate`` / ``miss_rate`` above 0 (or per field, ``field_wrong_rates`` /
``field_miss_rates``) a document field is **missed** (left out of the result) or **wrong** (a
plausible wrong value of the same kind: an amount a few per cent off, a date some days away, an
id or name with one character changed — printed text changed to match, box kept). Line items are
left alone.

The draw is fixed by ``(wrong_seed, the document's SHA-256, the field name)`` — not by the
order of requests — so a test or an accuracy report re-computes the outcome of every field of
every document with ``verdict`` and compares it with what came back. ``confidence`` gives the
confidence the engine reports for a field: right values lie in ``right_confidence``, wrong ones
in ``wrong_confidence`` (lower on average), so how confidence relates to being right is
measurable. (``wrong_rate``, not ``error_rate``: Gini's emulator has an ``error_rate`` of
uploads that end in ERROR.) Nothing here imports the rest of the kit; ``extraction`` and
``faults`` import it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Literal

from connectors.base import AMOUNT_FIELDS, DATE_FIELDS, FieldValue
from connectors.normalize import ID_VALIDATORS, normalize_field

if TYPE_CHECKING:
    from connectors.emulation.extraction import Extraction, FoundValue

Verdict = Literal["right", "wrong", "missed"]

SETTINGS: tuple[str, ...] = (
    "wrong_rate",
    "miss_rate",
    "field_wrong_rates",
    "field_miss_rates",
    "wrong_seed",
    "right_confidence",
    "wrong_confidence",
)
"""The ``WrongnessSettings`` field names (what ``POST /_emulator/faults`` may change)."""


def _rate_map(value: Any) -> dict[str, float]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ValueError("per-field rates must be a mapping of field name to rate")
    return {str(name): float(rate) for name, rate in value.items()}


def _range(value: Any, name: str) -> tuple[float, float]:
    low, high = (float(v) for v in value)
    if not 0 <= low <= high <= 1:
        raise ValueError(f"{name} must be two numbers with 0 <= low <= high <= 1")
    return low, high


@dataclass
class WrongnessSettings:
    """How often an emulator's engine is wrong or misses a field. Read on every extraction, so
    ``POST /_emulator/faults`` (or a test) may change them on a running emulator."""

    wrong_rate: float = 0.0
    """Share of document fields, 0-1, that come back with a wrong value."""
    miss_rate: float = 0.0
    """Share of document fields, 0-1, left out of the result."""
    field_wrong_rates: dict[str, float] = field(default_factory=dict)
    """Canonical field name → wrong rate, instead of ``wrong_rate`` for that field."""
    field_miss_rates: dict[str, float] = field(default_factory=dict)
    """Canonical field name → miss rate, instead of ``miss_rate`` for that field."""
    wrong_seed: int = 0
    """Seeds the draw (with the document's SHA-256 and the field name)."""
    right_confidence: tuple[float, float] = (0.8, 1.0)
    """Confidence of a right value, uniform in this range (when wrongness is on)."""
    wrong_confidence: tuple[float, float] = (0.4, 0.9)
    """Confidence of a wrong value, uniform in this range (when wrongness is on)."""

    def check_wrongness(self) -> None:
        """ValueError for impossible values; normalises mappings and ranges in place."""
        self.field_wrong_rates = _rate_map(self.field_wrong_rates)
        self.field_miss_rates = _rate_map(self.field_miss_rates)
        self.right_confidence = _range(self.right_confidence, "right_confidence")
        self.wrong_confidence = _range(self.wrong_confidence, "wrong_confidence")
        self.wrong_seed = int(self.wrong_seed)
        rates = [self.wrong_rate, self.miss_rate]
        rates += [*self.field_wrong_rates.values(), *self.field_miss_rates.values()]
        if not all(0 <= rate <= 1 for rate in rates):
            raise ValueError("wrong and miss rates must be between 0 and 1")
        if self.wrong_rate + self.miss_rate > 1:
            raise ValueError("wrong_rate and miss_rate together exceed 1")
        for name in set(self.field_wrong_rates) & set(self.field_miss_rates):
            if self.field_wrong_rates[name] + self.field_miss_rates[name] > 1:
                raise ValueError(f"the wrong and miss rates of {name} together exceed 1")

    @property
    def wrongness_on(self) -> bool:
        """Whether any field may be wrong or missed (confidences are only drawn then)."""
        per_field = [*self.field_wrong_rates.values(), *self.field_miss_rates.values()]
        return any([self.wrong_rate, self.miss_rate, *per_field])


def fingerprint(settings: WrongnessSettings) -> str:
    """The settings as a short string, for caches of readings that must not outlive a change."""
    if not settings.wrongness_on:
        return ""
    values = [getattr(settings, name) for name in SETTINGS]
    return "|" + hashlib.sha256(repr(values).encode()).hexdigest()[:16]


def rates_of(settings: WrongnessSettings, field_name: str) -> tuple[float, float]:
    """``(wrong rate, miss rate)`` of one field: its own if given, else the global ones. A
    field's own miss rate beside the global wrong rate may add up to more than 1: the miss rate
    wins and the wrong rate is what is left (``total_amount`` missed always: never wrong)."""
    miss = settings.field_miss_rates.get(field_name, settings.miss_rate)
    wrong = settings.field_wrong_rates.get(field_name, settings.wrong_rate)
    return min(wrong, 1 - miss), miss


def _unit(*parts: object) -> float:
    """A number in [0, 1) fixed by ``parts``."""
    digest = hashlib.sha256("|".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def verdict(settings: WrongnessSettings, document_hash: str, field_name: str) -> Verdict:
    """What the engine does with ``field_name`` of the document whose SHA-256 (hex) is
    ``document_hash``: ``missed`` with probability miss rate, ``wrong`` with probability wrong
    rate, else ``right``. Pure: the same arguments always give the same answer."""
    error, miss = rates_of(settings, field_name)
    draw = _unit("verdict", settings.wrong_seed, document_hash, field_name)
    if draw < miss:
        return "missed"
    if draw < miss + error:
        return "wrong"
    return "right"


def confidence(settings: WrongnessSettings, document_hash: str, field_name: str) -> float:
    """The confidence the engine gives the field: uniform in ``right_confidence`` or
    ``wrong_confidence`` by its ``verdict``, fixed by the same key."""
    low, high = (
        settings.wrong_confidence
        if verdict(settings, document_hash, field_name) == "wrong"
        else settings.right_confidence
    )
    draw = _unit("confidence", settings.wrong_seed, document_hash, field_name)
    return round(low + (high - low) * draw, 4)


# --------------------------------------------------------------------------- wrong values


_NUMBER_RE = re.compile(r"\d(?:[\d.,'\u00a0 ]*\d)?")
_DATE_FORMATS = (
    "%-d %b %Y", "%-d %B %Y", "%B %-d, %Y", "%b %-d, %Y", "%-d. %B %Y", "%-d.%-m.%Y",
    "%Y-%m-%d", "%d.%m.%Y", "%d/%m/%Y", "%m/%d/%Y", "%d-%m-%Y", "%d.%m.%y", "%d %B %Y",
    "%B %d, %Y", "%d %b %Y", "%b %d, %Y", "%d. %B %Y", "%B %d %Y", "%d %b. %Y",
)  # fmt: skip
_CURRENCIES = ("EUR", "USD", "CHF", "GBP")
_NAMES = frozenset({"supplier_name", "customer_name"})
ATTEMPTS = 40
"""Tries at a changed id that still has a valid shape (a VAT id, a BIC) before giving up."""


def _format_amount(amount: Decimal, printed: str) -> tuple[str, str | None]:
    """``amount`` written the way ``printed`` writes its number (separators), and the decimal
    separator used (``normalize_field``'s ``decimal``)."""
    numbers = list(_NUMBER_RE.finditer(printed))
    if not numbers:
        return format(amount, "f"), "."
    match = numbers[-1]
    number = match.group()
    decimal = None
    if len(number) > 3 and number[-3] in ".," and number[-2:].isdigit():
        decimal = number[-3]
    thousands = next((c for c in number if not c.isdigit() and c != decimal), None)
    whole, _, cents = format(abs(amount), ".2f").partition(".")
    if thousands:
        groups = []
        while len(whole) > 3:
            groups.insert(0, whole[-3:])
            whole = whole[:-3]
        whole = thousands.join([whole, *groups])
    text = f"{whole}{decimal}{cents}" if decimal else f"{whole}.{cents}"
    new = printed[: match.start()] + text + printed[match.end() :]
    if amount < 0 and "-" not in new:
        new = "-" + new
    return new, decimal or "."


def _change_char(text: str, draw: float, *, digits: bool) -> str:
    """``text`` with one letter or digit (picked by ``draw``) replaced by another of its kind;
    a digit when ``digits`` and there is one (ids keep their country code and shape)."""
    spots = [i for i, c in enumerate(text) if c.isascii() and c.isalnum()]
    if digits and any(text[i].isdigit() for i in spots):
        spots = [i for i in spots if text[i].isdigit()]
    if not spots:
        return text + "X"
    index = spots[int(draw * len(spots)) % len(spots)]
    char = text[index]
    step = 1 + int(draw * 997) % 8
    if char.isdigit():
        new = str((int(char) + step) % 10)
    else:
        base = "A" if char.isupper() else "a"
        new = chr(ord(base) + (ord(char) - ord(base) + step) % 26)
    return text[:index] + new + text[index + 1 :]


def _wrong_iban(compact: str, draw: float) -> str:
    """An IBAN of the same country and length with one BBAN digit changed, check digits fixed."""
    digits = [i for i in range(4, len(compact)) if compact[i].isdigit()]
    index = digits[int(draw * len(digits)) % len(digits)]
    digit = str((int(compact[index]) + 1 + int(draw * 97) % 8) % 10)
    bban = (compact[:index] + digit + compact[index + 1 :])[4:]
    numeric = "".join(str(int(c, 36)) for c in bban + compact[:2] + "00")
    check = 98 - int(numeric) % 97
    wrong = f"{compact[:2]}{check:02d}{bban}"
    return " ".join(wrong[i : i + 4] for i in range(0, len(wrong), 4))


def _wrong_swiss_uid(printed: str, draw: float) -> str:
    """A Swiss UID written like ``printed`` with one digit changed and its check digit fixed
    (any one changed digit breaks the mod-11 check); unchanged when no check digit exists."""
    spots = [i for i, c in enumerate(printed) if c.isdigit()][:9]
    if len(spots) < 9:
        return printed
    chars = list(printed)
    index = spots[int(draw * 8) % 8]
    chars[index] = str((int(chars[index]) + 1 + int(draw * 97) % 8) % 10)
    digits = [int(chars[i]) for i in spots[:8]]
    check = 11 - sum(d * w for d, w in zip(digits, (5, 4, 3, 2, 7, 6, 5, 4), strict=True)) % 11
    if check == 10:
        return printed  # no valid UID with these digits: the caller draws again
    chars[spots[8]] = str(check % 11)
    return "".join(chars)


def wrong_value(found: FoundValue, key: str) -> FieldValue | None:
    """A canonical value for ``found`` that is wrong but of the same kind (it parses as the
    field's kind), with the printed text it would have in ``raw_text``; None when none could be
    made in ``ATTEMPTS`` tries. Deterministic by ``key``."""
    old = found.canonical
    name = found.name
    currency = old.currency if old else None
    for attempt in range(ATTEMPTS):
        draw = _unit("value", key, attempt)
        sign = 1 if draw < 0.5 else -1
        decimal: str | None = None
        if name in AMOUNT_FIELDS and old is not None and old.value_number is not None:
            factor = Decimal(1 + int(draw * 7)) / 100 * sign
            amount = (old.value_number + abs(old.value_number) * factor).quantize(Decimal("0.01"))
            if amount == old.value_number:
                amount += Decimal("1.00")
            text, decimal = _format_amount(amount, found.text)
        elif name in DATE_FIELDS and old is not None and old.value_date is not None:
            shifted = old.value_date + timedelta(days=(1 + int(draw * 20)) * sign)
            text = _shift_date_text(found.text, old.value_date, shifted)
        elif name == "supplier_iban" and found.value:
            text = _wrong_iban(found.value, draw)
        elif name.endswith("_vat_id") and found.text.upper().startswith("CHE"):
            text = _wrong_swiss_uid(found.text, draw)
        elif name == "currency" and found.value:
            others = [c for c in _CURRENCIES if c != found.value]
            text = others[int(draw * len(others))]
        elif name == "document_type":
            text = "Credit note" if found.value == "invoice" else "Invoice"
        else:
            text = _change_char(found.text, draw, digits=name not in _NAMES)
        again = normalize_field(
            name,
            text,
            page=found.page,
            vendor_label=found.label,
            currency=currency,
            decimal=decimal,
        )
        if _parsed(again, text) and _value(again) != found.value:
            return again
    return None


def _shift_date_text(printed: str, old: date, new: date) -> str:
    """``printed`` with the date written the same way but ``new``; ISO when the way is unknown."""
    for fmt in _DATE_FORMATS:
        written = old.strftime(fmt)
        if written in printed:
            return printed.replace(written, new.strftime(fmt), 1)
    return new.isoformat()


def _parsed(value: FieldValue, text: str) -> bool:
    """Whether ``text`` parses as its field's kind (ids: pass their validator)."""
    if value.name in AMOUNT_FIELDS:
        return value.value_number is not None
    if value.name in DATE_FIELDS:
        return value.value_date is not None
    check = ID_VALIDATORS.get(value.name)
    if check is not None:
        return check(text) is not None
    return value.value_text is not None


def _value(value: FieldValue) -> str | None:
    """The normalised form as ``FoundValue.value`` holds it."""
    if value.value_number is not None:
        return format(value.value_number, "f")
    if value.value_date is not None:
        return value.value_date.isoformat()
    return value.value_text


def apply(read: Extraction, settings: WrongnessSettings, document_hash: str) -> None:
    """Make ``read``'s document fields wrong or missed as ``verdict`` says, and give each its
    ``confidence`` (only when wrongness is on: otherwise ``read`` stays as it is)."""
    if not settings.wrongness_on:
        return
    for name in list(read.fields):
        outcome = verdict(settings, document_hash, name)
        found = read.fields[name]
        if outcome == "missed":
            del read.fields[name]
            continue
        if outcome == "wrong":
            wrong = wrong_value(found, f"{settings.wrong_seed}|{document_hash}|{name}")
            if wrong is None:  # nothing plausible to say instead (not seen in practice)
                del read.fields[name]
                continue
            found.text, found.value, found.canonical = wrong.raw_text or "", _value(wrong), wrong
        found.confidence = confidence(settings, document_hash, name)
        if found.canonical is not None:
            found.canonical = dataclasses.replace(found.canonical, confidence=found.confidence)
