"""Vendors as interchangeable suppliers, end to end: the real daemon with two vendor emulators
(Rossum first, Konfuzio as shadow and fallback), each wrong on purpose at its own seeded
rates, so the test knows every right answer.

One run shows shadow reading on every document and agreement reported, the primary's emulator
killed mid-run and documents moving on to the fallback within ``outage_after`` (none lost, none
exported twice), back to the primary once it returns; a second shows a spent budget and a
low-confidence result moving documents on."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest

from connectors.emulation import wrongness
from tests.daemon_proc import (
    DaemonProcess,
    EmulatorProcess,
    drop_invoices,
    free_port,
    metric,
    query,
    toml_table,
    wait_until,
    write_config,
)
from tests.invoices import expected_fields
from tests.test_accuracy import fixed_pdf_date  # noqa: F401 (a fixture)
from tests.test_breaker import uploads_accepted
from tests.test_e2e_corrections import insert_rows

pytestmark = pytest.mark.e2e

ROSSUM = {"wrong_rate": 0.1, "miss_rate": 0.05, "wrong_seed": 11}
KONFUZIO = {"wrong_rate": 0.2, "miss_rate": 0.1, "wrong_seed": 22}


def flags(rates: dict[str, Any]) -> list[str]:
    """The emulator's command line: these wrongness rates, results at once."""
    wrong = (f"--{key.replace('_', '-')}={value}" for key, value in rates.items())
    return ["--delay=0.2", "--rate-limit=0", *wrong]


def konfuzio_toml(emulator: EmulatorProcess, **keys: Any) -> str:
    values = {
        "kind": "konfuzio",
        "base_url": emulator.url,
        "username": "user@example.com",
        "password": "secret",
        "project": 1,
        "poll_interval": 0.3,
        "timeout": 10,
        **keys,
    }
    return toml_table("[vendors.konfuzio_main]", values)


def exports(root: Path) -> Counter[int]:
    rows = query(root, "SELECT document_id FROM deliveries WHERE state = 'delivered'")
    return Counter(row["document_id"] for row in rows)


def outbox_records(root: Path) -> dict[int, tuple[int, str]]:
    """Exports as the destination holds them: document → (version, vendor). A second export
    of a document would be a version 2 of its file."""
    found = {}
    for path in (root / "outbox").glob("*.json"):
        record = json.loads(path.read_text())
        found[int(path.stem)] = (record["version"], record["provenance"]["vendor"])
    return found


def circuit_state(daemon: DaemonProcess) -> str | None:
    data = httpx.get(f"{daemon.url}/status", timeout=10).json()
    return next((b["state"] for b in data["breakers"] if b["vendor"] == "rossum_main"), None)


def sha_of(root: Path) -> dict[int, str]:
    return {r["id"]: r["sha256"] for r in query(root, "SELECT id, sha256 FROM documents")}


def measure(
    rows: list[dict[str, str]],
    profile: str,
    rates: dict[str, Any],
    judged: list[int],
    specs: dict[str, Any],
    documents: dict[str, int],
    shas: dict[int, str],
) -> dict[str, float]:
    """Check the report's counts for ``profile`` against what the emulator drew for every
    field it carries (``wrongness.verdict``), exactly; returns the measured shares overall."""
    settings = wrongness.WrongnessSettings(**rates)
    mine = {row["field"]: row for row in rows if row["profile"] == profile}
    carried = {field for field, row in mine.items() if int(row["right_count"]) > 0}
    assert len(carried) >= 6, (profile, sorted(mine))
    totals = Counter()
    for field in carried:
        drawn = Counter(
            wrongness.verdict(settings, shas[documents[name]], field)
            for name, spec in specs.items()
            if documents[name] in judged and field in expected_fields(spec)
        )
        got = {kind: int(mine[field][f"{kind}_count"]) for kind in ("right", "wrong", "missed")}
        assert got == {kind: drawn[kind] for kind in got}, (profile, field, got, drawn)
        totals.update(got)
    n = sum(totals.values())
    return {kind: totals[kind] / n for kind in ("right", "wrong", "missed")}


def test_shadow_agreement_outage_and_back(tmp_path, fixed_pdf_date):
    root = tmp_path
    rossum = EmulatorProcess("rossum", *flags(ROSSUM), log=root / "rossum.log")
    konfuzio = EmulatorProcess("konfuzio", *flags(KONFUZIO), log=root / "konfuzio.log")
    try:
        extra = (
            'fallback = "konfuzio_main"\nshadow = ["konfuzio_main"]\noutage_after = 3\n'
            + rossum.vendor_toml(
                concurrency=2,
                poll_interval=0.3,
                timeout=3,
                max_retries=0,
                breaker_failures=3,
                breaker_cooldown=2,
            )
            + konfuzio_toml(konfuzio, concurrency=2, rate_limit=1000)
        )
        config = write_config(root, port=free_port(), extra=extra, vendor="rossum_main")
        daemon = DaemonProcess(
            config, env={"DOCRELAY_PIPELINE__CORRECTIONS_INTERVAL": "0.3"}
        ).start()
        inbox = root / "inbox"

        # Phase 1: both vendors read every document; only the primary's result is exported.
        specs = drop_invoices(inbox, 20, prefix="both", first_seed=900)
        wait_until(lambda: len(exports(root)) == 20, 90, what="20 exports")
        wait_until(
            lambda: len(query(root, "SELECT id FROM submissions WHERE role = 'shadow' "
                                    "AND state = 'done'")) == 20,
            60, what="20 shadow readings",
        )  # fmt: skip
        public = query(root, "SELECT document_id, vendor FROM docrelay_documents")
        assert {r["vendor"] for r in public} == {"rossum_main"}
        agreement = query(root, "SELECT * FROM docrelay_field_agreement")
        assert {r["shadow_profile"] for r in agreement} == {"konfuzio_main"}
        assert {r["document_id"] for r in agreement} == {r["document_id"] for r in public}
        rossum_cfg = wrongness.WrongnessSettings(**ROSSUM)
        konfuzio_cfg = wrongness.WrongnessSettings(**KONFUZIO)
        shas = sha_of(root)
        for row in agreement:
            sha = shas[row["document_id"]]
            mine = wrongness.verdict(rossum_cfg, sha, row["field"])
            theirs = wrongness.verdict(konfuzio_cfg, sha, row["field"])
            if mine == "missed" and theirs != "missed":
                assert row["agreement"] == "primary_missing", row
            elif theirs == "missed" and mine != "missed":
                assert row["agreement"] == "shadow_missing", row
            elif mine == theirs == "right":
                assert row["agreement"] == "agree", row
            elif {mine, theirs} == {"right", "wrong"}:
                assert row["agreement"] == "disagree", row
            elif mine == theirs == "wrong":  # two wrong answers may be the same wrong one
                same = row["primary_value"] == row["shadow_value"]
                assert row["agreement"] == ("agree" if same else "disagree"), row
        assert Counter(r["agreement"] for r in agreement)["disagree"] > 0
        assert konfuzio.stats()["documents"]["total"] == 20  # each uploaded there once

        # Phase 2: the primary's emulator dies; new documents move on within outage_after.
        port = rossum.port
        rossum.stop()
        specs |= drop_invoices(inbox, 10, prefix="outage", first_seed=950)
        wait_until(lambda: circuit_state(daemon) in ("open", "half_open"), 40, what="opens")
        moved = wait_until(
            lambda: query(root, "SELECT * FROM submissions WHERE role = 'fallback'"),
            30, what="documents moved on",
        )  # fmt: skip
        assert {m["profile"] for m in moved} == {"konfuzio_main"}
        events = query(root, "SELECT message FROM events WHERE kind = 'moved'")
        assert events and all(
            e["message"].startswith("moved to fallback konfuzio_main: circuit open for ")
            for e in events
        ), events
        # The fallback read them already as shadow: promoted, not uploaded a second time.
        promoted = query(root, "SELECT submission_id FROM events WHERE kind = 'promoted'")
        assert {p["submission_id"] for p in promoted} == {m["id"] for m in moved}

        # Phase 3: the primary returns; the probe closes the circuit, documents go there again.
        rossum = EmulatorProcess("rossum", *flags(ROSSUM), log=root / "rossum.log", port=port)
        wait_until(lambda: len(exports(root)) == 30, 120, what="30 exports")
        wait_until(lambda: circuit_state(daemon) == "closed", 60, what="closed again")
        specs |= drop_invoices(inbox, 4, prefix="after", first_seed=980)
        wait_until(lambda: len(exports(root)) == 34, 60, what="34 exports")
        after = query(
            root,
            "SELECT s.profile, s.role, s.state FROM submissions s JOIN documents d "
            "ON d.id = s.document_id WHERE d.filename LIKE 'after-%' AND s.role != 'shadow'",
        )
        assert Counter((r["profile"], r["state"]) for r in after) == {("rossum_main", "done"): 4}

        # None lost, none exported twice: counted in the store and at the destination.
        assert set(exports(root).values()) == {1}
        records = outbox_records(root)
        shas = sha_of(root)
        fallback_docs = {
            r["document_id"] for r in query(root, "SELECT document_id FROM submissions "
                                                  "WHERE role = 'fallback'")
        }  # fmt: skip
        assert records == {
            doc: (1, "konfuzio_main" if doc in fallback_docs else "rossum_main")
            for doc in sha_of(root)
        }
        assert konfuzio.stats()["documents"]["total"] == 34  # shadows, promoted or not: once
        assert metric(daemon.url, "docrelay_fallback_moves_total", trigger="circuit_open") == len(
            query(root, "SELECT id FROM submissions WHERE role = 'fallback'")
        )

        # Accuracy: every document corrected to the values it was generated with (an ERP
        # job's INSERTs); the report judges both vendors against them.
        documents = {r["filename"]: r["id"] for r in query(root, "SELECT * FROM documents")}
        insert_rows(
            root,
            [
                {
                    "document_id": documents[name],
                    "field": field,
                    "value": value.isoformat() if hasattr(value, "isoformat") else str(value),
                }
                for name, spec in specs.items()
                for field, value in expected_fields(spec).items()
            ],
        )
        wait_until(
            lambda: not query(root, "SELECT id FROM docrelay_corrections WHERE state = 'pending'"),
            120, what="the corrections applied",
        )  # fmt: skip
        assert query(root, "SELECT * FROM docrelay_corrections WHERE state <> 'applied'") == []
        report = subprocess.run(
            [sys.executable, "-m", "daemon.cli", "--config", str(config), "report", "accuracy",
             "--csv"],
            capture_output=True, text=True, timeout=60, check=True,
        ).stdout  # fmt: skip
        rows = list(csv.DictReader(io.StringIO(report)))
        judged = {
            "rossum_main": [d for name, d in documents.items() if d not in fallback_docs],
            "konfuzio_main": list(documents.values()),  # shadow on every one
        }
        for profile, rates in (("rossum_main", ROSSUM), ("konfuzio_main", KONFUZIO)):
            measured = measure(rows, profile, rates, judged[profile], specs, documents, shas)
            assert abs(measured["wrong"] - rates["wrong_rate"]) <= 0.05, (profile, measured)
            assert abs(measured["missed"] - rates["miss_rate"]) <= 0.05, (profile, measured)
        assert daemon.stop() == 0
    finally:
        rossum.stop()
        konfuzio.stop()


def test_a_spent_budget_and_a_weak_result_move_documents_on(tmp_path, fixed_pdf_date):
    root = tmp_path
    rossum = EmulatorProcess(
        "rossum", "--field-wrong-rate", "total_amount=0.5", "--wrong-seed", "5",
        log=root / "rossum.log",
    )  # fmt: skip
    konfuzio = EmulatorProcess("konfuzio", "--rate-limit", "0", log=root / "konfuzio.log")
    try:
        extra = (
            'fallback = "konfuzio_main"\nmin_confidence = { total_amount = 0.8 }\n'
            + rossum.vendor_toml(concurrency=2, poll_interval=0.3)
            + "[vendors.rossum_main.budget]\ndocuments_per_day = 5\n"
            + konfuzio_toml(konfuzio, concurrency=2)
        )
        config = write_config(root, port=free_port(), extra=extra, vendor="rossum_main")
        daemon = DaemonProcess(config).start()
        drop_invoices(root / "inbox", 14, prefix="budget", first_seed=1200)
        wait_until(lambda: len(exports(root)) == 14, 90, what="14 exports")

        subs = query(root, "SELECT * FROM submissions ORDER BY id")
        at_rossum = [s for s in subs if s["profile"] == "rossum_main"]
        read = [s for s in at_rossum if s["vendor_ref"] is not None]
        assert len(read) == 5 == len(uploads_accepted(rossum))  # counted at the vendor
        over = [s for s in at_rossum if s["error_class"] == "budget"]
        assert len(over) == 9 and all(s["state"] == "dead" for s in over)
        assert all(
            s["error"] == "moved to fallback konfuzio_main: over budget: documents_per_day "
            "reached (5/5)"
            for s in over
        ), over
        # Of the five Rossum read, those whose total came with too little confidence moved on.
        confidence = {
            r["document_id"]: r["confidence"]
            for r in query(
                root,
                "SELECT x.document_id, f.confidence FROM fields f JOIN extractions x "
                "ON x.id = f.extraction_id JOIN submissions s ON s.id = x.submission_id "
                "WHERE s.profile = 'rossum_main' AND f.name = 'total_amount'",
            )
        }
        weak = {s["document_id"] for s in read if s["error_class"] == "low_confidence"}
        assert weak, confidence  # (fixed PDFs, seed 5: the draw makes some totals weak)
        assert weak == {doc for doc, c in confidence.items() if c is not None and c < 0.8}
        for s in read:
            if s["document_id"] in weak:
                assert s["state"] == "done" and s["error"].startswith(
                    "moved to fallback konfuzio_main: low confidence: total_amount 0."
                ), s
        fallback_docs = {s["document_id"] for s in subs if s["role"] == "fallback"}
        assert fallback_docs == weak | {s["document_id"] for s in over}
        assert outbox_records(root) == {
            doc: (1, "konfuzio_main" if doc in fallback_docs else "rossum_main")
            for doc in sha_of(root)
        }
        assert metric(daemon.url, "docrelay_fallback_moves_total", trigger="budget") == 9
        low = metric(daemon.url, "docrelay_fallback_moves_total", trigger="low_confidence")
        assert low == len(weak)
        assert daemon.stop() == 0
    finally:
        rossum.stop()
        konfuzio.stop()
