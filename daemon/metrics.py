"""What ``/metrics`` shows, in the Prometheus format (``prometheus_client``).

Each ``Daemon`` has its own ``CollectorRegistry`` (never the process-global one), so tests can
run several daemons in one process and a metric never leaks from one to another. Two kinds of
figures:

* **read from the store at scrape time** (``StoreCollector``): documents by intake state,
  submissions by profile and state, deliveries by destination and state, the age of the oldest
  waiting item of each queue, each profile's circuit (open or not), plus what the daemon
  holds in memory: paused vendors and
  destinations, the scheduler's job counters. Nothing is cached: a scrape shows the store as
  it is, also what another process on the same PostgreSQL store did.
* **counted as they happen**: HTTP exchanges with vendors and destinations (reported by the
  kit's ``HttpClient`` through each connector's ``ConnectorMetrics``), webhook calls by result,
  source polls and reconnects (IMAP passes and IDLE reconnects), documents moved on
  along a route's fallback chain, by trigger.

Process figures (CPU, memory, open files) come from ``prometheus_client``'s own collectors.
The names are documented in README "Metrics"; ``contrib/grafana/docrelay-dashboard.json`` uses
every family.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import ColumnElement, Connection, func, select
from sqlalchemy.exc import SQLAlchemyError

from connectors.base import ConnectorMetrics
from connectors.errors import WebhookRejected
from daemon.pipeline import budgets, ledger
from daemon.pipeline.feedback import ACTIVE as FEEDBACK_ACTIVE
from daemon.pipeline.feedback import feedback_t
from daemon.pipeline.states import ACTIVE, DELIVERY_ACTIVE
from daemon.replay import ReplayedWebhook
from daemon.store.models import CircuitBreaker, Document, utcnow

if TYPE_CHECKING:
    from daemon.runtime import Daemon

log = logging.getLogger(__name__)

disable_created_metrics()
"""No ``*_created`` series: in the text format Prometheus stores each as a gauge of its own,
doubling the series for a start time that ``process_start_time_seconds`` already gives."""

REQUEST_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
"""Seconds: a local emulator answers in milliseconds, a vendor's upload may take many."""

WEBHOOK_RESULTS = ("ok", "forged", "rejected", "replayed", "too_big", "unknown_profile")
"""What a webhook call can come to (README "Metrics")."""


def webhook_result(exc: WebhookRejected) -> str:
    """The result label of a refused webhook call: ``replayed`` (the replay guard's stale
    timestamp), ``forged`` (signature or token refused: 401/403) or ``rejected`` (any other
    refusal: a malformed body, a path the connector does not know)."""
    if isinstance(exc, ReplayedWebhook):
        return "replayed"
    return "forged" if exc.status_code in (401, 403) else "rejected"


class DaemonMetrics:
    """One daemon's registry and its live counters."""

    def __init__(self, daemon: Daemon) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        labels = ["method", "endpoint", "status"]
        self.vendor_requests = Histogram(
            "docrelay_vendor_request_duration_seconds",
            "HTTP exchanges with a vendor (each attempt), by profile, endpoint template and "
            "status (HTTP status, or error/timeout when no answer came).",
            ["profile", *labels],
            buckets=REQUEST_BUCKETS,
            registry=self.registry,
        )
        self.destination_requests = Histogram(
            "docrelay_destination_request_duration_seconds",
            "HTTP exchanges with a destination (each attempt), by destination, endpoint "
            "template and status.",
            ["destination", *labels],
            buckets=REQUEST_BUCKETS,
            registry=self.registry,
        )
        self.webhooks = Counter(
            "docrelay_webhook_calls",
            "Webhook calls by profile and result (ok, forged, rejected, replayed, too_big, "
            "unknown_profile; the profile is empty for unknown_profile).",
            ["profile", "result"],
            registry=self.registry,
        )
        self.polls = Counter(
            "docrelay_source_polls",
            "Passes of a polling source over its input (an IMAP mailbox's folders).",
            ["source"],
            registry=self.registry,
        )
        self.reconnects = Counter(
            "docrelay_source_reconnects",
            "Connections a source lost or renewed, by reason (error, idle: broke during IMAP "
            "IDLE, token: renewed for fresh credentials).",
            ["source", "reason"],
            registry=self.registry,
        )
        self.fallback_moves = Counter(
            "docrelay_fallback_moves",
            "Documents moved on along their route's fallback chain, by trigger: rejected, "
            "dead, deadline, low_confidence, budget, and for an outage longer than "
            "outage_after circuit_open or paused.",
            ["trigger"],
            registry=self.registry,
        )
        self.budget_exhausted = Counter(
            "docrelay_budget_exhausted",
            "Documents held because their vendor profile's budget was used up, by profile "
            "and limit (documents_per_day, pages_per_month, ...); each re-check counts again.",
            ["profile", "limit"],
            registry=self.registry,
        )
        self.registry.register(StoreCollector(daemon))

    def for_vendor(self, name: str) -> ConnectorMetrics:
        return _Bound(self, name, self.vendor_requests)

    def for_destination(self, name: str) -> ConnectorMetrics:
        return _Bound(self, name, self.destination_requests)

    def for_source(self, name: str) -> ConnectorMetrics:
        return _Bound(self, name, None)

    def webhook(self, profile: str, result: str) -> None:
        """Count one webhook call (``result`` one of ``WEBHOOK_RESULTS``)."""
        self.webhooks.labels(profile, result).inc()

    def expose(self) -> bytes:
        """The text ``/metrics`` answers (reads the store: call it off the event loop)."""
        return generate_latest(self.registry)


class _Bound(ConnectorMetrics):
    """``ConnectorMetrics`` for one connector, writing to its daemon's registry."""

    __slots__ = ("_metrics", "_name", "_requests")

    def __init__(self, metrics: DaemonMetrics, name: str, requests: Histogram | None) -> None:
        self._metrics = metrics
        self._name = name
        self._requests = requests

    def request(self, method: str, endpoint: str, status: str, seconds: float) -> None:
        if self._requests is not None:
            self._requests.labels(self._name, method, endpoint, status).observe(seconds)

    def poll(self) -> None:
        self._metrics.polls.labels(self._name).inc()

    def reconnect(self, reason: str) -> None:
        self._metrics.reconnects.labels(self._name, reason).inc()


def _counted(
    conn: Connection, name: str, documentation: str, labels: Mapping[str, ColumnElement[Any]]
) -> GaugeMetricFamily:
    """Rows counted per combination of ``labels``' columns (label name → column)."""
    family = GaugeMetricFamily(name, documentation, labels=list(labels))
    columns = list(labels.values())
    for *values, count in conn.execute(select(*columns, func.count()).group_by(*columns)):
        family.add_metric(list(values), count)
    return family


class StoreCollector(Collector):
    """Gauges read from the store (and the daemon's memory) at each scrape."""

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon

    def collect(self) -> Iterator[Metric]:
        daemon = self.daemon
        up = GaugeMetricFamily(
            "docrelay_store_up", "1 when the store answered this scrape's queries, else 0."
        )
        try:
            families = list(self._from_store())
        except SQLAlchemyError as exc:
            log.warning("metrics: the store did not answer: %s", exc)
            families = []
        up.add_metric([], 1 if families else 0)
        yield up
        yield from families

        paused = GaugeMetricFamily(
            "docrelay_vendor_paused",
            "1 while a vendor profile waits for new credentials (its queue is held).",
            labels=["vendor"],
        )
        for name in daemon.vendors:
            paused.add_metric([name], 1 if name in daemon.paused else 0)
        yield paused
        held = GaugeMetricFamily(
            "docrelay_destination_paused",
            "1 while a destination waits for new credentials (its deliveries are held).",
            labels=["destination"],
        )
        for name in daemon.destinations:
            held.add_metric([name], 1 if name in daemon.paused_destinations else 0)
        yield held

        jobs = daemon.job_counters
        runs = CounterMetricFamily(
            "docrelay_scheduled_job_runs", "Periodic job runs, per job.", labels=["job"]
        )
        for job, count in sorted(jobs.runs.items()):
            runs.add_metric([job], count)
        yield runs
        yield CounterMetricFamily(
            "docrelay_scheduled_jobs_missed",
            "Periodic job runs skipped (the process was suspended or overloaded past the "
            "grace time).",
            value=jobs.missed,
        )
        yield CounterMetricFamily(
            "docrelay_scheduled_job_errors", "Periodic job runs that raised.", value=jobs.errors
        )

    def _from_store(self) -> Iterator[Metric]:
        sub, dl, docs = ledger.submissions, ledger.deliveries, Document.__table__
        with self.daemon.reader.connect() as conn:
            documents = _counted(
                conn,
                "docrelay_documents",
                "Documents by intake state.",
                {"intake_state": docs.c.intake_state},
            )
            submissions = _counted(
                conn,
                "docrelay_submissions",
                "Submissions per vendor profile and state.",
                {"vendor": sub.c.profile, "state": sub.c.state},
            )
            deliveries = _counted(
                conn, "docrelay_deliveries", "Deliveries per destination and state.",
                {"destination": dl.c.destination, "state": dl.c.state},
            )  # fmt: skip
            oldest = GaugeMetricFamily(
                "docrelay_queue_oldest_age_seconds",
                "Age of the oldest item still waiting (not final) in a queue: submissions per "
                "profile, deliveries per destination, vendor feedback per profile.",
                labels=["queue", "name"],
            )
            now = utcnow()
            queues = (
                ("submissions", sub.c.profile, sub.c.created_at, sub.c.state, ACTIVE),
                ("deliveries", dl.c.destination, dl.c.created_at, dl.c.state, DELIVERY_ACTIVE),
                (
                    "feedback",
                    feedback_t.c.profile,
                    feedback_t.c.created_at,
                    feedback_t.c.state,
                    FEEDBACK_ACTIVE,
                ),
            )
            for queue, key, created, state, waiting in queues:
                for name, since in conn.execute(
                    select(key, func.min(created)).where(state.in_(waiting)).group_by(key)
                ):
                    if since is not None:
                        oldest.add_metric([queue, name], (now - since).total_seconds())
            circuit = GaugeMetricFamily(
                "docrelay_vendor_circuit_open",
                "1 while a vendor profile's circuit breaker is open or half-open (after "
                "breaker_failures transient failures in a row), else 0.",
                labels=["vendor"],
            )
            cb = CircuitBreaker.__table__
            not_closed = {
                row[0] for row in conn.execute(select(cb.c.profile).where(cb.c.state != "closed"))
            }
            for name in self.daemon.vendors:
                circuit.add_metric([name], 1 if name in not_closed else 0)
            used = GaugeMetricFamily(
                "docrelay_budget_used",
                "What a vendor profile used of its budget in the current UTC day or month, by "
                "limit (documents_per_day, pages_per_day, documents_per_month, "
                "pages_per_month), every process on the store together.",
                labels=["profile", "limit"],
            )
            allowed = GaugeMetricFamily(
                "docrelay_budget_limit",
                "A vendor profile's budget limit as its last reservation saw it.",
                labels=["profile", "limit"],
            )
            for item in budgets.current_usage(conn, now):
                used.add_metric([item.profile, item.name], item.used)
                if item.limit is not None:
                    allowed.add_metric([item.profile, item.name], item.limit)
        yield from (documents, submissions, deliveries, oldest, circuit, used, allowed)
