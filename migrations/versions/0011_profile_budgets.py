"""profile budgets: documents and pages used per profile and UTC day/month, the shared pace of
requests_per_second, and when each submission was counted as sent (charged_at)

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-04
"""

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "budget_usage",
        sa.Column("profile", sa.String(255), nullable=False),
        sa.Column("period", sa.String(8), nullable=False),
        sa.Column("starts_at", sa.DateTime(), nullable=False),
        sa.Column("documents", sa.Integer(), nullable=False),
        sa.Column("pages", sa.Integer(), nullable=False),
        sa.Column("documents_limit", sa.Integer(), nullable=True),
        sa.Column("pages_limit", sa.Integer(), nullable=True),
        sa.Column("exhausted_at", sa.DateTime(), nullable=True),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("profile", "period", "starts_at", name=op.f("pk_budget_usage")),
    )
    op.create_table(
        "request_pace",
        sa.Column("profile", sa.String(255), nullable=False),
        sa.Column("next_slot", sa.Double(), nullable=False),
        sa.PrimaryKeyConstraint("profile", name=op.f("pk_request_pace")),
    )
    op.add_column("submissions", sa.Column("charged_at", sa.DateTime(), nullable=True))
    # Submissions sent before this revision: counted when the vendor gave them a reference,
    # at their first move to `uploading` (what the cost report bills by).
    op.execute(
        "UPDATE submissions SET charged_at = (SELECT MIN(events.at) FROM events"
        " WHERE events.submission_id = submissions.id AND events.to_state = 'uploading')"
        " WHERE vendor_ref IS NOT NULL"
    )


def downgrade() -> None:
    op.drop_column("submissions", "charged_at")
    op.drop_table("request_pace")
    op.drop_table("budget_usage")
