"""End to end against Rossum: the real daemon process and the Rossum emulator under uvicorn
(`docrelay emulate rossum`, a separate process), generated invoices dropped in the inbox.

Counts are taken from the emulator's own request log: every document uploaded exactly once,
exported once, and its annotation moved to `exported` at the emulator.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import statistics
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from pathlib import Path

import httpx
import pytest
from sqlalchemy import create_engine, text

from connectors.vendors.rossum.schema import FIELD_MAP
from tests.daemon_proc import (
    DaemonProcess,
    EmulatorProcess,
    free_port,
    metric_samples,
    wait_until,
    write_config,
)
from tests.invoices import expected_fields, random_spec, render_pdf

pytestmark = pytest.mark.e2e

DOCS = 8
MAPPED = set(FIELD_MAP.values())


def Emulator(root: Path, *args: str) -> EmulatorProcess:
    return EmulatorProcess("rossum", *args, log=root / "emulator.log")


def rossum_config(
    root: Path, emulator: EmulatorProcess, *, webhooks: bool, port: int, log_level: str = "info"
) -> Path:
    vendor = emulator.vendor_toml(
        concurrency=4,
        poll_interval=1.0 if webhooks else 0.4,
        timeout=5,
        webhook_secret="emulator-secret" if webhooks else None,
    )
    return write_config(root, port=port, extra=vendor, vendor="rossum_main", log_level=log_level)


def drop_invoices(inbox: Path, count: int, offset: int = 0) -> dict[str, object]:
    inbox.mkdir(exist_ok=True)
    specs = {}
    for seed in range(offset, offset + count):
        lang = "de" if seed % 2 else "en"
        spec = random_spec(300 + seed, lang)
        name = f"rossum-{seed}.pdf"
        tmp = inbox / f"{name}.part"
        tmp.write_bytes(render_pdf(spec, lang))
        tmp.rename(inbox / name)
        specs[name] = spec
    return specs


def check_store(root: Path, specs: dict[str, object]) -> None:
    engine = create_engine(f"sqlite:///{root}/var/docrelay.db")
    with engine.connect() as conn:
        docs = {
            r["filename"]: r
            for r in conn.execute(text("SELECT * FROM docrelay_documents")).mappings()
        }
        invoices = {
            r["document_id"]: r
            for r in conn.execute(text("SELECT * FROM docrelay_invoices")).mappings()
        }
        lines = (
            conn.execute(text("SELECT * FROM docrelay_line_items ORDER BY document_id, line_no"))
            .mappings()
            .all()
        )
        delivered = conn.execute(
            text("SELECT document_id, COUNT(*) FROM deliveries WHERE state = 'delivered' "
                 "GROUP BY document_id")
        ).all()  # fmt: skip
    engine.dispose()
    assert set(docs) == set(specs)
    assert sorted(n for _, n in delivered) == [1] * len(specs), "each exported exactly once"
    for name, spec in specs.items():
        doc = docs[name]
        assert doc["state"] == "done" and doc["vendor"] == "rossum_main", doc
        row = invoices[doc["document_id"]]
        for field, want in expected_fields(spec).items():
            if field not in MAPPED or want is None:
                continue
            got = row[field]
            if isinstance(want, Decimal):
                got = Decimal(str(got))
            elif hasattr(want, "isoformat") and not hasattr(got, "isoformat"):
                got = type(want).fromisoformat(str(got)[:10])
            assert got == want, (name, field, got, want)
        doc_lines = [li for li in lines if li["document_id"] == doc["document_id"]]
        assert [li["description"] for li in doc_lines] == [line[0] for line in spec.lines]
        assert [Decimal(str(li["quantity"])) for li in doc_lines] == [
            line[1] for line in spec.lines
        ]


def run_scenario(
    tmp_path: Path,
    *,
    webhooks: bool,
    emulator_args: tuple[str, ...] = (),
    meanwhile: Callable[[DaemonProcess], None] | None = None,
    log_level: str = "info",
) -> dict:
    """Drop the invoices and check every outcome; ``meanwhile`` runs while they are worked."""
    port = free_port()
    hook = ("--webhook-url", f"http://127.0.0.1:{port}/webhooks/rossum_main") if webhooks else ()
    emulator = Emulator(tmp_path, "--delay", "0.5", "--rate-limit", "0", *hook, *emulator_args)
    try:
        config = rossum_config(
            tmp_path, emulator, webhooks=webhooks, port=port, log_level=log_level
        )
        daemon = DaemonProcess(config).start()
        try:
            specs = drop_invoices(tmp_path / "inbox", DOCS)
            if meanwhile is not None:
                meanwhile(daemon)
            wait_until(
                lambda: emulator.stats()["annotations"].get("exported", 0) == DOCS,
                90,
                interval=0.3,
                what="all annotations exported at the emulator",
            )
            check_store(tmp_path, specs)
            stats = emulator.stats()
            assert stats["uploads"] == DOCS, "no document uploaded twice"
            exports = [json.loads(p.read_text()) for p in (tmp_path / "outbox").glob("*.json")]
            assert len(exports) == DOCS
            assert {e["provenance"]["vendor_kind"] for e in exports} == {"rossum"}
        finally:
            assert daemon.stop() == 0, daemon.log()
        return stats
    finally:
        emulator.stop()


def test_rossum_with_webhooks(tmp_path):
    stats = run_scenario(tmp_path, webhooks=True)
    assert stats["webhook_deliveries"]["delivered"] >= DOCS


def test_r23_rossum_webhooks_under_a_flood_of_hints_forgeries_and_big_bodies(tmp_path):
    """RELIABILITY 23: while the invoices are worked, 600 signed hints (most for annotations
    the daemon does not know), 200 forgeries and a few 10 MB bodies hit the webhook. Bodies
    over the limit are refused before the signature is checked, valid calls are acknowledged
    fast, and every document still ends exported once."""
    results: dict[str, list] = {"valid": [], "forged": [], "big": []}

    def flood(daemon: DaemonProcess) -> None:
        url = f"{daemon.url}/webhooks/rossum_main"
        # One pooled client for the hints, as a sender keeps its connections: a client per call
        # built an SSL context each time, CPU of this process that, under load, the latencies
        # counted as the daemon's.
        client = httpx.Client(limits=httpx.Limits(max_connections=8))

        def call(n: int) -> None:
            body = json.dumps({
                "request_id": f"flood-{n}", "event": "annotation_status", "action": "changed",
                "annotation": {"id": 1 + n % 40, "status": "to_review"},
            }).encode()  # fmt: skip
            digest = hmac.new(b"emulator-secret", body, hashlib.sha256).hexdigest()
            kind = "forged" if n % 4 == 3 else "valid"
            if kind == "forged":
                digest = hmac.new(b"guessed", body, hashlib.sha256).hexdigest()
            began = time.monotonic()
            response = client.post(
                url, content=body, headers={"X-Rossum-Signature-SHA256": f"sha256={digest}"}
            )
            results[kind].append((response.status_code, time.monotonic() - began))

        def big(n: int) -> None:
            began = time.monotonic()
            try:
                response = httpx.post(
                    url, content=b"{" + b" " * (10 << 20) + b"}",
                    headers={"X-Rossum-Signature-SHA256": "sha256=00"},
                )  # fmt: skip
                status = response.status_code
            except httpx.TransportError:  # refused before the body was all sent
                status = 413
            results["big"].append((status, time.monotonic() - began))

        with ThreadPoolExecutor(8) as pool:
            list(pool.map(big, range(3)))
            list(pool.map(call, range(800)))
        client.close()
        calls = metric_samples(daemon.url, "docrelay_webhook_calls_total")
        results["counted"] = [(s.labels["result"], int(s.value)) for s in calls]

    run_scenario(tmp_path, webhooks=True, meanwhile=flood)
    valid = results["valid"]
    assert len(valid) == 600 and {status for status, _ in valid} == {200}
    assert {status for status, _ in results["forged"]} == {401}
    assert {status for status, _ in results["big"]} == {413}
    counted = dict(results["counted"])  # the emulator's own hooks are ok calls too (or, if it
    counted.pop("replayed", None)  # retried one whose answer it did not wait for, replayed)
    assert counted.pop("ok") >= 600 and counted == {"forged": 200, "too_big": 3}, counted
    p99 = statistics.quantiles([seconds for _, seconds in valid], n=100)[-1]
    assert p99 < 1.0, p99


def test_rossum_polling_only(tmp_path):
    stats = run_scenario(tmp_path, webhooks=False)
    assert stats["webhook_deliveries"]["attempts"] == 0


def test_r31_rossum_with_a_fifth_of_responses_failing(tmp_path):
    """Also RELIABILITY 31: at log level debug, with errors on every path, neither the log nor
    what the store keeps of errors holds the password, the webhook secret or a bearer token."""
    stats = run_scenario(
        tmp_path,
        webhooks=True,
        emulator_args=("--fail-rate", "0.2", "--seed", "7"),
        log_level="debug",
    )
    assert sum(stats["faults"].values()) > 0, "faults were injected"
    engine = create_engine(f"sqlite:///{tmp_path}/var/docrelay.db")
    with engine.connect() as conn:
        kept = [
            str(value)
            for query in (
                "SELECT error FROM submissions", "SELECT error FROM deliveries",
                "SELECT error FROM feedback", "SELECT message FROM events",
            )
            for (value,) in conn.execute(text(query))
        ]  # fmt: skip
    engine.dispose()
    log = (tmp_path / "daemon.log").read_text()
    assert " DEBUG " in log and "emulated fault" in log  # debug on, errors logged
    for text_ in [log, *kept]:
        for secret in ('password": "secret', "= secret", "emulator-secret", "Bearer "):
            assert secret not in text_, (secret, text_[:2000])


def test_rossum_daemon_killed_and_restarted_mid_run(tmp_path):
    port = free_port()
    emulator = Emulator(
        tmp_path, "--delay", "1.0", "--rate-limit", "0",
        "--webhook-url", f"http://127.0.0.1:{port}/webhooks/rossum_main",
    )  # fmt: skip
    try:
        config = rossum_config(tmp_path, emulator, webhooks=True, port=port)
        daemon = DaemonProcess(config).start()
        specs = drop_invoices(tmp_path / "inbox", DOCS)
        wait_until(lambda: emulator.stats()["uploads"] >= DOCS // 2, 60, what="half uploaded")
        daemon.kill()
        restarted = DaemonProcess(config).start()
        try:
            wait_until(
                lambda: emulator.stats()["annotations"].get("exported", 0) == DOCS,
                90,
                interval=0.3,
                what="all exported after the restart",
            )
            check_store(tmp_path, specs)
            assert emulator.stats()["uploads"] == DOCS, "nothing uploaded twice across the crash"
        finally:
            assert restarted.stop() == 0, restarted.log()
    finally:
        emulator.stop()


def test_docrelay_check_logs_in_and_reads_the_queue(tmp_path):
    import subprocess
    import sys

    emulator = Emulator(tmp_path)
    try:
        config = rossum_config(tmp_path, emulator, webhooks=True, port=free_port())

        def check(path: Path) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [sys.executable, "-m", "daemon.cli", "--config", str(path), "check",
                 "rossum_main"],
                capture_output=True, text=True, timeout=60,
            )  # fmt: skip

        ok = check(config)
        assert ok.returncode == 0, ok.stderr
        assert "rossum_main (vendor rossum): ok" in ok.stdout
        assert "queue 1:" in ok.stdout and "verified with webhook_secret" in ok.stdout
        assert "point a hook at http://127.0.0.1:" in ok.stdout
        assert emulator.stats()["uploads"] == 0, "a check changes nothing"
        config.write_text(config.read_text().replace('password = "secret"', 'password = "x"'))
        refused = check(config)
        assert refused.returncode == 4 and "credentials refused" in refused.stderr
        assert "secret" not in refused.stderr
    finally:
        emulator.stop()
    gone = check(config)
    assert gone.returncode == 3 and "cannot be reached" in gone.stderr
