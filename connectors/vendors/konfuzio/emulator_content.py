"""What the Konfuzio emulator's "AI" finds, in Konfuzio's shapes: the kit's extraction engine
(``connectors.emulation.extraction``) read into labels, annotation sets and spans.

Konfuzio's text is the document's pages joined by form feeds (``\\f``), and a span's
``start_offset``/``end_offset`` index into it; the engine gives each page's text
(``PageInfo.text``), so offsets come from finding the printed value there (after its printed
label, when it has one; a line item's cells on the line of its first cell). Coordinates are PDF
points with the origin at the **bottom-left** of the page (``y0`` < ``y1``, as Konfuzio's
``Bbox.top = page.height - y1`` reads them); the engine's boxes are points from the top-left,
and ``konfuzio_box`` is the one place that converts. A span also carries ``top``/``bottom``
(distances from the top), as Konfuzio's spans do.
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from connectors import pdfium as pdfium_lock
from connectors.base import BBox
from connectors.emulation import extraction as engine
from connectors.extract import rules
from connectors.normalize import parse_amount, parse_date, parse_percent
from connectors.vendors.konfuzio.emulator_model import LABELS, LabelDef

MAX_PAGES = 250
"""Konfuzio's page limit per document; longer ones end in status 111."""

CONFIDENCE_LABELLED = 0.95
"""``confidence`` of a value found next to its printed label (the rules have no probabilities)."""
CONFIDENCE_INFERRED = 0.6
"""``confidence`` of a guess: letterhead supplier, unlabelled date or IBAN, inferred currency."""
CONFIDENCE_CELL = 0.85
"""``confidence`` of a line-item cell."""

A4 = (595.0, 842.0)
"""The page size shown for images (the engine knows sizes only for PDFs)."""

_LABEL_BY_SOURCE = {
    (label.source, label.name.startswith("line_")): label for label in LABELS.values()
}


def extract(
    data: bytes,
    mime_type: str,
    *,
    ocr: bool = False,
    wrongness: engine.WrongnessSettings | None = None,
) -> engine.Extraction:
    """The engine's reading of one file (at most ``MAX_PAGES`` pages); ``wrongness``: the
    emulator's options, for fields wrong or missed on purpose."""
    return engine.extract(data, mime_type, ocr=ocr, max_pages=MAX_PAGES, wrongness=wrongness)


def document_text(extraction: engine.Extraction) -> str:
    """The pages' texts joined by form feeds: what ``text`` shows and offsets index."""
    return "\f".join(page.text for page in extraction.pages)


def page_starts(extraction: engine.Extraction) -> list[int]:
    """Where each page's text starts in ``document_text``."""
    starts, at = [], 0
    for page in extraction.pages:
        starts.append(at)
        at += len(page.text) + 1
    return starts


def page_size(page: engine.PageInfo) -> tuple[float, float]:
    return (page.width or A4[0], page.height or A4[1])


def konfuzio_box(box: BBox, page_height: float, page_index: int) -> dict[str, Any]:
    """An engine box (points, top-left origin) as a Konfuzio bbox (points, bottom-left origin)."""
    return {
        "x0": round(box.left, 4),
        "x1": round(box.right, 4),
        "y0": round(page_height - box.bottom, 4),
        "y1": round(page_height - box.top, 4),
        "top": round(box.top, 4),
        "bottom": round(box.bottom, 4),
        "page_index": page_index,
    }


# --------------------------------------------------------------------------- finding values


@dataclass
class Found:
    """One annotation the extraction makes."""

    label: LabelDef
    line: int | None
    """None for a document field; the invoice line (from 1) for a line-item cell."""
    offset_string: str
    normalized: str | None
    confidence: float
    span: dict[str, Any]


def _pattern(text: str) -> re.Pattern[str]:
    """``text`` with any run of whitespace matching any other (the text layer's spacing)."""
    return re.compile(r"\s+".join(re.escape(part) for part in text.split()))


def find_text(
    text: str, needle: str, start: int = 0, end: int | None = None
) -> tuple[int, int] | None:
    if not needle.strip():
        return None
    end = len(text) if end is None else end
    at = text.find(needle, start, end)
    if at >= 0:
        return at, at + len(needle)
    match = _pattern(needle).search(text, start, end)
    return (match.start(), match.end()) if match else None


def _span(
    extraction: engine.Extraction,
    starts: list[int],
    value: engine.FoundValue,
    where: tuple[int, int] | None,
) -> dict[str, Any]:
    """A span for ``value`` found at ``where`` (offsets in its page's text, or None)."""
    index = (value.page or 1) - 1
    span: dict[str, Any] = {
        "page_index": index,
        "x0": None,
        "x1": None,
        "y0": None,
        "y1": None,
        "top": None,
        "bottom": None,
        "start_offset": 0,
        "end_offset": 0,
        "offset_string": value.text,
        "offset_string_original": value.text,
    }
    if value.box is not None and 0 <= index < len(extraction.pages):
        span.update(konfuzio_box(value.box, page_size(extraction.pages[index])[1], index))
    if where is not None:
        page_text = extraction.pages[index].text
        span["start_offset"] = starts[index] + where[0]
        span["end_offset"] = starts[index] + where[1]
        span["offset_string"] = span["offset_string_original"] = page_text[where[0] : where[1]]
    return span


def find_annotations(extraction: engine.Extraction) -> list[Found]:
    """Every value the engine found, as the annotations Konfuzio's extraction would create."""
    if not extraction.ok:
        return []
    starts = page_starts(extraction)
    found: list[Found] = []
    for name, value in extraction.fields.items():
        label = _LABEL_BY_SOURCE.get((name, False))
        if label is None or value.page is None:
            continue
        text = extraction.pages[value.page - 1].text
        after = find_text(text, value.label) if value.label else None
        where = find_text(text, value.text, after[1] if after else 0) or find_text(text, value.text)
        confidence = CONFIDENCE_INFERRED if value.inferred else CONFIDENCE_LABELLED
        if value.confidence is not None:
            confidence = value.confidence
        span = _span(extraction, starts, value, where)
        found.append(Found(label, None, span["offset_string"], value.value, confidence, span))
    cursor: dict[int, int] = {}
    for item in extraction.line_items:
        if item.page is None or not item.cells:
            continue
        text = extraction.pages[item.page - 1].text
        first = next(iter(item.cells.values()))
        hit = find_text(text, first.text, cursor.get(item.page, 0))
        line_start = text.rfind("\n", 0, hit[0]) + 1 if hit else 0
        line_end = text.find("\n", hit[1]) if hit else -1
        line_end = len(text) if line_end < 0 else line_end
        if hit:
            cursor[item.page] = line_end
        for cell_name, cell in item.cells.items():
            label = _LABEL_BY_SOURCE.get((cell_name, True))
            if label is None:
                continue
            where = find_text(text, cell.text, line_start, line_end) if hit else None
            span = _span(extraction, starts, cell, where)
            found.append(
                Found(label, item.line_no, span["offset_string"], cell.value, CONFIDENCE_CELL, span)
            )
    return found


def normalize(label: LabelDef, text: str) -> str | None:
    """The ``normalized`` value of a user-given text, by the label's data type."""
    if label.data_type == "Date":
        parsed = parse_date(text)
        return parsed.isoformat() if parsed else None
    if label.data_type == "Number":
        amount, _ = parse_amount(text)
        return engine.plain_number(amount) if amount is not None else None
    if label.data_type == "Percentage":
        percent = parse_percent(text)
        return engine.plain_number(percent) if percent is not None else None
    return text


# --------------------------------------------------------------------------- splitting


def split_proposal(extraction: engine.Extraction) -> list[list[int]]:
    """Page numbers grouped into the documents a splitting AI would propose: a new document
    starts at every page (after the first) on which the rules alone find an invoice number."""
    groups: list[list[int]] = []
    for page in extraction.pages:
        starts_document = not groups
        if groups:
            fields = rules.find_fields([page.text]).get("fields") or []
            starts_document = any(f["name"] == "invoice_number" for f in fields)
        if starts_document:
            groups.append([page.number])
        else:
            groups[-1].append(page.number)
    return groups or [[1]]


def select_pages(data: bytes, numbers: Iterable[int], angles: Iterable[int]) -> bytes:
    """A new PDF of ``numbers`` (from 1, in this order) of ``data``, each turned by its angle."""
    import pypdfium2 as pdfium

    with pdfium_lock.LOCK:
        source = pdfium.PdfDocument(data)
        target = pdfium.PdfDocument.new()
        try:
            for at, (number, angle) in enumerate(zip(numbers, angles, strict=True)):
                target.import_pages(source, [number - 1], index=at)
                if angle:
                    page = target[at]
                    try:
                        page.set_rotation((page.get_rotation() + angle) % 360)
                    finally:
                        page.close()
            buffer = io.BytesIO()
            target.save(buffer)
            return buffer.getvalue()
        finally:
            target.close()
            source.close()


# --------------------------------------------------------------------------- text under a box


def text_in_box(data: bytes, span: dict[str, Any]) -> str | None:
    """The text layer's text inside a Konfuzio bbox (points, bottom-left origin) of a PDF, or
    None when the file is not a PDF or the box holds no text."""
    import pypdfium2 as pdfium

    try:
        index = int(span["page_index"])
        box = [float(span[k]) for k in ("x0", "y0", "x1", "y1")]
    except (KeyError, TypeError, ValueError):
        return None
    with pdfium_lock.LOCK:
        try:
            document = pdfium.PdfDocument(data)
        except pdfium.PdfiumError:
            return None
        try:
            if not 0 <= index < len(document):
                return None
            page = document[index]
            textpage = page.get_textpage()
            try:
                text: str = textpage.get_text_bounded(*box)
            finally:
                textpage.close()
                page.close()
        finally:
            document.close()
    text = " ".join(text.split())
    return text or None


def render_png(data: bytes, number: int, scale: float = 2.0) -> bytes:
    """One page of a PDF as PNG (what ``/page/show-image/{id}/`` serves)."""
    import pypdfium2 as pdfium

    with pdfium_lock.LOCK:
        document = pdfium.PdfDocument(data)
        try:
            page = document[number - 1]
            try:
                image = page.render(scale=scale).to_pil()
            finally:
                page.close()
        finally:
            document.close()
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()
