"""The intake sink's services to sources, on SQLite and PostgreSQL: unique items, unstored
rejections, state, account leases and health."""

from __future__ import annotations

import io
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import text

from connectors.base import IngestStatus, IntakeItem
from daemon import config as config_mod
from daemon.pipeline.intake import Intake
from daemon.store.blobs import BlobStore
from daemon.store.engine import ensure_schema, make_engine
from tests.invoices import one_page_pdf

PDF = one_page_pdf("Invoice 1")


@pytest.fixture
def make_intake(store_url, tmp_path):
    raw = {
        "store": {"url": store_url, "blob_dir": str(tmp_path / "blobs")},
        "web": {"enabled": False},
        "vendors": {"local": {"kind": "local"}},
        "routes": [
            {"name": "mail", "match": {"source": "cli"}, "vendor": "local"},
            {"match": {}, "vendor": "local"},
        ],
    }
    config = config_mod.validate(raw, Path("test.toml"))
    engine = make_engine(store_url)
    ensure_schema(engine)
    blobs = BlobStore(tmp_path / "blobs")
    blobs.prepare()
    made: list[Intake] = []

    def make(owner: str = "host:1:a") -> Intake:
        made.append(Intake(engine, blobs, config, owner=owner))
        return made[-1]

    yield make
    engine.dispose()


def item(ref: str, data: bytes = PDF, **extra) -> IntakeItem:
    @contextmanager
    def opener():
        yield io.BytesIO(data)

    return IntakeItem(
        source="mail",
        source_ref=ref,
        filename="a.pdf",
        open=opener,
        mime_type="application/pdf",
        **extra,
    )


def test_a_unique_item_is_recognised_even_after_its_release(make_intake):
    intake = make_intake()
    first = intake.ingest(item("<m1@x>/1", unique=True))
    assert first.status == IngestStatus.INGESTED
    intake.mark_released(first.document_id)
    intake.flush_releases()
    again = intake.ingest(item("<m1@x>/1", unique=True))
    assert (again.status, again.document_id) == (IngestStatus.ALREADY, first.document_id)
    # A folder path is not unique: after its release the same file is a new arrival.
    plain = intake.ingest(item("scan.pdf"))
    intake.mark_released(plain.document_id)
    intake.flush_releases()
    assert intake.ingest(item("scan.pdf")).status == IngestStatus.DUPLICATE


def test_a_rule_chooses_its_route_by_name(make_intake):
    intake = make_intake()
    outcome = intake.ingest(item("<m2@x>/1", route="mail"))
    with intake.engine.connect() as conn:
        route = conn.execute(
            text("SELECT route FROM documents WHERE id = :d"), {"d": outcome.document_id}
        ).scalar()
    assert route == "mail"


def test_unstored_rejections_are_recorded_once_for_unique_items(make_intake):
    intake = make_intake()
    big = item("<big@x>/message", unique=True, metadata={"size": 30_000_000})
    first = intake.reject_unstored(big, "message too large")
    second = intake.reject_unstored(big, "message too large")
    assert first.status == second.status == IngestStatus.REJECTED
    assert first.document_id == second.document_id
    with intake.engine.connect() as conn:
        row = conn.execute(
            text("SELECT state, error, metadata FROM docrelay_documents WHERE document_id = :d"),
            {"d": first.document_id},
        ).one()
    assert row.state == "rejected" and row.error == "message too large"
    assert "30000000" in str(row.metadata)


def test_state_round_trips_and_is_replaced(make_intake):
    intake = make_intake()
    assert intake.load_state("mail", "INBOX") is None
    intake.save_state("mail", "INBOX", {"uidvalidity": 7, "last_uid": 10})
    intake.save_state("mail", "INBOX", {"uidvalidity": 7, "last_uid": 12})
    assert intake.load_state("mail", "INBOX") == {"uidvalidity": 7, "last_uid": 12}
    assert intake.load_state("other", "INBOX") is None


def test_an_account_lease_is_held_by_one_process_until_dropped_or_expired(make_intake):
    import time

    one, two = make_intake("host:1:a"), make_intake("host:2:b")
    assert one.hold_lease("mailbox:acct", 30)
    assert one.hold_lease("mailbox:acct", 30), "renewal by the holder"
    assert not two.hold_lease("mailbox:acct", 30)
    one.drop_lease("mailbox:acct")
    assert two.hold_lease("mailbox:acct", 0.2)
    assert not one.hold_lease("mailbox:acct", 30)
    time.sleep(0.3)
    assert one.hold_lease("mailbox:acct", 30), "an expired lease can be taken over"


def test_health_is_recorded_and_cleared(make_intake):
    intake = make_intake()
    intake.report_health("mail", "auth_failed", "invalid_grant: token revoked")
    with intake.engine.connect() as conn:
        rows = conn.execute(text("SELECT name, state, reason FROM connector_health")).all()
    assert [tuple(r) for r in rows] == [("mail", "auth_failed", "invalid_grant: token revoked")]
    intake.report_health("mail", "ok")
    with intake.engine.connect() as conn:
        assert conn.execute(text("SELECT COUNT(*) FROM connector_health")).scalar() == 0


def test_r06_the_same_bytes_taken_at_once_are_sent_on_once(make_intake, store_url):
    """Two takers (or processes) ingest the same bytes under different names at the same
    moment: one document goes on to the vendor, the other is recorded as its duplicate."""
    from concurrent.futures import ThreadPoolExecutor

    intakes = [make_intake(f"host:{n}:a") for n in range(4)]
    data = one_page_pdf("Invoice raced")
    with ThreadPoolExecutor(4) as pool:
        outcomes = list(
            pool.map(lambda n: intakes[n].ingest(item(f"copy-{n}.pdf", data)), range(4))
        )
    statuses = sorted(o.status for o in outcomes)
    assert statuses == [IngestStatus.DUPLICATE] * 3 + [IngestStatus.INGESTED], statuses
    engine = make_engine(store_url)
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT duplicate_of FROM documents ORDER BY id")).scalars().all()
        sent = conn.execute(text("SELECT COUNT(*) FROM submissions")).scalar_one()
    engine.dispose()
    first = min(o.document_id for o in outcomes)
    assert rows == [None, first, first, first] and sent == 1
