"""Settings of a ``konfuzio`` vendor profile (TOML ``[vendors.<name>]``) and their checks.

Secrets (``password``, ``token``, ``callback_token``) may be given as ``<key>_file``: the config
loader reads the file into the key for every ``SecretStr`` field.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Literal
from urllib.parse import urlsplit, urlunsplit

from pydantic import Field, SecretStr, field_validator, model_validator

from connectors.base import VendorSettings

SAAS_URL = "https://app.konfuzio.com/api/v3"
"""Konfuzio's own server; on-premises installs give theirs."""

FILE_TYPES: tuple[str, ...] = (
    ".pdf",
    ".tif",
    ".tiff",
    ".jpg",
    ".jpeg",
    ".png",
    ".xls",
    ".xlsx",
    ".ppt",
    ".pptx",
    ".doc",
    ".docx",
)
"""What Konfuzio takes (seed 000:280-316). Publisher and ODF have "limited support" there and
are left out by default; a profile may add ``.odt`` and the like to ``file_types``."""

CALLBACK_EGRESS: tuple[str, ...] = (
    "167.235.194.147",
    "168.119.108.13",
    "5.75.234.115",
    "138.201.119.223",
    "5.75.212.167",
)
"""The addresses Konfuzio's SaaS sends callbacks from (Konfuzio SDK docs, 2023): a value for
``allow_from`` when the daemon is reached directly, not through a proxy."""

_TOKEN_RE = re.compile(r"[A-Za-z0-9_-]{24,256}")


def normalize_base_url(value: str) -> str:
    """``https://host``, ``…/api``, ``…/api/v3`` and ``…/api/v3/`` all mean ``…/api/v3``; an
    on-premises install below a path (``https://host/konfuzio``) gets ``/api/v3`` added."""
    url = value.strip().rstrip("/")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError("base_url must be an http(s) URL such as https://app.konfuzio.com/api/v3")
    if parts.query or parts.fragment:
        raise ValueError("base_url must not carry a query or fragment")
    path = parts.path
    if path.endswith("/api/v3"):
        pass
    elif path.endswith("/api"):
        path += "/v3"
    elif path.endswith("/v3"):
        raise ValueError(
            f"base_url ends in /v3 without /api (path {path!r}): Konfuzio's API is at /api/v3"
        )
    else:
        path += "/api/v3"
    return urlunsplit((parts.scheme, parts.netloc, path, "", ""))


class KonfuzioSettings(VendorSettings):
    """Settings of a ``konfuzio`` vendor profile."""

    kind: Literal["konfuzio"] = "konfuzio"
    """Selects the Konfuzio connector."""
    base_url: str = SAAS_URL
    """The server's API root: ``https://app.konfuzio.com/api/v3`` (the default), or an
    on-premises install's (``https://konfuzio.example.com`` works too: ``/api/v3`` is added)."""
    username: str | None = None
    """Konfuzio user (an e-mail address) for ``POST /api/v3/auth/``; needed with ``password``."""
    password: SecretStr | None = None
    """Password of ``username`` (give it as ``password_file``). Either this or ``token``."""
    token: SecretStr | None = None
    """An API token used as is (``Authorization: Token …``), instead of logging in. Konfuzio's
    tokens do not expire, so a 401 means the token was deleted: the profile pauses."""
    project: int = Field(ge=1)
    """Id of the Konfuzio project documents are uploaded to (and looked up in)."""
    category: int | None = Field(None, ge=1)
    """Id of the project's category for every upload; unset lets Konfuzio detect it."""
    assignee: str | None = None
    """E-mail of a project member every uploaded document is assigned to (Konfuzio mails them)."""
    callback_token: SecretStr | None = None
    """The unguessable last part of the callback URL Konfuzio is given
    (``<public_url>/webhooks/<profile>/<token>/<document id>``): Konfuzio does not sign its
    callbacks, so this token is their only proof. At least 24 characters of ``A-Z a-z 0-9 _ -``
    (``python -c 'import secrets; print(secrets.token_urlsafe(32))'``). Unset: no callbacks,
    polling only."""
    allow_from: list[str] = Field(default_factory=list)
    """Addresses or networks (``167.235.194.147``, ``10.0.0.0/8``) callbacks may come from,
    checked as well as the token; empty: any. Behind a reverse proxy the daemon sees the proxy's
    address. ``CALLBACK_EGRESS`` in this module lists Konfuzio SaaS's."""
    tag_file_name: bool = True
    """Upload as ``<name>.docrelay-<document id>.<ext>``: the only field of a Konfuzio document
    that carries our id without a callback, so a lost upload answer is found again by it
    instead of being uploaded twice (NOTES.md, "Reconcile"). Off: the original name
    (and the callback URL, when callbacks are on) is all the look-up has."""
    wait_for_review: bool = False
    """Take the result only once a person marked the document reviewed in Konfuzio; until then
    the submission waits in ``review`` (``review_timeout`` applies)."""
    bbox_origin: Literal["bottom-left", "top-left"] = "bottom-left"
    """Where Konfuzio's box coordinates start: the bottom-left corner of the page in the units
    of the page's ``original_size``, as the Konfuzio SDK documents; the API reference itself
    leaves it open (NOTES.md, "Boxes")."""
    max_pages: int = Field(250, ge=1)
    """Documents with more pages are refused before upload (Konfuzio SaaS's limit is 250)."""
    max_upload_bytes: int | None = Field(None, ge=1)
    """Larger documents are refused before upload; unset: no limit (SaaS has none)."""
    file_types: list[str] = Field(default_factory=lambda: list(FILE_TYPES))
    """File extensions Konfuzio takes; anything else is refused before upload."""
    concurrency: int = Field(2, ge=1)
    """Worker threads of this profile talking to Konfuzio at the same time."""
    rate_limit: float | None = Field(10.0, gt=0)
    """Requests per second, shared by every profile of the same account (base_url + user).
    Konfuzio documents no limit ("not limited"); this is a courtesy."""
    timeout: float = Field(30.0, gt=0)
    """Seconds one request may take in all (connect, send, the whole answer)."""
    upload_timeout: float = Field(300.0, gt=0)
    """Seconds the upload request may take: it carries the whole file."""
    max_retries: int = Field(4, ge=0)
    """Retries of one request on 408/429/5xx and network errors before the error goes to the
    engine (which retries the whole step later with its own backoff). An upload is retried
    only when it cannot have reached Konfuzio."""
    retry_after_max: float = Field(60.0, gt=0)
    """Longest wait honoured from a ``Retry-After`` header inside one call, in seconds."""
    poll_interval: float | None = Field(5.0, gt=0)
    """First delay between status polls in seconds (OCR and extraction take tens of seconds);
    the engine backs off from it. Callbacks, when on, make a document due at once."""

    @field_validator("base_url")
    @classmethod
    def _base_url(cls, value: str) -> str:
        return normalize_base_url(value)

    @field_validator("callback_token")
    @classmethod
    def _callback_token(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not _TOKEN_RE.fullmatch(value.get_secret_value()):
            raise ValueError(
                "callback_token must be 24 to 256 characters of A-Z, a-z, 0-9, _ and - "
                "(it is a path segment of the callback URL)"
            )
        return value

    @field_validator("allow_from")
    @classmethod
    def _allow_from(cls, value: list[str]) -> list[str]:
        for entry in value:
            try:
                ipaddress.ip_network(entry.strip(), strict=False)
            except ValueError:
                raise ValueError(f"allow_from: {entry!r} is not an address or network") from None
        return [entry.strip() for entry in value]

    @field_validator("file_types")
    @classmethod
    def _file_types(cls, value: list[str]) -> list[str]:
        cleaned = []
        for entry in value:
            ext = entry.strip().lower()
            ext = ext if ext.startswith(".") else f".{ext}"
            if len(ext) < 2 or "/" in ext:
                raise ValueError(f"file_types: {entry!r} is not a file extension")
            cleaned.append(ext)
        if not cleaned:
            raise ValueError("file_types must name at least one extension")
        return cleaned

    @model_validator(mode="after")
    def _credentials(self) -> KonfuzioSettings:
        if self.token is not None and self.password is not None:
            raise ValueError("give either token or username + password for Konfuzio, not both")
        if self.token is None and self.password is None:
            raise ValueError(
                "Konfuzio needs credentials: set password (with username), or token "
                "(password_file / token_file keep them out of the config file)"
            )
        if self.password is not None and not self.username:
            raise ValueError("password is set but username is missing")
        return self

    def networks(self) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
        """``allow_from`` as networks (a single address is a /32 or /128)."""
        return [ipaddress.ip_network(entry, strict=False) for entry in self.allow_from]
