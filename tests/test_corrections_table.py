"""The ``docrelay_corrections`` table: rows an ERP inserts are applied through ``correct`` or
refused with the reason, never deleted, never applied twice; on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from connectors.registry import available
from daemon import config as config_mod
from daemon import status
from daemon.pipeline import corrections
from daemon.pipeline.corrections import PickUp, pick_up
from daemon.runtime import Daemon
from daemon.store.models import utcnow
from tests import fakes
from tests.daemon_proc import wait_until
from tests.test_pipeline import offer


@pytest.fixture
def make_daemon(tmp_path, monkeypatch, store_url):
    fakes.install(monkeypatch)
    started: list[Daemon] = []

    def make(**pipeline: object) -> Daemon:
        raw = {
            "store": {"url": store_url, "blob_dir": str(tmp_path / "blobs")},
            "web": {"enabled": False},
            "pipeline": {
                "backoff_initial": 0.05,
                "backoff_max": 0.2,
                "corrections_interval": 0,  # the tests run the pickup themselves
                **pipeline,
            },
            "vendors": {"a": {"kind": "scripted"}},
            "destinations": {"out": {"kind": "folder", "path": str(tmp_path / "out")}},
            "routes": [{"vendor": "a", "destinations": ["out"]}],
        }
        daemon = Daemon(config_mod.validate(raw, tmp_path / "test.toml"))
        daemon.open()
        daemon.start()
        started.append(daemon)
        return daemon

    yield make
    for daemon in started:
        daemon.stop()
    available.cache_clear()


def exported(daemon: Daemon, tmp_path: Path, name: str = "inv.pdf") -> int:
    doc = offer(daemon, name, data=f"%PDF-1.4 {name} %%EOF".encode())
    wait_until((tmp_path / "out" / f"{doc}.json").exists, 10, what="the first export")
    return doc


def insert(daemon: Daemon, *rows: dict[str, object]) -> None:
    """What an ERP job does: a plain INSERT naming only the columns it knows."""
    with daemon.engine.begin() as conn:
        for row in rows:
            columns = ", ".join(row)
            marks = ", ".join(f":{k}" for k in row)
            conn.execute(
                text(f"INSERT INTO docrelay_corrections ({columns}) VALUES ({marks})"), row
            )


def table(daemon: Daemon) -> list[tuple]:
    with daemon.engine.connect() as conn:
        return [
            tuple(r)
            for r in conn.execute(
                text("SELECT id, document_id, field, state, reason FROM docrelay_corrections "
                     "ORDER BY id")
            )
        ]  # fmt: skip


def deliveries(daemon: Daemon) -> list[tuple]:
    with daemon.engine.connect() as conn:
        return [
            tuple(r)
            for r in conn.execute(text("SELECT document_id, version FROM deliveries ORDER BY id"))
        ]


def test_pending_rows_are_applied_or_refused_with_the_reason_and_never_deleted(
    make_daemon, tmp_path
):
    daemon = make_daemon()
    doc = exported(daemon, tmp_path)
    insert(
        daemon,
        {"document_id": doc, "field": "total_amount", "value": "13,50 EUR"},
        {"document_id": doc, "field": "invoice_number", "value": "X", "action": "confirm"},
        {"document_id": doc, "field": "issue_date", "value": "soon"},
        {"document_id": doc, "field": "colour", "value": "blue"},
        {"document_id": doc, "field": "due_date", "value": None},
        {"document_id": doc, "field": "order_number", "value": "PO-1", "action": "delete"},
        {"document_id": doc, "field": "extra.cost_centre", "value": "", "action": "absent",
         "note": "ERP job 7"},
        {"document_id": 4242, "field": "invoice_number", "value": "X-1"},
    )  # fmt: skip
    assert pick_up(daemon.engine, vendors=daemon.vendors) == PickUp(applied=3, refused=5)
    rows = table(daemon)
    assert [r[3] for r in rows] == ["applied", "applied", "refused", "refused", "refused",
                                    "refused", "applied", "refused"]  # fmt: skip
    reasons = {r[2] if r[1] == doc else "other": r[4] for r in rows}
    assert reasons["total_amount"] is None
    assert (
        reasons["issue_date"] == "issue_date: 'soon' is not a date (e.g. 2026-03-31 or 31.03.2026)"
    )
    assert reasons["colour"].startswith("'colour' is not a field")
    assert reasons["due_date"].startswith("due_date: no value (use action 'absent'")
    assert reasons["order_number"] == "action 'delete' is not one of correct, confirm, absent"
    assert reasons["other"] == "document 4242 is not in the store"
    export = tmp_path / "out" / f"{doc}.json"
    daemon.wake_all()
    wait_until(lambda: json.loads(export.read_text())["version"] == 2, 10, what="version 2")
    assert json.loads(export.read_text())["fields"]["total_amount"] == "13.5"
    assert deliveries(daemon) == [(doc, 1), (doc, 2)], "one new version for the rows together"
    with daemon.engine.connect() as conn:
        feedback = conn.execute(
            text("SELECT field, correction, origin FROM feedback WHERE kind = 'correction' "
                 "ORDER BY id")
        ).all()  # fmt: skip
        history = conn.execute(
            text("SELECT actor, message FROM events WHERE document_id = :d AND kind IN "
                 "('corrected', 'confirmed') ORDER BY id"), {"d": doc}
        ).all()  # fmt: skip
        stamped = conn.execute(
            text("SELECT created_at, applied_at FROM docrelay_corrections ORDER BY id")
        ).first()
    assert [tuple(f) for f in feedback] == [
        ("total_amount", "correct", "table"),
        ("extra.cost_centre", "absent", "table"),
        ("invoice_number", "confirm", "table"),
    ]
    assert {h.actor for h in history} == {"table"}
    ids = [r[0] for r in rows]
    assert history[0].message.endswith(
        f"docrelay_corrections row {ids[0]}; docrelay_corrections row {ids[1]}; "
        f"docrelay_corrections row {ids[6]}: ERP job 7"
    )
    assert stamped.created_at is not None and stamped.applied_at is not None
    wait_until(
        lambda: [c for c in fakes.CALLS["a"] if c[0] == "feedback"], 10, what="feedback sent"
    )
    summary = status.summary(daemon.engine)
    assert summary["corrections"] == {"applied": 3, "refused": 5}
    assert summary["corrections_refused"][0] == {
        "row": ids[7], "document_id": 4242, "field": "invoice_number",
        "reason": "document 4242 is not in the store",
        "at": summary["corrections_refused"][0]["at"],
    }  # fmt: skip
    assert pick_up(daemon.engine, vendors=daemon.vendors) == PickUp(), "a second pass: nothing"
    assert table(daemon) == rows, "rows are kept, as they were"
    assert deliveries(daemon) == [(doc, 1), (doc, 2)]


def test_a_field_said_twice_is_applied_in_order_and_rows_wait_for_a_result(make_daemon, tmp_path):
    daemon = make_daemon()
    doc = exported(daemon, tmp_path)
    fakes.SCRIPTS["a"].extend(["ok"] + ["processing"] * 30)  # the next one takes a while
    later = offer(daemon, "later.pdf", data=b"%PDF-1.4 later %%EOF")
    insert(
        daemon,
        {"document_id": doc, "field": "invoice_number", "value": "A-1"},
        {"document_id": later, "field": "invoice_number", "value": "L-1"},
        {"document_id": doc, "field": "invoice_number", "value": "A-2"},
    )
    assert pick_up(daemon.engine, vendors=daemon.vendors) == PickUp(applied=2, waiting=1)
    waiting = table(daemon)[1]
    assert waiting[3:] == ("pending", f"waiting: document {later} has no extraction to correct yet")
    assert deliveries(daemon) == [(doc, 1), (doc, 2), (doc, 3)]
    with daemon.engine.connect() as conn:
        value = conn.execute(
            text("SELECT value_text FROM docrelay_fields WHERE document_id = :d AND "
                 "field = 'invoice_number'"), {"d": doc}
        ).scalar()  # fmt: skip
    assert value == "A-2", "the later word wins"
    assert pick_up(daemon.engine, vendors=daemon.vendors) == PickUp(waiting=1)
    wait_until(lambda: (tmp_path / "out" / f"{later}.json").exists(), 15, what="later export")
    assert pick_up(daemon.engine, vendors=daemon.vendors) == PickUp(applied=1)
    assert table(daemon)[1][3:] == ("applied", None)


def test_a_failure_before_the_rows_are_marked_applies_nothing(make_daemon, tmp_path, monkeypatch):
    daemon = make_daemon()
    doc = exported(daemon, tmp_path)
    insert(daemon, {"document_id": doc, "field": "total_amount", "value": "99.00"})
    real = corrections._mark

    def store_gone(conn, rows, state, reason, done):
        if state == "applied":
            raise OperationalError("UPDATE docrelay_corrections", {}, Exception("disk I/O error"))
        real(conn, rows, state, reason, done)

    monkeypatch.setattr(corrections, "_mark", store_gone)
    with pytest.raises(OperationalError):
        pick_up(daemon.engine, vendors=daemon.vendors)
    assert table(daemon)[0][3] == "pending"
    assert deliveries(daemon) == [(doc, 1)], "the correction rolled back with its mark"
    with daemon.engine.connect() as conn:
        assert (
            conn.execute(text("SELECT COUNT(*) FROM feedback WHERE kind = 'correction'")).scalar()
            == 0
        )
    monkeypatch.setattr(corrections, "_mark", real)
    assert pick_up(daemon.engine, vendors=daemon.vendors) == PickUp(applied=1)
    assert pick_up(daemon.engine, vendors=daemon.vendors) == PickUp()
    assert deliveries(daemon) == [(doc, 1), (doc, 2)]


def test_the_daemon_picks_rows_up_and_one_process_holds_the_pickup(make_daemon, tmp_path):
    daemon = make_daemon(corrections_interval=0.2)
    doc = exported(daemon, tmp_path)
    insert(daemon, {"document_id": doc, "field": "invoice_number", "value": "ERP-1"})
    wait_until(lambda: table(daemon)[0][3] == "applied", 10, what="the row applied")
    export = tmp_path / "out" / f"{doc}.json"
    wait_until(lambda: json.loads(export.read_text())["version"] == 2, 10, what="version 2")
    assert json.loads(export.read_text())["fields"]["invoice_number"] == "ERP-1"
    with daemon.engine.begin() as conn:
        holder = conn.execute(
            text("SELECT owner FROM source_leases WHERE name = 'docrelay_corrections'")
        ).scalar()
        assert holder == daemon.owner
        conn.execute(  # as if another live process held it
            text("UPDATE source_leases SET owner = 'elsewhere:1:x', expires_at = :t "
                 "WHERE name = 'docrelay_corrections'"),
            {"t": (utcnow() + timedelta(minutes=5)).replace(tzinfo=None)},
        )  # fmt: skip
    insert(daemon, {"document_id": doc, "field": "invoice_number", "value": "ERP-2"})
    runs = daemon.job_counters.runs.get("corrections", 0)
    wait_until(lambda: daemon.job_counters.runs.get("corrections", 0) >= runs + 3, 10)
    assert table(daemon)[1][3] == "pending", "the lease's holder picks the rows up, not we"


def test_two_processes_picking_up_at_once_apply_each_row_once(make_daemon, tmp_path, store_url):
    if not store_url.startswith("postgresql"):
        pytest.skip("one process owns a SQLite store; this is about PostgreSQL's row locks")
    import threading

    from daemon.store import engine as store_engine

    daemon = make_daemon()
    doc = exported(daemon, tmp_path)
    insert(daemon, *({"document_id": doc, "field": "invoice_number", "value": f"N-{n}"}
                     for n in range(1, 9)))  # fmt: skip
    engines = [daemon.engine, store_engine.make_engine(store_url)]
    start = threading.Barrier(len(engines))
    done: list[PickUp] = []

    def one(engine) -> None:
        start.wait()
        done.append(pick_up(engine, vendors=daemon.vendors))

    threads = [threading.Thread(target=one, args=(e,)) for e in engines]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    engines[1].dispose()
    assert sum(d.applied for d in done) == 8 and sum(d.refused for d in done) == 0, done
    assert {r[3] for r in table(daemon)} == {"applied"}
    assert deliveries(daemon) == [(doc, v) for v in range(1, 10)], "each version made once"
    with daemon.engine.connect() as conn:
        corrected = conn.execute(
            text("SELECT COUNT(*) FROM events WHERE document_id = :d AND kind = 'corrected'"),
            {"d": doc},
        ).scalar()
    assert corrected == 8


def test_corrections_of_one_document_at_once_take_turns(make_daemon, tmp_path, store_url):
    if not store_url.startswith("postgresql"):
        pytest.skip("SQLite's write lock makes them take turns already")
    import threading

    from daemon.pipeline.feedback import correct

    daemon = make_daemon()
    doc = exported(daemon, tmp_path)
    start = threading.Barrier(6)
    errors: list[Exception] = []

    def one(n: int) -> None:
        start.wait()
        try:
            correct(daemon.engine, doc, {f"extra.note_{n}": f"T-{n}"}, origin="api")
        except Exception as exc:  # collected: the assertion below shows them
            errors.append(exc)

    threads = [threading.Thread(target=one, args=(n,)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    assert deliveries(daemon) == [(doc, v) for v in range(1, 8)], "each version made once"
