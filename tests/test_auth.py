"""Auth strategies (``connectors.auth``) driven by the HTTP kit.

A fake token endpoint and API answer through ``httpx.MockTransport``; an injected clock stands
in for time, so expiry is tested without waiting. One test runs the OAuth2 refresh grant
against the loopback identity provider the mailbox tests use.
"""

from __future__ import annotations

import base64
import json
import stat
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import httpx
import pytest

from connectors.auth import (
    BasicAuth,
    JwtBearer,
    LoginSession,
    OAuth2,
    StaticToken,
    jwt_expiry,
)
from connectors.errors import AuthFailed, TransientError
from connectors.http import HttpClient
from connectors.ratelimit import reset_shared_limiters
from tests.idp import IdentityProvider
from tests.servers import serve

API = "https://api.vendor.example/v1"
TOKEN_URL = "https://login.vendor.example/oauth/token"


class Clock:
    def __init__(self) -> None:
        self.now = 5000.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture(autouse=True)
def _fresh_limiters() -> Iterator[None]:
    reset_shared_limiters()
    yield
    reset_shared_limiters()


@pytest.fixture
def clock() -> Clock:
    return Clock()


class Api:
    """An API that accepts the tokens in ``valid``; records the Authorization it saw."""

    def __init__(self) -> None:
        self.valid: set[str] = set()
        self.seen: list[str] = []
        self.lock = threading.Lock()
        self.barrier: threading.Barrier | None = None

    def handler(self, request: httpx.Request) -> httpx.Response:
        auth = request.headers.get("Authorization", "")
        with self.lock:
            self.seen.append(auth)
            ok = auth in self.valid
        if not ok and self.barrier is not None:
            self.barrier.wait(timeout=5)  # every worker holds its 401 before anyone renews
        return httpx.Response(200 if ok else 401, json={"detail": "ok" if ok else "Invalid token."})


def api_client(api: Api, auth: Any, clock: Clock) -> HttpClient:
    return HttpClient(
        API,
        name="Vendor",
        auth=auth,
        transport=httpx.MockTransport(api.handler),
        clock=clock,
        sleep=clock.sleep,
    )


# --------------------------------------------------------------------------- static


@pytest.mark.parametrize("scheme", ["Bearer", "Token", "BEARER"])
def test_static_token_schemes(scheme: str, clock: Clock) -> None:
    api = Api()
    api.valid.add(f"{scheme} abc")
    made = api_client(api, StaticToken("abc", scheme=scheme), clock)
    assert made.request("GET", "x").status_code == 200
    assert api.seen == [f"{scheme} abc"]


def test_a_static_token_refused_is_auth_failed_without_a_retry(clock: Clock) -> None:
    api = Api()
    with pytest.raises(AuthFailed, match="refused the token"):
        api_client(api, StaticToken("stale"), clock).request("GET", "x")
    assert len(api.seen) == 1


def test_basic_auth_with_extra_headers() -> None:
    auth = BasicAuth("client-id", "s3cret", extra={"X-User-Identifier": "user-42"})
    headers = auth.headers()
    encoded = headers["Authorization"].removeprefix("Basic ")
    assert base64.b64decode(encoded) == b"client-id:s3cret"
    assert headers["X-User-Identifier"] == "user-42"
    assert {"s3cret", encoded} <= set(auth.secrets())


# --------------------------------------------------------------------------- login session


def test_login_session_logs_in_once_and_reuses_the_token(clock: Clock) -> None:
    api = Api()
    api.valid.add("Bearer t1")
    logins: list[str] = []

    def login() -> str:
        logins.append("t1")
        return "t1"

    made = api_client(api, LoginSession(login), clock)
    for _ in range(5):
        made.request("GET", "x")
    assert logins == ["t1"]


def test_concurrent_401s_trigger_one_login(clock: Clock) -> None:
    api = Api()
    counter = iter(range(1, 100))
    lock = threading.Lock()

    def login() -> str:
        with lock:
            token = f"t{next(counter)}"
        api.valid = {f"Bearer {token}"}  # a new login ends the old session
        return token

    session = LoginSession(login)
    made = api_client(api, session, clock)
    made.request("GET", "x")
    api.valid = set()  # the session expired at the server
    workers = 6
    api.barrier = threading.Barrier(workers)
    results: list[int] = []

    def work() -> None:
        results.append(made.request("GET", "x").status_code)

    threads = [threading.Thread(target=work) for _ in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert results == [200] * workers
    assert session.obtained == 2  # the first login and one re-login for all six


def test_a_refused_login_and_a_second_401(clock: Clock) -> None:
    api = Api()

    def refused() -> str:
        raise AuthFailed("Vendor refused the login")

    with pytest.raises(AuthFailed, match="refused the login"):
        api_client(api, LoginSession(refused), clock).request("GET", "x")
    assert api.seen == []
    tokens = iter(["a", "b", "c"])
    session = LoginSession(lambda: next(tokens))
    with pytest.raises(AuthFailed, match="refused a new login"):
        api_client(api, session, clock).request("GET", "x")
    assert api.seen == ["Bearer a", "Bearer b"]


def test_logout_on_close_and_tokens_are_secrets(clock: Clock) -> None:
    ended: list[str] = []
    session = LoginSession(
        iter(["one", "two"]).__next__, logout=ended.append, secrets=["the-password"]
    )
    assert session.token() == "one"
    session.invalidate()
    assert session.token() == "two"
    assert {"one", "two", "the-password"} <= set(session.secrets())
    session.close()
    assert ended == ["two"]


# --------------------------------------------------------------------------- JWT


def jwt(claims: dict[str, Any]) -> str:
    def part(value: dict[str, Any]) -> str:
        raw = json.dumps(value).encode()
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    return f"{part({'alg': 'HS256', 'typ': 'JWT'})}.{part(claims)}.c2lnbmF0dXJl"


def test_jwt_expiry_is_read_without_verifying() -> None:
    assert jwt_expiry(jwt({"exp": 1_900_000_000, "sub": "x"})) == 1_900_000_000
    assert jwt_expiry(jwt({"sub": "x"})) is None
    assert jwt_expiry("not-a-jwt") is None
    assert jwt_expiry("a.%%%.c") is None


def test_jwt_bearer_logs_in_again_before_exp(clock: Clock) -> None:
    wall = [1_800_000_000.0]
    issued: list[str] = []

    def login() -> str:
        token = jwt({"exp": wall[0] + 600, "n": len(issued)})
        issued.append(token)
        return token

    auth = JwtBearer(login, margin=60, clock=clock, wall=lambda: wall[0])
    first = auth.token()
    clock.now += 530
    wall[0] += 530
    assert auth.token() == first  # 70 s left: more than the margin
    clock.now += 15
    wall[0] += 15
    assert auth.token() != first  # 55 s left: renewed before exp
    assert len(issued) == 2


def test_jwt_bearer_wall_clock_jumps_do_not_matter(clock: Clock) -> None:
    wall = [1_800_000_000.0]
    auth = JwtBearer(lambda: jwt({"exp": wall[0] + 600}), clock=clock, wall=lambda: wall[0])
    first = auth.token()
    wall[0] += 3600  # the wall clock jumps an hour; the monotonic clock does not
    assert auth.token() == first


def test_jwt_bearer_renews_once_on_401(clock: Clock) -> None:
    api = Api()
    tokens = iter([jwt({"exp": 1e12, "n": 1}), jwt({"exp": 1e12, "n": 2})])
    auth = JwtBearer(lambda: next(tokens), clock=clock)
    made = api_client(api, auth, clock)
    with pytest.raises(AuthFailed, match="refused a new login"):
        made.request("GET", "x")
    assert len(set(api.seen)) == 2 and auth.obtained == 2


# --------------------------------------------------------------------------- OAuth2


class TokenEndpoint:
    """A token endpoint: client credentials, password and refresh grants, rotating refresh
    tokens; each request's form and Authorization header are recorded."""

    def __init__(self, *, expires_in: float = 3600, rotate: bool = True) -> None:
        self.expires_in = expires_in
        self.rotate = rotate
        self.refresh_tokens: set[str] = set()
        self.forms: list[dict[str, str]] = []
        self.auth: list[str | None] = []
        self.failures: list[int] = []
        self.echo = False
        self.n = 0

    def handler(self, request: httpx.Request) -> httpx.Response:
        form = dict(parse_qsl(request.content.decode()))
        self.forms.append(form)
        self.auth.append(request.headers.get("Authorization"))
        if self.failures:
            status = self.failures.pop(0)
            if self.echo:  # a crash page showing what it was sent
                return httpx.Response(status, text=f"crashed on {request.content.decode()}")
            return httpx.Response(status, json={"error": "server_error"})
        grant = form.get("grant_type")
        if grant == "refresh_token" and form.get("refresh_token") not in self.refresh_tokens:
            described = f"unknown refresh token {form.get('refresh_token')}"
            return httpx.Response(
                400, json={"error": "invalid_grant", "error_description": described}
            )
        if grant == "password" and form.get("password") != "pw":
            return httpx.Response(400, json={"error": "invalid_grant"})
        self.n += 1
        body: dict[str, Any] = {
            "access_token": f"at-{self.n}",
            "token_type": "bearer",
            "expires_in": self.expires_in,
        }
        if grant in ("password", "refresh_token") and self.rotate:
            self.refresh_tokens.discard(form.get("refresh_token", ""))
            body["refresh_token"] = f"rt-{self.n}"
            self.refresh_tokens.add(body["refresh_token"])
        return httpx.Response(200, json=body)


def oauth(endpoint: TokenEndpoint, clock: Clock, **options: Any) -> OAuth2:
    settings: dict[str, Any] = {
        "grant": "client_credentials",
        "client_id": "cid",
        "client_secret": "csecret",
        "transport": httpx.MockTransport(endpoint.handler),
        "clock": clock,
        "sleep": clock.sleep,
        **options,
    }
    return OAuth2(TOKEN_URL, **settings)


def test_client_credentials_with_basic_client_auth_refreshed_before_expiry(
    clock: Clock,
) -> None:
    endpoint = TokenEndpoint(expires_in=3600)
    auth = oauth(endpoint, clock, refresh_margin=300)
    assert auth.token() == "at-1"
    assert endpoint.auth == ["Basic " + base64.b64encode(b"cid:csecret").decode()]
    assert endpoint.forms[0] == {"grant_type": "client_credentials"}  # no secret in the form
    clock.now += 3299
    assert auth.token() == "at-1"
    assert auth.renew_in() == pytest.approx(1)
    clock.now += 1
    assert auth.token() == "at-2"  # 300 s before expiry
    assert len(endpoint.forms) == 2


def test_a_short_lifetime_is_not_renewed_on_every_request(clock: Clock) -> None:
    endpoint = TokenEndpoint(expires_in=60)
    auth = oauth(endpoint, clock, refresh_margin=300)
    for _ in range(5):
        assert auth.token() == "at-1"
        clock.now += 5
    clock.now += 6
    assert auth.token() == "at-2"  # at half its lifetime


def test_password_grant_then_refresh_then_back_to_the_password(clock: Clock) -> None:
    endpoint = TokenEndpoint(expires_in=100)
    auth = oauth(endpoint, clock, grant="password", username="u", password="pw", refresh_margin=10)
    assert auth.token() == "at-1"
    assert endpoint.forms[0] == {"grant_type": "password", "username": "u", "password": "pw"}
    clock.now += 95
    assert auth.token() == "at-2"
    assert endpoint.forms[1] == {"grant_type": "refresh_token", "refresh_token": "rt-1"}
    endpoint.refresh_tokens.clear()  # the provider forgot our refresh token
    clock.now += 95
    assert auth.token() == "at-3"
    assert [f["grant_type"] for f in endpoint.forms] == [
        "password",
        "refresh_token",
        "refresh_token",
        "password",
    ]


def test_rotated_refresh_tokens_are_persisted_0600_and_a_new_configured_one_wins(
    clock: Clock, tmp_path: Path
) -> None:
    endpoint = TokenEndpoint()
    endpoint.refresh_tokens.add("rt-configured")
    state = tmp_path / "state" / "oauth2.json"
    first = oauth(
        endpoint, clock, grant="refresh_token", refresh_token="rt-configured", state_file=state
    )
    assert first.token() == "at-1"
    saved = json.loads(state.read_text())
    assert saved["refresh_token"] == "rt-1"
    assert stat.S_IMODE(state.stat().st_mode) == 0o600
    assert not [p for p in state.parent.iterdir() if p != state]  # no temp file left

    # A restart with the same configuration uses the rotated token (the configured one is gone).
    again = oauth(
        endpoint, clock, grant="refresh_token", refresh_token="rt-configured", state_file=state
    )
    assert again.token() == "at-2"
    assert endpoint.forms[-1]["refresh_token"] == "rt-1"

    # An operator re-authorised the account: the newly configured token wins over the saved one.
    endpoint.refresh_tokens = {"rt-new-from-operator"}
    fresh = oauth(
        endpoint,
        clock,
        grant="refresh_token",
        refresh_token="rt-new-from-operator",
        state_file=state,
    )
    assert fresh.token() == "at-3"
    assert endpoint.forms[-1]["refresh_token"] == "rt-new-from-operator"
    assert json.loads(state.read_text())["refresh_token"] == "rt-3"


def test_invalid_grant_is_auth_failed_and_scrubbed(clock: Clock) -> None:
    endpoint = TokenEndpoint()
    auth = oauth(endpoint, clock, grant="refresh_token", refresh_token="rt-revoked-secret")
    with pytest.raises(AuthFailed, match="invalid_grant") as caught:
        auth.token()
    assert "rt-revoked-secret" not in str(caught.value)
    assert "refresh_token grant" in str(caught.value)


def test_a_failing_token_endpoint_is_transient(clock: Clock) -> None:
    endpoint = TokenEndpoint()
    endpoint.failures = [503, 503, 503]
    with pytest.raises(TransientError, match="503"):
        oauth(endpoint, clock, max_retries=2).token()
    endpoint.failures = [502]
    assert oauth(endpoint, clock, max_retries=2).token() == "at-1"


def test_oauth2_on_the_api_renews_once_on_401(clock: Clock) -> None:
    endpoint = TokenEndpoint()
    auth = oauth(endpoint, clock)
    api = Api()
    made = api_client(api, auth, clock)
    api.valid = {"Bearer at-2"}  # the first token was revoked early
    assert made.request("GET", "x").status_code == 200
    assert api.seen == ["Bearer at-1", "Bearer at-2"]
    api.valid = set()
    with pytest.raises(AuthFailed, match="refused a refreshed token"):
        made.request("GET", "x")
    assert {"at-1", "at-2", "at-3", "csecret"} <= set(made.secrets())


def test_oauth2_needs_what_its_grant_needs() -> None:
    with pytest.raises(ValueError, match="username and password"):
        OAuth2(TOKEN_URL, grant="password", client_id="c")
    with pytest.raises(ValueError, match="needs a refresh token"):
        OAuth2(TOKEN_URL, grant="refresh_token", client_id="c")


def test_oauth2_refresh_grant_against_a_real_identity_provider(tmp_path: Path) -> None:
    provider = IdentityProvider(expires_in=600)
    first = provider.issue_refresh_token()
    with serve(provider.app) as url:
        auth = OAuth2(
            f"{url}/token",
            grant="refresh_token",
            client_id=provider.client_id,
            refresh_token=first,
            client_auth="body",
            state_file=tmp_path / "oauth2.json",
        )
        token = auth.access_token()
        assert token in provider.access_tokens
        saved = json.loads((tmp_path / "oauth2.json").read_text())["refresh_token"]
        assert saved in provider.refresh_tokens and first not in provider.refresh_tokens
        auth.invalidate()
        assert auth.access_token() != token
        assert provider.refreshes == [first, saved]
        auth.close()


def test_a_token_expired_on_arrival_is_not_renewed_on_every_request(clock: Clock) -> None:
    """Clock skew must not turn into a login per request: such a token lasts until a 401."""
    wall = [1_800_000_000.0]
    logins: list[int] = []

    def login() -> str:
        logins.append(1)
        return jwt({"exp": wall[0] - 120, "n": len(logins)})

    auth = JwtBearer(login, clock=clock, wall=lambda: wall[0])
    first = auth.token()
    clock.now += 10
    assert auth.token() == first and logins == [1]
    auth.renew({"Authorization": f"Bearer {first}"})
    assert auth.token() != first and len(logins) == 2


def test_rotated_refresh_tokens_are_scrubbed_from_token_endpoint_errors(clock: Clock) -> None:
    endpoint = TokenEndpoint(expires_in=100)
    endpoint.refresh_tokens.add("rt-start")
    auth = oauth(endpoint, clock, grant="refresh_token", refresh_token="rt-start", max_retries=0)
    auth.token()
    clock.now += 99
    endpoint.failures = [500]
    endpoint.echo = True
    with pytest.raises(TransientError) as caught:
        auth.token()
    assert "rt-1" not in str(caught.value) and "rt-1" not in (caught.value.detail or "")
    assert "***" in (caught.value.detail or "")


def test_grant_in_query_repeats_the_grant_type_in_the_query(clock: Clock) -> None:
    endpoint = TokenEndpoint(expires_in=100)
    queries: list[str] = []
    inner = endpoint.handler

    def handler(request: httpx.Request) -> httpx.Response:
        queries.append(request.url.query.decode())
        return inner(request)

    auth = OAuth2(
        TOKEN_URL,
        grant="password",
        client_id="cid",
        client_secret="csecret",
        username="u",
        password="pw",
        grant_in_query=True,
        refresh_margin=10,
        transport=httpx.MockTransport(handler),
        clock=clock,
        sleep=clock.sleep,
    )
    assert auth.token() == "at-1"
    clock.now += 95
    assert auth.token() == "at-2"
    assert queries == ["grant_type=password", "grant_type=refresh_token"]
    assert [f["grant_type"] for f in endpoint.forms] == ["password", "refresh_token"]
    assert oauth(endpoint, clock).grant_in_query is False
