"""Benchmark: mailbox intake from a real Dovecot into committed documents.

1. Throughput: ``--messages`` single-attachment messages (distinct one-page PDF invoices) are in
   the INBOX before the daemon starts; measured from the daemon being ready to the last
   document row committed. The documents go on to the ``local`` extractor at the same time, as
   in production. Target: >= 50 messages/s.
2. IDLE latency: with the daemon idle in IDLE (poll interval 300 s, so only IDLE can be
   quick), ``--idle-messages`` messages are APPENDed one at a time; latency is APPEND returned
   -> document committed (``documents.received_at``). Target: p95 <= 2 s.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path

from sqlalchemy import create_engine, text

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.daemon_proc import DaemonProcess, wait_until, write_config
from tests.dovecot import Dovecot
from tests.invoices import one_page_pdf


def message(number: int) -> bytes:
    msg = EmailMessage()
    msg["From"] = "billing@supplier.example"
    msg["To"] = "invoices@example.com"
    msg["Subject"] = f"Invoice {number}"
    msg["Message-ID"] = f"<bench-{number}@supplier.example>"
    msg.set_content("Invoice attached.")
    msg.add_attachment(
        one_page_pdf(f"Invoice {number} Total 12.50 EUR"),
        maintype="application",
        subtype="pdf",
        filename=f"inv-{number}.pdf",
    )
    return msg.as_bytes()


def config_for(root: Path, server: Dovecot, poll: float) -> Path:
    mailbox = (
        server.source_toml(poll_interval=poll, batch_size=100)
        + """
[[routes]]
match = { source = ["mail"] }
vendor = "local"
destinations = ["outbox"]
"""
    )
    return write_config(root, extra=mailbox, log_level="warning")


def _ts(value: object) -> float:
    return datetime.fromisoformat(str(value)).replace(tzinfo=UTC).timestamp()


def throughput(count: int) -> float:
    root = Path(tempfile.mkdtemp(prefix="docrelay-bench-mail-"))
    with Dovecot() as server:
        server.append_many("alice", "INBOX", [message(n) for n in range(count)])
        daemon = DaemonProcess(config_for(root, server, poll=60)).start()
        began = time.time()
        engine = create_engine(f"sqlite:///{root}/var/docrelay.db")
        with engine.connect() as conn:
            query = text("SELECT COUNT(*), MAX(received_at) FROM documents WHERE source = 'mail'")

            def committed() -> bool:
                return conn.execute(query).one()[0] >= count

            wait_until(committed, 600, interval=0.2, what="all messages committed")
            last = _ts(conn.execute(query).one()[1])
        engine.dispose()
        assert daemon.stop() == 0
    return count / (last - began)


def idle_latency(count: int) -> list[float]:
    root = Path(tempfile.mkdtemp(prefix="docrelay-bench-mail-"))
    latencies = []
    with Dovecot() as server:
        daemon = DaemonProcess(config_for(root, server, poll=300)).start()
        engine = create_engine(f"sqlite:///{root}/var/docrelay.db")
        time.sleep(2)  # first poll done, now in IDLE
        with engine.connect() as conn:
            for number in range(count):
                raw = message(10_000 + number)
                server.append("alice", "INBOX", raw)
                appended = time.time()
                ref = f"bench-{10_000 + number}@supplier.example/1"
                query = text("SELECT received_at FROM documents WHERE source_ref = :r")
                wait_until(
                    lambda q=query, r=ref: conn.execute(q, {"r": r}).first() is not None,
                    30,
                    interval=0.02,
                    what="the message committed",
                )
                received = _ts(conn.execute(query, {"r": ref}).scalar_one())
                latencies.append(received - appended)
                time.sleep(0.3)
        engine.dispose()
        assert daemon.stop() == 0
    return latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--idle-messages", type=int, default=50)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    rates = []
    for run in range(args.runs):
        rate = throughput(args.messages)
        rates.append(rate)
        print(f"run {run + 1}: {rate:.1f} messages/s", flush=True)
    print(f"throughput: median {statistics.median(rates):.1f} messages/s over {args.runs} runs "
          f"of {args.messages} (target >= 50)", flush=True)  # fmt: skip
    lat = sorted(idle_latency(args.idle_messages))
    p95 = lat[max(0, round(0.95 * len(lat)) - 1)]
    print(f"IDLE latency APPEND -> committed over {len(lat)} messages: p50 "
          f"{statistics.median(lat) * 1000:.0f} ms, p95 {p95 * 1000:.0f} ms, max "
          f"{lat[-1] * 1000:.0f} ms (target p95 <= 2000 ms)")  # fmt: skip


if __name__ == "__main__":
    main()
