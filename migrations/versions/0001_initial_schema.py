"""initial schema

Revision ID: 0001
Revises: 
Create Date: 2026-11-23
"""

from alembic import op
import sqlalchemy as sa


revision = '0001'
down_revision = None
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
       d.duplicate_of, d.route, s.id AS submission_id, s.attempts
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


def upgrade() -> None:
    op.create_table('connector_health',
    sa.Column('name', sa.String(length=255), nullable=False),
    sa.Column('state', sa.String(length=32), nullable=False),
    sa.Column('reason', sa.Text(), nullable=True),
    sa.Column('since', sa.DateTime(), nullable=False),
    sa.PrimaryKeyConstraint('name', name=op.f('pk_connector_health'))
    )
    op.create_table('documents',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('sha256', sa.String(length=64), nullable=False),
    sa.Column('filename', sa.String(length=1024), nullable=False),
    sa.Column('mime_type', sa.String(length=255), nullable=False),
    sa.Column('size_bytes', sa.BigInteger(), nullable=False),
    sa.Column('pages', sa.Integer(), nullable=True),
    sa.Column('source', sa.String(length=255), nullable=False),
    sa.Column('source_ref', sa.String(length=2048), nullable=True),
    sa.Column('metadata', sa.JSON(), nullable=False),
    sa.Column('received_at', sa.DateTime(), nullable=False),
    sa.Column('released_at', sa.DateTime(), nullable=True),
    sa.Column('duplicate_of', sa.Integer(), nullable=True),
    sa.Column('route', sa.String(length=255), nullable=True),
    sa.Column('intake_state', sa.String(length=16), nullable=False),
    sa.Column('error', sa.Text(), nullable=True),
    sa.ForeignKeyConstraint(['duplicate_of'], ['documents.id'], name=op.f('fk_documents_duplicate_of_documents')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_documents'))
    )
    with op.batch_alter_table('documents', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_documents_sha256'), ['sha256'], unique=False)
        batch_op.create_index(batch_op.f('ix_documents_source_source_ref'), ['source', 'source_ref'], unique=False)

    op.create_table('submissions',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('document_id', sa.Integer(), nullable=False),
    sa.Column('profile', sa.String(length=255), nullable=False),
    sa.Column('vendor_kind', sa.String(length=64), nullable=False),
    sa.Column('role', sa.String(length=16), nullable=False),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('resume_state', sa.String(length=16), nullable=True),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('polls', sa.Integer(), nullable=False),
    sa.Column('next_attempt_at', sa.DateTime(), nullable=True),
    sa.Column('deadline_at', sa.DateTime(), nullable=True),
    sa.Column('lease_owner', sa.String(length=255), nullable=True),
    sa.Column('lease_expires_at', sa.DateTime(), nullable=True),
    sa.Column('vendor_ref', sa.String(length=1024), nullable=True),
    sa.Column('vendor_data', sa.JSON(), nullable=False),
    sa.Column('destinations', sa.JSON(), nullable=False),
    sa.Column('fallback', sa.String(length=255), nullable=True),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('error_class', sa.String(length=32), nullable=True),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.Column('updated_at', sa.DateTime(), nullable=False),
    sa.Column('completed_at', sa.DateTime(), nullable=True),
    sa.Column('purged_at', sa.DateTime(), nullable=True),
    sa.ForeignKeyConstraint(['document_id'], ['documents.id'], name=op.f('fk_submissions_document_id_documents')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_submissions'))
    )
    with op.batch_alter_table('submissions', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_submissions_document_id'), ['document_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_submissions_document_id_profile'), ['document_id', 'profile'], unique=True)
        batch_op.create_index(batch_op.f('ix_submissions_profile_state_next_attempt_at'), ['profile', 'state', 'next_attempt_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_submissions_vendor_ref'), ['vendor_ref'], unique=False)

    op.create_table('extractions',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('submission_id', sa.Integer(), nullable=False),
    sa.Column('document_id', sa.Integer(), nullable=False),
    sa.Column('vendor', sa.String(length=255), nullable=False),
    sa.Column('raw', sa.JSON(), nullable=False),
    sa.Column('fetched_at', sa.DateTime(), nullable=False),
    sa.Column('normalized_at', sa.DateTime(), nullable=True),
    sa.ForeignKeyConstraint(['document_id'], ['documents.id'], name=op.f('fk_extractions_document_id_documents')),
    sa.ForeignKeyConstraint(['submission_id'], ['submissions.id'], name=op.f('fk_extractions_submission_id_submissions')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_extractions'))
    )
    with op.batch_alter_table('extractions', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_extractions_document_id'), ['document_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_extractions_submission_id'), ['submission_id'], unique=False)

    op.create_table('feedback',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('document_id', sa.Integer(), nullable=False),
    sa.Column('submission_id', sa.Integer(), nullable=False),
    sa.Column('profile', sa.String(length=255), nullable=False),
    sa.Column('kind', sa.String(length=32), nullable=False),
    sa.Column('field', sa.String(length=255), nullable=True),
    sa.Column('old_value', sa.Text(), nullable=True),
    sa.Column('new_value', sa.Text(), nullable=True),
    sa.Column('message', sa.Text(), nullable=True),
    sa.Column('origin', sa.String(length=255), nullable=False),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('next_attempt_at', sa.DateTime(), nullable=True),
    sa.Column('lease_owner', sa.String(length=255), nullable=True),
    sa.Column('lease_expires_at', sa.DateTime(), nullable=True),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.Column('sent_at', sa.DateTime(), nullable=True),
    sa.ForeignKeyConstraint(['document_id'], ['documents.id'], name=op.f('fk_feedback_document_id_documents')),
    sa.ForeignKeyConstraint(['submission_id'], ['submissions.id'], name=op.f('fk_feedback_submission_id_submissions')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_feedback'))
    )
    with op.batch_alter_table('feedback', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_feedback_document_id'), ['document_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_feedback_profile_state_next_attempt_at'), ['profile', 'state', 'next_attempt_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_feedback_submission_id'), ['submission_id'], unique=False)

    op.create_table('deliveries',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('document_id', sa.Integer(), nullable=False),
    sa.Column('submission_id', sa.Integer(), nullable=False),
    sa.Column('extraction_id', sa.Integer(), nullable=False),
    sa.Column('destination', sa.String(length=255), nullable=False),
    sa.Column('idempotency_key', sa.String(length=255), nullable=False),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('next_attempt_at', sa.DateTime(), nullable=True),
    sa.Column('lease_owner', sa.String(length=255), nullable=True),
    sa.Column('lease_expires_at', sa.DateTime(), nullable=True),
    sa.Column('downstream_ref', sa.String(length=2048), nullable=True),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.Column('delivered_at', sa.DateTime(), nullable=True),
    sa.ForeignKeyConstraint(['document_id'], ['documents.id'], name=op.f('fk_deliveries_document_id_documents')),
    sa.ForeignKeyConstraint(['extraction_id'], ['extractions.id'], name=op.f('fk_deliveries_extraction_id_extractions')),
    sa.ForeignKeyConstraint(['submission_id'], ['submissions.id'], name=op.f('fk_deliveries_submission_id_submissions')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_deliveries')),
    sa.UniqueConstraint('idempotency_key', name=op.f('uq_deliveries_idempotency_key'))
    )
    with op.batch_alter_table('deliveries', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_deliveries_destination_state_next_attempt_at'), ['destination', 'state', 'next_attempt_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_deliveries_document_id'), ['document_id'], unique=False)

    op.create_table('fields',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('extraction_id', sa.Integer(), nullable=False),
    sa.Column('document_id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=255), nullable=False),
    sa.Column('value_text', sa.Text(), nullable=True),
    sa.Column('raw_text', sa.Text(), nullable=True),
    sa.Column('value_number', sa.Numeric(precision=18, scale=4), nullable=True),
    sa.Column('value_date', sa.Date(), nullable=True),
    sa.Column('currency', sa.String(length=3), nullable=True),
    sa.Column('confidence', sa.Float(), nullable=True),
    sa.Column('page', sa.Integer(), nullable=True),
    sa.Column('bbox', sa.String(length=128), nullable=True),
    sa.Column('vendor_label', sa.String(length=255), nullable=True),
    sa.Column('corrected', sa.Boolean(), nullable=False),
    sa.ForeignKeyConstraint(['document_id'], ['documents.id'], name=op.f('fk_fields_document_id_documents')),
    sa.ForeignKeyConstraint(['extraction_id'], ['extractions.id'], name=op.f('fk_fields_extraction_id_extractions')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_fields'))
    )
    with op.batch_alter_table('fields', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_fields_document_id'), ['document_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_fields_extraction_id'), ['extraction_id'], unique=False)

    op.create_table('line_items',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('extraction_id', sa.Integer(), nullable=False),
    sa.Column('document_id', sa.Integer(), nullable=False),
    sa.Column('line_no', sa.Integer(), nullable=False),
    sa.Column('description', sa.Text(), nullable=True),
    sa.Column('quantity', sa.Numeric(precision=18, scale=4), nullable=True),
    sa.Column('unit_price', sa.Numeric(precision=18, scale=4), nullable=True),
    sa.Column('net_amount', sa.Numeric(precision=18, scale=4), nullable=True),
    sa.Column('tax_rate', sa.Numeric(precision=18, scale=4), nullable=True),
    sa.Column('total_amount', sa.Numeric(precision=18, scale=4), nullable=True),
    sa.Column('item_code', sa.String(length=255), nullable=True),
    sa.Column('extra', sa.JSON(), nullable=False),
    sa.ForeignKeyConstraint(['document_id'], ['documents.id'], name=op.f('fk_line_items_document_id_documents')),
    sa.ForeignKeyConstraint(['extraction_id'], ['extractions.id'], name=op.f('fk_line_items_extraction_id_extractions')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_line_items'))
    )
    with op.batch_alter_table('line_items', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_line_items_document_id'), ['document_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_line_items_extraction_id'), ['extraction_id'], unique=False)

    op.create_table('events',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('at', sa.DateTime(), nullable=False),
    sa.Column('document_id', sa.Integer(), nullable=True),
    sa.Column('submission_id', sa.Integer(), nullable=True),
    sa.Column('delivery_id', sa.Integer(), nullable=True),
    sa.Column('actor', sa.String(length=255), nullable=False),
    sa.Column('kind', sa.String(length=64), nullable=False),
    sa.Column('from_state', sa.String(length=16), nullable=True),
    sa.Column('to_state', sa.String(length=16), nullable=True),
    sa.Column('message', sa.Text(), nullable=True),
    sa.ForeignKeyConstraint(['delivery_id'], ['deliveries.id'], name=op.f('fk_events_delivery_id_deliveries')),
    sa.ForeignKeyConstraint(['document_id'], ['documents.id'], name=op.f('fk_events_document_id_documents')),
    sa.ForeignKeyConstraint(['submission_id'], ['submissions.id'], name=op.f('fk_events_submission_id_submissions')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_events'))
    )
    with op.batch_alter_table('events', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_events_document_id'), ['document_id'], unique=False)


    for name, sql in VIEWS.items():
        op.execute(f"CREATE VIEW {name} AS {sql.strip()}")

def downgrade() -> None:
    for name in reversed(VIEWS):
        op.execute(f"DROP VIEW IF EXISTS {name}")
    with op.batch_alter_table('events', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_events_document_id'))

    op.drop_table('events')
    with op.batch_alter_table('line_items', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_line_items_extraction_id'))
        batch_op.drop_index(batch_op.f('ix_line_items_document_id'))

    op.drop_table('line_items')
    with op.batch_alter_table('fields', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_fields_extraction_id'))
        batch_op.drop_index(batch_op.f('ix_fields_document_id'))

    op.drop_table('fields')
    with op.batch_alter_table('deliveries', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_deliveries_document_id'))
        batch_op.drop_index(batch_op.f('ix_deliveries_destination_state_next_attempt_at'))

    op.drop_table('deliveries')
    with op.batch_alter_table('feedback', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_feedback_submission_id'))
        batch_op.drop_index(batch_op.f('ix_feedback_profile_state_next_attempt_at'))
        batch_op.drop_index(batch_op.f('ix_feedback_document_id'))

    op.drop_table('feedback')
    with op.batch_alter_table('extractions', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_extractions_submission_id'))
        batch_op.drop_index(batch_op.f('ix_extractions_document_id'))

    op.drop_table('extractions')
    with op.batch_alter_table('submissions', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_submissions_vendor_ref'))
        batch_op.drop_index(batch_op.f('ix_submissions_profile_state_next_attempt_at'))
        batch_op.drop_index(batch_op.f('ix_submissions_document_id_profile'))
        batch_op.drop_index(batch_op.f('ix_submissions_document_id'))

    op.drop_table('submissions')
    with op.batch_alter_table('documents', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_documents_source_source_ref'))
        batch_op.drop_index(batch_op.f('ix_documents_sha256'))

    op.drop_table('documents')
    op.drop_table('connector_health')
