"""delivery outcomes: what became of a delivered record downstream (posted, rejected), and the
public view of deliveries

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-03
"""

from alembic import op
import sqlalchemy as sa


revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None

DELIVERIES_VIEW = """
CREATE VIEW docrelay_deliveries AS
SELECT dl.id AS delivery_id, dl.document_id, dl.destination, dl.version, dl.state,
       dl.attempts, dl.error, dl.downstream_ref, dl.created_at, dl.delivered_at,
       dl.outcome, dl.outcome_reason, dl.outcome_at, dl.submission_id, dl.extraction_id,
       dl.idempotency_key
FROM deliveries dl
"""
"""The view as of this revision (frozen here: later revisions replace it)."""


def upgrade() -> None:
    op.add_column('deliveries', sa.Column('outcome', sa.String(length=16), nullable=True))
    op.add_column('deliveries', sa.Column('outcome_reason', sa.Text(), nullable=True))
    op.add_column('deliveries', sa.Column('outcome_data', sa.JSON(), nullable=True))
    op.add_column('deliveries', sa.Column('outcome_at', sa.DateTime(), nullable=True))
    op.add_column('deliveries', sa.Column('followed_at', sa.DateTime(), nullable=True))
    op.execute(DELIVERIES_VIEW)


def downgrade() -> None:
    op.execute("DROP VIEW IF EXISTS docrelay_deliveries")
    for column in ('followed_at', 'outcome_at', 'outcome_data', 'outcome_reason', 'outcome'):
        op.drop_column('deliveries', column)
