"""One flat record per export: what tabular destinations (CSV files, SQL rows) are built from.

Kept in one place so that a CSV column and an SQL column of the same name always hold the same
value: the first value of each canonical field, typed (exact decimals, dates), plus the
document's own attributes.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

from connectors.base import DOCUMENT_FIELDS, ExportPayload, FieldValue

DOCUMENT_ATTRIBUTES: tuple[str, ...] = (
    "document_id",
    "version",
    "filename",
    "sha256",
    "mime_type",
    "source",
    "source_ref",
    "received_at",
    "vendor",
    "vendor_kind",
    "vendor_ref",
    "submission_id",
    "extraction_id",
    "corrected",
    "exported_at",
)
"""What a record holds about the document and its export beside the extracted fields:
``corrected`` is the comma-separated names of the fields a person corrected, ``exported_at``
the time the record was made."""

RECORD_FIELDS: tuple[str, ...] = (*DOCUMENT_ATTRIBUTES, *DOCUMENT_FIELDS)
"""Every name a flat record has (``extra.<label>`` names come on top, where extracted)."""


def typed_value(value: FieldValue) -> Any:
    """A field's canonical value: the date or decimal when normalised, else its text."""
    if value.value_date is not None:
        return value.value_date
    if value.value_number is not None:
        return value.value_number
    return value.value_text


def as_text(value: Any) -> Any:
    """A record value as plain text for files: ISO dates, decimals without exponent."""
    if isinstance(value, Decimal):
        return format(value.normalize(), "f")
    if isinstance(value, datetime | date):
        return value.isoformat()
    return value


def field_value(value: FieldValue) -> str | None:
    """The canonical value of a field as text: ISO dates, plain decimals, validated ids."""
    return as_text(typed_value(value))


def flat_record(payload: ExportPayload) -> dict[str, Any]:
    """The export as one flat mapping: document attributes, then the first value of every
    extracted field (canonical names and ``extra.<label>``), typed; absent fields are None."""
    record: dict[str, Any] = {
        "document_id": payload.document_id,
        "version": payload.version,
        "filename": payload.filename,
        "sha256": payload.sha256,
        "mime_type": payload.mime_type,
        "source": payload.source,
        "source_ref": payload.source_ref,
        "received_at": payload.received_at,
        "vendor": payload.vendor,
        "vendor_kind": payload.vendor_kind,
        "vendor_ref": payload.vendor_ref,
        "submission_id": payload.submission_id,
        "extraction_id": payload.extraction_id,
        "corrected": ",".join(sorted(payload.corrected)),
        "exported_at": datetime.now(UTC),
    }
    record.update(dict.fromkeys(DOCUMENT_FIELDS))
    seen: set[str] = set()
    for value in payload.result.fields:
        if value.name not in seen and value.name not in DOCUMENT_ATTRIBUTES:
            seen.add(value.name)
            record[value.name] = typed_value(value)
    return record
