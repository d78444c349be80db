"""What `docrelay status`, the health endpoint and /metrics report, read from the store."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Engine, func, select

from daemon.pipeline import ledger
from daemon.pipeline.states import ACTIVE
from daemon.store.engine import reader
from daemon.store.models import Document, ProfileHealth, utcnow

documents = Document.__table__


def summary(engine: Engine, *, errors: int = 5) -> dict[str, Any]:
    sub, dl = ledger.submissions, ledger.deliveries
    with reader(engine).connect() as conn:
        submissions = [
            {"vendor": r.profile, "state": r.state, "count": r.n}
            for r in conn.execute(
                select(sub.c.profile, sub.c.state, func.count().label("n"))
                .group_by(sub.c.profile, sub.c.state)
                .order_by(sub.c.profile, sub.c.state)
            )
        ]
        deliveries = [
            {"destination": r.destination, "state": r.state, "count": r.n}
            for r in conn.execute(
                select(dl.c.destination, dl.c.state, func.count().label("n"))
                .group_by(dl.c.destination, dl.c.state)
                .order_by(dl.c.destination, dl.c.state)
            )
        ]
        intake = {
            r.intake_state: r.n
            for r in conn.execute(
                select(documents.c.intake_state, func.count().label("n")).group_by(
                    documents.c.intake_state
                )
            )
        }
        oldest = conn.execute(
            select(sub.c.id, sub.c.document_id, sub.c.profile, sub.c.state, sub.c.created_at)
            .where(sub.c.state.in_(ACTIVE))
            .order_by(sub.c.created_at)
            .limit(1)
        ).first()
        last_errors = [
            {
                "submission_id": r.id,
                "document_id": r.document_id,
                "vendor": r.profile,
                "state": r.state,
                "error": r.error,
                "at": _iso(r.updated_at),
            }
            for r in conn.execute(
                select(
                    sub.c.id,
                    sub.c.document_id,
                    sub.c.profile,
                    sub.c.state,
                    sub.c.error,
                    sub.c.updated_at,
                )
                .where(sub.c.error.is_not(None))
                .order_by(sub.c.updated_at.desc())
                .limit(errors)
            )
        ]
        health = [
            {"name": r.name, "state": r.state, "reason": r.reason, "since": _iso(r.since)}
            for r in conn.execute(select(ProfileHealth.__table__))
        ]
    waiting = None
    if oldest is not None:
        waiting = {
            "submission_id": oldest.id,
            "document_id": oldest.document_id,
            "vendor": oldest.profile,
            "state": oldest.state,
            "since": _iso(oldest.created_at),
            "age_seconds": round((utcnow() - oldest.created_at).total_seconds(), 1),
        }
    return {
        "documents": intake,
        "submissions": submissions,
        "deliveries": deliveries,
        "oldest_waiting": waiting,
        "last_errors": last_errors,
        "connectors": health,
    }


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None
