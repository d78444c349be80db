"""Benchmark: the daemon against the DeepOpinion emulator (a separate process).

Two measurements, each on a fresh emulator and store:

1. **throughput** — N invoices, emulator processing delay 0, no throttling. The daemon (folder
   intake → DeepOpinion → SQLite → folder export, profile concurrency 8) is compared in the
   same run with a minimal httpx script making the same DeepOpinion calls for the same files
   at the same concurrency (one login, then per document the multipart extraction POST with
   ``return_bboxes=true&return_annotated_pages=false``) and doing nothing else. Target:
   daemon ≥ 0.6 x script.
2. **synchronous** — delay 2 s, 50 documents in flight (profile concurrency 50: for a
   synchronous vendor the documents in flight are the open calls). Target: all N done within
   1.3 x the ideal N / 50 x 2 s; also reported: extraction calls per document and the most
   calls the emulator saw open at once (sampled).

    .venv/bin/python bench/bench_deepopinion.py --docs 1000
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
from sqlalchemy import create_engine, text  # noqa: E402

from tests.daemon_proc import (  # noqa: E402
    DaemonProcess,
    EmulatorProcess,
    free_port,
    generate_invoices,
    toml_table,
    wait_until,
    write_config,
)

CONCURRENCY = 8
IN_FLIGHT = 50
SYNC_DELAY = 2.0
EXTRACT = "/organizations/1/projects/1/models/1/extract"
PARAMS = {"return_bboxes": "true", "return_annotated_pages": "false"}


def Emulator(*args: str) -> EmulatorProcess:
    return EmulatorProcess("deepopinion", "--rate-limit", "0", "--low-confidence-rate", "0", *args)


class OpenCalls:
    """Samples the emulator's open extraction calls (documents started, not yet answered)
    in the background: the concurrency the daemon really reached."""

    def __init__(self, emulator: EmulatorProcess, interval: float = 0.25) -> None:
        self.emulator, self.interval = emulator, interval
        self.most = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                seen = self.emulator.stats()
            except httpx.HTTPError:
                continue
            self.most = max(self.most, seen["documents"] - seen["extractions"])

    def __enter__(self) -> OpenCalls:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)


def run_daemon(staging: Path, emulator: EmulatorProcess, *, concurrency: int) -> dict[str, Any]:
    """The daemon over the staged files: seconds from dropping them to every result
    committed in SQL (then waits for the exports)."""
    work = Path(tempfile.mkdtemp(prefix="docrelay-bench-deepopinion-"))
    try:
        values = {
            "kind": "deepopinion",
            "base_url": emulator.url,
            "email": "user@example.com",
            "password": "secret",
            "organization_id": 1,
            "project_id": 1,
            "model_id": 1,
            "concurrency": concurrency,
            "max_in_flight": concurrency,
            "rate_limit": 10000,
        }
        config = write_config(
            work,
            port=free_port(),
            vendor="deepopinion_main",
            extra=toml_table("[vendors.deepopinion_main]", values),
            settle=0.2,
            log_level="warning",
        )
        daemon = DaemonProcess(config).start()
        inbox = work / "inbox"
        files = sorted(staging.iterdir())
        engine = create_engine(f"sqlite:///{work}/var/docrelay.db")
        with OpenCalls(emulator) as sampler, engine.connect() as conn:
            began = time.time()
            for path in files:
                os.link(path, inbox / path.name)

            def finished() -> bool:
                done = conn.execute(
                    text("SELECT COUNT(*) FROM submissions WHERE state = 'done'")
                ).scalar_one()
                return done >= len(files)

            wait_until(finished, 3600, interval=0.2, what="all done")
            elapsed = time.time() - began
        wait_until(
            lambda: len(list((work / "outbox").glob("*.json"))) >= len(files),
            600,
            interval=0.5,
            what="exported",
        )
        with engine.connect() as conn:
            delivered = conn.execute(
                text("SELECT COUNT(*) FROM deliveries WHERE state = 'delivered'")
            ).scalar_one()
        engine.dispose()
        assert daemon.stop() == 0, daemon.log()
        seen = emulator.stats()
        return {
            "elapsed_s": elapsed,
            "docs_per_s": len(files) / elapsed,
            "extractions": seen["extractions"],
            "calls_per_doc": seen["requests"]["by_path"].get(f"POST {EXTRACT}", 0) / len(files),
            "delivered": delivered,
            "most_open": sampler.most,
            "requests": seen["requests"]["by_path"],
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)


def run_script(staging: Path, emulator: EmulatorProcess) -> dict[str, Any]:
    """The same DeepOpinion calls the daemon makes per document, and nothing else."""
    files = sorted(staging.iterdir())
    client = httpx.Client(
        base_url=emulator.url,
        timeout=120,
        limits=httpx.Limits(max_connections=CONCURRENCY * 2),
    )
    token = client.post(
        "/auth/login", json={"email": "user@example.com", "password": "secret"}
    ).json()["auth_token"]
    client.headers["Authorization"] = f"Bearer {token}"

    def one(path: Path) -> None:
        with path.open("rb") as stream:
            answer = client.post(
                EXTRACT, params=PARAMS, files={"file": (path.name, stream, "application/pdf")}
            )
        answer.raise_for_status()
        answer.json()

    began = time.time()
    with ThreadPoolExecutor(CONCURRENCY) as pool:
        list(pool.map(one, files))
    elapsed = time.time() - began
    client.close()
    return {
        "elapsed_s": elapsed,
        "docs_per_s": len(files) / elapsed,
        "requests": emulator.stats()["requests"]["by_path"],
    }


def main() -> None:
    """Run the measurements the options ask for and print one line each."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--docs", type=int, default=1000)
    parser.add_argument("--skip", action="append", default=[], help="throughput|synchronous")
    args = parser.parse_args()
    staging = Path(tempfile.mkdtemp(prefix="docrelay-bench-docs-"))
    try:
        generate_invoices(staging, args.docs)
        if "throughput" not in args.skip:
            emulator = Emulator("--delay", "0")
            try:
                daemon = run_daemon(staging, emulator, concurrency=CONCURRENCY)
            finally:
                emulator.stop()
            emulator = Emulator("--delay", "0")
            try:
                script = run_script(staging, emulator)
            finally:
                emulator.stop()
            ratio = daemon["docs_per_s"] / script["docs_per_s"]
            print(f"throughput: daemon {daemon['docs_per_s']:.1f} docs/s "
                  f"({daemon['elapsed_s']:.1f}s to results in SQL; extractions "
                  f"{daemon['extractions']}, delivered {daemon['delivered']}), script "
                  f"{script['docs_per_s']:.1f} docs/s ({script['elapsed_s']:.1f}s); ratio "
                  f"{ratio:.2f} (target >= 0.6)", flush=True)  # fmt: skip
            print("  daemon requests:", json.dumps(daemon["requests"]))
            print("  script requests:", json.dumps(script["requests"]))
        if "synchronous" not in args.skip:
            ideal = args.docs / IN_FLIGHT * SYNC_DELAY
            emulator = Emulator("--delay", str(SYNC_DELAY))
            try:
                result = run_daemon(staging, emulator, concurrency=IN_FLIGHT)
            finally:
                emulator.stop()
            print(f"synchronous: {result['elapsed_s']:.1f}s for {args.docs} (ideal {ideal:.0f}s, "
                  f"{result['elapsed_s'] / ideal:.2f}x, target <= 1.3x); extraction calls/doc "
                  f"{result['calls_per_doc']:.2f}; most calls open at once "
                  f"{result['most_open']} (of {IN_FLIGHT}); delivered {result['delivered']}",
                  flush=True)  # fmt: skip
    finally:
        shutil.rmtree(staging, ignore_errors=True)


if __name__ == "__main__":
    main()
