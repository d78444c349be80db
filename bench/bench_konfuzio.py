"""Benchmark: the daemon against the Konfuzio emulator (a separate process).

Three measurements, each on a fresh emulator and store:

1. **throughput** — N invoices, emulator processing delay 0, no throttling. The daemon (folder
   intake → Konfuzio → SQLite → folder export) is compared in the same run with a minimal httpx
   script that makes the same Konfuzio calls for the same files at the same concurrency (upload,
   status polls with ``?fields=``, one detail fetch) and does nothing else. Target: daemon ≥ 0.6 x
   script.
2. **callbacks** — delay 2 s, at most 50 documents in flight, callbacks on (polling stays armed,
   slowly). Target: all N done within 1.3 x the ideal N / 50 x 2 s; also reported: p50/p95 from
   "the emulator finished the document" to "fields committed in SQL".
3. **polling** — the same without callbacks. Target: ≤ 3 status requests per document on average.

    .venv/bin/python bench/bench_konfuzio.py --docs 1000
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
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

from connectors.vendors.konfuzio.vendor import POLL_FIELDS  # noqa: E402
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
STATUS_ROUTE = "GET /api/v3/documents/{id}/"
"""Polls and the one fetch share this route; the fetch is subtracted (one per document)."""
OUR_ID = re.compile(r"\.docrelay-(\d+)-")
"""Our document id in the tagged upload name (``<stem>.docrelay-<id>-<sha8><ext>``)."""


def Emulator(*args: str) -> EmulatorProcess:
    return EmulatorProcess("konfuzio", "--rate-limit", "0", *args)


def status_requests(seen: dict[str, Any], docs: int) -> int:
    """GETs of the document detail less the one fetch per document."""
    return sum(seen["requests"]["by_path"].get(STATUS_ROUTE, {}).values()) - docs


def run_daemon(
    staging: Path,
    emulator: EmulatorProcess,
    *,
    callbacks: bool,
    max_in_flight: int | None,
    poll: float,
) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="docrelay-bench-konfuzio-"))
    try:
        values = {
            "kind": "konfuzio",
            "base_url": emulator.url,
            "username": "user@example.com",
            "password": "secret",
            "project": 1,
            "concurrency": CONCURRENCY,
            "rate_limit": 10000,
            "poll_interval": poll,
            "max_in_flight": max_in_flight,
            "callback_token": secrets.token_urlsafe(24) if callbacks else None,
        }
        config = write_config(
            work,
            port=free_port(),
            vendor="konfuzio_main",
            extra=toml_table("[vendors.konfuzio_main]", values),
            settle=0.2,
            log_level="warning",
        )
        daemon = DaemonProcess(config).start()
        inbox = work / "inbox"
        files = sorted(staging.iterdir())
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
            delivered = conn.execute(
                text("SELECT COUNT(*) FROM deliveries WHERE state = 'delivered'")
            ).scalar_one()
        assert daemon.stop() == 0
        engine.dispose()
        seen = emulator.stats()
        latencies = []
        for doc in emulator.documents():
            match = OUR_ID.search(doc["data_file_name"] or "")
            if match and doc["done_at"] and int(match[1]) in fields_at:
                latencies.append(fields_at[int(match[1])] - doc["done_at"])
        return {
            "elapsed_s": elapsed,
            "docs_per_s": len(files) / elapsed,
            "uploads": seen["documents"]["total"],
            "delivered": delivered,
            "status_requests_per_doc": status_requests(seen, len(files)) / len(files),
            "callbacks": seen["callbacks"],
            "requests": seen["requests"]["by_path"],
            "latencies": latencies,
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)


def run_script(staging: Path, emulator: EmulatorProcess) -> dict[str, Any]:
    """The same Konfuzio calls the daemon makes per document, and nothing else."""
    base = f"{emulator.url}/api/v3"
    files = sorted(staging.iterdir())
    client = httpx.Client(timeout=30, limits=httpx.Limits(max_connections=CONCURRENCY * 2))
    token = client.post(
        f"{base}/auth/", json={"username": "user@example.com", "password": "secret"}
    ).json()["token"]
    client.headers["Authorization"] = f"Token {token}"

    def one(path: Path) -> None:
        with path.open("rb") as stream:
            created = client.post(
                f"{base}/documents/",
                data={"project": "1", "sync": "false"},
                files={"data_file": (path.name, stream, "application/pdf")},
            )
        created.raise_for_status()
        url = f"{base}/documents/{created.json()['id']}/"
        while client.get(url, params={"fields": POLL_FIELDS}).json()["status_data"] != 2:
            time.sleep(0.05)
        client.get(url).raise_for_status()  # fetch: the detail with its annotation sets

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


def p95(values: list[float]) -> float:
    return statistics.quantiles(values, n=20)[-1] if len(values) >= 20 else max(values)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=1000)
    parser.add_argument("--skip", action="append", default=[], help="throughput|callbacks|polling")
    args = parser.parse_args()
    staging = Path(tempfile.mkdtemp(prefix="docrelay-bench-docs-"))
    try:
        generate_invoices(staging, args.docs)
        if "throughput" not in args.skip:
            emulator = Emulator("--delay", "0")
            try:
                daemon = run_daemon(
                    staging, emulator, callbacks=False, max_in_flight=None, poll=0.2
                )
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
                  f"delivered {daemon['delivered']}), script {script['docs_per_s']:.1f} docs/s "
                  f"({script['elapsed_s']:.1f}s); ratio {ratio:.2f} (target >= 0.6)",
                  flush=True)  # fmt: skip
            print("  daemon requests:", json.dumps(daemon["requests"]))
            print("  script requests:", json.dumps(script["requests"]))
        ideal = args.docs / 50 * 2
        if "callbacks" not in args.skip:
            emulator = Emulator("--delay", "2")
            try:
                result = run_daemon(staging, emulator, callbacks=True, max_in_flight=50, poll=30)
            finally:
                emulator.stop()
            lat = sorted(result["latencies"])
            print(f"callbacks: {result['elapsed_s']:.1f}s for {args.docs} (ideal {ideal:.0f}s, "
                  f"{result['elapsed_s'] / ideal:.2f}x, target <= 1.3x); latency emulator-finished"
                  f" -> fields in SQL: p50 {1000 * statistics.median(lat):.0f} ms, "
                  f"p95 {1000 * p95(lat):.0f} ms; status requests/doc "
                  f"{result['status_requests_per_doc']:.2f}; callbacks {result['callbacks']}; "
                  f"uploads {result['uploads']}", flush=True)  # fmt: skip
        if "polling" not in args.skip:
            emulator = Emulator("--delay", "2")
            try:
                result = run_daemon(staging, emulator, callbacks=False, max_in_flight=50, poll=2.0)
            finally:
                emulator.stop()
            print(f"polling: {result['elapsed_s']:.1f}s for {args.docs} (ideal {ideal:.0f}s, "
                  f"{result['elapsed_s'] / ideal:.2f}x); status requests/doc "
                  f"{result['status_requests_per_doc']:.2f} (target <= 3); uploads "
                  f"{result['uploads']}", flush=True)  # fmt: skip
    finally:
        shutil.rmtree(staging, ignore_errors=True)


if __name__ == "__main__":
    main()
