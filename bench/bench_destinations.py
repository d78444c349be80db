"""Benchmark: deliveries per second for each destination on loopback.

Each destination is built from its registered class and settings, as the daemon builds it, and
given N distinct exports (one invoice each: seven fields, three line items) from T threads,
as the destination's delivery pool would push them; every export is a new record downstream.

* **webhook**: to the test receiver (``tests/webhook_receiver.py``: verifies every Standard
  Webhooks signature, upserts by ``Idempotency-Key``) in its own uvicorn process. Target
  ≥ 200/s.
* **sql**: upserts into a table on SQLite (a file), PostgreSQL and MariaDB (the servers the
  tests use; ``DOCRELAY_TEST_PG_URL`` / ``DOCRELAY_TEST_MARIADB_URL``). Target ≥ 500/s.
* **tryton**: draft supplier invoices (the three lines with 19 % tax, the party found by VAT
  id, the original PDF attached) in a real trytond on SQLite and on PostgreSQL, started and
  initialised by ``tests/tryton_server.py`` (about 20 s each, not timed). Target ≥ 10/s.

    .venv/bin/python bench/bench_destinations.py --docs 2000 --threads 1 --threads 4
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
from sqlalchemy import create_engine, text  # noqa: E402

from connectors import registry  # noqa: E402
from connectors.base import (  # noqa: E402
    CanonicalResult,
    ConnectorContext,
    Destination,
    ExportPayload,
    FieldValue,
    LineItem,
)
from tests.daemon_proc import free_port, wait_until  # noqa: E402
from tests.webhook_receiver import SECRET  # noqa: E402

PG_URL = os.environ.get("DOCRELAY_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
MARIADB_URL = os.environ.get(
    "DOCRELAY_TEST_MARIADB_URL", "mysql+pymysql://root@127.0.0.1:3306/test"
)


def payload(document_id: int) -> ExportPayload:
    total = Decimal(100 + document_id % 900) + Decimal("0.19")
    net = (total / Decimal("1.19")).quantize(Decimal("0.01"))
    lines = [
        LineItem(n, description=f"Item {n}", quantity=Decimal(n), total_amount=Decimal(10 * n))
        for n in (1, 2, 3)
    ]
    return ExportPayload(
        document_id=document_id,
        sha256=f"{document_id:064x}",
        filename=f"invoice-{document_id}.pdf",
        mime_type="application/pdf",
        source="scans",
        source_ref=f"invoice-{document_id}.pdf",
        received_at=datetime.now(UTC),
        vendor="local",
        vendor_kind="local",
        vendor_ref=None,
        submission_id=document_id,
        extraction_id=document_id,
        result=CanonicalResult(
            fields=[
                FieldValue("invoice_number", f"INV-{document_id:06d}"),
                FieldValue(
                    "issue_date", "2026-12-01", value_date=date(2026, 12, 1), raw_text="1.12.2026"
                ),
                FieldValue("total_amount", str(total), value_number=total, currency="EUR"),
                FieldValue("net_amount", str(net), value_number=net, currency="EUR"),
                FieldValue("currency", "EUR"),
                FieldValue("supplier_name", "ACME Bürobedarf GmbH"),
                FieldValue("supplier_vat_id", "DE123456789"),
            ],
            line_items=lines,
        ),
    )


def build(kind: str, settings: dict[str, Any], work: Path) -> Destination:
    cls = registry.load("destination", kind)
    context = ConnectorContext(
        name="bench", data_dir=work / "state", clock=time.monotonic, public_url=None
    )
    made = cls(cls.settings_model.model_validate({"kind": kind, **settings}), context)
    assert isinstance(made, Destination)
    return made


def push_all(
    destination: Destination,
    docs: int,
    threads: int,
    first_id: int,
    make: Callable[[int], ExportPayload] = payload,
) -> float:
    """Deliveries per second for ``docs`` new exports from ``threads`` threads."""
    exports = [make(first_id + n) for n in range(docs)]
    began = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(lambda p: destination.deliver(p, f"docrelay-{p.document_id}-bench"), exports))
    return docs / (time.perf_counter() - began)


class Receiver:
    """The test webhook receiver under uvicorn, in its own process (its CPU is not ours)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/hook"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "tests.webhook_receiver:create_app", "--factory",
             "--port", str(self.port), "--log-level", "warning", "--no-access-log"],
            cwd=ROOT,
        )  # fmt: skip
        wait_until(self._up, 20, what="webhook receiver up")

    def _up(self) -> bool:
        try:
            httpx.options(self.url, timeout=1)
            return True
        except httpx.HTTPError:
            return False

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def webhook(docs: int, threads: int, runs: int, work: Path) -> list[float]:
    receiver = Receiver()
    try:
        rates = []
        for run in range(runs):
            destination = build(
                "webhook",
                {"url": receiver.url, "secret": SECRET, "concurrency": threads},
                work,
            )
            try:
                rates.append(push_all(destination, docs, threads, first_id=1 + run * docs))
            finally:
                destination.close()
        return rates
    finally:
        receiver.stop()


def sql(url: str, docs: int, threads: int, runs: int, work: Path) -> list[float]:
    table = f"bench_{uuid.uuid4().hex[:10]}"
    rates = []
    try:
        for run in range(runs):
            destination = build("sql", {"url": url, "table": table}, work)
            try:
                rates.append(push_all(destination, docs, threads, first_id=1 + run * docs))
            finally:
                destination.close()
    finally:
        engine = create_engine(url)
        with engine.begin() as conn:
            conn.execute(text(f"DROP TABLE IF EXISTS {table}"))
        engine.dispose()
    return rates


def tryton_payload(document_id: int, original: Path) -> ExportPayload:
    """The benchmark's export as an ERP takes it: a VAT id Tryton accepts, taxed lines and
    the original PDF."""
    base = payload(document_id)
    fields = [
        FieldValue("supplier_vat_id", "DE136695976") if f.name == "supplier_vat_id" else f
        for f in base.result.fields
    ]
    lines = [dataclasses.replace(line, tax_rate=Decimal(19)) for line in base.result.line_items]
    result = dataclasses.replace(base.result, fields=fields, line_items=lines)
    return dataclasses.replace(base, result=result, original=original)


TRYTON_SERVERS: dict[str, Any] = {}
TRYTON_WORKERS = 2


def tryton(backend: str, docs: int, threads: int, runs: int, work: Path) -> list[float]:
    from tests import tryton_server

    if backend not in TRYTON_SERVERS:
        TRYTON_SERVERS[backend] = tryton_server.start(backend, workers=TRYTON_WORKERS)
    server = TRYTON_SERVERS[backend]
    original = work / "original.pdf"
    if not original.exists():
        from tests.invoices import random_spec, render_pdf

        original.write_bytes(render_pdf(random_spec(7)))
    first = int(time.time()) * 10
    rates = []
    for run in range(runs):
        destination = build("tryton", server.settings(concurrency=threads), work)
        try:
            rates.append(
                push_all(
                    destination,
                    docs,
                    threads,
                    first_id=first + run * docs,
                    make=lambda n: tryton_payload(n, original),
                )
            )
        finally:
            destination.close()
    return rates


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--docs", type=int, default=2000)
    parser.add_argument("--threads", type=int, action="append", help="repeatable; default 1 and 4")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument(
        "--tryton-workers", type=int, default=2, help="trytond processes (1: trytond itself)"
    )
    parser.add_argument(
        "--skip",
        action="append",
        default=[],
        help="webhook|sqlite|postgresql|mariadb|tryton-sqlite|tryton-postgresql",
    )
    args = parser.parse_args()
    global TRYTON_WORKERS
    TRYTON_WORKERS = args.tryton_workers
    work = Path(tempfile.mkdtemp(prefix="docrelay-bench-destinations-"))
    cases = {
        "webhook": (200, lambda d, t: webhook(d, t, args.runs, work)),
        "sqlite": (500, lambda d, t: sql(f"sqlite:///{work}/out-{t}.db", d, t, args.runs, work)),
        "postgresql": (500, lambda d, t: sql(PG_URL, d, t, args.runs, work)),
        "mariadb": (500, lambda d, t: sql(MARIADB_URL, d, t, args.runs, work)),
        "tryton-sqlite": (10, lambda d, t: tryton("sqlite", d, t, args.runs, work)),
        "tryton-postgresql": (10, lambda d, t: tryton("postgresql", d, t, args.runs, work)),
    }
    for name, (target, run) in cases.items():
        if name in args.skip:
            continue
        for threads in args.threads or [1, 4]:
            rates = run(args.docs, threads)
            shown = ", ".join(f"{r:.0f}" for r in rates)
            print(
                f"{name}: {statistics.median(rates):.0f} deliveries/s with {threads} thread(s) "
                f"(runs {shown}; {args.docs} each; target >= {target})",
                flush=True,
            )
    for server in TRYTON_SERVERS.values():
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
