"""Several processes on one store: heartbeat rows, lost processes taken over, one holder per
source and periodic job, a blob directory every process shares, the account's rate limit
shared among them."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import insert, select, text, update

from connectors.ratelimit import RateLimiter, reset_shared_limiters, share_among
from daemon.pipeline import ledger, processes
from daemon.store import engine as store_engine
from daemon.store.models import Document, SubmissionState, utcnow
from tests.daemon_proc import (
    DaemonProcess,
    drop_invoices,
    sibling_configs,
    wait_until,
    write_config,
)

ROOT = Path(__file__).resolve().parent.parent


def leased_submission(engine, owner: str) -> int:
    with engine.begin() as conn:
        doc = conn.execute(
            insert(Document.__table__).values(
                sha256="ab" * 32, filename="a.pdf", mime_type="application/pdf",
                size_bytes=10, source="scans",
            )
        ).inserted_primary_key[0]  # fmt: skip
        return conn.execute(
            insert(ledger.submissions).values(
                document_id=doc, profile="p", vendor_kind="local",
                state=SubmissionState.PROCESSING, lease_owner=owner,
                lease_expires_at=utcnow() + timedelta(minutes=5), destinations=[], vendor_data={},
            )
        ).inserted_primary_key[0]  # fmt: skip


def test_a_process_whose_heartbeat_stops_is_taken_over_by_the_others(engine, caplog):
    quiet = processes.Heartbeat(engine, "quiet:1:a", 0.2)
    beating = processes.Heartbeat(engine, "beating:2:b", 0.2)
    quiet.register()
    beating.register()
    sub = leased_submission(engine, "quiet:1:a")
    with engine.begin() as conn:
        conn.execute(
            insert(ledger.source_leases).values(
                name="job:sweep", owner="quiet:1:a", expires_at=utcnow() + timedelta(minutes=5)
            )
        )
        held = {m.id: (m.state, m.holds, m.leased) for m in processes.members(conn)}
    assert held["quiet:1:a"] == ("running", ("job:sweep",), {"submissions": 1})
    assert held["beating:2:b"] == ("running", (), {})
    assert beating.beat() == [] and beating.count == 2

    time.sleep(0.7)  # three beats missed by the quiet one; the beating one writes its own
    assert beating.beat() == ["quiet:1:a"]
    assert beating.count == 1
    with engine.connect() as conn:
        lease = conn.execute(
            select(ledger.submissions.c.lease_owner, ledger.submissions.c.crashes).where(
                ledger.submissions.c.id == sub
            )
        ).one()
        assert lease == (None, 1)  # free again, and the crash is counted against it
        assert conn.execute(select(ledger.source_leases)).all() == []
        states = {m.id: m.state for m in processes.members(conn)}
    assert states == {"beating:2:b": "running", "quiet:1:a": "lost"}
    assert beating.beat() == []  # taken over once

    # The quiet one was only slow: it says so, and registers again.
    with caplog.at_level("ERROR", logger="daemon.pipeline.processes"):
        quiet.beat()
    assert "taken for lost" in caplog.text
    with engine.connect() as conn:
        states = {m.id: m.state for m in processes.members(conn)}
    assert states == {"beating:2:b": "running", "quiet:1:a": "running"}
    assert quiet.count == 2

    quiet.end()
    with engine.connect() as conn:
        assert {m.id: m.state for m in processes.members(conn)}["quiet:1:a"] == "stopped"
        assert processes.running(conn) == ["beating:2:b"]


def test_rows_of_processes_long_ended_are_forgotten(engine):
    processes.Heartbeat(engine, "old:1:a", 1.0).register()
    with engine.begin() as conn:
        conn.execute(
            update(processes.processes_t).values(
                ended="stopped", ended_at=utcnow() - timedelta(days=2)
            )
        )
        processes.reap(conn, actor="test")
        assert conn.execute(select(processes.processes_t)).all() == []


def test_the_account_rate_is_shared_among_the_running_processes():
    reset_shared_limiters()
    now = [0.0]
    limiter = RateLimiter(10.0, clock=lambda: now[0], sleep=lambda s: None)
    try:
        share_among(4)
        assert limiter.rate == 2.5
        later = RateLimiter(8.0, clock=lambda: now[0], sleep=lambda s: None)
        assert later.rate == 2.0  # made while four run
        waits = [limiter.acquire() for _ in range(6)]
        # A burst of 2.5 tokens at most, then one per 0.4 s (the caller sleeps what it owes).
        assert waits == pytest.approx([0, 0, 0.2, 0.6, 1.0, 1.4])
        share_among(1)
        assert (limiter.rate, later.rate) == (10.0, 8.0)
    finally:
        share_among(1)


# ------------------------------------------------------------------ real processes


def status_of(config: Path) -> dict:
    out = subprocess.run(
        [sys.executable, "-m", "daemon.cli", "--config", str(config), "status", "--json"],
        capture_output=True, text=True, timeout=60, cwd=ROOT,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def holders(config: Path) -> dict[str, str]:
    """Lease → the process holding it, among the running ones."""
    return {
        lease: item["id"]
        for item in status_of(config)["processes"]
        if item["state"] == "running"
        for lease in item["holds"]
    }


def test_two_processes_on_postgresql_share_the_work_and_take_over_a_killed_one(tmp_path, pg_url):
    config = write_config(tmp_path, store_url=pg_url)
    text_ = config.read_text().replace(
        "lease_seconds = 30", "lease_seconds = 30\nheartbeat_interval = 0.5\nsweep_interval = 1"
    )
    config.write_text(text_)
    first, second = sibling_configs(config, 2)
    a, b = DaemonProcess(first).start(), DaemonProcess(second).start()
    config = first

    drop_invoices(tmp_path / "inbox", 8, prefix="first", first_seed=1)
    outbox = tmp_path / "outbox"
    wait_until(lambda: len(list(outbox.glob("*.json"))) == 8, 60, what="8 exports")
    folder = f"folder:{(tmp_path / 'inbox').resolve()}"
    held = wait_until(
        lambda: (h := holders(config)) and {folder, "job:outages", "job:sweep"} <= h.keys() and h,
        20,
        what="the folder and the jobs held",
    )
    report = status_of(config)
    running = [p for p in report["processes"] if p["state"] == "running"]
    assert len(running) == 2 and all(p["heartbeat_age_seconds"] < 5 for p in running)
    assert len({held[folder], held["job:outages"]}) >= 1
    plain = subprocess.run(
        [sys.executable, "-m", "daemon.cli", "--config", str(config), "status"],
        capture_output=True, text=True, timeout=60, cwd=ROOT,
    ).stdout  # fmt: skip
    assert "processes on this store" in plain and folder in plain

    # Kill whichever holds the folder; the other takes it over and goes on.
    pids = {p["id"]: p["pid"] for p in running}
    holder, survivor = (a, b) if pids[held[folder]] == a.proc.pid else (b, a)
    holder.kill()
    wait_until(
        lambda: holders(survivor.config).get(folder) not in (None, held[folder]),
        30,
        what="the folder taken over",
    )
    states = {p["id"]: p["state"] for p in status_of(survivor.config)["processes"]}
    assert states[held[folder]] == "lost"
    drop_invoices(tmp_path / "inbox", 6, prefix="second", first_seed=20)
    wait_until(lambda: len(list(outbox.glob("*.json"))) == 14, 60, what="14 exports")

    engine = store_engine.make_engine(pg_url)
    with engine.connect() as conn:
        docs = conn.execute(text("SELECT COUNT(*), COUNT(DISTINCT sha256) FROM documents")).one()
        subs = conn.execute(text("SELECT COUNT(*) FROM submissions")).scalar()
    engine.dispose()
    assert tuple(docs) == (14, 14) and subs == 14
    assert survivor.stop() == 0
    assert {p["state"] for p in status_of(config)["processes"]} == {"lost", "stopped"}

    # A process given another blob directory for the same store is refused at once.
    (wrong,) = sibling_configs(tmp_path / "p0" / "config.toml", 1)
    wrong.write_text(wrong.read_text().replace(f"{tmp_path}/var/blobs", f"{tmp_path}/other"))
    proc = DaemonProcess(wrong).start(wait_ready=False)
    assert proc.wait_exit(30) == 1
    assert (
        "store.blob_dir" in proc.log() and "must use the store's one blob directory" in proc.log()
    )


def test_work_queued_on_postgresql_wakes_the_other_processes(pg_url):
    import threading

    from daemon.pipeline import wakeups

    heard: list[str] = []
    got = threading.Event()

    def on_topic(topic: str) -> None:
        heard.append(topic)
        got.set()

    listener = wakeups.Listener(pg_url, on_topic)
    listener.start()
    engine = store_engine.make_engine(pg_url)
    try:
        wait_until(lambda: _listening(engine), 10, what="LISTEN in place")
        with engine.connect() as conn:  # rolled back: nobody hears of it
            wakeups.announce(conn, "gone")
            conn.rollback()
        with engine.begin() as conn:
            wakeups.announce(conn, "rossum_main")
            assert not got.wait(0.2), "sent before the commit"
        assert got.wait(5) and heard == ["rossum_main"]
        got.clear()
        overflow = wakeups.Overflow(engine)  # one announcement per profile and 0.1 s at most
        overflow("gini")
        overflow("gini")
        assert overflow.sent == 1 and got.wait(5) and heard == ["rossum_main", "gini"]
    finally:
        listener.stop()
        engine.dispose()


def _listening(engine) -> bool:
    with engine.connect() as conn:
        return bool(
            conn.execute(
                text("SELECT COUNT(*) FROM pg_stat_activity WHERE query LIKE 'LISTEN %'")
            ).scalar()
        )
