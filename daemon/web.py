"""The daemon's HTTP side: health, readiness, metrics, status, vendor webhooks and the API.

A webhook is only a hint (DESIGN invariant 3): after the vendor's signature checks out, the
matching submission is made due now and its worker fetches the authoritative state.

The API (``/api/v1/…``, bearer tokens from ``[web.api]``) takes documents in (``POST
/api/v1/documents``, see ``daemon.webintake``), tells their state, and lets an ERP or a person
correct a document's fields through the same validated path as ``docrelay correct``.

Whoever reaches a port may be an attacker: bodies are bounded in size and time (413, 408), a
client that goes away mid-request is one debug line, a connector's ``parse_webhook`` can only
ever cause a 4xx (a vendor retries a 5xx), and uvicorn caps connections (503 beyond
``limit_concurrency``). With ``webhook_listen`` the webhooks get a listener of their own.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import threading
from collections.abc import Awaitable, Callable, Sequence
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Literal

from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import SecretStr
from sqlalchemy.exc import OperationalError
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from connectors.base import WebhookRequest
from connectors.errors import StoreUnavailable, WebhookRejected
from daemon import openapi, status, statuspage, webintake
from daemon.metrics import webhook_result
from daemon.pipeline.feedback import CorrectionError, InvalidCorrection, UnknownDocument, correct
from daemon.webintake import BadUpload, BodyTooLarge

if TYPE_CHECKING:
    from daemon.runtime import Daemon

log = logging.getLogger(__name__)


class BodyTimeout(Exception):
    """The client did not send its body within the time allowed (408)."""


def _declared_too_large(request: Request, limit: int) -> bool:
    declared = request.headers.get("content-length", "")
    return declared.isascii() and declared.isdigit() and int(declared) > limit


async def read_body(request: Request, limit: int, timeout: float | None = None) -> bytes:
    """The request body, refused (``BodyTooLarge``) as soon as it passes ``limit`` bytes: a
    declared length over the limit is refused before a byte is read. A body that has not
    arrived in full after ``timeout`` seconds raises ``BodyTimeout``: a slow client must not
    hold a connection and a request slot for ever."""
    if _declared_too_large(request, limit):
        raise BodyTooLarge
    body = bytearray()
    try:
        async with asyncio.timeout(timeout):
            async for chunk in request.stream():
                body += chunk
                if len(body) > limit:
                    raise BodyTooLarge
    except TimeoutError:
        raise BodyTimeout from None
    return bytes(body)


def _error(message: str, status_code: int, **headers: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status_code, headers=headers or None)


def _too_slow() -> JSONResponse:
    """408, and the connection closed: the rest of the body is not waited for."""
    return _error("the request body did not arrive in time", 408, Connection="close")


def _unauthorized() -> JSONResponse:
    return _error(
        "a valid bearer token is required", 401, **{"WWW-Authenticate": 'Bearer realm="docrelay"'}
    )


Endpoint = Callable[[Request], Awaitable[Response]]


def guarded(tokens: Sequence[SecretStr], endpoint: Endpoint) -> Endpoint:
    """``endpoint`` behind ``Authorization: Bearer`` with one of ``tokens``; open when there are
    none (``web.status_tokens`` for ``/status`` and ``/metrics``)."""
    if not tokens:
        return endpoint

    async def checked(request: Request) -> Response:
        if bearer_token(request.headers.get("authorization"), tokens) is None:
            return _unauthorized()
        return await endpoint(request)

    checked.__name__ = getattr(endpoint, "__name__", "endpoint")
    return checked


class QuietDisconnects:
    """A client that goes away before its request is read (``ClientDisconnect``) is nothing to
    report: one debug line, not an ERROR with a traceback that anyone reaching the port could
    repeat to flood the log. Nothing is answered: there is no one to answer."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await self.app(scope, receive, send)
        except ClientDisconnect:
            client = scope.get("client") or ("?", 0)
            log.debug(
                "%s %s: client %s went away mid-request", scope.get("method"),
                scope.get("path"), client[0],
            )  # fmt: skip


def bearer_token(header: str | None, tokens: Sequence[SecretStr]) -> SecretStr | None:
    """The one of ``tokens`` that ``Authorization: Bearer <token>`` names, or None. Every token
    is compared, in constant time (``hmac.compare_digest``), so the answer's timing tells
    nothing of them."""
    scheme, _, given = (header or "").partition(" ")
    if scheme.lower() != "bearer" or not given.strip():
        return None
    offered = given.strip().encode()
    found = None
    for token in tokens:
        if hmac.compare_digest(offered, token.get_secret_value().encode()):
            found = token
    return found


def token_actor(token: SecretStr) -> str:
    """Who made an API call, in the history: ``api:`` and the first 8 hex digits of the token's
    SHA-256 — which of several tokens (one per ERP or person) it was, without the secret."""
    return "api:" + hashlib.sha256(token.get_secret_value().encode()).hexdigest()[:8]


def _correction_request(body: bytes) -> tuple[dict[str, str], list[str], str | None]:
    """``{"values": {field: value}, "confirm": [field], "note": str}`` as ``correct`` takes
    it (a null value: the field is absent), or ValueError saying what is wrong with it."""
    try:
        data = json.loads(body, parse_float=Decimal)  # 12.30 stays 12.30, never a float
    except (ValueError, UnicodeDecodeError, RecursionError):  # RecursionError: nested deep
        raise ValueError("the body is not JSON") from None
    if not isinstance(data, dict):
        raise ValueError("the body must be a JSON object")
    if unknown := sorted(set(data) - {"values", "confirm", "note"}):
        raise ValueError(f"unknown key(s): {', '.join(unknown)} (values, confirm, note)")
    values = data.get("values", {})
    confirm = data.get("confirm", [])
    note = data.get("note")
    if not isinstance(values, dict) or not all(
        isinstance(v, str | int | Decimal | None) and not isinstance(v, bool)
        for v in values.values()
    ):
        raise ValueError('"values" must map field names to strings or numbers (null: absent)')
    if not isinstance(confirm, list) or not all(isinstance(f, str) for f in confirm):
        raise ValueError('"confirm" must be a list of field names')
    if note is not None and not isinstance(note, str):
        raise ValueError('"note" must be a string')
    texts = {k: "" if v is None else str(v) for k, v in values.items()}
    return texts, confirm, note[:500] if note else None


Serves = Literal["all", "admin", "webhooks"]


def create_app(daemon: Daemon, serves: Serves = "all") -> Starlette:
    """The ASGI app: every route (``all``), or one listener's share when ``webhook_listen`` is
    set: ``webhooks`` only the vendor callbacks, ``admin`` everything else."""
    web = daemon.config.core.web
    max_body = web.max_body_bytes
    api = web.api

    async def healthz(request: Request) -> Response:
        healthy = await asyncio.to_thread(daemon.healthy)
        sources = {s.context.name: s.health() for s in daemon.sources}
        body = {
            "status": "ok" if healthy else "unhealthy",
            "ready": daemon.ready.is_set(),
            "sources": sources,
            "paused_vendors": daemon.paused,
            "storage": daemon.storage_health(),
            "instance": daemon.instance,
        }
        return JSONResponse(body, status_code=200 if healthy else 503)

    async def readyz(request: Request) -> Response:
        ok = daemon.ready.is_set()
        return JSONResponse({"ready": ok}, status_code=200 if ok else 503)

    async def status_json(request: Request) -> Response:
        return JSONResponse(await asyncio.to_thread(status.summary, daemon.engine))

    async def metrics(request: Request) -> Response:
        """The Prometheus text format (README "Metrics"), read from the store per scrape."""
        body = await asyncio.to_thread(daemon.metrics.expose)
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    async def webhook(request: Request) -> Response:
        profile = request.path_params["profile"]
        vendor = daemon.vendors.get(profile)
        if vendor is None:
            daemon.metrics.webhook("", "unknown_profile")  # a caller's name is no label
            return JSONResponse({"error": "unknown profile"}, status_code=404)
        try:
            body = await read_body(request, max_body, web.body_timeout)
        except BodyTooLarge:
            daemon.metrics.webhook(profile, "too_big")
            return JSONResponse({"error": "body too large"}, status_code=413)
        except BodyTimeout:
            return _too_slow()
        call = WebhookRequest(
            method=request.method,
            headers=request.headers,
            body=bytes(body),
            tail=request.path_params.get("tail", ""),
            query=request.query_params,
            client=request.client.host if request.client else None,
        )
        try:
            parsed = vendor.parse_webhook(call)
        except WebhookRejected as exc:
            daemon.metrics.webhook(profile, webhook_result(exc))
            log.warning("webhook for %s rejected: %s", profile, exc)
            return JSONResponse({"error": str(exc)}, status_code=exc.status_code)
        except Exception as exc:  # a connector's bug on odd input: 400, never a retried 5xx
            daemon.metrics.webhook(profile, "rejected")
            _parse_failed(profile, exc)
            return JSONResponse({"error": "malformed webhook"}, status_code=400)
        try:
            hints = daemon.replay_guard.admit(profile, parsed)
        except WebhookRejected as exc:
            daemon.metrics.webhook(profile, webhook_result(exc))
            log.warning("webhook for %s rejected: %s", profile, exc)
            return JSONResponse({"error": str(exc)}, status_code=exc.status_code)
        daemon.metrics.webhook(profile, "replayed" if parsed and not hints else "ok")
        if hints:
            daemon.hint(profile, hints)
        return JSONResponse({"accepted": len(hints)})

    def api_caller(request: Request) -> SecretStr | Response:
        """The caller's token, or the answer for one without: 404 while the API is off (as
        if there were no such address), 401 without a valid token."""
        if not api.tokens:
            return _error("not found", 404)
        token = bearer_token(request.headers.get("authorization"), api.tokens)
        return _unauthorized() if token is None else token

    async def corrections(request: Request) -> Response:
        """Correct or confirm fields of a document; the answers are in README "Corrections"."""
        token = api_caller(request)
        if isinstance(token, Response):
            return token
        document_id = request.path_params["document_id"]
        try:
            body = await read_body(request, api.max_body_bytes, web.body_timeout)
        except BodyTooLarge:
            return JSONResponse({"error": "body too large"}, status_code=413)
        except BodyTimeout:
            return _too_slow()
        try:
            values, confirm, note = _correction_request(body)
        except ValueError as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        if not values and not confirm:
            return JSONResponse(
                {"error": 'say what is right: "values" or "confirm"'}, status_code=422
            )
        actor = token_actor(token)
        return await run_in_threadpool(_correct, document_id, values, confirm, note, actor)

    def _correct(
        document_id: int, values: dict[str, str], confirm: list[str], note: str | None, actor: str
    ) -> Response:
        answer: dict[str, Any] = {"document_id": document_id}
        try:
            changed = correct(
                daemon.engine, document_id, values, confirm=confirm, vendors=daemon.vendors,
                origin=actor, note=note,
            )  # fmt: skip
        except UnknownDocument as exc:
            return JSONResponse({**answer, "error": str(exc)}, status_code=404)
        except InvalidCorrection as exc:
            answer |= {"error": f"{exc}; nothing changed", "field": exc.field}
            return JSONResponse(answer, status_code=422)
        except CorrectionError as exc:
            return JSONResponse({**answer, "error": str(exc)}, status_code=409)
        except OperationalError as exc:  # locked or unreachable: nothing was committed
            log.warning("API correction of document %d: store unavailable: %s", document_id,
                        exc.orig)  # fmt: skip
            return JSONResponse(
                {**answer, "error": "the store is busy; try again"},
                status_code=503,
                headers={"Retry-After": "5"},
            )
        log.info("document %d corrected over the API: %s", document_id, "; ".join(changed))
        daemon.wake_all()  # the feedback and the new export versions go out now
        return JSONResponse({**answer, "changed": changed})

    async def intake(request: Request) -> Response:
        """Take a document (README "HTTP intake"); answers only after the commit."""
        token = api_caller(request)
        if isinstance(token, Response):
            return token
        sink = daemon.intake
        if sink is None:
            return _error("not ready", 503, **{"Retry-After": "5"})
        if _declared_too_large(request, api.max_upload_bytes):
            return _error(f"upload too large (limit {api.max_upload_bytes} bytes)", 413)
        try:
            async with asyncio.timeout(api.upload_timeout):
                upload = await webintake.receive_upload(
                    request.stream(),
                    request.headers.get("content-type"),
                    daemon.blobs.tmp,
                    max_bytes=api.max_upload_bytes,
                    max_field_bytes=api.max_body_bytes,
                )
        except TimeoutError:
            return _too_slow()
        except BodyTooLarge:
            return _error(f"upload too large (limit {api.max_upload_bytes} bytes)", 413)
        except BadUpload as exc:
            return _error(str(exc), 400)
        except OSError as exc:  # the spool's file system (the blob store's) is full or failing
            log.warning("API upload not spooled to %s: %s", daemon.blobs.tmp, exc.strerror)
            return _error("no room to take the upload; try again", 503, **{"Retry-After": "30"})
        try:
            route = upload.fields.get("route") or None
            if route is not None and sink.router.named(route) is None:
                return _error(f"no route named {route!r}", 400)
            try:
                metadata = webintake.metadata_field(upload.fields.get("metadata"))
            except BadUpload as exc:
                return _error(str(exc), 400)
            return await run_in_threadpool(_take, upload, route, metadata, token_actor(token))
        finally:
            upload.discard()

    def _take(
        upload: webintake.Upload, route: str | None, metadata: dict[str, Any], actor: str
    ) -> Response:
        assert daemon.intake is not None
        try:
            outcome = webintake.take(
                daemon.intake, upload, route=route, metadata=metadata, actor=actor
            )
        except StoreUnavailable as exc:  # nothing committed: the caller sends it again
            log.warning("API upload of %s: %s", upload.filename, exc)
            return _error("the store is busy; try again", 503, **{"Retry-After": "5"})
        status_code, body = webintake.answer(daemon.reader, outcome)
        log.info(
            "API upload %s by %s: document %s, %s", upload.filename, actor,
            body["document_id"], outcome.status,
        )  # fmt: skip
        return JSONResponse(body, status_code=status_code)

    async def document(request: Request) -> Response:
        """A document's state, route and fields (the ``url`` an upload answers with)."""
        token = api_caller(request)
        if isinstance(token, Response):
            return token
        document_id = request.path_params["document_id"]
        found = await asyncio.to_thread(webintake.document, daemon.reader, document_id)
        if found is None:
            return _error("no such document", 404)
        return JSONResponse(found)

    async def openapi_json(request: Request) -> Response:
        return JSONResponse(spec)

    spec = openapi.document()
    status_tokens = web.status_tokens
    admin: list[BaseRoute] = [
        Route("/healthz", healthz),
        Route("/readyz", readyz),
        Route("/status", guarded(status_tokens, status_json)),
        Route("/metrics", guarded(status_tokens, metrics)),
        Route(openapi.PATH, openapi_json),
        Route("/api/v1/documents", intake, methods=["POST"]),
        Route("/api/v1/documents/{document_id:int}", document),
        Route("/api/v1/documents/{document_id:int}/corrections", corrections, methods=["POST"]),
        *statuspage.routes(daemon),
    ]
    webhooks: list[BaseRoute] = [
        Route("/webhooks/{profile}", webhook, methods=["POST"]),
        Route("/webhooks/{profile}/{tail:path}", webhook, methods=["POST"]),
    ]
    routes = {"all": admin + webhooks, "admin": admin, "webhooks": webhooks}[serves]
    return Starlette(routes=routes, middleware=[Middleware(QuietDisconnects)])


_PARSE_FAILURES: set[tuple[str, str]] = set()


def _parse_failed(profile: str, exc: Exception) -> None:
    """A connector's ``parse_webhook`` raised something other than ``WebhookRejected``: a bug
    to fix, logged with its traceback once per profile and exception type (a caller repeating
    the body must not flood the log), then at debug level."""
    key = (profile, type(exc).__name__)
    if key in _PARSE_FAILURES:
        log.debug("webhook for %s: malformed body (%s: %s)", profile, key[1], exc)
        return
    _PARSE_FAILURES.add(key)
    log.error(
        "webhook for %s: parse_webhook raised %s on a malformed body; answered 400 "
        "(reported once per profile and error)", profile, key[1], exc_info=exc,
    )  # fmt: skip


class WebServer:
    """uvicorn in a background thread, so the main thread keeps signal handling: one server on
    ``listen``, and a second one for the webhooks alone when ``webhook_listen`` is set (both in
    one event loop)."""

    def __init__(self, daemon: Daemon) -> None:
        web = daemon.config.core.web
        if web.webhook_listen is None:
            self.servers = [self._server(create_app(daemon), web.listen, daemon)]
        else:
            self.servers = [
                self._server(create_app(daemon, "admin"), web.listen, daemon),
                self._server(create_app(daemon, "webhooks"), web.webhook_listen, daemon),
            ]
        self.server = self.servers[0].server
        self.config = self.servers[0].config
        self.loop: asyncio.AbstractEventLoop | None = None
        self.thread = threading.Thread(
            target=lambda: asyncio.run(self._serve()), name="web", daemon=True
        )

    @staticmethod
    def _server(app: Starlette, listen: str, daemon: Daemon) -> _Listener:
        """One uvicorn server with the limits an exposed port needs: connections, keep-alive,
        header size, and a deadline for a request's head, which uvicorn lacks
        (``_h11_with_header_timeout``)."""
        import uvicorn

        web = daemon.config.core.web
        host, _, port = listen.rpartition(":")
        config = uvicorn.Config(
            app,
            host=host.strip("[]"),
            port=int(port),
            http=_h11_with_header_timeout(web.header_timeout),  # h11: the header limit is its
            log_level="warning",
            access_log=False,
            lifespan="off",
            limit_concurrency=web.limit_concurrency,
            timeout_keep_alive=web.keep_alive_timeout,  # type: ignore[arg-type]
            h11_max_incomplete_event_size=web.max_header_bytes,
        )
        return _Listener(config, uvicorn.Server(config))

    async def _serve(self) -> None:
        self.loop = asyncio.get_running_loop()
        await asyncio.gather(*(listener.server.serve() for listener in self.servers))

    def responsive(self, timeout: float = 1.0) -> bool:
        """The event loop runs a callback within ``timeout``: a loop blocked by a bug would
        answer neither health checks nor webhooks, and a restart is what helps then."""
        loop = self.loop
        if loop is None or not self.thread.is_alive():
            return False
        future = asyncio.run_coroutine_threadsafe(asyncio.sleep(0), loop)
        try:
            future.result(timeout)
        except TimeoutError:
            future.cancel()
            return False
        return True

    def start(self, timeout: float = 10.0) -> None:
        self.thread.start()
        deadline = threading.Event()
        for _ in range(int(timeout * 100)):
            if all(s.server.started for s in self.servers) or not self.thread.is_alive():
                break
            deadline.wait(0.01)
        for listener in self.servers:
            if not listener.server.started:
                config = listener.config
                self.stop()
                raise RuntimeError(f"web server did not start on {config.host}:{config.port}")
        for listener, what in zip(self.servers, ("web app", "webhooks"), strict=False):
            for server in listener.server.servers:
                for sock in server.sockets:
                    log.info("%s listening on %s", what, sock.getsockname()[:2])

    @property
    def port(self) -> int:
        """The port of ``listen`` (the admin and API side)."""
        return self._port(self.servers[0])

    @property
    def webhook_port(self) -> int:
        """The port the webhooks are served on (``webhook_listen``, else ``listen``)."""
        return self._port(self.servers[-1])

    @staticmethod
    def _port(listener: _Listener) -> int:
        return int(listener.server.servers[0].sockets[0].getsockname()[1])

    def stop(self) -> None:
        for listener in self.servers:
            listener.server.should_exit = True
        self.thread.join(10)


def _h11_with_header_timeout(seconds: float) -> type[asyncio.Protocol]:
    """uvicorn's h11 protocol with a deadline for a request's line and headers: a connection
    that has not sent a complete head ``seconds`` after it opened (or after its last response)
    is closed. uvicorn has only the keep-alive timeout, which the first byte of a request
    cancels, so a client sending its headers byte by byte would hold its connection, and one of
    the ``limit_concurrency`` slots, for ever."""
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class HeaderDeadline(H11Protocol):
        _head_timer: asyncio.TimerHandle | None = None
        _head_cycle: Any = None

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            super().connection_made(transport)  # type: ignore[arg-type]
            self._await_head()

        def _await_head(self) -> None:
            self._stop_head_timer()
            self._head_cycle = self.cycle
            self._head_timer = self.loop.call_later(seconds, self._head_late)

        def _stop_head_timer(self) -> None:
            if self._head_timer is not None:
                self._head_timer.cancel()
                self._head_timer = None

        def handle_events(self) -> None:
            super().handle_events()
            if self.cycle is not self._head_cycle:  # a complete head arrived
                self._stop_head_timer()

        def on_response_complete(self) -> None:
            if not self.transport.is_closing():
                self._await_head()  # before: a pipelined request's head may be parsed below
            super().on_response_complete()

        def _head_late(self) -> None:
            self._head_timer = None
            if self.cycle is self._head_cycle and not self.transport.is_closing():
                log.debug("closed a connection from %s: no request head within %gs",
                          (self.client or ("?",))[0], seconds)  # fmt: skip
                self.transport.close()

        def connection_lost(self, exc: Exception | None) -> None:
            self._stop_head_timer()
            super().connection_lost(exc)

    return HeaderDeadline


class _Listener:
    def __init__(self, config: Any, server: Any) -> None:
        self.config = config
        self.server = server
