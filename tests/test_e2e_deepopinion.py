"""End to end: the real daemon against `docrelay emulate deepopinion` in its own process.

Folder intake → DeepOpinion (login, the synchronous extraction, the HITL and its reviews) →
SQLite → folder export. Each scenario checks that every document was exported exactly once
with the invoice's values in the views, and counts the extraction calls at the emulator.
DeepOpinion has no look-up of an earlier extraction: a call whose answer was lost is sent
again, with an ``in_doubt`` event in the document's history first (NOTES.md).
"""

from __future__ import annotations

import json
import secrets
from collections import Counter
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from connectors import normalize
from connectors.vendors.deepopinion import emulator_content as content
from connectors.vendors.deepopinion.mapping import DEFAULT_FIELDS
from tests.daemon_proc import (
    DaemonProcess,
    EmulatorProcess,
    drop_invoices,
    exported,
    free_port,
    query,
    toml_table,
    wait_until,
    write_config,
)
from tests.invoices import expected_fields

pytestmark = pytest.mark.e2e

DOCS = 4
CHECKED = ("invoice_number", "issue_date", "currency", "total_amount")
"""Fields every scenario compares with the invoice it generated."""
PROFILE = "deepopinion_main"
EXTRACT = "/organizations/1/projects/1/models/1/extract"
REVIEWS = "/organizations/1/projects/1/hitls/{}/reviews"


def Emulator(root: Path, *args: str) -> EmulatorProcess:
    return EmulatorProcess("deepopinion", "--rate-limit", "0", *args, log=root / "emulator.log")


def deepopinion_config(root: Path, emulator: EmulatorProcess, **keys: Any) -> Path:
    values = {
        "kind": "deepopinion",
        "base_url": emulator.url,
        "email": "user@example.com",
        "password": "secret",
        "organization_id": 1,
        "project_id": 1,
        "model_id": 1,
        "timeout": 10,
        "rate_limit": 1000,
        **keys,
    }
    return write_config(
        root, port=free_port(), vendor=PROFILE, extra=toml_table(f"[vendors.{PROFILE}]", values)
    )


def doubted(root: Path) -> set[int]:
    """Documents whose history has an ``in_doubt`` event (sent again without a look-up)."""
    rows = query(root, "SELECT document_id FROM events WHERE kind = 'in_doubt'")
    return {r["document_id"] for r in rows}


def check_store(
    root: Path, specs: dict[str, Any], overrides: dict[str, dict[str, object]] | None = None
) -> dict[str, Any]:
    """Every document done and exported exactly once, the CHECKED columns of
    ``docrelay_invoices`` equal to the invoice (or to ``overrides[filename]``, the values a
    review changed); the documents by file name."""
    overrides = overrides or {}
    docs = {r["filename"]: r for r in query(root, "SELECT * FROM docrelay_documents")}
    invoices = {r["document_id"]: r for r in query(root, "SELECT * FROM docrelay_invoices")}
    delivered = query(
        root,
        "SELECT document_id, COUNT(*) AS n FROM deliveries WHERE state = 'delivered' "
        "GROUP BY document_id",
    )
    assert set(docs) == set(specs)
    assert sorted(r["n"] for r in delivered) == [1] * len(specs), "each exported exactly once"
    assert exported(root) == len(specs)
    for name, spec in specs.items():
        doc = docs[name]
        assert doc["state"] == "done" and doc["vendor"] == PROFILE, doc
        row = invoices[doc["document_id"]]
        want_all = {**expected_fields(spec), **overrides.get(name, {})}
        for field in CHECKED:
            want, got = want_all[field], row[field]
            if isinstance(want, Decimal):
                got = Decimal(str(got))
            elif hasattr(want, "isoformat"):
                got = type(want).fromisoformat(str(got)[:10])
            assert got == want, (name, field, got, want)
    exports = [json.loads(p.read_text()) for p in (root / "outbox").glob("*.json")]
    assert {e["provenance"]["vendor_kind"] for e in exports} == {"deepopinion"}
    return docs


def statuses(emulator: EmulatorProcess, path: str) -> Counter[int]:
    """The answers the emulator gave to requests to ``path`` (0: a dropped connection)."""
    log = httpx.get(f"{emulator.url}/_emulator/requests", timeout=30).json()["results"]
    return Counter(r["status"] for r in log if r["path"] == path)


def extractions_by_name(emulator: EmulatorProcess) -> Counter[str]:
    return Counter(d["name"] for d in emulator.documents())


def run_scenario(
    tmp_path: Path, *emulator_args: str, docs: int = DOCS, **keys: Any
) -> dict[str, Any]:
    emulator = Emulator(tmp_path, *emulator_args)
    try:
        config = deepopinion_config(tmp_path, emulator, **keys)
        daemon = DaemonProcess(config).start()
        try:
            specs = drop_invoices(tmp_path / "inbox", docs, prefix="deepopinion", first_seed=900)
            wait_until(lambda: exported(tmp_path) == docs, 60, interval=0.3, what="all exported")
            return {
                "docs": check_store(tmp_path, specs),
                "stats": emulator.stats(),
                "by_name": extractions_by_name(emulator),
                "extract": statuses(emulator, EXTRACT),
            }
        finally:
            assert daemon.stop() == 0, daemon.log()
    finally:
        emulator.stop()


def test_high_confidence_straight_through(tmp_path):
    seen = run_scenario(tmp_path, "--delay", "0.5", "--low-confidence-rate", "0")
    assert seen["stats"]["extractions"] == DOCS, "one extraction per document"
    assert seen["extract"] == {200: DOCS}
    assert seen["stats"]["tokens"]["issued"] == 1, "one login for the run"
    assert seen["stats"]["reviews"] == {}, "none in review"
    assert not doubted(tmp_path)
    states = query(tmp_path, "SELECT state, attempts FROM submissions")
    assert [(s["state"], s["attempts"]) for s in states] == [("done", 0)] * DOCS
    versions = query(tmp_path, "SELECT document_id, MAX(version) AS v FROM extractions "
                               "GROUP BY document_id")  # fmt: skip
    assert [v["v"] for v in versions] == [1] * DOCS


def reviewed_value(label: str, n: int) -> str:
    """What the reviewer types for ``label``: a value of its kind, unlike the invoice's."""
    if label in content.DATE_LABELS:
        return f"0{n + 1}.02.2031"
    if label in content.AMOUNT_LABELS:
        return f"{n + 7},{n + 1}23.45"
    if label == "Currency":
        return "CHF"
    if label == "Line item quantity":
        return str(n + 40)
    return f"REVIEWED-{n}-{label.upper().replace(' ', '-')}"


def review_labels(emulator: EmulatorProcess) -> dict[str, set[str]]:
    """Upload name → the labels under review, as DeepOpinion lists them (one GET)."""
    with httpx.Client(base_url=emulator.url, timeout=30) as http:
        login = {"email": "user@example.com", "password": "secret"}
        token = http.post("/auth/login", json=login).json()["auth_token"]
        http.headers["Authorization"] = f"Bearer {token}"
        (hitl,) = http.get("/organizations/1/projects/1/hitls").json()
        listed = http.get(f"/organizations/1/projects/1/hitls/{hitl['id']}/reviews").json()
    found: dict[str, set[str]] = {}
    for review in listed:
        found.setdefault(review["document_name"], set()).add(review["label"])
    return found


def expected_changes(values: dict[str, str]) -> dict[str, object]:
    """The canonical values the reviewed document labels must come back as."""
    changed: dict[str, object] = {}
    for label, value in values.items():
        field = DEFAULT_FIELDS.get(label)
        if field is None or label.startswith("Line item"):
            continue
        if label in content.DATE_LABELS:
            changed[field] = normalize.parse_date(value)
        elif label in content.AMOUNT_LABELS:
            changed[field] = normalize.parse_amount(value)[0]
        else:
            changed[field] = value
    return changed


def shows(export: dict[str, Any], label: str, value: str) -> bool:
    """The export carries the reviewed ``value`` of ``label``: as a field's raw text (with a
    reviewer's confidence of 1), or as a line item's cell."""
    if not label.startswith("Line item"):
        return any(
            d["vendor_label"] == label and d["raw_text"] == value and d["confidence"] == 1.0
            for d in export["field_details"]
        )
    cell = next(c for c, lab in content.LINE_LABELS.items() if lab == label)
    if label in content.AMOUNT_LABELS:
        want: object = normalize.parse_amount(value)[0]
    elif cell == "quantity":
        want = Decimal(value)
    else:
        want = value
    cells = [item[cell] for item in export["line_items"]]
    return any(c is not None and (Decimal(c) if cell != "description" else c) == want
               for c in cells)  # fmt: skip


def test_low_confidence_waits_in_review_and_the_webhook_brings_the_reviewed_values(tmp_path):
    emulator = Emulator(tmp_path, "--delay", "0.5", "--low-confidence-rate", "1")
    try:
        config = deepopinion_config(
            tmp_path, emulator, hitl=True, webhook_token=secrets.token_urlsafe(24),
            poll_interval=600,  # the webhook, not a poll, moves them on
        )  # fmt: skip
        daemon = DaemonProcess(config).start()
        try:
            specs = drop_invoices(tmp_path / "inbox", DOCS, prefix="deepopinion", first_seed=900)
            wait_until(
                lambda: (
                    [r["state"] for r in query(tmp_path, "SELECT state FROM submissions")]
                    == ["review"] * DOCS
                ),
                60,
                interval=0.3,
                what="all waiting for review",
            )
            reasons = [r["review_reason"] for r in query(tmp_path, "SELECT * FROM submissions")]
            assert all("human-in-the-loop" in (r or "") for r in reasons), reasons
            assert exported(tmp_path) == 0, "nothing exported before the review"
            assert {d["hitl_status"] for d in emulator.documents()} == {"pending"}

            docs = {r["filename"]: r for r in query(tmp_path, "SELECT * FROM docrelay_documents")}
            labels_of = review_labels(emulator)
            overrides: dict[str, dict[str, object]] = {}
            reviewed: dict[str, dict[str, str]] = {}
            for n, (name, doc) in enumerate(sorted(docs.items())):
                (upload,) = [u for u in labels_of if f".docrelay-{doc['document_id']}-" in u]
                values = {label: reviewed_value(label, n) for label in labels_of[upload]}
                answer = httpx.post(
                    f"{emulator.url}/_emulator/reviews/complete",
                    json={"document_name": upload, "values": values},
                    timeout=30,
                )
                assert answer.status_code == 200, answer.text
                overrides[name] = expected_changes(values)
                reviewed[name] = values
            wait_until(lambda: exported(tmp_path) == DOCS, 60, interval=0.3, what="exported")
            check_store(tmp_path, specs, overrides)
            seen = emulator.stats()
            assert seen["extractions"] == DOCS and not doubted(tmp_path)
            assert seen["webhooks"]["delivered"] == DOCS and seen["webhooks"]["failed"] == 0
            (hitl_id,) = {d["hitl_id"] for d in emulator.documents()}
            reads = sum(statuses(emulator, REVIEWS.format(hitl_id)).values()) - 1  # our listing
            assert DOCS <= reads <= 2 * DOCS, "a read after the webhook, not polling"
            latest = query(
                tmp_path,
                "SELECT e.document_id, e.version, e.review_reason FROM extractions e WHERE "
                "e.version = (SELECT MAX(version) FROM extractions WHERE document_id = "
                "e.document_id)",
            )
            assert [(r["version"], r["review_reason"]) for r in latest] == [(2, None)] * DOCS
            for export in (tmp_path / "outbox").glob("*.json"):
                body = json.loads(export.read_text())
                name = next(n for n, d in docs.items() if d["document_id"] == body["document_id"])
                assert body["quality"]["reviewed"] is True, body["quality"]
                for field, want in overrides[name].items():
                    assert body["fields"][field] == str(want), (name, field)
                for label, value in reviewed[name].items():
                    assert shows(body, label, value), (name, label, value)
        finally:
            assert daemon.stop() == 0, daemon.log()
    finally:
        emulator.stop()


def our_id(upload_name: str) -> int:
    """Our document id in the tagged upload name (``<stem>.docrelay-<id>-<sha8><ext>``)."""
    return int(upload_name.split(".docrelay-")[1].split("-")[0])


def test_a_fifth_of_the_answers_failing(tmp_path):
    docs = 10  # enough requests for seed 11's faults to hit extractions
    seen = run_scenario(tmp_path, "--delay", "0.3", "--fail-rate", "0.2", "--seed", "11", docs=docs)
    assert sum(seen["stats"]["faults"].values()) > 0, "faults were injected"
    calls = sum(seen["extract"].values())
    assert calls >= docs and seen["stats"]["extractions"] >= docs
    twice = {our_id(name) for name, n in seen["by_name"].items() if n > 1}
    assert twice <= doubted(tmp_path), "every second extraction had its doubt on record first"
    history = query(tmp_path, "SELECT document_id, kind, message FROM events "
                              "WHERE kind = 'in_doubt'")  # fmt: skip
    assert all("may process (and bill) this document twice" in e["message"] for e in history)
    print(f"\n{calls} extraction calls, {seen['stats']['extractions']} extracted, "
          f"{len(twice)} document(s) twice, faults {seen['stats']['faults']}")  # fmt: skip


def test_daemon_killed_during_the_synchronous_calls_and_restarted(tmp_path):
    emulator = Emulator(tmp_path, "--delay", "3", "--low-confidence-rate", "0")
    try:
        config = deepopinion_config(tmp_path, emulator, concurrency=2)
        daemon = DaemonProcess(config).start()
        specs = drop_invoices(tmp_path / "inbox", DOCS, prefix="deepopinion", first_seed=900)

        def in_flight() -> list[str]:
            return [d["name"] for d in emulator.documents() if d["finished_at"] is None]

        cut_off = wait_until(lambda: len(in_flight()) >= 2 and in_flight(), 60,
                             interval=0.05, what="two calls in flight")  # fmt: skip
        daemon.kill()
        assert exported(tmp_path) == 0, "killed before any answer came"
        restarted = DaemonProcess(config).start()
        try:
            wait_until(lambda: exported(tmp_path) == DOCS, 60, interval=0.3, what="all exported")
            check_store(tmp_path, specs)
            by_name = extractions_by_name(emulator)
            twice = {our_id(name) for name, n in by_name.items() if n > 1}
            assert {our_id(name) for name in cut_off} <= twice, "the lost calls were sent again"
            assert twice <= doubted(tmp_path), "each second send had its doubt on record first"
            assert len(twice) < DOCS, "the others were sent once"
            assert emulator.stats()["extractions"] == DOCS + len(twice)
            print(f"\n{len(twice)} of {DOCS} document(s) extracted twice (no look-up exists)")
        finally:
            assert restarted.stop() == 0, restarted.log()
    finally:
        emulator.stop()
