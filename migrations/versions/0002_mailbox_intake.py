"""mailbox intake: source state and source leases; documents' metadata in docrelay_documents

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23
"""

from alembic import op
import sqlalchemy as sa


revision = '0002'
down_revision = '0001'
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
       d.duplicate_of, d.route, s.id AS submission_id, s.attempts, d.metadata
FROM documents d
LEFT JOIN (SELECT document_id, MAX(id) AS id FROM submissions GROUP BY document_id) ls ON ls.document_id = d.id
LEFT JOIN submissions s ON s.id = ls.id
""",
    "docrelay_fields": """
SELECT x.document_id, x.submission_id, x.vendor, f.name AS field, f.value_text,
       f.value_number, f.value_date, f.currency, f.confidence, f.page, f.bbox,
       f.vendor_label, f.corrected, f.raw_text, x.id AS extraction_id
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
       MAX(CASE WHEN f.field = 'payment_terms' THEN f.value_text END) AS payment_terms
FROM docrelay_documents d
JOIN docrelay_fields f ON f.document_id = d.document_id
GROUP BY d.document_id, d.vendor, d.state
""",
    "docrelay_line_items": """
SELECT x.document_id, x.vendor, li.line_no, li.description, li.quantity, li.unit_price,
       li.net_amount, li.tax_rate, li.total_amount, li.item_code, x.submission_id
FROM (SELECT document_id, MAX(id) AS id FROM extractions WHERE normalized_at IS NOT NULL GROUP BY document_id) lx
JOIN extractions x ON x.id = lx.id
JOIN line_items li ON li.extraction_id = x.id
""",
}
"""The public views as of this revision (frozen here: later revisions replace them)."""


def _replace_views(views: dict[str, str]) -> None:
    for name in reversed(list(views)):
        op.execute(f"DROP VIEW IF EXISTS {name}")
    for name, sql in views.items():
        op.execute(f"CREATE VIEW {name} AS {sql.strip()}")


def upgrade() -> None:
    op.create_table('source_state',
    sa.Column('source', sa.String(length=255), nullable=False),
    sa.Column('key', sa.String(length=512), nullable=False),
    sa.Column('value', sa.JSON(), nullable=False),
    sa.Column('updated_at', sa.DateTime(), nullable=False),
    sa.PrimaryKeyConstraint('source', 'key', name=op.f('pk_source_state'))
    )
    op.create_table('source_leases',
    sa.Column('name', sa.String(length=255), nullable=False),
    sa.Column('owner', sa.String(length=255), nullable=False),
    sa.Column('expires_at', sa.DateTime(), nullable=False),
    sa.PrimaryKeyConstraint('name', name=op.f('pk_source_leases'))
    )
    _replace_views(VIEWS)


def downgrade() -> None:
    # 0001's views are these without the metadata column.
    _replace_views({name: sql.replace(", d.metadata\n", "\n") for name, sql in VIEWS.items()})
    op.drop_table('source_leases')
    op.drop_table('source_state')
