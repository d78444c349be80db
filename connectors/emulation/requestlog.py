"""The log of every API request an emulator saw, for tests to read.

Conformance tests assert on it: "one upload for one document", "polling and fetching changed
nothing at the vendor" (no mutating request since a mark). In-process the log is
``app.state.requests``; other processes read ``GET /_emulator/requests`` (see ``app``).

``RequestLogMiddleware`` sits outside the fault middleware, so throttled, faulted and dropped
requests are logged as the client experienced them: status 0 means the connection was dropped
without a complete answer, and ``fault`` names what was injected. A record is written before
the client can see the answer complete (or the connection close), so a test never races its
own request. A handler adds what it knows about the request (an upload's document id, say)
with ``note(request, ...)``.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from starlette.requests import HTTPConnection

from connectors.emulation.clock import SYSTEM_CLOCK, Clock

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

ADMIN_PREFIX = "/_emulator"
"""Admin endpoints: never logged, throttled or faulted."""

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
"""Methods that must not change anything at the vendor; every other one counts as mutating."""

_ATTRIBUTES = "docrelay.emulator.attributes"
_FAULT = "docrelay.emulator.fault"
_DROPPED = "docrelay.emulator.dropped"
_LOG_NOW = "docrelay.emulator.log_now"


def is_api_path(path: str, api_prefix: str = "") -> bool:
    """Whether ``path`` is an API request the kit logs and faults (never ``/_emulator``)."""
    if path == ADMIN_PREFIX or path.startswith(ADMIN_PREFIX + "/"):
        return False
    prefix = api_prefix.rstrip("/")
    return not prefix or path == prefix or path.startswith(prefix + "/")


@dataclass(frozen=True, slots=True)
class RequestRecord:
    """One API request as the client experienced it."""

    seq: int
    """Position in the log, from 0; ``RequestLog.mark()`` returns the next one."""
    method: str
    path: str
    query: str
    status: int
    """The status sent; 0 when the connection was dropped without a complete answer."""
    at: float
    """Clock time (epoch seconds) when the request arrived."""
    fault: str | None = None
    """The fault injected (``faults.KINDS``), ``throttled`` for a 429 of the rate limit."""
    attributes: Mapping[str, Any] = field(default_factory=dict)
    """What the vendor's handler noted (``note``), e.g. the document id of an upload."""

    @property
    def mutating(self) -> bool:
        return self.method not in SAFE_METHODS

    def as_json(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "method": self.method,
            "path": self.path,
            "query": self.query,
            "status": self.status,
            "at": datetime.fromtimestamp(self.at, UTC).isoformat().replace("+00:00", "Z"),
            "fault": self.fault,
            "mutating": self.mutating,
            "attributes": dict(self.attributes),
        }


class RequestLog:
    """Thread-safe, append-only (``clear`` aside) list of ``RequestRecord``; keeps the newest
    ``keep`` records, ``total`` counts every request ever logged."""

    def __init__(self, clock: Clock | None = None, *, keep: int = 100_000) -> None:
        self.clock = clock or SYSTEM_CLOCK
        self._lock = threading.Lock()
        self._records: deque[RequestRecord] = deque(maxlen=keep)
        self._next = 0

    def record(
        self,
        method: str,
        path: str,
        status: int,
        *,
        query: str = "",
        at: float | None = None,
        fault: str | None = None,
        attributes: Mapping[str, Any] | None = None,
    ) -> RequestRecord:
        """Append one request (the middleware does this; tests may too)."""
        with self._lock:
            entry = RequestRecord(
                seq=self._next,
                method=method.upper(),
                path=path,
                query=query,
                status=status,
                at=self.clock.now() if at is None else at,
                fault=fault,
                attributes=dict(attributes or {}),
            )
            self._next += 1
            self._records.append(entry)
            return entry

    @property
    def total(self) -> int:
        """Requests logged since the start, including those no longer kept."""
        with self._lock:
            return self._next

    def mark(self) -> int:
        """The ``seq`` the next request will get: pass it as ``since`` to see what followed."""
        return self.total

    def entries(
        self, *, since: int = 0, method: str | None = None, path: str | None = None
    ) -> list[RequestRecord]:
        """Kept records from ``since`` on, optionally only one method or a path prefix."""
        with self._lock:
            found = [r for r in self._records if r.seq >= since]
        if method is not None:
            found = [r for r in found if r.method == method.upper()]
        if path is not None:
            found = [
                r for r in found if r.path == path or r.path.startswith(path.rstrip("/") + "/")
            ]
        return found

    def mutations(self, *, since: int = 0) -> list[RequestRecord]:
        """Kept records from ``since`` on whose method may change vendor state."""
        return [r for r in self.entries(since=since) if r.mutating]

    def clear(self) -> None:
        """Forget the kept records (``seq`` keeps counting, so marks stay valid)."""
        with self._lock:
            self._records.clear()

    def __len__(self) -> int:
        with self._lock:
            return len(self._records)


def note(request: HTTPConnection | Scope, **attributes: Any) -> None:
    """Add attributes to the log record of the request being handled (no-op outside the
    middleware). JSON-compatible values only: ``/_emulator/requests`` shows them."""
    scope = request.scope if isinstance(request, HTTPConnection) else request
    noted = scope.get(_ATTRIBUTES)
    if isinstance(noted, dict):
        noted.update(attributes)


def note_fault(scope: Scope, kind: str, *, dropped: bool = False) -> None:
    """Record on the request which fault it got (the fault middleware calls this)."""
    scope[_FAULT] = kind
    if dropped:
        scope[_DROPPED] = True


def log_now(scope: Scope) -> None:
    """Write the request's record now, before the connection is dropped (a test that saw the
    drop then finds it logged); later calls do nothing."""
    write = scope.get(_LOG_NOW)
    if callable(write):
        write()


class RequestLogMiddleware:
    """Logs every HTTP request under ``api_prefix`` (all but ``/_emulator`` when empty)."""

    def __init__(self, app: ASGIApp, log: RequestLog, api_prefix: str = "") -> None:
        self.app = app
        self.log = log
        self.api_prefix = api_prefix

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not is_api_path(scope.get("path", ""), self.api_prefix):
            await self.app(scope, receive, send)
            return
        arrived = self.log.clock.now()
        scope[_ATTRIBUTES] = {}
        status = {"code": 0}
        logged = False

        def log_it() -> None:
            nonlocal logged
            if logged:
                return
            logged = True
            query = scope.get("query_string", b"")
            self.log.record(
                scope["method"],
                scope["path"],
                0 if scope.get(_DROPPED) else status["code"],
                query=query.decode("latin-1") if isinstance(query, bytes) else str(query),
                at=arrived,
                fault=scope.get(_FAULT),
                attributes=scope.get(_ATTRIBUTES),
            )

        scope[_LOG_NOW] = log_it

        async def watched(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = int(message["status"])
            elif message["type"] == "http.response.body" and not message.get("more_body"):
                log_it()  # before the client can see the answer complete
            await send(message)

        try:
            await self.app(scope, receive, watched)
        except Exception:
            # Once an answer has started the server can only close the connection; before,
            # Starlette's error middleware answers 500.
            if status["code"]:
                scope[_DROPPED] = True
            else:
                status["code"] = 500
            raise
        finally:
            log_it()
