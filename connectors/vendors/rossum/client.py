"""HTTP to one Rossum account: the HTTP kit (``connectors.http``) configured for Rossum.

What is Rossum's here: the login (``POST auth/login``, a session token kept until a 401, then
one re-login; or a configured API token used as is), the account's rate limit keyed by user,
URLs Rossum hands out resolved by their path below ``/v1/`` against our ``base_url``,
pagination, and the annotation reads that the vendor and the workflow share. Retries,
deadlines, guards and scrubbing are the kit's (NOTES.md, "HTTP policy").
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
from connectors.vendors.rossum.settings import RossumSettings

log = logging.getLogger(__name__)

BACKOFF_BASE = 0.5
BACKOFF_MAX = 30.0
LOGOUT_TIMEOUT = 5.0


class RossumClient(HttpClient):
    """HTTP to one Rossum account: auth, retries, rate limit, pagination. Thread-safe.

    Paths are relative to ``base_url`` (``annotations/12``); absolute URLs that Rossum hands out
    are accepted too but only their path below ``/v1/`` is used, resolved against ``base_url``.
    """

    def __init__(
        self,
        settings: RossumSettings,
        *,
        transport: httpx.BaseTransport | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        self.settings = settings
        self.session: LoginSession | None = None
        if settings.token is not None:
            auth: StaticToken | LoginSession = StaticToken(settings.token)
        else:
            auth = self.session = LoginSession(
                self._login, logout=self._logout, secrets=[settings.password]
            )
        super().__init__(
            settings.base_url,
            name="Rossum",
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
            rebase_marker="/v1/",
            secrets=[settings.password, settings.token, settings.webhook_secret],
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
        password = self.settings.password
        assert password is not None  # the settings validator guarantees one credential
        response = self.request(
            "POST",
            "auth/login",
            json={"username": self.settings.username, "password": password.get_secret_value()},
            auth=False,
            allow=(401,),
        )
        if response.status_code == 401:
            raise AuthFailed(
                self.describe("POST", self.path("auth/login"), response, "refused the login")
            )
        body = self.json(response, "POST", "auth/login")
        key = body.get("key") if isinstance(body, dict) else None
        if not isinstance(key, str) or not key:
            raise TransientError("Rossum's login answer carried no token")
        log.info("logged in to Rossum as %s", self.settings.username)
        return key

    def _logout(self, token: str) -> None:
        """Discard the session token at Rossum (best effort, once, 5 s at most)."""
        self.request(
            "POST",
            "auth/logout",
            headers={"Authorization": f"Bearer {token}"},
            auth=False,
            allow=range(100, 600),
            retries=0,
            timeout=min(LOGOUT_TIMEOUT, self.settings.timeout),
        )

    # ------------------------------------------------------------------ reads

    def get(self, ref: str, params: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """GET a JSON object."""
        return self.get_object(ref, params)

    def paginate(
        self, ref: str, params: Mapping[str, Any] | None = None
    ) -> Iterator[dict[str, Any]]:
        """Every result of a list endpoint, following ``pagination.next`` until it is null."""
        seen: set[str] = set()
        next_ref: str | None = ref
        next_params = params
        while next_ref is not None:
            page = self.get(next_ref, next_params)
            results = page.get("results")
            if not isinstance(results, list):
                raise TransientError(f"Rossum's list {self.path(ref)} has no results array")
            for item in results:
                if isinstance(item, dict):
                    yield item
            pagination = page.get("pagination")
            following = pagination.get("next") if isinstance(pagination, dict) else None
            if not isinstance(following, str) or not following:
                return
            if following in seen:
                raise TransientError(f"Rossum's list {self.path(ref)} pages in a loop")
            seen.add(following)
            next_ref, next_params = following, None

    def annotation_url(self, annotation_id: int) -> str:
        """An annotation's API URL below our ``base_url``."""
        return f"{self.base_url}/annotations/{annotation_id}"

    def annotation(self, annotation_id: int) -> dict[str, Any] | None:
        """The annotation object, or None when Rossum no longer has it (404)."""
        ref = f"annotations/{annotation_id}"
        response = self.request("GET", ref, allow=(404,))
        if response.status_code == 404:
            return None
        return self.json_object(response, "GET", ref)

    def content(self, annotation_id: int) -> list[Any]:
        """The annotation's content tree (``content``; the deprecated ``results`` copy too)."""
        body = self.get(f"annotations/{annotation_id}/content")
        content = body.get("content", body.get("results"))
        if not isinstance(content, list):
            raise TransientError(f"Rossum's content of annotation {annotation_id} is not a list")
        return content
