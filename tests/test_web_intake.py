"""``POST /api/v1/documents`` against the real daemon process (``local`` extractor): an upload is
taken as the folder source takes a file (pre-flight, dedupe, audit), answered after the commit,
and its state URL follows it to the extracted fields."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.daemon_proc import DaemonProcess, module_daemon, query, wait_until, write_config
from tests.invoices import expected_fields, random_spec, render_pdf

# One daemon serves the whole module: its tests stay on one pytest-xdist worker.
pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("test_web_intake")]

TOKEN = "scanner-token-0123456789abcdef"
LIMIT = 100_000
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonProcess]:
    root = tmp_path_factory.mktemp("intake")
    extra = f"""
[[routes]]
name = "from-api"
match = {{ source = "api" }}
vendor = "local"
destinations = ["outbox"]

[web.api]
tokens = ["{TOKEN}"]
max_upload_bytes = {LIMIT}
upload_timeout = 2
"""
    with module_daemon(DaemonProcess(write_config(root, extra=extra))) as proc:
        yield proc


@pytest.fixture
def client(daemon: DaemonProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=daemon.url, timeout=30) as http:
        yield http


def upload(
    client: httpx.Client,
    data: bytes,
    name: str = "invoice.pdf",
    headers: dict[str, str] | None = None,
    **fields: str,
) -> httpx.Response:
    return client.post(
        "/api/v1/documents",
        files={"file": (name, data, "application/octet-stream")},
        data=fields,
        headers=AUTH if headers is None else headers,
    )


def root_of(daemon: DaemonProcess) -> Path:
    return daemon.config.parent


def count_documents(daemon: DaemonProcess) -> int:
    return query(root_of(daemon), "SELECT COUNT(*) AS n FROM documents")[0]["n"]


def spooled(daemon: DaemonProcess) -> list[Path]:
    """Upload files left in the blob store's temporary directory."""
    return list((root_of(daemon) / "var" / "blobs").rglob("upload-*"))


def test_an_upload_is_extracted_and_the_same_bytes_again_name_the_same_document(daemon, client):
    spec = random_spec(1501)
    pdf = render_pdf(spec)
    first = upload(client, pdf, "scan 1.pdf", metadata=json.dumps({"sender": "scanner-3"}))
    assert first.status_code == 201, first.text
    body = first.json()
    doc = body["document_id"]
    assert body["url"] == f"/api/v1/documents/{doc}"
    assert body["state"] == "queued"  # committed and routed before the answer came

    def extracted() -> dict | None:
        answer = client.get(body["url"], headers=AUTH).json()
        return answer if answer["state"] == "done" else None

    state = wait_until(extracted, 30, what="the upload extracted")
    assert state["source"] == "api"
    assert state["route"] == "from-api"
    assert state["filename"] == "scan 1.pdf"
    assert state["metadata"]["sender"] == "scanner-3"
    assert state["metadata"]["uploaded_by"].startswith("api:")
    expected = expected_fields(spec)
    assert state["fields"]["invoice_number"]["value"] == expected["invoice_number"]
    assert state["fields"]["issue_date"]["date"] == expected["issue_date"].isoformat()
    export = root_of(daemon) / "outbox" / f"{doc}.json"
    wait_until(export.exists, 30, what="the export")  # delivered after the submission is done

    again = upload(client, pdf, "scan 1 (copy).pdf")
    assert again.status_code == 200, again.text
    assert again.json()["document_id"] == doc
    assert again.json()["duplicate"] is True
    events = query(
        root_of(daemon),
        f"SELECT kind FROM events WHERE document_id = {again.json()['recorded_as']}",
    )
    assert [e["kind"] for e in events] == ["duplicate"]  # the audit records the repeat


@pytest.mark.parametrize(
    ("name", "data", "reason"),
    [
        ("empty.pdf", b"", "empty file"),
        ("letter.docx", b"PK\x03\x04" + b"\x00" * 200, "unsupported file type: .docx"),
        ("cut.pdf", render_pdf(random_spec(1502))[:900], "incomplete PDF"),
    ],
)
def test_an_unusable_upload_is_rejected_with_its_reason_and_kept(
    daemon, client, name, data, reason
):
    answer = upload(client, data, name)
    assert answer.status_code == 422, answer.text
    body = answer.json()
    assert body["state"] == "rejected"
    assert reason in body["reason"]
    (row,) = query(
        root_of(daemon), f"SELECT sha256, error FROM documents WHERE id = {body['document_id']}"
    )
    assert reason in row["error"]
    blob = root_of(daemon) / "var" / "blobs" / row["sha256"][:2] / row["sha256"][2:4]
    assert (blob / row["sha256"]).read_bytes() == data  # the original is kept
    assert client.get(body["url"], headers=AUTH).json()["state"] == "rejected"


def test_without_a_valid_token_nothing_is_taken(daemon, client):
    before = count_documents(daemon)
    pdf = render_pdf(random_spec(1503))
    for headers in ({}, {"Authorization": "Bearer wrong-token-0123456789"}):
        answer = upload(client, pdf, headers=headers)
        assert answer.status_code == 401
        assert answer.headers["www-authenticate"].startswith("Bearer")
    assert client.get("/api/v1/documents/1").status_code == 401
    assert count_documents(daemon) == before


def test_an_upload_over_the_limit_is_refused_and_nothing_is_stored(daemon, client):
    before = count_documents(daemon)
    big = b"%PDF-1.4\n" + b"0" * LIMIT + b"\n%%EOF\n"
    assert upload(client, big, "big.pdf").status_code == 413  # declared length

    def streamed() -> Iterator[bytes]:  # chunked: no length to judge by, counted as it comes
        yield b"--b\r\nContent-Disposition: form-data; name=file; filename=big.pdf\r\n\r\n"
        for _ in range(LIMIT // 10_000 + 2):
            yield b"0" * 10_000
        yield b"\r\n--b--\r\n"

    answer = client.post(
        "/api/v1/documents",
        content=streamed(),
        headers={**AUTH, "Content-Type": "multipart/form-data; boundary=b"},
    )
    assert answer.status_code == 413
    assert count_documents(daemon) == before
    assert spooled(daemon) == []


def test_a_bad_request_is_refused_before_anything_is_stored(daemon, client):
    before = count_documents(daemon)
    pdf = render_pdf(random_spec(1504))
    assert upload(client, pdf, route="no-such-route").status_code == 400
    assert "no route named" in upload(client, pdf, route="no-such-route").json()["error"]
    assert upload(client, pdf, metadata="[1, 2]").status_code == 400
    assert upload(client, pdf, metadata="{").status_code == 400
    no_file = client.post("/api/v1/documents", data={"route": "from-api"}, headers=AUTH)
    assert no_file.status_code == 400
    json_body = client.post("/api/v1/documents", json={"file": "x"}, headers=AUTH)
    assert json_body.status_code == 400
    assert count_documents(daemon) == before
    assert spooled(daemon) == []


def test_an_rfc5987_file_name_is_kept(daemon, client):
    pdf = render_pdf(random_spec(1506))
    part = (
        b"--b\r\nContent-Disposition: form-data; name=file; "
        b"filename*=UTF-8''Rechnung%20M%C3%A4rz.pdf\r\n\r\n" + pdf + b"\r\n--b--\r\n"
    )
    answer = client.post(
        "/api/v1/documents",
        content=part,
        headers={**AUTH, "Content-Type": "multipart/form-data; boundary=b"},
    )
    assert answer.status_code == 201, answer.text
    assert client.get(answer.json()["url"], headers=AUTH).json()["filename"] == "Rechnung März.pdf"


def test_a_named_route_is_taken(daemon, client):
    answer = upload(client, render_pdf(random_spec(1505)), route="routes[0]")
    assert answer.status_code == 201, answer.text
    state = client.get(answer.json()["url"], headers=AUTH).json()
    assert state["route"] == "routes[0]"  # the folder's route, chosen by name


def test_a_client_that_goes_away_mid_upload_leaves_nothing_behind(daemon, client):
    before = count_documents(daemon)
    head = (
        b"POST /api/v1/documents HTTP/1.1\r\nHost: x\r\n"
        + f"Authorization: Bearer {TOKEN}\r\n".encode()
        + b"Content-Type: multipart/form-data; boundary=b\r\nContent-Length: 50000\r\n\r\n"
        + b"--b\r\nContent-Disposition: form-data; name=file; filename=a.pdf\r\n\r\n%PDF-1.4"
    )
    with socket.create_connection(("127.0.0.1", daemon.port)) as sock:
        sock.sendall(head + b"0" * 10_000)
    assert upload(client, b"", "probe.pdf").status_code == 422  # served on; the abort is done
    wait_until(lambda: spooled(daemon) == [], 10, what="the spooled part removed")
    assert count_documents(daemon) == before + 1
    assert "ERROR" not in daemon.log() and "Traceback" not in daemon.log()


def test_an_upload_that_arrives_too_slowly_gets_408_and_leaves_nothing(daemon, client):
    before = count_documents(daemon)
    head = (
        b"POST /api/v1/documents HTTP/1.1\r\nHost: x\r\n"
        + f"Authorization: Bearer {TOKEN}\r\n".encode()
        + b"Content-Type: multipart/form-data; boundary=b\r\nContent-Length: 50000\r\n\r\n"
        + b"--b\r\nContent-Disposition: form-data; name=file; filename=a.pdf\r\n\r\n%PDF-1.4"
    )
    with socket.create_connection(("127.0.0.1", daemon.port), timeout=30) as sock:
        sock.sendall(head)  # and the rest never comes
        answer = sock.recv(4096)
    assert answer.startswith(b"HTTP/1.1 408"), answer
    assert spooled(daemon) == []
    assert count_documents(daemon) == before
