"""HTTP webhook destination: the canonical export document POSTed as JSON, signed the Standard
Webhooks way (https://www.standardwebhooks.com/).

Each push carries the delivery's idempotency key (``Idempotency-Key``) and a ``webhook-id``
made of the key and the version, so a receiver recognises a repeat (after a crash, or a retry
inside the call) as the message it already has, and a later version as an update of the record
the first one made. Retries, Retry-After, deadlines and scrubbing of secrets are the HTTP kit's
(``connectors.http``); the signature is made per attempt, so a retry late in the call still
carries a fresh timestamp that a receiver's five-minute tolerance accepts.
"""

from __future__ import annotations

import base64
import binascii
import re
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import ClassVar, Literal
from urllib.parse import quote, urlsplit

import httpx
from pydantic import ConfigDict, Field, SecretStr, field_validator
from standardwebhooks import Webhook

from connectors import jsonio
from connectors.auth import Auth
from connectors.base import (
    ConnectorContext,
    DeliveryReceipt,
    Destination,
    DestinationSettings,
    ExportPayload,
    SettingsConfig,
)
from connectors.destinations.document import export_document
from connectors.errors import DocrelayError, TransientError
from connectors.http import STATUS_ERRORS, HttpClient, connections_for

HIDDEN_HEADER_CHARS = 8
"""Extra header values at least this long are treated as secrets (hidden in messages, logs)."""
SECRET_PREFIX = "whsec_"  # noqa: S105 (a prefix, not a secret)
MIN_SECRET_BYTES = 24
"""The Standard Webhooks specification asks for secrets of 24 to 64 bytes."""

RETRY_STATUSES: frozenset[int] = frozenset({408, 409, 429, *range(500, 600)})
"""Statuses sent again inside the call: 409 is what an idempotent receiver answers while it
still works on an earlier request with the same key."""

STATUS_ERRORS_WEBHOOK = {**STATUS_ERRORS, 409: TransientError}
"""401/403 refuse the signature or credentials (the destination waits for a person); every
other 4xx is the receiver's final word on this document."""

OURS = frozenset(
    {
        "webhook-id",
        "webhook-timestamp",
        "webhook-signature",
        "idempotency-key",
        "docrelay-version",
        "content-type",
        "content-length",
        "host",
    }
)
"""Headers docrelay sets itself: configuring one would break the signature or the de-duplication."""

_TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
_HEADER_SAFE = "".join(chr(c) for c in range(0x21, 0x7F) if chr(c) != "%")


def _secret_bytes(value: str) -> bytes:
    """The key a ``whsec_…`` secret stands for, as ``standardwebhooks`` decodes it."""
    text = value.removeprefix(SECRET_PREFIX).rstrip("=")
    return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)


class WebhookDestinationSettings(DestinationSettings):
    # A validation error must not echo its input: it may be the secret.
    model_config = ConfigDict(**SettingsConfig, hide_input_in_errors=True)

    kind: Literal["webhook"] = "webhook"
    """Selects the HTTP webhook destination: signed JSON POSTs to one URL."""
    url: str
    """The receiver's URL (http or https); every export is POSTed to it."""
    secret: SecretStr
    """The Standard Webhooks signing secret, ``whsec_`` and base64 of 24-64 random bytes (the
    receiver verifies ``webhook-signature`` with it); or ``secret_file``."""
    headers: dict[str, str] = Field(default_factory=dict)
    """Extra headers sent with every request (an API key the receiver wants). Values of 8 or
    more characters are hidden from messages like secrets."""
    timeout: float = Field(30.0, gt=0)
    """Seconds one attempt may take in total, answer included."""
    max_retries: int = Field(4, ge=0)
    """Attempts after the first inside one push (5xx, 408/409/429, timeouts, connection
    errors); after that the delivery is retried later by the outbox, with the pipeline's
    backoff."""
    rate_limit: float | None = Field(None, gt=0)
    """Requests per second to this receiver at most; unset: no limit."""
    concurrency: int | None = Field(None, ge=1)
    """Pushes to this receiver at the same time; unset: ``pipeline.delivery_concurrency``."""

    def plain_secrets(self) -> list[str]:
        """Header values of 8 or more characters: what an API key looks like."""
        return [value for value in self.headers.values() if len(value) >= HIDDEN_HEADER_CHARS]

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an http:// or https:// URL with a host")
        if parts.fragment:
            raise ValueError("must not have a #fragment (it is never sent)")
        return value

    @field_validator("secret")
    @classmethod
    def _secret(cls, value: SecretStr) -> SecretStr:
        # The messages never quote the value: a config error must not print the secret.
        try:
            key = _secret_bytes(value.get_secret_value().strip())
        except (binascii.Error, ValueError):
            raise ValueError(
                "must be whsec_ followed by base64 (a Standard Webhooks secret)"
            ) from None
        if len(key) < MIN_SECRET_BYTES:
            raise ValueError(
                f"is {len(key)} bytes long; Standard Webhooks secrets have at least "
                f"{MIN_SECRET_BYTES} (whsec_ + base64 of random bytes)"
            )
        return SecretStr(value.get_secret_value().strip())

    @field_validator("headers")
    @classmethod
    def _headers(cls, value: dict[str, str]) -> dict[str, str]:
        for name, text in value.items():
            if not _TOKEN.match(name):
                raise ValueError(f"{name!r} is not a valid header name")
            if name.lower() in OURS:
                raise ValueError(f"{name} is set by docrelay itself")
            if any(c in text for c in "\r\n\0") or not text.isascii():
                raise ValueError(f"the value of {name} must be one line of ASCII")
        return value


def message_id(idempotency_key: str, version: int) -> str:
    """The ``webhook-id`` of one version of a delivery: the same on every attempt, so a
    receiver de-duplicates repeats; a new version is a new message about the same record."""
    return header_value(f"{idempotency_key}-v{version}")


def header_value(text: str) -> str:
    """``text`` as a header can carry it: printable ASCII as is, anything else %-encoded (a
    destination name in another script)."""
    return quote(text, safe=_HEADER_SAFE)


class _Signer(Auth):
    """Signs the request its thread is sending (``signing``): the kit asks for the headers at
    each attempt, so every retry gets a fresh timestamp and signature over the same body."""

    refused: ClassVar[str] = "refused the signed request"
    refused_again: ClassVar[str] = refused

    def __init__(self, secret: SecretStr) -> None:
        value = secret.get_secret_value()
        self._webhook = Webhook(value)
        self._secrets = [value, value.removeprefix(SECRET_PREFIX)]
        self._local = threading.local()

    @contextmanager
    def signing(self, msg_id: str, body: str) -> Iterator[None]:
        """Sign every request this thread sends in the block as message ``msg_id``."""
        self._local.message = (msg_id, body)
        try:
            yield
        finally:
            self._local.message = None

    def headers(self) -> Mapping[str, str]:
        message = getattr(self._local, "message", None)
        if message is None:
            return {}
        msg_id, body = message
        now = datetime.fromtimestamp(int(time.time()), UTC)
        return {
            "webhook-id": msg_id,
            "webhook-timestamp": str(int(now.timestamp())),
            "webhook-signature": self._webhook.sign(msg_id, now, body),
        }

    def secrets(self) -> list[str]:
        return self._secrets


class WebhookDestination(Destination):
    kind = "webhook"
    settings_model = WebhookDestinationSettings
    settings: WebhookDestinationSettings

    def __init__(self, settings: WebhookDestinationSettings, context: ConnectorContext) -> None:
        super().__init__(settings, context)
        parts = urlsplit(settings.url)
        hidden = settings.plain_secrets()
        if parts.password:
            hidden.append(parts.password)
        self._signer = _Signer(settings.secret)  # its secrets are hidden by the kit too
        port = f":{parts.port}" if parts.port else ""
        self._where = f"{parts.scheme}://{parts.hostname}{port}{parts.path}"
        """The URL for messages: no user info, no query (either may hold a credential)."""
        self.http = HttpClient(
            settings.url,
            name=f"webhook {context.name}",
            auth=self._signer,
            account=f"webhook:{context.name}",
            rate_limit=settings.rate_limit,
            timeout=settings.timeout,
            max_retries=settings.max_retries,
            retry_statuses=RETRY_STATUSES,
            status_errors=STATUS_ERRORS_WEBHOOK,
            secrets=hidden,
            max_response_bytes=4 * 1024 * 1024,
            headers=settings.headers,
            # Unset concurrency means the pipeline's threads, which this cannot see: room
            # for many.
            max_connections=connections_for(settings.concurrency or 32),
        )

    def deliver(self, payload: ExportPayload, idempotency_key: str) -> DeliveryReceipt:
        """POST the export once per call (with the kit's retries); the receiver's id is the
        downstream reference."""
        body = jsonio.dumps_bytes(export_document(payload, idempotency_key))
        msg_id = message_id(idempotency_key, payload.version)
        headers = {
            "Content-Type": "application/json",
            "Idempotency-Key": header_value(idempotency_key),
            "Docrelay-Version": str(payload.version),
        }
        with self._signer.signing(msg_id, body.decode()):
            response = self.http.request("POST", self.settings.url, content=body, headers=headers)
        return DeliveryReceipt(ref=self._ref(response) or msg_id)

    def _ref(self, response: httpx.Response) -> str | None:
        """The receiver's id of the record: a JSON ``id``, else ``Location``; None if neither.
        A body that is not JSON is no failure: the receiver took the export."""
        if response.content and "json" in response.headers.get("Content-Type", ""):
            try:
                body = self.http.json(response, "POST", self.settings.url)
            except DocrelayError:
                body = None
            found = body.get("id") if isinstance(body, dict) else None
            if isinstance(found, str | int) and not isinstance(found, bool) and str(found):
                return str(found)[:2048]
        location = response.headers.get("Location")
        return location[:2048] if location else None

    def probe(self) -> list[str]:
        """Reaches the receiver with an unsigned ``OPTIONS`` (no export, nothing a receiver
        should store); any answer counts as reachable, only no answer is a failure."""
        lines = [
            f"signing with a {len(_secret_bytes(self.settings.secret.get_secret_value()))}-byte "
            "Standard Webhooks secret"
        ]
        response = self.http.request("OPTIONS", self.settings.url, allow=range(300, 600), retries=0)
        return [*lines, f"{self._where} answered OPTIONS with {response.status_code}"]

    def close(self) -> None:
        self.http.close()
