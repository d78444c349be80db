"""Map a fetched Konfuzio document to the canonical model. Pure, no I/O.

The input is what ``KonfuzioVendor.fetch`` stores: ``{"document": <GET documents/{id}/>,
"page_sizes": [[w, h], …]}`` (a bare document detail maps too). Konfuzio's result is the
document's ``annotation_sets → labels → annotations → span`` tree (contract §4):

* an annotation set whose ``id`` is null is a "potential" set (a label set of the category with
  nothing found yet): ignored;
* a label set that may have several annotation sets (``has_multiple_annotation_sets``, the
  setup API's ``has_multiple_sections``, or simply several sets on the document) is a table: when
  any of its labels is a line-item label, each of its annotation sets becomes one ``LineItem``
  (ordered by where it is printed), else its values are kept as ``extra.<label>.<n>``;
* the other sets' labels are document fields, by label name (or ``api_name``) through the
  default table below, which the profile's ``mapping``/``line_item_mapping`` extend or override
  (names are compared without case, spaces and punctuation); labels the table does not know
  become ``extra.<label name>``;
* a declined annotation (``revised`` and not ``is_correct``) is no value; of several annotations
  of one label the accepted one, else the most confident, gives the field and the others are
  kept as ``extra.<label>.<n>``;
* a value's text is the annotation's ``offset_string`` (what a person may have overridden),
  parsed by ``connectors.normalize``; Konfuzio's own ``normalized`` (an ISO date, a number) is
  used where the text does not parse. ``vendor_label`` is the label name, ``vendor_id`` the
  annotation id, ``confidence`` Konfuzio's (0..1), ``page`` the span's ``page_index`` + 1;
* boxes: Konfuzio's ``x0 x1 y0 y1`` are in the units of the page's ``original_size`` with the
  origin at the bottom left (``origin="bottom-left"``; the Konfuzio SDK says so, the API
  reference does not). They are scaled to docrelay's own page size in points (``page_sizes``
  from the document we hold; Konfuzio's ``original_size`` where we have none) and flipped to the
  top-left origin of ``BBox``; the spans of one annotation on its first page make one box.

Malformed input raises only KeyError, TypeError or ValueError (the engine rejects on those).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any, Final, Literal

from connectors.base import (
    AMOUNT_FIELDS,
    DATE_FIELDS,
    LINE_ITEM_FIELDS,
    BBox,
    CanonicalResult,
    FieldValue,
    LineItem,
    Provenance,
)
from connectors.normalize import (
    json_number,
    normalize_currency,
    normalize_field,
    normalize_line_item,
)

Origin = Literal["bottom-left", "top-left"]
EXTRA: Final = "extra."

FIELD_LABELS: Final[dict[str, tuple[str, ...]]] = {
    "document_type": ("Document Type", "Dokumenttyp", "Dokumentart", "Belegart"),
    "invoice_number": (
        "Invoice Number",
        "Invoice No",
        "Invoice ID",
        "Rechnungsnummer",
        "Rechnungs-Nr",
        "Rechnungsnr",
        "Belegnummer",
    ),
    "issue_date": ("Invoice Date", "Issue Date", "Rechnungsdatum", "Belegdatum"),
    "due_date": ("Due Date", "Payment Due Date", "Fälligkeitsdatum", "Fällig am", "Fälligkeit"),
    "currency": ("Currency", "Währung"),
    "total_amount": (
        "Total",
        "Total Amount",
        "Gross Amount",
        "Invoice Total",
        "Bruttobetrag",
        "Gesamtbetrag",
        "Rechnungsbetrag",
        "Endbetrag",
        "Brutto",
    ),
    "net_amount": ("Net Amount", "Subtotal", "Nettobetrag", "Netto", "Gesamtnetto"),
    "tax_amount": (
        "Tax Amount",
        "VAT Amount",
        "VAT",
        "MwSt",
        "MwSt-Betrag",
        "Mehrwertsteuer",
        "Umsatzsteuer",
        "USt-Betrag",
        "Steuerbetrag",
    ),
    "supplier_name": (
        "Supplier",
        "Supplier Name",
        "Vendor",
        "Vendor Name",
        "Seller",
        "Lieferant",
        "Rechnungssteller",
        "Absender",
    ),
    "supplier_vat_id": (
        "Supplier VAT ID",
        "VAT ID",
        "VAT Number",
        "USt-IdNr",
        "USt-ID",
        "Umsatzsteuer-ID",
        "Umsatzsteuer-IdNr",
    ),
    "supplier_iban": ("IBAN", "Supplier IBAN"),
    "supplier_bic": ("BIC", "SWIFT", "Supplier BIC"),
    "customer_name": (
        "Customer",
        "Customer Name",
        "Buyer",
        "Kunde",
        "Kundenname",
        "Rechnungsempfänger",
        "Empfänger",
    ),
    "customer_vat_id": ("Customer VAT ID", "Kunden-USt-IdNr", "USt-IdNr Kunde"),
    "order_number": ("Order Number", "PO Number", "Purchase Order", "Bestellnummer"),
    "payment_reference": ("Payment Reference", "Verwendungszweck", "Zahlungsreferenz"),
    "payment_terms": ("Payment Terms", "Zahlungsbedingungen", "Zahlungsziel"),
    "amount_due": ("Amount Due", "Zahlbetrag", "Offener Betrag", "Zu zahlen"),
}
"""Canonical field → label names of Konfuzio projects (English and German invoice labels);
the canonical name itself (``invoice_number``) is always recognised too."""

LINE_ITEM_LABELS: Final[dict[str, tuple[str, ...]]] = {
    "description": (
        "Description",
        "Item",
        "Item Description",
        "Beschreibung",
        "Bezeichnung",
        "Artikelbezeichnung",
        "Leistung",
    ),
    "quantity": ("Quantity", "Qty", "Menge", "Anzahl"),
    "unit_price": ("Unit Price", "Price", "Einzelpreis", "Stückpreis", "Preis"),
    "net_amount": ("Net Amount", "Line Net", "Nettobetrag", "Netto"),
    "tax_rate": ("Tax Rate", "VAT Rate", "VAT %", "MwSt-Satz", "Steuersatz", "USt-Satz"),
    "total_amount": (
        "Total",
        "Total Amount",
        "Line Total",
        "Amount",
        "Gesamtpreis",
        "Gesamt",
        "Betrag",
        "Positionsbetrag",
    ),
    "item_code": ("Item Code", "Article Number", "SKU", "Product Code", "Artikelnummer", "Art-Nr"),
}
"""Canonical line-item field → label names in a repeating label set."""


def label_key(name: str) -> str:
    """A label name compared without case, spaces and punctuation (``USt-IdNr.`` = ``ustidnr``)."""
    return re.sub(r"[\W_]+", "", name.casefold())


class LabelMap:
    """Label name → canonical name: the defaults, then the profile's entries over them."""

    __slots__ = ("_exact", "_keyed", "_names")

    def __init__(
        self, defaults: Mapping[str, Iterable[str]], overrides: Mapping[str, str] | None = None
    ) -> None:
        keyed: dict[str, str] = {}
        names: dict[str, list[str]] = {}
        for target, labels in defaults.items():
            for label in (target, *labels):
                keyed.setdefault(label_key(label), target)
                names.setdefault(target, []).append(label)
        self._exact = dict(overrides or {})
        for label, target in self._exact.items():
            keyed[label_key(label)] = target
            names.setdefault(target, []).insert(0, label)
        self._keyed = keyed
        self._names = names

    @classmethod
    def fields(cls, overrides: Mapping[str, str] | None = None) -> LabelMap:
        """The document-field map with a profile's ``mapping``."""
        return cls(FIELD_LABELS, overrides)

    @classmethod
    def line_items(cls, overrides: Mapping[str, str] | None = None) -> LabelMap:
        """The line-item map with a profile's ``line_item_mapping`` (``line_<field>`` and
        ``line item <field>`` are recognised too)."""
        named = {
            target: (*labels, f"line_{target}", f"line item {target}")
            for target, labels in LINE_ITEM_LABELS.items()
        }
        return cls(named, overrides)

    def get(self, *names: str | None) -> str | None:
        """The target of the first name that is known (the exact spelling first)."""
        for name in names:
            if name and name in self._exact:
                return self._exact[name]
        for name in names:
            if name:
                found = self._keyed.get(label_key(name))
                if found is not None:
                    return found
        return None

    def labels_for(self, target: str) -> list[str]:
        """The label names that map to ``target`` (overrides first), for feedback."""
        return list(self._names.get(target, ()))


DEFAULT_FIELDS: Final = LabelMap.fields()
DEFAULT_LINE_ITEMS: Final = LabelMap.line_items()


# --------------------------------------------------------------------------- geometry


class Pages:
    """Turns Konfuzio's span coordinates into ``BBox`` points on docrelay's pages."""

    __slots__ = ("origin", "ours", "vendor")

    def __init__(self, vendor_pages: Any, our_sizes: Any, origin: Origin) -> None:
        self.origin = origin
        self.vendor: dict[int, tuple[float, float]] = {}
        """0-based page index → Konfuzio's ``original_size`` (what its boxes are based on)."""
        if isinstance(vendor_pages, Sequence) and not isinstance(vendor_pages, str):
            for position, page in enumerate(vendor_pages):
                if not isinstance(page, Mapping):
                    continue
                number = page.get("number")
                index = number - 1 if _is_int(number) and number >= 1 else position
                size = _size(page.get("original_size"))
                if size is not None:
                    self.vendor[index] = size
        self.ours: list[tuple[float, float] | None] = [
            _size(size) for size in (our_sizes if isinstance(our_sizes, Sequence) else ())
        ]
        """0-based page index → the page's size in points, from docrelay's copy."""

    def locate(self, annotation: Mapping[str, Any]) -> tuple[int | None, BBox | None]:
        """The 1-based page and the box of an annotation's spans on it (None where unknown)."""
        boxes = [b for b in (_rect(s) for s in _spans(annotation)) if b is not None]
        if not boxes:
            selection = annotation.get("selection_bbox")
            rect = _rect(selection) if isinstance(selection, Mapping) else None
            boxes = [rect] if rect is not None else []
        if not boxes:
            return None, None
        index = boxes[0][0]
        same = [b for b in boxes if b[0] == index]
        x0 = min(b[1] for b in same)
        x1 = max(b[2] for b in same)
        y0 = min(b[3] for b in same)
        y1 = max(b[4] for b in same)
        return index + 1, self._box(index, x0, x1, y0, y1)

    def _box(self, index: int, x0: float, x1: float, y0: float, y1: float) -> BBox | None:
        ours = self.ours[index] if 0 <= index < len(self.ours) else None
        vendor = self.vendor.get(index)
        size = ours or vendor
        base = vendor or ours
        if size is None or base is None:
            if self.origin == "bottom-left":
                return None  # cannot flip without the page's height
            return BBox(round(x0, 2), round(y0, 2), round(x1, 2), round(y1, 2))
        width, height = size
        base_w, base_h = base
        sx = width / base_w if base_w else 1.0
        sy = height / base_h if base_h else 1.0
        if self.origin == "bottom-left":
            top, bottom = (base_h - y1) * sy, (base_h - y0) * sy
        else:
            top, bottom = y0 * sy, y1 * sy
        left, right = x0 * sx, x1 * sx

        def clamp(value: float, limit: float) -> float:
            return round(min(max(value, 0.0), limit), 2)

        return BBox(
            clamp(left, width),
            clamp(top, height),
            clamp(right, width),
            clamp(bottom, height),
            width,
            height,
        )


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _size(value: Any) -> tuple[float, float] | None:
    if isinstance(value, Sequence) and not isinstance(value, str) and len(value) == 2:
        width, height = json_number(value[0]), json_number(value[1])
        if width and height and width > 0 and height > 0:
            return width, height
    return None


def _spans(annotation: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    spans = annotation.get("span")
    if isinstance(spans, Mapping):
        return [spans]
    if isinstance(spans, Sequence) and not isinstance(spans, str):
        return [s for s in spans if isinstance(s, Mapping)]
    return []


def _rect(span: Mapping[str, Any]) -> tuple[int, float, float, float, float] | None:
    """(page index, x0, x1, y0, y1) with x0 ≤ x1 and y0 ≤ y1, or None when incomplete."""
    index = span.get("page_index")
    coords = [json_number(span.get(k)) for k in ("x0", "x1", "y0", "y1")]
    if not _is_int(index) or index < 0 or any(c is None for c in coords):
        return None
    x0, x1, y0, y1 = (float(c) for c in coords)  # type: ignore[arg-type]
    return index, min(x0, x1), max(x0, x1), min(y0, y1), max(y0, y1)


# --------------------------------------------------------------------------- the tree


@dataclass(frozen=True, slots=True)
class Value:
    """One live annotation, read."""

    label: str
    text: str
    normalized: str | None
    """Konfuzio's ``normalized`` as plain text (an ISO date, ``5.1``), where usable."""
    confidence: float | None
    page: int | None
    bbox: BBox | None
    annotation_id: str | None
    sort: tuple[int, float]
    """Best first: accepted, then made by a person, then by confidence."""

    def provenance(self) -> Provenance:
        return Provenance(
            confidence=self.confidence,
            page=self.page,
            bbox=self.bbox,
            vendor_label=self.label,
            raw_text=self.text,
        )


@dataclass(slots=True)
class LabelValues:
    label: str
    api_name: str | None
    values: list[Value]


@dataclass(slots=True)
class AnnotationSet:
    """One annotation set with an id: its label set and its labels' live values."""

    id: Any
    label_set_id: Any
    label_set_name: str | None
    repeating: bool
    labels: list[LabelValues]


def annotation_sets(document: Mapping[str, Any], pages: Pages) -> list[AnnotationSet]:
    """The document's annotation sets that exist (id not null), read, in Konfuzio's order."""
    raw_sets = document["annotation_sets"]
    if raw_sets is None:
        return []
    sets: list[AnnotationSet] = []
    counts: dict[Any, int] = {}
    for raw in _list(raw_sets, "annotation_sets"):
        node = _mapping(raw, "an annotation set")
        if node.get("id") is None:
            continue  # a "potential" set: a label set with nothing on this document yet
        label_set = node.get("label_set")
        ls_id: Any = label_set
        name: str | None = None
        flag = False
        if isinstance(label_set, Mapping):
            ls_id = label_set.get("id")
            name = _str(label_set.get("name")) or _str(label_set.get("api_name"))
            flag = bool(
                label_set.get("has_multiple_annotation_sets")
                or label_set.get("has_multiple_sections")
            )
        counts[ls_id] = counts.get(ls_id, 0) + 1
        labels = [
            _label(raw_label, pages) for raw_label in _list(node.get("labels") or [], "labels")
        ]
        sets.append(AnnotationSet(node["id"], ls_id, name, flag, labels))
    for found in sets:
        if found.label_set_id is not None and counts.get(found.label_set_id, 0) > 1:
            found.repeating = True
    return sets


def _label(raw: Any, pages: Pages) -> LabelValues:
    node = _mapping(raw, "a label")
    name = _str(node.get("name")) or _str(node.get("api_name"))
    if name is None:
        raise ValueError(f"a label without a name (id {node.get('id')!r})")
    values = []
    for raw_annotation in _list(node.get("annotations") or [], f"annotations of {name!r}"):
        value = _value(name, _mapping(raw_annotation, "an annotation"), pages)
        if value is not None:
            values.append(value)
    values.sort(key=lambda v: v.sort)
    return LabelValues(name, _str(node.get("api_name")), values)


def _value(label: str, node: Mapping[str, Any], pages: Pages) -> Value | None:
    """The annotation's value, or None for a declined annotation or one without text."""
    revised, correct = node.get("revised"), node.get("is_correct")
    if revised is True and correct is not True:
        return None  # declined: no longer a value
    text = _str(node.get("offset_string"))
    if text is None:
        parts = [_str(span.get("offset_string")) for span in _spans(node)]
        text = " ".join(p for p in parts if p) or None
    if text is None:
        return None
    page, bbox = pages.locate(node)
    confidence = _confidence(node.get("confidence"))
    # accepted by a person, then made by one (``created_by``, correct), then the AI's
    rank = (
        0 if revised is True and correct is True else 1 if correct and node.get("created_by") else 2
    )
    annotation_id = node.get("id")
    return Value(
        label=label,
        text=text,
        normalized=_normalized(node.get("normalized")),
        confidence=confidence,
        page=page,
        bbox=bbox,
        annotation_id=None if annotation_id is None else str(annotation_id),
        sort=(rank, -(confidence or 0.0)),
    )


def _list(value: Any, what: str) -> list[Any]:
    if isinstance(value, str | bytes) or not isinstance(value, Sequence):
        raise TypeError(f"{what} must be a list, not {type(value).__name__}")
    return list(value)


def _mapping(value: Any, what: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise TypeError(f"{what} must be an object, not {type(value).__name__}")
    return value


def _str(value: Any) -> str | None:
    if isinstance(value, str) and value.strip():
        return value
    return None


def _confidence(value: Any) -> float | None:
    number = json_number(value)
    if number is None or number < 0:
        return None
    if number <= 1:
        return number
    return number / 100 if number <= 100 else None  # a percentage


def _normalized(value: Any) -> str | None:
    """Konfuzio's ``normalized`` where it can stand in for the text: a date (not the
    ``0000-07-13`` of a date without a year) or a number."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        try:
            return format(Decimal(repr(value)), "f")
        except InvalidOperation:
            return None
    if isinstance(value, str) and value.strip() and not value.startswith("0000-"):
        return value.strip()
    return None


# --------------------------------------------------------------------------- the result


def normalize(
    raw: Any,
    field_map: LabelMap = DEFAULT_FIELDS,
    line_item_map: LabelMap = DEFAULT_LINE_ITEMS,
    *,
    origin: Origin = "bottom-left",
) -> CanonicalResult:
    """The canonical result of one fetched document (boxes in PDF points from the top left)."""
    document = _mapping(raw, "a Konfuzio result")
    page_sizes: Any = None
    if "annotation_sets" not in document:
        page_sizes = document.get("page_sizes")
        document = _mapping(document["document"], "the document")
    pages = Pages(document.get("pages"), page_sizes, origin)
    sets = annotation_sets(document, pages)

    singles: list[tuple[LabelValues, str]] = []
    for found in sets:
        if not found.repeating:
            for label in found.labels:
                target = field_map.get(label.label, label.api_name) or f"{EXTRA}{label.label}"
                singles.append((label, target))
    currency = next(
        (
            normalize_currency(label.values[0].text)
            for label, target in singles
            if target == "currency" and label.values
        ),
        None,
    )
    fields: list[FieldValue] = []
    names: set[str] = set()
    for label, target in singles:
        for value in label.values:
            name = target
            if name in names:
                name = _unique(f"{EXTRA}{label.label}", names)
            names.add(name)
            fields.append(_field(name, value, currency))

    items: list[LineItem] = []
    tables: dict[Any, list[AnnotationSet]] = {}
    for found in sets:
        if found.repeating:
            tables.setdefault(found.label_set_id, []).append(found)
    for rows in tables.values():
        live = [row for row in rows if any(label.values for label in row.labels)]
        if _is_line_table(live, line_item_map):
            for row in sorted(live, key=_row_position):
                items.append(_line_item(len(items) + 1, row, line_item_map))
        else:
            for number, row in enumerate(live, start=1):
                for label in row.labels:
                    for value in label.values:
                        name = _unique(f"{EXTRA}{label.label}.{number}", names)
                        names.add(name)
                        fields.append(_field(name, value, currency))
    return CanonicalResult(fields=fields, line_items=items, quality=_quality(document))


def _unique(name: str, taken: set[str]) -> str:
    if name not in taken:
        return name
    number = 2
    while f"{name}.{number}" in taken:
        number += 1
    return f"{name}.{number}"


def _typed(name: str, value: FieldValue) -> bool:
    if name in AMOUNT_FIELDS:
        return value.value_number is not None
    if name in DATE_FIELDS:
        return value.value_date is not None
    return True


def _field(name: str, value: Value, currency: str | None) -> FieldValue:
    parsed = normalize_field(
        name,
        value.text,
        confidence=value.confidence,
        page=value.page,
        bbox=value.bbox,
        vendor_label=value.label,
        currency=currency,
    )
    if not _typed(name, parsed) and value.normalized is not None:
        again = normalize_field(name, value.normalized, currency=currency, decimal=".")
        if _typed(name, again):
            parsed.value_text = again.value_text
            parsed.value_number = again.value_number
            parsed.value_date = again.value_date
            parsed.currency = parsed.currency or again.currency
    parsed.raw_text = value.text
    parsed.vendor_id = value.annotation_id
    return parsed


def _is_line_table(rows: list[AnnotationSet], line_item_map: LabelMap) -> bool:
    return any(
        line_item_map.get(label.label, label.api_name) is not None
        for row in rows
        for label in row.labels
        if label.values
    )


def _row_position(row: AnnotationSet) -> tuple[float, float]:
    """Where a row is printed (page, top), so line items come in the invoice's order."""
    best = (float("inf"), float("inf"))
    for label in row.labels:
        for value in label.values:
            if value.page is not None and value.bbox is not None:
                best = min(best, (float(value.page), value.bbox.top))
    return best


def _line_item(line_no: int, row: AnnotationSet, line_item_map: LabelMap) -> LineItem:
    item = LineItem(line_no=line_no)
    for label in row.labels:
        target = line_item_map.get(label.label, label.api_name)
        for position, value in enumerate(label.values):
            if target is None or target.startswith(EXTRA) or position > 0:
                key = target[len(EXTRA) :] if target and target.startswith(EXTRA) else label.label
                key = key if position == 0 else f"{key}.{position + 1}"
                if key not in item.extra:
                    item.extra[key] = " ".join(value.text.split())
                    item.provenance[f"{EXTRA}{key}"] = value.provenance()
                continue
            _set_cell(item, target, value)
    if item.total_amount is None and item.net_amount is not None:
        item.total_amount = item.net_amount
    return item


def _set_cell(item: LineItem, target: str, value: Value) -> None:
    part = normalize_line_item(item.line_no, {target: value.text})
    if target in part.extra and value.normalized is not None:
        retry = normalize_line_item(item.line_no, {target: value.normalized}, decimal=".")
        if target not in retry.extra:
            part = retry
    if getattr(item, target, None) is not None:
        return  # a second label mapping to the same column: the first one read wins
    taken = False
    for attr in LINE_ITEM_FIELDS:
        parsed = getattr(part, attr)
        if parsed is not None and getattr(item, attr) is None:
            setattr(item, attr, parsed)
            taken = True
    for key, text in part.extra.items():  # a value that did not parse: keep the text
        if key not in item.extra:
            item.extra[key] = text
            item.provenance[f"{EXTRA}{key}"] = value.provenance()
    if taken:
        item.provenance.setdefault(target, value.provenance())


def _quality(document: Mapping[str, Any]) -> dict[str, Any]:
    """Konfuzio's own verdicts on the document, verbatim."""
    return {
        key: document[key]
        for key in ("is_reviewed", "category", "category_confidence", "category_is_revised")
        if key in document
    }
