"""The DeepOpinion client against a small in-memory DeepOpinion that keeps protocol state.

``FakeDeepOpinion`` answers through ``httpx.MockTransport``: ``POST /auth/login`` mints JWTs
with an ``exp`` on the fake's wall clock and refuses any other password, every other route
wants ``Bearer <a live token>``, the extraction route takes one multipart ``file`` and answers
the invoice of ``test_deepopinion_mapping`` under the uploaded name (pending review when a live
HITL exists for the model), HITLs and their reviews are kept. Outcomes can be scripted per
route (a status, or an exception the transport raises). A virtual clock stands in for time.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
from collections import defaultdict, deque
from collections.abc import Iterator
from email.parser import BytesParser
from email.policy import HTTP
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import httpx
import pytest

from connectors.base import ConnectorContext, DocumentRef
from connectors.errors import AuthFailed, TransientError
from connectors.ratelimit import reset_shared_limiters
from connectors.vendors.deepopinion.client import DeepOpinionClient, jwt_subject
from connectors.vendors.deepopinion.settings import DeepOpinionSettings
from connectors.vendors.deepopinion.vendor import DeepOpinionVendor
from tests.test_deepopinion_mapping import invoice_answer

BASE = "https://do.acme.example"
PUBLIC = "https://relay.acme.example"
EMAIL = "integration@acme.example"
PASSWORD = "pw-Very-Secret-4711"
WEBHOOK_TOKEN = "wh-Unguessable-Token-0123456789abcdef"
USER_ID = 42
ORG, PROJECT, MODEL = 3, 11, 5
PROJECT_PATH = f"/organizations/{ORG}/projects/{PROJECT}"
EXTRACT = f"{PROJECT_PATH}/models/{MODEL}/extract"
PDF = b"%PDF-1.4\n" + b"0123456789" * 20_000 + b"\n%%EOF\n"
WALL = 1_706_695_200.0  # 2024-01-31T10:00:00Z


def jwt(claims: dict[str, Any]) -> str:
    """A JWT as DeepOpinion's look (the fake does not check the signature)."""

    def part(data: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

    return f"{part({'typ': 'JWT', 'alg': 'RS256'})}.{part(claims)}.c2lnbmF0dXJl"


class FakeDeepOpinion:
    """Just enough of DeepOpinion's API as the shared API page fixes it, with state."""

    def __init__(self) -> None:
        self.wall = WALL
        self.lifetime = 1_209_600.0
        self.tokens: dict[str, float] = {}
        """Live token → its exp."""
        self.logins = 0
        self.requests: list[tuple[str, str, dict[str, str], dict[str, str]]] = []
        self.extractions: list[dict[str, Any]] = []
        self.hitls: dict[int, dict[str, Any]] = {}
        self.reviews: list[dict[str, Any]] = []
        self.script: dict[tuple[str, str], deque[Any]] = defaultdict(deque)
        self.low_confidence = True
        self._ids = itertools.count(1)

    # ------------------------------------------------------------------ for tests

    def fail(self, method: str, path: str, *outcomes: Any) -> None:
        self.script[(method, path)].extend(outcomes)

    def count(self, method: str, path: str) -> int:
        return sum(1 for m, p, _, _ in self.requests if m == method and p == path)

    def writes(self) -> list[tuple[str, str]]:
        return [(m, p) for m, p, _, _ in self.requests if m != "GET" and p != "/auth/login"]

    def complete(self, document_name: str, values: dict[str, str] | None = None) -> None:
        """What a person does in DeepOpinion's review tool (the emulator's admin route)."""
        for item in self.reviews:
            if item["document_name"] == document_name and item["status"] == "PENDING":
                item["status"] = "COMPLETED"
                item["data"]["reviewed_value"] = (values or {}).get(
                    item["label"], item["data"]["value"]
                )

    # ------------------------------------------------------------------ transport

    def handler(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        params = {k: v[-1] for k, v in parse_qs(request.url.query.decode()).items()}
        method = request.method
        self.requests.append((method, path, params, dict(request.headers)))
        if self.script[(method, path)]:
            outcome = self.script[(method, path)].popleft()
            if isinstance(outcome, Exception):
                raise outcome
            if isinstance(outcome, httpx.Response):
                return outcome
            return fail(outcome, "scripted")
        if path == "/auth/login" and method == "POST":
            return self._login(json.loads(request.content))
        auth = request.headers.get("Authorization", "")
        token = auth.removeprefix("Bearer ")
        if token not in self.tokens or self.tokens[token] <= self.wall:
            return fail(401, "Token expired. Please log in again.")
        body = None
        if request.headers.get("Content-Type", "").startswith("application/json"):
            body = json.loads(request.content)
        return self._route(method, path, params, request, body)

    def _login(self, body: dict[str, Any]) -> httpx.Response:
        if body != {"email": EMAIL, "password": PASSWORD}:
            return fail(401, "Invalid email or password.")
        self.logins += 1
        exp = self.wall + self.lifetime
        token = jwt({"exp": int(exp), "iat": int(self.wall), "sub": USER_ID, "n": self.logins,
                     "iss": "deepopinion.ai"})  # fmt: skip
        self.tokens[token] = exp
        return httpx.Response(
            200,
            json={"auth_token": token, "message": "Successfully logged in.", "status": "OK"},
        )

    def _route(
        self, method: str, path: str, params: dict[str, str], request: httpx.Request, body: Any
    ) -> httpx.Response:
        if path == EXTRACT and method == "POST":
            return self._extract(request, params)
        if path == f"{PROJECT_PATH}/models" and method == "GET":
            return httpx.Response(
                200, json=[{"id": MODEL, "name": "Invoice Extraction v1", "status": "PUBLISHED"}]
            )
        hitls = f"{PROJECT_PATH}/hitls"
        if path == hitls and method == "GET":
            return httpx.Response(200, json=list(self.hitls.values()))
        if path == hitls and method == "POST":
            hitl_id = next(self._ids)
            self.hitls[hitl_id] = {"id": hitl_id, "project_id": PROJECT, "labels": {}, **body}
            return httpx.Response(201, json=self.hitls[hitl_id])
        if path.startswith(hitls + "/"):
            rest = path.removeprefix(hitls + "/").split("/")
            hitl = self.hitls.get(int(rest[0]))
            if hitl is None:
                return fail(404, "HITL not found")
            if rest[1:] == [] and method == "GET":
                return httpx.Response(200, json=hitl)
            if rest[1:] == [] and method == "PUT":
                hitl.update(body)
                return httpx.Response(200, json=hitl)
            if rest[1:] == ["reviews"] and method == "GET":
                found = [
                    r for r in self.reviews
                    if r["hitl_id"] == hitl["id"]
                    and r["document_name"] == params.get("document_name", r["document_name"])
                ]  # fmt: skip
                if params.get("with_full_data") != "true":
                    found = [{k: v for k, v in r.items() if k != "data"} for r in found]
                return httpx.Response(200, json=found)
        return fail(404, "Not found")

    def _extract(self, request: httpx.Request, params: dict[str, str]) -> httpx.Response:
        content_type = request.headers["Content-Type"]
        message = BytesParser(policy=HTTP).parsebytes(
            f"Content-Type: {content_type}\r\n\r\n".encode() + request.read()
        )
        parts = {part.get_param("name", header="content-disposition"): part
                 for part in message.iter_parts()}  # fmt: skip
        file = parts["file"]
        name = file.get_filename()
        data = file.get_payload(decode=True)
        self.extractions.append(
            {"name": name, "size": len(data), "sha256": hashlib.sha256(data).hexdigest(),
             "parts": sorted(parts), "content_type": file.get_content_type(), "params": params}
        )  # fmt: skip
        live = [h for h in self.hitls.values() if h["model_id"] == MODEL and h["is_live"]]
        answer = invoice_answer(name, bboxes=params.get("return_bboxes") == "true",
                                low=self.low_confidence, hitl=bool(live))  # fmt: skip
        if params.get("return_annotated_pages") == "true":
            answer["documents"][0]["annotated_pages"] = ["iVBORw0KGgo=", "iVBORw0KGgo="]
        if live and self.low_confidence:
            self.reviews.append(
                {"review_id": next(self._ids), "task_id": 1, "document_id": len(self.extractions),
                 "document_name": name, "page_num": 1, "status": "PENDING", "created": "",
                 "updated": "", "user_id": USER_ID, "label": "Total amount",
                 "confidence_threshold": 90, "ls_annotation_id": 1, "hitl_id": live[0]["id"],
                 "data": {"value": "1.469,13", "confidence": 0.62, "reviewed_value": None,
                          "bbox": None}}
            )  # fmt: skip
        return httpx.Response(200, json=answer)


def fail(status: int, message: str) -> httpx.Response:
    return httpx.Response(status, json={"message": message, "status": "FAIL"})


class FakeClock:
    def __init__(self, fake: FakeDeepOpinion) -> None:
        self.fake = fake
        self.now = 1000.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds
        self.fake.wall += seconds

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.advance(seconds)


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(autouse=True)
def _fresh_limiters() -> Iterator[None]:
    reset_shared_limiters()
    yield
    reset_shared_limiters()


@pytest.fixture
def fake() -> FakeDeepOpinion:
    return FakeDeepOpinion()


@pytest.fixture
def clock(fake: FakeDeepOpinion) -> FakeClock:
    return FakeClock(fake)


def make_settings(**overrides: Any) -> DeepOpinionSettings:
    settings: dict[str, Any] = {
        "base_url": BASE,
        "email": EMAIL,
        "password": PASSWORD,
        "organization_id": ORG,
        "project_id": PROJECT,
        "model_id": MODEL,
        "rate_limit": None,
        **overrides,
    }
    return DeepOpinionSettings(**settings)


def make_vendor(
    fake: FakeDeepOpinion,
    clock: FakeClock,
    tmp_path: Path,
    *,
    name: str = "do-main",
    public_url: str | None = PUBLIC,
    **overrides: Any,
) -> DeepOpinionVendor:
    context = ConnectorContext(name=name, data_dir=tmp_path, clock=clock, public_url=public_url)
    return DeepOpinionVendor(
        make_settings(**overrides),
        context,
        transport=httpx.MockTransport(fake.handler),
        sleep=clock.sleep,
        jitter=lambda: 1.0,
        wall=lambda: fake.wall,
    )


def make_client(fake: FakeDeepOpinion, clock: FakeClock, **overrides: Any) -> DeepOpinionClient:
    return DeepOpinionClient(
        make_settings(**overrides),
        transport=httpx.MockTransport(fake.handler),
        clock=clock,
        wall=lambda: fake.wall,
        sleep=clock.sleep,
        jitter=lambda: 1.0,
    )


def make_document(
    tmp_path: Path,
    doc_id: int = 7,
    *,
    filename: str | None = None,
    mime: str = "application/pdf",
    data: bytes = PDF,
    size: int | None = None,
) -> DocumentRef:
    from datetime import UTC, datetime

    path = tmp_path / f"blob-{doc_id}"
    path.write_bytes(data)
    return DocumentRef(
        id=doc_id,
        sha256=hashlib.sha256(data).hexdigest(),
        filename=filename or f"invoice-{doc_id}.pdf",
        mime_type=mime,
        size_bytes=len(data) if size is None else size,
        pages=2,
        received_at=datetime(2024, 1, 31, 10, 0, tzinfo=UTC),
        metadata={},
        path=path,
        page_sizes=((595.28, 841.89), (595.28, 841.89)),
    )


def extract(client: DeepOpinionClient, tmp_path: Path, name: str = "a.pdf") -> dict[str, Any]:
    document = make_document(tmp_path)
    with document.open() as handle:
        return client.extract(handle, filename=name, mime_type="application/pdf")


# --------------------------------------------------------------------------- auth


def test_login_once_and_bearer_on_every_call(fake, clock, tmp_path) -> None:
    client = make_client(fake, clock)
    extract(client, tmp_path)
    client.models()
    assert fake.logins == 1
    login = [r for r in fake.requests if r[1] == "/auth/login"]
    assert len(login) == 1 and "authorization" not in login[0][3]
    others = [r for r in fake.requests if r[1] != "/auth/login"]
    assert all(r[3]["authorization"].startswith("Bearer ey") for r in others)
    assert client.user_id() == USER_ID


def test_the_token_is_renewed_before_its_exp(fake, clock, tmp_path) -> None:
    fake.lifetime = 600
    client = make_client(fake, clock)
    client.models()
    clock.advance(500)  # within the last minute of the token's life
    client.models()
    assert fake.logins == 1
    clock.advance(45)
    client.models()
    assert fake.logins == 2, "logged in again before exp, not after a 401"
    assert [r[1] for r in fake.requests].count("/auth/login") == 2


def test_a_401_means_one_new_login_and_the_call_again(fake, clock, tmp_path) -> None:
    client = make_client(fake, clock)
    client.models()
    fake.tokens.clear()  # revoked at DeepOpinion
    models = client.models()
    assert models[0]["id"] == MODEL
    assert fake.logins == 2


def test_a_refused_login_is_an_auth_failure_and_nothing_is_sent(fake, clock, tmp_path) -> None:
    client = make_client(fake, clock, password="wrong-password")
    with pytest.raises(AuthFailed, match="refused the login") as caught:
        extract(client, tmp_path)
    assert "wrong-password" not in str(caught.value)
    assert fake.extractions == []


def test_a_401_again_after_the_new_login_is_an_auth_failure(fake, clock, tmp_path) -> None:
    client = make_client(fake, clock)
    client.models()
    fake.fail("GET", f"{PROJECT_PATH}/models", 401, 401)
    with pytest.raises(AuthFailed):
        client.models()
    assert fake.logins == 2


# --------------------------------------------------------------------------- extraction


def test_the_extraction_is_one_multipart_file_with_bboxes_asked_for(fake, clock, tmp_path) -> None:
    client = make_client(fake, clock)
    answer = extract(client, tmp_path, "invoice.docrelay-7-abcdef12.pdf")
    (call,) = [r for r in fake.requests if r[1] == EXTRACT]
    assert call[0] == "POST"
    assert call[2] == {"return_bboxes": "true", "return_annotated_pages": "false"}
    assert call[3]["content-type"].startswith("multipart/form-data; boundary=")
    (sent,) = fake.extractions
    assert sent["parts"] == ["file"]
    assert sent["name"] == "invoice.docrelay-7-abcdef12.pdf"
    assert sent["content_type"] == "application/pdf"
    assert sent["sha256"] == hashlib.sha256(PDF).hexdigest()
    assert answer["documents"][0]["name"] == "invoice.docrelay-7-abcdef12.pdf"


def test_annotated_pages_only_when_the_profile_asks(fake, clock, tmp_path) -> None:
    client = make_client(fake, clock, return_annotated_pages=True)
    answer = extract(client, tmp_path)
    assert fake.extractions[0]["params"]["return_annotated_pages"] == "true"
    assert len(answer["documents"][0]["annotated_pages"]) == 2


@pytest.mark.parametrize(
    "error",
    [
        httpx.ReadTimeout("timed out"),
        httpx.RemoteProtocolError("peer closed connection without sending complete message body"),
        httpx.ReadError("connection reset"),
    ],
)
def test_no_resend_once_the_body_may_have_arrived(fake, clock, tmp_path, error) -> None:
    client = make_client(fake, clock)
    fake.fail("POST", EXTRACT, error)
    with pytest.raises(TransientError, match="after the request was sent"):
        extract(client, tmp_path)
    assert fake.count("POST", EXTRACT) == 1, "the answer may be billed: the engine decides"


@pytest.mark.parametrize("status", [500, 502, 504])
def test_an_error_that_may_come_after_the_work_is_not_resent(fake, clock, tmp_path, status) -> None:
    client = make_client(fake, clock)
    fake.fail("POST", EXTRACT, status)
    with pytest.raises(TransientError):
        extract(client, tmp_path)
    assert fake.count("POST", EXTRACT) == 1


def test_a_429_is_resent_after_retry_after(fake, clock, tmp_path) -> None:
    client = make_client(fake, clock)
    fake.fail(
        "POST", EXTRACT,
        httpx.Response(429, headers={"Retry-After": "7"}, json={"message": "slow down",
                                                               "status": "FAIL"}),
    )  # fmt: skip
    answer = extract(client, tmp_path)
    assert fake.count("POST", EXTRACT) == 2
    assert clock.sleeps and clock.sleeps[0] >= 7
    assert len(fake.extractions) == 1, "only the second arrived whole"
    assert fake.extractions[0]["sha256"] == hashlib.sha256(PDF).hexdigest(), "sent from the start"
    assert answer["documents"]


def test_a_503_and_a_refused_connection_are_resent(fake, clock, tmp_path) -> None:
    client = make_client(fake, clock)
    fake.fail("POST", EXTRACT, 503, httpx.ConnectError("connection refused"))
    extract(client, tmp_path)
    assert fake.count("POST", EXTRACT) == 3
    assert len(fake.extractions) == 1


def test_503s_give_up_after_max_retries(fake, clock, tmp_path) -> None:
    client = make_client(fake, clock, max_retries=2)
    fake.fail("POST", EXTRACT, 503, 503, 503, 503)
    with pytest.raises(TransientError, match="→ 503"):
        extract(client, tmp_path)
    assert fake.count("POST", EXTRACT) == 3


def test_the_extraction_gets_the_long_timeout(fake, clock, tmp_path) -> None:
    seen: list[Any] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append((request.url.path, request.extensions["timeout"]))
        return fake.handler(request)

    client = DeepOpinionClient(
        make_settings(extract_timeout=900, timeout=20),
        transport=httpx.MockTransport(handler),
        clock=clock,
        wall=lambda: fake.wall,
        sleep=clock.sleep,
    )
    extract(client, tmp_path)
    timeouts = dict(seen)
    assert timeouts[EXTRACT]["read"] == 900
    assert timeouts["/auth/login"]["read"] == 20


def test_jwt_subject_reads_the_user_id() -> None:
    assert jwt_subject(jwt({"sub": 9})) == 9
    assert jwt_subject(jwt({"sub": "12"})) == 12
    assert jwt_subject("not-a-jwt") is None
