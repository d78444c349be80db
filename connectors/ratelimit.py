"""Token buckets shared per (account, host): vendors throttle an account, not one profile.

Every HTTP client of the same account on the same host takes its tokens from one bucket, so
two profiles of one Rossum user stay under the user's 10 requests/s together. Several
processes on one store share the account too: the engine counts the running ones (their
heartbeat rows) and tells ``share_among``, and each bucket then runs at its rate divided by
that count, so N processes together stay under the account's limit.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable

_ALL: weakref.WeakSet[RateLimiter] = weakref.WeakSet()
_ALL_LOCK = threading.Lock()
_share = 1


class RateLimiter:
    """A token bucket: ``rate`` requests per second, bursts up to one second's worth.

    Thread-safe. A caller reserves its token under the lock and sleeps outside it, so waiting
    threads queue up fairly instead of waking together.
    """

    def __init__(
        self, rate: float, *, clock: Callable[[], float], sleep: Callable[[float], None]
    ) -> None:
        self._lock = threading.Lock()
        self._clock = clock
        self._sleep = sleep
        self.configured = rate
        """The account's rate; ``rate`` is this process's share of it."""
        self.rate = rate / _share
        self.capacity = max(1.0, self.rate)
        self._tokens = self.capacity
        self._stamp = clock()
        with _ALL_LOCK:
            _ALL.add(self)

    def slow_down(self, rate: float) -> None:
        """Lower the rate (another client of the same account asked for less)."""
        with self._lock:
            if rate < self.configured:
                self.configured = rate
                self._set(rate / _share)

    def _set(self, rate: float) -> None:
        self.rate = rate
        self.capacity = max(1.0, rate)
        self._tokens = min(self._tokens, self.capacity)

    def share(self, processes: int) -> None:
        """Run at ``1 / processes`` of the configured rate."""
        with self._lock:
            self._set(self.configured / max(1, processes))

    def acquire(self) -> float:
        """Take one token, sleeping until it is there; returns the seconds waited."""
        with self._lock:
            now = self._clock()
            self._tokens = min(self.capacity, self._tokens + (now - self._stamp) * self.rate)
            self._stamp = now
            self._tokens -= 1.0
            wait = -self._tokens / self.rate if self._tokens < 0 else 0.0
        if wait > 0:
            self._sleep(wait)
        return wait


_LIMITERS: dict[tuple[str | None, str], RateLimiter] = {}
_LIMITERS_LOCK = threading.Lock()


def shared_limiter(
    account: str | None,
    host: str,
    rate: float,
    *,
    clock: Callable[[], float],
    sleep: Callable[[float], None],
) -> RateLimiter:
    """The one limiter of ``account`` at ``host``; a lower ``rate`` than before slows it down.

    The first caller's clock and sleep drive it (tests that bring their own clocks call
    ``reset_shared_limiters`` first).
    """
    key = (account, host)
    with _LIMITERS_LOCK:
        limiter = _LIMITERS.get(key)
        if limiter is None:
            limiter = _LIMITERS[key] = RateLimiter(rate, clock=clock, sleep=sleep)
        else:
            limiter.slow_down(rate)
        return limiter


def share_among(processes: int) -> None:
    """``processes`` run on one store: every bucket of this process takes its share."""
    global _share
    with _ALL_LOCK:
        _share = max(1, processes)
        limiters = list(_ALL)
    for limiter in limiters:
        limiter.share(_share)


def reset_shared_limiters() -> None:
    """Forget every account's limiter (tests with their own clocks)."""
    with _LIMITERS_LOCK:
        _LIMITERS.clear()
