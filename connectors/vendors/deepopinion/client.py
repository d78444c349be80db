"""HTTP to one DeepOpinion account: the HTTP kit (``connectors.http``) configured for it.

What is DeepOpinion's here: ``POST /auth/login`` answers a JWT that goes out as ``Authorization:
Bearer <jwt>``; there is no refresh endpoint, so the kit's ``JwtBearer`` logs in again shortly
before the token's ``exp`` and once on a 401 (002:43). A refused login is ``AuthFailed``.

The extraction is one long synchronous call that may be billed once the file arrived: it is
sent with ``replayable=False`` (the kit never resends it after the body went out: a read
timeout or a dropped connection raises, and the engine records the doubt) and resent only on
answers that prove nothing was processed: a connection never made, a 429 and a 503 (the kit's
``unprocessed_statuses``). Retries, deadlines, guards and scrubbing are the kit's.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import random
import time
from collections.abc import Callable, Mapping
from typing import IO, Any

import httpx

from connectors.auth import JwtBearer
from connectors.errors import AuthFailed, TransientError
from connectors.http import HttpClient, connections_for
from connectors.retry import Backoff
from connectors.vendors.deepopinion.settings import DeepOpinionSettings

log = logging.getLogger(__name__)

BACKOFF_BASE = 0.5
BACKOFF_MAX = 30.0
LOGIN_REFUSALS = (400, 401, 403)
"""What a login answers to wrong or unknown credentials (401 [ours]; 400/403 for safety)."""
UNPROCESSED = (429, 503)
"""An extraction answered 429 or 503 was not processed (the service was not taking work):
worth sending again, unlike 500/502/504, which may come after the work was done."""


class DeepOpinionClient(HttpClient):
    """HTTP to one DeepOpinion account: login, the extraction, HITLs and reviews. Thread-safe."""

    def __init__(
        self,
        settings: DeepOpinionSettings,
        *,
        transport: httpx.BaseTransport | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        self.settings = settings
        self.session = JwtBearer(self._login, secrets=[settings.password], clock=clock, wall=wall)
        super().__init__(
            settings.base_url,
            name="DeepOpinion",
            auth=self.session,
            account=settings.email,
            rate_limit=settings.rate_limit,
            timeout=settings.timeout,
            max_retries=settings.max_retries,
            unprocessed_statuses=UNPROCESSED,
            backoff=Backoff(
                initial=BACKOFF_BASE,
                maximum=min(BACKOFF_MAX, settings.retry_after_max),
                retry_after_max=settings.retry_after_max,
            ),
            secrets=[settings.password, settings.webhook_token],
            max_connections=connections_for(settings.concurrency),
            transport=transport,
            clock=clock,
            sleep=sleep,
            jitter=jitter,
        )

    @property
    def logins(self) -> int:
        """How many times this client logged in (for health and tests)."""
        return self.session.obtained

    def user_id(self) -> int | None:
        """Our user's id (the token's ``sub``): the assignee of a HITL we create."""
        return jwt_subject(self.session.token())

    # ------------------------------------------------------------------ auth

    def _login(self) -> str:
        """``POST auth/login`` with the configured user; returns the JWT (``auth_token``)."""
        response = self.request(
            "POST",
            "auth/login",
            json={
                "email": self.settings.email,
                "password": self.settings.password.get_secret_value(),
            },
            auth=False,
            allow=LOGIN_REFUSALS,
        )
        if response.status_code in LOGIN_REFUSALS:
            raise AuthFailed(
                self.describe("POST", self.path("auth/login"), response, "refused the login")
            )
        body = self.json(response, "POST", "auth/login")
        token = body.get("auth_token") if isinstance(body, dict) else None
        if not isinstance(token, str) or not token:
            raise TransientError("DeepOpinion's login answer carried no auth_token")
        log.info("logged in to DeepOpinion as %s", self.settings.email)
        return token

    # ------------------------------------------------------------------ extraction

    def extract_path(self) -> str:
        """The model's extraction route [ours: the seed lost the path]."""
        return f"{self.settings.project_path}/models/{self.settings.model_id}/extract"

    def extract(self, stream: IO[bytes], *, filename: str, mime_type: str) -> dict[str, Any]:
        """``POST …/extract?return_bboxes=true`` with the file as the multipart part ``file``
        (streamed); returns the answer. Never resent once the body may have been read."""
        ref = self.extract_path()
        params = {
            "return_bboxes": "true",
            "return_annotated_pages": "true" if self.settings.return_annotated_pages else "false",
        }
        response = self.request(
            "POST",
            ref,
            params=params,
            files={"file": (filename, stream, mime_type)},  # httpx rewinds it per attempt
            replayable=False,
            timeout=self.settings.extract_timeout,
        )
        return self.json_object(response, "POST", ref)

    # ------------------------------------------------------------------ HITL

    def hitls(self) -> list[dict[str, Any]]:
        """The project's HITLs (``GET …/hitls``, a bare array)."""
        ref = f"{self.settings.project_path}/hitls"
        return _objects(self.json(self.request("GET", ref), "GET", ref), "HITLs")

    def hitl(self, hitl_id: int) -> dict[str, Any] | None:
        """One HITL, or None when there is none by that id (404)."""
        ref = f"{self.settings.project_path}/hitls/{hitl_id}"
        response = self.request("GET", ref, allow=(404,))
        if response.status_code == 404:
            return None
        return self.json_object(response, "GET", ref)

    def create_hitl(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """``POST …/hitls`` → 201 HITL."""
        ref = f"{self.settings.project_path}/hitls"
        return self.json_object(self.request("POST", ref, json=dict(body)), "POST", ref)

    def update_hitl(self, hitl_id: int, body: Mapping[str, Any]) -> dict[str, Any]:
        """``PUT …/hitls/{id}`` (the whole body, as the create) → 200 HITL."""
        ref = f"{self.settings.project_path}/hitls/{hitl_id}"
        return self.json_object(self.request("PUT", ref, json=dict(body)), "PUT", ref)

    def reviews(self, hitl_id: int, document_name: str) -> list[dict[str, Any]]:
        """The reviews of one uploaded document, with their data (value, reviewed value)."""
        ref = f"{self.settings.project_path}/hitls/{hitl_id}/reviews"
        params = {"with_full_data": "true", "document_name": document_name}
        return _objects(self.json(self.request("GET", ref, params=params), "GET", ref), "reviews")

    def models(self) -> list[dict[str, Any]]:
        """The project's models (``GET …/models``, a bare array)."""
        ref = f"{self.settings.project_path}/models"
        return _objects(self.json(self.request("GET", ref), "GET", ref), "models")


def _objects(body: Any, what: str) -> list[dict[str, Any]]:
    if not isinstance(body, list):
        raise TransientError(f"DeepOpinion's list of {what} is not an array")
    return [item for item in body if isinstance(item, dict)]


def jwt_subject(token: str) -> int | None:
    """The ``sub`` claim (the user id) of a JWT, read without verifying it."""
    try:
        payload = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (IndexError, ValueError, binascii.Error, UnicodeDecodeError):
        return None
    sub = claims.get("sub") if isinstance(claims, dict) else None
    if isinstance(sub, str) and sub.isdigit():
        return int(sub)
    return sub if isinstance(sub, int) and not isinstance(sub, bool) else None
