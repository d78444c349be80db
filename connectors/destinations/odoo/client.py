"""Odoo's two external APIs behind one call: ``client.call(model, method, ids=..., **params)``.

* ``Json2Client``: ``POST /json/2/<model>/<method>`` (Odoo 19+), the API key as bearer token,
  the database in ``X-Odoo-Database``, the named parameters as the JSON body.
* ``XmlRpcClient``: ``/xmlrpc/2/common`` ``authenticate`` once for the uid, then
  ``/xmlrpc/2/object`` ``execute_kw(db, uid, key, model, method, args, kwargs)``; stdlib
  ``xmlrpc.client`` builds and reads the messages, the HTTP kit carries them.

Both send through the kit (``connectors.http``): retries of 5xx and network errors inside the
call, the deadline, and the API key scrubbed from every message. A call that creates
something is sent with ``replayable=False``: the kit sends it again only when Odoo cannot have
seen it, and an answer lost after that is the engine's ``lookup``'s to settle.

How Odoo's answers become the engine's classes (see also ``NOTES.md``):

* ``AuthFailed``: JSON-2 401 (invalid API key) and 403 (AccessError: the user's rights);
  XML-RPC ``authenticate`` answering false, faults 3 (AccessDenied) and 4 (AccessError).
* ``TerminalError`` with Odoo's message: JSON-2 400 and 422 (UserError, ValidationError, bad
  arguments) and 404 MissingError; XML-RPC faults 2 (UserError and its kin) and other faults 1
  (the exception line of Odoo's traceback).
* ``TransientError``: JSON-2 404 NotFound (no such database, model or method: an Odoo being
  upgraded), 409, 5xx, timeouts, refused connections, bodies that are not JSON or XML-RPC; a
  database error (serialization failure, lock, a database that does not exist) in either.
"""

from __future__ import annotations

import abc
import threading
import xmlrpc.client
from collections.abc import Mapping
from typing import Any, ClassVar
from xml.parsers.expat import ExpatError

import httpx

from connectors.auth import StaticToken
from connectors.destinations.odoo.settings import OdooDestinationSettings
from connectors.errors import AuthFailed, DocrelayError, TerminalError, TransientError
from connectors.http import HttpClient

ERROR_STATUSES = frozenset({400, 401, 403, 404, 409, 410, 413, 422})
"""JSON-2 statuses read here (Odoo's error object says what happened); 5xx, 408 and 429 are the
kit's to retry."""

TRANSIENT_MARKS = (
    "could not serialize",
    "SerializationFailure",
    "concurrent update",
    "deadlock",
    "LockNotAvailable",
    "OperationalError",
)
"""What a database error Odoo did not retry itself looks like: worth trying again later."""

POSITIONAL = ("domain", "vals_list", "vals")
"""Parameters XML-RPC passes by position: their names changed across Odoo versions (``args``
before 17, ``vals`` before 12), their positions did not."""


class OdooClient(abc.ABC):
    """One Odoo database, one user. Thread-safe."""

    protocol: ClassVar[str]

    def __init__(self, settings: OdooDestinationSettings, http: HttpClient) -> None:
        self.settings = settings
        self.http = http
        self.where = f"Odoo {settings.database} at {settings.url}"
        context: dict[str, Any] = {}
        if settings.company_id is not None:
            context["allowed_company_ids"] = [settings.company_id]
        self.context = context
        """Sent with every call: the company the bills are for, where configured."""

    @abc.abstractmethod
    def call(
        self,
        model: str,
        method: str,
        *,
        ids: list[int] | None = None,
        replayable: bool = True,
        **params: Any,
    ) -> Any:
        """``model.method`` on ``ids`` (None for a model method) with named ``params``; the
        return value as JSON types. Raises the engine's classified errors."""

    @abc.abstractmethod
    def identify(self) -> str:
        """Log in (where the protocol does) and say who we are, for ``probe``; read-only."""

    def close(self) -> None:
        self.http.close()


def _message(body: Any, fallback: str) -> tuple[str, str]:
    """Odoo's error object as (short exception name, message)."""
    if isinstance(body, Mapping):
        name = str(body.get("name") or "").rsplit(".", 1)[-1]
        message = str(body.get("message") or "").strip()
        return name, message or fallback
    if isinstance(body, str) and body.strip():
        return "", body.strip()
    return "", fallback


class Json2Client(OdooClient):
    """Odoo 19+'s ``/json/2`` API."""

    protocol = "json2"

    @classmethod
    def create(
        cls, settings: OdooDestinationSettings, *, transport: httpx.BaseTransport | None = None
    ) -> Json2Client:
        """A client with the kit configured for JSON-2 (``transport`` for unit tests)."""
        http = HttpClient(
            settings.url,
            name=f"Odoo {settings.database}",
            auth=StaticToken(settings.api_key, scheme="bearer"),
            timeout=settings.timeout,
            max_retries=settings.max_retries,
            secrets=[settings.api_key],
            headers={"X-Odoo-Database": settings.database},
            max_connections=pool_size(settings),
            transport=transport,
        )
        return cls(settings, http)

    def call(
        self,
        model: str,
        method: str,
        *,
        ids: list[int] | None = None,
        replayable: bool = True,
        **params: Any,
    ) -> Any:
        body: dict[str, Any] = dict(params)
        if ids is not None:
            body["ids"] = ids
        if self.context:
            body["context"] = self.context
        path = f"json/2/{model}/{method}"
        response = self.http.request(
            "POST", path, json=body, allow=ERROR_STATUSES, replayable=replayable
        )
        if response.status_code >= 400:
            raise self._error(response, f"{model}.{method}")
        return self.http.json(response, "POST", path)

    def identify(self) -> str:
        context = self.call("res.users", "context_get")
        uid = context.get("uid") if isinstance(context, Mapping) else None
        return f"{self.where}: the API key is accepted (JSON-2, user id {uid})"

    def _error(self, response: httpx.Response, what: str) -> DocrelayError:
        status = response.status_code
        try:
            body: Any = self.http.json(response, "POST", what)
        except DocrelayError:
            body = self.http.body_text(response, 500)
        name, message = _message(body, f"HTTP {status}")
        message = self.http.scrub(" ".join(message.split()))[:1000]
        said = f"{name}: {message}" if name else message
        where = f"{self.where}: {what}"
        if status == 401:
            return AuthFailed(f"{where}: Odoo refused the API key ({said})")
        if status == 403:
            return AuthFailed(f"{where}: Odoo denied access; check the user's rights ({said})")
        if status == 404 and name != "MissingError":
            return TransientError(f"{where}: Odoo answered 404 ({said})")
        if status == 409 or any(mark in said for mark in TRANSIENT_MARKS):
            return TransientError(f"{where}: Odoo says: {said}")
        return TerminalError(f"{where}: Odoo says: {said}")


class XmlRpcClient(OdooClient):
    """``/xmlrpc/2`` of every Odoo version (deprecated in 19, removed in 22)."""

    protocol = "xmlrpc"

    def __init__(self, settings: OdooDestinationSettings, http: HttpClient) -> None:
        super().__init__(settings, http)
        self._uid: int | None = None
        self._lock = threading.Lock()

    @classmethod
    def create(
        cls, settings: OdooDestinationSettings, *, transport: httpx.BaseTransport | None = None
    ) -> XmlRpcClient:
        """A client with the kit configured for XML-RPC (no auth header: the key is in every
        call's parameters, and hidden from messages all the same)."""
        http = HttpClient(
            settings.url,
            name=f"Odoo {settings.database}",
            timeout=settings.timeout,
            max_retries=settings.max_retries,
            secrets=[settings.api_key],
            headers={"Accept": "text/xml"},
            max_connections=pool_size(settings),
            transport=transport,
        )
        return cls(settings, http)

    def uid(self) -> int:
        """The user id ``authenticate`` gives for the login (asked once)."""
        with self._lock:
            if self._uid is not None:
                return self._uid
        key = self.settings.api_key.get_secret_value()
        found = self._rpc(
            "common", "authenticate", (self.settings.database, self.settings.username, key, {})
        )
        if not isinstance(found, int) or isinstance(found, bool) or found <= 0:
            raise AuthFailed(
                f"{self.where}: Odoo refused the login of {self.settings.username!r} "
                "(authenticate answered false: wrong login, API key or database)"
            )
        with self._lock:
            self._uid = found
        return found

    def call(
        self,
        model: str,
        method: str,
        *,
        ids: list[int] | None = None,
        replayable: bool = True,
        **params: Any,
    ) -> Any:
        args: list[Any] = [] if ids is None else [ids]
        for name in POSITIONAL:
            if name in params:
                args.append(params.pop(name))
        if self.context:
            params["context"] = self.context
        key = self.settings.api_key.get_secret_value()
        payload = (self.settings.database, self.uid(), key, model, method, args, params)
        try:
            return self._rpc("object", "execute_kw", payload, replayable=replayable)
        except AuthFailed:
            with self._lock:
                self._uid = None  # a changed key or user: authenticate again next time
            raise

    def identify(self) -> str:
        version = self._rpc("common", "version", ())
        uid = self.uid()
        server = version.get("server_version") if isinstance(version, Mapping) else None
        return f"{self.where}: logged in as {self.settings.username} (uid {uid}, Odoo {server})"

    def _rpc(
        self, service: str, method: str, params: tuple[Any, ...], *, replayable: bool = True
    ) -> Any:
        body = xmlrpc.client.dumps(params, method, allow_none=True).encode("utf-8")
        what = f"{params[3]}.{params[4]}" if method == "execute_kw" else f"{service}.{method}"
        response = self.http.request(
            "POST",
            f"xmlrpc/2/{service}",
            content=body,
            headers={"Content-Type": "text/xml"},
            replayable=replayable,
        )
        try:
            (result,), _ = xmlrpc.client.loads(response.content, use_builtin_types=True)
        except xmlrpc.client.Fault as fault:
            raise self._fault(fault, what) from None
        except (ExpatError, xmlrpc.client.ResponseError, ValueError):
            raise TransientError(
                f"{self.where}: {what}: Odoo answered with a body that is not XML-RPC",
                detail=self.http.body_text(response, 500),
            ) from None
        return result

    def _fault(self, fault: xmlrpc.client.Fault, what: str) -> DocrelayError:
        text = self.http.scrub(str(fault.faultString)).strip()
        where = f"{self.where}: {what}"
        code = fault.faultCode
        if code == 3:
            return AuthFailed(f"{where}: Odoo refused the login ({text})")
        if code == 4:
            return AuthFailed(f"{where}: Odoo denied access; check the user's rights ({text})")
        if any(mark in text for mark in TRANSIENT_MARKS):
            return TransientError(f"{where}: Odoo says: {_last_line(text)}", detail=text[:2000])
        if code == 2:
            return TerminalError(f"{where}: Odoo says: {' '.join(text.split())[:1000]}")
        return TerminalError(f"{where}: Odoo says: {_last_line(text)}", detail=text[:2000])


def _last_line(text: str) -> str:
    """The exception line of a traceback (what Odoo's fault 1 carries), else the text."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return (lines[-1] if lines else text)[:1000]


MIN_POOL = 16
"""Connections kept at least: more than the engine's delivery threads, whatever
``pipeline.delivery_concurrency`` says (httpcore's sync pool fails requests, "Bad file
descriptor", when more threads than connections wait on it)."""


def pool_size(settings: OdooDestinationSettings) -> int:
    """The connection pool for the destination's threads."""
    return max(settings.concurrency or 0, MIN_POOL)


def make_client(
    settings: OdooDestinationSettings, *, transport: httpx.BaseTransport | None = None
) -> OdooClient:
    """The client for the configured protocol."""
    if settings.protocol == "xmlrpc":
        return XmlRpcClient.create(settings, transport=transport)
    return Json2Client.create(settings, transport=transport)
