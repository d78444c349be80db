"""processes: one row per running daemon with its heartbeat (liveness across hosts and
containers), and store_info (the blob directory's token every process must share)

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-08
"""

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "processes",
        sa.Column("id", sa.String(255), nullable=False),
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("version", sa.String(64), nullable=False),
        sa.Column("started_at", sa.DateTime(), nullable=False),
        sa.Column("heartbeat_at", sa.DateTime(), nullable=False),
        sa.Column("lost_after", sa.Double(), nullable=False),
        sa.Column("ended_at", sa.DateTime(), nullable=True),
        sa.Column("ended", sa.String(16), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_processes")),
    )
    op.create_index(
        op.f("ix_processes_ended_heartbeat_at"), "processes", ["ended", "heartbeat_at"]
    )
    op.create_table(
        "store_info",
        sa.Column("key", sa.String(64), nullable=False),
        sa.Column("value", sa.String(255), nullable=False),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_store_info")),
    )


def downgrade() -> None:
    op.drop_table("store_info")
    op.drop_index(op.f("ix_processes_ended_heartbeat_at"), table_name="processes")
    op.drop_table("processes")
