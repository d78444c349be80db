"""An emulator's ASGI app, assembled from the kit.

``emulator_app(routes, ...)`` puts the vendor's routes behind the request log and the fault
middleware (in that order, so the log sees what the client saw), adds the kit's admin
endpoints, and runs the vendor's start/stop hooks in the lifespan. The app exposes the kit's
parts to tests as ``app.state.emulator`` (the vendor's state), ``app.state.requests``
(``RequestLog``), ``app.state.faults`` (``FaultInjector``), ``app.state.callbacks``
(``CallbackDispatcher`` or None) and ``app.state.clock``.

Admin endpoints (no auth, never logged, throttled or faulted), for other processes:

* ``GET /_emulator/requests?since=N&method=POST&path=/api/v1/uploads`` →
  ``{"next": mark, "total": n, "results": [record, ...]}`` (``requestlog.RequestRecord``);
  ``DELETE /_emulator/requests`` forgets the kept records.
* ``GET /_emulator/faults`` → settings, counts, scheduled faults; ``POST /_emulator/faults``
  with any of ``fail_rate``, ``fault_mix`` (``{"503": 1}``, ``[["503", 1]]`` or
  ``"503=1,drop_after"``), ``seed``, ``rate_limit``, ``slow_seconds`` changes them, and
  ``"next": ["drop_after", {"kind": "503", "method": "POST", "path": "/api/v1/uploads"}]``
  schedules faults for the next matching requests. The engine's wrongness settings
  (``wrongness.WrongnessSettings``: ``wrong_rate``, ``miss_rate``, ``field_wrong_rates``
  ``{"total_amount": 0.3}``, ``field_miss_rates``, ``wrong_seed``, ``right_confidence`` and
  ``wrong_confidence`` ``[low, high]``) are shown and changed here too. 400 ``{"detail": ...}``
  and no change for an impossible value.
* ``GET /_emulator/callbacks`` → ``{"pending": n, "attempts": [...]}`` when the emulator sends
  callbacks.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from connectors.emulation.callbacks import CallbackDispatcher
from connectors.emulation.faults import (
    ClientKey,
    ErrorBody,
    FaultInjector,
    FaultMiddleware,
    Receive,
    Scope,
    Send,
    check_mix,
    client_key,
    default_error_body,
    expose_connection,
    quiet_dropped_connections,
)
from connectors.emulation.requestlog import ADMIN_PREFIX, RequestLog, RequestLogMiddleware


class EmulatorApp(Starlette):
    """Starlette that hands the server's connection to the fault middleware (see
    ``faults.expose_connection``), so a drop can close it without an answer."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:  # type: ignore[override]
        if scope["type"] == "http":
            expose_connection(scope, send)
        await super().__call__(scope, receive, send)


def emulator_app(
    routes: Sequence[BaseRoute],
    *,
    state: Any,
    requests: RequestLog,
    faults: FaultInjector,
    callbacks: CallbackDispatcher | None = None,
    api_prefix: str = "",
    error_body: ErrorBody = default_error_body,
    error_media_type: str = "application/json",
    client_key: ClientKey = client_key,
    exception_handlers: Mapping[Any, Callable[..., Any]] | None = None,
    on_start: Callable[[], None] | None = None,
    on_stop: Callable[[], None] | None = None,
) -> Starlette:
    """The emulator app: ``routes`` (the vendor API and its own admin routes) plus the kit's.

    ``on_start``/``on_stop`` run in the lifespan (start the vendor's background threads and
    the callback dispatcher there); ``on_stop`` runs in a worker thread, so it may join.
    """
    quiet_dropped_connections()

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if on_start is not None:
            on_start()
        try:
            yield
        finally:
            if on_stop is not None:
                await run_in_threadpool(on_stop)

    app = EmulatorApp(
        routes=[*routes, *admin_routes(requests, faults, callbacks)],
        middleware=[
            Middleware(RequestLogMiddleware, log=requests, api_prefix=api_prefix),
            Middleware(
                FaultMiddleware,
                injector=faults,
                api_prefix=api_prefix,
                error_body=error_body,
                error_media_type=error_media_type,
                client_key=client_key,
            ),
        ],
        exception_handlers=dict(exception_handlers or {}),
        lifespan=lifespan,
    )
    app.state.emulator = state
    app.state.requests = requests
    app.state.faults = faults
    app.state.callbacks = callbacks
    app.state.clock = faults.clock
    return app


def admin_routes(
    requests: RequestLog, faults: FaultInjector, callbacks: CallbackDispatcher | None = None
) -> list[Route]:
    """The kit's ``/_emulator`` endpoints (see the module docstring)."""

    async def list_requests(request: Request) -> Response:
        params = request.query_params
        if request.method == "DELETE":
            requests.clear()
            return Response(status_code=204)
        try:
            since = int(params.get("since") or 0)
        except ValueError:
            return JSONResponse({"detail": "since must be an integer"}, status_code=400)
        found = requests.entries(since=since, method=params.get("method"), path=params.get("path"))
        return JSONResponse(
            {
                "next": requests.mark(),
                "total": requests.total,
                "results": [r.as_json() for r in found],
            }
        )

    async def fault_settings(request: Request) -> Response:
        if request.method == "POST":
            try:
                _configure(faults, await admin_body(request))
            except (ValueError, TypeError) as exc:
                return JSONResponse({"detail": str(exc)}, status_code=400)
        return JSONResponse(faults.snapshot())

    routes = [
        Route(f"{ADMIN_PREFIX}/requests", list_requests, methods=["GET", "DELETE"]),
        Route(f"{ADMIN_PREFIX}/faults", fault_settings, methods=["GET", "POST"]),
    ]
    if callbacks is not None:
        dispatcher = callbacks

        async def callback_attempts(request: Request) -> Response:
            return JSONResponse({"pending": dispatcher.pending, "attempts": dispatcher.snapshot()})

        routes.append(Route(f"{ADMIN_PREFIX}/callbacks", callback_attempts, methods=["GET"]))
    return routes


async def admin_body(request: Request) -> dict[str, Any]:
    """An admin request's body: a JSON object, ``{}`` when empty or not a POST; ValueError
    (with a message for a 400) for anything else. Admin routes take JSON whatever the vendor's
    own API takes, so scripts can drive every emulator the same way."""
    if request.method != "POST":
        return {}
    raw = await request.body()
    try:
        body = json.loads(raw) if raw.strip() else {}
    except ValueError:
        raise ValueError("send a JSON object") from None
    if not isinstance(body, dict):
        raise ValueError("send a JSON object")
    return body


def _configure(faults: FaultInjector, body: dict[str, Any]) -> None:
    """Apply a ``POST /_emulator/faults`` body: settings first (all or nothing), then ``next``."""
    scheduled = body.pop("next", [])
    if not isinstance(scheduled, list):
        raise ValueError("next must be a list of fault kinds or {kind, method, path} objects")
    items = [s if isinstance(s, dict) else {"kind": s} for s in scheduled]
    for item in items:
        if set(item) - {"kind", "method", "path", "times"} or not isinstance(item.get("kind"), str):
            raise ValueError(f"next: {item!r} is not a fault kind or {{kind, method, path}}")
        check_mix([(item["kind"], 1.0)])
    faults.configure(**body)
    for item in items:
        faults.schedule(
            item["kind"],
            method=item.get("method"),
            path=item.get("path"),
            times=int(item.get("times", 1)),
        )
