"""Parsers that turn the text a vendor read into the canonical model's typed values.

Every vendor mapping goes through these so that ``1.234,56 €`` means the same thing whichever
vendor read it. None of them raises on bad input: they return None and the caller keeps the raw
text, because a half-read invoice is still worth exporting for a person to finish.

Numbers are always ``Decimal`` built from the digits as printed (never a float, never rounded).

Separator rule for ``1.234,56``-style numbers (used when the caller gives no ``decimal`` hint):

* both ``.`` and ``,`` present: the one that comes last is the decimal separator;
* one kind of separator, occurring more than once (``1.234.567``): thousands separators;
* one separator occurring once: it is a thousands separator when exactly three digits follow it
  and one to three digits (not starting with 0) precede it (``1.234`` and ``1,234`` are both
  1234); otherwise it is the decimal separator (``12,50``, ``0.125``, ``1234.5``);
* spaces and apostrophes (also the typographic one) only ever group thousands: ``1 234,56``,
  ``1'234.50``.

A caller that knows the document's convention passes ``decimal=","`` or ``decimal="."``; that
hint wins, and a number that does not fit it falls back to the rule above.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import date
from decimal import Decimal, InvalidOperation
from typing import Final

from stdnum import bic, iban
from stdnum.exceptions import ValidationError

from connectors.base import AMOUNT_FIELDS, DATE_FIELDS, DOCUMENT_FIELDS, BBox, FieldValue, LineItem

__all__ = [
    "find_currency",
    "normalize_currency",
    "normalize_document_type",
    "normalize_field",
    "normalize_line_item",
    "normalize_vat_id",
    "parse_amount",
    "parse_date",
    "parse_decimal",
    "parse_percent",
    "validate_bic",
    "validate_iban",
]

# --------------------------------------------------------------------------- currencies

_ISO_CURRENCIES: Final = frozenset(
    (
        "AED AUD BGN BRL CAD CHF CLP CNY COP CZK DKK EGP EUR GBP HKD HRK HUF IDR ILS INR ISK "
        "JPY KRW MAD MXN MYR NGN NOK NZD PHP PKR PLN QAR RON RSD RUB SAR SEK SGD THB TRY TWD "
        "UAH USD VND ZAR"
    ).split()
)
"""Codes we accept as currency codes. A closed list so that ``VAT``/``PCS`` are never currencies."""

_CURRENCY_SYMBOLS: Final[dict[str, str]] = {
    "€": "EUR",
    "EURO": "EUR",
    "EUROS": "EUR",
    "$": "USD",
    "US$": "USD",
    "USD$": "USD",
    "£": "GBP",
    "¥": "JPY",
    "円": "JPY",
    "元": "CNY",
    "RMB": "CNY",
    "₹": "INR",
    "₽": "RUB",
    "₺": "TRY",
    "₩": "KRW",
    "₪": "ILS",
    "ZŁ": "PLN",
    "KČ": "CZK",
    "FT": "HUF",
    "FR.": "CHF",
    "SFR.": "CHF",
    "SFR": "CHF",
    "C$": "CAD",
    "CA$": "CAD",
    "A$": "AUD",
    "AU$": "AUD",
    "NZ$": "NZD",
    "HK$": "HKD",
    "S$": "SGD",
    "R$": "BRL",
}
"""Symbols and words, upper-cased. ``¥`` is read as yen; ``kr`` is left alone (SEK/NOK/DKK)."""

_SYMBOL_ALT = "|".join(
    re.escape(s)
    for s in sorted(_CURRENCY_SYMBOLS, key=len, reverse=True)
    if not (s.isascii() and s.isalpha())
)
_CURRENCY_TOKEN_RE: Final = re.compile(
    rf"(?:{_SYMBOL_ALT})|(?<![A-Za-z])(?:[A-Za-z]{{3}}|euros?)(?![A-Za-z])", re.IGNORECASE
)


def json_number(value: object) -> float | None:
    """A number from parsed JSON as a float; None for anything else, booleans included.

    Exact types first: it runs for every coordinate of every box a vendor returns."""
    kind = type(value)
    if kind is float:
        return value  # type: ignore[return-value]
    if kind is int or (kind is not bool and isinstance(value, int | float)):
        return float(value)  # type: ignore[arg-type]
    return None


def _currency_of_token(token: str) -> str | None:
    upper = token.upper()
    if upper in _ISO_CURRENCIES:
        return upper
    return _CURRENCY_SYMBOLS.get(upper)


def find_currency(text: str) -> tuple[str, int, int] | None:
    """The first currency in ``text`` as (ISO code, start, end); for callers that strip it."""
    for match in _CURRENCY_TOKEN_RE.finditer(text):
        token = match.group(0)
        # Three-letter words count only when written in capitals ("EUR", not "per" or "Fee").
        if len(token) == 3 and token.isalpha() and not token.isupper():
            continue
        code = _currency_of_token(token)
        if code is not None:
            return code, match.start(), match.end()
    return None


def normalize_currency(text: str | None) -> str | None:
    """The ISO 4217 code for a symbol, code or word (``€``, ``Fr.``, ``eur``, ``1,00 USD``)."""
    if not text:
        return None
    stripped = text.strip()
    direct = _currency_of_token(stripped)
    if direct is not None:
        return direct
    found = find_currency(stripped)
    return found[0] if found else None


# --------------------------------------------------------------------------- numbers

_GROUP_CHARS: Final = "'\u2019\u00a0\u202f\u2009 "
"""Thousands-only separators: apostrophes (Swiss) and the spaces (French, ISO)."""
_MINUS: Final = "-\u2212\u2013"
"""Hyphen, the unicode minus and the en dash all negate."""
_SIGNED_RE: Final = re.compile(
    rf"(?P<open>\()?\s*(?P<lead>[{_MINUS}+])?\s*(?P<num>\d(?:[\d.,{_GROUP_CHARS}]*\d)?)"
    rf"\s*(?P<trail>[{_MINUS}])?\s*(?P<close>\))?"
)


def _split_groups(int_part: str, thousands: str) -> str | None:
    """Digits of an integer part whose groups (after the first) are exactly three digits."""
    groups = re.split(rf"[{re.escape(thousands)}{_GROUP_CHARS}]", int_part)
    if len(groups) > 1:
        if not (1 <= len(groups[0]) <= 3) or any(len(g) != 3 for g in groups[1:]):
            return None
    digits = "".join(groups)
    return digits if digits.isdigit() else None


def _guess_decimal(number: str) -> str | None:
    """Which of ``.``/``,`` is the decimal separator by the module rule, None for an integer."""
    dots, commas = number.count("."), number.count(",")
    if dots and commas:
        return "." if number.rfind(".") > number.rfind(",") else ","
    if dots + commas == 0:
        return None
    sep = "." if dots else ","
    other = "," if sep == "." else "."
    if dots + commas > 1:
        return other
    int_part, frac = number.split(sep)
    if (
        len(frac) == 3
        and 1 <= len(int_part) <= 3
        and int_part.isdigit()
        and not int_part.startswith("0")
    ):
        return other
    return sep


def _number_to_decimal(number: str, decimal: str | None) -> Decimal | None:
    """Digits with separators to a Decimal, trying the caller's hint before the module rule."""
    candidates = [decimal] if decimal in (".", ",") else []
    guessed = _guess_decimal(number)
    if guessed not in candidates:
        candidates.append(guessed)
    for dec in candidates:
        thousands = "," if dec == "." else "."
        if dec is not None and dec in number:
            int_part, _, frac = number.rpartition(dec)
            if not frac.isdigit():
                continue
        else:
            int_part, frac = number, ""
        if dec is not None and dec in int_part:
            continue
        digits = _split_groups(int_part, thousands)
        if digits is None:
            continue
        try:
            return Decimal(f"{digits}.{frac}" if frac else digits)
        except InvalidOperation:  # pragma: no cover - digits only by construction
            continue
    return None


def _parse_signed(text: str, decimal: str | None) -> Decimal | None:
    match = _SIGNED_RE.fullmatch(text.strip())
    if match is None or bool(match["open"]) != bool(match["close"]):
        return None
    if match["lead"] and match["trail"]:
        return None
    value = _number_to_decimal(match["num"], decimal)
    if value is None:
        return None
    negative = bool(match["open"]) or (match["lead"] or "+") in _MINUS or bool(match["trail"])
    return -value if negative else value


_TAGGED_AMOUNT_RE: Final = re.compile(r"(?P<num>[+-]?\d+(?:\.\d+)?):(?P<code>[A-Z]{3})")
"""``<plain decimal>:<ISO 4217 code>``, the machine form some vendors write amounts in: the
decimal separator is always a dot and there are no thousands separators."""


def parse_amount(
    text: str | None, *, decimal: str | None = None
) -> tuple[Decimal | None, str | None]:
    """An amount and its ISO currency from ``1.234,56 EUR``, ``€ 1.234,56``, ``(12.50)``,
    ``24.99:EUR`` …

    The currency may stand before or after the number; a sign may lead, trail or be written as
    accounting parentheses. Anything else in the text makes the amount None (the currency found,
    if any, is still returned) so that ``30 days`` is never read as an amount.
    """
    if not text:
        return None, None
    stripped = text.strip()
    if tagged := _TAGGED_AMOUNT_RE.fullmatch(stripped):  # Gini's ``24.99:EUR``
        return Decimal(tagged["num"]), tagged["code"]
    currency: str | None = None
    found = find_currency(stripped)
    if found is not None:
        currency, start, end = found
        stripped = f"{stripped[:start]} {stripped[end:]}"
        if find_currency(stripped) is not None:  # two currencies: not one amount
            return None, currency
    return _parse_signed(stripped, decimal), currency


def parse_decimal(text: str | None, *, decimal: str | None = None) -> Decimal | None:
    """A plain number (quantity, rate) with the same separator rules as amounts."""
    if not text:
        return None
    return _parse_signed(text, decimal)


_PERCENT_RE: Final = re.compile(r"(.*?)\s*(?:%|v\.\s?H\.|pct\.?|percent|prozent)?", re.IGNORECASE)


def parse_percent(text: str | None, *, decimal: str | None = None) -> Decimal | None:
    """A percentage as a number of percent: ``19 %``, ``19,0%``, ``7%`` → 19, 19.0, 7."""
    if not text:
        return None
    match = _PERCENT_RE.fullmatch(text.strip())
    return parse_decimal(match.group(1), decimal=decimal) if match else None


# --------------------------------------------------------------------------- dates

_MONTHS: Final[dict[str, int]] = {
    "january": 1, "januar": 1, "jänner": 1, "jaenner": 1, "jan": 1, "jän": 1,
    "february": 2, "februar": 2, "feber": 2, "feb": 2,
    "march": 3, "märz": 3, "maerz": 3, "mar": 3, "mär": 3, "mrz": 3,
    "april": 4, "apr": 4,
    "may": 5, "mai": 5,
    "june": 6, "juni": 6, "jun": 6,
    "july": 7, "juli": 7, "jul": 7,
    "august": 8, "aug": 8,
    "september": 9, "sept": 9, "sep": 9,
    "october": 10, "oktober": 10, "oct": 10, "okt": 10,
    "november": 11, "nov": 11,
    "december": 12, "dezember": 12, "dec": 12, "dez": 12,
    # French, Dutch, Italian, Spanish (where they differ from the above)
    "janvier": 1, "januari": 1, "gennaio": 1, "enero": 1,
    "février": 2, "fevrier": 2, "februari": 2, "febbraio": 2, "febrero": 2,
    "mars": 3, "maart": 3, "marzo": 3,
    "avril": 4, "aprile": 4, "abril": 4,
    "mei": 5, "maggio": 5, "mayo": 5,
    "juin": 6, "giugno": 6, "junio": 6,
    "juillet": 7, "luglio": 7, "julio": 7,
    "août": 8, "aout": 8, "augustus": 8, "agosto": 8,
    "septembre": 9, "settembre": 9, "septiembre": 9, "setiembre": 9,
    "octobre": 10, "ottobre": 10, "octubre": 10,
    "novembre": 11, "noviembre": 11,
    "décembre": 12, "decembre": 12, "dicembre": 12, "diciembre": 12,
}  # fmt: skip
_MONTH_ALT = "|".join(sorted(_MONTHS, key=len, reverse=True))
_MONTH = rf"(?P<month>{_MONTH_ALT})(?![a-zäöü])\.?"
_YEAR = r"(?P<year>\d{4}|\d{2})(?!\d)"

_DATE_PATTERNS: Final = (
    ("ymd", re.compile(r"(?<!\d)(?P<year>\d{4})([-/.])(?P<a>\d{1,2})\2(?P<b>\d{1,2})(?!\d)")),
    ("dot", re.compile(rf"(?<![\d.])(?P<a>\d{{1,2}})\.\s?(?P<b>\d{{1,2}})\.\s?{_YEAR}")),
    ("slash", re.compile(rf"(?<![\d/-])(?P<a>\d{{1,2}})([/-])(?P<b>\d{{1,2}})\2{_YEAR}")),
    (
        "dmy",
        re.compile(
            rf"(?<!\d)(?P<a>\d{{1,2}})(?:\.|st|nd|rd|th|er)?[\s-]*(?:de\s+)?{_MONTH}"
            rf"[\s,-]*(?:de\s+)?{_YEAR}",
            re.IGNORECASE,
        ),
    ),
    (
        "mdy",
        re.compile(
            rf"(?<![a-zäöü]){_MONTH}\s*(?P<a>\d{{1,2}})(?:st|nd|rd|th)?(?!\d),?\s+{_YEAR}",
            re.IGNORECASE,
        ),
    ),
)


def _year(text: str) -> int:
    """Two-digit years are 2000-2069 or 1970-1999: invoices are recent, birth dates are not ours."""
    year = int(text)
    if len(text) == 2:
        year += 2000 if year < 70 else 1900
    return year


def _make_date(year: int, month: int, day: int) -> date | None:
    try:
        return date(year, month, day)
    except ValueError:
        return None


def find_date(text: str, *, dayfirst: bool = True) -> tuple[date, int, int] | None:
    """The first date in ``text`` with its span, for callers that need the printed form."""
    best: tuple[date, int, int] | None = None
    for kind, pattern in _DATE_PATTERNS:
        for match in pattern.finditer(text):
            if best is not None and match.start() >= best[1]:
                break
            found = _date_from_match(kind, match, dayfirst)
            if found is not None:
                best = (found, match.start(), match.end())
                break
    return best


def _date_from_match(kind: str, match: re.Match[str], dayfirst: bool) -> date | None:
    year = _year(match["year"])
    if kind in ("dmy", "mdy"):
        return _make_date(year, _MONTHS[match["month"].lower()], int(match["a"]))
    a, b = int(match["a"]), int(match["b"])
    if kind == "ymd":
        return _make_date(year, a, b)
    if kind == "slash" and (b > 12 or (a <= 12 and not dayfirst)):
        a, b = b, a  # month first: 11/23/2026, or ambiguous with dayfirst=False
    return _make_date(year, b, a)


def parse_date(text: str | None, *, dayfirst: bool = True) -> date | None:
    """The first date in the text: ``23.11.2026``, ``2026-11-23``, ``23. Nov. 2026`` …

    Dotted dates are always day first (German). With slashes or dashes a part above 12 decides
    the order (``11/23/2026``); when both could be a month, ``dayfirst`` decides.
    """
    if not text:
        return None
    found = find_date(text, dayfirst=dayfirst)
    return found[0] if found else None


# --------------------------------------------------------------------------- bank and tax ids


def validate_iban(text: str | None) -> str | None:
    """The compact IBAN (``DE89370400440532013000``) if the text is one: python-stdnum checks
    the country's length and BBAN format and the mod-97 checksum."""
    if not text:
        return None
    try:
        return str(iban.validate(_IBAN_STRIP_RE.sub("", text.strip().upper())))
    except ValidationError:
        return None


_IBAN_STRIP_RE: Final = re.compile(r"^IBAN[:\s]*|[\s\u00a0]+")
"""The label some values carry, and spaces (no-break ones too)."""


def validate_bic(text: str | None) -> str | None:
    """The BIC in capitals if it has the SWIFT shape (8 or 11 characters, a real country code;
    python-stdnum)."""
    if not text:
        return None
    try:
        return str(bic.validate(re.sub(r"\s+", "", text.strip())))
    except ValidationError:
        return None


_VAT_PATTERNS: Final[dict[str, re.Pattern[str]]] = {
    country: re.compile(pattern)
    for country, pattern in {
        "AT": r"U\d{8}",
        "BE": r"[01]\d{9}",
        "BG": r"\d{9,10}",
        "CY": r"\d{8}[A-Z]",
        "CZ": r"\d{8,10}",
        "DE": r"[1-9]\d{8}",
        "DK": r"\d{8}",
        "EE": r"\d{9}",
        "EL": r"\d{9}",
        "ES": r"[A-Z0-9]\d{7}[A-Z0-9]",
        "FI": r"\d{8}",
        "FR": r"[A-HJ-NP-Z0-9]{2}\d{9}",
        "HR": r"\d{11}",
        "HU": r"\d{8}",
        "IE": r"\d{7}[A-W][A-IW]?|\d[A-Z+*]\d{5}[A-W]",
        "IT": r"\d{11}",
        "LT": r"\d{9}|\d{12}",
        "LU": r"\d{8}",
        "LV": r"\d{11}",
        "MT": r"\d{8}",
        "NL": r"\d{9}B\d{2}",
        "PL": r"\d{10}",
        "PT": r"\d{9}",
        "RO": r"[1-9]\d{1,9}",
        "SE": r"\d{10}01",
        "SI": r"\d{8}",
        "SK": r"\d{10}",
        "GB": r"\d{9}|\d{12}|GD[0-4]\d{2}|HA[5-9]\d{2}",
        "XI": r"\d{9}|\d{12}|GD[0-4]\d{2}|HA[5-9]\d{2}",
        "NO": r"\d{9}(?:MVA)?",
    }.items()
}
"""Per-country shape of VAT ids (the VIES formats, plus GB/XI and NO); no check digits.

Not python-stdnum's ``eu.vat`` (which the IBAN and BIC checks use): it also verifies check
digits, and the placeholder ids printed on sample and test invoices (``DE123456789``) fail
them. Reading what is printed, a shape is enough; a wrong check digit is the ERP's to report."""

_SWISS_VAT_RE: Final = re.compile(
    r"CHE[-\s.]?(\d{3})[.\s]?(\d{3})[.\s]?(\d{3})(?:\s*(MWST|TVA|IVA|VAT))?"
)


def _swiss_check_digit_ok(digits: str) -> bool:
    total = sum(int(d) * w for d, w in zip(digits[:8], (5, 4, 3, 2, 7, 6, 5, 4), strict=True))
    check = 11 - total % 11
    return check != 10 and check % 11 == int(digits[8])


def normalize_vat_id(text: str | None) -> str | None:
    """A VAT id in its compact form (``DE123456789``) if it has its country's shape.

    EU-style ids lose spaces, dots and dashes; ``GR`` becomes ``EL`` as in VIES. Swiss UIDs are
    check-digit verified and written the official way: ``CHE-123.456.789 MWST``.
    """
    if not text:
        return None
    upper = " ".join(text.strip().upper().split())
    swiss = _SWISS_VAT_RE.fullmatch(upper)
    if swiss is not None:
        digits = "".join(swiss.group(1, 2, 3))
        if not _swiss_check_digit_ok(digits):
            return None
        suffix = f" {swiss.group(4)}" if swiss.group(4) else ""
        return f"CHE-{swiss.group(1)}.{swiss.group(2)}.{swiss.group(3)}{suffix}"
    compact = re.sub(r"[\s.\-]", "", upper)
    country, rest = compact[:2], compact[2:]
    if country == "GR":
        country = "EL"
    pattern = _VAT_PATTERNS.get(country)
    if pattern is None or not pattern.fullmatch(rest):
        return None
    return country + rest


# --------------------------------------------------------------------------- fields

_DOCUMENT_TYPES: Final[dict[str, str]] = {
    "invoice": "invoice",
    "tax invoice": "invoice",
    "commercial invoice": "invoice",
    "bill": "invoice",
    "rechnung": "invoice",
    "faktura": "invoice",
    "facture": "invoice",
    "fattura": "invoice",
    "factura": "invoice",
    "factuur": "invoice",
    "credit note": "credit_note",
    "credit memo": "credit_note",
    "credit_note": "credit_note",
    "creditnote": "credit_note",
    "gutschrift": "credit_note",
    "avoir": "credit_note",
    "facture d'avoir": "credit_note",
    "note de crédit": "credit_note",
    "note de credit": "credit_note",
    "creditnota": "credit_note",
    "credit nota": "credit_note",
    "creditfactuur": "credit_note",
    "nota di credito": "credit_note",
    "nota de crédito": "credit_note",
    "nota de credito": "credit_note",
    "factura rectificativa": "credit_note",
    "rechnungskorrektur": "credit_note",
    "stornorechnung": "credit_note",
}


def normalize_document_type(text: str | None) -> str | None:
    """``invoice`` or ``credit_note`` from a title (English, German, French, Dutch, Italian,
    Spanish), else None."""
    if not text:
        return None
    key = " ".join(text.strip().lower().replace("-", " ").replace("\u2019", "'").split())
    return _DOCUMENT_TYPES.get(key)


def _clean(text: str | None) -> str | None:
    if text is None:
        return None
    cleaned = " ".join(text.split())
    return cleaned or None


ID_VALIDATORS: Final = {
    "supplier_iban": validate_iban,
    "supplier_bic": validate_bic,
    "supplier_vat_id": normalize_vat_id,
    "customer_vat_id": normalize_vat_id,
    "currency": normalize_currency,
    "document_type": normalize_document_type,
}
"""The fields whose value must have a valid shape, with the function that checks (and
normalises) it: None for a value that is no such id."""


def normalize_field(
    name: str,
    raw_text: str | None,
    *,
    confidence: float | None = None,
    page: int | None = None,
    bbox: BBox | None = None,
    vendor_label: str | None = None,
    currency: str | None = None,
    decimal: str | None = None,
    dayfirst: bool = True,
) -> FieldValue:
    """A FieldValue for a canonical (or ``extra.…``) field from the text a vendor read.

    The typed slot matching the field's kind is filled when the text parses: amounts get
    ``value_number`` and ``currency`` (``currency`` is the fallback when the text names none),
    dates ``value_date`` with the ISO form in ``value_text``, ids their validated compact form.
    When parsing fails ``value_text`` keeps the whitespace-collapsed raw text and the typed slot
    stays None, so nothing a vendor read is lost.
    """
    text = _clean(raw_text)
    value = FieldValue(
        name=name,
        value_text=text,
        raw_text=raw_text,
        confidence=confidence,
        page=page,
        bbox=bbox,
        vendor_label=vendor_label,
    )
    if text is None:
        return value
    if name in AMOUNT_FIELDS:
        number, found_currency = parse_amount(text, decimal=decimal)
        value.currency = found_currency or normalize_currency(currency)
        if number is not None:
            value.value_number = number
            value.value_text = str(number)
    elif name in DATE_FIELDS:
        parsed = parse_date(text, dayfirst=dayfirst)
        if parsed is not None:
            value.value_date = parsed
            value.value_text = parsed.isoformat()
    elif name in ID_VALIDATORS:
        normalized = ID_VALIDATORS[name](text)
        if normalized is not None:
            value.value_text = normalized
            if name == "currency":
                value.currency = normalized
    return value


_LINE_AMOUNTS: Final = frozenset({"unit_price", "net_amount", "total_amount"})
_LINE_TEXTS: Final = frozenset({"description", "item_code"})


def normalize_line_item(
    line_no: int, values: Mapping[str, str | None], *, decimal: str | None = None
) -> LineItem:
    """A LineItem from the texts a vendor read for one line, keyed by ``LINE_ITEM_FIELDS`` names.

    Values that do not parse, and keys the model does not know, are kept in ``extra`` as text.
    """
    item = LineItem(line_no=line_no)
    for key, raw in values.items():
        text = _clean(raw)
        if text is None:
            continue
        parsed: Decimal | None
        if key in _LINE_TEXTS:
            setattr(item, key, text)
            continue
        if key in _LINE_AMOUNTS:
            parsed = parse_amount(text, decimal=decimal)[0]
        elif key == "quantity":
            parsed = parse_decimal(text, decimal=decimal)
        elif key == "tax_rate":
            parsed = parse_percent(text, decimal=decimal)
        else:
            item.extra[key] = text
            continue
        if parsed is None:
            item.extra[key] = text
        else:
            setattr(item, key, parsed)
    return item


_KIND_OF_ID: Final = {
    "supplier_iban": "an IBAN (with a valid check sum)",
    "supplier_bic": "a BIC (8 or 11 characters)",
    "supplier_vat_id": "a VAT id (e.g. DE123456789)",
    "customer_vat_id": "a VAT id (e.g. DE123456789)",
    "currency": "an ISO 4217 currency code or sign",
    "document_type": "invoice or credit_note",
}


class FieldValueError(ValueError):
    """A value a person typed does not parse as the field's type."""


def parse_field_strictly(name: str, text: str) -> FieldValue:
    """A person's value for a field, normalised as vendor values are, or ``FieldValueError``
    saying what the field takes: a correction must never store ``abc`` as an amount."""
    if name not in DOCUMENT_FIELDS and not (name.startswith("extra.") and len(name) > 6):
        known = ", ".join(DOCUMENT_FIELDS)
        raise FieldValueError(f"{name!r} is not a field (one of {known}, or extra.<label>)")
    value = normalize_field(name, text)
    if value.value_text is None or name.startswith("extra."):
        return value
    if name in AMOUNT_FIELDS and value.value_number is None:
        raise FieldValueError(f"{name}: {text!r} is not an amount (e.g. 1234.50 or 1.234,50 EUR)")
    if name in DATE_FIELDS and value.value_date is None:
        raise FieldValueError(f"{name}: {text!r} is not a date (e.g. 2026-03-31 or 31.03.2026)")
    if name in ID_VALIDATORS and ID_VALIDATORS[name](value.value_text) is None:
        raise FieldValueError(f"{name}: {text!r} is not {_KIND_OF_ID[name]}")
    return value
