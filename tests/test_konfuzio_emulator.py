"""The Konfuzio API emulator under real uvicorn: raw HTTP against the protocol the contract
distils (token auth, multipart upload, the ``status_data`` pipeline, annotations, DRF lists,
review, 41 and post-processing, callbacks), fault injection and the command line. The official
``konfuzio-sdk`` is checked against it in ``test_konfuzio_sdk.py``."""

from __future__ import annotations

import base64
import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from connectors.emulation import runner
from connectors.emulation.clock import ManualClock
from connectors.vendors.konfuzio import emulator_cli
from connectors.vendors.konfuzio.emulator import EmulatorOptions, create_app
from connectors.vendors.konfuzio.emulator_model import LABELS, STATUSES
from connectors.vendors.konfuzio.emulator_state import KonfuzioState
from tests.daemon_proc import free_port
from tests.invoices import encrypted_pdf_bytes, expected_fields, random_spec, render_pdf
from tests.servers import serve

USER, PASSWORD = "user@example.com", "secret"
FAST: dict[str, Any] = {"delay": 0.0, "callback_retry_delays": (0.05, 0.05)}


@dataclass
class Emu:
    state: KonfuzioState
    root: str
    http: httpx.Client
    """Logged in, base URL ``…/api/v3/``."""

    def upload(self, data: bytes, name: str = "invoice.pdf", **fields: Any) -> dict[str, Any]:
        form = {"project": "1", **{k: str(v) for k, v in fields.items()}}
        response = self.http.post(
            "documents/", data=form, files={"data_file": (name, data, "application/pdf")}
        )
        assert response.status_code == 201, response.text
        return response.json()

    def document(self, doc_id: int, **params: Any) -> dict[str, Any]:
        response = self.http.get(f"documents/{doc_id}/", params=params)
        assert response.status_code == 200, response.text
        return response.json()

    def done(self, doc_id: int, status: int = 2) -> dict[str, Any]:
        return wait_for(lambda: (d := self.document(doc_id))["status_data"] == status and d)

    def annotations(self, doc_id: int) -> list[dict[str, Any]]:
        response = self.http.get("annotations/", params={"document": doc_id, "limit": 1000})
        assert response.status_code == 200, response.text
        return response.json()["results"]

    def admin(self, path: str, body: dict[str, Any] | None = None) -> httpx.Response:
        if body is None:
            return httpx.get(f"{self.root}/_emulator/{path}")
        return httpx.post(f"{self.root}/_emulator/{path}", json=body)


def token(root: str) -> str:
    response = httpx.post(f"{root}/api/v3/auth/", json={"username": USER, "password": PASSWORD})
    assert response.status_code == 200, response.text
    return response.json()["token"]


@contextmanager
def emulator(clock: ManualClock | None = None, **options: Any) -> Iterator[Emu]:
    app = create_app(EmulatorOptions(**{**FAST, **options}), clock=clock)
    with serve(app) as root:
        headers = {"Authorization": f"Token {token(root)}"}
        with httpx.Client(base_url=f"{root}/api/v3/", headers=headers, timeout=20) as http:
            yield Emu(app.state.emulator, root, http)


def wait_for(probe: Callable[[], Any], timeout: float = 15.0) -> Any:
    """Poll ``probe`` until it returns something truthy (no fixed sleeps)."""
    deadline = time.monotonic() + timeout
    while True:
        result = probe()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.02)


def invoice(seed: int = 1, lang: str = "en") -> bytes:
    return render_pdf(random_spec(seed, lang), lang)  # type: ignore[arg-type]


def joined_pdf(*parts: bytes) -> bytes:
    """One PDF of several, as a scanner batch of invoices arrives."""
    import pypdfium2 as pdfium

    target = pdfium.PdfDocument.new()
    sources = [pdfium.PdfDocument(p) for p in parts]
    try:
        for source in sources:
            target.import_pages(source, index=len(target))
        buffer = io.BytesIO()
        target.save(buffer)
        return buffer.getvalue()
    finally:
        for source in sources:
            source.close()
        target.close()


def by_label(annotations: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {
        a["label"]["name"]: a for a in annotations if not a["label"]["name"].startswith("line_")
    }


@contextmanager
def receiver(status: int = 200) -> Iterator[tuple[str, list[dict[str, Any]], list[int]]]:
    """A callback receiver answering ``statuses[0]`` (changeable), recording what it got."""
    received: list[dict[str, Any]] = []
    statuses = [status]
    lock = threading.Lock()

    async def hook(request: Request) -> JSONResponse:
        body = json.loads(await request.body())
        with lock:
            received.append({"headers": dict(request.headers), "body": body})
        return JSONResponse({}, status_code=statuses[0])

    with serve(Starlette(routes=[Route("/cb", hook, methods=["POST"])])) as base:
        yield f"{base}/cb", received, statuses


# --------------------------------------------------------------------------- auth


def test_token_auth_and_401s():
    with emulator() as emu:
        api = f"{emu.root}/api/v3"
        first = token(emu.root)
        assert first == token(emu.root), "one token per user until it is deleted"
        assert len(first) == 40
        wrong = httpx.post(f"{api}/auth/", json={"username": USER, "password": "nope"})
        assert wrong.status_code == 400
        assert wrong.json() == {"non_field_errors": ["Unable to log in with provided credentials."]}
        form = httpx.post(f"{api}/auth/", data={"username": USER, "password": PASSWORD})
        assert form.json() == {"token": first}, "form-encoded logins work too"

        anonymous = httpx.get(f"{api}/projects/")
        assert anonymous.status_code == 401
        assert anonymous.json() == {"detail": "Authentication credentials were not provided."}
        assert anonymous.headers["www-authenticate"].startswith("Token")
        bad = httpx.get(f"{api}/projects/", headers={"Authorization": "Token 0123"})
        assert (bad.status_code, bad.json()) == (401, {"detail": "Invalid token."})
        basic = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
        assert httpx.get(
            f"{api}/projects/1/", headers={"Authorization": f"Basic {basic}"}
        ).is_success

        headers = {"Authorization": f"Token {first}"}
        assert httpx.delete(f"{api}/auth/", headers=headers).status_code == 204
        assert httpx.get(f"{api}/projects/", headers=headers).status_code == 401
        assert token(emu.root) != first, "a new token after the old one was deleted"


# --------------------------------------------------------------------------- seeded objects


def test_seeded_project_categories_labels_and_label_sets():
    with emulator() as emu:
        projects = emu.http.get("projects/").json()
        assert projects["count"] == 1 and projects["next"] is None and projects["previous"] is None
        assert projects["results"][0]["id"] == 1
        assert emu.http.get("projects/2/").status_code == 404

        categories = emu.http.get("categories/", params={"project": 1}).json()["results"]
        invoice_category = next(c for c in categories if c["id"] == 1)
        assert invoice_category["name"] == "Invoice"
        assert [s["id"] for s in invoice_category["schema"]] == [1, 3]
        assert {label["name"] for label in invoice_category["schema"][0]["labels"]} >= {
            "invoice_number",
            "total_amount",
        }
        labels = emu.http.get("labels/", params={"project": 1}).json()
        assert labels["count"] == len(LABELS) == 24
        assert emu.http.get("labels/", params={"project": 2}).json()["count"] == 0
        label_sets = emu.http.get("label-sets/", params={"project": 1}).json()["results"]
        line = next(s for s in label_sets if s["id"] == 3)
        assert line["has_multiple_sections"] is True and line["categories"] == [1, 2]
        assert emu.http.get("label-sets/1/").json()["has_multiple_annotation_sets"] is False


# --------------------------------------------------------------------------- upload


def test_upload_is_multipart_only_and_validated():
    with emulator() as emu:
        as_json = emu.http.post("documents/", json={"project": 1})
        assert as_json.status_code == 415
        files = {"data_file": ("invoice.pdf", invoice(), "application/pdf")}
        no_file = emu.http.post("documents/", data={"project": "1"}, files={"x": ("a", b"a")})
        assert no_file.status_code == 400 and "data_file" in no_file.json()
        wrong_project = emu.http.post("documents/", data={"project": "7"}, files=files)
        assert wrong_project.status_code == 400 and "project" in wrong_project.json()
        bad_url = emu.http.post(
            "documents/", data={"project": "1", "callback_url": "invalid url"}, files=files
        )
        assert bad_url.json() == {"callback_url": ["Enter a valid URL."]}
        text = emu.http.post(
            "documents/",
            data={"project": "1"},
            files={"data_file": ("a.txt", b"hello", "text/plain")},
        )
        assert text.status_code == 400 and "not supported" in text.json()["data_file"][0]
        assert emu.state.documents == {}, "no refused upload created a document"


def test_status_pipeline_on_a_manual_clock():
    clock = ManualClock()
    with emulator(clock=clock, delay=6.0) as emu:
        doc = emu.upload(invoice(2))
        assert doc["status_data"] == 0 and doc["labeling_available"] == 0
        assert doc["annotation_sets"] == [] and doc["text"] is None
        seen = [0]
        for _ in range(6):
            clock.advance(1.0)
            seen.append(emu.document(doc["id"])["status_data"])
        assert seen == [0, 10, 3, 30, 1, 20, 2]
        done = emu.document(doc["id"])
        assert done["labeling_available"] == 1 and done["processing_time"] == 6.0
        assert done["category"] == 1, "no category given: categorization found the invoice"
        assert done["category_confidence"] == 0.95
        assert emu.annotations(doc["id"]), "annotations exist once the document is done"
        assert set(STATUSES) == {0, 1, 2, 3, 4, 10, 20, 30, 40, 41, 111}


def test_sync_upload_answers_when_processing_is_done():
    with emulator(delay=0.3) as emu:
        doc = emu.upload(invoice(3), sync="true")
        assert doc["status_data"] == 2 and doc["annotation_sets"]


@pytest.mark.parametrize(("seed", "lang"), [(1, "en"), (2, "de"), (5, "en"), (8, "de")])
def test_annotations_carry_the_invoice_values(seed, lang):
    spec = random_spec(seed, lang)  # type: ignore[arg-type]
    with emulator() as emu:
        doc = emu.done(emu.upload(render_pdf(spec, lang))["id"])  # type: ignore[arg-type]
        annotations = emu.annotations(doc["id"])
    found = by_label(annotations)
    for name, value in expected_fields(spec).items():
        shown = found[name]["normalized"]
        if isinstance(value, Decimal):
            assert Decimal(shown) == value, name
        else:
            assert shown == (value.isoformat() if hasattr(value, "isoformat") else value), name
    text = doc["text"]
    height = doc["pages"][0]["original_size"][1]
    for ann in annotations:
        span = ann["span"][0]
        if span["end_offset"]:
            assert text[span["start_offset"] : span["end_offset"]] == ann["offset_string"]
        if span["x0"] is not None:
            assert span["y0"] < span["y1"] <= height, "points from the bottom-left"
            assert span["top"] == pytest.approx(height - span["y1"], abs=0.01)
    line_sets = [s for s in doc["annotation_sets"] if s["label_set"]["id"] == 3]
    assert len(line_sets) == len(spec.lines)
    assert all(s["id"] is not None for s in doc["annotation_sets"])
    assert all(not a["revised"] and not a["is_correct"] for a in annotations)


def test_unreadable_file_ends_in_111_with_a_reason():
    with receiver() as (url, received, _):
        with emulator() as emu:
            doc = emu.upload(encrypted_pdf_bytes(random_spec(4)), callback_url=url)
            failed = emu.done(doc["id"], 111)
            assert "password" in failed["status_reason"]
            assert failed["annotation_sets"] == [] and emu.annotations(doc["id"]) == []
            assert emu.state.dispatcher.pending == 0 and received == [], "no callback on failure"
        with emulator(callback_on_failure=True) as emu:
            doc = emu.upload(encrypted_pdf_bytes(random_spec(4)), callback_url=url)
            wait_for(lambda: received)
            assert received[0]["body"]["status_data"] == 111


# --------------------------------------------------------------------------- lists


def test_pagination_fields_and_ordering():
    with emulator() as emu:
        ids = [emu.upload(invoice(10 + i), name=f"doc{i}.pdf")["id"] for i in range(5)]
        first = emu.http.get("documents/", params={"project": 1, "limit": 2}).json()
        assert first["count"] == 5 and [d["id"] for d in first["results"]] == ids[:2]
        assert first["previous"] is None
        assert first["next"].startswith(emu.root) and "offset=2" in first["next"]
        assert "project=1" in first["next"], "other parameters are kept"
        seen, url = [], f"{emu.root}/api/v3/documents/?limit=2"
        while url:
            page = emu.http.get(url).json()
            seen += [d["id"] for d in page["results"]]
            url = page["next"]
        assert seen == ids
        last = emu.http.get("documents/", params={"limit": 2, "offset": 4}).json()
        assert "offset=2" in last["previous"] and last["next"] is None
        second = emu.http.get("documents/", params={"limit": 2, "offset": 2}).json()
        assert "offset" not in second["previous"], "DRF drops offset=0 from previous"

        newest = emu.http.get("documents/", params={"ordering": "-id", "fields": "id,status_data"})
        assert newest.json()["results"][0] == {"id": ids[-1], "status_data": 2}
        by_name = emu.http.get("documents/", params={"ordering": "-data_file_name", "fields": "id"})
        assert [d["id"] for d in by_name.json()["results"]] == ids[::-1]
        assert emu.http.get("documents/", params={"ordering": "nonsense"}).json()["count"] == 5
        assert emu.http.get("documents/", params={"limit": 5000}).json()["count"] == 5
        one = emu.document(ids[0], fields="id,pages.number")
        assert one == {"id": ids[0], "pages": [{"number": 1}]}
        labels = emu.http.get("annotations/", params={"document": ids[0], "ordering": "-id"})
        shown = [a["id"] for a in labels.json()["results"]]
        assert shown == sorted(shown, reverse=True)


# --------------------------------------------------------------------------- review


def test_feedback_human_annotations_missing_annotations_and_the_review_guard():
    with emulator() as emu:
        doc_id = emu.done(emu.upload(invoice(6))["id"])["id"]
        annotations = emu.annotations(doc_id)
        found = by_label(annotations)
        accept = emu.http.patch(
            f"annotations/{found['invoice_number']['id']}/",
            json={"revised": True, "is_correct": True},
        )
        assert accept.status_code == 200 and accept.json()["revised_by"] == USER
        decline = emu.http.patch(
            f"annotations/{found['customer_name']['id']}/",
            json={"revised": True, "is_correct": False},
        )
        assert decline.json()["is_correct"] is False
        stored = emu.state.annotations[found["invoice_number"]["id"]]
        assert stored.revised and stored.is_correct, "the change is stored at the emulator"

        refused = emu.http.patch(f"documents/{doc_id}/", json={"is_reviewed": True})
        assert refused.status_code == 400 and "need feedback" in refused.json()["is_reviewed"][0]

        # A person marks the customer's name where it really is (the supplier's box, say).
        box = {
            k: found["customer_name"]["span"][0][k] for k in ("page_index", "x0", "x1", "y0", "y1")
        }
        own_set = found["invoice_number"]["annotation_set"]
        neither = emu.http.post(
            "annotations/", json={"document": doc_id, "label": 13, "span": [box]}
        )
        assert neither.status_code == 400 and "annotation_set or label_set" in neither.text
        created = emu.http.post(
            "annotations/",
            json={
                "document": doc_id,
                "label": 13,
                "label_set": 1,
                "span": [box],
                "is_revised": True,
            },
        )
        assert created.status_code == 201, created.text
        human = created.json()
        assert human["annotation_set"] == own_set, "a single-set label set reuses its set"
        assert human["offset_string"] == found["customer_name"]["offset_string"]
        assert human["revised"] and human["is_correct"] and human["origin"] == "api.v3"
        line = emu.http.post(
            "annotations/",
            json={"document": doc_id, "label": 19, "label_set": 3, "span": [box], "revised": True},
        )
        assert line.status_code == 201 and line.json()["annotation_set"] not in (
            a["annotation_set"] for a in annotations
        ), "a label set with several sets gets a new one"
        assert emu.http.delete(f"annotations/{line.json()['id']}/").status_code == 204
        assert emu.http.get(f"annotations/{line.json()['id']}/").status_code == 404

        # Accept the rest, mark every unfilled label as missing, then the document is reviewed.
        for ann in emu.annotations(doc_id):
            if not ann["revised"]:
                emu.http.patch(
                    f"annotations/{ann['id']}/", json={"revised": True, "is_correct": True}
                )
        detail = emu.document(doc_id)
        missing_ids = []
        for annotation_set in detail["annotation_sets"]:
            for label in annotation_set["labels"]:
                if any(a["is_correct"] for a in label["annotations"]):
                    continue
                body = {
                    "document": doc_id,
                    "label": label["id"],
                    "label_set": annotation_set["label_set"]["id"],
                    "annotation_set": annotation_set["id"],
                }
                response = emu.http.post("missing-annotations/", json=body)
                assert response.status_code == 201, response.text
                missing_ids.append(response.json()["id"])
        again = emu.http.post("missing-annotations/", json=body)
        assert again.status_code == 400, "one missing annotation per label and set"
        listed = emu.http.get("missing-annotations/", params={"document": doc_id}).json()
        assert listed["count"] == len(missing_ids) > 0
        assert emu.http.delete(f"missing-annotations/{missing_ids[-1]}/").status_code == 204
        assert emu.http.patch(f"documents/{doc_id}/", json={"is_reviewed": True}).status_code == 400
        emu.http.post("missing-annotations/", json=body)
        reviewed = emu.http.patch(f"documents/{doc_id}/", json={"is_reviewed": True})
        assert reviewed.status_code == 200 and reviewed.json()["is_reviewed"] is True


def test_potential_annotation_sets_have_no_id():
    with emulator() as emu:
        doc_id = emu.done(emu.upload(invoice(7))["id"])["id"]
        for ann in emu.annotations(doc_id):
            if ann["label_set"]["id"] == 3:
                emu.http.delete(f"annotations/{ann['id']}/")
        with emu.state.lock:
            doc = emu.state.documents[doc_id]
            doc.annotation_set_ids = [
                s for s in doc.annotation_set_ids if emu.state.annotation_sets[s].label_set_id != 3
            ]
        sets = emu.document(doc_id)["annotation_sets"]
        potential = [s for s in sets if s["id"] is None]
        assert [s["label_set"]["id"] for s in potential] == [3]
        assert all(label["annotations"] == [] for label in potential[0]["labels"])


# --------------------------------------------------------------------------- 41 and postprocess


def test_split_rate_sends_documents_through_41_and_postprocess_splits_them():
    first, second = random_spec(21), random_spec(22)
    pdf = joined_pdf(render_pdf(first), render_pdf(second))
    with receiver() as (url, received, _):
        with emulator(split_rate=1.0) as emu:
            doc = emu.done(emu.upload(pdf, name="batch.pdf", callback_url=url)["id"], 41)
            proposal = doc["proposed_split"]
            assert [len(p["pages"]) for p in proposal] == [1, 1]
            assert [p["pages"][0]["id"] for p in proposal] == [p["id"] for p in doc["pages"]]
            assert doc["annotation_sets"] == [] and received == [], "nothing before the split"
            response = emu.http.post(f"documents/{doc['id']}/postprocess/", json=proposal)
            assert response.status_code == 200, response.text
            parts = response.json()
            assert parts[0]["id"] == doc["id"] and len(parts) == 2
            assert parts[0]["document_set"] == parts[1]["document_set"] is not None
            numbers = []
            for part in parts:
                done = emu.done(part["id"])
                assert done["number_of_pages"] == 1 and done["split_is_revised"]
                numbers.append(
                    by_label(emu.annotations(part["id"]))["invoice_number"]["normalized"]
                )
                pdf_part = emu.http.get(f"{emu.root}/doc/show/{part['id']}/")
                assert pdf_part.content.startswith(b"%PDF") and pdf_part.content != pdf
            assert numbers == [first.invoice_number, second.invoice_number]
            document_set = emu.http.get(f"document-sets/{parts[0]['document_set']}/").json()
            assert document_set["original_number_of_pages"] == 2
            assert [d["id"] for d in document_set["documents"]] == [p["id"] for p in parts]
            wait_for(lambda: len(received) == 2)
            assert {r["body"]["id"] for r in received} == {p["id"] for p in parts}

            other_page = emu.document(parts[1]["id"])["pages"][0]["id"]
            stolen = [{"pages": [{"id": other_page}]}]
            bad = emu.http.post(f"documents/{parts[0]['id']}/postprocess/", json=stolen)
            assert bad.status_code == 400, "a page of another document"


def test_admin_split_rejection_force_status_and_category_change():
    with emulator() as emu:
        doc_id = emu.done(emu.upload(invoice(9))["id"])["id"]
        waiting = emu.admin(f"documents/{doc_id}/split", {}).json()
        assert waiting["status_data"] == 41 and len(waiting["proposed_split"]) == 1
        assert emu.annotations(doc_id) == []
        page_ids = [p["id"] for p in emu.document(doc_id)["pages"]]
        keep = [{"name": "kept.pdf", "pages": [{"id": p, "angle": 0} for p in page_ids]}]
        result = emu.http.post(f"documents/{doc_id}/postprocess/", json=keep).json()
        assert [d["id"] for d in result] == [doc_id], "one document with every page: no split"
        done = emu.done(doc_id)
        assert done["data_file_name"] == "kept.pdf" and done["document_set"] is None

        emu.admin(f"documents/{doc_id}/split", {})
        finished = emu.admin(f"documents/{doc_id}/finish-split", {}).json()["results"]
        assert [d["id"] for d in finished] == [doc_id]
        emu.done(doc_id)

        failed = emu.admin(f"documents/{doc_id}/status", {"status_data": 111, "reason": "broken"})
        assert (
            failed.json()["status_data"] == 111
            and emu.document(doc_id)["status_reason"] == "broken"
        )
        assert emu.admin(f"documents/{doc_id}/status", {"status_data": 5}).status_code == 400
        emu.admin(f"documents/{doc_id}/status", {"status_data": 2})
        assert emu.done(doc_id)["status_reason"] is None and emu.annotations(doc_id)

        changed = emu.admin(f"documents/{doc_id}/category", {"category": 2}).json()
        assert changed["category"] == 2
        again = emu.done(doc_id)
        assert again["category_is_revised"] and again["annotation_sets"][0]["label_set"]["id"] == 2
        listing = emu.admin("documents").json()["results"]
        assert listing[0]["id"] == doc_id and listing[0]["status"] == "Done"
        assert emu.admin("stats").json()["documents"]["Done"] == 1


# --------------------------------------------------------------------------- callbacks


def test_callbacks_on_success_repeated_after_a_category_change():
    with receiver() as (url, received, statuses):
        with emulator() as emu:
            doc = emu.upload(invoice(11), callback_url=f"{url}?docrelay_document_id=42")
            wait_for(lambda: received)
            payload = received[0]["body"]
            assert payload["id"] == doc["id"] and payload["status_data"] == 2
            assert payload["annotation_sets"] and payload["data_file_name"] == "invoice.pdf"
            assert not any("signature" in h for h in received[0]["headers"]), "unsigned"
            assert wait_for(lambda: emu.document(doc["id"])["callback_status_code"] == 200)

            statuses[0] = 503
            patched = emu.http.patch(f"documents/{doc['id']}/", json={"category": 2})
            assert patched.status_code == 200 and patched.json()["category"] == 2
            wait_for(lambda: len(received) == 3)  # first attempt and one retry, both 503
            wait_for(lambda: emu.document(doc["id"])["callback_status_code"] == 503)
            assert received[1]["body"]["category"] == 2
            attempts = emu.admin("callbacks").json()["attempts"]
            assert [(a["document"], a["status_code"], a["outcome"]) for a in attempts] == [
                (doc["id"], 200, "delivered"),
                (doc["id"], 503, "retrying"),
                (doc["id"], 503, "retrying"),
                (doc["id"], 503, "failed"),
            ][: len(attempts)]
            wait_for(lambda: len(emu.admin("callbacks").json()["attempts"]) == 4)

            record = emu.state.requests.entries(method="POST", path="/api/v3/documents")[0]
            assert record.attributes["document"] == doc["id"]
            assert record.attributes["document_id"] == 42
            assert record.attributes["data_file_name"] == "invoice.pdf"


# --------------------------------------------------------------------------- faults


@pytest.mark.parametrize(("kind", "processed"), [("503", False), ("500_after", True)])
def test_faulted_upload_is_processed_fully_or_not_at_all(kind, processed):
    with emulator() as emu:
        emu.state.faults.schedule(kind, method="POST", path="/api/v3/documents")
        response = emu.http.post(
            "documents/", data={"project": "1"}, files={"data_file": ("a.pdf", invoice(), "x")}
        )
        assert response.status_code in (500, 503)
        assert len(emu.state.documents) == (1 if processed else 0)
        record = emu.state.requests.entries(method="POST", path="/api/v3/documents")[0]
        assert record.fault == kind
        assert emu.http.get("projects/").is_success, "only the scheduled request failed"


def test_fault_settings_over_http():
    with emulator() as emu:
        response = emu.admin("faults", {"fail_rate": 1.0, "fault_mix": "502"})
        assert response.json()["fail_rate"] == 1.0
        assert emu.http.get("projects/").status_code == 502
        emu.admin("faults", {"fail_rate": 0})
        assert emu.http.get("projects/").is_success
        assert emu.admin("stats").json()["faults"] == {"502": 1}


# --------------------------------------------------------------------------- command line


def test_cli_options():
    parser = runner.build_parser(emulator_cli.KonfuzioEmulator())
    args = parser.parse_args(["--delay", "0.5", "--split-rate", "0.3", "--fail-rate", "0.1"])
    options = emulator_cli.options_from(args)
    assert (args.host, args.port) == ("127.0.0.1", 8765)
    assert options.delay == 0.5 and options.split_rate == 0.3 and options.fail_rate == 0.1
    assert not options.callback_on_failure and options.rate_limit == 0
    with pytest.raises(SystemExit):
        emulator_cli.options_from(parser.parse_args(["--split-rate", "2"]))


def test_docrelay_emulate_konfuzio_serves_and_prints_its_account(tmp_path: Path):
    port = free_port()
    docrelay = Path(sys.executable).with_name("docrelay")
    command = [str(docrelay), "emulate", "konfuzio", "--port", str(port), "--delay", "0"]
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
            assert banner[0].strip() == f"Konfuzio API emulator at http://127.0.0.1:{port}/api/v3"
            assert "user@example.com / secret" in banner[1]
            root = f"http://127.0.0.1:{port}"
            key = wait_for(lambda: _try_token(root))
            headers = {"Authorization": f"Token {key}"}
            assert httpx.get(f"{root}/api/v3/projects/1/", headers=headers).json()["id"] == 1
        finally:
            process.send_signal(signal.SIGINT)
            try:
                process.communicate(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.communicate()


def _try_token(root: str) -> str | None:
    try:
        return token(root)
    except httpx.TransportError:
        return None
