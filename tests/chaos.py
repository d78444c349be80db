"""Chaos across processes: N real daemons on one PostgreSQL store, a faulty Rossum emulator and
a faulty downstream webhook receiver, processes SIGKILLed at random and restarted.

Used by ``tests/test_chaos.py`` (bounded, in CI) and ``bench/bench_chaos.py`` (longer). What is
counted comes from outside the daemons: exports at the receiver (records per document), uploads
at the emulator (annotations per docrelay document id), and the store's final states.
"""

from __future__ import annotations

import random
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, text

from tests.daemon_proc import (
    DaemonProcess,
    EmulatorProcess,
    generate_invoices,
    sibling_configs,
    toml_table,
    wait_until,
    write_config,
)
from tests.servers import serve
from tests.webhook_receiver import SECRET, create_app


@dataclass
class ChaosResult:
    docs: int
    kills: int
    elapsed_s: float
    documents: int = 0
    """Rows in the store's ``documents`` (one per file when nothing was taken twice)."""
    lost: list[int] = field(default_factory=list)
    """Documents of the store with no record at the receiver."""
    duplicate_exports: int = 0
    """Records at the receiver beyond one per document."""
    pushes: int = 0
    uploads: int = 0
    duplicate_uploads: dict[int, int] = field(default_factory=dict)
    """Document id → annotations at the emulator beyond the first."""
    unreconciled: list[int] = field(default_factory=list)
    """Documents uploaded twice whose store does not show exactly one finished submission."""
    not_done: list[tuple[Any, ...]] = field(default_factory=list)
    """Submissions or deliveries that did not end well (state, count)."""
    faults: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> str:
        share = len(self.duplicate_uploads) / self.docs
        return (
            f"{self.docs} files, {self.kills} kills, {self.elapsed_s:.1f} s: {self.documents} "
            f"documents in the store, lost "
            f"{len(self.lost)}, duplicate exports {self.duplicate_exports} ({self.pushes} pushes), "
            f"uploads {self.uploads}, documents uploaded twice {len(self.duplicate_uploads)} "
            f"({100 * share:.2f} %), unreconciled {len(self.unreconciled)}, not done "
            f"{self.not_done or 'none'}; faults {self.faults}"
        )


def _config(root: Path, store_url: str, emulator: EmulatorProcess, hook_url: str) -> str:
    vendor = emulator.vendor_toml(concurrency=4, rate_limit=1000, poll_interval=0.3)
    hook = toml_table(
        "[destinations.hook]",
        {"kind": "webhook", "url": f"{hook_url}/hook", "secret": SECRET, "max_retries": 0,
         "timeout": 10},
    )  # fmt: skip
    config = write_config(
        root,
        store_url=store_url,
        extra=vendor + hook,
        settle=0.2,
        vendor="rossum_main",
        log_level="warning",
    )
    return (
        config.read_text()
        .replace('destinations = ["outbox"]', 'destinations = ["hook"]')
        .replace(
            "lease_seconds = 30",
            "lease_seconds = 30\nheartbeat_interval = 0.5\nsweep_interval = 1\n"
            "retry_after_max = 2\nmax_attempts = 16",
        )
    )


def run_chaos(
    root: Path,
    store_url: str,
    *,
    docs: int,
    processes: int = 3,
    kills: int,
    kill_every: float = 2.5,
    fail_rate: float = 0.2,
    rate_limit: int = 20,
    seed: int = 17,
    timeout: float = 600,
) -> ChaosResult:
    """Run the whole scenario; returns what was counted (the caller asserts)."""
    rng = random.Random(seed)
    staging = root / "staging"
    generate_invoices(staging, docs)
    emulator = EmulatorProcess(
        "rossum", "--delay", "0", "--fail-rate", str(fail_rate), "--rate-limit",
        str(rate_limit), "--seed", str(seed), "--slow", "0.5",
    )  # fmt: skip
    app = create_app()
    receiver = app.state.receiver
    receiver.fail_rate = fail_rate
    daemons: list[DaemonProcess] = []
    engine = create_engine(store_url)
    try:
        with serve(app) as hook_url:
            config = root / "config.toml"
            config.write_text(_config(root, store_url, emulator, hook_url))
            for own in sibling_configs(config, processes):
                daemons.append(DaemonProcess(own).start(timeout=60))
            began = time.time()
            inbox = root / "inbox"
            for path in sorted(staging.iterdir()):
                path.rename(inbox / path.name)
            for _ in range(kills):
                time.sleep(rng.uniform(0.5 * kill_every, 1.5 * kill_every))
                victim = rng.choice(daemons)
                victim.kill()
                victim.start(wait_ready=False)

            def all_exported() -> bool:
                with receiver.lock:
                    ids = {r["body"]["document_id"] for r in receiver.records.values()}
                return len(ids) >= docs

            wait_until(all_exported, timeout, interval=0.5, what=f"{docs} documents exported")
            elapsed = time.time() - began
            for daemon in daemons:  # restarted ones come up, then every process stops cleanly
                wait_until(daemon.ready, 60, what=f"ready (log: {daemon.log_path})")
            for daemon in daemons:
                assert daemon.stop() == 0, daemon.log()[-3000:]
            with receiver.lock:
                records = [dict(r) for r in receiver.records.values()]
                pushes = sum(1 for s in receiver.seen if s.method == "POST")
                faults = dict(receiver.faults)
        stats = emulator.stats()
        annotations = emulator.annotations()
    finally:
        for daemon in daemons:
            daemon.kill()
        emulator.stop()
    with engine.connect() as conn:
        doc_ids = list(conn.execute(text("SELECT id FROM documents ORDER BY id")).scalars())
        subs = conn.execute(text("SELECT state, COUNT(*) FROM submissions GROUP BY state")).all()
        dels = conn.execute(text("SELECT state, COUNT(*) FROM deliveries GROUP BY state")).all()
        done_per_doc = dict(
            conn.execute(
                text(
                    "SELECT document_id, COUNT(*) FROM submissions WHERE state = 'done' "
                    "GROUP BY document_id"
                )
            ).all()
        )
    engine.dispose()
    exported = Counter(r["body"]["document_id"] for r in records)
    uploaded = Counter(
        int(a["metadata"].get("docrelay_document_id", 0)) for a in annotations if a.get("metadata")
    )
    twice = {doc: n - 1 for doc, n in uploaded.items() if n > 1}
    return ChaosResult(
        docs=docs,
        kills=kills,
        elapsed_s=elapsed,
        documents=len(doc_ids),
        lost=[doc for doc in doc_ids if doc not in exported],
        duplicate_exports=len(records) - len(exported),
        pushes=pushes,
        uploads=stats["uploads"],
        duplicate_uploads=twice,
        unreconciled=[doc for doc in twice if done_per_doc.get(doc) != 1],
        not_done=[("submissions", *row) for row in subs if row[0] != "done"]
        + [("deliveries", *row) for row in dels if row[0] != "delivered"],
        faults={
            "receiver": faults,
            "emulator": stats.get("faults"),
            "throttled": sum(
                codes.get("429", 0) for codes in stats["requests"]["by_path"].values()
            ),
        },
    )
