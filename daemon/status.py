"""What `docrelay status` and `/status` report, read from the store (and,
for `docrelay status`, what the running daemon says of itself)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

import httpx
from sqlalchemy import Engine, func, or_, select

from daemon.config import Config
from daemon.pipeline import budgets, ledger, processes
from daemon.pipeline.states import ACTIVE
from daemon.store.engine import reader, store_identity
from daemon.store.models import (
    CircuitBreaker,
    CorrectionRequest,
    CorrectionRequestState,
    DeliveryState,
    Document,
    FeedbackState,
    ProfileHealth,
    SubmissionState,
    utcnow,
)

documents = Document.__table__
ct = CorrectionRequest.__table__


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
        outcomes = [
            {"destination": r.destination, "outcome": r.outcome, "count": r.n}
            for r in conn.execute(
                select(dl.c.destination, dl.c.outcome, func.count().label("n"))
                .where(dl.c.outcome.is_not(None))
                .group_by(dl.c.destination, dl.c.outcome)
                .order_by(dl.c.destination, dl.c.outcome)
            )
        ]
        delivery_problems = [
            {
                "document_id": r.document_id,
                "destination": r.destination,
                "version": r.version,
                "state": r.state if r.state == DeliveryState.DEAD else r.outcome,
                "reason": r.error if r.state == DeliveryState.DEAD else r.outcome_reason,
                "at": _iso(r.outcome_at or r.delivered_at or r.created_at),
            }
            for r in conn.execute(
                select(dl)
                .where(or_(dl.c.state == DeliveryState.DEAD, dl.c.outcome == "rejected"))
                .order_by(dl.c.id.desc())
                .limit(max(errors, 5))
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
        # Documents refused before any vendor saw them (rejected or unrouted at intake) are
        # errors too; they have no submission, so they were missing here before.
        intake_errors = [
            {
                "submission_id": None,
                "document_id": r.id,
                "vendor": None,
                "state": r.intake_state,
                "error": r.error,
                "at": r.received_at,
            }
            for r in conn.execute(
                select(documents.c.id, documents.c.intake_state, documents.c.error,
                       documents.c.received_at)
                .where(documents.c.intake_state.in_(("rejected", "unrouted")),
                       documents.c.error.is_not(None))
                .order_by(documents.c.received_at.desc(), documents.c.id.desc())
                .limit(errors)
            )
        ]  # fmt: skip
        last_errors = [
            {
                "submission_id": r.id,
                "document_id": r.document_id,
                "vendor": r.profile,
                "state": r.state,
                "error": r.error,
                "at": r.updated_at,
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
        merged = sorted([*last_errors, *intake_errors], key=lambda e: e["at"], reverse=True)
        last_errors = merged[:errors]
        for item in last_errors:
            item["at"] = _iso(item["at"])
        health = [
            {"name": r.name, "state": r.state, "reason": r.reason, "since": _iso(r.since)}
            for r in conn.execute(select(ProfileHealth.__table__))
        ]
        cb = CircuitBreaker.__table__
        breakers = [
            {"vendor": r.profile, "state": r.state, "failures": r.failures,
             "opened_at": _iso(r.opened_at), "retry_at": _iso(r.retry_at)}
            for r in conn.execute(select(cb).order_by(cb.c.profile))
        ]  # fmt: skip
        budget = [
            {"vendor": u.profile, "limit": u.name, "used": u.used, "of": u.limit,
             "exhausted_at": _iso(u.exhausted_at) if u.limit is not None else None}
            for u in budgets.current_usage(conn)
        ]  # fmt: skip
        members = [
            {"id": m.id, "host": m.host, "pid": m.pid, "version": m.version, "state": m.state,
             "started_at": _iso(m.started_at), "heartbeat_at": _iso(m.heartbeat_at),
             "heartbeat_age_seconds": round((utcnow() - m.heartbeat_at).total_seconds(), 1),
             "holds": list(m.holds), "leased": m.leased}
            for m in processes.members(conn)
        ]  # fmt: skip
        fb = ledger.feedback
        feedback = [
            {"vendor": r.profile, "kind": r.kind, "state": r.state, "count": r.n}
            for r in conn.execute(
                select(fb.c.profile, fb.c.kind, fb.c.state, func.count().label("n"))
                .group_by(fb.c.profile, fb.c.kind, fb.c.state)
                .order_by(fb.c.profile, fb.c.kind, fb.c.state)
            )
        ]
        refused = [
            {
                "document_id": r.document_id,
                "vendor": r.profile,
                "field": r.field or r.new_value,
                "state": r.state,
                "reason": r.error,
                "at": _iso(r.created_at),
            }
            for r in conn.execute(
                select(fb)
                .where(fb.c.state.in_((FeedbackState.REFUSED, FeedbackState.DEAD)))
                .order_by(fb.c.id.desc())
                .limit(max(errors, 5))
            )
        ]
        in_review = [
            {
                "document_id": r.document_id,
                "vendor": r.profile,
                "reason": r.review_reason,
                "since": _iso(r.review_since),
                "deadline": _iso(r.deadline_at),
            }
            for r in conn.execute(
                select(sub)
                .where(sub.c.state == SubmissionState.REVIEW)
                .order_by(sub.c.review_since)
                .limit(max(errors, 5))
            )
        ]
        corrections = {
            r.state: r.n
            for r in conn.execute(select(ct.c.state, func.count().label("n")).group_by(ct.c.state))
        }
        corrections_refused = [
            {"row": r.id, "document_id": r.document_id, "field": r.field, "reason": r.reason,
             "at": _iso(r.applied_at)}
            for r in conn.execute(
                select(ct)
                .where(ct.c.state == CorrectionRequestState.REFUSED)
                .order_by(ct.c.id.desc())
                .limit(max(errors, 5))
            )
        ]  # fmt: skip
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
        "outcomes": outcomes,
        "delivery_problems": delivery_problems,
        "oldest_waiting": waiting,
        "last_errors": last_errors,
        "connectors": health,
        "breakers": breakers,
        "budgets": budget,
        "processes": members,
        "feedback": feedback,
        "feedback_problems": refused,
        "in_review": in_review,
        "corrections": corrections,
        "corrections_refused": corrections_refused,
    }


def live(config: Config, timeout: float = 2.0) -> dict[str, Any]:
    """What the running daemon says of itself (its /healthz), or why it cannot be asked."""
    web = config.core.web
    if not web.enabled:
        return {"running": None, "reason": "the web app is off: no live state to ask for"}
    host, _, port = web.listen.rpartition(":")
    if port == "0":
        return {"running": None, "reason": "web.listen has port 0: no fixed address to ask"}
    wildcard = {"0.0.0.0": "127.0.0.1", "[::]": "[::1]", "": "127.0.0.1"}  # noqa: S104
    host = wildcard.get(host, host)  # listening everywhere: ask on loopback
    url = f"http://{host}:{port}/healthz"
    try:
        response = httpx.get(url, timeout=timeout)
    except httpx.HTTPError as exc:
        return {"running": False, "reason": f"nothing answers at {url} ({type(exc).__name__})"}
    try:
        body = response.json()
    except ValueError:
        return {"running": None, "reason": f"{url} answered {response.status_code}, not JSON"}
    instance = body.get("instance") if isinstance(body, dict) else None
    if not isinstance(instance, dict):
        return {
            "running": None,
            "url": url,
            "reason": f"something answers at {url} but does not say which docrelay it is "
            "(another program on the port, or an older docrelay)",
        }
    if instance.get("store") != store_identity(config.core.store.url):
        # Another docrelay on the port (a second configuration, a test instance): its counts
        # and health are not this store's, and this configuration's daemon cannot be there.
        return {
            "running": False,
            "url": url,
            "other": instance,
            "reason": f"another docrelay (pid {instance.get('pid')}) answers at {url}, on a "
            f"different store than {config.path}'s",
        }
    return {"running": True, "url": url, **body}


def live_line(state: Mapping[str, Any]) -> str:
    """One line (more when something needs a person) for the terminal."""
    running = state.get("running")
    if running is not True:
        word = "not running" if running is False else "unknown"
        return f"daemon: {word}: {state.get('reason')}"
    instance = state.get("instance") or {}
    lines = [
        f"daemon: running, {state.get('status', '?')}",
        f"  this store's daemon: pid {instance.get('pid')}, instance {instance.get('id')}",
    ]
    storage = state.get("storage") or {}
    if storage.get("state", "ok") != "ok":
        lines.append(f"  storage: {storage['state']}: {storage.get('reason')}")
    for name, reason in (state.get("paused_vendors") or {}).items():
        lines.append(f"  vendor {name}: paused: {reason}")
    for name, source in (state.get("sources") or {}).items():
        if isinstance(source, Mapping) and source.get("state") not in (None, "ok", "idle"):
            lines.append(f"  source {name}: {source.get('state')}: {source.get('reason')}")
    return "\n".join(lines)


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None
