"""The Konfuzio client and vendor against a small in-memory Konfuzio that keeps protocol state.

``FakeKonfuzio`` answers through ``httpx.MockTransport``: logins issue the user's token (DRF
keeps one per user), uploads create documents whose ``status_data`` the test moves, lists are
paginated the DRF way (with ``next`` on another host, as behind a proxy), and the review
endpoints enforce the field names of the contract (``is_revised`` to create, ``revised`` to
PATCH) and the "nothing left to review" guard. A virtual clock stands in for time.
"""

from __future__ import annotations

import copy
import hashlib
import io
import json
from collections import defaultdict, deque
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.parser import BytesParser
from email.policy import HTTP
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode

import httpx
import pytest
from pydantic import ValidationError

from connectors.base import (
    ConnectorContext,
    Correction,
    CorrectionKind,
    DocumentRef,
    PollStatus,
    WebhookRequest,
)
from connectors.errors import AuthFailed, TerminalError, TransientError, WebhookRejected
from connectors.ratelimit import reset_shared_limiters
from connectors.vendors.konfuzio.settings import KonfuzioSettings
from connectors.vendors.konfuzio.vendor import STATUS_NAMES, KonfuzioVendor
from tests.konfuzio_payloads import BOXES, TEXT, invoice_detail, span

BASE = "https://konfuzio.acme.example/api/v3"
PUBLIC = "https://relay.acme.example"
USER = "integration@acme.example"
PASSWORD = "pw-Very-Secret-4711"
USER_TOKEN = "bf20d992c0960876157b53745cdd86fad95e6ff4"
STATIC_TOKEN = "0123456789abcdef0123456789abcdef01234567"
CALLBACK = "cb-Unguessable-Token-0123456789abcdef"
PROJECT = 46
PDF = b"%PDF-1.4\n" + b"0123456789" * 20_000 + b"\n%%EOF\n"
NOW = datetime(2024, 3, 5, 9, 0, tzinfo=UTC)


# --------------------------------------------------------------------------- the fake


class FakeKonfuzio:
    """Just enough of Konfuzio's API v3, with state."""

    def __init__(self) -> None:
        self.now = NOW
        self.tokens = {STATIC_TOKEN}
        self.logins = 0
        self.documents: dict[int, dict[str, Any]] = {}
        self.uploads: list[dict[str, Any]] = []
        self.requests: list[tuple[str, str, dict[str, str]]] = []
        self.bodies: list[tuple[str, str, Any]] = []
        self.missing: list[dict[str, Any]] = []
        self.document_sets: dict[int, list[int]] = {}
        self.script: dict[tuple[str, str], deque[Any]] = defaultdict(deque)
        self.lose_upload_answer = False
        self.locked: set[int] = set()
        self.bbox_available = True
        self._ids = 5000
        self._annotation_ids = 900_000

    # ------------------------------------------------------------------ for tests

    def fail(self, method: str, path: str, *outcomes: Any) -> None:
        self.script[(method, path)].extend(outcomes)

    def count(self, method: str, path: str | None = None) -> int:
        return sum(1 for m, p, _ in self.requests if m == method and (path is None or p == path))

    def mutations(self) -> list[tuple[str, str]]:
        return [(m, p) for m, p, _ in self.requests if m != "GET" and p != "auth/"]

    def add_document(self, **fields: Any) -> int:
        self._ids += 1
        doc_id = self._ids
        detail = invoice_detail(doc_id)
        detail.update({"project": PROJECT, "created_at": self.now.isoformat(), **fields})
        self.documents[doc_id] = detail
        return doc_id

    def annotation(self, annotation_id: int) -> dict[str, Any]:
        for doc in self.documents.values():
            for aset in doc["annotation_sets"]:
                for label in aset["labels"]:
                    for ann in label["annotations"]:
                        if ann["id"] == annotation_id:
                            return ann
        raise KeyError(annotation_id)

    def label_of(self, doc_id: int, name: str, set_id: Any = ...) -> dict[str, Any]:
        for aset in self.documents[doc_id]["annotation_sets"]:
            if set_id is not ... and aset["id"] != set_id:
                continue
            for label in aset["labels"]:
                if label["name"] == name:
                    return label
        raise KeyError(name)

    # ------------------------------------------------------------------ transport

    def handler(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        path = url.path.removeprefix("/api/v3/")
        params = {k: v[-1] for k, v in parse_qs(url.query.decode()).items()}
        method = request.method
        self.requests.append((method, path, params))
        if self.script[(method, path)]:
            outcome = self.script[(method, path)].popleft()
            if isinstance(outcome, Exception):
                raise outcome
            if isinstance(outcome, int):
                return httpx.Response(outcome, json={"detail": "scripted"})
            return outcome
        if not path.endswith("/") and not path.endswith("/bbox"):
            return httpx.Response(404, json={"detail": "Not found."})  # DRF wants the slash
        if path == "auth/" and method == "POST":
            return self._login(request)
        auth = request.headers.get("Authorization", "")
        if not auth.startswith("Token ") or auth.removeprefix("Token ") not in self.tokens:
            return httpx.Response(401, json={"detail": "Invalid token."})
        body = None
        if request.content and request.headers.get("Content-Type", "").startswith(
            "application/json"
        ):
            body = json.loads(request.content)
            self.bodies.append((method, path, body))
        return self._route(method, path.strip("/").split("/"), params, request, body)

    def _login(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        if body.get("username") != USER or body.get("password") != PASSWORD:
            return httpx.Response(
                400, json={"non_field_errors": ["Unable to log in with provided credentials."]}
            )
        self.logins += 1
        self.tokens.add(USER_TOKEN)
        return httpx.Response(200, json={"token": USER_TOKEN})

    def _route(
        self,
        method: str,
        parts: list[str],
        params: dict[str, str],
        request: httpx.Request,
        body: Any,
    ) -> httpx.Response:
        head, rest = parts[0], parts[1:]
        if head == "projects" and rest == [str(PROJECT)]:
            return httpx.Response(200, json={"id": PROJECT, "name": "Eingangsrechnungen"})
        if head == "categories" and rest == ["12"]:
            return httpx.Response(200, json={"id": 12, "name": "Rechnung", "project": PROJECT})
        if head == "labels" and not rest:
            labels = [
                {"id": 101, "name": "Rechnungsnummer", "project": PROJECT},
                {"id": 103, "name": "Bruttobetrag", "project": PROJECT},
                {"id": 107, "name": "Kundennummer", "project": PROJECT},
                {"id": 999, "name": "Elsewhere", "project": 7},
            ]
            return self._page("labels/", labels, params)
        if head == "documents":
            return self._documents(method, rest, params, request, body)
        if head == "document-sets" and rest:
            members = self.document_sets.get(int(rest[0]))
            if members is None:
                return httpx.Response(404, json={"detail": "Not found."})
            return httpx.Response(
                200, json={"id": int(rest[0]), "documents": [{"id": m} for m in members]}
            )
        if head == "annotations":
            return self._annotations(method, rest, body)
        if head == "missing-annotations":
            return self._missing(method, rest, params, body)
        return httpx.Response(404, json={"detail": "Not found."})

    def _page(self, ref: str, items: list[Any], params: dict[str, str]) -> httpx.Response:
        limit = min(int(params.get("limit", 3)), 3)  # the server's maximum page
        offset = int(params.get("offset", 0))
        chunk = items[offset : offset + limit]
        following = None
        if offset + limit < len(items):
            query = urlencode({**params, "offset": offset + limit, "limit": limit})
            following = f"http://internal:8000/api/v3/{ref}?{query}"  # behind a proxy
        return httpx.Response(
            200,
            json={"count": len(items), "next": following, "previous": None, "results": chunk},
        )

    def _documents(
        self,
        method: str,
        rest: list[str],
        params: dict[str, str],
        request: httpx.Request,
        body: Any,
    ) -> httpx.Response:
        if not rest and method == "POST":
            return self._upload(request)
        if not rest and method == "GET":
            found = [d for d in self.documents.values() if str(d["project"]) == params["project"]]
            after = params.get("created_at_after")
            if after:
                found = [d for d in found if d["created_at"][:10] > after]
            if params.get("ordering") == "-created_at":
                found.sort(key=lambda d: d["created_at"], reverse=True)
            return self._page("documents/", [_fields(d, params) for d in found], params)
        doc = self.documents.get(int(rest[0]))
        if doc is None:
            return httpx.Response(404, json={"detail": "Not found."})
        if rest[1:] == ["bbox"] and method == "GET":
            if not self.bbox_available:
                return httpx.Response(404, json={"detail": "Not found."})
            return httpx.Response(200, json=BOXES)
        if rest[1:]:
            return httpx.Response(404, json={"detail": "Not found."})
        if method == "GET":
            return httpx.Response(200, json=_fields(doc, params))
        if method == "DELETE":
            del self.documents[doc["id"]]
            return httpx.Response(204)
        if method == "PATCH":
            if set(body) != {"is_reviewed"}:
                return httpx.Response(400, json={"detail": f"unexpected {sorted(body)}"})
            if self.left_to_review(doc):
                return httpx.Response(
                    400, json={"is_reviewed": ["There are still annotations to be reviewed."]}
                )
            doc["is_reviewed"] = True
            return httpx.Response(200, json=doc)
        return httpx.Response(405, json={"detail": "Method not allowed."})

    def _upload(self, request: httpx.Request) -> httpx.Response:
        header = f"Content-Type: {request.headers['Content-Type']}\r\n\r\n".encode()
        message = BytesParser(policy=HTTP).parsebytes(header + request.content)
        form: dict[str, str] = {}
        upload: dict[str, Any] = {}
        for part in message.iter_parts():
            name = str(part.get_param("name", header="content-disposition"))
            payload = part.get_payload(decode=True)
            if name == "data_file":
                upload.update(
                    filename=part.get_filename(), data=payload, content_type=part.get_content_type()
                )
            else:
                form[name] = payload.decode()
        upload["form"] = form
        self.uploads.append(upload)
        doc_id = self.add_document(
            status_data=0,
            data_file_name=upload["filename"],
            callback_url=form.get("callback_url"),
            project=int(form["project"]),
        )
        if self.lose_upload_answer:
            raise httpx.ReadTimeout("the answer never came")
        return httpx.Response(201, json={"id": doc_id, "status_data": 0})

    def _annotations(self, method: str, rest: list[str], body: Any) -> httpx.Response:
        if not rest and method == "POST":
            if "revised" in body:
                return httpx.Response(400, json={"revised": ["Unknown field; use is_revised."]})
            if ("annotation_set" in body) == ("label_set" in body):
                return httpx.Response(
                    400, json={"non_field_errors": ["Give annotation_set or label_set."]}
                )
            doc = self.documents[body["document"]]
            target = None
            if "annotation_set" in body:
                target = next(
                    s for s in doc["annotation_sets"] if s["id"] == body["annotation_set"]
                )
            else:
                template = next(
                    s for s in doc["annotation_sets"] if s["label_set"]["id"] == body["label_set"]
                )
                target = copy.deepcopy(template)
                self._annotation_ids += 1
                target["id"] = self._annotation_ids
                for label in target["labels"]:
                    label["annotations"] = []
                doc["annotation_sets"].append(target)
            label = next(lb for lb in target["labels"] if lb["id"] == body["label"])
            self._annotation_ids += 1
            created = {
                "id": self._annotation_ids,
                "document": doc["id"],
                "offset_string": body["span"][0]["offset_string"],
                "is_correct": body["is_correct"],
                "revised": body["is_revised"],
                "created_by": USER,
                "span": body["span"],
                "annotation_set": target["id"],
            }
            label["annotations"].append(created)
            return httpx.Response(201, json=created)
        if len(rest) == 1 and method == "PATCH":
            annotation_id = int(rest[0])
            if annotation_id in self.locked:
                return httpx.Response(403, json={"detail": "The document is in a training set."})
            if not set(body) <= {"revised", "is_correct"}:
                return httpx.Response(400, json={"detail": f"unexpected {sorted(body)}"})
            try:
                ann = self.annotation(annotation_id)
            except KeyError:
                return httpx.Response(404, json={"detail": "Not found."})
            ann.update(body)
            return httpx.Response(200, json=ann)
        return httpx.Response(405, json={"detail": "Method not allowed."})

    def _missing(
        self, method: str, rest: list[str], params: dict[str, str], body: Any
    ) -> httpx.Response:
        if not rest and method == "GET":
            found = [m for m in self.missing if str(m["document"]) == params["document"]]
            return self._page("missing-annotations/", found, params)
        if not rest and method == "POST":
            self._annotation_ids += 1
            entry = {"id": self._annotation_ids, "annotation_set": None, **body}
            self.missing.append(entry)
            return httpx.Response(201, json=entry)
        if len(rest) == 1 and method == "DELETE":
            before = len(self.missing)
            self.missing = [m for m in self.missing if m["id"] != int(rest[0])]
            return httpx.Response(204 if len(self.missing) < before else 404)
        return httpx.Response(405, json={"detail": "Method not allowed."})

    def left_to_review(self, doc: dict[str, Any]) -> int:
        left = 0
        for aset in doc["annotation_sets"]:
            if aset["id"] is None:
                continue
            for label in aset["labels"]:
                anns = label["annotations"]
                left += sum(1 for a in anns if not a.get("revised"))
                live = [a for a in anns if not (a.get("revised") and not a.get("is_correct"))]
                marked = any(
                    m["label"] == label["id"] and m.get("annotation_set") in (None, aset["id"])
                    for m in self.missing
                    if m["document"] == doc["id"]
                )
                if not live and not marked:
                    left += 1
        return left


def _fields(doc: dict[str, Any], params: dict[str, str]) -> dict[str, Any]:
    wanted = params.get("fields")
    if not wanted:
        return copy.deepcopy(doc)
    return {k: copy.deepcopy(doc[k]) for k in wanted.split(",") if k in doc}


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


class ReadRecorder(io.FileIO):
    """A file that records the size of every read (to see the upload is streamed)."""

    reads: list[int]

    def read(self, size: int = -1) -> bytes:
        data = super().read(size)
        self.reads.append(len(data))
        return data


class RecordingDocument(DocumentRef):
    opened: list[ReadRecorder]

    def open(self) -> ReadRecorder:  # type: ignore[override]
        handle = ReadRecorder(self.path, "rb")
        handle.reads = []
        self.opened.append(handle)
        return handle


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(autouse=True)
def _fresh_limiters() -> Iterator[None]:
    reset_shared_limiters()
    yield
    reset_shared_limiters()


@pytest.fixture
def fake() -> FakeKonfuzio:
    return FakeKonfuzio()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def make_vendor(
    fake: FakeKonfuzio,
    clock: FakeClock,
    tmp_path: Path,
    *,
    public_url: str | None = PUBLIC,
    **overrides: Any,
) -> KonfuzioVendor:
    settings: dict[str, Any] = {
        "base_url": BASE,
        "username": USER,
        "password": PASSWORD,
        "project": PROJECT,
        "callback_token": CALLBACK,
        "rate_limit": None,
        **overrides,
    }
    if "token" in overrides:
        settings.pop("username")
        settings.pop("password")
    context = ConnectorContext(
        name="konfuzio", data_dir=tmp_path, clock=clock, public_url=public_url
    )
    return KonfuzioVendor(
        KonfuzioSettings(**settings),
        context,
        transport=httpx.MockTransport(fake.handler),
        sleep=clock.sleep,
        jitter=lambda: 1.0,
        wall=lambda: fake.now,
    )


@pytest.fixture
def vendor(fake: FakeKonfuzio, clock: FakeClock, tmp_path: Path) -> Iterator[KonfuzioVendor]:
    made = make_vendor(fake, clock, tmp_path)
    yield made
    made.close()


def make_document(
    tmp_path: Path,
    doc_id: int = 7,
    *,
    filename: str | None = None,
    mime: str = "application/pdf",
    pages: int | None = 1,
    data: bytes = PDF,
    received_at: datetime = NOW,
) -> RecordingDocument:
    path = tmp_path / f"blob-{doc_id}"
    path.write_bytes(data)
    document = RecordingDocument(
        id=doc_id,
        sha256=hashlib.sha256(data).hexdigest(),
        filename=filename or f"invoice-{doc_id}.pdf",
        mime_type=mime,
        size_bytes=len(data),
        pages=pages,
        received_at=received_at,
        metadata={},
        path=path,
        page_sizes=((595.28, 841.89),),
    )
    object.__setattr__(document, "opened", [])  # frozen dataclass: set once, here
    return document


def uploaded(vendor: KonfuzioVendor, fake: FakeKonfuzio, tmp_path: Path, doc_id: int = 7):
    document = make_document(tmp_path, doc_id)
    result = vendor.submit(document, first_attempt=True)
    return document, result


# --------------------------------------------------------------------------- settings


def test_settings_need_a_password_or_a_token() -> None:
    with pytest.raises(ValidationError, match="set password \\(with username\\), or token"):
        KonfuzioSettings(project=1)
    with pytest.raises(ValidationError, match="not both"):
        KonfuzioSettings(project=1, username=USER, password="x", token="y")
    with pytest.raises(ValidationError, match="username is missing"):
        KonfuzioSettings(project=1, password="x")


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("https://app.konfuzio.com", "https://app.konfuzio.com/api/v3"),
        ("https://app.konfuzio.com/", "https://app.konfuzio.com/api/v3"),
        ("https://app.konfuzio.com/api", "https://app.konfuzio.com/api/v3"),
        ("https://app.konfuzio.com/api/v3/", "https://app.konfuzio.com/api/v3"),
        ("http://konfuzio.lan:8000/kf", "http://konfuzio.lan:8000/kf/api/v3"),
    ],
)
def test_base_url_forms(given: str, expected: str) -> None:
    assert KonfuzioSettings(base_url=given, project=1, token="t").base_url == expected


def test_the_default_base_url_is_konfuzios_server_and_a_v3_without_api_is_refused() -> None:
    assert KonfuzioSettings(project=1, token="t").base_url == "https://app.konfuzio.com/api/v3"
    with pytest.raises(ValidationError, match="/api/v3"):
        KonfuzioSettings(base_url="https://app.konfuzio.com/v3/", project=1, token="t")


def test_callback_token_and_allow_list_are_checked() -> None:
    with pytest.raises(ValidationError, match="24 to 256"):
        KonfuzioSettings(project=1, token="t", callback_token="short")
    with pytest.raises(ValidationError, match="24 to 256"):
        KonfuzioSettings(project=1, token="t", callback_token="has/a/slash/" + "x" * 20)
    with pytest.raises(ValidationError, match="not an address"):
        KonfuzioSettings(project=1, token="t", allow_from=["konfuzio.com"])
    settings = KonfuzioSettings(project=1, token="t", allow_from=["10.0.0.0/8", "5.75.234.115"])
    assert [str(n) for n in settings.networks()] == ["10.0.0.0/8", "5.75.234.115/32"]
    shown = repr(KonfuzioSettings(project=1, token="t" * 30, callback_token=CALLBACK))
    assert CALLBACK not in shown and "t" * 30 not in shown


# --------------------------------------------------------------------------- auth


def test_login_gets_the_token_once_and_sends_it_as_token_scheme(vendor, fake, tmp_path) -> None:
    _, result = uploaded(vendor, fake, tmp_path)
    vendor.poll(result.vendor_ref, result.data)
    vendor.poll(result.vendor_ref, result.data)
    assert fake.logins == 1 and vendor.client.logins == 1
    assert fake.requests[0][:2] == ("POST", "auth/")


def test_a_deleted_token_means_one_new_login(vendor, fake, tmp_path) -> None:
    _, result = uploaded(vendor, fake, tmp_path)
    fake.tokens.discard(USER_TOKEN)  # someone deleted the token (DELETE auth/)
    assert vendor.poll(result.vendor_ref, result.data).status == PollStatus.PROCESSING
    assert fake.logins == 2


def test_a_refused_login_is_an_auth_failure_before_any_upload(fake, clock, tmp_path) -> None:
    vendor = make_vendor(fake, clock, tmp_path, password="wrong")
    with pytest.raises(AuthFailed, match="refused the login") as caught:
        vendor.submit(make_document(tmp_path), first_attempt=True)
    assert "wrong" not in str(caught.value)
    assert fake.uploads == [] and fake.count("POST", "documents/") == 0


def test_a_configured_token_is_used_as_is(fake, clock, tmp_path) -> None:
    vendor = make_vendor(fake, clock, tmp_path, token=STATIC_TOKEN)
    _, result = uploaded(vendor, fake, tmp_path)
    assert fake.logins == 0 and result.vendor_ref.isdigit()


def test_a_refused_configured_token_is_an_auth_failure_at_once(fake, clock, tmp_path) -> None:
    vendor = make_vendor(fake, clock, tmp_path, token="not-a-token-we-know-0123456789")
    with pytest.raises(AuthFailed, match="refused the token"):
        vendor.submit(make_document(tmp_path), first_attempt=True)
    assert fake.count("POST", "documents/") == 1, "one try, no renewal, no retry"
    assert fake.uploads == [] and fake.logins == 0


def test_close_never_deletes_the_token(vendor, fake, tmp_path) -> None:
    uploaded(vendor, fake, tmp_path)
    vendor.close()
    assert fake.count("DELETE") == 0


# --------------------------------------------------------------------------- upload


def test_the_upload_is_multipart_with_the_documented_fields(fake, clock, tmp_path) -> None:
    vendor = make_vendor(fake, clock, tmp_path, category=12, assignee="ap@acme.example")
    document = make_document(tmp_path, 7)
    result = vendor.submit(document, first_attempt=True)
    (upload,) = fake.uploads
    assert upload["form"] == {
        "project": "46",
        "sync": "false",
        "category": "12",
        "assignee": "ap@acme.example",
        "callback_url": f"{PUBLIC}/webhooks/konfuzio/{CALLBACK}/7",
    }
    assert upload["filename"] == f"invoice-7.docrelay-7-{document.sha256[:8]}.pdf"
    assert upload["content_type"] == "application/pdf" and upload["data"] == PDF
    assert fake.count("GET", "documents/") == 0, "no look-up on a first attempt"
    assert result.vendor_ref == str(max(fake.documents))
    assert result.data["konfuzio_document"] == int(result.vendor_ref)
    assert result.data["reconciled"] is False and result.data["docrelay_document"] == 7


def test_the_file_is_streamed_not_read_whole(vendor, fake, tmp_path) -> None:
    document = make_document(tmp_path)
    vendor.submit(document, first_attempt=True)
    (handle,) = document.opened
    assert sum(handle.reads) >= len(PDF)
    assert max(handle.reads) < len(PDF), "read in chunks"
    assert handle.closed


def test_without_callbacks_no_callback_url_is_sent(fake, clock, tmp_path) -> None:
    for vendor in (
        make_vendor(fake, clock, tmp_path, callback_token=None),
        make_vendor(fake, clock, tmp_path, public_url=None),
    ):
        vendor.submit(make_document(tmp_path), first_attempt=True)
    assert [u["form"].get("callback_url") for u in fake.uploads] == [None, None]


@pytest.mark.parametrize(
    ("filename", "mime", "expected"),
    [
        ("scan.PDF", "application/pdf", "scan.docrelay-7-{h}.PDF"),
        ("scan", "application/pdf", "scan.docrelay-7-{h}.pdf"),
        ("scan.jpg", "application/pdf", "scan.docrelay-7-{h}.pdf"),
        ("scan.2024", "image/png", "scan.2024.docrelay-7-{h}.png"),
        ("foto.jpeg", "image/jpeg", "foto.docrelay-7-{h}.jpeg"),
    ],
)
def test_the_uploaded_name_carries_our_tag_and_the_types_extension(
    vendor, fake, tmp_path, filename, mime, expected
) -> None:
    document = make_document(tmp_path, filename=filename, mime=mime)
    vendor.submit(document, first_attempt=True)
    assert fake.uploads[-1]["filename"] == expected.format(h=document.sha256[:8])


@pytest.mark.parametrize(
    ("overrides", "document", "message"),
    [
        ({}, {"mime": "text/plain", "filename": "note.txt"}, "text/plain documents \\(.txt\\)"),
        ({}, {"mime": "application/octet-stream", "filename": "x.zip"}, "\\(.zip\\)"),
        ({}, {"pages": 251}, "251 pages; Konfuzio takes at most 250"),
        ({"max_pages": 10}, {"pages": 11}, "at most 10 per document"),
        ({"max_upload_bytes": 1000}, {}, "takes at most 1000"),
        ({"file_types": ["pdf"]}, {"mime": "image/png", "filename": "a.png"}, "sends .pdf"),
    ],
)
def test_konfuzios_limits_are_refused_before_any_request(
    fake, clock, tmp_path, overrides, document, message
) -> None:
    vendor = make_vendor(fake, clock, tmp_path, **overrides)
    with pytest.raises(TerminalError, match=message):
        vendor.submit(make_document(tmp_path, **document), first_attempt=False)
    assert fake.requests == [], "refused before login, look-up or upload"


def test_office_files_and_unknown_page_counts_go_through(vendor, fake, tmp_path) -> None:
    docx = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
    vendor.submit(
        make_document(tmp_path, mime=docx, filename="brief.docx", pages=None), first_attempt=True
    )
    assert fake.uploads[-1]["filename"].endswith(".docx")


# --------------------------------------------------------------------------- reconcile


def test_a_lost_answer_is_found_again_and_not_uploaded_twice(vendor, fake, tmp_path) -> None:
    document = make_document(tmp_path)
    fake.add_document(data_file_name="invoice-7.pdf")  # someone else's, same original name
    fake.lose_upload_answer = True
    with pytest.raises(TransientError, match="after the request was sent"):
        vendor.submit(document, first_attempt=True)
    assert len(fake.uploads) == 1, "the upload reached Konfuzio"
    fake.lose_upload_answer = False
    fake.now += timedelta(minutes=2)
    again = vendor.submit(document, first_attempt=False)  # the engine's retry
    assert len(fake.uploads) == 1, "the retry found the first upload instead of sending again"
    first = max(fake.documents)
    assert again.vendor_ref == str(first) and again.data["reconciled"] is True
    params = next(p for m, path, p in fake.requests if m == "GET" and path == "documents/")
    assert params["project"] == "46" and params["created_at_after"] == "2024-03-04"
    assert params["ordering"] == "-created_at"


def test_the_look_up_follows_pages_and_takes_the_first_upload(vendor, fake, tmp_path) -> None:
    document = make_document(tmp_path)
    name = f"invoice-7.docrelay-7-{document.sha256[:8]}.pdf"
    first = fake.add_document(data_file_name=name)
    fake.add_document(data_file_name=name)  # a doubtful second upload
    for n in range(6):
        fake.add_document(data_file_name=f"other-{n}.pdf")
    found = vendor.submit(document)
    assert found.vendor_ref == str(first) and fake.uploads == []
    assert fake.count("GET", "documents/") >= 3, "paged through (3 per page, next on a proxy host)"


def test_the_look_up_skips_failed_stale_and_foreign_documents(vendor, fake, tmp_path) -> None:
    document = make_document(tmp_path)
    name = f"invoice-7.docrelay-7-{document.sha256[:8]}.pdf"
    fake.add_document(data_file_name=name, status_data=111)
    fake.add_document(data_file_name=name, created_at=(NOW - timedelta(hours=2)).isoformat())
    fake.add_document(data_file_name="invoice-7.docrelay-7-00000000.pdf")  # another store's 7
    result = vendor.submit(document)
    assert result.data["reconciled"] is False and len(fake.uploads) == 1


def test_without_the_tag_the_callback_url_or_the_name_finds_it(fake, clock, tmp_path) -> None:
    vendor = make_vendor(fake, clock, tmp_path, tag_file_name=False)
    document = make_document(tmp_path)
    by_callback = fake.add_document(
        data_file_name="renamed.pdf", callback_url=f"{PUBLIC}/webhooks/konfuzio/{CALLBACK}/7"
    )
    assert vendor.submit(document).vendor_ref == str(by_callback)
    quiet = make_vendor(fake, clock, tmp_path, tag_file_name=False, callback_token=None)
    del fake.documents[by_callback]
    by_name = fake.add_document(data_file_name="invoice-7.pdf")
    assert quiet.submit(document).vendor_ref == str(by_name)
    assert fake.uploads == []


def test_an_answer_without_an_id_is_looked_up(vendor, fake, tmp_path) -> None:
    document = make_document(tmp_path)
    fake.fail("POST", "documents/", httpx.Response(201, json={"status": "queued"}))
    # the scripted answer stands in for a real upload: make the document it would have made
    name = f"invoice-7.docrelay-7-{document.sha256[:8]}.pdf"
    made = fake.add_document(data_file_name=name)
    assert vendor.submit(document, first_attempt=True).vendor_ref == str(made)


# --------------------------------------------------------------------------- status


EXPECTED = {
    0: PollStatus.PROCESSING,
    10: PollStatus.PROCESSING,
    1: PollStatus.PROCESSING,
    20: PollStatus.PROCESSING,
    3: PollStatus.PROCESSING,
    30: PollStatus.PROCESSING,
    4: PollStatus.PROCESSING,
    40: PollStatus.PROCESSING,
    41: PollStatus.REVIEW,
    2: PollStatus.READY,
    111: PollStatus.REJECTED,
}


def test_every_status_code_is_named_and_mapped() -> None:
    assert set(EXPECTED) == set(STATUS_NAMES)


@pytest.mark.parametrize(("code", "status"), sorted(EXPECTED.items()))
def test_every_status_code_becomes_a_poll_result(vendor, fake, tmp_path, code, status) -> None:
    _, result = uploaded(vendor, fake, tmp_path)
    fake.documents[int(result.vendor_ref)]["status_data"] = code
    polled = vendor.poll(result.vendor_ref, result.data)
    assert polled.status == status
    params = fake.requests[-1][2]
    assert "status_data" in params["fields"] and "annotation_sets" not in params["fields"]


def test_status_41_is_a_review_with_the_proposed_split(vendor, fake, tmp_path) -> None:
    _, result = uploaded(vendor, fake, tmp_path)
    proposal = [
        {"category": 12, "pages": [{"id": 900}, {"id": 901}]},
        {"category": None, "pages": [{"id": 902}]},
    ]
    fake.documents[int(result.vendor_ref)].update(
        status_data=41, proposed_split=proposal, document_set=77
    )
    polled = vendor.poll(result.vendor_ref, result.data)
    assert polled.status == PollStatus.REVIEW
    assert "split" in polled.reason and "2 documents (2 page(s), 1 page(s))" in polled.reason
    assert polled.data["proposed_split"] == proposal and polled.data["document_set"] == 77


def test_status_111_is_a_rejection_with_the_reason(vendor, fake, tmp_path) -> None:
    _, result = uploaded(vendor, fake, tmp_path)
    fake.documents[int(result.vendor_ref)].update(
        status_data=111, status_data_message="The PDF is encrypted."
    )
    polled = vendor.poll(result.vendor_ref, result.data)
    assert polled.status == PollStatus.REJECTED
    assert polled.reason == (
        "Konfuzio could not process the document (status 111, could not be processed): "
        "The PDF is encrypted."
    )


def test_done_but_labeling_not_yet_available_is_still_processing(vendor, fake, tmp_path) -> None:
    _, result = uploaded(vendor, fake, tmp_path)
    fake.documents[int(result.vendor_ref)].update(status_data=2, labeling_available=0)
    assert vendor.poll(result.vendor_ref, result.data).status == PollStatus.PROCESSING
    fake.documents[int(result.vendor_ref)]["labeling_available"] = 1
    assert vendor.poll(result.vendor_ref, result.data).status == PollStatus.READY


def test_an_unknown_status_code_keeps_polling(vendor, fake, tmp_path) -> None:
    _, result = uploaded(vendor, fake, tmp_path)
    fake.documents[int(result.vendor_ref)]["status_data"] = 55
    assert vendor.poll(result.vendor_ref, result.data).status == PollStatus.PROCESSING


def test_wait_for_review_holds_done_documents_until_reviewed(fake, clock, tmp_path) -> None:
    vendor = make_vendor(fake, clock, tmp_path, wait_for_review=True)
    _, result = uploaded(vendor, fake, tmp_path)
    doc = fake.documents[int(result.vendor_ref)]
    doc["status_data"] = 2
    polled = vendor.poll(result.vendor_ref, result.data)
    assert polled.status == PollStatus.REVIEW and "reviewed" in polled.reason
    doc["is_reviewed"] = True
    assert vendor.poll(result.vendor_ref, result.data).status == PollStatus.READY


def test_a_split_document_is_followed_to_its_part(vendor, fake, tmp_path) -> None:
    _, result = uploaded(vendor, fake, tmp_path)
    original = int(result.vendor_ref)
    fake.documents[original].update(
        status_data=41, document_set=77, proposed_split=[{"pages": [1]}, {"pages": [2]}]
    )
    data = vendor.poll(result.vendor_ref, result.data).data
    part_a = fake.add_document(status_data=2, document_set=77)
    part_b = fake.add_document(status_data=20, document_set=77)
    fake.document_sets[77] = [part_b, part_a]
    del fake.documents[original]  # the split replaced it
    polled = vendor.poll(result.vendor_ref, data)
    assert polled.vendor_ref == str(part_a) and polled.status == PollStatus.READY
    assert polled.data["konfuzio_document"] == part_a and polled.data["split_from"] == original
    assert polled.data["split_documents"] == [part_a, part_b]


def test_a_document_deleted_at_konfuzio_is_rejected(vendor, fake, tmp_path) -> None:
    _, result = uploaded(vendor, fake, tmp_path)
    del fake.documents[int(result.vendor_ref)]
    polled = vendor.poll(result.vendor_ref, result.data)
    assert polled.status == PollStatus.REJECTED and "no longer has" in polled.reason


def test_5xx_and_garbage_are_transient(fake, clock, tmp_path) -> None:
    vendor = make_vendor(fake, clock, tmp_path, max_retries=1)
    _, result = uploaded(vendor, fake, tmp_path)
    path = f"documents/{result.vendor_ref}/"
    fake.fail("GET", path, 503, 503)
    with pytest.raises(TransientError):
        vendor.poll(result.vendor_ref, result.data)
    fake.fail("GET", path, httpx.Response(200, content=b"<html>oops</html>"))
    with pytest.raises(TransientError, match="not JSON"):
        vendor.poll(result.vendor_ref, result.data)
    assert clock.sleeps, "the retry waited (virtual time)"


# --------------------------------------------------------------------------- fetch


def test_fetch_is_read_only_and_maps(vendor, fake, tmp_path) -> None:
    document, result = uploaded(vendor, fake, tmp_path)
    fake.documents[int(result.vendor_ref)]["status_data"] = 2
    before = fake.mutations()
    raw = vendor.fetch(result.vendor_ref, result.data, document)
    assert fake.mutations() == before
    assert raw["page_sizes"] == [[595.28, 841.89]]
    assert raw["document"]["annotation_sets"], "the whole detail, verbatim"
    assert CALLBACK not in json.dumps(raw), "the callback secret is not stored"
    assert raw["document"]["callback_url"] == f"{PUBLIC}/webhooks/konfuzio/***/7"
    canonical = vendor.normalize(json.loads(json.dumps(raw)))
    assert canonical.get("invoice_number").value_text == "RE-2024-0042"
    assert canonical.get("total_amount").value_number is not None
    assert len(canonical.line_items) == 2


def test_the_profile_mapping_reaches_the_mapping(fake, clock, tmp_path) -> None:
    vendor = make_vendor(fake, clock, tmp_path, mapping={"Kundennummer": "order_number"})
    raw = {"document": invoice_detail(), "page_sizes": []}
    assert vendor.normalize(raw).get("order_number").value_text == "K-991"


# --------------------------------------------------------------------------- callbacks


def call(tail: str, body: Any = None, client: str | None = "167.235.194.147") -> WebhookRequest:
    content = json.dumps(body).encode() if body is not None else b""
    return WebhookRequest(
        method="POST",
        headers={"content-type": "application/json"},
        body=content,
        tail=tail,
        client=client,
    )


def test_a_callback_with_the_token_is_a_hint(vendor) -> None:
    detail = invoice_detail(5123)
    (hint,) = vendor.parse_webhook(call(f"{CALLBACK}/7", detail))
    assert hint.vendor_ref == "5123" and hint.document_id == 7
    assert hint.changed is True, "a repeated callback may be a re-extraction"
    (bare,) = vendor.parse_webhook(call(f"{CALLBACK}/7", None))
    assert bare.vendor_ref is None and bare.document_id == 7
    (old_style,) = vendor.parse_webhook(call(CALLBACK, {"id": 5124}))
    assert old_style.vendor_ref == "5124" and old_style.document_id is None


@pytest.mark.parametrize(
    "tail", ["", "wrong", f"{CALLBACK}x/7", f"{CALLBACK[:-1]}/7", f"{CALLBACK}/seven"]
)
def test_a_callback_without_the_token_is_refused_as_not_found(vendor, tail) -> None:
    with pytest.raises(WebhookRejected) as caught:
        vendor.parse_webhook(call(tail, {"id": 1}))
    assert caught.value.status_code == 404


def test_callbacks_are_refused_when_off(fake, clock, tmp_path) -> None:
    vendor = make_vendor(fake, clock, tmp_path, callback_token=None)
    with pytest.raises(WebhookRejected) as caught:
        vendor.parse_webhook(call(f"{CALLBACK}/7", {"id": 1}))
    assert caught.value.status_code == 404


def test_the_allow_list_refuses_other_callers(fake, clock, tmp_path) -> None:
    vendor = make_vendor(fake, clock, tmp_path, allow_from=["167.235.194.147", "10.1.0.0/16"])
    assert vendor.parse_webhook(call(f"{CALLBACK}/7", {"id": 1}))
    assert vendor.parse_webhook(call(f"{CALLBACK}/7", {"id": 1}, client="10.1.2.3"))
    assert vendor.parse_webhook(call(f"{CALLBACK}/7", {"id": 1}, client="::ffff:10.1.2.3"))
    for client in ("192.0.2.1", None, "not-an-address"):
        with pytest.raises(WebhookRejected) as caught:
            vendor.parse_webhook(call(f"{CALLBACK}/7", {"id": 1}, client=client))
        assert caught.value.status_code == 403


def test_a_callback_naming_no_document_is_a_bad_request(vendor) -> None:
    with pytest.raises(WebhookRejected) as caught:
        vendor.parse_webhook(call(CALLBACK, {"status_data": 2}))
    assert caught.value.status_code == 400


# --------------------------------------------------------------------------- feedback


def ready_document(vendor, fake, tmp_path) -> tuple[str, dict[str, Any]]:
    _, result = uploaded(vendor, fake, tmp_path)
    fake.documents[int(result.vendor_ref)]["status_data"] = 2
    return result.vendor_ref, result.data


def test_confirm_accepts_the_annotation_with_patch_field_names(vendor, fake, tmp_path) -> None:
    ref, data = ready_document(vendor, fake, tmp_path)
    outcomes = vendor.send_feedback(
        ref,
        data,
        [
            Correction(
                "invoice_number",
                "RE-2024-0042",
                CorrectionKind.CONFIRM,
                old_value="RE-2024-0042",
                vendor_label="Rechnungsnummer",
                vendor_id="810",
            )
        ],
        None,
    )
    assert [(o.field, o.accepted) for o in outcomes] == [("invoice_number", True)]
    assert ("PATCH", "annotations/810/", {"revised": True, "is_correct": True}) in fake.bodies
    assert fake.annotation(810)["revised"] is True


def test_a_correction_declines_and_creates_where_the_value_is_printed(
    vendor, fake, tmp_path
) -> None:
    ref, data = ready_document(vendor, fake, tmp_path)
    doc_id = int(ref)
    correction = Correction(
        "supplier_name",
        "ACME GmbH",
        CorrectionKind.CORRECT,
        old_value="Widget",
        vendor_label="Lieferant",
    )
    # the AI's wrong value: make "Widget" the live one and "ACME GmbH" absent
    lieferant = fake.label_of(doc_id, "Lieferant")
    lieferant["annotations"] = [lieferant["annotations"][0]]
    wrong = lieferant["annotations"][0]
    wrong.update(revised=False, is_correct=False)
    (outcome,) = vendor.send_feedback(ref, data, [correction], None)
    assert outcome.accepted, outcome.reason
    assert ("PATCH", f"annotations/{wrong['id']}/", {"revised": True, "is_correct": False}) in (
        fake.bodies
    )
    (created,) = [b for m, p, b in fake.bodies if (m, p) == ("POST", "annotations/")]
    assert created["is_revised"] is True and "revised" not in created
    assert created["is_correct"] is True and created["annotation_set"] == 9100
    assert created["label"] == 105 and created["document"] == doc_id
    where = span("ACME GmbH")
    (placed,) = created["span"]
    assert placed["offset_string"] == "ACME GmbH" and placed["page_index"] == 0
    for key in ("x0", "x1", "y0", "y1"):
        assert placed[key] == pytest.approx(where[key])
    # the same again changes nothing
    mark = len(fake.mutations())
    (again,) = vendor.send_feedback(ref, data, [correction], None)
    assert again.accepted and fake.mutations()[mark:] == []


def test_a_value_not_in_the_text_takes_the_wrong_annotations_place(vendor, fake, tmp_path) -> None:
    ref, data = ready_document(vendor, fake, tmp_path)
    correction = Correction(
        "invoice_number",
        "RE-2024-0043",
        CorrectionKind.CORRECT,
        old_value="RE-2024-0042",
        vendor_label="Rechnungsnummer",
        vendor_id="810",
    )
    (outcome,) = vendor.send_feedback(ref, data, [correction], None)
    assert outcome.accepted, outcome.reason
    (created,) = [b for m, p, b in fake.bodies if (m, p) == ("POST", "annotations/")]
    old = span("RE-2024-0042")
    assert created["span"] == [
        {k: old[k] for k in ("page_index", "x0", "x1", "y0", "y1")}
        | {"offset_string": "RE-2024-0043"}
    ]
    assert fake.annotation(810)["revised"] is True and fake.annotation(810)["is_correct"] is False
    assert fake.annotation(811)["revised"] is False, "the other candidate is left alone"


def test_a_missed_value_is_added_to_its_label(vendor, fake, tmp_path) -> None:
    ref, data = ready_document(vendor, fake, tmp_path)
    iban = "DE89 3704 0044 0532 0130 00"
    (outcome,) = vendor.send_feedback(
        ref, data, [Correction("supplier_iban", iban, CorrectionKind.ADD)], None
    )
    assert outcome.accepted, outcome.reason
    (created,) = [b for m, p, b in fake.bodies if (m, p) == ("POST", "annotations/")]
    assert created["label"] == 106 and created["annotation_set"] == 9100
    assert created["span"][0]["offset_string"] == iban
    assert fake.count("GET", f"documents/{ref}/bbox") == 1


def test_a_missed_value_in_a_potential_set_creates_the_set(vendor, fake, tmp_path) -> None:
    ref, data = ready_document(vendor, fake, tmp_path)
    (outcome,) = vendor.send_feedback(
        ref, data, [Correction("payment_terms", "14 Tagen", CorrectionKind.ADD)], None
    )
    assert outcome.accepted, outcome.reason
    (created,) = [b for m, p, b in fake.bodies if (m, p) == ("POST", "annotations/")]
    assert created["label_set"] == 30 and "annotation_set" not in created
    assert created["span"][0]["offset_string"] == "14 Tagen"


def test_a_value_konfuzio_cannot_place_is_refused(vendor, fake, tmp_path) -> None:
    ref, data = ready_document(vendor, fake, tmp_path)
    fake.bbox_available = False
    (outcome,) = vendor.send_feedback(
        ref, data, [Correction("supplier_iban", "DE02 1203 0000 0000 2020 51", "add")], None
    )
    assert not outcome.accepted and "where" in outcome.reason
    assert fake.mutations()[-1] == ("POST", "documents/"), "nothing was changed"


def test_absent_declines_and_records_a_missing_annotation(vendor, fake, tmp_path) -> None:
    ref, data = ready_document(vendor, fake, tmp_path)
    correction = Correction(
        "extra.Kundennummer",
        None,
        CorrectionKind.ABSENT,
        old_value="K-991",
        vendor_label="Kundennummer",
        vendor_id="870",
    )
    (outcome,) = vendor.send_feedback(ref, data, [correction], None)
    assert outcome.accepted, outcome.reason
    assert fake.annotation(870)["revised"] is True and fake.annotation(870)["is_correct"] is False
    (entry,) = fake.missing
    assert entry["document"] == int(ref) and entry["label"] == 107 and entry["label_set"] == 10
    assert entry["annotation_set"] == 9100
    vendor.send_feedback(ref, data, [correction], None)
    assert len(fake.missing) == 1, "not recorded twice"


def test_adding_a_value_withdraws_an_earlier_missing_annotation(vendor, fake, tmp_path) -> None:
    ref, data = ready_document(vendor, fake, tmp_path)
    vendor.send_feedback(ref, data, [Correction("supplier_iban", None, "absent")], None)
    assert len(fake.missing) == 1
    iban = "DE89 3704 0044 0532 0130 00"
    (outcome,) = vendor.send_feedback(ref, data, [Correction("supplier_iban", iban, "add")], None)
    assert outcome.accepted and fake.missing == []


def test_one_refusal_does_not_stop_the_others(vendor, fake, tmp_path) -> None:
    ref, data = ready_document(vendor, fake, tmp_path)
    fake.locked.add(820)
    outcomes = vendor.send_feedback(
        ref,
        data,
        [
            Correction("issue_date", "2024-03-05", "confirm", vendor_id="820"),
            Correction("nonexistent_label_field", "x", "confirm"),
            Correction("total_amount", "25.50", "confirm", vendor_label="Bruttobetrag"),
        ],
        None,
    )
    assert [o.accepted for o in outcomes] == [False, False, True]
    assert "403" in outcomes[0].reason and "training set" in outcomes[0].reason
    assert "no label for nonexistent_label_field" in outcomes[1].reason
    assert fake.annotation(830)["revised"] is True, "found by label and value"


def test_the_label_the_correction_names_wins_over_other_labels_of_the_field(
    vendor, fake, tmp_path
) -> None:
    ref, data = ready_document(vendor, fake, tmp_path)
    labels = fake.documents[int(ref)]["annotation_sets"][0]["labels"]
    labels.append(
        {
            "id": 108,
            "name": "Total",
            "api_name": "Total",
            "annotations": [
                {"id": 880, "offset_string": "25,50", "revised": False, "is_correct": False}
            ],
        }
    )
    (outcome,) = vendor.send_feedback(
        ref, data, [Correction("total_amount", "25.50", "confirm", vendor_label="Total")], None
    )
    assert outcome.accepted
    assert fake.annotation(880)["revised"] is True and fake.annotation(830)["revised"] is False


def test_the_document_is_marked_reviewed_when_nothing_is_left(vendor, fake, tmp_path) -> None:
    ref, data = ready_document(vendor, fake, tmp_path)
    doc = fake.documents[int(ref)]
    # a small document: one set, two labels
    doc["annotation_sets"] = [doc["annotation_sets"][0]]
    doc["annotation_sets"][0]["labels"] = doc["annotation_sets"][0]["labels"][:2]
    vendor.send_feedback(
        ref, data, [Correction("invoice_number", "RE-2024-0042", "confirm", vendor_id="810")], None
    )
    assert doc["is_reviewed"] is False, "the date and the weaker candidate are still open"
    assert fake.count("PATCH", f"documents/{ref}/") == 0
    vendor.send_feedback(
        ref,
        data,
        [
            Correction("extra.Rechnungsnummer", None, "absent", old_value="K-991", vendor_id="811"),
            Correction("issue_date", "2024-03-05", "confirm", vendor_id="820"),
        ],
        None,
    )
    assert doc["is_reviewed"] is True
    assert ("PATCH", f"documents/{ref}/", {"is_reviewed": True}) in fake.bodies


def test_feedback_on_a_document_konfuzio_no_longer_has_is_terminal(vendor, fake, tmp_path) -> None:
    ref, data = ready_document(vendor, fake, tmp_path)
    del fake.documents[int(ref)]
    with pytest.raises(TerminalError, match="no longer has"):
        vendor.send_feedback(ref, data, [Correction("invoice_number", "x", "confirm")], None)


# --------------------------------------------------------------------------- probe, purge


def test_probe_reads_the_project_category_and_labels_only(fake, clock, tmp_path) -> None:
    vendor = make_vendor(fake, clock, tmp_path, category=12)
    lines = vendor.probe()
    assert fake.mutations() == []
    assert lines[0] == f"logged in at {BASE} as {USER}"
    assert lines[1] == "project 46: Eingangsrechnungen" and lines[2] == "category 12: Rechnung"
    assert lines[3] == (
        "3 label(s); mapped: invoice_number ← Rechnungsnummer, total_amount ← Bruttobetrag; "
        "kept as extra.<label>: Kundennummer"
    )
    below = f"{PUBLIC}/webhooks/konfuzio/<callback_token>/"
    assert lines[4] == f"Konfuzio calls back below {below} (polling stays on)"


def test_probe_with_a_refused_token_is_an_auth_failure(fake, clock, tmp_path) -> None:
    vendor = make_vendor(fake, clock, tmp_path, token="unknown-token-0123456789abcdef")
    with pytest.raises(AuthFailed):
        vendor.probe()


def test_purge_deletes_and_a_second_purge_is_fine(vendor, fake, tmp_path) -> None:
    _, result = uploaded(vendor, fake, tmp_path)
    vendor.purge(result.vendor_ref, result.data)
    assert int(result.vendor_ref) not in fake.documents
    vendor.purge(result.vendor_ref, result.data)


def test_messages_never_carry_secrets(fake, clock, tmp_path) -> None:
    vendor = make_vendor(fake, clock, tmp_path, max_retries=0)
    _, result = uploaded(vendor, fake, tmp_path)
    echo = {"detail": f"bad token {USER_TOKEN}", "password": PASSWORD}
    fake.fail("GET", f"documents/{result.vendor_ref}/", httpx.Response(400, json=echo))
    with pytest.raises(TerminalError) as caught:
        vendor.poll(result.vendor_ref, result.data)
    text = f"{caught.value} {caught.value.detail}"
    assert USER_TOKEN not in text and PASSWORD not in text and "***" in text


def test_text_and_boxes_fixture_agree() -> None:
    assert TEXT[span("RE-2024-0042")["start_offset"]] == "R"


def test_a_look_up_whose_filters_are_refused_lists_the_project(vendor, fake, tmp_path) -> None:
    document = make_document(tmp_path)
    first = fake.add_document(data_file_name=f"a.docrelay-7-{document.sha256[:8]}.pdf")
    fake.fail("GET", "documents/", httpx.Response(400, json={"ordering": ["Unknown field."]}))
    assert vendor.submit(document).vendor_ref == str(first) and fake.uploads == []
    retried = [p for m, path, p in fake.requests if (m, path) == ("GET", "documents/")][-1]
    assert "ordering" not in retried and retried["project"] == "46"
