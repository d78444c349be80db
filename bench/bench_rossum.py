"""Benchmark: the daemon against the Rossum emulator (a separate process).

Three measurements, each on a fresh emulator and store:

1. **throughput** — N invoices, emulator processing delay 0, no throttling. The daemon (folder
   intake → Rossum → SQLite → folder export → `exported` at Rossum) is compared in the same run
   with a minimal httpx script that makes the same Rossum calls for the same files at the same
   concurrency and does nothing else. Target: daemon ≥ 0.7 x script.
2. **webhooks** — delay 2 s, at most 50 documents in flight, webhooks on. Target: all N done
   within 1.15 x the ideal N / 50 x 2 s, and p95 from "the emulator finished the import" to
   "fields committed in SQL" ≤ 100 ms (issue 17).
3. **polling** — the same without webhooks. Target: ≤ 5 status requests per document on average.

    .venv/bin/python bench/bench_rossum.py --docs 1000
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
from sqlalchemy import create_engine, text  # noqa: E402

from tests.daemon_proc import (  # noqa: E402
    DaemonProcess,
    EmulatorProcess,
    free_port,
    generate_invoices,
    sqlite_time,
    wait_until,
    write_config,
)

CONCURRENCY = 8


def Emulator(*args: str) -> EmulatorProcess:
    return EmulatorProcess("rossum", "--rate-limit", "0", *args)


def status_requests(stats: dict) -> int:
    return sum(
        sum(codes.values())
        for route, codes in stats["requests"]["by_path"].items()
        if route == "GET /api/v1/annotations/{id}"
    )


def run_daemon(
    staging: Path,
    emulator: EmulatorProcess,
    *,
    webhooks: bool,
    max_in_flight: int | None,
    poll: float,
    port: int | None = None,
) -> dict:
    work = Path(tempfile.mkdtemp(prefix="docrelay-bench-rossum-"))
    port = port or free_port()
    try:
        vendor = emulator.vendor_toml(
            concurrency=CONCURRENCY,
            rate_limit=10000,
            poll_interval=poll,
            max_in_flight=max_in_flight,
            webhook_secret="emulator-secret" if webhooks else None,
        )
        config = write_config(
            work, port=port, extra=vendor, settle=0.2, vendor="rossum_main", log_level="warning"
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
            lambda: emulator.stats()["annotations"].get("exported", 0) >= len(files),
            300,
            interval=0.5,
            what="exported at the emulator",
        )
        exported = time.time() - began
        assert daemon.stop() == 0
        engine.dispose()
        stats = emulator.stats()
        latencies = []
        for ann in emulator.annotations():
            doc = int(ann["metadata"].get("docrelay_document_id", 0))
            if doc in fields_at:
                latencies.append(fields_at[doc] - ann["ready_at"])
        return {
            "elapsed_s": elapsed,
            "exported_s": exported,
            "docs_per_s": len(files) / elapsed,
            "uploads": stats["uploads"],
            "status_requests_per_doc": status_requests(stats) / len(files),
            "requests": stats["requests"]["by_path"],
            "latencies": latencies,
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)


def run_script(staging: Path, emulator: EmulatorProcess) -> dict:
    """The same Rossum calls the daemon makes per document, and nothing else."""
    base = f"{emulator.url}/api/v1"
    files = sorted(staging.iterdir())
    client = httpx.Client(timeout=30, limits=httpx.Limits(max_connections=CONCURRENCY * 2))
    key = client.post(
        f"{base}/auth/login", json={"username": "user@example.com", "password": "secret"}
    ).json()["key"]
    client.headers["Authorization"] = f"Bearer {key}"
    counter = iter(range(1, len(files) + 1))
    lock = threading.Lock()

    def one(path: Path) -> None:
        with lock:
            doc_id = next(counter)
        metadata = {"docrelay_document_id": doc_id}
        with path.open("rb") as stream:
            task_url = client.post(
                f"{base}/uploads",
                params={"queue": 1},
                files={"content": (path.name, stream, "application/pdf")},
                data={"metadata": json.dumps(metadata)},
            ).json()["url"]
        while True:
            task = client.get(task_url, params={"no_redirect": "true"}).json()
            if task["status"] == "succeeded":
                break
            time.sleep(0.05)
        upload = client.get(task["content"]["upload"]).json()
        annotation_url = upload["annotations"][0]
        client.get(annotation_url).raise_for_status()  # submit: the annotation it produced
        while client.get(annotation_url).json()["status"] == "importing":  # poll
            time.sleep(0.05)
        client.get(f"{annotation_url}/content").raise_for_status()  # fetch (annotation reused)
        client.get(annotation_url).raise_for_status()  # export status: where is it now?
        client.post(f"{annotation_url}/start").raise_for_status()  # to_review → exported:
        client.post(f"{annotation_url}/confirm").raise_for_status()  # start + confirm

    began = time.time()
    with ThreadPoolExecutor(CONCURRENCY) as pool:
        list(pool.map(one, files))
    elapsed = time.time() - began
    client.close()
    stats = emulator.stats()
    return {
        "elapsed_s": elapsed,
        "docs_per_s": len(files) / elapsed,
        "requests": stats["requests"]["by_path"],
    }


def p95(values: list[float]) -> float:
    return statistics.quantiles(values, n=20)[-1] if len(values) >= 20 else max(values)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=1000)
    parser.add_argument("--skip", action="append", default=[], help="throughput|webhooks|polling")
    args = parser.parse_args()
    staging = Path(tempfile.mkdtemp(prefix="docrelay-bench-docs-"))
    try:
        generate_invoices(staging, args.docs)
        if "throughput" not in args.skip:
            emulator = Emulator("--delay", "0")
            try:
                daemon = run_daemon(staging, emulator, webhooks=False, max_in_flight=None, poll=0.2)
            finally:
                emulator.stop()
            emulator = Emulator("--delay", "0")
            try:
                script = run_script(staging, emulator)
            finally:
                emulator.stop()
            ratio = daemon["docs_per_s"] / script["docs_per_s"]
            # (printed below together with the script's figure)
            print(f"throughput: daemon {daemon['docs_per_s']:.1f} docs/s "
                  f"({daemon['elapsed_s']:.1f}s to fields in SQL and exported; "
                  f"{daemon['exported_s']:.1f}s until every annotation is `exported` at the "
                  f"emulator; uploads {daemon['uploads']}), "
                  f"script {script['docs_per_s']:.1f} docs/s ({script['elapsed_s']:.1f}s); "
                  f"ratio {ratio:.2f} (target >= 0.7)", flush=True)  # fmt: skip
            print("  daemon requests:", json.dumps(daemon["requests"]))
            print("  script requests:", json.dumps(script["requests"]))
        ideal = args.docs / 50 * 2
        if "webhooks" not in args.skip:
            port = free_port()  # the daemon listens where the emulator's hook calls
            emulator = Emulator(
                "--delay", "2", "--webhook-url", f"http://127.0.0.1:{port}/webhooks/rossum_main",
                "--webhook-events", "annotation_status",
            )  # fmt: skip
            try:
                result = run_daemon(
                    staging, emulator, webhooks=True, max_in_flight=50, poll=2.0, port=port
                )
            finally:
                emulator.stop()
            lat = sorted(result["latencies"])
            print(f"webhooks: {result['elapsed_s']:.1f}s for {args.docs} (ideal {ideal:.0f}s, "
                  f"{result['elapsed_s'] / ideal:.2f}x, target <= 1.15x); latency emulator-finished"
                  f" -> fields in SQL: p50 {1000 * statistics.median(lat):.0f} ms, "
                  f"p95 {1000 * p95(lat):.0f} ms (target <= 100 ms); status requests/doc "
                  f"{result['status_requests_per_doc']:.2f}; uploads {result['uploads']}",
                  flush=True)  # fmt: skip
        if "polling" not in args.skip:
            emulator = Emulator("--delay", "2")
            try:
                result = run_daemon(staging, emulator, webhooks=False, max_in_flight=50, poll=2.0)
            finally:
                emulator.stop()
            print(f"polling: {result['elapsed_s']:.1f}s for {args.docs} (ideal {ideal:.0f}s, "
                  f"{result['elapsed_s'] / ideal:.2f}x); status requests/doc "
                  f"{result['status_requests_per_doc']:.2f} (target <= 5); uploads "
                  f"{result['uploads']}", flush=True)  # fmt: skip
    finally:
        shutil.rmtree(staging, ignore_errors=True)


if __name__ == "__main__":
    main()
