"""The Rossum client and vendor against a small in-memory Rossum that keeps protocol state.

``FakeRossum`` answers through ``httpx.MockTransport``: logins issue tokens it later checks,
uploads create tasks that finish after a few polls, annotations walk their statuses, and
faults are scripted per route. A virtual clock stands in for time: nothing here sleeps.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from collections import defaultdict, deque
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from email.parser import BytesParser
from email.policy import HTTP
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import httpx
import pytest
from pydantic import ValidationError

from connectors.base import ConnectorContext, Correction, DocumentRef, PollStatus, WebhookRequest
from connectors.errors import (
    AuthFailed,
    DocrelayError,
    NotReady,
    RateLimited,
    TerminalError,
    TransientError,
    WebhookRejected,
)
from connectors.ratelimit import RateLimiter, reset_shared_limiters
from connectors.retry import parse_retry_after
from connectors.vendors.rossum.settings import RossumSettings
from connectors.vendors.rossum.vendor import RossumVendor

BASE = "https://acme.rossum.app/api/v1"
USER = "integration@acme.example"
PASSWORD = "pw-Very-Secret-4711"
STATIC_TOKEN = "statictoken0123456789abcdefghijklmnopqrs"
HOOK_SECRET = "hook-secret-42"
PDF = b"%PDF-1.4\n" + b"0123456789" * 5000 + b"\n%%EOF\n"


# --------------------------------------------------------------------------- the fake


class FakeRossum:
    """Just enough of Rossum's API, with state: tokens, uploads, tasks, annotations."""

    def __init__(self, *, task_polls: int = 1, use_confirmed_state: bool = False) -> None:
        self.tokens: set[str] = set()
        self.logins = 0
        self.uploads = 0
        self.uploaded: list[tuple[str, bytes, dict[str, Any]]] = []
        self.requests: list[tuple[str, str]] = []
        self.hosts: set[str] = set()
        self.annotations: dict[int, dict[str, Any]] = {}
        self.contents: dict[int, list[dict[str, Any]]] = {}
        self.tasks: dict[int, dict[str, Any]] = {}
        self.started: set[int] = set()
        self.script: dict[tuple[str, str], deque[Any]] = defaultdict(deque)
        self.task_polls = task_polls
        self.use_confirmed_state = use_confirmed_state
        self.timeout_after_upload = False
        self.echo_secrets = False
        self.metadata_filter = True
        self.task_host = BASE
        self._ids = 100

    # ------------------------------------------------------------------ helpers for tests

    def fail(self, method: str, path: str, *outcomes: Any) -> None:
        """The next calls of ``method path`` get these (a status, a Response or an exception)."""
        self.script[(method, path)].extend(outcomes)

    def count(self, method: str, path: str) -> int:
        return sum(1 for m, p in self.requests if m == method and p == path)

    def add_annotation(
        self, status: str = "to_review", metadata: dict[str, Any] | None = None, **extra: Any
    ) -> int:
        self._ids += 1
        aid = self._ids
        self.annotations[aid] = {
            "id": aid,
            "url": f"{BASE}/annotations/{aid}",
            "status": status,
            "queue": f"{BASE}/queues/1",
            "document": f"{BASE}/documents/{aid + 1000}",
            "schema": f"{BASE}/schemas/1",
            "content": f"{BASE}/annotations/{aid}/content",
            "metadata": metadata or {},
            "messages": None,
            **extra,
        }
        self.contents[aid] = content_tree(aid)
        return aid

    def expire_tokens(self) -> None:
        self.tokens.clear()

    # ------------------------------------------------------------------ transport

    def handler(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        self.hosts.add(url.host)
        path = url.path.removeprefix("/api/v1/").rstrip("/")
        method = request.method
        self.requests.append((method, path))
        key = (method, path)
        if self.script[key]:
            outcome = self.script[key].popleft()
            if isinstance(outcome, Exception):
                raise outcome
            if isinstance(outcome, int):
                return httpx.Response(outcome, json={"detail": "scripted"})
            return outcome
        if path == "auth/login":
            return self._login(request)
        if path == "auth/logout":
            return httpx.Response(200, json={"detail": "Successfully logged out."})
        auth = request.headers.get("Authorization", "")
        if auth.removeprefix("Bearer ") not in self.tokens:
            body = {"detail": "Invalid token."}
            if self.echo_secrets:
                body["got"] = auth
            return httpx.Response(401, json=body)
        params = {k: v[-1] for k, v in parse_qs(url.query.decode()).items()}
        return self._route(method, path, params, request)

    def _login(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        if body.get("username") != USER or body.get("password") != PASSWORD:
            detail = {"detail": "Unable to log in with provided credentials."}
            if self.echo_secrets:
                detail["password"] = body.get("password")
            return httpx.Response(401, json=detail)
        self.logins += 1
        token = f"tok{self.logins:037d}"
        self.tokens.add(token)
        return httpx.Response(200, json={"key": token, "domain": "acme.rossum.app"})

    def _route(
        self, method: str, path: str, params: dict[str, str], request: httpx.Request
    ) -> httpx.Response:
        parts = path.split("/")
        if path == "auth/user":
            return httpx.Response(200, json={"id": 7, "url": f"{BASE}/users/7", "username": USER})
        if method == "POST" and path == "uploads":
            return self._upload(request, params)
        if parts[0] == "tasks" and method == "GET":
            return self._task(int(parts[1]))
        if parts[0] == "uploads" and method == "GET":
            task = self.tasks[int(parts[1])]
            return httpx.Response(
                200,
                json={
                    "id": int(parts[1]),
                    "url": f"{BASE}/uploads/{parts[1]}",
                    "annotations": [f"{BASE}/annotations/{task['annotation']}"],
                    "documents": [f"{BASE}/documents/{task['annotation'] + 1000}"],
                },
            )
        if path == "annotations" and method == "GET":
            return self._list(params)
        if path == "annotations/purge_deleted" and method == "POST":
            for url in json.loads(request.content)["annotations"]:
                ann = self.annotations[int(url.rstrip("/").rsplit("/", 1)[1])]
                if ann["status"] == "deleted":
                    ann["status"] = "purged"
            return httpx.Response(202)
        if parts[0] == "annotations":
            aid = int(parts[1])
            if aid not in self.annotations:
                return httpx.Response(404, json={"detail": "Not found."})
            return self._annotation(method, aid, parts[2:], params, request)
        if parts[0] == "queues" and parts[2:] == ["export"] and method == "POST":
            for aid in params["id"].split(","):
                ann = self.annotations[int(aid)]
                if ann["status"] == params.get("status", ann["status"]):
                    ann["status"] = params["to_status"]
            return httpx.Response(200, json={"pagination": {"next": None}, "results": []})
        return httpx.Response(404, json={"detail": "Not found."})

    def _upload(self, request: httpx.Request, params: dict[str, str]) -> httpx.Response:
        header = f"Content-Type: {request.headers['Content-Type']}\r\n\r\n".encode()
        message = BytesParser(policy=HTTP).parsebytes(header + request.content)
        fields: dict[str, tuple[str | None, bytes]] = {}
        for part in message.iter_parts():
            name = part.get_param("name", header="content-disposition")
            fields[str(name)] = (part.get_filename(), part.get_payload(decode=True))
        filename, data = fields["content"]
        metadata = json.loads(fields["metadata"][1])
        self.uploads += 1
        self.uploaded.append((str(filename), data, metadata))
        aid = self.add_annotation("importing", metadata)
        task_id = aid + 5000
        self.tasks[task_id] = {"polls": self.task_polls, "annotation": aid}
        if self.timeout_after_upload:
            raise httpx.ReadTimeout("timed out waiting for the answer")
        return httpx.Response(202, json={"url": f"{self.task_host}/tasks/{task_id}"})

    def _task(self, task_id: int) -> httpx.Response:
        task = self.tasks.get(task_id)
        if task is None:
            return httpx.Response(404, json={"detail": "Not found."})
        url = f"{BASE}/tasks/{task_id}"
        if task["polls"] > 0:
            task["polls"] -= 1
            return httpx.Response(200, json={"id": task_id, "url": url, "status": "running"})
        if task.get("failed"):
            body = {"id": task_id, "url": url, "status": "failed", "detail": "broken PDF (e1)"}
            return httpx.Response(200, json=body)
        ann = self.annotations[task["annotation"]]
        if ann["status"] == "importing":
            ann["status"] = "to_review"
        return httpx.Response(
            200,
            json={
                "id": task_id,
                "url": url,
                "type": "upload_created",
                "status": "succeeded",
                "content": {"upload": f"{BASE}/uploads/{task_id}"},
            },
        )

    def _list(self, params: dict[str, str]) -> httpx.Response:
        found = sorted(self.annotations.values(), key=lambda a: -a["id"])
        wanted = params.get("metadata__docrelay_document_id")
        if wanted is not None:
            if not self.metadata_filter:
                return httpx.Response(400, json={"detail": "Unknown filter."})
            found = [a for a in found if str(a["metadata"].get("docrelay_document_id")) == wanted]
        size = int(params.get("page_size", 20))
        page = int(params.get("page", 1))
        chunk = found[(page - 1) * size : page * size]
        following = None
        if page * size < len(found):
            rest = "&".join(f"{k}={v}" for k, v in params.items() if k != "page")
            following = f"{BASE}/annotations?{rest}&page={page + 1}"
        return httpx.Response(
            200,
            json={
                "pagination": {"total": len(found), "next": following, "previous": None},
                "results": chunk,
            },
        )

    def _annotation(
        self,
        method: str,
        aid: int,
        rest: list[str],
        params: dict[str, str],
        request: httpx.Request,
    ) -> httpx.Response:
        ann = self.annotations[aid]
        body = json.loads(request.content) if request.content else {}
        if not rest and method == "GET":
            return httpx.Response(200, json=ann)
        if rest == ["content"] and method == "GET":
            return httpx.Response(200, json={"content": self.contents[aid]})
        if not rest and method == "PATCH":
            target = body.get("status")
            if target is not None:
                allowed = {"exported": {"confirmed"}, "failed_export": {"confirmed", "exporting"}}
                if ann["status"] not in allowed.get(target, set()):
                    return httpx.Response(409, json={"detail": "Cannot change status."})
                ann["status"] = target
            if "messages" in body:
                ann["messages"] = body["messages"]
            return httpx.Response(200, json=ann)
        if rest == ["start"]:
            statuses = body.get("statuses", ["to_review", "reviewing", "postponed", "confirmed"])
            if ann["status"] not in statuses:
                return httpx.Response(409, json={"detail": f"Annotation is {ann['status']}."})
            ann["before_start"] = ann["status"]
            ann["status"] = "reviewing"
            ann["modifier"] = f"{BASE}/users/7"
            self.started.add(aid)
            return httpx.Response(200, json={"annotation": ann["url"]})
        if rest == ["content", "operations"]:
            if ann["status"] != "reviewing":
                return httpx.Response(409, json={"detail": "start it first"})
            for op in body["operations"]:
                node = find_node(self.contents[aid], int(op["id"]))
                node["content"]["value"] = op["value"]["content"]["value"]
                node["content"].pop("normalized_value", None)
                node["validation_sources"] = op["value"].get("validation_sources", [])
            return httpx.Response(200, json={"content": self.contents[aid]})
        if rest == ["confirm"]:
            if ann["status"] != "reviewing":
                return httpx.Response(409, json={"detail": "start it first"})
            ann["status"] = "confirmed" if self.use_confirmed_state else "exported"
            return httpx.Response(204)
        if rest == ["cancel"]:
            if ann["status"] != "reviewing":
                return httpx.Response(409, json={"detail": "not started"})
            ann["status"] = ann.pop("before_start", "to_review")
            return httpx.Response(204)
        if rest == ["delete"]:
            ann["status"] = "deleted"
            return httpx.Response(204)
        return httpx.Response(405, json={"detail": "Method not allowed."})


def content_tree(aid: int) -> list[dict[str, Any]]:
    """A small content tree in the content-API shape (contract §6.4)."""
    base = aid * 100

    def dp(offset: int, schema_id: str, value: str, normalized: str | None = None) -> dict:
        body: dict[str, Any] = {"value": value, "page": 1, "position": [10, 20, 110, 40]}
        if normalized is not None:
            body["normalized_value"] = normalized
        body["rir_confidence"] = 0.9
        return {
            "id": base + offset,
            "category": "datapoint",
            "schema_id": schema_id,
            "content": body,
            "validation_sources": ["score"],
        }

    return [
        {
            "id": base,
            "category": "section",
            "schema_id": "basic_info_section",
            "children": [
                dp(1, "document_id", "INV-2024-001"),
                dp(2, "date_issue", "3/1/2024", "2024-03-01"),
                dp(3, "amount_total", "1 190,00", "1190.00"),
                dp(4, "currency", "eur"),
                dp(5, "sender_name", "ACME GmbH"),
            ],
        }
    ]


def find_node(nodes: list[dict[str, Any]], node_id: int) -> dict[str, Any]:
    for node in nodes:
        if node.get("id") == node_id:
            return node
        children = node.get("children")
        if isinstance(children, list):
            try:
                return find_node(children, node_id)
            except KeyError:
                pass
    raise KeyError(node_id)


class FakeClock:
    """Monotonic virtual time; ``sleep`` advances it and records the wait."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(autouse=True)
def _fresh_limiters() -> Iterator[None]:
    reset_shared_limiters()
    yield
    reset_shared_limiters()


@pytest.fixture
def fake() -> FakeRossum:
    return FakeRossum()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def make_vendor(
    fake: FakeRossum, clock: FakeClock, tmp_path: Path, **overrides: Any
) -> RossumVendor:
    settings: dict[str, Any] = {
        "base_url": BASE,
        "username": USER,
        "password": PASSWORD,
        "queue": 1,
        "webhook_secret": HOOK_SECRET,
        **overrides,
    }
    if "token" in overrides:
        settings.pop("username")
        settings.pop("password")
    context = ConnectorContext(name="rossum", data_dir=tmp_path, clock=clock)
    return RossumVendor(
        RossumSettings(**settings),
        context,
        transport=httpx.MockTransport(fake.handler),
        sleep=clock.sleep,
        jitter=lambda: 1.0,
    )


@pytest.fixture
def vendor(fake: FakeRossum, clock: FakeClock, tmp_path: Path) -> Iterator[RossumVendor]:
    made = make_vendor(fake, clock, tmp_path)
    yield made
    made.close()


def make_document(tmp_path: Path, doc_id: int = 7) -> DocumentRef:
    path = tmp_path / f"blob-{doc_id}"
    path.write_bytes(PDF)
    return DocumentRef(
        id=doc_id,
        sha256=hashlib.sha256(PDF).hexdigest(),
        filename=f"invoice-{doc_id}.pdf",
        mime_type="application/pdf",
        size_bytes=len(PDF),
        pages=1,
        received_at=datetime.now(UTC),
        metadata={},
        path=path,
    )


# --------------------------------------------------------------------------- settings


def test_settings_need_password_or_token() -> None:
    with pytest.raises(ValidationError, match="set password \\(with username\\), or token"):
        RossumSettings(base_url=BASE, queue=1)
    with pytest.raises(ValidationError, match="not both"):
        RossumSettings(base_url=BASE, queue=1, username=USER, password="x", token="y")
    with pytest.raises(ValidationError, match="username is missing"):
        RossumSettings(base_url=BASE, queue=1, password="x")


@pytest.mark.parametrize(
    "given",
    [
        "https://acme.rossum.app/api/v1",
        "https://acme.rossum.app/api/v1/",
        "https://acme.rossum.app/api",
        "https://acme.rossum.app/api/",
        "https://acme.rossum.app",
    ],
)
def test_base_url_forms(given: str) -> None:
    settings = RossumSettings(base_url=given, queue=1, token="t")
    assert settings.base_url == BASE


def test_settings_reject_unknown_mapping_targets_and_hide_secrets() -> None:
    with pytest.raises(ValidationError, match="neither a canonical field"):
        RossumSettings(base_url=BASE, queue=1, token="t", mapping={"x": "invoice_no"})
    settings = RossumSettings(
        base_url=BASE, queue=1, username=USER, password=PASSWORD, mapping={"x": "extra.x"}
    )
    assert PASSWORD not in repr(settings) and PASSWORD not in str(settings.model_dump())
    assert settings.concurrency == 4


# --------------------------------------------------------------------------- auth


def test_relogin_once_after_401_and_replay(
    vendor: RossumVendor, fake: FakeRossum, tmp_path: Path
) -> None:
    aid = fake.add_annotation("to_review")
    ref = vendor.annotation_ref(aid)
    assert vendor.poll(ref, {}).status == PollStatus.READY
    assert fake.logins == 1
    fake.expire_tokens()
    assert vendor.poll(ref, {}).status == PollStatus.READY
    assert fake.logins == 2
    assert fake.count("GET", f"annotations/{aid}") == 3  # ok, 401, replayed


def test_concurrent_workers_share_one_relogin(
    fake: FakeRossum, clock: FakeClock, tmp_path: Path
) -> None:
    made = make_vendor(fake, clock, tmp_path, rate_limit=10_000)
    aid = fake.add_annotation()
    ref = made.annotation_ref(aid)
    made.poll(ref, {})
    fake.expire_tokens()
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda _: made.poll(ref, {}).status, range(16)))
    assert results == [PollStatus.READY] * 16
    assert fake.logins == 2


def test_second_401_after_relogin_is_auth_failed(vendor: RossumVendor, fake: FakeRossum) -> None:
    aid = fake.add_annotation("to_review")
    fake.fail("GET", f"annotations/{aid}", 401, 401, 401)
    with pytest.raises(AuthFailed):
        vendor.poll(vendor.annotation_ref(aid), {})
    assert fake.logins == 2  # the first login and exactly one re-login


def test_login_refused_is_auth_failed(fake: FakeRossum, clock: FakeClock, tmp_path: Path) -> None:
    made = make_vendor(fake, clock, tmp_path, password="wrong-password")
    with pytest.raises(AuthFailed, match="refused the login"):
        made.poll(f"{BASE}/annotations/1", {})
    assert fake.count("POST", "auth/login") == 1


def test_static_token_401_is_auth_failed_without_login(
    fake: FakeRossum, clock: FakeClock, tmp_path: Path
) -> None:
    made = make_vendor(fake, clock, tmp_path, token=STATIC_TOKEN)
    aid = fake.add_annotation()
    with pytest.raises(AuthFailed, match="refused the token"):
        made.poll(made.annotation_ref(aid), {})
    assert fake.logins == 0
    fake.tokens.add(STATIC_TOKEN)
    assert made.poll(made.annotation_ref(aid), {}).status == PollStatus.READY


def test_secrets_never_in_errors(fake: FakeRossum, clock: FakeClock, tmp_path: Path) -> None:
    fake.echo_secrets = True
    errors: list[DocrelayError] = []
    refused = make_vendor(fake, clock, tmp_path, password=PASSWORD + "-old")
    with pytest.raises(AuthFailed) as login:
        refused.poll(f"{BASE}/annotations/1", {})
    errors.append(login.value)

    static = make_vendor(fake, clock, tmp_path, token=STATIC_TOKEN)
    with pytest.raises(AuthFailed) as token:
        static.poll(f"{BASE}/annotations/1", {})
    errors.append(token.value)

    made = make_vendor(fake, clock, tmp_path)
    aid = fake.add_annotation()
    made.poll(made.annotation_ref(aid), {})
    session = next(iter(fake.tokens))
    echo = httpx.Response(500, text=f"crash: Authorization: Bearer {session} pw={PASSWORD}")
    fake.fail("GET", f"annotations/{aid}", *[echo] * 5)
    with pytest.raises(TransientError) as server:
        made.poll(made.annotation_ref(aid), {})
    errors.append(server.value)

    for error in errors:
        for secret in (PASSWORD, STATIC_TOKEN, session, "Bearer " + session):
            assert secret not in str(error)
            assert secret not in repr(error)
            assert secret not in (error.detail or "")
        assert "/api/v1/" in str(error)  # method and path are there to help


# --------------------------------------------------------------------------- retries


def test_429_retry_after_is_honoured(
    vendor: RossumVendor, fake: FakeRossum, clock: FakeClock
) -> None:
    aid = fake.add_annotation()
    throttled = httpx.Response(429, headers={"Retry-After": "30"}, json={"detail": "slow down"})
    fake.fail("GET", f"annotations/{aid}", throttled)
    start = clock.now
    assert vendor.poll(vendor.annotation_ref(aid), {}).status == PollStatus.READY
    assert max(clock.sleeps) >= 30
    assert clock.now - start >= 30


def test_429_retry_after_is_capped(fake: FakeRossum, clock: FakeClock, tmp_path: Path) -> None:
    made = make_vendor(fake, clock, tmp_path, retry_after_max=60)
    aid = fake.add_annotation()
    throttled = httpx.Response(429, headers={"Retry-After": "999999"})
    fake.fail("GET", f"annotations/{aid}", throttled)
    assert made.poll(made.annotation_ref(aid), {}).status == PollStatus.READY
    assert max(clock.sleeps) == 60


def test_429_forever_is_rate_limited_with_retry_after(
    vendor: RossumVendor, fake: FakeRossum
) -> None:
    aid = fake.add_annotation()
    throttled = httpx.Response(429, headers={"Retry-After": "30"})
    fake.fail("GET", f"annotations/{aid}", *[throttled] * 10)
    with pytest.raises(RateLimited) as caught:
        vendor.poll(vendor.annotation_ref(aid), {})
    assert caught.value.retry_after == 30
    assert fake.count("GET", f"annotations/{aid}") == 5  # 1 + max_retries


def test_503_three_times_then_ok(vendor: RossumVendor, fake: FakeRossum, clock: FakeClock) -> None:
    aid = fake.add_annotation()
    vendor.poll(vendor.annotation_ref(aid), {})  # log in first
    clock.sleeps.clear()
    fake.fail("GET", f"annotations/{aid}", 503, 503, 503)
    assert vendor.poll(vendor.annotation_ref(aid), {}).status == PollStatus.READY
    assert clock.sleeps == [0.5, 1.0, 2.0]  # exponential (jitter pinned to its maximum)


def test_503_forever_is_transient_after_max_retries(vendor: RossumVendor, fake: FakeRossum) -> None:
    aid = fake.add_annotation()
    fake.fail("GET", f"annotations/{aid}", *[503] * 10)
    with pytest.raises(TransientError, match="503") as caught:
        vendor.poll(vendor.annotation_ref(aid), {})
    assert not isinstance(caught.value, RateLimited)
    assert fake.count("GET", f"annotations/{aid}") == 5


def test_timeouts_on_reads_are_retried(vendor: RossumVendor, fake: FakeRossum) -> None:
    aid = fake.add_annotation()
    fake.fail("GET", f"annotations/{aid}", httpx.ReadTimeout("slow"), httpx.ConnectError("no"))
    assert vendor.poll(vendor.annotation_ref(aid), {}).status == PollStatus.READY


def test_malformed_json_with_200_is_transient(vendor: RossumVendor, fake: FakeRossum) -> None:
    aid = fake.add_annotation()
    html = httpx.Response(200, text="<html>maintenance</html>" + "x" * 5000)
    fake.fail("GET", f"annotations/{aid}", html)
    with pytest.raises(TransientError, match="not JSON") as caught:
        vendor.poll(vendor.annotation_ref(aid), {})
    assert caught.value.detail is not None and len(caught.value.detail) <= 500


def test_retry_after_parsing() -> None:
    assert parse_retry_after("10") == 10
    assert parse_retry_after(None) is None
    assert parse_retry_after("soon") is None
    assert parse_retry_after("-5") == 0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0  # in the past


def test_pagination_follows_next(vendor: RossumVendor, fake: FakeRossum) -> None:
    for _ in range(5):
        fake.add_annotation()
    found = list(vendor.client.paginate("annotations", {"page_size": 2}))
    assert len(found) == 5
    assert len({a["id"] for a in found}) == 5
    assert fake.count("GET", "annotations") == 3


def test_pagination_loop_is_transient(vendor: RossumVendor, fake: FakeRossum) -> None:
    page = {"pagination": {"next": f"{BASE}/annotations?page=2"}, "results": []}
    fake.fail("GET", "annotations", *[httpx.Response(200, json=page)] * 3)
    with pytest.raises(TransientError, match="loop"):
        list(vendor.client.paginate("annotations"))


# --------------------------------------------------------------------------- rate limit


def test_rate_limiter_spaces_calls(clock: FakeClock) -> None:
    limiter = RateLimiter(10, clock=clock, sleep=clock.sleep)
    start = clock.now
    for _ in range(30):
        limiter.acquire()
    assert clock.now - start >= (30 - 10) / 10 - 1e-9


def test_rate_limit_is_shared_by_one_account(
    fake: FakeRossum, clock: FakeClock, tmp_path: Path
) -> None:
    one = make_vendor(fake, clock, tmp_path)
    two = make_vendor(fake, clock, tmp_path)
    other = make_vendor(fake, clock, tmp_path, username="someone-else@acme.example")
    assert one.client.limiter is two.client.limiter
    assert other.client.limiter is not one.client.limiter
    aid = fake.add_annotation()
    ref = one.annotation_ref(aid)
    start = clock.now
    for _ in range(20):
        one.poll(ref, {})
        two.poll(ref, {})
    calls = len(fake.requests)  # both logins count against the account too
    assert clock.now - start >= (calls - 10) / 10 - 1e-9


# --------------------------------------------------------------------------- submit


def test_submit_uploads_streams_and_follows_the_task(
    vendor: RossumVendor, fake: FakeRossum, tmp_path: Path
) -> None:
    fake.task_polls = 2
    document = make_document(tmp_path)
    result = vendor.submit(document)
    assert fake.uploads == 1
    filename, data, metadata = fake.uploaded[0]
    assert (filename, data) == ("invoice-7.pdf", PDF)
    assert metadata == {"docrelay_document_id": 7, "docrelay_sha256": document.sha256}
    aid = result.data["annotation_id"]
    assert result.vendor_ref == f"{BASE}/annotations/{aid}"
    assert result.data["task_url"].startswith(f"{BASE}/tasks/")
    assert result.data["queue"] == 1
    json.dumps(result.data)
    assert vendor.poll(result.vendor_ref, result.data).status == PollStatus.READY


def test_a_first_attempt_skips_the_lookup_and_a_retry_does_not(
    vendor: RossumVendor, fake: FakeRossum, tmp_path: Path
) -> None:
    document = make_document(tmp_path)
    vendor.submit(document, first_attempt=True)
    assert fake.count("GET", "annotations") == 0, "nothing to reconcile on a first attempt"
    assert fake.uploads == 1
    result = vendor.submit(document)
    assert fake.count("GET", "annotations") == 1
    assert fake.uploads == 1 and result.data["reconciled"] is True


def test_fetch_after_a_ready_poll_reuses_the_polled_annotation(
    vendor: RossumVendor, fake: FakeRossum, tmp_path: Path
) -> None:
    result = vendor.submit(make_document(tmp_path), first_attempt=True)
    aid = result.data["annotation_id"]
    assert vendor.poll(result.vendor_ref, result.data).status == PollStatus.READY
    before = fake.count("GET", f"annotations/{aid}")
    raw = vendor.fetch(result.vendor_ref, result.data, make_document(tmp_path))
    assert fake.count("GET", f"annotations/{aid}") == before, "no second GET of the annotation"
    assert raw["annotation"]["id"] == aid
    vendor.fetch(result.vendor_ref, result.data, make_document(tmp_path))
    assert fake.count("GET", f"annotations/{aid}") == before + 1, "a later fetch reads afresh"


def test_submit_is_reconciled_after_a_timeout_after_send(
    vendor: RossumVendor, fake: FakeRossum, tmp_path: Path
) -> None:
    document = make_document(tmp_path)
    fake.timeout_after_upload = True
    with pytest.raises(TransientError, match="after the request was sent"):
        vendor.submit(document)
    assert fake.uploads == 1
    assert fake.count("POST", "uploads") == 1  # an upload is never retried blindly
    fake.timeout_after_upload = False
    result = vendor.submit(document)
    assert fake.uploads == 1
    assert result.data["reconciled"] is True
    (aid,) = fake.annotations
    assert result.vendor_ref == vendor.annotation_ref(aid)


def test_reconcile_falls_back_when_the_metadata_filter_is_refused(
    vendor: RossumVendor, fake: FakeRossum, tmp_path: Path
) -> None:
    fake.metadata_filter = False
    fake.add_annotation(metadata={"docrelay_document_id": 8, "docrelay_sha256": "x"})
    fake.add_annotation("deleted", {"docrelay_document_id": 7})
    document = make_document(tmp_path)
    existing = fake.add_annotation(
        metadata={"docrelay_document_id": 7, "docrelay_sha256": document.sha256}
    )
    result = vendor.submit(document)
    assert fake.uploads == 0
    assert result.data["annotation_id"] == existing


def test_upload_5xx_is_transient_and_not_retried(
    vendor: RossumVendor, fake: FakeRossum, tmp_path: Path
) -> None:
    fake.fail("POST", "uploads", 502)
    with pytest.raises(TransientError, match="502"):
        vendor.submit(make_document(tmp_path))
    assert fake.count("POST", "uploads") == 1


def test_upload_429_and_401_are_sent_again(
    vendor: RossumVendor, fake: FakeRossum, tmp_path: Path
) -> None:
    vendor.client.request("GET", "annotations")  # logged in
    fake.fail("POST", "uploads", httpx.Response(429, headers={"Retry-After": "1"}), 401)
    result = vendor.submit(make_document(tmp_path))
    assert fake.uploads == 1
    assert fake.uploaded[0][1] == PDF  # the stream was rewound for the resend
    assert result.data["annotation_id"]


def test_upload_refused_is_terminal(vendor: RossumVendor, fake: FakeRossum, tmp_path: Path) -> None:
    fake.fail("POST", "uploads", httpx.Response(413, json={"detail": "too large"}))
    with pytest.raises(TerminalError, match="413"):
        vendor.submit(make_document(tmp_path))


def test_too_large_is_refused_before_upload(
    fake: FakeRossum, clock: FakeClock, tmp_path: Path
) -> None:
    made = make_vendor(fake, clock, tmp_path, max_upload_bytes=1000)
    with pytest.raises(TerminalError, match="at most 1000"):
        made.submit(make_document(tmp_path))
    assert fake.requests == []


def test_failed_task_is_terminal(vendor: RossumVendor, fake: FakeRossum, tmp_path: Path) -> None:
    fake.task_polls = 0
    original = fake._upload

    def failing(request: httpx.Request, params: dict[str, str]) -> httpx.Response:
        response = original(request, params)
        for task in fake.tasks.values():
            task["failed"] = True
        return response

    fake._upload = failing  # type: ignore[method-assign]
    with pytest.raises(TerminalError, match="broken PDF"):
        vendor.submit(make_document(tmp_path))


def test_slow_task_leaves_the_rest_to_poll(
    vendor: RossumVendor, fake: FakeRossum, clock: FakeClock, tmp_path: Path
) -> None:
    fake.task_polls = 1000
    result = vendor.submit(make_document(tmp_path))
    assert result.data["pending"] is True
    assert result.vendor_ref == result.data["task_url"]
    assert clock.now - 1000 <= vendor.UPLOAD_WAIT + 2
    assert vendor.poll(result.vendor_ref, result.data).status == PollStatus.PROCESSING
    with pytest.raises(NotReady):
        vendor.fetch(result.vendor_ref, result.data, make_document(tmp_path))
    for task in fake.tasks.values():
        task["polls"] = 0
    polled = vendor.poll(result.vendor_ref, result.data)
    assert polled.status == PollStatus.READY
    assert polled.data is not None and polled.data["annotation_id"] in fake.annotations
    # From now on the submission goes by its annotation: what webhooks name.
    assert polled.vendor_ref == vendor.annotation_ref(polled.data["annotation_id"])
    raw = vendor.fetch(result.vendor_ref, polled.data, make_document(tmp_path))
    assert raw["annotation"]["id"] == polled.data["annotation_id"]


def test_expired_task_is_reconciled_by_metadata(
    vendor: RossumVendor, fake: FakeRossum, tmp_path: Path
) -> None:
    fake.task_polls = 1000
    result = vendor.submit(make_document(tmp_path))
    fake.tasks.clear()
    polled = vendor.poll(result.vendor_ref, result.data)
    assert polled.status == PollStatus.PROCESSING  # still importing: found, not rejected
    assert polled.data is not None and polled.data["annotation_id"] in fake.annotations


def test_foreign_urls_are_resolved_against_base_url(
    vendor: RossumVendor, fake: FakeRossum, tmp_path: Path
) -> None:
    fake.task_host = "https://attacker.example/api/v1"
    result = vendor.submit(make_document(tmp_path))
    assert fake.hosts == {"acme.rossum.app"}
    assert result.data["task_url"].startswith(BASE)


# --------------------------------------------------------------------------- poll


@pytest.mark.parametrize(
    ("status", "ready_status", "expected"),
    [
        ("created", "to_review", PollStatus.PROCESSING),
        ("importing", "to_review", PollStatus.PROCESSING),
        ("to_review", "to_review", PollStatus.READY),
        ("reviewing", "to_review", PollStatus.READY),
        ("postponed", "to_review", PollStatus.READY),
        ("in_workflow", "to_review", PollStatus.READY),
        ("confirmed", "to_review", PollStatus.READY),
        ("exporting", "to_review", PollStatus.READY),
        ("exported", "to_review", PollStatus.READY),
        ("failed_export", "to_review", PollStatus.READY),
        ("to_review", "confirmed", PollStatus.REVIEW),  # a person confirms it first
        ("reviewing", "confirmed", PollStatus.REVIEW),  # a person confirms it first
        ("postponed", "confirmed", PollStatus.REVIEW),  # a person confirms it first
        ("in_workflow", "confirmed", PollStatus.REVIEW),  # a person confirms it first
        ("confirmed", "confirmed", PollStatus.READY),
        ("exporting", "confirmed", PollStatus.READY),
        ("exported", "confirmed", PollStatus.READY),
        ("failed_export", "confirmed", PollStatus.READY),
        ("confirmed", "exported", PollStatus.PROCESSING),
        ("exporting", "exported", PollStatus.PROCESSING),
        ("exported", "exported", PollStatus.READY),
        ("failed_import", "to_review", PollStatus.REJECTED),
        ("rejected", "to_review", PollStatus.REJECTED),
        ("deleted", "confirmed", PollStatus.REJECTED),
        ("purged", "to_review", PollStatus.REJECTED),
        ("split", "to_review", PollStatus.REJECTED),
        ("a_status_from_next_year", "to_review", PollStatus.PROCESSING),
    ],
)
def test_poll_status_mapping(
    fake: FakeRossum,
    clock: FakeClock,
    tmp_path: Path,
    status: str,
    ready_status: str,
    expected: PollStatus,
) -> None:
    made = make_vendor(fake, clock, tmp_path, ready_status=ready_status)
    aid = fake.add_annotation(status)
    result = made.poll(made.annotation_ref(aid), {})
    assert result.status == expected
    if expected == PollStatus.REJECTED:
        assert result.reason
    assert fake.requests[-1][0] == "GET"


def test_failed_import_reason_carries_the_messages(vendor: RossumVendor, fake: FakeRossum) -> None:
    aid = fake.add_annotation("failed_import", messages=[{"type": "error", "content": "no pages"}])
    result = vendor.poll(vendor.annotation_ref(aid), {})
    assert result.status == PollStatus.REJECTED
    assert result.reason == "Rossum could not import the document: no pages"


def test_poll_of_a_vanished_annotation_is_rejected(vendor: RossumVendor) -> None:
    result = vendor.poll(f"{BASE}/annotations/999999", {})
    assert result.status == PollStatus.REJECTED
    assert "no longer exists" in (result.reason or "")


def test_fetch_is_verbatim_read_only_and_maps(
    vendor: RossumVendor, fake: FakeRossum, tmp_path: Path
) -> None:
    aid = fake.add_annotation()
    vendor.client.request("GET", "annotations")  # log in first
    before = len(fake.requests)
    raw = vendor.fetch(vendor.annotation_ref(aid), {}, make_document(tmp_path))
    assert fake.requests[before:] == [
        ("GET", f"annotations/{aid}"),
        ("GET", f"annotations/{aid}/content"),
    ]
    assert json.loads(json.dumps(raw)) == raw
    assert raw["content"] == content_tree(aid)
    assert raw["schema_url"] == f"{BASE}/schemas/1"
    result = vendor.normalize(raw)
    assert result.get("invoice_number").value_text == "INV-2024-001"  # type: ignore[union-attr]
    assert result.get("total_amount").currency == "EUR"  # type: ignore[union-attr]


# --------------------------------------------------------------------------- webhooks


def signed(body: bytes, secret: str = HOOK_SECRET, scheme: str = "sha256") -> dict[str, str]:
    digest = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return {"X-Rossum-Signature-SHA256": f"{scheme}={digest}", "Content-Type": "application/json"}


def status_payload(aid: int = 314521) -> bytes:
    return json.dumps(
        {
            "request_id": "ae7bc8dd-73bd-489b-a3d2-f5514b209591",
            "timestamp": "2020-01-01T00:00:00.000000Z",
            "action": "changed",
            "event": "annotation_status",
            "annotation": {
                "id": aid,
                "url": f"https://elsewhere.rossum.app/api/v1/annotations/{aid}",
                "status": "to_review",
                "previous_status": "importing",
            },
        }
    ).encode()


def test_webhook_accepted(vendor: RossumVendor) -> None:
    body = status_payload()
    (hint,) = vendor.parse_webhook(WebhookRequest("POST", signed(body), body))
    assert hint.vendor_ref == vendor.annotation_ref(314521)
    assert hint.event == "annotation_status.changed"
    assert hint.delivery_id == "ae7bc8dd-73bd-489b-a3d2-f5514b209591"
    assert hint.sent_at == 1577836800.0, "the payload's timestamp, for replay protection"
    assert hint.changed is False, "a status change is no change of the values"
    lower = {k.lower(): v for k, v in signed(body).items()}
    assert vendor.parse_webhook(WebhookRequest("POST", lower, body)) == [hint]


@pytest.mark.parametrize(
    ("action", "changed"), [("updated", True), ("confirm", True), ("started", False)]
)
def test_a_persons_edit_says_the_values_changed(
    vendor: RossumVendor, action: str, changed: bool
) -> None:
    payload = json.loads(status_payload())
    body = json.dumps({**payload, "event": "annotation_content", "action": action}).encode()
    (hint,) = vendor.parse_webhook(WebhookRequest("POST", signed(body), body))
    assert hint.changed is changed


@pytest.mark.parametrize(
    "forge",
    [
        "wrong secret",
        "altered body",
        "missing header",
        "sha1 prefix",
        "no prefix",
        "garbage signature",
    ],
)
def test_r21_webhook_forgeries_rejected(vendor: RossumVendor, forge: str) -> None:
    body = status_payload()
    headers = signed(body)
    if forge == "wrong secret":
        headers = signed(body, secret="not-the-secret")
    elif forge == "altered body":
        body = body.replace(b"314521", b"314522")
    elif forge == "missing header":
        headers = {"Content-Type": "application/json"}
    elif forge == "sha1 prefix":
        headers = signed(body, scheme="sha1")
    elif forge == "no prefix":
        headers["X-Rossum-Signature-SHA256"] = headers["X-Rossum-Signature-SHA256"][7:]
    else:
        headers["X-Rossum-Signature-SHA256"] = "sha256=ünïcode"
    with pytest.raises(WebhookRejected) as caught:
        vendor.parse_webhook(WebhookRequest("POST", headers, body))
    assert caught.value.status_code == 401


def test_webhook_altered_by_one_byte(vendor: RossumVendor) -> None:
    body = status_payload()
    headers = signed(body)
    tampered = body[:-1] + bytes([body[-1] ^ 1])
    with pytest.raises(WebhookRejected):
        vendor.parse_webhook(WebhookRequest("POST", headers, tampered))


def test_webhook_without_secret_is_refused(
    fake: FakeRossum, clock: FakeClock, tmp_path: Path
) -> None:
    made = make_vendor(fake, clock, tmp_path, webhook_secret=None)
    body = status_payload()
    with pytest.raises(WebhookRejected, match="set webhook_secret") as caught:
        made.parse_webhook(WebhookRequest("POST", signed(body), body))
    assert caught.value.status_code == 401


def test_webhook_bad_json_and_other_events(vendor: RossumVendor) -> None:
    body = b"{not json"
    with pytest.raises(WebhookRejected) as caught:
        vendor.parse_webhook(WebhookRequest("POST", signed(body), body))
    assert caught.value.status_code == 400
    upload = json.dumps({"event": "upload", "action": "created", "request_id": "x"}).encode()
    assert vendor.parse_webhook(WebhookRequest("POST", signed(upload), upload)) == []
    nameless = json.dumps({"event": "annotation_status", "action": "changed"}).encode()
    with pytest.raises(WebhookRejected):
        vendor.parse_webhook(WebhookRequest("POST", signed(nameless), nameless))


def test_r21_webhook_uses_hmac_compare_digest(
    vendor: RossumVendor, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[tuple[Any, Any]] = []
    real = hmac.compare_digest

    def spy(a: Any, b: Any) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    body = status_payload()
    vendor.parse_webhook(WebhookRequest("POST", signed(body), body))
    assert len(calls) == 1


# --------------------------------------------------------------------------- feedback


def test_feedback_replaces_and_confirms_and_is_safe_to_repeat(
    vendor: RossumVendor, fake: FakeRossum
) -> None:
    aid = fake.add_annotation("to_review")
    ref = vendor.annotation_ref(aid)
    corrections = [
        Correction(field="invoice_number", value="INV-2024-001-A"),
        Correction(field="supplier_name", value="ACME GmbH"),
        Correction(field="customer_vat_id", value="DE123456789"),  # not in this schema
    ]
    vendor.send_feedback(ref, {}, corrections)
    assert fake.annotations[aid]["status"] == "exported"
    node = find_node(fake.contents[aid], aid * 100 + 1)
    assert node["content"]["value"] == "INV-2024-001-A"
    assert node["validation_sources"] == ["human"]
    assert fake.count("POST", f"annotations/{aid}/content/operations") == 1
    vendor.send_feedback(ref, {}, corrections)  # a repeat after a crash: nothing to do
    assert fake.count("POST", f"annotations/{aid}/content/operations") == 1


def test_feedback_waits_for_a_person_reviewing(vendor: RossumVendor, fake: FakeRossum) -> None:
    aid = fake.add_annotation("reviewing", modifier=f"{BASE}/users/99")
    with pytest.raises(TransientError, match="reviewing"):
        vendor.send_feedback(vendor.annotation_ref(aid), {}, [Correction("invoice_number", "X")])
    assert aid not in fake.started
    with pytest.raises(TransientError, match="reviewing"):
        vendor.report_delivery(vendor.annotation_ref(aid), {}, True, None)
    assert fake.annotations[aid]["status"] == "reviewing"


def test_feedback_continues_our_own_interrupted_session(
    vendor: RossumVendor, fake: FakeRossum
) -> None:
    aid = fake.add_annotation("to_review")
    ref = vendor.annotation_ref(aid)
    cut = httpx.RemoteProtocolError("connection closed mid-response")
    fake.fail("POST", f"annotations/{aid}/content/operations", *[cut] * 5)
    fake.fail("POST", f"annotations/{aid}/cancel", *[cut] * 5)
    with pytest.raises(TransientError):
        vendor.send_feedback(ref, {}, [Correction("invoice_number", "X-1")])
    assert fake.annotations[aid]["status"] == "reviewing"  # our session, left behind
    vendor.send_feedback(ref, {}, [Correction("invoice_number", "X-1")])
    assert fake.annotations[aid]["status"] == "exported"
    assert find_node(fake.contents[aid], aid * 100 + 1)["content"]["value"] == "X-1"


def test_a_start_that_went_through_before_the_connection_dropped(
    vendor: RossumVendor, fake: FakeRossum
) -> None:
    aid = fake.add_annotation("to_review")
    original = fake._annotation

    def start_then_drop(method, aid_, rest, params, request):  # type: ignore[no-untyped-def]
        response = original(method, aid_, rest, params, request)
        if rest == ["start"] and not getattr(start_then_drop, "dropped", False):
            start_then_drop.dropped = True  # type: ignore[attr-defined]
            raise httpx.RemoteProtocolError("dropped after processing")
        return response

    fake._annotation = start_then_drop  # type: ignore[method-assign]
    vendor.report_delivery(vendor.annotation_ref(aid), {}, True, None)
    assert fake.annotations[aid]["status"] == "exported"


def test_feedback_on_an_exported_annotation_with_new_values_is_terminal(
    vendor: RossumVendor, fake: FakeRossum
) -> None:
    aid = fake.add_annotation("exported")
    with pytest.raises(TerminalError, match="exported"):
        vendor.send_feedback(vendor.annotation_ref(aid), {}, [Correction("invoice_number", "X")])


def test_feedback_for_a_field_without_a_datapoint_is_refused_alone(
    vendor: RossumVendor, fake: FakeRossum
) -> None:
    aid = fake.add_annotation("to_review")
    ref = vendor.annotation_ref(aid)
    (outcome,) = vendor.send_feedback(ref, {}, [Correction("order_number", "1")])
    assert (outcome.field, outcome.accepted) == ("order_number", False)
    assert "no datapoint" in (outcome.reason or "")
    assert fake.annotations[aid]["status"] == "to_review", "nothing was started or confirmed"
    both = [Correction("order_number", "1"), Correction("invoice_number", "X")]
    assert [o.field for o in vendor.send_feedback(ref, {}, both)] == ["order_number"]
    assert fake.annotations[aid]["status"] in ("confirmed", "exported"), "the known one went"


def test_feedback_failure_hands_the_annotation_back(vendor: RossumVendor, fake: FakeRossum) -> None:
    aid = fake.add_annotation("to_review")
    fake.fail("POST", f"annotations/{aid}/content/operations", 400)
    with pytest.raises(TerminalError):
        vendor.send_feedback(vendor.annotation_ref(aid), {}, [Correction("invoice_number", "X")])
    assert fake.annotations[aid]["status"] == "to_review"


# --------------------------------------------------------------------------- export status


def test_report_delivery_ok_moves_to_exported(vendor: RossumVendor, fake: FakeRossum) -> None:
    aid = fake.add_annotation("to_review")
    vendor.report_delivery(vendor.annotation_ref(aid), {}, True, None)
    assert fake.annotations[aid]["status"] == "exported"
    calls = len(fake.requests)
    vendor.report_delivery(vendor.annotation_ref(aid), {}, True, None)
    assert [m for m, _ in fake.requests[calls:]] == ["GET"]


def test_report_delivery_ok_from_confirmed_uses_the_queue_export(
    fake: FakeRossum, clock: FakeClock, tmp_path: Path
) -> None:
    fake.use_confirmed_state = True
    made = make_vendor(fake, clock, tmp_path, ready_status="confirmed")
    aid = fake.add_annotation("confirmed")
    made.report_delivery(made.annotation_ref(aid), {}, True, None)
    assert fake.annotations[aid]["status"] == "exported"
    assert fake.count("POST", "queues/1/export") == 1


def test_report_delivery_failure(vendor: RossumVendor, fake: FakeRossum) -> None:
    confirmed = fake.add_annotation("confirmed")
    vendor.report_delivery(vendor.annotation_ref(confirmed), {}, False, "erp: 422 bad VAT id")
    assert fake.annotations[confirmed]["status"] == "failed_export"
    (message,) = fake.annotations[confirmed]["messages"]
    assert message["type"] == "error" and "erp: 422 bad VAT id" in message["content"]
    # where failed_export cannot be set, the reason is still recorded
    waiting = fake.add_annotation("to_review")
    vendor.report_delivery(vendor.annotation_ref(waiting), {}, False, "erp down")
    assert fake.annotations[waiting]["status"] == "to_review"
    assert "erp down" in fake.annotations[waiting]["messages"][0]["content"]
    vendor.report_delivery(vendor.annotation_ref(confirmed), {}, False, "again")
    assert "erp: 422" in fake.annotations[confirmed]["messages"][0]["content"]


def test_report_delivery_off(fake: FakeRossum, clock: FakeClock, tmp_path: Path) -> None:
    made = make_vendor(fake, clock, tmp_path, export_status=False)
    assert made.capabilities.export_status is False
    aid = fake.add_annotation("to_review")
    made.report_delivery(made.annotation_ref(aid), {}, True, None)
    assert fake.requests == []


def test_delete_annotation_deletes_and_purges(vendor: RossumVendor, fake: FakeRossum) -> None:
    aid = fake.add_annotation("exported")
    vendor.delete_annotation(vendor.annotation_ref(aid))
    assert fake.annotations[aid]["status"] == "purged"
    vendor.delete_annotation(vendor.annotation_ref(aid))
    vendor.delete_annotation(f"{BASE}/annotations/999999")


def test_capabilities_per_instance(vendor: RossumVendor) -> None:
    caps = vendor.capabilities
    assert (caps.webhooks, caps.feedback, caps.export_status, caps.reconcile_uploads) == (
        True,
        True,
        True,
        True,
    )
    assert caps.poll_interval == 2.0
    assert RossumVendor.kind == "rossum"


def test_annotation_id_forms() -> None:
    assert RossumVendor.annotation_id(f"{BASE}/annotations/12", {}) == 12
    assert RossumVendor.annotation_id("12", {}) == 12
    assert RossumVendor.annotation_id(f"{BASE}/tasks/3", {"annotation_id": 5}) == 5
    assert RossumVendor.annotation_id(f"{BASE}/tasks/3", {}) is None
    assert re.fullmatch(r"https://.*/annotations/\d+", f"{BASE}/annotations/1")


def test_the_export_status_after_a_fetch_starts_from_the_fetched_annotation(
    vendor: RossumVendor, fake: FakeRossum, tmp_path: Path
) -> None:
    result = vendor.submit(make_document(tmp_path), first_attempt=True)
    aid = result.data["annotation_id"]
    assert vendor.poll(result.vendor_ref, result.data).status == PollStatus.READY
    vendor.fetch(result.vendor_ref, result.data, make_document(tmp_path))
    before = fake.count("GET", f"annotations/{aid}")
    vendor.report_delivery(result.vendor_ref, result.data, True, None)
    # one GET only: the check after the confirm, none before the start
    assert fake.count("GET", f"annotations/{aid}") == before + 1
    assert fake.annotations[aid]["status"] == "exported"
