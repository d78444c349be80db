"""The documented SQL views: a public interface, stable across releases.

Add columns freely; never rename or drop one without a migration note in README. The same SQL
runs on SQLite and PostgreSQL.
"""

from __future__ import annotations

from connectors.base import DOCUMENT_FIELDS

AMOUNT_COLUMNS = ("total_amount", "net_amount", "tax_amount", "amount_due")
DATE_COLUMNS = ("issue_date", "due_date")

_LATEST_SUBMISSION = "SELECT document_id, MAX(id) AS id FROM submissions GROUP BY document_id"
_LATEST_EXTRACTION = (
    "SELECT document_id, MAX(id) AS id FROM extractions "
    "WHERE normalized_at IS NOT NULL GROUP BY document_id"
)


def _invoice_column(name: str) -> str:
    if name in AMOUNT_COLUMNS:
        return f"MAX(CASE WHEN f.field = '{name}' THEN f.value_number END) AS {name}"
    if name in DATE_COLUMNS:
        return f"MAX(CASE WHEN f.field = '{name}' THEN f.value_date END) AS {name}"
    return f"MAX(CASE WHEN f.field = '{name}' THEN f.value_text END) AS {name}"


VIEWS: dict[str, str] = {
    "docrelay_documents": f"""
SELECT d.id AS document_id, d.sha256, d.filename, d.mime_type, d.size_bytes, d.pages,
       d.source, d.source_ref, d.received_at,
       COALESCE(s.state, d.intake_state) AS state,
       s.profile AS vendor, s.vendor_ref, s.completed_at,
       (SELECT MAX(dl.delivered_at) FROM deliveries dl
         WHERE dl.document_id = d.id AND dl.state = 'delivered') AS exported_at,
       COALESCE(s.error, d.error) AS error,
       d.duplicate_of, d.route, s.id AS submission_id, s.attempts, d.metadata,
       s.review_reason, s.review_since, x.version AS extraction_version, x.quality
FROM documents d
LEFT JOIN ({_LATEST_SUBMISSION}) ls ON ls.document_id = d.id
LEFT JOIN submissions s ON s.id = ls.id
LEFT JOIN ({_LATEST_EXTRACTION}) lx ON lx.document_id = d.id
LEFT JOIN extractions x ON x.id = lx.id
""",
    "docrelay_fields": f"""
SELECT x.document_id, x.submission_id, x.vendor, f.name AS field, f.value_text,
       f.value_number, f.value_date, f.currency, f.confidence, f.page, f.bbox,
       f.vendor_label, f.corrected, f.raw_text, x.id AS extraction_id,
       f.page_width, f.page_height, x.version AS extraction_version
FROM ({_LATEST_EXTRACTION}) lx
JOIN extractions x ON x.id = lx.id
JOIN fields f ON f.extraction_id = x.id
""",
    "docrelay_invoices": """
SELECT d.document_id, d.vendor, d.state,
       {columns}
FROM docrelay_documents d
JOIN docrelay_fields f ON f.document_id = d.document_id
GROUP BY d.document_id, d.vendor, d.state
""".format(columns=",\n       ".join(_invoice_column(name) for name in DOCUMENT_FIELDS)),
    "docrelay_line_items": f"""
SELECT x.document_id, x.vendor, li.line_no, li.description, li.quantity, li.unit_price,
       li.net_amount, li.tax_rate, li.total_amount, li.item_code, x.submission_id,
       li.provenance, x.version AS extraction_version
FROM ({_LATEST_EXTRACTION}) lx
JOIN extractions x ON x.id = lx.id
JOIN line_items li ON li.extraction_id = x.id
""",
    "docrelay_deliveries": """
SELECT dl.id AS delivery_id, dl.document_id, dl.destination, dl.version, dl.state,
       dl.attempts, dl.error, dl.downstream_ref, dl.created_at, dl.delivered_at,
       dl.outcome, dl.outcome_reason, dl.outcome_at, dl.submission_id, dl.extraction_id,
       dl.idempotency_key
FROM deliveries dl
""",
}
"""View name → SELECT, in creation order (later views build on earlier ones)."""


def create_statements() -> list[str]:
    return [f"CREATE VIEW {name} AS {sql.strip()}" for name, sql in VIEWS.items()]


def drop_statements() -> list[str]:
    return [f"DROP VIEW IF EXISTS {name}" for name in reversed(VIEWS)]
