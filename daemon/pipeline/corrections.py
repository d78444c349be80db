"""The ``docrelay_corrections`` table: corrections an ERP job or a person INSERTs.

A periodic job picks the pending rows up in id order, per document, and applies them with
``feedback.apply_correction`` (the path of ``docrelay correct`` and the HTTP API). The
correction and the marks on its rows (``applied``, or ``refused`` with the reason) commit in
one transaction, so a crash between them cannot apply a row twice; rows are never deleted.
The rows are locked while they are worked (``FOR UPDATE SKIP LOCKED`` on PostgreSQL, the
write lock on SQLite), and one process of several on a store holds the pickup's lease.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Engine, select, update
from sqlalchemy.exc import OperationalError

from daemon.pipeline.crash import crash_point
from daemon.pipeline.feedback import (
    InvalidCorrection,
    NotExtractedYet,
    UnknownDocument,
    apply_correction,
)
from daemon.store.engine import reader
from daemon.store.models import (
    CorrectionAction,
    CorrectionRequest,
    CorrectionRequestState,
    utcnow,
)

log = logging.getLogger(__name__)

corrections_t = CorrectionRequest.__table__
LEASE = "docrelay_corrections"
"""The lease (in ``source_leases``) whose holder picks the rows up."""
ORIGIN = "table"
"""The actor of the history events and the origin of the feedback rows."""


@dataclass
class PickUp:
    """What one pass did, row by row."""

    applied: int = 0
    refused: int = 0
    waiting: int = 0
    """Rows left pending: their document has no result yet."""


def pick_up(
    engine: Engine, *, vendors: Mapping[str, Any] | None = None, limit: int = 500
) -> PickUp:
    """Apply up to ``limit`` pending rows, oldest first; a second pass over the same rows does
    nothing. Rows of one document go in one correction (one new export version) unless a
    field repeats: then the later word on it is applied after the earlier one."""
    with reader(engine).connect() as conn:
        pending = conn.execute(
            select(corrections_t.c.id, corrections_t.c.document_id, corrections_t.c.field)
            .where(corrections_t.c.state == CorrectionRequestState.PENDING)
            .order_by(corrections_t.c.id)
            .limit(limit)
        ).all()
    per_document: dict[int, list[Any]] = {}
    for row in pending:
        per_document.setdefault(row.document_id, []).append(row)
    done = PickUp()
    for document_id, rows in per_document.items():
        for batch in _batches(rows):
            try:
                with engine.begin() as conn:
                    _apply(conn, document_id, batch, vendors, done)
            except OperationalError:
                raise  # locked or unreachable: the next pass takes the rows again
            except Exception as exc:  # a bug must not hold up every later row: record it
                log.exception("%s rows %s could not be applied", LEASE, batch)
                with engine.begin() as conn:
                    _mark(conn, _pending(conn, batch), CorrectionRequestState.REFUSED,
                          f"could not be applied: {type(exc).__name__}: {exc}", done)  # fmt: skip
    return done


def _batches(rows: Sequence[Any]) -> Iterable[list[int]]:
    """Ids in order, cut wherever a field comes again."""
    batch: list[int] = []
    fields: set[str] = set()
    for row in rows:
        if row.field in fields:
            yield batch
            batch, fields = [], set()
        batch.append(row.id)
        fields.add(row.field)
    if batch:
        yield batch


def _apply(
    conn: Connection,
    document_id: int,
    ids: Sequence[int],
    vendors: Mapping[str, Any] | None,
    done: PickUp,
) -> None:
    rows = _pending(conn, ids)  # another process took them meanwhile: none left, nothing to do
    good = []
    for row in rows:
        if problem := _malformed(row):
            _mark(conn, [row], CorrectionRequestState.REFUSED, problem, done)
        else:
            good.append(row)
    while good:
        values = {r.field: r.value if r.action == CorrectionAction.CORRECT else ""
                  for r in good if r.action != CorrectionAction.CONFIRM}  # fmt: skip
        confirm = [r.field for r in good if r.action == CorrectionAction.CONFIRM]
        notes = [f"{LEASE} row {r.id}" + (f": {r.note}" if r.note else "") for r in good]
        try:
            with conn.begin_nested():
                changed = apply_correction(
                    conn, document_id, values, confirm=confirm, vendors=vendors, origin=ORIGIN,
                    note="; ".join(notes),
                )  # fmt: skip
        except InvalidCorrection as exc:
            culprit = [r for r in good if r.field == exc.field] or good
            _mark(conn, culprit, CorrectionRequestState.REFUSED, str(exc), done)
            good = [r for r in good if r not in culprit]
            continue  # the others may still be right
        except UnknownDocument as exc:
            _mark(conn, good, CorrectionRequestState.REFUSED, str(exc), done)
            return
        except NotExtractedYet as exc:
            waiting = f"waiting: {exc}"
            fresh = [r for r in good if r.reason != waiting]
            if fresh:
                conn.execute(
                    update(corrections_t)
                    .where(corrections_t.c.id.in_([r.id for r in fresh]))
                    .values(reason=waiting)
                )
            done.waiting += len(good)
            return
        crash_point("after_correction_apply")
        _mark(conn, good, CorrectionRequestState.APPLIED, None, done)
        log.info("document %d corrected from %s rows %s: %s", document_id, LEASE,
                 ", ".join(str(r.id) for r in good), "; ".join(changed))  # fmt: skip
        return


def _pending(conn: Connection, ids: Sequence[int]) -> list[Any]:
    """The rows still pending, locked for this transaction (skipped when another has them)."""
    return list(
        conn.execute(
            select(corrections_t)
            .where(
                corrections_t.c.id.in_(ids),
                corrections_t.c.state == CorrectionRequestState.PENDING,
            )
            .order_by(corrections_t.c.id)
            .with_for_update(skip_locked=True)
        ).all()
    )


def _malformed(row: Any) -> str | None:
    """What makes a row unusable before its values are looked at."""
    actions = [a.value for a in CorrectionAction]
    if row.action not in actions:
        return f"action {row.action!r} is not one of {', '.join(actions)}"
    if row.action == CorrectionAction.CORRECT and not (row.value or "").strip():
        return f"{row.field}: no value (use action 'absent' for a field not in the document)"
    return None


def _mark(
    conn: Connection, rows: Sequence[Any], state: str, reason: str | None, done: PickUp
) -> None:
    conn.execute(
        update(corrections_t)
        .where(corrections_t.c.id.in_([r.id for r in rows]))
        .values(state=state, reason=reason, applied_at=utcnow())
    )
    if state == CorrectionRequestState.APPLIED:
        done.applied += len(rows)
    else:
        done.refused += len(rows)
        for row in rows:
            log.warning("%s row %d refused: %s", LEASE, row.id, reason)
