"""A canonical result as a UBL 2.1 invoice: XRechnung 3.0 / Peppol BIS Billing 3.0 (EN 16931) XML.

The folder and SFTP destinations write it as ``<document_id>.xml`` (``format = "ubl"``), so an
ERP that takes e-invoices reads what a vendor extracted from a PDF without a custom importer.

What is written, in the order the UBL 2.1 schema's sequences ask for:

* ``CustomizationID`` XRechnung 3.0 (``urn:cen.eu:en16931:2017#compliant#urn:xeinkauf.de:kosit:
  xrechnung_3.0``: German receivers, the first users, require it, and it is an EN 16931 CIUS any
  EN 16931 receiver reads) by default, Peppol BIS Billing 3.0's with ``ubl_profile = "peppol"``;
  ``ProfileID`` Peppol's billing process (``urn:fdc:peppol.eu:2017:poacc:billing:01:1.0``),
  which XRechnung uses too;
* an ``Invoice`` (``InvoiceTypeCode`` 380) or, for ``document_type = credit_note``, a
  ``CreditNote`` (``CreditNoteTypeCode`` 381, ``CreditNoteLine``/``CreditedQuantity``, the due
  date in ``PaymentMeans/PaymentDueDate`` as UBL's credit note has no ``DueDate``). Amounts keep
  the sign they were read with: a credit note printed with negative amounts stays negative;
* ``ID`` (invoice number), ``IssueDate``, ``DueDate``, ``DocumentCurrencyCode``,
  ``OrderReference`` (order number);
* our reference, in an ``AdditionalDocumentReference`` whose ``ID`` is the delivery's
  idempotency key and whose ``DocumentDescription`` reads ``docrelay document_id=7 version=2``
  (plus ``placeholders=…``, below), so a re-export is recognised as the same document and a
  later version as its replacement;
* the supplier and the customer: name as ``PartyLegalEntity/RegistrationName`` (EN 16931's
  BT-27/BT-44), VAT id as ``PartyTaxScheme/CompanyID`` with ``TaxScheme`` VAT;
* ``PaymentMeans``: code 58 (SEPA credit transfer) when an IBAN is known, else 1 (not defined);
  ``PaymentID`` the payment reference, ``PayeeFinancialAccount`` the IBAN with the BIC as its
  ``FinancialInstitutionBranch``; ``PaymentTerms/Note`` the payment terms;
* ``TaxTotal`` with one ``TaxSubtotal`` per tax rate of the line items (category S, or Z for
  0 %), ``LegalMonetaryTotal``, and one line per line item (``ID`` its line number, quantity
  with unit code C62 "one", net amount, item name and seller's item code, tax category, unit
  price).

Missing values. Optional elements are left out. What the schema requires is always written, so
every file is valid against the UBL 2.1 XSD (the tests check that):

* derived where arithmetic gives it: a line's net amount from quantity times unit price, or from its
  total and tax rate, or its total when it has no tax rate; the document's net from its lines or
  ``total - tax``, its tax from ``total - net``, its total from ``net + tax``, the payable amount
  from ``amount_due`` (a prepaid amount making up the difference) or the total; the tax rate of
  a document without line rates from ``tax / net`` when a rate with at most one decimal gives
  the tax back to the cent;
* otherwise a placeholder: an empty invoice number, the day the document was received as issue
  date, EUR as currency, one line carrying the net amount when no line items were read, 0 for
  an amount nothing gives. Each placeholder is named in our reference's ``placeholders=`` (the
  canonical field names, ``line_items``, ``line_items.<n>.net_amount``), so a reader drops them
  and a round trip gives back exactly the fields that were extracted.

What EN 16931 (and XRechnung or Peppol) requires beyond that, and extraction does not give (the
parties' postal addresses and electronic addresses are never extracted, say), is listed by rule
id in an XML comment before the root element (``<!-- docrelay: not EN 16931 complete: … -->``):
the file is then not EN 16931 complete, which a receiver's validator will report, and a person
completes the invoice there.

Decimals are written exactly, never through a float: amounts with two decimals (half up),
unit prices, quantities and percentages as read.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from decimal import ROUND_HALF_UP, Decimal
from typing import Literal

from lxml import etree

from connectors.base import AMOUNT_FIELDS, ExportPayload, LineItem
from connectors.destinations.records import as_text, field_value

CUSTOMIZATION_XRECHNUNG = "urn:cen.eu:en16931:2017#compliant#urn:xeinkauf.de:kosit:xrechnung_3.0"
"""XRechnung 3.0's specification identifier (BT-24): the default."""
CUSTOMIZATION_PEPPOL = "urn:cen.eu:en16931:2017#compliant#urn:fdc:peppol.eu:2017:poacc:billing:3.0"
"""Peppol BIS Billing 3.0's specification identifier."""
UblProfile = Literal["xrechnung", "peppol"]
"""Which CIUS the document claims: a destination's ``ubl_profile`` setting."""
CUSTOMIZATIONS: dict[str, str] = {
    "xrechnung": CUSTOMIZATION_XRECHNUNG,
    "peppol": CUSTOMIZATION_PEPPOL,
}
PROFILE_PEPPOL_BILLING = "urn:fdc:peppol.eu:2017:poacc:billing:01:1.0"
"""The business process (BT-23): Peppol's billing process, which XRechnung uses too."""

NS_INVOICE = "urn:oasis:names:specification:ubl:schema:xsd:Invoice-2"
NS_CREDIT_NOTE = "urn:oasis:names:specification:ubl:schema:xsd:CreditNote-2"
NS_CAC = "urn:oasis:names:specification:ubl:schema:xsd:CommonAggregateComponents-2"
NS_CBC = "urn:oasis:names:specification:ubl:schema:xsd:CommonBasicComponents-2"

REFERENCE_PREFIX = "docrelay"
"""How our ``AdditionalDocumentReference/DocumentDescription`` begins, for a reader to find it."""
PLACEHOLDER_CURRENCY = "EUR"
"""The currency written when none was read (the schema requires one on every amount)."""
UNIT_ONE = "C62"
"""UN/ECE Rec. 20 "one": the unit of a quantity read without one."""
CENT = Decimal("0.01")


def money(value: Decimal) -> str:
    """An amount as EN 16931 writes it: two decimals, half up, no ``-0.00``."""
    rounded = value.quantize(CENT, rounding=ROUND_HALF_UP)
    return format(rounded if rounded else abs(rounded), "f")


def plain(value: Decimal) -> str:
    """A quantity, unit price or percentage as read: no exponent, no trailing zeros."""
    return str(as_text(value))


def tax_category(rate: Decimal) -> str:
    """S (standard) for a positive rate, Z (zero rated) for 0 %: all a rate alone tells."""
    return "S" if rate else "Z"


@dataclass(slots=True)
class Line:
    """One line as written: its net amount always set (derived or a placeholder)."""

    number: int
    net: Decimal
    item: LineItem | None
    rate: Decimal | None = None
    """The tax rate of a placeholder line (the document's one rate, where known)."""


@dataclass(slots=True)
class TaxGroup:
    """One ``TaxSubtotal``: a rate and the taxable and tax amounts at it."""

    rate: Decimal
    taxable: Decimal
    tax: Decimal


@dataclass(slots=True)
class Plan:
    """What one document's XML holds, every derivation done: built before any XML is."""

    credit_note: bool
    invoice_number: str
    issue_date: date
    due_date: date | None
    currency: str
    texts: dict[str, str | None]
    lines: list[Line]
    groups: list[TaxGroup]
    net: Decimal | None
    tax: Decimal | None
    total: Decimal | None
    payable: Decimal
    prepaid: Decimal | None
    placeholders: list[str] = field(default_factory=list)


TEXT_FIELDS = (
    "supplier_name",
    "supplier_vat_id",
    "supplier_iban",
    "supplier_bic",
    "customer_name",
    "customer_vat_id",
    "order_number",
    "payment_reference",
    "payment_terms",
)


def _line_net(item: LineItem) -> Decimal | None:
    if item.net_amount is not None:
        return item.net_amount
    if item.quantity is not None and item.unit_price is not None:
        return (item.quantity * item.unit_price).quantize(CENT, rounding=ROUND_HALF_UP)
    if item.total_amount is not None and item.tax_rate is not None:
        gross = item.total_amount / (1 + item.tax_rate / 100)
        return gross.quantize(CENT, rounding=ROUND_HALF_UP)
    return item.total_amount


def _tax_of(taxable: Decimal, rate: Decimal) -> Decimal:
    return (taxable * rate / 100).quantize(CENT, rounding=ROUND_HALF_UP)


def _rate_from(net: Decimal, tax: Decimal) -> Decimal | None:
    """The rate that gives ``tax`` on ``net`` to the cent, if ``tax / net`` is one with at
    most one decimal, as VAT rates are (19, 7, 5.5, 8.1): else the amounts cover several."""
    if not net:
        return None
    rate = (tax * 100 / net).quantize(Decimal("0.1"), rounding=ROUND_HALF_UP).normalize()
    return rate if _tax_of(net, rate) == tax.quantize(CENT, rounding=ROUND_HALF_UP) else None


def plan(payload: ExportPayload) -> Plan:
    """Every value the XML carries, derived or a named placeholder where none was read."""
    result = payload.result
    placeholders: list[str] = []

    def text(name: str) -> str | None:
        value = result.get(name)
        shown = None if value is None else field_value(value)
        return shown or None

    def number(name: str) -> Decimal | None:
        value = result.get(name)
        return None if value is None else value.value_number

    def day(name: str) -> date | None:
        value = result.get(name)
        return None if value is None else value.value_date

    texts = {name: text(name) for name in TEXT_FIELDS}
    invoice_number = text("invoice_number")
    if invoice_number is None:
        placeholders.append("invoice_number")
    issue_date = day("issue_date")
    if issue_date is None:
        placeholders.append("issue_date")
        issue_date = payload.received_at.date()
    currency = text("currency") or next(
        (v.currency for v in result.fields if v.currency and v.name in AMOUNT_FIELDS), None
    )
    if currency is None:
        placeholders.append("currency")
        currency = PLACEHOLDER_CURRENCY

    lines: list[Line] = []
    line_sum: Decimal | None = Decimal(0) if result.line_items else None
    numbers = [item.line_no for item in result.line_items]
    if len(set(numbers)) != len(numbers) or min(numbers, default=1) < 1:
        numbers = list(range(1, len(numbers) + 1))  # line ids must be unique: count instead
    for number_, item in zip(numbers, result.line_items, strict=True):
        net = _line_net(item)
        if net is None:
            placeholders.append(f"line_items.{number_}.net_amount")
            line_sum = None  # the lines no longer give the document's net
        elif line_sum is not None:
            line_sum += net
        lines.append(Line(number_, Decimal(0) if net is None else net, item))

    total, tax, net = number("total_amount"), number("tax_amount"), number("net_amount")
    if net is None:
        if line_sum is not None:
            net = line_sum
        elif total is not None and tax is not None:
            net = total - tax
    if tax is None and total is not None and net is not None:
        tax = total - net

    groups: list[TaxGroup] = []
    rated = [line for line in lines if line.item is not None and line.item.tax_rate is not None]
    if rated:
        rates: dict[Decimal, Decimal] = {}
        for line in rated:
            rate = line.item.tax_rate.normalize()  # type: ignore[union-attr]
            rates[rate] = rates.get(rate, Decimal(0)) + line.net
        for rate, taxable in sorted(rates.items()):
            groups.append(TaxGroup(rate, taxable, _tax_of(taxable, rate)))
        if len(groups) == 1 and len(rated) == len(lines):
            only = groups[0]
            only.taxable = net if net is not None else only.taxable
            only.tax = tax if tax is not None else _tax_of(only.taxable, only.rate)
    elif net is not None and tax is not None:
        rate = _rate_from(net, tax)
        if rate is not None:
            groups.append(TaxGroup(rate, net, tax))
    if tax is None and groups:
        tax = sum((group.tax for group in groups), Decimal(0))
    if total is None and net is not None and tax is not None:
        total = net + tax

    if not lines:
        placeholders.append("line_items")
        rate = groups[0].rate if len(groups) == 1 else None
        lines.append(Line(1, net if net is not None else Decimal(0), None, rate))

    amount_due = number("amount_due")
    payable = amount_due if amount_due is not None else total
    prepaid = total - amount_due if total is not None and amount_due is not None else None
    if payable is None:
        placeholders.append("amount_due")
        payable = Decimal(0)
    return Plan(
        credit_note=text("document_type") == "credit_note",
        invoice_number=invoice_number or "",
        issue_date=issue_date,
        due_date=day("due_date"),
        currency=currency,
        texts=texts,
        lines=lines,
        groups=groups,
        net=net,
        tax=tax,
        total=total,
        payable=payable,
        prepaid=prepaid or None,
        placeholders=placeholders,
    )


def _lines_without(p: Plan, name: str) -> str | None:
    """The numbers of the lines read without ``name`` (none for a placeholder line)."""
    missing = [
        str(line.number) for line in p.lines if line.item and getattr(line.item, name) is None
    ]
    return ", ".join(missing) if missing else None


def gaps(p: Plan, profile: UblProfile) -> list[str]:
    """What EN 16931 (by its rule ids) and the profile require that the document lacks, for
    the comment that tells a person what to complete."""
    out = [
        rule
        for missing, rule in (
            ("invoice_number" in p.placeholders, "BR-02 invoice number"),
            ("issue_date" in p.placeholders, "BR-03 issue date"),
            ("currency" in p.placeholders, "BR-05 currency"),
            (p.texts["supplier_name"] is None, "BR-06 seller name"),
            (p.texts["customer_name"] is None, "BR-07 buyer name"),
            (True, "BR-08 seller postal address"),
            (True, "BR-10 buyer postal address"),
            (p.net is None, "BR-13 total without VAT"),
            (p.total is None, "BR-14 total with VAT"),
            ("amount_due" in p.placeholders, "BR-15 amount due"),
            ("line_items" in p.placeholders, "BR-16 invoice lines (none read)"),
            (not p.groups, "BR-CO-18 VAT breakdown (no tax rate read)"),
        )
        if missing
    ]
    nets = [name.split(".")[1] for name in p.placeholders if name.endswith(".net_amount")]
    if nets:
        out.append(f"BR-24 net amount (lines {', '.join(nets)})")
    for name, rule in (
        ("quantity", "BR-22 quantity"),
        ("description", "BR-25 item name"),
        ("unit_price", "BR-26 net price"),
        ("tax_rate", "BR-CO-04 VAT category"),
    ):
        lines = _lines_without(p, name)
        if lines is not None:
            out.append(f"{rule} (lines {lines})")
    out.append("BT-34 and BT-49 electronic addresses")
    if profile == "xrechnung":
        if not _has_payment_means(p):
            out.append("BR-DE-1 payment instructions")
        out.extend(("BR-DE-2 seller contact", "BR-DE-15 buyer reference"))
    elif p.texts["order_number"] is None:
        out.append("BT-10 buyer reference or BT-13 order reference")
    return out


class _Writer:
    """Appends UBL elements in schema order; one per document."""

    def __init__(self, currency: str) -> None:
        self.currency = currency

    @staticmethod
    def cac(parent: etree._Element, name: str) -> etree._Element:
        return etree.SubElement(parent, f"{{{NS_CAC}}}{name}")

    @staticmethod
    def cbc(parent: etree._Element, name: str, text: str, **attributes: str) -> etree._Element:
        element = etree.SubElement(parent, f"{{{NS_CBC}}}{name}", attributes)
        element.text = text
        return element

    def amount(self, parent: etree._Element, name: str, value: Decimal) -> None:
        self.cbc(parent, name, money(value), currencyID=self.currency)

    def tax_scheme(self, parent: etree._Element) -> None:
        self.cbc(self.cac(parent, "TaxScheme"), "ID", "VAT")

    def category(self, parent: etree._Element, name: str, rate: Decimal) -> None:
        element = self.cac(parent, name)
        self.cbc(element, "ID", tax_category(rate))
        self.cbc(element, "Percent", plain(rate))
        self.tax_scheme(element)

    def party(self, parent: etree._Element, name: str | None, vat_id: str | None) -> None:
        if name is None and vat_id is None:
            return
        party = self.cac(parent, "Party")
        if vat_id is not None:
            scheme = self.cac(party, "PartyTaxScheme")
            self.cbc(scheme, "CompanyID", vat_id)
            self.tax_scheme(scheme)
        if name is not None:
            self.cbc(self.cac(party, "PartyLegalEntity"), "RegistrationName", name)


def ubl_xml(
    payload: ExportPayload,
    idempotency_key: str,
    *,
    indent: int | None = 2,
    profile: UblProfile = "xrechnung",
) -> bytes:
    """The document as UBL 2.1 XML bytes (UTF-8, with declaration); the same payload always
    gives the same bytes, so a repeated export rewrites an identical file."""
    p = plan(payload)
    w = _Writer(p.currency)
    kind = "CreditNote" if p.credit_note else "Invoice"
    namespace = NS_CREDIT_NOTE if p.credit_note else NS_INVOICE
    root = etree.Element(
        f"{{{namespace}}}{kind}", nsmap={None: namespace, "cac": NS_CAC, "cbc": NS_CBC}
    )
    w.cbc(root, "CustomizationID", CUSTOMIZATIONS[profile])
    w.cbc(root, "ProfileID", PROFILE_PEPPOL_BILLING)
    w.cbc(root, "ID", p.invoice_number)
    w.cbc(root, "IssueDate", p.issue_date.isoformat())
    if p.due_date is not None and not p.credit_note:
        w.cbc(root, "DueDate", p.due_date.isoformat())
    w.cbc(root, f"{kind}TypeCode", "381" if p.credit_note else "380")
    w.cbc(root, "DocumentCurrencyCode", p.currency)
    texts = p.texts
    if texts["order_number"] is not None:
        w.cbc(w.cac(root, "OrderReference"), "ID", texts["order_number"])
    reference = w.cac(root, "AdditionalDocumentReference")
    w.cbc(reference, "ID", idempotency_key)
    description = f"{REFERENCE_PREFIX} document_id={payload.document_id} version={payload.version}"
    if p.placeholders:
        description += " placeholders=" + ",".join(p.placeholders)
    w.cbc(reference, "DocumentDescription", description)
    w.party(
        w.cac(root, "AccountingSupplierParty"), texts["supplier_name"], texts["supplier_vat_id"]
    )
    w.party(
        w.cac(root, "AccountingCustomerParty"), texts["customer_name"], texts["customer_vat_id"]
    )
    _payment(w, root, p)
    if p.tax is not None or p.groups:
        total = w.cac(root, "TaxTotal")
        w.amount(total, "TaxAmount", p.tax if p.tax is not None else Decimal(0))
        for group in p.groups:
            subtotal = w.cac(total, "TaxSubtotal")
            w.amount(subtotal, "TaxableAmount", group.taxable)
            w.amount(subtotal, "TaxAmount", group.tax)
            w.category(subtotal, "TaxCategory", group.rate)
    _totals(w, root, p)
    for line in p.lines:
        _line(w, root, line, credit_note=p.credit_note)
    if indent is not None:
        etree.indent(root, space=" " * indent)
    head = b'<?xml version="1.0" encoding="UTF-8"?>\n'
    missing = gaps(p, profile)
    if missing:
        head += f"<!-- docrelay: not EN 16931 complete: {'; '.join(missing)} -->\n".encode()
    return head + etree.tostring(root, encoding="UTF-8", xml_declaration=False) + b"\n"


def _has_payment_means(p: Plan) -> bool:
    texts = p.texts
    known = (texts["supplier_iban"], texts["supplier_bic"], texts["payment_reference"])
    return any(known) or (p.credit_note and p.due_date is not None)


def _payment(w: _Writer, root: etree._Element, p: Plan) -> None:
    iban, bic = p.texts["supplier_iban"], p.texts["supplier_bic"]
    reference = p.texts["payment_reference"]
    due = p.due_date if p.credit_note else None
    if _has_payment_means(p):
        means = w.cac(root, "PaymentMeans")
        w.cbc(means, "PaymentMeansCode", "58" if iban else "1")
        if due is not None:
            w.cbc(means, "PaymentDueDate", due.isoformat())
        if reference is not None:
            w.cbc(means, "PaymentID", reference)
        if iban or bic:
            account = w.cac(means, "PayeeFinancialAccount")
            if iban is not None:
                w.cbc(account, "ID", iban)
            if bic is not None:
                w.cbc(w.cac(account, "FinancialInstitutionBranch"), "ID", bic)
    if p.texts["payment_terms"] is not None:
        w.cbc(w.cac(root, "PaymentTerms"), "Note", p.texts["payment_terms"])


def _totals(w: _Writer, root: etree._Element, p: Plan) -> None:
    totals = w.cac(root, "LegalMonetaryTotal")
    w.amount(totals, "LineExtensionAmount", sum((line.net for line in p.lines), Decimal(0)))
    if p.net is not None:
        w.amount(totals, "TaxExclusiveAmount", p.net)
    if p.total is not None:
        w.amount(totals, "TaxInclusiveAmount", p.total)
    if p.prepaid is not None:
        w.amount(totals, "PrepaidAmount", p.prepaid)
    w.amount(totals, "PayableAmount", p.payable)


def _line(w: _Writer, root: etree._Element, line: Line, *, credit_note: bool) -> None:
    element = w.cac(root, "CreditNoteLine" if credit_note else "InvoiceLine")
    item = line.item
    w.cbc(element, "ID", str(line.number))
    if item is not None and item.quantity is not None:
        quantity = "CreditedQuantity" if credit_note else "InvoicedQuantity"
        w.cbc(element, quantity, plain(item.quantity), unitCode=UNIT_ONE)
    w.amount(element, "LineExtensionAmount", line.net)
    described = w.cac(element, "Item")
    if item is None:
        if line.rate is not None:
            w.category(described, "ClassifiedTaxCategory", line.rate)
        return
    if item.description:
        w.cbc(described, "Name", item.description)
    if item.item_code:
        w.cbc(w.cac(described, "SellersItemIdentification"), "ID", item.item_code)
    if item.tax_rate is not None:
        w.category(described, "ClassifiedTaxCategory", item.tax_rate.normalize())
    if item.unit_price is not None:
        price = w.cac(element, "Price")
        w.cbc(price, "PriceAmount", plain(item.unit_price), currencyID=w.currency)
