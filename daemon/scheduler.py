"""APScheduler wiring of the periodic jobs: source rescans, retry/lease sweeps, the pickup of
``docrelay_corrections`` rows, the watchdog.

Jobs coalesce and never overlap: after a suspend, each runs once on resume, not once per
missed interval (a run is only counted as missed when it is more than an hour late).

On a store shared by several processes each job that works the store (the sweep's lease
expiry, outage checks, retention, outcome following, the corrections pickup) runs in one
process at a time: the holder of the lease ``job:<id>``, renewed at each run and freed by the
others when the holder's heartbeat stops. What concerns this process only (waking its own
pools, releasing its own sources' files, the watchdog ping) runs everywhere.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from apscheduler.events import (
    EVENT_JOB_ERROR,
    EVENT_JOB_EXECUTED,
    EVENT_JOB_MISSED,
    JobExecutionEvent,
)
from apscheduler.schedulers.background import BackgroundScheduler
from sqlalchemy.exc import OperationalError

from connectors.base import SourceSettings, Vendor
from connectors.errors import StoreUnavailable
from daemon import notify
from daemon.pipeline import corrections as corrections_mod
from daemon.pipeline import ledger
from daemon.pipeline.admin import purge_expired

if TYPE_CHECKING:
    from daemon.runtime import Daemon

log = logging.getLogger(__name__)

OUTAGE_INTERVAL = 2.0
"""Seconds between looks at open circuits (wake for a probe) and long outages (move to the
route's fallback)."""

JOB_DEFAULTS = {"coalesce": True, "max_instances": 1, "misfire_grace_time": 3600}


@dataclass
class JobCounters:
    """What the periodic jobs did: runs per job, runs skipped (the process was suspended or
    overloaded past the grace time) and runs that raised. Shown in /metrics, so a stuck rescan
    or sweep is visible, and so is the single catch-up run after a suspend."""

    EVENTS = EVENT_JOB_EXECUTED | EVENT_JOB_MISSED | EVENT_JOB_ERROR

    runs: dict[str, int] = field(default_factory=dict)
    missed: int = 0
    errors: int = 0

    def listener(self, event: JobExecutionEvent) -> None:
        if event.code == EVENT_JOB_MISSED:
            self.missed += 1
            log.warning("scheduled job %s missed its run time", event.job_id)
            return
        self.runs[event.job_id] = self.runs.get(event.job_id, 0) + 1
        if event.code == EVENT_JOB_ERROR:
            self.errors += 1
            log.error("scheduled job %s failed", event.job_id, exc_info=event.exception)


def leads(daemon: Daemon, lease: str, every: float) -> bool:
    """Whether this process runs the job of ``lease`` now (takes or renews the lease)."""
    assert daemon.intake is not None
    seconds = max(daemon.config.core.pipeline.lease_seconds, 3 * every)
    return daemon.intake.hold_lease(lease, seconds)


def held(daemon: Daemon, job_id: str, every: float, job: Callable[[], None]) -> Callable[[], None]:
    """``job``, run only by the process that holds the lease ``job:<job_id>``."""

    def run() -> None:
        try:
            if not leads(daemon, f"job:{job_id}", every):
                return  # another process of this store runs it
        except (StoreUnavailable, OperationalError) as exc:
            log.warning("%s skipped, the store is unavailable: %s", job_id, exc)
            return
        job()

    return run


def build_scheduler(daemon: Daemon) -> BackgroundScheduler:
    scheduler = BackgroundScheduler(job_defaults=JOB_DEFAULTS, timezone="UTC")
    scheduler.add_listener(daemon.job_counters.listener, JobCounters.EVENTS)

    for source in daemon.sources:
        settings = source.settings
        interval = settings.rescan_interval if isinstance(settings, SourceSettings) else 60.0
        scheduler.add_job(
            source.scan,
            "interval",
            seconds=interval,
            id=f"rescan:{source.context.name}",
            name=f"rescan {source.context.name}",
        )

    sweep_every = daemon.config.core.pipeline.sweep_interval

    def sweep() -> None:
        try:
            if daemon.intake is not None:
                daemon.intake.flush_releases()
            if leads(daemon, "job:sweep", sweep_every):
                with daemon.engine.begin() as conn:
                    if expired := ledger.expire_leases(conn):
                        log.warning("%d lease(s) ran out; their work is taken over", expired)
        except (StoreUnavailable, OperationalError) as exc:  # locked, or unreachable
            log.warning("sweep skipped, the store is unavailable: %s", getattr(exc, "orig", exc))
        daemon.wake_all()

    scheduler.add_job(
        sweep,
        "interval",
        seconds=sweep_every,
        id="sweep",
        name="retry and lease sweep",
    )

    def check_outages() -> None:
        try:
            daemon.check_outages()
        except OperationalError as exc:
            log.warning("outage check skipped, the store is unavailable: %s", exc.orig)

    scheduler.add_job(
        held(daemon, "outages", OUTAGE_INTERVAL, check_outages),
        "interval",
        seconds=OUTAGE_INTERVAL,
        id="outages",
        name="circuit probes, and moves on along fallback chains (outages, deadlines)",
    )
    for profile, vendor in daemon.vendors.items():
        if vendor.retention_days() is None:
            continue

        def purge(profile: str = profile, vendor: Vendor = vendor) -> None:
            if count := purge_expired(daemon.engine, profile, vendor):
                log.info("retention: deleted %d document(s) at %s", count, profile)

        scheduler.add_job(
            held(daemon, f"retention:{profile}", 3600.0, purge),
            "interval",
            hours=1,
            id=f"retention:{profile}",
            name=f"retention {profile}",
        )
    for name, follower in daemon.outcome_followers.items():

        def follow(name: str = name, run: Callable[[], int] = follower.run_once) -> None:
            if name in daemon.paused_destinations:
                return  # needs re-auth: asking would only fail again
            if count := run():
                log.info("%s: %d record(s) came to a final outcome", name, count)

        scheduler.add_job(
            held(daemon, f"follow:{name}", follower.interval, follow), "interval",
            seconds=follower.interval, id=f"follow:{name}", name=f"follow {name}",
        )  # fmt: skip
    if (every := daemon.config.core.pipeline.corrections_interval) > 0:

        def corrections() -> None:
            try:
                if not leads(daemon, corrections_mod.LEASE, every):
                    return  # another process on this store picks them up
                done = corrections_mod.pick_up(daemon.engine, vendors=daemon.vendors)
            except (StoreUnavailable, OperationalError) as exc:
                log.warning("corrections pickup skipped, the store is unavailable: %s", exc)
                return
            if done.applied:
                daemon.wake_all()  # the feedback and the new export versions go out now

        scheduler.add_job(
            corrections,
            "interval",
            seconds=every,
            id="corrections",
            name="docrelay_corrections pickup",
        )
    if (interval := notify.watchdog_interval()) is not None:

        def ping() -> None:
            if daemon.healthy():
                notify.notify("WATCHDOG=1")
            else:
                log.error("not healthy: withholding the systemd watchdog ping")

        scheduler.add_job(ping, "interval", seconds=interval, id="watchdog", name="watchdog")
    return scheduler
