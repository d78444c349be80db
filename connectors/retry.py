"""The one backoff policy: exponential with "equal jitter", never sooner than a capped
Retry-After.

Both retry loops use it: the HTTP kit's retries inside one call (``connectors.http``) and the
pipeline's persisted retries of a whole step (``daemon.pipeline.retry``), so a vendor sees the
same spacing from either. Half of each delay is fixed and half random, so a burst of failures
spreads out but never comes straight back.

The in-call loop itself is tenacity's (``connectors.http``); this module only says how long to
wait, because tenacity's own ``wait_exponential_jitter`` adds its jitter on top of the full
delay and knows nothing of Retry-After, which must set a floor under the delay.
"""

from __future__ import annotations

import email.utils
import math
import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime


@dataclass(frozen=True, slots=True)
class Backoff:
    """Delays for retry number 1, 2, …: ``initial · factor^(n-1)``, at most ``maximum``."""

    initial: float = 0.5
    maximum: float = 30.0
    retry_after_max: float = 60.0
    """The longest Retry-After honoured; a vendor asking for more gets this."""
    factor: float = 2.0

    def ceiling(self, attempt: int) -> float:
        """The delay before retry ``attempt`` (1-based) without jitter."""
        return min(self.maximum, self.initial * self.factor ** max(0, attempt - 1))

    def delay(
        self,
        attempt: int,
        retry_after: float | None = None,
        *,
        jitter: Callable[[], float] = random.random,
    ) -> float:
        """Seconds to wait before retry ``attempt``; ``jitter`` returns a number in [0, 1)."""
        ceiling = self.ceiling(attempt)
        delay = ceiling / 2 + jitter() * ceiling / 2
        if retry_after is not None:
            delay = max(delay, min(retry_after, self.retry_after_max))
        return delay


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds from a ``Retry-After`` header: delta-seconds or an HTTP date (past dates → 0)."""
    if not value:
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - (now or datetime.now(UTC))).total_seconds()
    if not math.isfinite(seconds):
        return None
    return max(0.0, seconds)
