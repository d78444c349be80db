"""The service around the pipeline: systemd notifications, SIGTERM, the CLI commands, the web
app, secrets kept out of logs."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from sqlalchemy import create_engine, text

from tests.daemon_proc import (
    DaemonProcess,
    metric,
    metric_samples,
    wait_until,
    write_config,
)
from tests.invoices import random_spec, render_pdf

pytestmark = pytest.mark.e2e


def cli(config: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, "-m", "daemon.cli", "--config", str(config), *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=config.parent,
    )
    if check:
        assert result.returncode == 0, result.stderr
    return result


def test_r04_systemd_notify_ready_watchdog_and_clean_stop(tmp_path):
    notify_path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(notify_path))
    sock.settimeout(20)
    config = write_config(tmp_path)
    daemon = DaemonProcess(
        config, env={"NOTIFY_SOCKET": str(notify_path), "WATCHDOG_USEC": "1000000"}
    )
    daemon.start(wait_ready=False)
    try:
        # The scheduler's watchdog pings may come before READY=1 when start-up is slow (harmless:
        # systemd arms the watchdog once start-up is complete); nothing else may.
        messages = [sock.recv(4096).decode()]
        while messages[-1] == "WATCHDOG=1":
            messages.append(sock.recv(4096).decode())
        assert messages[-1].startswith("READY=1"), messages
        assert daemon.ready(), "READY=1 only once the web app answers too"
        messages.append(sock.recv(4096).decode())
        assert messages[-1] == "WATCHDOG=1"
        (tmp_path / "inbox" / "a.pdf").write_bytes(render_pdf(random_spec(1)))
        wait_until(lambda: list((tmp_path / "outbox").glob("*.json")), 20, what="export")
    finally:
        code = daemon.stop()
        sock.settimeout(5)
        rest = []
        try:
            while True:
                rest.append(sock.recv(4096).decode())
        except TimeoutError:
            pass
        sock.close()
    assert code == 0
    assert "STOPPING=1" in rest
    engine = create_engine(f"sqlite:///{tmp_path}/var/docrelay.db")
    with engine.connect() as conn:
        held = conn.execute(
            text("SELECT COUNT(*) FROM submissions WHERE lease_owner IS NOT NULL")
        ).scalar()
    engine.dispose()
    assert held == 0, "a clean stop gives every lease back"


def test_second_daemon_on_the_same_sqlite_store_refuses_to_start(tmp_path):
    config = write_config(tmp_path)
    first = DaemonProcess(config).start()
    try:
        other = tmp_path / "other.toml"
        other.write_text(config.read_text().replace(f"127.0.0.1:{first.port}", "127.0.0.1:0"))
        result = cli(other, "run", check=False)
        assert result.returncode == 1
        assert "another docrelay process" in result.stderr
    finally:
        assert first.stop() == 0


def test_cli_submit_wait_status_history_retry(tmp_path):
    config = write_config(tmp_path)
    files = tmp_path / "batch"
    files.mkdir()
    for seed in range(3):
        (files / f"inv{seed}.pdf").write_bytes(render_pdf(random_spec(200 + seed)))
    (files / "broken.pdf").write_bytes(b"%PDF-1.4 not really")
    result = cli(config, "submit", str(files), "--wait", check=False)
    assert result.returncode == 1, "a file was rejected"
    assert "3 ingested" in result.stdout and "1 rejected" in result.stdout
    assert "broken.pdf: rejected: " in result.stderr
    assert len(list((tmp_path / "outbox").glob("*.json"))) == 3
    assert sorted(p.name for p in files.iterdir()) == sorted(
        ["inv0.pdf", "inv1.pdf", "inv2.pdf", "broken.pdf"]
    ), "submit never moves or deletes the user's files"

    status = json.loads(cli(config, "status", "--json").stdout)
    assert {"vendor": "local", "state": "done", "count": 3} in status["submissions"]
    assert status["documents"] == {"accepted": 3, "rejected": 1}
    human = cli(config, "status").stdout
    assert "local" in human and "done" in human
    assert human.startswith("daemon: not running: nothing answers at http://127.0.0.1:")
    assert status["daemon"]["running"] is False

    engine = create_engine(f"sqlite:///{tmp_path}/var/docrelay.db")
    with engine.connect() as conn:
        doc = conn.execute(
            text("SELECT document_id FROM docrelay_documents WHERE filename = 'inv0.pdf'")
        ).scalar_one()
    engine.dispose()
    history = cli(config, "history", str(doc)).stdout
    for step in ("queued→uploading", "uploading→processing", "normalized→done", "delivered"):
        assert step in history, history
    assert cli(config, "history", "999", check=False).returncode == 1

    result = cli(config, "retry", "--all")
    assert "requeued 0 submission(s)" in result.stdout


def test_web_endpoints_and_secret_redaction(tmp_path):
    secret_file = tmp_path / "dburl"
    db_url = f"sqlite:///{tmp_path}/var/docrelay.db"
    secret_file.write_text(db_url)
    config = write_config(tmp_path, log_level="debug")
    config.write_text(
        config.read_text().replace(f'url = "{db_url}"', f'url_file = "{secret_file}"')
    )
    daemon = DaemonProcess(config).start()
    try:
        (tmp_path / "inbox" / "a.pdf").write_bytes(render_pdf(random_spec(3)))
        wait_until(lambda: list((tmp_path / "outbox").glob("*.json")), 20, what="export")
        health = httpx.get(f"{daemon.url}/healthz").json()
        assert health["status"] == "ok"
        assert health["sources"]["scans"]["watch_mode"] in ("inotify", "polling")
        wait_until(
            lambda: (
                metric(daemon.url, "docrelay_deliveries", destination="outbox", state="delivered")
                == 1
            ),
            10,
            what="metrics",
        )
        assert metric(daemon.url, "docrelay_vendor_paused", vendor="local") == 0
        assert metric(daemon.url, "docrelay_scheduled_job_errors_total") == 0
        assert metric(daemon.url, "docrelay_scheduled_jobs_missed_total") == 0
        live = json.loads(cli(config, "status", "--json").stdout)["daemon"]
        assert live["running"] is True and live["status"] == "ok"
        assert live["storage"] == {"state": "ok"}
        assert cli(config, "status").stdout.startswith("daemon: running, ok\n")
        status = httpx.get(f"{daemon.url}/status").json()
        assert status["submissions"] == [{"vendor": "local", "state": "done", "count": 1}]
        hook = httpx.post(f"{daemon.url}/webhooks/local", content=b"{}")
        assert hook.status_code == 404
        assert httpx.post(f"{daemon.url}/webhooks/nope", content=b"{}").status_code == 404
    finally:
        assert daemon.stop() == 0
    log = daemon.log()
    assert "DEBUG" in log or "debug" in log
    assert db_url not in log, "the store URL came from a secret file and must not be logged"
    assert "url=***" in log, "the schema upgrade line names the store, redacted"


def test_correct_updates_the_store_for_a_vendor_without_feedback(tmp_path):
    config = write_config(tmp_path)
    files = tmp_path / "one"
    files.mkdir()
    (files / "a.pdf").write_bytes(render_pdf(random_spec(5)))
    cli(config, "submit", str(files), "--wait")
    result = cli(config, "correct", "1", "invoice_number=X-1", "total_amount=99,90 EUR")
    assert "invoice_number:" in result.stdout and "→ X-1" in result.stdout
    assert "total_amount:" in result.stdout and "→ 99.90" in result.stdout
    engine = create_engine(f"sqlite:///{tmp_path}/var/docrelay.db")
    with engine.connect() as conn:
        row = conn.execute(text("SELECT invoice_number, total_amount FROM docrelay_invoices")).one()
        feedback = conn.execute(text("SELECT COUNT(*) FROM feedback")).scalar()
    engine.dispose()
    assert row[0] == "X-1" and float(row[1]) == 99.9
    assert feedback == 0, "the local extractor takes no feedback; only the store changes"
    assert "corrected" in cli(config, "history", "1").stdout
    bad = cli(config, "correct", "42", "invoice_number=1", check=False)
    assert bad.returncode == 1 and "document 42 is not in the store" in bad.stderr
    assert cli(config, "correct", "1", "nonsense", check=False).returncode == 2
    assert "local takes no feedback" in result.stdout


def test_replay_sends_a_document_again_as_a_new_version_with_its_reason(tmp_path):
    config = write_config(tmp_path)
    files = tmp_path / "one"
    files.mkdir()
    (files / "a.pdf").write_bytes(render_pdf(random_spec(6)))
    cli(config, "submit", str(files), "--wait")
    queued = cli(config, "replay", "1", "--destination", "outbox")
    assert "document 1: queued for outbox as version 2" in queued.stdout
    unknown = cli(config, "replay", "1", "--destination", "erp", check=False)
    assert unknown.returncode == 2 and "no destination 'erp'" in unknown.stderr
    missing = cli(config, "replay", "1", "77", "--destination", "outbox", check=False)
    assert missing.returncode == 1 and "document 77: not replayed" in missing.stdout
    engine = create_engine(f"sqlite:///{tmp_path}/var/docrelay.db")

    def versions() -> list[tuple[int, str]]:
        with engine.connect() as conn:
            rows = conn.execute(text("SELECT version, state FROM deliveries ORDER BY version"))
            return [tuple(row) for row in rows]

    daemon = DaemonProcess(config).start()
    try:
        wait_until(lambda: versions()[-1] == (3, "delivered"), 30, what="the replays delivered")
    finally:
        daemon.stop()
    engine.dispose()
    assert versions() == [(1, "delivered"), (2, "superseded"), (3, "delivered")]
    exported = json.loads((tmp_path / "outbox" / "1.json").read_text())
    assert exported["version"] == 3, "the destination holds the newest version, under one key"
    history = cli(config, "history", "1").stdout
    assert history.count("sent to outbox again on purpose (docrelay replay)") == 2


def test_a_key_from_an_older_store_is_kept_and_new_keys_carry_the_content(tmp_path):
    config = write_config(tmp_path)
    files = tmp_path / "one"
    files.mkdir()
    (files / "a.pdf").write_bytes(render_pdf(random_spec(6)))
    (files / "b.pdf").write_bytes(render_pdf(random_spec(7)))
    cli(config, "submit", str(files), "--wait")
    engine = create_engine(f"sqlite:///{tmp_path}/var/docrelay.db")
    with engine.begin() as conn:
        sha = dict(conn.execute(text("SELECT id, sha256 FROM documents")).all())
        keys = dict(conn.execute(text("SELECT document_id, idempotency_key FROM deliveries")).all())
        assert keys == {doc: f"docrelay-{doc}-{sha[doc][:8]}-outbox" for doc in (1, 2)}
        conn.execute(
            text(
                "UPDATE deliveries SET idempotency_key = 'docrelay-1-outbox' WHERE document_id = 1"
            )
        )  # as a store made before the hash was in the key
    cli(config, "replay", "1", "2", "--destination", "outbox")
    with engine.connect() as conn:
        replayed = conn.execute(
            text("SELECT document_id, idempotency_key FROM deliveries WHERE version = 2")
        ).all()
    engine.dispose()
    assert sorted(replayed) == [(1, "docrelay-1-outbox"), (2, keys[2])]


def test_correct_refuses_unknown_fields_and_values_of_the_wrong_type(tmp_path):
    config = write_config(tmp_path)
    files = tmp_path / "one"
    files.mkdir()
    (files / "a.pdf").write_bytes(render_pdf(random_spec(6)))
    cli(config, "submit", str(files), "--wait")
    engine = create_engine(f"sqlite:///{tmp_path}/var/docrelay.db")

    def invoice() -> tuple:
        with engine.connect() as conn:
            return tuple(conn.execute(text("SELECT * FROM docrelay_invoices")).one())

    before = invoice()
    for args, complaint in [
        (["total_amount=abc"], "'abc' is not an amount"),
        (["issue_date=yesterday"], "'yesterday' is not a date"),
        (["supplier_iban=DE00 1234"], "is not an IBAN"),
        (["colour=blue"], "'colour' is not a field"),
        (["invoice_number=X", "total_amount=abc"], "'abc' is not an amount"),
    ]:
        refused = cli(config, "correct", "1", *args, check=False)
        assert refused.returncode == 2, refused.stdout
        assert complaint in refused.stderr and "nothing changed" in refused.stderr
    assert invoice() == before, "a refused correction changes nothing, not even its valid part"
    confirmed = cli(config, "correct", "1", "--confirm", "invoice_number")
    assert "confirmed" in confirmed.stdout
    mixed = cli(config, "correct", "1", "--confirm", "invoice_number", "total_amount=12.50")
    assert "confirmed" in mixed.stdout and "→ 12.50" in mixed.stdout, "values after an option"
    stray = cli(config, "correct", "1", "--confirm", "invoice_number", "--bogus", check=False)
    assert stray.returncode == 2 and "unrecognized arguments: --bogus" in stray.stderr
    gone = cli(config, "correct", "1", "--confirm", "extra.never_read", check=False)
    assert gone.returncode == 2 and "no value to confirm" in gone.stderr
    engine.dispose()


def test_check_probes_connectors_by_name(tmp_path):
    config = write_config(tmp_path)
    vendor = cli(config, "check", "local")
    assert "local (vendor local): ok" in vendor.stdout and "reads application/pdf" in vendor.stdout
    outbox = cli(config, "check", "outbox")
    assert "outbox (destination folder): ok" in outbox.stdout
    scans = cli(config, "check", "scans")
    assert "scans (source folder): ok" in scans.stdout
    assert f"watched folder {tmp_path}/inbox will be made at start" in scans.stdout
    (tmp_path / "inbox").mkdir()
    (tmp_path / "inbox" / "waiting.pdf").write_bytes(b"%PDF-1.4")
    (tmp_path / "inbox" / ".DS_Store").write_bytes(b"junk")
    again = cli(config, "check", "scans")
    assert "1 file(s) waiting" in again.stdout and "watch mode: inotify" in again.stdout
    assert (tmp_path / "inbox" / "waiting.pdf").exists(), "a probe takes nothing"
    unknown = cli(config, "check", "nope", check=False)
    assert unknown.returncode == 2 and "nothing called 'nope'" in unknown.stderr
    blocker = tmp_path / "blocker"
    blocker.write_text("a file, not a folder")
    (tmp_path / "b").mkdir()
    blocked = write_config(
        tmp_path / "b", extra=f'[destinations.stuck]\nkind = "folder"\npath = "{blocker}/x"\n'
    )
    stuck = cli(blocked, "check", "stuck", check=False)
    assert stuck.returncode == 3 and "cannot be reached" in stuck.stderr


def _job_runs(url: str) -> dict[str, int]:
    return {
        s.labels["job"]: int(s.value)
        for s in metric_samples(url, "docrelay_scheduled_job_runs_total")
    }


def test_r28_suspended_daemon_catches_up_once_and_loses_nothing(tmp_path):
    """RELIABILITY 28: after a suspend each periodic job runs once on resume (coalesced), not
    once per missed interval, and a file dropped meanwhile is still taken."""
    config = write_config(tmp_path)
    config.write_text(
        config.read_text()
        .replace("lease_seconds = 30", "lease_seconds = 30\nsweep_interval = 1")
        .replace("rescan_interval = 5", "rescan_interval = 1")
    )
    daemon = DaemonProcess(config).start()
    try:
        wait_until(lambda: _job_runs(daemon.url).get("sweep", 0) >= 1, 10, what="a sweep")
        before = _job_runs(daemon.url)
        daemon.proc.send_signal(signal.SIGSTOP)
        try:
            (tmp_path / "inbox" / "while-asleep.pdf").write_bytes(render_pdf(random_spec(11)))
            time.sleep(8)  # eight intervals of each job
        finally:
            daemon.proc.send_signal(signal.SIGCONT)
        resumed = time.monotonic()
        jobs = ("sweep", "rescan:scans")

        def caught_up() -> dict[str, int]:
            after = _job_runs(daemon.url)
            return {job: after.get(job, 0) - before.get(job, 0) for job in jobs}

        wait_until(lambda: min(caught_up().values()) >= 1, 10, what="runs after the resume")
        runs, since = caught_up(), time.monotonic() - resumed
        for job in jobs:
            # one catch-up run, the regular ones since (one a second) and one of slack;
            # without coalescing it would be eight or more at once
            assert runs[job] <= 2 + since, (job, runs, since)
        wait_until(lambda: list((tmp_path / "outbox").glob("*.json")), 20, what="the export")
        assert metric(daemon.url, "docrelay_scheduled_jobs_missed_total") == 0
        assert metric(daemon.url, "docrelay_scheduled_job_errors_total") == 0
    finally:
        daemon.proc.send_signal(signal.SIGCONT)
        assert daemon.stop() == 0
