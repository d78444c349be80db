"""Settings of a ``deepopinion`` vendor profile (TOML ``[vendors.<name>]``) and their checks.

Secrets (``password``, ``webhook_token``) may be given as ``<key>_file``: the config loader
reads the file into the key for every ``SecretStr`` field.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator, model_validator

from connectors.base import VendorSettings

API_URL = "https://api.deepopinion.ai"
"""DeepOpinion's API host (seed 002:14, 23, 38)."""
MiB = 1024 * 1024

_TOKEN_RE = re.compile(r"[A-Za-z0-9_-]{24,128}")


class DeepOpinionSettings(VendorSettings):
    """Settings of a ``deepopinion`` vendor profile."""

    kind: Literal["deepopinion"] = "deepopinion"
    """Selects the DeepOpinion connector."""
    base_url: str = API_URL
    """The API root (``<base_url>/auth/login``, ``<base_url>/organizations/…``)."""
    email: str = Field(min_length=1)
    """The DeepOpinion user that logs in (``POST /auth/login``)."""
    password: SecretStr
    """That user's password (give it as ``password_file``)."""
    organization_id: int = Field(ge=1)
    """The workspace (formerly organization) the project belongs to."""
    project_id: int = Field(ge=1)
    """The project whose model extracts."""
    model_id: int = Field(ge=1)
    """The trained model that extracts (and that the HITL reviews)."""
    extract_timeout: float = Field(600.0, gt=0)
    """Seconds the extraction call may take in all: it uploads the file and answers only
    when the document is read."""
    return_annotated_pages: bool = False
    """Ask for page images with the matches drawn (base64, large); they are stored with the
    result but never kept in the submission's data."""
    hitl: bool = False
    """Use DeepOpinion's human-in-the-loop: low-confidence results wait in ``review`` until a
    person finished them at DeepOpinion, then the reviewed values are a new version. The HITL
    ``docrelay-<profile>`` is found or created for the model unless ``hitl_id`` names one."""
    hitl_id: int | None = Field(None, ge=1)
    """An existing HITL to use (with ``hitl = true``) instead of finding or creating one."""
    webhook_token: SecretStr | None = None
    """The unguessable last part of the webhook URL the HITL is given
    (``<public_url>/webhooks/<profile>/<token>``): DeepOpinion does not sign its calls, so the
    token is their only proof. 24 to 128 characters of ``A-Z a-z 0-9 _ -``
    (``python -c 'import secrets; print(secrets.token_urlsafe(32))'``). Unset: reviews are
    polled only."""
    allow_from: list[str] = Field(default_factory=list)
    """Addresses or networks webhook calls may come from, checked as well as the token;
    empty: any."""
    required_labels: list[str] = Field(default_factory=list)
    """Labels a result must have; one missing sets the ``missing_required_labels`` quality
    flag (DeepOpinion's own ``all_required_fields_found`` is kept as well)."""
    confidence_threshold: float | None = Field(None, ge=0, le=1)
    """Values below this confidence (0..1) are listed in the ``low_confidence`` quality flag;
    unset: DeepOpinion's own thresholds (``all_confidence_thresholds_met``) only."""
    max_upload_bytes: int = Field(50 * MiB, ge=1)
    """Documents of this size or more are refused before upload."""
    concurrency: int = Field(2, ge=1)
    """Worker threads of this profile talking to DeepOpinion at the same time (each may wait
    minutes on one extraction)."""
    rate_limit: float | None = Field(5.0, gt=0)
    """Requests per second, shared by every profile of the same account; DeepOpinion
    documents no limit: a courtesy."""
    timeout: float = Field(30.0, gt=0)
    """Seconds any other request may take in all (connect, send, the whole answer)."""
    max_retries: int = Field(4, ge=0)
    """Retries of one request on 408/429/5xx and network errors inside one call; the
    extraction is resent only on answers that prove nothing was processed (429, 503, a
    connection never made)."""
    retry_after_max: float = Field(60.0, gt=0)
    """Longest wait honoured from a ``Retry-After`` header inside one call, in seconds."""
    poll_interval: float | None = Field(60.0, gt=0)
    """First delay between polls of the reviews of a document waiting in ``review`` (a person
    is slow; the webhook, when on, makes it due at once)."""

    @field_validator("base_url")
    @classmethod
    def _base_url(cls, value: str) -> str:
        url = value.strip().rstrip("/")
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"base_url must be an http(s) URL such as {API_URL}")
        if parts.query or parts.fragment:
            raise ValueError("base_url must not carry a query or fragment")
        return url

    @field_validator("webhook_token")
    @classmethod
    def _webhook_token(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not _TOKEN_RE.fullmatch(value.get_secret_value()):
            raise ValueError(
                "webhook_token must be 24 to 128 characters of A-Z, a-z, 0-9, _ and - "
                "(it is a path segment of the webhook URL)"
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

    @model_validator(mode="after")
    def _hitl(self) -> DeepOpinionSettings:
        if self.hitl_id is not None and not self.hitl:
            raise ValueError("hitl_id is set but hitl is off: set hitl = true to use it")
        return self

    @property
    def webhooks(self) -> bool:
        """DeepOpinion calls us back: only a HITL has a ``webhook_url``, and only with a
        token may we accept its calls."""
        return self.hitl and self.webhook_token is not None

    def networks(self) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
        """``allow_from`` as networks (a single address is a /32 or /128)."""
        return [ipaddress.ip_network(entry, strict=False) for entry in self.allow_from]

    @property
    def project_path(self) -> str:
        """The path below which the project's model and HITLs live."""
        return f"organizations/{self.organization_id}/projects/{self.project_id}"
