"""The circuit breaker of a vendor profile: the state machine on a real store (SQLite and
PostgreSQL) with an injected clock, and end to end with the real daemon, a Rossum emulator
made to fail and the local extractor as the route's fallback."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from lxml import html as lxml_html

from daemon.pipeline import breaker as breaker_mod
from daemon.pipeline import ledger
from daemon.pipeline.breaker import CLOSED, HALF_OPEN, OPEN, Breaker
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


class FakeClock:
    def __init__(self) -> None:
        self.at = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.at

    def advance(self, seconds: float) -> None:
        self.at += timedelta(seconds=seconds)


def make(engine, clock: FakeClock, failures: int = 3, cooldown: float = 60.0) -> Breaker:
    return Breaker(engine, "rossum_main", failures=failures, cooldown=cooldown, now=clock)


def limit(breaker: Breaker, wanted: int = 4) -> int:
    with breaker.engine.begin() as conn:
        return breaker.claim_limit(conn, wanted)


def stored(engine) -> breaker_mod.View:
    with engine.connect() as conn:
        return breaker_mod.read(conn, "rossum_main")


def test_opens_after_n_failures_in_a_row_and_a_success_resets_the_count(engine):
    clock = FakeClock()
    breaker = make(engine, clock)
    breaker.failure()
    breaker.failure()
    breaker.success()  # the vendor answered: the row counts from 0 again
    assert stored(engine) == breaker_mod.View(CLOSED, 0)
    breaker.failure()
    breaker.failure()
    assert stored(engine).state == CLOSED and limit(breaker) == 4
    breaker.failure()
    view = stored(engine)
    assert (view.state, view.failures, view.opened_at) == (OPEN, 3, clock.at)
    assert view.retry_at == clock.at + timedelta(seconds=60)
    assert breaker.holding() and limit(breaker) == 0


def test_after_the_cooldown_one_probe_whose_failure_reopens_and_success_closes(engine):
    clock = FakeClock()
    breaker = make(engine, clock)
    for _ in range(3):
        breaker.failure()
    opened = clock.at
    clock.advance(59)
    assert breaker.holding() and limit(breaker) == 0
    clock.advance(1)
    assert not breaker.holding()
    assert limit(breaker) == 1  # the probe
    assert stored(engine).state == HALF_OPEN
    assert breaker.holding() and limit(breaker) == 0  # only one
    clock.advance(5)
    breaker.failure()  # the probe failed: open again for a whole cool-down
    view = stored(engine)
    assert (view.state, view.opened_at) == (OPEN, opened)  # the outage goes on since then
    assert view.retry_at == clock.at + timedelta(seconds=60)
    clock.advance(60)
    assert limit(breaker) == 1
    breaker.success()
    assert stored(engine) == breaker_mod.View(CLOSED, 0)
    assert not breaker.holding() and limit(breaker) == 4


def test_processes_on_one_store_agree_and_send_one_probe(engine):
    clock = FakeClock()
    a, b = make(engine, clock), make(engine, clock)
    a.failure()
    b.failure()
    a.failure()  # the third in a row, counted across both
    assert stored(engine).state == OPEN
    assert limit(b) == 0 and b.holding()  # b learns it at its next claim
    clock.advance(60)
    assert [limit(a), limit(b)] == [1, 0]
    b.success()  # any process's success closes it (b read a non-closed row)
    assert limit(a) == 4 and stored(engine).state == CLOSED


def test_a_probe_that_never_reports_is_given_up_after_a_cooldown(engine):
    clock = FakeClock()
    breaker = make(engine, clock, cooldown=10)
    for _ in range(3):
        breaker.failure()
    clock.advance(10)
    assert limit(breaker) == 1
    clock.advance(9)
    assert limit(breaker) == 0
    clock.advance(1)  # its worker died, or its step did not reach the vendor
    assert limit(breaker) == 1


def test_zero_failures_turns_it_off(engine):
    clock = FakeClock()
    breaker = make(engine, clock, failures=0)
    for _ in range(10):
        breaker.failure()
    assert limit(breaker) == 4 and not breaker.holding()
    assert stored(engine) == breaker_mod.View()
    with engine.connect() as conn:
        assert conn.execute(breaker_mod.breakers.select()).all() == []


def test_outages_name_the_open_circuit_or_the_pause_whichever_began_first(engine):
    clock = FakeClock()
    clock.at = datetime.now(UTC) - timedelta(seconds=100)
    for _ in range(3):
        make(engine, clock).failure()
    with engine.begin() as conn:
        ledger.set_health(conn, "konfuzio_main", "auth_failed", "401")
        found = breaker_mod.outages(conn)
    assert found["rossum_main"] == breaker_mod.Outage("circuit_open", clock.at)
    assert found["konfuzio_main"].trigger == "paused"
    assert found["rossum_main"].describe(clock.at + timedelta(seconds=312)) == (
        "circuit open for 312 s"
    )


# ---------------------------------------------------------------------- end to end


def faults(emulator: EmulatorProcess, **settings: object) -> None:
    httpx.post(f"{emulator.url}/_emulator/faults", json=settings, timeout=10).raise_for_status()


def circuit(daemon: DaemonProcess) -> dict[str, object]:
    data = httpx.get(f"{daemon.url}/status", timeout=10).json()
    return next((b for b in data["breakers"] if b["vendor"] == "rossum_main"), {})


def uploads_accepted(emulator: EmulatorProcess) -> list[dict[str, object]]:
    answer = httpx.get(
        f"{emulator.url}/_emulator/requests",
        params={"method": "POST", "path": "/api/v1/uploads"},
        timeout=30,
    )
    return [r for r in answer.json()["results"] if r["status"] < 300]


def exports_per_document(root: Path) -> Counter[int]:
    rows = query(root, "SELECT document_id FROM deliveries WHERE state = 'delivered'")
    return Counter(row["document_id"] for row in rows)


@pytest.mark.e2e
def test_an_outage_moves_waiting_documents_to_the_fallback_and_the_probe_brings_back(
    tmp_path,
):
    root = tmp_path
    emulator = EmulatorProcess("rossum", log=root / "emulator.log")
    try:
        vendor = emulator.vendor_toml(
            concurrency=2, poll_interval=0.3, timeout=5, max_retries=0,
            breaker_failures=3, breaker_cooldown=2,
        )  # fmt: skip
        extra = 'fallback = "local"\noutage_after = 3\n' + vendor
        config = write_config(root, port=free_port(), extra=extra, vendor="rossum_main")
        daemon = DaemonProcess(config).start()
        inbox = root / "inbox"

        drop_invoices(inbox, 3, prefix="before", first_seed=700)
        wait_until(lambda: len(exports_per_document(root)) == 3, 40, what="3 exports")
        assert circuit(daemon)["state"] == "closed"

        faults(emulator, fail_rate=1.0, fault_mix={"503": 1})  # the vendor is out
        drop_invoices(inbox, 8, prefix="outage", first_seed=710)
        wait_until(lambda: circuit(daemon).get("state") in ("open", "half_open"), 30,
                   what="the circuit opens")  # fmt: skip
        assert metric(daemon.url, "docrelay_vendor_circuit_open", vendor="rossum_main") == 1
        shown = subprocess.run(
            [sys.executable, "-m", "daemon.cli", "--config", str(config), "status"],
            capture_output=True, text=True, check=True, timeout=60,
        ).stdout  # fmt: skip
        line = shown.split("circuit breakers:\n")[1].splitlines()[0]
        assert line.split()[:2] in (["rossum_main", "open"], ["rossum_main", "half_open"]), shown
        assert "next probe" in line, shown
        # and on the status page, in the vendor's row, with what it means for the documents
        page = lxml_html.fromstring(httpx.get(f"{daemon.url}/", timeout=10).content)
        row = page.xpath('//tr[@data-name="rossum_main"]')[0].text_content()
        assert "circuit open" in row or "circuit half-open" in row, row
        assert "transient failure(s) in a row" in row, row
        moved = wait_until(
            lambda: query(root, "SELECT * FROM submissions WHERE role = 'fallback'"),
            30,
            what="documents moved to the fallback",
        )
        assert {row["profile"] for row in moved} == {"local"}
        events = query(root, "SELECT message FROM events WHERE kind = 'moved'")
        assert events and all(
            e["message"].startswith("moved to fallback local: circuit open for ") for e in events
        )
        # Only documents the primary never saw moved: never claimed for it (a claim moves a
        # submission to `uploading` before its upload), so never uploaded.
        ids = ",".join(str(row["document_id"]) for row in moved)
        assert not query(
            root,
            "SELECT e.id FROM events e JOIN submissions s ON s.id = e.submission_id "
            f"WHERE s.profile = 'rossum_main' AND s.document_id IN ({ids}) "
            "AND e.to_state = 'uploading'",
        )

        faults(emulator, fail_rate=0.0)  # the vendor is back: the probe closes the circuit
        wait_until(lambda: len(exports_per_document(root)) == 11, 60, what="11 exports")
        wait_until(lambda: circuit(daemon).get("state") == "closed", 30, what="closed again")
        drop_invoices(inbox, 2, prefix="after", first_seed=730)
        wait_until(lambda: len(exports_per_document(root)) == 13, 40, what="13 exports")

        assert set(exports_per_document(root).values()) == {1}  # none exported twice
        moved = query(root, "SELECT * FROM submissions WHERE role = 'fallback'")
        uploads = Counter(r["attributes"].get("document_id") for r in uploads_accepted(emulator))
        assert not {row["document_id"] for row in moved} & set(uploads)
        assert set(uploads.values()) == {1}  # and none uploaded twice
        after = query(
            root,
            "SELECT s.profile, s.state FROM submissions s JOIN documents d "
            "ON d.id = s.document_id WHERE d.filename LIKE 'after-%'",
        )
        assert [(r["profile"], r["state"]) for r in after] == [("rossum_main", "done")] * 2
        states = Counter(
            (r["profile"], r["state"]) for r in query(root, "SELECT * FROM submissions")
        )
        assert states[("local", "done")] == len(moved)
        assert states[("rossum_main", "dead")] == len(moved)
        assert metric(daemon.url, "docrelay_fallback_moves_total", trigger="circuit_open") == len(
            moved
        )
        assert metric(daemon.url, "docrelay_vendor_circuit_open", vendor="rossum_main") == 0
        assert daemon.stop() == 0
    finally:
        emulator.stop()


@pytest.mark.e2e
def test_a_profile_paused_for_reauth_hands_its_waiting_documents_to_the_fallback(tmp_path):
    root = tmp_path
    emulator = EmulatorProcess("rossum", log=root / "emulator.log")
    try:
        vendor = emulator.vendor_toml(concurrency=1, password="wrong", max_retries=0)
        extra = 'fallback = "local"\noutage_after = 2\n' + vendor
        config = write_config(root, port=free_port(), extra=extra, vendor="rossum_main")
        daemon = DaemonProcess(config).start()
        drop_invoices(root / "inbox", 4, prefix="paused", first_seed=760)
        wait_until(lambda: len(exports_per_document(root)) >= 3, 40, what="fallback exports")
        moves = query(root, "SELECT message FROM events WHERE kind = 'moved'")
        assert moves and all(
            m["message"].startswith("moved to fallback local: paused for re-auth for ")
            for m in moves
        )
        assert set(exports_per_document(root).values()) == {1}
        assert not uploads_accepted(emulator)  # Rossum never took one
        assert metric(daemon.url, "docrelay_fallback_moves_total", trigger="paused") == len(moves)
        assert daemon.stop() == 0
    finally:
        emulator.stop()
