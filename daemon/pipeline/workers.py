"""Worker pools: threads that claim due work with a lease and run it.

One pool per vendor profile and one per destination, so one vendor's outage or slowness only
holds back its own queue. An idle pool sleeps until it is woken (new work, a sweep) or until its
earliest waiting item falls due; it never spins.
"""

from __future__ import annotations

import heapq
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine, update
from sqlalchemy.exc import OperationalError

from daemon import logs
from daemon.periodic import Periodic
from daemon.pipeline import ledger
from daemon.store.engine import reader
from daemon.store.models import utcnow

log = logging.getLogger(__name__)

IDLE_MAX = 30.0
"""Longest sleep of an idle pool between two looks at the queue."""
EMPTY_CLAIM_MAX = 1.0
"""Longest pause after claims that came back empty (50 ms after the first, doubling)."""


class InHand:
    """The ids of one runner's rows that a thread of this process is working on now.

    Leases guard against other processes; within one process every thread leases under the
    same owner. A lease that looks run out while its step is still going (the wall clock
    jumped, the machine slept mid-step) could be claimed again by a sibling thread, and both
    would pass the owner checks: the second one steps aside here instead.
    """

    def __init__(self, what: str, table: Any = None) -> None:
        self.what = what
        """The rows' name in the log: ``submission``, ``delivery``, ``feedback``."""
        self.table = table
        """The table the rows are in (for the lease keeper)."""
        self._ids: dict[int, float] = {}
        """Row id → when (monotonic) this process began working on it."""
        self._lock = threading.Lock()

    @contextmanager
    def hold(self, item_id: int) -> Iterator[bool]:
        """Yields True when this thread has the row to itself (and keeps it until the end);
        False, with a warning, when another thread of this process is still working on it."""
        with self._lock:
            mine = item_id not in self._ids
            if mine:
                self._ids[item_id] = time.monotonic()
        if not mine:
            log.warning("%s %s is still being worked on here; not run twice", self.what, item_id)
        try:
            with logs.bound(**{f"{self.what}_id": item_id}):
                yield mine
        finally:
            if mine:
                with self._lock:
                    self._ids.pop(item_id, None)

    def held_for(self, seconds: float) -> list[int]:
        """The rows worked on here for at least ``seconds`` now (a long vendor call)."""
        since = time.monotonic() - seconds
        with self._lock:
            return [item_id for item_id, began in self._ids.items() if began <= since]


class Isolation:
    """Lets a crash suspect run alone: no other submission step of this process runs beside it.

    After the worker process died, every submission it had in hand is a suspect (one of them
    may be a poison pill: a document that kills whatever reads it). A suspect's run waits
    until the steps in progress have ended, and holds back new ones until it is over, so when
    the process dies again only that run is to blame. Ordinary steps pay two uncontended lock
    round-trips; suspects are rare, and the wait lasts one step.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._running = 0
        """Ordinary steps in progress."""
        self._alone = False
        """A suspect is running."""
        self._waiting = 0
        """Suspects waiting for their turn: ordinary steps let them go first."""

    @contextmanager
    def shared(self) -> Iterator[None]:
        """An ordinary step: runs beside others, not beside a suspect."""
        with self._cond:
            while self._alone or self._waiting:
                self._cond.wait()
            self._running += 1
        try:
            yield
        finally:
            with self._cond:
                self._running -= 1
                if not self._running:
                    self._cond.notify_all()

    @contextmanager
    def alone(self) -> Iterator[None]:
        """A suspect's run: the only step of this process while it lasts."""
        with self._cond:
            self._waiting += 1
            try:
                while self._alone or self._running:
                    self._cond.wait()
            finally:
                self._waiting -= 1
            self._alone = True
        try:
            yield
        finally:
            with self._cond:
                self._alone = False
                self._cond.notify_all()


class LeaseKeeper(Periodic):
    """Renews the leases of rows this process has been working on for a while.

    A lease stands for "this process is on it"; a vendor call may take minutes (a synchronous
    extraction, a slow upload), longer than the lease. Every third of the lease time the rows
    still in hand are given a full lease again, so no other process takes them over while the
    call runs — and when this process dies, the renewals stop and the lease runs out as usual.
    """

    def __init__(
        self,
        engine: Engine,
        owner: str,
        lease_seconds: float,
        hands: Callable[[], Iterable[InHand]],
    ) -> None:
        self.engine = engine
        self.owner = owner
        self.lease_seconds = lease_seconds
        self._hands = hands
        self.renewed = 0
        """Leases renewed so far (for tests and health)."""
        super().__init__("lease-keeper", lease_seconds / 3)

    def tick(self) -> None:
        try:
            self.renew(older_than=self.interval)
        except OperationalError as exc:  # the next round tries again, well within the lease
            log.warning("could not renew leases: %s", exc.orig)

    def renew(self, older_than: float) -> int:
        """Give every row in hand for ``older_than`` seconds a full lease again."""
        renewed = 0
        expires = utcnow() + timedelta(seconds=self.lease_seconds)
        for hand in self._hands():
            ids = hand.held_for(older_than)
            if not ids or hand.table is None:
                continue
            table = hand.table
            with self.engine.begin() as conn:
                renewed += conn.execute(
                    update(table)
                    .where(table.c.id.in_(ids), table.c.lease_owner == self.owner)
                    .values(lease_expires_at=expires)
                ).rowcount
        self.renewed += renewed
        return renewed


class WorkerPool:
    """``size`` threads running ``claim`` → ``run(item_id, owner)`` until stopped.

    ``run`` may return seconds: the item is to run again that much later, and it kept its
    lease for that. The pool then runs it itself when the time comes, with no claim (a
    vendor's first status poll a moment after the upload: no write to give the row back,
    none to claim it again).
    """

    def __init__(
        self,
        *,
        name: str,
        size: int,
        engine: Engine,
        owner: str,
        claim: Callable[[ledger.Connection, str, int], list[int]],
        run: Callable[[int, str], float | None],
        next_due: Callable[[ledger.Connection], datetime | None],
        paused: Callable[[], bool] = lambda: False,
    ) -> None:
        self.name = name
        self.size = size
        self.engine = engine
        self.reader = reader(engine)
        self.owner = owner
        self._claim = claim
        self._run = run
        self._next_due = next_due
        self._paused = paused
        self._wake = threading.Condition()
        self._generation = 0
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self._claiming = threading.Lock()
        self._found_work = False
        self._empty_claims = 0
        """Claims in a row that found nothing (each waits longer before the next look)."""
        """The last claim found work: the next one skips the look at the queue first."""
        self._claimed: deque[int] = deque()
        """Items leased by one claim for the pool's other threads (one claim, many items)."""
        self._later: list[tuple[float, int]] = []
        """(monotonic due time, item) of items still leased here that run again then."""
        self._later_lock = threading.Lock()
        self._running: set[int] = set()
        """Items a thread of this pool is running now."""
        self._hinted: set[int] = set()
        """Running items a webhook named meanwhile: kept, they run again at once."""
        self.hurried_to: WorkerPool | None = None
        """The pool that runs the kept items a webhook hurries (the follow pool, whose threads
        never wait behind uploads); None: this one."""
        self.busy = 0
        """Threads running an item now."""
        self._busy_lock = threading.Lock()

    def start(self) -> None:
        for index in range(self.size):
            thread = threading.Thread(target=self._loop, name=f"{self.name}-{index}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def wake(self, everyone: bool = False) -> None:
        """New work: one idle thread looks (it keeps claiming while there is more); a sweep or
        a stop wakes them all."""
        with self._wake:
            self._generation += 1
            if everyone:
                self._wake.notify_all()
            else:
                self._wake.notify()

    def stop(self, timeout: float | None = 30.0, *, wait: bool = True) -> None:
        """Finish the steps in progress, claim nothing new."""
        self._stopping.set()
        self.wake(everyone=True)
        if wait:
            for thread in self._threads:
                thread.join(timeout)

    def adopt(self, item_id: int) -> None:
        """Run an item whose lease this process already holds (one the store would not let
        its first runner finish): it joins the claimed queue."""
        with self._claiming:
            self._claimed.append(item_id)
        self.wake()

    def hurry(self, item_ids: Iterable[int]) -> int:
        """Run now the items kept here to run again later (a webhook says their vendor is
        done), in ``hurried_to`` if set; returns how many there were. Items not kept here are
        left alone."""
        wanted = set(item_ids)
        with self._later_lock:
            # One running now may be kept when its step ends, with what it read before the
            # hint: it then runs again at once.
            self._hinted |= wanted & self._running
            taken = [item for _, item in self._later if item in wanted]
            if not taken:
                return 0
            self._later = [entry for entry in self._later if entry[1] not in wanted]
            heapq.heapify(self._later)
        for item in taken:
            self._again_now(item)
        return len(taken)

    def _again_now(self, item_id: int) -> None:
        """Run a kept item (no longer in ``_later``) as soon as a thread is free: in
        ``hurried_to`` while it has one idle, else here."""
        if self.hurried_to is not None and self.hurried_to.busy < self.hurried_to.size:
            self.hurried_to.adopt(item_id)
            return
        with self._later_lock:
            heapq.heappush(self._later, (time.monotonic(), item_id))
        self.wake()

    @property
    def alive(self) -> bool:
        return any(thread.is_alive() for thread in self._threads)

    def _loop(self) -> None:
        while not self._stopping.is_set():
            with self._wake:
                seen = self._generation
            try:
                worked, due = self._work_once()
            except OperationalError as exc:  # locked/unreachable database: wait, then retry
                log.warning("%s: database unavailable (%s); retrying", self.name, exc.orig)
                self._stopping.wait(2.0)
                continue
            except Exception:
                log.exception("%s: worker error; continuing", self.name)
                self._stopping.wait(2.0)
                continue
            if worked:
                continue
            self._sleep(seen, due)

    def _work_once(self) -> tuple[bool, datetime | None]:
        """Claim and run one item: (worked, when the next item is due if nothing was)."""
        if self._paused():
            return False, None
        # Threads of one pool claim one at a time, and look before taking the store's write
        # lock: when several wake for the same due item, the others find it leased instead of
        # each queueing an empty write behind every writer of the process. A claim leases up
        # to one item per idle thread; what this thread does not run now waits in ``_claimed``
        # for the others, so a burst of due items costs one claim, not one each, and nothing
        # waits here behind busy threads (newer, more urgent work would queue behind it).
        with self._claiming:
            if (kept := self._kept_due()) is not None:
                item_id = kept
            elif self._claimed:
                item_id = self._claimed.popleft()
            else:
                if not self._found_work:  # under load the look is skipped: work is there
                    with self.reader.connect() as conn:
                        due = self._next_due(conn)
                    if due is None or due > utcnow():
                        return False, self._sooner(due)
                with self.engine.begin() as conn:
                    ids = self._claim(conn, self.owner, max(1, self.size - self.busy))
                self._found_work = bool(ids)
                if not ids:  # another process was quicker, or the work ran out: look again,
                    # later after each empty claim (other processes may be taking it all)
                    self._empty_claims += 1
                    pause = min(EMPTY_CLAIM_MAX, 0.05 * 2 ** (self._empty_claims - 1))
                    return False, self._sooner(utcnow() + timedelta(seconds=pause))
                self._empty_claims = 0
                item_id, *rest = ids
                self._claimed.extend(rest)
                if rest:
                    self.wake(everyone=True)
            self._count(+1)  # before the claim lock is let go: the next claim sees it
            with self._later_lock:
                self._running.add(item_id)
        try:
            again = self._run(item_id, self.owner)
            if again is not None:
                with self._later_lock:
                    hinted = item_id in self._hinted
                    if not hinted:
                        heapq.heappush(self._later, (time.monotonic() + again, item_id))
                if hinted:
                    self._again_now(item_id)
                else:
                    self.wake()  # a sleeping thread may have to wake sooner for it
        except OperationalError:
            # The store is locked or unreachable. The item is still leased to this process:
            # run it again after the pause (_loop), not only when its lease runs out.
            self.adopt(item_id)
            raise
        finally:
            with self._later_lock:
                self._running.discard(item_id)
                self._hinted.discard(item_id)
            self._count(-1)
        return True, None

    def _kept_due(self) -> int | None:
        """The kept item whose time has come, if any (taken off the list)."""
        with self._later_lock:
            if self._later and self._later[0][0] <= time.monotonic():
                return heapq.heappop(self._later)[1]
        return None

    def _sooner(self, due: datetime | None) -> datetime | None:
        """``due``, or when the first kept item runs again if that is sooner."""
        with self._later_lock:
            if not self._later:
                return due
            kept = utcnow() + timedelta(seconds=max(0.0, self._later[0][0] - time.monotonic()))
        return kept if due is None or kept < due else due

    def _count(self, change: int) -> None:
        with self._busy_lock:
            self.busy += change

    def _sleep(self, seen: int, due: datetime | None) -> None:
        timeout = IDLE_MAX
        if due is not None and not self._paused():
            timeout = min(IDLE_MAX, max(0.0, (due - utcnow()).total_seconds()) + 0.01)
        with self._wake:
            if self._generation == seen and not self._stopping.is_set():
                self._wake.wait(timeout)
