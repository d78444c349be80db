"""`docrelay emulate odoo`: each documented answer of the emulator, over real HTTP (uvicorn on
loopback) for both protocols, and its ORM (domains, x2many commands, transactions) directly."""

from __future__ import annotations

import argparse
import xmlrpc.client
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest

from connectors import registry
from connectors.destinations.odoo.emulator import EmulatorOptions, create_app
from connectors.destinations.odoo.emulator_cli import OdooEmulator, options_from
from connectors.destinations.odoo.emulator_state import (
    MissingError,
    OdooState,
    UserError,
    ValidationError,
)
from connectors.emulation import runner
from tests.servers import serve

BEARER = {"Authorization": "bearer secret", "X-Odoo-Database": "odoo"}
ERROR_KEYS = {"name", "message", "arguments", "context", "debug"}


@pytest.fixture
def server() -> Iterator[tuple[Any, str]]:
    app = create_app()
    with serve(app) as url:
        yield app, url


def json2(url: str, model: str, method: str, body: Any, headers: Any = None) -> httpx.Response:
    return httpx.post(f"{url}/json/2/{model}/{method}", json=body, headers=headers or BEARER)


@contextmanager
def rpc(url: str, service: str) -> Iterator[xmlrpc.client.ServerProxy]:
    """stdlib's client, as Odoo's documentation uses it (closed after, so no socket leaks)."""
    with xmlrpc.client.ServerProxy(f"{url}/xmlrpc/2/{service}", allow_none=True) as proxy:
        yield proxy


# --------------------------------------------------------------------------- JSON-2


def test_json2_search_read_answers_200_with_the_records(server):
    _, url = server
    response = json2(
        url,
        "account.tax",
        "search_read",
        {
            "domain": [["type_tax_use", "=", "purchase"], ["amount", "=", 19]],
            "fields": ["name", "amount", "company_id"],
            "context": {"lang": "en_US"},
        },
    )
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    assert response.json() == [
        {"id": 11, "name": "19% (purchase)", "amount": 19.0, "company_id": [1, "My Company"]}
    ]


def test_json2_record_methods_take_ids_and_create_takes_vals_list(server):
    _, url = server
    made = json2(url, "res.partner", "create", {"vals_list": [{"name": "A"}, {"name": "B"}]})
    assert made.status_code == 200 and len(made.json()) == 2
    ids = made.json()
    assert json2(url, "res.partner", "write", {"ids": ids, "vals": {"email": "a@b"}}).json()
    read = json2(url, "res.partner", "read", {"ids": ids, "fields": ["name", "email", "vat"]})
    assert read.json() == [
        {"id": ids[0], "name": "A", "email": "a@b", "vat": False},
        {"id": ids[1], "name": "B", "email": "a@b", "vat": False},
    ]
    assert json2(url, "res.partner", "unlink", {"ids": ids}).json() is True
    assert json2(url, "res.partner", "search_count", {"domain": [["id", "in", ids]]}).json() == 0


def test_json2_a_wrong_api_key_is_401_with_odoos_error_object(server):
    _, url = server
    response = json2(url, "res.partner", "search", {"domain": []}, {"Authorization": "bearer x"})
    assert response.status_code == 401
    body = response.json()
    assert set(body) == ERROR_KEYS
    assert body["name"] == "werkzeug.exceptions.Unauthorized"
    assert body["message"] == "Invalid apikey" and body["arguments"] == ["Invalid apikey", 401]


def test_json2_a_validation_error_is_422_with_its_message(server):
    _, url = server
    response = json2(url, "res.partner", "create", {"vals_list": [{"name": "X", "vat": "DE1"}]})
    assert response.status_code == 422
    body = response.json()
    assert set(body) == ERROR_KEYS and body["name"] == "odoo.exceptions.ValidationError"
    assert "does not seem to be valid" in body["message"]


def test_json2_a_missing_mandatory_field_is_a_validation_error(server):
    _, url = server
    response = json2(url, "res.partner", "create", {"vals_list": [{"email": "x@y"}]})
    assert (
        response.status_code == 422 and "mandatory field is not set" in response.json()["message"]
    )


@pytest.mark.parametrize(
    ("model", "method", "body", "status", "name"),
    [
        ("no.such", "search", {}, 404, "werkzeug.exceptions.NotFound"),
        ("res.partner", "do_magic", {}, 404, "werkzeug.exceptions.NotFound"),
        ("res.partner", "search", {"badparameter": 1}, 422, "builtins.TypeError"),
        ("res.partner", "read", {"ids": [999]}, 404, "odoo.exceptions.MissingError"),
        ("res.partner", "search", {"domain": [["nope", "=", 1]]}, 422, "builtins.ValueError"),
    ],
)
def test_json2_errors_have_odoos_status_and_name(server, model, method, body, status, name):
    _, url = server
    response = json2(url, model, method, body)
    assert response.status_code == status
    assert response.json()["name"] == name


def test_json2_another_database_is_404_and_bad_json_400(server):
    _, url = server
    other = {**BEARER, "X-Odoo-Database": "other"}
    assert json2(url, "res.partner", "search", {}, other).status_code == 404
    response = httpx.post(f"{url}/json/2/res.partner/search", content=b"[", headers=BEARER)
    assert response.status_code == 400 and set(response.json()) == ERROR_KEYS


def test_json2_without_the_database_header_uses_the_only_database(server):
    _, url = server
    response = json2(url, "res.users", "context_get", {}, {"Authorization": "Bearer secret"})
    assert response.status_code == 200 and response.json()["uid"] == 2


# --------------------------------------------------------------------------- XML-RPC


def test_xmlrpc_version_and_authenticate(server):
    _, url = server
    with rpc(url, "common") as common:
        version = common.version()
        assert version["server_version"] == "19.0" and version["protocol_version"] == 1
        assert common.authenticate("odoo", "admin", "secret", {}) == 2
        assert common.authenticate("odoo", "admin", "wrong", {}) is False
        assert common.authenticate("other", "admin", "secret", {}) is False


def test_xmlrpc_execute_kw_with_positional_and_named_arguments(server):
    _, url = server
    with rpc(url, "object") as models:
        made = models.execute_kw("odoo", 2, "secret", "res.partner", "create", [{"name": "Solo"}])
        rows = models.execute_kw(
            "odoo",
            2,
            "secret",
            "res.partner",
            "search_read",
            [[["name", "=ilike", "solo"]]],
            {"fields": ["name", "company_id"], "limit": 1},
        )
        found = models.execute("odoo", 2, "secret", "res.partner", "search", [["id", "=", made]])
    assert isinstance(made, int)
    assert rows == [{"id": made, "name": "Solo", "company_id": False}]
    assert found == [made]


@pytest.mark.parametrize(
    ("args", "code", "text"),
    [
        (("odoo", 2, "wrong", "res.partner", "search", [[]]), 3, "Access Denied"),
        (
            ("odoo", 2, "secret", "res.partner", "create", [{"name": "X", "vat": "DE1"}]),
            2,
            "does not seem to be valid",
        ),
        (("odoo", 2, "secret", "res.partner", "search", [[]], {"bad": 1}), 1, "unexpected"),
        (("nodb", 2, "secret", "res.partner", "search", [[]]), 1, "does not exist"),
    ],
)
def test_xmlrpc_errors_are_faults_with_odoos_codes(server, args, code, text):
    _, url = server
    with rpc(url, "object") as models, pytest.raises(xmlrpc.client.Fault) as caught:
        models.execute_kw(*args)
    assert caught.value.faultCode == code and text in caught.value.faultString


def test_xmlrpc_none_is_sent_as_false(server):
    _, url = server
    with rpc(url, "object") as models:
        assert models.execute_kw("odoo", 2, "secret", "account.move", "action_post", [[]]) is False


# --------------------------------------------------------------------------- admin routes


def test_admin_routes_list_records_and_post_a_move(server):
    app, url = server
    state = app.state.emulator
    (move,) = state.call(
        "account.move",
        "create",
        [],
        {
            "vals_list": [
                {
                    "move_type": "in_invoice",
                    "partner_id": 3,
                    "invoice_date": "2026-01-05",
                    "invoice_line_ids": [[0, 0, {"name": "x", "price_unit": 5}]],
                }
            ]
        },
    )
    listed = httpx.get(f"{url}/_emulator/records", params={"model": "account.move"}).json()
    assert [m["id"] for m in listed["models"]["account.move"]] == [move]
    everything = httpx.get(f"{url}/_emulator/records").json()["models"]
    assert {"res.partner", "account.tax", "ir.attachment"} <= set(everything)
    posted = httpx.post(f"{url}/_emulator/moves/{move}/post")
    assert posted.json() == {"id": move, "name": "BILL/2026/00001", "state": "posted"}
    again = httpx.post(f"{url}/_emulator/moves/{move}/post")
    assert again.status_code == 422 and "must be in draft" in again.json()["message"]
    assert httpx.post(f"{url}/_emulator/moves/999/post").status_code == 404
    assert app.state.requests.entries(path="/_emulator/records") == []  # never logged


def test_posting_checks_what_odoo_checks_and_a_posted_move_is_locked():
    state = OdooState()
    (move,) = state.call("account.move", "create", [[{"move_type": "in_invoice"}]])
    with pytest.raises(UserError, match="'Vendor' is required"):
        state.call("account.move", "action_post", [[move]])
    state.call("account.move", "write", [[move], {"partner_id": 3}])
    with pytest.raises(UserError, match="Bill/Refund date is required"):
        state.call("account.move", "action_post", [[move]])
    state.call("account.move", "write", [[move], {"invoice_date": "2026-02-01"}])
    with pytest.raises(UserError, match="add a line"):
        state.call("account.move", "action_post", [[move]])
    state.call("account.move", "write", [[move], {"invoice_line_ids": [[0, 0, {"price_unit": 1}]]}])
    state.call("account.move", "action_post", [[move]])
    with pytest.raises(UserError, match="cannot modify a posted entry"):
        state.call("account.move", "write", [[move], {"ref": "x"}])
    with pytest.raises(UserError, match="posted once"):
        state.call("account.move", "unlink", [[move]])
    assert state.call("account.move", "write", [[move], {"narration": "<p>ok</p>"}]) is True


# --------------------------------------------------------------------------- the ORM


def test_domains_in_polish_notation_and_archived_records():
    state = OdooState()
    a, b, c = state.call(
        "res.partner",
        "create",
        [[{"name": "Alpha", "vat": "DE136695976"}, {"name": "Beta"}, {"name": "Gamma"}]],
    )
    search = lambda domain, **kw: state.call("res.partner", "search", [domain], kw)  # noqa: E731
    assert search(["|", ["name", "=", "Alpha"], ["name", "=", "Beta"]]) == [a, b]
    assert search(["!", ["name", "ilike", "a"]]) == []
    assert search([["name", "ilike", "ET"], ["id", "in", [a, b, c]]]) == [b]
    assert search([["vat", "!=", False], ["id", ">=", a]]) == [a]
    assert search([["name", "=like", "_amma"]]) == [c]
    state.call("res.partner", "write", [[c], {"active": False}])
    assert c not in search([])
    assert search([["active", "=", False]]) == [c]
    assert search([["id", "in", [a, b]]], order="name desc") == [b, a]
    assert search([["id", "in", [a, b]]], order="name asc", offset=1, limit=5) == [b]
    with pytest.raises(ValueError, match="Invalid leaf"):
        search([["name", "~", "x"]])


def test_x2many_commands_and_one_call_is_one_transaction():
    state = OdooState()
    (move,) = state.call(
        "account.move",
        "create",
        [
            [
                {
                    "move_type": "in_invoice",
                    "invoice_line_ids": [
                        [0, 0, {"name": "a", "price_unit": 10, "tax_ids": [[6, 0, [11]]]}],
                        [0, 0, {"name": "b", "price_unit": 5}],
                    ],
                }
            ]
        ],
    )
    (row,) = state.call("account.move", "read", [[move], ["invoice_line_ids", "amount_total"]])
    first, second = row["invoice_line_ids"]
    assert row["amount_total"] == 16.9
    state.call("account.move", "write", [[move], {"invoice_line_ids": [[2, first, 0]]}])
    state.call("account.move.line", "write", [[second], {"tax_ids": [[4, 12]]}])
    (row,) = state.call("account.move", "read", [[move], ["invoice_line_ids", "amount_total"]])
    assert row["invoice_line_ids"] == [second] and row["amount_total"] == 5.35
    before = state.snapshot()
    with pytest.raises(ValidationError):
        state.call(
            "account.move",
            "write",
            [[move], {"invoice_line_ids": [[0, 0, {"name": "c"}]], "partner_id": 999}],
        )
    assert state.snapshot() == before
    with pytest.raises(MissingError):
        state.call("account.move", "read", [[12345]])


def test_fields_get_describes_the_fields():
    state = OdooState()
    described = state.call("account.move", "fields_get", [], {"attributes": ["type", "relation"]})
    assert described["partner_id"] == {"type": "many2one", "relation": "res.partner"}
    assert described["invoice_line_ids"]["type"] == "one2many"
    assert described["ref"] == {"type": "char"}


# --------------------------------------------------------------------------- the command


def test_docrelay_emulate_odoo_is_registered_and_builds_its_app(monkeypatch, capsys):
    assert registry.load("emulator", "odoo") is OdooEmulator
    parser = runner.build_parser(OdooEmulator())
    args = parser.parse_args(["--api-key", "k", "--database", "db1", "--fail-rate", "0.1"])
    options = options_from(args)
    assert isinstance(options, EmulatorOptions)
    assert (options.api_key, options.database, options.fail_rate) == ("k", "db1", 0.1)
    served: dict[str, Any] = {}
    monkeypatch.setattr(runner, "serve", lambda app, **kw: served.update(app=app, **kw))
    assert runner.main(OdooEmulator, ["--port", "9069", "--database", "db2"]) == 0
    assert served["port"] == 9069 and served["app"].state.emulator.database == "db2"
    out = capsys.readouterr().out
    assert "Odoo external API emulator at http://127.0.0.1:9069" in out
    assert "/json/2/<model>/<method>" in out and "/xmlrpc/2/object" in out
    assert isinstance(args, argparse.Namespace)


def test_the_emulator_default_port_is_odoos():
    args = runner.build_parser(OdooEmulator()).parse_args([])
    assert args.port == 8069 and args.delay == 0.0


def test_stats_count_records_and_bills_and_the_vat_check_can_be_off(server):
    app, url = server
    state = app.state.emulator
    state.call("account.move", "create", [[{"move_type": "in_invoice"}]])
    stats = httpx.get(f"{url}/_emulator/stats").json()
    assert stats["bills"] == {"draft": 1} and stats["records"]["account.tax"] == 6
    lenient = OdooState(check_vat=False)
    assert lenient.call("res.partner", "create", [{"name": "X", "vat": "DE1"}])
    args = runner.build_parser(OdooEmulator()).parse_args(["--no-vat-check"])
    assert options_from(args).check_vat is False
    assert create_app(options_from(args)).state.emulator.check_vat is False
