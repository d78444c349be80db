"""The shared normalisation helpers every vendor mapping relies on."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

import pytest

from connectors.normalize import (
    normalize_currency,
    normalize_document_type,
    normalize_field,
    normalize_line_item,
    normalize_vat_id,
    parse_amount,
    parse_date,
    parse_decimal,
    parse_percent,
    validate_bic,
    validate_iban,
)

D = Decimal


@pytest.mark.parametrize(
    ("text", "number", "currency"),
    [
        ("1.234,56 EUR", "1234.56", "EUR"),
        ("€ 1.234,56", "1234.56", "EUR"),
        ("€1.234,56", "1234.56", "EUR"),
        ("1,234.56", "1234.56", None),
        ("USD 99.00", "99.00", "USD"),
        ("$99", "99", "USD"),
        ("-12,50", "-12.50", None),
        ("12,50-", "-12.50", None),
        ("(12.50)", "-12.50", None),
        ("- 12,50 €", "-12.50", "EUR"),
        ("\u221212.50", "-12.50", None),
        ("1 234,56 €", "1234.56", "EUR"),
        ("1\u00a0234,56\u00a0€", "1234.56", "EUR"),
        ("CHF 1'234.50", "1234.50", "CHF"),
        ("Fr. 1\u2019234.50", "1234.50", "CHF"),
        ("1234", "1234", None),
        ("1.234", "1234", None),  # one dot, three digits: thousands
        ("1,234", "1234", None),
        ("12.345,6", "12345.6", None),
        ("1.234.567", "1234567", None),
        ("1,234,567.891", "1234567.891", None),
        ("0,125", "0.125", None),  # leading zero: a decimal, not a thousands group
        ("1234.5", "1234.5", None),
        ("£1,000.00", "1000.00", "GBP"),
        ("100 GBP", "100", "GBP"),
        ("5 Euro", "5", "EUR"),
        ("US$ 1,000,000.00", "1000000.00", "USD"),
        ("¥1,234", "1234", "JPY"),
        ("12,50 zł", "12.50", "PLN"),
        ("0.00", "0.00", None),
    ],
)
def test_parse_amount(text: str, number: str, currency: str | None) -> None:
    value, found = parse_amount(text)
    assert value == D(number)
    assert str(value) == number  # the printed precision is kept, nothing is quantized
    assert found == currency


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   ",
        "30 days",
        "EUR",
        "1.2.3",
        "12 50",
        "1,23,456",
        "abc",
        "EUR 5 USD",
        "(12.50",
        "-5-",
    ],
)
def test_parse_amount_rejects(text: str) -> None:
    assert parse_amount(text)[0] is None


@pytest.mark.parametrize(
    ("text", "decimal", "number"),
    [
        ("1,234", ",", "1.234"),  # the hint wins over the thousands rule
        ("1.234", ".", "1.234"),
        ("1.234", ",", "1234"),
        ("1,5", ",", "1.5"),
        ("1.5", ",", "1.5"),  # does not fit the hint: the module rule decides
        ("1.234,56", ".", "1234.56"),
    ],
)
def test_parse_amount_with_decimal_hint(text: str, decimal: str, number: str) -> None:
    assert parse_amount(text, decimal=decimal)[0] == D(number)


@pytest.mark.parametrize(
    ("text", "number"),
    [("3", "3"), ("2,5", "2.5"), ("0.25", "0.25"), ("1.000", "1000"), ("-1", "-1"), ("x", None)],
)
def test_parse_decimal(text: str, number: str | None) -> None:
    assert parse_decimal(text) == (D(number) if number else None)


@pytest.mark.parametrize(
    ("text", "number"),
    [
        ("19 %", "19"),
        ("19,0%", "19.0"),
        ("7%", "7"),
        ("19.00 %", "19.00"),
        ("5,5 %", "5.5"),
        ("16", "16"),
        ("x %", None),
        ("", None),
    ],
)
def test_parse_percent(text: str, number: str | None) -> None:
    assert parse_percent(text) == (D(number) if number else None)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("23.11.2026", date(2026, 11, 23)),
        ("23.11.26", date(2026, 11, 23)),
        ("1.2.2026", date(2026, 2, 1)),
        ("2026-11-23", date(2026, 11, 23)),
        ("2026/11/23", date(2026, 11, 23)),
        ("23/11/2026", date(2026, 11, 23)),
        ("11/23/2026", date(2026, 11, 23)),  # unambiguous: 23 cannot be a month
        ("23-11-2026", date(2026, 11, 23)),
        ("23 November 2026", date(2026, 11, 23)),
        ("November 23, 2026", date(2026, 11, 23)),
        ("Nov 23 2026", date(2026, 11, 23)),
        ("23. November 2026", date(2026, 11, 23)),
        ("23. Nov. 2026", date(2026, 11, 23)),
        ("23-Nov-2026", date(2026, 11, 23)),
        ("1st December 2026", date(2026, 12, 1)),
        ("3. März 2026", date(2026, 3, 3)),
        ("3. Maerz 2026", date(2026, 3, 3)),
        ("3. Mrz. 2026", date(2026, 3, 3)),
        ("15. Januar 2027", date(2027, 1, 15)),
        ("1. Okt. 2026", date(2026, 10, 1)),
        ("24. Dezember 2026", date(2026, 12, 24)),
        ("Berlin, den 5. Mai 2026", date(2026, 5, 5)),
        ("Date: 01.02.2026 (delivery 2026-03-04)", date(2026, 2, 1)),  # the first one
        ("31.12.99", date(1999, 12, 31)),
        ("31.02.2026", None),
        ("13/13/2026", None),
        ("no date here", None),
        ("RE-2026-001", None),
        ("", None),
    ],
)
def test_parse_date(text: str, expected: date | None) -> None:
    assert parse_date(text) == expected


@pytest.mark.parametrize(
    ("text", "dayfirst", "expected"),
    [
        ("05/06/2026", True, date(2026, 6, 5)),
        ("05/06/2026", False, date(2026, 5, 6)),
        ("13/06/2026", False, date(2026, 6, 13)),  # unambiguous beats the preference
        ("06/13/2026", True, date(2026, 6, 13)),
        ("05.06.2026", False, date(2026, 6, 5)),  # dots are always day first
    ],
)
def test_parse_date_ambiguous(text: str, dayfirst: bool, expected: date) -> None:
    assert parse_date(text, dayfirst=dayfirst) == expected


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("€", "EUR"),
        ("EUR", "EUR"),
        ("eur", "EUR"),
        ("Euro", "EUR"),
        ("$", "USD"),
        ("US$", "USD"),
        ("£", "GBP"),
        ("¥", "JPY"),
        ("CHF", "CHF"),
        ("Fr.", "CHF"),
        ("SFr.", "CHF"),
        ("1.234,56 EUR", "EUR"),
        ("zł", "PLN"),
        ("VAT", None),
        ("kr", None),
        ("", None),
        (None, None),
    ],
)
def test_normalize_currency(text: str | None, code: str | None) -> None:
    assert normalize_currency(text) == code


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("DE89 3704 0044 0532 0130 00", "DE89370400440532013000"),
        ("de89370400440532013000", "DE89370400440532013000"),
        ("IBAN: DE89 3704 0044 0532 0130 00", "DE89370400440532013000"),
        ("GB82 WEST 1234 5698 7654 32", "GB82WEST12345698765432"),
        ("AT61 1904 3002 3457 3201", "AT611904300234573201"),
        ("CH93 0076 2011 6238 5295 7", "CH9300762011623852957"),
        ("NL91 ABNA 0417 1643 00", "NL91ABNA0417164300"),
        ("FR14 2004 1010 0505 0001 3M02 606", "FR1420041010050500013M02606"),
        ("DE89 3704 0044 0532 0130 01", None),  # checksum
        ("DE88 3704 0044 0532 0130 00", None),  # check digits
        ("DE89 3704 0044 0532 0130", None),  # length for DE
        ("GB82 WEST 1234 5698 7654", None),
        ("XX00", None),
        ("", None),
    ],
)
def test_validate_iban(text: str, expected: str | None) -> None:
    assert validate_iban(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("COBADEFFXXX", "COBADEFFXXX"),
        ("deutdeff", "DEUTDEFF"),
        ("GENO DEF1 M04", "GENODEF1M04"),
        ("INVOICES", None),  # "IC" is not a country
        ("COBADEFFXX", None),  # 10 characters
        ("COBA1EFF", None),
        ("", None),
    ],
)
def test_validate_bic(text: str, expected: str | None) -> None:
    assert validate_bic(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("DE123456789", "DE123456789"),
        ("DE 123 456 789", "DE123456789"),
        ("de-123.456.789", "DE123456789"),
        ("ATU12345678", "ATU12345678"),
        ("AT U12345678", "ATU12345678"),
        ("GB123456789", "GB123456789"),
        ("GB 123 4567 89", "GB123456789"),
        ("NL123456789B01", "NL123456789B01"),
        ("FR12345678901", "FR12345678901"),
        ("IE1234567T", "IE1234567T"),
        ("GR123456789", "EL123456789"),
        ("CHE-116.281.710 MWST", "CHE-116.281.710 MWST"),
        ("CHE116281710MWST", "CHE-116.281.710 MWST"),
        ("che-116.281.710", "CHE-116.281.710"),
        ("CHE-116.281.711 MWST", None),  # Swiss check digit
        ("DE12345678", None),  # eight digits
        ("DE012345678", None),
        ("ATX12345678", None),
        ("US123456789", None),
        ("12/345/67890", None),  # a German Steuernummer is not a VAT id
        ("", None),
    ],
)
def test_normalize_vat_id(text: str, expected: str | None) -> None:
    assert normalize_vat_id(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Invoice", "invoice"),
        ("RECHNUNG", "invoice"),
        ("Tax Invoice", "invoice"),
        ("Credit Note", "credit_note"),
        ("Gutschrift", "credit_note"),
        ("Quote", None),
    ],
)
def test_normalize_document_type(text: str, expected: str | None) -> None:
    assert normalize_document_type(text) == expected


def test_normalize_field_amount() -> None:
    value = normalize_field("total_amount", " 1.190,00 € ", page=2, vendor_label="Total")
    assert value.value_number == D("1190.00")
    assert value.currency == "EUR"
    assert value.value_text == "1190.00"
    assert value.raw_text == " 1.190,00 € "
    assert (value.page, value.vendor_label, value.value_date) == (2, "Total", None)


def test_normalize_field_amount_uses_fallback_currency_and_hint() -> None:
    value = normalize_field("net_amount", "1,000", currency="€", decimal=",")
    assert value.value_number == D("1.000")
    assert value.currency == "EUR"


def test_normalize_field_date() -> None:
    value = normalize_field("due_date", "23. Nov. 2026", confidence=0.8)
    assert value.value_date == date(2026, 11, 23)
    assert value.value_text == "2026-11-23"
    assert value.confidence == 0.8


@pytest.mark.parametrize(
    ("name", "raw", "text"),
    [
        ("supplier_iban", "DE89 3704 0044 0532 0130 00", "DE89370400440532013000"),
        ("supplier_bic", "cobadeffxxx", "COBADEFFXXX"),
        ("supplier_vat_id", "DE 123 456 789", "DE123456789"),
        ("customer_vat_id", "ATU 12345678", "ATU12345678"),
        ("currency", "€", "EUR"),
        ("document_type", "RECHNUNG", "invoice"),
        ("supplier_name", "  Müller  &  Söhne\nGmbH ", "Müller & Söhne GmbH"),
        ("extra.Kostenstelle", " 4711 ", "4711"),
    ],
)
def test_normalize_field_text_kinds(name: str, raw: str, text: str) -> None:
    value = normalize_field(name, raw)
    assert value.value_text == text
    assert value.raw_text == raw
    assert value.value_number is None and value.value_date is None


@pytest.mark.parametrize(
    ("name", "raw"),
    [
        ("total_amount", "see attachment"),
        ("issue_date", "tomorrow"),
        ("supplier_iban", "DE89 3704 0044 0532 0130 01"),
        ("supplier_vat_id", "12/345/67890"),
        ("currency", "Gold"),
    ],
)
def test_normalize_field_keeps_text_when_parsing_fails(name: str, raw: str) -> None:
    value = normalize_field(name, f" {raw} ")
    assert value.value_text == raw
    assert value.value_number is None and value.value_date is None


def test_normalize_field_empty() -> None:
    value = normalize_field("invoice_number", "  ")
    assert value.value_text is None
    assert normalize_field("total_amount", None).value_number is None


def test_normalize_line_item() -> None:
    item = normalize_line_item(
        3,
        {
            "description": " Beratung\n vor Ort ",
            "quantity": "2,5",
            "unit_price": "120,00 €",
            "tax_rate": "19 %",
            "net_amount": "300,00",
            "total_amount": "357,00 €",
            "item_code": "A-100",
            "unit": "Std.",
        },
    )
    assert item.line_no == 3
    assert item.description == "Beratung vor Ort"
    assert (item.quantity, item.unit_price, item.tax_rate) == (D("2.5"), D("120.00"), D(19))
    assert (item.net_amount, item.total_amount) == (D("300.00"), D("357.00"))
    assert item.item_code == "A-100"
    assert item.extra == {"unit": "Std."}


def test_normalize_line_item_keeps_unparseable_values_as_extra() -> None:
    item = normalize_line_item(1, {"quantity": "some", "unit_price": None, "tax_rate": "frei"})
    assert item.quantity is None and item.unit_price is None and item.tax_rate is None
    assert item.extra == {"quantity": "some", "tax_rate": "frei"}


def test_normalize_line_item_decimal_hint() -> None:
    item = normalize_line_item(1, {"quantity": "1,500", "unit_price": "1.000"}, decimal=",")
    assert item.quantity == D("1.5")
    assert item.unit_price == D("1000")
