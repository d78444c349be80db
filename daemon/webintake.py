"""HTTP intake (``POST /api/v1/documents``): an upload taken exactly as a folder takes a file.

The multipart body is streamed to a temporary file beside the blob store (never held in memory,
bounded in size and time), then handed to the engine's ``Intake`` sink like any source's item:
the same pre-flight (``connectors.filecheck``), dedupe and audit. The caller's answer comes only
after the commit, so an upload that was answered is never lost.

``GET /api/v1/documents/{id}`` reads the documented views (``docrelay_documents``,
``docrelay_fields``), the same the SQL interface offers.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import IO, Any

from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header
from sqlalchemy import Engine, text

from connectors import jsonio
from connectors.base import IngestOutcome, IngestStatus, IntakeItem
from connectors.emulation.forms import disposition_filename
from connectors.filecheck import check_file, sniff_mime
from connectors.filenames import safe_filename
from daemon.pipeline.intake import Intake
from daemon.store.models import ID_MAX

SOURCE = "api"
"""The source name API documents carry in the store (``match = { source = "api" }``)."""
FIELDS = frozenset({"file", "route", "metadata"})
RESERVED_METADATA = ("uploaded_by",)
"""Metadata keys docrelay sets itself: a caller's value for them is replaced."""


class BodyTooLarge(Exception):
    """The request body passed its limit; nothing of it is kept."""


class BadUpload(ValueError):
    """The request is not the multipart form the API takes; the message says why (400)."""


@dataclass
class Upload:
    """A received form: the file (spooled to ``path``) and the small text fields."""

    path: Path | None = None
    filename: str = ""
    fields: dict[str, str] = field(default_factory=dict)
    _stream: IO[bytes] | None = None

    def discard(self) -> None:
        if self._stream is not None:
            self._stream.close()
        if self.path is not None:
            self.path.unlink(missing_ok=True)


def _suffix(filename: str) -> str:
    """The extension to give the spooled file, so ``sniff_mime`` and the rejection message see
    the caller's (``.txt`` and ``.xml`` are judged by it)."""
    suffix = Path(filename).suffix.lower()
    return suffix if re.fullmatch(r"\.[a-z0-9]{1,10}", suffix) else ""


async def receive_upload(
    chunks: AsyncIterator[bytes],
    content_type: str | None,
    spool_dir: Path,
    *,
    max_bytes: int,
    max_field_bytes: int,
) -> Upload:
    """Parse a ``multipart/form-data`` body as it streams in: the ``file`` part is written to a
    temporary file in ``spool_dir``, ``route`` and ``metadata`` are kept as text. Raises
    ``BodyTooLarge`` past ``max_bytes`` and ``BadUpload`` for anything but one file and those
    fields; the temporary file is removed on any error."""
    kind, params = parse_options_header(content_type)
    if kind != b"multipart/form-data":
        raise BadUpload("send multipart/form-data with the document in a 'file' field")
    boundary = params.get(b"boundary")
    if not boundary:
        raise BadUpload("the multipart body has no boundary")
    upload = Upload()
    state: dict[str, Any] = {"headers": {}, "name": None, "text": None, "ended": False}
    pending: list[bytes] = []

    def header_field(data: bytes, start: int, end: int) -> None:
        state["field"] = state.get("field", b"") + data[start:end]

    def header_value(data: bytes, start: int, end: int) -> None:
        state["value"] = state.get("value", b"") + data[start:end]

    def header_end() -> None:
        name = state.pop("field", b"").lower()
        state["headers"][name] = state.pop("value", b"")

    def headers_finished() -> None:
        _, options = parse_options_header(state["headers"].get(b"content-disposition"))
        name = options.get(b"name", b"").decode("utf-8", "replace")
        if name not in FIELDS:
            raise BadUpload(f"unknown form field {name!r} (file, route, metadata)")
        if name == "file":
            if upload.path is not None:
                raise BadUpload("send one file per request")
            header = state["headers"].get(b"content-disposition", b"").decode("utf-8", "replace")
            raw = disposition_filename(header) or options.get(b"filename", b"").decode(
                "utf-8", "replace"
            )  # filename*=UTF-8''… (RFC 5987), which python-multipart drops, or filename=
            upload.filename = safe_filename(raw, fallback="upload")
            upload.path = spool_dir / f"upload-{uuid.uuid4().hex}{_suffix(upload.filename)}"
            upload._stream = upload.path.open("xb")
            state["text"] = None
        else:
            if name in upload.fields:
                raise BadUpload(f"the field {name!r} is given twice")
            state["text"] = bytearray()
        state["name"], state["headers"] = name, {}

    def part_data(data: bytes, start: int, end: int) -> None:
        if state["text"] is None:
            pending.append(data[start:end])
            return
        state["text"] += data[start:end]
        if len(state["text"]) > max_field_bytes:
            raise BadUpload(f"the field {state['name']!r} is longer than {max_field_bytes} bytes")

    def part_end() -> None:
        if state["text"] is not None:
            try:
                upload.fields[state["name"]] = bytes(state["text"]).decode("utf-8")
            except UnicodeDecodeError:
                raise BadUpload(f"the field {state['name']!r} is not UTF-8 text") from None

    def end() -> None:
        state["ended"] = True

    parser = MultipartParser(
        boundary,
        {
            "on_header_field": header_field,
            "on_header_value": header_value,
            "on_header_end": header_end,
            "on_headers_finished": headers_finished,
            "on_part_data": part_data,
            "on_part_end": part_end,
            "on_end": end,
        },  # type: ignore[arg-type]
    )
    received = 0
    try:
        async for chunk in chunks:
            received += len(chunk)
            if received > max_bytes:
                raise BodyTooLarge
            parser.write(chunk)
            if pending and upload._stream is not None:
                data, pending[:] = b"".join(pending), []
                await asyncio.to_thread(upload._stream.write, data)
        if not state["ended"]:
            raise BadUpload("the multipart body ends before its closing boundary")
        if upload.path is None or upload._stream is None:
            raise BadUpload("no 'file' field in the form")
        upload._stream.close()
        upload._stream = None
    except FormParserError as exc:
        upload.discard()
        raise BadUpload(f"not a valid multipart body: {exc}") from None
    except BaseException:
        upload.discard()
        raise
    return upload


def metadata_field(raw: str | None) -> dict[str, Any]:
    """The ``metadata`` field: a JSON object, or BadUpload."""
    if raw is None or not raw.strip():
        return {}
    try:
        value = jsonio.loads(raw)
    except ValueError:
        raise BadUpload("metadata is not JSON") from None
    if not isinstance(value, dict):
        raise BadUpload("metadata must be a JSON object")
    return value


def take(
    intake: Intake, upload: Upload, *, route: str | None, metadata: Mapping[str, Any], actor: str
) -> IngestOutcome:
    """Check and commit the spooled file as the folder source would (a file that looks
    incomplete is final here: the upload is all there is), and mark it released: nothing is
    left to move, the caller keeps or drops its copy."""
    assert upload.path is not None
    path = upload.path
    mime = sniff_mime(path)
    check = check_file(path, mime, max_bytes=intake.max_bytes)
    item = IntakeItem(
        source=SOURCE,
        source_ref=f"upload:{path.stem.removeprefix('upload-')}",
        filename=upload.filename,
        open=lambda: path.open("rb"),
        mime_type=mime,
        metadata={**metadata, "uploaded_by": actor},
        rejection=None if check.ok else check.reason,
        route=route,
    )
    outcome = intake.ingest(item)
    if outcome.document_id is not None:
        intake.mark_released(outcome.document_id)
    return outcome


def answer(engine: Engine, outcome: IngestOutcome) -> tuple[int, dict[str, Any]]:
    """The HTTP status and body for an ingest outcome: 201 for a new document, 200 with the
    original's id for a duplicate, 422 with the reason for a rejected one."""
    doc_id = outcome.document_id
    assert doc_id is not None
    row = document_row(engine, doc_id) or {}
    if outcome.status in (IngestStatus.DUPLICATE, IngestStatus.ALREADY):
        original = row.get("duplicate_of") or doc_id
        first = document_row(engine, original) or row
        body = {"document_id": original, "state": first.get("state"), "duplicate": True}
        return 200, {**body, "url": url(original), "recorded_as": doc_id}
    body = {"document_id": doc_id, "state": row.get("state"), "url": url(doc_id)}
    if outcome.status == IngestStatus.REJECTED:
        return 422, {**body, "reason": outcome.reason}
    if outcome.reason:  # unrouted: stored, waiting for a route
        body["reason"] = outcome.reason
    return 201, body


def url(document_id: int) -> str:
    return f"/api/v1/documents/{document_id}"


def document_row(engine: Engine, document_id: int) -> dict[str, Any] | None:
    if document_id > ID_MAX:  # from a URL: no such row, and too large for the database
        return None
    with engine.connect() as conn:
        row = (
            conn.execute(
                text("SELECT * FROM docrelay_documents WHERE document_id = :id"),
                {"id": document_id},
            )
            .mappings()
            .first()
        )
    return dict(row) if row is not None else None


DOCUMENT_KEYS = (
    "document_id", "state", "route", "filename", "mime_type", "size_bytes", "pages", "source",
    "sha256", "received_at", "vendor", "completed_at", "exported_at", "error", "duplicate_of",
    "review_reason", "extraction_version", "metadata",
)  # fmt: skip


def document(engine: Engine, document_id: int) -> dict[str, Any] | None:
    """A document's state, route and latest extracted fields, JSON-ready; None if unknown."""
    row = document_row(engine, document_id)
    if row is None:
        return None
    with engine.connect() as conn:
        fields = conn.execute(
            text(
                "SELECT field, value_text, value_number, value_date, currency, confidence, "
                "page, corrected FROM docrelay_fields WHERE document_id = :id ORDER BY field"
            ),
            {"id": document_id},
        ).mappings()
        found = {
            f["field"]: {
                "value": f["value_text"],
                "number": f["value_number"],
                "date": f["value_date"],
                "currency": f["currency"],
                "confidence": f["confidence"],
                "page": f["page"],
                "corrected": bool(f["corrected"]),
            }
            for f in fields
        }
    body = {key: row.get(key) for key in DOCUMENT_KEYS}
    if isinstance(body["metadata"], str):
        with contextlib.suppress(ValueError):
            body["metadata"] = jsonio.loads(body["metadata"])
    return _plain({**body, "fields": found, "url": url(document_id)})


def _plain(value: Any) -> Any:
    """Decimals as strings (exact), dates and times in ISO 8601: JSON without loss."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, datetime | date):
        return value.isoformat()
    return value
