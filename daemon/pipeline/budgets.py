"""A vendor profile's budget: documents and pages per UTC day and month, calls per second.

The counts are rows of the store (``budget_usage``, one per profile and period), changed only
by guarded UPDATEs (``SET documents = documents + 1 ... WHERE documents + 1 <= limit``): on
PostgreSQL the row lock makes a second process re-check the condition after the first one
commits, on SQLite one writer at a time does the same, so processes sharing a store never
go over a limit together. A submission is charged once: the reservation and the mark on the
submission (``charged_at``) are one transaction, and a charged submission is never reserved
again, whatever crash or retry follows.

``requests_per_second`` is shared the same way: a row per profile holds the next free slot
(Unix seconds); a call takes one by a single UPDATE and waits until it comes.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Engine, and_, insert, select, update
from sqlalchemy.exc import IntegrityError

from connectors.base import BudgetSettings
from daemon.pipeline import ledger
from daemon.store.models import BudgetUsage, RequestPace, SubmissionState, utcnow

log = logging.getLogger(__name__)
usage = BudgetUsage.__table__
pace_t = RequestPace.__table__

DAY, MONTH = "day", "month"
PERIODS = (DAY, MONTH)
HOLD_RECHECK = 3600.0
"""Longest a held document waits before its budget is checked again (another process may
have been given a higher limit); a reload of this process re-checks at once."""
BUDGET = "budget"
"""``error_class`` of a submission held by its budget."""


@dataclass(frozen=True, slots=True)
class Exhausted:
    """A limit a document did not fit in: what holds it, and until when."""

    profile: str
    name: str
    """The limit's setting: `documents_per_day`, `pages_per_month`, ..."""
    used: int
    limit: int
    until: datetime
    """The start of the next period, when the count begins again."""

    @property
    def period(self) -> str:
        return DAY if self.name.endswith("_day") else MONTH

    def describe(self) -> str:
        return (
            f"budget {self.name} of {self.profile} reached ({self.used}/{self.limit}); "
            f"held until {self.until.isoformat()}"
        )


def budget_of(settings: Any) -> BudgetSettings:
    """A profile's budget settings (the defaults for a connector whose settings have none)."""
    budget = getattr(settings, "budget", None)
    return budget if isinstance(budget, BudgetSettings) else BudgetSettings()


def period_start(period: str, now: datetime) -> datetime:
    """The first moment (UTC) of the day or month ``now`` is in."""
    now = now.astimezone(UTC)
    day = now.replace(hour=0, minute=0, second=0, microsecond=0)
    return day if period == DAY else day.replace(day=1)


def period_end(period: str, start: datetime) -> datetime:
    if period == DAY:
        return start + timedelta(days=1)
    return (start.replace(day=28) + timedelta(days=4)).replace(day=1)


def _limits(budget: BudgetSettings, period: str) -> tuple[int | None, int | None]:
    if period == DAY:
        return budget.documents_per_day, budget.pages_per_day
    return budget.documents_per_month, budget.pages_per_month


def _key(profile: str, period: str, start: datetime) -> Any:
    return and_(usage.c.profile == profile, usage.c.period == period, usage.c.starts_at == start)


def _ensure(conn: Connection, profile: str, period: str, start: datetime, now: datetime) -> None:
    """The period's row, at 0, unless there is one (another process may insert it meanwhile)."""
    if conn.execute(select(usage.c.documents).where(_key(profile, period, start))).first():
        return
    try:
        with conn.begin_nested():
            conn.execute(
                insert(usage).values(
                    profile=profile, period=period, starts_at=start, documents=0, pages=0,
                    updated_at=now,
                )
            )  # fmt: skip
    except IntegrityError:
        pass


class _Over(Exception):
    def __init__(self, exhausted: Exhausted) -> None:
        self.exhausted = exhausted


def reserve(
    conn: Connection, profile: str, budget: BudgetSettings, pages: int, now: datetime
) -> Exhausted | None:
    """Count one document of ``pages`` pages in the current day and month, in the caller's
    transaction; the first limit it does not fit in instead (the caller must then roll back:
    a period counted before it stays counted otherwise)."""
    for period in PERIODS:
        start = period_start(period, now)
        documents_limit, pages_limit = _limits(budget, period)
        _ensure(conn, profile, period, start, now)
        guard = [_key(profile, period, start)]
        if documents_limit is not None:
            guard.append(usage.c.documents + 1 <= documents_limit)
        if pages_limit is not None:
            guard.append(usage.c.pages + pages <= pages_limit)
        counted = conn.execute(
            update(usage)
            .where(*guard)
            .values(
                documents=usage.c.documents + 1, pages=usage.c.pages + pages,
                documents_limit=documents_limit, pages_limit=pages_limit, exhausted_at=None,
                updated_at=now,
            )
        ).rowcount  # fmt: skip
        if counted == 1:
            continue
        row = conn.execute(select(usage).where(_key(profile, period, start))).one()
        until = period_end(period, start)
        if documents_limit is not None and row.documents + 1 > documents_limit:
            return Exhausted(
                profile, f"documents_per_{period}", row.documents, documents_limit, until
            )
        assert pages_limit is not None
        return Exhausted(profile, f"pages_per_{period}", row.pages, pages_limit, until)
    return None


def charge(
    engine: Engine,
    sub: dict[str, Any],
    *,
    owner: str,
    profile: str,
    budget: BudgetSettings,
    pages: int | None,
    now: Callable[[], datetime] = utcnow,
) -> Exhausted | None:
    """Reserve the budget of one submission about to be uploaded and mark it charged, in one
    transaction; None when it fits (or was charged before), the limit it does not fit in
    otherwise (nothing written). Raises ``LeaseLost`` when the submission is not ours."""
    if sub.get("charged_at") is not None:
        return None
    at = now()
    try:
        with engine.begin() as conn:
            if (over := reserve(conn, profile, budget, pages or 1, at)) is not None:
                raise _Over(over)
            marked = conn.execute(
                update(ledger.submissions)
                .where(
                    ledger.submissions.c.id == sub["id"],
                    ledger.submissions.c.lease_owner == owner,
                    ledger.submissions.c.charged_at.is_(None),
                )
                .values(charged_at=at, error=None, error_class=None)
            ).rowcount
            if marked != 1:
                raise ledger.LeaseLost(f"submission {sub['id']} not charged: lease lost")
    except _Over as over:
        return over.exhausted
    sub.update(charged_at=at)
    if sub.get("error_class") == BUDGET:
        sub.update(error=None, error_class=None)
    return None


def first_exhaustion(conn: Connection, exhausted: Exhausted, now: datetime) -> bool:
    """Record that the period's budget ran out; True for the one caller (of every process)
    that recorded it first since the last reservation: it logs the warning."""
    start = period_start(exhausted.period, now)
    column = "documents_limit" if exhausted.name.startswith("documents") else "pages_limit"
    return (
        conn.execute(
            update(usage)
            .where(_key(exhausted.profile, exhausted.period, start), usage.c.exhausted_at.is_(None))
            .values(exhausted_at=now, **{column: exhausted.limit})
        ).rowcount
        == 1
    )


def recheck_held(conn: Connection, profiles: list[str], now: datetime) -> int:
    """Make the documents held by the budgets of ``profiles`` due now (their limits changed)."""
    if not profiles:
        return 0
    sub = ledger.submissions
    return conn.execute(
        update(sub)
        .where(
            sub.c.profile.in_(profiles),
            sub.c.state == SubmissionState.QUEUED,
            sub.c.error_class == BUDGET,
        )
        .values(next_attempt_at=now)
    ).rowcount


# ---------------------------------------------------------------------- what was used


@dataclass(frozen=True, slots=True)
class Used:
    """One limit of a profile in the current period, as the store has it."""

    profile: str
    name: str
    used: int
    limit: int | None
    exhausted_at: datetime | None


def current_usage(conn: Connection, now: datetime | None = None) -> Iterator[Used]:
    """The counts of the current UTC day and month of every profile with a budget row."""
    now = now or utcnow()
    for period in PERIODS:
        start = period_start(period, now)
        for row in conn.execute(
            select(usage).where(usage.c.period == period, usage.c.starts_at == start)
            .order_by(usage.c.profile)
        ):  # fmt: skip
            yield Used(
                row.profile, f"documents_per_{period}", row.documents, row.documents_limit,
                row.exhausted_at,
            )  # fmt: skip
            yield Used(
                row.profile, f"pages_per_{period}", row.pages, row.pages_limit, row.exhausted_at
            )


# ---------------------------------------------------------------------- requests per second


def take_slot(conn: Connection, profile: str, rate: float, now: float) -> float:
    """Take the profile's next call slot (Unix seconds, ``now`` or later), shared by every
    process on the store: one guarded UPDATE moves the slot on by ``1 / rate``."""
    gap = 1.0 / rate
    for _ in range(20):
        row = conn.execute(select(pace_t.c.next_slot).where(pace_t.c.profile == profile)).first()
        if row is None:
            try:
                with conn.begin_nested():
                    conn.execute(insert(pace_t).values(profile=profile, next_slot=now + gap))
                return now
            except IntegrityError:
                continue
        slot = max(row.next_slot, now)
        moved = conn.execute(
            update(pace_t)
            .where(pace_t.c.profile == profile, pace_t.c.next_slot == row.next_slot)
            .values(next_slot=slot + gap)
        ).rowcount
        if moved == 1:
            return slot
    return now  # raced twenty times: let this one go rather than stall the worker


class Pacer:
    """Waits before each vendor call of one profile until its shared slot comes."""

    def __init__(
        self,
        engine: Engine,
        profile: str,
        rate: float | None,
        *,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.engine = engine
        self.profile = profile
        self.rate = rate
        self.clock = clock
        self.sleep = sleep

    def wait(self) -> None:
        """Before one vendor call: nothing to do unless ``requests_per_second`` is set."""
        if self.rate is None:
            return
        with self.engine.begin() as conn:
            slot = take_slot(conn, self.profile, self.rate, self.clock())
        if (delay := slot - self.clock()) > 0:
            self.sleep(delay)
