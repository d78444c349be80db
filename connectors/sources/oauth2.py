"""OAuth2 access tokens for IMAP (XOAUTH2): refreshed before expiry, rotation persisted.

Microsoft rotates refresh tokens: every refresh may return a new one, and after a while the old
one stops working. The newest is therefore kept in the source's private state file (mode 0600,
written atomically) and preferred over the configured one, unless the configured one changed
since (an operator re-authorised the account: theirs wins).

A refusal by the token endpoint (``invalid_grant``, ``invalid_client``, …) is final until the
operator acts: it raises ``OAuthRefused`` and the source goes to "needs re-auth". Network
trouble and 5xx answers are transient.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from connectors.fsutil import atomic_write

log = logging.getLogger(__name__)

PROVIDERS: dict[str, tuple[str, str]] = {
    "microsoft": (
        "https://login.microsoftonline.com/{tenant}/oauth2/v2.0/token",
        "https://outlook.office.com/IMAP.AccessAsUser.All offline_access",
    ),
    "google": ("https://oauth2.googleapis.com/token", "https://mail.google.com/"),
}
"""Token endpoint and IMAP scope per provider."""

REFUSALS = {"invalid_grant", "invalid_client", "unauthorized_client", "invalid_scope"}


class OAuthError(RuntimeError):
    """The token endpoint could not be reached or failed; try again later."""


class OAuthRefused(OAuthError):
    """The token endpoint refused the refresh token or the client: a person must re-authorise."""


def xoauth2(username: str, token: str) -> str:
    """The SASL XOAUTH2 initial response (before base64), as Google and Microsoft define it."""
    return f"user={username}\x01auth=Bearer {token}\x01\x01"


def _fingerprint(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


class TokenManager:
    """One account's access token; thread-safe, refreshed ``margin`` seconds before expiry."""

    def __init__(
        self,
        *,
        token_url: str,
        client_id: str,
        refresh_token: str,
        state_file: Path,
        client_secret: str | None = None,
        scope: str | None = None,
        margin: float = 300.0,
        timeout: float = 30.0,
        clock: Callable[[], float] = time.time,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.token_url = token_url
        self.client_id = client_id
        self.client_secret = client_secret
        self.scope = scope
        self.margin = margin
        self.clock = clock
        self.state_file = state_file
        self._configured = refresh_token
        self._refresh_token = self._load(refresh_token)
        self._access: str | None = None
        self._expires_at = 0.0
        self._lock = threading.Lock()
        self._http = httpx.Client(timeout=timeout, transport=transport)

    def _load(self, configured: str) -> str:
        try:
            saved = json.loads(self.state_file.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return configured
        if saved.get("configured") == _fingerprint(configured) and saved.get("refresh_token"):
            return str(saved["refresh_token"])
        log.info("the configured refresh token changed; using it instead of the saved one")
        return configured

    def _save(self) -> None:
        self.state_file.parent.mkdir(parents=True, exist_ok=True)
        body = json.dumps(
            {
                "refresh_token": self._refresh_token,
                "configured": _fingerprint(self._configured),
                "saved_at": self.clock(),
            }
        ).encode()
        atomic_write(self.state_file, body)
        os.chmod(self.state_file, 0o600)

    @property
    def expires_at(self) -> float:
        return self._expires_at

    def token(self) -> str:
        """A valid access token, refreshed first when it expires within ``margin`` seconds."""
        with self._lock:
            if self._access is None or self.clock() >= self._expires_at - self.margin:
                self._refresh()
            assert self._access is not None
            return self._access

    def invalidate(self) -> None:
        """The server refused the token (revoked early): the next ``token()`` refreshes."""
        with self._lock:
            self._access = None

    def _refresh(self) -> None:
        data = {
            "grant_type": "refresh_token",
            "refresh_token": self._refresh_token,
            "client_id": self.client_id,
        }
        if self.client_secret:
            data["client_secret"] = self.client_secret
        if self.scope:
            data["scope"] = self.scope
        try:
            response = self._http.post(self.token_url, data=data)
        except httpx.HTTPError as exc:
            raise OAuthError(f"token endpoint {self.token_url} unreachable: {exc}") from exc
        body = _json(response)
        if response.status_code >= 500:
            raise OAuthError(f"token endpoint answered {response.status_code}")
        if response.status_code != 200 or "access_token" not in body:
            error = str(body.get("error") or f"HTTP {response.status_code}")
            detail = str(body.get("error_description") or "")[:300]
            message = f"token refresh refused: {error}" + (f" ({detail})" if detail else "")
            if error in REFUSALS or response.status_code in (400, 401, 403):
                raise OAuthRefused(message)
            raise OAuthError(message)
        self._access = str(body["access_token"])
        self._expires_at = self.clock() + float(body.get("expires_in", 3600))
        rotated = body.get("refresh_token")
        if rotated and rotated != self._refresh_token:
            self._refresh_token = str(rotated)
            self._save()
            log.info("refresh token rotated by the provider; saved the new one")

    def close(self) -> None:
        self._http.close()


def _json(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}
