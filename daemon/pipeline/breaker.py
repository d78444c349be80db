"""The circuit breaker of a vendor profile, and the move of waiting documents to a fallback.

::

    closed ──(breaker_failures transient failures in a row)──→ open
    open ──(breaker_cooldown passed: one claim, the probe)──→ half_open
    half_open ──(a vendor call succeeds)──→ closed
    half_open ──(a transient failure, or the probe never reports in a cool-down)──→ open

The state is a row per profile in the store (``circuit_breakers``), changed only by guarded
UPDATEs, so several processes on one store agree on it and only one of them sends the probe.
While a profile is open its pools claim nothing: its documents wait, or, once the outage
(open, or paused for re-authentication) lasts longer than the route's ``outage_after``, the
ones the vendor never saw move to the route's fallback (``move_waiting``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Connection, Engine, and_, insert, or_, select, update
from sqlalchemy.exc import IntegrityError

from daemon.pipeline import fallbacks, ledger
from daemon.store.models import CircuitBreaker, Document, SubmissionState, utcnow

log = logging.getLogger(__name__)
breakers = CircuitBreaker.__table__
S = SubmissionState

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"


@dataclass(frozen=True, slots=True)
class View:
    """A breaker's row as last read."""

    state: str = CLOSED
    failures: int = 0
    opened_at: datetime | None = None
    retry_at: datetime | None = None

    @property
    def clean(self) -> bool:
        """Closed with no failure counted: a success has nothing to write."""
        return self.state == CLOSED and self.failures == 0


def read(conn: Connection, profile: str) -> View:
    row = conn.execute(select(breakers).where(breakers.c.profile == profile)).mappings().first()
    if row is None:
        return View()
    return View(row["state"], row["failures"], row["opened_at"], row["retry_at"])


def ensure(conn: Connection, profile: str, now: datetime) -> None:
    """The profile's row, closed, unless it has one (another process may add it meanwhile)."""
    if conn.execute(select(breakers.c.profile).where(breakers.c.profile == profile)).first():
        return
    try:
        with conn.begin_nested():
            conn.execute(
                insert(breakers).values(profile=profile, state=CLOSED, failures=0, updated_at=now)
            )
    except IntegrityError:
        pass


def failed(
    conn: Connection, profile: str, *, threshold: int, cooldown: float, now: datetime
) -> View:
    """Count one transient failure of a vendor call; opens the breaker at ``threshold``
    failures in a row, and again at a half-open probe's failure."""
    ensure(conn, profile, now)
    conn.execute(
        update(breakers)
        .where(breakers.c.profile == profile)
        .values(failures=breakers.c.failures + 1, updated_at=now)
    )
    view = read(conn, profile)
    retry_at = now + timedelta(seconds=cooldown)
    if view.state == CLOSED and view.failures >= threshold:
        conn.execute(
            update(breakers)
            .where(breakers.c.profile == profile, breakers.c.state == CLOSED)
            .values(state=OPEN, opened_at=now, retry_at=retry_at)
        )
    elif view.state == HALF_OPEN:  # the probe (or a call begun before it) failed
        conn.execute(
            update(breakers)
            .where(breakers.c.profile == profile, breakers.c.state == HALF_OPEN)
            .values(state=OPEN, retry_at=retry_at)
        )
    return read(conn, profile)


def succeeded(conn: Connection, profile: str, now: datetime) -> bool:
    """A vendor call succeeded: closed, the count back to 0. True when it was not closed."""
    was = read(conn, profile)
    conn.execute(
        update(breakers)
        .where(
            breakers.c.profile == profile,
            or_(breakers.c.failures > 0, breakers.c.state != CLOSED),
        )
        .values(state=CLOSED, failures=0, opened_at=None, retry_at=None, updated_at=now)
    )
    return was.state != CLOSED


def gate(
    conn: Connection, profile: str, *, cooldown: float, now: datetime
) -> tuple[int | None, View]:
    """How many submissions a claim of this profile may take now (None: no limit; 1: the
    probe, taken by this claim alone), with the row as it is after."""
    view = read(conn, profile)
    if view.state == CLOSED:
        return None, view
    if view.retry_at is None or view.retry_at > now:
        return 0, view
    taken = conn.execute(
        update(breakers)
        .where(
            breakers.c.profile == profile,
            breakers.c.state == view.state,
            breakers.c.retry_at <= now,
        )
        .values(state=HALF_OPEN, retry_at=now + timedelta(seconds=cooldown), updated_at=now)
    ).rowcount
    return (1 if taken == 1 else 0), read(conn, profile)


class Breaker:
    """One profile's breaker as its runner and pools use it; the row is the truth, ``view``
    what this process last read of it (refreshed at every claim)."""

    def __init__(
        self,
        engine: Engine,
        profile: str,
        *,
        failures: int,
        cooldown: float,
        now: Callable[[], datetime] = utcnow,
    ) -> None:
        self.engine = engine
        self.profile = profile
        self.threshold = failures
        self.cooldown = cooldown
        self.now = now
        self.view = View()

    @property
    def enabled(self) -> bool:
        return self.threshold > 0

    def holding(self) -> bool:
        """Open (or a probe out) as far as this process knows: the pools claim nothing."""
        view = self.view
        return (
            self.enabled
            and view.state != CLOSED
            and (view.retry_at is None or view.retry_at > self.now())
        )

    def claim_limit(self, conn: Connection, limit: int) -> int:
        """``limit``, or what the breaker lets a claim take (0, or 1 for the probe)."""
        if not self.enabled:
            return limit
        allowed, self.view = gate(conn, self.profile, cooldown=self.cooldown, now=self.now())
        if allowed == 1:
            log.info("profile %s: circuit half-open, one probe goes to the vendor", self.profile)
        return limit if allowed is None else min(limit, allowed)

    def failure(self) -> None:
        """A vendor call failed transiently."""
        if not self.enabled:
            return
        before = self.view.state
        with self.engine.begin() as conn:
            self.view = failed(
                conn,
                self.profile,
                threshold=self.threshold,
                cooldown=self.cooldown,
                now=self.now(),
            )
        if self.view.state == OPEN and before == HALF_OPEN:
            log.warning(
                "profile %s: the probe failed, circuit open again; next probe in %.0f s",
                self.profile, self.cooldown,
            )  # fmt: skip
        elif self.view.state == OPEN and before != OPEN:
            log.warning(
                "profile %s: circuit open after %d transient failures in a row; "
                "next probe in %.0f s",
                self.profile, self.view.failures, self.cooldown,
            )  # fmt: skip

    def success(self) -> None:
        """A vendor call succeeded: writes only when there is something to reset."""
        if not self.enabled or self.view.clean:
            return
        with self.engine.begin() as conn:
            reopened = succeeded(conn, self.profile, self.now())
        self.view = View()
        if reopened:
            log.info("profile %s: circuit closed, the vendor answers again", self.profile)


# ---------------------------------------------------------------------- outages


@dataclass(frozen=True, slots=True)
class Outage:
    """Why a profile cannot take documents now, and since when."""

    trigger: str
    """`circuit_open` or `paused` (credentials refused)."""
    since: datetime

    def describe(self, now: datetime) -> str:
        seconds = (now - self.since).total_seconds()
        what = "circuit open" if self.trigger == "circuit_open" else "paused for re-auth"
        return f"{what} for {seconds:.0f} s"


def outages(conn: Connection) -> dict[str, Outage]:
    """Every profile in an outage now, by the store (so every process sees the same)."""
    found: dict[str, Outage] = {}
    for row in conn.execute(
        select(breakers.c.profile, breakers.c.opened_at).where(breakers.c.state != CLOSED)
    ):
        if row.opened_at is not None:
            found[row.profile] = Outage("circuit_open", row.opened_at)
    health = ledger.health
    for row in conn.execute(
        select(health.c.name, health.c.since).where(health.c.state == "auth_failed")
    ):
        earlier = found.get(row.name)
        if earlier is None or row.since < earlier.since:
            found[row.name] = Outage("paused", row.since)
    return found


WAITING = or_(
    ledger.submissions.c.state == S.QUEUED,
    and_(ledger.submissions.c.state == S.FAILED, ledger.submissions.c.resume_state == S.QUEUED),
)
"""Submissions the vendor has never seen: not claimed since they were queued (a claim moves a
submission to `uploading` before the upload starts), so moving them cannot make a double."""


def move_waiting(
    engine: Engine,
    *,
    route: str,
    profile: str,
    outage: Outage,
    profiles: Mapping[str, str],
    owner: str,
    avoid: Collection[str] = (),
    limit: int = 100,
) -> list[tuple[fallbacks.Next, fallbacks.Move]]:
    """Hand the waiting submissions of ``route`` at ``profile`` (in ``outage``) on along their
    chain, as a final failure does: the old one ends `dead` with the reason, the next profile
    gets the document, and both events name the trigger. ``avoid``: profiles out as well,
    passed over when the chain has another. Returns the moves made."""
    sub, docs = ledger.submissions, Document.__table__
    with engine.connect() as conn:
        rows = conn.execute(
            select(*fallbacks.MOVABLE)
            .join(docs, docs.c.id == sub.c.document_id)
            .where(
                sub.c.profile == profile,
                sub.c.role != "shadow",
                sub.c.fallback.is_not(None),
                sub.c.lease_owner.is_(None),
                docs.c.route == route,
                WAITING,
            )
            .order_by(sub.c.id)
            .limit(limit)
        ).all()  # fmt: skip
    moves = fallbacks.move_unleased(
        engine,
        rows,
        end_state=S.DEAD,
        move=lambda row: fallbacks.Move("outage", outage.describe(utcnow()), outage.trigger),
        profiles=profiles,
        owner=owner,
        avoid=avoid,
    )
    if moves:
        log.warning(
            "moved %d document(s) of route %s from %s on along its fallback chain: %s",
            len(moves), route, profile, outage.describe(utcnow()),
        )  # fmt: skip
    return moves
