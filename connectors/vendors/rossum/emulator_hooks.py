"""Webhook delivery for the emulator: signed POSTs from one background thread, with Rossum's
retry rules and the asynchronous (202 + ``Location``) polling mode.

Deliveries go out one at a time in the order they were queued, so a receiver sees an
annotation's events in the order they happened; a retry waits in a schedule without blocking
the deliveries behind it.
"""

from __future__ import annotations

import hashlib
import heapq
import hmac
import itertools
import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urljoin

import httpx

log = logging.getLogger(__name__)

RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
"""Statuses retried unless ``config.retry_on_any_non_2xx`` is set (then every non-2xx is)."""

SIGNATURE_HEADER = "X-Rossum-Signature-SHA256"


def sign(secret: str, body: bytes) -> str:
    """The signature header value: ``sha256=<hex HMAC-SHA256 of the raw body>``."""
    digest = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


@dataclass
class Delivery:
    """One event for one hook. ``request_id`` (inside ``body``) stays the same across retries."""

    hook_id: int
    url: str
    body: bytes
    event: str
    action: str
    annotation_id: int | None
    request_id: str
    secret: str | None = None
    interactive: bool = False
    """Interactive events (``started``, ``updated``, ``confirm``) are never retried."""
    retry_count: int = 4
    timeout: float = 30.0
    retry_on_any_non_2xx: bool = False
    max_polling_time: float = 300.0
    retry_after_polling_failure: bool = True
    attempt: int = 0
    poll_url: str | None = None
    poll_deadline: float = 0.0
    last_error: str = ""
    context: dict[str, Any] = field(default_factory=dict)
    """Whatever the state needs back in its result callback (e.g. the status before export)."""


ResultCallback = Callable[[Delivery, bool, Any], None]
"""``(delivery, succeeded, parsed JSON response or None)``, called once per delivery."""


class HookDispatcher:
    """Sends deliveries from a background thread; ``start``/``stop`` bracket its life."""

    def __init__(
        self,
        *,
        retry_delays: tuple[float, ...],
        poll_interval: float,
        on_result: ResultCallback,
    ) -> None:
        self.retry_delays = retry_delays
        self.poll_interval = poll_interval
        self.on_result = on_result
        self.records: list[dict[str, Any]] = []
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int, Delivery]] = []
        self._order = itertools.count()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._client: httpx.Client | None = None

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Start the delivery thread (idempotent)."""
        with self._cond:
            if self._thread is not None:
                return
            self._stopping = False
            self._client = httpx.Client(follow_redirects=False)
            self._thread = threading.Thread(
                target=self._run, name="rossum-emulator-hooks", daemon=True
            )
            self._thread.start()

    def stop(self) -> None:
        """Stop sending (pending retries are dropped) and join the thread."""
        with self._cond:
            thread, self._thread = self._thread, None
            self._stopping = True
            self._cond.notify_all()
        if thread is not None:
            thread.join(timeout=60)
        if self._client is not None:
            self._client.close()
            self._client = None

    def submit(self, delivery: Delivery) -> None:
        """Queue a delivery for now."""
        self._schedule(delivery, time.monotonic())

    @property
    def pending(self) -> int:
        """Deliveries queued or waiting for a retry or a poll."""
        with self._cond:
            return len(self._heap)

    def snapshot(self) -> list[dict[str, Any]]:
        """A copy of every attempt made so far."""
        with self._cond:
            return [dict(r) for r in self.records]

    # ------------------------------------------------------------------ worker

    def _schedule(self, delivery: Delivery, due: float) -> None:
        with self._cond:
            heapq.heappush(self._heap, (due, next(self._order), delivery))
            self._cond.notify_all()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._stopping:
                    now = time.monotonic()
                    if self._heap and self._heap[0][0] <= now:
                        break
                    timeout = self._heap[0][0] - now if self._heap else None
                    self._cond.wait(timeout)
                if self._stopping:
                    return
                _, _, delivery = heapq.heappop(self._heap)
            try:
                self._attempt(delivery)
            except Exception:  # a bug here must not kill deliveries for the whole process
                log.exception("webhook delivery to %s crashed", delivery.url)

    def _record(self, delivery: Delivery, outcome: str, status: int | None, error: str) -> None:
        record = {
            "hook": delivery.hook_id,
            "event": delivery.event,
            "action": delivery.action,
            "annotation": delivery.annotation_id,
            "request_id": delivery.request_id,
            "attempt": delivery.attempt,
            "url": delivery.poll_url or delivery.url,
            "status_code": status,
            "error": error or None,
            "outcome": outcome,
            "at": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
        }
        with self._cond:
            self.records.append(record)

    def _attempt(self, delivery: Delivery) -> None:
        if delivery.poll_url is not None:
            self._poll(delivery)
            return
        delivery.attempt += 1
        client = self._client
        assert client is not None
        headers = {"Content-Type": "application/json", "User-Agent": "rossum-emulator"}
        if delivery.secret:
            headers[SIGNATURE_HEADER] = sign(delivery.secret, delivery.body)
        status: int | None = None
        try:
            response = client.post(
                delivery.url, content=delivery.body, headers=headers, timeout=delivery.timeout
            )
            status = response.status_code
        except httpx.HTTPError as exc:
            self._failed(delivery, None, f"{type(exc).__name__}: {exc}", retryable=True)
            return
        if status == 202 and response.headers.get("Location"):
            delivery.poll_url = urljoin(delivery.url, response.headers["Location"])
            delivery.poll_deadline = time.monotonic() + delivery.max_polling_time
            self._record(delivery, "polling", status, "")
            self._schedule(delivery, time.monotonic() + self.poll_interval)
            return
        if 200 <= status < 300:
            self._record(delivery, "delivered", status, "")
            self.on_result(delivery, True, _json(response))
            return
        retryable = delivery.retry_on_any_non_2xx or status in RETRY_STATUSES
        self._failed(delivery, status, f"HTTP {status}", retryable=retryable, body=_json(response))

    def _poll(self, delivery: Delivery) -> None:
        """Asynchronous hooks: GET the ``Location`` until it answers 201 with the result."""
        client = self._client
        assert client is not None and delivery.poll_url is not None
        status: int | None = None
        try:
            response = client.get(delivery.poll_url, timeout=delivery.timeout)
            status = response.status_code
        except httpx.HTTPError as exc:
            error = f"{type(exc).__name__}: {exc}"
        else:
            if status == 201:
                self._record(delivery, "delivered", status, "")
                self.on_result(delivery, True, _json(response))
                return
            error = f"HTTP {status} while polling"
            if status not in RETRY_STATUSES and not 200 <= status < 300:
                self._polling_failed(delivery, status, error)
                return
        if time.monotonic() + self.poll_interval > delivery.poll_deadline:
            self._polling_failed(delivery, status, "max_polling_time_s exceeded")
            return
        self._record(delivery, "polling", status, error if status != 200 else "")
        self._schedule(delivery, time.monotonic() + self.poll_interval)

    def _polling_failed(self, delivery: Delivery, status: int | None, error: str) -> None:
        delivery.poll_url = None
        self._failed(delivery, status, error, retryable=delivery.retry_after_polling_failure)

    def _failed(
        self,
        delivery: Delivery,
        status: int | None,
        error: str,
        *,
        retryable: bool,
        body: Any = None,
    ) -> None:
        delivery.last_error = error
        retries = min(delivery.retry_count, len(self.retry_delays))
        if retryable and not delivery.interactive and delivery.attempt <= retries:
            self._record(delivery, "retrying", status, error)
            delay = self.retry_delays[delivery.attempt - 1]
            self._schedule(delivery, time.monotonic() + delay)
            return
        self._record(delivery, "failed", status, error)
        self.on_result(delivery, False, body)


def _json(response: httpx.Response) -> Any:
    """The response body as JSON, or None when it is empty or not JSON."""
    if not response.content:
        return None
    try:
        return json.loads(response.content)
    except ValueError:
        return None
