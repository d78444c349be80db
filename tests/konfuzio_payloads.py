"""Konfuzio document details shaped like the real ones, for the connector's tests.

The shapes are those of contract §4 (keys from the Konfuzio SDK's tests, nesting from
Konfuzio's own document-validation UI mock): ``annotation_sets → label_set / labels →
annotations → span``, ``pages[].original_size``, potential sets with ``id: null``. The text,
the character offsets and the boxes agree: each character of ``TEXT`` has a box (origin
bottom-left, in points of a 595 by 842 page), and a span is the union of its characters'.
"""

from __future__ import annotations

import copy
from typing import Any

PAGE = (595.0, 842.0)
"""Konfuzio's ``original_size`` of page 1 (points)."""
OURS = (595.28, 841.89)
"""The page size intake read from the PDF (what ``DocumentRef.page_sizes`` holds)."""
DOC_ID = 5001

TEXT = (
    "ACME GmbH  Kundennr. K-991\n"
    "Rechnung RE-2024-0042\n"
    "Datum 05.03.2024\n"
    "Widget A   2   10,00   20,00\n"
    "Widget B   1   5,50   5,50\n"
    "Gesamt 25,50 EUR\n"
    "IBAN DE89 3704 0044 0532 0130 00\n"
    "Zahlbar in 14 Tagen\n"
)
"""The document text (``text`` of the detail); line i is printed from the top."""


def char_boxes() -> dict[str, dict[str, Any]]:
    """``GET documents/{id}/bbox``: every character by its offset, with its box."""
    boxes: dict[str, dict[str, Any]] = {}
    line, column = 0, 0
    for offset, char in enumerate(TEXT):
        if char == "\n":
            line, column = line + 1, 0
            continue
        top = 60.0 + 14.0 * line  # from the top of the page
        boxes[str(offset)] = {
            "x0": 50.0 + 6.0 * column,
            "x1": 56.0 + 6.0 * column,
            "y0": round(PAGE[1] - top - 10.0, 2),
            "y1": round(PAGE[1] - top, 2),
            "page_index": 0,
            "line_index": line,
            "text": char,
        }
        column += 1
    return boxes


BOXES = char_boxes()


def line_start(line: int) -> int:
    """The offset of line ``line`` (from 0) in ``TEXT``."""
    return sum(len(part) + 1 for part in TEXT.split("\n")[:line])


def span(text: str, line: int | None = None, nth: int = 0) -> dict[str, Any]:
    """The span of the ``nth`` occurrence of ``text`` in ``TEXT`` (in line ``line`` if given)."""
    start = line_start(line) - 1 if line is not None else -1
    for _ in range(nth + 1):
        start = TEXT.index(text, start + 1)
    end = start + len(text)
    assert "\n" not in TEXT[start:end]
    chars = [BOXES[str(i)] for i in range(start, end) if str(i) in BOXES]
    return {
        "x0": min(c["x0"] for c in chars),
        "x1": max(c["x1"] for c in chars),
        "y0": min(c["y0"] for c in chars),
        "y1": max(c["y1"] for c in chars),
        "page_index": 0,
        "start_offset": start,
        "end_offset": end,
        "offset_string": text,
        "offset_string_original": text,
    }


_ids = iter(range(700_000, 800_000))


def annotation(
    text: str,
    *,
    line: int | None = None,
    nth: int = 0,
    confidence: float = 0.9,
    normalized: Any = None,
    revised: bool = False,
    is_correct: bool = False,
    annotation_id: int | None = None,
) -> dict[str, Any]:
    """An annotation as the AI made it (``origin: extraction``, not yet revised)."""
    found = span(text, line, nth)
    box = {k: found[k] for k in ("x0", "y0", "x1", "y1", "page_index")}
    return {
        "id": annotation_id if annotation_id is not None else next(_ids),
        "document": DOC_ID,
        "offset_string": text,
        "offset_string_original": text,
        "translated_string": None,
        "normalized": text if normalized is None else normalized,
        "confidence": confidence,
        "is_correct": is_correct,
        "revised": revised,
        "origin": "extraction",
        "created_by": None,
        "revised_by": None,
        "span": [found],
        "selection_bbox": box,
        "custom_offset_string": False,
    }


def label(
    label_id: int, name: str, annotations: list[dict[str, Any]], *, multiple: bool = False
) -> dict[str, Any]:
    return {
        "id": label_id,
        "name": name,
        "api_name": name.replace(" ", "_"),
        "description": "",
        "has_multiple_top_candidates": multiple,
        "annotations": annotations,
    }


def label_set(label_set_id: int, name: str, *, multiple: bool = False) -> dict[str, Any]:
    return {
        "id": label_set_id,
        "name": name,
        "api_name": name,
        "description": None,
        "has_multiple_annotation_sets": multiple,
    }


def invoice_detail(document_id: int = DOC_ID, **overrides: Any) -> dict[str, Any]:
    """A processed invoice: a document-level set, two line-item sets (listed out of print
    order), potential sets (one with a stray annotation that must be ignored)."""
    item_b = {
        "id": 9202,
        "label_set": label_set(20, "Positionen", multiple=True),
        "labels": [
            label(201, "Beschreibung", [annotation("Widget B", confidence=0.81)]),
            label(202, "Menge", [annotation("1", line=4, normalized=1)]),
            label(203, "Einzelpreis", [annotation("5,50", line=4, normalized=5.5)]),
            label(204, "Gesamtpreis", [annotation("5,50", line=4, nth=1, normalized=5.5)]),
        ],
    }
    item_a = {
        "id": 9201,
        "label_set": label_set(20, "Positionen", multiple=True),
        "labels": [
            label(201, "Beschreibung", [annotation("Widget A", confidence=0.83)]),
            label(202, "Menge", [annotation("2", line=3, normalized=2)]),
            label(203, "Einzelpreis", [annotation("10,00", line=3, normalized=10.0)]),
            label(204, "Gesamtpreis", [annotation("20,00", line=3, normalized=20.0)]),
        ],
    }
    detail: dict[str, Any] = {
        "id": document_id,
        "project": 46,
        "document_set": None,
        "number_of_pages": 1,
        "data_file_name": "invoice.docrelay-7-abcdef01.pdf",
        "data_file_producer": "fpdf2",
        "file_url": f"/doc/show/{document_id}/",
        "original_file_url": f"/doc/show-original/{document_id}/",
        "thumbnail_url": "/page/show-thumbnail/900/",
        "ocr_time": 3.2,
        "categorization_time": 0.4,
        "extraction_time": 1.9,
        "processing_time": 5.5,
        "extraction_url": None,
        "callback_url": None,
        "callback_status_code": None,
        "category": 12,
        "category_confidence": 0.97,
        "category_is_revised": False,
        "status_data": 2,
        "labeling_available": 1,
        "is_reviewed": False,
        "dataset_status": 0,
        "assignee": None,
        "created_by": "integration@acme.example",
        "created_at": "2024-03-05T10:00:00.000000+01:00",
        "updated_at": "2024-03-05T10:00:09.000000+01:00",
        "proposed_split": None,
        "split_is_revised": False,
        "enable_translated_strings": False,
        "text": TEXT,
        "pages": [
            {
                "id": 900,
                "number": 1,
                "image_url": "/page/show-image/900/",
                "thumbnail_url": "/page/show-thumbnail/900/",
                "original_size": list(PAGE),
                "size": [1240, 1754],
            }
        ],
        "annotation_sets": [
            {
                "id": 9100,
                "label_set": label_set(10, "Rechnung"),
                "labels": [
                    label(
                        101,
                        "Rechnungsnummer",
                        [
                            annotation("RE-2024-0042", confidence=0.96, annotation_id=810),
                            annotation("K-991", confidence=0.31, annotation_id=811),
                        ],
                    ),
                    label(
                        102,
                        "Rechnungsdatum",
                        [annotation("05.03.2024", normalized="2024-03-05", annotation_id=820)],
                    ),
                    label(
                        103,
                        "Bruttobetrag",
                        [annotation("25,50", normalized=25.5, annotation_id=830)],
                    ),
                    label(104, "Währung", [annotation("EUR", annotation_id=840)]),
                    label(
                        105,
                        "Lieferant",
                        [
                            annotation("Widget", confidence=0.99, revised=True, is_correct=False),
                            annotation("ACME GmbH", confidence=0.7, annotation_id=850),
                        ],
                    ),
                    label(106, "IBAN", []),
                    label(107, "Kundennummer", [annotation("K-991", annotation_id=870)]),
                ],
            },
            item_b,
            item_a,
            {
                "id": None,
                "label_set": label_set(30, "Zahlung"),
                "labels": [label(301, "Zahlungsbedingungen", [])],
            },
            {
                "id": None,
                "label_set": label_set(40, "Sonstiges"),
                "labels": [label(401, "Bestellnummer", [annotation("Rechnung")])],
            },
        ],
    }
    detail.update(overrides)
    return copy.deepcopy(detail)


def fetched(detail: dict[str, Any] | None = None, sizes: Any = (OURS,)) -> dict[str, Any]:
    """What ``KonfuzioVendor.fetch`` stores."""
    return {
        "document": detail if detail is not None else invoice_detail(),
        "page_sizes": [list(s) for s in sizes],
    }
