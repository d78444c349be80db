"""The rule-based field finder: labelled values in English and German invoices.

How it reads a document (see ``connectors/vendors/local/NOTES.md`` for the label lists and
limits):

* Text is split into lines; whitespace runs are collapsed (pypdfium2 does that anyway), so no
  rule depends on column spacing.
* One compiled alternation of every known label is run over each line. A label counts at the
  start of a line, or mid-line when a colon follows it (``Invoice No.: 1 Date: 2``); IBAN, BIC,
  VAT-id and a few "payable by" phrases also count mid-line without a colon because their values
  are validated strictly. Labels we do not extract (``Delivery date``, ``Customer No.``) are in
  the same alternation so that they end the previous value and are never misread as a generic
  ``Date`` or ``Customer``.
* A label's value runs to the next label on the line; when the label stands alone on its line
  the value is the next line. Every value is validated for its field's kind (an amount must end
  the value and look like money, a date must parse, an IBAN must pass mod-97 …); the first valid
  candidate in reading order wins. Tax amounts are the exception: one per printed rate is kept
  and the mapping adds them up.
* Line items: a header line naming a description and a quantity column starts a table; each
  following line is read from the right (line amount, optional ``19 %``, unit price, optional
  unit, quantity) until a totals line.

The result is plain JSON (the "raw vendor result" stored verbatim); ``mapping.normalize`` turns
it into canonical values. Regular expressions are compiled once, at import.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Final

from connectors.base import DOCUMENT_FIELDS
from connectors.normalize import (
    find_currency,
    find_date,
    normalize_currency,
    normalize_vat_id,
    parse_amount,
    parse_decimal,
    validate_bic,
    validate_iban,
)

ENGINE: Final = "docrelay-local"
VERSION: Final = 1

# --------------------------------------------------------------------------- label table

_RATE = r"\d{1,2}(?:[.,]\d{1,2})?\s?%"
_TAXW = r"(?:VAT|Tax|MwSt\.?|MWST|USt\.?|Umsatzsteuer|Mehrwertsteuer|GST)"
_INCL = (
    r"\s*\(?\s*(?:incl\.?|including|inkl\.?|inclusive|einschl\.?)"
    rf"\s*(?:{_RATE}\s*)?{_TAXW}\s*\)?"
)
_EXCL = (
    rf"\s*\(?\s*(?:excl\.?|excluding|exkl\.?|zzgl\.?|ohne|without|before|net|netto)"
    rf"(?:\s*(?:{_RATE}\s*)?{_TAXW})?\s*\)?"
)
_TAX_GENERIC = (
    r"(?:(?:zzgl\.?|zuzügl\.?|plus|add|incl\.?|inkl\.?|including|enthaltene|enth\.|davon)\s+)?"
    rf"(?:{_RATE}\s*)?"
    r"(?:VAT|Sales\s+tax|Tax|MwSt\.?|MWST|USt\.?|Umsatzsteuer|Mehrwertsteuer|GST|HST|IVA|TVA|BTW)"
    rf"(?:\s*\(?\s*{_RATE}\s*\)?)?"
    r"(?:\s+(?:on|auf|von)\s+(?:[€$£]\s?)?\d[\d.,']*(?:\s?(?:€|EUR|USD|GBP|CHF))?)?"
)

# (field or None for "known, not extracted", pattern, flags). Order matters: at one position
# the first alternative that matches wins, so specific phrases come before generic words.
# Flags: "i" = may match mid-line without a colon; "s" = same-line value needs a colon;
# "T" = a total-tax label (preferred over per-rate tax lines).
_LABEL_TABLE: Final[list[tuple[str | None, str, str]]] = [
    # -- labels we recognise only so that they do not pass for something else
    (
        None,
        r"(?:delivery|order|service|shipping|shipment|dispatch|performance|supply|print|posting)"
        r"\s+date|date\s+of\s+(?:supply|delivery|service|order)|tax\s+point|tax\s+invoice"
        r"|(?:Liefer|Leistungs|Bestell|Auftrags|Versand|Buchungs|Druck)datum|Leistungszeitraum"
        r"|(?:Service|Billing|Delivery)\s+period|Abrechnungszeitraum|Lieferzeitraum",
        "",
    ),
    (
        None,
        r"Customer\s*(?:No\.?|Nr\.?|number|ID|account)|Account\s*(?:No\.?|number)"
        r"|Kunden\s*-?\s*(?:nummer|Nr\.?)|Kd\.?\s*-?\s*Nr\.?|Debitor(?:en)?\s*-?\s*(?:nummer|Nr\.?)"
        r"|Steuer\s*-?\s*(?:nummer|Nr\.?)|St\.?\s*-?\s*Nr\.?|(?:VAT|Tax)\s+rate|Steuersatz"
        r"|(?:MwSt|USt)\.?\s*-?\s*Satz|(?:Your|Our)\s+(?:reference|ref\.?)|(?:Ihr|Unser)\s+Zeichen"
        r"|(?:Ihre|Unsere)\s+Referenz|Delivery\s+note(?:\s*No\.?)?|Lieferschein\S*"
        r"|Contract\s*(?:No\.?|number)|Vertrags\s*-?\s*(?:nummer|Nr\.?)|Ship\s+to|Deliver\s+to"
        r"|Lieferadresse|Lieferanschrift|Amount\s+paid|Already\s+paid|Bereits\s+bezahlt"
        r"|Anzahlung|Page|Seite|Phone|Tel\.?|Telefon|Fax|E-?Mail|Contact|Ansprechpartner"
        r"|Bank|Bankverbindung|Kontoinhaber|Account\s+holder|Geschäftsführer|Amtsgericht"
        r"|Registergericht|Handelsregister",
        "",
    ),
    # -- ids
    (
        "customer_vat_id",
        r"(?:Customer|Client|Buyer|Recipient|Your)(?:'s)?\s+(?:VAT|Tax)\s*(?:Reg\.?\s*)?"
        r"(?:ID|No\.?|number|Nr\.?)"
        r"|(?:Ihre|Kunden)\s*-?\s*(?:USt\.?\s*-?\s*Id(?:ent)?\.?\s*-?\s*Nr\.?|USt\.?\s*-?\s*ID|UID)"
        r"|USt\.?\s*-?\s*Id(?:ent)?\.?\s*-?\s*Nr\.?\s+des\s+(?:Kunden|Leistungsempfängers)",
        "i",
    ),
    (
        "supplier_vat_id",
        r"VAT\s*(?:Reg(?:istration)?\.?\s*)?(?:ID|No\.?|number|Nr\.?)|VAT\s*-\s*ID"
        r"|Tax\s*(?:ID|No\.?|number)|USt\.?\s*-?\s*Id(?:ent)?\.?\s*-?\s*Nr\.?|USt\.?\s*-?\s*ID"
        r"|UStID|Umsatzsteuer\s*-?\s*(?:ID|Identifikationsnummer|Id\.?\s*-?\s*Nr\.?)"
        r"|UID(?:\s*-?\s*Nr\.?)?|MWST\s*-?\s*Nr\.?|MwSt\.?\s*-?\s*Nr\.?|BTW\s*-?\s*(?:nr|nummer)\.?"
        r"|N[°o]\.?\s*(?:de\s+)?TVA(?:\s+intracommunautaire)?|TVA\s+intracommunautaire"
        r"|Partita\s+IVA|P\.\s?IVA|NIF|N[°º]\s*IVA",
        "i",
    ),
    ("supplier_iban", r"IBAN", "i"),
    (
        "supplier_bic",
        r"BIC\s*/\s*SWIFT|SWIFT\s*/\s*BIC|SWIFT(?:\s*-?\s*(?:BIC|Code))?|BIC(?:\s*-?\s*Code)?",
        "i",
    ),
    (
        "invoice_number",
        r"(?:Invoice|Inv\.|Credit\s*note|Credit\s*memo|Bill|Rechnung|Gutschrift|Beleg)\s*-?\s*"
        r"(?:No\.?|Nr\.?|Number|Nummer|Num\.?|#|ID)"
        r"|Rechnungs\s*-?\s*(?:nummer|Nr\.?)|Rechnungsnr\.?|Gutschrifts?\s*-?\s*(?:nummer|Nr\.?)"
        r"|RE?\.?\s*-?\s*Nr\.?|Belegnummer|Gutschriftnummer"
        # French, Dutch, Italian, Spanish
        r"|Facture\s*(?:n[°o]\.?|num[ée]ro|#)|N[°o]\.?\s*(?:de\s+)?facture|Num[ée]ro\s+de\s+facture"
        r"|Factuur\s*-?\s*(?:nummer|nr\.?)|Fattura\s*(?:n\.?|nr\.?|numero)|Numero\s+(?:di\s+)?fattura"
        r"|Factura\s*(?:n\.?\s*º|n[°º]|número|numero|no\.?)|N[úu]mero\s+de\s+factura",
        "",
    ),
    (
        "order_number",
        r"(?:Purchase\s+)?Order\s*(?:No\.?|Nr\.?|number|#|ref(?:erence)?\.?)"
        r"|P\.?\s?O\.?\s*(?:No\.?|Nr\.?|Number|#)|Purchase\s+order|(?:Your|Customer)\s+order"
        r"(?:\s+(?:No\.?|number))?|Bestell\s*-?\s*(?:nummer|Nr\.?)"
        r"|Ihre\s+Bestell(?:ung|nummer|\s*-?\s*Nr\.?)|Auftrags\s*-?\s*(?:nummer|Nr\.?)"
        r"|Ihr\s+Auftrag|Bestellung",
        "",
    ),
    # -- dates
    (
        "due_date",
        r"Due\s+(?:by|on)|Payable\s+(?:by|until|on)|Pay\s+by|Zahlbar\s+bis(?:\s+zum)?"
        r"|fällig\s+am|fällig\s+bis"
        r"|(?:Zahlbar|Payable|Due)\s+(?:innerhalb(?:\s+von)?|within)\s+\d{1,3}\s+(?:Tagen|days)"
        r"\s+(?:netto\s+|net\s+|rein\s+)?(?:bis(?:\s+zum)?|by|until|on)"
        r"|überweisen\s+Sie\s+bitte\s+bis(?:\s+zum)?",
        "i",
    ),
    (
        "due_date",
        r"Due\s+date|Date\s+due|Payment\s+due(?:\s+date)?|Fälligkeitsdatum|Fälligkeit|Fällig"
        r"|Zahlungsfrist|Zahlungstermin|Date\s+d['\u2019]échéance|Échéance|Vervaldatum|Vervaldag"
        r"|Data\s+(?:di\s+)?scadenza|Scadenza|Fecha\s+de\s+vencimiento|Vencimiento|Due",
        "",
    ),
    ("supplier_name", r"Issued\s+by|Invoiced\s+by|Billed\s+by", ""),
    (
        "issue_date",
        r"Invoice\s+date|Date\s+of\s+(?:issue|invoice)|Issue\s+date|Date\s+issued|Issued(?:\s+on)?"
        r"|Document\s+date|Billing\s+date|Credit\s+note\s+date|Rechnungsdatum|Ausstellungsdatum"
        r"|Belegdatum|Gutschriftsdatum|Datum\s+der\s+Rechnung"
        r"|Date\s+de\s+(?:la\s+)?facture|Date\s+d['\u2019]émission|Factuurdatum"
        r"|Data\s+(?:della\s+)?fattura|Fecha\s+(?:de\s+)?(?:la\s+)?factura|Fecha\s+de\s+emisi[oó]n"
        r"|Date|Datum|Data|Fecha",
        "",
    ),
    # -- free text
    (
        "payment_reference",
        r"Payment\s+reference|Remittance\s+reference|Payment\s+ref\.?|Verwendungszweck"
        r"|Zahlungsreferenz|Zahlungsgrund|Referenznummer",
        "",
    ),
    ("payment_reference", r"Reference|Ref\.|Referenz", "s"),
    (
        "payment_terms",
        r"Payment\s+terms|Terms\s+of\s+payment|Payment\s+conditions|Zahlungsbedingung(?:en)?"
        r"|Zahlungsziel|Zahlungskonditionen",
        "",
    ),
    ("payment_terms", r"Terms|Konditionen", "s"),
    ("currency", r"Currency|Währung|Devise|Valuta|Moneda|Divisa", ""),
    (
        "supplier_name",
        r"Lieferant|Verkäufer|Rechnungssteller|Leistungserbringer|Absender|Auftragnehmer",
        "",
    ),
    (
        "supplier_name",
        r"From|Supplier|Seller|Vendor|Fournisseur|Leverancier|Fornitore|Proveedor",
        "s",
    ),
    (
        "customer_name",
        r"Bill(?:ed)?\s+to|Invoiced?\s+to|Sold\s+to|Rechnungsempfänger|Rechnungsadresse"
        r"|Rechnungsanschrift|Leistungsempfänger|Käufer(?:\s*/\s*Leistungsempfänger)?",
        "",
    ),
    (
        "customer_name",
        r"Customer|Client|Buyer|Recipient|Kunde|Empfänger|Auftraggeber|Klant|Cliente",
        "s",
    ),
    # -- amounts: total tax, then net, then gross, then per-rate tax
    (
        "tax_amount",
        r"Total\s+(?:VAT|Tax|MwSt\.?|USt\.?)|(?:VAT|Tax|MwSt\.?|USt\.?)\s+(?:total|amount)"
        r"|Summe\s+(?:MwSt\.?|USt\.?|Umsatzsteuer|Mehrwertsteuer|Steuer)"
        r"|(?:MwSt\.?|USt\.?|Umsatzsteuer)\s*-?\s*(?:Betrag|gesamt|Summe)|Steuerbetrag"
        r"|(?:Total|Montant)\s+(?:de\s+la\s+)?TVA|Totaal\s+BTW|BTW\s+bedrag|Totale\s+IVA"
        r"|Importo\s+IVA|(?:Total|Importe|Cuota)\s+(?:de\s+)?IVA",
        "T",
    ),
    (
        "net_amount",
        rf"(?:Total|Summe|Gesamt(?:betrag|summe)?|Amount|Betrag|Rechnungs(?:summe|betrag)"
        rf"|Invoice\s+(?:total|amount)){_EXCL}|Total\s*\(\s*net\s*\)"
        r"|Net\s+(?:total|amount|sum|value)|Sub\s*-?\s*total|Summe\s+netto"
        r"|Netto\s*-?\s*(?:betrag|summe|gesamt|wert)|Nettobetrag|Nettosumme|Gesamt\s+netto"
        r"|Gesamtsumme\s+netto|Zwischensumme|Warenwert"
        r"|(?:Total|Montant)\s+H\.?T\.?|Sous\s*-?\s*total|Totaal\s+(?:excl\.?|exclusief)\s+BTW"
        r"|Subtotaal|(?:Totale\s+)?Imponibile|Base\s+imponible|Net|Netto",
        "",
    ),
    (
        "total_amount",
        rf"(?:Total|Summe|Gesamt(?:betrag|summe)?|Amount|Betrag|Rechnungsbetrag){_INCL}"
        r"|Total\s*\(\s*gross\s*\)|Gross\s+(?:total|amount)|Grand\s+total"
        r"|Total\s+(?:amount|due|payable|sum|to\s+pay)|Invoice\s+(?:total|amount)"
        r"|Amount\s+(?:due|payable|to\s+pay)|Balance\s+due|Gesamtbetrag|Rechnungsbetrag"
        r"|Rechnungssumme|Summe\s+brutto|Brutto\s*-?\s*(?:betrag|summe)|Bruttobetrag"
        r"|Gesamt\s+brutto|Gesamtsumme|Endbetrag|Endsumme|Zahlbetrag|Zu\s+zahlender\s+Betrag"
        r"|zu\s+zahlen"
        r"|(?:Total|Montant)\s+T\.?T\.?C\.?|Net\s+à\s+payer|Totaal\s+(?:incl\.?|inclusief)\s+BTW"
        r"|Te\s+betalen|Totaalbedrag|Totale\s+(?:fattura|documento|da\s+pagare)|Importo\s+totale"
        r"|Total\s+a\s+pagar|Importe\s+total|Total\s+(?:de\s+la\s+)?factura"
        r"|Total|Summe|Gesamt|Brutto|Totaal|Totale",
        "",
    ),
    ("tax_amount", _TAX_GENERIC, ""),
]

_KINDS: Final[dict[str, str]] = {
    "invoice_number": "id",
    "order_number": "id",
    "issue_date": "date",
    "due_date": "date",
    "total_amount": "amount",
    "net_amount": "amount",
    "tax_amount": "amount",
    "supplier_iban": "iban",
    "supplier_bic": "bic",
    "supplier_vat_id": "vat",
    "customer_vat_id": "vat",
    "currency": "currency",
    "supplier_name": "name",
    "customer_name": "name",
    "payment_reference": "text",
    "payment_terms": "text",
}
_FREE_TEXT: Final = frozenset({"name", "text"})


@dataclass(frozen=True, slots=True)
class _Label:
    field: str | None
    kind: str
    inline: bool
    needs_colon: bool
    total_tax: bool


_LABELS: Final = [
    _Label(f, _KINDS.get(f or "", "none"), "i" in flags, "s" in flags, "T" in flags)
    for f, _, flags in _LABEL_TABLE
]


def _umlauts(pattern: str) -> str:
    """``ä`` also matches ``ae`` (ASCII spelling) and ``a`` (OCR without German data)."""
    for umlaut, plain in (("ä", "a"), ("ö", "o"), ("ü", "u")):
        pattern = pattern.replace(umlaut, f"(?:{umlaut}|{plain}e|{plain})")
    return pattern


_LABEL_RE: Final = re.compile(
    r"(?<!\w)(?:"
    + "|".join(f"(?P<l{i}>{_umlauts(pattern)})" for i, (_, pattern, _) in enumerate(_LABEL_TABLE))
    + r")(?:(?<=\W)|(?!\w))",
    re.IGNORECASE,
)
_SUFFIX_RE: Final = re.compile(r"(?:\s*\(\s*(?:[A-Z]{3}|[€$£])\s*\))?(?P<colon>\s*[:\uff1a])?")
_LEAD_JUNK: Final = " \t-\u2013•*|>"

# --------------------------------------------------------------------------- value shapes

_CUR = r"(?:[€$£¥]|US\$|Fr\.|[A-Z]{3})"
_NUM = r"[-−]?\(?\d{1,3}(?:[.,'’ ]\d{3})+(?:[.,]\d{1,4})?\)?-?|[-−]?\(?\d+(?:[.,]\d{1,4})?\)?-?"  # noqa: RUF001
_AMOUNT_TAIL_RE: Final = re.compile(
    rf"(?:^|(?<=[\s:=]))(?P<amt>(?:{_CUR}\s?)?[-−]?(?:{_NUM})(?:\s?{_CUR})?)[\s.;,]*$"  # noqa: RUF001
)
_AMOUNT_PREFIX_RE: Final = re.compile(
    rf"^[\s:=()*.,-]*(?:in(?!\w))?\s*(?:{_CUR}\)?)?[\s:=().,-]*$", re.IGNORECASE
)
"""What may stand between an amount's label and the amount: punctuation and a currency."""
_MONEY_SHAPE_RE: Final = re.compile(r"\d[.,]\d{2}(?!\d)|\d[.,'’ ]\d{3}(?!\d)")  # noqa: RUF001
_DECIMAL_SEP_RE: Final = re.compile(r"(?<![\w.,])\d+(?:[.,'’]\d{3})*([.,])\d{2}(?!\d|[.,]\d)")  # noqa: RUF001
_TITLE_CREDIT_RE: Final = re.compile(
    r"^(?:credit\s*note|credit\s*memo|gutschrift|rechnungskorrektur|stornorechnung"
    r"|avoir|facture\s+d['\u2019]avoir|note\s+de\s+cr[ée]dit|credit\s*nota|creditfactuur"
    r"|nota\s+di\s+credito|nota\s+de\s+cr[ée]dito|factura\s+rectificativa)(?!\w)",
    re.IGNORECASE,
)
_TITLE_INVOICE_RE: Final = re.compile(
    r"^(?:tax\s+invoice|commercial\s+invoice|invoice|rechnung|faktura"
    r"|facture|factuur|fattura|factura)(?!\w)",
    re.IGNORECASE,
)
_TITLE_ONLY_RE: Final = re.compile(
    r"^(?:(?:tax|commercial)\s+)?(?:invoice|rechnung|credit\s*note|gutschrift|faktura)"
    r"(?:\s*(?:No\.?|Nr\.?|#)?\s*[\w/-]*\d[\w/-]*)?$",
    re.IGNORECASE,
)
_TITLE_NUMBER_RE: Final = re.compile(
    r"^(?P<title>[\w-]*(?:rechnung|gutschrift|rechnungskorrektur|abrechnung)"
    r"|(?:(?:tax|commercial|proforma|pro-forma)\s+)?invoice|credit\s*(?:note|memo)|faktura)"
    r"(?:\s+[^\d\s:][^:\d]{0,60}?)?"  # "des Versicherers", "(Selbst ausgestellte Rechnung)"
    r"(?:\s*\(\d{3}\))?"  # the UNTDID 1001 type code some layouts print
    r"\s*(?:No\.?|Nr\.?|Nummer|Number|Num\.?|#)\s*:?\s*(?P<id>\S+)"
    r"(?:\s+(?:vom|from|dated|of|date[d:]?|am)\s+(?P<date>.+))?$",
    re.IGNORECASE,
)
"""A title line that names the document's number (and date): "Rechnung Nr. 4711 vom 1.2.2024"."""
_NAME_KEY_RE: Final = re.compile(
    r"^(?:Name|Firma|Firmenname|Company(?:\s+name)?|Legal\s+name)\s*[:\uff1a]\s*(?P<rest>.*)$",
    re.IGNORECASE,
)
"""The name line inside an address block (``Verkäufer`` / ``Name: Lieferant GmbH``)."""
_KEY_VALUE_RE: Final = re.compile(r"^[^:\d]{1,40}[:\uff1a](?:\s|$)")
"""A "Key: value" line (``Nummer: 549910``): an attribute in a block, never a name."""
_DUE_COLUMN_RE: Final = re.compile(
    r"(?<!\w)(?:Fälligkeit(?:sdatum)?|F(?:ae|a)lligkeit|Due\s+date|Payment\s+due)(?!\w)",
    re.IGNORECASE,
)
_NAME_SPLIT_RE: Final = re.compile(r"\s+[·•|]\s+|\s*\|\s*")
_PAGE_LINE_RE: Final = re.compile(
    r"^(?:page|seite|blatt)\s*\d+(?:\s*(?:of|von|/)\s*\d+)?$|^-\s*\d+\s*-$"
    r"|^(?:übertrag|carried\s+forward|carry\s+over|zwischensumme\s+übertrag)\b",
    re.IGNORECASE,
)
_IBAN_SHAPE_RE: Final = re.compile(
    r"(?<![A-Z0-9])[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,4})?(?![A-Z0-9])"
)
_CONTROL_RE: Final = re.compile(r"[\x00-\x08\x0b-\x1f\x7f\ufffe\uffff\u00ad]")

# --------------------------------------------------------------------------- line items

_HEADER_DESC_RE: Final = re.compile(
    r"(?<!\w)(?:description|item|article|product|service|services|particulars|details"
    r"|bezeichnung|beschreibung|artikel|leistung|leistungen|produkt|text)(?!\w)",
    re.IGNORECASE,
)
_HEADER_QTY_RE: Final = re.compile(
    r"(?<!\w)(?:qty|quantity|quant|menge|anz|anzahl|stk|stück|units|hours|hrs|std)(?!\w)\.?",
    re.IGNORECASE,
)
_HEADER_CODE_RE: Final = re.compile(
    r"(?<!\w)(?:item\s*code|item\s*no\.?|sku|code|part\s*no\.?|product\s*code|art\.?\s*-?\s*nr\.?"
    r"|artikel\s*-?\s*nr\.?|artikelnummer|material(?:nummer)?)(?!\w)",
    re.IGNORECASE,
)
_HEADER_POS_RE: Final = re.compile(r"^(?:pos\.?|position|#|nr\.?|no\.?|lfd\.?\s*nr\.?)(?!\w)", re.I)
_CODE_TOKEN_RE: Final = re.compile(r"[A-Z]{1,5}-?\d{2,}(?:[-./][A-Z0-9]+)*")
_NUM_TOKEN_RE: Final = re.compile(
    r"[-−]?\(?(?:[€$£¥]|US\$)?[-−]?\d[\d.,'’]*(?:[€$£¥])?\)?-?"  # noqa: RUF001
)
_UNIT_TOKEN_RE: Final = re.compile(r"[A-Za-zäöüÄÖÜ]{1,6}\.?|x|×|m²|m2|m³|m3")  # noqa: RUF001
_PERCENT_TOKEN_RE: Final = re.compile(r"\d{1,2}(?:[.,]\d{1,2})?%")


@dataclass(slots=True)
class _Line:
    page: int
    text: str


@dataclass(slots=True)
class _Hit:
    label: _Label
    text: str
    start: int
    value_start: int
    colon: bool
    at_start: bool


def _clean_lines(pages: list[str]) -> list[_Line]:
    lines = []
    for page_no, page in enumerate(pages, start=1):
        for raw in _CONTROL_RE.sub("", page.replace("\r", "\n").replace("\t", " ")).split("\n"):
            text = " ".join(raw.split())
            if text:
                lines.append(_Line(page_no, text))
    return lines


def _hits(text: str) -> list[_Hit]:
    """The labels on one line that count (at the start, before a colon, or inline kinds)."""
    hits = []
    for match in _LABEL_RE.finditer(text):
        label = _LABELS[int(match.lastgroup[1:])]  # type: ignore[index]
        suffix = _SUFFIX_RE.match(text, match.end())
        colon = bool(suffix and suffix["colon"])
        at_start = not text[: match.start()].strip(_LEAD_JUNK)
        if at_start or colon or label.inline:
            hits.append(
                _Hit(label, match.group(0).strip(), match.start(),
                     suffix.end() if suffix else match.end(), colon, at_start)
            )  # fmt: skip
    return hits


# --------------------------------------------------------------------------- validation


def _amount(text: str, decimal: str | None, *, whole: bool) -> str | None:
    match = _AMOUNT_TAIL_RE.search(text)
    if match is None or (whole and match.start("amt") != 0):
        return None
    if not _AMOUNT_PREFIX_RE.match(text[: match.start("amt")]):
        return None  # "Gesamtbetrag der Zuschläge 5,80": the label began another phrase
    raw = match["amt"].strip()
    number, currency = parse_amount(raw, decimal=decimal)
    if number is None:
        return None
    if currency is None and not _MONEY_SHAPE_RE.search(raw):
        return None  # "Net 30", "Total 3": a bare integer is not money
    return raw


def _tokens(text: str) -> list[str]:
    return [token.strip(",;") for token in text.split()]


def _value(kind: str, text: str, decimal: str | None, *, whole: bool = False) -> str | None:
    """The raw value of a ``kind`` found at the start of ``text``, or None if it is not one."""
    text = text.strip(" \t:")
    if not text:
        return None
    if kind == "amount":
        return _amount(text, decimal, whole=whole)
    if kind == "date":
        found = find_date(text)
        if found is None or (whole and found[1] != 0):
            return None
        return text[found[1] : found[2]]
    tokens = _tokens(text)
    if kind == "id":
        token = tokens[0].rstrip(".") if tokens else ""
        if len(token) > 40 or not any(ch.isdigit() for ch in token):
            return None
        as_date = find_date(token)
        if as_date is not None and as_date[2] - as_date[1] == len(token):
            return None  # a date where a number was expected: the layout fooled us
        return token
    if kind == "iban":
        for count in range(1, min(len(tokens), 9) + 1):
            if validate_iban("".join(tokens[:count])):
                return " ".join(tokens[:count])
        return None
    if kind == "bic":
        return tokens[0] if tokens and validate_bic(tokens[0].rstrip(".")) else None
    if kind == "vat":
        best = None
        for count in range(1, min(len(tokens), 5) + 1):
            if normalize_vat_id(" ".join(tokens[:count])):
                best = " ".join(tokens[:count])
        return best
    if kind == "currency":
        return tokens[0] if tokens and normalize_currency(tokens[0]) else None
    cleaned = text.strip(" ,;")
    if len(cleaned) > 160 or not any(ch.isalnum() for ch in cleaned):
        return None
    if kind == "name" and not any(ch.isalpha() for ch in cleaned):
        return None
    return cleaned


# --------------------------------------------------------------------------- line items


@dataclass(slots=True)
class _Table:
    code_column: bool
    pos_column: bool
    qty_first: bool


def _table_header(text: str) -> _Table | None:
    desc = _HEADER_DESC_RE.search(text)
    qty = _HEADER_QTY_RE.search(text)
    if desc is None or qty is None or _MONEY_SHAPE_RE.search(text):
        return None
    code = _HEADER_CODE_RE.search(text)
    return _Table(
        code_column=code is not None and code.start() < max(desc.start(), qty.start()),
        pos_column=_HEADER_POS_RE.match(text) is not None,
        qty_first=qty.start() < desc.start(),
    )


def _is_currency_token(token: str) -> bool:
    return not any(ch.isdigit() for ch in token) and normalize_currency(token) is not None


def _merge_currency(tokens: list[str]) -> list[str]:
    """Glue ``1.234,56`` ``€`` (or ``EUR`` ``12,50``) into one amount token."""
    suffix_style = bool(tokens) and _is_currency_token(tokens[-1])
    merged: list[str] = []
    pending_prefix = ""
    for token in tokens:
        if _is_currency_token(token):
            if suffix_style and merged and _NUM_TOKEN_RE.fullmatch(merged[-1]):
                merged[-1] = f"{merged[-1]} {token}"
            else:
                pending_prefix = token
            continue
        if pending_prefix:
            token = f"{pending_prefix} {token}" if _NUM_TOKEN_RE.fullmatch(token) else token
            pending_prefix = ""
        merged.append(token)
    return merged


def _is_amount_token(token: str, decimal: str | None) -> bool:
    return parse_amount(token, decimal=decimal)[0] is not None


def _parse_row(text: str, table: _Table, decimal: str | None) -> dict[str, Any] | None:
    """One table row as raw texts, read from the right; None when it is not an item row."""
    tokens = _merge_currency(text.split())
    if len(tokens) < 4:
        return None
    row: dict[str, Any] = {"tax_rate": None, "item_code": None, "unit": None}
    end = len(tokens)
    if not _is_amount_token(tokens[end - 1], decimal):
        return None
    row["total_amount"] = tokens[end - 1]
    end -= 1
    if _PERCENT_TOKEN_RE.fullmatch(tokens[end - 1]):
        row["tax_rate"] = tokens[end - 1]
        end -= 1
    elif tokens[end - 1] == "%" and _PERCENT_TOKEN_RE.fullmatch(tokens[end - 2] + "%"):
        row["tax_rate"] = f"{tokens[end - 2]} %"
        end -= 2
    if end < 2 or not _is_amount_token(tokens[end - 1], decimal):
        return None
    row["unit_price"] = tokens[end - 1]
    end -= 1
    start = 0
    if table.pos_column and tokens[0].rstrip(".").isdigit():
        start = 1
    if table.code_column and end - start >= 2:
        row["item_code"] = tokens[start]
        start += 1
    if table.qty_first:
        quantity = _quantity(tokens, start, end, decimal, forward=True)
        if quantity is None:
            return None
        row["quantity"], row["unit"], start = quantity
    else:
        quantity = _quantity(tokens, start, end, decimal, forward=False)
        if quantity is None:
            return None
        row["quantity"], row["unit"], end = quantity
    if not table.code_column and end - start >= 2 and _CODE_TOKEN_RE.fullmatch(tokens[start]):
        row["item_code"] = tokens[start]
        start += 1
    description = " ".join(tokens[start:end])
    if not any(ch.isalpha() for ch in description):
        return None
    row["description"] = description
    return row


def _quantity(
    tokens: list[str], start: int, end: int, decimal: str | None, *, forward: bool
) -> tuple[str, str | None, int] | None:
    """(quantity, unit, new boundary) next to the numbers, with an optional unit word."""
    if end - start < 2:
        return None
    if forward:
        first, second = tokens[start], tokens[start + 1]
        if parse_decimal(first, decimal=decimal) is None:
            return None
        if _UNIT_TOKEN_RE.fullmatch(second) and end - start >= 3:
            return first, second, start + 2
        return first, None, start + 1
    last = tokens[end - 1]
    if parse_decimal(last, decimal=decimal) is not None:
        return last, None, end - 1
    if (
        end - start >= 3
        and _UNIT_TOKEN_RE.fullmatch(last)
        and parse_decimal(tokens[end - 2], decimal=decimal) is not None
    ):
        return tokens[end - 2], last, end - 2
    return None


def _ends_table(line: str) -> bool:
    hits = _hits(line)
    return bool(hits) and hits[0].at_start and hits[0].label.kind in ("amount", "text", "iban")


def _line_items(lines: list[_Line], decimal: str | None) -> tuple[list[dict[str, Any]], set[int]]:
    """Item rows and the indexes of the lines they (and their headers) occupy."""
    items: list[dict[str, Any]] = []
    used: set[int] = set()
    table: _Table | None = None
    for index, line in enumerate(lines):
        header = _table_header(line.text)
        if header is not None and _parse_row(line.text, header, decimal) is None:
            table = header
            used.add(index)
            continue
        if table is None:
            continue
        row = _parse_row(line.text, table, decimal)
        if row is not None:
            row["page"] = line.page
            items.append(row)
            used.add(index)
            continue
        if _ends_table(line.text):
            table = None
            continue
        if _PAGE_LINE_RE.search(line.text):
            used.add(index)
        elif items and _AMOUNT_TAIL_RE.search(line.text) is None:
            items[-1]["description"] += " " + line.text  # a wrapped description
            used.add(index)
    return items, used


# --------------------------------------------------------------------------- document


def _decimal_separator(lines: list[_Line]) -> str | None:
    """``,`` or ``.``: whichever more amounts with two decimals use; None when undecided."""
    counts = {",": 0, ".": 0}
    for line in lines:
        for match in _DECIMAL_SEP_RE.finditer(line.text):
            counts[match.group(1)] += 1
    if counts[","] == counts["."]:
        return None
    return "," if counts[","] > counts["."] else "."


def _document_type(lines: list[_Line]) -> tuple[str, str] | None:
    first_page = [line for line in lines if line.page == 1]
    for pattern in (_TITLE_CREDIT_RE, _TITLE_INVOICE_RE):
        for line in first_page:
            match = pattern.match(line.text)
            if match is not None:
                return match.group(0), match.group(0)
    return None


def _first_line_name(lines: list[_Line], used: set[int]) -> tuple[str, int] | None:
    """The supplier when nothing is labelled: the letterhead, i.e. the first line of page 1."""
    for index, line in enumerate(lines[:8]):
        if line.page != 1 or index in used:
            return None
        if _TITLE_ONLY_RE.match(line.text):
            continue
        hits = _hits(line.text)
        if hits and hits[0].at_start:
            return None
        name = _NAME_SPLIT_RE.split(line.text)[0].strip(" ,")
        if any(ch.isalpha() for ch in name) and find_date(name) is None:
            return name, line.page
        return None
    return None


def _candidates(
    lines: list[_Line], used: set[int], decimal: str | None
) -> Iterator[tuple[_Hit, str, int]]:
    """Every (label hit, raw value, page) that validates, in reading order."""
    label_only = [False] * len(lines)
    line_hits: list[list[_Hit]] = []
    for index, line in enumerate(lines):
        hits = [] if index in used else _hits(line.text)
        line_hits.append(hits)
        label_only[index] = (
            len(hits) == 1 and hits[0].at_start and not line.text[hits[0].value_start :].strip()
        )
    for index, line in enumerate(lines):
        hits = line_hits[index]
        for number, hit in enumerate(hits):
            kind = hit.label.kind
            if kind == "none":
                continue
            later = hits[number + 1 :]
            if kind in _FREE_TEXT:
                later = [h for h in later if h.colon]
            end = later[0].start if later else len(line.text)
            segment = line.text[hit.value_start : end]
            if segment.strip(" \t:"):
                if hit.label.needs_colon and not hit.colon:
                    continue
                raw = _value(kind, segment, decimal)
                if raw is not None:
                    yield hit, raw, line.page
                continue
            if later:
                continue
            if kind == "name":
                block = _block_name(lines, used, line_hits, index)
                if block is not None:
                    yield hit, block[0], block[1]
                    continue
            following = _next_value_line(lines, used, line_hits, label_only, index)
            if following is not None:
                raw = _value(kind, lines[following].text, decimal, whole=True)
                if raw is not None:
                    yield hit, raw, lines[following].page


def _block_name(
    lines: list[_Line], used: set[int], line_hits: list[list[_Hit]], index: int
) -> tuple[str, int] | None:
    """The name in the address block a heading (``Verkäufer``, ``Bill to``) opens: its
    ``Name:`` line (continued on the lines below when the value starts there), else its first
    line that is not a ``Key: value`` attribute. None when the block has neither, or when the
    heading's next line is already plain (the usual one-line value: the caller reads it)."""
    page = lines[index].page
    first = True
    for k in range(index + 1, min(index + 9, len(lines))):
        line = lines[k]
        if k in used or line.page != page:
            return None
        hits = line_hits[k]
        if hits and hits[0].at_start and hits[0].label.kind != "none":
            return None  # the next block's heading
        named = _NAME_KEY_RE.match(line.text)
        if named is not None:
            parts = [named["rest"].strip()]
            if not parts[0]:  # "Name:" alone: the name is on the lines below, up to three
                parts = []
                for j in range(k + 1, min(k + 4, len(lines))):
                    if j in used or lines[j].page != page or _KEY_VALUE_RE.match(lines[j].text):
                        break
                    if line_hits[j] and line_hits[j][0].at_start:
                        break
                    parts.append(lines[j].text)
            name = " ".join(parts).strip(" ,")
            return (name, page) if any(ch.isalpha() for ch in name) else None
        if _KEY_VALUE_RE.match(line.text) or (hits and hits[0].at_start):
            first = False
            continue
        if first:
            return None
        return line.text.strip(" ,"), page
    return None


def _next_value_line(
    lines: list[_Line],
    used: set[int],
    line_hits: list[list[_Hit]],
    label_only: list[bool],
    index: int,
) -> int | None:
    """The line holding the value of a label that stands alone, unless labels form a column."""
    following = index + 1
    if following >= len(lines) or following in used:
        return None
    if lines[following].page != lines[index].page:
        return None
    if line_hits[following] and line_hits[following][0].at_start:
        return None
    if index > 0 and label_only[index - 1]:
        return None  # a column of labels: its values are elsewhere, do not pair them up
    return following


def find_fields(pages: list[str], *, method: str = "text-layer") -> dict[str, Any]:
    """Find canonical fields and line items in a document's text (one string per page)."""
    lines = _clean_lines(pages)
    decimal = _decimal_separator(lines)
    items, used = _line_items(lines, decimal)

    found: dict[str, dict[str, Any]] = {}
    taxes: list[dict[str, Any]] = []
    total_tax: dict[str, Any] | None = None
    for hit, raw, page in _candidates(lines, used, decimal):
        name = hit.label.field
        assert name is not None
        entry = {"name": name, "label": hit.text, "raw": raw, "page": page}
        if name == "tax_amount":
            if hit.label.total_tax:
                total_tax = total_tax or entry
            elif not any(t["label"] == entry["label"] and t["raw"] == raw for t in taxes):
                taxes.append(entry)
        elif name not in found:
            found[name] = entry

    doc_type = _document_type(lines)
    if doc_type is not None:
        found["document_type"] = {
            "name": "document_type", "label": doc_type[0], "raw": doc_type[1], "page": 1,
        }  # fmt: skip
    if "supplier_name" not in found and (found or items):
        # Only for something that looks like an invoice: a letter's first line is no supplier.
        name = _first_line_name(lines, used)
        if name is not None:
            found["supplier_name"] = {
                "name": "supplier_name", "label": None, "raw": name[0], "page": name[1],
                "inferred": "letterhead",
            }  # fmt: skip
    titled = _title_number(lines, used)
    if titled is not None:
        for entry in titled:
            found.setdefault(entry["name"], entry)
    if "due_date" not in found:
        due = _due_date_column(lines, used)
        if due is not None:
            found["due_date"] = due
    if "issue_date" not in found:
        issue = _unlabelled_date(lines, used, found.get("due_date"))
        if issue is not None:
            found["issue_date"] = issue
    if "supplier_iban" not in found:
        iban = _unlabelled_iban(lines, used)
        if iban is not None:
            found["supplier_iban"] = iban
    if "currency" not in found:
        currency = _inferred_currency(found, items)
        if currency is not None:
            found["currency"] = currency

    fields = [found[name] for name in DOCUMENT_FIELDS if name in found and name != "tax_amount"]
    tax_entries = [total_tax] if total_tax else taxes
    position = DOCUMENT_FIELDS.index("tax_amount")
    before = [f for f in fields if DOCUMENT_FIELDS.index(f["name"]) < position]
    after = [f for f in fields if DOCUMENT_FIELDS.index(f["name"]) > position]
    return {
        "engine": ENGINE,
        "version": VERSION,
        "method": method,
        "pages": len(pages),
        "decimal_separator": decimal,
        "fields": before + tax_entries + after,
        "line_items": [{"line_no": number, **item} for number, item in enumerate(items, start=1)],
    }


def _title_number(lines: list[_Line], used: set[int]) -> list[dict[str, Any]] | None:
    """Number and date from the title line on page 1 (``Handelsrechnung (380) Nr. 471102 vom
    05.03.2018``): used where no label gave them."""
    for index, line in enumerate(lines):
        if line.page != 1:
            return None
        if index in used:
            continue
        match = _TITLE_NUMBER_RE.match(line.text)
        if match is None:
            continue
        number = _value("id", match["id"], None)
        if number is None:
            continue
        label = line.text[: match.start("id")].strip()
        entries = [
            {"name": "invoice_number", "label": label, "raw": number, "page": 1,
             "inferred": "title"},
        ]  # fmt: skip
        if match["date"] and (raw := _value("date", match["date"], None, whole=True)):
            entries.append(
                {"name": "issue_date", "label": label, "raw": raw, "page": 1, "inferred": "title"}
            )
        return entries
    return None


def _due_date_column(lines: list[_Line], used: set[int]) -> dict[str, Any] | None:
    """A payment-terms table whose header names a due-date column (``Beschreibung Fälligkeit
    Teilzahlung``): the one date on the row below it."""
    for index, line in enumerate(lines[:-1]):
        column = None if index in used else _DUE_COLUMN_RE.search(line.text)
        if column is None or find_date(line.text):
            continue
        if len(line.text.split()) < 2:
            continue  # a label alone on its line: the candidates read those
        below = lines[index + 1]
        if below.page != line.page or index + 1 in used:
            continue
        found = find_date(below.text)
        if found is None or find_date(below.text[found[2] :]) is not None:
            continue  # none, or several dates: which column is which is not known
        return {
            "name": "due_date", "label": column.group(0),
            "raw": below.text[found[1] : found[2]], "page": below.page, "inferred": "column",
        }  # fmt: skip
    return None


def _unlabelled_date(
    lines: list[_Line], used: set[int], due: dict[str, Any] | None
) -> dict[str, Any] | None:
    """A letter's date line (``Berlin, 23.11.2026``): the first date on page 1 not the due date."""
    for index, line in enumerate(lines):
        if line.page != 1 or index in used or _hits(line.text):
            continue  # a labelled date (delivery, order …) is never the issue date
        found = find_date(line.text)
        if found is None:
            continue
        raw = line.text[found[1] : found[2]]
        if due is not None and raw == due["raw"]:
            continue
        return {"name": "issue_date", "label": None, "raw": raw, "page": 1, "inferred": "date"}
    return None


def _unlabelled_iban(lines: list[_Line], used: set[int]) -> dict[str, Any] | None:
    """An IBAN printed without its label (footers often do): the checksum makes it safe."""
    for index, line in enumerate(lines):
        if index in used:
            continue
        for match in _IBAN_SHAPE_RE.finditer(line.text):
            raw = match.group(0)
            if validate_iban(raw):
                return {
                    "name": "supplier_iban", "label": None, "raw": raw, "page": line.page,
                    "inferred": "checksum",
                }  # fmt: skip
    return None


def _inferred_currency(
    found: dict[str, dict[str, Any]], items: list[dict[str, Any]]
) -> dict[str, Any] | None:
    """The currency the amounts are written in: the total's first, else any amount's."""
    sources = [found.get(n) for n in ("total_amount", "net_amount")]
    texts = [(s["raw"], s["page"], s["name"]) for s in sources if s]
    texts += [(i["total_amount"], i["page"], "line_items") for i in items]
    for raw, page, source in texts:
        currency = find_currency(raw)
        if currency is not None:
            return {
                "name": "currency", "label": None, "raw": raw[currency[1] : currency[2]],
                "page": page, "inferred": source,
            }  # fmt: skip
    return None
