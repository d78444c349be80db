"""Callbacks and webhooks from an emulator to its client: background sender threads, deliveries
in the order they were queued, retries with backoff, and the vendor's signing scheme.

A ``Callback`` is one event for one receiver. The dispatcher sends it, judges the answer —
2xx delivered, a status in ``retry_statuses`` (or a connection error) retried after the next of
``retry_delays``, anything else failed — and calls ``on_result`` once when it is delivered or
given up. Vendors plug in what differs: the ``signer`` (Rossum's HMAC header, Konfuzio's
nothing), the retry rules, and a ``judge`` for answers with vendor meaning (Rossum's
``202 + Location`` polling, say) that may ask to send again ``later`` without that counting as
a new attempt.

With one sender (the default) deliveries go out one at a time, first attempts in queue order, so
a receiver sees one document's events in the order they happened; a retry waits in a schedule
without blocking the deliveries behind it. A vendor whose callbacks are only hints (Konfuzio's:
the receiver fetches the document anyway) may use several ``senders``, so one slow answer does
not hold up every document behind it, at the price of that ordering.

Time is the emulator's ``Clock``: on a ``ManualClock`` a test advances through a backoff
schedule instantly, with the thread or with ``run_due()`` in its own thread.
Every attempt is recorded (``attempts()``) for tests and ``GET /_emulator/callbacks``.
"""

from __future__ import annotations

import base64
import hashlib
import heapq
import hmac
import itertools
import json
import logging
import threading
from collections import Counter, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import httpx

from connectors.emulation.clock import SYSTEM_CLOCK, Clock

log = logging.getLogger(__name__)

RETRY_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})
"""Statuses retried by default: the receiver is busy or down, not refusing the event."""

DEFAULT_RETRY_DELAYS: tuple[float, ...] = (2.0, 4.0, 8.0, 16.0)
"""Waits before retries 1-4: five attempts within about 30 s."""

Signer = Callable[[bytes], Mapping[str, str]]
"""The raw body → headers that sign it (empty for unsigned callbacks)."""


def unsigned(body: bytes) -> dict[str, str]:
    """No signature (Konfuzio's callbacks, for one, carry none)."""
    return {}


def hmac_sha256(
    secret: str,
    header: str,
    *,
    prefix: str = "",
    encoding: Literal["hex", "base64"] = "hex",
) -> Signer:
    """A signer putting ``prefix + HMAC-SHA256(secret, body)`` into ``header``.

    Rossum: ``hmac_sha256(secret, "X-Rossum-Signature-SHA256", prefix="sha256=")``.
    """
    key = secret.encode()

    def sign(body: bytes) -> dict[str, str]:
        digest = hmac.new(key, body, hashlib.sha256).digest()
        text = digest.hex() if encoding == "hex" else base64.b64encode(digest).decode()
        return {header: prefix + text}

    return sign


Outcome = Literal["delivered", "retry", "failed", "later"]


@dataclass(frozen=True)
class Verdict:
    """What to do after one request of a callback."""

    outcome: Outcome
    error: str = ""
    result: Any = None
    """Handed to ``on_result`` (default: the answer's JSON, or None)."""
    delay: float = 0.0
    """For ``later``: seconds until the callback is sent again."""
    label: str | None = None
    """How the attempt is recorded; default ``delivered``/``retrying``/``failed``/``waiting``."""

    @classmethod
    def delivered(cls, result: Any = None) -> Verdict:
        return cls("delivered", result=result)

    @classmethod
    def retry(cls, error: str, result: Any = None) -> Verdict:
        """Retry after the next backoff delay, or fail when they are used up."""
        return cls("retry", error=error, result=result)

    @classmethod
    def failed(cls, error: str, result: Any = None) -> Verdict:
        return cls("failed", error=error, result=result)

    @classmethod
    def later(cls, delay: float, *, label: str = "waiting", error: str = "") -> Verdict:
        """Send again after ``delay`` as part of the same attempt (the judge may have changed
        the callback's method, URL and body first, e.g. to poll an asynchronous answer)."""
        return cls("later", error=error, delay=delay, label=label)


Judge = Callable[["Callback", httpx.Response | None, str | None], Verdict | None]
"""``(callback, answer or None, connection error or None)`` → a verdict, or None for the
default rules."""


@dataclass
class Callback:
    """One event for one receiver, with the rules for delivering it."""

    url: str
    body: bytes = b""
    method: str = "POST"
    content_type: str | None = "application/json"
    headers: Mapping[str, str] = field(default_factory=dict)
    signer: Signer = unsigned
    timeout: float = 30.0
    retry_delays: tuple[float, ...] = DEFAULT_RETRY_DELAYS
    """One wait per retry; ``()`` never retries."""
    retry_statuses: frozenset[int] | None = RETRY_STATUSES
    """Non-2xx statuses that are retried; None retries every one."""
    judge: Judge | None = None
    tags: dict[str, Any] = field(default_factory=dict)
    """Shown in every attempt record (event, document id, hook id …)."""
    context: dict[str, Any] = field(default_factory=dict)
    """The vendor's own bookkeeping (its judge's state, what ``on_result`` needs)."""
    attempt: int = 0
    """Attempts made so far (a ``later`` re-send is part of the attempt before it)."""
    last_status: int | None = None
    last_error: str = ""
    continuing: bool = False
    """True while a ``later`` verdict is pending: the next send continues the attempt."""


@dataclass(frozen=True)
class Attempt:
    """One request of a callback and how it went."""

    tags: Mapping[str, Any]
    attempt: int
    method: str
    url: str
    status: int | None
    error: str
    outcome: str
    at: float

    def as_json(self) -> dict[str, Any]:
        return {
            **self.tags,
            "attempt": self.attempt,
            "method": self.method,
            "url": self.url,
            "status_code": self.status,
            "error": self.error or None,
            "outcome": self.outcome,
            "at": datetime.fromtimestamp(self.at, UTC).isoformat().replace("+00:00", "Z"),
        }


ResultCallback = Callable[[Callback, bool, Any], None]
"""``(callback, delivered, result)``, once per callback when it is delivered or given up."""


def json_or_none(response: httpx.Response) -> Any:
    """The answer's JSON, or None when it is empty or not JSON."""
    if not response.content:
        return None
    try:
        return json.loads(response.content)
    except ValueError:
        return None


def default_verdict(
    callback: Callback, response: httpx.Response | None, error: str | None
) -> Verdict:
    """2xx delivered; a connection error or a ``retry_statuses`` status retried; else failed."""
    if response is None:
        return Verdict.retry(error or "no answer")
    status = response.status_code
    body = json_or_none(response)
    if 200 <= status < 300:
        return Verdict.delivered(body)
    if callback.retry_statuses is None or status in callback.retry_statuses:
        return Verdict.retry(f"HTTP {status}", body)
    return Verdict.failed(f"HTTP {status}", body)


class CallbackDispatcher:
    """Sends callbacks from ``senders`` background threads (``start``/``stop``), or in the
    caller's thread with ``run_due()`` for tests — not both at once."""

    def __init__(
        self,
        *,
        clock: Clock | None = None,
        on_result: ResultCallback | None = None,
        transport: httpx.BaseTransport | None = None,
        user_agent: str = "docrelay-emulator",
        name: str = "emulator-callbacks",
        keep: int = 100_000,
        senders: int = 1,
    ) -> None:
        """``transport`` replaces the network (``httpx.MockTransport`` in unit tests);
        ``senders`` > 1 sends that many callbacks at once (see the module docstring)."""
        if senders < 1:
            raise ValueError("senders must be at least 1")
        self.clock = clock or SYSTEM_CLOCK
        self.on_result = on_result
        self.user_agent = user_agent
        self.name = name
        self._transport = transport
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int, Callback]] = []
        self._order = itertools.count()
        self._attempts: deque[Attempt] = deque(maxlen=keep)
        self._outcomes: Counter[str] = Counter()
        self._made = 0
        self._stopping = False
        self._senders = senders
        self._threads: list[threading.Thread] = []
        self._client: httpx.Client | None = None

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Start the sender threads (idempotent)."""
        with self._cond:
            if self._threads:
                return
            self._stopping = False
            self._http()  # one client, made before the threads share it
            self._threads = [
                threading.Thread(
                    target=self._run,
                    name=self.name if self._senders == 1 else f"{self.name}-{n}",
                    daemon=True,
                )
                for n in range(self._senders)
            ]
            for thread in self._threads:
                thread.start()

    def stop(self) -> None:
        """Stop sending (pending callbacks and retries are dropped) and join the threads."""
        with self._cond:
            threads, self._threads = self._threads, []
            self._stopping = True
            self._heap.clear()
            self._cond.notify_all()
        for thread in threads:
            thread.join(timeout=60)
        if self._client is not None:
            self._client.close()
            self._client = None

    def submit(self, callback: Callback, *, delay: float = 0.0) -> None:
        """Queue a callback, to go out ``delay`` seconds from now."""
        self._schedule(callback, self.clock.monotonic() + delay)

    # ------------------------------------------------------------------ for tests

    @property
    def pending(self) -> int:
        """Callbacks queued or waiting for a retry."""
        with self._cond:
            return len(self._heap)

    def next_due(self) -> float | None:
        """Clock reading (``monotonic``) when the next callback is due, or None."""
        with self._cond:
            return self._heap[0][0] if self._heap else None

    def attempts(self) -> list[Attempt]:
        """The newest ``keep`` requests made, oldest first."""
        with self._cond:
            return list(self._attempts)

    def outcomes(self) -> Counter[str]:
        """Requests made since the start by recorded outcome (``attempts()`` keeps only the
        newest)."""
        with self._cond:
            return Counter(self._outcomes)

    def wait_for_attempts(self, count: int, timeout: float = 10.0) -> bool:
        """Block (real time, at most ``timeout``) until ``count`` requests have been made in
        all; for tests of the thread, which cannot know when it got to a callback."""
        with self._cond:
            return self._cond.wait_for(lambda: self._made >= count, timeout)

    def snapshot(self) -> list[dict[str, Any]]:
        """``attempts()`` as JSON."""
        return [a.as_json() for a in self.attempts()]

    def run_due(self) -> int:
        """Send, in this thread, every callback due by the clock (including retries that fall
        due meanwhile); the number of requests made."""
        sent = 0
        while True:
            callback = self._take_due()
            if callback is None:
                return sent
            self._attempt(callback)
            sent += 1

    # ------------------------------------------------------------------ worker

    def _schedule(self, callback: Callback, due: float) -> None:
        with self._cond:
            heapq.heappush(self._heap, (due, next(self._order), callback))
            self._cond.notify_all()

    def _take_due(self) -> Callback | None:
        with self._cond:
            if self._heap and self._heap[0][0] <= self.clock.monotonic():
                return heapq.heappop(self._heap)[2]
            return None

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._stopping:
                    now = self.clock.monotonic()
                    if self._heap and self._heap[0][0] <= now:
                        break
                    timeout = self._heap[0][0] - now if self._heap else None
                    self.clock.wait(self._cond, timeout)
                if self._stopping:
                    return
                _, _, callback = heapq.heappop(self._heap)
            try:
                self._attempt(callback)
            except Exception:  # a bug here must not stop every later delivery
                log.exception("callback to %s crashed; it is dropped", callback.url)

    def _http(self) -> httpx.Client:
        if self._client is None:
            self._client = httpx.Client(follow_redirects=False, transport=self._transport)
        return self._client

    def _attempt(self, callback: Callback) -> None:
        if not callback.continuing:
            callback.attempt += 1
        callback.continuing = False
        method, url = callback.method, callback.url
        headers = {"User-Agent": self.user_agent}
        if callback.content_type and callback.body:
            headers["Content-Type"] = callback.content_type
        headers.update(callback.headers)
        headers.update(callback.signer(callback.body))
        response: httpx.Response | None = None
        error: str | None = None
        try:
            response = self._http().request(
                method,
                url,
                content=callback.body or None,
                headers=headers,
                timeout=callback.timeout,
            )
        except httpx.HTTPError as exc:
            error = f"{type(exc).__name__}: {exc}"
        callback.last_status = response.status_code if response is not None else None
        verdict = callback.judge(callback, response, error) if callback.judge else None
        if verdict is None:
            verdict = default_verdict(callback, response, error)
        callback.last_error = verdict.error
        self._settle(callback, verdict, method, url)

    def _settle(self, callback: Callback, verdict: Verdict, method: str, url: str) -> None:
        now = self.clock.monotonic()
        if verdict.outcome == "later":
            callback.continuing = True
            self._record(callback, verdict, verdict.label or "waiting", method, url)
            self._schedule(callback, now + max(0.0, verdict.delay))
            return
        if verdict.outcome == "retry" and callback.attempt <= len(callback.retry_delays):
            self._record(callback, verdict, verdict.label or "retrying", method, url)
            self._schedule(callback, now + callback.retry_delays[callback.attempt - 1])
            return
        delivered = verdict.outcome == "delivered"
        outcome = verdict.label or ("delivered" if delivered else "failed")
        self._record(callback, verdict, outcome, method, url)
        if self.on_result is not None:
            self.on_result(callback, delivered, verdict.result)

    def _record(
        self, callback: Callback, verdict: Verdict, outcome: str, method: str, url: str
    ) -> None:
        attempt = Attempt(
            tags=dict(callback.tags),
            attempt=callback.attempt,
            method=method,
            url=url,
            status=callback.last_status,
            error=verdict.error,
            outcome=outcome,
            at=self.clock.now(),
        )
        with self._cond:
            self._attempts.append(attempt)
            self._outcomes[outcome] += 1
            self._made += 1
            self._cond.notify_all()
