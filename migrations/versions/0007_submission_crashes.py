"""submission crashes: how many runs of a submission the worker process did not survive (the
poison-pill count)

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-04
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "submissions", sa.Column("crashes", sa.Integer(), nullable=False, server_default="0")
    )


def downgrade() -> None:
    op.drop_column("submissions", "crashes")
