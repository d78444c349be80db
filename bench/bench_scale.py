"""Benchmark: N ``docrelay run`` processes on one PostgreSQL store (issue 17, scale-out).

For N = 1, 2 and 4 (``--processes``) and each path (``--path``):

* **local** — folder → the offline ``local`` extractor → PostgreSQL → folder export;
* **rossum** — folder → the Rossum emulator (a separate process, no delay) → PostgreSQL →
  folder export.

All N processes run the same configuration: one blob directory, one inbox (one of them holds
the folder's lease and takes the files in; the vendor work is claimed by all with ``FOR
UPDATE SKIP LOCKED``). The invoices are linked into the inbox at once after every process is
ready; the run ends when every document's export is delivered. Printed per (path, N):
documents per second, the daemons' CPU-seconds per document (user + system from
``/proc/<pid>/stat`` between "all ready" and "all delivered", start-up excluded), its ratio to
N = 1 (target at N = 4: ≤ 1.15), and the duplicates found (documents, submissions, exports,
uploads at the emulator beyond one per file: target 0).

    .venv/bin/python bench/bench_scale.py --docs 1000
    .venv/bin/python bench/bench_scale.py --docs 400 --path local --processes 1,2
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sqlalchemy import create_engine, text  # noqa: E402

from tests.daemon_proc import (  # noqa: E402
    DaemonProcess,
    EmulatorProcess,
    generate_invoices,
    sibling_configs,
    wait_until,
    write_config,
)

PG_ADMIN_URL = os.environ.get(
    "DOCRELAY_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process (its threads included), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def transactions(engine: Any, name: str) -> int:
    """Transactions PostgreSQL counted in the database so far (its statistics)."""
    with engine.connect() as conn:
        conn.execute(text("SELECT pg_stat_clear_snapshot()"))
        return conn.execute(
            text("SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = :name"),
            {"name": name},
        ).scalar_one()


def fresh_database() -> tuple[str, str]:
    name = f"docrelay_bench_{secrets.token_hex(4)}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return name, f"{PG_ADMIN_URL.rsplit('/', 1)[0]}/{name}"


def drop_database(name: str) -> None:
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def run(staging: Path, n: int, path: str) -> dict:
    work = Path(tempfile.mkdtemp(prefix=f"docrelay-bench-scale-{path}-{n}-"))
    name, url = fresh_database()
    emulator = (
        EmulatorProcess("rossum", "--rate-limit", "0", "--delay", "0") if path == "rossum" else None
    )
    daemons: list[DaemonProcess] = []
    try:
        extra, vendor = "", "local"
        if emulator is not None:
            extra = emulator.vendor_toml(concurrency=8, rate_limit=10000, poll_interval=0.2)
            vendor = "rossum_main"
        config = write_config(
            work, store_url=url, extra=extra, settle=0.2, vendor=vendor, log_level="warning"
        )
        for own in sibling_configs(config, n):
            daemons.append(DaemonProcess(own).start(timeout=60))
        files = sorted(staging.iterdir())
        engine = create_engine(url)
        xacts_before = transactions(engine, name)
        cpu_before = sum(cpu_seconds(d.proc.pid) for d in daemons)
        began = time.time()
        inbox = work / "inbox"
        for file in files:
            os.link(file, inbox / file.name)
        with engine.connect() as conn:

            def delivered() -> bool:
                count = conn.execute(
                    text("SELECT COUNT(*) FROM deliveries WHERE state = 'delivered'")
                ).scalar_one()
                conn.rollback()
                return count >= len(files)

            wait_until(delivered, 1800, interval=0.2, what="every export delivered")
        elapsed = time.time() - began
        cpu = sum(cpu_seconds(d.proc.pid) for d in daemons) - cpu_before
        xacts = transactions(engine, name) - xacts_before
        with engine.connect() as conn:
            docs, distinct = conn.execute(
                text("SELECT COUNT(*), COUNT(DISTINCT sha256) FROM documents")
            ).one()
            subs = conn.execute(text("SELECT COUNT(*) FROM submissions")).scalar_one()
            deliveries = conn.execute(
                text("SELECT COUNT(*) FROM deliveries WHERE state = 'delivered'")
            ).scalar_one()
        engine.dispose()
        for daemon in daemons:
            assert daemon.stop() == 0, daemon.log()[-2000:]
        exports = len(list((work / "outbox").glob("*.json")))
        uploads = emulator.stats()["uploads"] if emulator is not None else len(files)
        return {
            "docs_per_s": len(files) / elapsed,
            "elapsed_s": elapsed,
            "cpu_per_doc": cpu / len(files),
            "transactions_per_doc": xacts / len(files),
            "duplicates": {
                "documents": docs - len(files) + (docs - distinct),
                "submissions": subs - len(files),
                "deliveries": deliveries - len(files),
                "exports": exports - len(files),
                "uploads": uploads - len(files),
            },
        }
    finally:
        for daemon in daemons:
            daemon.kill()
        if emulator is not None:
            emulator.stop()
        drop_database(name)
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--docs", type=int, default=1000)
    parser.add_argument("--processes", default="1,2,4")
    parser.add_argument("--path", action="append", choices=["local", "rossum"])
    args = parser.parse_args()
    counts = [int(n) for n in args.processes.split(",")]
    staging = Path(tempfile.mkdtemp(prefix="docrelay-bench-scale-staging-"))
    try:
        generate_invoices(staging, args.docs)
        for path in args.path or ["local", "rossum"]:
            first: float | None = None
            for n in counts:
                result = run(staging, n, path)
                first = first or result["cpu_per_doc"]
                dupes = {k: v for k, v in result["duplicates"].items() if v}
                print(
                    f"{path} N={n}: {result['docs_per_s']:.1f} docs/s ({result['elapsed_s']:.1f} s"
                    f" for {args.docs}); CPU {1000 * result['cpu_per_doc']:.1f} ms/doc "
                    f"({result['transactions_per_doc']:.1f} transactions/doc) "
                    f"({result['cpu_per_doc'] / first:.2f} x N={counts[0]}, target at N=4 <= 1.15);"
                    f" duplicates {dupes or 'none'}",
                    flush=True,
                )
    finally:
        shutil.rmtree(staging, ignore_errors=True)


if __name__ == "__main__":
    main()
