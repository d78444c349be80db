"""delivery v2: a push's in-doubt marker and the destination's own data about the record

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02
"""

from alembic import op
import sqlalchemy as sa


revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


# Plain ALTER TABLE (no batch copy): every backend adds and drops a column in place (SQLite
# since 3.35), and the views that read the table survive it.
def upgrade() -> None:
    op.add_column('deliveries', sa.Column('in_doubt_at', sa.DateTime(), nullable=True))
    op.add_column('deliveries', sa.Column('downstream_data', sa.JSON(), nullable=True))


def downgrade() -> None:
    op.drop_column('deliveries', 'downstream_data')
    op.drop_column('deliveries', 'in_doubt_at')
