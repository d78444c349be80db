"""The processes sharing one store: a heartbeat row each, and what happens when one goes quiet.

Several ``docrelay run`` on one PostgreSQL (on one host or many, in containers that share a
host name) must know which of them are alive without asking the operating system. Each
process writes its row at start and its heartbeat every ``heartbeat_interval`` seconds; a row
whose heartbeat is older than ``lost_after`` is a lost process. Every process looks for lost
ones at each beat, and the first to mark one ``lost`` (a guarded UPDATE: the row lock makes
the others re-check) frees its leases in the same transaction — work rows, sources and
periodic jobs — so the others take them over within one ``lost_after``, not one lease time.

A process that was only slow (a long pause, an overloaded host) and finds itself marked lost
registers again and goes on: whatever it still had in hand was leased to another process
meanwhile, and its commits of those steps are refused by the lease checks, as after any lease
that ran out.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Connection, Engine, and_, delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError, OperationalError

from daemon import __version__
from daemon.periodic import Periodic
from daemon.pipeline import ledger
from daemon.store.models import Process, utcnow

log = logging.getLogger(__name__)

processes_t = Process.__table__

LOST_AFTER_BEATS = 3
"""Heartbeats a process may miss before the others take it for lost."""
FORGET_AFTER = timedelta(days=1)
"""Ended rows are kept this long for ``docrelay status``, then deleted."""


@dataclass(frozen=True, slots=True)
class Member:
    """A process as ``docrelay status`` shows it."""

    id: str
    host: str
    pid: int
    version: str
    started_at: datetime
    heartbeat_at: datetime
    state: str
    """`running`, `lost` (its heartbeat is late: it is being taken over) or how it ended."""
    holds: tuple[str, ...]
    """Its leases on sources and periodic jobs."""
    leased: dict[str, int]
    """Rows it has in hand, per table (submissions, deliveries, feedback)."""


def register(conn: Connection, owner: str, lost_after: float) -> None:
    """This process's row, new or again (after it was taken for lost)."""
    now = utcnow()
    values = {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "version": __version__,
        "heartbeat_at": now,
        "lost_after": lost_after,
        "ended_at": None,
        "ended": None,
    }
    if conn.execute(update(processes_t).where(processes_t.c.id == owner).values(**values)).rowcount:
        return
    conn.execute(insert(processes_t).values(id=owner, started_at=now, **values))


def end(conn: Connection, owner: str) -> None:
    """A clean stop: the row says so (its leases were given back by the caller)."""
    conn.execute(
        update(processes_t)
        .where(processes_t.c.id == owner)
        .values(ended="stopped", ended_at=utcnow())
    )


def _is_late(row: object, now: datetime) -> bool:
    return row.heartbeat_at + timedelta(seconds=row.lost_after) < now  # type: ignore[attr-defined]


OPEN = select(processes_t.c.id, processes_t.c.heartbeat_at, processes_t.c.lost_after).where(
    processes_t.c.ended.is_(None)
)
"""The processes that have not ended, with what tells whether they are late."""


def running(conn: Connection) -> list[str]:
    """Processes whose heartbeat is fresh."""
    now = utcnow()
    return [row.id for row in conn.execute(OPEN) if not _is_late(row, now)]


def reap(conn: Connection, *, actor: str) -> list[str]:
    """Mark every process whose heartbeat is late as lost and free its leases; returns them."""
    return survey(conn, actor=actor)[0]


def survey(conn: Connection, *, actor: str) -> tuple[list[str], int]:
    """Reap the lost processes (see ``reap``) and count the running ones, in one look.

    Safe to run in every process at once: a row is taken by one guarded UPDATE, and only the
    transaction that changed it frees the leases."""
    now = utcnow()
    rows = conn.execute(OPEN).all()
    lost: list[str] = []
    fresh = 0
    for row in rows:
        if not _is_late(row, now):
            fresh += 1
            continue
        taken = conn.execute(
            update(processes_t)
            .where(
                processes_t.c.id == row.id,
                processes_t.c.ended.is_(None),
                processes_t.c.heartbeat_at < now - timedelta(seconds=row.lost_after),
            )
            .values(ended="lost", ended_at=now)
        ).rowcount
        if taken:
            lost.append(row.id)
    if lost:
        released = ledger.release_dead_owners(conn, lost, actor=actor)
        log.warning(
            "%s: heartbeat stopped; %d lease(s) given to the other processes",
            ", ".join(lost),
            released,
        )
    conn.execute(
        delete(processes_t).where(
            processes_t.c.ended.is_not(None), processes_t.c.ended_at < now - FORGET_AFTER
        )
    )
    return lost, fresh


def members(conn: Connection) -> list[Member]:
    """Every process on record, the running ones first, with what each holds."""
    now = utcnow()
    holds: dict[str, list[str]] = {}
    for name, owner in conn.execute(
        select(ledger.source_leases.c.name, ledger.source_leases.c.owner).where(
            ledger.source_leases.c.expires_at > now
        )
    ):
        holds.setdefault(owner, []).append(name)
    leased: dict[str, dict[str, int]] = {}
    for table in ledger.LEASED:
        for owner, count in conn.execute(
            select(table.c.lease_owner, func.count())
            .where(table.c.lease_owner.is_not(None))
            .group_by(table.c.lease_owner)
        ):
            leased.setdefault(owner, {})[table.name] = count
    found = []
    for row in conn.execute(select(processes_t)).all():
        state = row.ended or ("lost" if _is_late(row, now) else "running")
        found.append(
            Member(
                id=row.id,
                host=row.host,
                pid=row.pid,
                version=row.version,
                started_at=row.started_at,
                heartbeat_at=row.heartbeat_at,
                state=state,
                holds=tuple(sorted(holds.get(row.id, ()))),
                leased=leased.get(row.id, {}),
            )
        )
    found.sort(key=lambda m: (m.state != "running", m.started_at))
    return found


class Heartbeat(Periodic):
    """This process's heartbeat, the look for lost processes, and the count of the running
    ones (``on_count``: the account rate limits are shared among them)."""

    def __init__(
        self,
        engine: Engine,
        owner: str,
        interval: float,
        *,
        on_count: Callable[[int], None] = lambda count: None,
    ) -> None:
        self.engine = engine
        self.owner = owner
        self.lost_after = interval * LOST_AFTER_BEATS
        self.on_count = on_count
        self.count = 1
        super().__init__("heartbeat", interval)

    def register(self) -> None:
        with self.engine.begin() as conn:
            register(conn, self.owner, self.lost_after)
            self.count = max(1, len(running(conn)))
        self.on_count(self.count)

    def tick(self) -> None:
        try:
            self.beat()
        except (OperationalError, IntegrityError) as exc:  # the next beat tries again
            log.warning("heartbeat not written: %s", getattr(exc, "orig", exc))

    def beat(self) -> list[str]:
        """One heartbeat; returns the processes this beat found lost."""
        with self.engine.begin() as conn:
            alive = conn.execute(
                update(processes_t)
                .where(and_(processes_t.c.id == self.owner, processes_t.c.ended.is_(None)))
                .values(heartbeat_at=utcnow())
            ).rowcount
            if not alive:
                log.error(
                    "this process (%s) was taken for lost by the others (no heartbeat for "
                    "%.0f s); its work was taken over; going on under the same name",
                    self.owner,
                    self.lost_after,
                )
                register(conn, self.owner, self.lost_after)
            lost, fresh = survey(conn, actor="recovery")
            count = max(1, fresh)
        if count != self.count:
            log.info("%d docrelay process(es) run on this store", count)
        self.count = count
        self.on_count(count)
        return lost

    def end(self) -> None:
        self.stop()
        try:
            with self.engine.begin() as conn:
                end(conn, self.owner)
        except OperationalError as exc:
            log.warning("could not record this process's stop: %s", exc.orig)


def owners_gone(conn: Connection, owners: Sequence[str]) -> list[str]:
    """Of ``owners``, those that ended (stopped or lost): their leases are stale."""
    if not owners:
        return []
    return list(
        conn.execute(
            select(processes_t.c.id).where(
                processes_t.c.id.in_(owners), processes_t.c.ended.is_not(None)
            )
        ).scalars()
    )
