"""Rossum's webhook delivery rules on the kit's dispatcher (``connectors.emulation.callbacks``):
the HMAC signature header, which statuses are retried, interactive events never retried, and
the asynchronous mode — a hook answering ``202`` with a ``Location`` is polled there until it
answers ``201``.

The dispatcher itself (one thread, deliveries in event order, backoff on the emulator's clock,
the attempt records) is the kit's; ``hook_callback`` turns one event for one hook into its
``Callback``.
"""

from __future__ import annotations

from urllib.parse import urljoin

import httpx

from connectors.emulation.callbacks import (
    Callback,
    CallbackDispatcher,
    ResultCallback,
    Signer,
    Verdict,
    hmac_sha256,
    json_or_none,
    unsigned,
)
from connectors.emulation.clock import Clock

RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
"""Statuses retried unless ``config.retry_on_any_non_2xx`` is set (then every non-2xx is)."""

SIGNATURE_HEADER = "X-Rossum-Signature-SHA256"
USER_AGENT = "rossum-emulator"


def signer(secret: str | None) -> Signer:
    """``X-Rossum-Signature-SHA256: sha256=<hex HMAC-SHA256 of the raw body>``, or none."""
    if not secret:
        return unsigned
    return hmac_sha256(secret, SIGNATURE_HEADER, prefix="sha256=")


def dispatcher(clock: Clock, on_result: ResultCallback) -> CallbackDispatcher:
    """The emulator's delivery thread."""
    return CallbackDispatcher(
        clock=clock, on_result=on_result, user_agent=USER_AGENT, name="rossum-emulator-hooks"
    )


class AsyncHookPolling:
    """The judge for Rossum's asynchronous hooks: after ``202 + Location`` the callback turns
    into a GET of that location every ``poll_interval`` (one attempt, recorded as
    ``polling``); ``201`` delivers its body; 200/202 and the retry statuses keep polling;
    another error or ``max_polling_time`` retries the original POST (or gives up, with
    ``retry_after_polling_failure`` off)."""

    def __init__(
        self,
        clock: Clock,
        *,
        poll_interval: float,
        max_polling_time: float,
        retry_after_polling_failure: bool,
    ) -> None:
        self.clock = clock
        self.poll_interval = poll_interval
        self.max_polling_time = max_polling_time
        self.retry_after_polling_failure = retry_after_polling_failure

    def __call__(
        self, callback: Callback, response: httpx.Response | None, error: str | None
    ) -> Verdict | None:
        if "post" in callback.context:
            return self._polled(callback, response, error)
        location = response.headers.get("Location") if response is not None else None
        if response is None or response.status_code != 202 or not location:
            return None  # the kit's rules with Rossum's retry statuses
        callback.context["post"] = (callback.url, callback.body, callback.signer)
        callback.context["poll_deadline"] = self.clock.monotonic() + self.max_polling_time
        callback.method, callback.url = "GET", urljoin(callback.url, location)
        callback.body, callback.signer = b"", unsigned
        return Verdict.later(self.poll_interval, label="polling")

    def _polled(
        self, callback: Callback, response: httpx.Response | None, error: str | None
    ) -> Verdict:
        status = response.status_code if response is not None else None
        if response is not None:
            if status == 201:
                self._restore(callback)
                return Verdict.delivered(json_or_none(response))
            error = f"HTTP {status} while polling"
            if status not in RETRY_STATUSES and not 200 <= response.status_code < 300:
                return self._failed(callback, error)
        if self.clock.monotonic() + self.poll_interval > callback.context["poll_deadline"]:
            return self._failed(callback, "max_polling_time_s exceeded")
        shown = "" if status == 200 else error or ""
        return Verdict.later(self.poll_interval, label="polling", error=shown)

    def _failed(self, callback: Callback, error: str) -> Verdict:
        self._restore(callback)
        if self.retry_after_polling_failure:
            return Verdict.retry(error)
        return Verdict.failed(error)

    @staticmethod
    def _restore(callback: Callback) -> None:
        """Back to the original POST (a retry sends it again)."""
        callback.url, callback.body, callback.signer = callback.context.pop("post")
        callback.method = "POST"


def hook_callback(
    *,
    url: str,
    body: bytes,
    secret: str | None,
    tags: dict[str, object],
    interactive: bool,
    retry_count: int,
    retry_delays: tuple[float, ...],
    timeout: float,
    retry_on_any_non_2xx: bool,
    polling: AsyncHookPolling,
) -> Callback:
    """One event for one hook. Interactive events (``started``, ``updated``, ``confirm``) are
    never retried; others up to ``retry_count`` times after ``retry_delays``."""
    return Callback(
        url=url,
        body=body,
        signer=signer(secret),
        timeout=timeout,
        retry_delays=() if interactive else tuple(retry_delays[: max(0, retry_count)]),
        retry_statuses=None if retry_on_any_non_2xx else RETRY_STATUSES,
        judge=polling,
        tags=tags,
    )
