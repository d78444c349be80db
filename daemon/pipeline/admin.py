"""Operator actions on the store: retry, history. Every change writes its event."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from sqlalchemy import Engine, select, update

from daemon.pipeline import ledger
from daemon.pipeline.states import ACTIVE
from daemon.store.engine import reader
from daemon.store.models import DeliveryState, SubmissionState, utcnow

S = SubmissionState


def retry(
    engine: Engine,
    *,
    documents: Sequence[int] = (),
    states: Sequence[str] = ("dead", "failed"),
    vendor: str | None = None,
    actor: str = "cli",
) -> dict[str, int]:
    """Bring dead/failed/rejected submissions, dead deliveries and dead or refused feedback
    back into the queue."""
    sub, dl, fb = ledger.submissions, ledger.deliveries, ledger.feedback
    counts = {"submissions": 0, "deliveries": 0, "feedback": 0}
    with engine.begin() as conn:
        query = select(sub).where(sub.c.state.in_(states))
        if documents:
            query = query.where(sub.c.document_id.in_(documents))
        if vendor:
            query = query.where(sub.c.profile == vendor)
        for row in conn.execute(query).mappings().all():
            target = S.QUEUED if row["state"] == S.REJECTED else (row["resume_state"] or S.QUEUED)
            ledger.move_submission(
                conn, dict(row), target, owner=None, actor=actor, kind="retry",
                message="requeued by an operator", attempts=0, next_attempt_at=utcnow(),
                lease_owner=None, lease_expires_at=None, completed_at=None,
                crashes=min(row["crashes"], 1),  # a crash suspect still runs alone
            )  # fmt: skip
            counts["submissions"] += 1
        dquery = select(dl).where(dl.c.state.in_((DeliveryState.DEAD, DeliveryState.FAILED)))
        if documents:
            dquery = dquery.where(dl.c.document_id.in_(documents))
        if vendor:
            dquery = dquery.where(
                dl.c.submission_id.in_(select(sub.c.id).where(sub.c.profile == vendor))
            )
        if "dead" in states or "failed" in states:
            counts["deliveries"] = _requeue(
                conn, dl, dquery, actor, lambda row: "requeued by an operator"
            )
        if wanted := [s for s in ("dead", "refused") if s in states]:
            fquery = select(fb).where(fb.c.state.in_(wanted))
            if documents:
                fquery = fquery.where(fb.c.document_id.in_(documents))
            if vendor:
                fquery = fquery.where(fb.c.profile == vendor)
            counts["feedback"] = _requeue(
                conn,
                fb,
                fquery,
                actor,
                lambda row: (
                    f"feedback on {row['field'] or row['new_value']} requeued by an operator"
                ),
            )
    return counts


def not_retried(
    engine: Engine,
    documents: Sequence[int],
    *,
    states: Sequence[str] = ("dead", "failed"),
    vendor: str | None = None,
) -> dict[int, str]:
    """Why ``retry`` with the same arguments takes nothing of some of ``documents``: document
    id → the reason, in words an operator can act on (no such document, refused at intake,
    still in progress, done, in a state not asked for)."""
    sub, dl, fb = ledger.submissions, ledger.deliveries, ledger.feedback
    wanted_feedback = [s for s in ("dead", "refused") if s in states]
    reasons: dict[int, str] = {}
    with reader(engine).connect() as conn:
        for document_id in dict.fromkeys(documents):
            doc = conn.execute(
                select(ledger.documents).where(ledger.documents.c.id == document_id)
            ).first()
            if doc is None:
                reasons[document_id] = "no such document"
                continue
            subs = conn.execute(
                select(sub).where(sub.c.document_id == document_id).order_by(sub.c.id)
            ).all()
            if not subs:
                if doc.duplicate_of is not None:
                    reasons[document_id] = (
                        f"a duplicate of document {doc.duplicate_of}, never sent on its own: "
                        "retry that one"
                    )
                else:
                    reasons[document_id] = (
                        f"{doc.intake_state} at intake ({doc.error or 'no reason recorded'}): "
                        "nothing was sent to a vendor; fix the file or the routes and submit it "
                        "again"
                    )
                continue
            mine = [r for r in subs if vendor is None or r.profile == vendor]
            if not mine:
                profiles = ", ".join(sorted({r.profile for r in subs}))
                reasons[document_id] = f"not at vendor profile {vendor!r} (it went to {profiles})"
                continue
            takes = any(r.state in states for r in mine)
            if not takes and ("dead" in states or "failed" in states):
                takes = bool(
                    conn.execute(
                        select(dl.c.id).where(
                            dl.c.document_id == document_id,
                            dl.c.submission_id.in_([r.id for r in mine]),
                            dl.c.state.in_((DeliveryState.DEAD, DeliveryState.FAILED)),
                        )
                    ).first()
                )
            if not takes and wanted_feedback:
                takes = bool(
                    conn.execute(
                        select(fb.c.id).where(
                            fb.c.document_id == document_id,
                            fb.c.profile.in_([r.profile for r in mine]),
                            fb.c.state.in_(wanted_feedback),
                        )
                    ).first()
                )
            if not takes:
                done = [r for r in mine if r.state == S.DONE]  # a rejected primary is history
                reasons[document_id] = "; ".join(_why_not(r, states) for r in done or mine)
    return reasons


def _why_not(row: Any, states: Sequence[str]) -> str:
    if row.state == S.FAILED:
        return (
            f"{row.profile}: failed ({row.error or 'no reason recorded'}), tried again by itself "
            f"at {row.next_attempt_at:%Y-%m-%d %H:%M:%S}; --state failed retries it now"
        )
    if row.state in ACTIVE:
        return f"{row.profile}: {row.state}, still in progress (nothing to retry yet)"
    if row.state == S.DONE:
        return (
            f"{row.profile}: done, its exports delivered or under way (docrelay replay sends "
            "one again)"
        )
    return (
        f"{row.profile}: {row.state} ({row.error or 'no reason recorded'}); --state "
        f"{row.state} retries it (asked for: {', '.join(states)})"
    )


def _requeue(
    conn: ledger.Connection,
    table: Any,
    query: Any,
    actor: str,
    message: Callable[[Mapping[str, Any]], str],
) -> int:
    """Make the outbox rows (deliveries, feedback) ``query`` selects pending again, each with
    its event; returns how many."""
    rows = conn.execute(query).mappings().all()
    for row in rows:
        conn.execute(
            update(table)
            .where(table.c.id == row["id"])
            .values(state=DeliveryState.PENDING, attempts=0, next_attempt_at=utcnow())
        )
        ledger.event(
            conn, actor=actor, kind="retry", document_id=row["document_id"],
            submission_id=row["submission_id"],
            delivery_id=row["id"] if table is ledger.deliveries else None,
            from_state=row["state"], to_state=DeliveryState.PENDING, message=message(row),
        )  # fmt: skip
    return len(rows)


def history(engine: Engine, document_id: int) -> list[dict[str, Any]]:
    """The document's events, oldest first, each with its submission's ``role`` (None for the
    document's own), so a shadow's steps can be told from the primary's."""
    events, sub = ledger.events, ledger.submissions
    with reader(engine).connect() as conn:
        return [
            dict(row)
            for row in conn.execute(
                select(events, sub.c.role)
                .outerjoin(sub, sub.c.id == events.c.submission_id)
                .where(events.c.document_id == document_id)
                .order_by(events.c.at, events.c.id)
            ).mappings()
        ]


def purge_expired(engine: Engine, profile: str, vendor: Any, *, limit: int = 100) -> int:
    """Delete finished documents at the vendor once the profile's retention has passed.

    Only final submissions whose exports have all ended are purged; our store keeps everything.
    """
    from datetime import timedelta

    days = vendor.retention_days()
    if days is None:
        return 0
    sub, dl = ledger.submissions, ledger.deliveries
    cutoff = utcnow() - timedelta(days=days)
    with reader(engine).connect() as conn:
        due = conn.execute(
            select(sub.c.id, sub.c.document_id, sub.c.vendor_ref, sub.c.vendor_data)
            .where(
                sub.c.profile == profile,
                sub.c.state.in_(("done", "rejected", "dead")),
                sub.c.purged_at.is_(None),
                sub.c.vendor_ref.is_not(None),
                sub.c.completed_at < cutoff,
                ~sub.c.id.in_(
                    select(dl.c.submission_id).where(dl.c.state.in_(("pending", "failed")))
                ),
            )
            .limit(limit)
        ).all()
    purged = 0
    for row in due:
        vendor.purge(row.vendor_ref, row.vendor_data or {})
        with engine.begin() as conn:
            conn.execute(update(sub).where(sub.c.id == row.id).values(purged_at=utcnow()))
            ledger.event(
                conn,
                actor="retention",
                kind="purged",
                document_id=row.document_id,
                submission_id=row.id,
                message=f"deleted at {profile} after {days:g} days",
            )
        purged += 1
    return purged


def replay(
    engine: Engine, documents: Sequence[int], destination: str, *, actor: str = "cli"
) -> dict[int, str]:
    """Send documents to ``destination`` again, on purpose: the next version of each one's
    export there (the same idempotency key, so the destination updates what it made), with a
    ``replay`` event saying who asked. Returns, per document, what was queued or why not."""
    from daemon.pipeline.feedback import INSERT_DELIVERY, LATEST_OF_SUBMISSION
    from daemon.pipeline.submissions import delivery_keys, next_delivery_versions

    sub = ledger.submissions
    outcome: dict[int, str] = {}
    with engine.begin() as conn:
        for document_id in documents:
            done = conn.execute(
                select(sub.c.id)
                .where(
                    sub.c.document_id == document_id,
                    sub.c.state == S.DONE,
                    sub.c.role != "shadow",
                )
                .order_by(sub.c.completed_at.desc(), sub.c.id.desc())
                .limit(1)
            ).scalar()
            extraction_id = (
                conn.execute(LATEST_OF_SUBMISSION, {"submission_id": done}).scalar()
                if done is not None
                else None
            )
            if done is None or extraction_id is None:
                outcome[document_id] = "not replayed: it has no finished extraction"
                continue
            sha256 = conn.execute(
                select(ledger.documents.c.sha256).where(ledger.documents.c.id == document_id)
            ).scalar_one()
            key = delivery_keys(conn, document_id, sha256, [destination])[destination]
            version = next_delivery_versions(conn, [key])[key]
            delivery_id = conn.execute(
                INSERT_DELIVERY,
                {
                    "document_id": document_id,
                    "submission_id": done,
                    "extraction_id": extraction_id,
                    "destination": destination,
                    "idempotency_key": key,
                    "version": version,
                    "state": DeliveryState.PENDING,
                    "attempts": 0,
                    "next_attempt_at": utcnow(),
                    "created_at": utcnow(),
                },
            ).scalar_one()
            ledger.event(
                conn, actor=actor, kind="replay", document_id=document_id, submission_id=done,
                delivery_id=delivery_id, to_state=DeliveryState.PENDING,
                message=f"sent to {destination} again on purpose (docrelay replay) as version "
                f"{version}",
            )  # fmt: skip
            outcome[document_id] = f"queued for {destination} as version {version}"
    return outcome
