"""End to end: the real daemon against `docrelay emulate konfuzio` in its own process.

Folder intake → Konfuzio (upload, status_data pipeline, callbacks or polling) → SQLite →
folder export; each scenario checks that every document was uploaded once (counted at the
emulator) and exported once, with the invoice's values in the views.
"""

from __future__ import annotations

import json
import secrets
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

DOCS = 6
CHECKED = ("invoice_number", "issue_date", "total_amount", "currency")
"""Fields every scenario compares with the invoice it generated."""


def Emulator(root: Path, *args: str) -> EmulatorProcess:
    return EmulatorProcess("konfuzio", "--rate-limit", "0", *args, log=root / "emulator.log")


def uploads(emulator: EmulatorProcess) -> int:
    """Upload requests the emulator acted on (a dropped answer still made the document)."""
    return emulator.stats()["documents"]["total"]


def konfuzio_config(
    root: Path, emulator: EmulatorProcess, *, callbacks: bool, port: int, **keys: Any
) -> Path:
    token = secrets.token_urlsafe(24) if callbacks else None
    values = {
        "kind": "konfuzio",
        "base_url": emulator.url,
        "username": "user@example.com",
        "password": "secret",
        "project": 1,
        "poll_interval": 30 if callbacks else 0.3,  # with callbacks, slow polls prove them
        "timeout": 10,
        "callback_token": token,
        **keys,
    }
    return write_config(
        root, port=port, vendor="konfuzio_main", extra=toml_table("[vendors.konfuzio_main]", values)
    )


def check_store(root: Path, specs: dict[str, object]) -> None:
    docs = {r["filename"]: r for r in query(root, "SELECT * FROM docrelay_documents")}
    invoices = {r["document_id"]: r for r in query(root, "SELECT * FROM docrelay_invoices")}
    delivered = query(
        root,
        "SELECT document_id, COUNT(*) AS n FROM deliveries WHERE state = 'delivered' "
        "GROUP BY document_id",
    )
    assert set(docs) == set(specs)
    assert sorted(r["n"] for r in delivered) == [1] * len(specs), "each exported exactly once"
    for name, spec in specs.items():
        doc = docs[name]
        assert doc["state"] == "done" and doc["vendor"] == "konfuzio_main", doc
        row = invoices[doc["document_id"]]
        expected = expected_fields(spec)
        for field in CHECKED:
            want, got = expected[field], row[field]
            if isinstance(want, Decimal):
                got = Decimal(str(got))
            elif hasattr(want, "isoformat"):
                got = type(want).fromisoformat(str(got)[:10])
            assert got == want, (name, field, got, want)


def run_scenario(
    tmp_path: Path, *, callbacks: bool, emulator_args: tuple[str, ...] = ()
) -> dict[str, Any]:
    port = free_port()
    emulator = Emulator(tmp_path, "--delay", "0.6", *emulator_args)
    try:
        config = konfuzio_config(tmp_path, emulator, callbacks=callbacks, port=port)
        daemon = DaemonProcess(config).start()
        try:
            specs = drop_invoices(tmp_path / "inbox", DOCS, prefix="konfuzio", first_seed=500)
            wait_until(lambda: exported(tmp_path) == DOCS, 90, interval=0.3, what="all exported")
            check_store(tmp_path, specs)
            assert uploads(emulator) == DOCS, "no document uploaded twice"
            exports = [json.loads(p.read_text()) for p in (tmp_path / "outbox").glob("*.json")]
            assert {e["provenance"]["vendor_kind"] for e in exports} == {"konfuzio"}
            return {"stats": emulator.stats(), "documents": emulator.documents()}
        finally:
            assert daemon.stop() == 0, daemon.log()
    finally:
        emulator.stop()


def test_konfuzio_with_callbacks(tmp_path):
    seen = run_scenario(tmp_path, callbacks=True)
    callbacks = seen["stats"]["callbacks"]
    assert callbacks["delivered"] >= DOCS and callbacks["failed"] == 0
    assert {d["callback_status_code"] for d in seen["documents"]} == {200}


def test_konfuzio_polling_only(tmp_path):
    seen = run_scenario(tmp_path, callbacks=False)
    assert seen["stats"]["callbacks"]["attempts"] == 0
    polls = sum(
        sum(codes.values())
        for route, codes in seen["stats"]["requests"]["by_path"].items()
        if route == "GET /api/v3/documents/{id}/"
    )
    assert polls <= 6 * DOCS, "polling backs off"


def test_konfuzio_with_a_fifth_of_responses_failing(tmp_path):
    seen = run_scenario(
        tmp_path, callbacks=True, emulator_args=("--fail-rate", "0.2", "--seed", "7")
    )
    assert sum(seen["stats"]["faults"].values()) > 0, "faults were injected"


def test_konfuzio_through_splitting_confirmation_and_out_of_review(tmp_path):
    port = free_port()
    emulator = Emulator(tmp_path, "--delay", "0.6", "--split-rate", "1")
    try:
        config = konfuzio_config(tmp_path, emulator, callbacks=True, port=port)
        daemon = DaemonProcess(config).start()
        try:
            specs = drop_invoices(tmp_path / "inbox", 3, prefix="konfuzio", first_seed=500)
            wait_until(
                lambda: (
                    [r["state"] for r in query(tmp_path, "SELECT state FROM submissions")]
                    == ["review"] * 3
                ),
                60,
                what="all waiting for the split to be confirmed",
            )
            reasons = {r["review_reason"] for r in query(tmp_path, "SELECT * FROM submissions")}
            assert all("split" in (reason or "") for reason in reasons), reasons
            assert exported(tmp_path) == 0
            status = subprocess.run(
                [sys.executable, "-m", "daemon.cli", "--config", str(config), "status"],
                capture_output=True, text=True, timeout=60,
            ).stdout  # fmt: skip
            assert "waiting for review at the vendor" in status
            for doc in emulator.documents():
                httpx.post(
                    f"{emulator.url}/_emulator/documents/{doc['id']}/finish-split", json={}
                ).raise_for_status()
            wait_until(lambda: exported(tmp_path) == 3, 60, what="exported after the split")
            check_store(tmp_path, specs)
            posted = emulator.stats()["requests"]["by_path"]["POST /api/v3/documents/"]
            assert posted == {"201": 3}, "each uploaded once"
        finally:
            assert daemon.stop() == 0, daemon.log()
    finally:
        emulator.stop()


def test_konfuzio_daemon_killed_and_restarted_mid_run(tmp_path):
    port = free_port()
    emulator = Emulator(tmp_path, "--delay", "1.5")
    try:
        config = konfuzio_config(tmp_path, emulator, callbacks=True, port=port)
        daemon = DaemonProcess(config).start()
        specs = drop_invoices(tmp_path / "inbox", DOCS, prefix="konfuzio", first_seed=500)
        wait_until(lambda: uploads(emulator) >= DOCS // 2, 60, what="half uploaded")
        daemon.kill()
        restarted = DaemonProcess(config).start()
        try:
            wait_until(lambda: exported(tmp_path) == DOCS, 90, interval=0.3, what="all exported")
            check_store(tmp_path, specs)
            assert uploads(emulator) == DOCS, "nothing uploaded twice across the crash"
        finally:
            assert restarted.stop() == 0, restarted.log()
    finally:
        emulator.stop()


def test_konfuzio_feedback_reaches_the_emulator(tmp_path):
    port = free_port()
    emulator = Emulator(tmp_path, "--delay", "0.3")
    try:
        config = konfuzio_config(tmp_path, emulator, callbacks=False, port=port)
        # `docrelay correct` runs in a process of its own: the daemon sends the feedback at its
        # next sweep (every 30 s by default, most of this test's time).
        daemon = DaemonProcess(config, env={"DOCRELAY_PIPELINE__SWEEP_INTERVAL": "2"}).start()
        try:
            drop_invoices(tmp_path / "inbox", 1, prefix="konfuzio", first_seed=500)
            wait_until(lambda: exported(tmp_path) == 1, 60, what="exported")
            correct = subprocess.run(
                [sys.executable, "-m", "daemon.cli", "--config", str(config), "correct", "1",
                 "order_number=", "--confirm", "invoice_number"],
                capture_output=True, text=True, timeout=60,
            )  # fmt: skip
            assert correct.returncode == 0, correct.stderr
            wait_until(
                lambda: {r["state"] for r in query(tmp_path, "SELECT kind, state FROM feedback")
                         if r["kind"] == "correction"} == {"sent"},
                60,
                what="the corrections sent",
            )  # fmt: skip
            assert emulator.stats()["missing_annotations"] == 1, "absent: a missing-annotation"
            token = httpx.post(
                f"{emulator.url}/api/v3/auth/",
                json={"username": "user@example.com", "password": "secret"},
            ).json()["token"]
            (doc,) = emulator.documents()
            detail = httpx.get(
                f"{emulator.url}/api/v3/documents/{doc['id']}/",
                headers={"Authorization": f"Token {token}"},
            ).json()
            revised = [
                a
                for group in detail["annotation_sets"]
                for label in group["labels"]
                for a in label["annotations"]
                if a.get("revised") and a.get("is_correct")
            ]
            assert revised, "the confirmed invoice number is accepted at Konfuzio"
        finally:
            assert daemon.stop() == 0, daemon.log()
    finally:
        emulator.stop()
