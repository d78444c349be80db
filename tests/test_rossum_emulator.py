"""The Rossum API emulator under real uvicorn: raw HTTP against the documented protocol, fault
injection, throttling, signed webhooks, and the official ``rossum-api`` SDK as an independent
client."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import re
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any
from xml.etree import ElementTree as ET

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from connectors.emulation import runner
from connectors.emulation.clock import ManualClock
from connectors.vendors.rossum import emulator_cli
from connectors.vendors.rossum.emulator import EmulatorOptions, create_app
from connectors.vendors.rossum.emulator_state import EmulatorState
from connectors.vendors.rossum.schema import FIELD_MAP
from tests.invoices import (
    encrypted_pdf_bytes,
    expected_fields,
    random_spec,
    render_pdf,
    truncated_pdf_bytes,
)
from tests.servers import serve

USER, PASSWORD = "user@example.com", "secret"
FAST: dict[str, Any] = {
    "delay": 0.1,
    "rate_limit": 0,
    "hook_retry_delays": (0.1, 0.2, 0.3, 0.4),
    "hook_poll_interval": 0.1,
}


@dataclass
class Emu:
    state: EmulatorState
    root: str
    """``http://127.0.0.1:port``"""
    api: str
    """``…/api/v1``"""
    http: httpx.Client

    def login(self) -> str:
        response = self.http.post("auth/login", json={"username": USER, "password": PASSWORD})
        assert response.status_code == 200, response.text
        key = response.json()["key"]
        self.http.headers["Authorization"] = f"Bearer {key}"
        return key

    def upload(
        self, data: bytes, name: str = "invoice.pdf", metadata: dict[str, Any] | None = None
    ) -> httpx.Response:
        form = {"metadata": json.dumps(metadata)} if metadata is not None else None
        return self.http.post(
            "uploads", params={"queue": 1}, files={"content": (name, data)}, data=form
        )

    def annotation_of(self, response: httpx.Response) -> dict[str, Any]:
        """The annotation an upload response created, once its task has succeeded."""
        task_url = response.json()["url"]

        def succeeded() -> dict[str, Any] | None:
            task = self.http.get(task_url, params={"no_redirect": "true"}).json()
            return task if task["status"] == "succeeded" else None

        task = wait_for(succeeded)
        upload = self.http.get(task["content"]["upload"]).json()
        return self.http.get(upload["annotations"][0]).json()

    def wait_status(self, annotation_url: str, *statuses: str) -> dict[str, Any]:
        def reached() -> dict[str, Any] | None:
            annotation = self.http.get(annotation_url).json()
            return annotation if annotation["status"] in statuses else None

        return wait_for(reached)


@contextmanager
def emulator(**options: Any) -> Iterator[Emu]:
    app = create_app(EmulatorOptions(**{**FAST, **options}))
    with serve(app) as root, httpx.Client(base_url=f"{root}/api/v1/", timeout=20) as http:
        yield Emu(app.state.emulator, root, f"{root}/api/v1", http)


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


def first_with(response: httpx.Response, status: int) -> httpx.Response | None:
    return response if response.status_code == status else None


def invoice(seed: int = 1, lang: str = "en") -> bytes:
    return render_pdf(random_spec(seed, lang), lang)  # type: ignore[arg-type]


def datapoints(tree: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for node in tree:
        if node["category"] == "datapoint":
            yield node
        yield from datapoints(node.get("children") or [])


def by_schema_id(tree: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Document-level datapoints (not table cells) by schema id."""
    return {
        child["schema_id"]: child
        for section in tree
        for child in section["children"]
        if child["category"] == "datapoint"
    }


def line_items(tree: list[dict[str, Any]]) -> list[dict[str, dict[str, Any]]]:
    table = next(
        child
        for section in tree
        for child in section["children"]
        if child["schema_id"] == "line_items"
    )
    return [{c["schema_id"]: c for c in row["children"]} for row in table["children"]]


# --------------------------------------------------------------------------- auth


def test_login_logout_and_auth_errors():
    with emulator() as emu:
        bad = emu.http.post("auth/login", json={"username": USER, "password": "wrong"})
        assert bad.status_code == 401
        assert emu.http.get("queues/1").status_code == 401
        assert emu.http.get("queues/1").json() == {
            "detail": "Authentication credentials were not provided."
        }
        invalid = emu.http.get("queues/1", headers={"Authorization": "Bearer " + "x" * 40})
        assert (invalid.status_code, invalid.json()) == (401, {"detail": "Invalid token."})

        # the SDK logs in with a form, curl users with JSON; both work
        form = emu.http.post("auth/login", data={"username": USER, "password": PASSWORD})
        assert form.status_code == 200
        key = emu.login()
        assert re.fullmatch(r"[a-z0-9]{40}", key)
        assert emu.login() != key
        assert emu.http.get("auth/user").json()["username"] == USER
        old = {"Authorization": f"Token {key}"}  # the legacy scheme is accepted too
        assert emu.http.get("queues/1", headers=old).status_code == 200

        assert emu.http.get("nothing/here").status_code == 404
        assert emu.http.get("nothing/here").json() == {"detail": "Not found."}
        wrong_type = emu.http.post(
            "hooks", content=b"name=x", headers={"Content-Type": "text/plain"}
        )
        assert wrong_type.status_code == 400 and "application/json" in wrong_type.json()["detail"]

        assert emu.http.post("auth/logout").json() == {"detail": "Successfully logged out."}
        assert emu.http.get("queues/1").status_code == 401


def test_token_expiry_and_max_lifetime():
    with emulator(token_lifetime=0.3) as emu:
        emu.login()
        assert emu.http.get("queues/1").status_code == 200
        expired = wait_for(lambda: first_with(emu.http.get("queues/1"), 401))
        assert expired.json() == {"detail": "Invalid token."}
        emu.login()  # re-login is the documented cure
        assert emu.http.get("queues/1").status_code == 200
        short = emu.http.post(
            "auth/login",
            json={"username": USER, "password": PASSWORD, "max_token_lifetime_s": 0},
        ).json()["key"]
        assert (
            emu.http.get("queues/1", headers={"Authorization": f"Bearer {short}"}).status_code
            == 401
        )


def test_manual_clock_drives_import_delay_and_token_expiry():
    """On the kit's ManualClock the emulator's time moves only when the test says so."""
    clock = ManualClock()
    app = create_app(EmulatorOptions(**{**FAST, "delay": 30.0, "token_lifetime": 600}), clock=clock)
    with serve(app) as root, httpx.Client(base_url=f"{root}/api/v1/", timeout=20) as http:
        emu = Emu(app.state.emulator, root, f"{root}/api/v1", http)
        emu.login()
        upload = emu.upload(invoice(1), metadata={"docrelay_document_id": "c1"})
        clock.advance(0.25)  # the upload task succeeds
        annotation = emu.annotation_of(upload)
        assert annotation["status"] == "importing"
        clock.advance(29.75)
        assert http.get(annotation["url"]).json()["status"] == "to_review"
        clock.advance(600)
        assert http.get("queues/1").status_code == 401  # the token ran out
    [record] = app.state.requests.entries(method="POST", path="/api/v1/uploads")
    assert record.attributes["document_id"] == "c1"
    assert record.attributes["annotations"] == [annotation["id"]]


def test_fixed_objects_link_by_absolute_urls():
    with emulator() as emu:
        emu.login()
        queue = emu.http.get("queues/1").json()
        assert queue["schema"] == f"{emu.api}/schemas/1"
        assert queue["workspace"] == f"{emu.api}/workspaces/1"
        assert queue["inbox"] is None and queue["status"] == "active"
        assert set(queue["counts"]) >= {"importing", "to_review", "exported", "failed_export"}
        schema = emu.http.get(queue["schema"]).json()
        assert schema["content"][0]["category"] == "section"
        organization = emu.http.get("organizations").json()
        assert organization["pagination"]["total"] == 1
        assert organization["results"][0]["workspaces"] == [f"{emu.api}/workspaces/1"]
        assert emu.http.get("workspaces/1").json()["queues"] == [f"{emu.api}/queues/1"]
        assert emu.http.get("users/1").json()["username"] == USER
        assert emu.http.get("queues/2").status_code == 404


# --------------------------------------------------------------------------- import


def test_upload_task_upload_annotation_flow_with_metadata():
    with emulator(delay=3.0) as emu:  # long enough to see `importing` on a busy machine
        emu.login()
        data = invoice(3)
        response = emu.upload(data, "März 🎁.pdf", {"docrelay_document_id": "doc-17"})
        assert response.status_code == 202
        task_url = response.json()["url"]
        assert re.fullmatch(rf"{re.escape(emu.api)}/tasks/\d+", task_url)
        assert response.headers["Location"] == task_url

        task = emu.http.get(task_url, params={"no_redirect": "true"}).json()
        assert task["type"] == "upload_created" and task["status"] in ("running", "succeeded")
        redirect = wait_for(lambda: first_with(emu.http.get(task_url), 303))
        upload = emu.http.get(redirect.headers["Location"]).json()
        assert upload["queue"] == f"{emu.api}/queues/1"
        [document_url] = upload["documents"]
        [annotation_url] = upload["annotations"]

        annotation = emu.http.get(annotation_url).json()
        assert annotation["status"] == "importing"  # the engine needs `delay` seconds
        assert annotation["metadata"] == {"docrelay_document_id": "doc-17"}
        assert annotation["document"] == document_url
        document = emu.http.get(document_url).json()
        assert document["original_file_name"] == "März 🎁.pdf"
        assert document["mime_type"] == "application/pdf"
        assert document["annotations"] == [annotation_url]
        assert emu.http.get(document["content"]).content == data

        # find it again by the client's own id, as after a lost response
        found = emu.http.get("annotations", params={"metadata__docrelay_document_id": "doc-17"})
        assert [a["url"] for a in found.json()["results"]] == [annotation_url]
        assert (
            emu.http.get("annotations", params={"metadata__docrelay_document_id": "x"}).json()[
                "pagination"
            ]["total"]
            == 0
        )

        done = emu.wait_status(annotation_url, "to_review")
        assert done["pages"] and done["messages"] == []
        [recorded] = emu.state.uploads
        assert recorded["queue"] == 1 and recorded["filename"] == "März 🎁.pdf"
        assert recorded["sha256"] == hashlib.sha256(data).hexdigest()
        assert recorded["metadata"] == {"docrelay_document_id": "doc-17"}

        # a raw body with Content-Disposition is the other documented upload form
        raw = emu.http.post(
            "uploads",
            params={"queue": 1},
            content=invoice(4),
            headers={"Content-Disposition": "attachment; filename*=utf-8''raw%20file.pdf"},
        )
        assert raw.status_code == 202
        assert emu.annotation_of(raw)["status"] in ("importing", "to_review")
        assert emu.state.uploads[-1]["filename"] == "raw file.pdf"


def test_status_reaches_to_review_with_zero_delay():
    with emulator(delay=0) as emu:
        emu.login()
        annotation = emu.annotation_of(emu.upload(invoice(5)))
        assert emu.wait_status(annotation["url"], "to_review")["status"] == "to_review"


@pytest.mark.parametrize(("seed", "lang"), [(1, "en"), (2, "de"), (7, "en")])
def test_content_tree_has_the_invoice_values(seed, lang):
    spec = random_spec(seed, lang)
    with emulator(delay=0) as emu:
        emu.login()
        annotation = emu.annotation_of(emu.upload(render_pdf(spec, lang)))
        emu.wait_status(annotation["url"], "to_review")
        tree = emu.http.get(annotation["content"]).json()["content"]

    points = by_schema_id(tree)
    canonical_to_schema: dict[str, str] = {}
    for schema_id, canonical in FIELD_MAP.items():
        if schema_id in points:
            canonical_to_schema.setdefault(canonical, schema_id)
    for name, expected in expected_fields(spec).items():
        node = points[canonical_to_schema[name]]
        got = node["content"]["normalized_value"]
        if name == "document_type":
            expected = {"invoice": "tax_invoice"}.get(str(expected), expected)
        if name == "currency":
            expected = str(expected).lower()
        assert got == str(expected), name
        assert node["content"]["page"] == 1 and node["content"]["rir_confidence"] is not None
    number = points["document_id"]
    assert isinstance(number["id"], int)
    assert number["url"] == f"{annotation['url']}/content/{number['id']}"
    assert number["content"]["value"] == spec.invoice_number
    assert number["validation_sources"] == ["score"]
    # value keeps the text as printed, normalized_value is ISO
    assert points["date_issue"]["content"]["normalized_value"] == spec.issue_date.isoformat()

    rows = line_items(tree)
    assert len(rows) == len(spec.lines)
    for index, (row, (description, quantity, price, _rate)) in enumerate(
        zip(rows, spec.lines, strict=True)
    ):
        assert row["item_description"]["content"]["value"] == description
        assert Decimal(row["item_quantity"]["content"]["normalized_value"]) == quantity
        assert Decimal(row["item_amount_base"]["content"]["normalized_value"]) == price
        total = row["item_total_base"]["content"]["normalized_value"]
        assert Decimal(total) == spec.line_total(index)


@pytest.mark.parametrize(
    ("name", "data", "reason"),
    [
        ("garbage.pdf", b"%PDF-1.4\nnot really a pdf\n%%EOF\n", "unreadable"),
        ("notes.bin", b"\x00\x01 binary junk", "Unsupported file type"),
        ("locked.pdf", encrypted_pdf_bytes(random_spec(1)), "password"),
        ("half.pdf", truncated_pdf_bytes(random_spec(1)), "truncated"),
    ],
    ids=["garbage", "binary", "locked", "truncated"],  # the PDFs' bytes differ per process
)
def test_unreadable_files_fail_import_with_a_message(name, data, reason):
    with emulator(delay=0) as emu:
        emu.login()
        annotation = emu.annotation_of(emu.upload(data, name))
        failed = emu.wait_status(annotation["url"], "failed_import", "to_review")
        assert failed["status"] == "failed_import"
        assert reason in failed["messages"][0]["content"]
        assert failed["messages"][0]["type"] == "error"


def test_pagination_over_more_than_one_page():
    with emulator(delay=0) as emu:
        emu.login()
        files = [("content", (f"inv-{i}.pdf", invoice(i))) for i in range(23)]
        response = emu.http.post("uploads", params={"queue": 1}, files=files)
        assert response.status_code == 202
        assert len(emu.state.uploads[0]["annotations"]) == 23

        first = emu.http.get("annotations", params={"ordering": "-id"}).json()
        assert first["pagination"]["total"] == 23
        assert first["pagination"]["total_pages"] == 2
        assert len(first["results"]) == 20 and first["pagination"]["previous"] is None
        assert first["pagination"]["next"].startswith(f"{emu.api}/annotations?")
        second = emu.http.get(first["pagination"]["next"]).json()
        assert len(second["results"]) == 3 and second["pagination"]["next"] is None
        assert second["pagination"]["previous"]
        ids = [a["id"] for a in first["results"] + second["results"]]
        assert ids == sorted(ids, reverse=True) and len(set(ids)) == 23

        capped = emu.http.get("annotations", params={"page_size": 1000}).json()
        assert len(capped["results"]) == 23  # max 100 per page
        assert emu.http.get("annotations", params={"page": 9}).status_code == 404
        small = emu.http.get("annotations", params={"page_size": 5, "fields": "id,url"}).json()
        assert small["pagination"]["total_pages"] == 5
        assert set(small["results"][0]) == {"id", "url"}
        sideloaded = emu.http.get(
            "annotations",
            params={
                "page_size": 2,
                "sideload": "content,documents",
                "content.schema_id": "document_id",
            },
        ).json()
        assert len(sideloaded["documents"]) == 2 and len(sideloaded["content"]) == 2


# --------------------------------------------------------------------------- review and export


def operate(emu: Emu, url: str, *operations: dict[str, Any], **params: str) -> httpx.Response:
    return emu.http.post(
        f"{url}/content/operations", params=params, json={"operations": list(operations)}
    )


def test_content_operations_are_checked_and_all_or_nothing():
    with emulator(delay=0) as emu:
        emu.login()
        url = emu.annotation_of(emu.upload(invoice(1)))["url"]
        emu.wait_status(url, "to_review")
        tree = emu.http.get(f"{url}/content").json()["content"]
        total = by_schema_id(tree)["amount_total"]
        replace = {
            "op": "replace",
            "id": str(total["id"]),
            "value": {"content": {"value": "1.234,50"}},
        }

        assert operate(emu, url, replace).status_code == 409  # not started
        assert emu.http.post(f"{url}/start").json() == {
            "annotation": url,
            "session_timeout": "01:00:00",
        }
        unknown = operate(emu, url, replace, {"op": "replace", "id": 999999, "value": {}})
        assert unknown.status_code == 400 and "999999" in unknown.json()["operations"][0]
        cell = line_items(tree)[0]["item_description"]["id"]
        assert operate(emu, url, {"op": "remove", "id": cell}).status_code == 400  # not a row
        after = by_schema_id(emu.http.get(f"{url}/content").json()["content"])
        assert after["amount_total"]["content"] == total["content"]  # nothing applied

        table = next(c["id"] for s in tree for c in s["children"] if c["schema_id"] == "line_items")
        rows_before = len(line_items(tree))
        add = {
            "op": "add",
            "id": table,
            "value": [{"schema_id": "item_description", "content": {"value": "Bottle"}}],
        }
        changed = operate(emu, url, replace, add)
        assert changed.status_code == 200
        answer = changed.json()["content"]  # only what changed, and the changed table
        assert set(by_schema_id(answer)) == {"amount_total"}
        new_total = by_schema_id(answer)["amount_total"]
        assert new_total["content"]["value"] == "1.234,50"
        assert new_total["content"]["normalized_value"] == "1234.50"
        assert "human" in new_total["validation_sources"]
        rows = line_items(answer)
        assert len(rows) == rows_before + 1
        assert rows[-1]["item_description"]["content"]["value"] == "Bottle"

        first_row = next(
            c for s in answer for c in s["children"] if c["schema_id"] == "line_items"
        )["children"][0]["id"]
        removed = operate(emu, url, {"op": "remove", "id": first_row}, full_response="true")
        assert len(line_items(removed.json()["content"])) == rows_before
        assert len(by_schema_id(removed.json()["content"])) > 1  # the whole tree

        mismatch = {"content": {"value": "5", "normalized_value": "6"}}
        operate(emu, url, {"op": "replace", "id": total["id"], "value": mismatch})
        kept = by_schema_id(emu.http.get(f"{url}/content").json()["content"])["amount_total"]
        assert kept["content"]["value"] == "1.234,50"  # value and normalized_value must match


def test_confirm_and_export_formats():
    with emulator(delay=0) as emu:
        emu.login()
        url = emu.annotation_of(emu.upload(invoice(1), metadata={"k": "v"}))["url"]
        emu.wait_status(url, "to_review")
        assert emu.http.post(f"{url}/confirm").status_code == 409  # start first
        emu.http.post(f"{url}/start")
        tree = emu.http.get(f"{url}/content").json()["content"]
        total_id = by_schema_id(tree)["amount_total"]["id"]
        operate(
            emu, url, {"op": "replace", "id": total_id, "value": {"content": {"value": "1.234,50"}}}
        )
        assert emu.http.post(f"{url}/confirm").status_code == 204
        exported = emu.http.get(url).json()
        assert exported["status"] == "exported" and exported["exported_at"]
        rows = len(line_items(tree))

        export = emu.http.get("queues/1/export", params={"format": "json", "status": "exported"})
        [result] = export.json()["results"]
        assert result["url"] == url and result["document"]["file_name"] == "invoice.pdf"
        assert result["schema"] == {"url": f"{emu.api}/schemas/1"}
        assert result["metadata"] == {"k": "v"}
        flat = {n["schema_id"]: n for n in datapoints(result["content"]) if "value" in n}
        assert flat["amount_total"]["value"] == "1234.50" and "id" not in flat["amount_total"]

        columns = "meta_file_name,document_id,amount_total,item_description"
        csv_text = emu.http.get(
            "queues/1/export", params={"format": "csv", "columns": columns}
        ).text
        lines = csv_text.splitlines()
        assert lines[0] == "meta_file_name,Invoice number,Total amount,Description"
        assert len(lines) == 1 + rows  # one line per table row
        assert lines[1].startswith("invoice.pdf,") and ",1234.50," in lines[1]

        xml = emu.http.get("queues/1/export", headers={"Accept": "application/xml"})
        assert xml.headers["content-type"].startswith("application/xml")
        root = ET.fromstring(xml.content)
        node = root.find(".//datapoint[@schema_id='amount_total']")
        assert node is not None and node.text == "1234.50"
        assert root.find("./pagination/total").text == "1"  # type: ignore[union-attr]
        assert root.find(".//multivalue[@schema_id='line_items']/tuple") is not None

        assert emu.http.get("queues/1/export", params={"to_status": "exported"}).status_code == 400


def test_confirmed_state_pull_export_and_status_patches():
    with emulator(delay=0) as emu:
        emu.login()
        assert emu.http.patch("queues/1", json={"use_confirmed_state": True}).json()[
            "use_confirmed_state"
        ]
        urls = []
        for seed in (1, 2, 3):
            annotation = emu.annotation_of(emu.upload(invoice(seed)))
            emu.wait_status(annotation["url"], "to_review")
            assert emu.http.post(f"{annotation['url']}/start").status_code == 200
            assert emu.http.post(f"{annotation['url']}/confirm").status_code == 204
            assert emu.http.get(annotation["url"]).json()["status"] == "confirmed"
            urls.append(annotation["url"])

        first_id = urls[0].rsplit("/", 1)[1]
        pulled = emu.http.post(
            "queues/1/export",
            params={
                "format": "json",
                "status": "confirmed",
                "id": first_id,
                "to_status": "exporting",
            },
        ).json()
        assert [r["status"] for r in pulled["results"]] == ["exporting"]
        assert emu.wait_status(urls[0], "exported")["exported_at"]

        failed = emu.http.patch(
            urls[1],
            json={
                "status": "failed_export",
                "messages": [{"type": "error", "content": "ERP down"}],
            },
        )
        assert failed.status_code == 200
        assert failed.json()["status"] == "failed_export"
        assert failed.json()["messages"] == [{"type": "error", "content": "ERP down"}]
        assert failed.json()["export_failed_at"]
        assert (
            emu.http.patch(urls[1], json={"status": "exported", "messages": []}).json()["status"]
            == "exported"
        )

        assert emu.http.patch(urls[2], json={"status": "purged"}).status_code == 400
        assert emu.http.patch(urls[2], json={"status": "reviewing"}).status_code == 400
        assert emu.http.patch(urls[2], json={"metadata": "x"}).status_code == 400
        back = emu.http.patch(urls[2], json={"status": "to_review"})
        assert back.json()["status"] == "to_review"
        assert emu.http.patch(urls[2], json={"status": "exported"}).status_code == 409
        assert emu.http.post(f"{urls[2]}/delete").status_code == 204
        assert emu.http.get(urls[2]).json()["status"] == "deleted"

        # the admin endpoint is how a test plays the person in the UI
        forced = httpx.post(
            f"{emu.root}/_emulator/annotations/{first_id}/status", json={"status": "to_review"}
        )
        assert forced.json()["status"] == "to_review"
        stats = httpx.get(f"{emu.root}/_emulator/stats").json()
        assert stats["uploads"] == 3
        assert stats["annotations"] == {"total": 3, "deleted": 1, "exported": 1, "to_review": 1}
        assert stats["requests"]["by_path"]["POST /api/v1/annotations/{id}/confirm"] == {"204": 3}


def test_search_by_metadata_and_field_values():
    with emulator(delay=0) as emu:
        emu.login()
        for seed in (1, 2):
            annotation = emu.annotation_of(emu.upload(invoice(seed), metadata={"n": seed}))
            emu.wait_status(annotation["url"], "to_review")
        spec = random_spec(2, "en")
        body = {"query": {"$and": [{"metadata.n": {"$eq": 2}}]}}
        found = emu.http.post("annotations/search", json=body).json()
        assert [r["metadata"] for r in found["results"]] == [{"n": 2}]
        by_field = {"query": {"$and": [{"field.document_id.string": {"$eq": spec.invoice_number}}]}}
        assert emu.http.post("annotations/search", json=by_field).json()["pagination"]["total"] == 1
        paged = emu.http.post(
            "annotations/search", params={"page_size": 1}, json={"query": {"status": "to_review"}}
        ).json()
        assert paged["pagination"]["total"] == 2 and "search_after=" in paged["pagination"]["next"]
        rest = emu.http.post(
            paged["pagination"]["next"], json={"query": {"status": "to_review"}}
        ).json()
        assert len(rest["results"]) == 1 and rest["results"][0]["id"] != paged["results"][0]["id"]
        changed = emu.http.post(paged["pagination"]["next"], json={"query": {"status": "exported"}})
        assert changed.status_code == 400  # the body must not change between pages


# --------------------------------------------------------------------------- throttling and faults


def test_rate_limit_answers_429_with_retry_after():
    with emulator(rate_limit=5) as emu:
        emu.login()
        answers = [emu.http.get("queues/1") for _ in range(15)]
        limited = [r for r in answers if r.status_code == 429]
        assert limited and len(limited) <= 11
        assert all(int(r.headers["Retry-After"]) >= 1 for r in limited)
        assert "throttled" in limited[0].json()["detail"]
        assert (
            httpx.get(f"{emu.root}/_emulator/stats").status_code == 200
        )  # admin is never throttled
        assert emu.state.stats()["throttled"] == len(limited)
        wait_for(lambda: first_with(emu.http.get("queues/1"), 200), timeout=3)  # refilled


@pytest.mark.parametrize(
    ("fault", "processed"),
    [("500", False), ("502", False), ("503", False), ("drop_before", False),
     ("500_after", True), ("drop_after", True), ("malformed", True)],
)  # fmt: skip
def test_faulted_upload_is_processed_fully_or_not_at_all(fault, processed):
    with emulator(delay=0, fail_rate=1.0, fault_mix=((fault, 1.0),)) as emu:
        emu.state.options.fail_rate = 0.0
        emu.login()
        emu.state.options.fail_rate = 1.0
        try:
            response = emu.upload(invoice(1), metadata={"docrelay_document_id": "d1"})
        except httpx.TransportError:
            assert fault.startswith("drop")
        else:
            assert not fault.startswith("drop")
            if fault == "malformed":
                assert response.status_code == 200
                with pytest.raises(ValueError):
                    response.json()
            else:
                assert response.status_code == int(fault[:3])
                assert "detail" in response.json()
        assert admin_uploads(emu) == (1 if processed else 0)
        emu.state.options.fail_rate = 0.0
        found = emu.http.get("annotations", params={"metadata__docrelay_document_id": "d1"})
        assert found.json()["pagination"]["total"] == (1 if processed else 0)
        if processed:  # the upload is whole: document, annotation, task
            annotation = emu.wait_status(found.json()["results"][0]["url"], "to_review")
            assert (
                emu.http.get(annotation["document"]).json()["original_file_name"] == "invoice.pdf"
            )


def admin_uploads(emu: Emu) -> int:
    return int(httpx.get(f"{emu.root}/_emulator/stats").json()["uploads"])


def test_fault_mix_and_slow_responses_keep_state_consistent():
    with emulator(
        delay=0, fail_rate=1.0, seed=7, fault_mix=(("503", 1), ("drop_before", 1))
    ) as emu:
        emu.state.options.fail_rate = 0.0
        emu.login()
        emu.state.options.fail_rate = 1.0
        outcomes = []
        for _ in range(6):
            try:
                outcomes.append(emu.http.get("queues/1").status_code)
            except httpx.TransportError:
                outcomes.append(0)
        assert set(outcomes) <= {503, 0} and len(set(outcomes)) == 2
        assert httpx.get(f"{emu.root}/_emulator/stats").json()["faults"] == {
            "503": outcomes.count(503),
            "drop_before": outcomes.count(0),
        }
        emu.state.options.fault_mix = (("slow", 1.0),)
        started = time.monotonic()
        assert emu.http.get("queues/1").status_code == 200
        assert time.monotonic() - started >= 2
        log = emu.state.request_log
        assert log[-1] == ("GET", "/api/v1/queues/1", 200)
        assert sum(1 for _, _, status in log if status == 0) == outcomes.count(0)


# --------------------------------------------------------------------------- webhooks


class Receiver:
    """A tiny webhook endpoint: records requests; answers from a script per action (e.g.
    ``{"export": [(500, {...})]}``), else 200 ``{}``."""

    def __init__(self) -> None:
        self.requests: list[tuple[dict[str, str], bytes]] = []
        self.script: dict[str, list[tuple[int, Any]]] = {}
        self.lock = threading.Lock()
        self.polls = 0

        async def hook(request: Request) -> Response:
            body = await request.body()
            action = json.loads(body)["action"]
            with self.lock:
                self.requests.append((dict(request.headers), body))
                queued = self.script.get(action) or [(200, {})]
                status, answer = queued.pop(0)
            if status == 202:
                return Response(status_code=202, headers={"Location": "/poll"})
            return JSONResponse(answer, status_code=status)

        async def poll(request: Request) -> Response:
            with self.lock:
                self.polls += 1
                if self.polls < 2:
                    return Response(status_code=200)
            return JSONResponse({"messages": []}, status_code=201)

        self.app = Starlette(
            routes=[Route("/hook", hook, methods=["POST"]), Route("/poll", poll, methods=["GET"])]
        )

    def payloads(self) -> list[dict[str, Any]]:
        with self.lock:
            return [json.loads(body) for _, body in self.requests]

    def events(self) -> list[str]:
        return [f"{p['event']}.{p['action']}" for p in self.payloads()]


def test_webhooks_are_signed_retried_and_drive_export():
    receiver = Receiver()
    receiver.script = {"initialize": [(500, {"detail": "busy"})]}  # fails once, then 200
    with (
        serve(receiver.app) as hook_root,
        emulator(
            delay=0.1,
            webhook_url=f"{hook_root}/hook",
            webhook_secret="s3cret",
            webhook_events=("annotation_status", "annotation_content"),
        ) as emu,
    ):
        emu.login()
        [hook] = emu.http.get("hooks").json()["results"]
        assert hook["config"]["url"] == f"{hook_root}/hook"
        assert set(hook["events"]) == {"annotation_status", "annotation_content"}

        annotation = emu.annotation_of(
            emu.upload(invoice(2), metadata={"docrelay_document_id": "w"})
        )
        url = annotation["url"]
        emu.wait_status(url, "to_review")
        wait_for(lambda: "annotation_status.changed" in receiver.events())

        for headers, body in receiver.requests:
            scheme, _, digest = headers["x-rossum-signature-sha256"].partition("=")
            expected = hmac.new(b"s3cret", body, hashlib.sha256).hexdigest()
            assert scheme == "sha256" and hmac.compare_digest(digest, expected)
        payloads = receiver.payloads()
        initialize = [p for p in payloads if p["action"] == "initialize"]
        assert len(initialize) == 2  # failed with 500, then retried ...
        assert initialize[0]["request_id"] == initialize[1]["request_id"]  # ... as the same request
        assert initialize[1]["annotation"]["content"][0]["category"] == "section"
        changed = next(p for p in payloads if p["event"] == "annotation_status")
        assert changed["annotation"]["previous_status"] == "importing"
        assert changed["annotation"]["status"] == "to_review"
        assert changed["annotation"]["metadata"] == {"docrelay_document_id": "w"}
        assert changed["document"]["original_file_name"] == "invoice.pdf"
        assert changed["hook"] == f"{emu.api}/hooks/{hook['id']}"

        # with an export hook, confirm goes through `exporting`; the hook's answer decides
        emu.http.post(f"{url}/start")
        emu.http.post(f"{url}/confirm")
        assert emu.wait_status(url, "exported")["status"] == "exported"
        assert "annotation_content.export" in receiver.events()

        second = emu.annotation_of(emu.upload(invoice(3)))
        emu.wait_status(second["url"], "to_review")
        error = {"messages": [{"type": "error", "content": "Unknown vendor", "id": "all"}]}
        with receiver.lock:
            receiver.script["export"] = [(200, error)]
        emu.http.post(f"{second['url']}/start")
        emu.http.post(f"{second['url']}/confirm")
        failed = emu.wait_status(second["url"], "failed_export")
        assert failed["messages"] == error["messages"]

        stats = httpx.get(f"{emu.root}/_emulator/stats").json()["webhook_deliveries"]
        assert stats["retrying"] == 1 and stats["delivered"] >= 8 and stats["failed"] == 0


def test_asynchronous_webhook_is_polled_until_201():
    receiver = Receiver()
    with serve(receiver.app) as hook_root, emulator(delay=0) as emu:
        emu.login()
        created = emu.http.post(
            "hooks",
            json={
                "name": "async export",
                "queues": [f"{emu.api}/queues/1"],
                "events": ["annotation_content.export"],
                "config": {"url": f"{hook_root}/hook"},
            },
        )
        assert created.status_code == 201
        assert "secrets" not in created.json()
        annotation = emu.annotation_of(emu.upload(invoice(1)))
        emu.wait_status(annotation["url"], "to_review")
        receiver.script = {"export": [(202, None)]}
        emu.http.post(f"{annotation['url']}/start")
        emu.http.post(f"{annotation['url']}/confirm")
        assert emu.http.get(annotation["url"]).json()["status"] in ("exporting", "exported")
        assert emu.wait_status(annotation["url"], "exported")
        assert receiver.polls == 2
        assert "X-Rossum-Signature-SHA256".lower() not in receiver.requests[0][0]  # no secret


# --------------------------------------------------------------------------- the official SDK


def test_official_sdk_sync_client(tmp_path: Path):
    """``rossum_api.SyncRossumAPIClient``, unchanged: login, upload, poll, read, edit, confirm,
    export. Its ``upload_document`` expects ``results`` in the ``POST /uploads`` answer, which
    the reference documents as ``{"url": task}``, so the sync test uses ``import_document``
    (``queues/{id}/upload``) and the async test below uses ``upload_document``."""
    from rossum_api import SyncRossumAPIClient
    from rossum_api.domain_logic.annotations import ExportFileFormats
    from rossum_api.dtos import UserCredentials

    spec = random_spec(4, "en")
    pdf = tmp_path / "invoice.pdf"
    pdf.write_bytes(render_pdf(spec, "en"))
    with emulator(delay=0.2, rate_limit=10) as emu:
        client = SyncRossumAPIClient(emu.api, UserCredentials(USER, PASSWORD))
        try:
            assert client.retrieve_queue(1).schema == f"{emu.api}/schemas/1"
            assert client.retrieve_own_organization().id == 1
            [annotation_id] = client.import_document(1, [(pdf, "invoice.pdf")], metadata={"a": 1})
            annotation = client.poll_annotation_until_imported(annotation_id, sleep_s=1)
            assert annotation.status == "to_review" and annotation.metadata == {"a": 1}
            full = client.retrieve_annotation(annotation_id, sideloads=["content"])
            assert isinstance(full.content, list)
            number = by_schema_id(full.content)["document_id"]
            assert number["content"]["value"] == spec.invoice_number
            client.start_annotation(annotation_id)
            client.bulk_update_annotation_data(
                annotation_id,
                [{"op": "replace", "id": number["id"], "value": {"content": {"value": "SDK-1"}}}],
            )
            client.confirm_annotation(annotation_id)
            assert client.retrieve_annotation(annotation_id).status == "exported"
            exported = list(client.request_paginated("queues/1/export", format="json"))
            assert by_schema_id(exported[0]["content"])["document_id"]["value"] == "SDK-1"
            csv_bytes = b"".join(client.export_annotations_to_file(1, ExportFileFormats.CSV))
            assert b"SDK-1" in csv_bytes
            assert client.retrieve_document_content(1) == pdf.read_bytes()
        finally:
            client.internal_client.client.close()  # the SDK has no close(); its httpx client does


def test_official_sdk_async_client(tmp_path: Path):
    """``AsyncRossumAPIClient``: upload via ``POST /uploads`` → task → upload → annotation."""
    from rossum_api import AsyncRossumAPIClient
    from rossum_api.dtos import UserCredentials

    pdf = tmp_path / "invoice.pdf"
    pdf.write_bytes(invoice(6))

    async def flow(api: str) -> list[dict[str, Any]]:
        client = AsyncRossumAPIClient(api, credentials=UserCredentials(USER, PASSWORD))
        try:
            [task] = await client.upload_document(1, [(pdf, "invoice.pdf")], metadata={"b": 2})
            task = await client.poll_task_until_succeeded(task.id, sleep_s=1)
            upload = await client.retrieve_upload(int(task.content["upload"].rsplit("/", 1)[1]))
            annotation_id = int(upload.annotations[0].rsplit("/", 1)[1])
            annotation = await client.poll_annotation_until_imported(annotation_id, sleep_s=1)
            assert annotation.status == "to_review" and annotation.metadata == {"b": 2}
            full = await client.retrieve_annotation(annotation_id, sideloads=["content"])
            assert by_schema_id(full.content)["amount_total"]["content"]["normalized_value"]
            await client.start_annotation(annotation_id)
            await client.confirm_annotation(annotation_id)
            assert (await client.retrieve_annotation(annotation_id)).status == "exported"
            return [r async for r in client.request_paginated("queues/1/export", format="json")]
        finally:
            await client._http_client.client.aclose()  # no public close() in the SDK

    with emulator(delay=0.2, rate_limit=10) as emu:
        exported = asyncio.run(flow(emu.api))
    assert [r["status"] for r in exported] == ["exported"]
    assert exported[0]["document"]["file_name"] == "invoice.pdf"


# --------------------------------------------------------------------------- CLI


def test_cli_options():
    parser = runner.build_parser(emulator_cli.RossumEmulator())
    args = parser.parse_args(
        ["--delay", "0.5", "--fail-rate", "0.1", "--webhook-url", "http://x/h"]
    )
    options = emulator_cli.options_from(args)
    assert (args.host, args.port) == ("127.0.0.1", 8765)
    assert options.delay == 0.5 and options.fail_rate == 0.1 and options.rate_limit == 10
    assert options.webhook_url == "http://x/h" and options.webhook_secret == "emulator-secret"
    assert options.webhook_events == ("annotation_status",)
    with pytest.raises(SystemExit):
        emulator_cli.options_from(parser.parse_args(["--fail-rate", "2"]))
