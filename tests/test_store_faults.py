"""The store under faults from outside the daemon (RELIABILITY 24 and 25)."""

from __future__ import annotations

import sqlite3
import time

import httpx
import pytest

from tests.daemon_proc import DaemonProcess, wait_until, write_config
from tests.invoices import random_spec, render_pdf

pytestmark = pytest.mark.e2e


def test_an_external_exclusive_lock_delays_work_but_loses_nothing(tmp_path):
    """Another process holds `BEGIN EXCLUSIVE` on the SQLite store for 10 s, three times the
    busy timeout, while documents are at every stage: writers wait, retry, and every document
    still ends exported once; the log says so in warnings, not tracebacks."""
    config = write_config(tmp_path)
    config.write_text(config.read_text().replace("[store]\n", "[store]\nbusy_timeout = 3\n", 1))
    inbox, outbox = tmp_path / "inbox", tmp_path / "outbox"
    daemon = DaemonProcess(config).start()
    try:
        for seed in range(3):
            (inbox / f"before-{seed}.pdf").write_bytes(render_pdf(random_spec(seed)))
        wait_until(lambda: len(list(outbox.glob("*.json"))) == 3, 30, what="the first exports")
        db = tmp_path / "var" / "docrelay.db"
        for seed in range(3, 13):
            (inbox / f"during-{seed}.pdf").write_bytes(render_pdf(random_spec(seed)))
        locker = sqlite3.connect(db, isolation_level=None)

        def documents() -> int:
            return locker.execute("SELECT COUNT(*) FROM documents").fetchone()[0]

        wait_until(lambda: documents() > 3, 30, interval=0.01, what="the next document row")
        locker.execute("BEGIN EXCLUSIVE")
        try:
            exported = len(list(outbox.glob("*.json")))
            time.sleep(10)
            assert documents() < 13, "the lock came too late to meet work in progress"
            assert len(list(outbox.glob("*.json"))) <= exported + 1  # one push may be underway
        finally:
            locker.execute("ROLLBACK")
            locker.close()
        wait_until(lambda: len(list(outbox.glob("*.json"))) == 13, 60, what="every export")
        assert sorted(p.name for p in (inbox / "processed").iterdir()) == sorted(
            [f"before-{s}.pdf" for s in range(3)] + [f"during-{s}.pdf" for s in range(3, 13)]
        )
        assert httpx.get(f"{daemon.url}/healthz").status_code == 200
        with sqlite3.connect(tmp_path / "var" / "docrelay.db") as conn:
            states = conn.execute(
                "SELECT state, COUNT(*) FROM deliveries GROUP BY state"
            ).fetchall()
        assert states == [("delivered", 13)]
    finally:
        assert daemon.stop() == 0
    log = (tmp_path / "daemon.log").read_text()
    tracebacks = log.count("Traceback (most recent call last)")
    assert tracebacks <= 1, log[-5000:]
