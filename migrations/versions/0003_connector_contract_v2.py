"""connector contract v2: review, versions of extractions and deliveries, vendor keys,
provenance and page sizes, correction kinds; views gain their columns

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02
"""

from alembic import op
import sqlalchemy as sa


revision = '0003'
down_revision = '0002'
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
"""The public views as of this revision (frozen here: later revisions replace them)."""

PREVIOUS_VIEWS = {
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
"""0002's views, for the downgrade."""


def _replace_views(views: dict[str, str]) -> None:
    for name in reversed(list(views)):
        op.execute(f"DROP VIEW IF EXISTS {name}")
    for name, sql in views.items():
        op.execute(f"CREATE VIEW {name} AS {sql.strip()}")


def upgrade() -> None:
    for name in reversed(list(VIEWS)):  # SQLite rebuilds tables in batch mode: views go first
        op.execute(f"DROP VIEW IF EXISTS {name}")
    with op.batch_alter_table('documents', schema=None) as batch_op:
        batch_op.add_column(sa.Column('page_sizes', sa.JSON(), nullable=True))
    with op.batch_alter_table('submissions', schema=None) as batch_op:
        batch_op.add_column(sa.Column('review_reason', sa.Text(), nullable=True))
        batch_op.add_column(sa.Column('review_since', sa.DateTime(), nullable=True))
        batch_op.add_column(sa.Column('reopened_at', sa.DateTime(), nullable=True))
    with op.batch_alter_table('extractions', schema=None) as batch_op:
        batch_op.add_column(sa.Column('version', sa.Integer(), server_default='1', nullable=False))
        batch_op.add_column(sa.Column('quality', sa.JSON(), server_default='{}', nullable=False))
        batch_op.add_column(sa.Column('review_reason', sa.Text(), nullable=True))
    # Earlier extractions of a document (a fallback's, a re-fetch) are numbered in order.
    op.execute(
        "UPDATE extractions SET version = (SELECT COUNT(*) FROM extractions e2 "
        "WHERE e2.document_id = extractions.document_id AND e2.id <= extractions.id)"
    )
    with op.batch_alter_table('fields', schema=None) as batch_op:
        batch_op.add_column(sa.Column('page_width', sa.Float(), nullable=True))
        batch_op.add_column(sa.Column('page_height', sa.Float(), nullable=True))
        batch_op.add_column(sa.Column('vendor_id', sa.String(length=255), nullable=True))
    with op.batch_alter_table('line_items', schema=None) as batch_op:
        batch_op.add_column(sa.Column('provenance', sa.JSON(), server_default='{}', nullable=False))
    with op.batch_alter_table('deliveries', schema=None) as batch_op:
        batch_op.add_column(sa.Column('version', sa.Integer(), server_default='1', nullable=False))
        batch_op.drop_constraint('uq_deliveries_idempotency_key', type_='unique')
        batch_op.create_index(batch_op.f('ix_deliveries_idempotency_key_version'), ['idempotency_key', 'version'], unique=True)
    with op.batch_alter_table('feedback', schema=None) as batch_op:
        batch_op.add_column(sa.Column('correction', sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column('vendor_label', sa.String(length=255), nullable=True))
    op.create_table('submission_keys',
    sa.Column('profile', sa.String(length=255), nullable=False),
    sa.Column('key', sa.String(length=64), nullable=False),
    sa.Column('value', sa.String(length=512), nullable=False),
    sa.Column('submission_id', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['submission_id'], ['submissions.id'], name=op.f('fk_submission_keys_submission_id_submissions')),
    sa.PrimaryKeyConstraint('profile', 'key', 'value', name=op.f('pk_submission_keys'))
    )
    with op.batch_alter_table('submission_keys', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_submission_keys_submission_id'), ['submission_id'], unique=False)
    _replace_views(VIEWS)


def downgrade() -> None:
    for name in reversed(list(VIEWS)):
        op.execute(f"DROP VIEW IF EXISTS {name}")
    with op.batch_alter_table('submission_keys', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_submission_keys_submission_id'))
    op.drop_table('submission_keys')
    with op.batch_alter_table('feedback', schema=None) as batch_op:
        batch_op.drop_column('vendor_label')
        batch_op.drop_column('correction')
    with op.batch_alter_table('deliveries', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_deliveries_idempotency_key_version'))
        batch_op.create_unique_constraint('uq_deliveries_idempotency_key', ['idempotency_key'])
        batch_op.drop_column('version')
    with op.batch_alter_table('line_items', schema=None) as batch_op:
        batch_op.drop_column('provenance')
    with op.batch_alter_table('fields', schema=None) as batch_op:
        batch_op.drop_column('vendor_id')
        batch_op.drop_column('page_height')
        batch_op.drop_column('page_width')
    with op.batch_alter_table('extractions', schema=None) as batch_op:
        batch_op.drop_column('review_reason')
        batch_op.drop_column('quality')
        batch_op.drop_column('version')
    with op.batch_alter_table('submissions', schema=None) as batch_op:
        batch_op.drop_column('reopened_at')
        batch_op.drop_column('review_since')
        batch_op.drop_column('review_reason')
    with op.batch_alter_table('documents', schema=None) as batch_op:
        batch_op.drop_column('page_sizes')
    _replace_views(PREVIOUS_VIEWS)
