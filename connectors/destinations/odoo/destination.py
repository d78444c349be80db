"""Odoo ERP destination: each export becomes a draft vendor bill (``account.move`` with
``move_type = "in_invoice"``) with the original PDF attached, over Odoo's JSON-2 API (Odoo 19+)
or XML-RPC (older versions); the transports are ``client``'s, the field mapping ``mapping``'s.

What one export makes in Odoo:

- **Partner**: matched by the supplier's VAT id (``vat``, compared without spaces, dots or
  dashes, upper case), else by its name (case-insensitive, exact). When none matches, a company
  partner is created with the name and VAT id and a supplier rank of 1 (``create_partners``;
  Odoo's ``base_vat`` refuses a wrong VAT id, and that refusal is the delivery's final answer).
  A document naming no supplier gets ``fallback_partner`` or is refused. A partner found is
  reused for a minute without searching again (``PARTNER_CACHE_SECONDS``).
- **Bill**: ``ref`` = the invoice number, ``payment_reference``, ``invoice_date`` = the issue
  date, ``invoice_date_due``, the currency by ISO code (``res.currency`` by name; the company's
  when the document has none), the ``journal`` when configured (else Odoo's default purchase
  journal), ``company_id`` when configured.
- **Lines**: one per line item on ``line_account`` (else the journal's default account):
  quantity (1 when missing), unit price (the item's, else its net amount, else its total
  without its tax rate, divided by the quantity); an item without any amount becomes a note
  line. Without line items: one line carrying the document's net amount (or total minus tax, or
  total), taxed at ``tax_amount / net_amount``; line items that print no rate take that rate
  too when a purchase tax of exactly it exists (an invoice with one rate), else no tax.
- **Taxes by rate**: the purchase tax ``taxes`` names for the rate, else the one percentage
  purchase tax of that rate (``account.tax``, ``type_tax_use = purchase``). None or several is a
  refusal that says to map the rate; a rate of 0 without such a tax means no tax.
- **Attachment**: the original file as an ``ir.attachment`` of the bill (``res_model =
  account.move``, ``res_id``, ``datas`` in base64), named as the document was.

**Where the idempotency key lives**: in the bill's ``narration`` (the note people see under
the lines), as paragraphs ``docrelay-key: <key>`` and ``docrelay-version: <n>``. ``lookup``
searches bills whose narration contains the key and checks the mark exactly, so a key that is a
prefix of another never matches it. The receipt's reference is the move id; its data the
move's number and state, the attachment and the partner.

**Repeats and versions**: a repeat of the same version changes nothing (it only adds the
attachment if a crash came between the bill and it). A higher version rewrites the draft bill:
its fields and every line (the old lines deleted, the new ones created, in one ``write``). A
posted or cancelled bill is never changed: a higher version raises ``TerminalError`` saying so,
for a person to reset the bill to draft in Odoo (then the next retry applies it) or to correct
it there. ``lookup`` answers None for a bill whose attachment is missing, so the engine pushes
again and completes it.

**Errors**: see ``client``: Odoo's UserError/ValidationError are ``TerminalError`` with Odoo's
message, a refused API key or login is ``AuthFailed``, 5xx, timeouts and refused connections
are ``TransientError``.
"""

from __future__ import annotations

import base64
import threading
import time
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import httpx

from connectors.base import (
    ConnectorContext,
    DeliveryReceipt,
    Destination,
    DownstreamOutcome,
    DownstreamState,
    ExportPayload,
)
from connectors.destinations.invoicing import (
    KnownIds,
    Tax,
    choose_tax,
    compact_vat,
    currency_code,
    rate_key,
    text,
)
from connectors.destinations.odoo import mapping
from connectors.destinations.odoo.client import OdooClient, make_client
from connectors.destinations.odoo.settings import OdooDestinationSettings
from connectors.errors import TerminalError, TransientError

PARTNER_CACHE_SECONDS = 60.0
"""How long a supplier's partner id is reused without searching again: a partner merged or
archived in Odoo is seen at most this late."""
TAX_CACHE_SECONDS = 300.0
"""How long the list of purchase taxes is reused (a rate missing from it is read again at
once)."""

MOVE_FIELDS = ["narration", "state", "name"]
FOLLOWED: dict[str, str | None] = {
    "state": None,
    "ref": "invoice_number",
    "invoice_date": "issue_date",
    "invoice_date_due": "due_date",
    "currency_id": "currency",
    "amount_untaxed": "net_amount",
    "amount_tax": "tax_amount",
    "amount_total": "total_amount",
}
"""What ``follow`` reads of a posted bill → the canonical field (the partner's name is not
among them: a partner matched by VAT id keeps its own name)."""


@dataclass(frozen=True)
class _Found:
    id: int
    state: str
    version: int
    name: str | None


class OdooDestination(Destination):
    kind = "odoo"
    settings_model = OdooDestinationSettings
    settings: OdooDestinationSettings
    can_look_up = True
    can_follow = True

    def __init__(
        self,
        settings: OdooDestinationSettings,
        context: ConnectorContext,
        *,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        super().__init__(settings, context)
        self.client: OdooClient = make_client(settings, transport=transport)
        self._where = self.client.where
        self._lock = threading.Lock()
        self._partner_lock = threading.Lock()
        self._known = KnownIds()
        """Ids that do not change: currencies, journals, accounts by code."""
        self._partners: dict[tuple[str | None, str | None], tuple[int, float]] = {}
        self._taxes: list[dict[str, Any]] | None = None
        self._taxes_read = 0.0

    # ----------------------------------------------------------------------- contract

    def deliver(self, payload: ExportPayload, idempotency_key: str) -> DeliveryReceipt:
        """Create or update the draft bill under the key, then attach the original."""
        found = self._find(idempotency_key)
        if found is not None and found.version >= payload.version:
            attachment = self._attachment(found.id, payload, create=True)
            return self._receipt(found, attachment)
        if found is not None and found.state != "draft":
            raise TerminalError(
                f"{self._where}: bill {found.name or found.id} is {found.state} in Odoo; version "
                f"{payload.version} of document {payload.document_id} is not applied (a posted "
                "bill is never changed: reset it to draft or correct it in Odoo)"
            )
        partner, created = self._partner(payload)
        values = self._bill_values(payload, idempotency_key, partner)
        lines = [[0, 0, line] for line in self._lines(payload)]
        if found is None:
            values["invoice_line_ids"] = lines
            (move_id,) = self.client.call(
                "account.move", "create", vals_list=[values], replayable=False
            )
        else:
            move_id = found.id
            (old,) = self.client.call(
                "account.move", "read", ids=[move_id], fields=["invoice_line_ids"]
            )
            values["invoice_line_ids"] = [[2, i, 0] for i in old["invoice_line_ids"]] + lines
            self.client.call("account.move", "write", ids=[move_id], vals=values)
        attachment = self._attachment(move_id, payload, create=True, fresh=found is None)
        (row,) = self.client.call("account.move", "read", ids=[move_id], fields=MOVE_FIELDS)
        made = _Found(move_id, row["state"], payload.version, row.get("name") or None)
        receipt = self._receipt(made, attachment)
        data = {**receipt.data, "partner_id": partner, "partner_created": created}
        return DeliveryReceipt(ref=receipt.ref, data=data)

    def lookup(self, payload: ExportPayload, idempotency_key: str) -> DeliveryReceipt | None:
        """The bill made under the key at this version or later, with its attachment; reads
        only."""
        found = self._find(idempotency_key)
        if found is None or found.version < payload.version:
            return None
        attachment = self._attachment(found.id, payload)
        if payload.original is not None and attachment is None:
            return None  # the crash came before the attachment: deliver completes it
        return self._receipt(found, attachment)

    def follow(self, receipt: DeliveryReceipt) -> DownstreamOutcome:
        """Posted: the bill's final values; cancelled or deleted: rejected; draft: pending.
        Reads only."""
        move_id = int(receipt.data.get("move_id") or receipt.ref)
        rows = self.client.call(
            "account.move", "search_read", domain=[["id", "=", move_id]], fields=list(FOLLOWED)
        )
        if not rows:
            return DownstreamOutcome(DownstreamState.REJECTED, "deleted in Odoo")
        (row,) = rows
        if row["state"] == "cancel":
            return DownstreamOutcome(DownstreamState.REJECTED, "cancelled in Odoo")
        if row["state"] != "posted":
            return DownstreamOutcome(DownstreamState.PENDING)
        values = {}
        for odoo_name, name in FOLLOWED.items():
            value = row.get(odoo_name)
            if isinstance(value, list):  # a many2one reads as [id, display name]
                value = value[1] if len(value) > 1 else None
            if isinstance(value, float):
                value = f"{Decimal(str(value)):.2f}"
            if name and value not in (None, False, ""):
                values[name] = str(value)
        return DownstreamOutcome(DownstreamState.POSTED, values=values)

    def probe(self) -> list[str]:
        """Log in and look at the journal, the line account and the mapped taxes; writes
        nothing."""
        lines = [self.client.identify()]
        journal = self._journal()
        if journal is not None:
            lines.append(f"journal {self.settings.journal} (id {journal})")
        account = self._account()
        if account is not None:
            lines.append(f"line account {self.settings.line_account} (id {account})")
        for rate in self.settings.taxes:
            lines.append(f"tax for {rate} %: id {self._tax(rate_key(rate))}")
        return lines

    def close(self) -> None:
        self.client.close()

    # ----------------------------------------------------------------------- the bill

    def _receipt(self, found: _Found, attachment: int | None) -> DeliveryReceipt:
        data: dict[str, Any] = {"move_id": found.id, "state": found.state}
        if found.name and found.name != "/":
            data["name"] = found.name
        if attachment is not None:
            data["attachment_id"] = attachment
        return DeliveryReceipt(ref=str(found.id), data=data)

    def _find(self, key: str) -> _Found | None:
        """The vendor bill whose narration carries exactly this key (the oldest, should a
        person have copied one)."""
        rows = self.client.call(
            "account.move",
            "search_read",
            domain=[
                ["move_type", "=", "in_invoice"],
                ["narration", "ilike", mapping.key_search(key)],
            ],
            fields=MOVE_FIELDS,
            order="id asc",
        )
        for row in rows or []:
            if mapping.is_ours(row.get("narration"), key):
                marks = mapping.parse_narration(row.get("narration"))
                return _Found(
                    row["id"], row["state"], int(marks.get("version") or 1), row.get("name")
                )
        return None

    def _bill_values(self, payload: ExportPayload, key: str, partner: int) -> dict[str, Any]:
        code = currency_code(payload)
        currency = self._currency(code) if code else None
        values = mapping.bill_values(
            payload, key, partner=partner, currency=currency, journal=self._journal()
        )
        if self.settings.company_id is not None:
            values["company_id"] = self.settings.company_id
        return values

    def _lines(self, payload: ExportPayload) -> list[dict[str, Any]]:
        account = self._account()
        lines = []
        implied: list[int] | None = None
        for item in payload.result.line_items:
            if item.tax_rate is not None:
                tax = self._tax(item.tax_rate)
                taxes = [tax] if tax else []
            else:
                if implied is None:
                    implied = self._implied_taxes(payload)
                taxes = implied
            lines.append(mapping.item_line(item, account, taxes))
        if lines:
            return lines
        amounts = mapping.fallback_amounts(payload)
        if amounts is None:
            raise TerminalError(
                f"document {payload.document_id} has no line items and no net or total amount"
            )
        net, rate = amounts
        tax = self._tax(rate) if rate is not None else None
        return [mapping.fallback_line(payload, net, account, [tax] if tax else [])]

    def _implied_taxes(self, payload: ExportPayload) -> list[int]:
        """For line items that print no rate: the document's one rate (``tax_amount /
        net_amount``) when a purchase tax of exactly that rate exists, else none."""
        amounts = mapping.fallback_amounts(payload)
        if amounts is None or amounts[1] is None:
            return []
        try:
            tax = self._tax(amounts[1])
        except TerminalError:
            return []  # several rates mixed, or no such tax: the lines say nothing more
        return [tax] if tax else []

    def _attachment(
        self, move_id: int, payload: ExportPayload, *, create: bool = False, fresh: bool = False
    ) -> int | None:
        """The original's attachment on the bill (made when ``create`` and missing; a bill
        made just now (``fresh``) has none to look for)."""
        if payload.original is None:
            return None
        name = payload.filename or payload.original.name
        ids: list[int] = []
        if not fresh:
            ids = self.client.call(
                "ir.attachment",
                "search",
                domain=[
                    ["res_model", "=", "account.move"],
                    ["res_id", "=", move_id],
                    ["name", "=", name],
                ],
                limit=1,
            )
        if ids or not create:
            return ids[0] if ids else None
        try:
            data = payload.original.read_bytes()
        except OSError as exc:
            raise TransientError(f"cannot read the original {payload.original}: {exc}") from exc
        (made,) = self.client.call(
            "ir.attachment",
            "create",
            vals_list=[
                {
                    "name": name,
                    "res_model": "account.move",
                    "res_id": move_id,
                    "type": "binary",
                    "datas": base64.b64encode(data).decode("ascii"),
                    "mimetype": payload.mime_type,
                }
            ],
            replayable=False,
        )
        return made

    # ----------------------------------------------------------------------- references

    def _partner(self, payload: ExportPayload) -> tuple[int, bool]:
        """The supplier's partner id and whether it was created now."""
        vat = compact_vat(text(payload, "supplier_vat_id"))
        name = text(payload, "supplier_name")
        if vat is None and name is None:
            if self.settings.fallback_partner is None:
                raise TerminalError(
                    f"document {payload.document_id} names no supplier (no supplier_name, no "
                    "supplier_vat_id) and no fallback_partner is configured"
                )
            name = self.settings.fallback_partner
        with self._lock:
            known = self._partners.get((vat, name))
        if known is not None and time.monotonic() - known[1] < PARTNER_CACHE_SECONDS:
            return known[0], False
        with self._partner_lock:
            found = self._search_partner(vat, name)
            created = False
            if found is None:
                if not self.settings.create_partners:
                    raise TerminalError(
                        f"{self._where} has no partner with VAT id {vat or '-'} or name "
                        f"{name or '-'} (create_partners = false)"
                    )
                values: dict[str, Any] = {
                    "name": name or vat,
                    "is_company": True,
                    "supplier_rank": 1,
                }
                if vat is not None:
                    values["vat"] = vat
                (found,) = self.client.call(
                    "res.partner", "create", vals_list=[values], replayable=False
                )
                created = True
        with self._lock:
            self._partners[(vat, name)] = (found, time.monotonic())
        return found, created

    def _search_partner(self, vat: str | None, name: str | None) -> int | None:
        if vat is not None:
            rows = self.client.call(
                "res.partner",
                "search_read",
                domain=[["vat", "ilike", vat]],
                fields=["vat"],
                order="id asc",
            )
            for row in rows or []:
                if compact_vat(row.get("vat") or None) == vat:
                    return int(row["id"])
        if name is not None:
            rows = self.client.call(
                "res.partner",
                "search_read",
                domain=[["name", "=ilike", name]],
                fields=["name"],
                order="id asc",
            )
            for row in rows or []:
                if str(row.get("name") or "").casefold() == name.casefold():
                    return int(row["id"])
        return None

    def _search_one(self, model: str, domain: list[Any]) -> int | None:
        ids = self.client.call(model, "search", domain=domain, limit=1)
        return ids[0] if ids else None

    def _currency(self, code: str) -> int:
        found = self._known.get(
            "currency", code, lambda: self._search_one("res.currency", [["name", "=", code]])
        )
        if found is None:
            raise TerminalError(f"{self._where} has no active currency {code!r}")
        return found

    def _journal(self) -> int | None:
        code = self.settings.journal
        if code is None:
            return None
        domain = [["code", "=", code], ["type", "=", "purchase"]]
        found = self._known.get(
            "journal", code, lambda: self._search_one("account.journal", domain)
        )
        if found is None:
            raise TerminalError(f"{self._where} has no purchase journal with code {code!r}")
        return found

    def _account(self) -> int | None:
        code = self.settings.line_account
        if code is None:
            return None
        domain = [["code", "=", code]]
        found = self._known.get(
            "account", code, lambda: self._search_one("account.account", domain)
        )
        if found is None:
            raise TerminalError(f"{self._where} has no account with code {code!r}")
        return found

    def _tax(self, rate: Decimal) -> int | None:
        """The purchase tax for a rate in percent (see the module docstring); None for a rate
        of 0 that has no tax."""

        def read(fresh: bool) -> list[Tax]:
            taxes = self._purchase_taxes(fresh=fresh)
            return [(int(t["id"]), str(t["name"]), rate_key(t["amount"])) for t in taxes]

        return choose_tax(rate, self.settings.taxes, read, where=self._where, kind="purchase")

    def _purchase_taxes(self, *, fresh: bool) -> list[dict[str, Any]]:
        with self._lock:
            taxes, read_at = self._taxes, self._taxes_read
        if taxes is not None and not fresh and time.monotonic() - read_at < TAX_CACHE_SECONDS:
            return taxes
        domain: list[Any] = [["type_tax_use", "=", "purchase"], ["amount_type", "=", "percent"]]
        if self.settings.company_id is not None:
            domain.append(["company_id", "=", self.settings.company_id])
        taxes = self.client.call(
            "account.tax", "search_read", domain=domain, fields=["name", "amount"], order="id asc"
        )
        taxes = list(taxes or [])
        with self._lock:
            self._taxes, self._taxes_read = taxes, time.monotonic()
        return taxes
