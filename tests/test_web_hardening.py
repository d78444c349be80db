"""The web listener as an attacker who reaches the port would try it, on the real daemon
process: correctly signed but malformed webhook bodies (400, never a 5xx a vendor retries),
clients that go away mid-body (no ERROR), slow bodies (408), too many connections (503); plus
the bearer-guarded ``/status`` and ``/metrics`` and webhooks on a listener of their own."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import socket
import time
from collections.abc import Iterator

import httpx
import pytest

from daemon import config as config_mod
from daemon import web
from daemon.runtime import Daemon
from tests import fakes
from tests.daemon_proc import (
    DaemonProcess,
    free_port,
    module_daemon,
    toml_table,
    wait_until,
    write_config,
)
from tests.servers import serve

# One daemon serves the whole module: its tests stay on one pytest-xdist worker.
pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("test_web_hardening")]

SECRET = "rossum-hook-secret"
K_TOKEN = "konfuzio-callback-token-0123456789"
D_TOKEN = "deepopinion-webhook-token-0123456789"
STATUS_TOKEN = "prometheus-scrape-token-0123"
CONCURRENCY = 4
HEADER_TIMEOUT = 4
DEEP = b"[" * 10_000 + b"]" * 10_000


def webhook_profiles(nowhere: str) -> str:
    """Rossum (signed), Konfuzio and DeepOpinion (a token in the path) profiles whose vendor is
    ``nowhere``: no document is routed to them, their webhooks are what is tried."""
    return "\n".join(
        [
            toml_table(
                "[vendors.rossum_main]",
                {
                    "kind": "rossum",
                    "base_url": f"{nowhere}/api/v1",
                    "username": "u@example.com",
                    "password": "secret",
                    "queue": 1,
                    "webhook_secret": SECRET,
                },
            ),
            toml_table(
                "[vendors.konfuzio_main]",
                {
                    "kind": "konfuzio",
                    "base_url": nowhere,
                    "username": "u@example.com",
                    "password": "secret",
                    "project": 1,
                    "callback_token": K_TOKEN,
                },
            ),
            toml_table(
                "[vendors.deepopinion_main]",
                {
                    "kind": "deepopinion",
                    "base_url": nowhere,
                    "email": "u@example.com",
                    "password": "secret",
                    "organization_id": 1,
                    "project_id": 1,
                    "model_id": 1,
                    "hitl": True,
                    "webhook_token": D_TOKEN,
                },
            ),
        ]
    )


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonProcess]:
    root = tmp_path_factory.mktemp("hardening")
    hook_port = free_port()
    web_keys = (
        f'webhook_listen = "127.0.0.1:{hook_port}"\nbody_timeout = 1.5\n'
        f'limit_concurrency = {CONCURRENCY}\nstatus_tokens = ["{STATUS_TOKEN}"]\n'
        f"header_timeout = {HEADER_TIMEOUT}\n"
    )
    nowhere = f"http://127.0.0.1:{free_port()}"
    path = write_config(root, extra=webhook_profiles(nowhere), web=web_keys)
    with module_daemon(DaemonProcess(path)) as proc:
        proc.hook_url = f"http://127.0.0.1:{hook_port}"  # type: ignore[attr-defined]
        yield proc


def rossum_signature(body: bytes) -> dict[str, str]:
    """The header a Rossum hook with ``SECRET`` signs ``body`` with."""
    signature = hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    return {"X-Rossum-Signature-SHA256": f"sha256={signature}"}


def rossum(daemon: DaemonProcess, body: bytes) -> httpx.Response:
    return httpx.post(
        f"{daemon.hook_url}/webhooks/rossum_main",
        content=body,
        headers=rossum_signature(body),
        timeout=30,
    )


def hook(annotation: object) -> bytes:
    return json.dumps(
        {"event": "annotation_status", "action": "changed", "annotation": annotation}
    ).encode()


@pytest.mark.parametrize(
    "body",
    [
        DEEP,
        b'{"event": "annotation_status", "annotation": ' + DEEP + b"}",
        hook({"url": "http://[bad]/api/v1/annotations/1"}),
        hook({"url": "https://x.rossum.app/api/v1/annotations/" + "9" * 5000}),
        hook({"url": "https://x.rossum.app/api/v1/annotations/\u0663"}),  # an Arabic-Indic 3
        b'{"event": "annotation_status", "annotation": {"id": ' + b"9" * 5000 + b"}}",
        b"\xff\xfe not UTF-8",
    ],
    ids=[
        "deep",
        "deep-inside",
        "bad-url",
        "5000-digits-url",
        "unicode-digit",
        "5000-digits",
        "bytes",
    ],
)
def test_signed_malformed_rossum_bodies_get_400(daemon, body):
    answer = rossum(daemon, body)
    assert answer.status_code == 400, answer.text


def test_signed_rossum_hook_is_still_accepted(daemon):
    answer = rossum(daemon, hook({"id": 12345}))
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"accepted": 1}


@pytest.mark.parametrize(
    ("profile", "tail", "body"),
    [
        ("konfuzio_main", K_TOKEN, json.dumps({"id": "9" * 5000}).encode()),
        ("konfuzio_main", K_TOKEN, json.dumps({"id": "\u00b2"}).encode()),  # "²".isdigit()
        ("konfuzio_main", K_TOKEN, DEEP),
        ("deepopinion_main", D_TOKEN, DEEP),
        ("deepopinion_main", D_TOKEN, b'{"document_name": ' + DEEP + b"}"),
    ],
)
def test_malformed_bodies_with_the_right_token_get_400(daemon, profile, tail, body):
    answer = httpx.post(f"{daemon.hook_url}/webhooks/{profile}/{tail}", content=body, timeout=30)
    assert answer.status_code == 400, answer.text


def test_an_absurd_callback_path_is_not_a_server_error(daemon):
    for tail in (f"{K_TOKEN}/{'9' * 5000}", f"{K_TOKEN}/\u00b2"):
        answer = httpx.post(f"{daemon.hook_url}/webhooks/konfuzio_main/{tail}", timeout=30)
        assert answer.status_code == 404


def test_webhooks_and_admin_have_their_own_listeners(daemon):
    assert httpx.get(f"{daemon.url}/healthz").status_code == 200
    assert httpx.get(f"{daemon.hook_url}/healthz").status_code == 404
    assert httpx.get(f"{daemon.hook_url}/status").status_code == 404
    assert httpx.post(f"{daemon.url}/webhooks/rossum_main", content=b"{}").status_code == 404


def test_status_and_metrics_need_the_token_health_does_not(daemon):
    for path in ("/status", "/metrics"):
        refused = httpx.get(f"{daemon.url}{path}")
        assert refused.status_code == 401
        assert refused.headers["www-authenticate"].startswith("Bearer")
        wrong = httpx.get(f"{daemon.url}{path}", headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401
        auth = {"Authorization": f"Bearer {STATUS_TOKEN}"}
        assert httpx.get(f"{daemon.url}{path}", headers=auth).status_code == 200
    assert httpx.get(f"{daemon.url}/healthz").status_code == 200
    assert httpx.get(f"{daemon.url}/readyz").status_code == 200


def _partial_post(port: int, path: str, sent: bytes = b"{") -> socket.socket:
    """A connection that declares a body and sends only its start."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    head = f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n".encode()
    sock.sendall(head + sent)
    return sock


def test_a_slow_body_gets_408(daemon):
    port = int(daemon.hook_url.rsplit(":", 1)[1])
    started = time.monotonic()
    with _partial_post(port, "/webhooks/rossum_main") as sock:
        answer = sock.recv(4096)
    assert answer.startswith(b"HTTP/1.1 408"), answer
    assert 1.0 < time.monotonic() - started < 20


def test_a_client_gone_mid_body_is_no_error_in_the_log(daemon):
    port = int(daemon.hook_url.rsplit(":", 1)[1])
    for _ in range(20):
        _partial_post(port, "/webhooks/rossum_main").close()
    assert rossum(daemon, hook({"id": 7})).status_code == 200  # served on after the aborts
    log = daemon.log()
    assert "ERROR" not in log and "Traceback" not in log, log[-3000:]


def test_a_connection_without_a_complete_head_is_closed_after_header_timeout(daemon):
    """Slow headers (slowloris): a header byte now and then never completes a request."""
    port = int(daemon.hook_url.rsplit(":", 1)[1])
    started = time.monotonic()
    closed = False
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(b"POST /webhooks/rossum_main HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        sock.settimeout(0.5)
        while not closed and time.monotonic() - started < HEADER_TIMEOUT + 20:
            try:
                closed = sock.recv(1024) == b""
            except TimeoutError:
                sock.sendall(b"x")
            except ConnectionResetError:
                closed = True
    assert closed
    assert time.monotonic() - started > HEADER_TIMEOUT - 0.5


def test_over_limit_concurrency_the_server_answers_503(daemon):
    port = int(daemon.hook_url.rsplit(":", 1)[1])
    held = []  # slow headers: uvicorn has no timeout for them, the connection cap bounds them
    for _ in range(CONCURRENCY):
        sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        sock.sendall(b"POST /webhooks/rossum_main HTTP/1.1\r\nHost: x\r\n")
        held.append(sock)
    try:

        def refused() -> bool:
            try:
                answer = httpx.post(f"{daemon.hook_url}/webhooks/rossum_main", timeout=5)
            except httpx.HTTPError:
                return False
            return answer.status_code == 503

        wait_until(refused, 10, interval=0.05, what="a 503 while the slots are held")
    finally:
        for sock in held:
            sock.close()
    wait_until(lambda: rossum(daemon, hook({"id": 8})).status_code == 200, 10, what="served again")


# --------------------------------------------------------------------------- the last line


@pytest.fixture
def scripted(tmp_path, monkeypatch) -> Iterator[Daemon]:
    """An in-process daemon with the scripted fake vendor (web app served separately)."""
    fakes.install(monkeypatch)
    raw = {
        "store": {"url": f"sqlite:///{tmp_path}/d.db", "blob_dir": str(tmp_path / "blobs")},
        "web": {"enabled": False},
        "vendors": {"a": {"kind": "scripted"}},
        "routes": [{"vendor": "a"}],
    }
    daemon = Daemon(config_mod.validate(raw, tmp_path / "test.toml"))
    daemon.open()
    daemon.start()
    yield daemon
    daemon.stop()


def test_any_error_of_a_connectors_parse_webhook_is_a_400_logged_once(scripted, caplog):
    def buggy(call):
        return call.body.decode()["document"]  # TypeError: a connector's bug

    scripted.vendors["a"].parse_webhook = buggy  # type: ignore[method-assign]
    caplog.set_level(logging.DEBUG, logger="daemon.web")
    with serve(web.create_app(scripted)) as url:
        answers = [httpx.post(f"{url}/webhooks/a", content=b"{}").status_code for _ in range(3)]
    assert answers == [400, 400, 400]
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and errors[0].exc_info is not None
    assert "TypeError" in errors[0].getMessage()


# --------------------------------------------------------------------------- configuration


def test_status_tokens_from_a_file_and_the_callback_address_of_the_webhook_listener(tmp_path):
    tokens = tmp_path / "status-tokens"
    tokens.write_text(f"# Prometheus\n{STATUS_TOKEN}\n\nsecond-token-for-grafana\n")
    raw = {"web": {"listen": "10.0.0.5:8080", "webhook_listen": "0.0.0.0:8443",
                   "status_tokens_file": str(tokens)}}  # fmt: skip
    loaded = config_mod.validate(raw, tmp_path / "c.toml")
    web_settings = loaded.core.web
    assert [t.get_secret_value() for t in web_settings.status_tokens] == [
        STATUS_TOKEN,
        "second-token-for-grafana",
    ]
    assert STATUS_TOKEN in loaded.secrets  # redacted from logs like every secret
    assert web_settings.callback_base() == "http://127.0.0.1:8443"
    with pytest.raises(config_mod.ConfigError) as short:
        config_mod.validate({"web": {"status_tokens": ["short"]}}, tmp_path / "c.toml")
    assert "web.status_tokens: each token must have at least 16 characters" in str(short.value)
    with pytest.raises(config_mod.ConfigError) as bad:
        config_mod.validate({"web": {"webhook_listen": "8443"}}, tmp_path / "c.toml")
    assert "web.webhook_listen: expected host:port" in str(bad.value)
