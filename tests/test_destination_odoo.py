"""The Odoo destination against `docrelay emulate odoo`'s app under real uvicorn, over both of
Odoo's protocols (JSON-2 and XML-RPC): every outcome is read back from the emulator's database,
as a person would see it in Odoo. Faults are the emulator kit's, injected on the server."""

from __future__ import annotations

import base64
import threading
from collections.abc import Iterator
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from connectors import registry
from connectors.base import (
    CanonicalResult,
    DownstreamState,
    ExportPayload,
    FieldValue,
    LineItem,
)
from connectors.destinations.odoo.destination import OdooDestination
from connectors.destinations.odoo.emulator import create_app
from connectors.destinations.odoo.mapping import parse_narration
from connectors.destinations.odoo.settings import OdooDestinationSettings
from connectors.errors import AuthFailed, TerminalError, TransientError
from daemon import config as config_mod
from tests.conformance.harness import context
from tests.servers import serve

PDF = b"%PDF-1.4\n% docrelay test original\n" + bytes(range(256)) + b"\n%%EOF\n"
KEY = "docrelay-7-erp"


def fields(**values: Any) -> list[FieldValue]:
    out = []
    for name, value in values.items():
        if isinstance(value, date):
            out.append(FieldValue(name, value.isoformat(), value_date=value))
        elif isinstance(value, Decimal):
            out.append(FieldValue(name, str(value), value_number=value, currency="EUR"))
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
    path = tmp_path / "blob.pdf"
    path.write_bytes(PDF)
    base: dict[str, Any] = {
        "invoice_number": "INV-7",
        "issue_date": date(2026, 11, 30),
        "due_date": date(2026, 12, 30),
        "supplier_name": "Acme Supplies GmbH",
        "supplier_vat_id": "DE 136 695 976",
        "currency": "USD",
        "total_amount": Decimal("142.80"),
        "payment_reference": "RF18 5390 0754 7034",
    }
    base.update(values)
    return ExportPayload(
        document_id=7,
        sha256="cd" * 32,
        filename="acme-7.pdf",
        mime_type="application/pdf",
        source="scans",
        source_ref="acme-7.pdf",
        received_at=datetime(2026, 12, 1, tzinfo=UTC),
        vendor="local",
        vendor_kind="local",
        vendor_ref="local:cd",
        submission_id=3,
        extraction_id=4,
        result=CanonicalResult(
            fields=fields(**base),
            line_items=(
                [
                    LineItem(
                        1,
                        description="Widgets",
                        quantity=Decimal(2),
                        unit_price=Decimal("50.00"),
                        tax_rate=Decimal(19),
                    ),
                    LineItem(
                        2,
                        description="Manual",
                        quantity=Decimal(1),
                        net_amount=Decimal("20.00"),
                        tax_rate=Decimal(7),
                    ),
                ]
                if lines is None
                else lines
            ),
        ),
        version=version,
        original=path if original else None,
    )


class Odoo:
    """One emulator under uvicorn for one test, and destinations on it."""

    def __init__(self, app: Any, url: str, protocol: str, tmp_path: Path) -> None:
        self.app = app
        self.url = url
        self.protocol = protocol
        self.tmp_path = tmp_path
        self.state = app.state.emulator
        self.made: list[OdooDestination] = []

    def settings(self, **overrides: Any) -> dict[str, Any]:
        values: dict[str, Any] = {
            "kind": "odoo",
            "url": self.url,
            "database": "odoo",
            "protocol": self.protocol,
            "api_key": "secret",
            "max_retries": 0,
            "timeout": 5,
        }
        if self.protocol == "xmlrpc":
            values["username"] = "admin"
        values.update(overrides)
        return values

    def destination(self, **overrides: Any) -> OdooDestination:
        settings = OdooDestinationSettings.model_validate(self.settings(**overrides))
        made = OdooDestination(settings, context("erp", self.tmp_path))
        self.made.append(made)
        return made

    def rows(self, model: str) -> list[dict[str, Any]]:
        return self.state.snapshot(model, datas=True)[model]

    def bills(self) -> list[dict[str, Any]]:
        return [m for m in self.rows("account.move") if m["move_type"] == "in_invoice"]

    def lines(self, move_id: int) -> list[dict[str, Any]]:
        return [line for line in self.rows("account.move.line") if line["move_id"] == move_id]

    def faults(self, **changes: Any) -> None:
        self.app.state.faults.configure(**changes)


@pytest.fixture(params=["json2", "xmlrpc"])
def odoo(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Odoo]:
    app = create_app()
    with serve(app) as url:
        run = Odoo(app, url, request.param, tmp_path)
        yield run
        for made in run.made:
            made.close()


@pytest.fixture
def json2(tmp_path: Path) -> Iterator[Odoo]:
    app = create_app()
    with serve(app) as url:
        run = Odoo(app, url, "json2", tmp_path)
        yield run
        for made in run.made:
            made.close()


# --------------------------------------------------------------------------- the bill


def test_a_vendor_bill_with_its_lines_taxes_partner_and_pdf(odoo, tmp_path):
    receipt = odoo.destination().deliver(payload(tmp_path), KEY)
    (bill,) = odoo.bills()
    assert receipt.ref == str(bill["id"])
    assert bill["state"] == "draft" and bill["ref"] == "INV-7"
    assert bill["invoice_date"] == "2026-11-30" and bill["invoice_date_due"] == "2026-12-30"
    assert bill["payment_reference"] == "RF18 5390 0754 7034"
    assert bill["currency_id"] == 2  # USD
    assert bill["journal_id"] == 2  # the default purchase journal
    assert parse_narration(bill["narration"]) == {"key": KEY, "version": "1"}
    (partner,) = [p for p in odoo.rows("res.partner") if p["id"] == bill["partner_id"]]
    assert partner["name"] == "Acme Supplies GmbH" and partner["vat"] == "DE136695976"
    assert partner["is_company"] and partner["supplier_rank"] == 1
    lines = odoo.lines(bill["id"])
    assert [(x["name"], x["quantity"], x["price_unit"]) for x in lines] == [
        ("Widgets", 2.0, 50.0),
        ("Manual", 1.0, 20.0),
    ]
    assert [x["tax_ids"] for x in lines] == [[11], [12]]  # 19 % and 7 % purchase taxes
    assert [x["account_id"] for x in lines] == [1, 1]  # the journal's default account
    assert bill["amount_untaxed"] == 120.0 and bill["amount_total"] == 120.0 + 19.0 + 1.4
    (attachment,) = odoo.rows("ir.attachment")
    assert (attachment["res_model"], attachment["res_id"]) == ("account.move", bill["id"])
    assert attachment["name"] == "acme-7.pdf" and attachment["mimetype"] == "application/pdf"
    assert base64.b64decode(attachment["datas"]) == PDF
    assert receipt.data == {
        "move_id": bill["id"],
        "state": "draft",
        "attachment_id": attachment["id"],
        "partner_id": partner["id"],
        "partner_created": True,
    }


def test_the_partner_is_matched_by_vat_id_before_the_name(odoo, tmp_path):
    known = odoo.state.call(
        "res.partner", "create", [{"name": "ACME (old name)", "vat": "de136695976"}]
    )
    odoo.state.call("res.partner", "create", [{"name": "Acme Supplies GmbH"}])
    receipt = odoo.destination().deliver(payload(tmp_path), KEY)
    assert receipt.data["partner_id"] == known and not receipt.data["partner_created"]


def test_the_partner_is_matched_by_name_whatever_its_case(odoo, tmp_path):
    known = odoo.state.call("res.partner", "create", [{"name": "ACME SUPPLIES GMBH"}])
    odoo.state.call("res.partner", "create", [{"name": "Acme Supplies GmbH & Co"}])
    receipt = odoo.destination().deliver(payload(tmp_path, supplier_vat_id=None), KEY)
    assert receipt.data["partner_id"] == known and not receipt.data["partner_created"]


def test_an_unknown_supplier_is_refused_when_partners_are_not_created(odoo, tmp_path):
    before = len(odoo.rows("res.partner"))
    with pytest.raises(TerminalError, match="create_partners = false"):
        odoo.destination(create_partners=False).deliver(payload(tmp_path), KEY)
    assert odoo.bills() == [] and len(odoo.rows("res.partner")) == before


def test_a_document_naming_no_supplier_takes_the_fallback_partner_or_is_refused(odoo, tmp_path):
    bare = payload(tmp_path, supplier_name=None, supplier_vat_id=None)
    with pytest.raises(TerminalError, match="fallback_partner"):
        odoo.destination().deliver(bare, KEY)
    receipt = odoo.destination(fallback_partner="Unknown supplier").deliver(bare, KEY)
    (partner,) = [p for p in odoo.rows("res.partner") if p["id"] == receipt.data["partner_id"]]
    assert partner["name"] == "Unknown supplier"


def test_without_line_items_one_line_carries_the_net_amount_and_its_tax(odoo, tmp_path):
    export = payload(tmp_path, lines=[], net_amount=Decimal("100.00"), tax_amount=Decimal("19.00"))
    odoo.destination(line_account="610000").deliver(export, KEY)
    (bill,) = odoo.bills()
    (line,) = odoo.lines(bill["id"])
    assert (line["name"], line["price_unit"], line["tax_ids"]) == ("Invoice INV-7", 100.0, [11])
    assert line["account_id"] == 2  # 610000
    assert bill["amount_total"] == 119.0


def test_an_item_without_amount_is_a_note_and_rate_zero_without_a_tax_is_untaxed(odoo, tmp_path):
    odoo.state.call("account.tax", "write", [[13], {"active": False}])  # no 0 % tax left
    lines = [
        LineItem(1, description="Delivered in two parcels"),
        LineItem(2, description="Books", total_amount=Decimal("30"), tax_rate=Decimal(0)),
    ]
    odoo.destination().deliver(payload(tmp_path, lines=lines), KEY)
    (bill,) = odoo.bills()
    note, books = odoo.lines(bill["id"])
    assert note["display_type"] == "line_note" and note["name"] == "Delivered in two parcels"
    assert books["tax_ids"] == [] and books["price_unit"] == 30.0


def test_items_without_a_rate_take_the_documents_one_rate(odoo, tmp_path):
    lines = [
        LineItem(1, description="A", unit_price=Decimal(100)),
        LineItem(2, description="B", unit_price=Decimal(50), tax_rate=Decimal(7)),
    ]
    one_rate = payload(
        tmp_path, lines=lines, net_amount=Decimal(150), tax_amount=Decimal("28.50")
    )  # 19 % of 150
    odoo.destination().deliver(one_rate, KEY)
    mixed = payload(tmp_path, lines=lines[:1], net_amount=Decimal(100), tax_amount=Decimal(13))
    odoo.destination().deliver(mixed, KEY + "-mixed")
    first, second = odoo.bills()
    assert [x["tax_ids"] for x in odoo.lines(first["id"])] == [[11], [12]]
    assert [x["tax_ids"] for x in odoo.lines(second["id"])] == [[]]  # 13 %: no such tax


def test_a_rate_without_a_tax_is_refused_and_a_mapped_name_wins(odoo, tmp_path):
    five = [LineItem(1, description="X", unit_price=Decimal(10), tax_rate=Decimal(5))]
    with pytest.raises(TerminalError, match="no percentage purchase tax of 5 %"):
        odoo.destination().deliver(payload(tmp_path, lines=five), KEY)
    odoo.state.call(
        "account.tax",
        "create",
        [{"name": "5% reverse charge", "amount": 5.0, "type_tax_use": "purchase"}],
    )
    made = odoo.state.call(
        "account.tax",
        "create",
        [{"name": "5% input", "amount": 5.0, "type_tax_use": "purchase"}],
    )
    with pytest.raises(TerminalError, match="several purchase taxes of 5 %"):
        odoo.destination().deliver(payload(tmp_path, lines=five), KEY)
    odoo.destination(taxes={"5": "5% input"}).deliver(payload(tmp_path, lines=five), KEY)
    (bill,) = odoo.bills()
    assert odoo.lines(bill["id"])[0]["tax_ids"] == [made]


def test_a_configured_journal_and_account_are_used_and_a_missing_one_is_refused(odoo, tmp_path):
    with pytest.raises(TerminalError, match="no purchase journal with code 'NOPE'"):
        odoo.destination(journal="NOPE").deliver(payload(tmp_path), KEY)
    with pytest.raises(TerminalError, match="no account with code '999'"):
        odoo.destination(line_account="999").deliver(payload(tmp_path), KEY)
    odoo.destination(journal="BILL", line_account="610000").deliver(payload(tmp_path), KEY)
    (bill,) = odoo.bills()
    assert bill["journal_id"] == 2
    assert {line["account_id"] for line in odoo.lines(bill["id"])} == {2}


def test_an_unknown_currency_is_refused(odoo, tmp_path):
    with pytest.raises(TerminalError, match="no active currency 'JPY'"):
        odoo.destination().deliver(payload(tmp_path, currency="JPY"), KEY)


# --------------------------------------------------------------------------- repeats, versions


def test_a_repeat_changes_nothing_and_version_2_rewrites_the_same_bill(odoo, tmp_path):
    destination = odoo.destination()
    first = destination.deliver(payload(tmp_path), KEY)
    again = destination.deliver(payload(tmp_path), KEY)
    assert again.ref == first.ref and len(odoo.bills()) == 1
    one = [
        LineItem(
            1,
            description="Widgets",
            quantity=Decimal(3),
            unit_price=Decimal(50),
            tax_rate=Decimal(19),
        )
    ]
    second = destination.deliver(
        payload(tmp_path, version=2, lines=one, invoice_number="INV-7b"), KEY
    )
    assert second.ref == first.ref
    (bill,) = odoo.bills()
    assert bill["ref"] == "INV-7b" and parse_narration(bill["narration"])["version"] == "2"
    assert [(x["quantity"], x["price_unit"]) for x in odoo.lines(bill["id"])] == [(3.0, 50.0)]
    assert len(odoo.rows("account.move.line")) == 1  # the old lines are gone
    assert bill["amount_total"] == 178.5
    assert len(odoo.rows("ir.attachment")) == 1
    assert destination.lookup(payload(tmp_path, version=2), KEY).ref == first.ref
    assert destination.lookup(payload(tmp_path, version=3), KEY) is None


def test_a_posted_bill_is_never_rewritten(odoo, tmp_path):
    receipt = odoo.destination().deliver(payload(tmp_path), KEY)
    posted = httpx.post(f"{odoo.url}/_emulator/moves/{receipt.ref}/post").json()
    assert posted["state"] == "posted" and posted["name"] == "BILL/2026/00001"
    destination = odoo.destination()
    with pytest.raises(TerminalError, match=r"is posted in Odoo; version 2 .* is not applied"):
        destination.deliver(payload(tmp_path, version=2, invoice_number="X"), KEY)
    (bill,) = odoo.bills()
    assert bill["ref"] == "INV-7" and bill["state"] == "posted"
    again = destination.deliver(payload(tmp_path), KEY)  # the same version: its receipt
    assert again.data["state"] == "posted" and again.data["name"] == "BILL/2026/00001"


def test_follow_tells_draft_posted_and_deleted_bills_apart(odoo, tmp_path):
    destination = odoo.destination()
    receipt = destination.deliver(payload(tmp_path), KEY)
    assert destination.follow(receipt).state == DownstreamState.PENDING
    move_id = int(receipt.ref)
    destination.client.call("account.move", "write", ids=[move_id], vals={"ref": "FIXED-IN-ODOO"})
    httpx.post(f"{odoo.url}/_emulator/moves/{move_id}/post").raise_for_status()
    posted = destination.follow(receipt)
    (bill,) = [b for b in odoo.bills() if b["id"] == move_id]
    assert posted.state == DownstreamState.POSTED
    assert posted.values["invoice_number"] == "FIXED-IN-ODOO"
    assert posted.values["currency"] == "USD"
    assert posted.values["total_amount"] == f"{bill['amount_total']:.2f}"
    other = destination.deliver(payload(tmp_path, invoice_number="INV-8"), f"{KEY}-other")
    destination.client.call("account.move", "unlink", ids=[int(other.ref)])
    gone = destination.follow(other)
    assert (gone.state, gone.reason) == (DownstreamState.REJECTED, "deleted in Odoo")
    destination.close()


def test_after_a_crash_lookup_finds_the_bill_by_our_key(odoo, tmp_path):
    made = odoo.destination().deliver(payload(tmp_path), KEY)
    fresh = odoo.destination()  # a restarted daemon: no cache
    found = fresh.lookup(payload(tmp_path), KEY)
    assert found is not None and found.ref == made.ref
    assert found.data["attachment_id"] == made.data["attachment_id"]
    assert fresh.lookup(payload(tmp_path), KEY + "-other") is None
    assert fresh.lookup(payload(tmp_path), KEY[:-1]) is None  # a prefix is another key


def test_a_key_with_any_characters_is_found_again(odoo, tmp_path):
    key = "docrelay-7-ERP <main> & 100% _x_"
    made = odoo.destination().deliver(payload(tmp_path), key)
    (bill,) = odoo.bills()
    assert parse_narration(bill["narration"])["key"] == key
    assert odoo.destination().lookup(payload(tmp_path), key).ref == made.ref
    assert odoo.destination().lookup(payload(tmp_path), "docrelay-7-ERP <main> & 1000% _x_") is None
    assert odoo.destination().deliver(payload(tmp_path), key).ref == made.ref
    assert len(odoo.bills()) == 1


def test_a_lost_answer_to_the_create_is_settled_by_lookup_without_a_second_bill(json2, tmp_path):
    json2.app.state.faults.schedule("drop_after", method="POST", path="/json/2/account.move/create")
    destination = json2.destination(max_retries=3)
    with pytest.raises(TransientError):
        destination.deliver(payload(tmp_path), KEY)  # not sent again: a create is not replayed
    assert len(json2.bills()) == 1 and json2.rows("ir.attachment") == []
    assert destination.lookup(payload(tmp_path), KEY) is None  # the attachment is missing
    receipt = destination.deliver(payload(tmp_path), KEY)
    (bill,) = json2.bills()
    assert receipt.ref == str(bill["id"]) and len(json2.rows("ir.attachment")) == 1
    assert destination.lookup(payload(tmp_path), KEY).ref == receipt.ref


def test_threads_deliver_at_once_with_one_new_partner(odoo, tmp_path):
    destination = odoo.destination(concurrency=8)
    keys = [f"{KEY}-{n}" for n in range(8)]
    receipts: dict[str, str] = {}
    errors: list[BaseException] = []

    def push(key: str) -> None:
        try:
            receipts[key] = destination.deliver(payload(tmp_path), key).ref
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=push, args=(key,)) for key in keys]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert len(set(receipts.values())) == len(keys) == len(odoo.bills())
    made = [p for p in odoo.rows("res.partner") if p["name"] == "Acme Supplies GmbH"]
    assert len(made) == 1


def test_a_failed_create_leaves_nothing_behind(odoo, tmp_path):
    """One call, one transaction: a refused line leaves no half-made bill."""
    odoo.state.call("account.journal", "write", [[2], {"default_account_id": False}])
    with pytest.raises(TerminalError, match="Missing required account"):
        odoo.destination().deliver(payload(tmp_path), KEY)
    assert odoo.bills() == [] and odoo.rows("account.move.line") == []


# --------------------------------------------------------------------------- errors


def test_a_refused_api_key_is_an_auth_error_without_the_key(odoo, tmp_path):
    destination = odoo.destination(api_key="wrong-key-4711")
    with pytest.raises(AuthFailed) as caught:
        destination.deliver(payload(tmp_path), KEY)
    assert "refused" in str(caught.value) and "wrong-key-4711" not in str(caught.value)
    with pytest.raises(AuthFailed):
        destination.probe()
    assert odoo.bills() == []


def test_xmlrpc_with_a_wrong_login_is_an_auth_error(tmp_path):
    app = create_app()
    with serve(app) as url:
        run = Odoo(app, url, "xmlrpc", tmp_path)
        destination = run.destination(username="nobody")
        with pytest.raises(AuthFailed, match="refused the login of 'nobody'"):
            destination.deliver(payload(tmp_path), KEY)
        destination.close()


def test_another_database_is_not_found_over_json2_and_refused_over_xmlrpc(odoo, tmp_path):
    """JSON-2 sends ``X-Odoo-Database`` (404 for a database the server lacks: retried, as for
    an Odoo being upgraded); XML-RPC's ``authenticate`` answers false for it."""
    expected = TransientError if odoo.protocol == "json2" else AuthFailed
    with pytest.raises(expected, match="other"):
        odoo.destination(database="other").deliver(payload(tmp_path), KEY)


def test_an_odoo_validation_error_is_terminal_with_odoos_message(odoo, tmp_path):
    with pytest.raises(TerminalError) as caught:
        odoo.destination().deliver(payload(tmp_path, supplier_vat_id="DE 123"), KEY)
    message = str(caught.value)
    assert "ValidationError" in message or odoo.protocol == "xmlrpc"
    assert "The VAT number [DE123] for partner [Acme Supplies GmbH] does not seem to be valid" in (
        message
    )
    assert odoo.bills() == []


@pytest.mark.parametrize("kind", ["500", "503", "drop_before", "html", "malformed"])
def test_server_errors_and_garbled_answers_are_transient(odoo, tmp_path, kind):
    odoo.faults(fail_rate=1.0, fault_mix=((kind, 1.0),))
    with pytest.raises(TransientError):
        odoo.destination().deliver(payload(tmp_path), KEY)


def test_a_timeout_is_transient(odoo, tmp_path):
    odoo.faults(fail_rate=1.0, fault_mix=(("slow", 1.0),), slow_seconds=1.0)
    with pytest.raises(TransientError):
        odoo.destination(timeout=0.3).deliver(payload(tmp_path), KEY)


def test_an_unreachable_odoo_is_transient(tmp_path):
    settings = OdooDestinationSettings.model_validate(
        {
            "kind": "odoo",
            "url": "http://127.0.0.1:9",
            "database": "odoo",
            "api_key": "k",
            "max_retries": 0,
        }
    )
    destination = OdooDestination(settings, context("erp", tmp_path))
    with pytest.raises(TransientError):
        destination.deliver(payload(tmp_path), KEY)
    destination.close()


def test_the_kit_retries_a_read_inside_one_call(json2, tmp_path):
    json2.app.state.faults.schedule("503", path="/json/2/account.move/search_read")
    receipt = json2.destination(max_retries=1).deliver(payload(tmp_path), KEY)
    assert receipt.ref == str(json2.bills()[0]["id"])


def test_the_probe_reads_and_writes_nothing(odoo, tmp_path):
    before = odoo.state.snapshot(datas=True)
    destination = odoo.destination(
        journal="BILL", line_account="600000", taxes={"19": "19% (purchase)"}
    )
    text = destination.probe()
    assert any("journal BILL" in line for line in text)
    assert any("tax for 19 %: id 11" in line for line in text)
    assert odoo.state.snapshot(datas=True) == before


# --------------------------------------------------------------------------- unit: classification


def _xmlrpc_destination(tmp_path: Path, handler: Any) -> OdooDestination:
    settings = OdooDestinationSettings.model_validate(
        {
            "kind": "odoo",
            "url": "http://odoo.test",
            "database": "odoo",
            "protocol": "xmlrpc",
            "username": "admin",
            "api_key": "k3y-s3cret",
            "max_retries": 0,
        }
    )
    return OdooDestination(
        settings, context("erp", tmp_path), transport=httpx.MockTransport(handler)
    )


@pytest.mark.parametrize(
    ("code", "text", "cls", "shown"),
    [
        (
            1,
            "Traceback ...\npsycopg2.errors.SerializationFailure: could not serialize",
            TransientError,
            "could not serialize",
        ),
        (
            1,
            "Traceback (most recent call last):\n  File x\nValueError: Invalid field 'foo'",
            TerminalError,
            "ValueError: Invalid field 'foo'",
        ),
        (2, "The VAT number is wrong", TerminalError, "The VAT number is wrong"),
        (3, "Access Denied k3y-s3cret", AuthFailed, "Access Denied ***"),
        (4, "You are not allowed to create 'Journal Entry'", AuthFailed, "not allowed"),
    ],
)
def test_xmlrpc_faults_are_classified_by_code(tmp_path, code, text, cls, shown):
    import xmlrpc.client

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/xmlrpc/2/common":
            body = xmlrpc.client.dumps((2,), methodresponse=True)
        else:
            body = xmlrpc.client.dumps(xmlrpc.client.Fault(code, text))
        return httpx.Response(200, content=body.encode(), headers={"Content-Type": "text/xml"})

    destination = _xmlrpc_destination(tmp_path, handler)
    with pytest.raises(cls) as caught:
        destination.deliver(payload(tmp_path), KEY)
    assert shown in str(caught.value) and "k3y-s3cret" not in str(caught.value)


@pytest.mark.parametrize(
    ("status", "name", "cls"),
    [
        (403, "odoo.exceptions.AccessError", AuthFailed),
        (404, "werkzeug.exceptions.NotFound", TransientError),
        (404, "odoo.exceptions.MissingError", TerminalError),
        (409, "odoo.exceptions.ConcurrencyError", TransientError),
        (422, "odoo.exceptions.UserError", TerminalError),
    ],
)
def test_json2_errors_are_classified_by_status_and_name(tmp_path, status, name, cls):
    def handler(request: httpx.Request) -> httpx.Response:
        body = {
            "name": name,
            "message": "what Odoo says",
            "arguments": [],
            "context": {},
            "debug": "Traceback ...",
        }
        return httpx.Response(status, json=body)

    settings = OdooDestinationSettings.model_validate(
        {
            "kind": "odoo",
            "url": "http://odoo.test",
            "database": "odoo",
            "api_key": "k",
            "max_retries": 0,
        }
    )
    destination = OdooDestination(
        settings, context("erp", tmp_path), transport=httpx.MockTransport(handler)
    )
    with pytest.raises(cls, match="what Odoo says"):
        destination.deliver(payload(tmp_path), KEY)


# --------------------------------------------------------------------------- settings, docs


def test_settings_need_a_username_for_xmlrpc_and_hide_the_key():
    base = {"kind": "odoo", "url": "http://odoo.test/", "database": "odoo", "api_key": "k"}
    with pytest.raises(ValueError, match="needs a username"):
        OdooDestinationSettings.model_validate({**base, "protocol": "xmlrpc"})
    with pytest.raises(ValueError, match="bare server address"):
        OdooDestinationSettings.model_validate({**base, "url": "http://u:p@odoo.test"})
    settings = OdooDestinationSettings.model_validate(base)
    assert settings.url == "http://odoo.test" and "'k'" not in repr(settings)
    assert registry.load("destination", "odoo") is OdooDestination


def test_the_api_key_can_come_from_a_file(tmp_path):
    secret = tmp_path / "odoo-key"
    secret.write_text("hunter2-odoo\n")
    entry = {
        "kind": "odoo",
        "url": "http://odoo.test",
        "database": "odoo",
        "api_key_file": str(secret),
    }
    raw = {
        "store": {"url": f"sqlite:///{tmp_path}/s.db", "blob_dir": str(tmp_path / "blobs")},
        "vendors": {"local": {"kind": "local"}},
        "destinations": {"erp": entry},
        "routes": [{"match": {}, "vendor": "local", "destinations": ["erp"]}],
    }
    loaded = config_mod.validate(raw, tmp_path / "config.toml")
    settings = loaded.destinations["erp"]
    assert settings.api_key.get_secret_value() == "hunter2-odoo"
    assert "hunter2-odoo" in loaded.secrets


def test_the_commented_example_in_config_example_toml_is_valid(tmp_path):
    example = (Path(__file__).resolve().parent.parent / "config.example.toml").read_text()
    block = example.split("# [destinations.odoo]\n", 1)[1].split("\n\n", 1)[0]
    lines = ["[destinations.odoo]"] + [line.removeprefix("# ") for line in block.splitlines()]
    (tmp_path / "odoo-api-key").write_text("secret\n")
    text = "\n".join(lines).replace('"odoo-api-key"', f'"{tmp_path / "odoo-api-key"}"')
    path = tmp_path / "config.toml"
    path.write_text(example + "\n" + text + "\n")
    loaded = config_mod.load(path).destinations["odoo"]
    assert loaded.kind == "odoo" and loaded.protocol == "json2"
