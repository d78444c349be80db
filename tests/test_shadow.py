"""Shadow profiles (a route's ``shadow``): the same document goes to other vendors for
comparison only. Config checks; intake queues the shadows with the primary; the public views,
corrections and exports keep to the primary's result however late a shadow finishes;
``docrelay_field_agreement`` on SQLite and PostgreSQL; and end to end with the real daemon,
two Rossum emulators, one of them wrong on purpose."""

from __future__ import annotations

import hashlib
from collections import Counter
from datetime import date
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import insert, select, text

from connectors.base import DOCUMENT_FIELDS
from connectors.emulation.wrongness import WrongnessSettings, verdict
from connectors.registry import available
from daemon import config as config_mod
from daemon.pipeline import ledger
from daemon.pipeline.feedback import correct
from daemon.runtime import Daemon
from daemon.store import engine as store_engine
from daemon.store.models import Extraction, FeedbackKind, FieldRow, utcnow
from daemon.store.views import VIEWS
from tests import fakes
from tests.daemon_proc import (
    DaemonProcess,
    EmulatorProcess,
    drop_invoices,
    free_port,
    query,
    wait_until,
    write_config,
)
from tests.test_pipeline import offer

# --------------------------------------------------------------------------- configuration


def problems(raw_routes: list[dict[str, object]], tmp_path: Path) -> list[str]:
    raw = {
        "vendors": {"local": {"kind": "local"}, "second": {"kind": "local"}},
        "routes": raw_routes,
    }
    with pytest.raises(config_mod.ConfigError) as info:
        config_mod.validate(raw, tmp_path / "c.toml")
    return [f"{p.key}: {p.message}" for p in info.value.problems]


def test_shadow_profiles_must_exist_differ_from_the_vendor_and_not_repeat(tmp_path):
    assert problems([{"vendor": "local", "shadow": ["nope"]}], tmp_path) == [
        "routes[0].shadow: no vendor profile named 'nope'"
    ]
    assert problems([{"vendor": "local", "shadow": ["local"]}], tmp_path) == [
        "routes[0].shadow: 'local' is the route's own vendor"
    ]
    assert problems(
        [{"vendor": "local"}, {"vendor": "local", "shadow": ["second", "second"]}], tmp_path
    ) == ["routes[1].shadow: 'second' is named more than once"]
    config = config_mod.validate(
        {
            "vendors": {"local": {"kind": "local"}, "second": {"kind": "local"}},
            "routes": [{"vendor": "local", "shadow": ["second"], "shadow_feedback": True}],
        },
        tmp_path / "c.toml",
    )
    assert config.routes[0].shadow == ["second"] and config.routes[0].shadow_feedback
    assert config_mod.validate({}, tmp_path / "c.toml").routes == []


# --------------------------------------------------------------------------- in-process daemon


@pytest.fixture
def make_daemon(tmp_path, monkeypatch, store_url):
    fakes.install(monkeypatch)
    started: list[Daemon] = []
    told: list[tuple[int, str]] = []
    monkeypatch.setattr(
        Daemon, "tell_source_rejected", lambda self, doc, reason: told.append((doc, reason))
    )

    def make(*, shadow_feedback: bool = False) -> Daemon:
        raw = {
            "store": {"url": store_url, "blob_dir": str(tmp_path / "blobs")},
            "web": {"enabled": False},
            "pipeline": {"backoff_initial": 0.05, "backoff_max": 0.2, "corrections_interval": 0},
            "vendors": {"a": {"kind": "scripted"}, "b": {"kind": "scripted"}},
            "destinations": {"out": {"kind": "folder", "path": str(tmp_path / "out")}},
            "routes": [
                {
                    "vendor": "a",
                    "shadow": ["b"],
                    "shadow_feedback": shadow_feedback,
                    "destinations": ["out"],
                }
            ],
        }
        daemon = Daemon(config_mod.validate(raw, tmp_path / "test.toml"))
        daemon.open()
        daemon.start()
        daemon.told = told  # type: ignore[attr-defined]
        started.append(daemon)
        return daemon

    yield make
    for daemon in started:
        daemon.stop()
    available.cache_clear()


def rows(daemon: Daemon, sql: str, **params: object) -> list[dict]:
    with daemon.engine.connect() as conn:
        return [dict(r) for r in conn.execute(text(sql), params).mappings()]


def submissions_of(daemon: Daemon, doc: int) -> dict[str, dict]:
    sub = ledger.submissions
    with daemon.engine.connect() as conn:
        found = conn.execute(select(sub).where(sub.c.document_id == doc)).mappings().all()
    return {row["role"]: dict(row) for row in found}


def both_done(daemon: Daemon, doc: int) -> dict[str, dict]:
    return wait_until(
        lambda: (
            (s := submissions_of(daemon, doc))
            and all(r["state"] in ("done", "rejected") for r in s.values())
            and len(s) == 2
            and s
        ),
        15,
        what="primary and shadow finished",
    )


def test_intake_queues_a_shadow_beside_the_primary_and_views_keep_the_primary(
    make_daemon, tmp_path
):
    fakes.SCRIPTS["b"].extend(["ok", "processing:0.6"])  # the shadow finishes later
    fakes.SCRIPTS["b:fetch"].append("total:13.00")  # and disagrees on the total
    daemon = make_daemon()
    doc = offer(daemon, "inv.pdf", data=b"%PDF-1.4 shadowed %%EOF")
    subs = both_done(daemon, doc)
    primary, shadow = subs["primary"], subs["shadow"]
    assert (primary["profile"], primary["destinations"]) == ("a", ["out"])
    assert (shadow["profile"], shadow["destinations"], shadow["fallback"]) == ("b", [], None)
    assert shadow["shadow_feedback"] in (False, 0) and shadow["state"] == "done"
    assert shadow["completed_at"] > primary["completed_at"]
    queued = rows(daemon, "SELECT message FROM events WHERE kind = 'queued' ORDER BY id")
    assert [q["message"].split(" via ")[0] for q in queued] == [
        "primary profile a",
        "shadow profile b",
    ]

    documents = rows(daemon, "SELECT * FROM docrelay_documents")
    assert len(documents) == 1
    assert (documents[0]["vendor"], documents[0]["submission_id"]) == ("a", primary["id"])
    assert documents[0]["state"] == "done"
    fields = rows(daemon, "SELECT * FROM docrelay_fields ORDER BY field")
    assert {f["submission_id"] for f in fields} == {primary["id"]}
    assert {f["field"]: f["value_text"] for f in fields}["total_amount"] == "12.50"
    invoice = rows(daemon, "SELECT * FROM docrelay_invoices")[0]
    assert (invoice["vendor"], Decimal(str(invoice["total_amount"]))) == ("a", Decimal("12.50"))
    # exported once, by the primary; nothing for the shadow, and nothing queued for b
    wait_until((tmp_path / "out" / f"{doc}.json").exists, 10, what="the primary's export")
    assert [p.name for p in (tmp_path / "out").iterdir()] == [f"{doc}.json"]
    deliveries = rows(daemon, "SELECT submission_id FROM deliveries")
    wait_until(lambda: rows(daemon, "SELECT state FROM deliveries")[0]["state"] == "delivered", 10)
    assert [d["submission_id"] for d in deliveries] == [primary["id"]]
    assert rows(daemon, "SELECT * FROM feedback WHERE profile = 'b'") == []
    assert not [c for c in fakes.CALLS["b"] if c[0] in ("report", "feedback")]

    agreement = {r["field"]: r for r in rows(daemon, "SELECT * FROM docrelay_field_agreement")}
    assert set(agreement) == {"invoice_number", "total_amount"}
    assert agreement["invoice_number"]["agreement"] == "agree"
    total = agreement["total_amount"]
    assert (total["agreement"], total["primary_value"], total["shadow_value"]) == (
        "disagree",
        "12.50",
        "13.00",
    )
    assert (total["primary_profile"], total["shadow_profile"]) == ("a", "b")
    assert (total["primary_submission_id"], total["shadow_submission_id"]) == (
        primary["id"],
        shadow["id"],
    )

    # docrelay correct acts on the primary's result; the shadow's stays as b gave it
    changed = correct(daemon.engine, doc, {"total_amount": "14.00"}, vendors=daemon.vendors)
    assert changed[0] == "total_amount: 12.50 → 14.00", changed
    daemon.wake_all()
    by_extraction = rows(
        daemon,
        "SELECT x.submission_id, f.value_text, f.corrected FROM fields f "
        "JOIN extractions x ON x.id = f.extraction_id WHERE f.name = 'total_amount'",
    )
    assert {(r["submission_id"], r["value_text"], bool(r["corrected"])) for r in by_extraction} == {
        (primary["id"], "14.00", True),
        (shadow["id"], "13.00", False),
    }
    feedback = rows(daemon, "SELECT submission_id, profile FROM feedback WHERE kind = :k",
                    k=FeedbackKind.CORRECTION)  # fmt: skip
    assert feedback == [{"submission_id": primary["id"], "profile": "a"}]
    total = rows(daemon, "SELECT * FROM docrelay_field_agreement WHERE field = 'total_amount'")[0]
    assert (total["primary_value"], total["agreement"]) == ("14.00", "disagree")
    assert total["primary_corrected"] in (True, 1)
    # the corrected result is exported again (for the primary only), b never hears of it
    wait_until(
        lambda: {r["version"] for r in rows(daemon, "SELECT version FROM deliveries")} == {1, 2},
        10,
    )
    assert {d["submission_id"] for d in rows(daemon, "SELECT * FROM deliveries")} == {primary["id"]}
    wait_until(lambda: [c for c in fakes.CALLS["a"] if c[0] == "feedback"], 10, what="a's feedback")
    assert not [c for c in fakes.CALLS["b"] if c[0] == "feedback"]
    # the document's history labels the shadow's steps
    from daemon.pipeline.admin import history

    steps = history(daemon.engine, doc)
    assert {s["role"] for s in steps if s["submission_id"] == shadow["id"]} == {"shadow"}
    assert {s["role"] for s in steps if s["submission_id"] == primary["id"]} == {"primary"}


def test_with_shadow_feedback_the_correction_goes_to_the_shadow_too(make_daemon):
    fakes.SCRIPTS["b:fetch"].append("total:13.00")
    daemon = make_daemon(shadow_feedback=True)
    doc = offer(daemon, "inv.pdf", data=b"%PDF-1.4 shadow feedback %%EOF")
    subs = both_done(daemon, doc)
    assert subs["shadow"]["shadow_feedback"] in (True, 1)
    assert subs["primary"]["shadow_feedback"] in (False, 0)
    wait_until(lambda: rows(daemon, "SELECT * FROM deliveries WHERE state = 'delivered'"), 10)
    correct(
        daemon.engine, doc, {"total_amount": "12.50"}, confirm=["invoice_number"],
        vendors=daemon.vendors,
    )  # fmt: skip
    daemon.wake_all()
    sent = wait_until(
        lambda: [c for c in fakes.CALLS["b"] if c[0] == "feedback"], 10, what="b's feedback"
    )
    kinds = {c.field: (c.kind, c.old_value, c.value) for c in sent[0][1]}
    assert kinds == {
        "total_amount": ("correct", "13.00", "12.50"),  # b was wrong
        "invoice_number": ("confirm", f"INV-{doc}", f"INV-{doc}"),  # b was right
    }
    assert [c for c in fakes.CALLS["a"] if c[0] == "feedback"]
    # the shadow's own result is unchanged, and still disagrees with the primary
    total = rows(daemon, "SELECT * FROM docrelay_field_agreement WHERE field = 'total_amount'")
    assert (total[0]["shadow_value"], total[0]["agreement"]) == ("13.00", "disagree")
    # no export for the shadow, no new version for the primary (its value was confirmed)
    assert {d["submission_id"] for d in rows(daemon, "SELECT * FROM deliveries")} == {
        subs["primary"]["id"]
    }


def test_a_shadow_rejection_never_reaches_the_source(make_daemon, tmp_path):
    fakes.SCRIPTS["b"].append("terminal")
    daemon = make_daemon()
    doc = offer(daemon, "inv.pdf", data=b"%PDF-1.4 rejected by the shadow %%EOF")
    subs = both_done(daemon, doc)
    assert (subs["primary"]["state"], subs["shadow"]["state"]) == ("done", "rejected")
    wait_until((tmp_path / "out" / f"{doc}.json").exists, 10, what="the primary's export")
    document = rows(daemon, "SELECT state, vendor, error FROM docrelay_documents")[0]
    assert document == {"state": "done", "vendor": "a", "error": None}
    assert daemon.told == []  # type: ignore[attr-defined]
    assert rows(daemon, "SELECT * FROM docrelay_field_agreement") == []


# --------------------------------------------------------------------------- the agreement view


def _document(conn, name: str) -> int:
    return conn.execute(
        insert(ledger.documents).returning(ledger.documents.c.id),
        {"sha256": hashlib.sha256(name.encode()).hexdigest(), "filename": name,
         "mime_type": "application/pdf", "size_bytes": 1, "source": "cli", "metadata": {},
         "received_at": utcnow(), "intake_state": "accepted"},
    ).scalar_one()  # fmt: skip


def _submission(conn, doc: int, profile: str, role: str) -> int:
    now = utcnow()
    return conn.execute(
        insert(ledger.submissions).returning(ledger.submissions.c.id),
        {"document_id": doc, "profile": profile, "vendor_kind": "scripted", "role": role,
         "state": "done", "attempts": 0, "polls": 0, "vendor_data": {}, "destinations": [],
         "created_at": now, "updated_at": now, "completed_at": now},
    ).scalar_one()  # fmt: skip


def _extraction(conn, doc: int, sub: int, profile: str, fields: dict[str, dict]) -> int:
    x = conn.execute(
        insert(Extraction.__table__).returning(Extraction.__table__.c.id),
        {"submission_id": sub, "document_id": doc, "vendor": profile, "raw": {},
         "normalized_at": utcnow(), "version": 1, "quality": {}},
    ).scalar_one()  # fmt: skip
    for name, values in fields.items():
        conn.execute(
            insert(FieldRow.__table__),
            {"extraction_id": x, "document_id": doc, "name": name, "corrected": False,
             "value_text": None, "value_number": None, "value_date": None, **values},
        )  # fmt: skip
    return x


def test_agreement_compares_normalised_values_of_each_latest_extraction(engine):
    with engine.begin() as conn:
        doc = _document(conn, "one.pdf")
        primary = _submission(conn, doc, "a", "primary")
        shadow = _submission(conn, doc, "b", "shadow")
        other = _submission(conn, doc, "c", "shadow")
        _extraction(conn, doc, primary, "a", {"invoice_number": {"value_text": "OLD"}})
        _extraction(conn, doc, shadow, "b", {"invoice_number": {"value_text": "OLDER"}})
        _extraction(conn, doc, primary, "a", {
            "invoice_number": {"value_text": "INV-1", "confidence": 0.9},
            "total_amount": {"value_text": "12.5", "value_number": Decimal("12.5")},
            "issue_date": {"value_text": "2026-03-01", "value_date": date(2026, 3, 1)},
            "supplier_name": {"value_text": "ACME GmbH"},
            "due_date": {"value_text": "2026-04-01", "value_date": date(2026, 4, 1)},
            "currency": {"value_text": "EUR"},
        })  # fmt: skip
        _extraction(conn, doc, shadow, "b", {  # finished after the primary
            "invoice_number": {"value_text": "inv-1 ", "confidence": 0.4},
            "total_amount": {"value_text": "12.50", "value_number": Decimal("12.50")},
            "issue_date": {"value_text": "2026-03-02", "value_date": date(2026, 3, 2)},
            "supplier_name": {"value_text": "  acme gmbh"},
            "tax_amount": {"value_text": "2.00", "value_number": Decimal("2.00")},
            "currency": {"value_text": None},  # said absent: the same as missing
        })  # fmt: skip
        _extraction(conn, doc, other, "c", {"total_amount": {
            "value_text": "13.00", "value_number": Decimal("13.00")}})  # fmt: skip
        # a document whose shadow has no result yet has no rows
        waiting = _document(conn, "two.pdf")
        _extraction(
            conn,
            waiting,
            _submission(conn, waiting, "a", "primary"),
            "a",
            {"total_amount": {"value_text": "1.00", "value_number": Decimal("1")}},
        )
        _submission(conn, waiting, "b", "shadow")
    with engine.connect() as conn:
        found = conn.execute(
            text("SELECT * FROM docrelay_field_agreement ORDER BY shadow_profile, field")
        ).mappings().all()  # fmt: skip
        documents = conn.execute(text("SELECT * FROM docrelay_documents ORDER BY 1")).mappings()
        assert [(d["vendor"], d["submission_id"]) for d in documents] == [
            ("a", primary), ("a", primary + 3)]  # fmt: skip
        invoices = conn.execute(text("SELECT * FROM docrelay_invoices ORDER BY 1")).mappings()
        first = next(iter(invoices))
        assert (first["invoice_number"], first["tax_amount"]) == ("INV-1", None)
    with engine.connect() as conn:  # README's example query runs as printed
        readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
        example = readme.split("FROM docrelay_field_agreement\n", 1)[0].rsplit("```sql\n", 1)[1]
        example += (
            "FROM docrelay_field_agreement\n"
            + readme.split("FROM docrelay_field_agreement\n", 1)[1].split(";", 1)[0]
        )
        rates = {(r[0], r[1]): float(r[2]) for r in conn.execute(text(example))}
    assert rates[("b", "total_amount")] == 1.0 and rates[("c", "total_amount")] == 0.0
    got = {(r["shadow_profile"], r["field"]): r["agreement"] for r in found}
    assert got == {
        ("b", "currency"): "shadow_missing",
        ("b", "due_date"): "shadow_missing",
        ("b", "invoice_number"): "agree",
        ("b", "issue_date"): "disagree",
        ("b", "supplier_name"): "agree",
        ("b", "tax_amount"): "primary_missing",
        ("b", "total_amount"): "agree",
        ("c", "currency"): "shadow_missing",
        ("c", "due_date"): "shadow_missing",
        ("c", "invoice_number"): "shadow_missing",
        ("c", "issue_date"): "shadow_missing",
        ("c", "supplier_name"): "shadow_missing",
        ("c", "total_amount"): "disagree",
    }
    number = next(r for r in found if r["shadow_profile"] == "b" and r["field"] == "invoice_number")
    assert (number["primary_value"], number["shadow_value"]) == ("INV-1", "inv-1 ")
    assert (number["primary_confidence"], number["shadow_confidence"]) == (0.9, 0.4)
    assert {r["document_id"] for r in found} == {doc}
    assert {r["primary_profile"] for r in found} == {"a"}


def test_migrated_views_are_the_ones_views_py_defines(tmp_path):
    """0009 froze the views it changed: on a fresh SQLite store they read as views.py says."""
    engine = store_engine.make_engine(f"sqlite:///{tmp_path}/s.db")
    store_engine.upgrade(engine)
    with engine.connect() as conn:
        stored = dict(
            conn.execute(text("SELECT name, sql FROM sqlite_master WHERE type = 'view'")).all()
        )
    engine.dispose()
    for name in ("docrelay_documents", "docrelay_fields", "docrelay_invoices",
                 "docrelay_line_items", "docrelay_field_agreement"):  # fmt: skip
        assert stored[name] == f"CREATE VIEW {name} AS {VIEWS[name].strip()}", name


# --------------------------------------------------------------------------- end to end

WRONG = WrongnessSettings(wrong_rate=0.3, miss_rate=0.1, wrong_seed=11)
COUNT = 20


def test_a_wrong_shadow_vendor_is_compared_never_exported(tmp_path):
    root = tmp_path
    right = EmulatorProcess("rossum", log=root / "right.log")
    wrong = EmulatorProcess(
        "rossum", "--wrong-rate", str(WRONG.wrong_rate), "--miss-rate", str(WRONG.miss_rate),
        "--wrong-seed", str(WRONG.wrong_seed), log=root / "wrong.log",
    )  # fmt: skip
    daemon = None
    try:
        blocks = right.vendor_toml("rossum_main", concurrency=4, poll_interval=0.3)
        blocks += wrong.vendor_toml("rossum_shadow", concurrency=4, poll_interval=0.3)
        extra = 'shadow = ["rossum_shadow"]\n' + blocks
        config = write_config(root, port=free_port(), extra=extra, vendor="rossum_main")
        daemon = DaemonProcess(config).start()
        drop_invoices(root / "inbox", COUNT, prefix="shadowed", first_seed=900)

        def finished() -> list:
            done = query(root, "SELECT role, state FROM submissions WHERE state = 'done'")
            return done if len(done) == 2 * COUNT else []

        wait_until(finished, 120, interval=0.5, what="every primary and shadow done")
        wait_until(lambda: len(list((root / "outbox").glob("*.json"))) == COUNT, 30,
                   what="the primaries' exports")  # fmt: skip
        subs = query(root, "SELECT * FROM submissions")
        assert sorted((s["role"], s["profile"]) for s in subs) == sorted(
            [("primary", "rossum_main")] * COUNT + [("shadow", "rossum_shadow")] * COUNT
        )
        shadows = {s["id"] for s in subs if s["role"] == "shadow"}
        deliveries = query(root, "SELECT * FROM deliveries")
        assert len(deliveries) == COUNT and not {d["submission_id"] for d in deliveries} & shadows
        assert not query(root, "SELECT * FROM feedback WHERE profile = 'rossum_shadow'")
        # nothing at the wrong emulator was marked exported (no export status sent there)
        wait_until(lambda: {a["status"] for a in right.annotations()} == {"exported"}, 30,
                   what="the primary told of each export")  # fmt: skip
        statuses = {a["status"] for a in wrong.annotations()}
        assert len(wrong.annotations()) == COUNT and "exported" not in statuses, statuses

        documents = query(root, "SELECT * FROM docrelay_documents")
        assert {d["vendor"] for d in documents} == {"rossum_main"}
        assert {d["state"] for d in documents} == {"done"}
        fields = query(root, "SELECT * FROM docrelay_fields")
        assert {f["vendor"] for f in fields} == {"rossum_main"}

        sha = {d["document_id"]: d["sha256"] for d in documents}
        rows = query(root, "SELECT * FROM docrelay_field_agreement")
        assert {r["document_id"] for r in rows} == set(sha)
        expected = {"right": "agree", "wrong": "disagree", "missed": "shadow_missing"}
        made_wrong = 0
        for row in rows:
            if row["field"] not in DOCUMENT_FIELDS:  # extras: the engine leaves them alone
                assert row["agreement"] == "agree", row
                continue
            said = verdict(WRONG, sha[row["document_id"]], row["field"])
            assert row["agreement"] == expected[said], (row, said)
            made_wrong += said != "right"
        seen = Counter(r["agreement"] for r in rows)
        assert seen["disagree"] and seen["shadow_missing"] and seen["agree"], seen
        assert made_wrong >= COUNT // 2, "the wrong emulator was wrong about enough fields"
        assert not [r for r in rows if r["agreement"] == "primary_missing"]
    finally:
        if daemon is not None:
            assert daemon.stop() == 0
        right.stop()
        wrong.stop()
