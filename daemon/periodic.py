"""A background thread that does one thing every few seconds until it is stopped.

For the few jobs that must not ride on the scheduler, whose timing is the wall clock: watching
that very clock, and renewing leases while a long vendor call runs. The wait is
``Event.wait``, on the monotonic clock, so a wall-clock jump neither stalls nor hurries it.
"""

from __future__ import annotations

import logging
import threading

log = logging.getLogger(__name__)


class Periodic:
    """Calls ``tick()`` every ``interval`` seconds between ``start()`` and ``stop()``."""

    def __init__(self, name: str, interval: float) -> None:
        self.interval = interval
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)

    def tick(self) -> None:
        """One round; an exception is logged and the next round runs as planned."""

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        if self._thread.is_alive():
            self._thread.join(5)

    def _loop(self) -> None:
        while not self._stopping.wait(self.interval):
            try:
                self.tick()
            except Exception:
                log.exception("%s: round failed; the next one runs as planned", self._thread.name)
