"""Settings of the Odoo destination (``[destinations.<name>] kind = "odoo"``)."""

from __future__ import annotations

from typing import Literal, Self
from urllib.parse import urlsplit

from pydantic import ConfigDict, Field, SecretStr, field_validator, model_validator

from connectors.base import DestinationSettings, SettingsConfig
from connectors.destinations.invoicing import check_tax_rates


class OdooDestinationSettings(DestinationSettings):
    # A validation error must not echo its input: it may be the API key.
    model_config = ConfigDict(**SettingsConfig, hide_input_in_errors=True)

    kind: Literal["odoo"] = "odoo"
    """Selects the Odoo destination: a draft vendor bill per document."""
    url: str
    """Odoo's address (``https://mycompany.odoo.com``, ``http://127.0.0.1:8069``)."""
    database: str
    """The Odoo database (sent as ``X-Odoo-Database`` over JSON-2, ``db`` over XML-RPC)."""
    protocol: Literal["json2", "xmlrpc"] = "json2"
    """``json2``: Odoo 19 and later (``/json/2``, the API key as bearer token); ``xmlrpc``:
    older versions (``/xmlrpc/2``, login and API key or password)."""
    username: str | None = None
    """The login docrelay authenticates as over XML-RPC (required there; JSON-2's key names
    its user itself)."""
    api_key: SecretStr
    """The user's API key (Preferences → Account Security → New API Key); over XML-RPC a
    password works too. Or ``api_key_file``."""
    company_id: int | None = Field(None, ge=1)
    """The company receiving the bills (its id); unset: the user's current company."""
    journal: str | None = None
    """Short code of the purchase journal for the bills (``BILL``); unset: Odoo's default
    purchase journal."""
    line_account: str | None = None
    """Code of the expense account every bill line is booked on (lines have no product);
    unset: the journal's default account."""
    create_partners: bool = True
    """Create a partner for a supplier Odoo does not know (matched by VAT id, then name);
    false refuses such documents."""
    fallback_partner: str | None = None
    """Name of the partner for documents that name no supplier at all (found, or created when
    ``create_partners``); unset refuses them."""
    taxes: dict[str, str] = Field(default_factory=dict)
    """Tax rate in percent → name of the Odoo purchase tax for it (``"19" = "19% (purchase)"``);
    a rate not mapped is matched by the rate among percentage purchase taxes, when exactly one
    fits."""
    timeout: float = Field(30.0, gt=0)
    """Seconds one call to Odoo may take before it counts as failed (and is retried)."""
    max_retries: int = Field(2, ge=0)
    """Attempts after the first inside one call (5xx, timeouts, connection errors); after that
    the delivery is retried later by the outbox."""
    concurrency: int | None = Field(None, ge=1)
    """Deliveries to Odoo at the same time; unset: ``pipeline.delivery_concurrency``."""
    follow_interval: float = Field(300.0, ge=0)
    """Seconds between two looks at the bills docrelay made until each is posted (its final
    values become corrections for the vendor) or cancelled/deleted (a failed export for the
    vendor); 0 does not look."""

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an http:// or https:// URL with a host")
        if parts.username or parts.password or parts.query or parts.fragment:
            raise ValueError("must be the bare server address (give the login separately)")
        return value.rstrip("/")

    @field_validator("database", "username", "journal", "line_account", "fallback_partner")
    @classmethod
    def _not_blank(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError("must not be empty")
        return value.strip() if value is not None else None

    @field_validator("taxes")
    @classmethod
    def _taxes(cls, value: dict[str, str]) -> dict[str, str]:
        return check_tax_rates(value)

    @model_validator(mode="after")
    def _login(self) -> Self:
        if self.protocol == "xmlrpc" and self.username is None:
            raise ValueError("protocol = xmlrpc needs a username (the login)")
        if not self.api_key.get_secret_value().strip():
            raise ValueError("api_key must not be empty")
        return self
