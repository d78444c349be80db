"""The emulator's data model: its objects, status vocabulary, errors and time formats.

Plain dataclasses; the behaviour lives in ``emulator_state`` (and the mixins it is built from:
``emulator_views``, ``emulator_query``, ``emulator_events``).
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from connectors.vendors.rossum import emulator_content as content

ORG, WORKSPACE, QUEUE, SCHEMA, USER = 1, 1, 1, 1, 1
ADMIN_GROUP = 3

COUNTED_STATUSES = (
    "importing", "split", "failed_import", "to_review", "reviewing", "confirmed", "exporting",
    "postponed", "failed_export", "exported", "deleted", "purged", "rejected",
)  # fmt: skip
"""The statuses a queue's ``counts`` has (``created`` and ``in_workflow`` are not counted)."""

STATUSES = frozenset({*COUNTED_STATUSES, "created", "in_workflow"})

START_STATUSES = ("to_review", "reviewing", "postponed", "confirmed")
"""Default ``statuses`` of ``start``."""

PATCH_TRANSITIONS: dict[str, frozenset[str]] = {
    "to_review": frozenset(
        {"reviewing", "postponed", "confirmed", "failed_export", "rejected", "deleted", "exported"}
    ),
    "postponed": frozenset({"to_review", "reviewing", "confirmed", "failed_export"}),
    "deleted": STATUSES - {"purged", "created"},
    "exporting": frozenset({"confirmed", "failed_export"}),
    "exported": frozenset({"confirmed", "exporting", "failed_export"}),
    "failed_export": frozenset({"confirmed", "exporting"}),
}
"""Target status → statuses a PATCH may move an annotation from (see NOTES.md, Emulator)."""

TIMESTAMPS = (
    "assigned_at", "confirmed_at", "deleted_at", "exported_at", "export_failed_at",
    "modified_at", "purged_at", "rejected_at",
)  # fmt: skip
BY_FIELDS = ("confirmed_by", "deleted_by", "exported_by", "purged_by", "rejected_by")


class ApiError(Exception):
    """An error answer: HTTP status and JSON body (DRF style)."""

    def __init__(self, status: int, body: Any, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(status, body)
        self.status = status
        self.body = body if isinstance(body, dict) else {"detail": body}
        self.headers = dict(headers or {})


def iso(ts: float | None) -> str | None:
    """A timestamp as the API writes it: ``2021-04-26T10:08:03.856648Z``."""
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_when(text: str) -> float:
    """A filter timestamp: ``2019-11-15``, ``2019-11-14 12:00:00`` or full ISO 8601 (UTC)."""
    cleaned = text.strip().replace(" ", "T").replace("Z", "+00:00")
    try:
        parsed = datetime.fromisoformat(cleaned)
    except ValueError:
        raise ApiError(400, {"detail": f"Enter a valid date/time: {text!r}."}) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


@dataclass
class Token:
    key: str
    user_id: int
    expires_at: float


@dataclass
class Document:
    id: int
    file_name: str
    mime_type: str
    data: bytes
    sha256: str
    s3_name: str
    created_at: float
    upload_id: int | None = None
    parent_id: int | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    annotation_ids: list[int] = field(default_factory=list)


@dataclass
class Page:
    id: int
    annotation_id: int
    number: int
    width: int
    height: int
    s3_name: str


@dataclass
class Annotation:
    id: int
    document_id: int
    queue_id: int
    created_at: float
    ready_at: float
    """When import finishes: ``importing`` until then (the configured delay)."""
    content: list[dict[str, Any]]
    extraction: content.Extraction
    upload_id: int | None = None
    status: str = "importing"
    metadata: dict[str, Any] = field(default_factory=dict)
    messages: list[dict[str, Any]] = field(default_factory=list)
    stamps: dict[str, float | None] = field(default_factory=dict)
    bys: dict[str, int | None] = field(default_factory=dict)
    modifier_id: int | None = None
    status_before_start: str | None = None
    automated: bool = False
    export_due: float | None = None
    """Set while ``exporting`` with no export hook: when the export "finishes"."""
    page_ids: list[int] = field(default_factory=list)
    values: dict[str, Any] = field(default_factory=dict)
    rir_poll_id: str = field(default_factory=lambda: secrets.token_hex(12))


@dataclass
class Upload:
    id: int
    queue_id: int
    created_at: float
    done_at: float
    """When its task succeeds; ``documents``/``annotations`` are listed from then on."""
    task_id: int
    document_ids: list[int] = field(default_factory=list)
    annotation_ids: list[int] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)
    values: dict[str, Any] = field(default_factory=dict)


@dataclass
class FileIn:
    """One file of an upload request, already read (``extraction`` done outside the lock)."""

    name: str
    data: bytes
    mime_type: str
    extraction: content.Extraction


def duration(text: str) -> float:
    """``01:00:00`` / ``1 00:00:00`` / ``90`` → seconds."""
    days = 0.0
    if " " in text.strip():
        day_text, text = text.strip().split(" ", 1)
        days = float(day_text)
    seconds = 0.0
    for part in text.strip().split(":"):
        seconds = seconds * 60 + float(part)
    return days * 86400 + seconds
