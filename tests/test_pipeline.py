"""The state machine under scripted vendor behaviour, with the engine running in-process."""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select, text

from connectors.base import IngestStatus, IntakeItem
from connectors.registry import available
from daemon import config as config_mod
from daemon.pipeline import admin, ledger
from daemon.runtime import Daemon
from tests import fakes
from tests.daemon_proc import wait_until


@pytest.fixture
def make_daemon(tmp_path, monkeypatch):
    fakes.install(monkeypatch)
    started: list[Daemon] = []

    def make(extra: dict | None = None, *, routes: list[dict] | None = None, **pipeline) -> Daemon:
        raw = {
            "store": {"url": f"sqlite:///{tmp_path}/d.db", "blob_dir": str(tmp_path / "blobs")},
            "web": {"enabled": False},
            "pipeline": {"backoff_initial": 0.05, "backoff_max": 0.2, **pipeline},
            "vendors": {
                "a": {"kind": "scripted"},
                "b": {"kind": "scripted"},
                "local": {"kind": "local"},
            },
            "destinations": {"out": {"kind": "folder", "path": str(tmp_path / "out")}},
            "routes": routes
            or [
                {"match": {"filename": "b-*"}, "vendor": "b", "destinations": ["out"]},
                {"match": {"filename": "*.pdf"}, "vendor": "a", "destinations": ["out"]},
            ],
            **(extra or {}),
        }
        daemon = Daemon(config_mod.validate(raw, Path("test.toml")))
        daemon.open()
        daemon.start()
        started.append(daemon)
        return daemon

    yield make
    for daemon in started:
        daemon.stop()
    available.cache_clear()


def offer(
    daemon: Daemon, name: str, data: bytes = b"%PDF-1.4 fake %%EOF", mime: str = "text/plain"
) -> int:
    import io
    from contextlib import nullcontext

    outcome = daemon.intake.ingest(
        IntakeItem(
            source="cli",
            source_ref=name,
            filename=name,
            open=lambda: nullcontext(io.BytesIO(data)),
            mime_type=mime,
        )
    )
    assert outcome.status in (IngestStatus.INGESTED, IngestStatus.DUPLICATE), outcome
    return outcome.document_id


def sub_state(daemon: Daemon, doc: int, profile: str | None = None) -> dict:
    sub = ledger.submissions
    query = select(sub).where(sub.c.document_id == doc).order_by(sub.c.id.desc())
    if profile:
        query = query.where(sub.c.profile == profile)
    with daemon.engine.connect() as conn:
        row = conn.execute(query).mappings().first()
    return dict(row) if row else {}


def events(daemon: Daemon, doc: int) -> list[tuple[str, str | None, str | None]]:
    with daemon.engine.connect() as conn:
        return [
            (r.kind, r.from_state, r.to_state)
            for r in conn.execute(
                select(ledger.events)
                .where(ledger.events.c.document_id == doc)
                .order_by(ledger.events.c.id)
            )
        ]


def test_transient_errors_are_retried_with_backoff_then_succeed(make_daemon):
    fakes.SCRIPTS["a"].extend(["transient", "transient", "transient"])
    daemon = make_daemon(max_attempts=5)
    doc = offer(daemon, "one.pdf")
    wait_until(
        lambda: ("delivery", "pending", "delivered") in events(daemon, doc), 10, what="delivered"
    )
    row = sub_state(daemon, doc)
    assert row["state"] == "done"
    assert row["attempts"] == 3
    assert [c for c in fakes.CALLS["a"] if c[0] == "submit"] == [("submit", doc)] * 4
    trail = events(daemon, doc)
    assert trail.count(("transition", "uploading", "failed")) == 3
    assert trail.count(("retry", "failed", "uploading")) == 3


def test_gives_up_after_max_attempts_then_operator_retry_revives(make_daemon):
    fakes.SCRIPTS["a"].extend(["transient"] * 3)
    daemon = make_daemon(max_attempts=3)
    doc = offer(daemon, "two.pdf")
    wait_until(lambda: sub_state(daemon, doc).get("state") == "dead", 10, what="dead")
    assert "gave up after 3 attempts" in sub_state(daemon, doc)["error"]
    assert admin.retry(daemon.engine, documents=[doc]) == {
        "submissions": 1,
        "deliveries": 0,
        "feedback": 0,
    }
    daemon.wake_all()
    wait_until(lambda: sub_state(daemon, doc).get("state") == "done", 10, what="done again")


def test_rate_limit_waits_at_least_retry_after(make_daemon):
    fakes.SCRIPTS["a"].append("ratelimit:0.6")
    daemon = make_daemon()
    began = time.monotonic()
    doc = offer(daemon, "slow.pdf")
    wait_until(lambda: sub_state(daemon, doc).get("state") == "done", 10, what="done")
    assert time.monotonic() - began >= 0.6


def test_terminal_rejection_goes_to_the_fallback_profile(make_daemon):
    fakes.SCRIPTS["a"].append("terminal")
    daemon = make_daemon(
        routes=[{"vendor": "a", "fallback": "b", "destinations": ["out"]}],
    )
    doc = offer(daemon, "three.pdf")
    wait_until(lambda: sub_state(daemon, doc, "b").get("state") == "done", 10, what="fallback")
    primary = sub_state(daemon, doc, "a")
    assert primary["state"] == "rejected"
    assert "unsupported layout" in primary["error"]
    assert sub_state(daemon, doc, "b")["role"] == "fallback"
    with daemon.engine.connect() as conn:
        view = conn.execute(
            text("SELECT state, vendor FROM docrelay_documents WHERE document_id = :d"), {"d": doc}
        ).one()
    assert tuple(view) == ("done", "b")


def test_vendor_rejection_on_poll_without_fallback(make_daemon):
    fakes.SCRIPTS["a"].extend(["ok", "processing", "processing", "rejected"])
    daemon = make_daemon()
    doc = offer(daemon, "four.pdf")
    wait_until(lambda: sub_state(daemon, doc).get("state") == "rejected", 10, what="rejected")
    row = sub_state(daemon, doc)
    assert row["polls"] == 2
    assert row["error"] == "vendor says: not an invoice"


def test_r19_auth_failure_pauses_only_that_profile(make_daemon):
    fakes.SCRIPTS["a"].append("auth")
    daemon = make_daemon()
    doc_a = offer(daemon, "a1.pdf", b"a1")
    doc_b = [offer(daemon, f"b-{i}.pdf", f"b{i}".encode()) for i in range(3)]
    for doc in doc_b:
        wait_until(lambda doc=doc: sub_state(daemon, doc).get("state") == "done", 10, what="b")
    wait_until(lambda: "a" in daemon.paused, 5, what="a paused")
    assert sub_state(daemon, doc_a)["state"] == "uploading"
    with daemon.engine.connect() as conn:
        health = conn.execute(text("SELECT name, state FROM connector_health")).all()
    assert [tuple(h) for h in health] == [("a", "auth_failed")]
    calls_before = len(fakes.CALLS["a"])
    time.sleep(0.3)
    assert len(fakes.CALLS["a"]) == calls_before, "a paused profile makes no vendor calls"
    daemon.resume_profile("a")
    wait_until(lambda: sub_state(daemon, doc_a).get("state") == "done", 10, what="a resumed")


def test_processing_deadline_makes_it_dead(make_daemon):
    fakes.SCRIPTS["a"].extend(["ok"] + ["processing"] * 100)
    daemon = make_daemon(processing_timeout=0.3)
    doc = offer(daemon, "stuck.pdf")
    wait_until(lambda: sub_state(daemon, doc).get("state") == "dead", 10, what="dead")
    assert "deadline" in sub_state(daemon, doc)["error"]


def test_r06_duplicates_are_recorded_not_sent(make_daemon):
    daemon = make_daemon()
    first = offer(daemon, "x.pdf", b"same bytes")
    second = offer(daemon, "y.pdf", b"same bytes")
    wait_until(lambda: sub_state(daemon, first).get("state") == "done", 10, what="done")
    with daemon.engine.connect() as conn:
        row = conn.execute(
            text("SELECT state, duplicate_of FROM docrelay_documents WHERE document_id = :d"),
            {"d": second},
        ).one()
    assert tuple(row) == ("duplicate", first)
    assert sub_state(daemon, second) == {}
    assert [c for c in fakes.CALLS["a"] if c[0] == "submit"] == [("submit", first)]


def test_duplicates_processed_when_configured(make_daemon):
    daemon = make_daemon(duplicates="process")
    first = offer(daemon, "x.pdf", b"same bytes")
    second = offer(daemon, "y.pdf", b"same bytes")
    for doc in (first, second):
        wait_until(lambda doc=doc: sub_state(daemon, doc).get("state") == "done", 10, what="d")


def test_no_route_is_recorded_as_unrouted(make_daemon):
    daemon = make_daemon(routes=[{"match": {"filename": "*.tif"}, "vendor": "a"}])
    doc = offer(daemon, "z.pdf")
    with daemon.engine.connect() as conn:
        row = conn.execute(
            text("SELECT state, error FROM docrelay_documents WHERE document_id = :d"), {"d": doc}
        ).one()
    assert tuple(row) == ("unrouted", "no route matched")


def test_config_dataclass_is_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        config_mod.Config.__new__(config_mod.Config).path = Path("x")  # type: ignore[misc]


def test_two_engines_on_postgresql_claim_each_submission_once(tmp_path, pg_url, monkeypatch):
    """SKIP LOCKED: two processes' worth of workers on one PostgreSQL queue never share work."""
    fakes.install(monkeypatch)
    raw = {
        "store": {"url": pg_url, "blob_dir": str(tmp_path / "blobs")},
        "web": {"enabled": False},
        "vendors": {"a": {"kind": "scripted", "concurrency": 3}},
        "destinations": {"out": {"kind": "folder", "path": str(tmp_path / "out")}},
        "routes": [{"vendor": "a", "destinations": ["out"]}],
    }
    first = Daemon(config_mod.validate(raw, Path("one.toml")))
    second = Daemon(config_mod.validate(raw, Path("two.toml")))
    first.open()
    second.open()
    assert first.owner != second.owner
    docs = [offer(first, f"doc{i}.pdf", f"doc {i}".encode()) for i in range(40)]
    first.start()
    second.start()
    try:
        with first.engine.connect() as conn:
            wait_until(
                lambda: (
                    conn.execute(
                        text("SELECT COUNT(*) FROM deliveries WHERE state = 'delivered'")
                    ).scalar()
                    == len(docs)
                ),
                30,
                what="all delivered",
            )
            owners = (
                conn.execute(
                    text(
                        "SELECT DISTINCT actor FROM events WHERE kind = 'transition' "
                        "AND to_state = 'uploading'"
                    )
                )
                .scalars()
                .all()
            )
    finally:
        first.stop()
        second.stop()
    submits = [c for c in fakes.CALLS["a"] if c[0] == "submit"]
    assert sorted(doc for _, doc in submits) == sorted(docs), "each document uploaded once"
    assert len(owners) == 2, "both engines took part"
    assert len(list((tmp_path / "out").glob("*.json"))) == len(docs)


def test_expired_leases_are_freed_with_an_event(make_daemon):
    from datetime import timedelta

    from sqlalchemy import update

    from daemon.store.models import utcnow

    fakes.SCRIPTS["a"].extend(["ok"] + ["processing"] * 1000)
    daemon = make_daemon()
    doc = offer(daemon, "held.pdf")
    wait_until(lambda: sub_state(daemon, doc).get("state") == "processing", 10, what="processing")
    sub = ledger.submissions
    with daemon.engine.begin() as conn:  # a worker elsewhere took it, then died
        conn.execute(
            update(sub)
            .where(sub.c.document_id == doc)
            .values(
                lease_owner="otherhost:1:dead",
                lease_expires_at=utcnow() - timedelta(seconds=1),
                next_attempt_at=utcnow() + timedelta(hours=1),
            )
        )
        assert ledger.expire_leases(conn) == 1
        assert ledger.expire_leases(conn) == 0
    assert sub_state(daemon, doc)["lease_owner"] is None
    assert ("lease_expired", "processing", "processing") in events(daemon, doc)
    # Its worker died holding it: counted as a crash, so it runs alone from now on.
    assert sub_state(daemon, doc)["crashes"] == 1
    assert ("crashed", "processing", "processing") in events(daemon, doc)


def test_export_status_and_corrections_reach_the_vendor(make_daemon, tmp_path):
    from daemon.pipeline.feedback import correct

    daemon = make_daemon()
    doc = offer(daemon, "fb.pdf")
    ref = f"a-{doc}"
    wait_until(lambda: ("report", (ref, True, None)) in fakes.CALLS["a"], 10, what="exported")
    # The folder export is pushed inline, so the vendor's own worker reports it at once.
    assert fakes.CALLS["a:report-threads"][0].startswith("vendor-a-")
    fakes.SCRIPTS["a:feedback"].append("transient")  # the first send fails, the retry succeeds
    changed = correct(
        daemon.engine, doc, {"invoice_number": "INV-9", "total_amount": "13,50 EUR"},
        vendors=daemon.vendors,
    )  # fmt: skip
    assert changed == [
        "invoice_number: INV-… → INV-9".replace("…", str(doc)),
        "total_amount: 12.50 → 13.50",
        "exported again: out v2",
    ]
    daemon.wake_all()
    export = tmp_path / "out" / f"{doc}.json"
    wait_until(lambda: json.loads(export.read_text())["version"] == 2, 10, what="version 2")
    exported = json.loads(export.read_text())
    assert exported["fields"]["invoice_number"] == "INV-9"
    assert exported["corrected"] == ["invoice_number", "total_amount"]
    wait_until(
        lambda: [c for c in fakes.CALLS["a"] if c[0] == "feedback"][1:], 10, what="feedback sent"
    )
    sent = [c[1] for c in fakes.CALLS["a"] if c[0] == "feedback"][-1]
    assert {(c.field, c.value) for c in sent} == {
        ("invoice_number", "INV-9"),
        ("total_amount", "13.50"),
    }
    with daemon.engine.connect() as conn:
        row = conn.execute(
            text(
                "SELECT invoice_number, total_amount FROM docrelay_invoices WHERE document_id = :d"
            ),
            {"d": doc},
        ).one()
        corrected = conn.execute(
            text("SELECT COUNT(*) FROM docrelay_fields WHERE document_id = :d AND corrected"),
            {"d": doc},
        ).scalar()
    assert row[0] == "INV-9" and float(row[1]) == 13.5
    assert corrected == 2
    wait_until(lambda: len(_feedback_states(daemon)) == 4, 10, what="second export status")
    assert _feedback_states(daemon) == [
        ("export_status", "sent"),
        ("correction", "sent"),
        ("correction", "sent"),
        ("export_status", "sent"),
    ]
    with daemon.engine.connect() as conn:
        versions = conn.execute(
            text("SELECT idempotency_key, version, state FROM deliveries ORDER BY id")
        ).all()
    key = versions[0].idempotency_key
    assert (
        key.startswith(f"docrelay-{doc}-")
        and key.endswith("-out")
        and len(key) == len(f"docrelay-{doc}-01234567-out")
    )
    assert [tuple(v) for v in versions] == [(key, 1, "delivered"), (key, 2, "delivered")]


def _feedback_states(daemon: Daemon) -> list[tuple[str, str]]:
    with daemon.engine.connect() as conn:
        return [
            tuple(s) for s in conn.execute(text("SELECT kind, state FROM feedback ORDER BY id"))
        ]


def test_failed_export_is_reported_with_the_reason(make_daemon, tmp_path):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the export folder should be")
    daemon = make_daemon(
        {"destinations": {"out": {"kind": "folder", "path": str(blocker / "sub")}}},
        max_attempts=2,
    )
    doc = offer(daemon, "nowhere.pdf")
    wait_until(lambda: [c for c in fakes.CALLS["a"] if c[0] == "report"], 15, what="failed_export")
    report = next(c[1] for c in fakes.CALLS["a"] if c[0] == "report")
    assert report[0] == f"a-{doc}" and report[1] is False
    assert fakes.CALLS["a:report-threads"][0].startswith("feedback-a-")  # after the retries
    assert "out: gave up after 2 attempts" in report[2]


def test_retention_purges_finished_documents_at_the_vendor(make_daemon, monkeypatch):
    from datetime import timedelta

    from sqlalchemy import update

    from daemon.store.models import utcnow

    purged: list[str] = []
    monkeypatch.setattr(fakes.ScriptedVendor, "retention_days", lambda self: 30.0)
    monkeypatch.setattr(fakes.ScriptedVendor, "purge", lambda self, ref, data: purged.append(ref))
    daemon = make_daemon()
    old, recent = offer(daemon, "old.pdf", b"old"), offer(daemon, "new.pdf", b"new")
    for doc in (old, recent):
        wait_until(lambda doc=doc: ("delivery", "pending", "delivered") in events(daemon, doc), 10)
    sub = ledger.submissions
    with daemon.engine.begin() as conn:
        conn.execute(
            update(sub)
            .where(sub.c.document_id == old)
            .values(completed_at=utcnow() - timedelta(days=31))
        )
    assert admin.purge_expired(daemon.engine, "a", daemon.vendors["a"]) == 1
    assert admin.purge_expired(daemon.engine, "a", daemon.vendors["a"]) == 0, "once only"
    assert purged == [f"a-{old}"]
    assert sub_state(daemon, old)["purged_at"] is not None
    assert sub_state(daemon, recent)["purged_at"] is None


def test_max_in_flight_limits_documents_at_the_vendor(make_daemon):
    fakes.SCRIPTS["a"].extend(["ok", "processing", "processing"] * 6)
    daemon = make_daemon(
        {"vendors": {"a": {"kind": "scripted", "concurrency": 3, "max_in_flight": 2}}},
        routes=[{"vendor": "a", "destinations": ["out"]}],
    )
    docs = [offer(daemon, f"f{i}.pdf", f"f{i}".encode()) for i in range(6)]
    seen = 0
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        with daemon.engine.connect() as conn:
            seen = max(seen, ledger.in_flight(conn, "a"))
            done = conn.execute(
                text("SELECT COUNT(*) FROM submissions WHERE state = 'done'")
            ).scalar()
        if done == len(docs):
            break
        time.sleep(0.01)
    assert done == len(docs)
    assert seen <= 2
    assert seen == 2, "the limit is used, not just respected"


def test_only_an_offline_vendors_claims_skip_the_fsync(make_daemon):
    """A claim is durable before its upload starts (lost in a power cut, the upload would be
    made again unseen); ``local`` uploads nowhere, so its claims are ``relaxed`` commits."""
    from sqlalchemy import event

    from daemon.store.engine import RELAXED

    daemon = make_daemon(
        routes=[
            {"match": {"filename": "l-*"}, "vendor": "local", "destinations": ["out"]},
            {"vendor": "a", "destinations": ["out"]},
        ]
    )
    claims: list[bool] = []

    @event.listens_for(daemon.engine, "before_cursor_execute")
    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement.startswith("UPDATE submissions SET state=CASE WHEN (submissions.state"):
            claims.append(bool(conn.get_execution_options().get(RELAXED)))

    text_layer = b"Invoice No: 4711\nDate: 2026-01-02\nTotal: 10.00 EUR\n"
    local = offer(daemon, "l-one.txt", text_layer)
    wait_until(lambda: sub_state(daemon, local).get("completed_at"), 10, what="local done")
    assert claims and all(claims), claims
    claims.clear()
    scripted = offer(daemon, "other.pdf")
    wait_until(lambda: sub_state(daemon, scripted).get("state") == "done", 10, what="a done")
    assert claims and not any(claims), claims


def test_a_waiting_submission_is_polled_after_the_interval_not_the_lease(make_daemon, monkeypatch):
    """Regression: moving to `processing` must give the lease back, or the first poll waits for
    the lease to run out (minutes) instead of the poll interval."""
    from connectors.base import VendorCapabilities

    monkeypatch.setattr(
        fakes.ScriptedVendor,
        "capabilities",
        VendorCapabilities(poll_interval=0.2, feedback=True, export_status=True),
    )
    daemon = make_daemon(lease_seconds=120)
    began = time.monotonic()
    doc = offer(daemon, "later.pdf")
    wait_until(lambda: sub_state(daemon, doc).get("state") == "done", 10, what="done")
    assert time.monotonic() - began < 5


def test_a_step_outliving_its_lease_is_not_run_twice_by_a_sibling(make_daemon):
    """The wall clock jumps (or the machine sleeps) while an upload is going: its lease looks
    run out, and a sibling thread of the same process claims the row again. The upload still
    happens once, and the document ends done."""
    from datetime import timedelta

    from sqlalchemy import update

    from daemon.store.models import utcnow

    fakes.SCRIPTS["a"].append("hold")
    daemon = make_daemon(
        {
            "vendors": {
                "a": {"kind": "scripted", "concurrency": 2},
                "b": {"kind": "scripted"},
                "local": {"kind": "local"},
            }
        }
    )
    doc = offer(daemon, "slow.pdf")
    wait_until(lambda: ("submit", doc) in fakes.CALLS["a"], 10, what="the upload to start")
    sub = ledger.submissions
    with daemon.engine.begin() as conn:  # what a jump of the clock past the lease looks like
        conn.execute(
            update(sub)
            .where(sub.c.document_id == doc)
            .values(lease_expires_at=utcnow() - timedelta(seconds=1), next_attempt_at=None)
        )
    daemon.wake_all()

    def reclaimed() -> bool:  # leased anew (or, were it run twice, already finished)
        expires = sub_state(daemon, doc)["lease_expires_at"]
        return expires is None or expires > utcnow()

    wait_until(reclaimed, 10, what="the re-claim")
    time.sleep(0.3)  # room for a second run to start, were it allowed to
    fakes.GATES["a"].set()
    wait_until(lambda: sub_state(daemon, doc)["state"] == "done", 10, what="done")
    assert fakes.CALLS["a"].count(("submit", doc)) == 1


def test_r27_a_clock_set_back_does_not_hold_back_waiting_work(make_daemon):
    """RELIABILITY 27: after the wall clock is set back ten minutes, a retry that was due in a
    second is still due in a second (not in ten minutes and a second), and the periodic jobs
    run at once instead of waiting the jump out."""
    from datetime import timedelta

    from daemon.store.models import utcnow

    fakes.SCRIPTS["a"].append("ratelimit:601")  # a wait the pipeline caps at ten minutes
    daemon = make_daemon()
    doc = offer(daemon, "waiting.pdf")
    wait_until(lambda: sub_state(daemon, doc).get("next_attempt_at"), 10, what="the wait")
    waiting = sub_state(daemon, doc)
    assert waiting["next_attempt_at"] > utcnow() + timedelta(seconds=590)
    sweeps = daemon.job_counters.runs.get("sweep", 0)
    # As if the clock had been set back ten minutes right after the row was written: its due
    # time (a second from then) reads ten minutes too late.
    daemon.clock_watch.on_set_back(599)
    assert sub_state(daemon, doc)["next_attempt_at"] < utcnow() + timedelta(seconds=2)
    wait_until(lambda: sub_state(daemon, doc)["state"] == "done", 10, what="done")
    wait_until(lambda: daemon.job_counters.runs.get("sweep", 0) > sweeps, 5, what="a sweep")


def test_an_export_gives_the_destination_the_original_file(make_daemon):
    """ERPs attach the PDF: a pushed payload points at the stored original, on the inline
    path (the vendor's worker pushes) and from the destination's own pool."""
    daemon = make_daemon(
        {
            "destinations": {
                "erp": {"kind": "recording", "inline": True},
                "dms": {"kind": "recording"},
            }
        },
        routes=[{"match": {"filename": "*.pdf"}, "vendor": "a", "destinations": ["erp", "dms"]}],
    )
    data = b"%PDF-1.4 the original bytes %%EOF"
    doc = offer(daemon, "attach.pdf", data)
    wait_until(lambda: fakes.RECEIVED["erp"] and fakes.RECEIVED["dms"], 10, what="both pushes")
    for name in ("erp", "dms"):
        (payload,) = fakes.RECEIVED[name]
        assert payload.document_id == doc
        assert payload.original is not None and payload.original.read_bytes() == data, name


def test_a_destination_that_refuses_the_credentials_is_held_and_the_others_go_on(make_daemon):
    """Its deliveries wait (not dead, no attempt spent), its health says so, and no further
    push is tried until a restart; the other destination gets every document."""
    daemon = make_daemon(
        {
            "destinations": {
                "erp": {"kind": "recording", "refuse": True, "concurrency": 1},
                "dms": {"kind": "recording"},
            }
        },
        routes=[{"match": {"filename": "*.pdf"}, "vendor": "a", "destinations": ["erp", "dms"]}],
    )
    docs = [offer(daemon, f"held-{n}.pdf", f"%PDF-1.4 {n} %%EOF".encode()) for n in range(3)]
    wait_until(lambda: len(fakes.RECEIVED["dms"]) == 3, 10, what="the other destination")
    wait_until(lambda: fakes.RECEIVED["erp"], 10, what="a refused push")
    time.sleep(1.0)  # the other rows' first pushes would have come by now
    assert len(fakes.RECEIVED["erp"]) == 1, "held after the first refusal"
    assert daemon.paused_destinations.keys() == {"erp"}
    deliveries, health = ledger.deliveries, ledger.health
    with daemon.reader.connect() as conn:
        states_ = dict(
            conn.execute(
                select(deliveries.c.destination, func.count())
                .where(deliveries.c.state.in_(("pending", "failed")))
                .group_by(deliveries.c.destination)
            ).all()
        )
        shown = conn.execute(select(health.c.name, health.c.state, health.c.reason)).all()
    assert states_ == {"erp": len(docs)}, "every erp delivery waits; none is dead"
    assert [tuple(row) for row in shown] == [("erp", "auth_failed", "the ERP refused the API key")]


def test_r03_a_push_whose_answer_was_lost_is_looked_up_not_made_twice(make_daemon):
    """Delivery v2: before a push to a destination that can look a key up, the delivery is
    marked in doubt; the answer is lost (an ambiguous timeout), so the retry asks first,
    finds the record and records it, with no second push."""
    daemon = make_daemon(
        {
            "destinations": {
                "erp": {"kind": "recording", "lookup": True, "lose_first_answer": True},
            }
        },
        routes=[{"match": {"filename": "*.pdf"}, "vendor": "a", "destinations": ["erp"]}],
    )
    doc = offer(daemon, "once.pdf")
    deliveries = ledger.deliveries

    def row() -> Any:
        with daemon.reader.connect() as conn:
            return conn.execute(
                select(deliveries).where(deliveries.c.document_id == doc)
            ).one_or_none()

    wait_until(lambda: (r := row()) is not None and r.state == "delivered", 20, what="delivered")
    done = row()
    assert len(fakes.RECEIVED["erp"]) == 1, "pushed once"
    assert fakes.LOOKUPS["erp"] == [done.idempotency_key], "asked once, on the retry only"
    assert done.idempotency_key.startswith(f"docrelay-{doc}-")
    assert done.downstream_ref == f"record-{done.idempotency_key}"
    assert done.downstream_data == {"found": True} and done.in_doubt_at is None
    events = [e["message"] for e in admin.history(daemon.engine, doc) if e["delivery_id"]]
    assert any("by its key: an earlier push had arrived" in (m or "") for m in events)


def test_an_inline_push_the_store_could_not_record_is_finished_by_the_pool(make_daemon, tmp_path):
    """RELIABILITY 24: another process locks the store right after an inline push. The row is
    still leased to this process, so its destination pool records the push once the store is
    back (without pushing again), instead of leaving it until the lease runs out."""
    database = tmp_path / "d.db"
    daemon = make_daemon(
        {
            "store": {"url": f"sqlite:///{database}", "blob_dir": str(tmp_path / "blobs"),
                      "busy_timeout": 0.3},
            "destinations": {"erp": {"kind": "locking", "database": str(database)}},
        },
        routes=[{"match": {"filename": "*.pdf"}, "vendor": "a", "destinations": ["erp"]}],
        lease_seconds=300,
    )  # fmt: skip
    doc = offer(daemon, "pushed.pdf")
    deliveries = ledger.deliveries

    def delivered() -> bool:
        with daemon.reader.connect() as conn:  # reads while the store is locked
            state = conn.execute(
                select(deliveries.c.state).where(deliveries.c.document_id == doc)
            ).scalar_one_or_none()
        return state == "delivered"

    wait_until(delivered, 20, what="delivered well before the lease (300 s) runs out")
    pushes = fakes.CALLS["erp"]
    assert len(pushes) == 1  # the pool only recorded the receipt, it did not push again
    wait_until(lambda: any(c[0] == "report" for c in fakes.CALLS["a"]), 10, what="the report")
    reports = [c for c in fakes.CALLS["a"] if c[0] == "report"]
    assert reports == [("report", (f"a-{doc}", True, None))]


def test_r05_a_stuck_web_loop_withholds_the_watchdog_ping(make_daemon, tmp_path, monkeypatch):
    """RELIABILITY 5: while the web app's event loop is blocked (twice the ping interval and
    more), no WATCHDOG=1 reaches systemd, so it would restart the service; pings resume after."""
    import socket

    from tests.daemon_proc import free_port

    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(tmp_path / "notify.sock"))
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "notify.sock"))
    monkeypatch.setenv("WATCHDOG_USEC", "1000000")  # a ping every 0.5 s
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    daemon = make_daemon({"web": {"listen": f"127.0.0.1:{free_port()}"}})
    sock.settimeout(5)
    assert sock.recv(64) == b"WATCHDOG=1"
    assert daemon.web is not None and daemon.web.loop is not None
    daemon.web.loop.call_soon_threadsafe(time.sleep, 3.0)
    blocked_at = time.monotonic()
    pings = []
    sock.settimeout(0.2)
    while time.monotonic() - blocked_at < 6:
        try:
            if sock.recv(64) == b"WATCHDOG=1":
                pings.append(time.monotonic() - blocked_at)
        except TimeoutError:
            pass
    sock.close()
    during = [at for at in pings if 0.3 < at < 3.0]
    assert during == [], pings
    assert any(at > 3.0 for at in pings), pings


def test_a_record_thrown_out_downstream_is_a_failed_export_for_the_vendor(make_daemon):
    """A followed destination says the record was cancelled: the outcome is kept on the
    delivery and in the history, and the vendor hears of a failed export."""
    daemon = make_daemon(
        {"destinations": {"erp": {"kind": "recording", "follow": "rejected"}}},
        routes=[{"match": {"filename": "*.pdf"}, "vendor": "a", "destinations": ["erp"]}],
    )
    doc = offer(daemon, "thrown.pdf")
    ref = f"a-{doc}"
    wait_until(lambda: ("report", (ref, True, None)) in fakes.CALLS["a"], 10, what="exported")
    failed = ("report", (ref, False, "erp: cancelled by the accountant"))
    wait_until(lambda: failed in fakes.CALLS["a"], 10, what="the failed export reported")
    with daemon.reader.connect() as conn:
        (row,) = conn.execute(text("SELECT outcome, outcome_reason FROM docrelay_deliveries")).all()
        kinds = conn.execute(text("SELECT kind FROM events WHERE kind LIKE 'downstream%'")).all()
    assert tuple(row) == ("rejected", "cancelled by the accountant")
    assert [k for (k,) in kinds] == ["downstream_rejected"]
    time.sleep(0.6)  # a few more follow rounds: a final outcome is not asked about again
    assert fakes.FOLLOWED["erp"].count(f"record-docrelay-{doc}-{ref_hash(daemon, doc)}-erp") == 2


def test_values_posted_downstream_teach_the_vendor_and_reach_the_other_destinations(
    make_daemon, tmp_path
):
    posted = {"invoice_number": "POSTED-7", "total_amount": "12.50"}
    daemon = make_daemon(
        {
            "destinations": {
                "erp": {"kind": "recording", "follow": "posted", "posted": posted},
                "out": {"kind": "folder", "path": str(tmp_path / "out")},
            }
        },
        routes=[{"match": {"filename": "*.pdf"}, "vendor": "a", "destinations": ["erp", "out"]}],
    )
    doc = offer(daemon, "posted.pdf")
    export = tmp_path / "out" / f"{doc}.json"
    wait_until(
        lambda: export.exists() and json.loads(export.read_text())["version"] == 2,
        15,
        what="version 2 in the folder",
    )
    assert json.loads(export.read_text())["fields"]["invoice_number"] == "POSTED-7"
    wait_until(lambda: [c for kind, c in fakes.CALLS["a"] if kind == "feedback"], 10, what="fb")
    sent = [c for kind, c in fakes.CALLS["a"] if kind == "feedback"]
    assert [(c.field, c.value) for c in sent[0]] == [("invoice_number", "POSTED-7")], sent
    assert len(fakes.RECEIVED["erp"]) == 1, "the ERP is not written again"
    with daemon.reader.connect() as conn:
        origins = conn.execute(
            text("SELECT DISTINCT origin FROM feedback WHERE kind = 'correction'")
        )
        assert [o for (o,) in origins] == ["erp:erp"]


def ref_hash(daemon: Daemon, doc: int) -> str:
    with daemon.reader.connect() as conn:
        sha = conn.execute(text("SELECT sha256 FROM documents WHERE id = :d"), {"d": doc})
        return sha.scalar_one()[:8]


def test_a_destinations_rate_limit_spaces_its_pushes(make_daemon):
    """``rate_limit`` on any destination: pushes per second for all its threads together
    (a bucket of one second's worth, then one push every 1/rate seconds)."""
    daemon = make_daemon(
        {"destinations": {"erp": {"kind": "recording", "rate_limit": 4, "concurrency": 4}}},
        routes=[{"match": {"filename": "*.pdf"}, "vendor": "a", "destinations": ["erp"]}],
    )
    for n in range(10):
        offer(daemon, f"limited-{n}.pdf", f"%PDF-1.4 {n} %%EOF".encode())
    wait_until(lambda: len(fakes.RECEIVED["erp"]) == 10, 20, what="every push")
    times = fakes.PUSHED_AT["erp"]
    assert times[-1] - times[0] >= (10 - 4) / 4 - 0.1, "4 at once, then 4 a second"
