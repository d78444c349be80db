"""Work one process cannot take at once wakes the others (PostgreSQL ``LISTEN``/``NOTIFY``).

Processes sharing a store claim from the same tables, but only the one that queued a
submission wakes its own pools at once; the others would find it when their idle sleep ends.
Telling every process of every document costs more than it brings: they all wake for it, one
claims it, the others' claims come back empty (measured: 4.5 times the transactions per
document with four processes). So work is announced only when it overflows: the process that
queued it has no idle thread in that profile's pool. Then ``NOTIFY docrelay_work,
'<profile>'`` goes out (at most every ``OVERFLOW_EVERY`` seconds per profile) and every process
listening on a connection of its own wakes that profile's pool. A lost notification costs only
latency: pools still look at the queue when their sleep ends and at every sweep. SQLite has
one process: nothing to send.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from sqlalchemy import Connection, Engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError

log = logging.getLogger(__name__)

CHANNEL = "docrelay_work"
NOTIFY = text(f"SELECT pg_notify('{CHANNEL}', :topic)")


OVERFLOW_EVERY = 0.1
"""Seconds between two announcements of one profile's overflow."""


class Overflow:
    """Announces a profile's work to the other processes, at most every ``OVERFLOW_EVERY``."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._last: dict[str, float] = {}
        self._lock = threading.Lock()
        self.sent = 0

    def __call__(self, topic: str) -> None:
        now = time.monotonic()
        with self._lock:
            if now - self._last.get(topic, -OVERFLOW_EVERY) < OVERFLOW_EVERY:
                return
            self._last[topic] = now
        try:
            with self.engine.begin() as conn:
                announce(conn, topic)
            self.sent += 1
        except OperationalError as exc:  # the others find it at their next look
            log.debug("could not announce work for %s: %s", topic, exc.orig)


def announce(conn: Connection, topic: str) -> None:
    """Tell the other processes, at this transaction's commit, that ``topic``'s pool has work."""
    if conn.dialect.name == "postgresql":
        conn.execute(NOTIFY, {"topic": topic})


class Listener:
    """A thread holding one ``LISTEN`` connection, calling ``on_topic`` for each notification;
    it reconnects after an error (with a pause) until stopped."""

    def __init__(self, url: str, on_topic: Callable[[str], None]) -> None:
        parsed = make_url(url)
        self.conninfo = parsed.set(drivername="postgresql").render_as_string(hide_password=False)
        self.on_topic = on_topic
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="wakeups", daemon=True)
        self.received = 0

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        if self._thread.is_alive():
            self._thread.join(3)

    def _run(self) -> None:
        import psycopg

        pause = 1.0
        while not self._stopping.is_set():
            try:
                with psycopg.connect(self.conninfo, autocommit=True, connect_timeout=10) as conn:
                    conn.execute(f"LISTEN {CHANNEL}")
                    pause = 1.0
                    while not self._stopping.is_set():
                        for notify in conn.notifies(timeout=1.0):
                            self.received += 1
                            self.on_topic(notify.payload)
            except Exception as exc:  # the store went away: pools still sleep-and-look
                log.warning("wake-ups from other processes paused: %s", exc)
                self._stopping.wait(pause)
                pause = min(pause * 2, 30.0)
