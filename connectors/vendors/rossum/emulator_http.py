"""HTTP plumbing for the emulator: request bodies (JSON, forms, multipart), DRF-style
pagination, authentication, and the middleware that throttles requests and injects faults.

The middleware never touches ``/_emulator`` (the admin endpoints) and injects each fault either
before the request reaches the API or after the API has fully processed it, so a fault never
leaves half-done state (see ``FAULTS`` in ``emulator``).
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import math
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from email import policy
from email.parser import BytesHeaderParser
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

from starlette.requests import Request

from connectors.vendors.rossum.emulator_model import ApiError

if TYPE_CHECKING:
    from connectors.vendors.rossum.emulator_state import EmulatorState

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

MAX_UPLOAD_BYTES = 40 * 1024 * 1024
"""Rossum's limit for one upload request (all files together)."""

SLOW_FAULT_SECONDS = 2.0


class DroppedConnection(Exception):
    """Raised after the response has started, so the server closes the connection mid-answer."""


class _QuietDrops(logging.Filter):
    """Keeps uvicorn from logging a traceback for every connection the emulator drops on
    purpose (uvicorn logs any exception an app raises after starting a response)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and isinstance(record.exc_info[1], DroppedConnection))


def quiet_dropped_connections() -> None:
    """Install the filter once on uvicorn's error logger."""
    logger = logging.getLogger("uvicorn.error")
    if not any(isinstance(f, _QuietDrops) for f in logger.filters):
        logger.addFilter(_QuietDrops())


# --------------------------------------------------------------------------- bodies


async def read_body(request: Request, limit: int = MAX_UPLOAD_BYTES) -> bytes:
    """The request body, or 413 when it is larger than ``limit``."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise ApiError(413, "Request entity too large (at most 40 MB per upload).")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ApiError(413, "Request entity too large (at most 40 MB per upload).")
        chunks.append(chunk)
    return b"".join(chunks)


def media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";", 1)[0].strip().lower()


async def json_body(request: Request, *, forms: bool = False) -> Any:
    """A JSON request body ({} when empty). Other content types get 400: the reference warns
    that Rossum may answer 500 to them; 400 is what it says it will answer in future.
    ``forms`` also accepts urlencoded and multipart forms (DRF does; the SDK logs in so)."""
    body = await read_body(request, limit=4 * 1024 * 1024)
    if not body.strip():
        return {}
    kind = media_type(request)
    if kind == "application/json" or kind.endswith("+json"):
        try:
            return json.loads(body)
        except ValueError as exc:
            raise ApiError(400, f"JSON parse error - {exc}") from None
    if forms and kind == "application/x-www-form-urlencoded":
        return dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
    if forms and kind == "multipart/form-data":
        return {p.name: p.data.decode("utf-8", "replace") for p in parse_multipart(request, body)}
    shown = kind or "none"
    raise ApiError(400, f'Unsupported Content-Type "{shown}": send JSON (application/json).')


@dataclass
class FormPart:
    name: str
    filename: str | None
    content_type: str | None
    data: bytes


def parse_multipart(request: Request, body: bytes) -> list[FormPart]:
    """The parts of a ``multipart/form-data`` body (python-multipart is not a dependency)."""
    header = request.headers.get("content-type", "")
    boundary = next(
        (
            p.split("=", 1)[1].strip().strip('"')
            for p in header.split(";")[1:]
            if p.strip().lower().startswith("boundary=")
        ),
        None,
    )
    if not boundary:
        raise ApiError(400, "Multipart body without a boundary.")
    delimiter = b"--" + boundary.encode("latin-1")
    parts = []
    for chunk in body.split(delimiter)[1:]:
        if chunk.startswith(b"--"):
            break
        chunk = chunk.removeprefix(b"\r\n")
        head, separator, data = chunk.partition(b"\r\n\r\n")
        if not separator:
            raise ApiError(400, "Malformed multipart body.")
        headers = BytesHeaderParser(policy=policy.HTTP).parsebytes(head + b"\r\n\r\n")
        name = headers.get_param("name", header="content-disposition")
        if not isinstance(name, str):
            continue
        filename = headers.get_filename() or None
        parts.append(
            FormPart(
                name=name,
                filename=filename,
                content_type=headers.get("content-type"),
                data=data.removesuffix(b"\r\n"),
            )
        )
    return parts


def disposition_filename(value: str) -> str | None:
    """The file name in a ``Content-Disposition`` header (``filename*=utf-8''…`` too)."""
    if not value:
        return None
    headers = BytesHeaderParser(policy=policy.HTTP).parsebytes(
        b"Content-Disposition: " + value.encode("utf-8") + b"\r\n\r\n"
    )
    return headers.get_filename() or None


# --------------------------------------------------------------------------- pagination


def page_params(request: Request, *, default: int = 20, maximum: int = 100) -> tuple[int, int]:
    """``page`` and ``page_size`` (an over-large page size is cut to the maximum, as DRF does)."""
    try:
        page = int(request.query_params.get("page") or 1)
    except ValueError:
        raise ApiError(404, "Invalid page.") from None
    try:
        size = int(request.query_params.get("page_size") or default)
    except ValueError:
        size = default
    return page, max(1, min(size, maximum))


def paginate(
    request: Request, items: list[Any], *, default: int = 20, maximum: int = 100
) -> tuple[list[Any], dict[str, Any]]:
    """One page of ``items`` and the ``pagination`` object with absolute next/previous URLs."""
    page, size = page_params(request, default=default, maximum=maximum)
    total = len(items)
    pages = max(1, math.ceil(total / size))
    if page < 1 or page > pages:
        raise ApiError(404, "Invalid page.")
    url = request.url
    pagination = {
        "total": total,
        "total_pages": pages,
        "next": str(url.include_query_params(page=page + 1)) if page < pages else None,
        "previous": str(url.include_query_params(page=page - 1)) if page > 1 else None,
    }
    return items[(page - 1) * size : page * size], pagination


# --------------------------------------------------------------------------- auth


def authenticate(request: Request, state: EmulatorState, *, basic: bool = False) -> int:
    """The user id for the request's credentials, or 401 (DRF wording)."""
    scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
    scheme, credentials = scheme.lower(), credentials.strip()
    challenge = {"WWW-Authenticate": 'Bearer realm="api"'}
    if scheme in ("bearer", "token") and credentials:
        user = state.user_for(credentials)
        if user is None:
            raise ApiError(401, "Invalid token.", challenge)
        return user
    if scheme == "basic" and basic and credentials:
        try:
            username, _, password = base64.b64decode(credentials).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            raise ApiError(401, "Invalid basic header.", challenge) from None
        if not state.check_basic(username, password):
            raise ApiError(401, "Invalid username/password.", challenge)
        return 1
    raise ApiError(401, "Authentication credentials were not provided.", challenge)


def client_key(scope: Scope) -> str:
    """Whom the rate limit counts: the token (or basic user), else the client address."""
    for name, value in scope.get("headers", []):
        if name == b"authorization":
            scheme, _, credentials = value.decode("latin-1").partition(" ")
            if credentials.strip():
                return f"{scheme.lower()}:{credentials.strip()}"
    client = scope.get("client") or ("unknown", 0)
    return f"ip:{client[0]}"


# --------------------------------------------------------------------------- middleware


async def send_json(
    send: Send, status: int, body: Any, headers: dict[str, str] | None = None
) -> None:
    raw = json.dumps(body).encode()
    fields = [(b"content-type", b"application/json"), (b"content-length", str(len(raw)).encode())]
    fields += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": fields})
    await send({"type": "http.response.body", "body": raw})


async def _discard(message: Message) -> None:
    """The answer of a request the fault replaces (it was processed all the same)."""


class EmulatorMiddleware:
    """Throttling, fault injection and the request log for the API (not ``/_emulator``)."""

    def __init__(self, app: ASGIApp, state: EmulatorState, api_prefix: str) -> None:
        self.app = app
        self.state = state
        self.api_prefix = api_prefix

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or not (
            path == self.api_prefix or path.startswith(self.api_prefix + "/")
        ):
            await self.app(scope, receive, send)
            return
        status = {"code": 0}

        async def logged(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            wait = self.state.throttle(client_key(scope))
            if wait is not None:
                seconds = max(1, math.ceil(wait))
                detail = f"Request was throttled. Expected available in {seconds} seconds."
                await send_json(logged, 429, {"detail": detail}, {"Retry-After": str(seconds)})
                return
            fault = self.state.pick_fault()
            if fault is None:
                await self.app(scope, receive, logged)
            else:
                await self._fault(fault, scope, receive, logged, status)
        finally:
            self.state.log_request(scope["method"], path, status["code"])

    async def _fault(
        self, kind: str, scope: Scope, receive: Receive, send: Send, status: dict[str, int]
    ) -> None:
        detail = {"detail": "Please try again later. (emulated fault)"}
        if kind == "slow":
            await asyncio.sleep(SLOW_FAULT_SECONDS)
            await self.app(scope, receive, send)
        elif kind in ("500", "502", "503"):
            headers = {"Retry-After": "1"} if kind == "503" else None
            await send_json(send, int(kind), detail, headers)
        elif kind == "500_after":
            await self.app(scope, receive, _discard)
            await send_json(send, 500, {"detail": "Server Error (500) (emulated fault)"})
        elif kind in ("drop_before", "drop_after"):
            if kind == "drop_after":
                await self.app(scope, receive, _discard)
            await self._drop(send, status)
        elif kind == "malformed":
            await self._malformed(scope, receive, send)
        else:  # pragma: no cover - FAULTS and this method are kept in step
            raise ValueError(f"unknown fault {kind}")

    async def _drop(self, send: Send, status: dict[str, int]) -> None:
        headers = [(b"content-type", b"application/json"), (b"content-length", b"4096")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b'{"', "more_body": True})
        status["code"] = 0
        raise DroppedConnection("connection dropped on purpose (emulated fault)")

    async def _malformed(self, scope: Scope, receive: Receive, send: Send) -> None:
        """A 2xx answer's body cut in half, sent as 200 (a broken proxy); an empty 2xx body
        becomes the start of a JSON object; other answers pass unchanged."""
        start: Message = {}
        chunks: list[bytes] = []

        async def capture(message: Message) -> None:
            if message["type"] == "http.response.start":
                start.update(message)
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))

        await self.app(scope, receive, capture)
        body = b"".join(chunks)
        if not 200 <= start.get("status", 500) < 300:
            headers = [(k, v) for k, v in start.get("headers", []) if k != b"content-length"]
            headers.append((b"content-length", str(len(body)).encode()))
            await send(
                {"type": "http.response.start", "status": start["status"], "headers": headers}
            )
            await send({"type": "http.response.body", "body": body})
            return
        broken = body[: len(body) // 2] if len(body) > 4 else b'{"results": [{'
        headers = [(k, v) for k, v in start.get("headers", []) if k != b"content-length"]
        if not body:
            headers.append((b"content-type", b"application/json"))
        headers.append((b"content-length", str(len(broken)).encode()))
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": broken})
