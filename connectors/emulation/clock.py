"""Time for emulators: the system clock, or a manual one that tests move forward.

Emulator state reads ``now()`` for timestamps, processing delays and token expiry and
``monotonic()`` for intervals (rate limits, retry backoff); background threads wait with
``wait(condition, timeout)``. On a ``ManualClock`` nothing takes real time: ``advance`` moves
both readings and wakes every thread waiting in ``wait``, and ``sleep``/``async_sleep`` advance
the clock by the time asked for and return at once, so a test of a 30-second retry schedule
runs in microseconds.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from typing import Protocol, runtime_checkable


@runtime_checkable
class Clock(Protocol):
    """What emulator code asks of time."""

    def now(self) -> float:
        """Wall-clock time in epoch seconds (what the API shows as timestamps)."""
        ...

    def monotonic(self) -> float:
        """Seconds on a clock that never goes back (for intervals and deadlines)."""
        ...

    def sleep(self, seconds: float) -> None:
        """Block the calling thread for ``seconds``."""
        ...

    async def async_sleep(self, seconds: float) -> None:
        """Pause the calling coroutine for ``seconds`` (the event loop keeps running)."""
        ...

    def wait(self, condition: threading.Condition, timeout: float | None) -> None:
        """Wait on ``condition`` (held by the caller) until notified or ``timeout`` passes.

        Callers re-check what they wait for afterwards: like ``Condition.wait`` this may
        return early.
        """
        ...


class SystemClock:
    """The real clock: ``time.time``, ``time.monotonic`` and real sleeps."""

    def now(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        time.sleep(max(0.0, seconds))

    async def async_sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))

    def wait(self, condition: threading.Condition, timeout: float | None) -> None:
        condition.wait(None if timeout is None else max(0.0, timeout))


class ManualClock:
    """A clock that moves only when told to: ``advance`` (or a sleep, which advances by its
    length). Threads waiting in ``wait`` wake on every ``advance``, whatever their timeout."""

    def __init__(self, start: float = 1_767_225_600.0) -> None:
        """``start`` is the wall-clock reading at creation (default 2026-01-01T00:00:00Z);
        ``monotonic()`` starts at 0."""
        self._lock = threading.Lock()
        self._start = start
        self._elapsed = 0.0
        self._waiting: Counter[threading.Condition] = Counter()

    def now(self) -> float:
        with self._lock:
            return self._start + self._elapsed

    def monotonic(self) -> float:
        with self._lock:
            return self._elapsed

    def advance(self, seconds: float) -> None:
        """Move time forward and wake every thread waiting on this clock."""
        if seconds < 0:
            raise ValueError("a clock does not go back")
        with self._lock:
            self._elapsed += seconds
            waiting = list(self._waiting)
        # Notified outside our lock: a waiter holds its condition while it reads the clock.
        for condition in waiting:
            with condition:
                condition.notify_all()

    def sleep(self, seconds: float) -> None:
        self.advance(max(0.0, seconds))

    async def async_sleep(self, seconds: float) -> None:
        self.advance(max(0.0, seconds))
        await asyncio.sleep(0)

    def wait(self, condition: threading.Condition, timeout: float | None) -> None:
        """Wait until notified or the clock advances; a timeout of 0 or less returns at once."""
        if timeout is not None and timeout <= 0:
            return
        with self._lock:
            self._waiting[condition] += 1
        try:
            condition.wait()
        finally:
            with self._lock:
                self._waiting[condition] -= 1
                if self._waiting[condition] <= 0:
                    del self._waiting[condition]


SYSTEM_CLOCK = SystemClock()
"""The one real clock; what every kit part uses unless given another."""
