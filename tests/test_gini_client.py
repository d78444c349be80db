"""The Gini client and vendor against a small in-memory Gini that keeps protocol state.

``FakeGini`` answers through ``httpx.MockTransport`` on two hosts: the user centre issues
tokens with ``expires_in`` (password and client-credentials grants, client Basic auth), the
API checks them, keeps uploaded documents whose ``progress`` the test moves, pages its
document list by ``limit``/``offset`` and answers with the seed's bodies. A virtual clock
stands in for time.
"""

from __future__ import annotations

import base64
import copy
import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import httpx
import pytest
from pydantic import ValidationError

from connectors.base import ConnectorContext, DocumentRef, PollStatus, WebhookRequest
from connectors.errors import AuthFailed, TerminalError, TransientError, WebhookRejected
from connectors.ratelimit import reset_shared_limiters
from connectors.vendors.gini.client import MEDIA_TYPE
from connectors.vendors.gini.settings import GiniSettings
from connectors.vendors.gini.vendor import GiniVendor, tag
from tests.gini_payloads import SEED_EXTRACTIONS, SEED_LAYOUT_PAGE, document_info

API = "https://api.gini.example"
USERS = "https://user.gini.example"
CLIENT_ID = "docrelay-client"
CLIENT_SECRET = "cs-Very-Secret-0815"
USER = "ap@acme.example"
PASSWORD = "pw-Very-Secret-4711"
NOW = datetime(2026, 3, 5, 9, 0, tzinfo=UTC)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


class FakeGini:
    """Just enough of Gini's user centre and document API, with state."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.now = NOW
        self.lifetime = 3599
        self.tokens: dict[str, float] = {}
        """access token → when it expires (on the fake clock)."""
        self.grants: list[dict[str, str]] = []
        self.documents: dict[str, dict[str, Any]] = {}
        self.uploads: list[dict[str, Any]] = []
        self.requests: list[tuple[str, str, httpx.Request]] = []
        self.lose_upload_answer = False
        self.feedback: list[Any] = []
        self.deleted: list[str] = []
        self.feedback_status = 204
        self.unknown_labels: set[str] = set()
        """Labels a feedback PUT is refused for (404), as Gini does for labels it lacks."""
        self.extractions: dict[str, Any] = copy.deepcopy(SEED_EXTRACTIONS)
        self.refuse_password = False

    def count(self, method: str, path: str) -> int:
        return sum(1 for m, p, _ in self.requests if m == method and p == path)

    def add_document(self, name: str, **fields: Any) -> str:
        doc_id = str(uuid.uuid1())
        created = int(self.now.timestamp() * 1000)
        self.documents[doc_id] = document_info(
            doc_id, API, name=name, progress="PENDING", creationDate=created, **fields
        )
        return doc_id

    def handler(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        self.requests.append((request.method, url.path, request))
        if url.host == "user.gini.example":
            return self._token(request)
        if url.host != "api.gini.example":
            return httpx.Response(502)
        auth = request.headers.get("Authorization", "")
        scheme, _, token = auth.partition(" ")
        if scheme.lower() == "basic":
            if base64.b64decode(token).decode() != f"{CLIENT_ID}:{CLIENT_SECRET}":
                return httpx.Response(401)
            if not request.headers.get("X-User-Identifier"):
                return httpx.Response(400)
        elif scheme.lower() != "bearer" or self.tokens.get(token, -1) < self.clock():
            return httpx.Response(401, json={"message": "invalid token"})
        if request.headers.get("Accept") not in (MEDIA_TYPE, "*/*"):
            return httpx.Response(406)
        return self._api(request)

    def _token(self, request: httpx.Request) -> httpx.Response:
        expected = base64.b64encode(f"{CLIENT_ID}:{CLIENT_SECRET}".encode()).decode()
        if request.headers.get("Authorization") != f"Basic {expected}":
            return httpx.Response(401, json={"error": "unauthorized"})
        form = {k: v[-1] for k, v in parse_qs(request.content.decode()).items()}
        query = {k: v[-1] for k, v in parse_qs(request.url.query.decode()).items()}
        self.grants.append({**form, "query_grant": query.get("grant_type", "")})
        grant = form.get("grant_type")
        if grant == "password" and (
            self.refuse_password or form.get("username") != USER or form.get("password") != PASSWORD
        ):
            return httpx.Response(400, json={"error": "invalid_grant"})
        if grant not in ("password", "client_credentials"):
            return httpx.Response(400, json={"error": "unsupported_grant_type"})
        token = str(uuid.uuid4())
        self.tokens[token] = self.clock() + self.lifetime
        return httpx.Response(
            200, json={"access_token": token, "token_type": "bearer", "expires_in": self.lifetime}
        )

    def _api(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        method = request.method
        query = {k: v[-1] for k, v in parse_qs(request.url.query.decode()).items()}
        vnd = {"Content-Type": MEDIA_TYPE}
        if path == "/documents" and method == "POST":
            body = request.read()
            doc_id = self.add_document(query.get("filename", "unnamed"))
            self.uploads.append(
                {"headers": dict(request.headers), "body": body, "query": query, "id": doc_id}
            )
            if self.lose_upload_answer:
                raise httpx.ReadError("connection reset after the upload")
            return httpx.Response(201, headers={"Location": f"{API}/documents/{doc_id}"})
        if path == "/documents" and method == "GET":
            limit, offset = int(query.get("limit", 20)), int(query.get("offset", 0))
            docs = list(self.documents.values())
            page = docs[offset : offset + min(limit, 2)]  # the fake pages by two at most
            return httpx.Response(
                200, headers=vnd, json={"totalCount": len(docs), "documents": page}
            )
        parts = path.strip("/").split("/")
        doc = self.documents.get(parts[1]) if len(parts) >= 2 else None
        if doc is None:
            return httpx.Response(404, json={"message": "no document"})
        tail = parts[2:]
        if not tail and method == "GET":
            return httpx.Response(200, headers=vnd, json=doc)
        if not tail and method == "DELETE":
            del self.documents[parts[1]]
            return httpx.Response(204)
        if tail == ["extractions"] and method == "GET":
            return httpx.Response(200, headers=vnd, json=self.extractions)
        if tail == ["extractions"] and method == "PUT":
            assert request.headers["Content-Type"] == MEDIA_TYPE
            sent = json.loads(request.content)
            self.feedback.append(sent)
            if unknown := sorted(set(sent["feedback"]) & self.unknown_labels):
                return httpx.Response(404, json={"message": f"Unknown label {unknown[0]}"})
            return httpx.Response(self.feedback_status, json={"message": "invalid amount"})
        if len(tail) == 2 and tail[0] == "extractions" and method == "DELETE":
            if tail[1] not in self.extractions["extractions"]:
                return httpx.Response(404)
            self.deleted.append(tail[1])
            del self.extractions["extractions"][tail[1]]
            return httpx.Response(204)
        if tail == ["layout"]:
            return httpx.Response(200, headers=vnd, json={"pages": [SEED_LAYOUT_PAGE]})
        if tail == ["processed"]:
            return httpx.Response(200, headers={"Content-Type": "image/jpeg"}, content=b"JPEG")
        return httpx.Response(405)


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(autouse=True)
def _fresh_limiters() -> Iterator[None]:
    reset_shared_limiters()
    yield
    reset_shared_limiters()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def fake(clock: FakeClock) -> FakeGini:
    return FakeGini(clock)


def settings(**overrides: Any) -> GiniSettings:
    values: dict[str, Any] = {
        "base_url": API,
        "auth_url": USERS,
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
        "username": USER,
        "password": PASSWORD,
        "rate_limit": None,
        **overrides,
    }
    return GiniSettings(**values)


def make_vendor(fake: FakeGini, clock: FakeClock, tmp_path: Path, **overrides: Any) -> GiniVendor:
    context = ConnectorContext(name="gini", data_dir=tmp_path, clock=clock)
    return GiniVendor(
        settings(**overrides),
        context,
        transport=httpx.MockTransport(fake.handler),
        sleep=clock.sleep,
        jitter=lambda: 1.0,
        wall=lambda: fake.now,
    )


@pytest.fixture
def vendor(fake: FakeGini, clock: FakeClock, tmp_path: Path) -> Iterator[GiniVendor]:
    made = make_vendor(fake, clock, tmp_path)
    yield made
    made.close()


PDF = b"%PDF-1.4\n" + b"0123456789" * 2_000 + b"\n%%EOF\n"


def make_document(
    tmp_path: Path,
    doc_id: int = 7,
    *,
    filename: str = "Rechnung 4711.pdf",
    mime: str = "application/pdf",
    data: bytes | None = None,
    pages: int | None = 1,
    page_sizes: tuple[tuple[float, float], ...] = ((595.28, 841.89),),
) -> DocumentRef:
    import hashlib

    if data is None:
        data = one_page_pdf() if mime == "application/pdf" else b"x"
    path = tmp_path / f"blob-{doc_id}"
    path.write_bytes(data)
    return DocumentRef(
        id=doc_id,
        sha256=hashlib.sha256(data).hexdigest(),
        filename=filename,
        mime_type=mime,
        size_bytes=len(data),
        pages=pages,
        received_at=NOW - timedelta(minutes=1),
        metadata={},
        path=path,
        page_sizes=page_sizes,
    )


def one_page_pdf(pages: int = 1, **encryption: str) -> bytes:
    from fpdf import FPDF

    pdf = FPDF()
    pdf.set_font("helvetica", size=12)
    if encryption:
        pdf.set_encryption(**encryption)
    for n in range(pages):
        pdf.add_page()
        pdf.text(20, 20, f"Rechnung Seite {n + 1}")
    return bytes(pdf.output())


def submitted(vendor: GiniVendor, fake: FakeGini, tmp_path: Path) -> tuple[str, dict[str, Any]]:
    result = vendor.submit(make_document(tmp_path), first_attempt=True)
    return result.vendor_ref, result.data


# --------------------------------------------------------------------------- settings


def test_settings_need_the_credentials_of_the_chosen_auth():
    with pytest.raises(ValidationError, match="username and password"):
        GiniSettings(client_id="c", client_secret="s")
    with pytest.raises(ValidationError, match="user_identifier"):
        GiniSettings(client_id="c", client_secret="s", auth="trusted")
    ok = GiniSettings(client_id="c", client_secret="s", auth="client_credentials")
    assert (ok.base_url, ok.token_url) == (
        "https://api.gini.net",
        "https://user.gini.net/oauth/token",
    )
    with pytest.raises(ValidationError, match="metadata"):
        GiniSettings(client_id="c", client_secret="s", auth="client_credentials",
                     metadata={"bad key": "x"})  # fmt: skip
    assert settings(metadata={"X-Document-Metadata-BranchId": "hq"}).metadata == {"branchid": "hq"}


# --------------------------------------------------------------------------- auth


def test_the_password_grant_asks_the_user_centre_with_client_basic_auth(vendor, fake, tmp_path):
    submitted(vendor, fake, tmp_path)
    assert fake.grants == [
        {"grant_type": "password", "username": USER, "password": PASSWORD,
         "query_grant": "password"}
    ]  # fmt: skip
    token_call = next(r for m, p, r in fake.requests if p == "/oauth/token")
    assert token_call.method == "POST"
    assert token_call.headers["Content-Type"] == "application/x-www-form-urlencoded"
    api_calls = [r for _, p, r in fake.requests if p != "/oauth/token"]
    assert api_calls and all(r.headers["Accept"] == MEDIA_TYPE for r in api_calls)
    assert all(r.headers["Authorization"].startswith("Bearer ") for r in api_calls)


def test_a_token_is_renewed_before_expires_in_runs_out(vendor, fake, clock, tmp_path):
    ref, data = submitted(vendor, fake, tmp_path)
    clock.now += 3599 - 30  # inside the refresh margin
    vendor.poll(ref, data)
    assert len(fake.grants) == 2
    assert fake.count("GET", f"/documents/{ref}") == 1  # no 401 on the way


def test_a_401_renews_the_token_once_and_the_call_goes_through(vendor, fake, tmp_path):
    ref, data = submitted(vendor, fake, tmp_path)
    fake.tokens.clear()  # revoked early
    assert vendor.poll(ref, data).status == PollStatus.PROCESSING
    assert len(fake.grants) == 2
    assert fake.count("GET", f"/documents/{ref}") == 2


def test_refused_credentials_are_auth_failed_before_any_upload(fake, clock, tmp_path):
    bad = make_vendor(fake, clock, tmp_path, password="wrong")
    with pytest.raises(AuthFailed, match="refused the password grant: invalid_grant") as caught:
        bad.submit(make_document(tmp_path), first_attempt=True)
    assert "wrong" not in str(caught.value) and fake.uploads == []


def test_a_token_refused_again_after_renewing_is_auth_failed(vendor, fake, tmp_path):
    ref, data = submitted(vendor, fake, tmp_path)
    fake.lifetime = -10  # every new token is dead on arrival
    fake.tokens.clear()
    with pytest.raises(AuthFailed):
        vendor.poll(ref, data)


def test_client_credentials_grant(fake, clock, tmp_path):
    made = make_vendor(fake, clock, tmp_path, auth="client_credentials", username=None,
                       password=None)  # fmt: skip
    made.submit(make_document(tmp_path), first_attempt=True)
    assert [g["grant_type"] for g in fake.grants] == ["client_credentials"]


def test_trusted_backend_sends_basic_and_the_user_identifier(fake, clock, tmp_path):
    made = make_vendor(fake, clock, tmp_path, auth="trusted", user_identifier="user-42")
    made.submit(make_document(tmp_path), first_attempt=True)
    assert fake.grants == []
    upload = fake.uploads[0]["headers"]
    assert upload["x-user-identifier"] == "user-42"
    assert upload["authorization"].startswith("Basic ")


# --------------------------------------------------------------------------- pre-flight


def test_preflight_refuses_what_gini_refuses_before_any_request(vendor, fake, tmp_path):
    big = make_document(tmp_path, 1, data=b"%PDF-1.4\n" + b"0" * (10 * 1024 * 1024))
    with pytest.raises(TerminalError, match="less than 10485760 bytes"):
        vendor.submit(big, first_attempt=True)
    text = make_document(tmp_path, 2, filename="a.txt", mime="text/plain", data=b"a" * 524_288)
    with pytest.raises(TerminalError, match="plain text of less than 524288 bytes"):
        vendor.submit(text, first_attempt=True)
    latin = make_document(tmp_path, 3, filename="a.txt", mime="text/plain", data=b"Gr\xfc\xdfe")
    with pytest.raises(TerminalError, match="not UTF-8"):
        vendor.submit(latin, first_attempt=True)
    locked = make_document(tmp_path, 4, data=one_page_pdf(user_password="u", owner_password="o"))
    with pytest.raises(TerminalError, match="password-protected"):
        vendor.submit(locked, first_attempt=True)
    restricted = make_document(tmp_path, 5, data=one_page_pdf(owner_password="owner-only"))
    with pytest.raises(TerminalError, match="security restrictions"):
        vendor.submit(restricted, first_attempt=True)
    word = make_document(tmp_path, 6, filename="a.docx", mime="application/msword")
    with pytest.raises(TerminalError, match="does not take application/msword"):
        vendor.submit(word, first_attempt=True)
    assert fake.requests == []


def test_a_long_document_is_sent_and_its_result_says_only_the_first_pages_were_read(
    vendor, fake, tmp_path
):
    doc = make_document(tmp_path, data=one_page_pdf(pages=12), pages=None)
    result = vendor.submit(doc, first_attempt=True)
    assert result.data["pages"] == {"total": 12, "read": 10}
    fake.documents[result.vendor_ref]["progress"] = "COMPLETED"
    ref, data = result.vendor_ref, dict(result.data)
    data = vendor.poll(ref, data).data or data
    canonical = vendor.normalize(json.loads(json.dumps(vendor.fetch(ref, data, doc))))
    assert canonical.quality["partial"] is True
    assert (canonical.quality["pages_read"], canonical.quality["pages_total"]) == (10, 12)
    assert "first 10 pages" in canonical.quality["partial_reason"]


# --------------------------------------------------------------------------- submit


def test_raw_upload_streams_the_blob_with_filename_and_metadata(fake, clock, tmp_path):
    made = make_vendor(fake, clock, tmp_path, metadata={"branchid": "hq-1"})
    doc = make_document(tmp_path, 7, filename="scan.jpeg.pdf")
    result = made.submit(doc, first_attempt=True)
    upload = fake.uploads[0]
    assert upload["body"] == doc.path.read_bytes()
    assert upload["query"] == {"filename": f"scan.jpeg.{tag(doc)}.pdf"}
    assert upload["headers"]["content-type"] == "application/pdf"
    assert upload["headers"]["content-length"] == str(doc.size_bytes)
    assert upload["headers"]["x-document-metadata-branchid"] == "hq-1"
    assert upload["headers"]["x-document-metadata-docrelayid"] == "7"
    assert result.vendor_ref == upload["id"]
    assert result.data["links"] == {"document": f"{API}/documents/{upload['id']}"}
    assert result.data["reconciled"] is False


def test_multipart_upload_puts_the_file_in_the_part_named_file(fake, clock, tmp_path):
    made = make_vendor(fake, clock, tmp_path, upload="multipart")
    doc = make_document(tmp_path)
    made.submit(doc, first_attempt=True)
    upload = fake.uploads[0]
    assert upload["query"] == {}
    assert upload["headers"]["content-type"].startswith("multipart/form-data; boundary=")
    assert b'name="file"; filename="Rechnung 4711.' in upload["body"]
    assert doc.path.read_bytes() in upload["body"]


def test_a_lost_upload_answer_is_found_in_the_document_list_not_uploaded_again(
    vendor, fake, tmp_path
):
    for n in range(3):  # others' documents, so the look-up pages through the list
        fake.add_document(f"other-{n}.pdf")
    doc = make_document(tmp_path)
    fake.lose_upload_answer = True
    with pytest.raises(TransientError, match="after the request was sent"):
        vendor.submit(doc, first_attempt=True)
    assert len(fake.uploads) == 1
    fake.lose_upload_answer = False
    again = vendor.submit(doc, first_attempt=False)
    assert len(fake.uploads) == 1, "found, not uploaded again"
    assert again.vendor_ref == fake.uploads[0]["id"]
    assert again.data["reconciled"] is True
    assert again.data["links"]["document"] == f"{API}/documents/{again.vendor_ref}"
    assert fake.count("GET", "/documents") == 2  # 4 documents, two per page


def test_upload_names_are_plain_and_carry_the_type(vendor, tmp_path):
    doc = make_document(tmp_path, 9, filename="../in\tbox/scan.JPG", mime="image/jpeg")
    assert vendor.upload_name(doc, "image/jpeg") == f"scan.{tag(doc)}.JPG"
    pdf = make_document(tmp_path, 10, filename="Rechnung.jpg")
    assert vendor.upload_name(pdf, "application/pdf") == f"Rechnung.{tag(pdf)}.pdf"
    blank = make_document(tmp_path, 11, filename="...")
    assert vendor.upload_name(blank, "application/pdf") == f"document.{tag(blank)}.pdf"


def test_without_tag_or_metadata_there_is_no_reconcile_and_the_engine_knows(fake, clock, tmp_path):
    made = make_vendor(fake, clock, tmp_path, tag_file_name=False, document_id_metadata=None)
    assert made.capabilities.reconcile_uploads is False
    made.submit(make_document(tmp_path), first_attempt=False)
    assert fake.count("GET", "/documents") == 0 and len(fake.uploads) == 1
    assert fake.uploads[0]["query"] == {"filename": "Rechnung 4711.pdf"}
    by_metadata = make_vendor(fake, clock, tmp_path, tag_file_name=False)
    assert by_metadata.capabilities.reconcile_uploads is True


def test_the_look_up_finds_an_upload_by_the_metadata_gini_shows(fake, clock, tmp_path):
    made = make_vendor(fake, clock, tmp_path, tag_file_name=False)
    doc_id = fake.add_document("Rechnung 4711.pdf", metadata={"docrelayid": "7"})
    found = made.submit(make_document(tmp_path), first_attempt=False)
    assert found.vendor_ref == doc_id and fake.uploads == []


def test_a_retry_with_nothing_found_uploads(vendor, fake, tmp_path):
    fake.add_document("Rechnung 4711.docrelay-7-00000000.pdf")  # another life of id 7
    fake.documents[next(iter(fake.documents))]["creationDate"] = 0  # long before
    result = vendor.submit(make_document(tmp_path), first_attempt=False)
    assert len(fake.uploads) == 1 and result.data["reconciled"] is False


def test_an_upload_answer_without_location_is_transient(vendor, fake, tmp_path):
    original = fake._api

    def no_location(request: httpx.Request) -> httpx.Response:
        response = original(request)
        if request.method == "POST":
            return httpx.Response(201)
        return response

    fake._api = no_location  # type: ignore[method-assign]
    with pytest.raises(TransientError, match="named no Location"):
        vendor.submit(make_document(tmp_path), first_attempt=True)


# --------------------------------------------------------------------------- status


def test_progress_maps_to_poll_status_and_the_links_are_kept(vendor, fake, tmp_path):
    ref, data = submitted(vendor, fake, tmp_path)
    assert vendor.poll(ref, data).status == PollStatus.PROCESSING
    fake.documents[ref]["progress"] = "COMPLETED"
    # links on another path of the API, as Gini may hand out: followed as given
    fake.documents[ref]["_links"]["extractions"] = f"{API}/documents/{ref}/extractions"
    done = vendor.poll(ref, data)
    assert done.status == PollStatus.READY and done.data is not None
    assert done.data["links"]["layout"] == f"{API}/documents/{ref}/layout"
    assert done.data["document_info"]["progress"] == "COMPLETED"
    fake.documents[ref]["progress"] = "ERROR"
    failed = vendor.poll(ref, data)
    assert failed.status == PollStatus.REJECTED and "progress ERROR" in (failed.reason or "")
    del fake.documents[ref]
    gone = vendor.poll(ref, data)
    assert gone.status == PollStatus.REJECTED and "no longer has" in (gone.reason or "")


def test_a_link_to_another_host_is_refused_not_followed(vendor, fake, tmp_path):
    ref, data = submitted(vendor, fake, tmp_path)
    data["links"]["document"] = f"https://evil.example/documents/{ref}"
    with pytest.raises(TerminalError, match="outside its API"):
        vendor.poll(ref, data)


def test_webhooks_are_refused():
    vendor = GiniVendor(
        settings(), ConnectorContext(name="g", data_dir=Path("."), clock=lambda: 0.0)
    )
    with pytest.raises(WebhookRejected):
        vendor.parse_webhook(WebhookRequest(method="POST", headers={}, body=b"{}"))
    assert vendor.capabilities.webhooks is False and vendor.capabilities.reconcile_uploads


# --------------------------------------------------------------------------- fetch & co


def test_fetch_reads_the_extractions_link_verbatim(vendor, fake, tmp_path):
    ref, data = submitted(vendor, fake, tmp_path)
    fake.documents[ref]["progress"] = "COMPLETED"
    data = vendor.poll(ref, data).data or data
    doc = make_document(tmp_path)
    raw = vendor.fetch(ref, data, doc)
    assert raw["extractions"] == SEED_EXTRACTIONS
    assert raw["page_sizes"] == [[595.28, 841.89]]
    assert "gini_page_sizes" not in raw  # intake knew the page sizes: no layout call
    assert fake.count("GET", f"/documents/{ref}/layout") == 0
    due = vendor.normalize(raw).get("amount_due")
    assert due is not None and due.bbox is not None and due.bbox.page_width == 595.28


def test_fetch_of_an_image_takes_gini_page_sizes_from_the_layout(vendor, fake, tmp_path):
    ref, data = submitted(vendor, fake, tmp_path)
    fake.documents[ref]["progress"] = "COMPLETED"
    data = vendor.poll(ref, data).data or data
    image = make_document(tmp_path, 8, filename="s.jpg", mime="image/jpeg", page_sizes=())
    raw = vendor.fetch(ref, data, image)
    assert raw["gini_page_sizes"] == [[595.3, 841.9]]
    due = vendor.normalize(raw).get("amount_due")
    assert due is not None and due.bbox is not None and due.bbox.page_height == 841.9


def test_layout_and_processed_follow_their_links(vendor, fake, tmp_path):
    ref, data = submitted(vendor, fake, tmp_path)
    fake.documents[ref]["progress"] = "COMPLETED"
    data = vendor.poll(ref, data).data or data
    assert vendor.layout(ref, data)["pages"][0]["sizeX"] == 595.3
    assert vendor.processed(ref, data) == (b"JPEG", "image/jpeg")
    processed = [r for m, p, r in fake.requests if p.endswith("/processed")]
    assert processed[0].headers["Accept"] == "*/*"


def test_purge_deletes_the_document_and_is_safe_to_repeat(vendor, fake, tmp_path):
    ref, data = submitted(vendor, fake, tmp_path)
    vendor.purge(ref, data)
    vendor.purge(ref, data)
    assert ref not in fake.documents and fake.count("DELETE", f"/documents/{ref}") == 2


def test_probe_gets_a_token_and_lists_one_page_read_only(vendor, fake):
    lines = vendor.probe()
    assert len(fake.grants) == 1
    assert [(m, p) for m, p, _ in fake.requests] == [
        ("POST", "/oauth/token"),
        ("GET", "/documents"),
    ]
    listing = fake.requests[-1][2]
    assert dict(listing.url.params) == {"limit": "1", "offset": "0"}
    assert any("document(s)" in line for line in lines)


def test_probe_with_refused_credentials_is_auth_failed(fake, clock, tmp_path):
    fake.refuse_password = True
    with pytest.raises(AuthFailed):
        make_vendor(fake, clock, tmp_path).probe()


def test_secrets_stay_out_of_messages(vendor, fake, tmp_path):
    ref, data = submitted(vendor, fake, tmp_path)
    token = next(iter(fake.tokens))
    original = fake._api
    fake._api = lambda request: httpx.Response(  # type: ignore[method-assign]
        400, json={"echo": f"{token} {CLIENT_SECRET} {PASSWORD}"}
    )
    with pytest.raises(TerminalError) as caught:
        vendor.poll(ref, data)
    fake._api = original  # type: ignore[method-assign]
    text = str(caught.value)
    assert token not in text and CLIENT_SECRET not in text and PASSWORD not in text
