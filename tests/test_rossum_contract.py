"""Contract tests: docrelay's Rossum client against the Rossum emulator under real uvicorn.

The client's unit tests use an in-memory fake; these check the two speak the same protocol:
re-login after token expiry, 429 handling, pagination across pages, webhook signatures.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from connectors.base import ConnectorContext, DocumentRef, PollStatus, WebhookRequest
from connectors.errors import WebhookRejected
from connectors.vendors.rossum.emulator import EmulatorOptions, create_app
from connectors.vendors.rossum.settings import RossumSettings
from connectors.vendors.rossum.vendor import RossumVendor
from tests.invoices import random_spec, render_pdf
from tests.servers import serve


@contextmanager
def emulator(**options: object) -> Iterator[tuple[str, object]]:
    app = create_app(EmulatorOptions(**options))  # type: ignore[arg-type]
    with serve(app) as base:
        yield base, app.state.emulator


def vendor_for(base: str, tmp_path: Path, **settings: object) -> RossumVendor:
    config = RossumSettings(
        base_url=f"{base}/api/v1",
        username="user@example.com",
        password="secret",
        queue=1,
        **settings,  # type: ignore[arg-type]
    )
    return RossumVendor(config, ConnectorContext("rossum_main", tmp_path, time.monotonic))


def document(tmp_path: Path, doc_id: int) -> DocumentRef:
    data = render_pdf(random_spec(900 + doc_id))
    path = tmp_path / f"doc{doc_id}.pdf"
    path.write_bytes(data)
    return DocumentRef(
        id=doc_id,
        sha256=hashlib.sha256(data).hexdigest(),
        filename=path.name,
        mime_type="application/pdf",
        size_bytes=len(data),
        pages=1,
        received_at=datetime.now(UTC),
        metadata={},
        path=path,
    )


def ready(vendor: RossumVendor, result: object) -> None:
    deadline = time.monotonic() + 10
    while vendor.poll(result.vendor_ref, result.data).status != PollStatus.READY:  # type: ignore[attr-defined]
        assert time.monotonic() < deadline, "annotation never became ready"
        time.sleep(0.05)


def logins(state: object) -> int:
    return sum(
        sum(codes.values())
        for route, codes in state.stats()["requests"]["by_path"].items()  # type: ignore[attr-defined]
        if route == "POST /api/v1/auth/login"
    )


def test_relogin_after_token_expiry(tmp_path):
    with emulator(delay=0, token_lifetime=1.0) as (base, state):
        vendor = vendor_for(base, tmp_path)
        try:
            first = vendor.submit(document(tmp_path, 1), first_attempt=True)
            assert logins(state) == 1
            time.sleep(1.2)  # the emulator's token runs out (absolute lifetime)
            ready(vendor, first)
            raw = vendor.fetch(first.vendor_ref, first.data, document(tmp_path, 1))
            assert raw["annotation"]["status"] == "to_review"
            assert logins(state) == 2, "exactly one re-login, then the request replayed"
        finally:
            vendor.close()


def test_429_is_retried_after_retry_after(tmp_path):
    with emulator(delay=0, rate_limit=2.0) as (base, state):
        vendor = vendor_for(base, tmp_path, rate_limit=1000.0, max_retries=6)
        try:
            began = time.monotonic()
            for doc_id in range(1, 4):
                result = vendor.submit(document(tmp_path, doc_id), first_attempt=True)
                ready(vendor, result)
            stats = state.stats()  # type: ignore[attr-defined]
            assert stats["throttled"] > 0, "the emulator did throttle"
            assert stats["uploads"] == 3, "a throttled upload is sent again, not twice"
            assert time.monotonic() - began >= 1.0, "Retry-After (>= 1 s) was honoured"
        finally:
            vendor.close()


def test_pagination_across_pages(tmp_path):
    with emulator(delay=0, rate_limit=0) as (base, _state):
        vendor = vendor_for(base, tmp_path)
        try:
            for doc_id in range(1, 26):
                vendor.submit(document(tmp_path, doc_id), first_attempt=True)
            seen = list(vendor.client.paginate("annotations", {"queue": 1, "page_size": 10}))
            assert len(seen) == 25
            assert len({a["id"] for a in seen}) == 25
            ids = {a["metadata"]["docrelay_document_id"] for a in seen}
            assert ids == set(range(1, 26))
        finally:
            vendor.close()


@contextmanager
def hook_receiver() -> Iterator[tuple[str, list[tuple[dict[str, str], bytes]]]]:
    received: list[tuple[dict[str, str], bytes]] = []
    lock = threading.Lock()

    async def hook(request: Request) -> JSONResponse:
        body = await request.body()
        with lock:
            received.append((dict(request.headers), body))
        return JSONResponse({})

    with serve(Starlette(routes=[Route("/hook", hook, methods=["POST"])])) as base:
        yield f"{base}/hook", received


def test_webhook_signatures_from_the_emulator(tmp_path):
    with hook_receiver() as (url, received):
        with emulator(delay=0, webhook_url=url, webhook_secret="s3cret-hook") as (base, _s):
            vendor = vendor_for(base, tmp_path, webhook_secret="s3cret-hook")
            wrong = vendor_for(base, tmp_path, webhook_secret="another-secret")
            try:
                result = vendor.submit(document(tmp_path, 1), first_attempt=True)
                deadline = time.monotonic() + 10
                while not received:
                    assert time.monotonic() < deadline, "no webhook arrived"
                    time.sleep(0.05)
                headers, body = received[0]
                assert headers["x-rossum-signature-sha256"].startswith("sha256=")
                hints = vendor.parse_webhook(WebhookRequest("POST", headers, body))
                assert [h.vendor_ref for h in hints] == [result.vendor_ref]

                with pytest.raises(WebhookRejected):
                    wrong.parse_webhook(WebhookRequest("POST", headers, body))  # wrong secret
                altered = body.replace(b'"', b"'", 1)
                with pytest.raises(WebhookRejected):
                    vendor.parse_webhook(
                        WebhookRequest("POST", headers, altered)
                    )  # one byte changed
                missing = {k: v for k, v in headers.items() if "signature" not in k}
                with pytest.raises(WebhookRejected):
                    vendor.parse_webhook(WebhookRequest("POST", missing, body))  # no signature
                sha1 = hmac.new(b"s3cret-hook", body, hashlib.sha1).hexdigest()
                with pytest.raises(WebhookRejected):
                    other = {**missing, "x-rossum-signature-sha256": f"sha1={sha1}"}
                    vendor.parse_webhook(WebhookRequest("POST", other, body))  # another scheme
                payload = json.loads(body)
                assert payload["event"] in ("annotation_status", "annotation_content")
            finally:
                vendor.close()
                wrong.close()
