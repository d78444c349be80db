"""Tryton ERP destination: each export becomes a draft supplier invoice (``account.invoice`` of
type ``in``) with the original PDF attached, over Tryton's XML-RPC with proteus.

What one export makes in Tryton:

- **Party**: matched by the supplier's VAT id (any party identifier whose code equals the VAT id
  without spaces, dots or dashes, upper case: ``eu_vat`` identifiers hold it that way), else by
  the supplier's name (case-insensitive, exact). When none matches, a party is created with the
  name and an ``eu_vat`` identifier (``create_parties``; Tryton validates the VAT id and refuses
  a wrong one: that refusal is the delivery's final answer). A document naming no supplier gets
  ``fallback_party`` or is refused. A party found is reused for a minute without searching
  again (``PARTY_CACHE_SECONDS``).
- **Invoice**: reference = the invoice number, invoice date = the issue date, currency by ISO
  code (the company's when the document has none), the party's payable account (or the
  accounting configuration's default), the first expense journal (what Tryton's client sets;
  posting needs one).
- **Lines**: one per line item on ``line_account``: quantity (1 when missing), unit price (the
  item's, else its net amount, else its total without its tax rate, divided by the quantity);
  an item without any amount becomes a comment line. Without line items: one line carrying the
  document's net amount (or total minus tax, or total).
- **Taxes by rate**: a line's tax rate picks the tax named for that rate in ``taxes``
  (``"19" = "VAT 19%"``) when mapped; otherwise the one percentage supplier tax (group kind
  purchase/both, or no group; no child taxes) of that rate. No such tax, or more than one, is a
  refusal that says to map the rate: guessing between "19 % input VAT" and "19 % reverse charge"
  would book the wrong tax. A rate of 0 without a tax of rate 0 means no tax. The one fallback
  line gets the rate ``tax_amount / net_amount``.
- **Attachment**: the original file as an ``ir.attachment`` of the invoice, named as the
  document was.

**Where the idempotency key lives**: in the invoice's ``comment`` (a text field people see and
search in the client), as two lines ``docrelay-key: <key>`` and ``docrelay-version: <n>``.
``lookup`` searches invoices whose comment contains the key and checks the line exactly, so a key
that is a prefix of another never matches it. The receipt's reference is the invoice's id.

**Repeats and versions**: a repeat of the same version changes nothing (it only adds the
attachment if a crash came between the invoice and it). A higher version rewrites the draft
invoice: party, reference, dates, currency, comment and every line. A posted (validated, paid,
cancelled: anything but draft) invoice is never changed: a higher version raises
``TerminalError`` saying so, for a person to correct the invoice in Tryton. ``lookup`` answers
None for an invoice whose attachment is missing, so the engine pushes again and completes it.

**Errors**: Tryton's ``UserError``/``UserWarning`` (validation, domains, a wrong VAT id) are
``TerminalError`` with Tryton's message; a refused login (HTTP 401/403) is ``AuthFailed``;
refused connections, timeouts (``timeout``), 5xx, 404 (a database not loaded yet), 429 (too
many logins) and Tryton's concurrency errors are ``TransientError``.

**Threads**: proteus' configuration and ``xmlrpc.client``'s connection are not safe to share
between threads, so each delivery thread gets its own connection and Tryton session
(``threading.local``); the engine's threads then talk to Tryton in parallel, which a lock around
one shared connection would serialise. Each connection logs in once and sends its session token
(``Authorization: Session``): Tryton checks a password (argon2) on every basic-auth request,
about 100 ms each. An expired session is renewed once per call. Finding or creating a party
holds a lock, so two threads never create the same new supplier twice.
"""

from __future__ import annotations

import base64
import http.client
import threading
import time
import xmlrpc.client
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any, Literal, TypeVar
from urllib.parse import urlsplit

from pydantic import ConfigDict, Field, SecretStr, field_validator

from connectors.base import (
    ConnectorContext,
    DeliveryReceipt,
    Destination,
    DestinationSettings,
    DownstreamOutcome,
    DownstreamState,
    ExportPayload,
    LineItem,
    SettingsConfig,
)
from connectors.destinations import invoicing
from connectors.destinations.invoicing import (
    KnownIds,
    Tax,
    check_tax_rates,
    choose_tax,
    compact_vat,
    rate_key,
)
from connectors.errors import AuthFailed, DocrelayError, TerminalError, TransientError

FOLLOWED: dict[str, str | None] = {
    "state": None,
    "reference": "invoice_number",
    "invoice_date": "issue_date",
    "currency.code": "currency",
    "untaxed_amount": "net_amount",
    "tax_amount": "tax_amount",
    "total_amount": "total_amount",
}
"""What ``follow`` reads of a posted invoice (Tryton's dotted names) → the canonical field.
The party's name is not among them: a party matched by VAT id keeps its master-data name,
which is no correction of what the document says."""
KEY_MARK = "docrelay-key: "
VERSION_MARK = "docrelay-version: "
"""Tryton's default ``price_decimal`` (4) for unit prices."""
NOT_DRAFT = "is {state} in Tryton"
TAX_CACHE_SECONDS = 300.0
"""How long the list of supplier taxes is reused before it is read again (a rate missing from
it is always read again at once)."""

PARTY_CACHE_SECONDS = 60.0
"""How long a supplier's party (id, invoice address, payable account) is reused without
searching again: a party merged or changed in Tryton is seen at most this late."""

T = TypeVar("T")


def _percent(fraction: Decimal) -> Decimal:
    """Tryton keeps a rate as a fraction (0.19): in percent, normalised (19)."""
    return rate_key(Decimal(fraction) * 100)


class TrytonDestinationSettings(DestinationSettings):
    # A validation error must not echo its input: it may be the password.
    model_config = ConfigDict(**SettingsConfig, hide_input_in_errors=True)

    kind: Literal["tryton"] = "tryton"
    """Selects the Tryton destination: a draft supplier invoice per document."""
    url: str
    """Tryton's web listener (``http://host:8000/``); the database is reached below it."""
    database: str
    """The Tryton database (trytond serves it when started with ``-d``)."""
    username: str = "admin"
    """The Tryton user docrelay logs in as; its current company receives the invoices."""
    password: SecretStr
    """That user's password; or ``password_file``."""
    line_account: str
    """Code of the expense account every invoice line is booked on (lines have no product)."""
    create_parties: bool = True
    """Create a party for a supplier Tryton does not know (matched by VAT id, then name);
    false refuses such documents."""
    fallback_party: str | None = None
    """Name of the party for documents that name no supplier at all (found, or created when
    ``create_parties``); unset refuses them."""
    taxes: dict[str, str] = Field(default_factory=dict)
    """Tax rate in percent → name of the Tryton tax for it (``"19" = "VAT 19%"``); a rate not
    mapped is matched by the rate among percentage supplier taxes, when exactly one fits."""
    timeout: float = Field(30.0, gt=0)
    """Seconds one call to Tryton may take before it counts as failed (and is retried)."""
    concurrency: int | None = Field(None, ge=1)
    """Deliveries to Tryton at the same time (each thread has its own session); unset:
    ``pipeline.delivery_concurrency``."""
    follow_interval: float = Field(300.0, ge=0)
    """Seconds between two looks at the invoices docrelay made until each is posted (its
    final values become corrections for the vendor) or cancelled/deleted (a failed export
    for the vendor); 0 does not look."""

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an http:// or https:// URL with a host")
        if parts.username or parts.password or parts.query or parts.fragment:
            raise ValueError("must be the bare listener address (give the login separately)")
        return value.rstrip("/") + "/"

    @field_validator("database", "line_account", "username")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be empty")
        return value.strip()

    @field_validator("taxes")
    @classmethod
    def _taxes(cls, value: dict[str, str]) -> dict[str, str]:
        return check_tax_rates(value)


# --------------------------------------------------------------------------- connection


class _Timeouts:
    """An ``xmlrpc.client`` transport with a timeout on every connection (mixed in first)."""

    def __init__(self, timeout: float, headers: list[tuple[str, str]]) -> None:
        super().__init__(use_builtin_types=True, headers=headers)  # type: ignore[call-arg]
        self.timeout = timeout

    def make_connection(self, host: Any) -> http.client.HTTPConnection:
        conn = super().make_connection(host)  # type: ignore[misc]
        conn.timeout = self.timeout
        return conn


class _Transport(_Timeouts, xmlrpc.client.Transport):
    pass


class _SafeTransport(_Timeouts, xmlrpc.client.SafeTransport):
    pass


@dataclass
class _Session:
    """One thread's logged-in proteus configuration."""

    config: Any
    """``proteus.config.XmlrpcConfig`` carrying the session token."""
    context: dict[str, Any]

    def call(self, model: str, method: str, *args: Any) -> Any:
        """``model.method(*args, context)`` over this session; ``_Expired`` when Tryton no
        longer knows the session."""
        proxy = self.config.get_proxy(model)
        try:
            return getattr(proxy, method)(*args, self.context)
        except xmlrpc.client.ProtocolError as exc:
            if exc.errcode == 401:
                raise _Expired from exc
            raise

    def logout(self) -> None:
        self.config.server.common.db.logout()


class _Expired(Exception):
    """Tryton answered 401 to a call with a session token: log in again."""


def _user_message(fault: xmlrpc.client.Fault) -> str:
    """Tryton's ``UserError`` as people read it: message and description, no empty tail."""
    text = str(fault.faultString).strip()
    return text.removesuffix(" -").strip()


TRANSIENT_FAULTS = ("OperationalError", "database is locked", "could not serialize", "deadlock")


def classify_fault(fault: xmlrpc.client.Fault, where: str) -> DocrelayError:
    """Tryton's answer as the engine's class: validation errors and warnings are final,
    concurrency and database trouble is retried, a refused login pauses the destination."""
    message = f"{where}: Tryton says: {_user_message(fault)}"
    code = fault.faultCode
    if code == 3:  # LoginException
        return AuthFailed(message)
    if code == 4:  # ConcurrencyException
        return TransientError(message)
    if code in (1, 2):  # UserError, UserWarning
        return TerminalError(message)
    if any(mark in str(fault.faultString) for mark in TRANSIENT_FAULTS):
        return TransientError(message)
    return TerminalError(message)


def classify_protocol(exc: xmlrpc.client.ProtocolError, where: str) -> DocrelayError:
    """An HTTP status from trytond: 401 refused the login; 429 (too many failed logins), 5xx
    and 404 (a database not served yet, a restarting server) are retried."""
    message = f"{where}: HTTP {exc.errcode} {exc.errmsg}"
    if exc.errcode in (401, 403):
        return AuthFailed(f"{message}: Tryton refused the login")
    if exc.errcode in (404, 408, 429) or exc.errcode >= 500:
        return TransientError(message)
    return TerminalError(message)


# --------------------------------------------------------------------------- destination


@dataclass(frozen=True)
class _Found:
    id: int
    state: str
    version: int
    number: str | None


class TrytonDestination(Destination):
    kind = "tryton"
    settings_model = TrytonDestinationSettings
    settings: TrytonDestinationSettings
    can_look_up = True
    can_follow = True

    def __init__(self, settings: TrytonDestinationSettings, context: ConnectorContext) -> None:
        super().__init__(settings, context)
        self._rpc_url = f"{settings.url}{settings.database}/rpc/"
        self._where = f"Tryton {settings.database} at {settings.url}"
        self._local = threading.local()
        self._sessions: list[_Session] = []
        self._lock = threading.Lock()
        self._party_lock = threading.Lock()
        self._known = KnownIds()
        """Cached ids that do not change: accounts by code, currencies by ISO code, the
        default payable account."""
        self._parties: dict[tuple[str | None, str | None], tuple[dict[str, Any], float]] = {}
        """Parties found or made lately by (VAT id, name): most documents come from the same
        suppliers, and a search per document is a tenth of its time."""
        self._taxes: list[dict[str, Any]] | None = None
        self._taxes_read = 0.0

    # ----------------------------------------------------------------------- contract

    def deliver(self, payload: ExportPayload, idempotency_key: str) -> DeliveryReceipt:
        """Create or update the draft invoice under the key, then attach the original."""
        return self._with_session(
            f"cannot deliver to {self._where}", lambda s: self._deliver(s, payload, idempotency_key)
        )

    def lookup(self, payload: ExportPayload, idempotency_key: str) -> DeliveryReceipt | None:
        """The invoice made under the key at this version or later, with its attachment;
        reads only."""

        def look(session: _Session) -> DeliveryReceipt | None:
            found = self._find(session, idempotency_key)
            if found is None or found.version < payload.version:
                return None
            attachment = self._attachment(session, found.id, payload)
            if payload.original is not None and attachment is None:
                return None  # the crash came before the attachment: deliver completes it
            return self._receipt(found, attachment)

        return self._with_session(f"cannot look up in {self._where}", look)

    def follow(self, receipt: DeliveryReceipt) -> DownstreamOutcome:
        """Posted or paid: the invoice's final values; cancelled or deleted: rejected; draft
        or validated: still pending. Reads only."""
        invoice_id = int(receipt.data.get("invoice_id") or receipt.ref)

        def look(session: _Session) -> DownstreamOutcome:
            rows = session.call(
                "account.invoice", "search_read", [("id", "=", invoice_id)], 0, 1, None,
                list(FOLLOWED),
            )  # fmt: skip
            if not rows:
                return DownstreamOutcome(DownstreamState.REJECTED, "deleted in Tryton")
            (row,) = rows
            state = row["state"]
            if state == "cancelled":
                return DownstreamOutcome(DownstreamState.REJECTED, "cancelled in Tryton")
            if state not in ("posted", "paid"):
                return DownstreamOutcome(DownstreamState.PENDING)
            values = {}
            for tryton_name, name in FOLLOWED.items():
                value = _dotted(row, tryton_name)
                if name and value not in (None, ""):
                    values[name] = str(value)
            return DownstreamOutcome(DownstreamState.POSTED, values=values)

        return self._with_session(f"cannot look at {self._where}", look)

    def probe(self) -> list[str]:
        """Log in and look at the company, the line account and the mapped taxes; writes
        nothing but the session Tryton keeps for a login."""

        def look(session: _Session) -> list[str]:
            lines = [f"{self._where}: logged in as {self.settings.username}"]
            company = session.context.get("company")
            if not company:
                raise TerminalError(f"{self._where}: the user has no current company")
            lines.append(f"company: {session.context.get('company.rec_name', company)}")
            account = self._account(session)
            lines.append(f"line account {self.settings.line_account} (id {account})")
            for rate in self.settings.taxes:
                tax = self._tax(session, rate_key(rate))
                lines.append(f"tax for {rate} %: id {tax}")
            return lines

        return self._with_session(f"cannot look at {self._where}", look)

    def close(self) -> None:
        """Log every thread's session out (best effort: the server may be gone)."""
        with self._lock:
            sessions, self._sessions = self._sessions, []
        for session in sessions:
            try:
                session.logout()
            except (OSError, xmlrpc.client.Error, http.client.HTTPException):
                pass
        self._local = threading.local()

    # ----------------------------------------------------------------------- delivery

    def _deliver(self, session: _Session, payload: ExportPayload, key: str) -> DeliveryReceipt:
        found = self._find(session, key)
        if found is not None and found.version >= payload.version:
            attachment = self._attachment(session, found.id, payload, create=True)
            return self._receipt(found, attachment)
        if found is not None and found.state != "draft":
            name = f"invoice {found.number or found.id}"
            raise TerminalError(
                f"{self._where}: {name} {NOT_DRAFT.format(state=found.state)}; version "
                f"{payload.version} of document {payload.document_id} is not applied (a posted "
                "invoice is never changed: correct it in Tryton)"
            )
        party, created = self._party(session, payload)
        values = self._invoice_values(session, payload, key, party)
        if found is None:
            (invoice_id,) = session.call("account.invoice", "create", [values])
            state = "draft"
        else:
            invoice_id = found.id
            (old,) = session.call("account.invoice", "read", [found.id], ["lines"])
            values["lines"] = [("delete", old["lines"]), *values["lines"]]
            session.call("account.invoice", "write", [found.id], values)
            state = found.state
        attachment = self._attachment(
            session, invoice_id, payload, create=True, fresh=found is None
        )
        receipt = self._receipt(_Found(invoice_id, state, payload.version, None), attachment)
        data = {**receipt.data, "party_id": party["id"], "party_created": created}
        return DeliveryReceipt(ref=receipt.ref, data=data)

    def _receipt(self, found: _Found, attachment: int | None) -> DeliveryReceipt:
        data: dict[str, Any] = {"invoice_id": found.id, "state": found.state}
        if attachment is not None:
            data["attachment_id"] = attachment
        return DeliveryReceipt(ref=str(found.id), data=data)

    def _find(self, session: _Session, key: str) -> _Found | None:
        """The supplier invoice whose comment carries exactly this key (the oldest, should a
        person have copied one)."""
        rows = session.call(
            "account.invoice",
            "search_read",
            [("type", "=", "in"), ("comment", "ilike", f"%{like_pattern(KEY_MARK + key)}%")],
            0,
            None,
            [("id", "ASC")],
            ["comment", "state", "number"],
        )
        for row in rows:
            marks = parse_comment(row.get("comment") or "")
            if marks.get("key") == key:
                return _Found(
                    row["id"], row["state"], int(marks.get("version") or 1), row.get("number")
                )
        return None

    def _attachment(
        self,
        session: _Session,
        invoice_id: int,
        payload: ExportPayload,
        *,
        create: bool = False,
        fresh: bool = False,
    ) -> int | None:
        """The original's attachment on the invoice (made when ``create`` and missing; an
        invoice made just now (``fresh``) has none to look for)."""
        if payload.original is None:
            return None
        resource = f"account.invoice,{invoice_id}"
        name = payload.filename or payload.original.name
        ids = []
        if not fresh:
            ids = session.call(
                "ir.attachment",
                "search",
                [("resource", "=", resource), ("name", "=", name)],
                0,
                1,
                None,
            )
        if ids or not create:
            return ids[0] if ids else None
        try:
            data = payload.original.read_bytes()
        except OSError as exc:
            raise TransientError(f"cannot read the original {payload.original}: {exc}") from exc
        (made,) = session.call(
            "ir.attachment",
            "create",
            [{"name": name, "resource": resource, "type": "data", "data": data}],
        )
        return made

    # ----------------------------------------------------------------------- invoice values

    def _invoice_values(
        self, session: _Session, payload: ExportPayload, key: str, party: dict[str, Any]
    ) -> dict[str, Any]:
        result = payload.result
        values: dict[str, Any] = {
            "type": "in",
            "party": party["id"],
            "invoice_address": party["address"],
            "account": party["account"],
            "comment": comment(payload, key),
        }
        number = invoicing.text(payload, "invoice_number")
        values["reference"] = number
        issued = invoicing.typed(payload, "issue_date")
        values["invoice_date"] = issued if isinstance(issued, date) else None
        code = invoicing.currency_code(payload)
        if code:
            values["currency"] = self._currency(session, code.upper())
        journal = self._journal(session)
        if journal is not None:
            values["journal"] = journal
        account = self._account(session)
        lines = [self._line(session, item, account) for item in result.line_items]
        if lines and not any("taxes" in line for line in lines):
            self._tax_untaxed_lines(session, payload, lines)
        if not lines:
            lines = [self._fallback_line(session, payload, account)]
        if "currency" in values:  # a line's currency must be its invoice's (Tryton's domain)
            lines = [{**line, "currency": values["currency"]} for line in lines]
        values["lines"] = [("create", lines)]
        return values

    def _line(self, session: _Session, item: LineItem, account: int) -> dict[str, Any]:
        description = item.description or item.item_code or f"Line {item.line_no}"
        quantity = item.quantity if item.quantity not in (None, Decimal(0)) else Decimal(1)
        price = invoicing.line_price(item, quantity)
        if price is None:
            return {"type": "comment", "description": description}
        line: dict[str, Any] = {
            "type": "line",
            "account": account,
            "description": description,
            "quantity": float(quantity),
            "unit_price": price,
        }
        if item.tax_rate is not None:
            tax = self._tax(session, item.tax_rate)
            if tax is not None:
                line["taxes"] = [("add", [tax])]
        return line

    def _tax_untaxed_lines(
        self, session: _Session, payload: ExportPayload, lines: list[dict[str, Any]]
    ) -> None:
        """Lines read without a rate, on a document whose amounts imply one rate (the total
        is the lines' net plus 19 % of it): that rate's tax on each, so Tryton's total is the
        document's, not its net."""
        net = sum(
            (Decimal(str(line["quantity"])) * line["unit_price"] for line in lines
             if line["type"] == "line"),
            Decimal(0),
        )  # fmt: skip
        tax_amount, total = (
            invoicing.number(payload, "tax_amount"),
            invoicing.number(payload, "total_amount"),
        )
        rate = invoicing.implied_rate(net, tax_amount, total, len(lines))
        if not rate:
            return
        tax = self._tax(session, rate)
        if tax is None:
            return
        for line in lines:
            if line["type"] == "line":
                line["taxes"] = [("add", [tax])]

    def _fallback_line(
        self, session: _Session, payload: ExportPayload, account: int
    ) -> dict[str, Any]:
        """The one line of a document without line items: its net amount."""
        net = invoicing.number(payload, "net_amount")
        tax = invoicing.number(payload, "tax_amount")
        total = invoicing.number(payload, "total_amount")
        if net is None and total is not None:
            net = total - tax if tax is not None else total
        if net is None:
            raise TerminalError(
                f"document {payload.document_id} has no line items and no net or total amount"
            )
        number = invoicing.text(payload, "invoice_number")
        line: dict[str, Any] = {
            "type": "line",
            "account": account,
            "description": f"Invoice {number}" if number else payload.filename,
            "quantity": 1.0,
            "unit_price": net.quantize(invoicing.PRICE_DIGITS, ROUND_HALF_EVEN),
        }
        if tax and net:
            rate = (tax / net * 100).quantize(Decimal("0.01"), ROUND_HALF_EVEN)
            found = self._tax(session, rate)
            if found is not None:
                line["taxes"] = [("add", [found])]
        return line

    # ----------------------------------------------------------------------- references

    def _party(self, session: _Session, payload: ExportPayload) -> tuple[dict[str, Any], bool]:
        """The supplier's party (id, invoice address, payable account) and whether it was
        created now."""
        vat = compact_vat(invoicing.text(payload, "supplier_vat_id"))
        name = (invoicing.text(payload, "supplier_name") or "").strip() or None
        if vat is None and name is None:
            if self.settings.fallback_party is None:
                raise TerminalError(
                    f"document {payload.document_id} names no supplier (no supplier_name, no "
                    "supplier_vat_id) and no fallback_party is configured"
                )
            name = self.settings.fallback_party
        fields = ["addresses", "account_payable"]
        with self._lock:
            known = self._parties.get((vat, name))
        if known is not None and time.monotonic() - known[1] < PARTY_CACHE_SECONDS:
            return known[0], False
        with self._party_lock:
            rows: list[dict[str, Any]] = []
            if vat is not None:
                rows = session.call(
                    "party.party",
                    "search_read",
                    [("identifiers.code", "=", vat)],
                    0,
                    1,
                    [("id", "ASC")],
                    fields,
                )
            if not rows and name is not None:
                candidates = session.call(
                    "party.party",
                    "search_read",
                    [("name", "ilike", like_pattern(name))],
                    0,
                    None,
                    [("id", "ASC")],
                    [*fields, "name"],
                )
                rows = [r for r in candidates if r["name"].casefold() == name.casefold()][:1]
            created = False
            if not rows:
                if not self.settings.create_parties:
                    raise TerminalError(
                        f"no party in Tryton with VAT id {vat or '-'} or name {name or '-'} "
                        "(create_parties = false)"
                    )
                values: dict[str, Any] = {"name": name or vat, "addresses": [("create", [{}])]}
                if vat is not None:
                    values["identifiers"] = [("create", [{"type": "eu_vat", "code": vat}])]
                (made,) = session.call("party.party", "create", [values])
                rows = session.call("party.party", "read", [made], fields)
                created = True
        row = rows[0]
        addresses = row["addresses"]
        if not addresses:
            (address,) = session.call("party.address", "create", [{"party": row["id"]}])
        else:
            address = addresses[0]
        account = row["account_payable"] or self._default_payable(session)
        if account is None:
            raise TerminalError(
                f"party {row['id']} has no payable account and the accounting configuration "
                "has no default one"
            )
        party = {"id": row["id"], "address": address, "account": account}
        with self._lock:
            self._parties[(vat, name)] = (party, time.monotonic())
        return party, created

    def _default_payable(self, session: _Session) -> int | None:
        def read() -> int | None:
            (row,) = session.call("account.configuration", "read", [1], ["default_account_payable"])
            return row["default_account_payable"]

        return self._known.get("config", "payable", read)

    def _journal(self, session: _Session) -> int | None:
        """The expense journal, as Tryton's client picks it for a supplier invoice (a draft
        may have none, but posting needs one)."""

        def read() -> int | None:
            ids = session.call(
                "account.journal", "search", [("type", "=", "expense")], 0, 1, [("id", "ASC")]
            )
            return ids[0] if ids else None

        return self._known.get("journal", "expense", read)

    def _account(self, session: _Session) -> int:
        code = self.settings.line_account

        def read() -> int | None:
            ids = session.call(
                "account.account",
                "search",
                [("code", "=", code), ("closed", "!=", True)],
                0,
                1,
                None,
            )
            return ids[0] if ids else None

        found = self._known.get("account", code, read)
        if found is None:
            raise TerminalError(f"{self._where} has no open account with code {code!r}")
        return found

    def _currency(self, session: _Session, code: str) -> int:
        def read() -> int | None:
            ids = session.call("currency.currency", "search", [("code", "=", code)], 0, 1, None)
            return ids[0] if ids else None

        found = self._known.get("currency", code, read)
        if found is None:
            raise TerminalError(f"{self._where} has no currency {code!r}")
        return found

    def _tax(self, session: _Session, rate: Decimal) -> int | None:
        """The supplier tax for a rate in percent (see the module docstring); None for a
        rate of 0 that has no tax."""

        def read(fresh: bool) -> list[Tax]:
            taxes = self._supplier_taxes(session, fresh=fresh)
            return [
                (t["id"], t["name"], _percent(t["rate"]) if t["rate"] is not None else None)
                for t in taxes
            ]

        return choose_tax(rate, self.settings.taxes, read, where=self._where, kind="supplier")

    def _supplier_taxes(self, session: _Session, *, fresh: bool) -> list[dict[str, Any]]:
        with self._lock:
            taxes, read_at = self._taxes, self._taxes_read
        if taxes is not None and not fresh and time.monotonic() - read_at < TAX_CACHE_SECONDS:
            return taxes
        taxes = session.call(
            "account.tax",
            "search_read",
            [
                ("parent", "=", None),
                ["OR", ("group", "=", None), ("group.kind", "in", ["purchase", "both"])],
            ],
            0,
            None,
            [("id", "ASC")],
            ["name", "rate", "type"],
        )
        taxes = [t for t in taxes if t["type"] == "percentage"] if taxes else []
        with self._lock:
            self._taxes, self._taxes_read = taxes, time.monotonic()
        return taxes

    # ----------------------------------------------------------------------- sessions

    def _with_session(self, where: str, work: Callable[[_Session], T]) -> T:
        """Run ``work`` on this thread's session, logging in (again, once, when the session
        expired); errors become the engine's classes, without the password."""
        with self._classified(where):
            session = self._session()
            try:
                return work(session)
            except _Expired:
                self._forget(session)
                return work(self._session())

    def _session(self) -> _Session:
        session = getattr(self._local, "session", None)
        if session is None:
            session = self._login()
            self._local.session = session
            with self._lock:
                self._sessions.append(session)
        return session

    def _forget(self, session: _Session) -> None:
        self._local.session = None
        with self._lock:
            if session in self._sessions:
                self._sessions.remove(session)

    def _transport(self, headers: list[tuple[str, str]]) -> xmlrpc.client.Transport:
        cls = _SafeTransport if self._rpc_url.startswith("https:") else _Transport
        return cls(self.settings.timeout, headers)

    def _login(self) -> _Session:
        from proteus import config as proteus_config

        server = xmlrpc.client.ServerProxy(
            self._rpc_url, allow_none=True, use_builtin_types=True, transport=self._transport([])
        )
        parameters = {"password": self.settings.password.get_secret_value()}
        try:
            user_id, token, *_ = server.common.db.login(self.settings.username, parameters, "en")
        except xmlrpc.client.ProtocolError as exc:
            if exc.errcode in (401, 403):
                raise AuthFailed(
                    f"{self._where}: Tryton refused the login of {self.settings.username!r}"
                ) from None
            raise
        value = f"{self.settings.username}:{user_id}:{token}".encode()
        header = [("Authorization", "Session " + base64.b64encode(value).decode("ascii"))]
        config = proteus_config.XmlrpcConfig(self._rpc_url, transport=self._transport(header))
        return _Session(config=config, context=dict(config.context))

    @contextmanager
    def _classified(self, where: str) -> Iterator[None]:
        secret = self.settings.password.get_secret_value()

        def scrub(text: str) -> str:
            return text.replace(secret, "***") if secret else text

        try:
            yield
        except DocrelayError:
            raise
        except _Expired:
            raise AuthFailed(f"{where}: Tryton refused a fresh session") from None
        except xmlrpc.client.Fault as exc:
            error = classify_fault(exc, where)
            error.message = scrub(error.message)
            raise error from None
        except xmlrpc.client.ProtocolError as exc:
            error = classify_protocol(exc, where)
            raise error from None
        except (OSError, http.client.HTTPException, xmlrpc.client.ResponseError) as exc:
            raise TransientError(scrub(f"{where}: {type(exc).__name__}: {exc}")) from None


# --------------------------------------------------------------------------- values


def comment(payload: ExportPayload, key: str) -> str:
    """The invoice's comment: where it came from, and the key and version it was made under."""
    return (
        f"Imported by docrelay from {payload.filename} (document {payload.document_id}, "
        f"{payload.vendor}).\n{KEY_MARK}{key}\n{VERSION_MARK}{payload.version}\n"
    )


def parse_comment(text: str) -> dict[str, str]:
    """The key and version marks of a comment ``comment`` wrote."""
    found: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if line.startswith(KEY_MARK):
            found.setdefault("key", line.removeprefix(KEY_MARK).strip())
        elif line.startswith(VERSION_MARK):
            found.setdefault("version", line.removeprefix(VERSION_MARK).strip())
    if not found.get("version", "1").isdigit():
        found["version"] = "1"
    return found


def _dotted(row: dict[str, Any], name: str) -> Any:
    """A value read with Tryton's dotted notation: ``party.name`` comes back as
    ``row["party."]["name"]``."""
    head, dot, rest = name.partition(".")
    if not dot:
        return row.get(name)
    related = row.get(f"{head}.")
    return related.get(rest) if isinstance(related, dict) else None


def like_pattern(text: str) -> str:
    """An ``ilike`` pattern that finds ``text`` whatever its case on every backend: SQLite
    folds only ASCII, so every other character (and ``\\``) matches any one character; the
    caller compares the candidates exactly."""
    return "".join(c if c.isascii() and c != "\\" else "_" for c in text)
