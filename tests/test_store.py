"""The migrated schema equals the models, and the public views exist, on SQLite and PostgreSQL."""

from __future__ import annotations

from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, text

from daemon.store import engine as store_engine
from daemon.store.models import Base
from daemon.store.views import VIEWS


def test_r30_migrations_match_models_and_create_views(store_url):
    engine = store_engine.make_engine(store_url)
    store_engine.upgrade(engine)
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        diff = compare_metadata(context, Base.metadata)
        assert diff == []
        views = set(inspect(conn).get_view_names())
        assert set(VIEWS) <= views
        for name in VIEWS:
            conn.execute(text(f"SELECT * FROM {name}")).all()
    assert store_engine.current_revision(engine) == store_engine.head_revision(engine)
    store_engine.ensure_schema(engine)  # idempotent at head
    engine.dispose()


def test_downgrade_to_empty_and_back(tmp_path):
    engine = store_engine.make_engine(f"sqlite:///{tmp_path}/s.db")
    store_engine.upgrade(engine)
    from alembic import command

    command.downgrade(store_engine.alembic_config(engine), "base")
    with engine.connect() as conn:
        assert "documents" not in inspect(conn).get_table_names()
    store_engine.upgrade(engine)
    engine.dispose()


def test_pre_serialised_json_is_stored_once_not_as_a_string(store_url):
    from sqlalchemy import select

    from daemon.store.engine import RawJSON, ensure_schema, make_engine
    from daemon.store.models import SourceState, utcnow

    engine = make_engine(store_url)
    ensure_schema(engine)
    table = SourceState.__table__
    with engine.begin() as conn:
        conn.execute(
            table.insert().values(
                source="s", key="k", value=RawJSON('{"a": [1, 2]}'), updated_at=utcnow()
            )
        )
    with engine.connect() as conn:
        assert conn.execute(select(table.c.value)).scalar_one() == {"a": [1, 2]}
    engine.dispose()


def test_r27_waiting_times_move_back_with_a_clock_set_back(store_url):
    from datetime import timedelta

    from sqlalchemy import select

    from daemon.pipeline import ledger
    from daemon.store.engine import ensure_schema, make_engine
    from daemon.store.models import Document, utcnow

    engine = make_engine(store_url)
    ensure_schema(engine)
    now = utcnow()
    ahead, past = now + timedelta(minutes=61), now - timedelta(minutes=5)
    with engine.begin() as conn:
        documents = Document.__table__
        for due in (ahead, past):
            doc = conn.execute(
                documents.insert().returning(documents.c.id),
                {"sha256": "0" * 64, "filename": "f.pdf", "mime_type": "application/pdf",
                 "size_bytes": 1, "source": "cli", "metadata": {}, "received_at": now},
            ).scalar_one()  # fmt: skip
            conn.execute(
                ledger.submissions.insert().values(
                    document_id=doc, profile="p", vendor_kind="scripted", state="failed",
                    next_attempt_at=due, lease_owner="h:1:x", lease_expires_at=due,
                    vendor_data={}, destinations=[], created_at=now, updated_at=now,
                )
            )  # fmt: skip
        conn.execute(
            ledger.source_leases.insert().values(name="mail", owner="h:1:x", expires_at=ahead)
        )
        assert ledger.move_waiting_back(conn, 3600) == 3  # the two times ahead, the lease
    with engine.connect() as conn:
        sub = ledger.submissions
        rows = conn.execute(select(sub.c.next_attempt_at, sub.c.lease_expires_at)).all()
        lease = conn.execute(select(ledger.source_leases.c.expires_at)).scalar_one()
    assert sorted(rows) == [(past, past), (ahead - timedelta(hours=1),) * 2]
    assert lease == ahead - timedelta(hours=1)
    engine.dispose()


def test_r30_an_upgrade_from_0001_resumes_the_work_in_flight(tmp_path, store_url):
    """RELIABILITY 30: a store left by a release at revision 0001 with work in flight (one
    submission queued, one waiting to retry its upload after a crash) is upgraded by the new
    daemon at start, and both documents end exported."""
    from datetime import timedelta

    from sqlalchemy import MetaData

    from daemon.store.blobs import BlobStore
    from daemon.store.models import utcnow
    from tests.daemon_proc import DaemonProcess, wait_until, write_config
    from tests.invoices import random_spec, render_pdf

    engine = store_engine.make_engine(store_url)
    store_engine.upgrade(engine, "0001")
    blobs = BlobStore(tmp_path / "var" / "blobs")
    blobs.prepare()
    now = utcnow().replace(tzinfo=None)
    old = MetaData()
    with engine.begin() as conn:
        old.reflect(conn, only=["documents", "submissions"])
        documents, submissions = old.tables["documents"], old.tables["submissions"]
        for n, (state, extra) in enumerate([
            ("queued", {}),
            ("failed", {"resume_state": "uploading", "attempts": 1,
                        "next_attempt_at": now - timedelta(minutes=1),
                        "lease_owner": "oldhost:1:gone", "error": "TransientError: timeout",
                        "lease_expires_at": now - timedelta(minutes=2)}),
        ]):  # fmt: skip
            data = render_pdf(random_spec(40 + n))
            sha = blobs.put_bytes(data)
            doc = conn.execute(
                documents.insert().returning(documents.c.id),
                {"sha256": sha, "filename": f"old-{n}.pdf", "mime_type": "application/pdf",
                 "size_bytes": len(data), "pages": 1, "source": "scans",
                 "source_ref": f"old-{n}.pdf", "metadata": {}, "received_at": now,
                 "released_at": now, "route": "#0", "intake_state": "accepted"},
            ).scalar_one()  # fmt: skip
            conn.execute(
                submissions.insert(),
                {"document_id": doc, "profile": "local", "vendor_kind": "local",
                 "role": "primary", "state": state, "attempts": 0, "polls": 0,
                 "vendor_data": {}, "destinations": ["outbox"], "created_at": now,
                 "updated_at": now, **extra},
            )  # fmt: skip
    engine.dispose()
    daemon = DaemonProcess(write_config(tmp_path, store_url=store_url)).start()
    try:
        outbox = tmp_path / "outbox"
        wait_until(lambda: len(list(outbox.glob("*.json"))) == 2, 30, what="both exports")
    finally:
        assert daemon.stop() == 0
    engine = store_engine.make_engine(store_url)
    assert store_engine.current_revision(engine) == store_engine.head_revision(engine)
    with engine.connect() as conn:
        states = conn.execute(text("SELECT state FROM submissions ORDER BY id")).scalars().all()
    assert states == ["done", "done"]
    engine.dispose()


def test_r26_sqlite_commits_are_synced_before_they_return(tmp_path):
    """RELIABILITY 26: sources release files and mail right after the intake commit, so a
    commit must survive a power cut, not only a crash of the process (synchronous=FULL)."""
    engine = store_engine.make_engine(f"sqlite:///{tmp_path}/s.db")
    with engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 2  # FULL
    engine.dispose()


def test_the_writer_lock_serves_a_first_in_line_waiter_before_the_others():
    """Intake's transactions go before the vendor workers' waiting at the same time."""
    import threading
    import time

    from daemon.store.engine import WriterLock

    lock = WriterLock()
    order: list[str] = []
    lock.acquire()
    lock.acquire()  # re-entrant for its holder
    waiting = []
    for name, first in (("worker-1", False), ("worker-2", False), ("intake", True)):

        def take(name: str = name, first: bool = first) -> None:
            lock.acquire(first=first)
            order.append(name)
            lock.release()

        thread = threading.Thread(target=take)
        thread.start()
        waiting.append(thread)
        time.sleep(0.05)  # each is waiting before the next comes
    lock.release()
    assert order == [], "still held once"
    lock.release()
    for thread in waiting:
        thread.join(5)
    assert order[0] == "intake"
    assert sorted(order[1:]) == ["worker-1", "worker-2"]
    with pytest.raises(RuntimeError):
        lock.release()


def test_only_relaxed_commits_skip_the_fsync(tmp_path):
    """SQLite: every write commit is durable (synchronous=FULL) but those made through
    ``relaxed``, whose loss in a power cut only repeats safe work (NORMAL = 1, FULL = 2)."""
    from daemon.store.engine import make_engine, relaxed

    engine = make_engine(f"sqlite:///{tmp_path}/s.db")
    engine.dispose()  # one pooled connection is enough to see the level change on it

    def level(of: Any) -> int:
        with of.begin() as conn:
            return conn.exec_driver_sql("PRAGMA synchronous").scalar_one()

    assert [level(engine), level(relaxed(engine)), level(engine)] == [2, 1, 2]
    engine.dispose()


def test_relaxed_commits_on_postgresql_do_not_wait_for_the_wal(pg_url):
    """PostgreSQL: ``relaxed`` transactions run with ``synchronous_commit = off``; the others,
    and the connection after them, keep the server's setting."""
    from daemon.store.engine import make_engine, relaxed

    engine = make_engine(pg_url, pool_size=1)

    def setting(of: Any) -> str:
        with of.begin() as conn:
            return conn.exec_driver_sql("SHOW synchronous_commit").scalar_one()

    assert [setting(engine), setting(relaxed(engine)), setting(engine)] == ["on", "off", "on"]
    engine.dispose()
