"""The HTTP kit every vendor and HTTP destination uses: one account, one configured origin.

``HttpClient`` wraps ``httpx.Client`` and decides, once for all connectors:

* **where requests go**: paths resolve against ``base_url``; an absolute URL a vendor hands out
  is used only on the configured origin below the base path. Elsewhere it is rebased (only its
  API path kept) or refused, so credentials never reach another host (RELIABILITY 32); hosts on
  ``allow_hosts`` are reached as they are, without credentials. Redirects are never followed.
* **retries inside one call**: 408/429/5xx and network errors, with the shared backoff policy
  (``connectors.retry``) and never sooner than a capped Retry-After. A request that is not
  replayable (an upload) is sent again only when the server cannot have acted on it: the
  connection was never made, a status in ``unprocessed_statuses`` (429 unless the connector
  knows more, e.g. DeepOpinion's 503), or a 401 followed by re-authentication. tenacity runs the
  loop, but only after a first failure: the happy path does not pay its ~10 µs per call.
* **what a status means**: ``STATUS_ERRORS`` maps statuses to the classes of
  ``connectors.errors``; a connector passes its own table, and ``allow=`` lets a caller handle
  statuses itself. A 401 asks the auth strategy (``connectors.auth``) to renew once.
* **guards**: a total deadline per request (connect, send and the whole body, not each phase
  alone), a response-size cap enforced while streaming, JSON size and nesting-depth limits.
* **secrecy**: messages carry method, path, status and a truncated body with every configured
  secret and every token the auth strategy held replaced by ``***``; never a header, and httpx
  exceptions (which hold the request with its ``Authorization`` header) are not chained.
* **the account's rate limit**: one token bucket per (account, host) (``connectors.ratelimit``).
* **metrics**: every exchange (each attempt) is reported to a ``ConnectorMetrics`` with its
  method, a path template (ids replaced by ``{id}``), the status and the seconds it took. The
  engine builds each connector inside ``reporting_to(context.metrics)``, so every client a
  connector makes reports under the connector's configured name without passing it on.

The deadline: httpx's timeouts apply to each phase (connect, each write, each read), so a body
trickling one byte per second never times out. Each attempt gets a deadline of ``timeout``
seconds; httpcore's ``trace`` extension shortens the timeout of every phase that starts later
to the time left, the request and response bodies are checked between chunks, and a
watchdog thread shuts the socket of a response still being read when its deadline passes.
What is not bounded by the deadline: the TCP connect and TLS handshake take their timeout
before the trace can shorten it (they start the attempt, so at most ``timeout`` either way),
and one write into a peer that reads slowly may block up to the write timeout left when the
body started.
"""

from __future__ import annotations

import functools
import heapq
import http.cookiejar
import itertools
import logging
import random
import socket
import threading
import time
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, Literal, NoReturn
from urllib.parse import quote, quote_plus, urlsplit

import httpx
from pydantic import SecretStr
from tenacity import RetryCallState, Retrying, retry_if_exception_type, stop_after_attempt

from connectors import jsonio
from connectors.errors import (
    AuthFailed,
    DocrelayError,
    RateLimited,
    TerminalError,
    TransientError,
)
from connectors.ratelimit import RateLimiter, shared_limiter
from connectors.retry import Backoff, parse_retry_after

if TYPE_CHECKING:
    from connectors.auth import Auth
    from connectors.base import ConnectorMetrics

log = logging.getLogger(__name__)

RETRY_STATUSES: frozenset[int] = frozenset({408, 429, 500, 502, 503, 504})
"""Statuses worth another attempt inside the call."""

STATUS_ERRORS: Mapping[int, type[DocrelayError]] = {
    401: AuthFailed,
    403: AuthFailed,
    408: TransientError,
    429: RateLimited,
}
"""Status → error class where the default rule (other 4xx terminal, anything else transient)
does not fit. 401 reaches it only after the auth strategy could not renew."""

NOT_SENT: tuple[type[Exception], ...] = (
    httpx.ConnectError,
    httpx.ConnectTimeout,
    httpx.PoolTimeout,
    httpx.UnsupportedProtocol,
)
"""Failures before a byte of the request left: always safe to send again."""

MiB = 1024 * 1024
SCRUBBED = "***"
Foreign = Literal["rebase", "refuse"]


_REPORTING: ContextVar[ConnectorMetrics | None] = ContextVar("docrelay_http_metrics", default=None)


@contextmanager
def reporting_to(metrics: ConnectorMetrics) -> Iterator[None]:
    """Every ``HttpClient`` made inside reports its exchanges to ``metrics``: the engine builds
    each connector inside this, so a connector's clients (its vendor API, its OAuth token
    endpoint) report under its name without the connector passing its context to each."""
    token = _REPORTING.set(metrics)
    try:
        yield
    finally:
        _REPORTING.reset(token)


_MAX_SEGMENTS = 8


@functools.lru_cache(maxsize=1024)
def endpoint_template(path: str) -> str:
    """A path below the base URL with its ids replaced by ``{id}`` (``annotations/12/content``
    → ``/annotations/{id}/content``), so a metric label names the endpoint, not the document:
    digits only, or a segment of 12 characters or more with a digit in it (a UUID, a hash, a
    token), or any of over 40."""
    parts = []
    for segment in path.strip("/").split("/")[:_MAX_SEGMENTS]:
        if (
            segment.isdigit()
            or len(segment) > 40
            or (len(segment) >= 12 and any(c.isdigit() for c in segment))
        ):
            segment = "{id}"
        parts.append(segment)
    return "/" + "/".join(parts)


def error_class(status: int, table: Mapping[int, type[DocrelayError]]) -> type[DocrelayError]:
    """The class a status raises by ``table``, else 4xx terminal and anything else transient."""
    found = table.get(status)
    if found is not None:
        return found
    return TerminalError if 400 <= status < 500 else TransientError


# --------------------------------------------------------------------------- JSON guard

_KEEP = b'[]{}"'
_DELETE_BUT_BRACKETS_AND_QUOTES = bytes(c for c in range(256) if c not in _KEEP)
_ONE_KIND = bytes.maketrans(b"{}", b"[]")


def json_depth_ok(data: bytes, limit: int) -> bool:
    """False when ``data`` nests arrays/objects deeper than ``limit`` (True for malformed JSON:
    the parser reports that better).

    Works on the bracket skeleton with bytes operations only (``translate``/``replace``/
    ``split`` run at C speed: a content tree of 60 kB costs a fifth of parsing it). String
    contents are dropped by pairing quotes, once escaped backslashes and escaped quotes (the
    only backslashes valid JSON has outside strings: none) are gone.
    """
    skeleton = data.translate(None, _DELETE_BUT_BRACKETS_AND_QUOTES)
    if skeleton.count(b"[") + skeleton.count(b"{") <= limit:
        return True
    if b"\\" in data:  # ``\\`` first, so the quote of ``\\"`` stays a real one
        unescaped = data.replace(b"\\\\", b"").replace(b'\\"', b"")
        skeleton = unescaped.translate(None, _DELETE_BUT_BRACKETS_AND_QUOTES)
    # Whatever lies between quotes 2k-1 and 2k is string content. Dropping adjacent quote
    # pairs keeps that true and leaves only the quotes around strings that hold brackets,
    # whose contents the split then drops.
    skeleton = skeleton.replace(b'""', b"")
    if b'"' in skeleton:
        skeleton = b"".join(skeleton.split(b'"')[::2])
    skeleton = skeleton.translate(_ONE_KIND)
    for _ in range(limit):
        if not skeleton:
            return True
        shorter = skeleton.replace(b"[]", b"")  # one level per pass: replace does not cascade
        if len(shorter) == len(skeleton):
            return True  # unbalanced: not JSON, the parser says so
        skeleton = shorter
    return not skeleton


# --------------------------------------------------------------------------- deadline


class _DeadlineExceeded(Exception):
    def __init__(self, sent: bool = True) -> None:
        super().__init__("deadline exceeded")
        self.sent = sent


class _TooLarge(Exception):
    pass


_PHASES: dict[str, tuple[str, bool]] = {
    "http11.send_request_headers.started": ("write", False),
    "http11.send_request_body.started": ("write", True),
    "http11.receive_response_headers.started": ("read", True),
    "http11.receive_response_body.started": ("read", True),
}
"""httpcore trace events whose phase reads its timeout after the event: (timeout key, whether
the request has begun to go out by then)."""


class _Deadline:
    """One attempt's deadline; its ``trace`` shortens each later phase's timeout to the rest."""

    __slots__ = ("at", "clock", "timeouts")

    def __init__(self, at: float, clock: Callable[[], float]) -> None:
        self.at = at
        self.clock = clock
        self.timeouts: dict[str, float | None] = {}

    def left(self) -> float:
        return self.at - self.clock()

    def check(self) -> None:
        if self.clock() >= self.at:
            raise _DeadlineExceeded()

    def trace(self, event: str, info: Mapping[str, Any]) -> None:
        phase = _PHASES.get(event)
        if phase is None:
            return
        key, sent = phase
        left = self.at - self.clock()
        if left <= 0:
            raise _DeadlineExceeded(sent)
        current = self.timeouts.get(key)
        if current is None or left < current:
            self.timeouts[key] = left


class _Watch:
    __slots__ = ("fired", "sock")

    def __init__(self, sock: socket.socket) -> None:
        self.sock: socket.socket | None = sock
        self.fired = False
        """Set before the watchdog shuts the socket: the read that then fails ran out of time."""


class _Watchdog:
    """One thread for the process: shuts the socket of a response whose deadline passed, which
    ends a read blocked in another thread at once."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int, _Watch]] = []
        self._order = itertools.count()
        self._thread: threading.Thread | None = None

    def watch(self, at: float, sock: socket.socket) -> _Watch:
        entry = _Watch(sock)
        with self._cond:
            heapq.heappush(self._heap, (at, next(self._order), entry))
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="http-deadlines", daemon=True
                )
                self._thread.start()
            elif self._heap[0][2] is entry:
                self._cond.notify()
        return entry

    def done(self, entry: _Watch) -> None:
        with self._cond:
            entry.sock = None

    def _run(self) -> None:
        with self._cond:
            while True:
                if not self._heap:
                    self._cond.wait()
                    continue
                at, _, entry = self._heap[0]
                if entry.sock is None:
                    heapq.heappop(self._heap)
                    continue
                left = at - time.monotonic()
                if left > 0:
                    self._cond.wait(left)
                    continue
                heapq.heappop(self._heap)
                sock, entry.sock = entry.sock, None
                entry.fired = True
                try:  # the plain socket's shutdown, also under TLS: the reader sees EOF
                    socket.socket.shutdown(sock, socket.SHUT_RDWR)
                except OSError:
                    pass


_WATCHDOG = _Watchdog()


class _GuardedBody(httpx.SyncByteStream):
    """A streamed body (request or response) that stops at the deadline between chunks."""

    def __init__(self, inner: Any, deadline: _Deadline, watch: _Watch | None = None) -> None:
        self._inner = inner
        self._deadline = deadline
        self._watch = watch

    def __iter__(self) -> Iterator[bytes]:
        try:
            for chunk in self._inner:
                self._deadline.check()
                yield chunk
        finally:
            if self._watch is not None:  # before httpx hands the connection back to the pool
                _WATCHDOG.done(self._watch)

    def close(self) -> None:
        close = getattr(self._inner, "close", None)
        if close is not None:
            close()


class _NoCookies(http.cookiejar.CookieJar):
    """A jar that keeps nothing: for vendors that set no cookies, saving the parse of every
    response (3 % of the daemon's CPU per document once)."""

    def extract_cookies(self, response: Any, request: Any) -> None:
        return None

    def add_cookie_header(self, request: Any) -> None:
        return None


# --------------------------------------------------------------------------- the client


class _Retry(Exception):
    """An attempt failed in a way another attempt may fix; ``error`` is what the caller gets
    when none is left."""

    def __init__(self, error: DocrelayError, retry_after: float | None) -> None:
        super().__init__(error.message)
        self.error = error
        self.retry_after = retry_after


def connections_for(threads: int) -> int:
    """The connection limit of a client that ``threads`` threads share: room for each of them
    and for the engine's other threads on the same client (follow, feedback, probes), twice
    over. No request may have to wait for a free connection: httpcore 1.0 then fails some of
    them with ``ReadError: [Errno 9] Bad file descriptor`` (8 threads on a pool of 2: 34 of
    1,600 requests). Connections are only opened when used, so the room costs nothing."""
    return 2 * max(1, threads) + 4


class HttpClient:
    """HTTP to one account of one vendor. Thread-safe; share one per account.

    ``name`` starts every message ("Rossum refused the request: …"). ``auth`` authenticates the
    requests to ``base_url``'s origin. Everything else has defaults that suit a JSON API.
    """

    def __init__(
        self,
        base_url: str,
        *,
        name: str,
        auth: Auth | None = None,
        account: str | None = None,
        rate_limit: float | None = None,
        timeout: float = 30.0,
        max_retries: int = 4,
        backoff: Backoff | None = None,
        retry_statuses: Collection[int] = RETRY_STATUSES,
        unprocessed_statuses: Collection[int] = (429,),
        status_errors: Mapping[int, type[DocrelayError]] = STATUS_ERRORS,
        foreign_urls: Foreign = "refuse",
        rebase_marker: str | None = None,
        allow_hosts: Collection[str] = (),
        secrets: Iterable[str | SecretStr | None] = (),
        max_response_bytes: int = 64 * MiB,
        max_json_bytes: int = 32 * MiB,
        max_json_depth: int = 64,
        malformed: type[DocrelayError] = TransientError,
        headers: Mapping[str, str] | None = None,
        cookies: bool = False,
        max_connections: int = 20,
        transport: httpx.BaseTransport | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        jitter: Callable[[], float] = random.random,
        metrics: ConnectorMetrics | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        base = urlsplit(self.base_url)
        if base.scheme not in ("http", "https") or not base.netloc:
            raise ValueError(f"base_url must be an http(s) URL, not {base_url!r}")
        self._origin = (base.scheme, base.netloc)
        self._base_path = base.path
        self._base_prefix = base.path + "/"
        self.name = name
        self.auth = auth
        self.timeout = timeout
        self.max_retries = max_retries
        self.backoff = backoff or Backoff()
        self.retry_statuses = frozenset(retry_statuses)
        self.unprocessed_statuses = frozenset(unprocessed_statuses)
        """Retried statuses by which this vendor says it did not act on a request: only these
        send a non-replayable request (an upload, a billed synchronous call) again."""
        self.status_errors = dict(status_errors)
        self.foreign_urls: Foreign = foreign_urls
        self.rebase_marker = rebase_marker
        self.allow_hosts = frozenset(h.lower() for h in allow_hosts)
        self.max_response_bytes = max_response_bytes
        self.max_json_bytes = max_json_bytes
        self.max_json_depth = max_json_depth
        self.malformed = malformed
        self.clock = clock
        self.sleep = sleep
        self._jitter = jitter
        self.metrics = metrics if metrics is not None else _REPORTING.get()
        """Where each exchange is reported (``reporting_to``'s, unless given); None: nowhere."""
        self._secrets = _variants(
            s.get_secret_value() if isinstance(s, SecretStr) else s for s in secrets
        )
        self._timeout = httpx.Timeout(timeout)
        self._http = httpx.Client(
            transport=transport,
            timeout=self._timeout,
            follow_redirects=False,
            headers={"Accept": "application/json", "User-Agent": "docrelay", **(headers or {})},
            limits=httpx.Limits(max_connections=max_connections),
            cookies=None if cookies else _NoCookies(),
        )
        self.limiter: RateLimiter | None = None
        if rate_limit is not None:
            self.limiter = shared_limiter(
                account, f"{base.scheme}://{base.netloc}", rate_limit, clock=clock, sleep=sleep
            )

    # ------------------------------------------------------------------ URLs

    def resolve(self, ref: str) -> tuple[str, bool]:
        """The absolute URL for a path or a URL a vendor gave us, and whether it is ours (only
        then do credentials go with it)."""
        if not ref.startswith(("http://", "https://")):
            return f"{self.base_url}/{ref.lstrip('/')}", True
        parts = urlsplit(ref)
        if (parts.scheme, parts.netloc) == self._origin and (
            parts.path.startswith(self._base_prefix) or parts.path == self._base_path
        ):
            return ref, True
        if (parts.hostname or "").lower() in self.allow_hosts:
            return ref, False
        marker = self.rebase_marker
        at = parts.path.find(marker) if marker and self.foreign_urls == "rebase" else -1
        if at < 0:
            raise TerminalError(f"{self.name} referred to a URL outside its API: {_where(parts)}")
        # Another host or prefix (a legacy domain, a proxy): keep only the API path, so our
        # credentials never go to a host that was not configured.
        url = f"{self.base_url}/{parts.path[at + len(marker or '') :]}"
        return (f"{url}?{parts.query}" if parts.query else url), True

    def url(self, ref: str) -> str:
        """The absolute URL ``ref`` is sent to."""
        return self.resolve(ref)[0]

    def path(self, ref: str) -> str:
        """The path of a URL, for messages (no query, no host)."""
        return urlsplit(self.url(ref)).path

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
        content: bytes | Iterable[bytes] | None = None,
        headers: Mapping[str, str] | None = None,
        allow: Collection[int] = (),
        replayable: bool = True,
        auth: bool = True,
        retries: int | None = None,
        timeout: float | None = None,
    ) -> httpx.Response:
        """Send one request with retries; returns 2xx responses and those listed in ``allow``,
        their bodies read (within the size cap); raises the classified error otherwise.

        ``replayable=False`` (uploads) sends again only when the server cannot have acted on
        the request; anything after the body went out raises TransientError ("after the
        request was sent"), and the caller's reconcile finds out what happened.
        ``auth=False`` sends no credentials (a login itself).
        """
        url, ours = self.resolve(ref)
        path = urlsplit(url).path
        call = _Call(
            method=method,
            url=url,
            path=path,
            endpoint=self._endpoint(path, ours) if self.metrics is not None else "",
            kwargs={
                "params": params,
                "json": json,
                "data": data,
                "files": files,
                "content": content,
            },
            headers=headers,
            allow=allow,
            replayable=replayable,
            auth=self.auth if auth and ours else None,
            timeout=self.timeout if timeout is None else timeout,
        )
        attempts = 1 + (self.max_retries if retries is None else retries)
        try:
            return self._attempt(call)
        except _Retry as first:
            if attempts <= 1:
                raise first.error from None
            failed = first
        self._pause(1, failed)
        retrying = Retrying(
            stop=stop_after_attempt(attempts - 1),
            wait=self._wait,
            retry=retry_if_exception_type(_Retry),
            before_sleep=lambda state: self._log_retry(call, state),
            sleep=self.sleep,
            reraise=True,
        )
        try:
            for attempt in retrying:
                with attempt:
                    return self._attempt(call)
        except _Retry as last:
            raise last.error from None
        raise AssertionError("tenacity ended without an outcome")  # pragma: no cover

    def _endpoint(self, path: str, ours: bool) -> str:
        """The metric label of a request: its path template below the base URL; ``external``
        for a host on ``allow_hosts`` (a storage URL with a signature in it)."""
        if not ours:
            return "external"
        if path.startswith(self._base_prefix):
            path = path[len(self._base_prefix) :]
        elif path == self._base_path:
            path = ""
        return endpoint_template(path)

    def _wait(self, state: RetryCallState) -> float:
        """tenacity's wait: its attempt 1 is our second, so its n-th wait is our (n+1)-th."""
        error = state.outcome.exception() if state.outcome is not None else None
        retry_after = error.retry_after if isinstance(error, _Retry) else None
        return self.backoff.delay(state.attempt_number + 1, retry_after, jitter=self._jitter)

    def _pause(self, attempt: int, failed: _Retry) -> None:
        delay = self.backoff.delay(attempt, failed.retry_after, jitter=self._jitter)
        log.debug("%s; retry in %.1fs", failed.error.message, delay)
        self.sleep(delay)

    def _log_retry(self, call: _Call, state: RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome is not None else None
        delay = state.next_action.sleep if state.next_action is not None else 0.0
        log.debug("%s; retry in %.1fs", error, delay)

    def _attempt(self, call: _Call) -> httpx.Response:
        """One attempt, with one renewal of the credentials on a 401 (not an attempt of its
        own: the server did not act on a request it refused)."""
        while True:
            sent = call.auth.headers() if call.auth is not None else None
            response = self._exchange(call, sent)
            status = response.status_code
            if status == 401 and call.auth is not None and not call.renewed:
                assert sent is not None
                if call.auth.renew(sent):
                    call.renewed = True
                    continue
            return self._outcome(call, response)

    def _exchange(self, call: _Call, auth_headers: Mapping[str, str] | None) -> httpx.Response:
        """Send and read the whole body, within the deadline; network trouble classified."""
        headers = call.headers
        if auth_headers:
            headers = {**auth_headers, **headers} if headers else auth_headers
        if self.limiter is not None:
            self.limiter.acquire()
        deadline = _Deadline(self.clock() + call.timeout, self.clock)
        started = time.perf_counter()
        status = "error"
        try:
            request = self._http.build_request(
                call.method,
                call.url,
                headers=headers,
                timeout=self._timeout if call.timeout == self.timeout else call.timeout,
                **call.kwargs,
            )
            deadline.timeouts = request.extensions["timeout"]
            request.extensions["trace"] = deadline.trace
            if call.kwargs["files"] is not None or not isinstance(request.stream, httpx.ByteStream):
                request.stream = _GuardedBody(request.stream, deadline)
            response = self._http.send(request, stream=True)
            status = str(response.status_code)
            try:
                self._read(response, deadline)
            finally:
                response.close()
            return response
        except (httpx.RequestError, _DeadlineExceeded) as exc:
            timed_out = isinstance(exc, _DeadlineExceeded | httpx.TimeoutException)
            status = "timeout" if timed_out else "error"
            self._network_error(call, exc, deadline)
        except _TooLarge:
            raise self.malformed(
                f"{self.name} answered {call.method} {call.path} with more than "
                f"{self.max_response_bytes} bytes"
            ) from None
        finally:
            if self.metrics is not None:
                elapsed = time.perf_counter() - started
                self.metrics.request(call.method, call.endpoint, status, elapsed)

    def _read(self, response: httpx.Response, deadline: _Deadline) -> None:
        """Read the body under the size cap (counted as it arrives, decoded) and the deadline."""
        cap = self.max_response_bytes
        if response.is_stream_consumed:  # an in-memory answer (a mock transport): read already
            if len(response.content) > cap:
                raise _TooLarge()
            return
        length = response.headers.get("Content-Length")
        if length is not None and length.isdigit() and int(length) > cap:
            raise _TooLarge()
        stream = response.extensions.get("network_stream")
        sock = stream.get_extra_info("socket") if stream is not None else None
        watch = (
            _WATCHDOG.watch(time.monotonic() + deadline.left(), sock)
            if isinstance(sock, socket.socket)
            else None
        )
        response.stream = _GuardedBody(response.stream, deadline, watch)
        parts: list[bytes] = []
        size = 0
        try:
            for chunk in response.iter_bytes():
                size += len(chunk)
                if size > cap:
                    raise _TooLarge()
                parts.append(chunk)
        except httpx.RequestError:
            # The watchdog's clock reading and the deadline's are not the same instant: the EOF
            # it caused may arrive a hair before ``deadline.at`` (under load, by milliseconds).
            if watch is not None and watch.fired:
                raise _DeadlineExceeded() from None
            raise
        finally:
            if watch is not None:
                _WATCHDOG.done(watch)
        # httpx's own read() would decode without a limit (a gzip bomb); what it stores:
        response._content = b"".join(parts)

    def _network_error(
        self, call: _Call, exc: httpx.RequestError | _DeadlineExceeded, deadline: _Deadline
    ) -> NoReturn:
        late = isinstance(exc, _DeadlineExceeded) or deadline.left() <= 0
        sent = exc.sent if isinstance(exc, _DeadlineExceeded) else not isinstance(exc, NOT_SENT)
        what = f"no complete answer within {call.timeout:g}s" if late else type(exc).__name__
        message = f"{self.name} {call.method} {call.path}: {what}"
        if sent and not call.replayable:
            raise TransientError(
                f"{message} after the request was sent", detail=self.scrub(str(exc))[:500]
            ) from None
        raise _Retry(TransientError(message, detail=self.scrub(str(exc))[:500]), None) from None

    def _outcome(self, call: _Call, response: httpx.Response) -> httpx.Response:
        """The response, or the error its status means (``_Retry`` when another try may help)."""
        status = response.status_code
        if 200 <= status < 300 or status in call.allow:
            return response
        if status == 401 and call.auth is not None:
            what = call.auth.refused_again if call.renewed else call.auth.refused
            raise AuthFailed(self.describe(call.method, call.path, response, what))
        cls = error_class(status, self.status_errors)
        if status in self.retry_statuses:
            retry_after = parse_retry_after(response.headers.get("Retry-After"))
            what = "throttled us" if status == 429 else "failed"
            message = self.describe(call.method, call.path, response, what)
            if cls is RateLimited or issubclass(cls, RateLimited):
                error: DocrelayError = RateLimited(message, retry_after=retry_after)
            else:
                error = _make(cls, message, self.body_text(response))
            if call.replayable or status in self.unprocessed_statuses:
                raise _Retry(error, retry_after)
            raise error
        if issubclass(cls, AuthFailed):
            what = "refused the credentials" if status == 401 else "denied access"
            raise AuthFailed(self.describe(call.method, call.path, response, what))
        if issubclass(cls, RateLimited):
            retry_after = parse_retry_after(response.headers.get("Retry-After"))
            raise RateLimited(
                self.describe(call.method, call.path, response, "throttled us"),
                retry_after=retry_after,
            )
        what = "refused the request" if issubclass(cls, TerminalError) else "answered unexpectedly"
        raise _make(
            cls, self.describe(call.method, call.path, response, what), self.body_text(response)
        )

    # ------------------------------------------------------------------ messages

    def add_secrets(self, *values: str | None) -> None:
        """Hide these too from now on (a secret learnt later, such as a rotated token)."""
        self._secrets = _variants([*self._secrets, *values])

    def secrets(self) -> list[str]:
        """Every value to hide: the configured secrets and each token the auth strategy held."""
        if self.auth is None:
            return self._secrets
        return [*self._secrets, *_variants(self.auth.secrets())]

    def scrub(self, text: str) -> str:
        """Remove anything secret from text we did not write ourselves (a body echoing it)."""
        for secret in self.secrets():
            if secret in text:
                text = text.replace(secret, SCRUBBED)
        return text

    def body_text(self, response: httpx.Response, limit: int = 2000) -> str:
        """The body as text, scrubbed and cut to ``limit`` characters (for ``detail``)."""
        try:
            text = response.text
        except (httpx.HTTPError, UnicodeDecodeError):
            return ""
        return self.scrub(text[: limit + 200])[:limit]

    def describe(self, method: str, path: str, response: httpx.Response, what: str) -> str:
        """A one-line message: who refused what, the status and the body (scrubbed)."""
        body = " ".join(self.body_text(response, 300).split())
        text = f"{self.name} {what}: {method} {path} → {response.status_code}"
        return f"{text}: {body}" if body else text

    # ------------------------------------------------------------------ JSON

    def json(self, response: httpx.Response, method: str, ref: str) -> Any:
        """The response's JSON, within the size and depth limits; anything else is a
        ``malformed`` error (TransientError unless the connector chose otherwise)."""
        content = response.content
        if len(content) > self.max_json_bytes:
            raise self.malformed(
                f"{self.name} answered {method} {self.path(ref)} with {len(content)} bytes of "
                f"JSON; at most {self.max_json_bytes} are read"
            )
        try:
            if json_depth_ok(content, self.max_json_depth):
                return jsonio.loads(content)
        except RecursionError:
            pass
        except ValueError:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
            raise _make(
                self.malformed,
                f"{self.name} answered {method} {self.path(ref)} with {response.status_code} "
                "and a body that is not JSON",
                self.body_text(response, 500),
            ) from None
        raise self.malformed(
            f"{self.name} answered {method} {self.path(ref)} with JSON nested deeper than "
            f"{self.max_json_depth} levels"
        )

    def json_object(self, response: httpx.Response, method: str, ref: str) -> dict[str, Any]:
        """The response's JSON object; any other JSON is a ``malformed`` error too."""
        body = self.json(response, method, ref)
        if not isinstance(body, dict):
            raise self.malformed(
                f"{self.name} answered {method} {self.path(ref)} with JSON that is not an object"
            )
        return body

    def get_object(self, ref: str, params: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """GET a JSON object."""
        return self.json_object(self.request("GET", ref, params=params), "GET", ref)

    def close(self) -> None:
        """End the auth session (a logout, where the strategy has one) and the connections."""
        if self.auth is not None:
            self.auth.close()
        self._http.close()


class _Call:
    """One ``request`` call's fixed parts and what happened across its attempts."""

    __slots__ = (
        "allow",
        "auth",
        "endpoint",
        "headers",
        "kwargs",
        "method",
        "path",
        "renewed",
        "replayable",
        "timeout",
        "url",
    )

    def __init__(
        self,
        *,
        method: str,
        url: str,
        path: str,
        endpoint: str,
        kwargs: dict[str, Any],
        headers: Mapping[str, str] | None,
        allow: Collection[int],
        replayable: bool,
        auth: Auth | None,
        timeout: float,
    ) -> None:
        self.method = method
        self.url = url
        self.path = path
        self.endpoint = endpoint
        """The path template for metrics (empty when nothing is reported)."""
        self.kwargs = kwargs
        self.headers = headers
        self.allow = allow
        self.replayable = replayable
        self.auth = auth
        self.timeout = timeout
        self.renewed = False


def _make(cls: type[DocrelayError], message: str, detail: str | None) -> DocrelayError:
    """An error of ``cls`` with ``detail`` where the class takes one."""
    try:
        return cls(message, detail=detail or None)
    except TypeError:  # RateLimited, NotReady: no detail
        return cls(message)


def _variants(values: Iterable[str | None]) -> list[str]:
    """Each secret as given and as it appears URL-encoded in an echoed form or query."""
    found: list[str] = []
    for value in values:
        if not value:
            continue
        for form in (value, quote_plus(value), quote(value, safe="")):
            if form not in found:
                found.append(form)
    found.sort(key=len, reverse=True)  # a longer secret containing a shorter one goes first
    return found


def _where(parts: Any) -> str:
    return f"{parts.scheme}://{parts.netloc}{parts.path}"[:200]
