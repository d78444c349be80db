"""The offline ``local`` vendor: generated invoices in, exactly their values out."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from pydantic import ValidationError

from connectors.base import CanonicalResult, ConnectorContext, DocumentRef, FieldValue, PollStatus
from connectors.errors import TerminalError
from connectors.extract import text as text_mod
from connectors.extract.rules import find_fields
from connectors.vendors.local import LocalSettings, LocalVendor
from connectors.vendors.local.mapping import normalize
from tests.conftest import require_service
from tests.invoices import (
    encrypted_pdf_bytes,
    expected_fields,
    expected_line_items,
    random_spec,
    render_pdf,
    render_text,
    scanned_pdf_bytes,
    truncated_pdf_bytes,
    write_invoice,
)


@pytest.fixture
def tesseract() -> None:
    """OCR tests skip without tesseract, or fail when CI requires every service."""
    require_service(
        shutil.which("tesseract") is not None,
        "tesseract is not installed (apt install tesseract-ocr)",
    )


def make_vendor(tmp_path: Path, **settings: object) -> LocalVendor:
    context = ConnectorContext(name="local", data_dir=tmp_path, clock=time.monotonic)
    return LocalVendor(LocalSettings(**settings), context)


def doc_ref(path: Path, mime_type: str = "application/pdf", sha256: str = "ab" * 32) -> DocumentRef:
    return DocumentRef(
        id=1,
        sha256=sha256,
        filename=path.name,
        mime_type=mime_type,
        size_bytes=path.stat().st_size if path.exists() else 0,
        pages=None,
        received_at=datetime(2026, 1, 1, tzinfo=UTC),
        metadata={},
        path=path,
    )


def typed(value: FieldValue | None) -> object:
    """The normalised value of a field, whatever its kind."""
    if value is None:
        return None
    if value.value_number is not None:
        return value.value_number
    if value.value_date is not None:
        return value.value_date
    return value.value_text


def extract(vendor: LocalVendor, path: Path, mime_type: str = "application/pdf") -> CanonicalResult:
    """submit → poll → fetch → store as JSON → normalize, as the pipeline does."""
    document = doc_ref(path, mime_type)
    submitted = vendor.submit(document)
    assert vendor.poll(submitted.vendor_ref, submitted.data).status is PollStatus.READY
    raw = vendor.fetch(submitted.vendor_ref, submitted.data, document)
    stored = json.loads(json.dumps(raw))
    assert stored == raw  # the raw result survives the JSON column unchanged
    return vendor.normalize(stored)


def assert_matches_spec(result: CanonicalResult, spec, lang) -> None:
    expected = expected_fields(spec)
    got = {name: typed(result.get(name)) for name in expected}
    assert got == expected
    assert {f.name for f in result.fields} == set(expected), "no field beyond the spec"
    for name in ("total_amount", "net_amount", "tax_amount"):
        assert result.get(name).currency == spec.currency  # type: ignore[union-attr]
    assert result.line_items == expected_line_items(spec, lang)


# --------------------------------------------------------------------------- generated invoices


@pytest.mark.parametrize("lang", ["en", "de"])
@pytest.mark.parametrize("seed", range(20))
def test_generated_pdf_invoice(tmp_path, seed, lang):
    spec = random_spec(seed, lang)
    path = write_invoice(tmp_path / "invoice.pdf", spec, lang)
    result = extract(make_vendor(tmp_path), path)
    assert_matches_spec(result, spec, lang)
    assert all(f.confidence is None for f in result.fields)
    assert all(f.page is not None and f.page >= 1 for f in result.fields)


@pytest.mark.parametrize("lang", ["en", "de"])
def test_multi_page_invoice(tmp_path, lang):
    spec = random_spec(9, lang, long=True)
    path = write_invoice(tmp_path / "long.pdf", spec, lang)
    result = extract(make_vendor(tmp_path), path)
    assert_matches_spec(result, spec, lang)
    assert result.get("total_amount").page == 2  # type: ignore[union-attr]


@pytest.mark.parametrize(("seed", "lang"), [(3, "en"), (4, "de"), (11, "de")])
def test_plain_text_invoice(tmp_path, seed, lang):
    spec = random_spec(seed, lang)
    path = write_invoice(tmp_path / "invoice.txt", spec, lang)
    vendor = make_vendor(tmp_path)
    result = extract(vendor, path, "text/plain; charset=utf-8")
    assert_matches_spec(result, spec, lang)
    raw = vendor.fetch("local:x", {}, doc_ref(path, "text/plain"))
    assert raw["method"] == "plain"


def test_latin1_text_file(tmp_path):
    spec = random_spec(4, "de")
    path = tmp_path / "invoice.txt"
    path.write_bytes(render_text(spec, "de").encode("cp1252"))
    result = extract(make_vendor(tmp_path), path, "text/plain")
    assert_matches_spec(result, spec, "de")


def test_raw_result_shape(tmp_path):
    spec = random_spec(2, "de")
    path = write_invoice(tmp_path / "invoice.pdf", spec, "de")
    raw = make_vendor(tmp_path).fetch("local:x", {}, doc_ref(path))
    assert raw["engine"] == "docrelay-local"
    assert raw["version"] == 1
    assert raw["method"] == "text-layer"
    assert raw["pages"] == 1
    assert raw["decimal_separator"] == ","
    for entry in raw["fields"]:
        assert set(entry) >= {"name", "label", "raw", "page"}
    assert [item["line_no"] for item in raw["line_items"]] == list(range(1, len(spec.lines) + 1))
    assert set(raw["line_items"][0]) >= {
        "line_no", "description", "quantity", "unit_price", "tax_rate", "total_amount",
        "item_code",
    }  # fmt: skip


def test_concurrent_fetches_give_the_same_results(tmp_path):
    """PDFium is not thread-safe; the vendor's worker threads must still get correct text."""
    vendor = make_vendor(tmp_path, concurrency=4)
    paths = []
    for seed in range(12):
        lang = "de" if seed % 2 else "en"
        paths.append(write_invoice(tmp_path / f"{seed}.pdf", random_spec(seed, lang), lang))
    sequential = [vendor.fetch("r", {}, doc_ref(p)) for p in paths]
    with ThreadPoolExecutor(max_workers=4) as pool:
        parallel = list(pool.map(lambda p: vendor.fetch("r", {}, doc_ref(p)), paths * 3))
    assert parallel == sequential * 3


# --------------------------------------------------------------------------- documents we refuse


def test_encrypted_pdf_is_rejected(tmp_path):
    path = tmp_path / "locked.pdf"
    path.write_bytes(encrypted_pdf_bytes(random_spec(1)))
    with pytest.raises(TerminalError, match="password"):
        extract(make_vendor(tmp_path), path)


def test_truncated_pdf_is_rejected(tmp_path):
    path = tmp_path / "cut.pdf"
    path.write_bytes(truncated_pdf_bytes(random_spec(1)))
    with pytest.raises(TerminalError, match="truncated or corrupt"):
        extract(make_vendor(tmp_path), path)


@pytest.mark.parametrize(
    "data",
    [b"", b"hello, not a pdf", b"%PDF-1.7\n garbage garbage \n%%EOF\n"],
    ids=["empty", "text", "garbage"],
)
def test_corrupt_pdf_is_rejected(tmp_path, data):
    path = tmp_path / "bad.pdf"
    path.write_bytes(data)
    with pytest.raises(TerminalError, match="PDF"):
        extract(make_vendor(tmp_path), path)


def test_too_many_pages_is_rejected(tmp_path):
    spec = random_spec(9, long=True)
    path = write_invoice(tmp_path / "long.pdf", spec, "en")
    with pytest.raises(TerminalError, match=r"2 pages, more than the limit of 1"):
        extract(make_vendor(tmp_path, max_pages=1), path)


def test_scan_without_ocr_is_rejected(tmp_path):
    path = tmp_path / "scan.pdf"
    path.write_bytes(scanned_pdf_bytes(random_spec(5), dpi=50))
    with pytest.raises(TerminalError, match="no text layer and OCR is not available"):
        extract(make_vendor(tmp_path, ocr="off"), path)


def test_scan_without_tesseract_is_rejected(tmp_path, monkeypatch):
    monkeypatch.setattr(text_mod, "tesseract_path", lambda: None)
    path = tmp_path / "scan.pdf"
    path.write_bytes(scanned_pdf_bytes(random_spec(5), dpi=50))
    with pytest.raises(TerminalError, match="install tesseract-ocr"):
        extract(make_vendor(tmp_path), path)


def test_empty_text_file_is_rejected(tmp_path):
    path = tmp_path / "empty.txt"
    path.write_text(" \n\f\n")
    with pytest.raises(TerminalError, match="text file is empty"):
        extract(make_vendor(tmp_path), path, "text/plain")


@pytest.mark.parametrize("mime_type", ["image/png", "image/jpeg", "image/tiff"])
def test_image_without_ocr_is_rejected(tmp_path, mime_type):
    path = tmp_path / "photo"
    path.write_bytes(b"irrelevant")
    with pytest.raises(TerminalError, match=f"{mime_type} needs OCR"):
        extract(make_vendor(tmp_path, ocr="off"), path, mime_type)


@pytest.mark.parametrize("mime_type", ["application/zip", "text/html", "application/msword", ""])
def test_unsupported_type_is_rejected_on_submit(tmp_path, mime_type):
    path = tmp_path / "file.bin"
    path.write_bytes(b"PK\x03\x04")
    vendor = make_vendor(tmp_path)
    with pytest.raises(TerminalError, match="cannot read") as caught:
        vendor.submit(doc_ref(path, mime_type))
    assert (mime_type or "unknown") in str(caught.value)
    with pytest.raises(TerminalError, match="unsupported"):
        vendor.fetch("local:x", {}, doc_ref(path, mime_type))


def test_ocr_timeout_is_terminal(tmp_path, monkeypatch):
    """A hanging tesseract is cut off at ``ocr_timeout`` (simulated: no real waiting)."""

    def run(args, **kwargs):
        if "--list-langs" in args:
            return subprocess.CompletedProcess(args, 0, stdout="eng\n", stderr="")
        raise subprocess.TimeoutExpired(args, kwargs["timeout"])

    monkeypatch.setattr(text_mod, "tesseract_path", lambda: "/opt/fake/tesseract")
    monkeypatch.setattr(text_mod.subprocess, "run", run)
    path = tmp_path / "scan.pdf"
    path.write_bytes(scanned_pdf_bytes(random_spec(5), dpi=50))
    with pytest.raises(TerminalError, match=r"OCR took longer than 7 s"):
        extract(make_vendor(tmp_path, ocr_timeout=7), path)


# --------------------------------------------------------------------------- OCR


@pytest.mark.usefixtures("tesseract")
def test_scanned_pdf_is_read_with_ocr(tmp_path):
    spec = random_spec(1, "en")
    path = tmp_path / "scan.pdf"
    path.write_bytes(scanned_pdf_bytes(spec, "en"))
    vendor = make_vendor(tmp_path)
    raw = vendor.fetch("local:x", {}, doc_ref(path))
    assert raw["method"] == "ocr"
    result = vendor.normalize(raw)
    assert typed(result.get("invoice_number")) == spec.invoice_number
    assert typed(result.get("total_amount")) == spec.total_amount


@pytest.mark.usefixtures("tesseract")
def test_png_is_read_with_ocr(tmp_path):
    from PIL import Image, ImageDraw, ImageFont

    try:
        font: ImageFont.FreeTypeFont | ImageFont.ImageFont = ImageFont.truetype(
            "DejaVuSans.ttf", 28
        )
    except OSError:
        font = ImageFont.load_default(size=28)
    image = Image.new("L", (900, 200), 255)
    draw = ImageDraw.Draw(image)
    draw.text((20, 20), "Invoice No.: INV-40417", fill=0, font=font)
    draw.text((20, 80), "Total: 1,234.56 EUR", fill=0, font=font)
    path = tmp_path / "photo.png"
    image.save(path)
    result = extract(make_vendor(tmp_path), path, "image/png")
    assert typed(result.get("invoice_number")) == "INV-40417"
    assert typed(result.get("total_amount")) == Decimal("1234.56")
    assert typed(result.get("currency")) == "EUR"


@pytest.mark.usefixtures("tesseract")
def test_corrupt_image_is_rejected(tmp_path):
    path = tmp_path / "photo.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n broken")
    with pytest.raises(TerminalError, match="image/png is unreadable"):
        extract(make_vendor(tmp_path), path, "image/png")


# --------------------------------------------------------------------------- the vendor contract


def test_submit_is_pure_and_repeatable(tmp_path):
    path = write_invoice(tmp_path / "a.pdf", random_spec(1), "en")
    vendor = make_vendor(tmp_path)
    document = doc_ref(path, sha256="cd" * 32)
    first, second = vendor.submit(document), vendor.submit(document)
    assert first.vendor_ref == second.vendor_ref == f"local:{'cd' * 32}"
    assert vendor.capabilities.poll_interval == 0
    assert not vendor.capabilities.webhooks
    assert vendor.kind == "local"
    assert vendor.settings_model is LocalSettings


def test_settings_defaults_and_validation():
    settings = LocalSettings()
    assert (settings.kind, settings.ocr, settings.max_pages) == ("local", "auto", 50)
    assert (settings.ocr_timeout, settings.concurrency) == (60, 2)
    for bad in ({"ocr": "sometimes"}, {"max_pages": 0}, {"concurrency": 0}, {"speed": 3}):
        with pytest.raises(ValidationError):
            LocalSettings(**bad)  # type: ignore[arg-type]
    for name, info in LocalSettings.model_fields.items():
        assert info.description, f"{name} needs an attribute docstring"


def test_import_is_light():
    code = (
        "import sys, connectors.vendors.local\n"
        "heavy = [m for m in ('pypdfium2', 'PIL', 'fpdf') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parent.parent)


# --------------------------------------------------------------------------- rules on other layouts


def fields_of(text: str) -> dict[str, object]:
    result = normalize(find_fields([text], method="plain"))
    return {f.name: typed(f) for f in result.fields}


def test_german_letter_layout():
    text = """Elektro Maier GmbH | Bahnhofstr. 5 | 70173 Stuttgart
Schulz Bau GmbH
Gartenweg 3
                                   Stuttgart, 05.03.2026
Rechnung Nr. 2026-0815
Kundennummer: 10045
Lieferdatum: 02.03.2026
Pos. Art.-Nr. Bezeichnung Menge Einheit Einzelpreis Gesamtpreis
1 4711 Kabel NYM-J 3x1,5 100 m 0,89 € 89,00 €
2 0815 Abzweigdose AP 12 Stk. 2,35 € 28,20 €
3 9000 Arbeitszeit Geselle 4,5 Std. 58,00 € 261,00 €
Nettobetrag 378,20 €
zzgl. 19 % MwSt. 71,86 €
Rechnungsbetrag 450,06 €
Bankverbindung: Volksbank IBAN DE89 3704 0044 0532 0130 00 BIC GENODES1VBS
Geschäftsführer: Hans Maier · USt-IdNr. DE 811 234 567
"""
    assert fields_of(text) == {
        "document_type": "invoice",
        "invoice_number": "2026-0815",
        "issue_date": date(2026, 3, 5),  # the letter date, not the labelled delivery date
        "currency": "EUR",
        "total_amount": Decimal("450.06"),
        "net_amount": Decimal("378.20"),
        "tax_amount": Decimal("71.86"),
        "supplier_name": "Elektro Maier GmbH",
        "supplier_vat_id": "DE811234567",
        "supplier_iban": "DE89370400440532013000",
        "supplier_bic": "GENODES1VBS",
    }
    items = normalize(find_fields([text])).line_items
    assert [(i.item_code, i.description, i.quantity, i.extra) for i in items] == [
        ("4711", "Kabel NYM-J 3x1,5", Decimal(100), {"unit": "m"}),
        ("0815", "Abzweigdose AP", Decimal(12), {"unit": "Stk."}),
        ("9000", "Arbeitszeit Geselle", Decimal("4.5"), {"unit": "Std."}),
    ]


def test_us_style_invoice():
    text = """INVOICE
Globex Corporation
Invoice #: 10-2026-77    Date: March 5, 2026
Payment due: April 4, 2026
Bill To:
Initech LLC
Item Description Qty Rate Amount
Web hosting (12 months) 1 $240.00 $240.00
Domain renewal 2 $15.50 $31.00
Subtotal $271.00
Sales Tax (8.25%) $22.36
Total Due $293.36
Terms: Net 30
"""
    assert fields_of(text) == {
        "document_type": "invoice",
        "invoice_number": "10-2026-77",
        "issue_date": date(2026, 3, 5),
        "due_date": date(2026, 4, 4),
        "currency": "USD",
        "total_amount": Decimal("293.36"),
        "net_amount": Decimal("271.00"),
        "tax_amount": Decimal("22.36"),
        "supplier_name": "Globex Corporation",
        "customer_name": "Initech LLC",
        "payment_terms": "Net 30",
    }


@pytest.mark.parametrize(
    ("line", "name", "value"),
    [
        ("VAT 19 %: 190,00 EUR", "tax_amount", Decimal("190.00")),
        ("19% VAT: 190.00", "tax_amount", Decimal("190.00")),
        ("MwSt. (19 %) 190,00 €", "tax_amount", Decimal("190.00")),
        ("Subtotal: 1,000.00", "net_amount", Decimal("1000.00")),
        ("Total excl. VAT: 1,000.00", "net_amount", Decimal("1000.00")),
        ("Total incl. VAT: 1,190.00", "total_amount", Decimal("1190.00")),
        ("Gesamtbetrag inkl. MwSt.: 1.190,00 €", "total_amount", Decimal("1190.00")),
        ("Total (EUR): 1.190,00", "total_amount", Decimal("1190.00")),
        ("Net 30", "net_amount", None),  # payment terms, not an amount
        ("Total 3", "total_amount", None),  # a bare integer is not money
        ("Netherlands: 1,000.00", "net_amount", None),  # "Net" inside a word
        ("Rechnungsdatum: 23.11.2026", "issue_date", date(2026, 11, 23)),
        ("Delivery date: 20.11.2026", "issue_date", None),
        ("Customer No.: 12345", "customer_name", None),
        ("Fällig am 07.12.2026", "due_date", date(2026, 12, 7)),
        ("Faellig am 07.12.2026", "due_date", date(2026, 12, 7)),
        ("Bitte zahlbar bis 07.12.2026 ohne Abzug", "due_date", date(2026, 12, 7)),
        ("Steuernummer: 12/345/67890", "supplier_vat_id", None),
        ("Tax ID: DE123456789", "supplier_vat_id", "DE123456789"),
        ("IBAN DE89 3704 0044 0532 0130 01", "supplier_iban", None),  # bad checksum
        ("Your reference: ABC 12", "payment_reference", None),
        ("Reference: INV-2026-1", "payment_reference", "INV-2026-1"),
        ("Invoice No.: R2026-11-04", "invoice_number", "R2026-11-04"),
        ("Invoice No.: 2026-11-04", "invoice_number", None),
        ("Gesamtbetrag der Zuschläge 5,80", "total_amount", None),  # another phrase's label
        ("Total of discounts: 12.00", "total_amount", None),
        ("Total in EUR 1,190.00", "total_amount", Decimal("1190.00")),
        ("Rechnungssumme ohne USt. 473,00", "net_amount", Decimal("473.00")),
        ("Rechnungssumme ohne USt. 473,00", "total_amount", None),
        ("Handelsrechnung (380) Nr. 471102 vom 05.03.2018", "invoice_number", "471102"),
        ("Handelsrechnung (380) Nr. 471102 vom 05.03.2018", "issue_date", date(2018, 3, 5)),
        (
            "Rechnung des Versicherers (575) Nr. 01.234.567.8-2018-1",
            "invoice_number",
            "01.234.567.8-2018-1",
        ),
        ("Invoice No. INV-7 dated 2026-03-05", "invoice_number", "INV-7"),
        ("Invoice No. INV-7 dated 2026-03-05", "issue_date", date(2026, 3, 5)),
        ("Rechnung Nr. 2026-11-04", "invoice_number", None),  # a date, not a number
        (
            "Zahlbar innerhalb 30 Tagen netto bis 04.04.2018, 3% Skonto innerhalb 10 Tagen bis "
            "15.03.2018",
            "due_date",
            date(2018, 4, 4),
        ),
        ("Payable within 14 days net by 2026-12-01", "due_date", date(2026, 12, 1)),
    ],
)
def test_single_line_rules(line, name, value):
    assert fields_of(f"ACME Ltd\n{line}\n").get(name) == value


def test_a_labelled_number_wins_over_the_title_line():
    found = fields_of(
        "ACME Ltd\nHandelsrechnung (380) Nr. 17 vom 01.02.2026\nRechnungsnummer: R-2026-17\n"
    )
    assert found["invoice_number"] == "R-2026-17"
    assert found["issue_date"] == date(2026, 2, 1)


def test_address_blocks_give_their_name_line_not_their_first_attribute():
    found = fields_of(
        "Handelsrechnung (380) Nr. 471102 vom 05.03.2018\nVerkäufer\nNummer: 549910\n"
        "Globale Nummer: 4000001123452 (GLN)\nName: Lieferant GmbH\nAnschrift: Weg 20\n"
        "Käufer/Leistungsempfänger\nNummer: GE2020211\nName: Kunden AG Mitte\n"
    )
    assert found["supplier_name"] == "Lieferant GmbH"
    assert found["customer_name"] == "Kunden AG Mitte"


def test_a_name_that_starts_below_its_key_is_read_over_its_lines():
    found = fields_of(
        "Invoice\nSeller\nName:\nMVM Musterhafter\nVersicherungsverein Musterstadt a.G.\n"
        "Address: Musterstr. 12\nTotal: 50.00 EUR\n"
    )
    assert found["supplier_name"] == "MVM Musterhafter Versicherungsverein Musterstadt a.G."


def test_a_block_whose_first_line_is_the_name_keeps_it():
    found = fields_of("Invoice\nSupplier\nGlobex Ltd\nVAT No.: GB123456789\nTotal: 5.00 GBP\n")
    assert found["supplier_name"] == "Globex Ltd"


def test_the_grand_total_among_charges_allowances_and_prepayments():
    found = fields_of(
        "Lieferant GmbH\nRechnung Nr. 4711\nBelegsummen\nPositionssumme 180,76\n"
        "Gesamtbetrag der Zuschläge 5,80\nGesamtbetrag der Abschläge -9,07\n"
        "Rechnungssumme ohne USt. 177,49\nSteuerbetrag 20,16\nBruttosumme 197,65\n"
        "Erhaltene Anzahlungen -50,00\nZahlbetrag 147,65\n"
    )
    assert found["total_amount"] == Decimal("197.65")
    assert found["net_amount"] == Decimal("177.49")
    assert found["tax_amount"] == Decimal("20.16")


def test_a_due_date_column_gives_the_one_date_below_it():
    terms = "ACME Ltd\nTotal: 5.00 EUR\nZahlungsbedingungen\nBeschreibung Fälligkeit Teilzahlung\n"
    assert fields_of(terms + "04.04.2018\n")["due_date"] == date(2018, 4, 4)
    assert "due_date" not in fields_of(terms + "01.04.2018 bis 04.04.2018\n")  # which one?


FOUR_LANGUAGES = {
    "fr": (
        "Dupont SARL\nFacture n° F-2026-0042\nN° TVA intracommunautaire : FR40303265045\n"
        "Date de facture : 5 mars 2026\nDate d'échéance : 04/04/2026\n"
        "Client : Martin & Fils SA\nTotal HT 1 000,00 €\nTVA 20 % 200,00 €\n"
        "Total TTC 1 200,00 €\n",
        {"invoice_number": "F-2026-0042", "supplier_vat_id": "FR40303265045",
         "issue_date": date(2026, 3, 5), "due_date": date(2026, 4, 4),
         "customer_name": "Martin & Fils SA", "net_amount": Decimal("1000.00"),
         "tax_amount": Decimal("200.00"), "total_amount": Decimal("1200.00")},
    ),
    "nl": (
        "Jansen B.V.\nFactuur\nFactuurnummer: 2026-118\nFactuurdatum: 12 maart 2026\n"
        "Vervaldatum: 11-04-2026\nBTW-nummer: NL123456789B01\nKlant: De Vries Handel\n"
        "Subtotaal € 500,00\nBTW 21% € 105,00\nTotaal incl. BTW € 605,00\n",
        {"invoice_number": "2026-118", "issue_date": date(2026, 3, 12),
         "due_date": date(2026, 4, 11), "supplier_vat_id": "NL123456789B01",
         "customer_name": "De Vries Handel", "net_amount": Decimal("500.00"),
         "tax_amount": Decimal("105.00"), "total_amount": Decimal("605.00")},
    ),
    "it": (
        "Rossi S.r.l.\nPartita IVA: IT12345678901\nFattura n. 2026/77\n"
        "Data fattura: 3 aprile 2026\nScadenza: 03/05/2026\nImponibile 800,00\n"
        "IVA 22% 176,00\nTotale fattura 976,00 EUR\n",
        {"invoice_number": "2026/77", "issue_date": date(2026, 4, 3),
         "due_date": date(2026, 5, 3), "supplier_vat_id": "IT12345678901",
         "net_amount": Decimal("800.00"), "tax_amount": Decimal("176.00"),
         "total_amount": Decimal("976.00")},
    ),
    "es": (
        "García S.L.\nFactura nº A-310\nNIF: ESB12345674\n"
        "Fecha de factura: 7 de mayo de 2026\nFecha de vencimiento: 06/06/2026\n"
        "Base imponible 300,00 €\nIVA 21% 63,00 €\nTotal factura 363,00 €\n",
        {"invoice_number": "A-310", "issue_date": date(2026, 5, 7),
         "due_date": date(2026, 6, 6), "supplier_vat_id": "ESB12345674",
         "net_amount": Decimal("300.00"), "tax_amount": Decimal("63.00"),
         "total_amount": Decimal("363.00")},
    ),
}  # fmt: skip


@pytest.mark.parametrize("lang", sorted(FOUR_LANGUAGES))
def test_invoices_in_french_dutch_italian_and_spanish(lang):
    text, expected = FOUR_LANGUAGES[lang]
    found = fields_of(text)
    assert {name: found.get(name) for name in expected} == expected
    assert found["currency"] == "EUR"
    assert found["document_type"] == "invoice"
    assert found["supplier_name"] == text.splitlines()[0]


@pytest.mark.parametrize(
    "title", ["Avoir", "Note de crédit", "Creditnota", "Nota di credito", "Factura rectificativa"]
)
def test_credit_notes_in_other_languages(title):
    assert fields_of(f"{title}\nACME SA\nTotal: 5,00 EUR\n")["document_type"] == "credit_note"


def test_label_on_its_own_line_takes_the_next_line():
    assert fields_of("ACME Ltd\nInvoice number\nA-1001\nTotal\n120.00 EUR\n") == {
        "document_type": "invoice",
        "invoice_number": "A-1001",
        "total_amount": Decimal("120.00"),
        "currency": "EUR",
        "supplier_name": "ACME Ltd",
    }


def test_a_column_of_labels_is_not_paired_with_the_wrong_values():
    found = fields_of("ACME Ltd\nSubtotal\nVAT 20%\nTotal\n100.00\n20.00\n120.00\n")
    assert "total_amount" not in found and "net_amount" not in found


def test_tax_lines_per_rate_are_added_up():
    found = fields_of(
        "ACME Ltd\nNet: 107.00 EUR\nVAT 19%: 19.00 EUR\nVAT 7%: 0.49 EUR\nTotal: 126.49 EUR\n"
    )
    assert found["tax_amount"] == Decimal("19.49")


def test_total_tax_label_wins_over_rate_lines():
    found = fields_of(
        "ACME Ltd\nNet: 107.00\nVAT 19%: 19.00\nVAT 7%: 0.49\nTotal VAT: 19.49\nTotal: 126.49\n"
    )
    assert found["tax_amount"] == Decimal("19.49")


def test_credit_note():
    found = fields_of("Gutschrift\nMuster AG\nGutschrift-Nr.: GS-4\nGesamtbetrag: 236,81 EUR\n")
    assert found["document_type"] == "credit_note"
    assert found["invoice_number"] == "GS-4"
    assert found["supplier_name"] == "Muster AG"


def test_nothing_found_in_unrelated_text():
    result = normalize(find_fields(["Dear Sir or Madam,\nplease find our brochure enclosed.\n"]))
    assert result.fields == []
    assert result.line_items == []


def test_render_pdf_is_fast_enough_for_the_benchmark():
    spec = random_spec(7, "de")
    started = time.perf_counter()
    for _ in range(20):
        render_pdf(spec, "de")
    assert (time.perf_counter() - started) / 20 < 0.05  # ~2 ms; generous for slow CI


def test_unlabelled_iban_in_the_footer():
    found = fields_of("ACME Ltd\nTotal: 12.50 EUR\nCommerzbank · DE89 3704 0044 0532 0130 00\n")
    assert found["supplier_iban"] == "DE89370400440532013000"
    assert "supplier_iban" not in fields_of(
        "ACME Ltd\nTotal: 1.00 EUR\nDE89 3704 0044 0532 0130 01\n"
    )


def test_padding_after_eof_is_accepted(tmp_path):
    spec = random_spec(42)
    path = tmp_path / "padded.pdf"
    path.write_bytes(render_pdf(spec) + b"\n" * 200_000 + b"\x00" * 10)
    assert typed(extract(make_vendor(tmp_path), path).get("invoice_number")) == spec.invoice_number
