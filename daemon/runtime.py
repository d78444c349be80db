"""The running service: wires store, connectors, worker pools, scheduler and web app together."""

from __future__ import annotations

import dataclasses
import errno
import fcntl
import logging
import os
import queue
import secrets
import socket
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from sqlalchemy import Engine, select, text, update
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError

from connectors import registry
from connectors.base import (
    ConnectorContext,
    ConnectorMetrics,
    Destination,
    Source,
    Vendor,
    WebhookHint,
)
from connectors.http import reporting_to
from connectors.ratelimit import share_among
from daemon.clock import ClockWatch
from daemon.config import Config, Route
from daemon.metrics import DaemonMetrics
from daemon.pipeline import breaker as breaker_mod
from daemon.pipeline import budgets, fallbacks, ledger, processes, wakeups
from daemon.pipeline.deliveries import DeliveryRunner
from daemon.pipeline.feedback import ACTIVE as FEEDBACK_ACTIVE
from daemon.pipeline.feedback import FeedbackRunner, feedback_t, queue_export_status
from daemon.pipeline.intake import Intake
from daemon.pipeline.outcomes import OutcomeFollower
from daemon.pipeline.routing import route_name
from daemon.pipeline.states import DELIVERY_ACTIVE
from daemon.pipeline.submissions import Hooks, SubmissionRunner, vendor_settings
from daemon.pipeline.workers import InHand, LeaseKeeper, WorkerPool
from daemon.replay import ReplayGuard
from daemon.scheduler import JobCounters, build_scheduler
from daemon.store import engine as store_engine
from daemon.store.blobs import BlobStore
from daemon.store.models import ProfileHealth, SubmissionState, utcnow

log = logging.getLogger(__name__)

health_t = ProfileHealth.__table__


class StoreLocked(RuntimeError):
    pass


def owner_id() -> str:
    """Lease owner: host, pid and a nonce (a restarted process never reuses an old identity)."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


def lock_sqlite_store(url: str) -> IO[str] | None:
    """One process owns a SQLite queue: hold an exclusive lock file beside the database."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or not parsed.database:
        return None
    if parsed.database == ":memory:":
        return None
    lock_path = Path(parsed.database + ".lock")
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    handle = lock_path.open("a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "unknown"
        handle.close()
        raise StoreLocked(
            f"another docrelay process (pid {holder}) already runs on {parsed.database}"
        ) from None
    handle.seek(0)
    handle.truncate()
    handle.write(str(os.getpid()))
    handle.flush()
    return handle


class CannotListen(RuntimeError):
    pass


def check_listen(listen: str) -> None:
    """Bind the web app's address once and let go, before anything starts: a port another
    process holds is one clear error (``CannotListen``), not a traceback after the sources
    have begun taking files. Binds as uvicorn will (``SO_REUSEADDR``)."""
    host, _, port = listen.rpartition(":")
    if port == "0":
        return
    host = host.strip("[]")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, int(port)))
        except OSError as exc:
            hint = " (another docrelay or another program)" if exc.errno == errno.EADDRINUSE else ""
            raise CannotListen(
                f"web.listen {listen}: {exc.strerror or exc}{hint}; nothing started"
            ) from None


class Daemon:
    """Everything one ``docrelay run`` process owns."""

    def __init__(self, config: Config, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self.clock = clock
        self.owner = owner_id()
        core = config.core
        self.engine: Engine = store_engine.make_engine(
            core.store.url,
            busy_timeout_ms=int(core.store.busy_timeout * 1000),
            pool_size=core.store.pool_size,
        )
        self.reader = store_engine.reader(self.engine)
        self.blobs = BlobStore(core.store.blob_dir)
        self.state_dir = core.store.blob_dir.parent / "state"
        self.vendors: dict[str, Vendor] = {}
        self.destinations: dict[str, Destination] = {}
        self.sources: list[Source] = []
        self.pools: dict[str, WorkerPool] = {}
        self.delivery_pools: dict[str, WorkerPool] = {}
        self.feedback_pools: dict[str, WorkerPool] = {}
        self.feedback_runners: dict[str, FeedbackRunner] = {}
        self.follow_pools: dict[str, WorkerPool] = {}
        self.submission_runners: dict[str, SubmissionRunner] = {}
        self.delivery_runners: dict[str, DeliveryRunner] = {}
        self.outcome_followers: dict[str, OutcomeFollower] = {}
        self.lease_keeper = LeaseKeeper(
            self.engine, self.owner, config.core.pipeline.lease_seconds, self._hands
        )
        self.heartbeat = processes.Heartbeat(
            self.engine, self.owner, core.pipeline.heartbeat_interval, on_count=share_among
        )
        shared = self.engine.dialect.name == "postgresql"
        self.wakeups = wakeups.Listener(core.store.url, self.wake_profile) if shared else None
        """Work the other processes of a PostgreSQL store cannot take wakes this one's pools."""
        self.overflow = wakeups.Overflow(self.engine) if shared else None
        self._hints: queue.SimpleQueue[tuple[str, list[WebhookHint]] | None] = queue.SimpleQueue()
        self._hinter = threading.Thread(target=self._apply_hints, name="hints", daemon=True)
        self.replay_guard = ReplayGuard()
        self.paused: dict[str, str] = {}
        """Profiles whose credentials were refused, with the reason."""
        self.paused_destinations: dict[str, str] = {}
        """Destinations whose credentials were refused: their deliveries wait (until a
        restart with fixed credentials), the other destinations go on."""
        self.intake: Intake | None = None
        self.scheduler: Any = None
        self.job_counters = JobCounters()
        self.metrics = DaemonMetrics(self)
        """This daemon's registry for ``/metrics`` (its own, never the global one)."""
        self.clock_watch = ClockWatch(self._clock_set_back)
        self.web: Any = None
        self.ready = threading.Event()
        self.started_at = time.time()
        self.instance = {
            "id": secrets.token_hex(8),
            "store": store_engine.store_identity(core.store.url),
            "pid": os.getpid(),
        }
        """Which daemon this is, in ``/healthz``: new at every start, and the store it runs
        on, so ``docrelay status`` can tell its own daemon from another one on the port."""
        self._lock: IO[str] | None = None
        self._reloading = False
        """A reload swaps the pools: health does not count them meanwhile."""
        self._draining: list[InHand] = []
        """Rows the pools of the configuration before a reload still work on (their
        steps ran past the pools' stop): the lease keeper renews them until they end."""

    # ------------------------------------------------------------------ set-up

    def open(self) -> None:
        """Lock, migrate and build the connectors; nothing runs yet."""
        self._lock = lock_sqlite_store(self.config.core.store.url)
        if self.config.core.web.enabled:
            check_listen(self.config.core.web.listen)
        store_engine.ensure_schema(self.engine)
        # Other processes may share the blob directory: their temporary files are recent.
        self.blobs.prepare(older_than=None if self._lock is not None else 3600.0)
        self.blobs.bind_to_store(self.engine)
        self._recover_leases()
        self.heartbeat.register()
        with self.engine.begin() as conn:  # new process, maybe new credentials: try again
            conn.execute(health_t.delete())
        self.vendors, self.destinations, self.sources = self._build(self.config)
        self.intake = Intake(
            self.engine, self.blobs, self.config, on_queued=self.queued, owner=self.owner
        )

    def _build(
        self, config: Config, keep: Config | None = None
    ) -> tuple[dict[str, Vendor], dict[str, Destination], list[Source]]:
        """The connectors of ``config``; with ``keep`` (the running configuration), the
        vendors and destinations whose settings did not change are the running instances
        (their tokens, rate limits and breakers go on), and so are the unchanged sources (which
        keep running); a changed source is a new instance (a source is started once). On an
        error the vendors and destinations built here are closed again."""
        built: list[Vendor | Destination] = []
        vendors: dict[str, Vendor] = {}
        destinations: dict[str, Destination] = {}
        sources: list[Source] = []
        try:
            for name, settings in config.vendors.items():
                if keep is not None and keep.vendors.get(name) == settings:
                    vendors[name] = self.vendors[name]
                    continue
                context = self._context(name, self.metrics.for_vendor(name), config)
                with reporting_to(context.metrics):  # its HTTP clients report under its name
                    vendors[name] = registry.load("vendor", settings.kind)(settings, context)
                built.append(vendors[name])
            for name, settings in config.destinations.items():
                if keep is not None and keep.destinations.get(name) == settings:
                    destinations[name] = self.destinations[name]
                    continue
                context = self._context(name, self.metrics.for_destination(name), config)
                with reporting_to(context.metrics):
                    destinations[name] = registry.load("destination", settings.kind)(
                        settings, context
                    )
                built.append(destinations[name])
            running = {source.context.name: source for source in self.sources}
            for settings in config.sources:
                same = running.get(settings.name) if keep is not None else None
                if same is not None and same.settings == settings:
                    sources.append(same)  # goes on running
                    continue
                cls = registry.load("source", settings.kind)
                metrics = self.metrics.for_source(settings.name)
                context = self._context(settings.name, metrics, config)
                with reporting_to(context.metrics):
                    sources.append(cls(settings, context))
        except BaseException:
            for connector in built:
                connector.close()
            raise
        return vendors, destinations, sources

    def _context(
        self, name: str, metrics: ConnectorMetrics, config: Config | None = None
    ) -> ConnectorContext:
        return ConnectorContext(
            name=name,
            data_dir=self.state_dir / name,
            clock=self.clock,
            public_url=(config or self.config).core.web.callback_base(),
            metrics=metrics,
        )

    def _recover_leases(self) -> None:
        """Free the leases of processes that are gone: all of them for an owned SQLite store;
        on a shared store those of processes whose heartbeat stopped (the others' leases are
        theirs; a lease of a process that left no row runs out as usual)."""
        with self.engine.begin() as conn:
            if self._lock is not None:
                if released := ledger.release_dead_owners(conn, ledger.lease_owners(conn)):
                    log.info("recovered %d leases left by a previous run", released)
                processes.reap(conn, actor="recovery")
                return
            processes.reap(conn, actor="recovery")
            owners = ledger.lease_owners(conn)
            if released := ledger.release_dead_owners(conn, processes.owners_gone(conn, owners)):
                log.info("recovered %d leases of processes that had stopped", released)

    # ------------------------------------------------------------------ running

    def start(self) -> None:
        self._start_pools()
        self.lease_keeper.start()
        self.heartbeat.start()
        if self.wakeups is not None:
            self.wakeups.start()
        self._hinter.start()
        assert self.intake is not None
        for source in self.sources:
            source.start(self.intake)
        self.scheduler = build_scheduler(self)
        self.scheduler.start()
        self.clock_watch.start()
        if self.config.core.web.enabled:
            from daemon.web import WebServer

            self.web = WebServer(self)
            self.web.start()
        self.ready.set()

    def _start_pools(self) -> None:
        """Runners and worker pools for every vendor profile and destination of the config."""
        settings = self.config.core.pipeline
        self.pools, self.follow_pools = {}, {}
        self.delivery_pools, self.feedback_pools = {}, {}
        self.feedback_runners, self.submission_runners = {}, {}
        self.delivery_runners = runners = {
            name: DeliveryRunner(
                engine=self.engine,
                destination=destination,
                name=name,
                settings=settings,
                blobs=self.blobs,
                on_auth_failed=self.pause_destination,
                on_final=self._delivery_ended,
            )
            for name, destination in self.destinations.items()
        }
        self.outcome_followers = {
            name: OutcomeFollower(
                engine=self.engine,
                destination=destination,
                name=name,
                interval=interval,
                vendors=self.vendors,
                reports_export_status=self._reports_export_status,
                changed=self._outcomes_changed,
            )
            for name, destination in self.destinations.items()
            if (interval := destination.follow_interval())
        }
        hooks = Hooks(
            inline={n: r for n, r in runners.items() if r.destination.inline},
            wake_deliveries=self.wake_destination,
            wake_profile=self.wake_profile,
            auth_failed=self.pause_profile,
            rejected=self.tell_source_rejected,
            adopt_delivery=lambda name, item: self.delivery_pools[name].adopt(item),
            route=self.route_named,
            moved=self.moved_on,
            budget_held=lambda profile, limit: self.metrics.budget_exhausted.labels(
                profile, limit
            ).inc(),
        )
        for name, delivery_runner in runners.items():
            # A destination may set its own number of threads (a webhook's ``concurrency``).
            own = getattr(delivery_runner.destination.settings, "concurrency", None)
            self.delivery_pools[name] = self._outbox_pool(
                f"dest-{name}",
                ledger.deliveries.c.destination,
                name,
                DELIVERY_ACTIVE,
                order_by=(ledger.deliveries.c.next_attempt_at, ledger.deliveries.c.id),
                run=delivery_runner.run,
                size=own or settings.delivery_concurrency,
                paused=lambda name=name: name in self.paused_destinations,
            )
            delivery_runner.adopt = self.delivery_pools[name].adopt
        for name, vendor in self.vendors.items():
            runner = SubmissionRunner(
                engine=self.engine,
                blobs=self.blobs,
                vendor=vendor,
                profile=name,
                vendors=self.vendors,
                settings=settings,
                hooks=hooks,
            )
            self.submission_runners[name] = runner
            if runner.breaker.enabled:  # shown as closed until it opens
                with self.engine.begin() as conn:
                    breaker_mod.ensure(conn, name, utcnow())
            concurrency = runner.profile_settings.concurrency
            self.pools[name] = self._vendor_pool(f"vendor-{name}", name, runner, concurrency)
            if vendor.capabilities.webhooks:
                # Threads that only finish documents the vendor has: a webhook's fetch never
                # waits behind a queue of uploads. Half as many as upload: a finish carries the
                # inline export and its report to the vendor (issue 17: a quarter queued them).
                self.follow_pools[name] = self._vendor_pool(
                    f"follow-{name}", name, runner, max(2, concurrency // 2), ledger.FOLLOW
                )
                self.pools[name].hurried_to = self.follow_pools[name]
        for name, vendor in self.vendors.items():
            caps = vendor.capabilities
            if not (caps.feedback or caps.export_status):
                continue
            feedback_runner = FeedbackRunner(
                engine=self.engine, vendor=vendor, profile=name, settings=settings
            )
            self.feedback_runners[name] = feedback_runner
            self.feedback_pools[name] = self._outbox_pool(
                f"feedback-{name}",
                feedback_t.c.profile,
                name,
                FEEDBACK_ACTIVE,
                order_by=(feedback_t.c.id,),
                run=feedback_runner.run,
                size=1,
                paused=lambda name=name: name in self.paused,
            )
        for pool in self._all_pools():
            pool.start()

    def stop(self) -> None:
        """Stop taking work, finish the steps in flight, give back every lease."""
        self.ready.clear()
        self.clock_watch.stop()
        if self.wakeups is not None:
            self.wakeups.stop()
        if self.scheduler is not None:
            self.scheduler.shutdown(wait=False)
        for source in self.sources:
            source.stop()
        if self._hinter.is_alive():
            self._hints.put(None)
            self._hinter.join(5)
        self._stop_pools()
        self.lease_keeper.stop()
        with self.engine.begin() as conn:
            ledger.release_leases(conn, self.owner)
        self.heartbeat.end()
        if self.intake is not None:
            self.intake.flush_releases()
        if self.web is not None:
            self.web.stop()
        for connector in [*self.vendors.values(), *self.destinations.values()]:
            connector.close()
        self.engine.dispose()
        if self._lock is not None:
            self._lock.close()

    def _stop_pools(self, timeout: float = 30.0) -> None:
        """Claim nothing new and let the steps in flight finish (every pool at once), waiting
        up to ``timeout`` seconds for each thread."""
        pools = self._all_pools()
        for pool in pools:
            pool.stop(wait=False)
        for pool in pools:
            pool.stop(timeout)

    # ------------------------------------------------------------------ reload

    def reload(self, new: Config) -> str:
        """Run ``new`` (a validated configuration) in place of the running one; returns what
        changed, for the log.

        The store engine, the web server and the lease owner stay: a changed store or
        ``[web]`` section is logged and waits for a restart. Sources whose settings changed or
        went are stopped (the others go on); every worker pool is stopped, its steps in
        flight finished, and the leases of what it had claimed but not begun given back
        (rows still in a thread's hand keep theirs and stay renewed), then the pools of the
        new configuration start. So nothing is lost or run twice: what a pool did not finish
        is claimed again, as after a restart.
        """
        old = self.config
        core = new.core
        fixed = []
        if core.store != old.core.store:
            fixed.append("[store]")
        if core.web != old.core.web:
            fixed.append("[web]")
        if fixed:
            log.warning("%s changed: takes effect at the next restart", " and ".join(fixed))
            core = core.model_copy(update={"store": old.core.store, "web": old.core.web})
            new = dataclasses.replace(new, core=core)
        summary = describe_changes(old, new)
        vendors, destinations, sources = self._build(new, keep=old)
        kept = [source for source in sources if source in self.sources]
        self._reloading = True
        try:
            if self.scheduler is not None:
                self.scheduler.shutdown(wait=True)
            for source in self.sources:
                if source not in kept:
                    source.stop()
            old_hands, old_pools = self._hands(), self._all_pools()
            # Not waiting long for a slow step: its row stays in hand (and leased) meanwhile.
            self._stop_pools(timeout=10)
            still = [hand for hand in old_hands if hand.held_for(0)]
            held = {hand.table: hand.held_for(0) for hand in still if hand.table is not None}
            self._draining = still
            assert self.intake is not None
            try:
                with self.engine.begin() as conn:
                    ledger.release_leases(conn, self.owner, keep=held, sources=False)
            except OperationalError as exc:  # they run out instead
                log.warning("reload: could not give back the leases now: %s", exc.orig)
            replaced = [
                c
                for c in [*self.vendors.values(), *self.destinations.values()]
                if c not in vendors.values() and c not in destinations.values()
            ]
            self.config = new
            self.vendors, self.destinations = vendors, destinations
            self.sources = sources
            for name in [*self.paused]:  # new credentials, or gone: try (or forget) again
                if old.vendors.get(name) != new.vendors.get(name):
                    self.paused.pop(name)
            for name in [*self.paused_destinations]:
                if old.destinations.get(name) != new.destinations.get(name):
                    self.paused_destinations.pop(name)
            changed = [
                name
                for before, after in (
                    (old.vendors, new.vendors),
                    (old.destinations, new.destinations),
                )
                for name in {*before, *after}
                if before.get(name) != after.get(name)
            ]
            if changed:  # their "needs re-authentication" was about the old settings
                try:
                    with self.engine.begin() as conn:
                        conn.execute(health_t.delete().where(health_t.c.name.in_(changed)))
                        # and their held documents about the old budget: check them again
                        budgets.recheck_held(conn, changed, utcnow())
                except OperationalError as exc:
                    log.warning("reload: could not clear the old health records: %s", exc.orig)
            if any(pool.alive for pool in old_pools):  # close them when those steps end
                threading.Thread(
                    target=_close_after,
                    args=(old_pools, replaced),
                    name="reload-close",
                    daemon=True,
                ).start()
            else:
                for connector in replaced:
                    connector.close()
            self.intake.reconfigure(new)
            if new.core.pipeline.lease_seconds != old.core.pipeline.lease_seconds:
                self.lease_keeper.stop()
                self.lease_keeper = LeaseKeeper(
                    self.engine, self.owner, new.core.pipeline.lease_seconds, self._hands
                )
                self.lease_keeper.start()
            self._start_pools()
            for source in self.sources:
                if source not in kept:
                    source.start(self.intake)
            self.scheduler = build_scheduler(self)
            self.scheduler.start()
        finally:
            self._reloading = False
        self.wake_all()
        return summary

    # ------------------------------------------------------------------ signals between parts

    def _clock_set_back(self, seconds: float) -> None:
        """The wall clock was set back: what waits in the store, and the periodic jobs, would
        wait the jump out. Move the store's times back and run every job now (each then keeps
        its interval from there)."""
        with self.engine.begin() as conn:
            moved = ledger.move_waiting_back(conn, seconds)
        log.warning("moved %d waiting time(s) back by %.0f s", moved, seconds)
        if self.scheduler is not None:
            now = datetime.now(UTC)
            for job in self.scheduler.get_jobs():
                job.modify(next_run_time=now)
        self.wake_all()

    def wake_profile(self, profile: str) -> None:
        if pool := self.pools.get(profile):
            pool.wake()

    def queued(self, profile: str) -> None:
        """A submission was queued here: this process's pool takes it, or, when none of its
        threads is idle, the other processes of the store are told (``wakeups``)."""
        pool = self.pools.get(profile)
        if pool is not None:
            pool.wake()
        if self.overflow is None or self.heartbeat.count < 2:
            return  # no other process to tell
        if pool is None or pool.busy >= pool.size:
            self.overflow(profile)

    def wake_destination(self, name: str) -> None:
        if pool := self.delivery_pools.get(name):
            pool.wake()

    def _outbox_pool(
        self,
        pool_name: str,
        column: Any,
        key: str,
        active: Sequence[str],
        *,
        order_by: Sequence[Any],
        run: Callable[[int, str], None],
        size: int,
        paused: Callable[[], bool] = lambda: False,
    ) -> WorkerPool:
        """A pool working the rows of one outbox table whose ``column`` is ``key``: one
        destination's deliveries, one profile's feedback."""
        table = column.table
        lease_seconds = self.config.core.pipeline.lease_seconds
        return WorkerPool(
            name=pool_name,
            size=size,
            engine=self.engine,
            owner=self.owner,
            claim=lambda conn, owner, limit: ledger.claim_due(
                conn,
                table,
                column,
                key,
                active,
                owner=owner,
                limit=limit,
                lease_seconds=lease_seconds,
                order_by=order_by,
            ),
            run=run,
            next_due=lambda conn: ledger.next_due(conn, table, column, key, active),
            paused=paused,
        )

    def _vendor_pool(
        self,
        pool_name: str,
        profile: str,
        runner: SubmissionRunner,
        size: int,
        only: frozenset[str] = ledger.ACTIVE,
    ) -> WorkerPool:
        settings = self.config.core.pipeline
        max_in_flight = runner.profile_settings.max_in_flight
        breaker = runner.breaker

        def claim(conn: ledger.Connection, owner: str, limit: int) -> list[int]:
            # An open circuit lets nothing through, a half-open one a single probe.
            if (limit := breaker.claim_limit(conn, limit)) <= 0:
                return []
            return ledger.claim_submissions(
                conn,
                profile=profile,
                owner=owner,
                limit=limit,
                lease_seconds=settings.lease_seconds,
                max_in_flight=max_in_flight,
                fresh=runner.fresh,
                only=only,
                rows=runner.claimed,
            )

        # A claim is durable before its upload starts: a lost one would let the upload be
        # made again unseen (the new claim marks it fresh). An offline vendor uploads
        # nowhere, so its claims skip the fsync: about one per document, under the write lock.
        offline = runner.vendor.capabilities.offline
        return WorkerPool(
            name=pool_name,
            size=size,
            engine=store_engine.relaxed(self.engine) if offline else self.engine,
            owner=self.owner,
            claim=claim,
            run=runner.run,
            next_due=lambda conn: ledger.next_due(
                conn,
                ledger.submissions,
                ledger.submissions.c.profile,
                profile,
                ledger.claimable_states(conn, profile, max_in_flight, only),
            ),
            paused=lambda: profile in self.paused or breaker.holding(),
        )

    def _hands(self) -> list[InHand]:
        """What every runner of this process has in hand (for the lease keeper)."""
        self._draining = [hand for hand in self._draining if hand.held_for(0)]
        return [
            *(runner.in_hand for runner in self.submission_runners.values()),
            *(runner.in_hand for runner in self.delivery_runners.values()),
            *(runner.in_hand for runner in self.feedback_runners.values()),
            *self._draining,
        ]

    def _all_pools(self) -> list[WorkerPool]:
        return [
            *self.pools.values(),
            *self.follow_pools.values(),
            *self.delivery_pools.values(),
            *self.feedback_pools.values(),
        ]

    def wake_all(self) -> None:
        for pool in self._all_pools():
            pool.wake(everyone=True)

    def wake_feedback(self, profile: str) -> None:
        if pool := self.feedback_pools.get(profile):
            pool.wake()

    def _delivery_ended(
        self,
        conn: ledger.Connection,
        delivery: Mapping[str, Any],
        ok: bool,
        reason: str | None,
        inline: Mapping[str, Any] | None,
    ) -> Callable[[], None] | None:
        """In the transaction ending a delivery: queue the export status for the vendor.

        After an inline push (``inline`` is the submission row the vendor's own worker holds)
        that worker sends it at once (the row is leased to it, so a crash before the send leaves
        it to the feedback pool); otherwise the feedback pool is woken, keeping a slow vendor
        out of the delivery threads.
        """
        if inline is not None:
            profile = inline["profile"]
        else:
            sub = ledger.submissions
            profile = conn.execute(
                select(sub.c.profile).where(sub.c.id == delivery["submission_id"])
            ).scalar_one()
        if not self._reports_export_status(profile):
            return None
        runner = None
        if inline is not None and profile not in self.paused:
            runner = self.feedback_runners.get(profile)
        lease = (self.owner, self.config.core.pipeline.lease_seconds) if runner else None
        row = queue_export_status(conn, delivery, profile, lease=lease)
        if row is None:
            return None
        if runner is None or inline is None:
            return lambda: self.wake_feedback(profile)
        known = (row, inline)

        def send_now() -> None:
            try:
                runner.run(row["id"], self.owner, known=known)
            except OperationalError:  # sent, perhaps, but not recorded: leased to us
                self.feedback_pools[profile].adopt(row["id"])

        return send_now

    def _reports_export_status(self, profile: str) -> bool:
        vendor = self.vendors.get(profile)
        return bool(
            vendor is not None
            and vendor.capabilities.export_status
            and vendor_settings(vendor).export_status
        )

    def _outcomes_changed(self, profile: str) -> None:
        """An ERP's word queued vendor feedback and perhaps new versions for the others."""
        self.wake_feedback(profile)
        for name in self.destinations:
            self.wake_destination(name)

    def pause_profile(self, profile: str, reason: str) -> None:
        """Credentials refused: hold this profile's queue, keep the others running."""
        if profile in self.paused:
            return
        self.paused[profile] = reason
        log.error("vendor profile %s needs re-authentication: %s", profile, reason)
        with self.engine.begin() as conn:
            ledger.set_health(conn, profile, "auth_failed", reason)

    def pause_destination(self, name: str, reason: str) -> None:
        """A destination refused our credentials: hold its deliveries, keep the others."""
        if name in self.paused_destinations:
            return
        self.paused_destinations[name] = reason
        log.error("destination %s needs re-authentication: %s", name, reason)
        with self.engine.begin() as conn:
            ledger.set_health(conn, name, "auth_failed", reason)

    def resume_profile(self, profile: str) -> None:
        """Credentials fixed: the held submissions are due again at once."""
        self.paused.pop(profile, None)
        sub = ledger.submissions
        with self.engine.begin() as conn:
            ledger.set_health(conn, profile, "ok")
            conn.execute(
                update(sub)
                .where(sub.c.profile == profile, sub.c.error_class == "auth")
                .values(next_attempt_at=utcnow(), error=None, error_class=None)
            )
        self.wake_profile(profile)

    def check_outages(self) -> int:
        """The outage job: wake the pools of profiles whose circuit may send a probe now, and
        move documents on along their route's chain: those waiting at a profile out for
        longer than the route's ``outage_after``, and those past the route's ``deadline``.
        Returns how many documents moved."""
        now = utcnow()
        for name, runner in self.submission_runners.items():
            view = runner.breaker.view
            if view.state != breaker_mod.CLOSED and (view.retry_at is None or view.retry_at <= now):
                self.wake_profile(name)  # a pool asleep behind the open circuit: probe
        routes = [
            (route_name(index, route), route)
            for index, route in enumerate(self.config.routes)
            if route.fallback and route.vendor in self.vendors
        ]
        if not routes:
            return 0
        kinds = {name: vendor.kind for name, vendor in self.vendors.items()}
        with self.reader.connect() as conn:
            out = breaker_mod.outages(conn)
        moves: list[tuple[fallbacks.Next, fallbacks.Move]] = []
        for name, route in routes:
            if route.deadline is not None and fallbacks.moves_on(route, "deadline"):
                moves += fallbacks.move_overdue(
                    self.engine, route=name, deadline=route.deadline, profiles=kinds,
                    owner=self.owner, avoid=out,
                )  # fmt: skip
            if not fallbacks.moves_on(route, "outage"):
                continue
            for profile in [route.vendor, *route.fallback[:-1]]:
                outage = out.get(profile)
                if outage is None or (now - outage.since).total_seconds() < route.outage_after:
                    continue
                moves += breaker_mod.move_waiting(
                    self.engine, route=name, profile=profile, outage=outage, profiles=kinds,
                    owner=self.owner, avoid=out,
                )  # fmt: skip
        for nxt, move in moves:
            self.moved_on(nxt, move)
        return len(moves)

    def moved_on(self, nxt: fallbacks.Next, move: fallbacks.Move) -> None:
        """A document moved on along its chain (committed): count it, wake who is next."""
        log.info("document %s moved on to %s: %s", nxt.document_id, nxt.profile, move.detail)
        self.metrics.fallback_moves.labels(move.metric_label).inc()
        self.wake_profile(nxt.profile)
        for destination in nxt.exports:
            self.wake_destination(destination)

    def route_named(self, name: str | None) -> Route | None:
        """The route of that name as configured now (after the last reload)."""
        if name is None or self.intake is None:
            return None
        found = self.intake.router.named(name)
        return found[1] if found is not None else None

    def tell_source_rejected(self, document_id: int, reason: str) -> None:
        """Let the document's source show a vendor's rejection (a folder copies it to failed/)."""
        from daemon.pipeline.submissions import document_ref

        docs = Intake.documents
        with self.reader.connect() as conn:
            row = conn.execute(select(docs).where(docs.c.id == document_id)).mappings().one()
        for source in self.sources:
            if source.context.name == row["source"]:
                try:
                    source.rejected(document_ref(row, self.blobs), row["source_ref"] or "", reason)
                except Exception:
                    log.exception("source %s could not record a rejection", row["source"])

    def healthy(self) -> bool:
        """The store answers, every pool still has its threads and the web app's event loop
        is not stuck."""
        try:
            with self.reader.connect() as conn:
                conn.execute(text("SELECT 1"))
        except Exception:
            return False
        if self.web is not None and not self.web.responsive():
            return False
        return self._reloading or all(p.alive for p in self._all_pools())

    def storage_health(self) -> dict[str, str]:
        """``disk_full`` (with the reason) while writes fail for want of space. Not a reason to
        withhold the watchdog ping: a restart would not make room."""
        if self.intake is None or self.intake.space_again():
            return {"state": "ok"}
        return {"state": "disk_full", "reason": self.intake.disk_full or ""}

    def poke_submission(self, profile: str, hints: Sequence[WebhookHint]) -> int:
        """Webhooks said something changed: make the submissions due now and wake a pool;
        re-open finished ones whose result the vendor says changed.

        Most calls are about documents that are finished already (the status changes our own
        confirm and export cause): they are found with a read and cost no write lock.
        """
        refs = sorted({h.vendor_ref for h in hints if h.vendor_ref is not None})
        document_ids = sorted({h.document_id for h in hints if h.document_id is not None})
        keys: dict[str, set[str]] = {}
        for h in hints:
            for key, value in h.keys.items():
                keys.setdefault(key, set()).add(value)
        changed = [h for h in hints if h.changed]
        with self.reader.connect() as conn:
            if document_ids or keys:
                ids = [
                    row.id
                    for row in ledger.hinted(
                        conn, profile, refs=refs, document_ids=document_ids, keys=keys
                    )
                ]
            else:
                ids = ledger.waiting_for(conn, profile, refs) if refs else []
            reopen = []
            if changed:
                reopen = ledger.hinted(
                    conn,
                    profile,
                    refs=[h.vendor_ref for h in changed if h.vendor_ref is not None],
                    document_ids=[h.document_id for h in changed if h.document_id is not None],
                    keys={k: [v] for h in changed for k, v in h.keys.items()},
                    states=(SubmissionState.DONE,),
                )
        runner = self.submission_runners.get(profile)
        kept = runner.kept_for(refs, document_ids, keys) if runner is not None else []
        hurried = 0
        for pool in (self.pools.get(profile), self.follow_pools.get(profile)):
            if pool is not None:  # kept for a moment: runs now, with no write
                hurried += pool.hurry([*ids, *kept])
        if not ids and not reopen:
            return hurried
        with self.engine.begin() as conn:
            poked = ledger.poke(conn, ids) if ids else 0
            for row in reopen:
                poked += ledger.reopen(
                    conn,
                    {"id": row.id, "document_id": row.document_id, "state": row.state},
                    processing_timeout=self.config.core.pipeline.processing_timeout,
                )
        if poked:
            pool = self.follow_pools.get(profile) or self.pools.get(profile)
            if pool is not None:
                pool.wake(everyone=poked > 1)
        return poked + hurried

    def hint(self, profile: str, hints: Sequence[WebhookHint]) -> None:
        """Queue verified webhook hints; the web app answers at once and never waits for the
        store's write lock. A hint lost in a crash costs nothing: polling still finds it."""
        self._hints.put((profile, list(hints)))

    def _apply_hints(self) -> None:
        """One thread turns hints into due submissions, many per transaction under load."""
        while True:
            item = self._hints.get()
            if item is None:
                return
            batch: dict[str, list[WebhookHint]] = {}
            while item is not None:
                batch.setdefault(item[0], []).extend(item[1])
                try:
                    item = self._hints.get_nowait()
                except queue.Empty:
                    item = None
            for profile, hints in batch.items():
                try:
                    self.poke_submission(profile, hints)
                except Exception:
                    log.exception("could not apply webhook hints for %s", profile)


def _close_after(pools: Sequence[WorkerPool], connectors: Sequence[Vendor | Destination]) -> None:
    """Close the connectors a reload replaced once the old pools' last steps have ended."""
    for pool in pools:
        pool.stop(timeout=None)
    for connector in connectors:
        try:
            connector.close()
        except Exception:
            log.exception("closing a connector replaced by the reload failed")


def describe_changes(old: Config, new: Config) -> str:
    """One line for the log: ``sources +a -b ~c, vendors ~d, routes ~2, …`` (``+`` added,
    ``-`` gone, ``~`` changed), or ``nothing changed``."""

    def diff(label: str, before: Mapping[str, Any], after: Mapping[str, Any]) -> str | None:
        marks = [f"+{n}" for n in after if n not in before]
        marks += [f"-{n}" for n in before if n not in after]
        marks += [f"~{n}" for n in after if n in before and before[n] != after[n]]
        return f"{label} {' '.join(marks)}" if marks else None

    def routes(config: Config) -> dict[str, Any]:
        return {route.name or f"routes[{i}]": route for i, route in enumerate(config.routes)}

    sections = ("logging", "pipeline")
    parts = [
        diff("sources", {s.name: s for s in old.sources}, {s.name: s for s in new.sources}),
        diff("vendors", old.vendors, new.vendors),
        diff("destinations", old.destinations, new.destinations),
        diff("routes", routes(old), routes(new)),
        diff("settings", {k: getattr(old.core, k) for k in sections},
             {k: getattr(new.core, k) for k in sections}),
    ]  # fmt: skip
    return ", ".join(p for p in parts if p) or "nothing changed"
