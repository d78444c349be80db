"""A document's way along its route's fallback chain: which profile reads it next, and the move.

Every trigger — the vendor rejected the document, gave up on it, missed the route's deadline,
is out (circuit open or paused), answered with too little confidence, or is over its budget —
ends the current submission and hands the document on with ``take``, in the transaction that
ends it, so a crash leaves either both or neither. The chain is stored with each submission
(``fallback`` and ``later_fallbacks``), decided at intake like the rest of the route; which
triggers move a document on is read from the route as configured now (``fallback_on``).

A profile that already read the document as a shadow is not asked again: its submission is
promoted (role ``fallback``) and, when it is done, its result is exported as the primary's
would have been. A profile the document already went through is skipped.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from sqlalchemy import Connection, Engine, select, update

from connectors.base import CanonicalResult
from daemon.config import FALLBACK_TRIGGERS, Route
from daemon.pipeline import ledger
from daemon.pipeline.intake import Routed, queue_submission
from daemon.store.models import SubmissionState, utcnow

log = logging.getLogger(__name__)
S = SubmissionState
sub_t = ledger.submissions

FAILED_THERE = frozenset({S.REJECTED, S.DEAD})
"""A shadow that ended so cannot stand in: the chain goes past it."""


@dataclass(frozen=True, slots=True)
class Move:
    """Why a document moves on: the trigger (a ``fallback_on`` name, and the submission's
    ``error_class``) and what happened, in words for its history."""

    trigger: str
    detail: str
    label: str = ""
    """The ``docrelay_fallback_moves_total`` trigger label: finer than ``trigger`` for an
    outage (``circuit_open``, ``paused``)."""

    @property
    def metric_label(self) -> str:
        return self.label or self.trigger


@dataclass(frozen=True, slots=True)
class Next:
    """The profile a document moves on to, and the chain after it."""

    document_id: int
    profile: str
    rest: list[str]
    shadow_id: int | None = None
    """Its shadow submission of the document, when it read it already."""
    exports: list[str] = field(default_factory=list)
    """Destinations to wake after the commit (a promoted shadow that was done)."""


def chain(sub: Mapping[str, Any]) -> list[str]:
    """The profiles after this submission's, in order."""
    return [p for p in [sub["fallback"], *(sub.get("later_fallbacks") or [])] if p]


def moves_on(route: Route | None, trigger: str) -> bool:
    """Whether ``trigger`` moves documents of ``route`` on (a route renamed or removed by a
    reload: every trigger does, as by default)."""
    return trigger in (route.fallback_on if route is not None else FALLBACK_TRIGGERS)


def choose(
    conn: Connection,
    sub: Mapping[str, Any],
    profiles: Collection[str],
    *,
    avoid: Collection[str] = (),
) -> Next | None:
    """The first profile of the chain still configured (in ``profiles``) that has not had the
    document yet, preferring one not in ``avoid`` (profiles out now); None at the chain's end."""
    remaining = [p for p in chain(sub) if p in profiles]
    if not remaining or sub["role"] == "shadow":
        return None
    others = {
        row.profile: row
        for row in conn.execute(
            select(sub_t.c.id, sub_t.c.profile, sub_t.c.role, sub_t.c.state).where(
                sub_t.c.document_id == sub["document_id"], sub_t.c.id != sub["id"]
            )
        )
    }
    free = [
        p
        for p in remaining
        if p not in others or (others[p].role == "shadow" and others[p].state not in FAILED_THERE)
    ]
    if not free:
        return None
    pick = next((p for p in free if p not in avoid), free[0])
    there = others.get(pick)
    rest = [p for p in free if p != pick]
    return Next(sub["document_id"], pick, rest, there.id if there is not None else None)


def take(
    conn: Connection,
    sub: Mapping[str, Any],
    nxt: Next,
    move: Move,
    *,
    kinds: Mapping[str, str],
    actor: str,
) -> Next:
    """Hand the document of ``sub`` (ended by the caller, same transaction) to ``nxt``: a new
    submission there, or its shadow promoted. Returns ``nxt`` with the destinations to wake."""
    destinations = list(sub["destinations"] or [])
    if nxt.shadow_id is None:
        queue_submission(
            conn,
            sub["document_id"],
            Routed(
                profile=nxt.profile,
                vendor_kind=kinds[nxt.profile],
                destinations=destinations,
                fallbacks=nxt.rest,
                route=f"fallback of {sub['profile']} ({move.detail})",
            ),
            actor=actor,
            role="fallback",
        )
        return nxt
    conn.execute(
        update(sub_t)
        .where(sub_t.c.id == nxt.shadow_id, sub_t.c.role == "shadow")
        .values(
            role="fallback",
            destinations=destinations,
            fallback=nxt.rest[0] if nxt.rest else None,
            later_fallbacks=nxt.rest[1:] or None,
        )
    )  # the row stays locked to the end of the transaction: its own worker waits (promoted)
    shadow = conn.execute(
        select(sub_t.c.id, sub_t.c.state, sub_t.c.document_id).where(sub_t.c.id == nxt.shadow_id)
    ).one()
    ledger.event(
        conn, actor=actor, kind="promoted", document_id=sub["document_id"],
        submission_id=shadow.id,
        message=f"the shadow reading of {nxt.profile} counts now, as fallback of "
        f"{sub['profile']} ({move.detail})",
    )  # fmt: skip
    if shadow.state != S.DONE or not destinations:
        return nxt
    from daemon.pipeline.submissions import LATEST_EXTRACTION, queue_exports

    latest = conn.execute(LATEST_EXTRACTION, {"submission_id": shadow.id}).first()
    if latest is None:
        return nxt
    queue_exports(
        conn,
        {"id": shadow.id, "document_id": shadow.document_id, "destinations": destinations},
        sha256=_sha256(conn, shadow.document_id),
        extraction_id=latest.id,
        version=latest.version,
    )
    return dataclasses.replace(nxt, exports=destinations)


def promoted(conn: Connection, sub: dict[str, Any]) -> None:
    """A shadow about to finish: read its role and destinations again, locking the row, so a
    promotion committed meanwhile is seen and one waiting for the lock sees this finish."""
    row = conn.execute(
        select(sub_t.c.role, sub_t.c.destinations, sub_t.c.fallback, sub_t.c.later_fallbacks)
        .where(sub_t.c.id == sub["id"])
        .with_for_update()
    ).one()
    sub.update(row._asdict())


def _sha256(conn: Connection, document_id: int) -> str:
    docs = ledger.documents
    return conn.execute(select(docs.c.sha256).where(docs.c.id == document_id)).scalar_one()


def weak_result(result: CanonicalResult, route: Route) -> str | None:
    """What makes ``result`` too weak for ``route`` (a required field missing, a confidence
    under its threshold), in words; None when it passes."""
    present = {f.name: f for f in result.fields}
    missing = [name for name in route.required if name not in present]
    if missing:
        return f"low confidence: {', '.join(missing)} missing"
    low = []
    default = route.min_confidence.get("*")
    for name, value in present.items():
        threshold = route.min_confidence.get(name, default)
        if threshold is None or value.confidence is None:
            continue
        if value.confidence < threshold:
            low.append(f"{name} {value.confidence:.2f} < {threshold:.2f}")
    return f"low confidence: {', '.join(low)}" if low else None


# ---------------------------------------------------------------------- moves by the jobs

MOVABLE = tuple(
    sub_t.c[name]
    for name in (
        "id", "document_id", "state", "profile", "role", "destinations", "fallback",
        "later_fallbacks",
    )
)  # fmt: skip
"""The columns ``move_unleased`` needs of each row."""


def move_unleased(
    engine: Engine,
    rows: Iterable[Any],
    *,
    end_state: str,
    move: Callable[[Any], Move],
    profiles: Mapping[str, str],
    owner: str,
    avoid: Collection[str] = (),
) -> list[tuple[Next, Move]]:
    """Hand each of ``rows`` (submissions no worker holds, with the ``MOVABLE`` columns) on
    along its chain, ending it in ``end_state``. A row a worker claimed meanwhile is left to
    it. ``profiles``: profile → vendor kind. Returns the moves made."""
    done: list[tuple[Next, Move]] = []
    for row in rows:
        sub = row._asdict()
        why = move(row)
        now = utcnow()
        with engine.begin() as conn:
            taken = conn.execute(
                update(sub_t)
                .where(sub_t.c.id == sub["id"], sub_t.c.lease_owner.is_(None))
                .where(sub_t.c.state == sub["state"])
                .values(lease_owner=owner, lease_expires_at=now + timedelta(seconds=60))
            ).rowcount
            if taken != 1:
                continue  # a worker claimed it meanwhile: the vendor may have it now
            nxt = choose(conn, sub, profiles, avoid=avoid)
            if nxt is None:
                conn.execute(
                    update(sub_t)
                    .where(sub_t.c.id == sub["id"])
                    .values(lease_owner=None, lease_expires_at=None)
                )
                continue
            reason = f"moved to fallback {nxt.profile}: {why.detail}"
            ledger.move_submission(
                conn, sub, end_state, owner=owner, actor=f"{why.trigger}:{owner}",
                message=reason, kind="moved", error=reason, error_class=why.trigger,
                completed_at=now, lease_owner=None, lease_expires_at=None, next_attempt_at=None,
            )  # fmt: skip
            nxt = take(conn, sub, nxt, why, kinds=profiles, actor=f"{why.trigger}:{owner}")
        done.append((nxt, why))
    return done


OVERDUE_STATES = (S.QUEUED, S.UPLOADING, S.PROCESSING, S.FETCHED, S.NORMALIZED, S.FAILED)
"""Not done, and not waiting for a person's review (``review_timeout`` times that)."""


def move_overdue(
    engine: Engine,
    *,
    route: str,
    deadline: float,
    profiles: Mapping[str, str],
    owner: str,
    avoid: Collection[str] = (),
    limit: int = 100,
) -> list[tuple[Next, Move]]:
    """Move the documents of ``route`` whose current submission was queued more than
    ``deadline`` seconds ago and is not done on along their chain; the late vendor's answer,
    should it come, is ignored (the submission ends `dead`)."""
    docs = ledger.documents
    now = utcnow()
    cutoff = now - timedelta(seconds=deadline)
    with engine.connect() as conn:
        rows = conn.execute(
            select(*MOVABLE, sub_t.c.created_at)
            .join(docs, docs.c.id == sub_t.c.document_id)
            .where(
                docs.c.route == route,
                sub_t.c.role != "shadow",
                sub_t.c.fallback.is_not(None),
                sub_t.c.lease_owner.is_(None),
                sub_t.c.state.in_(OVERDUE_STATES),
                sub_t.c.created_at < cutoff,
            )
            .order_by(sub_t.c.id)
            .limit(limit)
        ).all()  # fmt: skip

    def late(row: Any) -> Move:
        waited = (utcnow() - row.created_at).total_seconds()
        return Move("deadline", overdue(row.profile, waited, deadline))

    moves = move_unleased(
        engine, rows, end_state=S.DEAD, move=late, profiles=profiles, owner=owner, avoid=avoid
    )
    if moves:
        log.warning(
            "moved %d document(s) of route %s on along its fallback chain: past the deadline "
            "of %g s", len(moves), route, deadline,
        )  # fmt: skip
    return moves


def overdue(profile: str, waited: float, deadline: float) -> str:
    return (
        f"deadline: {profile} not done {waited:.0f} s after the document was queued there "
        f"(deadline {deadline:g} s)"
    )
