"""The ``rossum`` vendor: Rossum's REST API (rossum.ai), one queue per profile.

Three layers, each usable on its own:

* ``RossumSettings``: the profile's configuration (TOML ``[vendors.<name>]``).
* ``RossumClient``: HTTP with login and one re-login on 401, retries with backoff that honour
  ``Retry-After``, a token-bucket rate limit shared by every client of one account, pagination,
  and the rule that no response URL ever sends our token to a host we were not configured for.
* ``RossumVendor``: the ``Vendor`` contract on top (upload with reconcile, status polling,
  fetch, webhooks, feedback, export status, retention delete).

Every choice the API reference leaves open is listed in NOTES.md, "Client and mapping".
"""

from __future__ import annotations

import email.utils
import hashlib
import hmac
import json
import logging
import math
import random
import re
import threading
import time
from collections.abc import Callable, Collection, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar, Literal
from urllib.parse import urlsplit, urlunsplit

import httpx
from pydantic import Field, SecretStr, field_validator, model_validator

from connectors.base import (
    DOCUMENT_FIELDS,
    LINE_ITEM_FIELDS,
    CanonicalResult,
    ConnectorContext,
    ConnectorSettings,
    Correction,
    CorrectionOutcome,
    DocumentRef,
    PollResult,
    PollStatus,
    SubmitResult,
    Vendor,
    VendorCapabilities,
    WebhookHint,
    WebhookRequest,
)
from connectors.errors import (
    AuthFailed,
    NotReady,
    RateLimited,
    TerminalError,
    TransientError,
    WebhookRejected,
)
from connectors.vendors.rossum import mapping
from connectors.vendors.rossum.schema import FIELD_MAP, LINE_ITEM_MAP

RECENT_SECONDS = 5.0
"""How long a polled, ready annotation stands in for a fresh GET in ``fetch``."""

log = logging.getLogger(__name__)

METADATA_DOCUMENT_ID = "docrelay_document_id"
METADATA_SHA256 = "docrelay_sha256"
SIGNATURE_HEADER = "x-rossum-signature-sha256"
MAX_MESSAGE = 4096
"""Rossum's limit for a message's ``content`` (contract §13)."""

# --------------------------------------------------------------------------- settings


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


class RossumSettings(ConnectorSettings):
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
    rate_limit: float = Field(10.0, gt=0)
    """Requests per second, shared by every profile using the same account (base_url +
    username); Rossum's documented limit is 10/s."""
    timeout: float = Field(30.0, gt=0)
    """Seconds for connecting and for each read/write of one HTTP request."""
    max_retries: int = Field(4, ge=0)
    """Retries of one request on 408/429/5xx and network errors before the error goes to the
    engine (which retries the whole step later with its own backoff)."""
    retry_after_max: float = Field(60.0, gt=0)
    """Longest wait honoured from a ``Retry-After`` header inside one call, in seconds."""
    poll_interval: float = Field(2.0, gt=0)
    """First delay between status polls in seconds; the engine backs off from it."""
    mapping: dict[str, str] = Field(default_factory=dict)
    """Extra or overriding schema id → canonical field (or ``extra.<name>``) entries."""
    line_item_mapping: dict[str, str] = Field(default_factory=dict)
    """Extra or overriding line-item schema id → canonical line-item field (or ``extra.<name>``)."""
    export_status: bool = True
    """After delivery, move the annotation to ``exported`` (or mark ``failed_export``)."""
    delete_after_days: float | None = Field(None, gt=0)
    """Delete and purge the annotation at Rossum this many days after it was done; off when
    unset."""
    max_in_flight: int | None = Field(None, ge=1)
    """At most this many documents at Rossum at once (uploaded, not yet finished); new uploads
    wait. Unset: no limit beyond `concurrency`."""
    max_upload_bytes: int = Field(40 * 1024 * 1024, ge=1)
    """Larger documents are rejected before upload (Rossum accepts at most 40 MB)."""

    @field_validator("base_url")
    @classmethod
    def _base_url(cls, value: str) -> str:
        return _normalize_base_url(value)

    @field_validator("mapping")
    @classmethod
    def _mapping(cls, value: dict[str, str]) -> dict[str, str]:
        return _check_targets(value, DOCUMENT_FIELDS, "mapping")

    @field_validator("line_item_mapping")
    @classmethod
    def _line_item_mapping(cls, value: dict[str, str]) -> dict[str, str]:
        return _check_targets(value, LINE_ITEM_FIELDS, "line_item_mapping")

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


def _check_targets(value: dict[str, str], known: tuple[str, ...], key: str) -> dict[str, str]:
    for schema_id, target in value.items():
        extra = target.startswith("extra.") and len(target) > len("extra.")
        if target not in known and not extra:
            raise ValueError(
                f"{key}: {schema_id!r} → {target!r} is neither a canonical field "
                f"({', '.join(known)}) nor extra.<name>"
            )
    return value


# --------------------------------------------------------------------------- rate limiting


class RateLimiter:
    """A token bucket: ``rate`` requests per second, bursts up to one second's worth.

    Thread-safe. A caller reserves its token under the lock and sleeps outside it, so waiting
    threads queue up fairly instead of waking together.
    """

    def __init__(
        self, rate: float, *, clock: Callable[[], float], sleep: Callable[[float], None]
    ) -> None:
        self._lock = threading.Lock()
        self._clock = clock
        self._sleep = sleep
        self.rate = rate
        self.capacity = max(1.0, rate)
        self._tokens = self.capacity
        self._stamp = clock()

    def slow_down(self, rate: float) -> None:
        """Lower the rate (another profile of the same account asked for less)."""
        with self._lock:
            if rate < self.rate:
                self.rate = rate
                self.capacity = max(1.0, rate)
                self._tokens = min(self._tokens, self.capacity)

    def acquire(self) -> float:
        """Take one token, sleeping until it is there; returns the seconds waited."""
        with self._lock:
            now = self._clock()
            self._tokens = min(self.capacity, self._tokens + (now - self._stamp) * self.rate)
            self._stamp = now
            self._tokens -= 1.0
            wait = -self._tokens / self.rate if self._tokens < 0 else 0.0
        if wait > 0:
            self._sleep(wait)
        return wait


_LIMITERS: dict[tuple[str, str | None], RateLimiter] = {}
_LIMITERS_LOCK = threading.Lock()


def shared_limiter(
    base_url: str,
    username: str | None,
    rate: float,
    *,
    clock: Callable[[], float],
    sleep: Callable[[float], None],
) -> RateLimiter:
    """The one limiter of an account: Rossum throttles per account, not per profile."""
    key = (base_url, username)
    with _LIMITERS_LOCK:
        limiter = _LIMITERS.get(key)
        if limiter is None:
            limiter = _LIMITERS[key] = RateLimiter(rate, clock=clock, sleep=sleep)
        else:
            limiter.slow_down(rate)
        return limiter


def reset_shared_limiters() -> None:
    """Forget every account's limiter (tests with their own clocks)."""
    with _LIMITERS_LOCK:
        _LIMITERS.clear()


# --------------------------------------------------------------------------- HTTP client


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - datetime.now(UTC)).total_seconds()
    if not math.isfinite(seconds):
        return None
    return max(0.0, seconds)


_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout, httpx.UnsupportedProtocol)
"""Failures that happen before a byte of the request left: always safe to send again."""

RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
BACKOFF_BASE = 0.5
BACKOFF_MAX = 30.0


class RossumClient:
    """HTTP to one Rossum account: auth, retries, rate limit, pagination. Thread-safe.

    Paths are relative to ``base_url`` (``annotations/12``); absolute URLs that Rossum hands out
    are accepted too but only their path below ``/v1/`` is used, resolved against ``base_url``.
    Error messages carry the method, the path, the status and a truncated body, never a header.
    """

    def __init__(
        self,
        settings: RossumSettings,
        *,
        transport: httpx.BaseTransport | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        self.settings = settings
        self.base_url = settings.base_url
        base = urlsplit(self.base_url)
        self._origin = (base.scheme, base.netloc)
        self._base_path = base.path
        self.clock = clock
        self.sleep = sleep
        self._jitter = jitter
        self._http = httpx.Client(
            transport=transport,
            timeout=httpx.Timeout(settings.timeout),
            follow_redirects=False,
            headers={"Accept": "application/json", "User-Agent": "docrelay"},
            limits=httpx.Limits(max_connections=settings.concurrency + 2),
        )
        self._static = settings.token is not None
        self._token: str | None = settings.token.get_secret_value() if settings.token else None
        self._token_lock = threading.Lock()
        self._old_tokens: list[str] = []
        """Expired session tokens, still scrubbed from messages."""
        self.logins = 0
        """How many times this client logged in (for health and tests)."""
        self.limiter = shared_limiter(
            self.base_url, settings.username, settings.rate_limit, clock=clock, sleep=sleep
        )

    # ------------------------------------------------------------------ URLs

    def url(self, ref: str) -> str:
        """An absolute URL below ``base_url`` for a relative path or a URL Rossum gave us."""
        if not ref.startswith(("http://", "https://")):
            return f"{self.base_url}/{ref.lstrip('/')}"
        parts = urlsplit(ref)
        if (parts.scheme, parts.netloc) == self._origin and parts.path.startswith(
            self._base_path + "/"
        ):
            return ref
        # Another host or prefix (a legacy domain, a proxy): keep only the API path, so our
        # token never goes to a host that was not configured (SSRF, RELIABILITY §32).
        marker = parts.path.find("/v1/")
        if marker < 0:
            raise TerminalError(f"Rossum referred to a URL outside its API: {parts.path[:200]}")
        rest = parts.path[marker + len("/v1/") :]
        url = f"{self.base_url}/{rest}"
        return f"{url}?{parts.query}" if parts.query else url

    def path(self, url: str) -> str:
        """The path of a URL, for messages (no query, no host)."""
        return urlsplit(self.url(url)).path

    # ------------------------------------------------------------------ auth

    def _current_token(self) -> str:
        with self._token_lock:
            if self._token is None:
                self._token = self._login()
            return self._token

    def _forget(self, token: str) -> None:
        with self._token_lock:
            if self._token == token:
                self._token = None
                self._old_tokens = [*self._old_tokens[-4:], token]

    def _login(self) -> str:
        password = self.settings.password
        assert password is not None  # the settings validator guarantees one credential
        response = self.request(
            "POST",
            "auth/login",
            json={"username": self.settings.username, "password": password.get_secret_value()},
            auth=False,
        )
        body = self.json(response, "POST", "auth/login")
        key = body.get("key") if isinstance(body, dict) else None
        if not isinstance(key, str) or not key:
            raise TransientError("Rossum's login answer carried no token")
        self.logins += 1
        log.info("logged in to Rossum as %s", self.settings.username)
        return key

    def logout(self) -> None:
        """Discard the session token at Rossum (best effort; only for password logins)."""
        with self._token_lock:
            token, self._token = self._token, None
        if token is None or self._static:
            return
        try:
            self._http.post(
                self.url("auth/logout"),
                headers={"Authorization": f"Bearer {token}"},
                timeout=min(5.0, self.settings.timeout),
            )
        except httpx.HTTPError as exc:
            log.debug("Rossum logout failed: %s", type(exc).__name__)

    # ------------------------------------------------------------------ requests

    def request(
        self,
        method: str,
        ref: str,
        *,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
        data: Mapping[str, str] | None = None,
        files: Mapping[str, Any] | None = None,
        allow: Collection[int] = (),
        replayable: bool = True,
        auth: bool = True,
    ) -> httpx.Response:
        """Send one request with retries; returns 2xx responses and those listed in ``allow``.

        ``replayable=False`` (uploads) sends again only when Rossum cannot have acted on the
        request: a connection never made, a 401 (then re-login) or a 429. Anything after the
        body went out raises TransientError, and the caller's reconcile finds what happened.
        """
        url = self.url(ref)
        path = urlsplit(url).path
        attempt = 0
        relogged = False
        while True:
            token = self._current_token() if auth else None
            headers = {"Authorization": f"Bearer {token}"} if token else None
            self.limiter.acquire()
            try:
                response = self._http.request(
                    method, url, params=params, json=json, data=data, files=files, headers=headers
                )
            except httpx.RequestError as exc:  # network, timeouts, undecodable bodies
                sent = not isinstance(exc, _NOT_SENT)
                what = f"Rossum {method} {path}: {type(exc).__name__}"
                if (sent and not replayable) or attempt >= self.settings.max_retries:
                    suffix = " after the request was sent" if sent and not replayable else ""
                    raise TransientError(
                        f"{what}{suffix}", detail=self.scrub(str(exc))[:500]
                    ) from None
                attempt += 1
                self.sleep(self._backoff(attempt, None))
                continue

            status = response.status_code
            if status == 401 and auth:
                if self._static:
                    raise AuthFailed(self.describe(method, path, response, "refused the token"))
                if relogged:
                    raise AuthFailed(self.describe(method, path, response, "refused a new login"))
                assert token is not None
                self._forget(token)
                relogged = True
                continue
            if status == 401:
                raise AuthFailed(self.describe(method, path, response, "refused the login"))
            if status == 403:
                raise AuthFailed(self.describe(method, path, response, "denied access"))
            if status in allow or 200 <= status < 300:
                return response
            if status in RETRY_STATUSES:
                retry_after = parse_retry_after(response.headers.get("Retry-After"))
                may_retry = replayable or status == 429
                if may_retry and attempt < self.settings.max_retries:
                    attempt += 1
                    delay = self._backoff(attempt, retry_after)
                    log.debug(
                        "Rossum %s %s answered %s; retry in %.1fs", method, path, status, delay
                    )
                    response.close()
                    self.sleep(delay)
                    continue
                if status == 429:
                    raise RateLimited(
                        self.describe(method, path, response, "throttled us"),
                        retry_after=retry_after,
                    )
                raise TransientError(
                    self.describe(method, path, response, "failed"), detail=self._body(response)
                )
            if 400 <= status < 500:
                raise TerminalError(
                    self.describe(method, path, response, "refused the request"),
                    detail=self._body(response),
                )
            raise TransientError(
                self.describe(method, path, response, "answered unexpectedly"),
                detail=self._body(response),
            )

    def _backoff(self, attempt: int, retry_after: float | None) -> float:
        """Exponential with "equal jitter"; never shorter than a (capped) Retry-After."""
        ceiling = min(BACKOFF_MAX, self.settings.retry_after_max)
        delay = min(ceiling, BACKOFF_BASE * 2 ** (attempt - 1))
        delay = delay / 2 + self._jitter() * delay / 2
        if retry_after is not None:
            delay = max(delay, min(retry_after, self.settings.retry_after_max))
        return delay

    def _secrets(self) -> list[str]:
        values = [self._token or "", *self._old_tokens]
        for secret in (self.settings.password, self.settings.token, self.settings.webhook_secret):
            if secret is not None:
                values.append(secret.get_secret_value())
        return [v for v in values if v]

    def scrub(self, text: str) -> str:
        """Remove anything secret from text we did not write ourselves (a body echoing it)."""
        for secret in self._secrets():
            text = text.replace(secret, "***")
        return text

    def _body(self, response: httpx.Response, limit: int = 2000) -> str:
        try:
            text = response.text
        except (httpx.HTTPError, UnicodeDecodeError):
            return ""
        return self.scrub(text[: limit + 200])[:limit]

    def describe(self, method: str, path: str, response: httpx.Response, what: str) -> str:
        """A one-line error message: who refused what, the status and the body (scrubbed)."""
        body = " ".join(self._body(response, 300).split())
        text = f"Rossum {what}: {method} {path} → {response.status_code}"
        return f"{text}: {body}" if body else text

    def json(self, response: httpx.Response, method: str, ref: str) -> Any:
        """The response's JSON; a body that is not JSON is a TransientError (see NOTES.md)."""
        try:
            return response.json()
        except ValueError:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
            raise TransientError(
                f"Rossum answered {method} {self.path(ref)} with {response.status_code} and a "
                "body that is not JSON",
                detail=self._body(response, 500),
            ) from None

    def get(self, ref: str, params: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """GET a JSON object."""
        return self.json_object(self.request("GET", ref, params=params), "GET", ref)

    def json_object(self, response: httpx.Response, method: str, ref: str) -> dict[str, Any]:
        """The response's JSON object; anything else is a TransientError."""
        body = self.json(response, method, ref)
        if not isinstance(body, dict):
            raise TransientError(
                f"Rossum answered {method} {self.path(ref)} with JSON that is not an object"
            )
        return body

    def paginate(
        self, ref: str, params: Mapping[str, Any] | None = None
    ) -> Iterator[dict[str, Any]]:
        """Every result of a list endpoint, following ``pagination.next`` until it is null."""
        seen: set[str] = set()
        next_ref: str | None = ref
        next_params = params
        while next_ref is not None:
            page = self.get(next_ref, next_params)
            results = page.get("results")
            if not isinstance(results, list):
                raise TransientError(f"Rossum's list {self.path(ref)} has no results array")
            for item in results:
                if isinstance(item, dict):
                    yield item
            pagination = page.get("pagination")
            following = pagination.get("next") if isinstance(pagination, dict) else None
            if not isinstance(following, str) or not following:
                return
            if following in seen:
                raise TransientError(f"Rossum's list {self.path(ref)} pages in a loop")
            seen.add(following)
            next_ref, next_params = following, None

    def close(self) -> None:
        self.logout()
        self._http.close()


# --------------------------------------------------------------------------- the vendor

READY_ORDER: dict[str, int] = {
    "to_review": 1,
    "reviewing": 1,
    "postponed": 1,
    "in_workflow": 2,
    "confirmed": 3,
    "exporting": 4,
    "failed_export": 4,
    "exported": 5,
}
"""How far an extracted annotation is; ``ready_status`` picks the first rank that counts."""

READY_RANK: dict[str, int] = {"to_review": 1, "confirmed": 3, "exported": 5}

IMPORTING = frozenset({"created", "importing"})
GONE = {
    "failed_import": "Rossum could not import the document",
    "rejected": "rejected in Rossum",
    "deleted": "deleted in Rossum",
    "purged": "deleted and purged in Rossum",
    "split": "split into several documents in Rossum; docrelay does not follow the parts",
}
STARTABLE = ("to_review", "postponed", "confirmed")
"""Statuses our ``start`` accepts; ``reviewing`` only when the session is ours (``_begin``)."""
DONE = frozenset({"confirmed", "exporting", "exported"})
REFUSED = (400, 404, 405, 409, 422)

_ANNOTATION_PATH = re.compile(r"/annotations/(\d+)/?$")


class _TaskGone(TransientError):
    """The upload task is no longer there (tasks expire); handled inside the vendor."""


@dataclass(slots=True)
class _Upload:
    """Where an upload task led."""

    task_url: str
    upload_url: str | None = None
    annotations: list[str] = field(default_factory=list)
    documents: list[str] = field(default_factory=list)


class RossumVendor(Vendor):
    """Rossum: upload to a queue, wait for the annotation, read its content tree."""

    kind: ClassVar[str] = "rossum"
    settings_model: ClassVar[type[ConnectorSettings]] = RossumSettings
    capabilities: ClassVar[VendorCapabilities] = VendorCapabilities(
        webhooks=True, feedback=True, export_status=True, reconcile_uploads=True, poll_interval=2.0
    )

    settings: RossumSettings

    UPLOAD_WAIT: ClassVar[float] = 30.0
    """Seconds ``submit`` follows the upload task before leaving the rest to ``poll``."""
    RECONCILE_MARGIN: ClassVar[timedelta] = timedelta(hours=1)
    """Reconcile looks at annotations that arrived after the document's receipt minus this."""

    def __init__(
        self,
        settings: ConnectorSettings,
        context: ConnectorContext,
        *,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        if not isinstance(settings, RossumSettings):
            settings = RossumSettings.model_validate(settings.model_dump())
        super().__init__(settings, context)
        self.capabilities = VendorCapabilities(  # type: ignore[misc]
            webhooks=True,
            feedback=True,
            export_status=settings.export_status,
            reconcile_uploads=True,
            poll_interval=settings.poll_interval,
        )
        self._user_id: int | None = None
        self._recent: dict[tuple[str, int], tuple[float, dict[str, Any]]] = {}
        self._recent_lock = threading.Lock()
        self.field_map = {**FIELD_MAP, **settings.mapping}
        self.line_item_map = {**LINE_ITEM_MAP, **settings.line_item_mapping}
        self.client = RossumClient(
            settings, transport=transport, clock=context.clock, sleep=sleep, jitter=jitter
        )

    # ------------------------------------------------------------------ references

    def annotation_ref(self, annotation_id: int) -> str:
        """The ``vendor_ref`` of an annotation: its API URL below our ``base_url``."""
        return f"{self.client.base_url}/annotations/{annotation_id}"

    @staticmethod
    def annotation_id(vendor_ref: str, data: Mapping[str, Any]) -> int | None:
        """The annotation id from the stored data or the reference; None while the upload task
        has not produced one."""
        stored = data.get("annotation_id")
        if isinstance(stored, int) and not isinstance(stored, bool):
            return stored
        if isinstance(stored, str) and stored.isdigit():
            return int(stored)
        if vendor_ref.isdigit():
            return int(vendor_ref)
        match = _ANNOTATION_PATH.search(urlsplit(vendor_ref).path)
        return int(match.group(1)) if match else None

    def _require_id(self, vendor_ref: str, data: Mapping[str, Any]) -> int:
        annotation_id = self.annotation_id(vendor_ref, data)
        if annotation_id is None:
            raise NotReady("the upload has not produced an annotation yet")
        return annotation_id

    def _annotation(self, annotation_id: int) -> dict[str, Any] | None:
        """The annotation object, or None when Rossum no longer has it (404)."""
        ref = f"annotations/{annotation_id}"
        response = self.client.request("GET", ref, allow=(404,))
        if response.status_code == 404:
            return None
        return self.client.json_object(response, "GET", ref)

    # ------------------------------------------------------------------ submit

    def submit(self, document: DocumentRef, *, first_attempt: bool = False) -> SubmitResult:
        """Reconcile by our document id in the annotation metadata, else upload and follow the
        task to the annotation (see NOTES.md for why this never uploads twice). On a first
        attempt no earlier upload can exist, so the look-up is skipped (one request less)."""
        if document.size_bytes > self.settings.max_upload_bytes:
            raise TerminalError(
                f"the document has {document.size_bytes} bytes; this Rossum profile accepts at "
                f"most {self.settings.max_upload_bytes}"
            )
        since = self._since(document)
        base_data: dict[str, Any] = {
            "queue": self.settings.queue,
            "document_id": document.id,
            "sha256": document.sha256,
            "since": since.isoformat(),
        }
        existing = (
            None if first_attempt else self._find_existing(document.id, document.sha256, since)
        )
        if existing is not None:
            log.info(
                "document %s is already annotation %s at Rossum; not uploading again",
                document.id,
                existing.get("id"),
            )
            return self._result(existing, {**base_data, "reconciled": True})

        response = self._upload(document)
        try:  # from here on the upload exists: never fail on the answer's shape alone
            body = self.client.json_object(response, "POST", "uploads")
        except TransientError:
            body = {}
        direct = self._annotations_in(body)
        if direct:  # a synchronous upload answer (`results[].annotation`)
            upload = _Upload(task_url="", annotations=direct)
        else:
            task_url = body.get("url") or response.headers.get("Location")
            if not isinstance(task_url, str) or not task_url:
                raise TransientError("Rossum accepted the upload but named no task to follow")
            upload = _Upload(task_url=self.client.url(task_url))
            try:
                done = self._follow(upload, deadline=self.client.clock() + self.UPLOAD_WAIT)
            except TransientError as exc:
                log.info("following Rossum upload task failed (%s); poll continues", exc)
                done = False
            if not done:
                return SubmitResult(
                    vendor_ref=upload.task_url,
                    data={**base_data, "task_url": upload.task_url, "pending": True},
                )
        annotation_id = _id_of(upload.annotations[0])
        data = {
            **base_data,
            "annotation_id": annotation_id,
            "annotation_url": upload.annotations[0],
            "task_url": upload.task_url or None,
            "upload_url": upload.upload_url,
            "document_url": upload.documents[0] if upload.documents else None,
        }
        if len(upload.annotations) > 1:
            data["annotations"] = upload.annotations
        return SubmitResult(vendor_ref=self.annotation_ref(annotation_id), data=data)

    def _since(self, document: DocumentRef) -> datetime:
        received = document.received_at
        if received.tzinfo is None:
            received = received.replace(tzinfo=UTC)
        return min(received, datetime.now(UTC)) - self.RECONCILE_MARGIN

    def _result(self, annotation: Mapping[str, Any], base: dict[str, Any]) -> SubmitResult:
        annotation_id = annotation.get("id")
        if not isinstance(annotation_id, int):
            annotation_id = _id_of(str(annotation.get("url", "")))
        return SubmitResult(
            vendor_ref=self.annotation_ref(annotation_id),
            data={
                **base,
                "annotation_id": annotation_id,
                "annotation_url": annotation.get("url"),
                "document_url": annotation.get("document"),
            },
        )

    def _find_existing(
        self, document_id: int, sha256: str, since: datetime
    ) -> dict[str, Any] | None:
        """The newest live annotation in our queue whose metadata carries this document.

        Asks with ``metadata__docrelay_document_id=<id>`` (what the emulator and NOTES.md
        propose; the API reference documents no metadata filter) and always matches the
        metadata here as well, so a server that ignores the filter only costs more pages. A
        server that refuses it (4xx) is asked again without it. The documented queue and
        arrival-time filters bound the scan either way (NOTES.md, "Reconcile").
        """
        params: dict[str, Any] = {
            "queue": self.settings.queue,
            "arrived_at_after": since.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S"),
            "ordering": "-created_at",
            "page_size": 100,
        }
        try:
            return self._scan(
                {**params, f"metadata__{METADATA_DOCUMENT_ID}": str(document_id)},
                document_id,
                sha256,
            )
        except TerminalError as exc:
            log.info("Rossum refused the metadata filter (%s); scanning the queue", exc)
            return self._scan(params, document_id, sha256)

    def _scan(
        self, params: Mapping[str, Any], document_id: int, sha256: str
    ) -> dict[str, Any] | None:
        best: dict[str, Any] | None = None
        for annotation in self.client.paginate("annotations", params):
            metadata = annotation.get("metadata")
            if not isinstance(metadata, dict):
                continue
            if str(metadata.get(METADATA_DOCUMENT_ID)) != str(document_id):
                continue
            if metadata.get(METADATA_SHA256) not in (None, sha256):
                continue
            if annotation.get("status") in ("deleted", "purged"):
                continue
            if best is None or _sort_id(annotation) > _sort_id(best):
                best = annotation
        return best

    def _upload(self, document: DocumentRef) -> httpx.Response:
        metadata = json.dumps({METADATA_DOCUMENT_ID: document.id, METADATA_SHA256: document.sha256})
        mime = document.mime_type or "application/octet-stream"
        with document.open() as handle:  # httpx streams it in 64 kB chunks, seeking to 0 on replay
            return self.client.request(
                "POST",
                "uploads",
                params={"queue": self.settings.queue},
                data={"metadata": metadata},
                files={"content": (document.filename, handle, mime)},
                replayable=False,
            )

    def _annotations_in(self, body: Mapping[str, Any]) -> list[str]:
        results = body.get("results")
        if not isinstance(results, list):
            return []
        return [
            r["annotation"]
            for r in results
            if isinstance(r, dict) and isinstance(r.get("annotation"), str)
        ]

    def _follow(self, upload: _Upload, *, deadline: float | None) -> bool:
        """Follow the task to its upload and the upload to its annotations.

        True when the annotations are known (filled into ``upload``); False when the task is
        still running at ``deadline`` (None: look once). TerminalError when the task failed.
        """
        wait = 0.25
        while True:
            if self._task_done(upload):
                return True
            if deadline is None or self.client.clock() + wait > deadline:
                return False
            self.client.sleep(wait)
            wait = min(wait * 2, 2.0)

    def _task_done(self, upload: _Upload) -> bool:
        if upload.upload_url is None:
            response = self.client.request(
                "GET", upload.task_url, params={"no_redirect": "true"}, allow=(303, 404)
            )
            if response.status_code == 404:
                raise _TaskGone(
                    f"Rossum no longer has the task {self.client.path(upload.task_url)}"
                )
            if response.status_code == 303:
                location = response.headers.get("Location")
                if not location:
                    raise TransientError("Rossum redirected from the task without a Location")
                upload.upload_url = self.client.url(location)
            else:
                task = self.client.json_object(response, "GET", upload.task_url)
                status = task.get("status")
                if status == "failed":
                    detail = task.get("detail") or task.get("code") or "no detail given"
                    raise TerminalError(f"Rossum could not import the upload: {detail}")
                if status != "succeeded":
                    return False
                content = task.get("content")
                target = content.get("upload") if isinstance(content, dict) else None
                target = target or task.get("result_url")
                if not isinstance(target, str) or not target:
                    raise TransientError("Rossum's upload task succeeded without naming the upload")
                upload.upload_url = self.client.url(target)
        body = self.client.get(upload.upload_url)
        annotations = [a for a in body.get("annotations") or [] if isinstance(a, str)]
        if not annotations:
            return False  # the task is done but the annotation is not listed yet
        upload.annotations = annotations
        upload.documents = [d for d in body.get("documents") or [] if isinstance(d, str)]
        return True

    # ------------------------------------------------------------------ poll / fetch

    def poll(self, vendor_ref: str, data: Mapping[str, Any]) -> PollResult:
        """Read the annotation's status (and, for a pending upload, the task). Read-only."""
        new_data: dict[str, Any] | None = None
        annotation_id = self.annotation_id(vendor_ref, data)
        if annotation_id is None:
            resolved = self._resolve_pending(vendor_ref, data)
            if isinstance(resolved, PollResult):
                return resolved
            new_data = resolved
            annotation_id = int(resolved["annotation_id"])
        annotation = self._annotation(annotation_id)
        if annotation is None:
            return PollResult(
                PollStatus.REJECTED,
                reason=f"annotation {annotation_id} no longer exists at Rossum",
                data=new_data,
            )
        result = self.status_result(annotation)
        result.data = new_data
        if result.status == PollStatus.READY:
            self._remember(annotation_id, annotation)
        return result

    def _remember(
        self, annotation_id: int, annotation: dict[str, Any], purpose: str = "fetch"
    ) -> None:
        """Keep an annotation just read for the one call that follows at once (``purpose``):
        a ready poll's for the ``fetch``, a fetch's for the export status report. Each costs
        one request less; anything later reads afresh."""
        now = time.monotonic()
        with self._recent_lock:
            for key in [k for k, (at, _) in self._recent.items() if now - at > RECENT_SECONDS]:
                del self._recent[key]
            self._recent[(purpose, annotation_id)] = (now, annotation)

    def _recalled(self, annotation_id: int, purpose: str = "fetch") -> dict[str, Any] | None:
        with self._recent_lock:
            at, annotation = self._recent.pop((purpose, annotation_id), (0.0, None))
        return annotation if time.monotonic() - at <= RECENT_SECONDS else None

    def status_result(self, annotation: Mapping[str, Any]) -> PollResult:
        """Map an annotation's status to a PollResult (the table in NOTES.md)."""
        status = str(annotation.get("status") or "")
        if status in GONE:
            reason = GONE[status]
            messages = _messages(annotation.get("messages"))
            return PollResult(
                PollStatus.REJECTED, reason=f"{reason}: {messages}" if messages else reason
            )
        rank = READY_ORDER.get(status)
        if rank is not None and rank >= READY_RANK[self.settings.ready_status]:
            return PollResult(PollStatus.READY)
        # importing/created, waiting for a person, or a status added after this was written
        # (the API asks clients to tolerate new enum values): ask again, backing off.
        return PollResult(PollStatus.PROCESSING)

    def _resolve_pending(
        self, vendor_ref: str, data: Mapping[str, Any]
    ) -> dict[str, Any] | PollResult:
        task_url = data.get("task_url") or vendor_ref
        upload = _Upload(task_url=self.client.url(str(task_url)))
        try:
            done = self._follow(upload, deadline=None)
        except _TaskGone:
            return self._reconcile_pending(data)
        except TerminalError as exc:
            return PollResult(PollStatus.REJECTED, reason=str(exc))
        if not done:
            return PollResult(PollStatus.PROCESSING)
        annotation_url = upload.annotations[0]
        return {
            **data,
            "pending": False,
            "annotation_id": _id_of(annotation_url),
            "annotation_url": annotation_url,
            "upload_url": upload.upload_url,
            "document_url": upload.documents[0] if upload.documents else None,
        }

    def _reconcile_pending(self, data: Mapping[str, Any]) -> dict[str, Any] | PollResult:
        """The task expired before we saw its result: find the annotation by our metadata."""
        document_id, sha256, since = data.get("document_id"), data.get("sha256"), data.get("since")
        found = None
        if isinstance(document_id, int) and isinstance(sha256, str) and isinstance(since, str):
            found = self._find_existing(document_id, sha256, datetime.fromisoformat(since))
        if found is None:
            return PollResult(
                PollStatus.REJECTED,
                reason="Rossum's upload task expired and no annotation carries our document id",
            )
        return {**data, "pending": False, **self._result(found, {}).data}

    def fetch(self, vendor_ref: str, data: Mapping[str, Any], document: DocumentRef) -> Any:
        """The annotation and its content tree, verbatim (two GETs, nothing changed)."""
        annotation_id = self._require_id(vendor_ref, data)
        annotation = self._recalled(annotation_id) or self._annotation(annotation_id)
        if annotation is None:
            raise TerminalError(f"annotation {annotation_id} no longer exists at Rossum")
        content = self._content(annotation_id)
        # The export status is usually reported right after (inline export): it starts from
        # this read instead of another GET; a change meanwhile makes `start` refuse, and the
        # retry reads afresh.
        self._remember(annotation_id, annotation, "report")
        return {
            "annotation": annotation,
            "content": content,
            "schema_url": annotation.get("schema"),
        }

    def _content(self, annotation_id: int) -> list[Any]:
        ref = f"annotations/{annotation_id}/content"
        body = self.client.get(ref)
        content = body.get("content", body.get("results"))
        if not isinstance(content, list):
            raise TransientError(f"Rossum's content of annotation {annotation_id} is not a list")
        return content

    def normalize(self, raw: Any) -> CanonicalResult:
        """Pure mapping with this profile's schema-id tables (see ``mapping``)."""
        return mapping.normalize(raw, self.field_map, self.line_item_map)

    # ------------------------------------------------------------------ webhooks

    def parse_webhook(self, request: WebhookRequest) -> list[WebhookHint]:
        """Verify ``X-Rossum-Signature-SHA256`` and name the annotation to look at."""
        headers, body = request.headers, request.body
        secret = self.settings.webhook_secret
        if secret is None:
            raise WebhookRejected(
                "webhooks are refused: set webhook_secret to the Rossum hook's config.secret",
                status_code=401,
            )
        lowered = {str(k).lower(): v for k, v in headers.items()}
        header = lowered.get(SIGNATURE_HEADER)
        if not header:
            raise WebhookRejected("missing X-Rossum-Signature-SHA256 header", status_code=401)
        scheme, _, given = header.strip().partition("=")
        if scheme.strip().lower() != "sha256" or not given:
            raise WebhookRejected("unsupported webhook signature scheme", status_code=401)
        expected = hmac.new(secret.get_secret_value().encode(), body, hashlib.sha256).hexdigest()
        given_bytes = given.strip().lower().encode("utf-8", "replace")
        if not hmac.compare_digest(expected.encode("ascii"), given_bytes):
            raise WebhookRejected("webhook signature does not match", status_code=401)
        try:
            payload = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            raise WebhookRejected("webhook body is not JSON", status_code=400) from None
        if not isinstance(payload, dict):
            raise WebhookRejected("webhook body is not a JSON object", status_code=400)
        event, action = payload.get("event"), payload.get("action")
        if event not in ("annotation_status", "annotation_content"):
            return []
        annotation = payload.get("annotation")
        annotation_id: Any = annotation.get("id") if isinstance(annotation, dict) else None
        if not (isinstance(annotation_id, int) and not isinstance(annotation_id, bool)):
            url = annotation.get("url") if isinstance(annotation, dict) else None
            match = _ANNOTATION_PATH.search(urlsplit(url).path) if isinstance(url, str) else None
            if match is None:
                raise WebhookRejected("webhook names no annotation", status_code=400)
            annotation_id = int(match.group(1))
        request_id = payload.get("request_id")
        return [
            WebhookHint(
                vendor_ref=self.annotation_ref(annotation_id),
                event=f"{event}.{action}",
                delivery_id=str(request_id) if request_id else None,
            )
        ]

    # ------------------------------------------------------------------ feedback

    def send_feedback(
        self,
        vendor_ref: str,
        data: Mapping[str, Any],
        corrections: list[Correction],
        result: CanonicalResult | None = None,
    ) -> list[CorrectionOutcome]:
        """Write corrected values into the annotation and confirm it (start → replace → confirm).

        Safe to repeat: replacing with the same value changes nothing, and an annotation that is
        already confirmed/exported with these values counts as done. A field the queue's schema
        has no datapoint for is refused.
        """
        if not corrections:
            return []
        annotation_id = self._require_id(vendor_ref, data)
        annotation = self._recalled(annotation_id) or self._annotation(annotation_id)
        if annotation is None:
            raise TerminalError(f"annotation {annotation_id} no longer exists at Rossum")
        status = str(annotation.get("status") or "")
        points = _top_level_datapoints(self._content(annotation_id))
        ops: list[dict[str, Any]] = []
        unchanged = True
        missing: list[str] = []
        for correction in corrections:
            found = self._datapoint_for(correction, points)
            if found is None:
                missing.append(correction.field)
                continue
            new_value = correction.value or ""
            unchanged = unchanged and _current_text(found) == new_value
            ops.append(
                {
                    "op": "replace",
                    "id": found["id"],
                    "value": {"content": {"value": new_value}, "validation_sources": ["human"]},
                }
            )
        refused = [
            CorrectionOutcome(name, False, "the Rossum queue's schema has no datapoint for it")
            for name in missing
        ]
        if missing:
            log.warning("Rossum's schema has no datapoint for %s; not sent", ", ".join(missing))
        if not ops:
            return refused
        if unchanged and status in DONE:
            return refused  # a repeat after the first send went through
        self._begin(annotation_id, annotation, "corrections")
        try:
            self.client.request(
                "POST", f"annotations/{annotation_id}/content/operations", json={"operations": ops}
            )
            self._confirm(annotation_id)
        except BaseException:
            self._cancel(annotation_id)
            raise
        return refused

    def _datapoint_for(
        self, correction: Correction, points: Mapping[str, dict[str, Any]]
    ) -> dict[str, Any] | None:
        candidates: list[str] = []
        if correction.vendor_label:
            candidates.append(correction.vendor_label)
        candidates += [sid for sid, name in self.field_map.items() if name == correction.field]
        if correction.field.startswith("extra."):
            candidates.append(correction.field[len("extra.") :])
        for schema_id in candidates:
            if schema_id in points:
                return points[schema_id]
        return None

    def _ensure_startable(self, status: str, what: str) -> None:
        if status in STARTABLE:
            return
        if status in IMPORTING:
            raise NotReady("Rossum is still importing the document")
        if status in ("reviewing", "in_workflow"):
            raise TransientError(
                f"the annotation is {status} in Rossum; {what} wait until that is over"
            )
        raise TerminalError(f"Rossum does not take {what} for an annotation in status {status!r}")

    def _begin(self, annotation_id: int, annotation: Mapping[str, Any], what: str) -> None:
        """``start`` the annotation for our edits, never taking over a person's session.

        A ``reviewing`` annotation is ours to continue only when Rossum names our user as its
        modifier or assignee (an earlier attempt of ours started it and then failed).
        """
        status = str(annotation.get("status") or "")
        own = status == "reviewing" and self._own_session(annotation)
        if not own:
            self._ensure_startable(status, what)
        statuses = [*STARTABLE, "reviewing"] if own else list(STARTABLE)
        ref = f"annotations/{annotation_id}/start"
        response = self.client.request("POST", ref, json={"statuses": statuses}, allow=(409,))
        if response.status_code != 409:
            return
        again = self._annotation(annotation_id)  # a retried start that had gone through?
        if again is not None and again.get("status") == "reviewing" and self._own_session(again):
            return
        what = "would not let us start the annotation"
        raise TransientError(self.client.describe("POST", self.client.path(ref), response, what))

    def _own_session(self, annotation: Mapping[str, Any]) -> bool:
        me = self._me()
        if me is None:
            return False
        holders = [annotation.get("modifier"), *(annotation.get("assignees") or [])]
        return any(_id_or(holder, -1) == me for holder in holders)

    def _me(self) -> int | None:
        """Our user id at Rossum (``GET /v1/auth/user``), asked once; None if unknown."""
        if self._user_id is None:
            response = self.client.request("GET", "auth/user", allow=REFUSED)
            user = (
                {}
                if response.status_code in REFUSED
                else self.client.json_object(response, "GET", "auth/user")
            )
            user_id = user.get("id")
            self._user_id = user_id if isinstance(user_id, int) else _id_or(user.get("url"), -1)
        return self._user_id if self._user_id >= 0 else None

    def _confirm(self, annotation_id: int) -> None:
        """Confirm; a refusal counts as success when the annotation is confirmed or beyond
        already (confirm is not documented as idempotent, a repeat may get 409)."""
        ref = f"annotations/{annotation_id}/confirm"
        response = self.client.request("POST", ref, json={}, allow=REFUSED)
        if response.status_code not in REFUSED:
            return
        annotation = self._annotation(annotation_id)
        if annotation is not None and annotation.get("status") in (*DONE, "in_workflow"):
            return
        raise TerminalError(
            self.client.describe(
                "POST", self.client.path(ref), response, "would not confirm the annotation"
            )
        )

    def _cancel(self, annotation_id: int) -> None:
        """Hand a started annotation back (best effort: our session would time out anyway)."""
        try:
            self.client.request(
                "POST", f"annotations/{annotation_id}/cancel", json={}, allow=REFUSED
            )
        except (TransientError, TerminalError, AuthFailed) as exc:
            log.debug("could not cancel annotation %s: %s", annotation_id, exc)

    # ------------------------------------------------------------------ export status

    def report_delivery(
        self, vendor_ref: str, data: Mapping[str, Any], ok: bool, message: str | None
    ) -> None:
        """Move the annotation to ``exported``, or record the failure (``failed_export``).

        Idempotent: an annotation already in the target state is left alone.
        """
        if not self.settings.export_status:
            return
        annotation_id = self._require_id(vendor_ref, data)
        annotation = self._recalled(annotation_id, "report") or self._annotation(annotation_id)
        if annotation is None:
            log.info("annotation %s is gone at Rossum; export status not reported", annotation_id)
            return
        status = str(annotation.get("status") or "")
        if ok:
            self._mark_exported(annotation_id, annotation, status)
        else:
            self._mark_failed(annotation_id, status, message)

    def _mark_exported(
        self, annotation_id: int, annotation: Mapping[str, Any], status: str
    ) -> None:
        if status in ("exported", "exporting"):
            return
        if status in ("to_review", "postponed") or (
            status == "reviewing" and self._own_session(annotation)
        ):
            self._begin(annotation_id, annotation, "export status changes")
            try:
                self._confirm(annotation_id)
            except BaseException:
                self._cancel(annotation_id)
                raise
            after = self._annotation(annotation_id)
            if after is None:
                return
            annotation, status = after, str(after.get("status") or "")
            if status in ("exported", "exporting", "in_workflow"):
                return
        if status == "confirmed":
            self._export_confirmed(annotation_id, annotation)
            return
        if status in IMPORTING or status in ("reviewing", "in_workflow"):
            self._ensure_startable(status, "export status changes")
        log.info("annotation %s is %s at Rossum; not marked exported", annotation_id, status)

    def _export_confirmed(self, annotation_id: int, annotation: Mapping[str, Any]) -> None:
        """``confirmed`` → ``exported`` with the documented queue export (``to_status``), or a
        PATCH where that endpoint is refused."""
        queue = _id_or(annotation.get("queue"), self.settings.queue)
        response = self.client.request(
            "POST",
            f"queues/{queue}/export",
            params={
                "id": annotation_id,
                "status": "confirmed",
                "to_status": "exported",
                "format": "json",
            },
            allow=REFUSED,
        )
        if response.status_code not in REFUSED:
            return
        self.client.request("PATCH", f"annotations/{annotation_id}", json={"status": "exported"})

    def _mark_failed(self, annotation_id: int, status: str, message: str | None) -> None:
        if status == "failed_export" or status in GONE:
            return
        text = f"docrelay could not deliver the export: {message or 'no reason given'}"
        messages = [{"type": "error", "content": self.client.scrub(text)[:MAX_MESSAGE]}]
        ref = f"annotations/{annotation_id}"
        response = self.client.request(
            "PATCH", ref, json={"status": "failed_export", "messages": messages}, allow=REFUSED
        )
        if response.status_code not in REFUSED:
            return
        # Setting failed_export is not documented; keep the reason visible at least.
        response = self.client.request("PATCH", ref, json={"messages": messages}, allow=REFUSED)
        if response.status_code in REFUSED:
            raise TerminalError(
                self.client.describe(
                    "PATCH", self.client.path(ref), response, "refused the export failure"
                )
            )
        log.info(
            "Rossum refused status failed_export for annotation %s; message added, status %s kept",
            annotation_id,
            status,
        )

    # ------------------------------------------------------------------ retention

    def retention_days(self) -> float | None:
        return self.settings.delete_after_days

    def purge(self, vendor_ref: str, data: Mapping[str, Any]) -> None:
        """Retention: delete the annotation (and purge it where Rossum allows)."""
        self.delete_annotation(vendor_ref, data)

    def delete_annotation(self, vendor_ref: str, data: Mapping[str, Any] | None = None) -> None:
        """Delete the annotation at Rossum and purge it (retention); safe to repeat."""
        annotation_id = self._require_id(vendor_ref, data or {})
        annotation = self._annotation(annotation_id)
        if annotation is None or annotation.get("status") == "purged":
            return
        if annotation.get("status") != "deleted":
            response = self.client.request(
                "POST", f"annotations/{annotation_id}/delete", json={}, allow=(404,)
            )
            if response.status_code == 404:
                return
        url = annotation.get("url")
        if not isinstance(url, str):
            url = self.annotation_ref(annotation_id)
        response = self.client.request(
            "POST", "annotations/purge_deleted", json={"annotations": [url]}, allow=(404, 405)
        )
        if response.status_code in (404, 405):  # deleted is still done; purge is Rossum's job then
            log.warning(
                "Rossum has no purge_deleted endpoint (%s); annotation %s is deleted, not purged",
                response.status_code,
                annotation_id,
            )

    def close(self) -> None:
        self.client.close()


# --------------------------------------------------------------------------- helpers


def _id_of(url: str) -> int:
    match = _ANNOTATION_PATH.search(urlsplit(url).path)
    if match is None:
        raise TransientError(f"Rossum named an annotation by an unexpected URL: {url[:200]}")
    return int(match.group(1))


def _id_or(url: Any, default: int) -> int:
    if isinstance(url, str):
        match = re.search(r"/(\d+)/?$", urlsplit(url).path)
        if match:
            return int(match.group(1))
    return default


def _sort_id(annotation: Mapping[str, Any]) -> int:
    value = annotation.get("id")
    return value if isinstance(value, int) else -1


def _messages(value: Any) -> str:
    """Rossum's messages (``[{"content": …}]`` or the older ``[{"error": …}]``) as one line."""
    if not isinstance(value, list):
        return ""
    texts = []
    for item in value:
        if isinstance(item, dict):
            text = item.get("content") or item.get("error") or item.get("detail")
            if text:
                texts.append(str(text))
        elif isinstance(item, str):
            texts.append(item)
    return "; ".join(texts)[:1000]


def _top_level_datapoints(content: list[Any]) -> dict[str, dict[str, Any]]:
    """schema id → datapoint node, outside tables; the first one wins."""
    found: dict[str, dict[str, Any]] = {}

    def walk(nodes: Any) -> None:
        if not isinstance(nodes, list):
            return
        for node in nodes:
            if not isinstance(node, dict):
                continue
            category = node.get("category")
            if category == "datapoint":
                schema_id = node.get("schema_id")
                if isinstance(schema_id, str) and "id" in node:
                    found.setdefault(schema_id, node)
            elif category not in ("multivalue", "tuple"):
                walk(node.get("children"))

    walk(content)
    return found


def _current_text(node: Mapping[str, Any]) -> str:
    body = node.get("content")
    if not isinstance(body, dict):
        return ""
    value = body.get("normalized_value") or body.get("value")
    return "" if value is None else str(value)
