"""End to end: the real daemon against `docrelay emulate gini` in its own process.

Folder intake → Gini (token from the User Center, upload, polling ``progress``, extractions)
→ SQLite → folder export; each scenario checks that every document was uploaded once
(counted at the emulator) and exported once, with the invoice's values in the views. Gini
has no webhooks: polling only.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

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
CHECKED = ("invoice_number", "issue_date", "currency", "amount_due")
"""Fields every scenario compares with the invoice it generated (Gini reads payment data:
``amountToPay`` is the amount due)."""
PROFILE = "gini_main"
STATUS_ROUTE = "GET /documents/{id}"
UPLOAD_ROUTE = "POST /documents"


def Emulator(root: Path, *args: str) -> EmulatorProcess:
    return EmulatorProcess("gini", "--rate-limit", "0", *args, log=root / "emulator.log")


def uploads(emulator: EmulatorProcess) -> int:
    """Documents the emulator made (an upload whose answer was lost made one too)."""
    return emulator.stats()["documents"]["total"]


def gini_config(
    root: Path, emulator: EmulatorProcess, *, port: int, sweep: float | None = None, **keys: Any
) -> Path:
    values = {
        "kind": "gini",
        "base_url": emulator.url,
        "auth_url": emulator.url,
        "client_id": "client",
        "client_secret": "secret",
        "username": "user@example.com",
        "password": "secret",
        "poll_interval": 0.3,
        "timeout": 10,
        **keys,
    }
    config = write_config(
        root, port=port, vendor=PROFILE, extra=toml_table(f"[vendors.{PROFILE}]", values)
    )
    if sweep is not None:  # the sweeps pick up what another process (the CLI) queued
        config.write_text(
            config.read_text().replace("[pipeline]\n", f"[pipeline]\nsweep_interval = {sweep}\n")
        )
    return config


def expected(spec: Any) -> dict[str, object]:
    values = expected_fields(spec)
    return {**values, "amount_due": values["total_amount"]}  # nothing prepaid: due = total


def check_store(root: Path, specs: dict[str, object], emulator: EmulatorProcess) -> None:
    """Every document done once at Gini (uploaded once, our id in its metadata), exported
    once, with the invoice's values in ``docrelay_invoices``."""
    docs = {r["filename"]: r for r in query(root, "SELECT * FROM docrelay_documents")}
    invoices = {r["document_id"]: r for r in query(root, "SELECT * FROM docrelay_invoices")}
    delivered = query(
        root,
        "SELECT document_id, COUNT(*) AS n FROM deliveries WHERE state = 'delivered' "
        "AND version = 1 GROUP BY document_id",
    )
    assert set(docs) == set(specs)
    assert sorted(r["n"] for r in delivered) == [1] * len(specs), "each exported exactly once"
    assert exported(root) == len(specs)
    at_gini = {d["id"]: d for d in emulator.documents()}
    assert len(at_gini) == len(specs), "each uploaded exactly once"
    assert uploads(emulator) == len(specs)
    for name, spec in specs.items():
        doc = docs[name]
        assert doc["state"] == "done" and doc["vendor"] == PROFILE, doc
        shown = at_gini[doc["vendor_ref"]]
        assert shown["progress"] == "COMPLETED" and shown["error"] is None, shown
        assert shown["metadata"]["docrelayid"] == str(doc["document_id"]), shown
        assert f"docrelay-{doc['document_id']}-" in shown["name"], shown
        row = invoices[doc["document_id"]]
        want_all = expected(spec)
        for field in CHECKED:
            want, got = want_all[field], row[field]
            if isinstance(want, Decimal):
                got = Decimal(str(got))
            elif hasattr(want, "isoformat"):
                got = type(want).fromisoformat(str(got)[:10])
            assert got == want, (name, field, got, want)
    exports = [json.loads(p.read_text()) for p in (root / "outbox").glob("*.json")]
    assert {e["provenance"]["vendor_kind"] for e in exports} == {"gini"}


def run_scenario(
    tmp_path: Path, *, delay: float = 0.6, emulator_args: tuple[str, ...] = (), **keys: Any
) -> dict[str, Any]:
    emulator = Emulator(tmp_path, "--delay", str(delay), *emulator_args)
    try:
        config = gini_config(tmp_path, emulator, port=free_port(), **keys)
        daemon = DaemonProcess(config).start()
        try:
            specs = drop_invoices(tmp_path / "inbox", DOCS, prefix="gini", first_seed=700)
            wait_until(lambda: exported(tmp_path) == DOCS, 90, interval=0.3, what="all exported")
            check_store(tmp_path, specs, emulator)
            return {
                "stats": emulator.stats(),
                "documents": emulator.documents(),
                "upload_queries": upload_queries(emulator),
            }
        finally:
            assert daemon.stop() == 0, daemon.log()
    finally:
        emulator.stop()


def upload_queries(emulator: EmulatorProcess) -> list[str]:
    log = httpx.get(f"{emulator.url}/_emulator/requests", timeout=30).json()["results"]
    return [r["query"] for r in log if r["method"] == "POST" and r["path"] == "/documents"]


def requests_to(seen: dict[str, Any], route: str) -> dict[str, int]:
    return seen["stats"]["requests"]["by_path"].get(route, {})


def test_gini_polling_with_raw_uploads(tmp_path):
    seen = run_scenario(tmp_path)
    assert requests_to(seen, UPLOAD_ROUTE) == {"201": DOCS}, "one upload per document"
    assert requests_to(seen, "GET /documents/{id}/extractions") == {"200": DOCS}
    assert "GET /documents" not in seen["stats"]["requests"]["by_path"], "no look-up needed"
    polls = sum(requests_to(seen, STATUS_ROUTE).values())
    assert DOCS <= polls <= 6 * DOCS, "polling backs off"
    assert seen["stats"]["tokens"]["issued"] == 1, "one token for the whole run"
    assert seen["stats"]["faults"] == {}
    assert all(q.startswith("filename=") for q in seen["upload_queries"]), "the raw body"


def test_gini_multipart_uploads_with_tokens_expiring_mid_run(tmp_path):
    seen = run_scenario(  # processing outlasts a token: the polls need a renewed one
        tmp_path, delay=3, emulator_args=("--token-lifetime", "2"), upload="multipart"
    )
    tokens = seen["stats"]["tokens"]
    assert tokens["issued"] + tokens["refreshed"] >= 2, tokens
    assert requests_to(seen, UPLOAD_ROUTE) == {"201": DOCS}
    assert seen["upload_queries"] == [""] * DOCS, "multipart: no ?filename="
    submissions = query(tmp_path, "SELECT state, error, attempts FROM submissions")
    assert [(s["state"], s["error"]) for s in submissions] == [("done", None)] * DOCS
    assert {s["attempts"] for s in submissions} == {0}, (
        "no retry: no call failed for want of a token"
    )
    messages = [
        r["message"] or "" for r in query(tmp_path, "SELECT message FROM events")
    ]  # no 401 reached the pipeline: the client renewed the token by itself
    # "401" as a word: a vendor reference (a UUID) may hold those digits
    assert not [m for m in messages if re.search(r"\b401\b", m) or "re-auth" in m.lower()], messages


def test_gini_with_a_fifth_of_responses_failing(tmp_path):
    seen = run_scenario(tmp_path, emulator_args=("--fail-rate", "0.2", "--seed", "11"))
    assert sum(seen["stats"]["faults"].values()) > 0, "faults were injected"


def test_gini_daemon_killed_and_restarted_mid_run(tmp_path):
    emulator = Emulator(tmp_path, "--delay", "1.5")
    try:
        # a slow courtesy rate spreads the uploads out: the kill lands with some still to go
        config = gini_config(tmp_path, emulator, port=free_port(), rate_limit=2)
        daemon = DaemonProcess(config).start()
        specs = drop_invoices(tmp_path / "inbox", DOCS, prefix="gini", first_seed=700)
        wait_until(lambda: uploads(emulator) >= DOCS // 2, 60, what="half uploaded")
        daemon.kill()
        assert uploads(emulator) < DOCS and exported(tmp_path) < DOCS, "killed mid-run"
        restarted = DaemonProcess(config).start()
        try:
            wait_until(lambda: exported(tmp_path) == DOCS, 90, interval=0.3, what="all exported")
            check_store(tmp_path, specs, emulator)
            posted = emulator.stats()["requests"]["by_path"][UPLOAD_ROUTE]
            assert posted == {"201": DOCS}, "nothing uploaded twice across the crash"
        finally:
            assert restarted.stop() == 0, restarted.log()
    finally:
        emulator.stop()


def test_gini_feedback_reaches_the_emulator_and_version_2_is_delivered(tmp_path):
    emulator = Emulator(tmp_path, "--delay", "0.3")
    try:
        config = gini_config(tmp_path, emulator, port=free_port(), sweep=1)
        daemon = DaemonProcess(config).start()
        try:
            specs = drop_invoices(tmp_path / "inbox", 1, prefix="gini", first_seed=700)
            wait_until(lambda: exported(tmp_path) == 1, 60, what="exported")
            check_store(tmp_path, specs, emulator)
            correct = subprocess.run(
                [sys.executable, "-m", "daemon.cli", "--config", str(config), "correct", "1",
                 "invoice_number=GINI-FIXED-1", "--confirm", "currency"],
                capture_output=True, text=True, timeout=60,
            )  # fmt: skip
            assert correct.returncode == 0, correct.stderr
            wait_until(
                lambda: {r["state"] for r in query(tmp_path, "SELECT kind, state FROM feedback")
                         if r["kind"] == "correction"} == {"sent"},
                60,
                what="the corrections sent",
            )  # fmt: skip
            (doc,) = emulator.documents()
            assert doc["feedback"], "Gini got feedback"
            batches = [f for f in doc["feedback"] if f["kind"] == "batch"]
            assert batches, doc["feedback"]
            sent = batches[-1]["feedback"]
            assert sent["invoiceId"]["value"] == "GINI-FIXED-1", sent
            assert sent["amountToPay"]["value"].endswith(":" + specs["gini-0.pdf"].currency), sent
            assert emulator.stats()["feedback"] >= 1
            wait_until(
                lambda: query(
                    tmp_path,
                    "SELECT version FROM deliveries WHERE state = 'delivered' AND version = 2",
                ),
                60,
                what="version 2 delivered",
            )
            versions = query(tmp_path, "SELECT version, state FROM deliveries ORDER BY id")
            assert [(v["version"], v["state"]) for v in versions] == [
                (1, "delivered"),
                (2, "delivered"),
            ]
            (export,) = (tmp_path / "outbox").glob("*.json")
            assert json.loads(export.read_text())["fields"]["invoice_number"] == "GINI-FIXED-1"
            (row,) = query(tmp_path, "SELECT invoice_number FROM docrelay_invoices")
            assert row["invoice_number"] == "GINI-FIXED-1"
            assert uploads(emulator) == 1, "feedback uploads nothing"
        finally:
            assert daemon.stop() == 0, daemon.log()
    finally:
        emulator.stop()
