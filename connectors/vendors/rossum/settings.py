"""Settings of a ``rossum`` vendor profile (TOML ``[vendors.<name>]``) and their checks."""

from __future__ import annotations

from typing import Literal
from urllib.parse import urlsplit, urlunsplit

from pydantic import Field, SecretStr, field_validator, model_validator

from connectors.base import VendorSettings


def _normalize_base_url(value: str) -> str:
    """``https://x.rossum.app``, ``…/api``, ``…/api/v1`` and ``…/api/v1/`` all mean ``…/api/v1``."""
    url = value.strip().rstrip("/")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(
            "base_url must be an http(s) URL such as https://example.rossum.app/api/v1"
        )
    if parts.query or parts.fragment:
        raise ValueError("base_url must not carry a query or fragment")
    path = parts.path
    if path.endswith("/v1"):
        pass
    elif path.endswith("/api"):
        path += "/v1"
    elif not path:
        path = "/api/v1"
    else:
        raise ValueError(f"base_url should end in /api/v1 (got path {path!r})")
    return urlunsplit((parts.scheme, parts.netloc, path, "", ""))


class RossumSettings(VendorSettings):
    """Settings of a ``rossum`` vendor profile."""

    kind: Literal["rossum"] = "rossum"
    """Selects the Rossum connector."""
    base_url: str
    """The account's API root, e.g. ``https://example.rossum.app/api/v1`` (``…/api`` works too)."""
    username: str | None = None
    """API user for ``POST /v1/auth/login``; needed with ``password``."""
    password: SecretStr | None = None
    """Password of ``username`` (give it as ``password_file``). Either this or ``token``."""
    token: SecretStr | None = None
    """A long-lived API token used as is, instead of logging in; a 401 then pauses the profile."""
    queue: int = Field(ge=1)
    """Id of the Rossum queue documents are uploaded to (and looked up in)."""
    ready_status: Literal["to_review", "confirmed", "exported"] = "to_review"
    """From which annotation status on the result is taken: ``to_review`` for straight-through
    extraction, ``confirmed`` when a person validates in Rossum first (queue with
    ``use_confirmed_state``), ``exported`` when Rossum's own export must have succeeded."""
    webhook_secret: SecretStr | None = None
    """The hook's ``config.secret``; webhooks are verified with it (``X-Rossum-Signature-SHA256``)
    and refused while it is not set."""
    concurrency: int = Field(4, ge=1)
    """Worker threads of this profile talking to Rossum at the same time."""
    rate_limit: float | None = Field(10.0, gt=0)
    """Requests per second, shared by every profile using the same account (base_url +
    username); Rossum's documented limit is 10/s."""
    timeout: float = Field(30.0, gt=0)
    """Seconds for connecting and for each read/write of one HTTP request."""
    max_retries: int = Field(4, ge=0)
    """Retries of one request on 408/429/5xx and network errors before the error goes to the
    engine (which retries the whole step later with its own backoff)."""
    retry_after_max: float = Field(60.0, gt=0)
    """Longest wait honoured from a ``Retry-After`` header inside one call, in seconds."""
    poll_interval: float | None = Field(2.0, gt=0)
    """First delay between status polls in seconds; the engine backs off from it."""
    page_dpi: float = Field(144.0, gt=0)
    """The resolution of Rossum's page images, which its positions are pixels of; boxes are
    stored in PDF points by 72/dpi. Rossum does not document it (NOTES.md): change it if boxes
    land off the text."""
    max_upload_bytes: int = Field(40 * 1024 * 1024, ge=1)
    """Larger documents are rejected before upload (Rossum accepts at most 40 MB)."""

    @field_validator("base_url")
    @classmethod
    def _base_url(cls, value: str) -> str:
        return _normalize_base_url(value)

    @model_validator(mode="after")
    def _credentials(self) -> RossumSettings:
        if self.token is not None and self.password is not None:
            raise ValueError("give either token or username + password for Rossum, not both")
        if self.token is None and self.password is None:
            raise ValueError(
                "Rossum needs credentials: set password (with username), or token "
                "(password_file / token_file keep them out of the config file)"
            )
        if self.password is not None and not self.username:
            raise ValueError("password is set but username is missing")
        return self
