"""HTTP to one Konfuzio account: the HTTP kit (``connectors.http``) configured for Konfuzio.

What is Konfuzio's here: ``Authorization: Token …`` — a token from ``POST auth/`` (username and
password), kept for good since Konfuzio's tokens do not expire, with one new login on a 401; or
a configured token used as is, where a 401 is ``AuthFailed`` at once. The token is never
deleted at close: ``DELETE auth/`` would revoke it for every client of that user. URLs Konfuzio
hands out (``next`` of a list) are resolved by their path below ``/api/v3/`` against our
``base_url``; lists are paginated the DRF way (``count``/``next``/``results``). Retries,
deadlines, guards and scrubbing are the kit's.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import httpx

from connectors.auth import LoginSession, StaticToken
from connectors.errors import AuthFailed, TransientError
from connectors.http import HttpClient, connections_for
from connectors.retry import Backoff
from connectors.vendors.konfuzio.settings import KonfuzioSettings

log = logging.getLogger(__name__)

BACKOFF_BASE = 0.5
BACKOFF_MAX = 30.0
PAGE_LIMIT = 100
"""Items asked for per list page (Konfuzio's maximum per call was once documented as 1000)."""
MAX_PAGES = 200
"""A list is followed at most this far (20 000 items): more means a server that ignores our
filters, and a look-up that stops there is better than one that never ends."""
LOGIN_REFUSALS = (400, 401, 403)
"""DRF's token login answers wrong credentials with 400 ``non_field_errors``."""


class KonfuzioClient(HttpClient):
    """HTTP to one Konfuzio account: auth, retries, rate limit, pagination. Thread-safe.

    Paths are relative to ``base_url`` and keep Konfuzio's trailing slash (``documents/12/``).
    """

    def __init__(
        self,
        settings: KonfuzioSettings,
        *,
        transport: httpx.BaseTransport | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        self.settings = settings
        self.session: LoginSession | None = None
        if settings.token is not None:
            auth: StaticToken | LoginSession = StaticToken(settings.token, scheme="Token")
        else:
            auth = self.session = LoginSession(
                self._login, secrets=[settings.password], scheme="Token", clock=clock
            )
        super().__init__(
            settings.base_url,
            name="Konfuzio",
            auth=auth,
            account=settings.username,
            rate_limit=settings.rate_limit,
            timeout=settings.timeout,
            max_retries=settings.max_retries,
            backoff=Backoff(
                initial=BACKOFF_BASE,
                maximum=min(BACKOFF_MAX, settings.retry_after_max),
                retry_after_max=settings.retry_after_max,
            ),
            foreign_urls="rebase",
            rebase_marker="/api/v3/",
            secrets=[settings.password, settings.token, settings.callback_token],
            max_connections=connections_for(settings.concurrency),
            transport=transport,
            clock=clock,
            sleep=sleep,
            jitter=jitter,
        )

    @property
    def logins(self) -> int:
        """How many times this client logged in (for health and tests)."""
        return self.session.obtained if self.session is not None else 0

    # ------------------------------------------------------------------ auth

    def _login(self) -> str:
        """``POST auth/`` with the configured user; the token it answers never expires."""
        password = self.settings.password
        assert password is not None  # the settings validator guarantees one credential
        response = self.request(
            "POST",
            "auth/",
            json={"username": self.settings.username, "password": password.get_secret_value()},
            auth=False,
            allow=LOGIN_REFUSALS,
        )
        if response.status_code in LOGIN_REFUSALS:
            raise AuthFailed(
                self.describe("POST", self.path("auth/"), response, "refused the login")
            )
        body = self.json(response, "POST", "auth/")
        token = body.get("token") if isinstance(body, dict) else None
        if not isinstance(token, str) or not token:
            raise TransientError("Konfuzio's login answer carried no token")
        log.info("logged in to Konfuzio as %s", self.settings.username)
        return token

    # ------------------------------------------------------------------ reads

    def document(self, document_id: int, fields: str | None = None) -> dict[str, Any] | None:
        """The document detail (only ``fields`` where given), or None when Konfuzio has no such
        document (404: deleted, or replaced by the parts of a split)."""
        ref = f"documents/{document_id}/"
        params = {"fields": fields} if fields else None
        response = self.request("GET", ref, params=params, allow=(404,))
        if response.status_code == 404:
            return None
        return self.json_object(response, "GET", ref)

    def paginate(
        self, ref: str, params: Mapping[str, Any] | None = None, *, max_pages: int = MAX_PAGES
    ) -> Iterator[dict[str, Any]]:
        """Every result of a list endpoint, following ``next`` until it is null."""
        seen: set[str] = set()
        next_ref: str | None = ref
        next_params: Mapping[str, Any] | None = {"limit": PAGE_LIMIT, **(params or {})}
        pages = 0
        while next_ref is not None:
            pages += 1
            if pages > max_pages:
                log.warning("Konfuzio's list %s goes on beyond %d pages", self.path(ref), max_pages)
                return
            page = self.get_object(next_ref, next_params)
            results = page.get("results")
            if not isinstance(results, list):
                raise TransientError(f"Konfuzio's list {self.path(ref)} has no results array")
            for item in results:
                if isinstance(item, dict):
                    yield item
            following = page.get("next")
            if not isinstance(following, str) or not following or not results:
                return
            if following in seen:
                raise TransientError(f"Konfuzio's list {self.path(ref)} pages in a loop")
            seen.add(following)
            next_ref, next_params = following, None
