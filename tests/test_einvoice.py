"""The e-invoice reader and the ``einvoice`` vendor on the real EN 16931 / XRechnung corpus
(CII, UBL and Factur-X renderings of the same invoices), on docrelay's own UBL output, and on
hostile and inconsistent XML.

Expectations come from independent XPath over each file (and, for a Factur-X PDF, over the XML
pypdf finds in it), never from the reader under test.
"""

from __future__ import annotations

import hashlib
import io
import socket
import threading
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from lxml import etree

from connectors.base import CanonicalResult, ConnectorContext, DocumentRef, FieldValue
from connectors.destinations.ubl import ubl_xml
from connectors.einvoice import safexml
from connectors.einvoice.canonical import to_canonical
from connectors.einvoice.checks import problems
from connectors.einvoice.reader import NotAnEInvoice, read_document, read_xml
from connectors.errors import TerminalError
from connectors.filecheck import Verdict, check_file, sniff_mime
from connectors.vendors.einvoice import EInvoiceSettings, EInvoiceVendor
from tests.einvoices import FIXTURES, einvoice_pdf, embed, ubl_of
from tests.invoices import random_spec, render_pdf
from tests.test_destination_ubl import full_fields, payload, two_rates

D = Decimal
CII_NS = {
    "rsm": "urn:un:unece:uncefact:data:standard:CrossIndustryInvoice:100",
    "ram": "urn:un:unece:uncefact:data:standard:ReusableAggregateBusinessInformationEntity:100",
    "udt": "urn:un:unece:uncefact:data:standard:UnqualifiedDataType:100",
}
UBL_NS = {
    "cac": "urn:oasis:names:specification:ubl:schema:xsd:CommonAggregateComponents-2",
    "cbc": "urn:oasis:names:specification:ubl:schema:xsd:CommonBasicComponents-2",
}
CHECKED = (
    "document_type",
    "invoice_number",
    "issue_date",
    "due_date",
    "total_amount",
    "net_amount",
    "tax_amount",
    "currency",
    "supplier_name",
    "supplier_vat_id",
    "supplier_iban",
)
"""The fields issue 14 requires to match the XML exactly."""


def renderings() -> dict[str, dict[str, Path]]:
    """Base name → {"cii"|"ubl"|"fx": path} for every corpus invoice."""
    found: dict[str, dict[str, Path]] = {}
    for kind, folder, suffix in (
        ("cii", "CII", ".cii.xml"),
        ("ubl", "UBL", ".ubl.xml"),
        ("fx", "FX", ".pdf"),
    ):
        for path in sorted((FIXTURES / folder).iterdir()):
            base = path.name.removesuffix(suffix).removesuffix(".xml")
            found.setdefault(base, {})[kind] = path
    return found


RENDERINGS = renderings()


def test_the_fixtures_hold_the_corpus_with_its_license():
    assert (FIXTURES / "LICENSE").is_file()
    assert len(RENDERINGS) >= 25
    assert sum(len(r) == 3 for r in RENDERINGS.values()) >= 20, "most come in all three syntaxes"


# --------------------------------------------------------------------------- independent XPath


def _first(root: etree._Element, path: str, ns: dict[str, str]) -> str | None:
    found = root.xpath(path, namespaces=ns)
    if not found:
        return None
    value = found[0] if isinstance(found[0], str) else found[0].text
    return " ".join(value.split()) if value and value.strip() else None


def _cii_date(text: str | None) -> date | None:
    return None if text is None else datetime.strptime(text, "%Y%m%d").date()


def expected_cii(root: etree._Element) -> dict[str, Any]:
    ns = CII_NS
    sums = "//ram:SpecifiedTradeSettlementHeaderMonetarySummation/"
    currency = _first(root, "//ram:ApplicableHeaderTradeSettlement/ram:InvoiceCurrencyCode", ns)
    tax = _first(root, f"{sums}ram:TaxTotalAmount[@currencyID='{currency}']", ns) or _first(
        root, f"{sums}ram:TaxTotalAmount", ns
    )
    code = _first(root, "/rsm:CrossIndustryInvoice/rsm:ExchangedDocument/ram:TypeCode", ns)
    return {
        "document_type": "credit_note" if code in ("381", "396", "261", "262") else "invoice",
        "invoice_number": _first(
            root, "/rsm:CrossIndustryInvoice/rsm:ExchangedDocument/ram:ID", ns
        ),
        "issue_date": _cii_date(
            _first(root, "/*/rsm:ExchangedDocument/ram:IssueDateTime/udt:DateTimeString", ns)
        ),
        "due_date": _cii_date(
            _first(root, "//ram:SpecifiedTradePaymentTerms/ram:DueDateDateTime/*", ns)
        ),
        "total_amount": _first(root, f"{sums}ram:GrandTotalAmount", ns),
        "net_amount": _first(root, f"{sums}ram:TaxBasisTotalAmount", ns),
        "tax_amount": tax,
        "currency": currency,
        "supplier_name": _first(root, "//ram:SellerTradeParty/ram:Name", ns),
        "supplier_vat_id": _first(
            root, "//ram:SellerTradeParty/ram:SpecifiedTaxRegistration/ram:ID[@schemeID='VA']", ns
        ),
        "supplier_iban": _first(root, "//ram:PayeePartyCreditorFinancialAccount/ram:IBANID", ns),
        "lines": [
            D(n.text)
            for n in root.xpath(
                "//ram:IncludedSupplyChainTradeLineItem//ram:LineTotalAmount", namespaces=ns
            )
        ],
    }


def expected_ubl(root: etree._Element) -> dict[str, Any]:
    ns = UBL_NS
    credit = etree.QName(root).localname == "CreditNote"
    currency = _first(root, "/*/cbc:DocumentCurrencyCode", ns)
    seller = "/*/cac:AccountingSupplierParty/cac:Party/"
    due = _first(root, "/*/cbc:DueDate", ns) or _first(
        root, "/*/cac:PaymentMeans/cbc:PaymentDueDate", ns
    )
    lines = "cac:CreditNoteLine" if credit else "cac:InvoiceLine"
    return {
        "document_type": "credit_note" if credit else "invoice",
        "invoice_number": _first(root, "/*/cbc:ID", ns),
        "issue_date": date.fromisoformat(_first(root, "/*/cbc:IssueDate", ns) or ""),
        "due_date": None if due is None else date.fromisoformat(due),
        "total_amount": _first(root, "/*/cac:LegalMonetaryTotal/cbc:TaxInclusiveAmount", ns),
        "net_amount": _first(root, "/*/cac:LegalMonetaryTotal/cbc:TaxExclusiveAmount", ns),
        "tax_amount": _first(root, f"/*/cac:TaxTotal/cbc:TaxAmount[@currencyID='{currency}']", ns),
        "currency": currency,
        "supplier_name": _first(root, seller + "cac:PartyLegalEntity/cbc:RegistrationName", ns),
        "supplier_vat_id": _first(
            root, seller + "cac:PartyTaxScheme[cac:TaxScheme/cbc:ID='VAT']/cbc:CompanyID", ns
        ),
        "supplier_iban": _first(root, "/*/cac:PaymentMeans/cac:PayeeFinancialAccount/cbc:ID", ns),
        "lines": [
            D(n.text) for n in root.xpath(f"/*/{lines}/cbc:LineExtensionAmount", namespaces=ns)
        ],
    }


def xml_of(kind: str, path: Path) -> bytes:
    """The file's XML; for a PDF, its embedded invoice as pypdf lists it (test's own look-up)."""
    if kind != "fx":
        return path.read_bytes()
    from pypdf import PdfReader

    attachments = PdfReader(path).attachments
    (name,) = [n for n in attachments if n.lower() in ("factur-x.xml", "zugferd-invoice.xml",
                                                     "xrechnung.xml")]  # fmt: skip
    return attachments[name][0]


def expected(kind: str, path: Path) -> dict[str, Any]:
    root = etree.fromstring(xml_of(kind, path), etree.XMLParser(resolve_entities=False))
    values = expected_cii(root) if root.tag.endswith("CrossIndustryInvoice") else expected_ubl(root)
    for name in ("total_amount", "net_amount", "tax_amount"):
        values[name] = None if values[name] is None else D(values[name])
    return values


def document_of(path: Path, tmp_path: Path | None = None) -> DocumentRef:
    data = path.read_bytes()
    return DocumentRef(
        id=1,
        sha256=hashlib.sha256(data).hexdigest(),
        filename=path.name,
        mime_type="application/pdf" if path.suffix == ".pdf" else "application/xml",
        size_bytes=len(data),
        pages=None,
        received_at=datetime.now(UTC),
        metadata={},
        path=path,
    )


def vendor(tmp_path: Path, **settings: Any) -> EInvoiceVendor:
    context = ConnectorContext(name="e", data_dir=tmp_path, clock=lambda: 0.0)
    return EInvoiceVendor(EInvoiceSettings(**settings), context)


def got(result: CanonicalResult) -> dict[str, Any]:
    """The checked fields as typed values, with the text as written for ids."""
    values: dict[str, Any] = {name: None for name in CHECKED}
    for field in result.fields:
        if field.name not in CHECKED:
            continue
        if field.value_number is not None:
            values[field.name] = field.value_number
        elif field.value_date is not None:
            values[field.name] = field.value_date
        elif field.name in ("supplier_vat_id", "supplier_iban"):
            values[field.name] = field.raw_text
        else:
            values[field.name] = field.value_text
    values["lines"] = [item.net_amount for item in result.line_items]
    return values


def read(kind: str, path: Path) -> CanonicalResult:
    raw = read_document(path, "application/pdf" if kind == "fx" else "application/xml")
    return to_canonical({**raw, "problems": problems(raw)})


# --------------------------------------------------------------------------- the corpus


@pytest.mark.parametrize("base", sorted(RENDERINGS))
def test_every_rendering_matches_its_xml_exactly(base):
    for kind, path in RENDERINGS[base].items():
        want = expected(kind, path)
        have = got(read(kind, path))
        assert have == want, (kind, {k: (have[k], want[k]) for k in want if have[k] != want[k]})
        carried = [name for name in CHECKED if want[name] is not None]
        assert {"invoice_number", "issue_date", "total_amount", "currency"} <= set(carried)


@pytest.mark.parametrize("base", sorted(b for b, r in RENDERINGS.items() if len(r) > 1))
def test_the_renderings_of_one_invoice_give_the_same_fields(base):
    """Where two renderings' XML agree (by XPath), their canonical fields agree; a difference
    is allowed only where the corpus's files themselves differ."""
    kinds = RENDERINGS[base]
    want = {kind: expected(kind, path) for kind, path in kinds.items()}
    have = {kind: got(read(kind, path)) for kind, path in kinds.items()}
    pairs = [(a, b) for a in kinds for b in kinds if a < b]
    for a, b in pairs:
        for name in (*CHECKED, "lines"):
            same_xml = want[a][name] == want[b][name]
            assert (have[a][name] == have[b][name]) == same_xml, (a, b, name)
    agreeing = sum(want[a] == want[b] for a, b in pairs)
    if base.startswith("EN16931_"):
        assert agreeing == len(pairs), "the EN 16931 samples say the same in every syntax"


def test_the_vendor_reads_every_corpus_invoice_that_adds_up_with_confidence_one(tmp_path):
    accepted = refused = 0
    for kinds in RENDERINGS.values():
        for path in kinds.values():
            doc = document_of(path)
            try:
                submitted = vendor(tmp_path).submit(doc, first_attempt=True)
            except TerminalError as exc:
                assert "not_validating" in path.name, (path.name, str(exc))
                assert "BR-CO-" in str(exc)
                refused += 1
                continue
            accepted += 1
            assert submitted.vendor_ref == f"einvoice:{doc.sha256}"
            result = vendor(tmp_path).normalize(submitted.raw)
            assert {f.confidence for f in result.fields} == {1.0}
    assert accepted >= 70 and refused <= 1


def test_credit_notes_come_out_as_credit_notes(tmp_path):
    ubl = FIXTURES / "UBL" / "ubl-tc434-creditnote1.xml"
    result = vendor(tmp_path).normalize(vendor(tmp_path).submit(document_of(ubl)).raw)
    assert result.get("document_type").value_text == "credit_note"
    cii = (FIXTURES / "CII" / "EN16931_Einfach.cii.xml").read_bytes()
    credit = tmp_path / "credit.cii.xml"
    credit.write_bytes(cii.replace(b"<ram:TypeCode>380<", b"<ram:TypeCode>381<", 1))
    result = vendor(tmp_path).normalize(vendor(tmp_path).submit(document_of(credit)).raw)
    assert result.get("document_type").value_text == "credit_note"
    self_billed = FIXTURES / "CII" / "EN16931_Gutschrift.cii.xml"  # 389: a self-billed invoice
    result = vendor(tmp_path).normalize(vendor(tmp_path).submit(document_of(self_billed)).raw)
    assert result.get("document_type").value_text == "invoice"


def test_the_vat_breakdown_and_line_items_are_kept():
    result = read("cii", FIXTURES / "CII" / "EN16931_Einfach.cii.xml")
    extras = {f.name: f.value_number for f in result.fields if f.name.startswith("extra.vat.")}
    assert extras == {
        "extra.vat.S.19.taxable": D("198.00"),
        "extra.vat.S.19.tax": D("37.62"),
        "extra.vat.S.7.taxable": D("275.00"),
        "extra.vat.S.7.tax": D("19.25"),
    }
    first = result.line_items[0]
    assert (first.line_no, first.description, first.item_code) == (1, "Trennblätter A4", "TB100A4")
    assert (first.quantity, first.unit_price, first.net_amount, first.tax_rate) == (
        D("20.0000"), D("9.9000"), D("198.00"), D("19.00")
    )  # fmt: skip
    assert first.extra["unit"] == "H87"


# --------------------------------------------------------------------------- round trip


def _typed(fields: list[FieldValue]) -> dict[str, Any]:
    return {
        f.name: f.value_number if f.value_number is not None else f.value_date or f.value_text
        for f in fields
        if not f.name.startswith("extra.")
    }


@pytest.mark.parametrize("document_type", ["invoice", "credit_note"])
def test_our_ubl_output_reads_back_with_every_field(document_type):
    data = payload(full_fields(document_type), two_rates())
    raw = read_xml(ubl_xml(data, "k"))
    assert problems(raw) == [], "the writer's sums add up"
    back = to_canonical(raw)
    assert _typed(back.fields) == _typed(data.result.fields)
    lines = [(i.line_no, i.description, i.quantity, i.unit_price, i.net_amount, i.tax_rate,
              i.item_code) for i in back.line_items]  # fmt: skip
    assert lines == [(i.line_no, i.description, i.quantity, i.unit_price, i.net_amount,
                      i.tax_rate, i.item_code) for i in data.result.line_items]  # fmt: skip


def test_placeholders_of_our_writer_are_not_read_back_as_values():
    sparse = [FieldValue("total_amount", "119.00", value_number=D("119.00"), currency="EUR"),
              FieldValue("supplier_name", "Lieferant GmbH")]  # fmt: skip
    back = to_canonical(read_xml(ubl_xml(payload(sparse), "k")))
    names = {f.name for f in back.fields if not f.name.startswith("extra.")}
    assert {"total_amount", "supplier_name"} <= names
    assert not names & {"invoice_number", "issue_date"}, "placeholders dropped"
    assert _typed(back.fields)["currency"] == "EUR", "taken from the amount: not a placeholder"
    assert back.line_items == []
    assert _typed(back.fields)["total_amount"] == D("119.00")


def test_a_generated_invoice_with_embedded_ubl_reads_as_its_spec(tmp_path):
    spec = random_spec(11)
    path = tmp_path / "inv.pdf"
    path.write_bytes(einvoice_pdf(spec))
    result = vendor(tmp_path).normalize(vendor(tmp_path).submit(document_of(path)).raw)
    assert result.get("invoice_number").value_text == spec.invoice_number
    assert result.get("total_amount").value_number == spec.total_amount
    assert result.get("supplier_iban").value_text == spec.supplier_iban


# --------------------------------------------------------------------------- refusals


@pytest.fixture
def listener() -> Iterator[tuple[str, list[bytes]]]:
    """A loopback TCP server recording every connection: nothing may fetch from it."""
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.2)
    hits: list[bytes] = []
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            with conn:
                hits.append(conn.recv(1024))

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.getsockname()[1]}/secret.dtd", hits
    stop.set()
    thread.join(2)
    server.close()


BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
<!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">]>
<Invoice xmlns="urn:oasis:names:specification:ubl:schema:xsd:Invoice-2">&lol4;</Invoice>"""


def _xxe(url: str) -> bytes:
    return (
        f'<?xml version="1.0"?>\n<!DOCTYPE Invoice [<!ENTITY net SYSTEM "{url}">'
        '<!ENTITY file SYSTEM "file:///etc/passwd">]>\n'
        '<Invoice xmlns="urn:oasis:names:specification:ubl:schema:xsd:Invoice-2">'
        "<ID>&net;&file;</ID></Invoice>"
    ).encode()


def test_hostile_xml_is_refused_with_a_reason_and_nothing_is_fetched(tmp_path, listener):
    url, hits = listener
    deep = b"<a>" * 200 + b"</a>" * 200
    cases = {
        "billion-laughs.xml": (BILLION_LAUGHS, "DOCTYPE"),
        "xxe.xml": (_xxe(url), "DOCTYPE"),
        "utf16-laughs.xml": (
            BILLION_LAUGHS.replace(b'"1.0"?', b'"1.0" encoding="UTF-16"?')
            .decode()
            .encode("utf-16"),
            "DOCTYPE",
        ),
        "deep.xml": (deep, "nested"),
        "large.xml": (b"<a>" + b" " * safexml.MAX_BYTES + b"</a>", "too large"),
    }
    for name, (data, reason) in cases.items():
        path = tmp_path / name
        path.write_bytes(data)
        with pytest.raises(TerminalError, match=reason):
            vendor(tmp_path).submit(document_of(path))
        if len(data) < safexml.MAX_BYTES:  # the same XML inside a Factur-X PDF
            pdf = tmp_path / f"{name}.pdf"
            pdf.write_bytes(embed(render_pdf(random_spec(3)), data))
            with pytest.raises(TerminalError, match=f"factur-x.xml: .*{reason}"):
                vendor(tmp_path).submit(document_of(pdf))
    assert hits == [], "no entity was fetched"


def test_the_parser_itself_resolves_and_fetches_nothing(listener):
    """Second line of defence, should a DOCTYPE ever get past the first: lxml as configured."""
    url, hits = listener
    root = etree.fromstring(_xxe(url), safexml._parser())
    assert "root:" not in etree.tostring(root).decode()
    with pytest.raises(etree.XMLSyntaxError):
        etree.fromstring(BILLION_LAUGHS.replace(b"&lol4;", b"&lol4;" * 100), safexml._parser())
    assert hits == []


def test_a_pdf_without_an_e_invoice_and_other_types_are_refused_with_the_reason(tmp_path):
    plain = tmp_path / "printed.pdf"
    plain.write_bytes(render_pdf(random_spec(5)))
    with pytest.raises(TerminalError, match="no embedded e-invoice"):
        vendor(tmp_path).submit(document_of(plain))
    other = tmp_path / "other.xml"
    other.write_bytes(b"<?xml version='1.0'?><Order xmlns='urn:x'/>")
    with pytest.raises(TerminalError, match=r"not an EN 16931 e-invoice.*Order"):
        vendor(tmp_path).submit(document_of(other))
    text = replace(document_of(plain), mime_type="text/plain")
    with pytest.raises(TerminalError, match="never text/plain"):
        vendor(tmp_path).submit(text)
    with pytest.raises(NotAnEInvoice, match="not well-formed"):
        read_xml(b"<Invoice>")


def _edited(tmp_path: Path, old: bytes, new: bytes) -> Path:
    data = (FIXTURES / "CII" / "EN16931_Einfach.cii.xml").read_bytes()
    assert old in data
    path = tmp_path / "edited.cii.xml"
    path.write_bytes(data.replace(old, new, 1))
    return path


def test_an_inconsistent_invoice_is_rejected_naming_the_rule(tmp_path):
    grand = b"<ram:GrandTotalAmount>529.87</ram:GrandTotalAmount>"
    path = _edited(tmp_path, grand, grand.replace(b"529.87", b"592.87"))
    with pytest.raises(TerminalError) as refused:
        vendor(tmp_path).submit(document_of(path))
    message = str(refused.value)
    assert message.startswith("inconsistent e-invoice: ")
    assert "BR-CO-15" in message and "592.87" in message
    assert "BR-CO-16" in message, "the amount due no longer follows from the total either"

    trusted = vendor(tmp_path, on_inconsistent="trust").submit(document_of(path))
    assert any("BR-CO-15" in p for p in trusted.raw["problems"])
    result = vendor(tmp_path).normalize(trusted.raw)
    assert result.get("total_amount").value_number == D("592.87")
    assert {f.confidence for f in result.fields} == {None}, "not vouched for"


def test_missing_mandatory_fields_and_a_wrong_breakdown_are_named(tmp_path):
    path = _edited(tmp_path, b"<ram:Name>Lieferant GmbH</ram:Name>", b"")
    with pytest.raises(TerminalError, match="BR-06 seller name"):
        vendor(tmp_path).submit(document_of(path))
    path = _edited(tmp_path, b"<ram:CalculatedAmount>19.25<", b"<ram:CalculatedAmount>19.52<")
    with pytest.raises(TerminalError, match=r"BR-CO-17.*BR-CO-14"):
        vendor(tmp_path).submit(document_of(path))
    line = b"<ram:LineTotalAmount>198.00</ram:LineTotalAmount>"
    path = _edited(tmp_path, line, line.replace(b"198.00", b"189.00"))
    with pytest.raises(TerminalError, match="BR-CO-10"):
        vendor(tmp_path).submit(document_of(path))


# --------------------------------------------------------------------------- intake


def test_intake_takes_xml_files_and_refuses_what_only_claims_to_be_xml(tmp_path):
    xml = tmp_path / "Rechnung.xml"
    xml.write_bytes(b"\xef\xbb\xbf  " + (FIXTURES / "UBL" / "EN16931_Einfach.ubl.xml").read_bytes())
    assert sniff_mime(xml) == "application/xml"
    assert check_file(xml, sniff_mime(xml), max_bytes=1 << 20).verdict is Verdict.OK
    for name, data in (("notes.xml", b"just words"), ("blob.xml", b"<\x00\x01\x02" * 50)):
        (tmp_path / name).write_bytes(data)
        assert sniff_mime(tmp_path / name) is None, name
        assert check_file(tmp_path / name, None, max_bytes=1 << 20).rejected
    fake = tmp_path / "renamed.txt"
    fake.write_bytes(io.BytesIO(b"<Invoice/>").getvalue())
    assert sniff_mime(fake) == "text/plain", "only .xml files are taken as XML"


# --------------------------------------------------------------------------- PDF text vs XML


def test_a_pdf_whose_xml_disagrees_with_its_text_is_not_trusted(tmp_path):
    spec = random_spec(12)
    other = replace(spec, invoice_number="XY-99999")
    path = tmp_path / "mismatch.pdf"
    path.write_bytes(embed(render_pdf(spec), ubl_of(other)))  # the page says another number
    with pytest.raises(TerminalError, match="does not show the XML's invoice number XY-99999"):
        vendor(tmp_path).submit(document_of(path))
    assert vendor(tmp_path, compare_pdf_text=False).submit(document_of(path)).raw["problems"] == []
    agreeing = tmp_path / "agreeing.pdf"
    agreeing.write_bytes(einvoice_pdf(spec))
    raw = vendor(tmp_path).submit(document_of(agreeing)).raw
    assert raw["text_check"] == "invoice number and grand total" and raw["problems"] == []


def test_the_total_is_found_in_any_common_notation_but_not_inside_another_number():
    from connectors.einvoice.pdftext import disagreements

    raw = {"invoice_number": "R 1", "totals": {"grand": "1234.50"}}
    for shown in ("Total 1.234,50 EUR", "Total: 1,234.50", "1234,50 €", "CHF 1'234.50"):
        assert disagreements(raw, [f"Invoice R1\n{shown}"]) == [], shown
    for shown in ("Total 11.234,50", "1.234,501", "Total 1.234,5"):
        assert disagreements(raw, [f"Invoice R 1\n{shown}"]) == [
            "the PDF's text does not show the XML's grand total 1234.50"
        ], shown


def test_fetch_reads_again_what_submit_answered_and_probe_says_what_is_read(tmp_path):
    doc = document_of(FIXTURES / "FX" / "EN16931_Einfach.pdf")
    reader = vendor(tmp_path)
    submitted = reader.submit(doc, first_attempt=True)
    assert submitted.raw["container"] == "pdf" and submitted.raw["attachment"] == "factur-x.xml"
    assert reader.fetch(submitted.vendor_ref, submitted.data, doc) == submitted.raw
    assert reader.submit(doc).vendor_ref == submitted.vendor_ref, "safe to repeat"
    assert reader.poll(submitted.vendor_ref, {}).status == "ready"
    lines = reader.probe()
    assert "application/xml" in lines[0] and "factur-x.xml" in lines[0]
    assert lines[1] == "inconsistent e-invoices: reject"
