"""Crash tests: the daemon SIGKILLs itself at named points and is restarted.

Pass: every document ends exported exactly once, no source file is lost, no document is
ingested twice.
"""

from __future__ import annotations

import hashlib
import json

import pytest
from sqlalchemy import create_engine, text

from daemon.store.engine import make_engine
from tests.daemon_proc import DaemonProcess, wait_until, write_config
from tests.invoices import random_spec, render_pdf

pytestmark = pytest.mark.e2e

DOCS = 5

POINTS = [
    "after_blob_write",
    "after_document_commit",  # after the submission row is committed, before the file moves
    "after_upload_response",
    "after_fetch_commit",  # extraction committed (with its fields and outbox rows), not delivered
    "before_delivery",
    "after_delivery_push",  # after the export is written, before it is marked delivered
]


@pytest.mark.parametrize("point", POINTS)
def test_killed_at_point_then_restarted_exports_each_document_once(tmp_path, point):
    config = write_config(tmp_path, settle=0.2)
    inbox, outbox = tmp_path / "inbox", tmp_path / "outbox"
    inbox.mkdir()
    hashes = set()
    for seed in range(DOCS):
        data = render_pdf(random_spec(100 + seed), lang="en")
        hashes.add(hashlib.sha256(data).hexdigest())
        (inbox / f"doc{seed}.pdf").write_bytes(data)

    crashing = DaemonProcess(config, env={"DOCRELAY_CRASH_AT": f"{point}@3"})
    crashing.start(wait_ready=False)
    assert crashing.wait_exit(60) == -9, crashing.log()

    daemon = DaemonProcess(config).start()
    try:
        wait_until(lambda: len(list(outbox.glob("*.json"))) >= DOCS, 60, what="exports")
        engine = create_engine(f"sqlite:///{tmp_path}/var/docrelay.db")
        with engine.connect() as conn:
            wait_until(
                lambda: (
                    conn.execute(
                        text("SELECT COUNT(*) FROM deliveries WHERE state = 'delivered'")
                    ).scalar()
                    == DOCS
                ),
                30,
                what="deliveries marked delivered",
            )
            documents = conn.execute(text("SELECT sha256, intake_state FROM documents")).all()
            states = conn.execute(text("SELECT state FROM submissions")).scalars().all()
            per_doc = conn.execute(
                text("SELECT document_id, COUNT(*) FROM deliveries GROUP BY document_id")
            ).all()
        engine.dispose()
    finally:
        assert daemon.stop() == 0, daemon.log()

    assert sorted(sha for sha, _ in documents) == sorted(hashes), "each file ingested once"
    assert {state for _, state in documents} == {"accepted"}
    assert states == ["done"] * DOCS
    assert all(count == 1 for _, count in per_doc) and len(per_doc) == DOCS
    exports = [json.loads(p.read_text()) for p in outbox.glob("*.json")]
    assert sorted(e["document"]["sha256"] for e in exports) == sorted(hashes)
    assert len(list((inbox / "processed").iterdir())) == DOCS
    assert [p for p in inbox.iterdir() if p.is_file()] == []
    assert not list((tmp_path / "var" / "blobs" / "tmp").iterdir())


DURABLE_TABLES = ("documents", "submissions", "extractions", "deliveries")


def committed_ids(store_url: str) -> dict[str, set[int]]:
    """The ids in each table the pipeline commits to, as another process sees them."""
    engine = make_engine(store_url)
    try:
        with engine.connect() as conn:
            return {
                table: set(conn.execute(text(f"SELECT id FROM {table}")).scalars())
                for table in DURABLE_TABLES
            }
    finally:
        engine.dispose()


def test_r26_rows_committed_before_a_sigkill_are_all_there_after_the_restart(tmp_path, store_url):
    """RELIABILITY 26: the daemon SIGKILLs itself as the commit of the third extraction, with
    its outbox row, returns. Every row committed by then is there after the restart (SQLite
    and PostgreSQL), the third outbox row among them, and it is delivered once."""
    config = write_config(tmp_path, store_url=store_url, settle=0.2)
    inbox, outbox = tmp_path / "inbox", tmp_path / "outbox"
    inbox.mkdir()
    for seed in range(3):
        (inbox / f"durable{seed}.pdf").write_bytes(render_pdf(random_spec(300 + seed), lang="en"))
    crashing = DaemonProcess(config, env={"DOCRELAY_CRASH_AT": "after_fetch_commit@3"})
    crashing.start(wait_ready=False)
    assert crashing.wait_exit(60) == -9, crashing.log()
    before = committed_ids(store_url)
    assert len(before["extractions"]) == 3, "the third extraction's commit had returned"
    assert len(before["deliveries"]) == 3, "and its outbox row with it"

    daemon = DaemonProcess(config).start()
    try:
        wait_until(lambda: len(list(outbox.glob("*.json"))) >= 3, 60, what="exports")
        after = committed_ids(store_url)
    finally:
        assert daemon.stop() == 0, daemon.log()
    for table in DURABLE_TABLES:
        assert before[table] <= after[table], f"{table}: rows committed before the kill are gone"
    assert after["deliveries"] == before["deliveries"], "the committed outbox rows were used"
    assert len(list(outbox.glob("*.json"))) == 3
