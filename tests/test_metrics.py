"""``/metrics`` from ``prometheus_client``: an in-process daemon with a real SQLite store, its
web app and the Rossum emulator under real uvicorn, scraped and parsed with the Prometheus
parser; and the Grafana dashboard, whose every expression must name a metric that is exposed.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import json
import re
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import nullcontext, suppress
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import create_engine, func, select

from connectors.base import ConnectorMetrics, IntakeItem
from connectors.errors import TransientError
from connectors.http import HttpClient, reporting_to
from connectors.registry import available
from connectors.vendors.rossum.emulator import EmulatorOptions, create_app
from daemon import config as config_mod
from daemon import web
from daemon.pipeline import ledger
from daemon.runtime import Daemon
from daemon.store.models import Document
from tests.daemon_proc import wait_until
from tests.dovecot import dovecot  # noqa: F401 - the fixture
from tests.invoices import random_spec, render_pdf
from tests.servers import serve

WEIRD = 'we"ird'
"""A profile name with a quote in it: the hand-made /metrics of before could not be parsed."""
SECRET = "s3cret-hook"
DASHBOARD = Path(__file__).parent.parent / "contrib" / "grafana" / "docrelay-dashboard.json"


def scrape(client: httpx.Client) -> dict[str, Any]:
    """The families of one scrape, by name, after a check of the content type."""
    answer = client.get("/metrics")
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/plain; version=")
    return {f.name: f for f in text_string_to_metric_families(answer.text)}


def value(families: dict[str, Any], sample: str, **labels: str) -> float | None:
    """The value of the one sample ``sample`` with exactly ``labels``, or None."""
    for family in families.values():
        for s in family.samples:
            if s.name == sample and s.labels == labels:
                return s.value
    return None


def samples(families: dict[str, Any], sample: str) -> list[Any]:
    return [s for f in families.values() for s in f.samples if s.name == sample]


def offer(daemon: Daemon, name: str, seed: int) -> int:
    data = render_pdf(random_spec(seed))
    assert daemon.intake is not None
    outcome = daemon.intake.ingest(
        IntakeItem(
            source="cli",
            source_ref=name,
            filename=name,
            open=lambda: nullcontext(io.BytesIO(data)),
            mime_type="application/pdf",
        )
    )
    return outcome.document_id


@pytest.fixture
def running(tmp_path: Path) -> Iterator[tuple[Daemon, httpx.Client, str]]:
    """A daemon with a ``local`` profile and a Rossum profile named ``we"ird`` backed by the
    emulator, a folder destination and one that cannot be written (its deliveries wait), its
    web app served on loopback; yields the daemon, a client for its web app and the
    emulator's base URL."""
    blocker = tmp_path / "blocker"
    blocker.write_text("a file, not a folder")
    emulator = create_app(EmulatorOptions(delay=0, webhook_secret=SECRET))
    with serve(emulator) as emulator_url:
        raw = {
            "store": {"url": f"sqlite:///{tmp_path}/d.db", "blob_dir": str(tmp_path / "blobs")},
            "web": {"enabled": False, "max_body_bytes": 1024},
            "pipeline": {"backoff_initial": 0.05, "backoff_max": 0.5, "sweep_interval": 0.5},
            "vendors": {
                "local": {"kind": "local"},
                WEIRD: {
                    "kind": "rossum",
                    "base_url": f"{emulator_url}/api/v1",
                    "username": "user@example.com",
                    "password": "secret",
                    "queue": 1,
                    "poll_interval": 0.2,
                    "webhook_secret": SECRET,
                },
            },
            "destinations": {
                "outbox": {"kind": "folder", "path": str(tmp_path / "outbox")},
                "stuck": {"kind": "folder", "path": str(blocker / "x")},
            },
            "routes": [
                {"match": {"filename": "r-*"}, "vendor": WEIRD, "destinations": ["outbox"]},
                {"vendor": "local", "destinations": ["outbox", "stuck"]},
            ],
        }
        daemon = Daemon(config_mod.validate(raw, tmp_path / "test.toml"))
        daemon.open()
        daemon.start()
        try:
            with serve(web.create_app(daemon)) as url, httpx.Client(base_url=url) as client:
                yield daemon, client, emulator_url
        finally:
            daemon.stop()
            available.cache_clear()


def test_metrics_parse_and_match_the_store(running):
    daemon, client, _ = running
    docs = [offer(daemon, f"l-{n}.pdf", 40 + n) for n in range(2)]
    docs.append(offer(daemon, "r-0.pdf", 50))
    sub = ledger.submissions

    def done() -> bool:
        with daemon.engine.connect() as conn:
            states = conn.execute(select(sub.c.state).where(sub.c.document_id.in_(docs)))
            return sorted(states.scalars()) == ["done"] * 3

    wait_until(done, 30, what="three documents done")
    wait_until(
        lambda: value(scrape(client), "docrelay_deliveries", destination="outbox",
                      state="delivered") == 3,
        20,
        what="three deliveries to the outbox",
    )  # fmt: skip
    wait_until(
        lambda: value(scrape(client), "docrelay_scheduled_job_runs_total", job="sweep"),
        10,
        what="a sweep run counted",
    )
    families = scrape(client)

    with daemon.engine.connect() as conn:
        docs_t = Document.__table__
        by_state = dict(
            conn.execute(
                select(docs_t.c.intake_state, func.count()).group_by(docs_t.c.intake_state)
            ).all()
        )
    assert by_state, "documents in the store"
    exposed = {s.labels["intake_state"]: s.value for s in samples(families, "docrelay_documents")}
    assert exposed == by_state
    assert value(families, "docrelay_submissions", vendor=WEIRD, state="done") == 1
    assert value(families, "docrelay_submissions", vendor="local", state="done") == 2
    assert value(families, "docrelay_vendor_paused", vendor=WEIRD) == 0
    assert value(families, "docrelay_store_up") == 1
    assert value(families, "docrelay_scheduled_jobs_missed_total") == 0
    assert value(families, "docrelay_scheduled_job_errors_total") == 0

    # The deliveries to the unwritable folder wait: the oldest of them has an age.
    age = value(families, "docrelay_queue_oldest_age_seconds", queue="deliveries", name="stuck")
    assert age is not None and age > 0
    assert value(families, "docrelay_queue_oldest_age_seconds", queue="deliveries",
                 name="outbox") is None  # fmt: skip

    # The Rossum profile's HTTP exchanges, by endpoint template: no ids in the labels.
    requests = [
        s
        for s in samples(families, "docrelay_vendor_request_duration_seconds_count")
        if s.labels["profile"] == WEIRD
    ]
    endpoints = {(s.labels["method"], s.labels["endpoint"], s.labels["status"]) for s in requests}
    assert ("POST", "/auth/login", "200") in endpoints, endpoints
    assert ("POST", "/uploads", "202") in endpoints, endpoints
    assert ("GET", "/annotations/{id}/content", "200") in endpoints, endpoints
    assert all(not re.search(r"/\d+(/|$)", e) for _, e, _ in endpoints), endpoints
    assert sum(s.value for s in requests) >= 3
    seconds = sum(
        s.value
        for s in samples(families, "docrelay_vendor_request_duration_seconds_sum")
        if s.labels["profile"] == WEIRD
    )
    assert seconds > 0
    # The local extractor speaks no HTTP; a folder destination neither.
    assert not [
        s
        for s in samples(families, "docrelay_vendor_request_duration_seconds_count")
        if s.labels["profile"] == "local"
    ]

    # Process figures, on the daemon's own registry.
    assert value(families, "process_resident_memory_bytes") > 0
    assert samples(families, "python_info")


def _signed(body: bytes, secret: str = SECRET) -> dict[str, str]:
    digest = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return {"X-Rossum-Signature-SHA256": f"sha256={digest}", "Content-Type": "application/json"}


def test_webhook_calls_are_counted_by_result(running):
    _, client, _ = running
    hook = "/webhooks/we%22ird"
    body = json.dumps(
        {
            "request_id": "req-1",
            "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime()),
            "event": "annotation_status",
            "action": "changed",
            "annotation": {"id": 999},
        }
    ).encode()
    assert client.post(hook, content=body, headers=_signed(body, "forged")).status_code == 401
    assert client.post(hook, content=body, headers=_signed(body)).status_code == 200
    assert client.post(hook, content=body, headers=_signed(body)).status_code == 200  # a repeat
    old = json.loads(body) | {"request_id": "req-2", "timestamp": "2020-01-01T00:00:00.000000Z"}
    stale = json.dumps(old).encode()
    assert client.post(hook, content=stale, headers=_signed(stale)).status_code == 401
    not_json = b"not json"
    assert client.post(hook, content=not_json, headers=_signed(not_json)).status_code == 400
    too_big = b"x" * 2000
    assert client.post(hook, content=too_big, headers=_signed(too_big)).status_code == 413
    assert client.post("/webhooks/nobody", content=b"{}").status_code == 404

    families = scrape(client)
    calls = {
        (s.labels["profile"], s.labels["result"]): s.value
        for s in samples(families, "docrelay_webhook_calls_total")
    }
    assert calls == {
        (WEIRD, "forged"): 1,
        (WEIRD, "ok"): 1,
        (WEIRD, "replayed"): 2,  # the repeated request id and the stale timestamp
        (WEIRD, "rejected"): 1,
        (WEIRD, "too_big"): 1,
        ("", "unknown_profile"): 1,  # the caller's path is no label
    }


def _metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads: identifiers not called as functions, once
    label matchers, ``by (…)`` lists, range selectors, strings and variables are gone."""
    for pattern in (r"\{[^}]*\}", r"\b(by|without)\s*\([^)]*\)", r"\[[^\]]*\]", r'"[^"]*"',
                    r"\$\w+"):  # fmt: skip
        expr = re.sub(pattern, " ", expr)
    names = set(re.findall(r"\b([a-zA-Z_:][a-zA-Z0-9_:]*)\b(?!\s*\()", expr))
    return names - {"bool", "or", "and", "unless", "on", "ignoring", "offset"}


def _expressions(dashboard: dict[str, Any]) -> list[str]:
    panels = list(dashboard["panels"])
    for panel in list(panels):
        panels.extend(panel.get("panels", []))  # rows
    return [t["expr"] for p in panels for t in p.get("targets", []) if t.get("expr")]


def test_every_dashboard_expression_names_an_exposed_metric(running):
    daemon, client, _ = running
    offer(daemon, "r-1.pdf", 60)  # so the histogram has series
    wait_until(
        lambda: samples(scrape(client), "docrelay_vendor_request_duration_seconds_count"),
        20,
        what="a vendor request counted",
    )
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["schemaVersion"] >= 38  # Grafana 10
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["DS_PROMETHEUS"]["type"] == "datasource"
    assert variables["DS_PROMETHEUS"]["query"] == "prometheus"
    families = scrape(client)
    exposed = set(families)
    for family in families.values():
        exposed |= {s.name for s in family.samples}
        if family.type == "counter":
            exposed.add(family.name + "_total")
        if family.type == "histogram":
            exposed |= {family.name + suffix for suffix in ("_bucket", "_count", "_sum")}
    expressions = _expressions(dashboard)
    assert expressions
    used = set()
    for expr in expressions:
        names = _metric_names(expr)
        assert names, f"no metric in {expr!r}"
        assert names <= exposed, (expr, names - exposed)
        used |= names
    # Every docrelay family has a panel.
    ours = {name for name in families if name.startswith("docrelay_")}
    missing = {
        name for name in ours if not any(u == name or u.startswith(name + "_") for u in used)
    }
    assert not missing, missing
    for panel in dashboard["panels"]:
        if panel.get("type") != "row":
            assert panel["datasource"]["uid"] == "${DS_PROMETHEUS}", panel["title"]


class Relay:
    """A TCP relay in front of a server whose open connections a test can cut at once (the
    network dropping an idle IMAP connection); TLS passes through it untouched."""

    def __init__(self, host: str, port: int) -> None:
        self.upstream = (host, port)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.open: list[socket.socket] = []
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self._accept, name="relay", daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(self.upstream)
            with self.lock:
                self.open += [client, server]
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        for sock in (src, dst):
            with suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        """End every connection open now; new ones are relayed again."""
        with self.lock:
            cut, self.open = self.open, []
        for sock in cut:
            with suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def close(self) -> None:
        self.listener.close()
        self.cut()


def test_imap_polls_and_idle_reconnects_are_counted(tmp_path, dovecot):
    relay = Relay(dovecot.host, dovecot.imap_port)
    raw = {
        "store": {"url": f"sqlite:///{tmp_path}/d.db", "blob_dir": str(tmp_path / "blobs")},
        "web": {"enabled": False},
        "sources": {
            "mailbox": [
                {
                    "name": "mail",
                    "host": "127.0.0.1",
                    "port": relay.port,
                    "tls": "starttls",
                    "ca_file": dovecot.cafile,
                    "username": "alice",
                    "password": dovecot.users["alice"],
                    "poll_interval": 5,
                }
            ]
        },
        "vendors": {"local": {"kind": "local"}},
        "destinations": {"outbox": {"kind": "folder", "path": str(tmp_path / "outbox")}},
        "routes": [{"vendor": "local", "destinations": ["outbox"]}],
    }
    daemon = Daemon(config_mod.validate(raw, tmp_path / "test.toml"))
    daemon.open()
    daemon.start()
    try:
        with serve(web.create_app(daemon)) as url, httpx.Client(base_url=url) as client:

            def counted(sample: str, **labels: str) -> float:
                return value(scrape(client), sample, **labels) or 0

            wait_until(lambda: counted("docrelay_source_polls_total", source="mail") >= 1, 20,
                       what="the first poll")  # fmt: skip
            source = daemon.sources[0]
            wait_until(lambda: source._idling, 10, what="the source in IDLE")
            assert counted("docrelay_source_reconnects_total", source="mail", reason="idle") == 0
            relay.cut()  # noticed when the IDLE wait ends (idle_check takes EOF for quiet)
            wait_until(
                lambda: (
                    counted("docrelay_source_reconnects_total", source="mail", reason="idle") == 1
                ),
                20,
                what="the IDLE reconnect counted",
            )
            polls = counted("docrelay_source_polls_total", source="mail")
            wait_until(lambda: counted("docrelay_source_polls_total", source="mail") > polls, 20,
                       what="a poll on the new connection")  # fmt: skip
            assert counted("docrelay_source_reconnects_total", source="mail", reason="error") == 0
    finally:
        daemon.stop()
        relay.close()
        available.cache_clear()


class Recorder(ConnectorMetrics):
    """Keeps what the kit reports, as the daemon's metrics would count it."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str, str]] = []

    def request(self, method: str, endpoint: str, status: str, seconds: float) -> None:
        assert seconds >= 0
        self.seen.append((method, endpoint, status))


def test_the_kit_reports_every_attempt_also_without_an_answer():
    """Each attempt counts, by endpoint template; no answer is ``error`` (refused) or
    ``timeout`` (a server that takes the connection and never answers)."""
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    refused_port = closed.getsockname()[1]
    closed.close()  # nothing listens there now
    silent = socket.create_server(("127.0.0.1", 0))  # accepts (the backlog), never answers
    recorder = Recorder()
    try:
        with reporting_to(recorder):
            refused = HttpClient(f"http://127.0.0.1:{refused_port}/api/v1", name="T",
                                 max_retries=1, sleep=lambda s: None)  # fmt: skip
            mute = HttpClient(f"http://127.0.0.1:{silent.getsockname()[1]}/api/v1", name="T",
                              max_retries=0, timeout=0.5)  # fmt: skip
        with pytest.raises(TransientError):
            refused.request("GET", "documents/4711/pages/2")
        with pytest.raises(TransientError):
            mute.request("POST", "documents/0f9c3a1e-5b7d-4c11-9e2a-8d6f4b3c2a10/feedback")
        refused.close()
        mute.close()
    finally:
        silent.close()
    assert recorder.seen == [
        ("GET", "/documents/{id}/pages/{id}", "error"),
        ("GET", "/documents/{id}/pages/{id}", "error"),  # the retry is an attempt of its own
        ("POST", "/documents/{id}/feedback", "timeout"),
    ]
    outside = HttpClient("http://127.0.0.1:9/api/v1", name="T")
    assert outside.metrics is None, "a client made outside reporting_to reports nowhere"
    outside.close()


def test_a_store_that_does_not_answer_leaves_the_scrape_up(running, tmp_path):
    """A scrape while the store cannot be read still answers: ``docrelay_store_up`` 0, the
    figures the daemon holds itself (paused vendors, jobs, requests) are there."""
    daemon, client, _ = running
    assert value(scrape(client), "docrelay_store_up") == 1
    working = daemon.reader
    daemon.reader = create_engine(f"sqlite:///{tmp_path}/no/such/dir/d.db")
    try:
        families = scrape(client)
    finally:
        daemon.reader.dispose()
        daemon.reader = working
    assert value(families, "docrelay_store_up") == 0
    assert not samples(families, "docrelay_submissions")
    assert value(families, "docrelay_vendor_paused", vendor=WEIRD) == 0
    assert value(families, "docrelay_scheduled_jobs_missed_total") == 0
