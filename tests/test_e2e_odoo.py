"""End to end: the real daemon delivering to `docrelay emulate odoo` in its own process, with
faults injected (lost answers to creates among them), generated invoices dropped in the inbox.

Every invoice must end as exactly one draft vendor bill with its PDF attached: the engine's
look-up by our key settles each push whose answer was lost.
"""

from __future__ import annotations

import base64
from decimal import Decimal
from pathlib import Path

import httpx
import pytest

from connectors.destinations.invoicing import compact_vat
from tests.daemon_proc import (
    DaemonProcess,
    EmulatorProcess,
    toml_table,
    wait_until,
    write_config,
)
from tests.invoices import random_spec, write_invoice

pytestmark = pytest.mark.e2e

SEEDED_RATES = {Decimal(19), Decimal(7), Decimal(0), Decimal(20), Decimal(10)}


def specs(count: int) -> dict[str, object]:
    """``count`` invoices whose tax rates the emulator's purchase taxes cover."""
    found: dict[str, object] = {}
    seed = 0
    while len(found) < count:
        spec = random_spec(seed, lang="en")
        if {rate for *_, rate in spec.lines} <= SEEDED_RATES:
            found[f"odoo-{seed}.pdf"] = spec
        seed += 1
    return found


def records(emulator: EmulatorProcess, model: str) -> list[dict]:
    response = httpx.get(
        f"{emulator.url}/_emulator/records", params={"model": model, "datas": 1}, timeout=30
    )
    return response.json()["models"][model]


def test_invoices_become_one_vendor_bill_each_through_faults(tmp_path: Path):
    emulator = EmulatorProcess(
        "odoo",
        "--fail-rate",
        "0.2",
        "--seed",
        "5",
        "--slow",
        "0.5",
        "--no-vat-check",
        log=tmp_path / "emulator.log",
    )
    try:
        erp = toml_table(
            "[destinations.erp]",
            {
                "kind": "odoo",
                "url": emulator.url,
                "database": "odoo",
                "api_key": "secret",
                "timeout": 5,
                "max_retries": 1,
            },
        )
        config = write_config(tmp_path, extra=erp)
        config.write_text(
            config.read_text().replace('destinations = ["outbox"]', 'destinations = ["erp"]')
        )
        inbox = tmp_path / "inbox"
        inbox.mkdir()
        invoices = specs(5)
        pdfs = {}
        for name, spec in invoices.items():
            part = inbox / f"{name}.part"
            write_invoice(part, spec)
            pdfs[name] = part.read_bytes()
            part.rename(inbox / name)
        daemon = DaemonProcess(config).start()
        try:
            wait_until(
                lambda: len(records(emulator, "ir.attachment")) >= len(invoices),
                90,
                what="an attachment per invoice",
            )
            wait_until(
                lambda: (
                    sorted(p.name for p in (inbox / "processed").glob("*.pdf")) == sorted(invoices)
                ),
                30,
                what="originals released",
            )
        finally:
            assert daemon.stop() == 0, daemon.log()
        assert "Traceback" not in daemon.log()
        bills = [m for m in records(emulator, "account.move") if m["move_type"] == "in_invoice"]
        attachments = records(emulator, "ir.attachment")
        assert len(bills) == len(invoices), "one bill per invoice, none twice"
        assert len(attachments) == len(invoices)
        by_ref = {bill["ref"]: bill for bill in bills}
        for name, spec in invoices.items():
            bill = by_ref[spec.invoice_number]
            assert bill["state"] == "draft"
            assert bill["invoice_date"] == spec.issue_date.isoformat()
            assert Decimal(str(bill["amount_untaxed"])) == spec.net_amount
            total = Decimal(str(bill["amount_total"]))  # tax rounded per line, not per rate
            assert abs(total - spec.total_amount) <= Decimal("0.01") * len(spec.lines)
            (attachment,) = [a for a in attachments if a["res_id"] == bill["id"]]
            assert base64.b64decode(attachment["datas"]) == pdfs[name]
        partners = {p["id"]: p for p in records(emulator, "res.partner")}
        vats = [p["vat"] for p in partners.values() if p["vat"]]
        assert len(vats) == len(set(vats)), "no supplier twice"
        for spec in invoices.values():
            partner = partners[by_ref[spec.invoice_number]["partner_id"]]
            # by VAT id, else by name (a known name with a VAT id Odoo does not have yet)
            assert partner["vat"] == compact_vat(spec.supplier_vat_id) or (
                partner["name"].casefold() == spec.supplier_name.casefold()
            )
    finally:
        emulator.stop()
