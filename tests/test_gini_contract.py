"""The Gini connector against the Gini emulator under real uvicorn: the whole document
(upload, polling, extractions, mapping), both upload variants, the trusted backend, tokens
that expire mid-run (renewed transparently), a refresh that fails (a fresh password grant, or
AuthFailed once the password is refused too), feedback, the page limit, layout and the
processed file, and the probe."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from connectors.base import (
    ConnectorContext,
    Correction,
    CorrectionKind,
    DocumentRef,
    PollStatus,
)
from connectors.errors import AuthFailed
from connectors.ratelimit import reset_shared_limiters
from connectors.vendors.gini.emulator import EmulatorOptions, create_app
from connectors.vendors.gini.emulator_state import GiniState
from connectors.vendors.gini.settings import GiniSettings
from connectors.vendors.gini.vendor import GiniVendor
from tests.invoices import expected_fields, random_spec, render_pdf
from tests.servers import serve


@dataclass
class Emu:
    url: str
    state: GiniState

    def admin(self, path: str, body: dict[str, Any] | None = None) -> Any:
        if body is None:
            return httpx.get(f"{self.url}/_emulator/{path}").json()
        return httpx.post(f"{self.url}/_emulator/{path}", json=body).json()

    def tokens(self) -> dict[str, int]:
        return self.admin("stats")["tokens"]

    def documents(self) -> list[dict[str, Any]]:
        return self.admin("documents")["results"]


@pytest.fixture(autouse=True)
def _fresh_limiters() -> Iterator[None]:
    reset_shared_limiters()
    yield
    reset_shared_limiters()


@pytest.fixture
def emu() -> Iterator[Emu]:
    app = create_app(EmulatorOptions(delay=0.2))
    with serve(app) as url:
        yield Emu(url, app.state.emulator)


@pytest.fixture
def made(tmp_path: Path) -> Iterator[list[GiniVendor]]:
    vendors: list[GiniVendor] = []
    yield vendors
    for vendor in vendors:
        vendor.close()


def vendor_for(emu: Emu, made: list[GiniVendor], tmp_path: Path, **overrides: Any) -> GiniVendor:
    settings = {
        "base_url": emu.url,
        "auth_url": emu.url,
        "client_id": "client",
        "client_secret": "secret",
        "username": "user@example.com",
        "password": "secret",
        "max_retries": 1,
        "retry_after_max": 0.1,
        **overrides,
    }
    context = ConnectorContext(name="gini", data_dir=tmp_path, clock=time.monotonic)
    vendor = GiniVendor(GiniSettings(**settings), context)
    made.append(vendor)
    return vendor


def invoice(tmp_path: Path, seed: int = 7, doc_id: int = 1, pages: int | None = 1) -> DocumentRef:
    data = render_pdf(random_spec(seed))
    path = tmp_path / f"invoice-{seed}-{doc_id}.pdf"
    path.write_bytes(data)
    return DocumentRef(
        id=doc_id,
        sha256=hashlib.sha256(data).hexdigest(),
        filename=f"invoice {seed}.pdf",
        mime_type="application/pdf",
        size_bytes=len(data),
        pages=pages,
        received_at=datetime.now(UTC),
        metadata={},
        path=path,
        page_sizes=((595.28, 841.89),),
    )


def until_ready(vendor: GiniVendor, ref: str, data: dict[str, Any]) -> dict[str, Any]:
    deadline = time.monotonic() + 20
    while True:
        result = vendor.poll(ref, data)
        data = dict(result.data) if result.data is not None else data
        if result.status == PollStatus.READY:
            return data
        assert result.status == PollStatus.PROCESSING, result.reason
        assert time.monotonic() < deadline
        time.sleep(0.05)


@pytest.mark.parametrize("upload", ["raw", "multipart"])
def test_a_document_end_to_end(emu, made, tmp_path, upload):
    vendor = vendor_for(emu, made, tmp_path, upload=upload, metadata={"branchid": "hq"})
    doc = invoice(tmp_path)
    submitted = vendor.submit(doc, first_attempt=True)
    (shown,) = emu.documents()
    assert shown["id"] == submitted.vendor_ref
    assert shown["metadata"] == {"branchid": "hq", "docrelayid": "1"}
    assert "docrelay-1-" in shown["name"]
    data = until_ready(vendor, submitted.vendor_ref, submitted.data)
    assert set(data["links"]) == {"document", "extractions", "layout", "processed"}
    raw = vendor.fetch(submitted.vendor_ref, data, doc)
    result = vendor.normalize(raw)
    expected = expected_fields(random_spec(7))
    got = {f.name: f for f in result.fields}
    assert got["invoice_number"].value_text == expected["invoice_number"]
    assert got["amount_due"].value_number == expected["total_amount"]
    assert got["total_amount"].value_number == expected["total_amount"]
    assert got["supplier_iban"].value_text == expected["supplier_iban"]
    assert all(f.bbox is None or f.bbox.inside_page() for f in result.fields)
    assert result.line_items, "the emulator's compound lineItems"


def test_a_token_that_expires_mid_run_is_renewed_transparently(emu, made, tmp_path):
    vendor = vendor_for(emu, made, tmp_path)
    submitted = vendor.submit(invoice(tmp_path), first_attempt=True)
    assert emu.tokens()["issued"] == 1
    assert emu.admin("tokens/expire", {})["expired"] >= 1
    data = until_ready(vendor, submitted.vendor_ref, submitted.data)
    tokens = emu.tokens()
    assert tokens["refreshed"] == 1, "one refresh-token grant after the 401"
    assert vendor.client.tokens == 2
    assert vendor.fetch(submitted.vendor_ref, data, invoice(tmp_path))["extractions"]


def test_a_short_token_lifetime_is_renewed_before_it_runs_out(emu, made, tmp_path):
    emu.state.options.token_lifetime = 2.0
    vendor = vendor_for(emu, made, tmp_path, refresh_margin=60)  # at half its lifetime
    submitted = vendor.submit(invoice(tmp_path), first_attempt=True)
    time.sleep(1.1)
    until_ready(vendor, submitted.vendor_ref, submitted.data)
    log = emu.state.requests.entries()
    assert [r.status for r in log if r.path.startswith("/documents")].count(401) == 0
    assert vendor.client.tokens >= 2


def test_a_refused_refresh_falls_back_to_a_fresh_password_grant(emu, made, tmp_path):
    vendor = vendor_for(emu, made, tmp_path)
    submitted = vendor.submit(invoice(tmp_path), first_attempt=True)
    emu.admin("refresh/fail", {"fail": True})
    emu.admin("tokens/expire", {})
    until_ready(vendor, submitted.vendor_ref, submitted.data)
    tokens = emu.tokens()
    assert tokens["refresh_refused"] == 1 and tokens["issued"] == 2


def test_refused_credentials_after_a_refused_refresh_are_auth_failed(emu, made, tmp_path):
    vendor = vendor_for(emu, made, tmp_path)
    submitted = vendor.submit(invoice(tmp_path), first_attempt=True)
    emu.admin("refresh/fail", {"fail": True})
    emu.admin("tokens/expire", {})
    emu.state.options.password = "changed-by-the-user"
    with pytest.raises(AuthFailed, match="refused the password grant"):
        vendor.poll(submitted.vendor_ref, submitted.data)


def test_the_trusted_backend_needs_no_token(emu, made, tmp_path):
    vendor = vendor_for(emu, made, tmp_path, auth="trusted", user_identifier="user-42",
                        username=None, password=None)  # fmt: skip
    submitted = vendor.submit(invoice(tmp_path), first_attempt=True)
    until_ready(vendor, submitted.vendor_ref, submitted.data)
    assert emu.tokens()["issued"] == 0
    assert emu.documents()[0]["owner"].endswith("user-42")


def test_a_long_document_is_sent_read_in_part_and_flagged(emu, made, tmp_path):
    from fpdf import FPDF

    pdf = FPDF()
    pdf.set_font("helvetica", size=12)
    for n in range(12):
        pdf.add_page()
        pdf.text(20, 20, f"Rechnung RE-2026-{n} Seite {n + 1}")
    path = tmp_path / "long.pdf"
    path.write_bytes(bytes(pdf.output()))
    base = invoice(tmp_path)
    doc = DocumentRef(**{**{f: getattr(base, f) for f in base.__slots__}, "path": path,
                         "size_bytes": path.stat().st_size, "pages": None,
                         "page_sizes": ((595.28, 841.89),) * 12})  # fmt: skip
    vendor = vendor_for(emu, made, tmp_path)
    submitted = vendor.submit(doc, first_attempt=True)
    assert submitted.data["pages"] == {"total": 12, "read": 10}
    data = until_ready(vendor, submitted.vendor_ref, submitted.data)
    quality = vendor.normalize(vendor.fetch(submitted.vendor_ref, data, doc)).quality
    assert quality["partial"] is True
    assert (quality["pages_read"], quality["pages_total"]) == (10, 12)


def test_feedback_reaches_the_emulator_and_changes_what_it_shows(emu, made, tmp_path):
    vendor = vendor_for(emu, made, tmp_path)
    doc = invoice(tmp_path)
    submitted = vendor.submit(doc, first_attempt=True)
    ref = submitted.vendor_ref
    data = until_ready(vendor, ref, submitted.data)
    result = vendor.normalize(vendor.fetch(ref, data, doc))
    iban = result.get("supplier_iban")
    assert iban is not None
    corrections = [
        Correction("invoice_number", "RE-CORRECTED-1", CorrectionKind.CORRECT,
                   vendor_label="invoiceId"),
        Correction("supplier_iban", None, CorrectionKind.ABSENT, iban.value_text, "iban"),
    ]  # fmt: skip
    outcomes = vendor.send_feedback(ref, data, corrections, result)
    assert [o.accepted for o in outcomes] == [True, True], outcomes
    (shown,) = emu.documents()
    batch = shown["feedback"][0]
    assert batch["kind"] == "batch" and batch["method"] == "PUT"
    assert batch["feedback"]["invoiceId"] == {"value": "RE-CORRECTED-1"}
    assert "iban" not in batch["feedback"]
    assert shown["feedback"][1]["kind"] != "batch"  # the DELETE of iban
    again = vendor.normalize(vendor.fetch(ref, data, doc))
    assert again.get("invoice_number").value_text == "RE-CORRECTED-1"  # type: ignore[union-attr]
    assert again.get("supplier_iban") is None


def test_an_invalid_value_is_a_readable_refusal(emu, made, tmp_path):
    vendor = vendor_for(emu, made, tmp_path)
    doc = invoice(tmp_path)
    submitted = vendor.submit(doc, first_attempt=True)
    data = until_ready(vendor, submitted.vendor_ref, submitted.data)
    result = vendor.normalize(vendor.fetch(submitted.vendor_ref, data, doc))
    bad = [Correction("supplier_iban", "not an IBAN", CorrectionKind.CORRECT, vendor_label="iban")]
    (outcome,) = vendor.send_feedback(submitted.vendor_ref, data, bad, result)
    assert not outcome.accepted and "422" in (outcome.reason or "")


def test_layout_processed_probe_and_purge(emu, made, tmp_path):
    vendor = vendor_for(emu, made, tmp_path)
    doc = invoice(tmp_path)
    submitted = vendor.submit(doc, first_attempt=True)
    data = until_ready(vendor, submitted.vendor_ref, submitted.data)
    layout = vendor.layout(submitted.vendor_ref, data)
    assert layout["pages"][0]["number"] == 1 and layout["pages"][0]["sizeX"] > 500
    body, kind = vendor.processed(submitted.vendor_ref, data)
    assert body == doc.path.read_bytes() and kind.startswith("application/pdf")
    mark = emu.state.requests.mark()
    lines = vendor.probe()
    assert any("1 document(s)" in line for line in lines)
    assert [r.method for r in emu.state.requests.mutations(since=mark)] == []
    vendor.purge(submitted.vendor_ref, data)
    vendor.purge(submitted.vendor_ref, data)
    assert emu.documents() == []


def test_the_daemon_takes_a_document_through_gini_and_sends_a_correction_back(emu, tmp_path):
    from sqlalchemy import select, text

    from daemon import config as config_mod
    from daemon.pipeline import ledger
    from daemon.pipeline.feedback import correct
    from daemon.runtime import Daemon
    from tests.daemon_proc import wait_until
    from tests.test_pipeline import offer

    raw = {
        "store": {"url": f"sqlite:///{tmp_path}/d.db", "blob_dir": str(tmp_path / "b")},
        "web": {"enabled": False},
        "pipeline": {"backoff_initial": 0.05, "backoff_max": 0.2},
        "vendors": {
            "gini": {
                "kind": "gini",
                "base_url": emu.url,
                "auth_url": emu.url,
                "client_id": "client",
                "client_secret": "secret",
                "username": "user@example.com",
                "password": "secret",
                "poll_interval": 0.1,
            }
        },
        "destinations": {"out": {"kind": "folder", "path": str(tmp_path / "out")}},
        "routes": [{"vendor": "gini", "destinations": ["out"]}],
    }
    daemon = Daemon(config_mod.validate(raw, Path("gini.toml")))
    daemon.open()
    daemon.start()
    try:
        doc = offer(daemon, "invoice.pdf", render_pdf(random_spec(11)), "application/pdf")
        export = tmp_path / "out" / f"{doc}.json"
        wait_until(export.exists, 20, what="exported")
        expected = expected_fields(random_spec(11))
        with daemon.engine.connect() as conn:
            row = conn.execute(
                text(
                    "SELECT invoice_number, total_amount, vendor FROM docrelay_invoices "
                    "WHERE document_id = :d"
                ),
                {"d": doc},
            ).one()
        assert row.invoice_number == expected["invoice_number"] and row.vendor == "gini"
        assert Decimal(str(row.total_amount)) == expected["total_amount"]  # SQLite: a REAL
        correct(daemon.engine, doc, {"invoice_number": "RE-NEW-1", "supplier_iban": ""},
                vendors=daemon.vendors)  # fmt: skip
        daemon.wake_all()

        def states() -> dict[str, str]:
            fb = ledger.feedback
            with daemon.engine.connect() as conn:
                rows = conn.execute(
                    select(fb.c.field, fb.c.state).where(fb.c.kind == "correction")
                ).all()
            return {r.field: r.state for r in rows}

        wait_until(lambda: set(states().values()) == {"sent"}, 20, what="feedback sent")
        (shown,) = emu.documents()
        batch = next(f for f in shown["feedback"] if f["kind"] == "batch")
        assert batch["feedback"]["invoiceId"] == {"value": "RE-NEW-1"}
        assert "iban" not in batch["feedback"]
        assert len(shown["feedback"]) == 2  # the batch and the DELETE of iban
    finally:
        daemon.stop()
