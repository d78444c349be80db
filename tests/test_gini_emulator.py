"""The Gini API emulator under real uvicorn: every request and response example of the Gini
seed (``shared/seeds/004_…``, cited ``004:L``) reproduced field for field, then the User Center
(token lifetime on a manual clock, refresh, the refresh-fail switch, 401s, the trusted-backend
mode), pagination, Gini's limits, feedback status codes, the vendor media type, metadata
headers, fault injection and ``docrelay emulate gini``."""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from fpdf import FPDF

from connectors.emulation import runner
from connectors.emulation.clock import ManualClock
from connectors.vendors.gini import emulator_cli
from connectors.vendors.gini.emulator import MEDIA_TYPE, EmulatorOptions, create_app
from connectors.vendors.gini.emulator_state import GiniState
from tests.daemon_proc import free_port
from tests.invoices import (
    encrypted_pdf_bytes,
    expected_fields,
    expected_line_items,
    random_spec,
    render_pdf,
    truncated_pdf_bytes,
)
from tests.servers import serve

CLIENT, SECRET = "client", "secret"
USER, PASSWORD = "user@example.com", "secret"
VND = {"Accept": MEDIA_TYPE}
UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-1[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
BOX_KEYS = ["height", "left", "page", "top", "width"]


@dataclass
class Emu:
    state: GiniState
    root: str
    http: httpx.Client
    """Logged in as the demo user (``Authorization: BEARER <token>`` as in every curl)."""
    clock: ManualClock | None = None

    def upload(self, data: bytes, name: str = "file.pdf", **headers: str) -> str:
        """A raw upload (004:50); the document's URI."""
        response = self.http.post(
            "/documents", params={"filename": name}, content=data, headers=headers
        )
        assert response.status_code == 201, response.text
        return response.headers["location"]

    def get(self, uri: str, **params: Any) -> httpx.Response:
        return self.http.get(uri, params=params)

    def completed(self, uri: str) -> dict[str, Any]:
        if self.clock is not None:
            self.clock.advance(self.state.options.delay)
        return wait_for(lambda: (d := self.get(uri).json())["progress"] != "PENDING" and d)

    def admin(self, path: str, body: dict[str, Any] | None = None) -> httpx.Response:
        if body is None:
            return httpx.get(f"{self.root}/_emulator/{path}")
        return httpx.post(f"{self.root}/_emulator/{path}", json=body)

    def admin_document(self, uri: str) -> dict[str, Any]:
        found = self.admin("documents").json()["results"]
        return next(d for d in found if d["id"] == uri.rsplit("/", 1)[1])


def password_token(root: str, **extra: Any) -> httpx.Response:
    return httpx.post(
        f"{root}/oauth/token",
        params={"grant_type": "password"},
        data={"username": USER, "password": PASSWORD, **extra},
        auth=(CLIENT, SECRET),
        headers={"Accept": "application/json"},
    )


@contextmanager
def emulator(clock: ManualClock | None = None, **options: Any) -> Iterator[Emu]:
    app = create_app(EmulatorOptions(**{"delay": 0.0, **options}), clock=clock)
    with serve(app) as root:
        key = password_token(root).json()["access_token"]
        headers = {"Authorization": f"BEARER {key}", **VND}
        with httpx.Client(base_url=root, headers=headers, timeout=20) as http:
            yield Emu(app.state.emulator, root, http, clock)


def wait_for(probe: Callable[[], Any], timeout: float = 15.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = probe()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached")
        time.sleep(0.02)


def text_pdf(pages: list[list[str]]) -> bytes:
    """A PDF with these lines on these pages (Helvetica 10, one line every 7 mm)."""
    pdf = FPDF(unit="mm", format="A4")
    pdf.core_fonts_encoding = "cp1252"
    pdf.set_auto_page_break(False)
    pdf.set_font("Helvetica", size=10)
    for lines in pages:
        pdf.add_page()
        for number, line in enumerate(lines):
            pdf.text(20, 20 + 7 * number, line)
    return bytes(pdf.output())


SEED_FEEDBACK_PDF = [
    [
        "Rechnung",
        "Rechnungsnummer: 1735",
        "Verwendungszweck: ReNr 123, KdNr 32",
        "Gesamtbetrag: 5,60 EUR",
        "IBAN: DE83 1303 0000 0017 8503 60",
    ]
]
"""The document of the seed's feedback scenario (004:209-243): amountToPay 5.60:EUR, an IBAN
and a payment reference are printed, the payment recipient is not. The seed's IBAN
(DE68…) fails the mod-97 check, which the engine applies: the PDF prints it with the right
check digits (DE83…); the feedback body keeps the seed's, whose shape is valid."""
IBAN = "DE83130300000017850360"


def vnd_json(response: httpx.Response, status: int = 200) -> Any:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == MEDIA_TYPE
    return response.json()


def assert_box(box: dict[str, Any]) -> None:
    assert sorted(box) == BOX_KEYS
    assert isinstance(box["page"], int) and box["page"] >= 1
    assert all(isinstance(box[k], float) for k in ("height", "left", "top", "width"))


# --------------------------------------------------------------------------- seed examples


def test_seed_upload_multipart_answers_201_with_location():
    """004:48 ``curl --form 'file=@file.pdf'`` → 201, Location of the new document (004:9)."""
    with emulator() as emu:
        pdf = render_pdf(random_spec(1))
        response = emu.http.post("/documents", files={"file": ("file.pdf", pdf, "application/pdf")})
        assert response.status_code == 201 and response.content == b""
        location = response.headers["location"]
        assert location.startswith(f"{emu.root}/documents/")
        assert UUID_RE.match(location.rsplit("/", 1)[1])
        assert emu.get(location).json()["name"] == "file.pdf"


def test_seed_upload_raw_body_with_filename_whatever_its_content_type():
    """004:50 ``curl --data-binary '@file.pdf' …/documents?filename=file.pdf`` (curl sends
    ``application/x-www-form-urlencoded``: the body is the document regardless, 004:12)."""
    with emulator() as emu:
        pdf = render_pdf(random_spec(2))
        response = emu.http.post(
            "/documents",
            params={"filename": "file.pdf"},
            content=pdf,
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        assert response.status_code == 201, response.text
        doc = emu.completed(response.headers["location"])
        assert doc["name"] == "file.pdf" and doc["progress"] == "COMPLETED"
        assert emu.get(doc["_links"]["processed"]).content == pdf


def test_seed_document_information_field_for_field():
    """004:61 GET the document URI; 004:71-100 its keys, types and formats."""
    clock = ManualClock()
    with emulator(clock, delay=5.0, show_metadata=False) as emu:
        uri = emu.upload(render_pdf(random_spec(3)), "scanned.pdf")
        pending = vnd_json(emu.get(uri))
        assert pending["progress"] == "PENDING"
        doc = emu.completed(uri)
        assert list(doc) == [
            "id",
            "creationDate",
            "name",
            "progress",
            "origin",
            "sourceClassification",
            "pageCount",
            "_links",
        ]
        assert UUID_RE.match(doc["id"]) and uuid.UUID(doc["id"]).version == 1
        assert doc["creationDate"] == int(clock.now() * 1000) - 5000
        assert (doc["name"], doc["progress"], doc["origin"]) == (
            "scanned.pdf",
            "COMPLETED",
            "UPLOAD",
        )
        assert doc["sourceClassification"] == "NATIVE" and doc["pageCount"] == 1
        assert doc["_links"] == {
            "extractions": f"{uri}/extractions",
            "layout": f"{uri}/layout",
            "document": uri,
            "processed": f"{uri}/processed",
        }
        assert uri == f"{emu.root}/documents/{doc['id']}"


def _jpeg(pdf: bytes) -> bytes:
    import pypdfium2 as pdfium

    document = pdfium.PdfDocument(pdf)
    try:
        image = document[0].render(scale=200 / 72, grayscale=True).to_pil()
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=90)
        return buffer.getvalue()
    finally:
        document.close()


def test_seed_document_information_of_a_scan():
    """004:86-100 is ``scanned.jpg``: ``SCANNED``, one page; COMPLETED with OCR (tesseract),
    ERROR without (the emulator cannot read it, see NOTES.md, "Emulator")."""
    spec = random_spec(14, "de")
    scan = _jpeg(render_pdf(spec, "de"))
    with emulator() as emu:
        doc = emu.completed(emu.upload(scan, "scanned.jpg"))
        assert (doc["name"], doc["sourceClassification"], doc["pageCount"]) == (
            "scanned.jpg",
            "SCANNED",
            1,
        )
        assert doc["progress"] == "ERROR"
        assert "OCR" in emu.admin_document(doc["_links"]["document"])["error"]
    if shutil.which("tesseract") is None:
        pytest.skip("tesseract is not installed: the OCR half needs it")
    with emulator(ocr=True) as emu:
        uri = emu.upload(scan, "scanned.jpg")
        doc = emu.completed(uri)
        assert (doc["progress"], doc["sourceClassification"]) == ("COMPLETED", "SCANNED")
        found = emu.get(f"{uri}/extractions").json()["extractions"]
        assert found["amountToPay"]["value"] == f"{spec.total_amount}:{spec.currency}"
        assert "box" not in found["amountToPay"]  # the engine has no boxes for images
        layout = emu.get(f"{uri}/layout").json()["pages"]
        assert layout == [
            {"number": 1, "sizeX": 595.3, "sizeY": 841.9, "textZones": [], "regions": []}
        ]
        assert emu.get(f"{uri}/processed").headers["content-type"] == "image/jpeg"


def test_seed_document_404():
    """004:101-104: no document under the URI."""
    with emulator() as emu:
        missing = f"/documents/{uuid.uuid1()}"
        body = vnd_json(emu.get(missing), 404)
        assert set(body) == {"message", "requestId"}
        for suffix in ("/extractions", "/layout", "/processed"):
            assert emu.get(missing + suffix).status_code == 404


def test_seed_extractions_field_for_field():
    """004:115 GET the extractions URI; 004:126-173: ``extractions`` maps labels to a specific
    extraction with ``box``, ``entity``, ``value`` and the key of its ``candidates`` list."""
    spec = random_spec(4, "de")
    with emulator() as emu:
        uri = emu.upload(render_pdf(spec, "de"))
        links = emu.completed(uri)["_links"]
        body = vnd_json(emu.get(links["extractions"]))
        assert {"extractions", "candidates"} <= set(body)
        amount = body["extractions"]["amountToPay"]
        assert list(amount) == ["box", "entity", "value", "candidates"]
        assert_box(amount["box"])
        assert amount["entity"] == "amount" and amount["candidates"] == "amounts"
        assert amount["value"] == f"{spec.total_amount}:{spec.currency}"
        assert re.fullmatch(r"-?\d+(\.\d+)?:[A-Z]{3}", amount["value"])
        amounts = body["candidates"]["amounts"]
        assert amounts[0] == {k: amount[k] for k in ("box", "entity", "value")}
        assert {c["value"] for c in amounts} >= {
            f"{spec.net_amount}:{spec.currency}",
            f"{spec.tax_amount}:{spec.currency}",
        }
        for candidate in amounts:  # a tax sum of several printed lines has no box
            assert list(candidate) in (["box", "entity", "value"], ["entity", "value"])
            if "box" in candidate:
                assert_box(candidate["box"])
        emu.http.delete(uri)
        assert emu.get(links["extractions"]).status_code == 404  # 004:174-177


def test_seed_feedback_scenario_batch_put_and_post():
    """004:209-243 the extractions of the scenario; 004:245-260 its feedback (strict JSON:
    the seed's trailing comma is a 400); 004:261-266 204 and the corrected values after."""
    with emulator() as emu:
        uri = emu.upload(text_pdf(SEED_FEEDBACK_PDF))
        emu.completed(uri)
        found = vnd_json(emu.get(f"{uri}/extractions"))["extractions"]
        assert found["amountToPay"]["value"] == "5.60:EUR"
        assert found["amountToPay"]["entity"] == "amount"
        assert found["iban"] | {"box": None} == {
            "box": None,
            "candidates": "ibans",
            "entity": "iban",
            "value": IBAN,
        }
        assert found["paymentReference"]["entity"] == "reference"
        assert found["paymentReference"]["value"] == "ReNr 123, KdNr 32"
        assert "paymentRecipient" not in found
        feedback = {
            "feedback": {
                "amountToPay": {"value": "5.60:EUR"},
                "iban": {"value": "DE68130300000017850360"},
                "paymentReference": {"value": "ReNr 1735, KdNr 37"},
                "paymentRecipient": {"value": "Zalando SE"},
            }
        }
        seed_text = json.dumps(feedback).replace(
            '"DE68130300000017850360"}', '"DE68130300000017850360",}'
        )
        vnd_type = {"Content-Type": MEDIA_TYPE}
        bad = emu.http.put(f"{uri}/extractions", content=seed_text, headers=vnd_type)
        assert bad.status_code == 400
        put = emu.http.put(f"{uri}/extractions", content=json.dumps(feedback), headers=vnd_type)
        assert put.status_code == 204 and put.content == b""
        post = emu.http.post(f"{uri}/extractions", content=json.dumps(feedback), headers=vnd_type)
        assert post.status_code == 204
        after = emu.get(f"{uri}/extractions").json()["extractions"]
        assert after["paymentRecipient"] == {"entity": "companyname", "value": "Zalando SE"}
        assert after["paymentReference"]["value"] == "ReNr 1735, KdNr 37"
        assert after["amountToPay"]["box"] == found["amountToPay"]["box"]  # confirmed in place
        received = emu.admin_document(uri)["feedback"]
        assert [(f["kind"], f["method"]) for f in received] == [("batch", "PUT"), ("batch", "POST")]
        assert received[0]["feedback"] == feedback["feedback"]
        assert emu.admin("stats").json()["feedback"] == 2


def test_seed_single_label_feedback():
    """004:270-297: PUT one label with ``value`` and an optional ``box``; 204; adds a label
    that was not extracted too (004:269)."""
    with emulator() as emu:
        uri = emu.upload(text_pdf(SEED_FEEDBACK_PDF))
        emu.completed(uri)
        body = {
            "box": {"height": 14, "left": 405, "page": 1, "top": 421, "width": 36},
            "value": "new value",
        }
        response = emu.http.put(
            f"{uri}/extractions/paymentReference",
            content=json.dumps(body),
            headers={"Content-Type": MEDIA_TYPE},
        )
        assert response.status_code == 204
        added = emu.http.put(f"{uri}/extractions/paymentRecipient", json={"value": "Zalando SE"})
        assert added.status_code == 204
        after = emu.get(f"{uri}/extractions").json()["extractions"]
        assert after["paymentReference"] == {
            "box": body["box"],
            "entity": "reference",
            "value": "new value",
        }
        assert after["paymentRecipient"]["value"] == "Zalando SE"
        received = emu.admin_document(uri)["feedback"]
        assert received[0]["label"] == "paymentReference" and received[0]["value"] == body


def test_seed_delete_invalid_extraction():
    """004:301-306: DELETE a label found erroneously → 204; then it is gone (404)."""
    with emulator() as emu:
        uri = emu.upload(text_pdf(SEED_FEEDBACK_PDF))
        emu.completed(uri)
        assert emu.http.delete(f"{uri}/extractions/iban").status_code == 204
        assert "iban" not in emu.get(f"{uri}/extractions").json()["extractions"]
        assert emu.http.delete(f"{uri}/extractions/iban").status_code == 404
        assert emu.http.delete(f"{uri}/extractions/noSuchLabel").status_code == 404
        assert emu.admin_document(uri)["feedback"][0] | {"at": 0} == {
            "at": 0,
            "kind": "delete",
            "method": "DELETE",
            "label": "iban",
        }


def test_seed_layout_field_for_field():
    """004:319 GET the layout URI; 004:329-453: pages with number, sizeX/sizeY (A4 points),
    text zones → paragraphs → lines → words with l/t/w/h, font and text; regions."""
    with emulator() as emu:
        uri = emu.upload(text_pdf([["Ihre Vorgangsnummer : 4711", "Zweite Zeile"]]))
        links = emu.completed(uri)["_links"]
        body = vnd_json(emu.get(links["layout"]))
        assert list(body) == ["pages"]
        page = body["pages"][0]
        assert list(page) == ["number", "sizeX", "sizeY", "textZones", "regions"]
        assert (page["number"], page["sizeX"], page["sizeY"]) == (1, 595.3, 841.9)
        assert page["regions"] == []
        paragraph = page["textZones"][0]["paragraphs"][0]
        assert list(paragraph) == ["l", "t", "w", "h", "lines"]
        line = paragraph["lines"][0]
        assert list(line) == ["l", "t", "w", "h", "wds"]
        words = line["wds"]
        assert [w["text"] for w in words] == ["Ihre", "Vorgangsnummer", ":", "4711"]
        word = words[0]
        assert list(word) == ["l", "t", "w", "h", "fontSize", "fontFamily", "bold", "text"]
        assert word["fontSize"] == 10.0 and word["fontFamily"] == "Helvetica"
        assert word["bold"] is False
        assert 56 < word["l"] < 58 and 49 < word["t"] < 51  # 20 mm from the left, 20 mm down
        assert words[1]["l"] > word["l"] + word["w"]
        assert line["l"] == word["l"] and line["t"] <= word["t"]


def test_seed_processed_document():
    """004:461-476: the processed file; for a native PDF the upload itself."""
    with emulator() as emu:
        pdf = render_pdf(random_spec(5))
        uri = emu.upload(pdf)
        emu.completed(uri)
        response = emu.get(f"{uri}/processed")
        assert response.status_code == 200 and response.content == pdf
        assert response.headers["content-type"] == "application/pdf"


def test_seed_delete_document_deletes_its_resources():
    """004:478: DELETE the document URI; extractions and layout go with it."""
    with emulator() as emu:
        uri = emu.upload(render_pdf(random_spec(6)))
        emu.completed(uri)
        assert emu.http.delete(uri).status_code == 204
        for suffix in ("", "/extractions", "/layout", "/processed"):
            assert emu.get(uri + suffix).status_code == 404
        assert emu.http.delete(uri).status_code == 404
        assert emu.get("/documents").json()["totalCount"] == 0


def test_seed_document_list():
    """004:481-508: ``GET /documents?limit=50`` → ``{"totalCount", "documents"}``, items are
    document information; ``limit`` defaults to 20, ``offset`` to 0."""
    with emulator() as emu:
        uris = [
            emu.upload(f"Rechnung {n}\nBetrag 1,00 EUR\n".encode(), f"{n}.txt") for n in range(23)
        ]
        body = vnd_json(emu.get("/documents", limit=50))
        assert list(body) == ["totalCount", "documents"]
        assert body["totalCount"] == 23 and len(body["documents"]) == 23
        assert body["documents"][0]["_links"]["document"] == uris[-1]  # newest first
        assert set(body["documents"][0]) >= {"id", "name", "progress", "pageCount", "_links"}
        assert body["documents"][0]["sourceClassification"] == "TEXT"
        default = emu.get("/documents").json()
        assert default["totalCount"] == 23 and len(default["documents"]) == 20
        rest = emu.get("/documents", offset=20).json()
        assert [d["name"] for d in rest["documents"]] == ["2.txt", "1.txt", "0.txt"]
        assert emu.get("/documents", limit=5, offset=21).json()["documents"][0]["name"] == "1.txt"
        assert emu.get("/documents", offset=99).json() == {"totalCount": 23, "documents": []}
        assert emu.get("/documents", limit="x").status_code == 400
        assert emu.get("/documents", offset=-1).status_code == 400
        assert len(emu.get("/documents", limit=10_000).json()["documents"]) == 23


# --------------------------------------------------------------------------- the User Center


def test_password_grant_client_credentials_and_bad_credentials():
    with emulator() as emu:
        answer = password_token(emu.root)
        assert answer.status_code == 200 and answer.headers["content-type"] == "application/json"
        body = answer.json()
        assert body["token_type"] == "bearer" and body["expires_in"] == 3599
        assert uuid.UUID(body["access_token"]) and uuid.UUID(body["refresh_token"])
        in_body = httpx.post(
            f"{emu.root}/oauth/token",
            data={"grant_type": "password", "username": USER, "password": PASSWORD},
            auth=(CLIENT, SECRET),
        )
        assert in_body.status_code == 200
        client = httpx.get(
            f"{emu.root}/oauth/token",
            params={"grant_type": "client_credentials"},
            auth=(CLIENT, SECRET),
        )
        assert client.status_code == 200 and "refresh_token" not in client.json()
        client_token = {"Authorization": f"Bearer {client.json()['access_token']}"}
        assert httpx.get(f"{emu.root}/documents", headers=client_token).status_code == 403
        wrong_client = httpx.post(
            f"{emu.root}/oauth/token?grant_type=password",
            data={"username": USER, "password": PASSWORD},
            auth=(CLIENT, "nope"),
        )
        assert wrong_client.status_code == 401 and wrong_client.json()["error"] == "unauthorized"
        wrong_user = password_token(emu.root, password="nope")
        assert wrong_user.status_code == 400 and wrong_user.json()["error"] == "invalid_grant"
        unknown = httpx.post(f"{emu.root}/oauth/token?grant_type=magic", auth=(CLIENT, SECRET))
        assert unknown.status_code == 400 and unknown.json()["error"] == "unsupported_grant_type"
        assert emu.admin("stats").json()["tokens"]["issued"] == 4


def test_token_lifetime_expiry_and_refresh_on_a_manual_clock():
    clock = ManualClock()
    with emulator(clock, token_lifetime=30.0) as emu:
        issued = password_token(emu.root).json()
        assert issued["expires_in"] == 30
        headers = {"Authorization": f"Bearer {issued['access_token']}"}
        clock.advance(29.5)
        assert httpx.get(f"{emu.root}/documents", headers=headers).status_code == 200
        clock.advance(0.5)
        expired = httpx.get(f"{emu.root}/documents", headers=headers)
        assert expired.status_code == 401
        assert 'error="invalid_token"' in expired.headers["www-authenticate"]
        refreshed = httpx.post(
            f"{emu.root}/oauth/token",
            data={"grant_type": "refresh_token", "refresh_token": issued["refresh_token"]},
            auth=(CLIENT, SECRET),
        )
        assert refreshed.status_code == 200, refreshed.text
        fresh = refreshed.json()
        assert fresh["access_token"] != issued["access_token"] and fresh["expires_in"] == 30
        assert fresh["refresh_token"] == issued["refresh_token"]
        headers = {"Authorization": f"Bearer {fresh['access_token']}"}
        assert httpx.get(f"{emu.root}/documents", headers=headers).status_code == 200
        stats = emu.admin("stats").json()["tokens"]
        assert (stats["issued"], stats["refreshed"]) == (2, 1)


def test_expire_switch_refresh_fail_switch_and_no_refresh_tokens():
    with emulator() as emu:
        issued = password_token(emu.root).json()
        assert emu.get("/documents").status_code == 200
        assert emu.admin("tokens/expire", {}).status_code == 200
        assert emu.get("/documents").status_code == 401

        def refresh(token: str = issued["refresh_token"]) -> httpx.Response:
            return httpx.post(
                f"{emu.root}/oauth/token",
                data={"grant_type": "refresh_token", "refresh_token": token},
                auth=(CLIENT, SECRET),
            )

        assert emu.admin("refresh/fail", {"fail": True}).json() == {"fail": True}
        refused = refresh()
        assert refused.status_code == 400 and refused.json()["error"] == "invalid_grant"
        assert emu.admin("refresh/fail", {"fail": False}).status_code == 200
        assert refresh().status_code == 200
        assert refresh("not-a-token").status_code == 400
        assert emu.admin("refresh/fail", {"fail": "yes"}).status_code == 400
        assert emu.admin("stats").json()["tokens"]["refresh_refused"] == 2
    with emulator(refresh_tokens=False) as emu:
        assert "refresh_token" not in password_token(emu.root).json()


def test_401s_and_the_bearer_scheme_in_any_case():
    with emulator() as emu:
        key = password_token(emu.root).json()["access_token"]
        for scheme in ("BEARER", "Bearer", "bearer"):
            headers = {"Authorization": f"{scheme} {key}"}
            assert httpx.get(f"{emu.root}/documents", headers=headers).status_code == 200
        for headers in (
            {},
            {"Authorization": f"Bearer {uuid.uuid4()}"},
            {"Authorization": "Bearer"},
            {"Authorization": "Token abc"},
        ):
            response = httpx.get(f"{emu.root}/documents", headers=headers)
            assert response.status_code == 401
            assert response.headers["content-type"] == MEDIA_TYPE
            assert "www-authenticate" in response.headers


def test_trusted_backend_mode_basic_client_and_user_identifier():
    """GPAY: Basic client credentials + ``X-User-Identifier``; each identifier is a user of
    its own, and the password user does not see their documents."""
    with emulator() as emu:
        alice = {"X-User-Identifier": "alice", **VND}
        with httpx.Client(base_url=emu.root, auth=(CLIENT, SECRET), headers=alice) as trusted:
            created = trusted.post(
                "/documents", params={"filename": "a.pdf"}, content=render_pdf(random_spec(7))
            )
            assert created.status_code == 201
            uri = created.headers["location"]
            assert trusted.get(uri).status_code == 200
            assert trusted.get("/documents").json()["totalCount"] == 1
            bob = trusted.get(uri, headers={"X-User-Identifier": "bob"})
            assert bob.status_code == 404
            assert trusted.get(uri, headers={"X-User-Identifier": ""}).status_code == 401
        assert httpx.get(uri, auth=(CLIENT, "wrong"), headers=alice).status_code == 401
        assert emu.get(uri).status_code == 404
        assert emu.get("/documents").json()["totalCount"] == 0


# --------------------------------------------------------------------------- processing


@pytest.mark.parametrize(("seed", "lang"), [(11, "en"), (12, "de"), (13, "de")])
def test_extractions_carry_the_invoice_values(seed, lang):
    spec = random_spec(seed, lang)
    expected = expected_fields(spec)
    with emulator() as emu:
        uri = emu.upload(render_pdf(spec, lang))
        emu.completed(uri)
        body = emu.get(f"{uri}/extractions").json()
        found = {label: entry["value"] for label, entry in body["extractions"].items()}
        currency = expected["currency"]
        assert found["amountToPay"] == f"{expected['total_amount']}:{currency}"
        assert found["iban"] == expected["supplier_iban"]
        if "supplier_bic" in expected:
            assert found["bic"] == expected["supplier_bic"]
        assert found["documentDate"] == expected["issue_date"].isoformat()
        if "due_date" in expected:
            assert found["paymentDueDate"] == expected["due_date"].isoformat()
        assert found["invoiceId"] == expected["invoice_number"]
        assert found["paymentRecipient"] == expected["supplier_name"]
        for entry in body["extractions"].values():
            assert set(entry) <= {"box", "entity", "value", "candidates"}
            assert isinstance(entry["value"], str)
            if "candidates" in entry:
                assert entry["candidates"] in body["candidates"]
        items = body["compoundExtractions"]["lineItems"]
        lines = expected_line_items(spec, lang)
        assert len(items) == len(lines)
        for item, line in zip(items, lines, strict=True):
            assert item["description"]["value"] == line.description
            assert item["quantity"] == item["quantity"] | {"entity": "numeric"}
            assert item["baseGross"]["value"] == f"{line.unit_price}:{currency}"
            assert item["grossAmount"]["value"] == f"{line.total_amount}:{currency}"
            assert_box(item["baseGross"]["box"])


def test_pending_then_completed_on_the_delay_and_error_outcomes():
    clock = ManualClock()
    with emulator(clock, delay=10.0) as emu:
        uri = emu.upload(render_pdf(random_spec(8)))
        assert emu.get(uri).json()["progress"] == "PENDING"
        assert emu.get(f"{uri}/extractions").status_code == 404
        assert emu.get(f"{uri}/layout").status_code == 404
        clock.advance(9.9)
        assert emu.get(uri).json()["progress"] == "PENDING"
        clock.advance(0.1)
        assert emu.get(uri).json()["progress"] == "COMPLETED"
        assert emu.admin_document(uri)["completed_at"] == clock.now()
        forced = emu.admin(f"documents/{uri.rsplit('/', 1)[1]}/progress", {"progress": "ERROR"})
        assert forced.status_code == 200 and forced.json()["progress"] == "ERROR"
        assert emu.get(uri).json()["progress"] == "ERROR"
        assert emu.get(f"{uri}/extractions").status_code == 404
        assert (
            emu.admin(f"documents/{uuid.uuid1()}/progress", {"progress": "ERROR"}).status_code
            == 404
        )
        bad = emu.admin(f"documents/{uri.rsplit('/', 1)[1]}/progress", {"progress": "DONE"})
        assert bad.status_code == 400
        broken = emu.upload(truncated_pdf_bytes(random_spec(8)))
        clock.advance(10)
        assert emu.get(broken).json()["progress"] == "ERROR"
        assert "truncated" in emu.admin_document(broken)["error"]
    with emulator(error_rate=1.0) as emu:
        uri = emu.upload(render_pdf(random_spec(9)))
        assert emu.completed(uri)["progress"] == "ERROR"
        forced = emu.admin(f"documents/{uri.rsplit('/', 1)[1]}/progress", {"progress": "COMPLETED"})
        assert forced.json()["progress"] == "COMPLETED"
        assert "amountToPay" in emu.get(f"{uri}/extractions").json()["extractions"]


# --------------------------------------------------------------------------- limits


def test_limits_size_text_format_and_protection():
    with emulator() as emu:

        def post(data: bytes, name: str = "file.pdf") -> httpx.Response:
            return emu.http.post("/documents", params={"filename": name}, content=data)

        big = b"%PDF-1.4\n" + b"0" * (10 * 1024 * 1024 - 9)
        assert len(big) == 10 * 1024 * 1024
        assert post(big).status_code == 413
        multipart = emu.http.post("/documents", files={"file": ("big.pdf", big, "application/pdf")})
        assert multipart.status_code == 413
        assert vnd_json(post(b"a" * (512 * 1024), "big.txt"), 413)["message"]
        assert post("Rechnung 1 Betrag 1,00 €".encode("cp1252"), "latin.txt").status_code == 400
        assert post(b"Rechnung\nBetrag 1,00 EUR\n", "ok.txt").status_code == 201
        assert post(encrypted_pdf_bytes(random_spec(10)), "secret.pdf").status_code == 400
        assert post(b"PK\x03\x04zipped", "a.zip").status_code == 400
        assert post(b"").status_code == 400
        assert post(_gif(frames=2), "moving.gif").status_code == 400
        assert post(_gif(frames=1), "still.gif").status_code == 201
        no_file = emu.http.post(
            "/documents", files={"other": ("a.pdf", b"%PDF", "application/pdf")}
        )
        assert no_file.status_code == 400
        assert emu.admin("stats").json()["documents"]["total"] == 2


def _gif(frames: int) -> bytes:
    from PIL import Image

    images = [Image.new("L", (8, 8), color) for color in (0, 255)[:frames]]
    buffer = io.BytesIO()
    images[0].save(buffer, format="GIF", save_all=frames > 1, append_images=images[1:])
    return buffer.getvalue()


def test_only_the_first_ten_pages_are_processed():
    pages = [[f"Seite {n}", "Lorem ipsum dolor sit amet"] for n in range(1, 13)]
    pages[0] = ["Rechnung", "Rechnungsnummer: 42", "Gesamtbetrag: 10,00 EUR", "Seite 1"]
    pages[11] = ["Seite 12", "IBAN: DE83 1303 0000 0017 8503 60"]
    with emulator() as emu:
        uri = emu.upload(text_pdf(pages))
        doc = emu.completed(uri)
        assert doc["progress"] == "COMPLETED" and doc["pageCount"] == 12
        found = emu.get(f"{uri}/extractions").json()["extractions"]
        assert found["amountToPay"]["value"] == "10.00:EUR"
        assert "iban" not in found  # printed on page 12 only
        layout = emu.get(f"{uri}/layout").json()["pages"]
        assert [p["number"] for p in layout] == list(range(1, 11))


# --------------------------------------------------------------------------- feedback


def test_feedback_status_codes_and_atomic_batches():
    with emulator(delay=0.0) as emu:
        uri = emu.upload(text_pdf(SEED_FEEDBACK_PDF))
        emu.completed(uri)
        before = emu.get(f"{uri}/extractions").json()

        def put(body: Any, path: str = "/extractions", **headers: str) -> int:
            kind = {"Content-Type": MEDIA_TYPE, **headers}
            return emu.http.put(f"{uri}{path}", content=json.dumps(body), headers=kind).status_code

        ok = {"amountToPay": {"value": "5.60:EUR"}}
        assert put({"feedback": {**ok, "noSuchLabel": {"value": "x"}}}) == 404
        assert put({"feedback": {**ok, "amountToPay": {"value": "5,60 €"}}}) == 422
        assert put({"feedback": {"iban": {"value": "DE68 1303"}}}) == 422
        assert put({"feedback": {"documentDate": {"value": "31.01.2026"}}}) == 422
        assert put({"feedback": {"iban": {"value": 42}}}) == 422
        assert (
            put({"feedback": {"iban": {"value": "DE68130300000017850360", "box": {"page": 1}}}})
            == 422
        )
        assert put({"value": "no feedback key"}) == 400
        assert put(ok, "/extractions/amountToPay", **{"Content-Type": "text/plain"}) == 415
        assert put({"value": "x"}, "/extractions/noSuchLabel") == 404
        assert put({"value": "12:EURO"}, "/extractions/amountToPay") == 422
        assert emu.get(f"{uri}/extractions").json() == before  # nothing refused took effect
        assert emu.admin_document(uri)["feedback"] == []
        missing = f"/documents/{uuid.uuid1()}/extractions"
        assert emu.http.put(missing, json={"feedback": ok}).status_code == 404
        assert put({"feedback": {"documentDate": {"value": "2026-01-31"}}}) == 204
        compound = {
            "feedback": ok,
            "compoundFeedback": {
                "lineItems": [{"description": {"value": "Kabel"}, "quantity": {"value": "2"}}]
            },
        }
        assert put(compound) == 204
        after = emu.get(f"{uri}/extractions").json()
        assert after["compoundExtractions"]["lineItems"][0]["quantity"] == {
            "entity": "numeric",
            "value": "2",
        }
        bad_compound = {
            "feedback": {},
            "compoundFeedback": {"lineItems": [{"price": {"value": "1"}}]},
        }
        assert put(bad_compound) == 404


def test_feedback_on_a_pending_document_is_404():
    clock = ManualClock()
    with emulator(clock, delay=5.0) as emu:
        uri = emu.upload(text_pdf(SEED_FEEDBACK_PDF))
        body = {"feedback": {"amountToPay": {"value": "5.60:EUR"}}}
        assert emu.http.put(f"{uri}/extractions", json=body).status_code == 404
        clock.advance(5)
        assert emu.http.put(f"{uri}/extractions", json=body).status_code == 204


# --------------------------------------------------------------------------- media type, metadata


def test_vendor_media_type_on_answers_and_accept():
    with emulator() as emu:
        uri = emu.upload(text_pdf(SEED_FEEDBACK_PDF))
        emu.completed(uri)
        for path in ("/documents", uri, f"{uri}/extractions", f"{uri}/layout", f"{uri}/nope"):
            assert emu.get(path).headers["content-type"] == MEDIA_TYPE, path
        for accept in ("application/json", "*/*", f"{MEDIA_TYPE}, */*;q=0.1"):
            assert emu.http.get(uri, headers={"Accept": accept}).status_code == 200
        refused = emu.http.get(uri, headers={"Accept": "text/html"})
        assert refused.status_code == 406 and refused.headers["content-type"] == MEDIA_TYPE


def test_metadata_headers_are_stored_and_shown_for_a_lookup():
    """The connector puts our document id into ``x-document-metadata-*`` to find an upload
    again after a lost answer: the list and the document show them (see NOTES.md, "Emulator")."""
    with emulator() as emu:
        uri = emu.upload(
            text_pdf(SEED_FEEDBACK_PDF),
            **{
                "x-document-metadata-branchid": "docrelay-17",
                "X-Document-Metadata-DeviceClass": "desktop_device",
            },
        )
        expected = {"branchid": "docrelay-17", "deviceclass": "desktop_device"}
        response = emu.get(uri)
        assert response.json()["metadata"] == expected
        assert response.headers["x-document-metadata-branchid"] == "docrelay-17"
        listed = emu.get("/documents").json()["documents"]
        assert [
            d["_links"]["document"]
            for d in listed
            if d["metadata"].get("branchid") == "docrelay-17"
        ] == [uri]
        assert emu.admin_document(uri)["metadata"] == expected
        records = emu.admin("requests?method=POST&path=/documents").json()["results"]
        assert records[0]["attributes"]["metadata"] == expected
    with emulator(show_metadata=False) as emu:
        uri = emu.upload(b"Rechnung\n", "a.txt", **{"x-document-metadata-branchid": "b"})
        assert "metadata" not in emu.get(uri).json()
        assert emu.admin_document(uri)["metadata"] == {"branchid": "b"}


# --------------------------------------------------------------------------- faults, stats


@pytest.mark.parametrize(
    ("kind", "processed"), [("503", False), ("drop_after", True), ("500_after", True)]
)
def test_faulted_upload_is_processed_fully_or_not_at_all(kind, processed):
    with emulator() as emu:
        faults = {"next": [{"kind": kind, "method": "POST", "path": "/documents"}]}
        assert emu.admin("faults", faults).status_code == 200
        try:
            response = emu.http.post(
                "/documents", params={"filename": "a.txt"}, content=b"Rechnung\n"
            )
            status = response.status_code
            if kind == "503":
                assert response.headers["retry-after"] == "1"
                assert set(vnd_json(response, 503)) == {"message", "requestId"}
        except httpx.TransportError:
            status = 0
        assert status == {"503": 503, "drop_after": 0, "500_after": 500}[kind]
        assert emu.admin("stats").json()["documents"]["total"] == (1 if processed else 0)
        assert emu.admin("stats").json()["faults"] == {kind: 1}


def test_fault_run_with_a_seed_and_throttling():
    with emulator() as emu:  # logged in first: the token request could be faulted too
        faults = {"fail_rate": 0.5, "seed": 7, "fault_mix": {"503": 1, "500": 1}}
        assert emu.admin("faults", faults).status_code == 200
        statuses = [emu.get("/documents").status_code for _ in range(30)]
        assert set(statuses) == {200, 500, 503}
        stats = emu.admin("stats").json()
        assert sum(stats["faults"].values()) == statuses.count(500) + statuses.count(503)
        assert stats["requests"]["by_path"]["GET /documents"]["200"] == statuses.count(200)
    with emulator() as emu:
        assert emu.admin("faults", {"rate_limit": 2.0}).status_code == 200
        statuses = [emu.get("/documents").status_code for _ in range(6)]
        assert 429 in statuses
        throttled = emu.get("/documents")
        if throttled.status_code == 429:
            assert int(throttled.headers["retry-after"]) >= 1
            assert set(vnd_json(throttled, 429)) == {"message", "requestId"}
        assert emu.admin("stats").json()["throttled"] >= 1


def test_stats_count_by_route():
    with emulator() as emu:
        uri = emu.upload(text_pdf(SEED_FEEDBACK_PDF))
        emu.completed(uri)
        emu.get(f"{uri}/extractions")
        emu.http.put(f"{uri}/extractions/paymentRecipient", json={"value": "Zalando SE"})
        stats = emu.admin("stats").json()
        by_path = stats["requests"]["by_path"]
        assert by_path["POST /documents"] == {"201": 1}
        assert by_path["GET /documents/{id}"]["200"] >= 1
        assert by_path["GET /documents/{id}/extractions"] == {"200": 1}
        assert by_path["PUT /documents/{id}/extractions/{label}"] == {"204": 1}
        assert by_path["POST /oauth/token"] == {"200": 1}
        assert stats["documents"] == {"total": 1, "COMPLETED": 1}
        assert stats["feedback"] == 1 and stats["tokens"]["issued"] == 1


# --------------------------------------------------------------------------- command line


def test_cli_options():
    parser = runner.build_parser(emulator_cli.GiniEmulator())
    args = parser.parse_args(
        ["--delay", "0.5", "--token-lifetime", "20", "--error-rate", "0.25", "--fail-rate", "0.1"]
    )
    options = emulator_cli.options_from(args)
    assert (args.host, args.port) == ("127.0.0.1", 8765)
    assert (options.delay, options.token_lifetime, options.error_rate) == (0.5, 20.0, 0.25)
    assert options.fail_rate == 0.1 and options.refresh_tokens and options.show_metadata
    with pytest.raises(SystemExit):
        emulator_cli.options_from(parser.parse_args(["--error-rate", "2"]))
    with pytest.raises(SystemExit):
        emulator_cli.options_from(parser.parse_args(["--token-lifetime", "0"]))


def _try_token(root: str) -> str | None:
    try:
        response = password_token(root)
    except httpx.TransportError:
        return None
    return response.json()["access_token"] if response.status_code == 200 else None


def test_docrelay_emulate_gini_serves_and_prints_its_accounts(tmp_path: Path):
    port = free_port()
    docrelay = Path(sys.executable).with_name("docrelay")
    command = [
        str(docrelay),
        "emulate",
        "gini",
        "--port",
        str(port),
        "--delay",
        "0",
        "--token-lifetime",
        "60",
    ]
    with subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    ) as process:
        try:
            assert process.stdout is not None
            banner = [process.stdout.readline() for _ in range(3)]
            root = f"http://127.0.0.1:{port}"
            assert banner[0].strip() == f"Gini API emulator at {root}"
            assert "client / secret" in banner[1]
            assert "user@example.com / secret" in banner[2]
            key = wait_for(lambda: _try_token(root))
            headers = {"Authorization": f"BEARER {key}", **VND}
            created = httpx.post(
                f"{root}/documents?filename=a.txt", content=b"Rechnung\n", headers=headers
            )
            assert created.status_code == 201
            assert created.headers["location"].startswith(f"{root}/documents/")
            assert httpx.get(f"{root}/documents", headers=headers).json()["totalCount"] == 1
        finally:
            process.send_signal(signal.SIGINT)
            try:
                process.communicate(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.communicate()
