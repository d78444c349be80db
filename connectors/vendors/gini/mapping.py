"""Map a fetched Gini result to the canonical model. Pure, no I/O.

The input is what ``GiniVendor.fetch`` stores::

    {"extractions": <GET …/extractions>,        # {"extractions": {…}, "candidates": {…}}
     "document": <GET /documents/{id}>,          # progress, pageCount, _links …
     "page_sizes": [[w, h], …],                  # our pages in points (from intake)
     "gini_page_sizes": [[sizeX, sizeY], …],     # Gini's pages (layout), where fetched
     "pages": {"total": 14, "read": 10}}         # what Gini read of a long document

(a bare extractions answer maps too). Gini's result (contract §4):

* ``extractions`` maps a label to a specific extraction ``{box?, entity, value, candidates?}``;
  ``value`` is always a string, amounts ``"<decimal>:<ISO currency>"`` (``"24.99:EUR"``,
  ``"21.0:EUR"``), an IBAN without spaces. ``candidates`` names a list in the top-level
  ``candidates`` map: those alternatives stay in the raw result only;
* ``compoundExtractions`` (Gini's answer for tables; not in the seed) maps a label such as
  ``lineItems`` to a list of rows, each a mapping of labels to extractions: a compound label
  the line-item table knows gives one ``LineItem`` per row; another stays ``extra.<label>.<n>.<l>``;
* labels are mapped by name through ``FIELD_LABELS`` (compared without case and punctuation,
  the canonical name itself always recognised), which the profile's ``mapping`` extends or
  overrides; several labels may feed one field in order of precedence: the first present gives
  the field, the others are kept as ``extra.<label>``; unknown labels become ``extra.<label>``;
* ``amountToPay`` gives ``amount_due`` and, unless a ``currency`` label is there, ``currency``;
  unless a total label is there (and ``amount_to_pay_is_total`` is on), ``total_amount`` too;
* boxes: ``left top width height`` in DTP points from the page's upper-left corner (the layout
  chapter's coordinate system, 004:309-310; that boxes use it too is the contract's inference),
  ``page`` 1-based. They are kept in points, scaled where Gini's page size (layout) and ours
  differ, clamped to the page and rounded to 0.01 pt;
* a long document: Gini reads only the first ``max_pages``; ``quality`` says so
  (``pages_read``, ``pages_total``, ``partial``).

Malformed input raises only KeyError, TypeError or ValueError (the engine rejects on those).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any, Final

from connectors.base import (
    AMOUNT_FIELDS,
    BBox,
    CanonicalResult,
    FieldValue,
    LineItem,
    Provenance,
)
from connectors.normalize import json_number, normalize_field, normalize_line_item

EXTRA: Final = "extra."

FIELD_LABELS: Final[dict[str, tuple[str, ...]]] = {
    "amount_due": ("amountToPay",),
    "total_amount": ("totalAmount", "grossAmount", "amountTotal", "invoiceTotal", "total"),
    "net_amount": ("netAmount", "amountNet", "totalNet"),
    "tax_amount": ("vatAmount", "taxAmount", "amountVat", "totalVat"),
    "currency": ("currency",),
    "supplier_iban": ("iban",),
    "supplier_bic": ("bic",),
    "supplier_name": ("paymentRecipient", "senderName", "companyName", "supplierName"),
    "supplier_vat_id": ("vatId", "vatRegNumber", "senderVatId", "taxId"),
    "customer_name": ("customerName", "recipientName", "addresseeName"),
    "customer_vat_id": ("customerVatId",),
    "payment_reference": ("paymentReference", "paymentPurpose"),
    "payment_terms": ("paymentTerms",),
    "due_date": ("paymentDueDate", "dueDate"),
    "issue_date": ("invoiceDate", "documentDate", "issueDate", "date"),
    "invoice_number": ("invoiceNumber", "invoiceId", "invoiceNo", "documentNumber"),
    "order_number": ("orderNumber", "orderId", "purchaseOrder"),
    "document_type": ("docType", "documentType"),
}
"""Canonical field → Gini labels, in order of precedence. The seed names ``amountToPay``,
``iban``, ``paymentReference`` and ``paymentRecipient`` (004:131-260); the others are
Gini's published label names (``bic``, ``paymentPurpose``, ``paymentDueDate``, ``docType``)
and plausible invoice labels a Gini client may be configured with."""

LINE_ITEM_LABELS: Final[dict[str, tuple[str, ...]]] = {
    "description": ("description", "name", "itemDescription"),
    "quantity": ("quantity", "qty"),
    "unit_price": ("baseGross", "unitPrice", "price", "baseNet"),
    "net_amount": ("netAmount", "totalNet"),
    "tax_rate": ("vatRate", "taxRate", "vatPercentage"),
    "total_amount": ("totalGross", "totalAmount", "grossAmount", "amount"),
    "item_code": ("artNumber", "articleNumber", "itemCode", "sku"),
}
"""Canonical line-item field → labels of a ``lineItems`` row (``baseGross`` and ``artNumber``
are what Gini's own mobile SDK reads)."""

LINE_ITEM_COMPOUNDS: Final = ("lineItems", "lineitems", "line_items")
"""Compound extractions whose rows are invoice lines."""

_AMOUNT = re.compile(r"^\s*(-?\d+(?:\.\d+)?)\s*:\s*([A-Za-z]{3})\s*$")


def label_key(name: str) -> str:
    """A label compared without case and punctuation (``amount_to_pay`` = ``amountToPay``)."""
    return re.sub(r"[\W_]+", "", name.casefold())


class LabelMap:
    """Gini label → canonical name, with each label's precedence among those of its target.

    The profile's entries come first: a label it names maps where it says, ahead of the
    defaults for the same target."""

    __slots__ = ("_exact", "_keyed", "_names")

    def __init__(
        self, defaults: Mapping[str, Iterable[str]], overrides: Mapping[str, str] | None = None
    ) -> None:
        self._exact: dict[str, tuple[str, int]] = {}
        self._keyed: dict[str, tuple[str, int]] = {}
        self._names: dict[str, list[str]] = {}
        for label, target in (overrides or {}).items():
            self._exact[label] = (target, -1)
            self._keyed[label_key(label)] = (target, -1)
            self._names.setdefault(target, []).append(label)
        for target, labels in defaults.items():
            for rank, label in enumerate((*labels, target)):
                self._keyed.setdefault(label_key(label), (target, rank))
                if self._keyed[label_key(label)][0] == target:
                    self._names.setdefault(target, []).append(label)

    @classmethod
    def fields(cls, overrides: Mapping[str, str] | None = None) -> LabelMap:
        """The document-field map with a profile's ``mapping``."""
        return cls(FIELD_LABELS, overrides)

    @classmethod
    def line_items(cls, overrides: Mapping[str, str] | None = None) -> LabelMap:
        """The line-item map with a profile's ``line_item_mapping``."""
        return cls(LINE_ITEM_LABELS, overrides)

    def lookup(self, label: str) -> tuple[str, int] | None:
        """(target, precedence) of a label; lower precedence wins."""
        return self._exact.get(label) or self._keyed.get(label_key(label))

    def get(self, label: str) -> str | None:
        """The canonical target of a label, or None."""
        found = self.lookup(label)
        return found[0] if found else None

    def labels_for(self, target: str) -> list[str]:
        """The labels that map to ``target`` (the profile's first), for feedback."""
        return list(self._names.get(target, ()))


DEFAULT_FIELDS: Final = LabelMap.fields()
DEFAULT_LINE_ITEMS: Final = LabelMap.line_items()


# --------------------------------------------------------------------------- values


def parse_gini_amount(text: str | None) -> tuple[Decimal, str] | None:
    """``"24.99:EUR"`` → (Decimal("24.99"), "EUR"); None for anything else."""
    if not isinstance(text, str):
        return None
    match = _AMOUNT.match(text)
    if match is None:
        return None
    try:
        return Decimal(match.group(1)), match.group(2).upper()
    except InvalidOperation:  # pragma: no cover - the pattern only lets decimals through
        return None


def format_gini_amount(number: Decimal, currency: str) -> str:
    """Gini's amount form: ``"5.60:EUR"`` (at least two decimals, no exponent)."""
    exponent = number.as_tuple().exponent
    if isinstance(exponent, int) and exponent > -2:
        number = number.quantize(Decimal("0.01"))
    return f"{number:f}:{currency.upper()}"


# --------------------------------------------------------------------------- geometry


class Pages:
    """Turns Gini's boxes (points, top-left) into ``BBox`` points on docrelay's pages."""

    __slots__ = ("gini", "ours")

    def __init__(self, our_sizes: Any, gini_sizes: Any) -> None:
        self.ours = _sizes(our_sizes)
        self.gini = _sizes(gini_sizes)

    def box(self, raw: Any) -> tuple[int | None, BBox | None]:
        """(1-based page, box) of an extraction's ``box``; (page, None) when incomplete."""
        if not isinstance(raw, Mapping):
            return None, None
        page = raw.get("page")
        page = page if _is_int(page) and page >= 1 else None
        coords = [json_number(raw.get(k)) for k in ("left", "top", "width", "height")]
        if page is None or any(c is None for c in coords):
            return page, None
        left, top, width, height = (float(c) for c in coords)  # type: ignore[arg-type]
        if width < 0 or height < 0:
            return page, None
        index = page - 1
        ours = self.ours[index] if index < len(self.ours) else None
        gini = self.gini[index] if index < len(self.gini) else None
        size = ours or gini
        if size is None:
            return page, BBox(
                round(left, 2), round(top, 2), round(left + width, 2), round(top + height, 2)
            )
        sx, sy = 1.0, 1.0
        if ours is not None and gini is not None:
            sx, sy = ours[0] / gini[0], ours[1] / gini[1]
        page_w, page_h = size

        def clamp(value: float, limit: float) -> float:
            return round(min(max(value, 0.0), limit), 2)

        return page, BBox(
            clamp(left * sx, page_w),
            clamp(top * sy, page_h),
            clamp((left + width) * sx, page_w),
            clamp((top + height) * sy, page_h),
            page_w,
            page_h,
        )


def _sizes(value: Any) -> list[tuple[float, float] | None]:
    if not isinstance(value, Sequence) or isinstance(value, str):
        return []
    found: list[tuple[float, float] | None] = []
    for size in value:
        pair = None
        if isinstance(size, Sequence) and not isinstance(size, str) and len(size) == 2:
            w, h = json_number(size[0]), json_number(size[1])
            if w and h and w > 0 and h > 0:
                pair = (w, h)
        found.append(pair)
    return found


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


# --------------------------------------------------------------------------- the result


@dataclass(frozen=True, slots=True)
class Extraction:
    """One specific extraction, read."""

    label: str
    value: str
    entity: str | None
    page: int | None
    bbox: BBox | None


def read_extraction(label: str, node: Any, pages: Pages) -> Extraction | None:
    """A specific extraction, or None when it has no string value."""
    if not isinstance(node, Mapping):
        raise TypeError(f"extraction {label!r} is not an object")
    value = node.get("value")
    if not isinstance(value, str):
        return None
    entity = node.get("entity")
    page, bbox = pages.box(node.get("box"))
    return Extraction(label, value, entity if isinstance(entity, str) else None, page, bbox)


def field_value(name: str, extraction: Extraction) -> FieldValue:
    """The FieldValue of one extraction under a canonical (or ``extra.…``) name."""
    amount = parse_gini_amount(extraction.value)
    if amount is not None and (name in AMOUNT_FIELDS or name.startswith(EXTRA)):
        number, currency = amount
        return FieldValue(
            name=name,
            value_text=str(number),
            raw_text=extraction.value,
            value_number=number,
            currency=currency,
            page=extraction.page,
            bbox=extraction.bbox,
            vendor_label=extraction.label,
        )
    return normalize_field(
        name,
        extraction.value,
        page=extraction.page,
        bbox=extraction.bbox,
        vendor_label=extraction.label,
    )


def normalize(
    raw: Any,
    field_map: LabelMap = DEFAULT_FIELDS,
    line_item_map: LabelMap = DEFAULT_LINE_ITEMS,
    *,
    amount_to_pay_is_total: bool = True,
) -> CanonicalResult:
    """The canonical result of a stored Gini result (see the module docstring)."""
    if not isinstance(raw, Mapping):
        raise TypeError("a Gini result is a JSON object")
    body = raw.get("extractions") if "extractions" in raw else raw
    if isinstance(body, Mapping) and "extractions" in body:
        outer = body
        specific = body["extractions"]
    else:  # stored as the extractions map itself
        outer, specific = raw, body
    if specific is None:
        specific = {}
    if not isinstance(specific, Mapping):
        raise TypeError("extractions is not an object")
    pages = Pages(raw.get("page_sizes"), raw.get("gini_page_sizes"))

    chosen: dict[str, tuple[int, Extraction]] = {}
    extras: list[FieldValue] = []
    for label, node in specific.items():
        if isinstance(node, list):  # a compound extraction given among the specific ones
            continue
        extraction = read_extraction(str(label), node, pages)
        if extraction is None:
            continue
        found = field_map.lookup(extraction.label)
        if found is None or found[0].startswith(EXTRA):
            name = found[0] if found else f"{EXTRA}{extraction.label}"
            extras.append(field_value(name, extraction))
            continue
        target, rank = found
        held = chosen.get(target)
        if held is None or rank < held[0]:
            if held is not None:
                extras.append(field_value(f"{EXTRA}{held[1].label}", held[1]))
            chosen[target] = (rank, extraction)
        else:
            extras.append(field_value(f"{EXTRA}{extraction.label}", extraction))

    fields = [field_value(target, extraction) for target, (_, extraction) in chosen.items()]
    due = chosen.get("amount_due")
    if "currency" not in chosen and due is not None:
        amount = parse_gini_amount(due[1].value)
        if amount is not None:
            fields.append(
                FieldValue(
                    name="currency",
                    value_text=amount[1],
                    raw_text=due[1].value,
                    currency=amount[1],
                    page=due[1].page,
                    bbox=due[1].bbox,
                    vendor_label=due[1].label,
                )
            )
    if amount_to_pay_is_total and "total_amount" not in chosen and due is not None:
        fields.append(field_value("total_amount", due[1]))
    fields.extend(extras)

    compounds = outer.get("compoundExtractions") if isinstance(outer, Mapping) else None
    compound_map: dict[str, Any] = dict(compounds) if isinstance(compounds, Mapping) else {}
    for label, node in specific.items():
        if isinstance(node, list):
            compound_map.setdefault(str(label), node)
    line_items: list[LineItem] = []
    for label, rows in compound_map.items():
        if not isinstance(rows, list):
            raise TypeError(f"compound extraction {label!r} is not a list")
        if label_key(label) in {label_key(c) for c in LINE_ITEM_COMPOUNDS}:
            for row in rows:
                item = _line_item(len(line_items) + 1, row, line_item_map, pages)
                if item is not None:
                    line_items.append(item)
        else:
            for n, row in enumerate(rows, 1):
                if not isinstance(row, Mapping):
                    raise TypeError(f"a row of {label!r} is not an object")
                for sub, node in row.items():
                    extraction = read_extraction(str(sub), node, pages)
                    if extraction is not None:
                        fields.append(field_value(f"{EXTRA}{label}.{n}.{sub}", extraction))

    return CanonicalResult(fields=fields, line_items=line_items, quality=quality(raw))


def _line_item(line_no: int, row: Any, line_item_map: LabelMap, pages: Pages) -> LineItem | None:
    if not isinstance(row, Mapping):
        raise TypeError("a line item row is not an object")
    texts: dict[str, str] = {}
    provenance: dict[str, Provenance] = {}
    ranks: dict[str, int] = {}
    leftovers: dict[str, Extraction] = {}
    for sub, node in row.items():
        extraction = read_extraction(str(sub), node, pages)
        if extraction is None:
            continue
        found = line_item_map.lookup(extraction.label)
        if found is None or found[0].startswith(EXTRA):
            key = found[0][len(EXTRA) :] if found else extraction.label
            leftovers[key] = extraction
            continue
        target, rank = found
        if target in ranks and ranks[target] <= rank:
            leftovers[extraction.label] = extraction
            continue
        ranks[target] = rank
        amount = parse_gini_amount(extraction.value)
        texts[target] = str(amount[0]) if amount is not None else extraction.value
        provenance[target] = Provenance(
            page=extraction.page,
            bbox=extraction.bbox,
            vendor_label=extraction.label,
            raw_text=extraction.value,
        )
    if not texts and not leftovers:
        return None
    item = normalize_line_item(line_no, texts, decimal=".")
    for key, extraction in leftovers.items():
        item.extra[key] = extraction.value
        provenance[f"{EXTRA}{key}"] = Provenance(
            page=extraction.page,
            bbox=extraction.bbox,
            vendor_label=extraction.label,
            raw_text=extraction.value,
        )
    for key in list(provenance):
        if not key.startswith(EXTRA) and getattr(item, key, None) is None:
            # the text did not parse: normalize_line_item kept it in extra under the field name
            provenance[f"{EXTRA}{key}"] = provenance.pop(key)
    item.provenance = provenance
    return item


def quality(raw: Mapping[str, Any]) -> dict[str, Any]:
    """Gini's verdicts and ours on how much of the document was read."""
    found: dict[str, Any] = {}
    document = raw.get("document")
    if isinstance(document, Mapping):
        kind = document.get("sourceClassification")
        if isinstance(kind, str):
            found["source_classification"] = kind
    pages = raw.get("pages")
    if isinstance(pages, Mapping):
        total, read = pages.get("total"), pages.get("read")
        if _is_int(total) and _is_int(read) and total > read:
            found["partial"] = True
            found["pages_read"] = read
            found["pages_total"] = total
            found["partial_reason"] = (
                f"Gini reads only the first {read} pages; this document has {total}"
            )
    return found
