"""vendor accuracy: the vendor's own answer kept on a corrected field, and the views that
judge each vendor's answers against the finalised values (docrelay_field_judgements,
docrelay_vendor_accuracy)

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-04
"""

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

VIEWS = {
    "docrelay_field_judgements": """
SELECT t.document_id, s.id AS submission_id, s.profile, s.role, t.field,
       CASE WHEN a.value_text IS NULL THEN 'missed'
            WHEN t.field IN ('amount_due', 'net_amount', 'tax_amount', 'total_amount') AND a.value_number = t.value_number
                 THEN 'right'
            WHEN t.field IN ('due_date', 'issue_date') AND a.value_date = t.value_date THEN 'right'
            WHEN t.field NOT IN ('amount_due', 'due_date', 'issue_date', 'net_amount', 'tax_amount', 'total_amount')
                 AND LOWER(TRIM(a.value_text)) = LOWER(TRIM(t.value_text)) THEN 'right'
            ELSE 'wrong' END AS verdict,
       a.confidence, t.truth_at, t.value_text AS truth, a.value_text AS answer
FROM (SELECT fin.document_id, fin.truth_at, tf.name AS field, tf.value_text, tf.value_number,
             tf.value_date
      FROM (SELECT document_id, MAX(at) AS truth_at FROM (SELECT document_id, at FROM events WHERE kind IN ('corrected', 'confirmed') AND document_id IS NOT NULL UNION ALL SELECT document_id, outcome_at AS at FROM deliveries WHERE outcome = 'posted') finalised GROUP BY document_id) fin
      JOIN (SELECT fx.document_id, MAX(fx.id) AS id FROM extractions fx JOIN submissions fs ON fs.id = fx.submission_id WHERE fx.normalized_at IS NOT NULL AND fs.role <> 'shadow' GROUP BY fx.document_id) lf ON lf.document_id = fin.document_id
      JOIN fields tf ON tf.extraction_id = lf.id
      WHERE tf.value_text IS NOT NULL) t
JOIN submissions s ON s.document_id = t.document_id
JOIN (SELECT submission_id, MAX(id) AS id FROM extractions WHERE normalized_at IS NOT NULL GROUP BY submission_id) ls ON ls.submission_id = s.id
LEFT JOIN (SELECT f.extraction_id, f.name, f.confidence,
                  CASE WHEN f.corrected THEN f.vendor_value_text ELSE f.value_text END AS value_text,
                  CASE WHEN f.corrected THEN f.vendor_value_number ELSE f.value_number END AS value_number,
                  CASE WHEN f.corrected THEN f.vendor_value_date ELSE f.value_date END AS value_date,
                  CASE WHEN f.corrected AND NOT f.vendor_value_kept THEN 0 ELSE 1 END AS known
           FROM fields f) a ON a.extraction_id = ls.id AND a.name = t.field
WHERE a.known IS NULL OR a.known = 1
""",
    "docrelay_vendor_accuracy": """
SELECT profile, field, COUNT(*) AS documents,
       SUM(CASE WHEN verdict = 'right' THEN 1 ELSE 0 END) AS right_count,
       SUM(CASE WHEN verdict = 'wrong' THEN 1 ELSE 0 END) AS wrong_count,
       SUM(CASE WHEN verdict = 'missed' THEN 1 ELSE 0 END) AS missed_count,
       1.0 * SUM(CASE WHEN verdict = 'right' THEN 1 ELSE 0 END) / COUNT(*) AS right_share,
       1.0 * SUM(CASE WHEN verdict = 'wrong' THEN 1 ELSE 0 END) / COUNT(*) AS wrong_share,
       1.0 * SUM(CASE WHEN verdict = 'missed' THEN 1 ELSE 0 END) / COUNT(*) AS missed_share,
       AVG(CASE WHEN verdict = 'right' THEN confidence END) AS avg_confidence_right,
       AVG(CASE WHEN verdict = 'wrong' THEN confidence END) AS avg_confidence_wrong
FROM docrelay_field_judgements
GROUP BY profile, field
""",
}
"""The views as of this revision (frozen here: later revisions replace them)."""


def upgrade() -> None:
    op.add_column("fields", sa.Column("vendor_value_text", sa.Text(), nullable=True))
    op.add_column("fields", sa.Column("vendor_value_number", sa.Numeric(18, 4), nullable=True))
    op.add_column("fields", sa.Column("vendor_value_date", sa.Date(), nullable=True))
    op.add_column(
        "fields",
        sa.Column("vendor_value_kept", sa.Boolean(), server_default=sa.false(), nullable=False),
    )
    for name, sql in VIEWS.items():
        op.execute(f"CREATE VIEW {name} AS {sql.strip()}")


def downgrade() -> None:
    for name in reversed(VIEWS):
        op.execute(f"DROP VIEW IF EXISTS {name}")
    for column in ("vendor_value_kept", "vendor_value_date", "vendor_value_number",
                   "vendor_value_text"):  # fmt: skip
        op.drop_column("fields", column)
