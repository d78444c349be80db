"""The user's own supplier templates, in invoice2data's format, over the rules' result.

A template is a YAML (or JSON) file naming keywords that identify one supplier's invoices and
a regular expression per field (see invoice2data's ``docs/tutorial.md``). Where a document
matches a template, the template's values replace what the label rules found for the same
fields: a person wrote them for exactly this layout. The rules still give every field the
template leaves out. invoice2data's own rules hold: a template that misses one of its
``required_fields`` (by default ``date``, ``amount``, ``invoice_number``, ``issuer``) gives
nothing, and the rules' result stands.

invoice2data ships a few hundred templates of its own, written for foreign suppliers and
matched by keywords alone; they stay off unless ``bundled_templates`` asks for them, so that a
keyword in some unrelated invoice cannot override the rules. The library is optional
(``pip install 'docrelay[templates]'``) and imported only when templates are configured.
"""

from __future__ import annotations

import logging
import threading
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, Final

log = logging.getLogger(__name__)

FIELD_NAMES: Final[dict[str, str]] = {
    "invoice_number": "invoice_number",
    "date": "issue_date",
    "date_due": "due_date",
    "currency": "currency",
    "amount": "total_amount",
    "amount_untaxed": "net_amount",
    "amount_tax": "tax_amount",
    "partner_name": "supplier_name",
    "issuer": "supplier_name",
    "vat": "supplier_vat_id",
    "company_vat": "customer_vat_id",
    "iban": "supplier_iban",
    "bic": "supplier_bic",
    "payment_reference": "payment_reference",
}
"""invoice2data's output names (its ``schema.INVOICE_FIELDS``) → canonical field names.
``partner_name`` (the supplier as printed) goes before ``issuer`` (the template's own name)."""

INSTALL_HINT: Final = "install the templates extra: pip install 'docrelay[templates]'"


class TemplatesUnavailable(RuntimeError):
    """Templates are configured but invoice2data is not installed."""


class SupplierTemplates:
    """The templates of one profile, loaded once, on first use."""

    def __init__(self, folder: Path | None, *, bundled: bool = False) -> None:
        self.folder = folder
        self.bundled = bundled
        self._templates: list[Any] | None = None
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return self.folder is not None or self.bundled

    def templates(self) -> list[Any]:
        with self._lock:
            if self._templates is None:
                self._templates = self._load()
            return self._templates

    def _load(self) -> list[Any]:
        try:
            from invoice2data.extract.loader import read_templates
        except ImportError as exc:
            raise TemplatesUnavailable(
                f"supplier templates need invoice2data: {INSTALL_HINT}"
            ) from exc
        found: list[Any] = []
        if self.folder is not None:
            found += read_templates(str(self.folder))
        if self.bundled:
            found += read_templates()
        log.info("loaded %d supplier templates", len(found))
        return found

    def apply(self, text: str, raw: dict[str, Any]) -> dict[str, Any]:
        """``raw`` (a rules result) with the first matching template's values in place of
        the rules' own for the same fields; unchanged when no template matches."""
        if not self.enabled:
            return raw
        for template in self.templates():
            if not template.matches_input(text):
                continue
            name = str(template.get("template_name") or template.get("issuer") or "template")
            try:
                values = template.extract(template.prepare_input(text), "", None)
            except Exception as exc:  # a user's template that fails must not lose the document
                log.warning(
                    "supplier template %s failed (%s); the rules' fields are kept", name, exc
                )
                return raw
            if not values:  # a required field was missing: invoice2data gives nothing
                return raw
            return merge(raw, values, name)
        return raw


def merge(raw: dict[str, Any], values: dict[str, Any], name: str) -> dict[str, Any]:
    """The rules' result with a template's values: its fields first, the rules' others after."""
    decimal = raw.get("decimal_separator")
    taken: dict[str, dict[str, Any]] = {}
    for key, canonical in FIELD_NAMES.items():
        if canonical in taken or values.get(key) in (None, ""):
            continue  # FIELD_NAMES' order: partner_name, when it has a value, before issuer
        text = _as_text(values[key], decimal)
        if text:
            taken[canonical] = {
                "name": canonical, "label": f"template {name}", "raw": text, "page": None,
                "template": name,
            }  # fmt: skip
    if not taken:
        return raw
    kept = [f for f in raw.get("fields") or [] if f.get("name") not in taken]
    return {**raw, "template": name, "fields": list(taken.values()) + kept}


def _as_text(value: Any, decimal: str | None) -> str | None:
    """A template value as the text the canonical mapping reads back exactly."""
    if isinstance(value, datetime):
        return value.date().isoformat()
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        amount = Decimal(str(value))
        if amount.as_tuple().exponent > -2:  # type: ignore[operator]
            amount = amount.quantize(Decimal("0.01"))  # money: "1000.00", never "1000.0"
        number = f"{amount:f}"
        return number.replace(".", ",") if decimal == "," else number
    if isinstance(value, str):
        return value.strip() or None
    return None
