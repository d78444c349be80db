"""Map a DeepOpinion extraction (and its completed reviews) to the canonical model. Pure.

The input is what ``DeepOpinionVendor`` stores::

    {"answer": <the extraction call's 200 body>,    # verbatim (fetch: without annotated_pages)
     "document_name": "<the uploaded file name>",
     "page_sizes": [[w, h], …],                     # our pages in points (from intake)
     "reviews": [<Review with data>, …]}            # only in a reviewed result (fetch)

(a bare extraction answer maps too). The answer's shape is the seed's (002:749-805) as the
shared API page fixes it:

* the document is the answer's ``documents`` entry named like our upload (else the first);
* values come from ``bboxes[page][match]`` — the boxes of one value, one per printed line, each
  with ``TLx … BLy`` as fractions of the page (origin top-left), ``text``, ``label`` and
  ``confidence`` (0..1) — and, when no box is there, from ``matches`` (``label``, ``text``,
  ``confidence``, ``page`` from 0) without geometry;
* a value's text is its boxes' texts joined by a space, its confidence the lowest of them, its
  box the union of its boxes, in PDF points of our page (``BBox.from_fractions``; no box
  where we know no page size), its page 1-based;
* labels map by name (compared without case and punctuation) through ``FIELD_LABELS`` and
  ``LINE_ITEM_LABELS``, which the profile's ``mapping`` / ``line_item_mapping`` extend or
  override; of several values of one document label the most confident is the field, the
  others ``extra.<label>.<n>``; unknown labels become ``extra.<label>``; the k-th value (in
  reading order) of each line-item label belongs to line k;
* amounts and dates go through ``connectors.normalize`` (as printed: ``1.234,56`` or
  ``1,234.56``); an amount without a currency of its own takes the ``Currency`` label's;
* ``quality``: the three ``all_*`` flags, ``credits_used`` / ``total_credits_used``, the
  model, the HITL status and the values below their thresholds, and our own checks
  (``required_labels``, ``confidence_threshold``);
* ``review``: with the profile's HITL on, a document whose ``hitl.status`` is ``pending``
  waits for its review. A reviewed result (``reviews`` all ``COMPLETED``) takes each review's
  ``reviewed_value`` for the value it names (by label, extracted text and page), adds a value
  for a missing label, drops one reviewed as empty, and needs no review.

Malformed input raises only KeyError, TypeError or ValueError (the engine rejects on those).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Final

from connectors.base import BBox, CanonicalResult, FieldValue, LineItem, Provenance
from connectors.normalize import (
    json_number,
    normalize_currency,
    normalize_field,
    normalize_line_item,
)

EXTRA: Final = "extra."
PENDING: Final = "pending"
COMPLETED: Final = "COMPLETED"
REVIEWED_CONFIDENCE: Final = 1.0
"""The confidence of a value a person reviewed [ours]."""

FIELD_LABELS: Final[dict[str, tuple[str, ...]]] = {
    "invoice_number": ("Invoice number", "Invoice no", "Invoice ID", "Rechnungsnummer"),
    "issue_date": ("Invoice date", "Issue date", "Date", "Rechnungsdatum"),
    "due_date": ("Due date", "Payment due date", "Fälligkeitsdatum"),
    "currency": ("Currency", "Währung"),
    "total_amount": ("Total amount", "Total", "Gross amount", "Gesamtbetrag"),
    "net_amount": ("Net amount", "Subtotal", "Nettobetrag"),
    "tax_amount": ("Tax amount", "VAT amount", "VAT", "MwSt"),
    "amount_due": ("Amount due", "Zahlbetrag"),
    "supplier_name": ("Supplier name", "Supplier", "Vendor name", "Lieferant"),
    "supplier_vat_id": ("Supplier VAT ID", "VAT ID", "USt-IdNr"),
    "customer_name": ("Customer name", "Customer", "Kunde"),
    "customer_vat_id": ("Customer VAT ID",),
    "supplier_iban": ("IBAN", "Supplier IBAN"),
    "supplier_bic": ("BIC", "Supplier BIC"),
    "payment_reference": ("Payment reference", "Verwendungszweck"),
    "order_number": ("Purchase order number", "Order number", "PO number", "Bestellnummer"),
    "payment_terms": ("Payment terms", "Zahlungsbedingungen"),
    "document_type": ("Document type",),
}
"""Canonical field → DeepOpinion label names: model 1's labels as the shared API page names
them first, then a few common spellings; the canonical name itself is always recognised."""

LINE_ITEM_LABELS: Final[dict[str, tuple[str, ...]]] = {
    "description": ("Line item description",),
    "quantity": ("Line item quantity",),
    "unit_price": ("Line item unit price",),
    "total_amount": ("Line item amount", "Line item total"),
    "net_amount": ("Line item net amount",),
    "tax_rate": ("Line item tax rate", "Line item VAT rate"),
    "item_code": ("Line item code", "Line item article number"),
}
"""Canonical line-item field → DeepOpinion labels (one value per line, in reading order);
``line item <field>`` and ``line_<field>`` are recognised too."""


def label_key(name: str) -> str:
    """A label compared without case and punctuation (``Invoice-Number`` = ``invoicenumber``)."""
    return re.sub(r"[\W_]+", "", name.casefold())


class LabelMap:
    """Label name → canonical name: the defaults, then the profile's entries over them."""

    __slots__ = ("_keyed",)

    def __init__(
        self, defaults: Mapping[str, Iterable[str]], overrides: Mapping[str, str] | None = None
    ) -> None:
        keyed: dict[str, str] = {}
        for target, labels in defaults.items():
            for label in (target, *labels):
                keyed.setdefault(label_key(label), target)
        for label, target in (overrides or {}).items():
            keyed[label_key(label)] = target
        self._keyed = keyed

    @classmethod
    def fields(cls, overrides: Mapping[str, str] | None = None) -> LabelMap:
        """The document-field map with a profile's ``mapping``."""
        return cls(FIELD_LABELS, overrides)

    @classmethod
    def line_items(cls, overrides: Mapping[str, str] | None = None) -> LabelMap:
        """The line-item map with a profile's ``line_item_mapping``."""
        named = {
            target: (*labels, f"line item {target}", f"line_{target}")
            for target, labels in LINE_ITEM_LABELS.items()
        }
        return cls(named, overrides)

    def get(self, label: str) -> str | None:
        """The canonical target of a label, or None."""
        return self._keyed.get(label_key(label))


DEFAULT_FIELDS: Final = LabelMap.fields()
DEFAULT_LINE_ITEMS: Final = LabelMap.line_items()


# --------------------------------------------------------------------------- values


@dataclass(frozen=True, slots=True)
class Value:
    """One value DeepOpinion found (or a person reviewed)."""

    label: str
    text: str
    confidence: float | None
    page_index: int | None
    """0-based, as DeepOpinion counts."""
    bbox: BBox | None
    order: int
    """Reading order: page, then DeepOpinion's order on it."""
    reviewed: bool = False

    @property
    def page(self) -> int | None:
        return None if self.page_index is None else self.page_index + 1

    def provenance(self) -> Provenance:
        return Provenance(
            confidence=self.confidence,
            page=self.page,
            bbox=self.bbox,
            vendor_label=self.label,
            raw_text=self.text,
        )


def _confidence(value: Any) -> float | None:
    number = json_number(value)
    if number is None or number < 0:
        return None
    return number if number <= 1 else (number / 100 if number <= 100 else None)


def _sizes(value: Any) -> list[tuple[float, float] | None]:
    if not isinstance(value, Sequence) or isinstance(value, str):
        return []
    found: list[tuple[float, float] | None] = []
    for size in value:
        pair = None
        if isinstance(size, Sequence) and not isinstance(size, str) and len(size) == 2:
            width, height = json_number(size[0]), json_number(size[1])
            if width and height and width > 0 and height > 0:
                pair = (width, height)
        found.append(pair)
    return found


_X_CORNERS = ("TLx", "TRx", "BRx", "BLx")
_Y_CORNERS = ("TLy", "TRy", "BRy", "BLy")


def _fractions(box: Mapping[str, Any], keys: tuple[str, ...]) -> list[float] | None:
    """The box's corner coordinates of ``keys``, clamped to the page; None when one is
    missing or not a number."""
    found = []
    for key in keys:
        number = json_number(box.get(key))
        if number is None:
            return None
        found.append(0.0 if number < 0.0 else 1.0 if number > 1.0 else number)
    return found


def box_on_page(
    boxes: Sequence[Mapping[str, Any]], size: tuple[float, float] | None
) -> BBox | None:
    """The union of a value's boxes (fractions, top-left origin) in points on a page of
    ``size``; None without a page size, without complete corners or when no box has an
    area (the all-zero box of a value whose place is not known must not become a box at
    the page's corner)."""
    if size is None:
        return None
    xs: list[float] = []
    ys: list[float] = []
    for box in boxes:
        box_xs = _fractions(box, _X_CORNERS)
        box_ys = _fractions(box, _Y_CORNERS)
        if box_xs is None or box_ys is None:
            continue
        if max(box_xs) <= min(box_xs) or max(box_ys) <= min(box_ys):
            continue  # no area (all corners 0: the place is not known) says nothing
        xs.extend(box_xs)
        ys.extend(box_ys)
    if not xs:
        return None
    width, height = size
    box = BBox.from_fractions(
        min(xs), min(ys), max(xs), max(ys), page_width=width, page_height=height
    )
    return BBox(
        round(box.left, 2), round(box.top, 2), round(box.right, 2), round(box.bottom, 2),
        width, height,
    )  # fmt: skip


def values_from_bboxes(bboxes: Any, sizes: list[tuple[float, float] | None]) -> list[Value]:
    """``bboxes[page][match]`` = the boxes of one value → values in reading order."""
    if not isinstance(bboxes, list):
        raise TypeError("bboxes must be a list")
    values: list[Value] = []
    for page_index, page in enumerate(bboxes):
        if not isinstance(page, list):
            raise TypeError(f"bboxes[{page_index}] must be a list")
        size = sizes[page_index] if page_index < len(sizes) else None
        for match in page:
            boxes = [match] if isinstance(match, Mapping) else match
            if not isinstance(boxes, list):
                raise TypeError(f"a match on page {page_index} is neither a box nor a list")
            boxes = [b for b in boxes if isinstance(b, Mapping)]
            labelled = [b for b in boxes if isinstance(b.get("label"), str) and b["label"]]
            if not labelled:
                continue
            texts = [b["text"] for b in boxes if isinstance(b.get("text"), str) and b["text"]]
            if not texts:
                continue
            confidences = [
                c for c in (_confidence(b.get("confidence")) for b in boxes) if c is not None
            ]
            values.append(
                Value(
                    label=labelled[0]["label"],
                    text=" ".join(texts),
                    confidence=min(confidences) if confidences else None,
                    page_index=page_index,
                    bbox=box_on_page(boxes, size),
                    order=len(values),
                )
            )
    return values


def values_from_matches(matches: Any) -> list[Value]:
    """``matches`` (``label``, ``text``, ``confidence``, ``page``): values without boxes, in
    reading order (by page, then as listed)."""
    if not isinstance(matches, list):
        raise TypeError("matches must be a list")
    found: list[tuple[int, int, Mapping[str, Any]]] = []
    for position, match in enumerate(matches):
        if not isinstance(match, Mapping):
            raise TypeError("a match must be an object")
        label, text = match.get("label"), match.get("text")
        if not isinstance(label, str) or not label or not isinstance(text, str) or not text:
            continue  # the seed's ``[{}]``
        page = match.get("page")
        page_index = page if isinstance(page, int) and not isinstance(page, bool) else 0
        found.append((page_index, position, match))
    found.sort(key=lambda item: (item[0], item[1]))
    return [
        Value(
            label=match["label"],
            text=match["text"],
            confidence=_confidence(match.get("confidence")),
            page_index=page_index,
            bbox=None,
            order=order,
        )
        for order, (page_index, _, match) in enumerate(found)
    ]


# --------------------------------------------------------------------------- reviews


def apply_reviews(
    values: list[Value], reviews: Sequence[Any], sizes: list[tuple[float, float] | None]
) -> list[Value]:
    """The values after the completed reviews: each review's ``reviewed_value`` replaces the
    value it names (same label, extracted text and page; else the first unreviewed one of
    the label), a label without a value gets one, an empty reviewed value drops it."""
    result: list[Value | None] = list(values)
    order = len(values)
    for review in reviews:
        if not isinstance(review, Mapping):
            raise TypeError("a review must be an object")
        if review.get("status") != COMPLETED:
            continue
        label = review.get("label")
        if not isinstance(label, str) or not label:
            continue
        data = review.get("data") if isinstance(review.get("data"), Mapping) else {}
        extracted = data.get("value")
        reviewed = data.get("reviewed_value")
        if reviewed is None:  # confirmed as extracted
            reviewed = extracted
        page = review.get("page_num")
        page_index = page if isinstance(page, int) and not isinstance(page, bool) else None
        at = _find(result, label, extracted, page_index)
        if not isinstance(reviewed, str) or not reviewed.strip():
            if at is not None:
                result[at] = None
            continue
        if at is not None:
            held = result[at]
            assert held is not None
            result[at] = replace(held, text=reviewed, confidence=REVIEWED_CONFIDENCE, reviewed=True)
            continue
        box = data.get("bbox")
        size = sizes[page_index] if page_index is not None and page_index < len(sizes) else None
        bbox = box_on_page([box], size) if isinstance(box, Mapping) else None
        result.append(
            Value(label, reviewed, REVIEWED_CONFIDENCE, page_index, bbox, order, reviewed=True)
        )
        order += 1
    return [v for v in result if v is not None]


def _find(values: list[Value | None], label: str, text: Any, page: int | None) -> int | None:
    key = label_key(label)
    candidates = [
        i
        for i, v in enumerate(values)
        if v is not None and not v.reviewed and label_key(v.label) == key
    ]
    for i in candidates:
        held = values[i]
        assert held is not None
        if held.text == text and (page is None or held.page_index == page):
            return i
    for i in candidates:
        held = values[i]
        assert held is not None
        if held.text == text:
            return i
    return candidates[0] if candidates and text is None else None


# --------------------------------------------------------------------------- the result


def the_document(answer: Mapping[str, Any], name: Any) -> Mapping[str, Any]:
    """The answer's document for our upload: the one named like it, else the first."""
    documents = answer["documents"]
    if not isinstance(documents, list) or not documents:
        raise ValueError("the answer has no documents")
    for document in documents:
        if isinstance(document, Mapping) and name is not None and document.get("name") == name:
            return document
    first = documents[0]
    if not isinstance(first, Mapping):
        raise TypeError("a document must be an object")
    return first


def document_values(
    document: Mapping[str, Any], sizes: list[tuple[float, float] | None]
) -> list[Value]:
    """The document's values: from its boxes, else from its matches."""
    values = values_from_bboxes(document.get("bboxes") or [], sizes)
    if values:
        return values
    return values_from_matches(document.get("matches") or [])


def normalize(
    raw: Any,
    field_map: LabelMap = DEFAULT_FIELDS,
    line_item_map: LabelMap = DEFAULT_LINE_ITEMS,
    *,
    hitl: bool = False,
    required_labels: Sequence[str] = (),
    confidence_threshold: float | None = None,
) -> CanonicalResult:
    """The canonical result of a stored DeepOpinion result (see the module docstring)."""
    if not isinstance(raw, Mapping):
        raise TypeError("a DeepOpinion result is a JSON object")
    answer = raw["answer"] if "answer" in raw else raw
    if not isinstance(answer, Mapping):
        raise TypeError("the extraction answer is not an object")
    document = the_document(answer, raw.get("document_name"))
    sizes = _sizes(raw.get("page_sizes"))
    values = document_values(document, sizes)
    reviews = raw.get("reviews")
    reviewed = isinstance(reviews, list)
    if reviewed:
        values = apply_reviews(values, reviews, sizes)

    singles: list[tuple[str, list[Value]]] = []
    lines: dict[str, list[Value]] = {}
    by_label: dict[str, list[Value]] = {}
    for value in values:
        by_label.setdefault(value.label, []).append(value)
    for label, found in by_label.items():
        if line_item_map.get(label) is not None and field_map.get(label) is None:
            lines[label] = found
        else:
            singles.append((label, found))
    currency = next(
        (
            normalize_currency(found[0].text)
            for label, found in singles
            if field_map.get(label) == "currency"
        ),
        None,
    )
    fields: list[FieldValue] = []
    taken: set[str] = set()
    for label, found in singles:
        target = field_map.get(label) or f"{EXTRA}{label}"
        ranked = sorted(found, key=lambda v: (-(v.confidence or 0.0), v.order))
        for position, value in enumerate(ranked):
            name = target if position == 0 else f"{EXTRA}{label}.{position + 1}"
            if name in taken:
                name = _unique(f"{EXTRA}{label}", taken)
            taken.add(name)
            fields.append(_field(name, value, currency))
    items = _line_items(lines, line_item_map)
    return CanonicalResult(
        fields=fields,
        line_items=items,
        quality=quality(
            answer,
            document,
            values,
            reviews if reviewed else None,
            required_labels=required_labels,
            confidence_threshold=confidence_threshold,
        ),
        review=review_reason(document, reviews if reviewed else None) if hitl else None,
    )


def _unique(name: str, taken: set[str]) -> str:
    if name not in taken:
        return name
    number = 2
    while f"{name}.{number}" in taken:
        number += 1
    return f"{name}.{number}"


def _field(name: str, value: Value, currency: str | None) -> FieldValue:
    return normalize_field(
        name,
        value.text,
        confidence=value.confidence,
        page=value.page,
        bbox=value.bbox,
        vendor_label=value.label,
        currency=currency,
    )


def _line_items(lines: Mapping[str, list[Value]], line_item_map: LabelMap) -> list[LineItem]:
    """The k-th value of each line-item label makes line k."""
    count = max((len(found) for found in lines.values()), default=0)
    items: list[LineItem] = []
    for k in range(count):
        texts: dict[str, str] = {}
        provenance: dict[str, Provenance] = {}
        extras: dict[str, Value] = {}
        for label, found in lines.items():
            if k >= len(found):
                continue
            value = sorted(found, key=lambda v: v.order)[k]
            target = line_item_map.get(label)
            if target is None or target.startswith(EXTRA) or target in texts:
                key = target[len(EXTRA) :] if target and target.startswith(EXTRA) else label
                extras[key] = value
                continue
            texts[target] = value.text
            provenance[target] = value.provenance()
        item = normalize_line_item(k + 1, texts)
        for key in list(provenance):
            if getattr(item, key, None) is None:  # did not parse: kept in extra as text
                provenance[f"{EXTRA}{key}"] = provenance.pop(key)
        for key, value in extras.items():
            item.extra[key] = " ".join(value.text.split())
            provenance[f"{EXTRA}{key}"] = value.provenance()
        item.provenance = provenance
        items.append(item)
    return items


def _flag(document: Mapping[str, Any], answer: Mapping[str, Any], key: str) -> Any:
    value = document.get(key)
    return answer.get(key) if value is None else value


def quality(
    answer: Mapping[str, Any],
    document: Mapping[str, Any],
    values: Sequence[Value],
    reviews: Sequence[Any] | None,
    *,
    required_labels: Sequence[str] = (),
    confidence_threshold: float | None = None,
) -> dict[str, Any]:
    """DeepOpinion's verdicts (verbatim) and the profile's own checks."""
    found: dict[str, Any] = {}
    for key in (
        "all_required_fields_found",
        "all_confidence_thresholds_met",
        "all_data_conversion_passed",
    ):
        value = _flag(document, answer, key)
        if isinstance(value, bool):
            found[key] = value
    for key, source in (("credits_used", document), ("total_credits_used", answer)):
        value = source.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool):
            found[key] = value
    if isinstance(answer.get("model"), str):
        found["model"] = answer["model"]
    hitl = document.get("hitl")
    if isinstance(hitl, Mapping):
        found["hitl_status"] = hitl.get("status")
        below = below_threshold(hitl)
        if below:
            found["below_threshold"] = below
    if reviews is not None:
        found["reviewed"] = all(
            isinstance(r, Mapping) and r.get("status") == COMPLETED for r in reviews
        )
        found["reviews"] = len(reviews)
    present = {label_key(v.label) for v in values}
    missing = [label for label in required_labels if label_key(label) not in present]
    if required_labels:
        found["missing_required_labels"] = missing
    if confidence_threshold is not None:
        found["low_confidence"] = sorted(
            {
                v.label
                for v in values
                if not v.reviewed
                and v.confidence is not None
                and v.confidence < confidence_threshold
            }
        )
    return found


def below_threshold(hitl: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The values the HITL block names as below their threshold: label, found, expected (%)."""
    below: list[dict[str, Any]] = []
    result = hitl.get("result")
    for entry in result if isinstance(result, list) else []:
        confidences = entry.get("confidences") if isinstance(entry, Mapping) else None
        for item in confidences if isinstance(confidences, list) else []:
            if isinstance(item, Mapping) and isinstance(item.get("label"), str):
                below.append(
                    {
                        "label": item["label"],
                        "found": item.get("found"),
                        "expected": item.get("expected_confidence"),
                    }
                )
    return below


def review_reason(document: Mapping[str, Any], reviews: Sequence[Any] | None) -> str | None:
    """Why the result waits for DeepOpinion's HITL, or None (no review, or it is done)."""
    hitl = document.get("hitl")
    if not isinstance(hitl, Mapping) or hitl.get("status") != PENDING:
        return None
    if reviews is not None:
        open_ = [r for r in reviews if not isinstance(r, Mapping) or r.get("status") != COMPLETED]
        if not open_:
            return None
        return f"DeepOpinion's human-in-the-loop review is not finished ({len(open_)} open)"
    below = below_threshold(hitl)
    detail = (
        ", ".join(f"{b['label']} {b['found']} % < {b['expected']} %" for b in below[:5])
        or "a required label is missing or a value is below its threshold"
    )
    more = f" and {len(below) - 5} more" if len(below) > 5 else ""
    return f"waiting for DeepOpinion's human-in-the-loop review: {detail}{more}"
