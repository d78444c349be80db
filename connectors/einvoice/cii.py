"""Read a UN/CEFACT CII invoice (``rsm:CrossIndustryInvoice``, as in Factur-X / ZUGFeRD 2 and
XRechnung CII) into the common raw form (see ``raw``).

Paths follow the EN 16931 CII syntax binding. Dates in format 102 (``20180305``) become ISO.
Where the invoice states the tax total twice (BT-110 in the invoice currency, BT-111 in the
accounting currency) the one in the invoice currency is taken.
"""

from __future__ import annotations

from typing import Any, Final

from lxml import etree

from connectors.einvoice.raw import ENGINE, VERSION, clean, compact

NS: Final = {
    "rsm": "urn:un:unece:uncefact:data:standard:CrossIndustryInvoice:100",
    "ram": "urn:un:unece:uncefact:data:standard:ReusableAggregateBusinessInformationEntity:100",
    "udt": "urn:un:unece:uncefact:data:standard:UnqualifiedDataType:100",
}
TRADE: Final = "rsm:SupplyChainTradeTransaction/"
AGREEMENT: Final = TRADE + "ram:ApplicableHeaderTradeAgreement/"
SETTLEMENT: Final = TRADE + "ram:ApplicableHeaderTradeSettlement/"
LINE_TAX: Final = "ram:SpecifiedLineTradeSettlement/ram:ApplicableTradeTax/"
SUMS: Final = SETTLEMENT + "ram:SpecifiedTradeSettlementHeaderMonetarySummation/"


def _text(element: etree._Element, path: str) -> str | None:
    found = element.find(path, NS)
    return None if found is None else clean(found.text)


def _date(element: etree._Element, path: str) -> str | None:
    """A ``udt:DateTimeString`` (format 102, ``YYYYMMDD``) as ISO; other formats as written."""
    value = _text(element, path)
    if value is not None and len(value) == 8 and value.isdigit():
        return f"{value[:4]}-{value[4:6]}-{value[6:]}"
    return value


def _vat_id(party: etree._Element | None, scheme: str) -> str | None:
    if party is None:
        return None
    for registration in party.findall("ram:SpecifiedTaxRegistration/ram:ID", NS):
        if registration.get("schemeID") == scheme:
            return clean(registration.text)
    return None


def _party(party: etree._Element | None, *, seller: bool) -> dict[str, Any]:
    if party is None:
        return {}
    values = {"name": _text(party, "ram:Name"), "vat_id": _vat_id(party, "VA")}
    if seller:
        values["tax_number"] = _vat_id(party, "FC")
    return compact(values)


def _tax_total(root: etree._Element, currency: str | None) -> str | None:
    amounts = root.findall(SUMS + "ram:TaxTotalAmount", NS)
    for amount in amounts:
        if currency is None or amount.get("currencyID") in (None, currency):
            return clean(amount.text)
    return clean(amounts[0].text) if amounts else None


def _payment(root: etree._Element) -> tuple[str | None, str | None]:
    """The first credit-transfer account of the payee (IBAN, BIC); direct debits name the
    buyer's account, which is not the supplier's."""
    for means in root.findall(SETTLEMENT + "ram:SpecifiedTradeSettlementPaymentMeans", NS):
        iban = _text(means, "ram:PayeePartyCreditorFinancialAccount/ram:IBANID")
        bic = _text(means, "ram:PayeeSpecifiedCreditorFinancialInstitution/ram:BICID")
        if iban or bic:
            return iban, bic
    return None, None


def _line(element: etree._Element) -> dict[str, Any]:
    quantity = element.find("ram:SpecifiedLineTradeDelivery/ram:BilledQuantity", NS)
    price = "ram:SpecifiedLineTradeAgreement/ram:NetPriceProductTradePrice/"
    return compact(
        {
            "id": _text(element, "ram:AssociatedDocumentLineDocument/ram:LineID"),
            "description": _text(element, "ram:SpecifiedTradeProduct/ram:Name"),
            "item_code": _text(element, "ram:SpecifiedTradeProduct/ram:SellerAssignedID"),
            "quantity": None if quantity is None else clean(quantity.text),
            "unit": None if quantity is None else quantity.get("unitCode"),
            "unit_price": _text(element, price + "ram:ChargeAmount"),
            "base_quantity": _text(element, price + "ram:BasisQuantity"),
            "net_amount": _text(
                element,
                "ram:SpecifiedLineTradeSettlement/"
                "ram:SpecifiedTradeSettlementLineMonetarySummation/ram:LineTotalAmount",
            ),
            "tax_rate": _text(element, LINE_TAX + "ram:RateApplicablePercent"),
        }
    )


def read(root: etree._Element) -> dict[str, Any]:
    """The raw form of a CII invoice root."""
    currency = _text(root, SETTLEMENT + "ram:InvoiceCurrencyCode")
    iban, bic = _payment(root)
    terms = SETTLEMENT + "ram:SpecifiedTradePaymentTerms/"  # the first of several that has it
    vat = [
        compact(
            {
                "category": _text(tax, "ram:CategoryCode"),
                "rate": _text(tax, "ram:RateApplicablePercent"),
                "taxable": _text(tax, "ram:BasisAmount"),
                "tax": _text(tax, "ram:CalculatedAmount"),
            }
        )
        for tax in root.findall(SETTLEMENT + "ram:ApplicableTradeTax", NS)
    ]
    totals = compact(
        {
            "line_total": _text(root, SUMS + "ram:LineTotalAmount"),
            "allowance_total": _text(root, SUMS + "ram:AllowanceTotalAmount"),
            "charge_total": _text(root, SUMS + "ram:ChargeTotalAmount"),
            "net": _text(root, SUMS + "ram:TaxBasisTotalAmount"),
            "tax": _tax_total(root, currency),
            "grand": _text(root, SUMS + "ram:GrandTotalAmount"),
            "prepaid": _text(root, SUMS + "ram:TotalPrepaidAmount"),
            "rounding": _text(root, SUMS + "ram:RoundingAmount"),
            "due": _text(root, SUMS + "ram:DuePayableAmount"),
        }
    )
    return compact(
        {
            "engine": ENGINE,
            "version": VERSION,
            "syntax": "cii",
            "root": etree.QName(root).localname,
            "specification": _text(
                root,
                "rsm:ExchangedDocumentContext/"
                "ram:GuidelineSpecifiedDocumentContextParameter/ram:ID",
            ),
            "type_code": _text(root, "rsm:ExchangedDocument/ram:TypeCode"),
            "invoice_number": _text(root, "rsm:ExchangedDocument/ram:ID"),
            "issue_date": _date(root, "rsm:ExchangedDocument/ram:IssueDateTime/udt:DateTimeString"),
            "due_date": _date(root, terms + "ram:DueDateDateTime/udt:DateTimeString"),
            "currency": currency,
            "buyer_reference": _text(root, AGREEMENT + "ram:BuyerReference"),
            "order_number": _text(
                root, AGREEMENT + "ram:BuyerOrderReferencedDocument/ram:IssuerAssignedID"
            ),
            "payment_reference": _text(root, SETTLEMENT + "ram:PaymentReference"),
            "payment_terms": _text(root, terms + "ram:Description"),
            "iban": iban,
            "bic": bic,
            "seller": _party(root.find(AGREEMENT + "ram:SellerTradeParty", NS), seller=True),
            "buyer": _party(root.find(AGREEMENT + "ram:BuyerTradeParty", NS), seller=False),
            "totals": totals,
            "vat": vat,
            "lines": [
                _line(item)
                for item in root.findall(TRADE + "ram:IncludedSupplyChainTradeLineItem", NS)
            ],
        }
    )
