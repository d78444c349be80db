"""Run the real daemon as a separate process for end-to-end tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import create_engine, text

from tests.invoices import random_spec, render_pdf

WORKER_PORTS = 2000
"""Ports per pytest-xdist worker, from 20000 up: below Linux' ephemeral range (32768 on), so a
worker's pick is neither another worker's nor the source port of some client's connection."""
_worker_ports: Iterator[int] | None = None


def _worker_port_range() -> Iterator[int]:
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")  # "gw0", "gw1", … under pytest-xdist
    index = int(worker[2:]) % 6 if worker.startswith("gw") and worker[2:].isdigit() else 0
    first = 20000 + index * WORKER_PORTS
    offset = os.getpid() % WORKER_PORTS  # a restarted worker does not retrace its predecessor
    while True:
        for step in range(WORKER_PORTS):
            yield first + (offset + step) % WORKER_PORTS


def free_port() -> int:
    """A loopback port nobody listens on, for a server another process binds next.

    Between this pick and that bind the port is unguarded: under pytest-xdist each worker takes
    its ports, in turn, from a range of its own (``WORKER_PORTS``), so parallel workers never
    hand out the same one; outside it the kernel picks."""
    global _worker_ports
    if "PYTEST_XDIST_WORKER" not in os.environ:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            return sock.getsockname()[1]
    if _worker_ports is None:
        _worker_ports = _worker_port_range()
    for port in _worker_ports:
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))  # fails while anything holds it (or TIME_WAIT)
            except OSError:
                continue
            return port
    raise AssertionError("unreachable")


def wait_until(predicate: Any, timeout: float, interval: float = 0.1, what: str = "") -> Any:
    """Poll ``predicate`` until it returns something truthy; fail with ``what`` at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}")
        time.sleep(interval)


def metric_samples(url: str, name: str) -> list[Any]:
    """The samples called ``name`` in the daemon's ``/metrics`` (read with the Prometheus
    parser, as a scraper would)."""
    answer = httpx.get(f"{url}/metrics", timeout=10)
    answer.raise_for_status()
    families = text_string_to_metric_families(answer.text)
    return [s for family in families for s in family.samples if s.name == name]


def metric(url: str, name: str, **labels: str) -> float | None:
    """The value of the sample ``name`` with exactly ``labels`` in ``/metrics``, or None."""
    return next((s.value for s in metric_samples(url, name) if s.labels == labels), None)


def toml_table(header: str, values: dict[str, object]) -> str:
    """A TOML table of plain keys (numbers and booleans as they are, anything else as a
    string; None leaves the key out), e.g. a connector block for ``write_config(extra=…)``."""

    def value(v: object) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        return repr(v) if isinstance(v, int | float) else f'"{v}"'

    lines = [f"{k} = {value(v)}" for k, v in values.items() if v is not None]
    return f"{header}\n" + "\n".join(lines) + "\n"


def write_config(
    root: Path,
    *,
    store_url: str | None = None,
    port: int | None = None,
    extra: str = "",
    folder: str = "",
    local: str = "",
    settle: float = 0.3,
    vendor: str = "local",
    log_level: str = "info",
    log_format: str = "console",
    web: str = "",
) -> Path:
    """A config like config.example.toml, rooted in a test directory; ``vendor`` is the
    profile the folder's route sends to (defined in ``extra`` unless it is ``local``); ``web``
    adds keys to ``[web]`` (``[web.api]`` goes in ``extra``)."""
    store_url = store_url or f"sqlite:///{root}/var/docrelay.db"
    port = port or free_port()
    text = f"""
[store]
url = "{store_url}"
blob_dir = "{root}/var/blobs"

[web]
listen = "127.0.0.1:{port}"
{web}
[logging]
level = "{log_level}"
format = "{log_format}"

[pipeline]
backoff_initial = 0.2
backoff_max = 2.0
lease_seconds = 30

[[sources.folder]]
name = "scans"
path = "{root}/inbox"
after = "move"
settle_seconds = {settle}
incomplete_grace_seconds = 3
rescan_interval = 5
{folder}

[vendors.local]
kind = "local"
{local}

[destinations.outbox]
kind = "folder"
path = "{root}/outbox"

[[routes]]
match = {{ source = ["scans", "cli"] }}
vendor = "{vendor}"
destinations = ["outbox"]
{extra}
"""
    path = root / "config.toml"
    path.write_text(text)
    return path


def sibling_configs(config: Path, count: int) -> list[Path]:
    """``count`` copies of ``config`` for processes sharing its store, blob directory and folders,
    each in a directory of its own (``p<n>/``, for its log) with a web port of its own."""
    text = config.read_text()
    port = text.split('listen = "127.0.0.1:')[1].split('"')[0]
    copies = []
    for n in range(count):
        where = config.parent / f"p{n}"
        where.mkdir(exist_ok=True)
        copy = where / "config.toml"
        copy.write_text(text.replace(f"127.0.0.1:{port}", f"127.0.0.1:{free_port()}"))
        copies.append(copy)
    return copies


RUNNING: list[DaemonProcess] = []
"""Every process started by a test; the conftest kills leftovers after each test."""


class DaemonProcess:
    def __init__(
        self, config: Path, env: dict[str, str] | None = None, *, module: str = "daemon.cli"
    ) -> None:
        self.config = config
        self.module = module
        """What ``python -m`` runs: the docrelay command, or a test wrapper around it."""
        self.env = {**os.environ, **(env or {})}
        self.log_path = config.parent / "daemon.log"
        self.proc: subprocess.Popen[bytes] | None = None
        text = config.read_text()
        self.port = int(text.split('listen = "127.0.0.1:')[1].split('"')[0])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, *, wait_ready: bool = True, timeout: float = 20) -> DaemonProcess:
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", self.module, "--config", str(self.config), "run"],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=self.env,
            cwd=self.config.parent,
        )
        log.close()
        RUNNING.append(self)
        if wait_ready:
            wait_until(self.ready, timeout, what=f"daemon ready (log: {self.log_path})")
        return self

    def ready(self) -> bool:
        if self.proc is None or self.proc.poll() is not None:
            raise AssertionError(f"daemon exited early; log:\n{self.log()}")
        try:
            return httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def wait_exit(self, timeout: float) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def stop(self, timeout: float = 30) -> int:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@contextmanager
def module_daemon(proc: DaemonProcess) -> Iterator[DaemonProcess]:
    """Start ``proc`` for a whole test module: out of ``RUNNING`` (which the conftest kills
    after each test), stopped, or killed, when the block ends."""
    proc.start()
    RUNNING.remove(proc)
    try:
        yield proc
    finally:
        try:
            proc.stop()
        finally:
            proc.kill()


class EmulatorProcess:
    """`docrelay emulate <vendor>` as its own process, as users run it."""

    def __init__(
        self, vendor: str, *args: str, log: Path | None = None, port: int | None = None
    ) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._log = log.open("ab") if log is not None else None
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "daemon.cli", "emulate", vendor, "--port", str(self.port),
             *args],
            stdout=self._log or subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
        wait_until(self._up, 20, what=f"{vendor} emulator up")

    def _up(self) -> bool:
        assert self.proc.poll() is None, "emulator exited"
        try:
            return httpx.get(f"{self.url}/_emulator/stats", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def vendor_toml(self, name: str = "rossum_main", **keys: object) -> str:
        """A ``[vendors.<name>]`` block for this emulator's ready account; ``keys`` add to or
        override it (None leaves a key out)."""
        values: dict[str, object] = {
            "kind": "rossum",
            "base_url": f"{self.url}/api/v1",
            "username": "user@example.com",
            "password": "secret",
            "queue": 1,
            **keys,
        }
        return toml_table(f"[vendors.{name}]", values)

    def stats(self) -> dict[str, Any]:
        return httpx.get(f"{self.url}/_emulator/stats", timeout=60).json()

    def documents(self) -> list[dict[str, Any]]:
        """The emulator's own record of every document (``GET /_emulator/documents``): an
        upload whose answer was lost on the way counts too."""
        return httpx.get(f"{self.url}/_emulator/documents", timeout=120).json()["results"]

    def annotations(self) -> list[dict[str, Any]]:
        return httpx.get(f"{self.url}/_emulator/annotations", timeout=30).json()["results"]

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if self._log is not None:
            self._log.close()


def drop_invoices(inbox: Path, count: int, *, prefix: str, first_seed: int) -> dict[str, Any]:
    """``count`` generated invoices put into a watched folder whole (written as ``.part``,
    then renamed), named ``<prefix>-<n>.pdf``; returns name → the invoice's spec."""
    inbox.mkdir(exist_ok=True)
    specs = {}
    for seed in range(count):
        spec = random_spec(first_seed + seed)
        name = f"{prefix}-{seed}.pdf"
        (inbox / f"{name}.part").write_bytes(render_pdf(spec))
        (inbox / f"{name}.part").rename(inbox / name)
        specs[name] = spec
    return specs


def query(root: Path, sql: str) -> list[Any]:
    """Rows of ``sql`` in the SQLite store a ``write_config(root)`` daemon uses."""
    engine = create_engine(f"sqlite:///{root}/var/docrelay.db")
    try:
        with engine.connect() as conn:
            return list(conn.execute(text(sql)).mappings())
    finally:
        engine.dispose()


def exported(root: Path) -> int:
    """JSON exports in that daemon's outbox."""
    return len(list((root / "outbox").glob("*.json")))


def generate_invoices(folder: Path, count: int) -> list[Path]:
    """The benchmarks' invoices: ``invoice-<n>.pdf``, alternately English and German."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for seed in range(count):
        lang = "de" if seed % 2 else "en"
        path = folder / f"invoice-{seed:05d}.pdf"
        path.write_bytes(render_pdf(random_spec(seed, lang), lang))
        paths.append(path)
    return paths


def sqlite_time(value: object) -> float:
    """A UTC timestamp as the SQLite store keeps it (naive text) → epoch seconds."""
    from datetime import UTC, datetime

    return datetime.fromisoformat(str(value)).replace(tzinfo=UTC).timestamp()
