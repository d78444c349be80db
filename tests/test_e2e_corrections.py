"""The real daemon process on the embedded default (local extractor, folder in and out): a
correction over HTTP and one inserted into ``docrelay_corrections`` each export a new version;
a crash between applying a row and marking it applies it once."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import httpx
import pytest
from sqlalchemy import create_engine, text

from tests.daemon_proc import DaemonProcess, query, wait_until, write_config
from tests.invoices import random_spec, render_pdf

pytestmark = pytest.mark.e2e

TOKEN = "e2e-token-0123456789abcdef"
API = """
[web.api]
tokens_file = "api-tokens"
"""
FAST_PICKUP = {"DOCRELAY_PIPELINE__CORRECTIONS_INTERVAL": "0.3"}


def configured(tmp_path: Path) -> Path:
    (tmp_path / "api-tokens").write_text(f"{TOKEN}\n")
    (tmp_path / "inbox").mkdir()
    return write_config(tmp_path, extra=API)


def export_of(tmp_path: Path, doc: int = 1) -> dict:
    path = tmp_path / "outbox" / f"{doc}.json"
    return json.loads(path.read_text()) if path.exists() else {}


def insert_row(tmp_path: Path, **row: object) -> None:
    """An ERP job's INSERT into the daemon's store, from a connection of its own."""
    insert_rows(tmp_path, [row])


def insert_rows(tmp_path: Path, rows: list[dict[str, object]]) -> None:
    """An ERP job's batch of INSERTs (rows with the same columns), in one transaction of its
    own connection: a connection and commit per row took most of a 300-document test."""
    engine = create_engine(f"sqlite:///{tmp_path}/var/docrelay.db")
    columns, marks = ", ".join(rows[0]), ", ".join(f":{k}" for k in rows[0])
    with engine.begin() as conn:
        conn.execute(text(f"INSERT INTO docrelay_corrections ({columns}) VALUES ({marks})"), rows)
    engine.dispose()


def test_corrections_over_http_and_from_the_table_export_new_versions(tmp_path):
    config = configured(tmp_path)
    daemon = DaemonProcess(config, env=FAST_PICKUP).start()
    try:
        (tmp_path / "inbox" / "a.pdf").write_bytes(render_pdf(random_spec(11)))
        wait_until(lambda: export_of(tmp_path).get("version") == 1, 30, what="the export")
        url = f"{daemon.url}/api/v1/documents/1/corrections"
        refused = httpx.post(url, json={"values": {"total_amount": "1234.56"}})
        assert refused.status_code == 401
        answer = httpx.post(
            url,
            json={"values": {"total_amount": "1234.56"}, "note": "checked by AP"},
            headers={"Authorization": f"Bearer {TOKEN}"},
        )
        assert answer.status_code == 200, answer.text
        assert "exported again: outbox v2" in answer.json()["changed"]
        wait_until(lambda: export_of(tmp_path).get("version") == 2, 30, what="version 2")
        assert export_of(tmp_path)["fields"]["total_amount"] == "1234.56"

        insert_row(tmp_path, document_id=1, field="invoice_number", value="ERP-77")
        wait_until(lambda: export_of(tmp_path).get("version") == 3, 30, what="version 3")
        exported = export_of(tmp_path)
        assert exported["fields"]["invoice_number"] == "ERP-77"
        assert exported["fields"]["total_amount"] == "1234.56", "the earlier correction stays"
        rows = query(tmp_path, "SELECT state, reason FROM docrelay_corrections")
        assert [(r["state"], r["reason"]) for r in rows] == [("applied", None)]
        history = query(
            tmp_path,
            "SELECT actor FROM events WHERE document_id = 1 AND kind = 'corrected' ORDER BY id",
        )
        token_id = hashlib.sha256(TOKEN.encode()).hexdigest()[:8]
        assert [h["actor"] for h in history] == [f"api:{token_id}", "table"]
    finally:
        assert daemon.stop() == 0, daemon.log()
    assert TOKEN not in daemon.log()


def test_a_crash_between_applying_a_row_and_marking_it_applies_it_once(tmp_path):
    config = configured(tmp_path)
    crashing = DaemonProcess(
        config, env={**FAST_PICKUP, "DOCRELAY_CRASH_AT": "after_correction_apply"}
    ).start()
    (tmp_path / "inbox" / "a.pdf").write_bytes(render_pdf(random_spec(12)))
    wait_until(lambda: export_of(tmp_path).get("version") == 1, 30, what="the export")
    insert_row(tmp_path, document_id=1, field="invoice_number", value="ERP-9")
    assert crashing.wait_exit(30) == -9, crashing.log()
    rows = query(tmp_path, "SELECT state FROM docrelay_corrections")
    assert [r["state"] for r in rows] == ["pending"], "the mark died with the correction"
    assert [r["version"] for r in query(tmp_path, "SELECT version FROM deliveries")] == [1]

    daemon = DaemonProcess(config, env=FAST_PICKUP).start()
    try:
        wait_until(lambda: export_of(tmp_path).get("version") == 2, 30, what="version 2")
        assert export_of(tmp_path)["fields"]["invoice_number"] == "ERP-9"
        wait_until(
            lambda: (
                query(tmp_path, "SELECT state FROM docrelay_corrections")[0]["state"] == "applied"
            ),
            10,
            what="the row marked applied",
        )
    finally:
        assert daemon.stop() == 0, daemon.log()
    versions = query(tmp_path, "SELECT version FROM deliveries ORDER BY id")
    assert [v["version"] for v in versions] == [1, 2], "applied once"
    corrected = query(tmp_path, "SELECT COUNT(*) AS n FROM events WHERE kind = 'corrected'")
    assert corrected[0]["n"] == 1
