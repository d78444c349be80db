"""Benchmark: the daemon against the Gini emulator (a separate process).

Two measurements, each on a fresh emulator and store (Gini has no webhooks: polling only):

1. **throughput** — N invoices, emulator processing delay 0, no throttling. The daemon (folder
   intake → Gini → SQLite → folder export) is compared in the same run with a minimal httpx
   script that makes the same Gini calls for the same files at the same concurrency (one
   password-grant token, a raw upload with our id as metadata, status polls of the
   ``Location``, one extractions fetch) and does nothing else. Target: daemon ≥ 0.6 x script.
2. **polling** — delay 2 s, at most 50 documents in flight, ``poll_interval`` 2 s. Reported:
   elapsed against the ideal N / 50 x 2 s, p50/p95 from "the emulator finished the document"
   to "fields committed in SQL", and status requests (``GET /documents/{id}``) per document.
   Target: ≤ 3 per document on average.

    .venv/bin/python bench/bench_gini.py --docs 1000
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
from sqlalchemy import create_engine, text  # noqa: E402

from connectors.vendors.gini.client import MEDIA_TYPE  # noqa: E402
from tests.daemon_proc import (  # noqa: E402
    DaemonProcess,
    EmulatorProcess,
    free_port,
    generate_invoices,
    sqlite_time,
    toml_table,
    wait_until,
    write_config,
)

CONCURRENCY = 8
STATUS_ROUTE = "GET /documents/{id}"
"""Status polls only: the fetch has its own route (``…/extractions``)."""
ID_METADATA = "docrelayid"
"""The metadata key that carries our document id (the emulator shows it by suffix)."""


def Emulator(*args: str) -> EmulatorProcess:
    return EmulatorProcess("gini", "--rate-limit", "0", *args)


def status_requests(seen: dict[str, Any]) -> int:
    return sum(seen["requests"]["by_path"].get(STATUS_ROUTE, {}).values())


def run_daemon(
    staging: Path, emulator: EmulatorProcess, *, max_in_flight: int | None, poll: float
) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="docrelay-bench-gini-"))
    try:
        values = {
            "kind": "gini",
            "base_url": emulator.url,
            "auth_url": emulator.url,
            "client_id": "client",
            "client_secret": "secret",
            "username": "user@example.com",
            "password": "secret",
            "concurrency": CONCURRENCY,
            "rate_limit": 10000,
            "poll_interval": poll,
            "max_in_flight": max_in_flight,
        }
        config = write_config(
            work,
            port=free_port(),
            vendor="gini_main",
            extra=toml_table("[vendors.gini_main]", values),
            settle=0.2,
            log_level="warning",
        )
        daemon = DaemonProcess(config).start()
        inbox = work / "inbox"
        files = sorted(staging.iterdir())
        assert daemon.proc is not None
        cpu_before = cpu_seconds(daemon.proc.pid)
        began = time.time()
        for path in files:
            os.link(path, inbox / path.name)
        engine = create_engine(f"sqlite:///{work}/var/docrelay.db")
        with engine.connect() as conn:

            def finished() -> bool:
                done = conn.execute(
                    text("SELECT COUNT(*) FROM submissions WHERE state = 'done'")
                ).scalar_one()
                return done >= len(files)

            wait_until(finished, 1800, interval=0.2, what="all done")
            elapsed = time.time() - began
            fields_at = {
                row[0]: sqlite_time(row[1])
                for row in conn.execute(text("SELECT document_id, normalized_at FROM extractions"))
            }
        wait_until(
            lambda: len(list((work / "outbox").glob("*.json"))) >= len(files),
            300,
            interval=0.5,
            what="exported",
        )
        cpu = cpu_seconds(daemon.proc.pid) - cpu_before
        assert daemon.stop() == 0
        with engine.connect() as conn:
            delivered = conn.execute(
                text("SELECT COUNT(*) FROM deliveries WHERE state = 'delivered'")
            ).scalar_one()
        engine.dispose()
        seen = emulator.stats()
        latencies = []
        for doc in emulator.documents():
            ours = (doc.get("metadata") or {}).get(ID_METADATA)
            if ours and ours.isdigit() and doc["completed_at"] and int(ours) in fields_at:
                latencies.append(fields_at[int(ours)] - doc["completed_at"])
        return {
            "elapsed_s": elapsed,
            "docs_per_s": len(files) / elapsed,
            "uploads": seen["documents"]["total"],
            "delivered": delivered,
            "status_requests_per_doc": status_requests(seen) / len(files),
            "tokens": seen["tokens"],
            "requests": seen["requests"]["by_path"],
            "latencies": latencies,
            "cpu_ms_per_doc": 1000 * cpu / len(files),
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)


def cpu_seconds(pid: int) -> float:
    """User plus system CPU of a process so far (``/proc/<pid>/stat`` fields 14 and 15)."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_script(staging: Path, emulator: EmulatorProcess) -> dict[str, Any]:
    """The same Gini calls the daemon makes per document, and nothing else."""
    base = emulator.url
    files = sorted(staging.iterdir())
    client = httpx.Client(
        timeout=30,
        limits=httpx.Limits(max_connections=CONCURRENCY * 2),
        headers={"Accept": MEDIA_TYPE},
    )
    granted = client.post(
        f"{base}/oauth/token",
        params={"grant_type": "password"},
        auth=("client", "secret"),
        data={"username": "user@example.com", "password": "secret"},
    )
    granted.raise_for_status()
    client.headers["Authorization"] = f"Bearer {granted.json()['access_token']}"

    def one(numbered: tuple[int, Path]) -> None:
        number, path = numbered
        with path.open("rb") as stream:
            created = client.post(
                f"{base}/documents",
                params={"filename": path.name},
                content=stream.read(),
                headers={
                    "Content-Type": "application/pdf",
                    f"x-document-metadata-{ID_METADATA}": str(number),
                },
            )
        created.raise_for_status()
        location = created.headers["Location"]
        while True:
            detail = client.get(location)
            detail.raise_for_status()
            info = detail.json()
            if info["progress"] != "PENDING":
                break
            time.sleep(0.05)
        assert info["progress"] == "COMPLETED", info
        client.get(info["_links"]["extractions"]).raise_for_status()

    began = time.time()
    with ThreadPoolExecutor(CONCURRENCY) as pool:
        list(pool.map(one, enumerate(files, 1)))
    elapsed = time.time() - began
    client.close()
    return {
        "elapsed_s": elapsed,
        "docs_per_s": len(files) / elapsed,
        "requests": emulator.stats()["requests"]["by_path"],
    }


def p95(values: list[float]) -> float:
    return statistics.quantiles(values, n=20)[-1] if len(values) >= 20 else max(values)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=1000)
    parser.add_argument("--skip", action="append", default=[], help="throughput|polling")
    args = parser.parse_args()
    staging = Path(tempfile.mkdtemp(prefix="docrelay-bench-docs-"))
    try:
        generate_invoices(staging, args.docs)
        if "throughput" not in args.skip:
            emulator = Emulator("--delay", "0")
            try:
                daemon = run_daemon(staging, emulator, max_in_flight=None, poll=0.2)
            finally:
                emulator.stop()
            emulator = Emulator("--delay", "0")
            try:
                script = run_script(staging, emulator)
            finally:
                emulator.stop()
            ratio = daemon["docs_per_s"] / script["docs_per_s"]
            print(f"throughput: daemon {daemon['docs_per_s']:.1f} docs/s "
                  f"({daemon['elapsed_s']:.1f}s to fields in SQL; uploads {daemon['uploads']}, "
                  f"delivered {daemon['delivered']}, tokens {daemon['tokens']}), script "
                  f"{script['docs_per_s']:.1f} docs/s ({script['elapsed_s']:.1f}s); ratio "
                  f"{ratio:.2f} (target >= 0.6); daemon CPU {daemon['cpu_ms_per_doc']:.1f} ms"
                  " per document", flush=True)  # fmt: skip
            print("  daemon requests:", json.dumps(daemon["requests"]))
            print("  script requests:", json.dumps(script["requests"]))
        ideal = args.docs / 50 * 2
        if "polling" not in args.skip:
            emulator = Emulator("--delay", "2")
            try:
                result = run_daemon(staging, emulator, max_in_flight=50, poll=2.0)
            finally:
                emulator.stop()
            lat = sorted(result["latencies"])
            latency = (
                f"p50 {1000 * statistics.median(lat):.0f} ms, p95 {1000 * p95(lat):.0f} ms"
                if lat
                else "none matched"
            )
            print(f"polling: {result['elapsed_s']:.1f}s for {args.docs} (ideal {ideal:.0f}s, "
                  f"{result['elapsed_s'] / ideal:.2f}x); latency emulator-finished -> fields in "
                  f"SQL: {latency}; status requests/doc {result['status_requests_per_doc']:.2f} "
                  f"(target <= 3); uploads {result['uploads']}, delivered "
                  f"{result['delivered']}", flush=True)  # fmt: skip
            print("  daemon requests:", json.dumps(result["requests"]))
    finally:
        shutil.rmtree(staging, ignore_errors=True)


if __name__ == "__main__":
    main()
