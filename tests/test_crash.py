"""Crash tests: the daemon SIGKILLs itself at named points and is restarted.

Pass: every document ends exported exactly once, no source file is lost, no document is
ingested twice.
"""

from __future__ import annotations

import hashlib
import json

import pytest
from sqlalchemy import create_engine, text

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
