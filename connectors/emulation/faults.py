"""Fault injection and throttling for emulators: an ASGI middleware in front of the vendor API.

Every API request (never ``/_emulator``) first meets the rate limit — a token bucket per
client, ``rate_limit`` requests per second with a burst of as many (at least 1); an empty bucket
answers **429** with ``Retry-After`` — and then, with probability ``fail_rate``, one fault
drawn from ``fault_mix`` (or the next fault scheduled for it, see ``FaultInjector.schedule``):

| kind | the API handles the request? | the client sees |
|---|---|---|
| ``500`` ``502`` ``503`` ``504`` | no | that status, an error body (503: ``Retry-After: 1``) |
| ``500_after`` | **yes**, fully | 500 — the call took effect although the client saw an error |
| ``drop_before`` | no | the connection closes without any answer |
| ``drop_during`` | **yes**, fully | the real status and headers, half the body, the close (an
  answer without a body, 204 say, is dropped whole) |
| ``drop_after`` | **yes**, fully | the connection closes without any answer |
| ``malformed`` | **yes**, fully | a 2xx answer as 200 with its body cut in half (truncated JSON) |
| ``html`` | no | 200 with an HTML error page (a proxy or portal answered) |
| ``slow`` | yes | the normal answer after ``slow_seconds`` (on the emulator's clock) |

A fault never splits a request: it strikes before the API sees the request or after it has
finished it, so no fault leaves half-done state. Closing a connection without an answer needs
the server's connection, which ``EmulatorApp`` (``app``) hands over for uvicorn; elsewhere the
drop falls back to a started 200 answer cut off after two bytes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import random
import threading
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Iterable, Mapping, MutableMapping
from dataclasses import dataclass
from typing import Any

from connectors.emulation.clock import SYSTEM_CLOCK, Clock
from connectors.emulation.requestlog import is_api_path, log_now, note_fault
from connectors.emulation.wrongness import SETTINGS as WRONGNESS_SETTINGS
from connectors.emulation.wrongness import WrongnessSettings

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

KINDS: dict[str, str] = {
    "500": "500, not processed",
    "502": "502, not processed",
    "503": "503 with Retry-After: 1, not processed",
    "504": "504, not processed",
    "500_after": "processed, then 500",
    "drop_before": "connection closed before the request is handled",
    "drop_during": "processed; connection closed in the middle of the answer's body",
    "drop_after": "processed; connection closed without an answer",
    "malformed": "processed; a 2xx body cut in half, sent as 200",
    "html": "not processed; 200 with an HTML error page",
    "slow": "processed after slow_seconds",
}
"""Every fault kind and what it does."""

PROCESSED = frozenset({"500_after", "drop_during", "drop_after", "malformed", "slow"})
"""Kinds after which the request has taken effect at the emulator."""

DEFAULT_MIX: tuple[tuple[str, float], ...] = tuple((kind, 1.0) for kind in KINDS)

THROTTLED = "throttled"
"""What the request log shows as ``fault`` for a 429 of the rate limit."""

FAULT_DETAIL = "Please try again later. (emulated fault)"
AFTER_DETAIL = "Server Error (500) (emulated fault)"
HTML_PAGE = (
    b"<!DOCTYPE html>\n<html><head><title>503 Service Temporarily Unavailable</title></head>"
    b"<body><h1>Service Temporarily Unavailable</h1><p>The server is temporarily unable to "
    b"service your request. (emulated fault)</p></body></html>\n"
)

ErrorBody = Callable[[int, str], Any]
"""``(status, message) -> JSON body`` of the answers the middleware makes up itself."""
ClientKey = Callable[[Scope], str]
"""Whom a request counts against for the rate limit."""


def default_error_body(status: int, message: str) -> Any:
    """``{"detail": message}``: Django REST framework's shape, which several vendors use."""
    return {"detail": message}


def client_key(scope: Scope) -> str:
    """The credentials of the ``Authorization`` header, else the client address."""
    for name, value in scope.get("headers", []):
        if name == b"authorization":
            scheme, _, credentials = value.decode("latin-1").partition(" ")
            if credentials.strip():
                return f"{scheme.lower()}:{credentials.strip()}"
    client = scope.get("client") or ("unknown", 0)
    return f"ip:{client[0]}"


# --------------------------------------------------------------------------- settings


def check_mix(mix: Iterable[tuple[str, float]]) -> tuple[tuple[str, float], ...]:
    """A validated fault mix: known kinds, weights >= 0, at least one above 0."""
    checked = tuple((str(kind), float(weight)) for kind, weight in mix)
    unknown = sorted({kind for kind, _ in checked if kind not in KINDS})
    if unknown:
        raise ValueError(f"unknown fault kinds {unknown} (known: {', '.join(KINDS)})")
    if any(weight < 0 for _, weight in checked) or not any(w > 0 for _, w in checked):
        raise ValueError("fault weights must not be negative and one must be above 0")
    return checked


def parse_mix(text: str) -> tuple[tuple[str, float], ...]:
    """``"503=2,drop_after"`` → ``(("503", 2.0), ("drop_after", 1.0))`` (the CLI's form)."""
    mix = []
    for item in text.split(","):
        kind, sep, weight = item.strip().partition("=")
        if not kind:
            continue
        try:
            mix.append((kind.strip(), float(weight) if sep else 1.0))
        except ValueError:
            raise ValueError(f"fault weight {weight!r} is not a number") from None
    return check_mix(mix)


@dataclass
class FaultSettings:
    """How often and how an emulator misbehaves. Read on every request, so a test (or
    ``POST /_emulator/faults``) may change the fields of a running emulator; a vendor's
    options dataclass subclasses this (through ``CommonOptions``, which adds the engine's
    error and miss rates, ``wrongness.WrongnessSettings``)."""

    fail_rate: float = 0.0
    """Share of API requests, 0-1, that get a fault from ``fault_mix``."""
    fault_mix: tuple[tuple[str, float], ...] = DEFAULT_MIX
    """Fault kinds (``KINDS``) and their weights."""
    seed: int | None = None
    """Seeds the draw, so a run with faults can be repeated."""
    rate_limit: float = 0.0
    """Requests per second per client (burst of the same size); 0 = unlimited."""
    slow_seconds: float = 2.0
    """How long a ``slow`` fault holds a request."""

    def __post_init__(self) -> None:
        self.check()

    def check(self) -> None:
        """ValueError for impossible values."""
        if not 0 <= self.fail_rate <= 1:
            raise ValueError("fail_rate must be between 0 and 1")
        if self.rate_limit < 0 or self.slow_seconds < 0:
            raise ValueError("rate_limit and slow_seconds must not be negative")
        self.fault_mix = check_mix(self.fault_mix)


@dataclass(frozen=True)
class ScheduledFault:
    """A fault for the next request that matches (method, path prefix; None = any)."""

    kind: str
    method: str | None = None
    path: str | None = None

    def matches(self, method: str, path: str) -> bool:
        if self.method is not None and self.method.upper() != method.upper():
            return False
        return (
            self.path is None or path == self.path or path.startswith(self.path.rstrip("/") + "/")
        )


class FaultInjector:
    """Decides per request whether it is throttled and which fault it gets; counts both.

    Thread-safe: the middleware asks from the event loop, tests and admin endpoints change the
    settings from elsewhere.
    """

    def __init__(self, settings: FaultSettings, clock: Clock | None = None) -> None:
        self.settings = settings
        self.clock = clock or SYSTEM_CLOCK
        self.counts: Counter[str] = Counter()
        """Faults injected, by kind."""
        self.throttled = 0
        """Requests answered 429 by the rate limit."""
        self._lock = threading.Lock()
        self._rng = random.Random(settings.seed)
        self._buckets: dict[str, tuple[float, float]] = {}
        self._scheduled: deque[ScheduledFault] = deque()

    def throttle(self, key: str) -> float | None:
        """Take one request from ``key``'s bucket; the seconds to wait when it is empty."""
        rate = self.settings.rate_limit
        if rate <= 0:
            return None
        burst = max(1.0, rate)
        now = self.clock.monotonic()
        with self._lock:
            tokens, last = self._buckets.get(key, (burst, now))
            tokens = min(burst, tokens + (now - last) * rate)
            if tokens >= 1:
                self._buckets[key] = (tokens - 1, now)
                return None
            self._buckets[key] = (tokens, now)
            self.throttled += 1
            return (1 - tokens) / rate

    def pick(self, method: str, path: str) -> str | None:
        """The fault for this request: a matching scheduled one, else with probability
        ``fail_rate`` one drawn from ``fault_mix``, else None."""
        with self._lock:
            for index, scheduled in enumerate(self._scheduled):
                if scheduled.matches(method, path):
                    del self._scheduled[index]
                    self.counts[scheduled.kind] += 1
                    return scheduled.kind
            rate = self.settings.fail_rate
            if rate <= 0 or self._rng.random() >= rate:
                return None
            kinds, weights = zip(*self.settings.fault_mix, strict=True)
            kind = self._rng.choices(kinds, weights=weights)[0]
            self.counts[kind] += 1
            return kind

    def schedule(
        self, kind: str, *, method: str | None = None, path: str | None = None, times: int = 1
    ) -> None:
        """Give the next ``times`` requests matching ``method``/``path`` this fault, whatever
        ``fail_rate`` says (e.g. ``drop_after`` on the next upload)."""
        check_mix([(kind, 1.0)])
        with self._lock:
            self._scheduled.extend(ScheduledFault(kind, method, path) for _ in range(times))

    def configure(self, **changes: Any) -> None:
        """Change settings at run time (``FaultSettings`` field names, and the
        ``WrongnessSettings`` ones when the settings are an emulator's ``CommonOptions``); a new
        ``seed`` restarts the draw. All or nothing: ValueError and no change for an impossible
        value."""
        known = {"fail_rate", "fault_mix", "seed", "rate_limit", "slow_seconds"}
        wrongness = isinstance(self.settings, WrongnessSettings)
        if wrongness:
            known |= set(WRONGNESS_SETTINGS)
        unknown = sorted(set(changes) - known)
        if unknown:
            raise ValueError(f"unknown fault settings {unknown}")
        if "fault_mix" in changes and isinstance(changes["fault_mix"], Mapping):
            changes["fault_mix"] = tuple(changes["fault_mix"].items())
        if "fault_mix" in changes and isinstance(changes["fault_mix"], str):
            changes["fault_mix"] = parse_mix(changes["fault_mix"])
        trial = FaultSettings(
            **{
                name: changes.get(name, getattr(self.settings, name))
                for name in ("fail_rate", "fault_mix", "seed", "rate_limit", "slow_seconds")
            }
        )
        wrong_trial = None
        if wrongness:
            wrong_trial = WrongnessSettings(
                **{n: changes.get(n, getattr(self.settings, n)) for n in WRONGNESS_SETTINGS}
            )
            wrong_trial.check_wrongness()
        with self._lock:
            for name in changes:
                source = wrong_trial if name in WRONGNESS_SETTINGS else trial
                setattr(self.settings, name, getattr(source, name))
            if "seed" in changes:
                self._rng = random.Random(trial.seed)
            if "rate_limit" in changes:
                self._buckets.clear()

    def snapshot(self) -> dict[str, Any]:
        """Settings, counts and scheduled faults (``GET /_emulator/faults``)."""
        with self._lock:
            return {
                "fail_rate": self.settings.fail_rate,
                "fault_mix": {kind: weight for kind, weight in self.settings.fault_mix},
                "seed": self.settings.seed,
                "rate_limit": self.settings.rate_limit,
                "slow_seconds": self.settings.slow_seconds,
                "injected": dict(self.counts),
                "throttled": self.throttled,
                "scheduled": [
                    {"kind": s.kind, "method": s.method, "path": s.path} for s in self._scheduled
                ],
                "kinds": dict(KINDS),
                **{
                    name: getattr(self.settings, name)
                    for name in WRONGNESS_SETTINGS
                    if isinstance(self.settings, WrongnessSettings)
                },
            }


# --------------------------------------------------------------------------- dropping


class DroppedConnection(Exception):
    """Raised after an answer has started, so the server closes the connection mid-answer."""


class _QuietDrops(logging.Filter):
    """Keeps uvicorn from logging a traceback for every connection dropped on purpose."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and isinstance(record.exc_info[1], DroppedConnection))


def quiet_dropped_connections() -> None:
    """Install the filter once on uvicorn's error logger (only the fallback drop raises)."""
    logger = logging.getLogger("uvicorn.error")
    if not any(isinstance(f, _QuietDrops) for f in logger.filters):
        logger.addFilter(_QuietDrops())


_CONNECTION = "docrelay.emulator.connection"


def expose_connection(scope: Scope, send: Send) -> None:
    """Note the server's connection in the scope, so a drop can close it without sending a
    byte. Works for uvicorn, whose ``send`` is a method of an object holding the transport;
    it must be called before anything wraps ``send`` (``EmulatorApp`` does)."""
    transport = getattr(getattr(send, "__self__", None), "transport", None)
    if isinstance(transport, asyncio.BaseTransport):
        scope[_CONNECTION] = transport


async def _until_disconnected(receive: Receive) -> None:
    """Read until the server reports the disconnect, so it does not try to answer itself."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(10):
            while (await receive())["type"] != "http.disconnect":
                pass


async def drop_connection(
    scope: Scope, receive: Receive, send: Send, *, start: Message | None = None, body: bytes = b""
) -> None:
    """Close the client's connection: after ``start`` and ``body`` if given (a cut-off
    answer), else without any answer. The request log is written first (``log_now``)."""
    transport = scope.get(_CONNECTION)
    if start is not None:
        await send(start)
        await send({"type": "http.response.body", "body": body, "more_body": True})
    log_now(scope)
    if isinstance(transport, asyncio.BaseTransport):
        transport.close()
        await _until_disconnected(receive)
        return
    if start is None:
        headers = [(b"content-type", b"application/json"), (b"content-length", b"4096")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b'{"', "more_body": True})
    raise DroppedConnection("connection dropped on purpose (emulated fault)")


# --------------------------------------------------------------------------- middleware


async def send_json(
    send: Send,
    status: int,
    body: Any,
    headers: Mapping[str, str] | None = None,
    *,
    media_type: str = "application/json",
) -> None:
    """A complete JSON answer (``media_type``: a vendor's JSON type, e.g. Gini's vnd one)."""
    raw = json.dumps(body).encode()
    await send_bytes(send, status, raw, media_type, headers)


async def send_bytes(
    send: Send,
    status: int,
    body: bytes,
    content_type: str,
    headers: Mapping[str, str] | None = None,
) -> None:
    fields = [
        (b"content-type", content_type.encode()),
        (b"content-length", str(len(body)).encode()),
    ]
    fields += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": fields})
    await send({"type": "http.response.body", "body": body})


async def _discard(message: Message) -> None:
    """The answer of a request the fault replaces (it was processed all the same)."""


async def _capture(app: ASGIApp, scope: Scope, receive: Receive) -> tuple[Message, bytes]:
    """Run the app to the end; its answer's start message and whole body."""
    start: Message = {"type": "http.response.start", "status": 500, "headers": []}
    chunks: list[bytes] = []

    async def capture(message: Message) -> None:
        if message["type"] == "http.response.start":
            start.update(message)
        elif message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))

    await app(scope, receive, capture)
    return start, b"".join(chunks)


def _with_length(headers: Iterable[tuple[bytes, bytes]], length: int) -> list[tuple[bytes, bytes]]:
    kept = [(k, v) for k, v in headers if k.lower() != b"content-length"]
    return [*kept, (b"content-length", str(length).encode())]


class FaultMiddleware:
    """Throttling and fault injection for API requests under ``api_prefix`` (every path but
    ``/_emulator`` when empty). ``error_body`` shapes the answers it makes up (vendors have
    their own error JSON) and ``error_media_type`` their Content-Type; ``client_key`` says whom
    the rate limit counts."""

    def __init__(
        self,
        app: ASGIApp,
        injector: FaultInjector,
        *,
        api_prefix: str = "",
        error_body: ErrorBody = default_error_body,
        error_media_type: str = "application/json",
        client_key: ClientKey = client_key,
    ) -> None:
        self.app = app
        self.injector = injector
        self.api_prefix = api_prefix
        self.error_body = error_body
        self.error_media_type = error_media_type
        self.client_key = client_key

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not is_api_path(scope.get("path", ""), self.api_prefix):
            await self.app(scope, receive, send)
            return
        wait = self.injector.throttle(self.client_key(scope))
        if wait is not None:
            seconds = max(1, math.ceil(wait))
            note_fault(scope, THROTTLED)
            message = f"Request was throttled. Expected available in {seconds} seconds."
            body = self.error_body(429, message)
            await send_json(
                send, 429, body, {"Retry-After": str(seconds)}, media_type=self.error_media_type
            )
            return
        kind = self.injector.pick(scope["method"], scope["path"])
        if kind is None:
            await self.app(scope, receive, send)
            return
        note_fault(scope, kind, dropped=kind.startswith("drop_"))
        await self._inject(kind, scope, receive, send)

    async def _inject(self, kind: str, scope: Scope, receive: Receive, send: Send) -> None:
        if kind in ("500", "502", "503", "504"):
            headers = {"Retry-After": "1"} if kind == "503" else None
            body = self.error_body(int(kind), FAULT_DETAIL)
            await send_json(send, int(kind), body, headers, media_type=self.error_media_type)
        elif kind == "500_after":
            await self.app(scope, receive, _discard)
            body = self.error_body(500, AFTER_DETAIL)
            await send_json(send, 500, body, media_type=self.error_media_type)
        elif kind == "slow":
            await self.injector.clock.async_sleep(self.injector.settings.slow_seconds)
            await self.app(scope, receive, send)
        elif kind == "drop_before":
            await drop_connection(scope, receive, send)
        elif kind == "drop_after":
            await self.app(scope, receive, _discard)
            await drop_connection(scope, receive, send)
        elif kind == "drop_during":
            start, body = await _capture(self.app, scope, receive)
            if int(start.get("status", 500)) in (204, 304) or scope["method"] == "HEAD":
                await drop_connection(scope, receive, send)  # no body to break off
                return
            promised = max(len(body), 2)  # so even an empty answer is visibly cut short
            start["headers"] = _with_length(start.get("headers", []), promised)
            await drop_connection(scope, receive, send, start=start, body=body[: len(body) // 2])
        elif kind == "malformed":
            await self._malformed(scope, receive, send)
        elif kind == "html":
            await send_bytes(send, 200, HTML_PAGE, "text/html; charset=utf-8")
        else:  # pragma: no cover - KINDS and this method are kept in step
            raise ValueError(f"unknown fault {kind}")

    async def _malformed(self, scope: Scope, receive: Receive, send: Send) -> None:
        """A 2xx answer's body cut in half, sent as 200 (a broken proxy); an empty 2xx body
        becomes the start of a JSON object; other answers pass unchanged."""
        start, body = await _capture(self.app, scope, receive)
        status = int(start.get("status", 500))
        headers = list(start.get("headers", []))
        if not 200 <= status < 300:
            await send(
                {
                    "type": "http.response.start",
                    "status": status,
                    "headers": _with_length(headers, len(body)),
                }
            )
            await send({"type": "http.response.body", "body": body})
            return
        broken = body[: len(body) // 2] if len(body) > 4 else b'{"results": [{'
        if not body:
            headers = [(k, v) for k, v in headers if k.lower() != b"content-type"]
            headers.append((b"content-type", b"application/json"))
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": _with_length(headers, len(broken)),
            }
        )
        await send({"type": "http.response.body", "body": broken})
