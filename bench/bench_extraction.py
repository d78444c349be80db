"""Benchmark: how many fields the offline ``local`` extractor reads right, per field.

Two document sets, each compared field by field with a truth that does not come from the
extractor:

1. **Factur-X / ZUGFeRD PDFs** of the EN 16931 corpus (``../shared/corpus/xml-rechnung/FX``,
   or the copy under ``tests/fixtures/einvoice``): the text path alone, the embedded XML
   ignored by the extractor and read here, with plain XPath, as the truth. Target: ≥ 90 % of
   invoice number, issue date, grand total, currency and supplier name right.
2. **The same corpus through the e-invoice path** (``connectors.einvoice``: the CII, the UBL
   and the Factur-X rendering of each invoice): every field the XML carries must come out
   exactly (100 %), and the three renderings must agree.
3. **Generated invoices** (``tests/invoices.py``: varied layouts, English and German, PDF
   and plain text): the truth is the spec each was rendered from. They must keep the
   accuracy the unit tests assert for them (100 %).

    .venv/bin/python bench/bench_extraction.py
    .venv/bin/python bench/bench_extraction.py --corpus ../shared/corpus/xml-rechnung --seeds 100
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterable
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import pypdfium2 as pdfium  # noqa: E402
from lxml import etree  # noqa: E402

from connectors.base import CanonicalResult  # noqa: E402
from connectors.extract.canonical import to_canonical  # noqa: E402
from connectors.extract.rules import find_fields  # noqa: E402
from connectors.extract.text import extract_text  # noqa: E402
from tests.invoices import expected_fields, random_spec, write_invoice  # noqa: E402

TARGET_FIELDS = ("invoice_number", "issue_date", "total_amount", "currency", "supplier_name")
OTHER_FIELDS = ("due_date", "net_amount", "tax_amount", "supplier_vat_id", "supplier_iban")
TARGET = 0.90
CII = {
    "rsm": "urn:un:unece:uncefact:data:standard:CrossIndustryInvoice:100",
    "ram": "urn:un:unece:uncefact:data:standard:ReusableAggregateBusinessInformationEntity:100",
    "udt": "urn:un:unece:uncefact:data:standard:UnqualifiedDataType:100",
}
UBL = {
    "cac": "urn:oasis:names:specification:ubl:schema:xsd:CommonAggregateComponents-2",
    "cbc": "urn:oasis:names:specification:ubl:schema:xsd:CommonBasicComponents-2",
}
_SETTLEMENT = "//ram:ApplicableHeaderTradeSettlement"
_SUMMATION = f"{_SETTLEMENT}/ram:SpecifiedTradeSettlementHeaderMonetarySummation"
_SELLER = "//ram:ApplicableHeaderTradeAgreement/ram:SellerTradeParty"


def default_corpus() -> Path:
    fixtures = ROOT / "tests" / "fixtures" / "einvoice"
    if any(fixtures.rglob("*.pdf")):
        return fixtures
    return ROOT.parent / "shared" / "corpus" / "xml-rechnung"


def embedded_xml(pdf: Path) -> bytes | None:
    """The first XML attachment of a PDF (factur-x.xml, zugferd-invoice.xml, xrechnung.xml)."""
    document = pdfium.PdfDocument(str(pdf))
    try:
        for index in range(document.count_attachments()):
            attachment = document.get_attachment(index)
            if attachment.get_name().lower().endswith(".xml"):
                return bytes(attachment.get_data())
    finally:
        document.close()
    return None


def cii_truth(xml: bytes) -> dict[str, Any]:
    """The fields as the CII XML states them (EN 16931 business terms)."""
    parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False)
    tree = etree.fromstring(xml, parser)

    def first(path: str) -> str | None:
        found = tree.xpath(f"{path}/text()", namespaces=CII)
        return found[0].strip() if found else None

    def day(path: str) -> date | None:
        text = first(path)
        return date(int(text[:4]), int(text[4:6]), int(text[6:8])) if text else None

    def amount(path: str) -> Decimal | None:
        text = first(path)
        return Decimal(text) if text else None

    vat = tree.xpath(
        f"{_SELLER}/ram:SpecifiedTaxRegistration/ram:ID[@schemeID='VA']/text()", namespaces=CII
    )
    due = "//ram:SpecifiedTradePaymentTerms/ram:DueDateDateTime/udt:DateTimeString"
    return {
        "invoice_number": first("/rsm:CrossIndustryInvoice/rsm:ExchangedDocument/ram:ID"),
        "issue_date": day("//rsm:ExchangedDocument/ram:IssueDateTime/udt:DateTimeString"),
        "total_amount": amount(f"{_SUMMATION}/ram:GrandTotalAmount"),
        "currency": first(f"{_SETTLEMENT}/ram:InvoiceCurrencyCode"),
        "supplier_name": first(f"{_SELLER}/ram:Name"),
        "due_date": day(due),
        "net_amount": amount(f"{_SUMMATION}/ram:TaxBasisTotalAmount"),
        "tax_amount": amount(f"{_SUMMATION}/ram:TaxTotalAmount"),
        "supplier_vat_id": vat[0].strip() if vat else None,
        "supplier_iban": first(
            f"{_SETTLEMENT}/ram:SpecifiedTradeSettlementPaymentMeans"
            "/ram:PayeePartyCreditorFinancialAccount/ram:IBANID"
        ),
    }


def ubl_truth(xml: bytes) -> dict[str, Any]:
    """The fields as a UBL Invoice or CreditNote states them (EN 16931 business terms)."""
    parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False)
    tree = etree.fromstring(xml, parser)

    def first(path: str) -> str | None:
        found = tree.xpath(f"{path}/text()", namespaces=UBL)
        return found[0].strip() if found else None

    def day(path: str) -> date | None:
        text = first(path)
        return date.fromisoformat(text) if text else None

    currency = first("/*/cbc:DocumentCurrencyCode")
    tax = tree.xpath(  # the invoice currency's, not the accounting currency's (BT-111)
        "/*/cac:TaxTotal/cbc:TaxAmount[@currencyID=$c]/text()", namespaces=UBL, c=currency or ""
    )
    supplier = "/*/cac:AccountingSupplierParty/cac:Party"
    totals = "/*/cac:LegalMonetaryTotal"
    return {
        "invoice_number": first("/*/cbc:ID"),
        "issue_date": day("/*/cbc:IssueDate"),
        "total_amount": Decimal(t) if (t := first(f"{totals}/cbc:TaxInclusiveAmount")) else None,
        "currency": currency,
        "supplier_name": first(f"{supplier}/cac:PartyLegalEntity/cbc:RegistrationName"),
        "due_date": day("/*/cbc:DueDate") or day("/*/cac:PaymentMeans/cbc:PaymentDueDate"),
        "net_amount": Decimal(t) if (t := first(f"{totals}/cbc:TaxExclusiveAmount")) else None,
        "tax_amount": Decimal(tax[0].strip()) if tax else None,
        "supplier_vat_id": first(
            f"{supplier}/cac:PartyTaxScheme[cac:TaxScheme/cbc:ID='VAT']/cbc:CompanyID"
        ),
        "supplier_iban": first("/*/cac:PaymentMeans/cac:PayeeFinancialAccount/cbc:ID"),
    }


def read(path: Path, mime: str) -> dict[str, Any]:
    """The local extractor's canonical values: dates, numbers, or text."""
    extracted = extract_text(path, mime, ocr="off", max_pages=50, ocr_timeout=60)
    return values_of(to_canonical(find_fields(extracted.pages, method=extracted.method)))


def read_einvoice(path: Path, mime: str) -> dict[str, Any]:
    """The e-invoice path's canonical values (the XML, or the XML inside a PDF)."""
    from connectors.einvoice.canonical import to_canonical as einvoice_canonical
    from connectors.einvoice.reader import read_document

    return values_of(einvoice_canonical(read_document(path, mime)))


def values_of(result: CanonicalResult) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for field in result.fields:
        if field.name in values:
            continue
        if field.value_date is not None:
            values[field.name] = field.value_date
        elif field.value_number is not None:
            values[field.name] = field.value_number
        else:
            values[field.name] = field.value_text
    return values


def _text(value: Any) -> str:
    return re.sub(r"\s+", " ", str(value)).strip().casefold()


def same(name: str, want: Any, got: Any) -> bool:
    if got is None:
        return False
    if name in ("supplier_iban", "supplier_vat_id"):
        return re.sub(r"\s", "", str(want)).upper() == re.sub(r"\s", "", str(got)).upper()
    if isinstance(want, str):
        return _text(want) == _text(got)
    return bool(want == got)


class Tally:
    """Right / carried per field, and what was wrong (for the report)."""

    def __init__(self) -> None:
        self.right: Counter[str] = Counter()
        self.carried: Counter[str] = Counter()
        self.spurious: Counter[str] = Counter()
        """A value found where the truth has none."""
        self.misses: list[str] = []

    def add(
        self, label: str, truth: dict[str, Any], got: dict[str, Any], fields: Iterable[str]
    ) -> None:
        for name in fields:
            want = truth.get(name)
            if want is None:  # the document does not carry it
                if got.get(name) is not None:
                    self.spurious[name] += 1
                    self.misses.append(f"{label}: {name} want none got {got.get(name)!r}")
                continue
            self.carried[name] += 1
            if same(name, want, got.get(name)):
                self.right[name] += 1
            else:
                self.misses.append(f"{label}: {name} want {want!r} got {got.get(name)!r}")

    def share(self, name: str) -> float | None:
        return self.right[name] / self.carried[name] if self.carried[name] else None

    def report(self, title: str, fields: Iterable[str], target: float | None) -> bool:
        print(title)
        met = True
        for name in fields:
            share = self.share(name)
            if share is None:
                print(f"  {name:16} (not carried)")
                continue
            mark = ""
            if target is not None:
                ok = share >= target
                met = met and ok
                mark = "  ok" if ok else f"  BELOW {target:.0%}"
            found = self.spurious[name]
            extra = f"; found {found}x where the XML has none" if found else ""
            counts = f"{self.right[name]:4}/{self.carried[name]:<4}"
            print(f"  {name:16} {counts} {share:6.1%}{mark}{extra}")
        return met


def corpus_run(corpus: Path, verbose: bool) -> bool:
    pdfs = sorted(p for p in corpus.rglob("*.pdf"))
    if not pdfs:
        raise SystemExit(f"no PDFs under {corpus}")
    tally = Tally()
    started = time.perf_counter()
    for pdf in pdfs:
        xml = embedded_xml(pdf)
        if xml is None:
            print(f"  {pdf.name}: no embedded XML, skipped")
            continue
        tally.add(
            pdf.name, cii_truth(xml), read(pdf, "application/pdf"), TARGET_FIELDS + OTHER_FIELDS
        )
    elapsed = time.perf_counter() - started
    print(f"Factur-X PDFs, text path only (XML ignored): {len(pdfs)} documents from {corpus}")
    met = tally.report("  target fields (>= 90 %):", TARGET_FIELDS, TARGET)
    tally.report("  other fields (no target):", OTHER_FIELDS, None)
    print(f"  {elapsed / len(pdfs) * 1000:.0f} ms per document")
    if verbose:
        for miss in tally.misses:
            print("   ", miss)
    return met


def einvoice_run(corpus: Path, verbose: bool) -> bool:
    """Each invoice's CII, UBL and Factur-X rendering against what its own XML states."""
    by_base: dict[str, dict[str, Path]] = {}
    for path in sorted(corpus.rglob("*")):
        if path.suffix not in (".xml", ".pdf"):
            continue
        kind = "fx" if path.suffix == ".pdf" else "cii" if path.name.endswith(".cii.xml") else "ubl"
        base = path.name.split(".", 1)[0]
        by_base.setdefault(base, {})[kind] = path
    tallies = {kind: Tally() for kind in ("cii", "ubl", "fx")}
    fields = TARGET_FIELDS + OTHER_FIELDS
    disagreeing = []
    started, count = time.perf_counter(), 0
    for base, paths in sorted(by_base.items()):
        seen, stated = {}, {}
        for kind, path in paths.items():
            if kind == "fx":
                xml = embedded_xml(path)
                if xml is None:
                    continue
                truth, mime = cii_truth(xml), "application/pdf"
            elif kind == "cii":
                truth, mime = cii_truth(path.read_bytes()), "application/xml"
            else:
                truth, mime = ubl_truth(path.read_bytes()), "application/xml"
            seen[kind] = got = read_einvoice(path, mime)
            stated[kind] = {k: truth.get(k) for k in fields}
            tallies[kind].add(path.name, truth, got, fields)
            count += 1
        read_values = [{k: v.get(k) for k in fields} for v in seen.values()]
        if any(values != read_values[0] for values in read_values[1:]):
            differ = len({repr(s) for s in stated.values()}) > 1
            disagreeing.append(f"{base}{' (their XML differs too)' if differ else ''}")
    elapsed = time.perf_counter() - started
    print(f"E-invoice path (XML): {count} renderings of {len(by_base)} invoices from {corpus}")
    met = True
    for kind, tally in tallies.items():
        met = tally.report(f"  {kind.upper()} (every carried field, 100 %):", fields, 1.0) and met
        if verbose:
            for miss in tally.misses:
                print("   ", miss)
    print(f"  invoices whose renderings disagree: {len(disagreeing)} {disagreeing or ''}")
    print(f"  {elapsed / max(count, 1) * 1000:.1f} ms per rendering")
    return met and not [base for base in disagreeing if "differs too" not in base]


def generated_run(seeds: int, verbose: bool) -> bool:
    tally = Tally()
    with tempfile.TemporaryDirectory(prefix="docrelay-bench-extraction-") as work:
        folder = Path(work)
        total = 0
        for seed in range(seeds):
            for lang in ("en", "de"):
                spec = random_spec(seed, lang)  # type: ignore[arg-type]
                truth = expected_fields(spec)
                for suffix, mime in ((".pdf", "application/pdf"), (".txt", "text/plain")):
                    path = write_invoice(folder / f"{seed}-{lang}{suffix}", spec, lang)  # type: ignore[arg-type]
                    got = read(path, mime)
                    tally.add(path.name, truth, got, truth.keys())
                    total += 1
    names = sorted(tally.carried)
    print(f"Generated invoices: {total} documents ({seeds} seeds x en/de x PDF/text)")
    met = tally.report("  every field (100 %):", names, 1.0)
    if verbose:
        for miss in tally.misses[:50]:
            print("   ", miss)
    return met


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, default=None)
    parser.add_argument("--seeds", type=int, default=50)
    parser.add_argument("-v", "--verbose", action="store_true", help="list every miss")
    args = parser.parse_args()
    corpus = args.corpus or default_corpus()
    corpus_ok = corpus_run(corpus, args.verbose)
    einvoice_ok = einvoice_run(corpus, args.verbose)
    generated_ok = generated_run(args.seeds, args.verbose)
    print("targets:", "met" if corpus_ok and einvoice_ok and generated_ok else "NOT met")


if __name__ == "__main__":
    main()
