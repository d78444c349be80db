"""Every write that moves work forward, each with its audit event, on SQLAlchemy Core.

A move is guarded by the state it expects and by the lease owner, so a worker whose lease ran
out (and whose item someone else took over) changes nothing: the UPDATE matches no row.
"""

from __future__ import annotations

import functools
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    Connection,
    Engine,
    and_,
    bindparam,
    case,
    func,
    insert,
    or_,
    select,
    union,
    update,
)

from daemon.pipeline.states import ACTIVE, check
from daemon.store.models import (
    Delivery,
    Document,
    Event,
    Feedback,
    ProfileHealth,
    SourceLease,
    Submission,
    SubmissionKey,
    SubmissionState,
    utcnow,
)

submissions = Submission.__table__
deliveries = Delivery.__table__
events = Event.__table__
feedback = Feedback.__table__
LEASED = (submissions, deliveries, feedback)
"""Tables whose rows a worker leases."""
source_leases = SourceLease.__table__
health = ProfileHealth.__table__
submission_keys = SubmissionKey.__table__
documents = Document.__table__

WORK_COLUMNS = (
    *(c.label(f"s_{c.name}") for c in submissions.c),
    *(c.label(f"d_{c.name}") for c in documents.c),
)
"""A submission and its document in one row (``s_`` and ``d_`` columns): what a worker
needs to run a step."""


# Hot statements are built once: constructing SQLAlchemy expressions per call costs more than
# running them. Their SET columns come from the parameters given at execution.
INSERT_EVENT = insert(events)
MOVE_BY_OWNER = update(submissions).where(
    submissions.c.id == bindparam("w_id"),
    submissions.c.state == bindparam("w_state"),
    submissions.c.lease_owner == bindparam("w_owner"),
)
MOVE_ANY_OWNER = update(submissions).where(
    submissions.c.id == bindparam("w_id"), submissions.c.state == bindparam("w_state")
)


@functools.cache
def _end_by_owner(table: Any) -> Any:
    return update(table).where(
        table.c.id == bindparam("w_id"), table.c.lease_owner == bindparam("w_owner")
    )


def end_lease(
    conn: Connection, table: Any, row_id: int, owner: str, state: str, **values: Any
) -> bool:
    """Set a leased outbox row's state (and ``values``) and give its lease back; False when
    the row is no longer this owner's. The statement is built once per table; its SET
    columns come from the parameters."""
    result = conn.execute(
        _end_by_owner(table),
        {
            "state": state,
            "lease_owner": None,
            "lease_expires_at": None,
            **values,
            "w_id": row_id,
            "w_owner": owner,
        },
    )
    return result.rowcount == 1


MARK_IN_DOUBT = (
    update(deliveries)
    .where(deliveries.c.id == bindparam("w_id"), deliveries.c.lease_owner == bindparam("w_owner"))
    .values(in_doubt_at=bindparam("at"))
)


def mark_in_doubt(conn: Connection, delivery_id: int, owner: str, at: datetime) -> bool:
    """Record that a push of this leased delivery is about to be made; False when the row is
    no longer this owner's."""
    done = conn.execute(MARK_IN_DOUBT, {"w_id": delivery_id, "w_owner": owner, "at": at})
    return done.rowcount == 1


class LeaseLost(RuntimeError):
    """The row is no longer ours (lease expired and taken over, or state changed meanwhile)."""


WRITES = "docrelay_writes"
"""``Connection.info`` key of the writes a ``begin`` block holds back until its end."""


@dataclass
class _Writes:
    events: list[dict[str, Any]] = field(default_factory=list)
    moves: dict[int, tuple[Any, dict[str, Any]]] = field(default_factory=dict)
    """Submission id → (statement, parameters): its moves so far, as one UPDATE."""


@contextmanager
def begin(engine: Engine) -> Iterator[Connection]:
    """A write transaction whose submission moves and events are written at its end: the
    moves of one submission as one UPDATE, guarded by what the first expected (state, lease
    owner), and all events in one executemany.

    On SQLite every statement of a write transaction is made under the store's one write lock,
    while the holder also waits for the GIL each time the driver lets it go: a step that
    moves a submission three times (fetched, normalized, done) holds the lock for four
    statements fewer this way. Only for blocks that change the rows they move through
    ``move_submission`` alone (a plain UPDATE of the row would be overwritten by the held-back
    move); a lost lease then shows at the end, and the whole block is rolled back.
    """
    with engine.begin() as conn:
        writes = conn.info[WRITES] = _Writes()
        try:
            yield conn
            for sub_id, (statement, params) in writes.moves.items():
                if conn.execute(statement, params).rowcount != 1:
                    raise LeaseLost(f"submission {sub_id} moved or lease lost")
            if writes.events:
                conn.execute(INSERT_EVENT, writes.events)
        finally:
            del conn.info[WRITES]


def event(
    conn: Connection,
    *,
    actor: str,
    kind: str,
    document_id: int | None = None,
    submission_id: int | None = None,
    delivery_id: int | None = None,
    from_state: str | None = None,
    to_state: str | None = None,
    message: str | None = None,
    at: datetime | None = None,
) -> None:
    """Write one audit event (at the end of the transaction inside a ``begin`` block)."""
    row = {
        "at": at or utcnow(),
        "actor": actor,
        "kind": kind,
        "document_id": document_id,
        "submission_id": submission_id,
        "delivery_id": delivery_id,
        "from_state": from_state,
        "to_state": to_state,
        "message": message[:4000] if message else None,
    }
    writes: _Writes | None = conn.info.get(WRITES)
    if writes is not None:
        writes.events.append(row)
    else:
        conn.execute(INSERT_EVENT, row)


def move_submission(
    conn: Connection,
    sub: dict[str, Any],
    to_state: str,
    *,
    owner: str | None,
    actor: str,
    message: str | None = None,
    kind: str = "transition",
    lease_seconds: float | None = None,
    **changes: Any,
) -> None:
    """Move one submission and write its event, in the caller's transaction.

    ``sub`` is the row as the caller last saw it (at least ``id``, ``document_id``, ``state``);
    it is updated in place so the caller can go on with the next step.
    """
    from_state = sub["state"]
    if from_state != to_state:
        check(from_state, to_state)
    now = utcnow()
    values: dict[str, Any] = {"state": to_state, "updated_at": now, **changes}
    if lease_seconds is not None:
        values["lease_expires_at"] = now + timedelta(seconds=lease_seconds)
    guard = {"w_id": sub["id"], "w_state": from_state}
    if owner is not None:
        guard["w_owner"] = owner
    statement = MOVE_BY_OWNER if owner is not None else MOVE_ANY_OWNER
    writes: _Writes | None = conn.info.get(WRITES)
    if writes is None:
        if conn.execute(statement, {**values, **guard}).rowcount != 1:
            raise LeaseLost(f"submission {sub['id']} moved or lease lost")
    elif (held := writes.moves.get(sub["id"])) is not None:
        held[1].update(values)  # the first move's guard stays: it is what the row holds now
    else:
        writes.moves[sub["id"]] = (statement, {**values, **guard})
    event(
        conn,
        actor=actor,
        kind=kind,
        document_id=sub["document_id"],
        submission_id=sub["id"],
        from_state=from_state,
        to_state=to_state,
        message=message,
        at=now,
    )
    sub.update(values)


IN_FLIGHT = (SubmissionState.UPLOADING, SubmissionState.PROCESSING)


IN_FLIGHT_COUNT = select(func.count()).where(
    submissions.c.profile == bindparam("profile"),
    or_(
        submissions.c.state.in_(IN_FLIGHT),
        and_(
            submissions.c.state == SubmissionState.FAILED,
            submissions.c.resume_state.in_(IN_FLIGHT),
        ),
    ),
)


def in_flight(conn: Connection, profile: str) -> int:
    """Documents sent to (or being sent to) the vendor and not finished there yet."""
    return conn.execute(IN_FLIGHT_COUNT, {"profile": profile}).scalar_one()


FOLLOW: frozenset[str] = frozenset(
    {
        SubmissionState.PROCESSING,
        SubmissionState.REVIEW,
        SubmissionState.FETCHED,
        SubmissionState.NORMALIZED,
    }
)
"""States of documents the vendor already has: what a webhook asks us to finish."""


def claimable_states(
    conn: Connection, profile: str, max_in_flight: int | None, only: frozenset[str] = ACTIVE
) -> frozenset[str]:
    """The states a claim may take now: no `queued` while the vendor has its fill."""
    return _claimable(conn, profile, max_in_flight, only)[0]


def _claimable(
    conn: Connection, profile: str, max_in_flight: int | None, only: frozenset[str]
) -> tuple[frozenset[str], int | None]:
    """The claimable states, and how many uploads may start now (None: no limit)."""
    states = ACTIVE & only
    if SubmissionState.QUEUED not in states or max_in_flight is None:
        return states, None
    room = max_in_flight - in_flight(conn, profile)
    return (states - {SubmissionState.QUEUED} if room <= 0 else states), room


def claim_submissions(
    conn: Connection,
    *,
    profile: str,
    owner: str,
    limit: int,
    lease_seconds: float,
    max_in_flight: int | None = None,
    fresh: set[int] | None = None,
    only: frozenset[str] = ACTIVE,
    rows: dict[int, dict[str, Any]] | None = None,
) -> list[int]:
    """Lease up to ``limit`` due submissions of one profile (SKIP LOCKED on PostgreSQL).

    A claimed ``queued`` submission moves to ``uploading`` in the same transaction: that move
    is what a worker does first anyway, and it must be committed before the upload starts.
    With ``max_in_flight``, no new upload starts while that many documents are at the vendor
    (a soft limit across processes: two may each start one at the edge). With ``rows``, each
    claimed submission's row as it is after the claim (``WORK_COLUMNS``) is put there by id,
    so the worker's first step needs no read of its own.
    """
    now = utcnow()
    expires = now + timedelta(seconds=lease_seconds)
    states, room = _claimable(conn, profile, max_in_flight, only)
    due = conn.execute(
        _due_submissions(limit, rows is not None),
        {"profile": profile, "states": sorted(states), "now": now},
    ).all()
    if room is not None:
        due = _within(due, room)
    if not due:
        return []
    ids = [row.s_id for row in due]
    conn.execute(LEASE_SUBMISSIONS, {"ids": ids, "owner": owner, "expires": expires, "now": now})
    queued = [row for row in due if row.s_state == SubmissionState.QUEUED]
    if rows is not None:
        for row in due:
            work = row._asdict()
            work.update(s_lease_owner=owner, s_lease_expires_at=expires)
            if row.s_state == SubmissionState.QUEUED:
                work.update(s_state=SubmissionState.UPLOADING, s_updated_at=now)
            rows[row.s_id] = work
    if fresh is not None:  # no upload of these can exist yet: tell the vendor it may skip
        fresh.update(row.s_id for row in queued)  # its look-up
    if queued:
        conn.execute(
            INSERT_EVENT,
            [
                {
                    "at": now,
                    "actor": f"worker:{owner}",
                    "kind": "transition",
                    "document_id": row.s_document_id,
                    "submission_id": row.s_id,
                    "from_state": SubmissionState.QUEUED,
                    "to_state": SubmissionState.UPLOADING,
                    "message": None,
                }
                for row in queued
            ],
        )
    return ids


def _within(rows: Sequence[Any], room: int) -> list[Any]:
    """The claimed rows, with no more new uploads than there is room for at the vendor."""
    kept, starting = [], 0
    for row in rows:
        if row.s_state == SubmissionState.QUEUED:
            if starting >= room:
                continue
            starting += 1
        kept.append(row)
    return kept


@functools.cache
def _due_submissions(limit: int, whole: bool) -> Any:
    """The claim query, built once per limit (building it costs more than running it):
    ``s_id``, ``s_state``, ``s_document_id``, or with ``whole`` every ``WORK_COLUMNS``."""
    now = bindparam("now")
    # Finish what the vendor has before starting new uploads: a poked or due poll goes first,
    # which keeps webhook latency low and frees in-flight slots sooner.
    starting = case((submissions.c.state == SubmissionState.QUEUED, 1), else_=0)
    columns = (
        WORK_COLUMNS
        if whole
        else (
            submissions.c.id.label("s_id"),
            submissions.c.state.label("s_state"),
            submissions.c.document_id.label("s_document_id"),
        )
    )
    return (
        select(*columns)
        .join_from(submissions, documents, documents.c.id == submissions.c.document_id)
        .where(
            submissions.c.profile == bindparam("profile"),
            submissions.c.state.in_(bindparam("states", expanding=True)),
            or_(submissions.c.next_attempt_at.is_(None), submissions.c.next_attempt_at <= now),
            or_(submissions.c.lease_expires_at.is_(None), submissions.c.lease_expires_at < now),
        )
        .order_by(starting, submissions.c.next_attempt_at.nulls_first(), submissions.c.id)
        .limit(limit)
        .with_for_update(skip_locked=True, of=submissions)
    )


WAITING = (SubmissionState.PROCESSING, SubmissionState.REVIEW, SubmissionState.FAILED)
"""States of submissions a webhook can hurry along (made due now)."""
WAITING_BY_REF = select(submissions.c.id).where(
    submissions.c.profile == bindparam("profile"),
    submissions.c.vendor_ref.in_(bindparam("refs", expanding=True)),
    submissions.c.state.in_(WAITING),
)
POKE = (
    update(submissions)
    .where(submissions.c.id.in_(bindparam("ids", expanding=True)), submissions.c.state.in_(WAITING))
    .values(next_attempt_at=bindparam("now"))
)


def waiting_for(conn: Connection, profile: str, vendor_refs: Sequence[str]) -> list[int]:
    """The submissions a webhook about these references could move on (read-only)."""
    params = {"profile": profile, "refs": list(vendor_refs)}
    return list(conn.execute(WAITING_BY_REF, params).scalars())


def hinted(
    conn: Connection,
    profile: str,
    *,
    refs: Iterable[str] = (),
    document_ids: Iterable[int] = (),
    keys: Mapping[str, Iterable[str]] | None = None,
    states: Sequence[str] = WAITING,
) -> list[Any]:
    """Submissions of a profile in ``states`` that webhooks named by vendor reference, by our
    document id or by one of the vendor's other names (``submission_keys``): rows of
    (id, state, document_id). Read-only."""
    named: list[Any] = []
    if refs := list(refs):
        named.append(submissions.c.vendor_ref.in_(refs))
    if document_ids := list(document_ids):
        named.append(submissions.c.document_id.in_(document_ids))
    for key, values in (keys or {}).items():
        named.append(
            submissions.c.id.in_(
                select(submission_keys.c.submission_id).where(
                    submission_keys.c.profile == profile,
                    submission_keys.c.key == key,
                    submission_keys.c.value.in_(list(values)),
                )
            )
        )
    if not named:
        return []
    query = select(submissions.c.id, submissions.c.state, submissions.c.document_id).where(
        submissions.c.profile == profile,
        submissions.c.state.in_(states),
        or_(*named),
        # A result too weak for its route handed the document on (``done``, unexported):
        # a change the vendor makes to it later no longer counts.
        or_(submissions.c.error_class.is_(None), submissions.c.error_class != "low_confidence"),
    )
    return list(conn.execute(query))


def reopen(
    conn: Connection, sub: dict[str, Any], *, processing_timeout: float, actor: str = "webhook"
) -> int:
    """A finished submission whose result the vendor says changed: follow it again (poll,
    fetch, compare); returns 1 when it was re-opened, 0 when it had moved meanwhile."""
    now = utcnow()
    try:
        move_submission(
            conn, sub, SubmissionState.PROCESSING, owner=None, actor=actor,
            message="the vendor says its result changed: fetching it again",
            reopened_at=now, polls=0, next_attempt_at=now, error=None, error_class=None,
            deadline_at=now + timedelta(seconds=processing_timeout),
        )  # fmt: skip
    except LeaseLost:
        return 0
    return 1


def poke(conn: Connection, ids: Sequence[int]) -> int:
    """Make waiting submissions due now; returns how many still were waiting."""
    return conn.execute(POKE, {"ids": list(ids), "now": utcnow()}).rowcount


KNOWN_KEY = select(submission_keys.c.submission_id).where(
    submission_keys.c.profile == bindparam("profile"),
    submission_keys.c.key == bindparam("key"),
    submission_keys.c.value == bindparam("value"),
)

INSERT_KEY = insert(submission_keys)


def add_keys(conn: Connection, profile: str, submission_id: int, keys: Mapping[str, str]) -> None:
    """Record a vendor's other names for a submission (each name once).

    One look-up of the primary key per name (a vendor gives one or two): by key alone it
    read every submission's name of that kind, a cost per document that grew with the
    store, under the write lock."""
    new = [
        {"profile": profile, "key": k, "value": str(v), "submission_id": submission_id}
        for k, v in keys.items()
    ]
    new = [row for row in new if conn.execute(KNOWN_KEY, row).first() is None]
    if new:
        conn.execute(INSERT_KEY, new)


_starting = submissions.c.state == SubmissionState.QUEUED
LEASE_SUBMISSIONS = (
    update(submissions)
    .where(submissions.c.id.in_(bindparam("ids", expanding=True)))
    .values(
        lease_owner=bindparam("owner"),
        lease_expires_at=bindparam("expires"),
        state=case((_starting, SubmissionState.UPLOADING), else_=submissions.c.state),
        updated_at=case(
            (_starting, bindparam("now", type_=submissions.c.updated_at.type)),
            else_=submissions.c.updated_at,
        ),
    )
)
"""The claim's one write: leased to the claimer, and a ``queued`` one moved to ``uploading``."""


def claim_due(
    conn: Connection,
    table: Any,
    column: Any,
    key: str,
    active: Sequence[str],
    *,
    owner: str,
    limit: int,
    lease_seconds: float,
    order_by: Sequence[Any],
) -> list[int]:
    """Lease up to ``limit`` due, unleased rows of ``table`` whose ``column`` is ``key``
    (SKIP LOCKED on PostgreSQL): the claim of the outbox pools (deliveries, feedback)."""
    now = utcnow()
    due = (
        select(table.c.id)
        .where(
            column == key,
            table.c.state.in_(active),
            or_(table.c.next_attempt_at.is_(None), table.c.next_attempt_at <= now),
            or_(table.c.lease_expires_at.is_(None), table.c.lease_expires_at < now),
        )
        .order_by(*order_by)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    return lease_due(conn, table, due, owner, now, lease_seconds)


def lease_due(
    conn: Connection, table: Any, due: Any, owner: str, now: datetime, lease_seconds: float
) -> list[int]:
    """Lease the rows whose ids the ``due`` query selects (locked SKIP LOCKED on PostgreSQL)."""
    ids = [row[0] for row in conn.execute(due)]
    if not ids:
        return []
    conn.execute(
        update(table)
        .where(table.c.id.in_(ids))
        .values(lease_owner=owner, lease_expires_at=now + timedelta(seconds=lease_seconds))
    )
    return ids


def next_due(
    conn: Connection, table: Any, column: Any, key: str, active: Iterable[str]
) -> datetime | None:
    """When the earliest waiting item of a profile/destination becomes claimable (None: never)."""
    row = conn.execute(
        _next_due_query(table, column.name), {"key": key, "active": sorted(active)}
    ).one()
    if row[0]:
        return utcnow()
    candidates = [value for value in row[1:] if value is not None]
    return min(candidates) if candidates else None


@functools.cache
def _next_due_query(table: Any, column: str) -> Any:
    free = table.c.lease_owner.is_(None)
    return select(
        func.count().filter(free, table.c.next_attempt_at.is_(None)),
        func.min(table.c.next_attempt_at).filter(free),
        func.min(table.c.lease_expires_at).filter(~free),
    ).where(
        table.c[column] == bindparam("key"), table.c.state.in_(bindparam("active", expanding=True))
    )


def release_leases(
    conn: Connection,
    owner: str,
    *,
    keep: Mapping[Any, Collection[int]] | None = None,
    sources: bool = True,
) -> int:
    """Give back everything this worker holds (clean shutdown), except the rows in ``keep``
    (table → ids a thread still works on, at a reload) and, with ``sources=False``, the
    sources' leases (a mailbox that keeps running over a reload keeps its own)."""
    released = 0
    for table in LEASED:
        held = list((keep or {}).get(table, ()))
        query = update(table).where(table.c.lease_owner == owner)
        if held:
            query = query.where(table.c.id.not_in(held))
        result = conn.execute(query.values(lease_owner=None, lease_expires_at=None))
        released += result.rowcount
    if sources:
        conn.execute(source_leases.delete().where(source_leases.c.owner == owner))
    return released


def blame_crash(conn: Connection, rows: Sequence[Any], *, actor: str, why: str) -> int:
    """Count a crash against submissions a dead worker held (``rows`` of id, document_id,
    state, crashes, lease_owner): the lease, taken by the claim before the step and given back
    when it ends, says the step began and never finished. A first offence makes the row a
    suspect (``crashes`` = 1), which then runs alone; a suspect's own runs are counted as they
    start (``SubmissionRunner``), so one that only waited its turn beside a poison pill is not
    blamed again. Returns how many were blamed."""
    first = [r for r in rows if not r.crashes]
    if not first:
        return 0
    conn.execute(
        update(submissions)
        .where(submissions.c.id.in_([r.id for r in first]), submissions.c.crashes == 0)
        .values(crashes=1)
    )
    conn.execute(
        INSERT_EVENT,
        [
            {
                "at": utcnow(),
                "actor": actor,
                "kind": "crashed",
                "document_id": r.document_id,
                "submission_id": r.id,
                "from_state": r.state,
                "to_state": r.state,
                "message": f"{why} while {r.lease_owner} had it in hand ({r.state}); "
                "it runs alone from now on, and goes dead if it keeps crashing the worker",
            }
            for r in first
        ],
    )
    return len(first)


CRASH_SUSPECT_COLUMNS = (
    submissions.c.id,
    submissions.c.document_id,
    submissions.c.state,
    submissions.c.crashes,
    submissions.c.lease_owner,
)


def release_dead_owners(conn: Connection, owners: Sequence[str], *, actor: str = "recovery") -> int:
    """Free leases held by processes known to be gone (they crashed, or their heartbeat
    stopped), counting the crash against the submissions they held (``blame_crash``)."""
    if not owners:
        return 0
    held = conn.execute(
        select(*CRASH_SUSPECT_COLUMNS).where(submissions.c.lease_owner.in_(owners))
    ).all()
    blame_crash(conn, held, actor=actor, why="the worker process died")
    released = 0
    for table in LEASED:
        result = conn.execute(
            update(table)
            .where(and_(table.c.lease_owner.in_(owners)))
            .values(lease_owner=None, lease_expires_at=None)
        )
        released += result.rowcount
    released += conn.execute(
        source_leases.delete().where(source_leases.c.owner.in_(owners))
    ).rowcount
    return released


def set_health(conn: Connection, name: str, state: str, reason: str | None = None) -> None:
    """Record a connector's health (``ok`` clears it): what an operator must see, such as
    refused credentials, kept across restarts."""
    conn.execute(health.delete().where(health.c.name == name))
    if state != "ok":
        conn.execute(health.insert().values(name=name, state=state, reason=reason, since=utcnow()))


def lease_owners(conn: Connection) -> list[str]:
    """Every process that holds some lease now."""
    queries = [select(t.c.lease_owner).where(t.c.lease_owner.is_not(None)) for t in LEASED]
    queries.append(select(source_leases.c.owner))
    return [row[0] for row in conn.execute(union(*queries))]


WAITING_TIMES = (
    *(column for table in LEASED for column in (table.c.next_attempt_at, table.c.lease_expires_at)),
    source_leases.c.expires_at,
)
"""The wall-clock times work waits for."""


def move_waiting_back(conn: Connection, seconds: float) -> int:
    """After the wall clock was set back by ``seconds``: due times and lease ends still ahead
    move back by as much, so no retry, poll or dead worker's lease waits the jump out.
    Returns how many times were moved."""
    now = utcnow()
    shift = timedelta(seconds=seconds)
    moved = 0
    for column in WAITING_TIMES:
        table = column.table
        key = table.primary_key.columns.values()[0]
        rows = conn.execute(select(key, column).where(column > now)).all()
        if rows:
            conn.execute(
                update(table).where(key == bindparam("w_key")),
                [{"w_key": row[0], column.name: row[1] - shift} for row in rows],
            )
            moved += len(rows)
    return moved


def expire_leases(conn: Connection, *, actor: str = "scheduler") -> int:
    """Free leases that ran out (their worker died or hung) and say so in the audit trail."""
    now = utcnow()
    expired = 0
    for table, key in ((submissions, "submission_id"), (deliveries, "delivery_id")):
        columns = (
            CRASH_SUSPECT_COLUMNS
            if table is submissions
            else (table.c.id, table.c.document_id, table.c.state, table.c.lease_owner)
        )
        rows = conn.execute(
            select(*columns).where(table.c.lease_owner.is_not(None), table.c.lease_expires_at < now)
        ).all()
        if not rows:
            continue
        if table is submissions:  # renewed while in hand: a lease runs out when its worker died
            blame_crash(conn, rows, actor=actor, why="the lease ran out")
        conn.execute(
            update(table)
            .where(table.c.id.in_([r.id for r in rows]), table.c.lease_expires_at < now)
            .values(lease_owner=None, lease_expires_at=None)
        )
        conn.execute(
            INSERT_EVENT,
            [
                {
                    "at": now,
                    "actor": actor,
                    "kind": "lease_expired",
                    "document_id": r.document_id,
                    "submission_id": r.id if key == "submission_id" else None,
                    "delivery_id": r.id if key == "delivery_id" else None,
                    "from_state": r.state,
                    "to_state": r.state,
                    "message": f"lease of {r.lease_owner} ran out; the work is free again",
                }
                for r in rows
            ],
        )
        expired += len(rows)
    return expired
