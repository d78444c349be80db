"""fallback chain: the profiles after a submission's next fallback, so a document can move on
along its route's whole chain

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-04
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("submissions", sa.Column("later_fallbacks", sa.JSON(), nullable=True))


def downgrade() -> None:
    op.drop_column("submissions", "later_fallbacks")
