"""The vendor contract, checked on every registered vendor against its emulator.

Offline vendors (no account, no HTTP) take the mapping checks only.
"""

from __future__ import annotations

import json
import time
from decimal import Decimal
from pathlib import Path

import pytest

from connectors.base import (
    DOCUMENT_FIELDS,
    LINE_ITEM_FIELDS,
    BBox,
    CanonicalResult,
)
from connectors.emulation import wrongness
from connectors.errors import AuthFailed, TransientError
from daemon import config as config_mod
from daemon.runtime import Daemon
from tests.conformance.harness import VENDORS, VendorRun, document, ready
from tests.daemon_proc import wait_until
from tests.invoices import expected_fields, random_spec, render_pdf

OFFLINE = {"local", "einvoice"}
"""Vendors with no server to talk to: the HTTP checks do not apply."""
ALL = sorted(VENDORS)
HTTP = sorted(set(VENDORS) - OFFLINE)


@pytest.fixture
def run(request: pytest.FixtureRequest, tmp_path: Path):
    with VENDORS[request.param](tmp_path) as started:
        try:
            yield started
        finally:
            started.close()


def submitted(run: VendorRun, seed: int = 7, document_id: int = 1):
    vendor = run.vendor()
    doc = run.document(run.tmp_path, seed, document_id=document_id)
    result = vendor.submit(doc, first_attempt=True)
    if result.raw is not None:
        return vendor, doc, result.vendor_ref, result.data, result.raw
    ref, data = ready(vendor, result.vendor_ref, result.data)
    return vendor, doc, ref, data, None


def _boxes(result: CanonicalResult) -> list[tuple[str, BBox]]:
    found = [(f.name, f.bbox) for f in result.fields if f.bbox is not None]
    for item in result.line_items:
        found += [
            (f"line {item.line_no} {n}", p.bbox) for n, p in item.provenance.items() if p.bbox
        ]
    return found


# --------------------------------------------------------------------------- mapping


@pytest.mark.parametrize("run", ALL, indirect=True)
def test_the_mapping_gives_canonical_names_exact_amounts_and_boxes_on_the_page(run):
    vendor, doc, ref, data, raw = submitted(run)
    if raw is None:
        raw = vendor.fetch(ref, data, doc)
    stored = json.loads(json.dumps(raw))  # what the engine keeps, and maps again later
    result = vendor.normalize(stored)
    assert vendor.normalize(stored) == result, "normalize is pure"
    for value in result.fields:
        assert value.name in DOCUMENT_FIELDS or (
            value.name.startswith("extra.") and len(value.name) > 6
        ), value.name
        assert value.value_number is None or isinstance(value.value_number, Decimal)
        assert value.confidence is None or 0.0 <= value.confidence <= 1.0
        assert value.page is None or value.page >= 1
    for item in result.line_items:
        for name in ("quantity", "unit_price", "net_amount", "tax_rate", "total_amount"):
            amount = getattr(item, name)
            assert amount is None or isinstance(amount, Decimal), (item.line_no, name)
        assert set(item.provenance) <= {*LINE_ITEM_FIELDS} | {f"extra.{k}" for k in item.extra}
    for where, box in _boxes(result):
        assert box.page_width is not None and box.page_height is not None, where
        assert box.inside_page(), (where, box)
    expected = expected_fields(random_spec(7))
    got = {f.name: f for f in result.fields}
    assert got["invoice_number"].value_text == expected["invoice_number"]
    assert got["total_amount"].value_number == expected["total_amount"]


# --------------------------------------------------------------------------- HTTP behaviour


@pytest.mark.parametrize("run", HTTP, indirect=True)
def test_refused_credentials_are_an_auth_failure(run):
    assert run.bad_credentials is not None
    vendor = run.vendor(**run.bad_credentials)
    with pytest.raises(AuthFailed):
        vendor.submit(document(run.tmp_path), first_attempt=True)
    assert run.uploads is not None and run.uploads() == 0


@pytest.mark.parametrize("run", HTTP, indirect=True)
def test_refused_credentials_pause_that_profile_and_the_others_go_on(run):
    from tests.test_pipeline import offer

    assert run.bad_credentials is not None
    raw = {
        "store": {"url": f"sqlite:///{run.tmp_path}/d.db", "blob_dir": str(run.tmp_path / "b")},
        "web": {"enabled": False},
        "pipeline": {"backoff_initial": 0.05, "backoff_max": 0.2},
        "vendors": {
            "refused": {**run.settings, **run.bad_credentials},
            "good": {"kind": "local"},
        },
        "destinations": {"out": {"kind": "folder", "path": str(run.tmp_path / "out")}},
        "routes": [
            {"match": {"filename": "bad-*"}, "vendor": "refused", "destinations": ["out"]},
            {"vendor": "good", "destinations": ["out"]},
        ],
    }
    daemon = Daemon(config_mod.validate(raw, Path("conformance.toml")))
    daemon.open()
    daemon.start()
    try:
        invoice = render_pdf(random_spec(31))
        held = offer(daemon, "bad-1.pdf", invoice, "application/pdf")  # a vendor takes PDFs
        fine = [
            offer(daemon, f"ok-{n}.txt", f"Invoice {n}\nTotal 1.00 EUR".encode()) for n in (1, 2)
        ]
        wait_until(lambda: "refused" in daemon.paused, 15, what="the refused profile paused")
        wait_until(lambda: len(list((run.tmp_path / "out").glob("*.json"))) == 2, 15, what="others")
        assert {p.stem for p in (run.tmp_path / "out").glob("*.json")} == {str(d) for d in fine}
        with daemon.engine.connect() as conn:
            from sqlalchemy import text

            state = conn.execute(
                text("SELECT state FROM submissions WHERE document_id = :d"), {"d": held}
            ).scalar_one()
            health = conn.execute(text("SELECT state FROM connector_health")).scalars().all()
        assert state in ("uploading", "queued") and health == ["auth_failed"]
    finally:
        daemon.stop()


@pytest.mark.parametrize("run", HTTP, indirect=True)
def test_429_is_honoured(run):
    vendor, _, ref, data, _ = submitted(run)
    assert run.faults is not None and run.requests is not None
    run.faults.configure(rate_limit=1.0)
    mark = run.requests.mark()
    for _ in range(3):
        vendor.poll(ref, data)
    run.faults.configure(rate_limit=0)
    log = run.requests.entries(since=mark)
    throttled = [n for n, r in enumerate(log) if r.status == 429]
    assert throttled, "the emulator throttled"
    for n in throttled:
        assert n + 1 < len(log), "the call was tried again"
        assert log[n + 1].at - log[n].at >= 0.95, "no sooner than Retry-After (1 s)"
    assert log[-1].status == 200


@pytest.mark.parametrize("run", HTTP, indirect=True)
def test_5xx_and_malformed_bodies_are_transient(run):
    _, _, ref, data, _ = submitted(run)
    fast = run.vendor("fast", **run.fast)
    assert run.faults is not None
    run.faults.schedule("503", method="GET", times=10)
    with pytest.raises(TransientError):
        fast.poll(ref, data)
    run.faults.configure(fault_mix="503=1")  # forget what is left of the schedule
    run.faults.schedule("malformed", method="GET", times=10)
    with pytest.raises(TransientError):
        fast.poll(ref, data)


@pytest.mark.parametrize("run", HTTP, indirect=True)
def test_an_upload_whose_answer_was_lost_is_not_made_twice(run):
    """Or, for a vendor that offers no look-up, the capability says so (the engine then puts
    the doubt in the document's history before sending again)."""
    assert run.faults is not None and run.uploads is not None
    vendor = run.vendor(**run.fast)
    doc = document(run.tmp_path, 8)
    run.faults.schedule("drop_after", method="POST", path=run.upload_path)
    with pytest.raises(TransientError):
        vendor.submit(doc, first_attempt=True)
    assert run.uploads() == 1, "the upload reached the vendor"
    again = vendor.submit(doc, first_attempt=False)  # the engine's retry
    if vendor.capabilities.reconcile_uploads:
        assert run.uploads() == 1, "the retry found the first upload instead of sending again"
    else:
        assert run.uploads() == 2, "a vendor without a look-up sends again, as it says"
    assert again.vendor_ref


@pytest.mark.parametrize("run", HTTP, indirect=True)
def test_poll_and_fetch_change_nothing_at_the_vendor(run):
    vendor, doc, ref, data, _ = submitted(run)
    assert run.requests is not None
    time.sleep(0.1)
    mark = run.requests.mark()
    vendor.poll(ref, data)
    vendor.fetch(ref, data, doc)
    assert [(r.method, r.path) for r in run.requests.mutations(since=mark)] == []
    assert run.requests.entries(since=mark), "they did ask the vendor"


# --------------------------------------------------------------------------- wrong on purpose

WRONG_DOCS = 30
"""Generated invoices per vendor for the wrongness check (~450 field outcomes, ~8 s)."""


def _outcome(want: object, got) -> str:
    """right / wrong / missed of one mapped value against the generated invoice's."""
    if got is None:
        return "missed"
    if isinstance(want, Decimal):
        return "right" if got.value_number == want else "wrong"
    if hasattr(want, "isoformat"):
        return "right" if got.value_date == want else "wrong"
    return "right" if got.value_text == want else "wrong"


@pytest.mark.parametrize("run", HTTP, indirect=True)
def test_the_emulator_is_wrong_on_purpose_exactly_as_verdict_says(run):
    """Error and miss rates set on the running emulator (as ``POST /_emulator/faults`` does):
    every field of every document comes back through the vendor's own client and mapping
    right, wrong or missed exactly as ``wrongness.verdict`` computes from the file's hash."""
    assert run.faults is not None
    run.faults.configure(wrong_rate=0.2, miss_rate=0.1, wrong_seed=11)
    run.faults.settings.delay = 0  # type: ignore[attr-defined]
    settings = run.faults.settings
    assert isinstance(settings, wrongness.WrongnessSettings)
    vendor = run.vendor()
    sent = []
    for number in range(1, WRONG_DOCS + 1):
        doc = run.document(run.tmp_path, 1000 + number, document_id=number)
        sent.append((number, doc, vendor.submit(doc, first_attempt=True)))
    results = {}
    for number, doc, submitted_ in sent:
        raw = submitted_.raw
        if raw is None:
            ref, data = ready(vendor, submitted_.vendor_ref, submitted_.data)
            raw = vendor.fetch(ref, data, doc)
        results[number] = (doc, vendor.normalize(json.loads(json.dumps(raw))))
    outcomes = {}
    confidences: dict[str, list[float]] = {"right": [], "wrong": []}
    for number, (doc, result) in results.items():
        got = {f.name: f for f in result.fields}
        for name, want in expected_fields(random_spec(1000 + number)).items():
            seen = _outcome(want, got.get(name))
            outcomes[number, name] = (seen, doc.sha256)
            if seen != "missed" and got[name].confidence is not None:
                confidences[seen].append(got[name].confidence)
    carried = {name for (_, name), (seen, _) in outcomes.items() if seen == "right"}
    carried -= run.derived
    assert len(carried) >= 4, f"{run.kind} maps few fields: {sorted(carried)}"
    mismatched = [
        (number, name, seen, wrongness.verdict(settings, sha, name))
        for (number, name), (seen, sha) in outcomes.items()
        if name in carried and seen != wrongness.verdict(settings, sha, name)
    ]
    assert mismatched == [], mismatched[:10]
    seen_kinds = {seen for (_, name), (seen, _) in outcomes.items() if name in carried}
    assert seen_kinds == {"right", "wrong", "missed"}
    if confidences["right"] and confidences["wrong"]:  # a vendor that reports confidence
        mean = {k: sum(v) / len(v) for k, v in confidences.items()}
        assert mean["wrong"] < mean["right"] - 0.1, mean
