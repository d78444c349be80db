"""The real daemon process fuzzed: schemathesis holds the API to the OpenAPI document it serves
(``/api/v1/openapi.json``), with a valid token and without: no 5xx, and only the status
codes, media types, bodies and headers it names; hypothesis throws
random bytes, JSON of random shapes, bad signatures and unknown profiles at the webhooks; slow
clients hold connections while ``/healthz`` must keep answering. What ``test_web_hardening``
tries case by case (deep JSON, slow heads, the connection cap) is not repeated here."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.schemas import APIOperation
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from daemon import openapi
from tests.daemon_proc import DaemonProcess, free_port, module_daemon, write_config
from tests.test_web_hardening import (
    D_TOKEN,
    K_TOKEN,
    STATUS_TOKEN,
    rossum_signature,
    webhook_profiles,
)

pytestmark = pytest.mark.e2e

API_TOKEN = "erp-fuzz-token-0123456789abcdef"
MAX_BODY = 4096
BODY_TIMEOUT = 3.0
CONCURRENCY = 30
FUZZ = settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    database=None,
)
HOOK_FUZZ = settings(FUZZ, max_examples=150)


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonProcess]:
    """One listener for everything (API, status, webhooks), so a slow webhook client competes
    with the health checks for the same port."""
    root = tmp_path_factory.mktemp("fuzz")
    extra = (
        webhook_profiles(f"http://127.0.0.1:{free_port()}")
        + f"""
[[routes]]
name = "from-api"
match = {{ source = "api" }}
vendor = "local"
destinations = ["outbox"]

[web.api]
tokens = ["{API_TOKEN}"]
max_upload_bytes = 200000
upload_timeout = {BODY_TIMEOUT}
"""
    )
    web = (
        f"max_body_bytes = {MAX_BODY}\nbody_timeout = {BODY_TIMEOUT}\n"
        f'limit_concurrency = {CONCURRENCY}\nstatus_tokens = ["{STATUS_TOKEN}"]\n'
    )
    with module_daemon(DaemonProcess(write_config(root, extra=extra, web=web))) as proc:
        yield proc


@pytest.fixture(scope="module")
def http(daemon: DaemonProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=daemon.url, timeout=30) as client:
        yield client


STATUS_PATHS = {"/status", "/metrics"}
CHECKS = [
    not_a_server_error,
    status_code_conformance,  # the document is truthful: each answer is a status it names,
    content_type_conformance,  # of the media type,
    response_schema_conformance,  # the body's shape
    response_headers_conformance,  # and the headers it says
]


def test_the_api_answers_no_server_error_and_as_its_document_says(daemon):
    """Every operation of the document the daemon serves, generated requests each sent twice:
    with the operation's valid token, and with a wrong one. (Lazy ``schemathesis.pytest``
    loading does not run on pytest 9, so each operation's strategy is driven here.)"""
    schema = schemathesis.openapi.from_url(f"{daemon.url}/api/v1/openapi.json", timeout=10)
    operations = [result.ok() for result in schema.get_all_operations()]
    described = {
        f"{method.upper()} {path}"
        for path, methods in openapi.document()["paths"].items()
        for method in methods
    }
    assert {op.label for op in operations} == described - {f"GET {openapi.PATH}"}  # not itself
    for operation in operations:
        token = STATUS_TOKEN if operation.path in STATUS_PATHS else API_TOKEN
        fuzz(operation, daemon.url, token)


def fuzz(operation: APIOperation, url: str, token: str) -> None:
    @FUZZ
    @given(case=operation.as_strategy())
    def run(case: schemathesis.Case) -> None:
        for offered in (token, "not-a-token-0123456789"):
            case.call_and_validate(
                base_url=url,
                headers={"Authorization": f"Bearer {offered}"},
                checks=CHECKS,
                timeout=30,
            )

    run()


@pytest.mark.parametrize("document_id", [2**31, 10**30])
def test_an_id_past_the_stores_integer_range_is_no_such_document(http, document_id):
    """Found by the fuzzing: such an id reached the database, which failed on it (a 500)."""
    api = {"Authorization": f"Bearer {API_TOKEN}"}
    assert http.get(f"/api/v1/documents/{document_id}", headers=api).status_code == 404
    correction = http.post(
        f"/api/v1/documents/{document_id}/corrections", json={"confirm": ["x"]}, headers=api
    )
    assert correction.status_code == 404, correction.text
    page = {"Authorization": f"Bearer {STATUS_TOKEN}"}
    for path in (f"/documents/{document_id}", f"/documents/{document_id}/page.png"):
        assert http.get(path, headers=page).status_code == 404


def test_the_served_document_is_the_one_in_the_code(http):
    answer = http.get("/api/v1/openapi.json")
    assert answer.status_code == 200
    assert answer.json() == json.loads(json.dumps(openapi.document()))


# --------------------------------------------------------------------------- webhooks

PROFILES = ["rossum_main", "konfuzio_main", "deepopinion_main"]
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)
TOKEN_HOOKS = [
    ("konfuzio_main", K_TOKEN),
    ("konfuzio_main", f"{K_TOKEN}/42"),
    ("deepopinion_main", D_TOKEN),
]
ROSSUM_KEYS = ["event", "action", "annotation", "request_id", "timestamp"]
"""What Rossum's ``parse_webhook`` reads: random values under the keys it knows reach further
than random objects, which stop at the first check."""


def post_hook(http: httpx.Client, path: str, body: bytes, **headers: str) -> httpx.Response:
    answer = http.post(path, content=body, headers=headers)
    assert answer.status_code < 500, (path, body[:200], answer.status_code, answer.text)
    return answer


@HOOK_FUZZ
@given(
    profile=st.sampled_from([*PROFILES, "no_such_profile"]),
    tail=st.sampled_from(["", K_TOKEN, f"{K_TOKEN}/17", D_TOKEN, "x/y"]),
    body=st.binary(max_size=2000),
)
def test_random_bytes_are_never_a_server_error(http, profile, tail, body):
    path = f"/webhooks/{profile}" + (f"/{tail}" if tail else "")
    answer = post_hook(http, path, body, **rossum_signature(body))
    if profile == "no_such_profile":
        assert answer.status_code == 404


@HOOK_FUZZ
@given(
    payload=st.one_of(
        JSON,
        st.fixed_dictionaries({}, optional=dict.fromkeys(ROSSUM_KEYS, JSON)),
        st.fixed_dictionaries(
            {"event": st.sampled_from(["annotation_status", "annotation_content"])},
            optional=dict.fromkeys(ROSSUM_KEYS[1:], JSON),
        ),
    )
)
def test_signed_rossum_hooks_of_any_shape_are_never_a_server_error(http, payload):
    body = json.dumps(payload).encode()
    post_hook(http, "/webhooks/rossum_main", body, **rossum_signature(body))


@HOOK_FUZZ
@given(
    target=st.sampled_from(TOKEN_HOOKS),
    payload=st.one_of(
        JSON,
        st.fixed_dictionaries({}, optional=dict.fromkeys(["id", "document_name", "event"], JSON)),
    ),
)
def test_token_hooks_of_any_shape_are_never_a_server_error(http, target, payload):
    profile, tail = target
    post_hook(http, f"/webhooks/{profile}/{tail}", json.dumps(payload).encode())


@HOOK_FUZZ
@given(
    signature=st.one_of(
        st.none(),
        st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=80).map(str.strip),
        st.text(alphabet="0123456789abcdef", min_size=64, max_size=64).map("sha256={}".format),
    ),
    profile=st.text(st.characters(categories=["L", "N"], include_characters="-_."), min_size=1),
)
def test_bad_signatures_and_unknown_profiles_are_refused(http, signature, profile):
    body = b'{"event": "annotation_status", "annotation": {"id": 1}}'
    headers = {} if signature is None else {"X-Rossum-Signature-SHA256": signature}
    assert post_hook(http, "/webhooks/rossum_main", body, **headers).status_code == 401
    if profile not in PROFILES and profile not in (".", ".."):
        assert post_hook(http, f"/webhooks/{profile}", body).status_code == 404


def test_bodies_over_the_limit_are_413_with_or_without_a_length(http):
    big = b"{" + b" " * MAX_BODY + b"}"
    for profile in PROFILES:
        assert post_hook(http, f"/webhooks/{profile}", big).status_code == 413

        def chunked() -> Iterator[bytes]:  # no Content-Length: counted as it arrives
            for _ in range(MAX_BODY // 1000 + 2):
                yield b" " * 1000

        assert post_hook(http, f"/webhooks/{profile}/{D_TOKEN}", chunked()).status_code == 413
    # a declared length over the limit is refused before a byte of the body is sent
    with socket.create_connection(("127.0.0.1", int(http.base_url.port)), timeout=10) as sock:
        sock.sendall(
            f"POST /webhooks/rossum_main HTTP/1.1\r\nHost: x\r\nContent-Length: {10**12}\r\n\r\n"
            .encode()
        )  # fmt: skip
        assert sock.recv(4096).startswith(b"HTTP/1.1 413")


# --------------------------------------------------------------------------- slow clients


def _slow(port: int, path: str, chunked: bool) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    length = "Transfer-Encoding: chunked" if chunked else "Content-Length: 2000"
    sock.sendall(f"POST {path} HTTP/1.1\r\nHost: x\r\n{length}\r\n\r\n".encode())
    return sock


def _dribble(sock: socket.socket, chunked: bool) -> None:
    try:
        sock.sendall(b"1\r\n{\r\n" if chunked else b"{")
    except OSError:
        pass  # answered (408) and closed: that is the point


def _answer(sock: socket.socket) -> bytes:
    sock.settimeout(BODY_TIMEOUT + 10)
    try:
        return sock.recv(4096)
    except ConnectionResetError:
        return b""


def test_health_answers_while_slow_clients_hold_connections(daemon, http):
    """A third of the connection cap dribbling webhook bodies (a byte every 0.2 s,
    length given or chunked) and as many that never send a byte of their body: /healthz
    answers 200 quickly all along, and each slow client is answered 408 by ``body_timeout``."""
    paths = [f"/webhooks/{p}" for p in PROFILES] + [f"/webhooks/deepopinion_main/{D_TOKEN}"]
    held = CONCURRENCY // 3
    dribblers = [(_slow(daemon.port, paths[i % 4], i % 2 == 0), i % 2 == 0) for i in range(held)]
    silent = [_slow(daemon.port, paths[i % 4], i % 2 == 1) for i in range(held)]
    started = time.monotonic()
    slowest = 0.0
    try:
        while time.monotonic() - started < BODY_TIMEOUT - 0.5:
            for sock, chunked in dribblers:
                _dribble(sock, chunked)
            asked = time.monotonic()
            answer = http.get("/healthz", timeout=5)
            slowest = max(slowest, time.monotonic() - asked)
            assert answer.status_code == 200, answer.text
            time.sleep(0.2)
        assert slowest < 1.0, f"/healthz took {slowest:.2f}s while slow clients held connections"
        answers = [_answer(sock) for sock, _ in dribblers] + [_answer(sock) for sock in silent]
    finally:
        for sock in [s for s, _ in dribblers] + silent:
            sock.close()
    assert all(a.startswith(b"HTTP/1.1 408") for a in answers), answers
    assert time.monotonic() - started < BODY_TIMEOUT + 5
    assert http.get("/healthz").status_code == 200


def test_the_fuzzing_left_no_error_in_the_log(daemon):
    """Last in the module: a connector bug that the webhook path turned into a 400 is still
    logged as an ERROR once (``web._parse_failed``), and would show here."""
    log = daemon.log()
    assert "ERROR" not in log and "Traceback" not in log, log[-3000:]
