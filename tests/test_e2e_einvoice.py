"""End to end: the real daemon, a folder with e-invoices (Factur-X PDF, CII and UBL XML) and a
printed invoice, routed to ``einvoice`` with ``local`` as the fallback.

The e-invoices are read from their XML (``vendor = einvoice`` in SQL, values exactly as the XML
says); the printed one carries no XML, is refused by ``einvoice`` with the reason kept in its
history, and is read by ``local``. All four are exported. On SQLite and PostgreSQL.
"""

from __future__ import annotations

import json
import shutil
from datetime import date
from decimal import Decimal

import pytest
from sqlalchemy import create_engine, text

from tests.daemon_proc import DaemonProcess, wait_until, write_config
from tests.einvoices import FIXTURES
from tests.invoices import expected_fields, random_spec, render_pdf
from tests.test_einvoice import expected

pytestmark = pytest.mark.e2e

EINVOICES = {
    "EN16931_Einfach.pdf": ("fx", FIXTURES / "FX" / "EN16931_Einfach.pdf"),
    "EN16931_Miete.cii.xml": ("cii", FIXTURES / "CII" / "EN16931_Miete.cii.xml"),
    "EN16931_Rabatte.ubl.xml": ("ubl", FIXTURES / "UBL" / "EN16931_Rabatte.ubl.xml"),
}
PRINTED = "printed-invoice.pdf"


def _value(value: object, like: object) -> object:
    if value is None:
        return None
    if isinstance(like, Decimal):
        return Decimal(str(value))
    if isinstance(like, date):
        return date.fromisoformat(str(value)[:10])
    return value


def test_e_invoices_are_read_from_their_xml_and_a_printed_one_falls_back_to_local(
    tmp_path, store_url
):
    route = 'fallback = "local"\n\n[vendors.einvoice]\nkind = "einvoice"\n'
    config = write_config(tmp_path, store_url=store_url, vendor="einvoice", extra=route)
    inbox, outbox = tmp_path / "inbox", tmp_path / "outbox"
    inbox.mkdir()
    for name, (_, source) in EINVOICES.items():
        shutil.copyfile(source, inbox / f"{name}.part")
        (inbox / f"{name}.part").rename(inbox / name)
    spec = random_spec(4)
    (inbox / f"{PRINTED}.part").write_bytes(render_pdf(spec))
    (inbox / f"{PRINTED}.part").rename(inbox / PRINTED)

    daemon = DaemonProcess(config).start()
    try:
        wait_until(lambda: len(list(outbox.glob("*.json"))) == 4, 60, what="four exports")
    finally:
        daemon.stop()

    engine = create_engine(store_url)

    def rows(sql: str) -> list:
        with engine.connect() as conn:
            return list(conn.execute(text(sql)).mappings())

    docs = {r["filename"]: r for r in rows("SELECT * FROM docrelay_documents")}
    assert set(docs) == {*EINVOICES, PRINTED}
    invoices = {r["document_id"]: r for r in rows("SELECT * FROM docrelay_invoices")}
    exports = {int(p.stem): json.loads(p.read_text()) for p in outbox.glob("*.json")}
    for name, (kind, source) in EINVOICES.items():
        doc = docs[name]
        assert (doc["state"], doc["vendor"]) == ("done", "einvoice"), doc
        row, want = invoices[doc["document_id"]], expected(kind, source)
        assert row["vendor"] == "einvoice"
        for field in ("invoice_number", "issue_date", "total_amount", "net_amount",
                      "tax_amount", "currency", "supplier_name", "supplier_vat_id"):  # fmt: skip
            assert _value(row[field], want[field]) == want[field], (name, field)
        assert exports[doc["document_id"]]["fields"]["invoice_number"] == want["invoice_number"]
    einvoice_fields = rows(
        "SELECT DISTINCT document_id FROM docrelay_fields WHERE vendor = 'einvoice'"
    )
    assert {r["document_id"] for r in einvoice_fields} == {
        docs[name]["document_id"] for name in EINVOICES
    }

    printed = docs[PRINTED]
    assert (printed["state"], printed["vendor"]) == ("done", "local")
    row = invoices[printed["document_id"]]
    for field in ("invoice_number", "total_amount", "supplier_name"):
        want = expected_fields(spec)[field]
        assert _value(row[field], want) == want, field
    subs = rows(
        f"SELECT profile, role, state, error FROM submissions "
        f"WHERE document_id = {printed['document_id']} ORDER BY id",
    )
    assert [(s["profile"], s["role"], s["state"]) for s in subs] == [
        ("einvoice", "primary", "rejected"),
        ("local", "fallback", "done"),
    ]
    assert "no embedded e-invoice" in subs[0]["error"]
    history = rows(f"SELECT message FROM events WHERE document_id = {printed['document_id']}")
    assert any("no embedded e-invoice" in (e["message"] or "") for e in history)
    assert printed["document_id"] in exports
    engine.dispose()
