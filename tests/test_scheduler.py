"""The periodic jobs' bookkeeping: skipped and failing runs are counted for /metrics."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

from apscheduler.schedulers.background import BackgroundScheduler

from daemon.scheduler import JOB_DEFAULTS, JobCounters
from tests.daemon_proc import wait_until


def test_r28_failing_and_missed_runs_are_counted():
    counters = JobCounters()
    scheduler = BackgroundScheduler(
        job_defaults={**JOB_DEFAULTS, "misfire_grace_time": 1}, timezone="UTC"
    )
    scheduler.add_listener(counters.listener, JobCounters.EVENTS)
    ran = threading.Event()

    def broken() -> None:
        ran.set()
        raise RuntimeError("rescan broke")

    scheduler.add_job(broken, "date", run_date=datetime.now(UTC) + timedelta(seconds=0.2))
    # A run due an hour ago, past the grace time: what a suspended machine sees on resume.
    scheduler.add_job(lambda: None, "date", run_date=datetime.now(UTC) - timedelta(hours=1))
    scheduler.start()
    try:
        assert ran.wait(5)
        wait_until(lambda: counters.errors >= 1, 5, what="the error event")
    finally:
        scheduler.shutdown(wait=True)
    assert counters.errors == 1
    assert counters.missed == 1
    assert sum(counters.runs.values()) == 1  # the failed run; the missed one never ran
