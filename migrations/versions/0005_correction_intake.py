"""correction intake: the docrelay_corrections table an ERP job or a person inserts into

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-03
"""

from alembic import op
import sqlalchemy as sa


revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def _now_utc() -> sa.TextClause:
    """The insert's time in UTC, as the other (naive UTC) time columns hold it."""
    if op.get_bind().dialect.name == "postgresql":
        return sa.text("(now() AT TIME ZONE 'utc')")
    return sa.text("CURRENT_TIMESTAMP")  # SQLite: UTC


def upgrade() -> None:
    op.create_table('docrelay_corrections',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('document_id', sa.Integer(), nullable=False),
    sa.Column('field', sa.String(length=255), nullable=False),
    sa.Column('value', sa.Text(), nullable=True),
    sa.Column('action', sa.String(length=16), server_default='correct', nullable=False),
    sa.Column('note', sa.Text(), nullable=True),
    sa.Column('created_at', sa.DateTime(), server_default=_now_utc(), nullable=False),
    sa.Column('state', sa.String(length=16), server_default='pending', nullable=False),
    sa.Column('reason', sa.Text(), nullable=True),
    sa.Column('applied_at', sa.DateTime(), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_docrelay_corrections'))
    )
    op.create_index(op.f('ix_docrelay_corrections_state_id'), 'docrelay_corrections',
                    ['state', 'id'], unique=False)


def downgrade() -> None:
    op.drop_index(op.f('ix_docrelay_corrections_state_id'), table_name='docrelay_corrections')
    op.drop_table('docrelay_corrections')
