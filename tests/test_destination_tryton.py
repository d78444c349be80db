"""The Tryton destination against a real trytond (``account_invoice``) on SQLite and on
PostgreSQL: every outcome is read back over RPC, as a person would see it in Tryton.

One server per backend serves the whole session (``tests.tryton_server``); each test makes
its own suppliers and keys, so tests share the database without seeing each other's records.
"""

from __future__ import annotations

import secrets
import threading
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from connectors import registry
from connectors.base import (
    CanonicalResult,
    DownstreamState,
    ExportPayload,
    FieldValue,
    LineItem,
)
from connectors.destinations.invoicing import compact_vat, implied_rate, line_price
from connectors.destinations.tryton import (
    TrytonDestination,
    TrytonDestinationSettings,
    parse_comment,
)
from connectors.errors import AuthFailed, TerminalError, TransientError
from daemon import config as config_mod
from tests.conformance.harness import context
from tests.tryton_server import (  # noqa: F401
    ON_ONE_WORKER,
    PASSWORD,
    TrytonServer,
    free_port,
    tryton,
)

pytestmark = ON_ONE_WORKER

PDF = b"%PDF-1.4\n% docrelay test original\n" + bytes(range(256)) + b"\n%%EOF\n"

VALID_VATS = ["DE136695976", "DE129273398", "DE812526315", "NL004495445B01", "ATU13585627"]
"""Real-looking EU VAT ids with valid check digits (Tryton validates them)."""


def token() -> str:
    return secrets.token_hex(4)


def fields(**values: Any) -> list[FieldValue]:
    out = []
    for name, value in values.items():
        if isinstance(value, date):
            out.append(FieldValue(name, value.isoformat(), value_date=value))
        elif isinstance(value, Decimal):
            out.append(FieldValue(name, str(value), value_number=value))
        elif value is not None:
            out.append(FieldValue(name, value))
    return out


def payload(
    tmp_path: Path,
    *,
    version: int = 1,
    lines: list[LineItem] | None = None,
    original: bool = True,
    **values: Any,
) -> ExportPayload:
    pdf = tmp_path / "original.pdf"
    pdf.write_bytes(PDF)
    values.setdefault("invoice_number", f"R-{token()}")
    values.setdefault("issue_date", date.today())
    values.setdefault("currency", "EUR")
    values.setdefault("net_amount", Decimal("10.00"))
    return ExportPayload(
        document_id=7,
        sha256="ab" * 32,
        filename="supplier-invoice.pdf",
        mime_type="application/pdf",
        source="scans",
        source_ref="supplier-invoice.pdf",
        received_at=datetime(2026, 12, 1, tzinfo=UTC),
        vendor="local",
        vendor_kind="local",
        vendor_ref="local:ab",
        submission_id=1,
        extraction_id=1,
        result=CanonicalResult(fields=fields(**values), line_items=lines or []),
        version=version,
        original=pdf if original else None,
    )


def two_lines(factor: int = 1) -> list[LineItem]:
    return [
        LineItem(
            1,
            description="Widgets",
            quantity=Decimal(4),
            unit_price=Decimal("12.50") * factor,
            tax_rate=Decimal(19),
        ),
        LineItem(
            2, description="Books", quantity=Decimal(1), net_amount=Decimal(20), tax_rate=Decimal(7)
        ),
    ]


def destination(server: TrytonServer, tmp_path: Path, **overrides: Any) -> TrytonDestination:
    settings = TrytonDestinationSettings.model_validate(server.settings(**overrides))
    return TrytonDestination(settings, context("erp", tmp_path))


class Reader:
    """What Tryton holds, read over RPC with proteus (basic auth, like a script would)."""

    def __init__(self, server: TrytonServer) -> None:
        self.config = server.rpc()

    def call(self, model: str, method: str, *args: Any) -> Any:
        return getattr(self.config.get_proxy(model), method)(*args, self.config.context)

    def invoices(self, key: str) -> list[int]:
        rows = self.call(
            "account.invoice", "search_read", [("comment", "ilike", f"%{key}%")], 0, None, None,
            ["comment"],
        )  # fmt: skip
        return [r["id"] for r in rows if parse_comment(r["comment"]).get("key") == key]

    def invoice(self, invoice_id: int) -> dict[str, Any]:
        (inv,) = self.call(
            "account.invoice", "read", [invoice_id],
            ["type", "state", "party", "reference", "invoice_date", "currency", "comment",
             "untaxed_amount", "tax_amount", "total_amount", "lines", "account"],
        )  # fmt: skip
        inv["currency_code"] = self.call("currency.currency", "read", [inv["currency"]], ["code"])[
            0
        ]["code"]
        inv["lines"] = self.call(
            "account.invoice.line", "read", inv["lines"],
            ["type", "description", "quantity", "unit_price", "account", "taxes", "amount"],
        )  # fmt: skip
        for line in inv["lines"]:
            line["tax_names"] = sorted(
                t["name"] for t in self.call("account.tax", "read", line["taxes"], ["name"])
            )
            if line["account"]:
                line["account_code"] = self.call(
                    "account.account", "read", [line["account"]], ["code"]
                )[0]["code"]
        inv["lines"].sort(key=lambda line: line["id"])
        inv["attachments"] = self.call(
            "ir.attachment", "search_read",
            [("resource", "=", f"account.invoice,{invoice_id}")], 0, None, None,
            ["name", "data", "type"],
        )  # fmt: skip
        return inv

    def party(self, party_id: int) -> dict[str, Any]:
        (party,) = self.call("party.party", "read", [party_id], ["name", "identifiers"])
        party["vats"] = [
            (i["type"], i["code"])
            for i in self.call("party.identifier", "read", party["identifiers"], ["type", "code"])
        ]
        return party

    def parties(self, name: str) -> list[int]:
        return self.call("party.party", "search", [("name", "=", name)], 0, None, None)

    def make_party(self, name: str, vat: str | None = None) -> int:
        values: dict[str, Any] = {"name": name, "addresses": [("create", [{}])]}
        if vat:
            values["identifiers"] = [("create", [{"type": "eu_vat", "code": vat}])]
        (made,) = self.call("party.party", "create", [values])
        return made


def unused_vat(reader: Reader) -> str:
    """A valid VAT id no party has yet (the shared database keeps earlier tests' parties)."""
    for vat in VALID_VATS:
        if not reader.call("party.identifier", "search", [("code", "=", vat)], 0, 1, None):
            return vat
    pytest.fail("every test VAT id is taken")


# --------------------------------------------------------------------------- parties


def test_the_party_is_matched_by_vat_id_before_the_name(tryton, tmp_path):
    reader = Reader(tryton)
    vat = unused_vat(reader)
    known = reader.make_party(f"Known by VAT {token()}", vat)
    dest = destination(tryton, tmp_path)
    spaced = f"{vat[:2]} {vat[2:5]} {vat[5:8]}.{vat[8:]}"
    receipt = dest.deliver(
        payload(tmp_path, supplier_name="Another Name Ltd", supplier_vat_id=spaced), f"k-{token()}"
    )
    assert reader.invoice(int(receipt.ref))["party"] == known
    assert receipt.data["party_created"] is False
    assert reader.parties("Another Name Ltd") == []
    dest.close()


def test_the_party_is_matched_by_name_whatever_the_case(tryton, tmp_path):
    reader = Reader(tryton)
    name = f"Müller & Söhne {token()} GmbH"
    known = reader.make_party(name)
    dest = destination(tryton, tmp_path)
    receipt = dest.deliver(payload(tmp_path, supplier_name=name.upper()), f"k-{token()}")
    assert reader.invoice(int(receipt.ref))["party"] == known
    dest.close()


def test_a_missing_party_is_created_with_its_vat_id_once(tryton, tmp_path):
    reader = Reader(tryton)
    vat, name = unused_vat(reader), f"New Supplier {token()}"
    dest = destination(tryton, tmp_path)
    doc = payload(tmp_path, supplier_name=name, supplier_vat_id=vat)
    first, second = dest.deliver(doc, f"k-{token()}"), dest.deliver(doc, f"k-{token()}")
    assert first.data["party_created"] is True and second.data["party_created"] is False
    (party_id,) = reader.parties(name)
    assert reader.party(party_id)["vats"] == [("eu_vat", vat)]
    assert reader.invoice(int(second.ref))["party"] == party_id
    dest.close()


def test_without_create_parties_an_unknown_supplier_is_refused(tryton, tmp_path):
    name = f"Unknown {token()}"
    dest = destination(tryton, tmp_path, create_parties=False)
    with pytest.raises(TerminalError, match="no party in Tryton"):
        dest.deliver(payload(tmp_path, supplier_name=name), f"k-{token()}")
    assert Reader(tryton).parties(name) == []
    dest.close()


def test_a_document_without_supplier_needs_the_fallback_party(tryton, tmp_path):
    key = f"k-{token()}"
    dest = destination(tryton, tmp_path)
    with pytest.raises(TerminalError, match="names no supplier"):
        dest.deliver(payload(tmp_path, net_amount=Decimal(10)), key)
    fallback = f"Unknown supplier {token()}"
    dest = destination(tryton, tmp_path, fallback_party=fallback)
    receipt = dest.deliver(payload(tmp_path, net_amount=Decimal(10)), key)
    (party_id,) = Reader(tryton).parties(fallback)
    assert Reader(tryton).invoice(int(receipt.ref))["party"] == party_id
    dest.close()


# --------------------------------------------------------------------------- invoice content


def test_a_draft_supplier_invoice_with_lines_taxes_and_the_pdf(tryton, tmp_path):
    reader = Reader(tryton)
    key = f"docrelay-7-{token()}"
    dest = destination(tryton, tmp_path)
    doc = payload(
        tmp_path,
        lines=[*two_lines(), LineItem(3, description="Delivered in two parcels")],
        supplier_name=f"Lines {token()}",
        invoice_number="RE-2026-0815",
        issue_date=date.today().replace(day=1),
        currency="USD",
    )
    receipt = dest.deliver(doc, key)
    assert reader.invoices(key) == [int(receipt.ref)]
    inv = reader.invoice(int(receipt.ref))
    assert inv["type"] == "in" and inv["state"] == "draft"
    assert inv["reference"] == "RE-2026-0815"
    assert inv["invoice_date"] == date.today().replace(day=1)
    assert inv["currency_code"] == "USD"
    widgets, books, note = inv["lines"]
    assert (widgets["description"], widgets["quantity"], widgets["unit_price"]) == (
        "Widgets", 4.0, Decimal("12.5000"),
    )  # fmt: skip
    assert widgets["tax_names"] == ["VAT 19%"] and widgets["account_code"] == "2.2.1"
    assert books["unit_price"] == Decimal(20) and books["tax_names"] == ["VAT 7%"]
    assert note["type"] == "comment" and note["description"] == "Delivered in two parcels"
    assert inv["untaxed_amount"] == Decimal("70.00")
    assert inv["tax_amount"] == Decimal("10.90")  # 50 x 19 % + 20 x 7 %
    assert inv["total_amount"] == Decimal("80.90")
    (attachment,) = inv["attachments"]
    assert attachment["name"] == "supplier-invoice.pdf" and attachment["data"] == PDF
    assert receipt.data["attachment_id"] == attachment["id"]
    assert parse_comment(inv["comment"]) == {"key": key, "version": "1"}
    dest.close()


def test_without_line_items_one_line_carries_the_net_amount(tryton, tmp_path):
    reader = Reader(tryton)
    dest = destination(tryton, tmp_path)
    doc = payload(
        tmp_path,
        supplier_name=f"One line {token()}",
        invoice_number="A-1",
        net_amount=Decimal("200.00"),
        tax_amount=Decimal("14.00"),
        total_amount=Decimal("214.00"),
    )
    inv = reader.invoice(int(dest.deliver(doc, f"k-{token()}").ref))
    (line,) = inv["lines"]
    assert line["account_code"] == "2.2.1" and line["quantity"] == 1.0
    assert line["unit_price"] == Decimal(200) and line["tax_names"] == ["VAT 7%"]
    assert line["description"] == "Invoice A-1"
    assert (inv["untaxed_amount"], inv["tax_amount"], inv["total_amount"]) == (
        Decimal("200.00"), Decimal("14.00"), Decimal("214.00"),
    )  # fmt: skip
    dest.close()


def test_lines_read_without_a_rate_get_the_one_the_documents_total_implies(tryton, tmp_path):
    reader = Reader(tryton)
    dest = destination(tryton, tmp_path)
    lines = [
        LineItem(1, description="Paper", quantity=Decimal(3), unit_price=Decimal("20.00")),
        LineItem(2, description="Toner", quantity=Decimal(1), net_amount=Decimal("40.00")),
    ]
    doc = payload(
        tmp_path, supplier_name=f"Untaxed {token()}", lines=lines, net_amount=None,
        total_amount=Decimal("119.00"),
    )  # fmt: skip
    inv = reader.invoice(int(dest.deliver(doc, f"k-{token()}").ref))
    assert [line["tax_names"] for line in inv["lines"]] == [["VAT 19%"], ["VAT 19%"]]
    assert (inv["untaxed_amount"], inv["total_amount"]) == (Decimal(100), Decimal(119))
    odd = payload(
        tmp_path, supplier_name=f"Odd {token()}", lines=lines, net_amount=None,
        total_amount=Decimal("113.37"),
    )  # fmt: skip
    inv = reader.invoice(int(dest.deliver(odd, f"k-{token()}").ref))
    assert [line["tax_names"] for line in inv["lines"]] == [[], []], "no rate fits: no tax"
    dest.close()


def test_follow_tells_draft_posted_cancelled_and_deleted_apart(tryton, tmp_path):
    reader = Reader(tryton)
    dest = destination(tryton, tmp_path)
    receipts = [
        dest.deliver(payload(tmp_path, supplier_name=f"Follow {token()}", lines=two_lines()),
                     f"k-{token()}")
        for _ in range(3)
    ]  # fmt: skip
    draft = dest.follow(receipts[0])
    assert (draft.state, draft.values) == (DownstreamState.PENDING, {})
    posted_id = int(receipts[0].ref)
    reader.call("account.invoice", "write", [posted_id], {"reference": "FIXED-IN-TRYTON"})
    reader.call("account.invoice", "post", [posted_id])
    posted = dest.follow(receipts[0])
    assert posted.state == DownstreamState.POSTED
    assert posted.values == {
        "invoice_number": "FIXED-IN-TRYTON", "issue_date": date.today().isoformat(),
        "currency": "EUR", "net_amount": "70.00", "tax_amount": "10.90",
        "total_amount": "80.90",
    }  # fmt: skip
    reader.call("account.invoice", "cancel", [int(receipts[1].ref)])
    cancelled = dest.follow(receipts[1])
    assert (cancelled.state, cancelled.reason) == (DownstreamState.REJECTED, "cancelled in Tryton")
    reader.call("account.invoice", "delete", [int(receipts[2].ref)])
    deleted = dest.follow(receipts[2])
    assert (deleted.state, deleted.reason) == (DownstreamState.REJECTED, "deleted in Tryton")
    dest.close()


def test_a_mapped_rate_uses_the_named_tax_and_an_unknown_rate_is_refused(tryton, tmp_path):
    reader = Reader(tryton)
    line = LineItem(
        1, description="Odd rate", quantity=Decimal(1), unit_price=Decimal(10), tax_rate=Decimal(16)
    )
    dest = destination(tryton, tmp_path)
    with pytest.raises(TerminalError, match="no percentage supplier tax of 16 %"):
        dest.deliver(payload(tmp_path, lines=[line], supplier_name="Rates"), f"k-{token()}")
    dest = destination(tryton, tmp_path, taxes={"16": "VAT 19%"})
    receipt = dest.deliver(payload(tmp_path, lines=[line], supplier_name="Rates"), f"k-{token()}")
    assert reader.invoice(int(receipt.ref))["lines"][0]["tax_names"] == ["VAT 19%"]
    dest = destination(tryton, tmp_path, taxes={"16": "No such tax"})
    with pytest.raises(TerminalError, match="no supplier tax named 'No such tax'"):
        dest.deliver(payload(tmp_path, lines=[line], supplier_name="Rates"), f"k-{token()}")
    dest.close()


# --------------------------------------------------------------------------- repeats, versions


def test_a_repeat_makes_one_invoice_and_a_new_version_rewrites_the_draft(tryton, tmp_path):
    reader = Reader(tryton)
    key, name = f"docrelay-8-{token()}", f"Versions {token()}"
    dest = destination(tryton, tmp_path)
    first = dest.deliver(payload(tmp_path, lines=two_lines(), supplier_name=name), key)
    again = dest.deliver(payload(tmp_path, lines=two_lines(), supplier_name=name), key)
    assert again.ref == first.ref and reader.invoices(key) == [int(first.ref)]
    assert len(reader.invoice(int(first.ref))["attachments"]) == 1
    v2 = payload(
        tmp_path, version=2, lines=two_lines(2)[:1], supplier_name=name, invoice_number="R-FIX"
    )
    assert dest.lookup(v2, key) is None  # v1 is there, not v2
    updated = dest.deliver(v2, key)
    assert updated.ref == first.ref and reader.invoices(key) == [int(first.ref)]
    inv = reader.invoice(int(first.ref))
    assert inv["reference"] == "R-FIX" and len(inv["lines"]) == 1
    assert inv["lines"][0]["unit_price"] == Decimal(25) and inv["untaxed_amount"] == 100
    assert parse_comment(inv["comment"])["version"] == "2"
    assert len(inv["attachments"]) == 1
    # A late repeat of version 1 leaves version 2 alone.
    dest.deliver(payload(tmp_path, lines=two_lines(), supplier_name=name), key)
    assert reader.invoice(int(first.ref))["reference"] == "R-FIX"
    dest.close()


def test_lookup_finds_the_invoice_by_key_and_only_by_the_whole_key(tryton, tmp_path):
    key = f"docrelay-9-{token()}"
    dest = destination(tryton, tmp_path)
    doc = payload(tmp_path, supplier_name=f"Lookup {token()}", net_amount=Decimal(5))
    assert dest.lookup(doc, key) is None
    receipt = dest.deliver(doc, key)
    found = dest.lookup(doc, key)
    assert found is not None and found.ref == receipt.ref
    assert found.data["attachment_id"] == receipt.data["attachment_id"]
    assert dest.lookup(doc, key[:-1]) is None  # a prefix of the key is another key
    assert dest.lookup(doc, f"{key}0") is None
    assert dest.lookup(doc, f"unknown-{token()}") is None
    odd = f"docrelay-9-{token()}-ä_%\\"  # LIKE's wildcards and escape, a non-ASCII letter
    assert dest.lookup(doc, odd) is None
    made = dest.deliver(doc, odd)
    assert made.ref != receipt.ref and dest.lookup(doc, odd).ref == made.ref
    dest.close()


def test_a_crash_before_the_attachment_is_completed_by_the_repeat(tryton, tmp_path):
    reader = Reader(tryton)
    key = f"k-{token()}"
    dest = destination(tryton, tmp_path)
    doc = payload(tmp_path, supplier_name=f"Crash {token()}", net_amount=Decimal(5))
    receipt = dest.deliver(doc, key)
    reader.call("ir.attachment", "delete", [receipt.data["attachment_id"]])
    assert dest.lookup(doc, key) is None  # not all there: the engine pushes again
    again = dest.deliver(doc, key)
    assert again.ref == receipt.ref
    (attachment,) = reader.invoice(int(receipt.ref))["attachments"]
    assert attachment["data"] == PDF
    dest.close()


def test_a_posted_invoice_is_never_changed(tryton, tmp_path):
    reader = Reader(tryton)
    key = f"k-{token()}"
    dest = destination(tryton, tmp_path)
    doc = payload(tmp_path, supplier_name=f"Posted {token()}", lines=two_lines())
    receipt = dest.deliver(doc, key)
    reader.call("account.invoice", "post", [int(receipt.ref)])
    assert reader.invoice(int(receipt.ref))["state"] == "posted"
    assert dest.deliver(doc, key).ref == receipt.ref  # the same version: already there
    v2 = payload(tmp_path, version=2, supplier_name="Someone Else", lines=two_lines(3))
    with pytest.raises(TerminalError, match=r"is posted in Tryton; version 2 .* is not applied"):
        dest.deliver(v2, key)
    inv = reader.invoice(int(receipt.ref))
    assert inv["untaxed_amount"] == Decimal(70) and parse_comment(inv["comment"])["version"] == "1"
    dest.close()


def test_threads_deliver_at_once_with_one_new_party(tryton, tmp_path):
    reader = Reader(tryton)
    name = f"Threads {token()}"
    dest = destination(tryton, tmp_path)
    keys = [f"k-{token()}" for _ in range(8)]
    receipts: dict[str, str] = {}
    errors: list[BaseException] = []

    def push(key: str) -> None:
        try:
            receipts[key] = dest.deliver(
                payload(tmp_path, supplier_name=name, lines=two_lines()), key
            ).ref
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=push, args=(key,)) for key in keys]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert len(set(receipts.values())) == len(keys)
    assert all(reader.invoices(key) == [int(receipts[key])] for key in keys)
    assert len(reader.parties(name)) == 1
    dest.close()


# --------------------------------------------------------------------------- errors


def test_a_tryton_validation_error_is_final_and_carries_its_message(tryton, tmp_path):
    dest = destination(tryton, tmp_path, line_account="1.1.1")  # cash: not an expense account
    with pytest.raises(TerminalError, match="not valid according to its domain") as caught:
        dest.deliver(payload(tmp_path, supplier_name="Bad Account", lines=two_lines()), "k-bad")
    assert "Tryton says" in str(caught.value)
    dest = destination(tryton, tmp_path)
    name = f"Bad VAT {token()}"
    doc = payload(tmp_path, supplier_name=name, supplier_vat_id="DE123456789", lines=two_lines())
    with pytest.raises(TerminalError, match='European VAT Number "DE123456789"'):
        dest.deliver(doc, f"k-{token()}")
    with pytest.raises(TerminalError, match=r"no open account with code '9\.9\.9'"):
        destination(tryton, tmp_path, line_account="9.9.9").deliver(
            payload(tmp_path, supplier_name=name), f"k-{token()}"
        )
    with pytest.raises(TerminalError, match="no currency 'XYZ'"):
        dest.deliver(payload(tmp_path, supplier_name=name, currency="XYZ"), f"k-{token()}")
    dest.close()


def test_a_wrong_password_is_auth_failed_without_the_password(tryton, tmp_path):
    dest = destination(tryton, tmp_path, password="not-the-password")
    with pytest.raises(AuthFailed, match="refused the login") as caught:
        dest.deliver(payload(tmp_path, supplier_name="X"), "k-auth")
    assert "not-the-password" not in str(caught.value)
    with pytest.raises(AuthFailed):
        dest.probe()


def test_an_expired_session_is_renewed(tryton, tmp_path):
    dest = destination(tryton, tmp_path)
    dest.probe()
    session = dest._session()
    session.logout()  # Tryton forgets the token, as after its timeout
    receipt = dest.deliver(payload(tmp_path, supplier_name=f"Expiry {token()}"), f"k-{token()}")
    assert receipt.ref
    dest.close()


def test_the_probe_reads_and_names_what_it_found(tryton, tmp_path):
    lines = destination(tryton, tmp_path, taxes={"19": "VAT 19%"}).probe()
    assert any("line account 2.2.1" in line for line in lines)
    assert any("tax for 19 %" in line for line in lines)
    assert any("company" in line for line in lines)


def test_a_server_that_is_down_is_transient(tmp_path):
    settings = TrytonDestinationSettings(
        url=f"http://127.0.0.1:{free_port()}/",
        database="tryton",
        password=PASSWORD,
        line_account="2.2.1",
        timeout=2,
    )
    dest = TrytonDestination(settings, context("erp", tmp_path))
    with pytest.raises(TransientError, match="ConnectionRefusedError"):
        dest.deliver(payload(tmp_path, supplier_name="Down"), "k-down")
    with pytest.raises(TransientError):
        dest.probe()


def test_a_server_that_does_not_answer_times_out_as_transient(tmp_path):
    import socket

    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)  # accepts the connection, never answers
        settings = TrytonDestinationSettings(
            url=f"http://127.0.0.1:{listener.getsockname()[1]}/",
            database="tryton",
            password=PASSWORD,
            line_account="2.2.1",
            timeout=0.5,
        )
        dest = TrytonDestination(settings, context("erp", tmp_path))
        with pytest.raises(TransientError, match="timed out"):
            dest.deliver(payload(tmp_path, supplier_name="Slow"), "k-slow")


# --------------------------------------------------------------------------- pure parts


def test_values_for_tryton():
    assert compact_vat(" de 136.695-976 ") == "DE136695976" and compact_vat("  ") is None
    item = LineItem(1, total_amount=Decimal("119"), tax_rate=Decimal(19), quantity=Decimal(2))
    assert line_price(item, Decimal(2)) == Decimal("50.0000")
    assert line_price(LineItem(1, net_amount=Decimal(10)), Decimal(3)) == Decimal("3.3333")
    assert line_price(LineItem(1), Decimal(1)) is None
    assert parse_comment("x\ndocrelay-key: a-1\ndocrelay-version: 3\n") == {
        "key": "a-1", "version": "3",
    }  # fmt: skip


def test_the_rate_a_documents_amounts_imply():
    assert implied_rate(Decimal(100), None, Decimal(119)) == Decimal(19)
    assert implied_rate(Decimal(100), Decimal(7), None) == Decimal(7)
    assert implied_rate(Decimal("76476.93"), None, Decimal("91007.55")) == Decimal(19)
    assert implied_rate(Decimal(100), Decimal(0), None) == Decimal(0)
    assert implied_rate(Decimal(100), None, Decimal("113.37")) is None  # 13.37 %: no one rate
    assert implied_rate(Decimal(0), None, Decimal(10)) is None
    assert implied_rate(Decimal(100), None, None) is None


def test_tryton_is_registered():
    assert registry.load("destination", "tryton") is TrytonDestination


def refused(entry: dict[str, Any], tmp_path: Path) -> list[str]:
    raw = {
        "store": {"url": f"sqlite:///{tmp_path}/s.db", "blob_dir": str(tmp_path / "blobs")},
        "vendors": {"local": {"kind": "local"}},
        "destinations": {"erp": entry},
        "routes": [{"match": {}, "vendor": "local", "destinations": ["erp"]}],
    }
    with pytest.raises(config_mod.ConfigError) as caught:
        config_mod.validate(raw, tmp_path / "config.toml")
    return [f"{problem.key}: {problem.message}" for problem in caught.value.problems]


BASE = {"kind": "tryton", "url": "http://127.0.0.1:8000/", "database": "tryton",
        "password": "pw", "line_account": "2.2.1"}  # fmt: skip


@pytest.mark.parametrize(
    ("entry", "key", "says"),
    [
        ({"url": "ftp://host/"}, "destinations.erp.url", "http:// or https://"),
        ({"url": "http://admin:pw@host/"}, "destinations.erp.url", "bare listener"),
        ({"taxes": {"nineteen": "VAT"}}, "destinations.erp.taxes", "not a rate"),
        ({"line_account": " "}, "destinations.erp.line_account", "must not be empty"),
        ({"colour": "red"}, "destinations.erp.colour", ""),
    ],
)
def test_a_bad_setting_is_refused_naming_the_key(entry, key, says, tmp_path):
    problems = refused({**BASE, **entry}, tmp_path)
    assert any(p.startswith(f"{key}: ") and says in p for p in problems), problems


def test_password_file_holds_the_password_and_it_is_redacted(tmp_path):
    secret = tmp_path / "tryton"
    secret.write_text("hunter2-tryton\n")
    entry = {k: v for k, v in BASE.items() if k != "password"} | {"password_file": str(secret)}
    raw = {
        "store": {"url": f"sqlite:///{tmp_path}/s.db", "blob_dir": str(tmp_path / "blobs")},
        "vendors": {"local": {"kind": "local"}},
        "destinations": {"erp": entry},
        "routes": [{"match": {}, "vendor": "local", "destinations": ["erp"]}],
    }
    loaded = config_mod.validate(raw, tmp_path / "config.toml")
    settings = loaded.destinations["erp"]
    assert settings.password.get_secret_value() == "hunter2-tryton"
    assert "hunter2-tryton" in loaded.secrets and "hunter2" not in repr(settings)


def test_the_commented_example_in_config_example_toml_is_valid(tmp_path):
    example = (Path(__file__).resolve().parent.parent / "config.example.toml").read_text()
    block = example.split("# [destinations.erp]\n", 1)[1].split("\n\n", 1)[0]
    lines = ["[destinations.erp]"] + [line.removeprefix("# ") for line in block.splitlines()]
    (tmp_path / "tryton-password").write_text("pw\n")
    text_ = "\n".join(lines).replace('"tryton-password"', f'"{tmp_path / "tryton-password"}"')
    path = tmp_path / "config.toml"
    path.write_text(example + "\n" + text_ + "\n")
    loaded = config_mod.load(path).destinations["erp"]
    assert loaded.kind == "tryton" and loaded.line_account == "2.2.1"
