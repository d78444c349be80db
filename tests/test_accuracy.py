"""Vendor accuracy (``docrelay_field_judgements``, ``docrelay_vendor_accuracy``, ``docrelay
report accuracy``): hand-made rows on SQLite and PostgreSQL, the real ``correct`` keeping the
vendor's answer, the CLI table and CSV."""

from __future__ import annotations

import csv
import io
import subprocess
import sys
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from lxml import html as lxml_html
from sqlalchemy import insert, text

from daemon import accuracy, cli
from daemon.pipeline import ledger
from daemon.pipeline.feedback import correct
from daemon.store.engine import ensure_schema, make_engine
from daemon.store.models import Delivery, Document, Extraction, FieldRow, Submission

T0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)


class Store:
    """Hand-made rows: documents, submissions, extractions and fields as the pipeline makes."""

    def __init__(self, url: str) -> None:
        self.engine = make_engine(url)
        ensure_schema(self.engine)
        self._n = 0

    def document(self) -> int:
        self._n += 1
        with self.engine.begin() as conn:
            return conn.execute(
                insert(Document.__table__).returning(Document.__table__.c.id),
                {"sha256": f"{self._n:064d}", "filename": f"{self._n}.pdf",
                 "mime_type": "application/pdf", "size_bytes": 1, "source": "t",
                 "received_at": T0},
            ).scalar_one()  # fmt: skip

    def result(
        self,
        document_id: int,
        profile: str,
        values: dict[str, tuple[str, float]],
        *,
        role: str = "primary",
    ) -> int:
        """A submission of ``profile`` with one normalised extraction holding ``values``
        (field → (text, confidence)); returns the submission id."""
        from connectors.normalize import parse_field_strictly

        with self.engine.begin() as conn:
            sub = conn.execute(
                insert(Submission.__table__).returning(Submission.__table__.c.id),
                {"document_id": document_id, "profile": profile, "vendor_kind": "fake",
                 "role": role, "state": "done"},
            ).scalar_one()  # fmt: skip
            ext = conn.execute(
                insert(Extraction.__table__).returning(Extraction.__table__.c.id),
                {"submission_id": sub, "document_id": document_id, "vendor": profile, "raw": {},
                 "normalized_at": T0},
            ).scalar_one()  # fmt: skip
            for name, (value, conf) in values.items():
                parsed = parse_field_strictly(name, value)
                conn.execute(
                    insert(FieldRow.__table__),
                    {"extraction_id": ext, "document_id": document_id, "name": name,
                     "value_text": parsed.value_text, "value_number": parsed.value_number,
                     "value_date": parsed.value_date, "confidence": conf, "raw_text": value},
                )  # fmt: skip
        return sub

    def posted(self, document_id: int, submission_id: int, at: datetime = T0) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                insert(Delivery.__table__),
                {"document_id": document_id, "submission_id": submission_id,
                 "extraction_id": 1, "destination": "erp", "idempotency_key": f"k{document_id}",
                 "state": "delivered", "outcome": "posted", "outcome_at": at},
            )  # fmt: skip

    def judgements(self) -> list[tuple]:
        with self.engine.connect() as conn:
            return [
                tuple(r)
                for r in conn.execute(
                    text(
                        "SELECT document_id, profile, field, verdict, confidence "
                        "FROM docrelay_field_judgements ORDER BY document_id, profile, field"
                    )
                )
            ]

    def accuracy_view(self) -> dict[tuple[str, str], dict]:
        with self.engine.connect() as conn:
            rows = conn.execute(text("SELECT * FROM docrelay_vendor_accuracy")).mappings()
            return {(r["profile"], r["field"]): dict(r) for r in rows}


@pytest.fixture
def store(store_url):
    s = Store(store_url)
    yield s
    s.engine.dispose()


def test_a_document_without_a_truth_is_not_judged(store):
    doc = store.document()
    store.result(doc, "alpha", {"total_amount": ("10.00", 0.9)})
    assert store.judgements() == []
    assert accuracy.accuracy(store.engine).empty


def test_posted_values_judge_right_wrong_and_missed_normalised(store):
    doc = store.document()
    # The primary's result fell short (it had the total wrong and missed the date): the
    # fallback's result is the document's; the primary's own answers count too.
    store.result(
        doc, "beta", {"total_amount": ("1234.00", 0.4), "supplier_name": ("acme gmbh", 0.95)}
    )
    primary = store.result(
        doc, "alpha",
        {"total_amount": ("1,234.50", 0.9), "issue_date": ("2026-11-30", 0.8),
         "supplier_name": ("  ACME GmbH ", 0.7), "invoice_number": ("INV-1", 0.6)},
        role="fallback",
    )  # fmt: skip
    store.posted(doc, primary)
    # The ERP read the invoice number differently: its value becomes the truth.
    with store.engine.begin() as conn:
        from daemon.pipeline.feedback import apply_correction

        apply_correction(conn, doc, {"invoice_number": "INV-2"}, origin="erp:erp")
    assert store.judgements() == [
        (doc, "alpha", "invoice_number", "wrong", 0.6),
        (doc, "alpha", "issue_date", "right", 0.8),
        (doc, "alpha", "supplier_name", "right", 0.7),
        (doc, "alpha", "total_amount", "right", 0.9),
        (doc, "beta", "invoice_number", "missed", None),
        (doc, "beta", "issue_date", "missed", None),
        (doc, "beta", "supplier_name", "right", 0.95),
        (doc, "beta", "total_amount", "wrong", 0.4),
    ]


def test_a_correction_is_not_counted_as_the_vendors_answer(store):
    """``correct`` changes the extraction in place; the vendor's own value is kept, so the
    corrected value (or one added) never counts as the vendor's."""
    docs = [store.document() for _ in range(4)]
    for doc in docs:
        store.result(
            doc, "alpha", {"total_amount": ("100.00", 0.9), "due_date": ("2026-12-31", 0.5)}
        )
    correct(store.engine, docs[0], {"total_amount": "110.00"})  # wrong
    correct(store.engine, docs[1], {"total_amount": "110.00"})
    correct(store.engine, docs[1], {"total_amount": "120.00"})  # corrected twice: still wrong
    correct(store.engine, docs[2], {"invoice_number": "X-1"}, confirm=["total_amount"])  # added
    correct(store.engine, docs[3], {"due_date": ""})  # absent: no truth for it
    got = {(d, f): v for d, _p, f, v, _c in store.judgements()}
    assert got == {
        (docs[0], "total_amount"): "wrong", (docs[0], "due_date"): "right",
        (docs[1], "total_amount"): "wrong", (docs[1], "due_date"): "right",
        (docs[2], "total_amount"): "right", (docs[2], "due_date"): "right",
        (docs[2], "invoice_number"): "missed",
        (docs[3], "total_amount"): "right",
    }  # fmt: skip
    view = store.accuracy_view()
    total = view[("alpha", "total_amount")]
    assert (total["documents"], total["right_count"], total["wrong_count"]) == (4, 2, 2)
    assert float(total["right_share"]) == pytest.approx(0.5)
    assert float(total["avg_confidence_wrong"]) == pytest.approx(0.9)
    assert view[("alpha", "invoice_number")]["missed_count"] == 1
    assert float(view[("alpha", "invoice_number")]["missed_share"]) == pytest.approx(1.0)


def test_a_shadow_result_is_judged_but_is_not_the_truth(store):
    doc = store.document()
    primary = store.result(doc, "alpha", {"total_amount": ("50.00", 0.9)})
    store.result(doc, "gamma", {"total_amount": ("55.00", 0.99)}, role="shadow")  # newer
    store.posted(doc, primary)
    assert store.judgements() == [
        (doc, "alpha", "total_amount", "right", 0.9),
        (doc, "gamma", "total_amount", "wrong", 0.99),
    ]


def test_the_report_matches_the_view_and_filters_by_when_the_truth_came(store):
    early, late = store.document(), store.document()
    for doc, at in ((early, T0), (late, T0 + timedelta(days=3))):
        sub = store.result(doc, "alpha", {"total_amount": ("1.00", 0.97), "currency": ("EUR", 0.3)})
        store.posted(doc, sub, at)
    with store.engine.begin() as conn:
        ledger.event(conn, actor="cli", kind="corrected", document_id=early, message="x",
                     at=T0 + timedelta(days=1))  # fmt: skip
    report = accuracy.accuracy(store.engine)
    view = store.accuracy_view()
    for item in report.fields:
        row = view[(item.profile, item.field)]
        assert item.documents == row["documents"] == 2
        assert item.counts["right"] == row["right_count"]
    later = accuracy.accuracy(store.engine, (T0 + timedelta(days=2)).date())
    assert [(i.field, i.documents) for i in later.fields] == [("currency", 1), ("total_amount", 1)]
    assert accuracy.accuracy(store.engine, date(2027, 1, 1)).empty


def _config(tmp_path: Path, url: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(f'[store]\nurl = "{url}"\nblob_dir = "{tmp_path / "blobs"}"\n')
    return path


def test_cli_table_csv_and_nothing_yet(tmp_path, capsys):
    url = f"sqlite:///{tmp_path / 'store.db'}"
    store = Store(url)
    config = _config(tmp_path, url)
    assert cli.main(["report", "accuracy", "--config", str(config)]) == 0
    out, err = capsys.readouterr()
    assert out == "" and "no document has a truth yet" in err
    for n, conf in enumerate((0.99, 0.6, 0.3, 0.85)):
        doc = store.document()
        store.result(doc, "alpha", {"total_amount": ("10.00", conf)})
        if n % 2:
            correct(store.engine, doc, {"total_amount": "11.00"})
        else:
            correct(store.engine, doc, {}, confirm=["total_amount"])
    assert cli.main(["report", "accuracy", "--config", str(config)]) == 0
    out, _ = capsys.readouterr()
    lines = out.splitlines()
    assert lines[0].split() == ["vendor", "field", "n", "right", "wrong", "missed", "conf",
                                "right", "conf", "wrong"]  # fmt: skip
    assert lines[2].split() == ["alpha", "total_amount", "4", "50.0%", "50.0%", "0.0%", "0.65",
                                "0.72"]  # fmt: skip
    assert "alpha: <0.5 100.0% (1), 0.5-0.8 0.0% (1), 0.8-0.95 0.0% (1), >=0.95 100.0% (1)" in out
    assert cli.main(["report", "accuracy", "--csv", "--config", str(config)]) == 0
    out, _ = capsys.readouterr()
    rows = list(csv.DictReader(io.StringIO(out)))
    assert rows == [
        {"profile": "alpha", "field": "total_amount", "documents": "4", "right_count": "2",
         "wrong_count": "2", "missed_count": "0", "right_share": "0.5000", "wrong_share": "0.5000",
         "missed_share": "0.0000", "avg_confidence_right": "0.6450",
         "avg_confidence_wrong": "0.7250"}
    ]  # fmt: skip
    with store.engine.connect() as conn:
        view_columns = list(conn.execute(text("SELECT * FROM docrelay_vendor_accuracy")).keys())
    assert list(rows[0]) == view_columns, "the CSV has the view's columns"
    assert cli.main(["report", "accuracy", "--since", "2999-01-01", "--config", str(config)]) == 0
    assert "since 2999-01-01" in capsys.readouterr().err


# --------------------------------------------------------------------------- end to end

E2E_DOCS = 300
WRONG = {"wrong_rate": 0.2, "miss_rate": 0.1, "wrong_seed": 9}
"""Seed 9 draws every field of these 300 invoices (PDFs dated as in ``fixed_pdf_date``)
within 4 points of the rates: other seeds draw a field 6-7 points off at n = 300 (sampling,
not measurement; the exact counts show the report measures whatever was drawn)."""


@pytest.fixture
def fixed_pdf_date(monkeypatch):
    """Generated PDFs carry a fixed creation date: the same bytes (SHA-256, so the same
    draw of wrong fields) on every run."""
    from tests import invoices

    new_pdf = invoices._new_pdf

    def dated() -> object:
        pdf = new_pdf()
        pdf.set_creation_date(datetime(2026, 12, 1, tzinfo=UTC))
        return pdf

    monkeypatch.setattr(invoices, "_new_pdf", dated)


def _text(value: object) -> str:
    return value.isoformat() if hasattr(value, "isoformat") else str(value)


@pytest.mark.e2e
def test_the_report_measures_an_emulator_wrong_on_purpose(tmp_path, fixed_pdf_date):
    """The real daemon against a Rossum emulator that is wrong on purpose; every document is
    then corrected to its generated values through ``docrelay_corrections``. The report's
    counts are exactly those ``wrongness.verdict`` draws, its shares the configured rates
    within 5 points."""
    from connectors.emulation.wrongness import WrongnessSettings, verdict
    from tests.daemon_proc import (
        DaemonProcess,
        EmulatorProcess,
        drop_invoices,
        exported,
        free_port,
        query,
        wait_until,
        write_config,
    )
    from tests.invoices import expected_fields
    from tests.test_e2e_corrections import insert_rows

    root = tmp_path
    emulator = EmulatorProcess(
        "rossum", "--rate-limit", "0", "--delay", "0",
        "--wrong-rate", str(WRONG["wrong_rate"]), "--miss-rate", str(WRONG["miss_rate"]),
        "--wrong-seed", str(WRONG["wrong_seed"]), log=root / "emulator.log",
    )  # fmt: skip
    daemon = None
    try:
        vendor = emulator.vendor_toml(concurrency=8, rate_limit=10000, poll_interval=0.2)
        config = write_config(root, port=free_port(), extra=vendor, vendor="rossum_main")
        daemon = DaemonProcess(
            config, env={"DOCRELAY_PIPELINE__CORRECTIONS_INTERVAL": "0.3"}
        ).start()
        specs = drop_invoices(root / "inbox", E2E_DOCS, prefix="inv", first_seed=3000)
        wait_until(lambda: exported(root) == E2E_DOCS, 120, what=f"{E2E_DOCS} exports")
        documents = {
            r["filename"]: (r["id"], r["sha256"])
            for r in query(root, "SELECT id, filename, sha256 FROM documents")
        }
        rows = [
            {"document_id": documents[name][0], "field": field, "value": _text(value)}
            for name, spec in specs.items()
            for field, value in expected_fields(spec).items()
        ]
        insert_rows(root, rows)
        wait_until(
            lambda: not query(root, "SELECT id FROM docrelay_corrections WHERE state = 'pending'"),
            120, what="the corrections applied",
        )  # fmt: skip
        refused = query(
            root, "SELECT field, reason FROM docrelay_corrections WHERE state <> 'applied'"
        )
        assert refused == []
        run = subprocess.run(
            [sys.executable, "-m", "daemon.cli", "--config", str(config), "report", "accuracy",
             "--csv"],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert run.returncode == 0, run.stderr
        page = httpx.get(f"{daemon.url}/accuracy", timeout=30)
    finally:
        if daemon is not None:
            daemon.stop()
        emulator.stop()
    report = {row["field"]: row for row in csv.DictReader(io.StringIO(run.stdout))}
    assert {row["profile"] for row in report.values()} == {"rossum_main"}
    carried = {field for field, row in report.items() if int(row["right_count"]) > 0}
    assert len(carried) >= 8, sorted(report)
    settings = WrongnessSettings(**WRONG)
    totals = {"right": 0, "wrong": 0, "missed": 0}
    for field in sorted(carried):
        drawn = {"right": 0, "wrong": 0, "missed": 0}
        for name, spec in specs.items():
            if field in expected_fields(spec):
                drawn[verdict(settings, documents[name][1], field)] += 1
        row = report[field]
        got = {kind: int(row[f"{kind}_count"]) for kind in drawn}
        assert got == drawn, field
        for kind, rate in (("wrong", 0.2), ("missed", 0.1), ("right", 0.7)):
            share = float(row[f"{kind}_share"])
            assert share == pytest.approx(drawn[kind] / sum(drawn.values()), abs=1e-4)
            if sum(drawn.values()) >= 250:  # optional fields are on fewer: more noise
                assert abs(share - rate) <= 0.05, (field, row)
            totals[kind] += got[kind]
        if row["avg_confidence_wrong"]:
            assert float(row["avg_confidence_wrong"]) < float(row["avg_confidence_right"])
    # The status page draws the same counts, one bar segment per verdict.
    assert page.status_code == 200
    svg = lxml_html.fromstring(page.content).xpath('//svg[@id="accuracy-chart"]')[0]
    for g in svg.xpath('.//g[@data-profile="rossum_main"]/g[@data-field]'):
        row = report[g.get("data-field")]
        drawn_counts = {r.get("class"): int(r.get("data-count")) for r in g.xpath("rect")}
        assert drawn_counts == {k: int(row[f"{k}_count"]) for k in totals if int(row[f"{k}_count"])}
    n = sum(totals.values())
    assert abs(totals["wrong"] / n - 0.2) <= 0.02 and abs(totals["missed"] / n - 0.1) <= 0.02
