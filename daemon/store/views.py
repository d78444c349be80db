"""The documented SQL views: a public interface, stable across releases.

Add columns freely; never rename or drop one without a migration note in README. The same SQL
runs on SQLite and PostgreSQL.

``docrelay_field_judgements`` judges every vendor answer against the truth, one row per
document, submission (any role: primary, fallback, shadow) and field;
``docrelay_vendor_accuracy`` counts them per vendor profile and field. **The truth:** a
document has one once a person or an ERP finalised it — a correction or confirmation was
applied in docrelay (any origin: CLI, API, the ``docrelay_corrections`` table; its
``corrected``/``confirmed`` event) or a destination reported it ``posted`` (the ERP's values
were applied as a correction). ``truth_at`` is the last of those moments. Its truth for a field
is the field's value in the document's latest non-shadow extraction (the corrected one); a
field absent from it (no value) has no truth and is not counted. A vendor's answer is the
field in its submission's latest extraction: corrections change an extraction in place, so a
corrected field keeps the vendor's own value in ``fields.vendor_value_*`` (a row a correction
added had none: missed; a row corrected before revision 0012 is unknown and left out). Values
compare normalised: ``value_number`` for amounts, ``value_date`` for dates, else
``value_text`` trimmed and case-insensitively. A field the vendor left out is ``missed``.
"""

from __future__ import annotations

from connectors.base import AMOUNT_FIELDS, DATE_FIELDS, DOCUMENT_FIELDS

AMOUNT_COLUMNS = ("total_amount", "net_amount", "tax_amount", "amount_due")
DATE_COLUMNS = ("issue_date", "due_date")

_LATEST_SUBMISSION = (
    "SELECT document_id, MAX(id) AS id FROM submissions WHERE role <> 'shadow' GROUP BY document_id"
)
"""Per document, the submission whose result is the document's: the primary or its fallback,
never a shadow (a route's ``shadow`` profiles are only compared, in docrelay_field_agreement)."""
_LATEST_EXTRACTION = (
    "SELECT ex.document_id, MAX(ex.id) AS id FROM extractions ex "
    "JOIN submissions es ON es.id = ex.submission_id "
    "WHERE ex.normalized_at IS NOT NULL AND es.role <> 'shadow' GROUP BY ex.document_id"
)
"""Per document, the latest normalised extraction of a primary or fallback submission."""
_LATEST_SHADOW_EXTRACTION = (
    "SELECT ex.document_id, ex.submission_id, MAX(ex.id) AS id FROM extractions ex "
    "JOIN submissions es ON es.id = ex.submission_id "
    "WHERE ex.normalized_at IS NOT NULL AND es.role = 'shadow' "
    "GROUP BY ex.document_id, ex.submission_id"
)
"""Per shadow submission, its latest normalised extraction."""
_HAS_VALUE = (
    "({f}.value_text IS NOT NULL OR {f}.value_number IS NOT NULL OR {f}.value_date IS NOT NULL)"
)


_FINALISED = (
    "SELECT document_id, MAX(at) AS truth_at FROM ("
    "SELECT document_id, at FROM events "
    "WHERE kind IN ('corrected', 'confirmed') AND document_id IS NOT NULL "
    "UNION ALL SELECT document_id, outcome_at AS at FROM deliveries WHERE outcome = 'posted'"
    ") finalised GROUP BY document_id"
)
"""Documents a person or an ERP finalised, and when they last did."""
_LATEST_FINAL_EXTRACTION = (
    "SELECT fx.document_id, MAX(fx.id) AS id FROM extractions fx "
    "JOIN submissions fs ON fs.id = fx.submission_id "
    "WHERE fx.normalized_at IS NOT NULL AND fs.role <> 'shadow' GROUP BY fx.document_id"
)
_LATEST_OF_EACH_SUBMISSION = (
    "SELECT submission_id, MAX(id) AS id FROM extractions "
    "WHERE normalized_at IS NOT NULL GROUP BY submission_id"
)


def _names(names: frozenset[str]) -> str:
    return ", ".join(f"'{name}'" for name in sorted(names))


def _vendor_answer(column: str) -> str:
    """The vendor's own value of a field row: a corrected row keeps it in ``vendor_*``."""
    return f"CASE WHEN f.corrected THEN f.vendor_{column} ELSE f.{column} END"


_VERDICT = f"""CASE WHEN a.value_text IS NULL THEN 'missed'
            WHEN t.field IN ({_names(AMOUNT_FIELDS)}) AND a.value_number = t.value_number
                 THEN 'right'
            WHEN t.field IN ({_names(DATE_FIELDS)}) AND a.value_date = t.value_date THEN 'right'
            WHEN t.field NOT IN ({_names(AMOUNT_FIELDS | DATE_FIELDS)})
                 AND LOWER(TRIM(a.value_text)) = LOWER(TRIM(t.value_text)) THEN 'right'
            ELSE 'wrong' END"""


def _share(verdict: str) -> str:
    return f"1.0 * SUM(CASE WHEN verdict = '{verdict}' THEN 1 ELSE 0 END) / COUNT(*)"


def _invoice_column(name: str) -> str:
    if name in AMOUNT_COLUMNS:
        return f"MAX(CASE WHEN f.field = '{name}' THEN f.value_number END) AS {name}"
    if name in DATE_COLUMNS:
        return f"MAX(CASE WHEN f.field = '{name}' THEN f.value_date END) AS {name}"
    return f"MAX(CASE WHEN f.field = '{name}' THEN f.value_text END) AS {name}"


VIEWS: dict[str, str] = {
    "docrelay_documents": f"""
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
LEFT JOIN ({_LATEST_SUBMISSION}) ls ON ls.document_id = d.id
LEFT JOIN submissions s ON s.id = ls.id
LEFT JOIN ({_LATEST_EXTRACTION}) lx ON lx.document_id = d.id
LEFT JOIN extractions x ON x.id = lx.id
""",
    "docrelay_fields": f"""
SELECT x.document_id, x.submission_id, x.vendor, f.name AS field, f.value_text,
       f.value_number, f.value_date, f.currency, f.confidence, f.page, f.bbox,
       f.vendor_label, f.corrected, f.raw_text, x.id AS extraction_id,
       f.page_width, f.page_height, x.version AS extraction_version
FROM ({_LATEST_EXTRACTION}) lx
JOIN extractions x ON x.id = lx.id
JOIN fields f ON f.extraction_id = x.id
""",
    "docrelay_invoices": """
SELECT d.document_id, d.vendor, d.state,
       {columns}
FROM docrelay_documents d
JOIN docrelay_fields f ON f.document_id = d.document_id
GROUP BY d.document_id, d.vendor, d.state
""".format(columns=",\n       ".join(_invoice_column(name) for name in DOCUMENT_FIELDS)),
    "docrelay_line_items": f"""
SELECT x.document_id, x.vendor, li.line_no, li.description, li.quantity, li.unit_price,
       li.net_amount, li.tax_rate, li.total_amount, li.item_code, x.submission_id,
       li.provenance, x.version AS extraction_version
FROM ({_LATEST_EXTRACTION}) lx
JOIN extractions x ON x.id = lx.id
JOIN line_items li ON li.extraction_id = x.id
""",
    "docrelay_field_agreement": f"""
SELECT n.document_id, n.field,
       ps.profile AS primary_profile, ss.profile AS shadow_profile,
       pf.value_text AS primary_value, sf.value_text AS shadow_value,
       pf.confidence AS primary_confidence, sf.confidence AS shadow_confidence,
       CASE
         WHEN NOT {_HAS_VALUE.format(f="pf")} AND NOT {_HAS_VALUE.format(f="sf")} THEN 'agree'
         WHEN NOT {_HAS_VALUE.format(f="pf")} THEN 'primary_missing'
         WHEN NOT {_HAS_VALUE.format(f="sf")} THEN 'shadow_missing'
         WHEN pf.value_number IS NOT NULL AND sf.value_number IS NOT NULL THEN
           CASE WHEN pf.value_number = sf.value_number THEN 'agree' ELSE 'disagree' END
         WHEN pf.value_date IS NOT NULL AND sf.value_date IS NOT NULL THEN
           CASE WHEN pf.value_date = sf.value_date THEN 'agree' ELSE 'disagree' END
         WHEN LOWER(TRIM(pf.value_text)) = LOWER(TRIM(sf.value_text)) THEN 'agree'
         ELSE 'disagree'
       END AS agreement,
       n.primary_submission_id, n.shadow_submission_id,
       n.primary_extraction_id, n.shadow_extraction_id, pf.corrected AS primary_corrected
FROM (
  SELECT p.document_id, px.submission_id AS primary_submission_id,
         sx.submission_id AS shadow_submission_id, p.id AS primary_extraction_id,
         sx.id AS shadow_extraction_id, f.name AS field
  FROM ({_LATEST_EXTRACTION}) p
  JOIN extractions px ON px.id = p.id
  JOIN ({_LATEST_SHADOW_EXTRACTION}) sx ON sx.document_id = p.document_id
  JOIN fields f ON f.extraction_id = p.id OR f.extraction_id = sx.id
  GROUP BY p.document_id, px.submission_id, sx.submission_id, p.id, sx.id, f.name
) n
JOIN submissions ps ON ps.id = n.primary_submission_id
JOIN submissions ss ON ss.id = n.shadow_submission_id
LEFT JOIN fields pf ON pf.extraction_id = n.primary_extraction_id AND pf.name = n.field
LEFT JOIN fields sf ON sf.extraction_id = n.shadow_extraction_id AND sf.name = n.field
""",
    "docrelay_deliveries": """
SELECT dl.id AS delivery_id, dl.document_id, dl.destination, dl.version, dl.state,
       dl.attempts, dl.error, dl.downstream_ref, dl.created_at, dl.delivered_at,
       dl.outcome, dl.outcome_reason, dl.outcome_at, dl.submission_id, dl.extraction_id,
       dl.idempotency_key
FROM deliveries dl
""",
    "docrelay_field_judgements": f"""
SELECT t.document_id, s.id AS submission_id, s.profile, s.role, t.field,
       {_VERDICT} AS verdict,
       a.confidence, t.truth_at, t.value_text AS truth, a.value_text AS answer
FROM (SELECT fin.document_id, fin.truth_at, tf.name AS field, tf.value_text, tf.value_number,
             tf.value_date
      FROM ({_FINALISED}) fin
      JOIN ({_LATEST_FINAL_EXTRACTION}) lf ON lf.document_id = fin.document_id
      JOIN fields tf ON tf.extraction_id = lf.id
      WHERE tf.value_text IS NOT NULL) t
JOIN submissions s ON s.document_id = t.document_id
JOIN ({_LATEST_OF_EACH_SUBMISSION}) ls ON ls.submission_id = s.id
LEFT JOIN (SELECT f.extraction_id, f.name, f.confidence,
                  {_vendor_answer("value_text")} AS value_text,
                  {_vendor_answer("value_number")} AS value_number,
                  {_vendor_answer("value_date")} AS value_date,
                  CASE WHEN f.corrected AND NOT f.vendor_value_kept THEN 0 ELSE 1 END AS known
           FROM fields f) a ON a.extraction_id = ls.id AND a.name = t.field
WHERE a.known IS NULL OR a.known = 1
""",
    "docrelay_vendor_accuracy": f"""
SELECT profile, field, COUNT(*) AS documents,
       SUM(CASE WHEN verdict = 'right' THEN 1 ELSE 0 END) AS right_count,
       SUM(CASE WHEN verdict = 'wrong' THEN 1 ELSE 0 END) AS wrong_count,
       SUM(CASE WHEN verdict = 'missed' THEN 1 ELSE 0 END) AS missed_count,
       {_share("right")} AS right_share,
       {_share("wrong")} AS wrong_share,
       {_share("missed")} AS missed_share,
       AVG(CASE WHEN verdict = 'right' THEN confidence END) AS avg_confidence_right,
       AVG(CASE WHEN verdict = 'wrong' THEN confidence END) AS avg_confidence_wrong
FROM docrelay_field_judgements
GROUP BY profile, field
""",
}
"""View name → SELECT, in creation order (later views build on earlier ones)."""


def create_statements() -> list[str]:
    return [f"CREATE VIEW {name} AS {sql.strip()}" for name, sql in VIEWS.items()]


def drop_statements() -> list[str]:
    return [f"DROP VIEW IF EXISTS {name}" for name in reversed(VIEWS)]
