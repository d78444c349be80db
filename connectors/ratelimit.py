"""Token buckets shared per (account, host): vendors throttle an account, not one profile.

Every HTTP client of the same account on the same host takes its tokens from one bucket, so
two profiles of one Rossum user stay under the user's 10 requests/s together.
"""

from __future__ import annotations

import threading
from collections.abc import Callable


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
        self.rate = rate
        self.capacity = max(1.0, rate)
        self._tokens = self.capacity
        self._stamp = clock()

    def slow_down(self, rate: float) -> None:
        """Lower the rate (another client of the same account asked for less)."""
        with self._lock:
            if rate < self.rate:
                self.rate = rate
                self.capacity = max(1.0, rate)
                self._tokens = min(self._tokens, self.capacity)

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


def reset_shared_limiters() -> None:
    """Forget every account's limiter (tests with their own clocks)."""
    with _LIMITERS_LOCK:
        _LIMITERS.clear()
