"""What the DeepOpinion emulator's "AI" finds, in DeepOpinion's shapes: the kit's extraction
engine (``connectors.emulation.extraction``) read as model 1's labels, with confidences, the
three flags, ``matches``, ``bboxes`` (fractions of the page, origin top-left) and annotated
page images.

Everything here is a pure function of the file's bytes, ``--seed``, ``--threshold`` and
``--low-confidence-rate``, so the same file always gets the same answer. The label catalogue
and the box layout are ours (NOTES.md: "The API as docrelay reads it", "Emulator").
"""

from __future__ import annotations

import base64
import hashlib
import io
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

from connectors.base import BBox
from connectors.emulation import extraction as engine

DOCUMENT_LABELS: dict[str, str] = {
    "invoice_number": "Invoice number",
    "issue_date": "Invoice date",
    "due_date": "Due date",
    "currency": "Currency",
    "total_amount": "Total amount",
    "net_amount": "Net amount",
    "tax_amount": "Tax amount",
    "amount_due": "Amount due",
    "supplier_name": "Supplier name",
    "supplier_vat_id": "Supplier VAT ID",
    "customer_name": "Customer name",
    "supplier_iban": "IBAN",
    "supplier_bic": "BIC",
    "payment_reference": "Payment reference",
    "order_number": "Purchase order number",
}
"""Model 1's document labels by the engine's canonical field name, in the spec's order."""

LINE_LABELS: dict[str, str] = {
    "description": "Line item description",
    "quantity": "Line item quantity",
    "unit_price": "Line item unit price",
    "total_amount": "Line item amount",
}
"""Model 1's line-item labels by the engine's cell name."""

LABELS: tuple[str, ...] = (*DOCUMENT_LABELS.values(), *LINE_LABELS.values())
"""Every label of model 1; its ``id`` is the position from 1."""

REQUIRED_LABELS: tuple[str, ...] = ("Invoice number", "Invoice date", "Total amount")
DATE_LABELS = frozenset({"Invoice date", "Due date"})
AMOUNT_LABELS = frozenset(
    {
        "Total amount",
        "Net amount",
        "Tax amount",
        "Amount due",
        "Line item unit price",
        "Line item amount",
    }
)
"""Labels whose value must convert (``all_data_conversion_passed``)."""

LOW_CONFIDENCE = (0.40, 0.85)
"""Where a lowered confidence lands (when that is below the threshold)."""
ANNOTATION_DPI = 72
"""Resolution of ``annotated_pages`` images (1 px per PDF point)."""


@dataclass(slots=True)
class Value:
    """One value of the document as the model reports it."""

    label: str
    text: str
    page: int | None
    """Page index from 0; None when the engine does not know it."""
    box: BBox | None
    """In PDF points from the top-left of ``page``."""
    converts: bool
    confidence: float = 1.0
    given: float | None = None
    """The engine's confidence when wrongness is on (``score`` keeps it then)."""


@dataclass(slots=True)
class Reading:
    """What the model read of one file (the answer before the HITL part)."""

    sha256: str
    pages: int
    sizes: list[tuple[float | None, float | None]]
    """Each page's width and height in points (None for images)."""
    values: list[Value] = field(default_factory=list)
    error: str | None = None

    def below(self, threshold: float) -> list[Value]:
        """Values whose confidence (in percent) is under ``threshold``."""
        return [v for v in self.values if v.confidence * 100 < threshold]

    def missing(self) -> list[str]:
        found = {v.label for v in self.values}
        return [label for label in REQUIRED_LABELS if label not in found]

    def flags(self, threshold: float) -> dict[str, bool]:
        return {
            "all_required_fields_found": not self.missing(),
            "all_confidence_thresholds_met": not self.below(threshold),
            "all_data_conversion_passed": all(v.converts for v in self.values),
        }


# --------------------------------------------------------------------------- reading


def _converts(label: str, found: engine.FoundValue) -> bool:
    if label in DATE_LABELS:
        return found.canonical is not None and found.canonical.value_date is not None
    if label in AMOUNT_LABELS:
        if found.canonical is not None:
            return found.canonical.value_number is not None
        try:
            Decimal(found.value or "")
        except InvalidOperation:
            return False
        return True
    return True


def _page_index(page: int | None) -> int | None:
    return None if page is None else page - 1


def values_of(read: engine.Extraction) -> list[Value]:
    """The engine's fields and line cells as labelled values: document labels first, then the
    line items in reading order (description, quantity, unit price, amount per line)."""
    found: list[Value] = []
    for name, label in DOCUMENT_LABELS.items():
        entry = read.get(name)
        if entry is None or not entry.text:
            continue
        page = _page_index(entry.page)
        converts = _converts(label, entry)
        found.append(Value(label, entry.text, page, entry.box, converts, given=entry.confidence))
    for item in read.line_items:
        for cell_name, label in LINE_LABELS.items():
            cell = item.cells.get(cell_name)
            if cell is None or not cell.text:
                continue
            found.append(
                Value(label, cell.text, _page_index(cell.page), cell.box, _converts(label, cell))
            )
    return found


def _unit(*parts: object) -> float:
    """A number in [0, 1) fixed by ``parts`` (the file's hash, the seed, a purpose)."""
    digest = hashlib.sha256("|".join(str(p) for p in parts).encode()).hexdigest()
    return int(digest[:13], 16) / 16**13


def score(
    reading: Reading, *, seed: int | None, threshold: float, low_confidence_rate: float
) -> None:
    """Give every value its confidence: at or above ``threshold`` (percent), except one or
    two values of a ``low_confidence_rate`` share of files, which land in 0.40-0.85 (and below
    the threshold). Drawn from the file's SHA-256 and ``seed`` only. A value the engine gave a
    confidence (wrongness on: lower for wrong values) keeps it, lowering aside."""
    floor = min(max(threshold / 100, 0.0), 1.0)
    key = (seed, reading.sha256)
    for index, value in enumerate(reading.values):
        value.confidence = floor + (1 - floor) * (0.2 + 0.79 * _unit(*key, "confidence", index))
        if value.given is not None:
            value.confidence = value.given
    if not reading.values or _unit(*key, "low") >= low_confidence_rate:
        return
    count = min(len(reading.values), 1 if _unit(*key, "how-many") < 0.5 else 2)
    order = sorted(range(len(reading.values)), key=lambda i: _unit(*key, "pick", i))
    low, high = LOW_CONFIDENCE
    for index in order[:count]:
        lowered = low + (high - low) * _unit(*key, "lowered", index)
        if lowered * 100 >= threshold:
            lowered = floor * 0.9  # a threshold under 0.85: still below it
        reading.values[index].confidence = lowered


def read_file(
    data: bytes, mime_type: str, wrongness: engine.WrongnessSettings | None = None
) -> Reading:
    """The engine's reading of one file, without confidences (``score`` adds them). An
    unreadable file (a scan without a text layer, an image) is a reading without values.
    ``wrongness``: the emulator's options, for fields wrong or missed on purpose."""
    digest = hashlib.sha256(data).hexdigest()
    read = engine.extract(data, mime_type, wrongness=wrongness)
    pages = page_count(data, mime_type)
    sizes = [(p.width, p.height) for p in read.pages]
    sizes += [(None, None)] * (pages - len(sizes))
    return Reading(digest, pages, sizes[:pages], values_of(read), read.error)


def page_count(data: bytes, mime_type: str) -> int:
    """Pages billed: a PDF's pages, a TIFF's frames, else 1."""
    if mime_type == "application/pdf":
        return max(1, engine.pdf_facts(data).pages or 0)
    if mime_type == "image/tiff":
        from PIL import Image

        try:
            with Image.open(io.BytesIO(data)) as image:
                return max(1, int(getattr(image, "n_frames", 1)))
        except (OSError, ValueError, SyntaxError):
            return 1
    return 1


# --------------------------------------------------------------------------- the answer


def box_json(value: Value, size: tuple[float | None, float | None]) -> dict[str, Any]:
    """One box: the four corners as fractions of the page (all 0 when the place is unknown,
    so the value still shows in ``bboxes``), the text, label and confidence."""
    width, height = size
    box = value.box
    if box is None or not width or not height:
        left = top = right = bottom = 0.0
    else:
        left, right = box.left / width, box.right / width
        top, bottom = box.top / height, box.bottom / height
    return {
        "TLx": left,
        "TLy": top,
        "TRx": right,
        "TRy": top,
        "BRx": right,
        "BRy": bottom,
        "BLx": left,
        "BLy": bottom,
        "text": value.text,
        "label": value.label,
        "confidence": value.confidence,
    }


def matches(reading: Reading) -> list[dict[str, Any]]:
    return [
        {"label": v.label, "text": v.text, "confidence": v.confidence, "page": v.page or 0}
        for v in reading.values
    ]


def bboxes(reading: Reading) -> list[list[list[dict[str, Any]]]]:
    """``bboxes[page][match]``: the boxes of each value on that page (one per value: the
    engine finds a value as one box)."""
    pages: list[list[list[dict[str, Any]]]] = [[] for _ in range(reading.pages)]
    for value in reading.values:
        index = min(value.page or 0, reading.pages - 1)
        pages[index].append([box_json(value, reading.sizes[index])])
    return pages


def value_box(reading: Reading, value: Value) -> dict[str, Any]:
    index = min(value.page or 0, reading.pages - 1)
    return box_json(value, reading.sizes[index])


def hitl_result(reading: Reading, threshold: float) -> list[dict[str, Any]]:
    """``hitl.result``: one entry per value under the threshold, ``found`` in percent
    (rounded down, so it is under ``expected_confidence`` too)."""
    return [
        {
            "confidences": [
                {
                    "label": v.label,
                    "value": v.text,
                    "expected_confidence": threshold,
                    "found": int(v.confidence * 100),
                }
                for v in reading.below(threshold)
            ]
        }
    ]


def document_json(
    reading: Reading,
    name: str,
    *,
    threshold: float,
    with_bboxes: bool,
    annotated: list[str],
    hitl: dict[str, Any] | None,
) -> dict[str, Any]:
    """One entry of ``documents`` (keys in the seed's order, 002:768-805)."""
    return {
        "name": name,
        **reading.flags(threshold),
        "credits_used": reading.pages,
        "matches": matches(reading),
        "bboxes": bboxes(reading) if with_bboxes else [],
        "annotated_pages": annotated,
        "hitl": hitl,
    }


def labels_json() -> list[dict[str, Any]]:
    return [{"id": number, "name": label} for number, label in enumerate(LABELS, start=1)]


# --------------------------------------------------------------------------- annotated pages


def annotated_pages(data: bytes, mime_type: str, reading: Reading) -> list[str]:
    """One base64 PNG per page with a red frame around each value found on it; for an image
    the image itself (its first frame)."""
    from PIL import Image, ImageDraw

    images: list[Image.Image] = []
    if mime_type == "application/pdf":
        images = _pdf_images(data)
    else:
        try:
            with Image.open(io.BytesIO(data)) as image:
                images = [image.convert("RGB")]
        except (OSError, ValueError, SyntaxError):
            images = []
    while len(images) < reading.pages:
        images.append(Image.new("RGB", (595, 842), "white"))
    shown = []
    for index, image in enumerate(images[: reading.pages]):
        draw = ImageDraw.Draw(image)
        for value in reading.values:
            if (value.page or 0) != index or value.box is None:
                continue
            box = value_box(reading, value)
            frame = (
                box["TLx"] * image.width,
                box["TLy"] * image.height,
                box["BRx"] * image.width,
                box["BRy"] * image.height,
            )
            draw.rectangle(frame, outline=(220, 0, 0), width=2)
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        shown.append(base64.b64encode(buffer.getvalue()).decode("ascii"))
    return shown


def _pdf_images(data: bytes) -> list[Any]:
    import pypdfium2 as pdfium

    from connectors import pdfium as pdfium_lock

    images = []
    with pdfium_lock.LOCK:
        try:
            document = pdfium.PdfDocument(data)
        except pdfium.PdfiumError:
            return []
        try:
            for index in range(len(document)):
                page = document[index]
                try:
                    bitmap = page.render(scale=ANNOTATION_DPI / 72)
                    images.append(bitmap.to_pil().convert("RGB"))
                finally:
                    page.close()
        finally:
            document.close()
    return images
