"""shadow submissions: the public views ignore a route's shadow profiles (they show the
primary's or its fallback's result), docrelay_field_agreement compares them with it, and
a shadow remembers whether corrections go to its vendor too

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-04
"""

from alembic import op
import sqlalchemy as sa


revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None

VIEWS = {
    "docrelay_documents": """
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
LEFT JOIN (SELECT document_id, MAX(id) AS id FROM submissions WHERE role <> 'shadow' GROUP BY document_id) ls ON ls.document_id = d.id
LEFT JOIN submissions s ON s.id = ls.id
LEFT JOIN (SELECT ex.document_id, MAX(ex.id) AS id FROM extractions ex JOIN submissions es ON es.id = ex.submission_id WHERE ex.normalized_at IS NOT NULL AND es.role <> 'shadow' GROUP BY ex.document_id) lx ON lx.document_id = d.id
LEFT JOIN extractions x ON x.id = lx.id
""",
    "docrelay_fields": """
SELECT x.document_id, x.submission_id, x.vendor, f.name AS field, f.value_text,
       f.value_number, f.value_date, f.currency, f.confidence, f.page, f.bbox,
       f.vendor_label, f.corrected, f.raw_text, x.id AS extraction_id,
       f.page_width, f.page_height, x.version AS extraction_version
FROM (SELECT ex.document_id, MAX(ex.id) AS id FROM extractions ex JOIN submissions es ON es.id = ex.submission_id WHERE ex.normalized_at IS NOT NULL AND es.role <> 'shadow' GROUP BY ex.document_id) lx
JOIN extractions x ON x.id = lx.id
JOIN fields f ON f.extraction_id = x.id
""",
    "docrelay_invoices": """
SELECT d.document_id, d.vendor, d.state,
       MAX(CASE WHEN f.field = 'document_type' THEN f.value_text END) AS document_type,
       MAX(CASE WHEN f.field = 'invoice_number' THEN f.value_text END) AS invoice_number,
       MAX(CASE WHEN f.field = 'issue_date' THEN f.value_date END) AS issue_date,
       MAX(CASE WHEN f.field = 'due_date' THEN f.value_date END) AS due_date,
       MAX(CASE WHEN f.field = 'currency' THEN f.value_text END) AS currency,
       MAX(CASE WHEN f.field = 'total_amount' THEN f.value_number END) AS total_amount,
       MAX(CASE WHEN f.field = 'net_amount' THEN f.value_number END) AS net_amount,
       MAX(CASE WHEN f.field = 'tax_amount' THEN f.value_number END) AS tax_amount,
       MAX(CASE WHEN f.field = 'supplier_name' THEN f.value_text END) AS supplier_name,
       MAX(CASE WHEN f.field = 'supplier_vat_id' THEN f.value_text END) AS supplier_vat_id,
       MAX(CASE WHEN f.field = 'supplier_iban' THEN f.value_text END) AS supplier_iban,
       MAX(CASE WHEN f.field = 'supplier_bic' THEN f.value_text END) AS supplier_bic,
       MAX(CASE WHEN f.field = 'customer_name' THEN f.value_text END) AS customer_name,
       MAX(CASE WHEN f.field = 'customer_vat_id' THEN f.value_text END) AS customer_vat_id,
       MAX(CASE WHEN f.field = 'order_number' THEN f.value_text END) AS order_number,
       MAX(CASE WHEN f.field = 'payment_reference' THEN f.value_text END) AS payment_reference,
       MAX(CASE WHEN f.field = 'payment_terms' THEN f.value_text END) AS payment_terms,
       MAX(CASE WHEN f.field = 'amount_due' THEN f.value_number END) AS amount_due
FROM docrelay_documents d
JOIN docrelay_fields f ON f.document_id = d.document_id
GROUP BY d.document_id, d.vendor, d.state
""",
    "docrelay_line_items": """
SELECT x.document_id, x.vendor, li.line_no, li.description, li.quantity, li.unit_price,
       li.net_amount, li.tax_rate, li.total_amount, li.item_code, x.submission_id,
       li.provenance, x.version AS extraction_version
FROM (SELECT ex.document_id, MAX(ex.id) AS id FROM extractions ex JOIN submissions es ON es.id = ex.submission_id WHERE ex.normalized_at IS NOT NULL AND es.role <> 'shadow' GROUP BY ex.document_id) lx
JOIN extractions x ON x.id = lx.id
JOIN line_items li ON li.extraction_id = x.id
""",
    "docrelay_field_agreement": """
SELECT n.document_id, n.field,
       ps.profile AS primary_profile, ss.profile AS shadow_profile,
       pf.value_text AS primary_value, sf.value_text AS shadow_value,
       pf.confidence AS primary_confidence, sf.confidence AS shadow_confidence,
       CASE
         WHEN NOT (pf.value_text IS NOT NULL OR pf.value_number IS NOT NULL OR pf.value_date IS NOT NULL) AND NOT (sf.value_text IS NOT NULL OR sf.value_number IS NOT NULL OR sf.value_date IS NOT NULL) THEN 'agree'
         WHEN NOT (pf.value_text IS NOT NULL OR pf.value_number IS NOT NULL OR pf.value_date IS NOT NULL) THEN 'primary_missing'
         WHEN NOT (sf.value_text IS NOT NULL OR sf.value_number IS NOT NULL OR sf.value_date IS NOT NULL) THEN 'shadow_missing'
         WHEN pf.value_number IS NOT NULL AND sf.value_number IS NOT NULL THEN
           CASE WHEN pf.value_number = sf.value_number THEN 'agree' ELSE 'disagree' END
         WHEN pf.value_date IS NOT NULL AND sf.value_date IS NOT NULL THEN
           CASE WHEN pf.value_date = sf.value_date THEN 'agree' ELSE 'disagree' END
         WHEN LOWER(TRIM(pf.value_text)) = LOWER(TRIM(sf.value_text)) THEN 'agree'
         ELSE 'disagree'
       END AS agreement,
       n.primary_submission_id, n.shadow_submission_id,
       n.primary_extraction_id, n.shadow_extraction_id, pf.corrected AS primary_corrected
FROM (
  SELECT p.document_id, px.submission_id AS primary_submission_id,
         sx.submission_id AS shadow_submission_id, p.id AS primary_extraction_id,
         sx.id AS shadow_extraction_id, f.name AS field
  FROM (SELECT ex.document_id, MAX(ex.id) AS id FROM extractions ex JOIN submissions es ON es.id = ex.submission_id WHERE ex.normalized_at IS NOT NULL AND es.role <> 'shadow' GROUP BY ex.document_id) p
  JOIN extractions px ON px.id = p.id
  JOIN (SELECT ex.document_id, ex.submission_id, MAX(ex.id) AS id FROM extractions ex JOIN submissions es ON es.id = ex.submission_id WHERE ex.normalized_at IS NOT NULL AND es.role = 'shadow' GROUP BY ex.document_id, ex.submission_id) sx ON sx.document_id = p.document_id
  JOIN fields f ON f.extraction_id = p.id OR f.extraction_id = sx.id
  GROUP BY p.document_id, px.submission_id, sx.submission_id, p.id, sx.id, f.name
) n
JOIN submissions ps ON ps.id = n.primary_submission_id
JOIN submissions ss ON ss.id = n.shadow_submission_id
LEFT JOIN fields pf ON pf.extraction_id = n.primary_extraction_id AND pf.name = n.field
LEFT JOIN fields sf ON sf.extraction_id = n.shadow_extraction_id AND sf.name = n.field
""",
}
"""The views this revision changes or adds, as of it (frozen here: later revisions replace
them), in creation order."""

PREVIOUS_VIEWS = {
    "docrelay_documents": """
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
LEFT JOIN (SELECT document_id, MAX(id) AS id FROM submissions GROUP BY document_id) ls ON ls.document_id = d.id
LEFT JOIN submissions s ON s.id = ls.id
LEFT JOIN (SELECT document_id, MAX(id) AS id FROM extractions WHERE normalized_at IS NOT NULL GROUP BY document_id) lx ON lx.document_id = d.id
LEFT JOIN extractions x ON x.id = lx.id
""",
    "docrelay_fields": """
SELECT x.document_id, x.submission_id, x.vendor, f.name AS field, f.value_text,
       f.value_number, f.value_date, f.currency, f.confidence, f.page, f.bbox,
       f.vendor_label, f.corrected, f.raw_text, x.id AS extraction_id,
       f.page_width, f.page_height, x.version AS extraction_version
FROM (SELECT document_id, MAX(id) AS id FROM extractions WHERE normalized_at IS NOT NULL GROUP BY document_id) lx
JOIN extractions x ON x.id = lx.id
JOIN fields f ON f.extraction_id = x.id
""",
    "docrelay_invoices": """
SELECT d.document_id, d.vendor, d.state,
       MAX(CASE WHEN f.field = 'document_type' THEN f.value_text END) AS document_type,
       MAX(CASE WHEN f.field = 'invoice_number' THEN f.value_text END) AS invoice_number,
       MAX(CASE WHEN f.field = 'issue_date' THEN f.value_date END) AS issue_date,
       MAX(CASE WHEN f.field = 'due_date' THEN f.value_date END) AS due_date,
       MAX(CASE WHEN f.field = 'currency' THEN f.value_text END) AS currency,
       MAX(CASE WHEN f.field = 'total_amount' THEN f.value_number END) AS total_amount,
       MAX(CASE WHEN f.field = 'net_amount' THEN f.value_number END) AS net_amount,
       MAX(CASE WHEN f.field = 'tax_amount' THEN f.value_number END) AS tax_amount,
       MAX(CASE WHEN f.field = 'supplier_name' THEN f.value_text END) AS supplier_name,
       MAX(CASE WHEN f.field = 'supplier_vat_id' THEN f.value_text END) AS supplier_vat_id,
       MAX(CASE WHEN f.field = 'supplier_iban' THEN f.value_text END) AS supplier_iban,
       MAX(CASE WHEN f.field = 'supplier_bic' THEN f.value_text END) AS supplier_bic,
       MAX(CASE WHEN f.field = 'customer_name' THEN f.value_text END) AS customer_name,
       MAX(CASE WHEN f.field = 'customer_vat_id' THEN f.value_text END) AS customer_vat_id,
       MAX(CASE WHEN f.field = 'order_number' THEN f.value_text END) AS order_number,
       MAX(CASE WHEN f.field = 'payment_reference' THEN f.value_text END) AS payment_reference,
       MAX(CASE WHEN f.field = 'payment_terms' THEN f.value_text END) AS payment_terms,
       MAX(CASE WHEN f.field = 'amount_due' THEN f.value_number END) AS amount_due
FROM docrelay_documents d
JOIN docrelay_fields f ON f.document_id = d.document_id
GROUP BY d.document_id, d.vendor, d.state
""",
    "docrelay_line_items": """
SELECT x.document_id, x.vendor, li.line_no, li.description, li.quantity, li.unit_price,
       li.net_amount, li.tax_rate, li.total_amount, li.item_code, x.submission_id,
       li.provenance, x.version AS extraction_version
FROM (SELECT document_id, MAX(id) AS id FROM extractions WHERE normalized_at IS NOT NULL GROUP BY document_id) lx
JOIN extractions x ON x.id = lx.id
JOIN line_items li ON li.extraction_id = x.id
""",
}
"""0003's versions of the changed views, for the downgrade."""


def _replace_views(drop: list[str], views: dict[str, str]) -> None:
    for name in drop:
        op.execute(f"DROP VIEW IF EXISTS {name}")
    for name, sql in views.items():
        op.execute(f"CREATE VIEW {name} AS {sql.strip()}")


def upgrade() -> None:
    op.add_column(
        'submissions',
        sa.Column('shadow_feedback', sa.Boolean(), nullable=False, server_default=sa.false()),
    )
    _replace_views(list(reversed(PREVIOUS_VIEWS)), VIEWS)


def downgrade() -> None:
    _replace_views(list(reversed(VIEWS)), PREVIOUS_VIEWS)
    op.drop_column('submissions', 'shadow_feedback')
