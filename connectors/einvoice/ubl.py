"""Read a UBL 2.1 ``Invoice`` or ``CreditNote`` (Peppol BIS 3, XRechnung UBL) into the common
raw form (see ``raw``).

Paths follow the EN 16931 UBL syntax binding. The seller's and buyer's name is the legal name
(``PartyLegalEntity/RegistrationName``, BT-27/BT-44), else the trading name (``PartyName``);
the VAT id is the ``PartyTaxScheme`` whose scheme is VAT, the tax number the other one. A credit
note's due date is ``PaymentMeans/PaymentDueDate`` (UBL's credit note has no ``DueDate``).
A file written by docrelay's own UBL writer names the fields it had to fill with placeholders;
they are listed in ``placeholders`` and the mapping leaves them out (a round trip gives back
exactly what was extracted).
"""

from __future__ import annotations

from typing import Any, Final

from lxml import etree

from connectors.destinations.ubl import REFERENCE_PREFIX
from connectors.einvoice.raw import ENGINE, VERSION, clean, compact

NS: Final = {
    "cac": "urn:oasis:names:specification:ubl:schema:xsd:CommonAggregateComponents-2",
    "cbc": "urn:oasis:names:specification:ubl:schema:xsd:CommonBasicComponents-2",
}
SUMS: Final = "cac:LegalMonetaryTotal/"


def _text(element: etree._Element | None, path: str) -> str | None:
    if element is None:
        return None
    found = element.find(path, NS)
    return None if found is None else clean(found.text)


def _party(party: etree._Element | None, *, seller: bool) -> dict[str, Any]:
    if party is None:
        return {}
    vat_id = tax_number = None
    for scheme in party.findall("cac:PartyTaxScheme", NS):
        company = _text(scheme, "cbc:CompanyID")
        if _text(scheme, "cac:TaxScheme/cbc:ID") == "VAT":
            vat_id = vat_id or company
        else:
            tax_number = tax_number or company
    values = {
        "name": _text(party, "cac:PartyLegalEntity/cbc:RegistrationName")
        or _text(party, "cac:PartyName/cbc:Name"),
        "vat_id": vat_id,
    }
    if seller:
        values["tax_number"] = tax_number
    return compact(values)


def _payment(root: etree._Element) -> tuple[str | None, str | None, str | None, str | None]:
    """(IBAN, BIC, payment reference, credit note due date) from the first payment means that
    names a payee account, else from the first one."""
    means = root.findall("cac:PaymentMeans", NS)
    chosen = next(
        (m for m in means if m.find("cac:PayeeFinancialAccount", NS) is not None),
        means[0] if means else None,
    )
    return (
        _text(chosen, "cac:PayeeFinancialAccount/cbc:ID"),
        _text(chosen, "cac:PayeeFinancialAccount/cac:FinancialInstitutionBranch/cbc:ID"),
        _text(chosen, "cbc:PaymentID"),
        _text(chosen, "cbc:PaymentDueDate"),
    )


def _tax_total(root: etree._Element, currency: str | None) -> etree._Element | None:
    """The ``TaxTotal`` in the invoice currency (a second one may give the accounting one's)."""
    totals = root.findall("cac:TaxTotal", NS)
    for total in totals:
        amount = total.find("cbc:TaxAmount", NS)
        if amount is not None and (currency is None or amount.get("currencyID") == currency):
            return total
    return totals[0] if totals else None


def _line(element: etree._Element, credit_note: bool) -> dict[str, Any]:
    quantity = element.find("cbc:CreditedQuantity" if credit_note else "cbc:InvoicedQuantity", NS)
    return compact(
        {
            "id": _text(element, "cbc:ID"),
            "description": _text(element, "cac:Item/cbc:Name"),
            "item_code": _text(element, "cac:Item/cac:SellersItemIdentification/cbc:ID"),
            "quantity": None if quantity is None else clean(quantity.text),
            "unit": None if quantity is None else quantity.get("unitCode"),
            "unit_price": _text(element, "cac:Price/cbc:PriceAmount"),
            "base_quantity": _text(element, "cac:Price/cbc:BaseQuantity"),
            "net_amount": _text(element, "cbc:LineExtensionAmount"),
            "tax_rate": _text(element, "cac:Item/cac:ClassifiedTaxCategory/cbc:Percent"),
        }
    )


def _placeholders(root: etree._Element) -> list[str] | None:
    """The fields docrelay's own UBL writer filled with placeholders (named in its
    ``AdditionalDocumentReference``, see ``connectors.destinations.ubl``), so they are not read
    back as values; None for any other invoice."""
    for reference in root.findall("cac:AdditionalDocumentReference", NS):
        description = _text(reference, "cbc:DocumentDescription") or ""
        if description.startswith(f"{REFERENCE_PREFIX} document_id="):
            for part in description.split()[1:]:
                key, _, value = part.partition("=")
                if key == "placeholders":
                    return [name for name in value.split(",") if name]
            return []
    return None


def read(root: etree._Element) -> dict[str, Any]:
    """The raw form of a UBL Invoice or CreditNote root."""
    kind = etree.QName(root).localname
    credit_note = kind == "CreditNote"
    currency = _text(root, "cbc:DocumentCurrencyCode")
    iban, bic, payment_reference, means_due = _payment(root)
    tax_total = _tax_total(root, currency)
    vat = [
        compact(
            {
                "category": _text(subtotal, "cac:TaxCategory/cbc:ID"),
                "rate": _text(subtotal, "cac:TaxCategory/cbc:Percent"),
                "taxable": _text(subtotal, "cbc:TaxableAmount"),
                "tax": _text(subtotal, "cbc:TaxAmount"),
            }
        )
        for subtotal in ([] if tax_total is None else tax_total.findall("cac:TaxSubtotal", NS))
    ]
    totals = compact(
        {
            "line_total": _text(root, SUMS + "cbc:LineExtensionAmount"),
            "allowance_total": _text(root, SUMS + "cbc:AllowanceTotalAmount"),
            "charge_total": _text(root, SUMS + "cbc:ChargeTotalAmount"),
            "net": _text(root, SUMS + "cbc:TaxExclusiveAmount"),
            "tax": _text(tax_total, "cbc:TaxAmount"),
            "grand": _text(root, SUMS + "cbc:TaxInclusiveAmount"),
            "prepaid": _text(root, SUMS + "cbc:PrepaidAmount"),
            "rounding": _text(root, SUMS + "cbc:PayableRoundingAmount"),
            "due": _text(root, SUMS + "cbc:PayableAmount"),
        }
    )
    terms = [clean(n.text) for n in root.findall("cac:PaymentTerms/cbc:Note", NS)]
    line_tag = "cac:CreditNoteLine" if credit_note else "cac:InvoiceLine"
    return compact(
        {
            "engine": ENGINE,
            "version": VERSION,
            "syntax": "ubl",
            "root": kind,
            "specification": _text(root, "cbc:CustomizationID"),
            "type_code": _text(root, f"cbc:{kind}TypeCode"),
            "invoice_number": _text(root, "cbc:ID"),
            "issue_date": _text(root, "cbc:IssueDate"),
            "due_date": _text(root, "cbc:DueDate") or means_due,
            "currency": currency,
            "buyer_reference": _text(root, "cbc:BuyerReference"),
            "order_number": _text(root, "cac:OrderReference/cbc:ID"),
            "payment_reference": payment_reference,
            "payment_terms": " ".join(t for t in terms if t) or None,
            "iban": iban,
            "bic": bic,
            "seller": _party(root.find("cac:AccountingSupplierParty/cac:Party", NS), seller=True),
            "buyer": _party(root.find("cac:AccountingCustomerParty/cac:Party", NS), seller=False),
            "totals": totals,
            "vat": vat,
            "lines": [_line(line, credit_note) for line in root.findall(line_tag, NS)],
            "placeholders": _placeholders(root),
        }
    )
