"""Auth strategies: how an ``HttpClient`` authenticates, renews and what it must never show.

An ``Auth`` gives the headers for a request to the configured origin, says on a 401 whether
trying once more can help (having renewed), and lists every secret it holds so messages can
be scrubbed of them::

    Auth
    ├── StaticHeaders       fixed headers (an API key header, Gini's X-User-Identifier …)
    │   ├── StaticToken     "<scheme> <token>"; a 401 is bad configuration: AuthFailed at once
    │   └── BasicAuth       HTTP Basic (trusted-backend clients)
    └── TokenSession        a token obtained on first use, renewed before it expires and once
        │                   on a 401; concurrent 401s renew once (the others reuse the result)
        ├── LoginSession    a login callable returning a token (Rossum, Konfuzio)
        ├── JwtBearer       a login returning a JWT, renewed before its ``exp`` (DeepOpinion)
        └── OAuth2          password, client-credentials and refresh-token grants; a rotated
                            refresh token is persisted (Gini, the mailbox's XOAUTH2)

Refusals by a token endpoint or login (``invalid_grant``, wrong password) raise ``AuthFailed``;
network trouble and 5xx stay transient, as everywhere in the HTTP kit.
"""

from __future__ import annotations

import abc
import base64
import binascii
import hashlib
import json
import logging
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import ClassVar, Literal

import httpx
from pydantic import SecretStr

from connectors.errors import AuthFailed, DocrelayError, TransientError
from connectors.fsutil import atomic_write
from connectors.http import HttpClient

log = logging.getLogger(__name__)

HISTORY = 64
"""Tokens remembered for scrubbing after they were replaced (older ones have long expired)."""


def _plain(value: str | SecretStr | None) -> str | None:
    return value.get_secret_value() if isinstance(value, SecretStr) else value


class Auth(abc.ABC):
    """The interface ``HttpClient`` drives. Implementations MUST be thread-safe."""

    refused: ClassVar[str] = "refused the credentials"
    """How a 401 reads in the message when renewing was not possible."""
    refused_again: ClassVar[str] = "refused the renewed credentials"
    """How a 401 reads after one renewal."""

    @abc.abstractmethod
    def headers(self) -> Mapping[str, str]:
        """Headers for the next request (may log in first). Callers MUST NOT change them."""

    def renew(self, sent: Mapping[str, str]) -> bool:
        """A request sent with ``sent`` got 401: True when sending it once more can succeed
        (the credentials were renewed, here or by another thread meanwhile)."""
        return False

    def secrets(self) -> Iterable[str]:
        """Every secret value this strategy holds or held (for scrubbing)."""
        return ()

    def close(self) -> None:
        """End a session at the server where that is possible (best effort)."""


class StaticHeaders(Auth):
    """Fixed headers; ``secrets`` names the values among them that must never be shown."""

    def __init__(self, headers: Mapping[str, str], *, secrets: Iterable[str] = ()) -> None:
        self._headers = dict(headers)
        self._secret_values = [s for s in secrets if s]

    def headers(self) -> Mapping[str, str]:
        return self._headers

    def secrets(self) -> Iterable[str]:
        return self._secret_values


class StaticToken(StaticHeaders):
    """A long-lived API token sent as ``<scheme> <token>`` (``Bearer``, ``Token``, ``BEARER``…)."""

    refused: ClassVar[str] = "refused the token"

    def __init__(
        self,
        token: str | SecretStr,
        *,
        scheme: str = "Bearer",
        header: str = "Authorization",
        extra: Mapping[str, str] | None = None,
    ) -> None:
        value = _plain(token) or ""
        if not value:
            raise ValueError("the token must not be empty")
        super().__init__(
            {header: f"{scheme} {value}" if scheme else value, **(extra or {})},
            secrets=[value],
        )


class BasicAuth(StaticHeaders):
    """HTTP Basic (``username:password``), with optional extra headers such as Gini's
    ``X-User-Identifier``."""

    def __init__(
        self,
        username: str,
        password: str | SecretStr,
        *,
        extra: Mapping[str, str] | None = None,
    ) -> None:
        secret = _plain(password) or ""
        encoded = basic_credentials(username, secret)
        super().__init__(
            {"Authorization": f"Basic {encoded}", **(extra or {})}, secrets=[secret, encoded]
        )


def basic_credentials(username: str, password: str) -> str:
    """The base64 part of a Basic ``Authorization`` header."""
    return base64.b64encode(f"{username}:{password}".encode()).decode("ascii")


class TokenSession(Auth):
    """A token obtained on first use and kept until it is about to expire or a 401 says so.

    ``_obtain`` (one per subclass) returns the token and its lifetime in seconds (None:
    unknown, kept until a 401). It runs under the lock, so concurrent callers wait for one
    login instead of each making their own. The token is renewed ``margin`` seconds before
    it expires (at most half its lifetime before, so a short-lived token is not renewed on
    every request).
    """

    refused_again: ClassVar[str] = "refused a new login"

    def __init__(
        self,
        *,
        scheme: str = "Bearer",
        header: str = "Authorization",
        margin: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.scheme = scheme
        self.header = header
        self.margin = margin
        self.clock = clock
        self._lock = threading.Lock()
        self._token: str | None = None
        self._headers: dict[str, str] = {}
        self._renew_at: float | None = None
        self._held: deque[str] = deque(maxlen=HISTORY)
        self.obtained = 0
        """How many tokens this session obtained (logins, grants)."""

    @abc.abstractmethod
    def _obtain(self) -> tuple[str, float | None]:
        """A new token and its lifetime in seconds; raises AuthFailed when refused."""

    def token(self) -> str:
        """A valid token, obtained or renewed first when needed."""
        with self._lock:
            return self._current()

    def _current(self) -> str:
        token = self._token
        if token is None or (self._renew_at is not None and self.clock() >= self._renew_at):
            token, lifetime = self._obtain()
            self.obtained += 1
            self._set(token, lifetime)
        return token

    def _set(self, token: str, lifetime: float | None) -> None:
        if lifetime is not None and lifetime <= 0:
            # Expired on arrival (clocks disagree, or a bogus expires_in): renewing at once
            # would log in on every request; the server's 401 says when it really ends.
            log.warning("a new token is already expired by our clock; renewing it on a 401 only")
            lifetime = None
        now = self.clock()
        self._token = token
        self._held.append(token)
        self._headers = {self.header: f"{self.scheme} {token}" if self.scheme else token}
        self._renew_at = (
            None if lifetime is None else now + lifetime - min(self.margin, lifetime / 2)
        )

    def headers(self) -> Mapping[str, str]:
        with self._lock:
            self._current()
            return self._headers

    def renew(self, sent: Mapping[str, str]) -> bool:
        with self._lock:
            if self._token is not None and sent.get(self.header) == self._headers.get(self.header):
                self._token = None  # the next headers() obtains a new one, once
        return True

    def invalidate(self) -> None:
        """The server refused the current token (revoked early): the next use renews it."""
        with self._lock:
            self._token = None

    def renew_in(self) -> float:
        """Seconds until the token is due for renewal (0 when there is none; inf when its
        lifetime is unknown)."""
        with self._lock:
            if self._token is None:
                return 0.0
            if self._renew_at is None:
                return float("inf")
            return max(0.0, self._renew_at - self.clock())

    def secrets(self) -> Iterable[str]:
        return list(self._held)

    def close(self) -> None:
        with self._lock:
            token, self._token = self._token, None
        if token is not None:
            self._end(token)

    def _end(self, token: str) -> None:
        """End the session ``token`` belongs to at the server (nothing by default)."""


class LoginSession(TokenSession):
    """A session token from ``login()`` (which raises AuthFailed when refused); re-login once
    on a 401, ``logout(token)`` on close (best effort)."""

    def __init__(
        self,
        login: Callable[[], str],
        *,
        logout: Callable[[str], None] | None = None,
        secrets: Iterable[str | SecretStr | None] = (),
        scheme: str = "Bearer",
        header: str = "Authorization",
        lifetime: float | None = None,
        margin: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(scheme=scheme, header=header, margin=margin, clock=clock)
        self._login = login
        self._logout = logout
        self._lifetime = lifetime
        self._configured = [v for v in (_plain(s) for s in secrets) if v]

    def _obtain(self) -> tuple[str, float | None]:
        return self._login(), self._lifetime

    def secrets(self) -> Iterable[str]:
        return [*self._configured, *self._held]

    def _end(self, token: str) -> None:
        if self._logout is None:
            return
        try:
            self._logout(token)
        except (DocrelayError, httpx.HTTPError) as exc:
            log.debug("logout failed: %s", type(exc).__name__)


def jwt_expiry(token: str) -> float | None:
    """The ``exp`` claim of a JWT (epoch seconds), read without verifying the signature: we
    only need to know when to log in again, the server checks the token."""
    try:
        payload = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (IndexError, ValueError, binascii.Error, UnicodeDecodeError):
        return None
    exp = claims.get("exp") if isinstance(claims, dict) else None
    if isinstance(exp, int | float) and not isinstance(exp, bool):
        return float(exp)
    return None


class JwtBearer(LoginSession):
    """A login returning a JWT, renewed ``margin`` seconds before its ``exp`` and once on a 401.

    The lifetime is taken from ``exp`` minus the wall clock once, when the token arrives, and
    counted on the monotonic ``clock`` from then on, so a wall-clock jump does not matter.
    """

    def __init__(
        self,
        login: Callable[[], str],
        *,
        logout: Callable[[str], None] | None = None,
        secrets: Iterable[str | SecretStr | None] = (),
        scheme: str = "Bearer",
        header: str = "Authorization",
        margin: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(
            login,
            logout=logout,
            secrets=secrets,
            scheme=scheme,
            header=header,
            margin=margin,
            clock=clock,
        )
        self.wall = wall

    def _obtain(self) -> tuple[str, float | None]:
        token = self._login()
        exp = jwt_expiry(token)
        if exp is None:
            log.info("the login answered a token without exp; it is renewed on a 401 only")
            return token, None
        return token, exp - self.wall()


Grant = Literal["password", "client_credentials", "refresh_token"]


def _fingerprint(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


class OAuth2(TokenSession):
    """OAuth2 access tokens from a token endpoint (RFC 6749).

    ``grant`` is what the configuration provides: ``password`` (``username``/``password``),
    ``client_credentials``, or ``refresh_token`` (a refresh token obtained once by a person).
    A refresh token the endpoint hands out is used for later tokens; with the password grant a
    refused refresh falls back to the password. The client authenticates with HTTP Basic
    (``client_auth="basic"``, RFC 6749's recommendation) or in the form (``"body"``); a client
    without a secret always sends its id in the form.

    Providers such as Microsoft rotate refresh tokens: each refresh may return a new one and
    the old one stops working after a while. With ``state_file`` the newest is kept there
    (mode 0600, written atomically) and preferred over the configured one, unless the
    configured one changed since (an operator re-authorised the account: theirs wins).

    ``grant_in_query`` repeats ``grant_type`` in the query string (``/oauth/token?grant_type=
    password``), as Gini's user centre documents it; the form keeps it too (RFC 6749).
    """

    refused_again: ClassVar[str] = "refused a refreshed token"

    def __init__(
        self,
        token_url: str,
        *,
        grant: Grant,
        client_id: str,
        client_secret: str | SecretStr | None = None,
        username: str | None = None,
        password: str | SecretStr | None = None,
        refresh_token: str | SecretStr | None = None,
        scope: str | None = None,
        extra: Mapping[str, str] | None = None,
        client_auth: Literal["basic", "body"] = "basic",
        grant_in_query: bool = False,
        state_file: Path | None = None,
        refresh_margin: float = 300.0,
        name: str = "the token endpoint",
        timeout: float = 30.0,
        max_retries: int = 2,
        scheme: str = "Bearer",
        header: str = "Authorization",
        transport: httpx.BaseTransport | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        super().__init__(scheme=scheme, header=header, margin=refresh_margin, clock=clock)
        self.token_url = token_url
        self.grant = grant
        self.client_id = client_id
        self.client_secret = _plain(client_secret)
        self.username = username
        self.password = _plain(password)
        self.scope = scope
        self.extra = dict(extra or {})
        self.client_auth = client_auth
        self.grant_in_query = grant_in_query
        self.state_file = state_file
        self.name = name
        configured = _plain(refresh_token)
        if grant == "password" and (not username or not self.password):
            raise ValueError("the password grant needs username and password")
        if grant == "refresh_token" and not configured:
            raise ValueError("the refresh_token grant needs a refresh token")
        self._configured = configured
        self._refresh: str | None = self._load(configured) if configured else None
        self._old_refresh: deque[str] = deque(maxlen=HISTORY)
        self._http = HttpClient(
            token_url,
            name=name,
            timeout=timeout,
            max_retries=max_retries,
            secrets=[self.client_secret, self.password, configured, self._refresh],
            transport=transport,
            clock=clock,
            sleep=sleep,
            jitter=jitter,
        )

    # ------------------------------------------------------------------ state file

    def _load(self, configured: str) -> str:
        if self.state_file is None:
            return configured
        try:
            saved = json.loads(self.state_file.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return configured
        if (
            isinstance(saved, dict)
            and saved.get("configured") == _fingerprint(configured)
            and saved.get("refresh_token")
        ):
            return str(saved["refresh_token"])
        log.info("the configured refresh token changed; using it instead of the saved one")
        return configured

    def _save(self) -> None:
        if self.state_file is None or self._configured is None or self._refresh is None:
            return
        body = json.dumps(
            {
                "refresh_token": self._refresh,
                "configured": _fingerprint(self._configured),
                "saved_at": time.time(),
            }
        ).encode()
        atomic_write(self.state_file, body)  # a private temp file (0600) renamed into place
        self.state_file.chmod(0o600)

    # ------------------------------------------------------------------ grants

    def access_token(self) -> str:
        """A valid access token (for protocols outside HTTP, such as IMAP's XOAUTH2)."""
        return self.token()

    def _obtain(self) -> tuple[str, float | None]:
        if self._refresh is not None:
            try:
                return self._request(
                    {"grant_type": "refresh_token", "refresh_token": self._refresh}
                )
            except AuthFailed:
                if self.grant == "refresh_token":
                    raise
                log.info(
                    "%s refused the refresh token; asking with the %s grant", self.name, self.grant
                )
                self._refresh = None
        form: dict[str, str] = {"grant_type": self.grant}
        if self.grant == "password":
            assert self.username is not None and self.password is not None
            form.update(username=self.username, password=self.password)
        return self._request(form)

    def _request(self, form: dict[str, str]) -> tuple[str, float | None]:
        grant = form["grant_type"]
        if self.scope:
            form["scope"] = self.scope
        form.update(self.extra)
        headers: dict[str, str] | None = None
        if self.client_secret and self.client_auth == "basic":
            encoded = basic_credentials(self.client_id, self.client_secret)
            headers = {"Authorization": f"Basic {encoded}"}
        else:
            form["client_id"] = self.client_id
            if self.client_secret:
                form["client_secret"] = self.client_secret
        refusals = [s for s in range(400, 500) if s not in (408, 429)]
        params = {"grant_type": grant} if self.grant_in_query else None
        response = self._http.request(
            "POST",
            self.token_url,
            params=params,
            data=form,
            headers=headers,
            allow=refusals,
            auth=False,
        )
        if response.status_code >= 400:
            self._refused(grant, response)
        body = self._http.json_object(response, "POST", self.token_url)
        access = body.get("access_token")
        if not isinstance(access, str) or not access:
            raise TransientError(f"{self.name} answered the {grant} grant without an access token")
        expires_in = body.get("expires_in", 3600)
        try:
            lifetime: float | None = float(expires_in)
        except (TypeError, ValueError):
            lifetime = 3600.0
        rotated = body.get("refresh_token")
        if isinstance(rotated, str) and rotated and rotated != self._refresh:
            if self._refresh is not None:
                self._old_refresh.append(self._refresh)
            self._refresh = rotated
            self._http.add_secrets(rotated)
            if grant == "refresh_token" and self.grant == "refresh_token":
                self._save()
                log.info("%s rotated the refresh token; saved the new one", self.name)
        return access, lifetime

    def _refused(self, grant: str, response: httpx.Response) -> None:
        try:
            body = response.json()
        except ValueError:
            body = {}
        body = body if isinstance(body, dict) else {}
        error = str(body.get("error") or f"HTTP {response.status_code}")
        detail = str(body.get("error_description") or "")[:300]
        message = f"{self.name} refused the {grant} grant: {error}" + (
            f" ({detail})" if detail else ""
        )
        for secret in sorted(self.secrets(), key=len, reverse=True):
            message = message.replace(secret, "***")
        raise AuthFailed(self._http.scrub(message))

    def secrets(self) -> Iterable[str]:
        values = [self.client_secret, self.password, self._configured, self._refresh]
        return [*(v for v in values if v), *self._old_refresh, *self._held]

    def close(self) -> None:
        super().close()
        self._http.close()
