"""Budgets per vendor profile: the settings, the reservation on a real store (SQLite and
PostgreSQL; threads and processes racing never go over a limit, a submission is charged once
whatever crash follows), the shared pace of ``requests_per_second``, ``docrelay report cost``,
and end to end: the real daemon with a Rossum emulator holds what is over the day's budget,
says so once, and sends the rest when a reload raises the limit."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import httpx
import pytest
from pydantic import ValidationError
from sqlalchemy import insert, select, update

from connectors.base import BudgetSettings, VendorSettings
from daemon import cost
from daemon.pipeline import budgets, ledger
from daemon.pipeline.budgets import Exhausted, Pacer, charge, period_end, period_start, reserve
from daemon.store import engine as store_engine
from daemon.store.models import Document, SubmissionState
from tests.daemon_proc import (
    DaemonProcess,
    EmulatorProcess,
    drop_invoices,
    free_port,
    metric,
    query,
    wait_until,
    write_config,
)

ROOT = Path(__file__).resolve().parent.parent
NOON = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)


def add_submission(
    engine, profile: str = "rossum_main", pages: int | None = 1, **values: object
) -> dict:
    with engine.begin() as conn:
        doc = conn.execute(
            insert(Document.__table__).values(
                sha256=os.urandom(32).hex(), filename="a.pdf", mime_type="application/pdf",
                size_bytes=10, pages=pages, source="scans",
            )
        ).inserted_primary_key[0]  # fmt: skip
        row = {
            "document_id": doc, "profile": profile, "vendor_kind": "rossum",
            "state": SubmissionState.UPLOADING, "lease_owner": "me", "destinations": [],
            "vendor_data": {}, **values,
        }  # fmt: skip
        row["id"] = conn.execute(insert(ledger.submissions).values(**row)).inserted_primary_key[0]
    row.setdefault("charged_at", None)
    return row


def used(engine, period: str = "day", at: datetime = NOON) -> tuple[int, int]:
    t = budgets.usage
    with engine.connect() as conn:
        row = conn.execute(
            select(t.c.documents, t.c.pages).where(
                t.c.period == period, t.c.starts_at == period_start(period, at)
            )
        ).first()
    return (row.documents, row.pages) if row else (0, 0)


# ---------------------------------------------------------------------- settings


def test_settings_take_limits_and_prices_and_refuse_nonsense():
    settings = VendorSettings(
        kind="rossum",
        budget={"documents_per_day": 3, "pages_per_month": 100, "requests_per_second": 2.5,
                "price_per_document": "0.10", "price_per_page": "0.02"},
    )  # fmt: skip
    budget = settings.budget
    assert budget.limits() == {"documents_per_day": 3, "pages_per_month": 100}
    assert budget.price_per_document == Decimal("0.10") and budget.currency == "EUR"
    assert budget.priced and not BudgetSettings().priced and BudgetSettings().limits() == {}
    for wrong in (
        {"documents_per_day": -1},
        {"requests_per_second": 0},
        {"price_per_page": "-0.01"},
        {"currency": "euro"},
        {"documents_per_week": 3},  # unknown keys are errors
    ):
        with pytest.raises(ValidationError):
            BudgetSettings(**wrong)


def test_periods_are_utc_days_and_calendar_months():
    late = datetime(2026, 12, 31, 23, 59, tzinfo=UTC)
    assert period_start("day", late) == datetime(2026, 12, 31, tzinfo=UTC)
    assert period_end("day", period_start("day", late)) == datetime(2027, 1, 1, tzinfo=UTC)
    assert period_start("month", late) == datetime(2026, 12, 1, tzinfo=UTC)
    assert period_end("month", datetime(2026, 2, 1, tzinfo=UTC)) == datetime(2026, 3, 1, tzinfo=UTC)


# ---------------------------------------------------------------------- the reservation


def test_reservation_counts_documents_and_pages_and_names_the_limit_reached(engine):
    budget = BudgetSettings(documents_per_day=2, pages_per_month=5)
    with engine.begin() as conn:
        assert reserve(conn, "p", budget, 2, NOON) is None
        assert reserve(conn, "p", budget, 3, NOON) is None
    with engine.begin() as conn:
        over = reserve(conn, "p", budget, 1, NOON)
    assert over == Exhausted("p", "documents_per_day", 2, 2, datetime(2026, 12, 5, tzinfo=UTC))
    tomorrow = NOON + timedelta(days=1)
    with engine.begin() as conn:  # a new day; the month's pages are used up
        over = reserve(conn, "p", budget, 1, tomorrow)
    assert over == Exhausted("p", "pages_per_month", 5, 5, datetime(2027, 1, 1, tzinfo=UTC))


def test_threads_racing_never_go_over_the_limit(engine):
    budget = BudgetSettings(documents_per_day=25)
    won = []

    def take() -> None:
        for _ in range(10):
            with engine.begin() as conn:
                if reserve(conn, "p", budget, 1, NOON) is None:
                    won.append(1)

    threads = [threading.Thread(target=take) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(won) == 25
    assert used(engine) == (25, 25)


RACER = """
import sys
from datetime import UTC, datetime
from connectors.base import BudgetSettings
from daemon.pipeline.budgets import reserve
from daemon.store import engine as store_engine

engine = store_engine.make_engine(sys.argv[1])
budget = BudgetSettings(documents_per_day=40, pages_per_day=1000)
won = 0
for _ in range(30):
    with engine.begin() as conn:
        if reserve(conn, "p", budget, 2, datetime(2026, 12, 4, 12, tzinfo=UTC)) is None:
            won += 1
print(won)
"""


def test_processes_racing_on_postgresql_never_go_over_the_limit(pg_url):
    engine = store_engine.make_engine(pg_url)
    store_engine.ensure_schema(engine)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    racers = [
        subprocess.Popen(
            [sys.executable, "-c", RACER, pg_url], stdout=subprocess.PIPE, env=env, text=True
        )
        for _ in range(3)
    ]
    won = [int(racer.communicate(timeout=120)[0]) for racer in racers]
    assert sum(won) == 40 and all(racer.returncode == 0 for racer in racers)
    assert used(engine) == (40, 80)
    engine.dispose()


def test_a_submission_is_charged_once_across_a_crash_and_a_retry(engine):
    budget = BudgetSettings(documents_per_day=5)
    at = {"now": lambda: NOON}  # the day ``used`` reads (the real clock's day fails elsewhen)
    sub = add_submission(engine, pages=3)
    assert (
        charge(engine, sub, owner="me", profile="rossum_main", budget=budget, pages=3, **at) is None
    )
    assert used(engine) == (1, 3)
    # The worker dies after the charge, before (or during) the upload; the retry reads the
    # row again, which says it was charged.
    with engine.connect() as conn:
        again = dict(conn.execute(select(ledger.submissions).where(
            ledger.submissions.c.id == sub["id"])).mappings().one())  # fmt: skip
    assert again["charged_at"] is not None
    for _ in range(3):
        assert charge(engine, again, owner="me", profile="rossum_main", budget=budget,
                      pages=3, **at) is None  # fmt: skip
    assert used(engine) == (1, 3)
    # A submission whose lease is gone is not charged (and nothing is counted).
    other = add_submission(engine, lease_owner="someone-else")
    with pytest.raises(ledger.LeaseLost):
        charge(engine, other, owner="me", profile="rossum_main", budget=budget, pages=1, **at)
    assert used(engine) == (1, 3)


def test_over_budget_nothing_is_written_and_the_first_holder_warns(engine):
    budget = BudgetSettings(documents_per_day=1)
    first, second = add_submission(engine), add_submission(engine)
    now = datetime.now(UTC)
    assert charge(engine, first, owner="me", profile="rossum_main", budget=budget, pages=1) is None
    over = charge(engine, second, owner="me", profile="rossum_main", budget=budget, pages=1)
    assert over is not None and over.name == "documents_per_day"
    assert used(engine, at=now) == (1, 1)
    with engine.begin() as conn:
        assert budgets.first_exhaustion(conn, over, now)
        assert not budgets.first_exhaustion(conn, over, now)  # one warning per period
    with engine.connect() as conn:
        current = {u.name: u for u in budgets.current_usage(conn, now)}
    assert current["documents_per_day"].used == 1 and current["documents_per_day"].limit == 1
    assert current["documents_per_day"].exhausted_at is not None


# ---------------------------------------------------------------------- requests per second


def test_pacer_spaces_calls_across_threads(engine):
    slots: list[float] = []
    lock = threading.Lock()

    class Recorder(Pacer):
        def wait(self) -> None:
            with self.engine.begin() as conn:
                slot = budgets.take_slot(conn, self.profile, 10.0, 1000.0)
            with lock:
                slots.append(slot)

    pacer = Recorder(engine, "p", 10.0)
    threads = [threading.Thread(target=lambda: [pacer.wait() for _ in range(5)]) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(round(s, 6) for s in slots) == [round(1000.0 + i / 10, 6) for i in range(20)]
    assert Pacer(engine, "q", None).wait() is None  # unset: no statement, no wait


PACED = """
import sys, time
from daemon.pipeline.budgets import Pacer
from daemon.store import engine as store_engine

pacer = Pacer(store_engine.make_engine(sys.argv[1]), "p", 20.0)
for _ in range(15):
    pacer.wait()
    print(time.time(), flush=True)
"""


def test_requests_per_second_is_shared_by_two_processes(pg_url):
    engine = store_engine.make_engine(pg_url)
    store_engine.ensure_schema(engine)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", PACED, pg_url], stdout=subprocess.PIPE, env=env, text=True
        )
        for _ in range(2)
    ]
    calls = sorted(
        float(line) for proc in procs for line in proc.communicate(timeout=120)[0].split()
    )
    assert len(calls) == 30
    # 30 calls at 20 per second: at least ~1.45 s from the first to the last, and never
    # more than a few in any 0.25 s (each process alone would have made 15 in 0.75 s).
    assert calls[-1] - calls[0] >= 1.4
    assert max(sum(1 for c in calls if t <= c < t + 0.25) for t in calls) <= 7
    engine.dispose()


# ---------------------------------------------------------------------- report cost


def charged(engine, profile: str, at: datetime, pages: int | None) -> None:
    sub = add_submission(engine, profile=profile, pages=pages)
    with engine.begin() as conn:
        conn.execute(
            update(ledger.submissions)
            .where(ledger.submissions.c.id == sub["id"])
            .values(charged_at=at)
        )


def test_report_cost_per_profile_and_month(engine):
    for day, pages in ((3, 2), (20, 5), (30, None)):
        charged(engine, "rossum_main", datetime(2026, 11, day, 10, tzinfo=UTC), pages)
    charged(engine, "rossum_main", datetime(2026, 12, 1, 0, 30, tzinfo=UTC), 4)
    charged(engine, "local", datetime(2026, 12, 2, tzinfo=UTC), 7)
    add_submission(engine)  # never charged: not sent
    prices = {
        "rossum_main": BudgetSettings(
            price_per_document=Decimal("0.10"), price_per_page=Decimal("0.025")
        ),
        "local": BudgetSettings(),
    }
    rows = cost.cost_rows(engine, prices)
    assert cost.as_csv(rows) == (
        "profile,month,documents,pages,price_per_document,price_per_page,currency,cost\n"
        "local,2026-12,1,7,,,,\n"
        "rossum_main,2026-11,3,8,0.10,0.025,EUR,0.500\n"
        "rossum_main,2026-12,1,4,0.10,0.025,EUR,0.200\n"
        "total,,4,12,,,EUR,0.700\n"
    )
    table = cost.as_table(rows)
    assert "no price" in table.splitlines()[1] and "0.700 EUR" in table.splitlines()[-1]
    since = cost.cost_rows(engine, prices, since=date(2026, 11, 20), until=date(2026, 11, 30))
    assert [(r.month, r.documents, r.pages, r.cost) for r in since] == [
        ("2026-11", 2, 6, Decimal("0.350"))
    ]


def test_report_cost_command(tmp_path):
    config = write_config(
        tmp_path,
        local='[vendors.local.budget]\nprice_per_document = 0.05\ncurrency = "CHF"\n',
    )
    store = store_engine.make_engine(f"sqlite:///{tmp_path}/var/docrelay.db")
    (tmp_path / "var").mkdir(exist_ok=True)
    store_engine.ensure_schema(store)
    charged(store, "local", datetime(2026, 10, 5, tzinfo=UTC), 2)
    charged(store, "local", datetime(2026, 10, 6, tzinfo=UTC), 1)
    store.dispose()
    run = subprocess.run(
        [sys.executable, "-m", "daemon.cli", "--config", str(config), "report", "cost", "--csv",
         "--since", "2026-10-01"],
        capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)}, check=True,
    )  # fmt: skip
    assert run.stdout.splitlines()[1:] == [
        "local,2026-10,2,3,0.05,,CHF,0.10",
        "total,,2,3,,,CHF,0.10",
    ]


# ---------------------------------------------------------------------- end to end


def uploads_accepted(emulator: EmulatorProcess) -> list[dict[str, object]]:
    answer = httpx.get(
        f"{emulator.url}/_emulator/requests",
        params={"method": "POST", "path": "/api/v1/uploads"},
        timeout=30,
    )
    return [r for r in answer.json()["results"] if r["status"] < 300]


@pytest.mark.e2e
def test_the_daemon_holds_what_is_over_the_days_budget_until_a_reload_raises_it(tmp_path):
    root = tmp_path
    emulator = EmulatorProcess("rossum", log=root / "emulator.log")
    try:
        vendor = emulator.vendor_toml(concurrency=2, poll_interval=0.3)
        budget = "[vendors.rossum_main.budget]\ndocuments_per_day = {n}\nprice_per_page = 0.1\n"
        config = write_config(
            root, port=free_port(), extra=vendor + budget.format(n=2), vendor="rossum_main"
        )
        daemon = DaemonProcess(config).start()
        drop_invoices(root / "inbox", 5, prefix="inv", first_seed=40)

        def states() -> list[str]:
            return sorted(r["state"] for r in query(root, "SELECT state FROM submissions"))

        wait_until(lambda: states() == ["done", "done", "queued", "queued", "queued"], 60,
                   what="two done, three held")  # fmt: skip
        time.sleep(1.0)  # nothing more goes out while it holds
        assert len(uploads_accepted(emulator)) == 2
        held = query(root, "SELECT error_class, error, attempts FROM submissions "
                     "WHERE state = 'queued'")  # fmt: skip
        assert {(r["error_class"], r["attempts"]) for r in held} == {("budget", 0)}
        assert "documents_per_day of rossum_main reached (2/2)" in held[0]["error"]
        warnings = [line for line in daemon.log().splitlines() if "reached (2/2)" in line]
        assert len(warnings) == 1, warnings  # once per profile and period, not per document
        labels = {"profile": "rossum_main", "limit": "documents_per_day"}
        assert metric(daemon.url, "docrelay_budget_used", **labels) == 2
        assert metric(daemon.url, "docrelay_budget_limit", **labels) == 2
        assert metric(daemon.url, "docrelay_budget_exhausted_total", **labels) >= 3
        status = json.loads(
            subprocess.run(
                [sys.executable, "-m", "daemon.cli", "--config", str(config), "status",
                 "--json"],
                capture_output=True, text=True, check=True,
            ).stdout
        )  # fmt: skip
        line = next(b for b in status["budgets"] if b["limit"] == "documents_per_day")
        assert (line["vendor"], line["used"], line["of"]) == ("rossum_main", 2, 2)
        assert line["exhausted_at"] is not None
        text = subprocess.run(
            [sys.executable, "-m", "daemon.cli", "--config", str(config), "status"],
            capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
        assert "documents_per_day" in text and "2/2" in text

        # A higher limit, read on SIGHUP: the held documents go at once, each once.
        config.write_text(config.read_text().replace("documents_per_day = 2",
                                                     "documents_per_day = 10"))  # fmt: skip
        assert daemon.proc is not None
        daemon.proc.send_signal(signal.SIGHUP)
        wait_until(lambda: states() == ["done"] * 5, 60, what="every document done")
        assert len(uploads_accepted(emulator)) == 5
        assert metric(daemon.url, "docrelay_budget_used", **labels) == 5
        charged_rows = query(root, "SELECT COUNT(*) AS n FROM submissions "
                             "WHERE charged_at IS NOT NULL")  # fmt: skip
        assert charged_rows[0]["n"] == 5
        assert daemon.stop() == 0
    finally:
        emulator.stop()


@pytest.mark.e2e
def test_two_daemons_on_one_store_share_requests_per_second(tmp_path, pg_url):
    emulator = EmulatorProcess("rossum", log=tmp_path / "emulator.log")
    daemons = []
    engine = store_engine.make_engine(pg_url)
    blobs = tmp_path / "blobs"  # one store, one blob directory: either daemon reads any file
    blobs.mkdir()
    try:
        vendor = emulator.vendor_toml(concurrency=3, poll_interval=0.2)
        pace = "[vendors.rossum_main.budget]\nrequests_per_second = 4\n"
        for name in ("a", "b"):
            root = tmp_path / name
            (root / "var").mkdir(parents=True)
            (root / "var" / "blobs").symlink_to(blobs)
            config = write_config(
                root, store_url=pg_url, port=free_port(), extra=vendor + pace,
                vendor="rossum_main",
            )  # fmt: skip
            daemons.append((root, DaemonProcess(config).start()))
        for n, (root, _) in enumerate(daemons):
            drop_invoices(root / "inbox", 4, prefix=f"inv{n}", first_seed=60 + 10 * n)

        def done() -> int:
            with engine.connect() as conn:
                return len(
                    conn.execute(
                        select(ledger.submissions.c.id).where(ledger.submissions.c.state == "done")
                    ).all()
                )

        wait_until(lambda: done() == 8, 90, what="eight documents done")
        uploads = sorted(datetime.fromisoformat(r["at"]).timestamp()
                         for r in uploads_accepted(emulator))  # fmt: skip
        assert len(uploads) == 8
        # Each upload is one of the calls paced at 4 per second (polls and fetches take
        # slots too): two processes together never put more than ~4 uploads in a second
        # (unpaced, these two put 7 of the 8 in one second).
        densest = max(sum(1 for u in uploads if t <= u < t + 1.0) for t in uploads)
        assert densest <= 5, uploads
        assert uploads[-1] - uploads[0] >= 1.5
        for _, daemon in daemons:
            assert daemon.stop() == 0
    finally:
        for _, daemon in daemons:
            daemon.stop()
        engine.dispose()
        emulator.stop()
