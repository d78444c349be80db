"""The DeepOpinion API emulator: every response example of seed 002 it serves reproduced field
for field (register, login, the extraction answer, HITL, review, the models envelope), tokens
expiring on a manual clock, format and size refusals, reviews created for low-confidence
documents only while a live HITL exists, review completion firing the webhook to a real local
receiver (retried after a 503), 50 concurrent extraction calls answering in about the delay,
and the extracted values equal to the generated invoice's."""

from __future__ import annotations

import asyncio
import base64
import functools
import hashlib
import io
import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from connectors import normalize
from connectors.emulation import runner
from connectors.emulation.clock import ManualClock
from connectors.vendors.deepopinion import emulator_cli
from connectors.vendors.deepopinion import emulator_content as content
from connectors.vendors.deepopinion.emulator import EmulatorOptions, create_app
from tests.invoices import expected_fields, expected_line_items, random_spec, render_pdf
from tests.servers import serve

USER, PASSWORD = "user@example.com", "secret"
PROJECT = "/organizations/1/projects/1"
EXTRACT = f"{PROJECT}/models/1/extract"
BOX_KEYS = ["TLx", "TLy", "TRx", "TRy", "BRx", "BRy", "BLx", "BLy", "text", "label", "confidence"]


def types_of(value: Any) -> Any:
    """A JSON value's shape: keys and their types, recursively (lists by their first item)."""
    if isinstance(value, dict):
        return {k: types_of(v) for k, v in value.items()}
    if isinstance(value, list):
        return [types_of(value[0])] if value else []
    return type(value).__name__


def token_of(client: httpx.Client) -> str:
    answer = client.post("/auth/login", json={"email": USER, "password": PASSWORD})
    assert answer.status_code == 200, answer.text
    return str(answer.json()["auth_token"])


@contextmanager
def emulator(clock: ManualClock | None = None, **options: Any) -> Iterator[httpx.Client]:
    """The emulator under uvicorn in this process, logged in as the demo user (``Bearer``)."""
    app = create_app(EmulatorOptions(**{"delay": 0.0, **options}), clock=clock)
    with serve(app) as root, httpx.Client(base_url=root, timeout=30) as client:
        client.headers["Authorization"] = f"Bearer {token_of(client)}"
        yield client


def claims(token: str) -> dict[str, Any]:
    payload = token.split(".")[1]
    return dict(json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))))


def upload(
    client: httpx.Client, data: bytes, name: str = "Invoice.pdf", **params: str
) -> httpx.Response:
    return client.post(
        EXTRACT,
        params={"return_bboxes": "true", "return_annotated_pages": "false", **params},
        files={"file": (name, data, "application/pdf")},
    )


@functools.cache
def first_pdf() -> bytes:
    """Rendered once: a PDF carries its creation time, so two renderings a second apart are
    different files, which the emulator answers with different confidences."""
    return render_pdf(random_spec(21, "en"), "en")


def pdf_with_rate(rate_low: bool, seed: int | None = None, start: int = 100) -> bytes:
    """An invoice whose file is (``rate_low``) or is not chosen for lowered confidences at
    the default rate."""
    for number in range(start, start + 200):
        data = render_pdf(random_spec(number, "en"), "en")
        reading = content.read_file(data, "application/pdf")
        content.score(reading, seed=seed, threshold=90, low_confidence_rate=0.2)
        if bool(reading.below(90)) == rate_low and not reading.missing():
            return data
    raise AssertionError("no such invoice among 200")


def live_hitl(client: httpx.Client, **fields: Any) -> dict[str, Any]:
    body = {"name": "docrelay-test", "model_id": 1, "is_live": True, **fields}
    answer = client.post(f"{PROJECT}/hitls", json=body)
    assert answer.status_code == 201, answer.text
    return dict(answer.json())


# --------------------------------------------------------------------------- seed examples


def test_seed_register_and_login_field_for_field():
    clock = ManualClock()
    app = create_app(EmulatorOptions(delay=0), clock=clock)
    with serve(app) as root, httpx.Client(base_url=root) as client:
        person = {
            "first_name": "John",
            "last_name": "Doe",
            "email": "john.doe@example.com",
            "password": "badpassword",
        }
        registered = client.post("/auth/register", json=person)
        assert registered.status_code == 200
        body = registered.json()
        assert list(body) == ["auth_token", "message", "status"]
        assert body["message"] == "Successfully registered." and body["status"] == "CREATED"
        again = client.post("/auth/register", json=person)
        assert again.status_code == 400 and again.json()["status"] == "FAIL"
        short = client.post("/auth/register", json={**person, "email": "x@y.z", "password": "1"})
        assert short.status_code == 400

        logged = client.post(
            "/auth/login", json={"email": "john.doe@example.com", "password": "badpassword"}
        )
        assert logged.status_code == 200
        body = logged.json()
        assert list(body) == ["auth_token", "message", "status"]
        assert (body["message"], body["status"]) == ("Successfully logged in.", "OK")
        token = claims(body["auth_token"])
        assert list(token) == ["exp", "sub", "iss", "languages", "functionality", "iat"]
        assert token["iss"] == "deepopinion.ai" and token["languages"] == ["*"]
        assert token["functionality"] == ["Analysis/*", "Training/*", "Models/*"]
        assert token["exp"] - token["iat"] == 1_209_600
        assert token["iat"] == int(clock.now()) and token["sub"] == 2

        wrong = client.post("/auth/login", json={"email": USER, "password": "nope"})
        assert wrong.status_code == 401
        assert wrong.json() == {"message": "Invalid email or password.", "status": "FAIL"}


def test_seed_models_envelope_and_project_models():
    with emulator() as client:
        body = client.get("/models", params={"offset": 0, "limit": 10}).json()
        assert list(body) == ["models", "has_more", "offset", "limit", "count"]
        assert (body["has_more"], body["offset"], body["limit"], body["count"]) == (
            False,
            0,
            10,
            1,
        )
        model = body["models"][0]
        assert list(model) == [
            "base",
            "created",
            "display_name",
            "uuid",
            "id",
            "language",
            "long_description",
            "name",
            "owner",
            "progress",
            "project_id",
            "score",
            "short_description",
            "status",
            "type",
        ]
        assert (model["id"], model["name"], model["status"], model["type"]) == (
            1,
            "Invoice Extraction v1",
            "PUBLISHED",
            "LABEL",
        )
        assert isinstance(model["progress"], float) and isinstance(model["score"], float)
        assert client.get("/models", params={"offset": 1}).json()["models"] == []
        assert client.get(f"{PROJECT}/models").json() == [model]
        assert client.get("/organizations/2/projects/1/models").status_code == 404


def test_seed_extraction_answer_keys_and_types():
    with emulator() as client:
        answer = upload(client, first_pdf(), return_annotated_pages="true")
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert list(body) == [
            "model",
            "all_required_fields_found",
            "all_confidence_thresholds_met",
            "all_data_conversion_passed",
            "total_credits_used",
            "documents",
            "labels",
        ]
        assert body["model"] == "Invoice Extraction v1"
        assert body["total_credits_used"] == 1
        (doc,) = body["documents"]
        assert list(doc) == [
            "name",
            "all_required_fields_found",
            "all_confidence_thresholds_met",
            "all_data_conversion_passed",
            "credits_used",
            "matches",
            "bboxes",
            "annotated_pages",
            "hitl",
        ]
        assert doc["name"] == "Invoice.pdf" and doc["credits_used"] == 1
        for flag in ("all_required_fields_found", "all_data_conversion_passed"):
            assert doc[flag] is True and body[flag] is True
        assert body["all_confidence_thresholds_met"] is doc["all_confidence_thresholds_met"]
        assert doc["hitl"] is None
        box = doc["bboxes"][0][0][0]
        assert list(box) == BOX_KEYS
        assert types_of(box) == {
            **{k: "float" for k in BOX_KEYS[:8]},
            "text": "str",
            "label": "str",
            "confidence": "float",
        }
        assert all(0 <= box[k] <= 1 for k in BOX_KEYS[:8])
        assert box["TLx"] == box["BLx"] < box["TRx"] == box["BRx"]
        assert box["TLy"] == box["TRy"] < box["BLy"] == box["BRy"]
        assert types_of(doc["matches"][0]) == {
            "label": "str",
            "text": "str",
            "confidence": "float",
            "page": "int",
        }
        on_page = [entry[0] for entry in doc["bboxes"][0]]
        assert [(m["label"], m["text"]) for m in doc["matches"]] == [
            (b["label"], b["text"]) for b in on_page
        ]
        (png,) = doc["annotated_pages"]
        assert base64.b64decode(png).startswith(b"\x89PNG\r\n\x1a\n")
        assert body["labels"][0] == {"id": 1, "name": "Invoice number"}
        assert [entry["name"] for entry in body["labels"]] == list(content.LABELS)

        plain = upload(client, first_pdf(), return_bboxes="false").json()["documents"][0]
        assert plain["bboxes"] == [] and plain["annotated_pages"] == []
        assert plain["matches"] == doc["matches"]


def test_seed_hitl_and_review_field_for_field():
    with emulator() as client:
        hitl = live_hitl(
            client,
            description="Invoices below 90 %",
            assigned_user_id=1,
            webhook_url="http://127.0.0.1:9/hook",
        )
        assert list(hitl) == [
            "id",
            "name",
            "description",
            "project_id",
            "created_at",
            "updated_at",
            "assigned_user_id",
            "model_id",
            "is_live",
            "webhook_url",
            "labels",
        ]
        assert (hitl["id"], hitl["project_id"], hitl["model_id"], hitl["labels"]) == (1, 1, 1, {})
        assert datetime.fromisoformat(hitl["created_at"]).utcoffset() is not None
        assert client.get(f"{PROJECT}/hitls").json() == [hitl]
        assert client.get(f"{PROJECT}/hitls/1").json() == hitl
        changed = client.put(f"{PROJECT}/hitls/1", json={"name": "renamed"}).json()
        assert changed["name"] == "renamed" and changed["webhook_url"] == hitl["webhook_url"]
        assigned = client.put(f"{PROJECT}/hitls/1/assign", json={"assigned_user_id": 7}).json()
        assert assigned["assigned_user_id"] == 7
        assert client.get(f"{PROJECT}/hitls/9").status_code == 404
        assert client.post(f"{PROJECT}/hitls", json={"name": "x" * 121}).status_code == 400

        data = pdf_with_rate(True)
        doc = upload(client, data, name="low.pdf").json()["documents"][0]
        assert doc["all_confidence_thresholds_met"] is False
        reviews = client.get(f"{PROJECT}/hitls/1/reviews").json()
        assert reviews and list(reviews[0]) == [
            "review_id",
            "task_id",
            "document_id",
            "document_name",
            "page_num",
            "status",
            "created",
            "updated",
            "user_id",
            "label",
            "confidence_threshold",
            "ls_annotation_id",
            "hitl_id",
        ]
        review = reviews[0]
        assert (review["status"], review["document_name"], review["hitl_id"]) == (
            "PENDING",
            "low.pdf",
            1,
        )
        assert review["user_id"] == 7 and review["confidence_threshold"] == 90
        assert types_of(review) == types_of(review) | {"review_id": "int", "page_num": "int"}
        full = client.get(f"{PROJECT}/hitls/1/reviews", params={"with_full_data": "true"}).json()
        assert list(full[0]["data"]) == ["value", "confidence", "reviewed_value", "bbox"]
        assert full[0]["data"]["reviewed_value"] is None
        assert full[0]["data"]["confidence"] < 0.9
        assert list(full[0]["data"]["bbox"]) == BOX_KEYS
        (entry,) = doc["hitl"]["result"]
        assert doc["hitl"]["status"] == "pending"
        assert [(c["label"], c["value"]) for c in entry["confidences"]] == [
            (r["label"], r["data"]["value"]) for r in full
        ]
        assert all(c["expected_confidence"] == 90 and c["found"] < 90 for c in entry["confidences"])


# --------------------------------------------------------------------------- auth


def test_tokens_expire_on_a_manual_clock_and_401s():
    clock = ManualClock()
    with emulator(clock, token_lifetime=60) as client:
        assert client.get("/models").status_code == 200
        bare = client.headers["Authorization"].removeprefix("Bearer ")
        assert client.get("/models", headers={"Authorization": bare}).status_code == 200
        clock.advance(61)
        expired = client.get("/models")
        assert expired.status_code == 401
        assert expired.json() == {
            "message": "Token expired. Please log in again.",
            "status": "FAIL",
        }
        fresh = token_of(client)
        assert (
            client.get("/models", headers={"Authorization": f"bearer {fresh}"}).status_code == 200
        )
        for header in ({}, {"Authorization": "Bearer garbage"}, {"Authorization": fresh + "x"}):
            client.headers.pop("Authorization", None)
            answer = client.get("/models", headers=header)
            assert answer.status_code == 401
            assert answer.json()["message"] == "Invalid token. Please log in again."


# --------------------------------------------------------------------------- refusals


def test_format_and_size_refusals():
    with emulator() as client:
        text = client.post(
            EXTRACT, files={"file": ("a.pdf", b"just text " * 10, "application/pdf")}
        )
        assert text.status_code == 415 and text.json()["status"] == "FAIL"
        big = b"%PDF-1.4\n" + b"0" * (50 * 1024 * 1024)
        too_large = client.post(EXTRACT, files={"file": ("big.pdf", big, "application/pdf")})
        assert too_large.status_code == 413 and too_large.json()["status"] == "FAIL"
        missing = client.post(EXTRACT, files={"other": ("a.pdf", first_pdf(), "application/pdf")})
        assert missing.status_code == 400
        assert upload(client, first_pdf()).status_code == 200
        unknown = client.post(
            f"{PROJECT}/models/2/extract",
            files={"file": ("a.pdf", first_pdf(), "application/pdf")},
        )
        assert unknown.status_code == 404 and unknown.json()["status"] == "FAIL"
        from PIL import Image

        buffer = io.BytesIO()
        Image.new("RGB", (200, 100), "white").save(buffer, format="PNG")
        image = client.post(EXTRACT, files={"file": ("scan.png", buffer.getvalue(), "image/png")})
        assert image.status_code == 200
        assert image.json()["all_required_fields_found"] is False


# --------------------------------------------------------------------------- reviews


def test_low_confidence_documents_create_reviews_only_with_a_live_hitl():
    low, high = pdf_with_rate(True), pdf_with_rate(False)
    with emulator() as client:
        before = upload(client, low).json()
        assert before["all_confidence_thresholds_met"] is False
        assert before["documents"][0]["hitl"] is None
        client.post(f"{PROJECT}/hitls", json={"name": "off", "model_id": 1, "is_live": False})
        assert upload(client, low).json()["documents"][0]["hitl"] is None
        hitl = live_hitl(client)
        assert upload(client, high).json()["documents"][0]["hitl"] is None
        assert client.get(f"{PROJECT}/hitls/{hitl['id']}/reviews").json() == []
        again = upload(client, low, name="low-again.pdf").json()
        assert again == again | {"all_confidence_thresholds_met": False}
        assert again["documents"][0]["matches"] == before["documents"][0]["matches"]
        reviews = client.get(f"{PROJECT}/hitls/{hitl['id']}/reviews").json()
        assert {r["document_name"] for r in reviews} == {"low-again.pdf"}
        assert 1 <= len(reviews) <= 2
        stats = client.get("/_emulator/stats").json()
        assert stats["extractions"] == 4 and stats["reviews"] == {"PENDING": len(reviews)}
        listed = client.get("/_emulator/documents").json()["results"]
        assert [d["hitl_status"] for d in listed] == [None, None, None, "pending"]
        assert listed[3]["sha256"] == hashlib.sha256(low).hexdigest()


class Receiver:
    """A webhook receiver on a real port: answers 503 first, then 204."""

    def __init__(self) -> None:
        self.calls: list[tuple[dict[str, str], dict[str, Any]]] = []
        self.got = threading.Event()

        async def hook(request: Request) -> JSONResponse:
            self.calls.append((dict(request.headers), json.loads(await request.body())))
            if len(self.calls) == 1:
                return JSONResponse({"busy": True}, status_code=503)
            self.got.set()
            return JSONResponse({}, status_code=200)

        self.app = Starlette(routes=[Route("/hook/{token}", hook, methods=["POST"])])


def test_review_completion_fires_the_webhook_retried_after_a_503():
    receiver = Receiver()
    app = create_app(EmulatorOptions(delay=0, webhook_retry_delays=(0.1, 0.1)))
    with serve(receiver.app) as hook_root, serve(app) as root, httpx.Client(base_url=root) as http:
        http.headers["Authorization"] = f"Bearer {token_of(http)}"
        answer = http.post(
            f"{PROJECT}/hitls",
            json={
                "name": "h",
                "model_id": 1,
                "is_live": True,
                "webhook_url": f"{hook_root}/hook/t0k",
            },
        )
        hitl_id = answer.json()["id"]
        low = pdf_with_rate(True)
        assert upload(http, low, name="a.docrelay-1-abcd1234.pdf").status_code == 200
        pending = http.get(f"{PROJECT}/hitls/{hitl_id}/reviews").json()
        label = pending[0]["label"]
        done = http.post(
            "/_emulator/reviews/complete",
            json={"document_name": "a.docrelay-1-abcd1234.pdf", "values": {label: "FIXED"}},
        )
        assert done.status_code == 200, done.text
        assert receiver.got.wait(10)
        assert len(receiver.calls) == 2
        headers, body = receiver.calls[1]
        assert body == {
            "event": "review.completed",
            "hitl_id": hitl_id,
            "document_id": pending[0]["document_id"],
            "document_name": "a.docrelay-1-abcd1234.pdf",
            "review_ids": [r["review_id"] for r in pending],
            "status": "COMPLETED",
        }
        assert headers["content-type"] == "application/json"
        assert not any("signature" in name for name in headers)
        full = http.get(
            f"{PROJECT}/hitls/{hitl_id}/reviews", params={"with_full_data": "true"}
        ).json()
        assert all(r["status"] == "COMPLETED" for r in full)
        for review in full:
            wanted = "FIXED" if review["label"] == label else review["data"]["value"]
            assert review["data"]["reviewed_value"] == wanted
        assert (
            http.get(f"{PROJECT}/hitls/{hitl_id}/reviews", params={"status": "PENDING"}).json()
            == []
        )
        again = http.post(
            "/_emulator/reviews/complete", json={"document_name": "a.docrelay-1-abcd1234.pdf"}
        )
        assert again.status_code == 409
        attempts = httpx.get(f"{root}/_emulator/callbacks").json()["attempts"]
        assert [a["status_code"] for a in attempts] == [503, 200]
        assert httpx.get(f"{root}/_emulator/stats").json()["webhooks"]["delivered"] == 1


# --------------------------------------------------------------------------- concurrency


def test_fifty_concurrent_extractions_answer_in_about_the_delay():
    app = create_app(EmulatorOptions(delay=1.0))
    documents = [render_pdf(random_spec(300 + n, "en"), "en") for n in range(5)]

    async def run(root: str, token: str) -> tuple[float, list[int]]:
        async with httpx.AsyncClient(
            base_url=root,
            headers={"Authorization": f"Bearer {token}"},
            timeout=30,
            limits=httpx.Limits(max_connections=60),
        ) as http:
            started = time.monotonic()
            answers = await asyncio.gather(
                *(
                    http.post(EXTRACT, files={"file": (f"{n}.pdf", documents[n % 5])})
                    for n in range(50)
                )
            )
            return time.monotonic() - started, [a.status_code for a in answers]

    with serve(app) as root:
        with httpx.Client(base_url=root) as http:
            token = token_of(http)
        elapsed, statuses = asyncio.run(run(root, token))
    assert statuses == [200] * 50
    assert 1.0 <= elapsed < 3.0, elapsed


# --------------------------------------------------------------------------- values


def amount(text: str) -> Any:
    """An amount as printed (``1.234,56 €``, ``54.36 $``) as a Decimal."""
    return normalize.parse_amount(text)[0]


@pytest.mark.parametrize(("seed", "lang"), [(31, "en"), (32, "de")])
def test_extraction_values_equal_the_generated_invoice(seed, lang):
    spec = random_spec(seed, lang)
    expected = expected_fields(spec)
    with emulator() as client:
        doc = upload(client, render_pdf(spec, lang)).json()["documents"][0]
    found: dict[str, list[str]] = {}
    for match in doc["matches"]:
        found.setdefault(match["label"], []).append(match["text"])
    assert found["Invoice number"] == [expected["invoice_number"]]
    assert normalize.parse_date(found["Invoice date"][0]) == expected["issue_date"]
    if expected["due_date"] is not None:
        assert normalize.parse_date(found["Due date"][0]) == expected["due_date"]
    assert amount(found["Total amount"][0]) == expected["total_amount"]
    assert amount(found["Net amount"][0]) == expected["net_amount"]
    assert normalize.validate_iban(found["IBAN"][0]) == expected["supplier_iban"]
    assert found["Supplier name"] == [expected["supplier_name"]]
    assert found["Customer name"] == [expected["customer_name"]]
    lines = expected_line_items(spec, lang)
    assert found["Line item description"] == [line.description for line in lines]
    assert [amount(t) for t in found["Line item amount"]] == [line.total_amount for line in lines]
    assert [amount(t) for t in found["Line item unit price"]] == [line.unit_price for line in lines]


def test_same_file_same_answer_and_the_share_of_low_confidence_files():
    pdfs = [render_pdf(random_spec(400 + n, "en"), "en") for n in range(40)]
    readings = []
    for data in pdfs:
        reading = content.read_file(data, "application/pdf")
        content.score(reading, seed=None, threshold=90, low_confidence_rate=0.2)
        readings.append(reading)
    low = [r for r in readings if r.below(90)]
    assert 2 <= len(low) <= 16
    assert all(1 <= len(r.below(90)) <= 2 for r in low)
    assert all(0.40 <= v.confidence <= 0.85 for r in low for v in r.below(90))
    with emulator(seed=5) as client:
        first = upload(client, pdfs[0]).json()
        assert upload(client, pdfs[0]).json() == first


# --------------------------------------------------------------------------- command line


def test_cli_options_and_the_fault_body():
    parser = runner.build_parser(emulator_cli.DeepOpinionEmulator())
    args = parser.parse_args(
        ["--delay", "0.5", "--token-lifetime", "20", "--threshold", "80", "--fail-rate", "0.1"]
    )
    options = emulator_cli.options_from(args)
    assert (options.delay, options.token_lifetime, options.threshold) == (0.5, 20.0, 80.0)
    assert options.low_confidence_rate == 0.2 and options.fail_rate == 0.1
    assert emulator_cli.options_from(parser.parse_args([])).delay == 2.0
    with pytest.raises(SystemExit):
        emulator_cli.options_from(parser.parse_args(["--low-confidence-rate", "2"]))
    app = create_app(EmulatorOptions(delay=0, fail_rate=1.0, fault_mix=(("503", 1.0),)))
    with serve(app) as root, httpx.Client(base_url=root) as client:
        faulted = client.get("/models")
        assert faulted.status_code == 503
        assert faulted.json()["status"] == "FAIL" and "message" in faulted.json()
    app = create_app(EmulatorOptions(delay=0, rate_limit=1.0))
    with serve(app) as root, httpx.Client(base_url=root) as client:
        answers = [client.get("/models") for _ in range(3)]
        throttled = answers[-1]
        assert throttled.status_code == 429 and "retry-after" in throttled.headers
        assert throttled.json()["status"] == "FAIL"


def test_a_document_without_its_required_labels_gets_reviews_on_page_0():
    buffer = io.BytesIO()
    Image.new("RGB", (300, 200), "white").save(buffer, format="PNG")
    with emulator() as client:
        hitl = live_hitl(client)
        body = client.post(EXTRACT, files={"file": ("scan.png", buffer.getvalue())}).json()
        doc = body["documents"][0]
        assert (doc["all_required_fields_found"], doc["matches"]) == (False, [])
        assert doc["hitl"] == {"status": "pending", "result": [{"confidences": []}]}
        full = client.get(
            f"{PROJECT}/hitls/{hitl['id']}/reviews", params={"with_full_data": "true"}
        ).json()
        assert [(r["label"], r["page_num"]) for r in full] == [
            (label, 0) for label in content.REQUIRED_LABELS
        ]
        assert all(r["data"] == dict.fromkeys(r["data"]) for r in full)
        done = client.post("/_emulator/reviews/complete", json={"document_id": 1})
        assert done.status_code == 200
        assert done.json() == {
            "completed": [{"document_id": 1, "review_ids": [r["review_id"] for r in full]}]
        }
        assert (
            client.post("/_emulator/reviews/complete", json={"document_id": 9}).status_code == 404
        )


def test_docrelay_emulate_deepopinion_help():
    docrelay = Path(sys.executable).with_name("docrelay")
    shown = subprocess.run(
        [str(docrelay), "emulate", "deepopinion", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    for option in ("--token-lifetime", "--threshold", "--low-confidence-rate", "--delay"):
        assert option in shown
