"""Invoice documents with known contents, for end-to-end tests and the benchmark.

``random_spec`` makes a deterministic invoice from a seed; ``render_pdf`` lays it out as a PDF
with a text layer (English or German conventions, label wording and layout varied per spec so
the extractor's rules are exercised rather than matched to one template); ``expected_fields``
and ``expected_line_items`` say exactly what a correct extraction returns. The bad-input
builders make the documents the pipeline must reject: scans without a text layer, encrypted
and truncated PDFs.

Rendering uses fpdf2's core Helvetica (cp1252, no font embedding) so one page takes ~1-2 ms.
"""

from __future__ import annotations

import io
import random
from dataclasses import dataclass, field
from datetime import date, timedelta
from decimal import ROUND_HALF_UP, Decimal
from functools import cached_property
from pathlib import Path
from typing import Literal

from fpdf import FPDF

from connectors.base import LineItem

Lang = Literal["en", "de"]
Line = tuple[str, Decimal, Decimal, Decimal]
"""(description, quantity, unit price, tax rate in percent)."""

CENT = Decimal("0.01")


def _money(value: Decimal) -> Decimal:
    return value.quantize(CENT, rounding=ROUND_HALF_UP)


@dataclass
class InvoiceSpec:
    """What an invoice says; amounts are computed the way German invoices do (tax per rate)."""

    invoice_number: str
    issue_date: date
    due_date: date
    currency: str
    supplier_name: str
    supplier_vat_id: str
    supplier_iban: str
    """Compact form; rendered in groups of four."""
    supplier_bic: str
    customer_name: str
    order_number: str
    payment_reference: str
    lines: list[Line]
    payment_terms: str | None = None
    customer_vat_id: str | None = None
    item_codes: list[str] | None = None
    """One code per line when the layout has an item-code column."""
    document_type: str = "invoice"
    variant: int = 0
    """Seeds the layout choices (label wording, date and amount styles) in ``render_*``."""

    def line_total(self, index: int) -> Decimal:
        """A line's net amount, rounded to cents."""
        _, quantity, unit_price, _ = self.lines[index]
        return _money(quantity * unit_price)

    @property
    def net_amount(self) -> Decimal:
        return sum((self.line_total(i) for i in range(len(self.lines))), Decimal("0.00"))

    @property
    def tax_by_rate(self) -> dict[Decimal, Decimal]:
        """Tax per rate, computed on the rate's net sum (not per line) as § 14 UStG shows it."""
        nets: dict[Decimal, Decimal] = {}
        for index, (_, _, _, rate) in enumerate(self.lines):
            nets[rate] = nets.get(rate, Decimal("0.00")) + self.line_total(index)
        return {rate: _money(net * rate / 100) for rate, net in sorted(nets.items(), reverse=True)}

    @property
    def tax_amount(self) -> Decimal:
        return sum(self.tax_by_rate.values(), Decimal("0.00"))

    @property
    def total_amount(self) -> Decimal:
        return self.net_amount + self.tax_amount


# --------------------------------------------------------------------------- random specs

_SUPPLIERS = {
    "en": [
        "Acme Widgets Ltd",
        "Northwind Traders Ltd",
        "Blue Harbour Consulting LLP",
        "Crane & Fisher Supplies Ltd",
        "Orbital Print Services Inc.",
    ],
    "de": [
        "Müller & Söhne GmbH",
        "Weber Bürobedarf KG",
        "Schneider IT-Service GmbH",
        "Bäckerei Krüger e.K.",
        "Hoffmann Gebäudetechnik GmbH & Co. KG",
    ],
}
_CUSTOMERS = {
    "en": ["Globex Corporation", "Initech Ltd", "Umbrella Logistics Inc.", "Wayne Enterprises"],
    "de": ["Schulz Elektro GmbH", "Stadtwerke Neustadt", "Praxis Dr. Öztürk", "Lehmann & Co. OHG"],
}
_ITEMS = {
    "en": [
        "Consulting services",
        "Software licence (annual)",
        'Server rack 19" 42U',
        "Office chair ErgoPlus",
        "USB-C cable 2 m",
        "Paper A4 500 sheets",
        "Installation and setup",
        "Travel expenses",
        "Toner cartridge black",
        "Support hours",
    ],
    "de": [
        "Beratungsleistung",
        "Softwarelizenz (jährlich)",
        'Serverschrank 19" 42HE',
        "Bürostuhl ErgoPlus",
        "USB-C-Kabel 2 m",
        "Kopierpapier A4 500 Blatt",
        "Montage und Einrichtung",
        "Fahrtkosten",
        "Tonerkartusche schwarz",
        "Wartung Heizungsanlage",
    ],
}
_BICS = ["COBADEFFXXX", "DEUTDEFF", "GENODEF1M04", "BYLADEM1001", "INGDDEFFXXX", "SOLADEST600"]
_TERMS = {
    "en": ["14 days net", "Net 30 days", "Due on receipt", "30 days without deduction"],
    "de": [
        "14 Tage netto",
        "30 Tage ohne Abzug",
        "Zahlbar sofort ohne Abzug",
        "10 Tage 2 % Skonto",
    ],
}


def german_iban(rng: random.Random) -> str:
    """A German IBAN with a valid ISO 13616 check number (random bank code and account)."""
    bban = f"{rng.randrange(10_000_000, 100_000_000)}{rng.randrange(10**10):010d}"
    check = 98 - int(bban + "131400") % 97  # "DE00" moved to the end, D=13, E=14
    return f"DE{check:02d}{bban}"


def _swiss_uid(rng: random.Random) -> str:
    while True:
        digits = [rng.randrange(10) for _ in range(8)]
        check = 11 - sum(d * w for d, w in zip(digits, (5, 4, 3, 2, 7, 6, 5, 4), strict=True)) % 11
        if check != 10:
            number = "".join(map(str, digits)) + str(check % 11)
            return f"CHE-{number[:3]}.{number[3:6]}.{number[6:]} MWST"


def _vat_id(rng: random.Random, country: str) -> str:
    if country == "DE":
        return f"DE{rng.randrange(100_000_000, 1_000_000_000)}"
    if country == "AT":
        return f"ATU{rng.randrange(10**8):08d}"
    if country == "GB":
        return f"GB{rng.randrange(100_000_000, 1_000_000_000)}"
    if country == "NL":
        return f"NL{rng.randrange(10**9):09d}B{rng.randrange(1, 100):02d}"
    if country == "IE":
        return f"IE{rng.randrange(10**7):07d}{rng.choice('ABCDEFGHKLMNPRTW')}"
    return _swiss_uid(rng)


def random_spec(seed: int, lang: Lang = "en", *, long: bool = False) -> InvoiceSpec:
    """A deterministic one-page invoice for ``seed``; ``lang`` picks names and currencies.

    ``long`` makes it 40 lines, which runs onto a second page (table split by a page footer).
    """
    rng = random.Random(f"{seed}:{lang}")
    issue = date(2025, 1, 1) + timedelta(days=rng.randrange(730))
    if lang == "de":
        currency = rng.choice(["EUR"] * 6 + ["CHF"])
        rates = [Decimal(19), Decimal(7)]
        vat_country = "CH" if currency == "CHF" else rng.choice(["DE", "DE", "AT"])
    else:
        currency = rng.choice(["EUR", "EUR", "USD", "GBP", "CHF"])
        rates = rng.choice([[Decimal(20)], [Decimal(19), Decimal(7)], [Decimal(21)]])
        vat_country = {"GBP": "GB", "CHF": "CH"}.get(currency) or rng.choice(["NL", "IE", "DE"])
    count = 40 if long else rng.choice([1, 2, 3, 3, 4, 5, 6, 8])
    lines: list[Line] = []
    for _ in range(count):
        quantity = (
            Decimal(rng.randrange(1, 25))
            if rng.random() < 0.8
            else Decimal(rng.randrange(1, 40)) / 4
        )
        price = Decimal(rng.randrange(50, 10 ** rng.randint(3, 6))) / 100
        rate = rates[0] if rng.random() < 0.75 else rng.choice(rates)
        lines.append((rng.choice(_ITEMS[lang]), quantity, price, rate))
    year = issue.year
    number = rng.choice(
        [
            f"RE-{year}-{rng.randrange(1, 100000):05d}",
            f"INV-{rng.randrange(10000, 99999)}",
            f"{year}/{rng.randrange(1, 10000):04d}",
            f"{rng.randrange(100000, 999999)}",
        ]
    )
    creditor_reference = (
        f"RF{rng.randrange(10, 99)} {rng.randrange(1000, 9999)} {rng.randrange(1000, 9999)}"
    )
    reference = rng.choice(
        [number, creditor_reference, f"KD {rng.randrange(10000, 99999)} / {number}"]
    )
    with_codes = rng.random() < 0.3
    return InvoiceSpec(
        invoice_number=number,
        issue_date=issue,
        due_date=issue + timedelta(days=rng.choice([0, 7, 10, 14, 30])),
        currency=currency,
        supplier_name=rng.choice(_SUPPLIERS[lang]),
        supplier_vat_id=_vat_id(rng, vat_country),
        supplier_iban=german_iban(rng),
        supplier_bic=rng.choice(_BICS),
        customer_name=rng.choice(_CUSTOMERS[lang]),
        order_number=rng.choice(
            [f"PO-{rng.randrange(1000, 9999)}", f"45000{rng.randrange(10000, 99999)}"]
        ),
        payment_reference=reference,
        lines=lines,
        payment_terms=rng.choice(_TERMS[lang]) if rng.random() < 0.8 else None,
        customer_vat_id=_vat_id(rng, "DE") if rng.random() < 0.4 else None,
        item_codes=[f"{rng.choice('ABKMX')}-{rng.randrange(100, 9999)}" for _ in lines]
        if with_codes
        else None,
        document_type="credit_note" if rng.random() < 0.1 else "invoice",
        variant=rng.randrange(1 << 30),
    )


# --------------------------------------------------------------------------- layout


@dataclass
class Layout:
    """The rendering choices for one spec and language, shared by renderers and expectations."""

    spec: InvoiceSpec
    lang: Lang
    rng: random.Random = field(repr=False)

    @cached_property
    def tax_column(self) -> bool:
        """Rows print their tax rate (always when the invoice has more than one rate)."""
        return len(self.spec.tax_by_rate) > 1 or self.rng.random() < 0.5

    @cached_property
    def unit_column(self) -> bool:
        return self.rng.random() < 0.3

    @cached_property
    def amount_style(self) -> int:
        """0: symbol or code after, 1: before, 2: no currency on amounts (a Currency line)."""
        return self.rng.choice([0, 0, 1, 2])

    @cached_property
    def date_style(self) -> int:
        return self.rng.randrange(5 if self.lang == "en" else 4)

    @property
    def variant_bits(self) -> int:
        """Spare bits of the variant for on/off choices that must not consume ``rng``."""
        return self.spec.variant >> 4

    def pick(self, options: list[str]) -> str:
        return self.rng.choice(options)


def layout_for(spec: InvoiceSpec, lang: Lang) -> Layout:
    """The same choices every time for the same spec and language."""
    layout = Layout(spec=spec, lang=lang, rng=random.Random(f"{spec.variant}:{lang}"))
    _ = (layout.tax_column, layout.unit_column, layout.amount_style, layout.date_style)
    return layout


_EN_MONTHS = "Jan Feb Mar Apr May Jun Jul Aug Sep Oct Nov Dec".split()
_EN_MONTHS_LONG = (
    "January February March April May June July August September October November December"
).split()
_DE_MONTHS = (
    "Januar Februar März April Mai Juni Juli August September Oktober November Dezember"
).split()


def format_date(value: date, lang: Lang, style: int) -> str:
    if lang == "de":
        return [
            f"{value:%d.%m.%Y}",
            f"{value:%d.%m.%y}",
            f"{value.day}. {_DE_MONTHS[value.month - 1]} {value.year}",
            f"{value.day:02d}.{value.month:02d}.{value.year}",
        ][style]
    return [
        value.isoformat(),
        f"{value.day} {_EN_MONTHS[value.month - 1]} {value.year}",
        f"{_EN_MONTHS_LONG[value.month - 1]} {value.day}, {value.year}",
        f"{value:%d/%m/%Y}",
        f"{value.day} {_EN_MONTHS_LONG[value.month - 1]} {value.year}",
    ][style]


def format_number(value: Decimal, lang: Lang, currency: str = "", places: int = 2) -> str:
    """``1,234.56`` (en), ``1.234,56`` (de) or ``1'234.56`` (de with CHF)."""
    text = f"{value:,.{places}f}"
    if lang == "de":
        swap = "'" if currency == "CHF" else "."
        text = text.replace(",", "\0").replace(".", "," if swap == "." else ".")
        text = text.replace("\0", swap)
    return text


def format_quantity(value: Decimal, lang: Lang) -> str:
    text = format(value.normalize(), "f")
    return text.replace(".", ",") if lang == "de" else text


_SYMBOLS = {"EUR": "€", "USD": "$", "GBP": "£"}


def format_amount(value: Decimal, layout: Layout, *, in_table: bool = False) -> str:
    lang, currency = layout.lang, layout.spec.currency
    number = format_number(value, lang, currency)
    style = layout.amount_style
    if style == 2 or (in_table and layout.variant_bits & 1):
        return number
    symbol = _SYMBOLS.get(currency, currency)
    if style == 1:
        return f"{symbol}{number}" if len(symbol) == 1 else f"{symbol} {number}"
    return f"{number} {symbol if layout.variant_bits & 2 else currency}"


Cell = tuple[float, str, str]
"""(x in mm, text, "L" or "R" alignment)."""
Row = list[Cell]


def _labels(layout: Layout) -> dict[str, str]:
    pick, de, credit = layout.pick, layout.lang == "de", layout.spec.document_type != "invoice"
    if de:
        return {
            "title": "Gutschrift" if credit else pick(["Rechnung", "RECHNUNG", "Rechnung"]),
            "number": pick(["Gutschriftsnummer:", "Gutschrift-Nr.:"])
            if credit
            else pick(["Rechnungsnummer:", "Rechnungs-Nr.:", "Re.-Nr.", "Rechnungsnr.:"]),
            "date": pick(["Rechnungsdatum:", "Datum:", "Rechnungsdatum"]),
            "due": pick(["Fällig am:", "Zahlbar bis:", "Fälligkeitsdatum:", "Fällig am"]),
            "order": pick(["Bestellnummer:", "Auftragsnummer:", "Ihre Bestellung:", "Bestell-Nr."]),
            "reference": pick(["Verwendungszweck:", "Zahlungsreferenz:", "Verwendungszweck"]),
            "terms": pick(["Zahlungsbedingungen:", "Zahlungsziel:"]),
            "customer": pick(["Rechnungsempfänger:", "Kunde:", "Rechnungsempfänger"]),
            "supplier": pick(["", "", "Lieferant:", "Verkäufer:"]),
            "vat": pick(["USt-IdNr.:", "USt-ID:", "UID:", "Umsatzsteuer-ID:", "USt-IdNr."]),
            "customer_vat": pick(["Ihre USt-IdNr.:", "USt-IdNr. des Kunden:"]),
            "net": pick(["Summe netto", "Nettobetrag", "Zwischensumme", "Gesamt netto"]),
            "tax": pick(["zzgl. {r} % MwSt.", "MwSt. {r} %", "USt. {r}%", "Umsatzsteuer {r} %"]),
            "total": pick(["Gesamtbetrag", "Rechnungsbetrag", "Summe brutto", "Zu zahlen"]),
            "currency": "Währung:",
            "header": pick(["Bezeichnung", "Beschreibung", "Artikel"]),
            "qty": pick(["Menge", "Anzahl", "Anz."]),
            "price": pick(["Einzelpreis", "Preis", "E-Preis"]),
            "rate": pick(["MwSt.", "USt."]),
            "amount": pick(["Gesamt", "Betrag", "Gesamtpreis"]),
            "code": "Art.-Nr.",
            "unit": pick(["Stk.", "Std.", "St."]),
        }
    return {
        "title": "Credit Note" if credit else pick(["INVOICE", "Invoice", "Tax Invoice"]),
        "number": pick(["Credit note no.:", "Credit Note Number:"])
        if credit
        else pick(["Invoice No.:", "Invoice number:", "Invoice #", "Invoice no"]),
        "date": pick(["Invoice date:", "Date:", "Date of issue:", "Issue date:"]),
        "due": pick(["Due date:", "Payment due:", "Due date"]),
        "order": pick(["Order No.:", "PO Number:", "Purchase order:", "PO #"]),
        "reference": pick(["Payment reference:", "Reference:", "Payment reference"]),
        "terms": pick(["Payment terms:", "Terms:"]),
        "customer": pick(["Bill to:", "Customer:", "Billed to", "Invoice to:"]),
        "supplier": pick(["", "", "From:", "Supplier:"]),
        "vat": pick(["VAT ID:", "VAT No.", "VAT Reg. No.:", "VAT number:"]),
        "customer_vat": pick(["Customer VAT ID:", "Your VAT No.:"]),
        "net": pick(["Subtotal", "Net amount", "Total net", "Total excl. VAT"]),
        "tax": pick(["VAT {r}%", "VAT ({r}%)", "{r}% VAT", "Tax {r}%", "plus {r}% VAT"]),
        "total": pick(["Total", "Total amount", "Amount due", "Total due", "Grand total"]),
        "currency": "Currency:",
        "header": pick(["Description", "Item", "Description of services"]),
        "qty": pick(["Qty", "Quantity", "Qty."]),
        "price": pick(["Unit price", "Price", "Rate"]),
        "rate": pick(["VAT", "Tax"]),
        "amount": pick(["Amount", "Total", "Line total"]),
        "code": pick(["Item code", "SKU", "Code"]),
        "unit": pick(["pcs", "h", "units"]),
    }


def _rate_text(rate: Decimal, lang: Lang) -> str:
    return format_quantity(rate, lang)


def _rows(layout: Layout) -> list[Row]:
    """The invoice as rows of cells, top to bottom."""
    spec, lang, pick = layout.spec, layout.lang, layout.pick
    lab = _labels(layout)

    def fdate(value: date) -> str:
        return format_date(value, lang, layout.date_style)

    def pair(label: str, value: str) -> Row:
        # Either one text object or a label column and a value column (pdfium joins them).
        if layout.rng.random() < 0.5:
            return [(20, f"{label} {value}", "L")]
        return [(20, label, "L"), (65, value, "L")]

    rows: list[Row] = []
    street = pick(["Hauptstraße 12", "Industriestr. 7a", "Am Markt 3"] if lang == "de"
                  else ["1 High Street", "22 Harbour Road", "Unit 5, Mill Lane"])  # fmt: skip
    city = pick(["10115 Berlin", "80331 München", "50667 Köln"] if lang == "de"
                else ["London EC1A 1BB", "Dublin 2", "Amsterdam 1012 AB"])  # fmt: skip
    title_first = layout.rng.random() < 0.25
    if title_first:
        rows.append([(20, lab["title"], "L")])
    if lab["supplier"]:
        rows.append([(20, f"{lab['supplier']} {spec.supplier_name}", "L")])
        rows.append([(20, f"{street}, {city}", "L")])
    elif layout.rng.random() < 0.3:
        rows.append([(20, f"{spec.supplier_name} · {street} · {city}", "L")])
    else:
        rows.append([(20, spec.supplier_name, "L")])
        rows.append([(20, street, "L")])
        rows.append([(20, city, "L")])
    rows.append([])
    customer = lab["customer"]
    if customer.startswith(("Customer", "Kunde")):
        rows.append([(20, f"{customer} {spec.customer_name}", "L")])
    else:
        rows.append([(20, customer, "L")])
        rows.append([(20, spec.customer_name, "L")])
    rows.append([(20, pick(["Lindenallee 4", "5 Park Avenue", "Postfach 1120"]), "L")])
    if spec.customer_vat_id:
        rows.append(pair(lab["customer_vat"], spec.customer_vat_id))
    rows.append([])
    if not title_first:
        rows.append([(20, lab["title"], "L")])
    number, issued = spec.invoice_number, fdate(spec.issue_date)
    if layout.rng.random() < 0.3:
        date_label = lab["date"] if lab["date"].endswith(":") else lab["date"] + ":"
        rows.append([(20, f"{lab['number']} {number}", "L"), (110, f"{date_label} {issued}", "L")])
    else:
        rows.append(pair(lab["number"], number))
        rows.append(pair(lab["date"], issued))
    rows.append(pair(lab["due"], fdate(spec.due_date)))
    rows.append(pair(lab["order"], spec.order_number))
    if layout.amount_style == 2:
        rows.append(pair(lab["currency"], spec.currency))
    rows.append([])
    rows.extend(_table(layout, lab))
    rows.append([])
    if spec.payment_terms:
        rows.append(pair(lab["terms"], spec.payment_terms))
    rows.append(pair(lab["reference"], spec.payment_reference))
    rows.append([])
    iban = " ".join(spec.supplier_iban[i : i + 4] for i in range(0, len(spec.supplier_iban), 4))
    bic_label = pick(["BIC:", "SWIFT:", "BIC/SWIFT:", "BIC"])
    bank = pick(["Commerzbank", "Sparkasse Köln", "Deutsche Bank"])
    style = layout.rng.randrange(3)
    if style == 0:
        rows.append([(20, f"IBAN: {iban}", "L"), (120, f"{bic_label} {spec.supplier_bic}", "L")])
    elif style == 1:
        rows.append(pair("IBAN:", iban))
        rows.append(pair(bic_label, spec.supplier_bic))
    else:
        rows.append([(20, f"{bank}, IBAN {iban}, BIC {spec.supplier_bic}", "L")])
    vat = spec.supplier_vat_id
    if vat.startswith("DE") and layout.rng.random() < 0.3:
        vat = f"DE {vat[2:5]} {vat[5:8]} {vat[8:]}"
    rows.append(pair(lab["vat"], vat))
    return rows


def _table(layout: Layout, lab: dict[str, str]) -> list[Row]:
    spec, lang = layout.spec, layout.lang
    codes = spec.item_codes
    x_desc = 40 if codes else 20
    header: Row = [(x_desc, lab["header"], "L"), (118, lab["qty"], "R"), (145, lab["price"], "R")]
    if codes:
        header.insert(0, (20, lab["code"], "L"))
    if layout.tax_column:
        header.append((160, lab["rate"], "R"))
    header.append((195, lab["amount"], "R"))
    rows: list[Row] = [header]
    for index, (description, quantity, price, rate) in enumerate(spec.lines):
        qty = format_quantity(quantity, lang)
        if layout.unit_column:
            qty = f"{qty} {lab['unit']}"
        row: Row = [
            (x_desc, description, "L"),
            (118, qty, "R"),
            (145, format_amount(price, layout, in_table=True), "R"),
        ]
        if codes:
            row.insert(0, (20, codes[index], "L"))
        if layout.tax_column:
            row.append((160, f"{_rate_text(rate, lang)}{layout.pick(['%', ' %'])}", "R"))
        row.append((195, format_amount(spec.line_total(index), layout, in_table=True), "R"))
        rows.append(row)
    rows.append([])
    rows.append(_total_row(lab["net"], format_amount(spec.net_amount, layout)))
    for rate, tax in spec.tax_by_rate.items():
        label = lab["tax"].format(r=_rate_text(rate, lang))
        rows.append(_total_row(label, format_amount(tax, layout)))
    rows.append(_total_row(lab["total"], format_amount(spec.total_amount, layout)))
    return rows


def _total_row(label: str, value: str) -> Row:
    return [(110, f"{label}:" if not label.endswith(":") else label, "L"), (195, value, "R")]


ROWS_PER_PAGE = 50
_TOP, _STEP = 15.0, 5.0


def _pages(layout: Layout) -> list[list[Row]]:
    """Rows split into pages; a multi-page invoice gets a "Page n of m" footer row per page."""
    rows = _rows(layout)
    pages = [rows[i : i + ROWS_PER_PAGE] for i in range(0, len(rows), ROWS_PER_PAGE)]
    if len(pages) > 1:
        footer = "Seite {n} von {total}" if layout.lang == "de" else "Page {n} of {total}"
        for number, page in enumerate(pages, start=1):
            page.append([])
            page.append([(95, footer.format(n=number, total=len(pages)), "L")])
    return pages


# --------------------------------------------------------------------------- renderers


def _new_pdf() -> FPDF:
    pdf = FPDF(unit="mm", format="A4")
    pdf.core_fonts_encoding = "cp1252"  # €, umlauts and "·" with the core fonts
    pdf.set_auto_page_break(False)
    pdf.set_font("Helvetica", size=10)
    return pdf


def one_page_pdf(text: str) -> bytes:
    """A small valid PDF with one line of text: distinct bytes per text, cheap to make."""
    pdf = _new_pdf()
    pdf.add_page()
    pdf.text(20, 20, text)
    return bytes(pdf.output())


def render_pdf(spec: InvoiceSpec, lang: Lang = "en", *, password: str | None = None) -> bytes:
    """The invoice as a PDF with a text layer; ``password`` encrypts it (RC4, user password)."""
    layout = layout_for(spec, lang)
    pdf = _new_pdf()
    if password is not None:
        pdf.set_encryption(owner_password=f"{password}-owner", user_password=password)
    pages = _pages(layout)
    for rows in pages:
        pdf.add_page()
        y = _TOP
        for row in rows:
            for x, text, align in row:
                left = x - pdf.get_string_width(text) if align == "R" else x
                pdf.text(left, y, text)
            y += _STEP
    return bytes(pdf.output())


def render_text(spec: InvoiceSpec, lang: Lang = "en") -> str:
    """The same invoice as a plain-text file: cells separated by runs of spaces, pages by \\f."""
    layout = layout_for(spec, lang)
    pages = []
    for rows in _pages(layout):
        lines = []
        for row in rows:
            parts, column = [], 0
            for x, text, _align in row:
                pad = max(2 if parts else 0, int((x - 20) / 2.2) - column)
                parts.append(" " * pad + text)
                column += pad + len(text)
            lines.append("".join(parts))
        pages.append("\n".join(lines))
    return "\f".join(pages) + "\n"


def write_invoice(path: Path, spec: InvoiceSpec, lang: Lang = "en") -> Path:
    """Write the PDF (or, for a ``.txt`` path, the plain-text form) and return the path."""
    path = Path(path)
    if path.suffix == ".txt":
        path.write_text(render_text(spec, lang), encoding="utf-8")
    else:
        path.write_bytes(render_pdf(spec, lang))
    return path


def scanned_pdf_bytes(spec: InvoiceSpec, lang: Lang = "en", *, dpi: int = 200) -> bytes:
    """An image-only PDF of the invoice, like a scan: no text layer at all."""
    from PIL import Image, ImageDraw, ImageFont

    layout = layout_for(spec, lang)
    scale = dpi / 25.4
    try:
        font: ImageFont.FreeTypeFont | ImageFont.ImageFont = ImageFont.truetype(
            "DejaVuSans.ttf", size=round(3.5 * scale)
        )
    except OSError:
        font = ImageFont.load_default(size=round(3.5 * scale))
    pdf = _new_pdf()
    for rows in _pages(layout):
        image = Image.new("L", (round(210 * scale), round(297 * scale)), 255)
        draw = ImageDraw.Draw(image)
        y = _TOP
        for row in rows:
            for x, text, align in row:
                width = draw.textlength(text, font=font) / scale
                left = x - width if align == "R" else x
                draw.text((left * scale, (y - 3.5) * scale), text, fill=0, font=font)
            y += _STEP
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        pdf.add_page()
        pdf.image(buffer, x=0, y=0, w=210, h=297)
    return bytes(pdf.output())


def encrypted_pdf_bytes(spec: InvoiceSpec, lang: Lang = "en") -> bytes:
    """The invoice behind a user password: readers must ask for it, so must we refuse it."""
    return render_pdf(spec, lang, password="secret")


def truncated_pdf_bytes(spec: InvoiceSpec, lang: Lang = "en") -> bytes:
    """The first half of the PDF, as an interrupted upload leaves it: no xref, no %%EOF."""
    data = render_pdf(spec, lang)
    return data[: len(data) // 2]


# --------------------------------------------------------------------------- expectations


def expected_fields(spec: InvoiceSpec) -> dict[str, object]:
    """Canonical field name → the normalised value a correct extraction must produce."""
    expected: dict[str, object] = {
        "document_type": spec.document_type,
        "invoice_number": spec.invoice_number,
        "issue_date": spec.issue_date,
        "due_date": spec.due_date,
        "currency": spec.currency,
        "total_amount": spec.total_amount,
        "net_amount": spec.net_amount,
        "tax_amount": spec.tax_amount,
        "supplier_name": spec.supplier_name,
        "supplier_vat_id": spec.supplier_vat_id,
        "supplier_iban": spec.supplier_iban,
        "supplier_bic": spec.supplier_bic,
        "customer_name": spec.customer_name,
        "order_number": spec.order_number,
        "payment_reference": spec.payment_reference,
    }
    if spec.payment_terms:
        expected["payment_terms"] = spec.payment_terms
    if spec.customer_vat_id:
        expected["customer_vat_id"] = spec.customer_vat_id
    return expected


def expected_line_items(spec: InvoiceSpec, lang: Lang = "en") -> list[LineItem]:
    """The line items a correct extraction returns for this spec rendered in ``lang``.

    Line amounts are net (quantity times price) and add up to the net total, so the mapping may
    set both ``net_amount`` and ``total_amount``; the tax rate is there only when printed.
    """
    layout = layout_for(spec, lang)
    unit = _labels(layout)["unit"] if layout.unit_column else None
    items = []
    for index, (description, quantity, price, rate) in enumerate(spec.lines):
        amount = spec.line_total(index)
        items.append(
            LineItem(
                line_no=index + 1,
                description=description,
                quantity=quantity,
                unit_price=price,
                net_amount=amount,
                tax_rate=rate if layout.tax_column else None,
                total_amount=amount,
                item_code=spec.item_codes[index] if spec.item_codes else None,
                extra={"unit": unit} if unit else {},
            )
        )
    return items
