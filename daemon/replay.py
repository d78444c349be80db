"""Replay protection for webhooks: a vendor's event id seen twice is acted on once, and a call
whose signed timestamp is too old (or too far ahead) is refused.

A repeat within the window is answered 2xx (the vendor retried because our first answer got
lost) but not acted on again. The memory is per process and bounded: a hint is only a hint
(DESIGN invariant 3), so a repeat that slips through after a restart costs one extra fetch.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence

from connectors.base import WebhookHint
from connectors.errors import WebhookRejected


class ReplayedWebhook(WebhookRejected):
    """A signed timestamp outside the tolerance: an old call played again (or a clock far
    off). Its own class so ``/metrics`` counts it as ``replayed``, not as forged."""


class ReplayGuard:
    def __init__(
        self,
        *,
        window: float = 600.0,
        tolerance: float = 300.0,
        capacity: int = 100_000,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.window = window
        """Seconds an event id is remembered."""
        self.tolerance = tolerance
        """Seconds a signed timestamp may lie behind or ahead of our clock."""
        self.capacity = capacity
        self._clock = clock
        self._seen: OrderedDict[tuple[str, str], float] = OrderedDict()
        self._lock = threading.Lock()
        self.repeats = 0
        """Calls ignored as repeats so far."""

    def admit(self, profile: str, hints: Sequence[WebhookHint]) -> list[WebhookHint]:
        """The hints to act on. Raises ``ReplayedWebhook`` (401) for a stale or future
        timestamp; drops hints whose event id was seen within the window."""
        now = self._clock()
        for hint in hints:
            if hint.sent_at is not None and abs(now - hint.sent_at) > self.tolerance:
                age = now - hint.sent_at
                when = f"{age:.0f} s old" if age > 0 else f"{-age:.0f} s in the future"
                raise ReplayedWebhook(
                    f"webhook timestamp is {when} (tolerance {self.tolerance:g} s)",
                    status_code=401,
                )
        with self._lock:
            self._forget(now)
            seen = self._seen
            fresh = [
                h for h in hints if h.delivery_id is None or (profile, h.delivery_id) not in seen
            ]
            self.repeats += len(hints) - len(fresh)
            for hint in fresh:  # several hints of one call may share its id
                if hint.delivery_id is not None:
                    seen[(profile, hint.delivery_id)] = now
            while len(self._seen) > self.capacity:
                self._seen.popitem(last=False)
        return fresh

    def _forget(self, now: float) -> None:
        while self._seen:
            key, seen_at = next(iter(self._seen.items()))
            if now - seen_at <= self.window:
                return
            del self._seen[key]
