"""The DeepOpinion connector against the DeepOpinion emulator under real uvicorn, no mocks:
the login and tokens running out mid-run (renewed before ``exp``, and once on a 401, without
a failed call), a refused login, the synchronous extraction mapped to the generated invoice
(boxes on the page in points, none made of the emulator's all-zero boxes), final refusals,
the HITL found or created, a low-confidence document through its review to the reviewed
values, the webhook the emulator really sends, and polls and fetches that change nothing."""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from connectors.base import ConnectorContext, DocumentRef, PollStatus, WebhookRequest
from connectors.emulation.clock import ManualClock
from connectors.errors import AuthFailed, TerminalError, WebhookRejected
from connectors.ratelimit import reset_shared_limiters
from connectors.vendors.deepopinion import emulator_content as content
from connectors.vendors.deepopinion.emulator import EmulatorOptions, create_app
from connectors.vendors.deepopinion.emulator_state import DeepOpinionState
from connectors.vendors.deepopinion.settings import DeepOpinionSettings
from connectors.vendors.deepopinion.vendor import DeepOpinionVendor
from tests.invoices import expected_fields, random_spec, render_pdf
from tests.servers import serve

PAGE = (595.28, 841.89)
"""A4 in points: the page size intake measures for the generated invoices."""
TOKEN = "w3bh00k-t0ken-0f-the-c0ntract-test"
PROFILE = "do_contract"
EXTRACT = "/organizations/1/projects/1/models/1/extract"
COMPARED = (
    "invoice_number", "issue_date", "due_date", "currency", "total_amount", "net_amount",
    "tax_amount", "supplier_name", "supplier_vat_id", "supplier_iban", "supplier_bic",
    "customer_name", "order_number", "payment_reference",
)  # fmt: skip
"""The generated invoice's fields model 1 has labels for (no document type, payment terms
or customer VAT ID)."""


@dataclass
class Emu:
    url: str
    state: DeepOpinionState

    def admin(self, path: str, body: dict[str, Any] | None = None) -> httpx.Response:
        if body is None:
            return httpx.get(f"{self.url}/_emulator/{path}", timeout=30)
        return httpx.post(f"{self.url}/_emulator/{path}", json=body, timeout=30)

    def stats(self) -> dict[str, Any]:
        return dict(self.admin("stats").json())

    def documents(self) -> list[dict[str, Any]]:
        return list(self.admin("documents").json()["results"])

    def statuses(self, path: str, since: int = 0) -> list[int]:
        return [r.status for r in self.state.requests.entries(since=since) if r.path == path]


class Receiver:
    """The daemon's webhook route stood in for: records what the emulator posts to
    ``/webhooks/<profile>/<tail>`` (headers, body, tail, caller) and answers 200."""

    def __init__(self) -> None:
        self.calls: list[WebhookRequest] = []
        self.got = threading.Event()

        async def hook(request: Request) -> JSONResponse:
            self.calls.append(
                WebhookRequest(
                    method=request.method,
                    headers={k.lower(): v for k, v in request.headers.items()},
                    body=await request.body(),
                    tail=request.path_params["tail"],
                    client=request.client.host if request.client else None,
                )
            )
            self.got.set()
            return JSONResponse({})

        self.app = Starlette(
            routes=[Route("/webhooks/{profile}/{tail:path}", hook, methods=["POST"])]
        )


@pytest.fixture(autouse=True)
def _fresh_limiters() -> Iterator[None]:
    reset_shared_limiters()
    yield
    reset_shared_limiters()


@contextmanager
def emulator(clock: ManualClock | None = None, **options: Any) -> Iterator[Emu]:
    """The emulator under uvicorn in this process."""
    app = create_app(EmulatorOptions(**{"delay": 0.0, **options}), clock=clock)
    with serve(app) as url:
        yield Emu(url, app.state.emulator)


@pytest.fixture
def made() -> Iterator[list[DeepOpinionVendor]]:
    vendors: list[DeepOpinionVendor] = []
    yield vendors
    for vendor in vendors:
        vendor.close()


def vendor_for(
    emu: Emu,
    made: list[DeepOpinionVendor],
    tmp_path: Path,
    *,
    public_url: str | None = None,
    wall: Any = time.time,
    **overrides: Any,
) -> DeepOpinionVendor:
    settings = {
        "base_url": emu.url,
        "email": "user@example.com",
        "password": "secret",
        "organization_id": 1,
        "project_id": 1,
        "model_id": 1,
        "max_retries": 1,
        "retry_after_max": 0.1,
        "rate_limit": None,
        **overrides,
    }
    context = ConnectorContext(
        name=PROFILE, data_dir=tmp_path, clock=time.monotonic, public_url=public_url
    )
    vendor = DeepOpinionVendor(DeepOpinionSettings(**settings), context, wall=wall)
    made.append(vendor)
    return vendor


def invoice(
    tmp_path: Path, seed: int = 7, doc_id: int = 1, *, data: bytes | None = None,
    mime: str = "application/pdf", size: int | None = None,
) -> DocumentRef:  # fmt: skip
    data = render_pdf(random_spec(seed)) if data is None else data
    path = tmp_path / f"invoice-{seed}-{doc_id}.pdf"
    path.write_bytes(data)
    return DocumentRef(
        id=doc_id,
        sha256=hashlib.sha256(data).hexdigest(),
        filename=f"invoice {seed}.pdf",
        mime_type=mime,
        size_bytes=len(data) if size is None else size,
        pages=1,
        received_at=datetime.now(UTC),
        metadata={},
        path=path,
        page_sizes=(PAGE,),
    )


def value_of(field: Any) -> Any:
    for kind in ("value_number", "value_date"):
        if getattr(field, kind) is not None:
            return getattr(field, kind)
    return field.value_text


def reviewed_value(label: str) -> str:
    """A value a person might type for ``label``, of its kind and unlike the invoice's."""
    if label in content.DATE_LABELS:
        return "02.01.2030"
    if label in content.AMOUNT_LABELS:
        return "9,876.54"
    return f"REVIEWED {label.upper()}"


def pending_values(result: Any) -> list[tuple[str | None, str | None]]:
    """(label, text) of every value of a result, fields and line cells."""
    return [(f.vendor_label, f.raw_text) for f in result.fields] + [
        (p.vendor_label, p.raw_text) for item in result.line_items for p in item.provenance.values()
    ]


# --------------------------------------------------------------------------- auth


def test_a_token_running_out_mid_run_is_renewed_before_exp_without_a_401(made, tmp_path):
    with emulator(token_lifetime=2) as emu:
        vendor = vendor_for(emu, made, tmp_path)
        vendor.submit(invoice(tmp_path, 7, 1), first_attempt=True)
        assert vendor.client.logins == 1
        time.sleep(1.2)  # past half the lifetime: renewed before use
        vendor.submit(invoice(tmp_path, 8, 2), first_attempt=True)
        assert vendor.client.logins == 2
        assert emu.stats()["tokens"]["issued"] == 2
        assert emu.statuses(EXTRACT) == [200, 200], "no call failed for want of a token"


def test_a_token_the_vendor_expired_early_is_renewed_once_on_the_401(made, tmp_path):
    clock = ManualClock(start=time.time())
    with emulator(clock=clock) as emu:
        vendor = vendor_for(emu, made, tmp_path, wall=clock.now)
        first = vendor.submit(invoice(tmp_path, 7, 1), first_attempt=True)
        clock.advance(15 * 24 * 3600)  # the emulator's 14-day token is over; ours looks fine
        again = vendor.submit(invoice(tmp_path, 8, 2), first_attempt=True)
        assert vendor.client.logins == 2
        assert emu.statuses(EXTRACT) == [200, 401, 200], "the one 401, then the same call"
        assert first.raw["answer"]["documents"] and again.raw["answer"]["documents"]


def test_a_refused_login_is_auth_failed_and_nothing_is_extracted(made, tmp_path):
    with emulator() as emu:
        vendor = vendor_for(emu, made, tmp_path, password="not-the-password")
        with pytest.raises(AuthFailed, match="refused the login"):
            vendor.submit(invoice(tmp_path), first_attempt=True)
        assert emu.statuses("/auth/login") == [401]
        assert emu.stats()["extractions"] == 0


# --------------------------------------------------------------------------- the extraction


@pytest.mark.parametrize("seed", [7, 20])  # 20: a tax amount summed from two rates
def test_the_answer_maps_to_the_generated_invoice_with_boxes_on_the_page(made, tmp_path, seed):
    with emulator(low_confidence_rate=0) as emu:
        vendor = vendor_for(emu, made, tmp_path)
        doc = invoice(tmp_path, seed)
        submitted = vendor.submit(doc, first_attempt=True)
        assert submitted.vendor_ref.endswith(f".docrelay-1-{doc.sha256[:8]}.pdf")
        assert submitted.keys == {"document_name": submitted.vendor_ref}
        (shown,) = emu.documents()
        assert shown["name"] == submitted.vendor_ref and shown["hitl_id"] is None
        result = vendor.normalize(submitted.raw)
        assert result.review is None
        expected = expected_fields(random_spec(seed))
        got = {f.name: f for f in result.fields}
        for name in COMPARED:
            if expected[name] is None:
                assert name not in got, name
                continue
            assert value_of(got[name]) == expected[name], name
        assert result.line_items, "line items"
        zero = {  # the labels the emulator placed nowhere (all eight corners 0)
            box["label"]
            for page in submitted.raw["answer"]["documents"][0]["bboxes"]
            for match in page
            for box in match
            if not any(box[k] for k in ("TLx", "TRx", "BRx", "BLx", "TLy", "BRy"))
        }
        placed = [f for f in result.fields if f.bbox is not None]
        assert len(placed) == len([f for f in result.fields if f.vendor_label not in zero]) > 0
        for field in result.fields:
            if field.bbox is None:
                continue
            box = field.bbox
            assert (box.page_width, box.page_height) == PAGE
            assert box.inside_page() and box.right > box.left and box.bottom > box.top, field
        unplaced = [f for f in result.fields if f.vendor_label in zero]
        assert all(f.bbox is None and f.page == 1 for f in unplaced), unplaced
        if seed == 20:
            assert [f.name for f in unplaced] == ["tax_amount"]
        assert result.quality["all_confidence_thresholds_met"] is True
        assert result.quality["credits_used"] == 1


def test_a_type_deepopinion_does_not_read_is_refused_before_any_request(made, tmp_path):
    with emulator() as emu:
        vendor = vendor_for(emu, made, tmp_path)
        mark = emu.state.requests.mark()
        with pytest.raises(TerminalError, match="does not take text/plain"):
            vendor.submit(invoice(tmp_path, data=b"plain text", mime="text/plain"))
        with pytest.raises(TerminalError, match="less than"):
            vendor.submit(invoice(tmp_path, size=50 * 1024 * 1024))
        assert emu.state.requests.entries(since=mark) == [], "refused before any request"


def test_a_415_from_deepopinion_is_final_and_sent_once(made, tmp_path):
    with emulator() as emu:
        vendor = vendor_for(emu, made, tmp_path, max_retries=3)
        text_as_pdf = invoice(tmp_path, data=b"not a PDF at all, whatever it says")
        with pytest.raises(TerminalError, match="415"):
            vendor.submit(text_as_pdf, first_attempt=True)
        assert emu.statuses(EXTRACT) == [415], "final: not resent"


# --------------------------------------------------------------------------- HITL


def test_the_hitl_is_created_once_and_a_second_vendor_finds_it(made, tmp_path):
    with emulator(low_confidence_rate=0) as emu:
        first = vendor_for(emu, made, tmp_path, hitl=True)
        created = first.ensure_hitl()
        assert first.ensure_hitl() == created
        second = vendor_for(emu, made, tmp_path, hitl=True)
        assert second.ensure_hitl() == created
        second.submit(invoice(tmp_path), first_attempt=True)
        hitls = list(emu.state.hitls.values())
        assert [(h.id, h.name, h.is_live, h.model_id) for h in hitls] == [
            (created, f"docrelay-{PROFILE}", True, 1)
        ]
        posts = [r for r in emu.state.requests.mutations() if r.path.endswith("/hitls")]
        assert len(posts) == 1, "created once"
        assert hitls[0].assigned_user_id == 1, "assigned to us (the token's sub)"


def test_a_low_confidence_document_through_its_review_to_the_reviewed_values(made, tmp_path):
    receiver = Receiver()
    with serve(receiver.app) as hooks, emulator(low_confidence_rate=1) as emu:
        vendor = vendor_for(emu, made, tmp_path, hitl=True, webhook_token=TOKEN, public_url=hooks)
        doc = invoice(tmp_path)
        submitted = vendor.submit(doc, first_attempt=True)
        hitl = emu.state.hitl(submitted.data["hitl_id"])
        assert hitl.webhook_url == f"{hooks}/webhooks/{PROFILE}/{TOKEN}"
        pending = vendor.normalize(submitted.raw)
        assert pending.review and "human-in-the-loop" in pending.review
        assert "%" in pending.review, "names the values below their threshold"
        assert "answer" in submitted.data, "kept for the reviewed result"

        mark = emu.state.requests.mark()
        polled = vendor.poll(submitted.vendor_ref, submitted.data)
        assert polled.status == PollStatus.REVIEW and "to review" in (polled.reason or "")
        assert emu.state.requests.mutations(since=mark) == []

        labels = {r.label for r in emu.state.reviews_of(submitted.data["hitl_id"])}
        assert labels, "the emulator made reviews for the lowered values"
        values = {label: reviewed_value(label) for label in labels}
        done = emu.admin(
            "reviews/complete", {"document_name": submitted.vendor_ref, "values": values}
        )
        assert done.status_code == 200, done.text
        mark = emu.state.requests.mark()
        assert vendor.poll(submitted.vendor_ref, submitted.data).status == PollStatus.READY
        raw = vendor.fetch(submitted.vendor_ref, submitted.data, doc)
        assert emu.state.requests.mutations(since=mark) == [], "poll and fetch change nothing"
        reviewed = vendor.normalize(json.loads(json.dumps(raw)))  # as the store keeps it
        assert reviewed.review is None
        assert reviewed.quality["reviewed"] is True
        shown = [(f.vendor_label, f.raw_text, f.confidence) for f in reviewed.fields] + [
            (p.vendor_label, p.raw_text, p.confidence)
            for item in reviewed.line_items
            for p in item.provenance.values()
        ]
        for label, value in values.items():
            assert (label, value, 1.0) in shown, (label, value)
            assert (label, value) not in {(v[0], v[1]) for v in pending_values(pending)}
        expected = expected_fields(random_spec(7))
        for name in ("invoice_number", "total_amount", "issue_date"):
            label = reviewed.get(name).vendor_label  # type: ignore[union-attr]
            if label not in values:  # not reviewed: as extracted
                assert value_of(reviewed.get(name)) == expected[name]

        assert receiver.got.wait(10), "the emulator called the HITL's webhook URL"
        (call,) = receiver.calls
        body = json.loads(call.body)
        assert body["document_name"] == submitted.vendor_ref
        assert body["event"] == "review.completed"
        (hint,) = vendor.parse_webhook(call)
        assert hint.vendor_ref == submitted.vendor_ref
        assert hint.keys == {"document_name": submitted.vendor_ref}
        assert hint.event == "review.completed"
        forged = WebhookRequest(
            call.method, call.headers, call.body, tail=TOKEN[:-1] + "X", client=call.client
        )
        with pytest.raises(WebhookRejected) as refused:
            vendor.parse_webhook(forged)
        assert refused.value.status_code == 404
