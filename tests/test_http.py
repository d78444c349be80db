"""The HTTP kit (``connectors.http``): retries and backoff, statuses, guards, host pinning,
scrubbing and the total deadline.

Unit tests answer through ``httpx.MockTransport`` with a virtual clock (nothing sleeps); the
deadline is also checked against a real server whose body trickles.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections import deque
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any
from urllib.parse import quote_plus

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import Route

from connectors.auth import BasicAuth, LoginSession, StaticToken
from connectors.errors import (
    AuthFailed,
    DocrelayError,
    RateLimited,
    TerminalError,
    TransientError,
)
from connectors.http import STATUS_ERRORS, HttpClient, json_depth_ok
from connectors.ratelimit import reset_shared_limiters
from connectors.retry import Backoff, parse_retry_after
from daemon.pipeline import retry as pipeline_retry
from tests.servers import serve

BASE = "https://api.vendor.example/v2"
TOKEN = "tok-0123456789abcdef-SECRET"
PASSWORD = "pw: Very&Secret/4711"


class Clock:
    """Monotonic virtual time; ``sleep`` advances it and records the wait."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


class Server:
    """A scripted vendor: each request takes the next outcome (a status, a Response or an
    exception to raise), else answers 200 ``{"ok": true}``; every request is recorded."""

    def __init__(self) -> None:
        self.script: deque[Any] = deque()
        self.requests: list[httpx.Request] = []

    def then(self, *outcomes: Any) -> Server:
        self.script.extend(outcomes)
        return self

    def handler(self, request: httpx.Request) -> httpx.Response:
        request.read()
        self.requests.append(request)
        if self.script:
            outcome = self.script.popleft()
            if isinstance(outcome, BaseException):
                raise outcome
            if callable(outcome):
                return outcome(request)
            if isinstance(outcome, int):
                return httpx.Response(outcome, json={"detail": f"scripted {outcome}"})
            return outcome
        return httpx.Response(200, json={"ok": True})


@pytest.fixture(autouse=True)
def _fresh_limiters() -> Iterator[None]:
    reset_shared_limiters()
    yield
    reset_shared_limiters()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def server() -> Server:
    return Server()


def client(server: Server, clock: Clock, **options: Any) -> HttpClient:
    settings: dict[str, Any] = {
        "name": "Vendor",
        "auth": StaticToken(TOKEN),
        "transport": httpx.MockTransport(server.handler),
        "clock": clock,
        "sleep": clock.sleep,
        "jitter": lambda: 1.0,
        **options,
    }
    return HttpClient(settings.pop("base_url", BASE), **settings)


# --------------------------------------------------------------------------- retries


def test_r16_retry_after_in_seconds_is_honoured(server: Server, clock: Clock) -> None:
    server.then(httpx.Response(429, headers={"Retry-After": "30"}))
    assert client(server, clock).request("GET", "items").status_code == 200
    assert clock.sleeps == [30.0]


def test_retry_after_as_an_http_date_is_honoured(server: Server, clock: Clock) -> None:
    when = format_datetime(datetime.now(UTC) + timedelta(seconds=45), usegmt=True)
    server.then(httpx.Response(503, headers={"Retry-After": when}))
    client(server, clock).request("GET", "items")
    (slept,) = clock.sleeps
    assert 43 <= slept <= 45


def test_r16_retry_after_is_capped(server: Server, clock: Clock) -> None:
    server.then(httpx.Response(429, headers={"Retry-After": "999999"}))
    made = client(server, clock, backoff=Backoff(retry_after_max=60))
    made.request("GET", "items")
    assert clock.sleeps == [60.0]


def test_parse_retry_after_forms() -> None:
    now = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
    assert parse_retry_after("120", now=now) == 120
    assert parse_retry_after("Thu, 01 Jan 2026 12:01:30 GMT", now=now) == 90
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=now) == 0  # in the past
    assert parse_retry_after("-3", now=now) == 0
    assert parse_retry_after("soon") is None
    assert parse_retry_after("nan") is None
    assert parse_retry_after(None) is None


def test_r15_a_5xx_burst_succeeds_on_attempt_six_with_backoff_gaps(
    server: Server, clock: Clock
) -> None:
    """RELIABILITY 15: 503 x 5 then 200; the gaps follow the backoff within its jitter."""
    rng = random.Random(15)
    server.then(503, 503, 503, 503, 503)
    made = client(server, clock, max_retries=6, jitter=rng.random, backoff=Backoff(0.5, 30))
    assert made.request("GET", "items").status_code == 200
    assert len(server.requests) == 6
    assert len(clock.sleeps) == 5
    for attempt, slept in enumerate(clock.sleeps, start=1):
        ceiling = min(30, 0.5 * 2 ** (attempt - 1))
        assert ceiling / 2 <= slept <= ceiling


def test_backoff_bounds_and_jitter() -> None:
    policy = Backoff(initial=1, maximum=10)
    assert [policy.delay(n, jitter=lambda: 0.0) for n in (1, 2, 3, 4, 5, 6)] == [
        0.5,
        1,
        2,
        4,
        5,
        5,
    ]
    assert [policy.delay(n, jitter=lambda: 1.0) for n in (1, 2, 3, 4, 5)] == [1, 2, 4, 8, 10]
    rng = random.Random(3)
    delays = [policy.delay(4, jitter=rng.random) for _ in range(200)]
    assert all(4 <= d <= 8 for d in delays) and max(delays) - min(delays) > 3
    assert policy.delay(1, retry_after=7, jitter=lambda: 0.0) == 7  # never before Retry-After
    assert policy.delay(1, retry_after=10_000, jitter=lambda: 0.0) == 60  # capped


def test_the_pipeline_retries_with_the_same_policy() -> None:
    one, two = random.Random(9), random.Random(9)
    for attempt in range(1, 8):
        assert pipeline_retry.backoff(attempt, initial=2, maximum=300, rng=one) == Backoff(
            2, 300
        ).delay(attempt, jitter=two.random)
    assert pipeline_retry.retry_delay(
        1, initial=2, maximum=300, retry_after=500, retry_after_max=120
    ) == pytest.approx(120)
    assert pipeline_retry.poll_delay(0, first=2, maximum=60) == 2
    assert pipeline_retry.poll_delay(2, first=2, maximum=60) == 4.5
    assert pipeline_retry.poll_delay(50, first=2, maximum=60) == 60


def test_5xx_forever_is_transient_after_max_retries(server: Server, clock: Clock) -> None:
    server.then(*[502] * 10)
    with pytest.raises(TransientError, match="502") as caught:
        client(server, clock, max_retries=3).request("GET", "items")
    assert not isinstance(caught.value, RateLimited)
    assert len(server.requests) == 4
    assert clock.sleeps == [0.5, 1.0, 2.0]
    assert caught.value.detail is not None and "scripted 502" in caught.value.detail


def test_429_forever_is_rate_limited_with_the_retry_after_sent(
    server: Server, clock: Clock
) -> None:
    server.then(*[httpx.Response(429, headers={"Retry-After": "90"})] * 10)
    with pytest.raises(RateLimited, match="throttled us") as caught:
        client(server, clock, max_retries=2).request("GET", "items")
    assert caught.value.retry_after == 90
    assert len(server.requests) == 3


def test_network_errors_are_retried(server: Server, clock: Clock) -> None:
    server.then(httpx.ConnectError("refused"), httpx.ReadTimeout("slow"))
    assert client(server, clock).request("GET", "items").json() == {"ok": True}
    assert len(server.requests) == 3


# --------------------------------------------------------------------------- non-replayable


def upload(made: HttpClient) -> httpx.Response:
    return made.request("POST", "uploads", files={"f": ("a.pdf", b"%PDF-1.4 x")}, replayable=False)


def test_an_upload_is_not_resent_after_the_body_went_out(server: Server, clock: Clock) -> None:
    server.then(httpx.ReadTimeout("no answer"))
    with pytest.raises(TransientError, match="after the request was sent"):
        upload(client(server, clock))
    assert len(server.requests) == 1


def test_an_upload_answered_5xx_is_not_resent(server: Server, clock: Clock) -> None:
    server.then(503)
    with pytest.raises(TransientError, match="503"):
        upload(client(server, clock))
    assert len(server.requests) == 1


def test_a_vendor_can_name_more_statuses_that_mean_nothing_was_done(
    server: Server, clock: Clock
) -> None:
    """A 503 from a vendor that answers it before doing any work (DeepOpinion) is resent;
    a 502 still is not (it may come after the work was done)."""
    server.then(503, 503)
    made = client(server, clock, unprocessed_statuses=(429, 503))
    assert upload(made).status_code == 200 and len(server.requests) == 3
    server.then(502)
    with pytest.raises(TransientError, match="502"):
        upload(made)
    assert len(server.requests) == 4


def test_an_upload_is_resent_when_the_server_cannot_have_acted(
    server: Server, clock: Clock
) -> None:
    session = LoginSession(iter(["first-token", "second-token"]).__next__)
    server.then(
        httpx.ConnectError("never connected"),
        httpx.Response(429, headers={"Retry-After": "2"}),
        401,
    )
    made = client(server, clock, auth=session)
    assert upload(made).status_code == 200
    assert len(server.requests) == 4
    assert all(
        r.content.endswith(b"--\r\n") and b"%PDF-1.4 x" in r.content for r in server.requests
    )
    assert server.requests[-1].headers["Authorization"] == "Bearer second-token"


# --------------------------------------------------------------------------- statuses


def test_401_renews_once_then_succeeds(server: Server, clock: Clock) -> None:
    logins = iter(["one", "two"])
    session = LoginSession(lambda: next(logins))
    server.then(401)
    made = client(server, clock, auth=session)
    assert made.request("GET", "items").status_code == 200
    assert [r.headers["Authorization"] for r in server.requests] == ["Bearer one", "Bearer two"]
    assert session.obtained == 2
    assert clock.sleeps == []  # a re-login is not a retry: no backoff


def test_a_second_401_after_renewing_is_auth_failed(server: Server, clock: Clock) -> None:
    session = LoginSession(iter(["one", "two", "three"]).__next__)
    server.then(401, 401, 401)
    with pytest.raises(AuthFailed, match="refused a new login"):
        client(server, clock, auth=session).request("GET", "items")
    assert len(server.requests) == 2 and session.obtained == 2


def test_401_with_a_static_token_is_auth_failed_at_once(server: Server, clock: Clock) -> None:
    server.then(401)
    with pytest.raises(AuthFailed, match="refused the token: GET /v2/items → 401"):
        client(server, clock).request("GET", "items")
    assert len(server.requests) == 1


def test_403_is_auth_failed_and_not_retried(server: Server, clock: Clock) -> None:
    server.then(403)
    with pytest.raises(AuthFailed, match="denied access"):
        client(server, clock).request("GET", "items")
    assert len(server.requests) == 1


@pytest.mark.parametrize("status", [400, 404, 409, 413, 422])
def test_other_4xx_are_terminal_with_the_body(server: Server, clock: Clock, status: int) -> None:
    server.then(status)
    with pytest.raises(TerminalError, match=f"refused the request: GET /v2/items → {status}") as e:
        client(server, clock).request("GET", "items")
    assert e.value.detail == f'{{"detail":"scripted {status}"}}'
    assert len(server.requests) == 1


def test_allowed_statuses_are_returned(server: Server, clock: Clock) -> None:
    server.then(404, 409)
    made = client(server, clock)
    assert made.request("GET", "items/1", allow=(404,)).status_code == 404
    assert made.request("POST", "items/1/start", allow=(409,)).status_code == 409


def test_a_connector_adjusts_the_status_table(server: Server, clock: Clock) -> None:
    server.then(409, 423, 423)
    made = client(
        server,
        clock,
        status_errors={**STATUS_ERRORS, 409: TransientError},
        retry_statuses={423},
    )
    with pytest.raises(TransientError, match="answered unexpectedly: GET /v2/items → 409"):
        made.request("GET", "items")
    assert made.request("GET", "items").status_code == 200  # 423 twice, retried, then 200
    assert len(server.requests) == 4


# --------------------------------------------------------------------------- guards


def test_json_nested_too_deep_is_classified_never_a_recursion_error(
    server: Server, clock: Clock
) -> None:
    deep = b"[" * 100_000 + b"]" * 100_000
    unclosed = b'{"a":' * 50_000
    server.then(httpx.Response(200, content=deep), httpx.Response(200, content=unclosed))
    made = client(server, clock)
    for _ in range(2):
        response = made.request("GET", "items")
        with pytest.raises(TransientError, match=r"nested deeper than 64 levels|not JSON"):
            made.json(response, "GET", "items")


def test_json_depth_limit_is_exact(server: Server, clock: Clock) -> None:
    def nested(depth: int) -> bytes:
        return json.dumps(json.loads("[" * depth + "]" * depth)).encode()

    made = client(server, clock, max_json_depth=10, malformed=TerminalError)
    server.then(httpx.Response(200, content=nested(10)), httpx.Response(200, content=nested(11)))
    assert made.json(made.request("GET", "a"), "GET", "a") is not None
    with pytest.raises(TerminalError, match="deeper than 10"):
        made.json(made.request("GET", "b"), "GET", "b")


def reference_depth(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max((reference_depth(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((reference_depth(v) for v in value), default=0)
    return 0


def random_json(rng: random.Random, depth: int) -> Any:
    texts = ["plain", "[[[", "]]}}", '\\"[', "{[}]", "", 'quote " inside', "ü [x]"]
    if depth == 0 or rng.random() < 0.2:
        return rng.choice([rng.choice(texts), rng.randint(0, 9), None, True])
    if rng.random() < 0.5:
        return [random_json(rng, depth - 1) for _ in range(rng.randint(0, 3))]
    return {
        rng.choice(texts) + str(i): random_json(rng, depth - 1) for i in range(rng.randint(0, 3))
    }


def test_json_depth_check_agrees_with_the_parsed_depth() -> None:
    """Brackets inside strings (with and without escaped quotes) neither hide depth nor add it."""
    rng = random.Random(18)
    for _ in range(400):
        value = random_json(rng, rng.randint(1, 12))
        depth = reference_depth(value)
        for ascii_only in (True, False):
            data = json.dumps(value, ensure_ascii=ascii_only).encode()
            for limit in (depth - 1, depth, depth + 1):
                if limit >= 0:
                    assert json_depth_ok(data, limit) == (depth <= limit), (data, limit)


def test_r18_json_larger_than_its_cap_is_refused(server: Server, clock: Clock) -> None:
    server.then(httpx.Response(200, json={"x": "y" * 2000}))
    made = client(server, clock, max_json_bytes=1000)
    with pytest.raises(TransientError, match="at most 1000 are read"):
        made.json(made.request("GET", "items"), "GET", "items")


def test_r18_html_with_200_is_not_json(server: Server, clock: Clock) -> None:
    server.then(httpx.Response(200, text="<html>maintenance</html>" + "x" * 5000))
    made = client(server, clock)
    with pytest.raises(TransientError, match="not JSON") as caught:
        made.json(made.request("GET", "items"), "GET", "items")
    assert caught.value.detail is not None and len(caught.value.detail) <= 500


def test_the_response_cap_stops_reading_a_streamed_body(server: Server, clock: Clock) -> None:
    sent: list[int] = []

    def endless() -> Iterator[bytes]:
        while True:
            sent.append(1)
            yield b"x" * 65536

    server.then(lambda request: httpx.Response(200, content=endless()))
    made = client(server, clock, max_response_bytes=1_000_000, max_retries=0)
    with pytest.raises(TransientError, match="more than 1000000 bytes"):
        made.request("GET", "big")
    assert len(sent) == 1_000_000 // 65536 + 1  # not a chunk more than the cap needed


def test_a_declared_length_over_the_cap_is_refused_unread(server: Server, clock: Clock) -> None:
    read: list[int] = []

    def body() -> Iterator[bytes]:
        read.append(1)
        yield b"{}"

    server.then(
        lambda request: httpx.Response(
            200, content=body(), headers={"Content-Length": str(50 * 1024 * 1024)}
        )
    )
    with pytest.raises(TransientError, match="more than"):
        client(server, clock, max_response_bytes=1024 * 1024).request("GET", "big")
    assert read == []


def test_a_streamed_body_past_the_deadline_is_transient(server: Server, clock: Clock) -> None:
    def trickle() -> Iterator[bytes]:
        for _ in range(100):
            clock.now += 1.0  # a byte per (virtual) second
            yield b" "

    server.then(lambda request: httpx.Response(200, content=trickle()))
    with pytest.raises(TransientError, match="no complete answer within 10s"):
        client(server, clock, timeout=10, max_retries=0).request("GET", "slow")
    assert clock.now - 1000 <= 11


def test_an_upload_body_past_the_deadline_stops_and_is_not_resent(
    server: Server, clock: Clock
) -> None:
    def body() -> Iterator[bytes]:
        for _ in range(100):
            clock.now += 1.0
            yield b"x" * 1024

    made = client(server, clock, timeout=5)
    with pytest.raises(TransientError, match="within 5s after the request was sent"):
        made.request("POST", "uploads", content=body(), replayable=False)
    assert server.requests == []  # the transport never got the whole body


# --------------------------------------------------------------------------- host pinning


def test_urls_on_our_origin_and_below_the_base_path_are_used(server: Server, clock: Clock) -> None:
    made = client(server, clock)
    made.request("GET", f"{BASE}/items?page=2")
    made.request("GET", "/items/3")
    assert [str(r.url) for r in server.requests] == [f"{BASE}/items?page=2", f"{BASE}/items/3"]


@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254/latest/meta-data/",
        "http://127.0.0.1:8080/v2/items",
        "https://attacker.example/v2/items",
        "http://api.vendor.example/v2/items",  # the same host, another scheme
        "https://api.vendor.example/admin/v2x",  # outside the base path
    ],
)
def test_r32_foreign_urls_are_refused_and_nothing_is_sent(
    server: Server, clock: Clock, url: str
) -> None:
    with pytest.raises(TerminalError, match="outside its API"):
        client(server, clock).request("GET", url)
    assert server.requests == []


def test_foreign_urls_can_be_rebased_onto_the_configured_origin(
    server: Server, clock: Clock
) -> None:
    made = client(server, clock, foreign_urls="rebase", rebase_marker="/v2/")
    made.request("GET", "https://legacy.vendor.example/api/v2/tasks/5?x=1")
    with pytest.raises(TerminalError):
        made.request("GET", "http://169.254.169.254/latest/meta-data/")
    assert [str(r.url) for r in server.requests] == [f"{BASE}/tasks/5?x=1"]
    assert {r.url.host for r in server.requests} == {"api.vendor.example"}


def test_r32_an_allowed_host_gets_no_credentials(server: Server, clock: Clock) -> None:
    """RELIABILITY 32: only an allow-listed host is reached, and never with our token."""
    made = client(server, clock, allow_hosts={"files.vendor-cdn.example"})
    made.request("GET", "https://files.vendor-cdn.example/abc.pdf?sig=1")
    made.request("GET", "items")
    with pytest.raises(TerminalError):
        made.request("GET", "http://169.254.169.254/latest/meta-data/")
    cdn, ours = server.requests
    assert cdn.url.host == "files.vendor-cdn.example" and "Authorization" not in cdn.headers
    assert ours.headers["Authorization"] == f"Bearer {TOKEN}"


def test_r32_redirects_are_not_followed(server: Server, clock: Clock) -> None:
    moved = httpx.Response(302, headers={"Location": "http://169.254.169.254/latest/"})
    server.then(moved, moved)
    made = client(server, clock)
    with pytest.raises(TransientError, match="answered unexpectedly: GET /v2/items → 302"):
        made.request("GET", "items")
    assert made.request("GET", "items", allow=(302,)).headers["Location"].startswith("http://169")
    assert {r.url.host for r in server.requests} == {"api.vendor.example"}
    assert len(server.requests) == 2


# --------------------------------------------------------------------------- secrets


def test_r31_secrets_echoed_in_a_body_are_scrubbed(server: Server, clock: Clock) -> None:
    """RELIABILITY 31: no configured secret and no Authorization value in any message."""
    basic = BasicAuth("client-7", PASSWORD, extra={"X-User-Identifier": "user-1"})
    encoded = basic.headers()["Authorization"].removeprefix("Basic ")
    echo = (
        f"Authorization: Basic {encoded} password={PASSWORD} form=password="
        f"{quote_plus(PASSWORD)} webhook=hook-secret-99"
    )
    server.then(*[httpx.Response(500, text=echo)] * 3, httpx.Response(400, text=echo))
    made = client(server, clock, auth=basic, secrets=["hook-secret-99"], max_retries=2)
    errors: list[DocrelayError] = []
    for _ in range(2):
        with pytest.raises(DocrelayError) as caught:
            made.request("GET", "items")
        errors.append(caught.value)
    for error in errors:
        for secret in (PASSWORD, encoded, "Very%26Secret", "hook-secret-99"):
            for text in (str(error), repr(error), error.detail or ""):
                assert secret not in text
        assert "GET /v2/items" in str(error) and "***" in str(error)
        assert error.__cause__ is None
        assert error.__context__ is None or error.__suppress_context__


def test_network_errors_do_not_chain_the_request(server: Server, clock: Clock) -> None:
    server.then(*[httpx.ConnectError(f"boom {TOKEN}")] * 2)
    with pytest.raises(TransientError) as caught:
        client(server, clock, max_retries=1).request("GET", "items")
    assert caught.value.__cause__ is None and caught.value.__suppress_context__
    assert TOKEN not in (caught.value.detail or "") and "ConnectError" in str(caught.value)


# --------------------------------------------------------------------------- rate limit


def test_the_rate_limit_is_shared_per_account_and_host(server: Server, clock: Clock) -> None:
    one = client(server, clock, account="a", rate_limit=5)
    two = client(server, clock, account="a", rate_limit=10)
    other_account = client(server, clock, account="b", rate_limit=5)
    other_host = client(server, clock, account="a", rate_limit=5, base_url="https://x.example")
    assert one.limiter is two.limiter and one.limiter is not None
    assert one.limiter.rate == 5  # the lower rate wins
    assert other_account.limiter is not one.limiter and other_host.limiter is not one.limiter
    start = clock.now
    for _ in range(10):
        one.request("GET", "items")
        two.request("GET", "items")
    assert clock.now - start >= (20 - 5) / 5 - 1e-9


# --------------------------------------------------------------------------- a real server


async def _trickle(request: Request) -> StreamingResponse:
    period = float(request.query_params.get("period", "1"))

    async def body() -> Any:
        for _ in range(1000):
            yield b" "
            await asyncio.sleep(period)

    return StreamingResponse(body(), media_type="application/json")


async def _stall(request: Request) -> StreamingResponse:
    async def body() -> Any:
        yield b"["
        await asyncio.sleep(30)
        yield b"]"

    return StreamingResponse(body(), media_type="application/json")


async def _quick(request: Request) -> JSONResponse:
    return JSONResponse({"ok": True})


SLOW_APP = Starlette(
    routes=[Route("/v1/trickle", _trickle), Route("/v1/stall", _stall), Route("/v1/quick", _quick)]
)


@pytest.fixture(scope="module")
def slow_server() -> Iterator[str]:
    with serve(SLOW_APP) as url:
        yield url


@pytest.mark.parametrize(
    ("path", "timeout"),
    [("trickle?period=1", 2.5), ("trickle?period=0.3", 1.5), ("stall", 1.5)],
)
def test_r17_the_total_deadline_against_a_real_slow_body(
    slow_server: str, path: str, timeout: float
) -> None:
    """RELIABILITY 17: a body trickling at 1 byte/s (or stalling after a byte) surfaces as
    Transient within the timeout + 10 %, though no single read ever times out."""
    made = HttpClient(f"{slow_server}/v1", name="Slow", timeout=timeout, max_retries=0)
    started = time.monotonic()
    with pytest.raises(TransientError, match=f"no complete answer within {timeout:g}s"):
        made.request("GET", path)
    elapsed = time.monotonic() - started
    assert timeout * 0.9 <= elapsed <= timeout * 1.1
    assert made.request("GET", "quick").json() == {"ok": True}  # the client still works
    made.close()
