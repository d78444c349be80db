"""Wall-clock jumps.

Due times and leases in the store are wall-clock timestamps, because every process sharing the
store must read them alike; APScheduler also plans its jobs on the wall clock. A clock set back
by an hour (a wrong clock corrected at boot, a VM restored from a snapshot) would then hold back
every waiting retry, poll and periodic job by that hour. This watch compares the wall clock with
the monotonic one and, when the wall clock was set back, tells the daemon by how much, so it can
move its waiting times back with it. A jump forward needs nothing: what was waiting falls due
sooner, and a lease that looks run out while its step still runs is guarded in the process
(`workers.InHand`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from daemon.periodic import Periodic

log = logging.getLogger(__name__)


class ClockWatch(Periodic):
    """Looks every ``interval`` seconds (on the monotonic clock) whether the wall clock jumped."""

    def __init__(
        self,
        on_set_back: Callable[[float], None],
        *,
        interval: float = 5.0,
        threshold: float = 5.0,
        wall: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.on_set_back = on_set_back
        self.interval = interval
        self.threshold = threshold
        self._wall = wall
        self._monotonic = monotonic
        self._last = (wall(), monotonic())
        super().__init__("clock", interval)

    def jump(self) -> float:
        """Seconds the wall clock moved apart from the monotonic clock since the last look
        (negative: set back); 0.0 under the threshold, which absorbs NTP's slewing."""
        wall, mono = self._wall(), self._monotonic()
        last_wall, last_mono = self._last
        self._last = (wall, mono)
        drift = (wall - last_wall) - (mono - last_mono)
        return drift if abs(drift) >= self.threshold else 0.0

    def check(self) -> float:
        """One look; calls ``on_set_back(seconds)`` when the clock was set back."""
        drift = self.jump()
        if drift < 0:
            log.warning("the wall clock was set back by %.0f s; moving waiting times back", -drift)
            self.on_set_back(-drift)
        elif drift > 0:
            log.info("the wall clock moved %.0f s ahead of the monotonic clock", drift)
        return drift

    def tick(self) -> None:
        self.check()
