"""An OAuth2 identity provider on loopback: the token endpoint (refresh grant, rotating refresh
tokens the way Microsoft does) and the introspection endpoint Dovecot's oauth2 passdb asks."""

from __future__ import annotations

import secrets
import threading
import time
from dataclasses import dataclass, field
from urllib.parse import parse_qsl

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route


async def _form(request: Request) -> dict[str, str]:
    """The url-encoded form (without python-multipart, which the project does not need)."""
    pairs = parse_qsl((await request.body()).decode(), keep_blank_values=True)
    return dict(pairs)


@dataclass
class IdentityProvider:
    """State of the emulated provider; ``app`` serves it."""

    user: str = "alice"
    client_id: str = "docrelay-test"
    expires_in: float = 3600.0
    rotate: bool = True
    refresh_tokens: set[str] = field(default_factory=set)
    access_tokens: dict[str, float] = field(default_factory=dict)
    """access token → expiry (epoch seconds)."""
    refreshes: list[str] = field(default_factory=list)
    """The refresh tokens presented, in order."""
    lock: threading.Lock = field(default_factory=threading.Lock)

    def issue_refresh_token(self) -> str:
        token = "rt-" + secrets.token_urlsafe(12)
        with self.lock:
            self.refresh_tokens.add(token)
        return token

    def revoke_everything(self) -> None:
        with self.lock:
            self.refresh_tokens.clear()
            self.access_tokens.clear()

    async def token(self, request: Request) -> JSONResponse:
        form = await _form(request)
        presented = str(form.get("refresh_token", ""))
        with self.lock:
            self.refreshes.append(presented)
            if form.get("grant_type") != "refresh_token":
                return JSONResponse({"error": "unsupported_grant_type"}, 400)
            if form.get("client_id") != self.client_id:
                return JSONResponse({"error": "invalid_client"}, 401)
            if presented not in self.refresh_tokens:
                return JSONResponse(
                    {"error": "invalid_grant", "error_description": "refresh token unknown"}, 400
                )
            access = "at-" + secrets.token_urlsafe(12)
            self.access_tokens[access] = time.time() + self.expires_in
            body = {"access_token": access, "token_type": "Bearer", "expires_in": self.expires_in}
            if self.rotate:
                self.refresh_tokens.discard(presented)
                rotated = "rt-" + secrets.token_urlsafe(12)
                self.refresh_tokens.add(rotated)
                body["refresh_token"] = rotated
        return JSONResponse(body)

    async def introspect(self, request: Request) -> JSONResponse:
        form = await _form(request)
        token = str(form.get("token", ""))
        with self.lock:
            expiry = self.access_tokens.get(token)
        if expiry is None or expiry < time.time():
            return JSONResponse({"active": False})
        return JSONResponse({"active": True, "username": self.user})

    @property
    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/token", self.token, methods=["POST"]),
                Route("/introspect", self.introspect, methods=["POST"]),
            ]
        )
