"""Benchmark: folder intake → `local` extractor → SQLite → folder export, through the real daemon.

Measures, on a fresh store each run:
  * start-up to ready (process start → /readyz answers 200), on an empty and on an existing store;
  * throughput over N generated one-page invoices dropped into the watched folder at once
    (overall: first drop → last export marked delivered; sustained: between the 10th and 90th
    percentile of export times);
  * peak RSS of the daemon process (VmHWM);
  * idle CPU of the daemon over a quiet period after the work is done.

With ``--einvoice`` the documents are the corpus's Factur-X PDFs (each copy made unique by a
comment after ``%%EOF``), and every run goes once through ``local`` (the text) and once through
``einvoice`` (the embedded XML, checked against the text): the e-invoice path must be at least
as fast as the local one.

    .venv/bin/python bench/bench_folder.py --docs 2000 --runs 3 --idle 60
    .venv/bin/python bench/bench_folder.py --einvoice --docs 1000 --runs 3 --idle 0
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sqlalchemy import create_engine, text  # noqa: E402

from tests.daemon_proc import DaemonProcess, wait_until, write_config  # noqa: E402
from tests.invoices import random_spec, render_pdf  # noqa: E402

CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


CORPUS = ROOT / "tests" / "fixtures" / "einvoice" / "FX"
EINVOICE_PROFILE = '[vendors.einvoice]\nkind = "einvoice"\n'


def generate_einvoices(folder: Path, count: int) -> None:
    """``count`` Factur-X PDFs from the corpus, each with bytes of its own (no duplicates)."""
    folder.mkdir(parents=True, exist_ok=True)
    originals = sorted(CORPUS.glob("*.pdf"))
    if not originals:
        raise SystemExit(f"no Factur-X PDFs in {CORPUS}")
    for number in range(count):
        source = originals[number % len(originals)]
        data = source.read_bytes() + f"\n%docrelay-bench {number}\n".encode()
        (folder / f"{number:05d}-{source.name}").write_bytes(data)


def generate(folder: Path, count: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for seed in range(count):
        lang = "de" if seed % 2 else "en"
        (folder / f"invoice-{seed:05d}.pdf").write_bytes(render_pdf(random_spec(seed, lang), lang))


def start(config: Path) -> tuple[DaemonProcess, float]:
    began = time.monotonic()
    daemon = DaemonProcess(config).start(timeout=30)
    return daemon, time.monotonic() - began


def one_run(
    staging: Path, docs: int, idle: float, settle: float, vendor: str = "local"
) -> dict[str, float]:
    work = Path(tempfile.mkdtemp(prefix="docrelay-bench-"))
    try:
        extra = EINVOICE_PROFILE if vendor == "einvoice" else ""
        config = write_config(work, settle=settle, log_level="warning", vendor=vendor, extra=extra)
        daemon, cold = start(config)
        inbox = work / "inbox"
        engine = create_engine(f"sqlite:///{work}/var/docrelay.db")
        began = time.monotonic()
        for path in sorted(staging.iterdir()):
            os.link(path, inbox / path.name)
        with engine.connect() as conn:

            def delivered() -> int:
                return conn.execute(
                    text("SELECT COUNT(*) FROM deliveries WHERE state = 'delivered'")
                ).scalar_one()

            wait_until(lambda: delivered() >= docs, 3600, interval=0.2, what="all delivered")
            overall = time.monotonic() - began
            times = [
                row[0]
                for row in conn.execute(
                    text("SELECT delivered_at FROM deliveries ORDER BY delivered_at")
                )
            ]
            received = [
                row[0]
                for row in conn.execute(
                    text("SELECT received_at FROM docrelay_documents ORDER BY received_at")
                )
            ]
            bad = conn.execute(
                text("SELECT COUNT(*) FROM docrelay_documents WHERE state != 'done'")
            ).scalar_one()
        engine.dispose()

        def ts(value: object) -> float:
            from datetime import datetime

            return datetime.fromisoformat(str(value)).timestamp()

        lo, hi = ts(times[len(times) // 10]), ts(times[len(times) * 9 // 10])
        sustained = (len(times) * 8 // 10) / (hi - lo) if hi > lo else float("nan")
        r_lo, r_hi = ts(received[len(received) // 10]), ts(received[len(received) * 9 // 10])
        intake = (len(received) * 8 // 10) / (r_hi - r_lo) if r_hi > r_lo else float("nan")
        pid = daemon.proc.pid  # type: ignore[union-attr]
        cpu_ms = 1000 * cpu_seconds(pid) / docs  # the daemon's whole life, start-up included
        rss = peak_rss_mb(pid)
        idle_pct = float("nan")
        if idle > 0:
            time.sleep(3)  # let the last sweeps settle
            cpu0, t0 = cpu_seconds(pid), time.monotonic()
            time.sleep(idle)
            idle_pct = 100 * (cpu_seconds(pid) - cpu0) / (time.monotonic() - t0)
        assert daemon.stop() == 0
        warm = start_time_warm(config)
        return {
            "startup_cold_s": cold,
            "startup_warm_s": warm,
            "overall_docs_per_s": docs / overall,
            "sustained_docs_per_s": sustained,
            "intake_docs_per_s": intake,
            "peak_rss_mb": rss,
            "cpu_ms_per_doc": cpu_ms,
            "idle_cpu_pct": idle_pct,
            "not_done": bad,
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)


def start_time_warm(config: Path) -> float:
    daemon, elapsed = start(config)
    daemon.stop()
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--idle", type=float, default=60.0, help="seconds of idle CPU sampling")
    parser.add_argument("--settle", type=float, default=2.0, help="folder settle_seconds")
    parser.add_argument(
        "--einvoice", action="store_true", help="Factur-X PDFs through local and einvoice"
    )
    args = parser.parse_args()
    staging = Path(tempfile.mkdtemp(prefix="docrelay-bench-docs-"))
    try:
        t0 = time.monotonic()
        (generate_einvoices if args.einvoice else generate)(staging, args.docs)
        print(f"generated {args.docs} invoices in {time.monotonic() - t0:.1f}s", flush=True)
        vendors = ["local", "einvoice"] if args.einvoice else ["local"]
        results: dict[str, list[dict[str, float]]] = {vendor: [] for vendor in vendors}
        for run in range(args.runs):
            for vendor in vendors:
                idle = args.idle if run == 0 else 0
                result = one_run(staging, args.docs, idle, args.settle, vendor)
                results[vendor].append(result)
                figures = ", ".join(f"{k}={v:.3f}" for k, v in result.items())
                print(f"run {run + 1} ({vendor}): {figures}", flush=True)
        for vendor, runs in results.items():
            print(f"\nmedian of runs ({vendor}):")
            for key in runs[0]:
                values = [r[key] for r in runs if r[key] == r[key]]
                if values:
                    print(f"  {key:<22} {statistics.median(values):10.3f}   (runs: "
                          + ", ".join(f"{v:.3f}" for v in values) + ")")  # fmt: skip
        if args.einvoice:
            ratios = [
                e["overall_docs_per_s"] / lo["overall_docs_per_s"]
                for lo, e in zip(results["local"], results["einvoice"], strict=True)
            ]
            print("\neinvoice / local throughput, per run: "
                  + ", ".join(f"{r:.2f}" for r in ratios)
                  + f"; median {statistics.median(ratios):.2f} (target >= 1.0)")  # fmt: skip
    finally:
        shutil.rmtree(staging, ignore_errors=True)


if __name__ == "__main__":
    main()
