"""A poison pill: a document that kills every worker process that reads it (a segfault in a
parser, the OOM killer) is counted per run in the store and goes `dead` with "crashed the
worker" after ``max_attempts`` crashes, instead of taking the service down on every restart;
the documents that were in hand beside it go through."""

from __future__ import annotations

import httpx
import pytest
from sqlalchemy.exc import OperationalError

from tests.daemon_proc import (
    DaemonProcess,
    drop_invoices,
    exported,
    query,
    wait_until,
    write_config,
)
from tests.invoices import random_spec, render_pdf

pytestmark = pytest.mark.e2e

MAX_ATTEMPTS = 3
GOOD = 4


def submissions(root) -> dict[str, dict]:
    """Filename → its submission; empty while the store is not there yet."""
    if not (root / "var" / "docrelay.db").exists():
        return {}
    try:
        rows = query(
            root,
            "SELECT d.filename, s.state, s.error, s.crashes FROM submissions s "
            "JOIN documents d ON d.id = s.document_id",
        )
    except OperationalError:  # created, not migrated yet
        return {}
    return {r["filename"]: dict(r) for r in rows}


def test_a_document_that_kills_the_worker_goes_dead_and_the_others_go_through(tmp_path):
    config = write_config(tmp_path, settle=0.2)
    config.write_text(
        config.read_text().replace(
            "lease_seconds = 30", f"lease_seconds = 30\nmax_attempts = {MAX_ATTEMPTS}"
        )
    )
    inbox = tmp_path / "inbox"
    specs = drop_invoices(inbox, GOOD, prefix="good", first_seed=300)
    (inbox / "poison.pdf").write_bytes(render_pdf(random_spec(399)))
    # Every process that reaches the local extractor with poison.pdf SIGKILLs itself there.
    env = {"DOCRELAY_CRASH_AT": "in_vendor_call=poison.pdf"}

    crashed = 0
    daemon = None
    for _ in range(MAX_ATTEMPTS + 2):
        daemon = DaemonProcess(config, env=env).start(wait_ready=False)
        ended = wait_until(
            lambda d=daemon: (
                not d.alive() or submissions(tmp_path).get("poison.pdf", {}).get("state") == "dead"
            ),
            60,
            what="a crash or the poison pill's end",
        )
        assert ended
        if daemon.alive():
            break
        assert daemon.wait_exit(10) == -9, daemon.log()
        crashed += 1
    assert daemon is not None and daemon.alive(), daemon.log() if daemon else ""
    try:
        assert crashed == MAX_ATTEMPTS, daemon.log()
        wait_until(lambda: exported(tmp_path) >= GOOD, 60, what="the good documents exported")
        subs = wait_until(
            lambda: (
                (s := submissions(tmp_path))
                and all(s.get(name, {}).get("state") == "done" for name in specs)
                and s
            ),
            30,
            what="the good documents done",
        )
        poison = subs["poison.pdf"]
        assert poison["state"] == "dead"
        assert f"crashed the worker {MAX_ATTEMPTS} times" in poison["error"], poison
        assert all(subs[name]["crashes"] == 0 for name in specs), subs
        assert exported(tmp_path) == GOOD, "each good document exported once, the poison never"
        events = query(
            tmp_path,
            "SELECT e.kind FROM events e JOIN documents d ON d.id = e.document_id "
            "WHERE d.filename = 'poison.pdf' AND e.kind IN ('crashed', 'suspect')",
        )
        assert sorted(e["kind"] for e in events) == ["crashed"] + ["suspect"] * (MAX_ATTEMPTS - 1)
        wait_until(daemon.ready, 20, what="daemon ready")
        assert httpx.get(f"{daemon.url}/healthz", timeout=5).status_code == 200
        # The original is kept: a person can look at it, or retry it after a fix.
        blob = query(tmp_path, "SELECT sha256 FROM documents WHERE filename = 'poison.pdf'")
        sha = blob[0]["sha256"]
        assert (tmp_path / "var" / "blobs" / sha[:2] / sha[2:4] / sha).exists()
    finally:
        assert daemon.stop() == 0, daemon.log()


def test_a_suspect_runs_alone_and_ordinary_steps_wait_for_it():
    """The gate itself: a suspect waits for the step in progress, and a step that comes after
    the suspect asked waits until the suspect is done (so a crash then blames it alone)."""
    import threading

    from daemon.pipeline.workers import Isolation

    gate = Isolation()
    order: list[str] = []
    first_in, first_out = threading.Event(), threading.Event()

    def ordinary(name: str, hold: threading.Event | None = None) -> None:
        with gate.shared():
            order.append(f"{name} in")
            if hold is not None:
                first_in.set()
                hold.wait(30)
            order.append(f"{name} out")

    def suspect() -> None:
        with gate.alone():
            order.append("suspect in")
            order.append("suspect out")

    threads = [threading.Thread(target=ordinary, args=("first", first_out))]
    threads[0].start()
    assert first_in.wait(30)
    threads.append(threading.Thread(target=suspect))
    threads[1].start()
    wait_until(lambda: gate._waiting == 1, 30, what="the suspect waiting")
    threads.append(threading.Thread(target=ordinary, args=("later",)))
    threads[2].start()
    first_out.set()
    for thread in threads:
        thread.join(30)
    assert order == ["first in", "first out", "suspect in", "suspect out", "later in", "later out"]
