"""End to end downstream: ERPs and other destinations get each document exactly once, and
what an accountant does in the ERP flows back.

``test_r03_each_destination_gets_each_document_once_across_crashes_and_failing_answers``: the real
daemon exports to a real Tryton (behind a proxy that fails a fifth of the invoice writes,
half of them after Tryton did the work), a webhook receiver failing a fifth of its answers the
same way, and a table in PostgreSQL, while it is SIGKILLed at the crash points around each
push; each destination holds each document once.

The other test: what an accountant does in the ERP flows back.

The real daemon reads invoices from a folder with `docrelay emulate gini`, exports each to a
real Tryton (SQLite-backed, ``tests/tryton_server.py``) and to a folder. Then, in Tryton, one
invoice is corrected and posted, another cancelled: the daemon's follow job reads that back.
The posted values that differ become corrections — Gini's feedback log gets them and the
folder gets a new version — while Tryton itself is not written again; the cancelled one is a
rejected outcome in the history and the ``docrelay_deliveries`` view.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text

from connectors.destinations.tryton import parse_comment
from tests.daemon_proc import (
    DaemonProcess,
    drop_invoices,
    exported,
    free_port,
    query,
    toml_table,
    wait_until,
)
from tests.fault_proxy import FaultProxy
from tests.servers import serve
from tests.test_e2e_gini import Emulator, gini_config
from tests.tryton_server import ON_ONE_WORKER, server_or_skip
from tests.webhook_receiver import SECRET, create_app

pytestmark = [pytest.mark.e2e, ON_ONE_WORKER]


class Tryton:
    """The accountant's side: proteus over Tryton's RPC."""

    def __init__(self, server: Any) -> None:
        self.config = server.rpc()

    def call(self, model: str, method: str, *args: Any) -> Any:
        return getattr(self.config.get_proxy(model), method)(*args, self.config.context)

    def invoices_by_key(self) -> dict[str, int]:
        """docrelay's key → how many supplier invoices carry it."""
        rows = self.call(
            "account.invoice", "search_read", [("comment", "ilike", "%docrelay-key:%")], 0, None,
            None, ["comment"],
        )  # fmt: skip
        counts: dict[str, int] = {}
        for row in rows:
            key = parse_comment(row["comment"]).get("key")
            if key:
                counts[key] = counts.get(key, 0) + 1
        return counts

    def invoice(self, invoice_id: int) -> dict[str, Any]:
        (row,) = self.call(
            "account.invoice", "read", [invoice_id], ["state", "reference", "comment"]
        )
        return row


def delivered(root: Path) -> list[Any]:
    return query(
        root,
        "SELECT document_id, destination, downstream_ref FROM deliveries WHERE state = 'delivered'",
    )


def erp_config(root: Path, emulator: Any, server: Any) -> Path:
    config = gini_config(root, emulator, port=free_port(), sweep=1)
    erp = toml_table("[destinations.erp]", {**server.settings(), "follow_interval": 1})
    text = config.read_text().replace(
        'destinations = ["outbox"]', 'destinations = ["outbox", "erp"]'
    )
    config.write_text(text + erp)
    return config


def test_an_invoice_corrected_and_posted_in_tryton_teaches_gini_and_updates_the_folder(tmp_path):
    server = server_or_skip("sqlite")
    tryton = Tryton(server)
    emulator = Emulator(tmp_path, "--delay", "0.3")
    try:
        config = erp_config(tmp_path, emulator, server)
        daemon = DaemonProcess(config).start()
        try:
            specs = drop_invoices(tmp_path / "inbox", 3, prefix="erp", first_seed=805)
            assert [spec.currency for spec in specs.values()] == ["EUR", "GBP", "EUR"]
            wait_until(
                lambda: len(delivered(tmp_path)) == 5,
                90,
                what="the EUR invoices delivered to both destinations, the GBP one to the folder",
            )
            (refused,) = wait_until(
                lambda: query(
                    tmp_path, "SELECT document_id, state, error FROM docrelay_deliveries "
                    "WHERE destination = 'erp' AND state = 'dead'",
                ),
                30,
                what="the GBP invoice refused by Tryton",
            )  # fmt: skip
            assert "has no currency 'GBP'" in refused["error"]
            invoices = {
                r["document_id"]: int(r["downstream_ref"])
                for r in delivered(tmp_path)
                if r["destination"] == "erp"
            }
            assert refused["document_id"] not in invoices
            posted_doc, cancelled_doc = sorted(invoices)
            fixed = f"ERP-FIXED-{posted_doc}"
            tryton.call("account.invoice", "write", [invoices[posted_doc]], {"reference": fixed})
            tryton.call("account.invoice", "post", [invoices[posted_doc]])
            tryton.call("account.invoice", "cancel", [invoices[cancelled_doc]])

            outcomes = wait_until(
                lambda: (
                    rows := query(
                        tmp_path, "SELECT document_id, outcome, outcome_reason "
                        "FROM docrelay_deliveries WHERE destination = 'erp' "
                        "AND outcome IS NOT NULL ORDER BY document_id",
                    )
                ) and len(rows) == 2 and rows,
                30,
                what="both outcomes read back from Tryton",
            )  # fmt: skip
            assert [(r["outcome"], r["outcome_reason"]) for r in outcomes] == [
                ("posted", None),
                ("rejected", "cancelled in Tryton"),
            ]
            posted = json.loads(
                query(tmp_path, f"SELECT outcome_data FROM deliveries WHERE document_id = "
                      f"{posted_doc} AND destination = 'erp'")[0]["outcome_data"]
            )  # fmt: skip
            assert posted["invoice_number"] == fixed
            corrections = wait_until(
                lambda: (
                    rows := query(
                        tmp_path, "SELECT field, new_value, origin, state, error FROM feedback "
                        "WHERE kind = 'correction'",
                    )
                ) and all(r["state"] in ("sent", "refused") for r in rows) and rows,
                60,
                what="the ERP's corrections answered by Gini",
            )  # fmt: skip
            by_field = {r["field"]: r for r in corrections}
            number = by_field.pop("invoice_number")
            assert (number["new_value"], number["state"], number["origin"]) == (
                fixed, "sent", "erp:erp",
            )  # fmt: skip
            assert "total_amount" not in by_field, "Tryton's total is the document's"
            for name, row in by_field.items():  # amounts Gini did not read: added, refused
                assert (row["new_value"], row["origin"]) == (posted[name], "erp:erp"), row
                assert row["state"] == "sent" or "Unknown label" in row["error"], row
            gini_doc = next(d for d in emulator.documents() if d["feedback"])
            sent = [f for f in gini_doc["feedback"] if f["kind"] == "batch"][-1]["feedback"]
            assert sent["invoiceId"]["value"] == fixed, sent

            wait_until(
                lambda: query(
                    tmp_path,
                    "SELECT id FROM deliveries WHERE destination = 'outbox' AND version = 2 "
                    "AND state = 'delivered'",
                ),
                60,
                what="version 2 in the folder",
            )
            export = tmp_path / "outbox" / f"{posted_doc}.json"
            assert json.loads(export.read_text())["fields"]["invoice_number"] == fixed
            assert exported(tmp_path) == 3
            erp_versions = query(
                tmp_path, "SELECT DISTINCT version FROM deliveries WHERE destination = 'erp'"
            )
            assert [r["version"] for r in erp_versions] == [1], "Tryton is not written again"
            inv = tryton.invoice(invoices[posted_doc])
            assert (inv["state"], inv["reference"]) == ("posted", fixed)
            events = {
                r["kind"]
                for r in query(tmp_path, "SELECT kind FROM events WHERE kind LIKE 'downstream_%'")
            }
            assert events == {"downstream_posted", "downstream_rejected"}
            shown = subprocess.run(
                [sys.executable, "-m", "daemon.cli", "--config", str(config), "status"],
                capture_output=True, text=True, timeout=60, check=True,
            ).stdout  # fmt: skip
            assert f"document {refused['document_id']} to erp v1: dead: " in shown, shown
            assert "has no currency 'GBP'" in shown
            assert f"document {cancelled_doc} to erp v1: rejected: cancelled in Tryton" in shown
        finally:
            assert daemon.stop() == 0, daemon.log()
    finally:
        emulator.stop()


DOWNSTREAM_SEEDS = (801, 805, 807, 812, 815, 819, 821, 825, 828, 835, 836, 839)
"""Invoices in EUR or USD at 19 % and 7 %: what the test Tryton has currencies and taxes for."""
DESTINATIONS = ("outbox", "erp", "hook", "table")
CRASHES = ("after_delivery_push@3", "before_delivery@4", "after_delivery_push@7")
"""Each run of the daemon but the last dies at one of these (the n-th push of any destination)."""


def test_r03_each_destination_gets_each_document_once_across_crashes_and_failing_answers(
    tmp_path, pg_url
):
    server = server_or_skip("sqlite")
    tryton = Tryton(server)
    before = tryton.invoices_by_key()
    app = create_app()
    receiver = app.state.receiver
    receiver.fail_rate = 0.2
    proxy = FaultProxy(
        server.url, rate=0.2, matches=lambda body: b"model.account.invoice.create" in body
    )
    emulator = Emulator(tmp_path, "--delay", "0.3")
    try:
        with serve(app) as hook_url, proxy.running():
            config = gini_config(tmp_path, emulator, port=free_port())
            extra = (
                toml_table("[destinations.erp]", {**server.settings(), "url": proxy.url})
                + toml_table("[destinations.hook]", {
                    "kind": "webhook", "url": f"{hook_url}/hook", "secret": SECRET,
                    "max_retries": 0, "timeout": 10,
                })
                + toml_table("[destinations.table]", {
                    "kind": "sql", "url": pg_url, "table": "invoices",
                })
            )  # fmt: skip
            routed = ", ".join(f'"{name}"' for name in DESTINATIONS)
            text_ = config.read_text().replace(
                'destinations = ["outbox"]', f"destinations = [{routed}]"
            )
            config.write_text(text_ + extra)
            inbox = tmp_path / "inbox"
            for n, seed in enumerate(DOWNSTREAM_SEEDS):
                drop_invoices(inbox, 1, prefix=f"down{n}", first_seed=seed)
            for crash in CRASHES:
                daemon = DaemonProcess(config, {"DOCRELAY_CRASH_AT": crash})
                daemon.start(wait_ready=False)
                assert daemon.wait_exit(120) == -9, f"{crash} reached; log:\n{daemon.log()}"
            daemon = DaemonProcess(config).start()
            try:
                total = len(DOWNSTREAM_SEEDS) * len(DESTINATIONS)
                wait_until(
                    lambda: len(query(tmp_path, "SELECT id FROM deliveries WHERE state IN "
                                      "('delivered', 'dead')")) == total,
                    180,
                    what="every delivery ended",
                )  # fmt: skip
            finally:
                assert daemon.stop() == 0, daemon.log()
            deliveries = query(
                tmp_path, "SELECT destination, idempotency_key, state, error FROM deliveries"
            )
            assert [d for d in deliveries if d["state"] != "delivered"] == []
            keys = {
                name: sorted(d["idempotency_key"] for d in deliveries if d["destination"] == name)
                for name in DESTINATIONS
            }
            docs = len(DOWNSTREAM_SEEDS)
            made = {
                key: count
                for key, count in tryton.invoices_by_key().items()
                if before.get(key) != count
            }
            assert sorted(made) == keys["erp"] and set(made.values()) == {1}, made
            assert sorted(receiver.records) == keys["hook"]
            assert {r["version"] for r in receiver.records.values()} == {1}
            engine = create_engine(pg_url.replace("postgresql:", "postgresql+psycopg:", 1)
                                   if "+" not in pg_url else pg_url)  # fmt: skip
            try:
                with engine.connect() as conn:
                    rows = conn.execute(
                        text("SELECT document_id, COUNT(*) FROM invoices GROUP BY document_id")
                    ).all()
            finally:
                engine.dispose()
            assert len(rows) == docs and {count for _, count in rows} == {1}
            assert exported(tmp_path) == docs
            assert proxy.faults["before"] and proxy.faults["after"], proxy.faults
            assert receiver.faults["before"] and receiver.faults["after"], receiver.faults
            retried = query(
                tmp_path, "SELECT COUNT(DISTINCT delivery_id) AS n FROM events "
                "WHERE kind = 'delivery' AND to_state = 'failed'",
            )  # fmt: skip
            assert retried[0]["n"] >= 2, "failed answers were retried"
    finally:
        emulator.stop()
