"""Settings of a ``gini`` vendor profile (TOML ``[vendors.<name>]``) and their checks.

Secrets (``client_secret``, ``password``) may be given as ``<key>_file``: the config loader
reads the file into the key for every ``SecretStr`` field.
"""

from __future__ import annotations

import re
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator, model_validator

from connectors.base import VendorSettings

API_URL = "https://api.gini.net"
"""Gini's API host (seed 004: every example)."""
USER_CENTRE_URL = "https://user.gini.net"
"""Gini's user centre, where OAuth2 tokens come from (``/oauth/token``)."""
MiB = 1024 * 1024
KiB = 1024

_METADATA_KEY = re.compile(r"[a-z0-9][a-z0-9-]{0,63}")


def _http_url(value: str, key: str) -> str:
    url = value.strip().rstrip("/")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"{key} must be an http(s) URL such as {API_URL}")
    if parts.query or parts.fragment:
        raise ValueError(f"{key} must not carry a query or fragment")
    return url


class GiniSettings(VendorSettings):
    """Settings of a ``gini`` vendor profile."""

    kind: Literal["gini"] = "gini"
    """Selects the Gini connector."""
    base_url: str = API_URL
    """The API root (documents live at ``<base_url>/documents``)."""
    auth_url: str = USER_CENTRE_URL
    """The user centre: tokens come from ``<auth_url>/oauth/token``."""
    auth: Literal["password", "client_credentials", "trusted"] = "password"
    """How docrelay authenticates: ``password`` (OAuth2 password grant for ``username``, the
    client authenticating with Basic), ``client_credentials`` (a client token), or ``trusted``
    (a trusted backend: every API call with Basic client credentials and
    ``X-User-Identifier: <user_identifier>``, no token)."""
    client_id: str = Field(min_length=1)
    """The OAuth2 client id Gini issued."""
    client_secret: SecretStr
    """The client's secret (give it as ``client_secret_file``)."""
    username: str | None = None
    """The Gini user (an e-mail address) for the password grant."""
    password: SecretStr | None = None
    """That user's password (``password_file``); needed with ``auth = "password"``."""
    user_identifier: str | None = None
    """The stable user id sent as ``X-User-Identifier`` with ``auth = "trusted"``."""
    upload: Literal["raw", "multipart"] = "raw"
    """``raw``: the file as the request body with ``?filename=``; ``multipart``: a
    ``multipart/form-data`` form with the file in the part ``file``. Both are streamed."""
    metadata: dict[str, str] = Field(default_factory=dict)
    """Sent as ``x-document-metadata-<key>: <value>`` with every upload (``branchid``,
    ``deviceclass`` …)."""
    document_id_metadata: str | None = "docrelayid"
    """The metadata key that carries our document id (``x-document-metadata-docrelayid``);
    unset: not sent."""
    tag_file_name: bool = True
    """Upload as ``<name>.docrelay-<document id>-<sha8>.<ext>``: the document list shows the
    name, so a lost upload answer is found again by it instead of being uploaded twice (the
    list documents no metadata). Off: the look-up matches the metadata only, where Gini shows
    it."""
    amount_to_pay_is_total: bool = True
    """Take ``amountToPay`` as the invoice's ``total_amount`` too when Gini's answer has no
    total label of its own (Gini's documents are payment-centric: usually only the amount to
    pay is read). Off: ``amountToPay`` gives ``amount_due`` only."""
    max_upload_bytes: int = Field(10 * MiB, ge=1)
    """Documents of this size or more are refused before upload ("must be less than 10 MiB")."""
    max_text_bytes: int = Field(512 * KiB, ge=1)
    """Plain-text documents of this size or more are refused ("smaller than 512 KiB")."""
    max_pages: int = Field(10, ge=1)
    """Gini reads only this many first pages; a longer document is sent anyway and its
    result is flagged (``quality.pages_read``)."""
    file_types: list[str] = Field(
        default_factory=lambda: [
            "application/pdf",
            "image/gif",
            "image/png",
            "image/jpeg",
            "image/tiff",
            "text/plain",
        ]
    )
    """MIME types Gini takes (seed 004:13-14); anything else is refused before upload."""
    lookup_pages: int = Field(20, ge=1)
    """The look-up of an earlier upload reads at most this many pages of the document list
    (``lookup_page_size`` each)."""
    lookup_page_size: int = Field(100, ge=1, le=1000)
    """Documents asked for per page of the list (``limit``)."""
    concurrency: int = Field(2, ge=1)
    """Worker threads of this profile talking to Gini at the same time."""
    rate_limit: float | None = Field(10.0, gt=0)
    """Requests per second, shared by every profile of the same account; Gini documents no
    limit: a courtesy."""
    timeout: float = Field(30.0, gt=0)
    """Seconds one request may take in all (connect, send, the whole answer)."""
    upload_timeout: float = Field(300.0, gt=0)
    """Seconds the upload request may take: it carries the whole file."""
    max_retries: int = Field(4, ge=0)
    """Retries of one request on 408/429/5xx and network errors inside one call; an upload is
    resent only when it cannot have reached Gini."""
    retry_after_max: float = Field(60.0, gt=0)
    """Longest wait honoured from a ``Retry-After`` header inside one call, in seconds."""
    refresh_margin: float = Field(60.0, ge=0)
    """Seconds before ``expires_in`` runs out at which a token is renewed."""
    poll_interval: float | None = Field(2.0, gt=0)
    """First delay between status polls in seconds (Gini has no webhooks); the engine backs
    off from it up to its processing deadline."""

    @field_validator("base_url")
    @classmethod
    def _base_url(cls, value: str) -> str:
        return _http_url(value, "base_url")

    @field_validator("auth_url")
    @classmethod
    def _auth_url(cls, value: str) -> str:
        url = _http_url(value, "auth_url")
        return url.removesuffix("/oauth/token")

    @field_validator("metadata")
    @classmethod
    def _metadata(cls, value: dict[str, str]) -> dict[str, str]:
        cleaned: dict[str, str] = {}
        for key, item in value.items():
            name = key.strip().lower().removeprefix("x-document-metadata-")
            if not _METADATA_KEY.fullmatch(name):
                raise ValueError(f"metadata: {key!r} is not a header name part (a-z, 0-9, -)")
            if any(c in item for c in "\r\n") or not item.isprintable():
                raise ValueError(f"metadata: the value of {key!r} must be printable, one line")
            cleaned[name] = item
        return cleaned

    @field_validator("document_id_metadata")
    @classmethod
    def _document_id_metadata(cls, value: str | None) -> str | None:
        if value is None:
            return None
        name = value.strip().lower().removeprefix("x-document-metadata-")
        if not _METADATA_KEY.fullmatch(name):
            raise ValueError(f"document_id_metadata: {value!r} is not a header name part")
        return name

    @field_validator("file_types")
    @classmethod
    def _file_types(cls, value: list[str]) -> list[str]:
        cleaned = [v.strip().lower() for v in value if v.strip()]
        if not cleaned or any("/" not in v for v in cleaned):
            raise ValueError("file_types must list MIME types such as application/pdf")
        return cleaned

    @model_validator(mode="after")
    def _credentials(self) -> GiniSettings:
        if self.auth == "password" and (not self.username or self.password is None):
            raise ValueError(
                'auth = "password" needs username and password (password_file keeps it out '
                "of the config file)"
            )
        if self.auth == "trusted" and not self.user_identifier:
            raise ValueError('auth = "trusted" needs user_identifier (sent as X-User-Identifier)')
        return self

    @property
    def token_url(self) -> str:
        """The user centre's token endpoint."""
        return f"{self.auth_url}/oauth/token"

    def metadata_headers(self, document_id: int | None) -> dict[str, str]:
        """The ``x-document-metadata-*`` headers of an upload."""
        headers = {f"x-document-metadata-{k}": v for k, v in self.metadata.items()}
        if self.document_id_metadata is not None and document_id is not None:
            headers[f"x-document-metadata-{self.document_id_metadata}"] = str(document_id)
        return headers
