"""The Konfuzio emulator's data model: the seeded project (categories, label sets, labels), the
``status_data`` vocabulary, the objects clients create, and the error answer.

Plain dataclasses and constants; behaviour lives in ``emulator_state``. The seeded objects are
fixed (the API lets a client create projects and labels, the emulator does not), so their ids
are constants a test can name.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol, TypeVar

from connectors.base import DOCUMENT_FIELDS
from connectors.emulation import extraction as engine

PROJECT = 1
INVOICE = 1
"""Category 1 and its own label set (Konfuzio gives a category's label set the category's id)."""
CREDIT_NOTE = 2
"""Category 2 and its label set: the same labels, so a category change has something to
re-extract into."""
LINE_ITEMS = 3
"""The line-item label set (one annotation set per invoice line), in both categories."""
USER_ID = 1

# --------------------------------------------------------------------------- status_data

QUEUING_FOR_OCR = 0
OCR_IN_PROGRESS = 10
QUEUING_FOR_EXTRACTION = 1
EXTRACTION_IN_PROGRESS = 20
QUEUING_FOR_CATEGORIZATION = 3
CATEGORIZATION_IN_PROGRESS = 30
QUEUING_FOR_SPLITTING = 4
SPLITTING_IN_PROGRESS = 40
WAITING_FOR_SPLITTING_CONFIRMATION = 41
DONE = 2
COULD_NOT_BE_PROCESSED = 111

STATUSES: dict[int, str] = {
    QUEUING_FOR_OCR: "Queuing for OCR",
    OCR_IN_PROGRESS: "OCR in progress",
    QUEUING_FOR_EXTRACTION: "Queuing for extraction",
    EXTRACTION_IN_PROGRESS: "Extraction in progress",
    QUEUING_FOR_CATEGORIZATION: "Queuing for categorization",
    CATEGORIZATION_IN_PROGRESS: "Categorization in progress",
    QUEUING_FOR_SPLITTING: "Queuing for splitting",
    SPLITTING_IN_PROGRESS: "Splitting in progress",
    WAITING_FOR_SPLITTING_CONFIRMATION: "Waiting for splitting confirmation",
    DONE: "Done",
    COULD_NOT_BE_PROCESSED: "Could not be processed",
}
"""Every ``status_data`` code (the SDK's ``DocumentStatuses``) with its name."""

PIPELINE: tuple[int, ...] = (
    QUEUING_FOR_OCR,
    OCR_IN_PROGRESS,
    QUEUING_FOR_CATEGORIZATION,
    CATEGORIZATION_IN_PROGRESS,
    QUEUING_FOR_EXTRACTION,
    EXTRACTION_IN_PROGRESS,
)
"""The statuses an upload passes, one per ``delay / len(PIPELINE)``, before ``DONE``."""
SPLIT_PIPELINE: tuple[int, ...] = (
    QUEUING_FOR_OCR,
    OCR_IN_PROGRESS,
    QUEUING_FOR_CATEGORIZATION,
    CATEGORIZATION_IN_PROGRESS,
    QUEUING_FOR_SPLITTING,
    SPLITTING_IN_PROGRESS,
)
"""The statuses of an upload that is sent through splitting, before ``41``."""
EXTRACTION_PIPELINE: tuple[int, ...] = (QUEUING_FOR_EXTRACTION, EXTRACTION_IN_PROGRESS)
"""What a document passes again after a split or a category change, before ``DONE``."""
SETTLED = frozenset({DONE, COULD_NOT_BE_PROCESSED, WAITING_FOR_SPLITTING_CONFIRMATION})
"""Statuses the pipeline stops at (``sync=true`` waits for one of them)."""

# --------------------------------------------------------------------------- the seeded schema


@dataclass(frozen=True)
class LabelDef:
    id: int
    name: str
    """Also the ``api_name``: the canonical field name, or ``line_<cell>`` for line items."""
    data_type: str
    """Konfuzio's label data types: ``Text``, ``Number``, ``Date``, ``Percentage``."""
    source: str
    """The engine's name for the value: a ``DOCUMENT_FIELDS`` name or a ``LINE_CELLS`` name."""


@dataclass(frozen=True)
class LabelSetDef:
    id: int
    name: str
    api_name: str
    labels: tuple[int, ...]
    has_multiple_annotation_sets: bool
    categories: tuple[int, ...]


@dataclass(frozen=True)
class CategoryDef:
    id: int
    name: str
    api_name: str
    label_sets: tuple[int, ...]


def _data_type(name: str) -> str:
    if name in ("issue_date", "due_date"):
        return "Date"
    if name in ("total_amount", "net_amount", "tax_amount", "amount_due"):
        return "Number"
    return "Text"


_LINE_TYPES = {
    "description": "Text",
    "item_code": "Text",
    "quantity": "Number",
    "unit_price": "Number",
    "total_amount": "Number",
    "tax_rate": "Percentage",
}

LABELS: dict[int, LabelDef] = {
    label.id: label
    for label in (
        *(LabelDef(i, name, _data_type(name), name) for i, name in enumerate(DOCUMENT_FIELDS, 1)),
        *(
            LabelDef(len(DOCUMENT_FIELDS) + i, f"line_{cell}", kind, cell)
            for i, (cell, kind) in enumerate(_LINE_TYPES.items(), 1)
        ),
    )
}
"""Labels 1-18 are the document fields, 19-24 the line-item cells."""

LINE_LABELS = tuple(lid for lid, label in LABELS.items() if label.name.startswith("line_"))
DOCUMENT_LABELS = tuple(lid for lid in LABELS if lid not in LINE_LABELS)

LABEL_SETS: dict[int, LabelSetDef] = {
    INVOICE: LabelSetDef(INVOICE, "Invoice", "invoice", DOCUMENT_LABELS, False, (INVOICE,)),
    CREDIT_NOTE: LabelSetDef(
        CREDIT_NOTE, "Credit note", "credit_note", DOCUMENT_LABELS, False, (CREDIT_NOTE,)
    ),
    LINE_ITEMS: LabelSetDef(
        LINE_ITEMS, "Line item", "line_item", LINE_LABELS, True, (INVOICE, CREDIT_NOTE)
    ),
}

CATEGORIES: dict[int, CategoryDef] = {
    INVOICE: CategoryDef(INVOICE, "Invoice", "invoice", (INVOICE, LINE_ITEMS)),
    CREDIT_NOTE: CategoryDef(CREDIT_NOTE, "Credit note", "credit_note", (CREDIT_NOTE, LINE_ITEMS)),
}


def own_label_set(category: int) -> int:
    """The category's own label set (the document fields); line items are the other one."""
    return category


# --------------------------------------------------------------------------- objects


@dataclass
class Page:
    id: int
    document_id: int
    number: int
    """From 1, in the document as it is now (after a split or a sort)."""
    width: float
    height: float
    """PDF points (``original_size``)."""
    source_number: int
    """The page's number in the uploaded file (what ``/doc/show-original/`` has)."""
    angle: int = 0


@dataclass
class Document:
    id: int
    file_name: str
    mime_type: str
    data: bytes
    """The file as the document is now (a split part holds only its pages)."""
    original: bytes
    """The file as uploaded (``/doc/show-original/``)."""
    created_at: float
    updated_at: float
    category_id: int | None
    """The category the client asked for; detected at categorization when None."""
    category_confidence: float | None = None
    category_is_revised: bool = False
    status: int = QUEUING_FOR_OCR
    steps: list[int] = field(default_factory=list)
    """Statuses still to pass before the pipeline settles."""
    settle_at: int = DONE
    """Where the pipeline stops after ``steps``: DONE, 41 or 111."""
    due_at: float | None = None
    """When the next status change is due; None when settled."""
    callback_url: str | None = None
    callback_status_code: int | None = None
    assignee: str | None = None
    dataset_status: int = 0
    is_reviewed: bool = False
    proposed_split: list[dict[str, Any]] | None = None
    split_is_revised: bool = False
    document_set_id: int | None = None
    error: str | None = None
    """Why the document could not be processed (status 111)."""
    extraction: engine.Extraction | None = None
    page_ids: list[int] = field(default_factory=list)
    annotation_set_ids: list[int] = field(default_factory=list)
    started_at: float = 0.0
    """When the current pipeline run began (processing times are measured from here)."""
    done_at: float | None = None
    extracted: bool = False
    """The annotations of the current extraction exist (set on reaching DONE)."""


@dataclass
class AnnotationSet:
    id: int
    document_id: int
    label_set_id: int


@dataclass
class Annotation:
    id: int
    document_id: int
    annotation_set_id: int
    label_id: int
    label_set_id: int
    offset_string: str
    offset_string_original: str
    normalized: str | None
    confidence: float | None
    spans: list[dict[str, Any]]
    created_at: float
    updated_at: float
    is_correct: bool = False
    revised: bool = False
    origin: str = "extraction"
    created_by: str | None = None
    revised_by: str | None = None
    custom_offset_string: bool = False
    selection_bbox: dict[str, Any] | None = None


@dataclass
class MissingAnnotation:
    id: int
    document_id: int
    label_id: int
    label_set_id: int
    annotation_set_id: int | None
    created_at: float


class _OfDocument(Protocol):
    id: int
    document_id: int


Item = TypeVar("Item", bound=_OfDocument)


class PerDocument(dict[int, Item]):
    """Objects by id that also know which belong to each document: the views ask for one
    document's annotations on every fetch and callback, and scanning them all made the
    emulator slow down with every document it held. Items are added with ``[id] = item`` and
    removed with ``del``; an item's ``document_id`` never changes."""

    def __init__(self) -> None:
        super().__init__()
        self._by_document: dict[int, dict[int, Item]] = {}

    def __setitem__(self, key: int, item: Item) -> None:
        super().__setitem__(key, item)
        self._by_document.setdefault(item.document_id, {})[key] = item

    def __delitem__(self, key: int) -> None:
        item = self[key]
        super().__delitem__(key)
        self._by_document.get(item.document_id, {}).pop(key, None)

    def of(self, document_id: int) -> list[Item]:
        """The document's items, in the order they were added."""
        return list(self._by_document.get(document_id, {}).values())


@dataclass
class DocumentSet:
    id: int
    original_document_id: int
    original_number_of_pages: int
    document_ids: list[int] = field(default_factory=list)


class ApiError(Exception):
    """An error answer: HTTP status and DRF-shaped JSON (``{"detail": ...}`` or per field)."""

    def __init__(self, status: int, body: Any, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(status, body)
        self.status = status
        self.body = body if isinstance(body, dict) else {"detail": body}
        self.headers = dict(headers or {})


def iso(ts: float | None) -> str | None:
    """A timestamp as Konfuzio writes it: ``2023-04-12T10:26:53.991220+00:00``."""
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="microseconds")


def pk_field(value: Any, name: str, *, required: bool = False) -> int | None:
    """A DRF primary-key or integer field: 400 ``{name: [...]}`` when invalid (or missing and
    ``required``); None when absent."""
    if value is None or value == "":
        if required:
            raise ApiError(400, {name: ["This field is required."]})
        return None
    if isinstance(value, bool):
        raise ApiError(400, {name: ["Incorrect type. Expected pk value."]})
    try:
        return int(str(value).strip())
    except ValueError:
        raise ApiError(400, {name: ["Incorrect type. Expected pk value."]}) from None


def bool_field(value: Any, name: str, *, default: bool | None) -> Any:
    """A DRF boolean field (``true``/``false``/``1``/``0``/``True`` …); ``default`` when absent."""
    if value is None or value == "":
        return default
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "1"):
        return True
    if text in ("false", "0"):
        return False
    raise ApiError(400, {name: ["Must be a valid boolean."]})
