"""A local Odoo for trying a docrelay configuration offline and for tests: Odoo's external API
over both of its protocols, on one port, on the emulator kit (``connectors.emulation``).

``create_app(EmulatorOptions(...))`` returns a Starlette app that serves:

* **JSON-2** (Odoo 19+): ``POST /json/2/<model>/<method>`` with ``Authorization: bearer <API
  key>``, an optional ``X-Odoo-Database`` and a JSON object of named arguments (``ids``,
  ``context`` and the method's parameters). Success: 200 and the method's return value as JSON.
  Error: a 4xx/5xx status and ``{"name", "message", "arguments", "context", "debug"}``.
* **XML-RPC** (all versions): ``POST /xmlrpc/2/common`` (``version``, ``authenticate``,
  ``login``) and ``POST /xmlrpc/2/object`` (``execute_kw(db, uid, password, model, method,
  args, kwargs)``, ``execute``); errors are ``Fault``s with Odoo's integer codes.
* **Admin** (emulator only, no auth, never logged or faulted): ``GET /_emulator/records``
  (``?model=account.move``, ``&datas=1`` to include attachment contents) lists what the
  database holds, ``GET /_emulator/stats`` counts it (records per model, bills by state);
  ``POST /_emulator/moves/<id>/post`` posts an entry as a person would in Odoo's client (the
  answer: the entry, or Odoo's error body and status); the kit's ``/_emulator/requests`` and
  ``/_emulator/faults``.

The models, methods and errors are ``emulator_state``'s; the choices where Odoo's documents
are silent are in ``NOTES.md``.
"""

from __future__ import annotations

import json
import xmlrpc.client
from dataclasses import dataclass
from typing import Any
from xml.parsers.expat import ExpatError

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from connectors.destinations.odoo.emulator_state import (
    ADMIN_UID,
    AccessDenied,
    BadArguments,
    NotFound,
    OdooError,
    OdooState,
)
from connectors.emulation.app import emulator_app
from connectors.emulation.faults import FaultInjector
from connectors.emulation.options import CommonOptions
from connectors.emulation.requestlog import RequestLog, note

FAULTS: tuple[tuple[str, float], ...] = (
    ("502", 0.15),
    ("503", 0.2),
    ("500", 0.1),
    ("500_after", 0.15),
    ("slow", 0.1),
    ("drop_before", 0.1),
    ("drop_after", 0.1),
    ("malformed", 0.1),
)
"""The default mix of the kit's fault kinds (``--fail-rate`` draws from it)."""

SERVER_VERSION_INFO = [19, 0, 0, "final", 0, ""]


@dataclass
class EmulatorOptions(CommonOptions):
    """How the emulator behaves; the kit's ``CommonOptions`` bring the fault settings (Odoo
    answers at once, so ``delay`` is unused)."""

    fault_mix: tuple[tuple[str, float], ...] = FAULTS
    delay: float = 0.0
    database: str = "odoo"
    """The one database the server holds (``X-Odoo-Database``, XML-RPC's ``db``)."""
    api_key: str = "secret"
    """The admin's API key: JSON-2's bearer token, XML-RPC's password."""
    username: str = "admin"
    """The admin's login (XML-RPC ``authenticate``)."""
    check_vat: bool = True
    """Refuse partners with a VAT id ``base_vat`` would refuse (off: an Odoo without it)."""


def error_body(name: str, message: str, status: int | None = None) -> dict[str, Any]:
    """Odoo's JSON-2 error object (``external_api.rst``, "Response")."""
    arguments: list[Any] = [message] if status is None else [message, status]
    return {"name": name, "message": message, "arguments": arguments, "context": {}, "debug": ""}


def _fault_body(status: int, message: str) -> Any:
    """The body of a status the fault middleware makes up: Odoo's error shape."""
    return error_body("werkzeug.exceptions.HTTPException", message, status)


def _odoo_error(exc: Exception) -> OdooError:
    if isinstance(exc, OdooError):
        return exc
    wrapped = BadArguments(str(exc))
    wrapped.name = f"builtins.{type(exc).__name__}"
    return wrapped


def create_app(options: EmulatorOptions | None = None) -> Starlette:
    """The emulator app; ``app.state.emulator`` is its ``OdooState``."""
    options = options or EmulatorOptions()
    state = OdooState(
        database=options.database,
        api_key=options.api_key,
        username=options.username,
        check_vat=options.check_vat,
    )
    faults = FaultInjector(options)
    requests = RequestLog(faults.clock)

    def json2_error(exc: OdooError) -> JSONResponse:
        return JSONResponse(error_body(exc.name, exc.message), status_code=exc.status)

    async def json2(request: Request) -> Response:
        model = request.path_params["model"]
        method = request.path_params["method"]
        note(request, model=model, method=method)
        scheme, _, key = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or key.strip() != state.api_key:
            body = error_body("werkzeug.exceptions.Unauthorized", "Invalid apikey", 401)
            return JSONResponse(body, status_code=401)
        database = request.headers.get("x-odoo-database")
        if database is not None and database != state.database:
            return json2_error(NotFound(f"database {database!r} not found"))
        try:
            body = json.loads(await request.body() or b"{}")
        except ValueError:
            body = None
        if not isinstance(body, dict):
            error = BadArguments("the body must be a JSON object")
            error.name, error.status = "werkzeug.exceptions.BadRequest", 400
            return json2_error(error)
        ids = body.pop("ids", None)
        context = body.pop("context", None) or {}
        try:
            result = state.call(model, method, (), body, ids=ids or [], context=context)
        except (OdooError, ValueError) as exc:
            return json2_error(_odoo_error(exc))
        return JSONResponse(result)

    async def xmlrpc_common(request: Request) -> Response:
        params, method = await _xmlrpc_request(request)
        note(request, method=method)
        if method == "version":
            return _xmlrpc_answer(version())
        if method in ("authenticate", "login"):
            db, login, password = [*params, None, None, None][:3]
            ok = db == state.database and login == state.username and password == state.api_key
            return _xmlrpc_answer(ADMIN_UID if ok else False)
        return _xmlrpc_fault(1, f'Method not found: "{method}"')

    async def xmlrpc_object(request: Request) -> Response:
        params, method = await _xmlrpc_request(request)
        if method not in ("execute_kw", "execute"):
            return _xmlrpc_fault(1, f'Method not found: "{method}"')
        args = list(params)
        if len(args) < 5:
            return _xmlrpc_fault(1, f"{method}() takes at least 5 arguments")
        db, uid, password, model, name = args[:5]
        note(request, model=model, method=name)
        if db != state.database:
            return _xmlrpc_fault(
                1, f'psycopg2.OperationalError: FATAL: database "{db}" does not exist'
            )
        if uid != ADMIN_UID or password != state.api_key:
            return _xmlrpc_fault(AccessDenied.fault_code, "Access Denied")
        if method == "execute_kw":
            positional = args[5] if len(args) > 5 else []
            named = args[6] if len(args) > 6 else {}
        else:
            positional, named = args[5:], {}
        if not isinstance(positional, list) or not isinstance(named, dict):
            return _xmlrpc_fault(1, "execute_kw: args must be a list and kwargs a struct")
        context = named.pop("context", None) if isinstance(named, dict) else None
        try:
            result = state.call(model, name, positional, named, context=context)
        except (OdooError, ValueError) as exc:
            error = _odoo_error(exc)
            return _xmlrpc_fault(error.fault_code, error.message)
        return _xmlrpc_answer(result)

    async def records(request: Request) -> Response:
        model = request.query_params.get("model") or None
        datas = request.query_params.get("datas") in ("1", "true")
        return JSONResponse({"models": state.snapshot(model, datas=datas)})

    async def stats(request: Request) -> Response:
        return JSONResponse(state.stats())

    async def post_move(request: Request) -> Response:
        try:
            move = state.post(int(request.path_params["move_id"]))
        except OdooError as exc:
            return json2_error(exc)
        return JSONResponse({"id": move["id"], "name": move["name"], "state": move["state"]})

    def version() -> dict[str, Any]:
        return {
            "server_version": state.server_version,
            "server_version_info": SERVER_VERSION_INFO,
            "server_serie": state.server_version,
            "protocol_version": 1,
        }

    routes = [
        Route("/json/2/{model}/{method}", json2, methods=["POST"]),
        Route("/xmlrpc/2/common", xmlrpc_common, methods=["POST"]),
        Route("/xmlrpc/2/object", xmlrpc_object, methods=["POST"]),
        Route("/_emulator/records", records, methods=["GET"]),
        Route("/_emulator/stats", stats, methods=["GET"]),
        Route("/_emulator/moves/{move_id:int}/post", post_move, methods=["POST"]),
    ]
    return emulator_app(
        routes,
        state=state,
        requests=requests,
        faults=faults,
        error_body=_fault_body,
    )


async def _xmlrpc_request(request: Request) -> tuple[tuple[Any, ...], str]:
    try:
        params, method = xmlrpc.client.loads(await request.body(), use_builtin_types=True)
    except (ExpatError, xmlrpc.client.ResponseError, ValueError):
        return (), ""
    return params, method or ""


def _xmlrpc_answer(value: Any) -> Response:
    body = xmlrpc.client.dumps((_xmlrpc_value(value),), methodresponse=True, allow_none=False)
    return Response(body, media_type="text/xml")


def _xmlrpc_fault(code: int, message: str) -> Response:
    body = xmlrpc.client.dumps(xmlrpc.client.Fault(code, message), allow_none=False)
    return Response(body, media_type="text/xml")


def _xmlrpc_value(value: Any) -> Any:
    """Odoo's marshaller: None becomes False (XML-RPC has no null without the extension)."""
    if value is None:
        return False
    if isinstance(value, dict):
        return {str(k): _xmlrpc_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_xmlrpc_value(v) for v in value]
    return value
