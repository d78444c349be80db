"""The canonical export document: one JSON form of an export, whatever carries it.

Every destination that hands a whole document downstream (a file in a folder, a webhook's body)
sends this same form, so a consumer written against one reads the other unchanged.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from connectors.base import LINE_ITEM_FIELDS, ExportPayload
from connectors.destinations.records import as_text, field_value

FORMAT_VERSION = 1
"""``docrelay_export`` in every document: raised only when a field changes meaning."""


def export_document(payload: ExportPayload, idempotency_key: str) -> dict[str, Any]:
    """The JSON export: canonical fields first, then details and provenance."""
    result = payload.result
    fields: dict[str, Any] = {}
    for value in result.fields:
        fields.setdefault(value.name, field_value(value))
    return {
        "docrelay_export": FORMAT_VERSION,
        "document_id": payload.document_id,
        "version": payload.version,
        "fields": fields,
        "corrected": sorted(payload.corrected),
        "quality": dict(result.quality),
        "line_items": [
            {name: as_text(getattr(item, name)) for name in ("line_no", *LINE_ITEM_FIELDS)}
            for item in result.line_items
        ],
        "field_details": [
            {
                "field": v.name,
                "value": field_value(v),
                "raw_text": v.raw_text,
                "currency": v.currency,
                "confidence": v.confidence,
                "page": v.page,
                "bbox": [v.bbox.left, v.bbox.top, v.bbox.right, v.bbox.bottom] if v.bbox else None,
                "page_size": [v.bbox.page_width, v.bbox.page_height] if v.bbox else None,
                "vendor_label": v.vendor_label,
            }
            for v in result.fields
        ],
        "document": {
            "sha256": payload.sha256,
            "filename": payload.filename,
            "mime_type": payload.mime_type,
            "source": payload.source,
            "source_ref": payload.source_ref,
            "received_at": payload.received_at.isoformat(),
            "metadata": dict(payload.metadata),
        },
        "provenance": {
            "vendor": payload.vendor,
            "vendor_kind": payload.vendor_kind,
            "vendor_ref": payload.vendor_ref,
            "submission_id": payload.submission_id,
            "extraction_id": payload.extraction_id,
            "idempotency_key": idempotency_key,
            "exported_at": datetime.now(UTC).isoformat(),
        },
    }
