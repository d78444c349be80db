"""The Odoo emulator's database: a few models held in memory, with the ORM methods Odoo's
external API exposes (``search``, ``search_read``, ``read``, ``create``, ``write``, ``unlink``,
``search_count``, ``fields_get``, ``action_post``, ``context_get``) and Odoo's errors.

Both protocols of the emulator (``emulator``) call ``OdooState.call``; what they differ in is
only how arguments arrive (named for JSON-2, positional for XML-RPC) and how an error leaves.
The models and their fields are a small subset of Odoo's ``base`` and ``account`` modules, with
the semantics Odoo documents: domains in Polish notation, x2many commands, many2one values read
as ``[id, display_name]``, empty values read as ``false``, archived records hidden unless the
domain or ``active_test`` asks for them. See ``NOTES.md`` for what is left out.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import inspect
import re
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

ADMIN_UID = 2
COMPANY_ID = 1
EUR = 1


class OdooError(Exception):
    """An exception as Odoo raises it: its qualified name, message, JSON-2 status and XML-RPC
    fault code (``odoo/http.py`` / ``odoo/service/wsgi_server.py``)."""

    name = "odoo.exceptions.UserError"
    status = 422
    fault_code = 2
    """2: a warning (UserError and subclasses), 3: access denied, 4: access error, 1: other."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class UserError(OdooError):
    pass


class ValidationError(OdooError):
    name = "odoo.exceptions.ValidationError"


class MissingError(OdooError):
    name = "odoo.exceptions.MissingError"
    status = 404


class AccessError(OdooError):
    name = "odoo.exceptions.AccessError"
    status = 403
    fault_code = 4


class AccessDenied(OdooError):
    name = "odoo.exceptions.AccessDenied"
    status = 401
    fault_code = 3


class BadArguments(OdooError):
    """A call whose arguments do not fit the method (Odoo: a TypeError, 422)."""

    name = "builtins.TypeError"
    fault_code = 1


class NotFound(OdooError):
    """No such model or public method (werkzeug's NotFound)."""

    name = "werkzeug.exceptions.NotFound"
    status = 404
    fault_code = 1


@dataclass(frozen=True)
class Field:
    """One field of a model (what ``fields_get`` describes)."""

    type: str
    string: str
    required: bool = False
    relation: str | None = None
    inverse: str | None = None
    """For a one2many: the many2one on ``relation`` that points back."""
    default: Any = False
    readonly: bool = False
    """Computed: written by the emulator itself, never by a client."""
    selection: tuple[str, ...] = ()


def _f(type_: str, string: str, **kw: Any) -> Field:
    return Field(type_, string, **kw)


MODELS: dict[str, dict[str, Field]] = {
    "res.company": {
        "name": _f("char", "Company Name", required=True),
        "currency_id": _f("many2one", "Currency", relation="res.currency", default=EUR),
    },
    "res.users": {
        "name": _f("char", "Name", required=True),
        "login": _f("char", "Login", required=True),
        "company_id": _f("many2one", "Company", relation="res.company", default=COMPANY_ID),
        "active": _f("boolean", "Active", default=True),
    },
    "res.currency": {
        "name": _f("char", "Currency", required=True),
        "symbol": _f("char", "Symbol", required=True),
        "active": _f("boolean", "Active", default=True),
    },
    "res.partner": {
        "name": _f("char", "Name", required=True),
        "vat": _f("char", "Tax ID"),
        "is_company": _f("boolean", "Is a Company"),
        "supplier_rank": _f("integer", "Supplier Rank", default=0),
        "email": _f("char", "Email"),
        "company_id": _f("many2one", "Company", relation="res.company"),
        "active": _f("boolean", "Active", default=True),
    },
    "account.account": {
        "code": _f("char", "Code", required=True),
        "name": _f("char", "Account Name", required=True),
        "account_type": _f(
            "selection",
            "Type",
            required=True,
            selection=("expense", "income", "liability_payable", "asset_receivable"),
        ),
        "active": _f("boolean", "Active", default=True),
    },
    "account.tax": {
        "name": _f("char", "Tax Name", required=True),
        "amount": _f("float", "Amount", default=0.0),
        "amount_type": _f(
            "selection", "Tax Computation", default="percent", selection=("percent", "fixed")
        ),
        "type_tax_use": _f(
            "selection", "Tax Type", default="sale", selection=("sale", "purchase", "none")
        ),
        "company_id": _f("many2one", "Company", relation="res.company", default=COMPANY_ID),
        "active": _f("boolean", "Active", default=True),
    },
    "account.journal": {
        "name": _f("char", "Journal Name", required=True),
        "code": _f("char", "Short Code", required=True),
        "type": _f(
            "selection",
            "Type",
            required=True,
            selection=("sale", "purchase", "cash", "bank", "general"),
        ),
        "default_account_id": _f("many2one", "Default Account", relation="account.account"),
        "company_id": _f("many2one", "Company", relation="res.company", default=COMPANY_ID),
        "active": _f("boolean", "Active", default=True),
    },
    "account.move": {
        "name": _f("char", "Number", readonly=True, default="/"),
        "move_type": _f(
            "selection",
            "Type",
            required=True,
            default="entry",
            selection=("entry", "out_invoice", "out_refund", "in_invoice", "in_refund"),
        ),
        "state": _f(
            "selection",
            "Status",
            readonly=True,
            default="draft",
            selection=("draft", "posted", "cancel"),
        ),
        "partner_id": _f("many2one", "Partner", relation="res.partner"),
        "ref": _f("char", "Bill Reference"),
        "payment_reference": _f("char", "Payment Reference"),
        "narration": _f("html", "Terms and Conditions"),
        "invoice_date": _f("date", "Invoice/Bill Date"),
        "invoice_date_due": _f("date", "Due Date"),
        "currency_id": _f("many2one", "Currency", relation="res.currency"),
        "journal_id": _f("many2one", "Journal", relation="account.journal"),
        "company_id": _f("many2one", "Company", relation="res.company", default=COMPANY_ID),
        "invoice_line_ids": _f(
            "one2many", "Invoice lines", relation="account.move.line", inverse="move_id"
        ),
        "amount_untaxed": _f("monetary", "Untaxed Amount", readonly=True, default=0.0),
        "amount_tax": _f("monetary", "Tax", readonly=True, default=0.0),
        "amount_total": _f("monetary", "Total", readonly=True, default=0.0),
    },
    "account.move.line": {
        "move_id": _f("many2one", "Journal Entry", relation="account.move", required=True),
        "name": _f("char", "Label"),
        "display_type": _f(
            "selection",
            "Display Type",
            default="product",
            selection=("product", "line_section", "line_note"),
        ),
        "quantity": _f("float", "Quantity", default=1.0),
        "price_unit": _f("float", "Unit Price", default=0.0),
        "account_id": _f("many2one", "Account", relation="account.account"),
        "tax_ids": _f("many2many", "Taxes", relation="account.tax"),
        "price_subtotal": _f("monetary", "Subtotal", readonly=True, default=0.0),
        "price_total": _f("monetary", "Total", readonly=True, default=0.0),
    },
    "ir.attachment": {
        "name": _f("char", "Name", required=True),
        "res_model": _f("char", "Resource Model"),
        "res_id": _f("integer", "Resource ID", default=0),
        "type": _f("selection", "Type", default="binary", selection=("url", "binary")),
        "datas": _f("binary", "File Content (base64)"),
        "mimetype": _f("char", "Mime Type"),
        "file_size": _f("integer", "File Size", readonly=True, default=0),
        "checksum": _f("char", "Checksum/SHA1", readonly=True),
    },
}
"""The models the emulator holds and their fields (``id`` and ``display_name`` come on top)."""

DISPLAY_FIELD = {"account.account": "code", "ir.attachment": "name"}
_WRITABLE_WHEN_POSTED = frozenset({"narration"})
"""What a posted entry still takes (the emulator's stand-in for Odoo's restrict mode)."""


def seed_records() -> dict[str, list[dict[str, Any]]]:
    """The database a fresh emulator starts with: one company in EUR, its admin, four
    currencies, a small chart of accounts, purchase taxes of 19, 7, 0, 20 and 10 % (and one
    sale tax, which a purchase search must not find), the usual journals."""
    purchase = [(19, 11), (7, 12), (0, 13), (20, 14), (10, 15)]
    return {
        "res.company": [{"id": COMPANY_ID, "name": "My Company", "currency_id": EUR}],
        "res.users": [{"id": ADMIN_UID, "name": "Mitchell Admin", "login": "admin"}],
        "res.currency": [
            {"id": 1, "name": "EUR", "symbol": "€"},
            {"id": 2, "name": "USD", "symbol": "$"},
            {"id": 3, "name": "CHF", "symbol": "CHF"},
            {"id": 4, "name": "GBP", "symbol": "£"},
        ],
        "res.partner": [
            {"id": 1, "name": "My Company", "is_company": True},
            {"id": 3, "name": "Mitchell Admin"},
        ],
        "account.account": [
            {"id": 1, "code": "600000", "name": "Expenses", "account_type": "expense"},
            {"id": 2, "code": "610000", "name": "Services", "account_type": "expense"},
            {
                "id": 3,
                "code": "211000",
                "name": "Account Payable",
                "account_type": "liability_payable",
            },
            {"id": 4, "code": "400000", "name": "Product Sales", "account_type": "income"},
        ],
        "account.tax": [
            *(
                {
                    "id": tid,
                    "name": f"{rate}% (purchase)",
                    "amount": float(rate),
                    "type_tax_use": "purchase",
                }
                for rate, tid in purchase
            ),
            {"id": 21, "name": "19% (sale)", "amount": 19.0, "type_tax_use": "sale"},
        ],
        "account.journal": [
            {
                "id": 1,
                "name": "Customer Invoices",
                "code": "INV",
                "type": "sale",
                "default_account_id": 4,
            },
            {
                "id": 2,
                "name": "Vendor Bills",
                "code": "BILL",
                "type": "purchase",
                "default_account_id": 1,
            },
            {"id": 3, "name": "Bank", "code": "BNK1", "type": "bank"},
        ],
    }


# --------------------------------------------------------------------------- VAT


def vat_is_valid(vat: str) -> bool:
    """What ``base_vat`` checks: an EU VAT id is valid for the country of its prefix
    (python-stdnum where installed); any other only has the shape (two letters, then 2-20
    letters or digits)."""
    compact = re.sub(r"[\s.\-/]", "", vat).upper()
    try:
        from stdnum.eu import vat as eu_vat  # type: ignore[import-untyped]
    except ImportError:  # pragma: no cover - stdnum comes with the test extras
        return re.fullmatch(SHAPE, compact) is not None
    if compact[:2].lower() in eu_vat.MEMBER_STATES or compact[:2] in ("EL", "XI"):
        return bool(eu_vat.is_valid(compact))
    return re.fullmatch(SHAPE, compact) is not None


SHAPE = r"[A-Z]{2}[0-9A-Z]{2,20}"
"""A VAT id of a country python-stdnum's EU check does not cover (or without stdnum)."""


# --------------------------------------------------------------------------- domains


def _like(pattern: str, value: Any, *, fold: bool) -> bool:
    """SQL ``LIKE``: ``%`` any run, ``_`` any one character (Odoo passes both through)."""
    if value in (False, None):
        return False
    text = str(value)
    regex = "".join(".*" if c == "%" else "." if c == "_" else re.escape(c) for c in pattern)
    flags = re.IGNORECASE | re.DOTALL if fold else re.DOTALL
    return re.fullmatch(regex, text, flags) is not None


def _compare(op: str, have: Any, want: Any) -> bool:
    if op in ("=", "=="):
        if want is False or want is None:
            return have in (False, None, "", [])
        return have == want if not isinstance(have, list) else want in have
    if op in ("!=", "<>"):
        return not _compare("=", have, want)
    if op == "in":
        values = list(want or [])
        if isinstance(have, list):
            return any(v in values for v in have)
        return have in values or (have in (False, None) and False in values)
    if op == "not in":
        return not _compare("in", have, want)
    if op in ("like", "ilike"):
        return _like(f"%{want}%", have, fold=op == "ilike")
    if op in ("not like", "not ilike"):
        return not _like(f"%{want}%", have, fold=op == "not ilike")
    if op in ("=like", "=ilike"):
        return _like(str(want), have, fold=op == "=ilike")
    if op in ("<", ">", "<=", ">="):
        if have in (False, None):
            return False
        try:
            return {
                "<": have < want,
                ">": have > want,
                "<=": have <= want,
                ">=": have >= want,
            }[op]
        except TypeError:
            return False
    raise ValueError(f"Invalid leaf {op!r}")


OPERATORS = frozenset(
    [
        "=",
        "==",
        "!=",
        "<>",
        "in",
        "not in",
        "like",
        "ilike",
        "not like",
        "not ilike",
        "=like",
        "=ilike",
        "<",
        ">",
        "<=",
        ">=",
    ]
)


# --------------------------------------------------------------------------- the state


@dataclass
class OdooState:
    """Every record of the emulated database, behind one lock."""

    database: str = "odoo"
    api_key: str = "secret"
    username: str = "admin"
    server_version: str = "19.0"
    check_vat: bool = True
    """Refuse a partner's VAT id the way ``base_vat`` does (off: an Odoo without it)."""
    records: dict[str, dict[int, dict[str, Any]]] = field(default_factory=dict)
    _next: dict[str, int] = field(default_factory=dict)
    _lock: threading.RLock = field(default_factory=threading.RLock)

    def __post_init__(self) -> None:
        for model in MODELS:
            self.records.setdefault(model, {})
        for model, rows in seed_records().items():
            for row in rows:
                values = self._defaults(model)
                values.update(row)
                self.records[model][row["id"]] = values
        for model, rows in self.records.items():
            self._next[model] = max(rows, default=0) + 1
        self._next["res.partner"] = max(self._next["res.partner"], 7)
        self._next["account.tax"] = max(self._next["account.tax"], 30)

    # ------------------------------------------------------------------ dispatch

    def call(
        self,
        model: str,
        method: str,
        args: Iterable[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        *,
        ids: list[int] | None = None,
        context: Mapping[str, Any] | None = None,
    ) -> Any:
        """Run ``model.method``: positional ``args`` (XML-RPC) or ``ids`` and named ``kwargs``
        (JSON-2). Raises ``OdooError`` as Odoo would."""
        if model not in MODELS:
            raise NotFound(f"Model {model!r} does not exist.")
        handler = _METHODS.get(method)
        if handler is None or (method == "action_post" and model != "account.move"):
            raise NotFound(f"The method {method!r} does not exist on the model {model!r}.")
        if method == "context_get" and model != "res.users":
            raise NotFound(f"The method {method!r} does not exist on the model {model!r}.")
        kwargs = dict(kwargs or {})
        kwargs.pop("context", None)
        ctx = dict(context or {})
        function = getattr(self, handler)
        positional = list(args)
        if ids is not None and method in _RECORD_METHODS:
            positional = [ids, *positional]
        try:
            bound = inspect.signature(function).bind(model, *positional, **kwargs, ctx=ctx)
        except TypeError as exc:
            raise BadArguments(f"{model}.{method}() {exc}") from None
        with self._lock:
            if method not in _MUTATING:
                return function(*bound.args, **bound.kwargs)
            saved = self._copy()
            try:
                return function(*bound.args, **bound.kwargs)
            except BaseException:
                self.records, self._next = saved  # one call, one transaction
                raise

    def _copy(self) -> tuple[dict[str, dict[int, dict[str, Any]]], dict[str, int]]:
        records = {
            model: {
                rid: {k: list(v) if isinstance(v, list) else v for k, v in row.items()}
                for rid, row in rows.items()
            }
            for model, rows in self.records.items()
        }
        return records, dict(self._next)

    # ------------------------------------------------------------------ ORM methods

    def m_search(
        self,
        model: str,
        domain: Any = None,
        offset: int = 0,
        limit: int | None = None,
        order: str | None = None,
        *,
        ctx: dict[str, Any],
    ) -> list[int]:
        rows = self._filter(model, domain or [], ctx)
        rows = self._order(rows, order)
        ids = [r["id"] for r in rows][int(offset or 0) :]
        return ids[: int(limit)] if limit not in (None, False) else ids

    def m_search_count(
        self, model: str, domain: Any = None, limit: int | None = None, *, ctx: dict[str, Any]
    ) -> int:
        return len(self.m_search(model, domain, 0, limit, None, ctx=ctx))

    def m_search_read(
        self,
        model: str,
        domain: Any = None,
        fields: list[str] | None = None,
        offset: int = 0,
        limit: int | None = None,
        order: str | None = None,
        *,
        ctx: dict[str, Any],
    ) -> list[dict[str, Any]]:
        ids = self.m_search(model, domain, offset, limit, order, ctx=ctx)
        return self.m_read(model, ids, fields, ctx=ctx)

    def m_read(
        self, model: str, ids: Any, fields: list[str] | None = None, *, ctx: dict[str, Any]
    ) -> list[dict[str, Any]]:
        ids = _ids(ids)
        schema = MODELS[model]
        names = list(fields) if fields else list(schema)
        unknown = [n for n in names if n not in schema and n not in ("id", "display_name")]
        if unknown:
            raise ValueError(f"Invalid field {unknown[0]!r} on model {model!r}")
        out = []
        for rid in ids:
            row = self._get(model, rid)
            item: dict[str, Any] = {"id": rid}
            for name in names:
                if name == "id":
                    continue
                if name == "display_name":
                    item[name] = self._display_name(model, row)
                    continue
                item[name] = self._read_value(schema[name], row.get(name))
            out.append(item)
        return out

    def m_create(self, model: str, vals_list: Any, *, ctx: dict[str, Any]) -> Any:
        single = isinstance(vals_list, dict)
        items = [vals_list] if single else list(vals_list or [])
        made = [self._create(model, dict(values)) for values in items]
        return made[0] if single else made

    def m_write(self, model: str, ids: Any, vals: Any, *, ctx: dict[str, Any]) -> bool:
        if not isinstance(vals, dict):
            raise BadArguments(f"{model}.write() vals must be a dictionary")
        for rid in _ids(ids):
            self._write(model, rid, dict(vals))
        return True

    def m_unlink(self, model: str, ids: Any, *, ctx: dict[str, Any]) -> bool:
        for rid in _ids(ids):
            row = self._get(model, rid)
            if model == "account.move" and row["state"] == "posted":
                raise UserError("You cannot delete an entry which has been posted once.")
            if model == "account.move.line":
                move = self._get("account.move", row["move_id"])
                if move["state"] == "posted":
                    raise UserError("You cannot modify a posted journal item.")
            for name, fld in MODELS[model].items():
                if fld.type == "one2many":
                    self.m_unlink(fld.relation or "", row.get(name) or [], ctx=ctx)
            self.records[model].pop(rid, None)
            self._forget_links(model, rid)
        return True

    def m_action_post(self, model: str, ids: Any, *, ctx: dict[str, Any]) -> bool:
        for rid in _ids(ids):
            self.post(rid)
        return False

    def m_fields_get(
        self,
        model: str,
        allfields: list[str] | None = None,
        attributes: list[str] | None = None,
        *,
        ctx: dict[str, Any],
    ) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for name, fld in MODELS[model].items():
            if allfields and name not in allfields:
                continue
            desc: dict[str, Any] = {
                "type": fld.type,
                "string": fld.string,
                "required": fld.required,
                "readonly": fld.readonly,
            }
            if fld.relation:
                desc["relation"] = fld.relation
            if fld.selection:
                desc["selection"] = [[value, value] for value in fld.selection]
            out[name] = {k: v for k, v in desc.items() if not attributes or k in attributes}
        return out

    def m_context_get(self, model: str, *, ctx: dict[str, Any]) -> dict[str, Any]:
        return {"lang": "en_US", "tz": "Europe/Brussels", "uid": ADMIN_UID}

    # ------------------------------------------------------------------ account.move

    def post(self, move_id: int) -> dict[str, Any]:
        """``action_post`` of one entry, with the checks Odoo makes on a vendor bill (the
        admin route calls it outside ``call``: it checks before it changes anything)."""
        with self._lock:
            move = self._get("account.move", move_id)
            if move["state"] != "draft":
                raise UserError(f"The entry {move['name']} (id {move_id}) must be in draft.")
            purchase = move["move_type"] in ("in_invoice", "in_refund")
            if purchase and not move["partner_id"]:
                raise UserError(
                    "The field 'Vendor' is required, please complete it to validate the "
                    "Vendor Bill."
                )
            if purchase and not move["invoice_date"]:
                raise UserError("The Bill/Refund date is required to validate this document.")
            lines = [self.records["account.move.line"][i] for i in move["invoice_line_ids"]]
            if not [line for line in lines if line["display_type"] == "product"]:
                raise UserError("You need to add a line before posting.")
            journal = self._get("account.journal", move["journal_id"])
            year = str(move["invoice_date"] or date.today().isoformat())[:4]
            prefix = f"{journal['code']}/{year}/"
            taken = [
                m["name"]
                for m in self.records["account.move"].values()
                if str(m["name"]).startswith(prefix)
            ]
            move["name"] = f"{prefix}{len(taken) + 1:05d}"
            move["state"] = "posted"
            return dict(move)

    def _recompute(self, move_id: int) -> None:
        """Subtotals and totals as Odoo computes them: each line rounded half-up to the cent
        (``float_round``), tax per line, the totals summed from the rounded lines."""
        move = self.records["account.move"].get(move_id)
        if move is None:
            return
        untaxed = tax = Decimal(0)
        for line_id in move["invoice_line_ids"]:
            line = self.records["account.move.line"][line_id]
            if line["display_type"] != "product":
                line["price_subtotal"] = line["price_total"] = 0.0
                continue
            amount = Decimal(repr(float(line["quantity"]))) * Decimal(
                repr(float(line["price_unit"]))
            )
            subtotal = _cents(amount)
            rate = sum(
                (
                    Decimal(repr(float(self.records["account.tax"][t]["amount"])))
                    for t in line["tax_ids"]
                    if self.records["account.tax"][t]["amount_type"] == "percent"
                ),
                Decimal(0),
            )
            line_tax = _cents(subtotal * rate / 100)
            line["price_subtotal"] = float(subtotal)
            line["price_total"] = float(subtotal + line_tax)
            untaxed += subtotal
            tax += line_tax
        move["amount_untaxed"] = float(untaxed)
        move["amount_tax"] = float(tax)
        move["amount_total"] = float(untaxed + tax)

    # ------------------------------------------------------------------ internals

    def _defaults(self, model: str) -> dict[str, Any]:
        values: dict[str, Any] = {}
        for name, fld in MODELS[model].items():
            if fld.type in ("one2many", "many2many"):
                values[name] = []
            else:
                values[name] = fld.default() if callable(fld.default) else fld.default
        return values

    def _get(self, model: str, rid: Any) -> dict[str, Any]:
        row = self.records[model].get(rid) if isinstance(rid, int) else None
        if row is None:
            raise MissingError(
                "Record does not exist or has been deleted.\n"
                f"(Record: {model}({rid},), User: {ADMIN_UID})"
            )
        return row

    def _create(self, model: str, values: dict[str, Any]) -> int:
        schema = MODELS[model]
        row = self._defaults(model)
        if model == "account.move":
            row.update(self._move_defaults(values))
        commands: dict[str, Any] = {}
        for name, value in values.items():
            fld = schema.get(name)
            if fld is None:
                raise ValueError(f"Invalid field {name!r} on model {model!r}")
            if fld.readonly:
                continue
            if fld.type in ("one2many", "many2many"):
                commands[name] = value
            else:
                row[name] = self._write_value(model, name, fld, value)
        self._check(model, row)
        rid = self._next[model]
        self._next[model] += 1
        row["id"] = rid
        self.records[model][rid] = row
        for name, value in commands.items():
            self._apply_commands(model, rid, name, schema[name], value)
        self._after_write(model, row)
        return rid

    def _move_defaults(self, values: Mapping[str, Any]) -> dict[str, Any]:
        kind = values.get("move_type", "entry")
        wanted = "purchase" if kind in ("in_invoice", "in_refund") else "sale"
        journal = next(
            (j["id"] for j in self.records["account.journal"].values() if j["type"] == wanted),
            False,
        )
        return {"journal_id": journal, "currency_id": EUR}

    def _write(self, model: str, rid: int, values: dict[str, Any]) -> None:
        row = self._get(model, rid)
        schema = MODELS[model]
        if model == "account.move" and row["state"] == "posted":
            locked = sorted(set(values) - _WRITABLE_WHEN_POSTED)
            if locked:
                raise UserError(
                    "You cannot modify a posted entry: reset it to draft first "
                    f"(fields {', '.join(locked)})."
                )
        if model == "account.move.line":
            move = self._get("account.move", row["move_id"])
            if move["state"] == "posted":
                raise UserError("You cannot modify a posted journal item.")
        for name, value in values.items():
            fld = schema.get(name)
            if fld is None:
                raise ValueError(f"Invalid field {name!r} on model {model!r}")
            if fld.readonly:
                continue
            if fld.type in ("one2many", "many2many"):
                self._apply_commands(model, rid, name, fld, value)
            else:
                row[name] = self._write_value(model, name, fld, value)
        self._check(model, row)
        self._after_write(model, row)

    def _after_write(self, model: str, row: dict[str, Any]) -> None:
        if model == "account.move":
            if not row["invoice_date_due"] and row["invoice_date"]:
                row["invoice_date_due"] = row["invoice_date"]
            self._recompute(row["id"])
        elif model == "account.move.line":
            self._recompute(row["move_id"])
        elif model == "ir.attachment":
            data = base64.b64decode(row["datas"] or b"")
            row["file_size"] = len(data)
            row["checksum"] = hashlib.sha1(data).hexdigest() if data else False  # noqa: S324

    def _check(self, model: str, row: dict[str, Any]) -> None:
        """Required fields (Odoo's NOT NULL constraint, as its ValidationError reads) and the
        constraints of ``base_vat`` and ``account``."""
        for name, fld in MODELS[model].items():
            if fld.required and row.get(name) in (False, None, ""):
                raise ValidationError(
                    "The operation cannot be completed:\n"
                    "- Create/update: a mandatory field is not set.\n"
                    "- Delete: another model requires the record being deleted. If possible, "
                    f"archive it instead.\n\nModel: {model}\nField: {fld.string} ({name})"
                )
        vat = row.get("vat") if model == "res.partner" and self.check_vat else None
        if vat and not vat_is_valid(vat):
            raise ValidationError(
                f"The VAT number [{row['vat']}] for partner [{row['name']}] does not seem to "
                "be valid.\nNote: the expected format is DE123456788"
            )
        if model == "account.move.line" and row["display_type"] == "product":
            if not row["account_id"]:
                journal = self._journal_of_line(row)
                row["account_id"] = (journal or {}).get("default_account_id") or False
            if not row["account_id"]:
                raise UserError("Missing required account on accountable line.")
        if model == "account.move" and row["move_type"] != "entry" and not row["journal_id"]:
            raise UserError("No journal could be found for this type of document.")

    def _journal_of_line(self, line: dict[str, Any]) -> dict[str, Any] | None:
        move = self.records["account.move"].get(line["move_id"])
        if move is None or not move["journal_id"]:
            return None
        return self.records["account.journal"].get(move["journal_id"])

    def _write_value(self, model: str, name: str, fld: Field, value: Any) -> Any:
        if value is None:
            value = False
        if fld.type == "many2one":
            if isinstance(value, list | tuple) and value:
                value = value[0]
            if value is False:
                return False
            if not isinstance(value, int) or isinstance(value, bool):
                raise ValueError(f"Wrong value for {model}.{name}: {value!r}")
            if value not in self.records[fld.relation or ""]:
                raise ValidationError(
                    "The operation cannot be completed: another model requires the record "
                    f"being deleted or a referenced record does not exist.\nModel: {model}\n"
                    f"Field: {fld.string} ({name}), {fld.relation}({value},)"
                )
            return value
        if fld.type == "date" and value is not False:
            try:
                return date.fromisoformat(str(value)).isoformat()
            except ValueError:
                raise ValueError(f"time data {value!r} does not match format '%Y-%m-%d'") from None
        if fld.type in ("float", "monetary") and value is not False:
            return float(value)
        if fld.type == "integer":
            return int(value or 0)
        if fld.type == "boolean":
            return bool(value)
        if fld.type == "selection" and value is not False and value not in fld.selection:
            raise ValueError(f"Wrong value for {model}.{name}: {value!r}")
        if fld.type == "binary" and value is not False:
            text = value.decode("ascii") if isinstance(value, bytes) else str(value)
            try:
                base64.b64decode(text, validate=True)
            except (binascii.Error, ValueError):
                raise ValidationError(
                    f"{fld.string}: the value is not base64-encoded data"
                ) from None
            return text
        return value

    def _apply_commands(self, model: str, rid: int, name: str, fld: Field, commands: Any) -> None:
        """x2many commands: (0, 0, vals) create, (1, id, vals) update, (2, id) delete,
        (3, id) unlink, (4, id) link, (5,) clear, (6, 0, ids) replace."""
        row = self.records[model][rid]
        relation = fld.relation or ""
        current: list[int] = list(row[name])
        for command in commands or []:
            if isinstance(command, int) and not isinstance(command, bool):
                command = [4, command]
            if not isinstance(command, list | tuple) or not command:
                raise ValueError(f"Invalid command {command!r} for {model}.{name}")
            code = command[0]
            arg = command[1] if len(command) > 1 else 0
            vals = command[2] if len(command) > 2 else None
            if code == 0:
                values = dict(vals or {})
                if fld.type == "one2many":
                    values[fld.inverse or ""] = rid
                current.append(self._create(relation, values))
            elif code == 1:
                self._write(relation, arg, dict(vals or {}))
            elif code == 2:
                if fld.type == "one2many":
                    self.m_unlink(relation, [arg], ctx={})
                current = [i for i in current if i != arg]
            elif code == 3:
                if fld.type == "one2many":
                    self.m_unlink(relation, [arg], ctx={})
                current = [i for i in current if i != arg]
            elif code == 4:
                self._get(relation, arg)
                if arg not in current:
                    current.append(arg)
            elif code == 5:
                if fld.type == "one2many":
                    self.m_unlink(relation, current, ctx={})
                current = []
            elif code == 6:
                ids = _ids(vals)
                for i in ids:
                    self._get(relation, i)
                if fld.type == "one2many":
                    self.m_unlink(relation, [i for i in current if i not in ids], ctx={})
                current = ids
            else:
                raise ValueError(f"Invalid command {command!r} for {model}.{name}")
            row[name] = [i for i in current if i in self.records[relation]]
        row[name] = [i for i in current if i in self.records[relation]]

    def _forget_links(self, model: str, rid: int) -> None:
        for other, schema in MODELS.items():
            for name, fld in schema.items():
                if fld.relation != model or fld.type == "many2one":
                    continue
                for row in self.records[other].values():
                    if rid in row[name]:
                        row[name] = [i for i in row[name] if i != rid]

    def _read_value(self, fld: Field, value: Any) -> Any:
        if fld.type == "many2one":
            if not value:
                return False
            target = self.records[fld.relation or ""].get(value)
            if target is None:
                return False
            return [value, self._display_name(fld.relation or "", target)]
        if fld.type in ("one2many", "many2many"):
            return list(value or [])
        if value is None:
            return False
        return value

    def _display_name(self, model: str, row: Mapping[str, Any]) -> str:
        if model == "account.move":
            if row["name"] and row["name"] != "/":
                return str(row["name"])
            return f"Draft Bill ({row['id']})"
        if model == "account.account":
            return f"{row['code']} {row['name']}"
        key = DISPLAY_FIELD.get(model, "name")
        return str(row.get(key) or "")

    def _filter(self, model: str, domain: Any, ctx: Mapping[str, Any]) -> list[dict[str, Any]]:
        if not isinstance(domain, list | tuple):
            raise ValueError(f"Invalid domain {domain!r}")
        predicate = self._predicate(model, list(domain))
        mentions_active = any(
            isinstance(term, list | tuple) and term and term[0] == "active" for term in domain
        )
        active_test = (
            "active" in MODELS[model] and not mentions_active and ctx.get("active_test", True)
        )
        return [
            row
            for row in self.records[model].values()
            if (not active_test or row.get("active")) and predicate(row)
        ]

    def _predicate(self, model: str, domain: list[Any]) -> Callable[[dict[str, Any]], bool]:
        """A domain (Polish notation, implicit ``&`` between terms) as a function of a row."""
        position = 0

        def parse() -> Callable[[dict[str, Any]], bool]:
            nonlocal position
            if position >= len(domain):
                raise ValueError(f"Invalid domain {domain!r}")
            item = domain[position]
            position += 1
            if item == "!":
                inner = parse()
                return lambda row: not inner(row)
            if item in ("&", "|"):
                left, right = parse(), parse()
                if item == "&":
                    return lambda row: left(row) and right(row)
                return lambda row: left(row) or right(row)
            return self._leaf(model, item)

        parts = []
        while position < len(domain):
            parts.append(parse())
        return lambda row: all(part(row) for part in parts)

    def _leaf(self, model: str, term: Any) -> Callable[[dict[str, Any]], bool]:
        if term in (True, 1) or term == [1, "=", 1] or term == (1, "=", 1):
            return lambda row: True
        if not isinstance(term, list | tuple) or len(term) != 3:
            raise ValueError(f"Invalid leaf {term!r}")
        path, op, want = term
        op = str(op).lower()
        if op not in OPERATORS:
            raise ValueError(f"Invalid leaf {term!r}")
        name, _, rest = str(path).partition(".")
        fld = MODELS[model].get(name)
        if name != "id" and fld is None:
            raise ValueError(f"Invalid field {model}.{name} in leaf {term!r}")
        if rest and fld is not None and fld.relation:
            relation = fld.relation
            inner = self._leaf(relation, [rest, op, want])

            def related(row: dict[str, Any]) -> bool:
                value = row.get(name)
                targets = value if isinstance(value, list) else [value] if value else []
                return any(inner(self.records[relation][t]) for t in targets)

            return related
        return lambda row: _compare(op, row.get(name) if name != "id" else row["id"], want)

    def _order(self, rows: list[dict[str, Any]], order: str | None) -> list[dict[str, Any]]:
        rows = sorted(rows, key=lambda r: r["id"])
        for part in reversed([p.strip() for p in (order or "").split(",") if p.strip()]):
            name, _, direction = part.partition(" ")
            descending = direction.strip().lower() == "desc"
            rows.sort(key=lambda r, n=name: _sort_key(r.get(n)), reverse=descending)
        return rows

    # ------------------------------------------------------------------ inspection

    def stats(self) -> dict[str, Any]:
        """Records per model and vendor bills per state (``GET /_emulator/stats``)."""
        with self._lock:
            bills: dict[str, int] = {}
            for move in self.records["account.move"].values():
                if move["move_type"] == "in_invoice":
                    bills[move["state"]] = bills.get(move["state"], 0) + 1
            return {
                "records": {model: len(rows) for model, rows in self.records.items()},
                "bills": bills,
            }

    def snapshot(self, model: str | None = None, *, datas: bool = False) -> dict[str, Any]:
        """Everything held (or one model's records), as the admin route lists it."""
        with self._lock:
            models = [model] if model else list(MODELS)
            out: dict[str, Any] = {}
            for name in models:
                rows = []
                for row in self.records.get(name, {}).values():
                    item = dict(row)
                    if name == "ir.attachment" and not datas:
                        item.pop("datas", None)
                    rows.append(item)
                out[name] = rows
            return out


def _cents(value: Decimal) -> Decimal:
    return value.quantize(Decimal("0.01"), ROUND_HALF_UP)


def _sort_key(value: Any) -> tuple[int, Any]:
    if value in (False, None):
        return (0, "")
    if isinstance(value, list):
        return (1, value[0] if value else 0)
    return (1, value)


def _ids(value: Any) -> list[int]:
    if value in (None, False):
        return []
    if isinstance(value, int) and not isinstance(value, bool):
        return [value]
    if not isinstance(value, list | tuple) or not all(
        isinstance(i, int) and not isinstance(i, bool) for i in value
    ):
        raise ValueError(f"ids must be a list of integers, not {value!r}")
    return list(value)


_METHODS = {
    "search": "m_search",
    "search_count": "m_search_count",
    "search_read": "m_search_read",
    "read": "m_read",
    "create": "m_create",
    "write": "m_write",
    "unlink": "m_unlink",
    "action_post": "m_action_post",
    "fields_get": "m_fields_get",
    "context_get": "m_context_get",
}
_MUTATING = frozenset({"create", "write", "unlink", "action_post"})
_RECORD_METHODS = frozenset({"read", "write", "unlink", "action_post"})
"""Methods called on records: JSON-2's ``ids``, XML-RPC's first positional argument."""
