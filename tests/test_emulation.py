"""The emulator kit: fault injection and throttling against a real uvicorn server, the request
log, the manual clock, the callback dispatcher, the extraction engine on generated invoices,
the runner, and emulators in the registry."""

from __future__ import annotations

import argparse
import hashlib
import hmac
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from fpdf import FPDF
from fpdf.enums import AccessPermission
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from connectors import registry
from connectors.emulation import runner
from connectors.emulation.app import emulator_app
from connectors.emulation.callbacks import (
    Callback,
    CallbackDispatcher,
    Verdict,
    hmac_sha256,
    unsigned,
)
from connectors.emulation.clock import ManualClock, SystemClock
from connectors.emulation.extraction import PdfFacts, extract, pdf_facts, pdf_words
from connectors.emulation.faults import (
    KINDS,
    PROCESSED,
    FaultInjector,
    FaultSettings,
    parse_mix,
)
from connectors.emulation.options import CommonOptions
from connectors.emulation.requestlog import RequestLog, note
from tests.invoices import (
    encrypted_pdf_bytes,
    expected_fields,
    expected_line_items,
    random_spec,
    render_pdf,
    scanned_pdf_bytes,
    truncated_pdf_bytes,
)
from tests.servers import serve

ROOT = Path(__file__).parent.parent

# --------------------------------------------------------------------------- the clock


def test_manual_clock_moves_only_when_told():
    clock = ManualClock(start=1000.0)
    assert (clock.now(), clock.monotonic()) == (1000.0, 0.0)
    clock.advance(2.5)
    assert (clock.now(), clock.monotonic()) == (1002.5, 2.5)
    clock.sleep(10)  # a sleep advances instead of waiting
    assert clock.monotonic() == 12.5
    with pytest.raises(ValueError):
        clock.advance(-1)


def test_manual_clock_wakes_waiting_threads_on_advance():
    clock = ManualClock()
    condition = threading.Condition()
    woke = threading.Event()
    waiting = threading.Event()

    def waiter() -> None:
        with condition:
            waiting.set()
            clock.wait(condition, 3600)  # an hour of clock time, no real hour
            woke.set()

    thread = threading.Thread(target=waiter)
    thread.start()
    assert waiting.wait(5)
    assert not woke.is_set()
    clock.advance(1)
    assert woke.wait(5)
    thread.join(5)


def test_system_clock_is_real_time():
    import time

    clock = SystemClock()
    assert abs(clock.now() - time.time()) < 1
    condition = threading.Condition()
    with condition:
        clock.wait(condition, 0)  # returns at once


# --------------------------------------------------------------------------- a tiny API


@dataclass
class Shop:
    """A tiny vendor: ``POST /api/items`` creates an item (the side effect faults must keep
    whole), ``GET /api/items`` lists them."""

    items: list[dict[str, Any]] = field(default_factory=list)


def shop_app(settings: FaultSettings, clock: Any = None) -> Any:
    shop = Shop()
    requests = RequestLog(clock)
    faults = FaultInjector(settings, clock)

    async def create(request: Request) -> Response:
        body = await request.json()
        item = {"id": len(shop.items) + 1, "name": body["name"], "padding": "x" * 200}
        shop.items.append(item)
        note(request, item=item["id"])
        return JSONResponse(item, status_code=201)

    async def listing(request: Request) -> Response:
        return JSONResponse({"results": shop.items})

    async def empty(request: Request) -> Response:
        return Response(status_code=204)

    routes = [
        Route("/api/items", create, methods=["POST"]),
        Route("/api/items", listing, methods=["GET"]),
        Route("/api/empty", empty, methods=["POST"]),
    ]
    return emulator_app(routes, state=shop, requests=requests, faults=faults, api_prefix="/api")


@contextmanager
def shop(**settings: Any) -> Iterator[tuple[Any, httpx.Client]]:
    clock = settings.pop("clock", None)
    app = shop_app(FaultSettings(**settings), clock)
    with serve(app) as root, httpx.Client(base_url=root, timeout=10) as http:
        yield app, http


def raw_exchange(root: str, request: bytes) -> bytes:
    """Everything the server sends for one raw HTTP request, until it closes."""
    parts = urlsplit(root)
    with socket.create_connection((parts.hostname, parts.port), timeout=10) as sock:
        sock.sendall(request)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    return received


def post_item(root: str) -> bytes:
    body = b'{"name": "raw"}'
    head = (
        f"POST /api/items HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode()
    return raw_exchange(root, head + body)


# --------------------------------------------------------------------------- faults


@pytest.mark.parametrize("kind", ["500", "502", "503", "504"])
def test_status_faults_are_not_processed(kind):
    with shop() as (app, http):
        app.state.faults.schedule(kind)
        response = http.post("/api/items", json={"name": "a"})
        assert response.status_code == int(kind)
        assert "emulated fault" in response.json()["detail"]
        assert response.headers.get("Retry-After") == ("1" if kind == "503" else None)
        assert app.state.emulator.items == []
        [record] = app.state.requests.entries()
        assert (record.status, record.fault, record.mutating) == (int(kind), kind, True)


def test_500_after_the_request_took_effect():
    with shop() as (app, http):
        app.state.faults.schedule("500_after")
        response = http.post("/api/items", json={"name": "a"})
        assert response.status_code == 500
        assert [i["name"] for i in app.state.emulator.items] == ["a"]
        assert app.state.requests.entries()[0].attributes == {"item": 1}


@pytest.mark.parametrize(("kind", "processed"), [("drop_before", False), ("drop_after", True)])
def test_dropped_without_any_answer(kind, processed):
    with shop() as (app, http):
        app.state.faults.schedule(kind)
        with pytest.raises(httpx.RemoteProtocolError, match="without sending a response"):
            http.post("/api/items", json={"name": "a"})
        assert len(app.state.emulator.items) == (1 if processed else 0)
        app.state.faults.schedule(kind)
        root = str(http.base_url).rstrip("/")
        assert post_item(root) == b"", "not a single byte of an answer"
        assert len(app.state.emulator.items) == (2 if processed else 0)
        assert [r.status for r in app.state.requests.entries()] == [0, 0]
        assert http.get("/api/items").status_code == 200  # the server carries on


def test_dropped_during_the_body():
    with shop() as (app, http):
        app.state.faults.schedule("drop_during")
        with http.stream("POST", "/api/items", json={"name": "a"}) as response:
            assert response.status_code == 201  # the real answer started ...
            with pytest.raises(httpx.RemoteProtocolError):
                response.read()  # ... and broke off
        assert len(app.state.emulator.items) == 1
        app.state.faults.schedule("drop_during")
        with pytest.raises(httpx.RemoteProtocolError):
            http.post("/api/empty")  # an empty answer is cut short too
        assert [r.status for r in app.state.requests.entries()] == [0, 0]


def test_malformed_and_html_bodies():
    with shop() as (app, http):
        app.state.faults.schedule("malformed")
        response = http.post("/api/items", json={"name": "a"})
        assert response.status_code == 200
        with pytest.raises(ValueError):
            response.json()
        assert len(app.state.emulator.items) == 1  # processed, answer broken

        app.state.faults.schedule("html")
        response = http.post("/api/items", json={"name": "b"})
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/html")
        assert response.text.lstrip().startswith("<!DOCTYPE html>")
        assert len(app.state.emulator.items) == 1  # a proxy answered: not processed


def test_slow_fault_waits_on_the_emulator_clock():
    clock = ManualClock()
    with shop(clock=clock, slow_seconds=30) as (app, http):
        app.state.faults.schedule("slow")
        assert http.post("/api/items", json={"name": "a"}).status_code == 201
        assert clock.monotonic() == 30  # 30 s of emulator time, no real wait
        assert app.state.requests.entries()[0].fault == "slow"


def test_fail_rate_draws_from_the_mix_reproducibly():
    def draws(seed: int) -> list[str | None]:
        injector = FaultInjector(FaultSettings(fail_rate=0.5, seed=seed))
        return [injector.pick("GET", "/x") for _ in range(200)]

    first = draws(3)
    assert first == draws(3) and first != draws(4)
    picked = [kind for kind in first if kind is not None]
    assert 60 < len(picked) < 140 and set(picked) <= set(KINDS)
    narrowed = FaultInjector(FaultSettings(fail_rate=1, fault_mix=(("503", 1),)))
    assert {narrowed.pick("GET", "/x") for _ in range(20)} == {"503"}
    assert narrowed.counts == {"503": 20}
    assert FaultInjector(FaultSettings()).pick("GET", "/x") is None


def test_every_fault_kind_leaves_whole_state():
    """Each kind, drawn at random: the item exists exactly when the kind processes requests."""
    for kind in KINDS:
        with shop(fail_rate=1.0, fault_mix=((kind, 1.0),), slow_seconds=0) as (app, http):
            try:
                http.post("/api/items", json={"name": kind})
            except httpx.TransportError:
                assert kind.startswith("drop_")
            app.state.faults.configure(fail_rate=0.0)
            listed = http.get("/api/items").json()["results"]
            assert len(listed) == (1 if kind in PROCESSED else 0), kind


def test_scheduled_faults_match_method_and_path():
    injector = FaultInjector(FaultSettings())
    injector.schedule("drop_after", method="POST", path="/api/items", times=2)
    assert injector.pick("GET", "/api/items") is None
    assert injector.pick("POST", "/api/other") is None
    assert injector.pick("POST", "/api/items/7") == "drop_after"
    assert injector.pick("POST", "/api/items") == "drop_after"
    assert injector.pick("POST", "/api/items") is None
    with pytest.raises(ValueError):
        injector.schedule("fire")


def test_settings_are_checked():
    for bad in ({"fail_rate": 2}, {"rate_limit": -1}, {"fault_mix": (("fire", 1),)}):
        with pytest.raises(ValueError):
            FaultSettings(**bad)  # type: ignore[arg-type]
    assert parse_mix("503=2, drop_after") == (("503", 2.0), ("drop_after", 1.0))
    with pytest.raises(ValueError):
        parse_mix("503=lots")
    injector = FaultInjector(FaultSettings())
    with pytest.raises(ValueError):
        injector.configure(fail_rate=0.5, fault_mix={"fire": 1})
    assert injector.settings.fail_rate == 0.0, "all or nothing"


# --------------------------------------------------------------------------- throttling


def test_throttling_per_client_with_retry_after():
    clock = ManualClock()
    with shop(clock=clock, rate_limit=2) as (app, http):
        alice = {"Authorization": "Bearer alice"}
        answers = [http.get("/api/items", headers=alice).status_code for _ in range(3)]
        assert answers == [200, 200, 429]
        limited = http.get("/api/items", headers=alice)
        assert limited.status_code == 429 and limited.headers["Retry-After"] == "1"
        assert "throttled" in limited.json()["detail"]
        bob = http.get("/api/items", headers={"Authorization": "Bearer bob"})
        assert bob.status_code == 200  # a bucket per client
        clock.advance(0.5)  # one request's worth refills at 2/s
        assert http.get("/api/items", headers=alice).status_code == 200
        assert http.get("/api/items", headers=alice).status_code == 429
        assert app.state.faults.throttled == 3
        faults = [r.fault for r in app.state.requests.entries()]
        assert faults.count("throttled") == 3
        assert http.get("/_emulator/faults").status_code == 200  # admin is never throttled


# --------------------------------------------------------------------------- admin and the log


def test_admin_paths_are_never_faulted_or_logged():
    with shop(fail_rate=1.0, fault_mix=(("503", 1.0),), rate_limit=1) as (app, http):
        for _ in range(5):
            assert http.get("/_emulator/requests").status_code == 200
            assert http.get("/_emulator/faults").status_code == 200
        assert app.state.requests.total == 0
        assert app.state.faults.counts == {}


def test_faults_are_controlled_over_http():
    with shop() as (app, http):
        changed = http.post(
            "/_emulator/faults", json={"fail_rate": 1, "fault_mix": {"502": 1}, "seed": 1}
        )
        assert changed.status_code == 200 and changed.json()["fault_mix"] == {"502": 1.0}
        assert http.get("/api/items").status_code == 502
        refused = http.post("/_emulator/faults", json={"fail_rate": 0, "fault_mix": "fire"})
        assert refused.status_code == 400 and "fire" in refused.json()["detail"]
        assert app.state.faults.settings.fail_rate == 1  # nothing changed
        http.post(
            "/_emulator/faults",
            json={"fail_rate": 0, "next": [{"kind": "drop_after", "method": "POST"}, "503"]},
        )
        assert http.get("/api/items").status_code == 503  # the first one matching GET
        with pytest.raises(httpx.RemoteProtocolError):
            http.post("/api/items", json={"name": "a"})
        assert http.post("/api/items", json={"name": "b"}).status_code == 201
        shown = http.get("/_emulator/faults").json()
        assert shown["injected"] == {"502": 1, "503": 1, "drop_after": 1}
        assert shown["scheduled"] == []
        assert http.post("/_emulator/faults", json={"next": "503"}).status_code == 400
        for junk in (b"[1]", b"{not json"):
            answer = http.post("/_emulator/faults", content=junk)
            assert answer.status_code == 400 and answer.json() == {"detail": "send a JSON object"}
        assert http.post("/_emulator/faults", content=b"").json()["scheduled"] == []


def test_request_log_in_process_and_over_http():
    with shop() as (app, http):
        log: RequestLog = app.state.requests
        http.post("/api/items", json={"name": "a"})
        mark = log.mark()
        http.get("/api/items", params={"page": "2"})
        http.get("/api/items")
        assert log.mutations(since=mark) == [], "reading changed nothing"
        assert [r.method for r in log.entries(since=mark)] == ["GET", "GET"]
        [upload] = log.entries(method="POST", path="/api/items")
        assert upload.status == 201 and upload.attributes == {"item": 1}
        assert log.entries(since=mark)[0].query == "page=2"

        shown = http.get("/_emulator/requests", params={"since": mark}).json()
        assert shown["total"] == 3 and shown["next"] == 3
        assert [(r["method"], r["status"], r["mutating"]) for r in shown["results"]] == [
            ("GET", 200, False),
            ("GET", 200, False),
        ]
        posts = http.get("/_emulator/requests", params={"method": "post"}).json()["results"]
        assert posts[0]["attributes"] == {"item": 1} and posts[0]["path"] == "/api/items"
        assert http.delete("/_emulator/requests").status_code == 204
        assert len(log) == 0 and log.mark() == 3  # marks stay valid after clearing


def test_request_log_times_come_from_the_clock():
    clock = ManualClock(start=2000.0)
    log = RequestLog(clock)
    first = log.record("get", "/a", 200)
    clock.advance(5)
    second = log.record("PUT", "/a", 204, fault="slow")
    assert (first.at, second.at) == (2000.0, 2005.0)
    assert first.method == "GET" and not first.mutating and second.mutating
    assert second.as_json()["at"].endswith("Z")


# --------------------------------------------------------------------------- callbacks


class Receiver:
    """A scripted callback receiver behind ``httpx.MockTransport``."""

    def __init__(self, *statuses: int) -> None:
        self.statuses = list(statuses)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        status = self.statuses.pop(0) if self.statuses else 200
        return httpx.Response(status, json={"seen": len(self.requests)})


def dispatcher(receiver: Receiver, clock: ManualClock, results: list[Any]) -> CallbackDispatcher:
    return CallbackDispatcher(
        clock=clock,
        transport=httpx.MockTransport(receiver),
        on_result=lambda cb, ok, result: results.append((cb.tags["n"], ok, result)),
    )


def test_callbacks_are_signed_by_the_vendor_signer():
    clock, receiver, results = ManualClock(), Receiver(), []
    sender = dispatcher(receiver, clock, results)
    signer = hmac_sha256("s3cret", "X-Signature", prefix="sha256=")
    sender.submit(Callback("http://hook/a", b'{"a": 1}', signer=signer, tags={"n": 1}))
    sender.submit(Callback("http://hook/b", b'{"b": 2}', signer=unsigned, tags={"n": 2}))
    assert sender.run_due() == 2
    signed, plain = receiver.requests
    expected = hmac.new(b"s3cret", b'{"a": 1}', hashlib.sha256).hexdigest()
    assert signed.headers["X-Signature"] == f"sha256={expected}"
    assert signed.headers["Content-Type"] == "application/json"
    assert "X-Signature" not in plain.headers
    assert results == [(1, True, {"seen": 1}), (2, True, {"seen": 2})]
    base64_signer = hmac_sha256("k", "Sig", encoding="base64")
    assert base64_signer(b"x")["Sig"].endswith("=")


def test_callback_retries_follow_the_backoff_on_the_clock():
    clock, receiver, results = ManualClock(), Receiver(503, 500, 200), []
    sender = dispatcher(receiver, clock, results)
    sender.submit(Callback("http://hook/", b"{}", retry_delays=(2.0, 4.0), tags={"n": 1}))
    assert sender.run_due() == 1 and sender.next_due() == 2.0
    clock.advance(1.9)
    assert sender.run_due() == 0, "not before its time"
    clock.advance(0.1)
    assert sender.run_due() == 1 and sender.next_due() == pytest.approx(6.0)
    clock.advance(4)
    assert sender.run_due() == 1 and sender.pending == 0
    outcomes = [(a.attempt, a.status, a.outcome) for a in sender.attempts()]
    assert outcomes == [(1, 503, "retrying"), (2, 500, "retrying"), (3, 200, "delivered")]
    assert results == [(1, True, {"seen": 3})]
    assert sender.snapshot()[0]["n"] == 1 and sender.snapshot()[0]["error"] == "HTTP 503"


def test_callbacks_give_up_after_the_last_retry_or_on_refusal():
    clock, receiver, results = ManualClock(), Receiver(503, 503, 400), []
    sender = dispatcher(receiver, clock, results)
    sender.submit(Callback("http://hook/", b"{}", retry_delays=(1.0,), tags={"n": 1}))
    sender.run_due()
    clock.advance(1)
    sender.run_due()
    sender.submit(Callback("http://hook/", b"{}", tags={"n": 2}))
    sender.run_due()  # 400: refused, not retried
    assert [(n, ok) for n, ok, _ in results] == [(1, False), (2, False)]
    assert [a.outcome for a in sender.attempts()] == ["retrying", "failed", "failed"]
    anything = Callback("http://hook/", b"{}", retry_statuses=None, tags={"n": 3})
    receiver.statuses = [404]
    sender.submit(anything)
    sender.run_due()
    assert sender.attempts()[-1].outcome == "retrying"  # every non-2xx retried


def test_callback_connection_errors_are_retried():
    clock, results = ManualClock(), []
    calls = []

    def refuse(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        if len(calls) == 1:
            raise httpx.ConnectError("refused", request=request)
        return httpx.Response(204)

    sender = CallbackDispatcher(
        clock=clock,
        transport=httpx.MockTransport(refuse),
        on_result=lambda cb, ok, result: results.append((ok, result)),
    )
    sender.submit(Callback("http://hook/", b"{}"))
    sender.run_due()
    assert sender.attempts()[0].error.startswith("ConnectError")
    clock.advance(2)
    sender.run_due()
    assert results == [(True, None)]


def test_callbacks_keep_their_order_and_a_retry_does_not_block():
    clock, receiver, results = ManualClock(), Receiver(500), []
    sender = dispatcher(receiver, clock, results)
    for n in range(1, 5):
        sender.submit(Callback(f"http://hook/{n}", b"{}", tags={"n": n}))
    sender.run_due()
    assert [r.url.path for r in receiver.requests] == ["/1", "/2", "/3", "/4"]
    assert [n for n, _, _ in results] == [2, 3, 4]  # 1 waits for its retry
    clock.advance(2)
    sender.run_due()
    assert [n for n, _, _ in results] == [2, 3, 4, 1]


def test_several_senders_deliver_at_once():
    """With ``senders=3`` a slow receiver answer does not hold up the callbacks behind it:
    three requests are in flight together (the barrier breaks only then)."""
    together = threading.Barrier(3, timeout=10)
    results: list[Any] = []

    def receive(request: httpx.Request) -> httpx.Response:
        together.wait()
        return httpx.Response(204)

    sender = CallbackDispatcher(
        transport=httpx.MockTransport(receive),
        on_result=lambda cb, ok, result: results.append((cb.tags["n"], ok)),
        senders=3,
    )
    sender.start()
    try:
        for n in range(6):
            sender.submit(Callback(f"http://hook/{n}", b"{}", tags={"n": n}))
        assert sender.wait_for_attempts(6, timeout=15)
    finally:
        sender.stop()
    assert sorted(results) == [(n, True) for n in range(6)]
    assert not together.broken
    with pytest.raises(ValueError):
        CallbackDispatcher(senders=0)


def test_a_judge_can_poll_within_one_attempt():
    """A vendor rule like Rossum's 202 + Location: poll until 201, as one attempt."""
    clock, results = ManualClock(), []
    answers = iter([httpx.Response(202, headers={"Location": "/poll"}), httpx.Response(200)])

    def receive(request: httpx.Request) -> httpx.Response:
        if request.method == "GET" and request.url.path == "/poll":
            return next(answers, httpx.Response(201, json={"done": True}))
        return httpx.Response(202, headers={"Location": "/poll"})

    def judge(cb: Callback, response: httpx.Response | None, error: str | None) -> Verdict | None:
        if response is not None and response.status_code == 202:
            cb.method, cb.url, cb.body = "GET", "http://hook/poll", b""
            return Verdict.later(30, label="polling")
        if response is not None and cb.method == "GET" and response.status_code == 200:
            return Verdict.later(30, label="polling")
        return None

    sender = CallbackDispatcher(
        clock=clock,
        transport=httpx.MockTransport(receive),
        on_result=lambda cb, ok, result: results.append((ok, result)),
    )
    sender.submit(Callback("http://hook/", b"{}", judge=judge))
    for _ in range(4):
        sender.run_due()
        clock.advance(30)
    assert results == [(True, {"done": True})]
    assert [(a.attempt, a.method, a.outcome) for a in sender.attempts()] == [
        (1, "POST", "polling"),
        (1, "GET", "polling"),
        (1, "GET", "polling"),
        (1, "GET", "delivered"),
    ]


def test_dispatcher_thread_delivers_to_a_real_server_and_retries_on_the_clock():
    clock = ManualClock()
    received: list[tuple[dict[str, str], bytes]] = []
    first_seen, done = threading.Event(), threading.Event()  # real-time waits, no sleeps

    async def hook(request: Request) -> Response:
        received.append((dict(request.headers), await request.body()))
        first_seen.set()
        return Response(status_code=500 if len(received) == 1 else 200)

    from starlette.applications import Starlette

    receiver = Starlette(routes=[Route("/hook", hook, methods=["POST"])])
    results: list[bool] = []
    sender = CallbackDispatcher(
        clock=clock, on_result=lambda cb, ok, _: (results.append(ok), done.set())
    )
    with serve(receiver) as root:
        sender.start()
        try:
            sender.submit(Callback(f"{root}/hook", b'{"event": 1}', signer=hmac_sha256("k", "S")))
            assert sender.wait_for_attempts(1)
            assert first_seen.is_set() and not done.is_set()
            clock.advance(2)  # the first retry falls due; the thread wakes for it
            assert done.wait(10)
        finally:
            sender.stop()
    assert results == [True] and len(received) == 2
    assert received[1][1] == b'{"event": 1}' and "s" in received[1][0]
    assert received[0][0]["user-agent"] == "docrelay-emulator"


# --------------------------------------------------------------------------- extraction


def typed(found: Any) -> object:
    canonical = found.canonical
    if canonical.value_number is not None:
        return canonical.value_number
    if canonical.value_date is not None:
        return canonical.value_date
    return found.value


@pytest.mark.parametrize(("seed", "lang"), [(1, "en"), (2, "de"), (5, "en"), (8, "de")])
def test_engine_reads_generated_invoices_with_boxes_in_points(seed, lang):
    import pypdfium2 as pdfium

    spec = random_spec(seed, lang)
    pdf = render_pdf(spec, lang)
    result = extract(pdf, "application/pdf")
    assert result.ok and result.method == "text-layer"
    assert {name: typed(result.fields[name]) for name in expected_fields(spec)} == expected_fields(
        spec
    )
    [page] = result.pages
    assert (page.number, round(page.width), round(page.height)) == (1, 595, 842)  # A4 in points
    assert spec.invoice_number in page.text
    number = result.fields["invoice_number"]
    assert number.text == spec.invoice_number and number.label and number.inferred is None
    assert result.fields["issue_date"].value == spec.issue_date.isoformat()
    assert result.fields["total_amount"].value == str(spec.total_amount)

    document = pdfium.PdfDocument(pdf)
    try:
        textpage = document[0].get_textpage()
        boxed = 0
        for found in [
            *result.fields.values(),
            *(c for i in result.line_items for c in i.cells.values()),
        ]:
            assert found.page == 1
            if found.box is None:
                continue
            boxed += 1
            box = found.box
            assert 0 <= box.left < box.right <= page.width
            assert 0 <= box.top < box.bottom <= page.height
            # the box holds the printed text (PDFium counts y from the bottom)
            inside = textpage.get_text_bounded(
                box.left - 0.5,
                page.height - box.bottom - 0.5,
                box.right + 0.5,
                page.height - box.top + 0.5,
            )
            assert " ".join(found.text.split()) in " ".join(inside.split()), found.name
        assert boxed >= len(expected_fields(spec)) - 1
        textpage.close()
    finally:
        document.close()

    items = expected_line_items(spec, lang)
    assert [i.canonical for i in result.line_items] == items
    first = result.line_items[0]
    assert first.cells["description"].text == spec.lines[0][0]
    assert first.cells["quantity"].value is not None


def test_engine_tax_from_several_rates_is_their_sum():
    spec = next(s for s in (random_spec(n, "de") for n in range(1, 60)) if len(s.tax_by_rate) > 1)
    result = extract(render_pdf(spec, "de"), "application/pdf")
    tax = result.fields["tax_amount"]
    assert tax.value == str(spec.tax_amount) == tax.text
    assert tax.inferred is None


def test_engine_multi_page_invoice_has_every_page():
    spec = random_spec(9, "en", long=True)
    result = extract(render_pdf(spec, "en"), "application/pdf")
    assert len(result.pages) > 1 and [p.number for p in result.pages] == list(
        range(1, len(result.pages) + 1)
    )
    assert {i.page for i in result.line_items} - {None} <= {p.number for p in result.pages}
    assert len(result.line_items) == len(spec.lines)


@pytest.mark.parametrize(
    ("data", "mime", "reason"),
    [
        (encrypted_pdf_bytes(random_spec(1)), "application/pdf", "password"),
        (truncated_pdf_bytes(random_spec(1)), "application/pdf", "truncated"),
        (scanned_pdf_bytes(random_spec(1)), "application/pdf", "off in the emulator"),
        (b"\x00\x01 junk", "application/octet-stream", "unsupported file type"),
    ],
    # The PDFs differ per process (random IDs, timestamps): ids of their bytes would differ
    # between pytest-xdist workers, which then refuse to run.
    ids=["encrypted", "truncated", "scanned", "junk"],
)
def test_engine_says_why_it_cannot_read(data, mime, reason):
    result = extract(data, mime)
    assert not result.ok and reason in (result.error or "")
    assert result.fields == {} and result.pages == []


def test_engine_reads_plain_text_without_page_sizes():
    text = "Invoice No.: T-77\nDate: 03.02.2026\nTotal: 119,00 EUR\n"
    result = extract(text.encode(), "text/plain; charset=utf-8")
    assert result.fields["invoice_number"].value == "T-77"
    assert result.pages[0].width is None and result.fields["invoice_number"].box is None


def test_engine_reads_only_the_first_pages_when_asked():
    spec = random_spec(9, "en", long=True)
    pdf = render_pdf(spec, "en")
    whole = extract(pdf, "application/pdf")
    assert len(whole.pages) > 1
    first = extract(pdf, "application/pdf", read_pages=1, max_pages=1)
    assert first.ok and [p.number for p in first.pages] == [1]
    assert first.pages[0].text == whole.pages[0].text
    assert extract(pdf, "application/pdf", read_pages=99).pages == whole.pages


def test_pdf_facts_pages_and_protection():
    spec = random_spec(1)
    assert pdf_facts(render_pdf(spec)) == PdfFacts(1, None)
    assert pdf_facts(encrypted_pdf_bytes(spec)) == PdfFacts(None, "password")
    pdf = FPDF()
    pdf.set_encryption(owner_password="owner", permissions=AccessPermission.PRINT_LOW_RES)
    pdf.add_page()
    pdf.set_font("Helvetica", size=10)
    pdf.text(20, 20, "Restricted but readable")
    assert pdf_facts(bytes(pdf.output())) == PdfFacts(1, "restrictions")
    broken = pdf_facts(b"%PDF-1.4 nothing else")
    assert broken.pages is None and broken.protection is None and broken.error


def test_pdf_words_lie_where_the_engine_boxes_its_values():
    spec = random_spec(3, "de")
    pdf = render_pdf(spec, "de")
    (page,) = pdf_words(pdf)
    assert (round(page.width, 1), round(page.height, 1)) == (595.3, 841.9)
    words = [w for line in page.lines for w in line]
    assert "".join(w.text for w in page.lines[0]) == "Rechnung"
    iban = extract(pdf, "application/pdf").fields["supplier_iban"]
    assert iban.box is not None
    first = next(w for w in words if w.text == iban.text.split()[0])
    assert abs(first.box.left - iban.box.left) < 0.01 and abs(first.box.top - iban.box.top) < 1
    assert all(w.font_name == "Helvetica" and w.font_size == 10.0 and not w.bold for w in words)
    assert pdf_words(b"not a pdf") == []


def test_engine_and_kit_import_no_vendor_code():
    code = (
        "import sys\n"
        "import connectors.emulation.extraction, connectors.emulation.app\n"
        "import connectors.emulation.runner, connectors.emulation.callbacks\n"
        "vendors = [m for m in sys.modules if m.startswith('connectors.vendors')]\n"
        "assert not vendors, vendors\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


# --------------------------------------------------------------------------- runner and registry


class EchoEmulator(runner.EmulatorCommand):
    kind = "echo"
    title = "Echo API"

    def defaults(self) -> CommonOptions:
        return CommonOptions(rate_limit=5.0, delay=0.5)

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--greeting", default="hi")

    def create_app(self, args: argparse.Namespace, common: dict[str, Any]) -> Any:
        self.made = (args.greeting, CommonOptions(**common))
        return "the app"

    def api_url(self, root: str) -> str:
        return f"{root}/v1"

    def banner(self, args: argparse.Namespace, root: str) -> list[tuple[str, str]]:
        return [("login", f"token {args.greeting}")]


def test_runner_common_and_vendor_options(monkeypatch, capsys):
    served = {}
    monkeypatch.setattr(runner, "serve", lambda app, **kw: served.update(app=app, **kw))
    command = EchoEmulator()
    argv = ["--port", "9001", "--fail-rate", "0.25", "--faults", "503=3,slow", "--greeting", "yo"]
    assert runner.main(command, argv) == 0
    greeting, options = command.made
    assert greeting == "yo" and options.rate_limit == 5.0 and options.delay == 0.5
    assert options.fail_rate == 0.25 and options.fault_mix == (("503", 3.0), ("slow", 1.0))
    assert served == {"app": "the app", "host": "127.0.0.1", "port": 9001}
    printed = capsys.readouterr().out
    assert printed.startswith("Echo API emulator at http://127.0.0.1:9001/v1\n")
    assert "  login:      token yo" in printed and "rate limit 5.0/s" in printed
    assert "http://127.0.0.1:9001/_emulator/requests" in printed
    for bad in (["--fail-rate", "2"], ["--faults", "fire"], ["--delay", "-1"]):
        with pytest.raises(SystemExit):
            runner.common_options(runner.build_parser(command).parse_args(bad))


def test_registry_lists_emulators_without_importing_them():
    assert registry.available()["emulator"]["rossum"].startswith("connectors.vendors.rossum.")
    code = (
        "import sys\n"
        "from connectors import registry\n"
        "registry.available()\n"
        "loaded = [m for m in sys.modules if m.startswith(('connectors.vendors', "
        "'connectors.emulation', 'connectors.sources', 'connectors.destinations'))]\n"
        "assert not loaded, loaded\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)
    command = registry.load("emulator", "rossum")
    assert issubclass(command, runner.EmulatorCommand) and command.kind == "rossum"
    with pytest.raises(registry.UnknownConnector, match="emulator"):
        registry.load("emulator", "nope")


def test_third_party_emulators_come_from_entry_points(monkeypatch):
    from importlib.metadata import EntryPoint

    plugin = EntryPoint("emulator.echo", "tests.test_emulation:EchoEmulator", "docrelay.connectors")
    shadow = EntryPoint("emulator.rossum", "evil:Emulator", "docrelay.connectors")
    monkeypatch.setattr(registry, "entry_points", lambda group: [plugin, shadow])
    registry.available.cache_clear()
    try:
        assert registry.load("emulator", "echo") is EchoEmulator
        assert registry.available()["emulator"]["rossum"] != "evil:Emulator"
    finally:
        registry.available.cache_clear()


def test_cli_emulate_and_connectors(monkeypatch, capsys):
    from daemon import cli

    monkeypatch.setattr(runner, "serve", lambda app, **kw: None)
    assert cli.main(["emulate", "rossum", "--port", "9002", "--rate-limit", "0"]) == 0
    assert capsys.readouterr().out.startswith("Rossum API emulator at http://127.0.0.1:9002/api/v1")
    assert cli.main(["emulate", "nope"]) == cli.EXIT_CONFIG
    error = capsys.readouterr().err
    installed = "deepopinion, gini, konfuzio, odoo, rossum"
    assert f"unknown emulator kind 'nope' (installed: {installed})" in error
    assert cli.main(["connectors"]) == 0
    listed = capsys.readouterr().out.splitlines()
    assert any(line.split()[:2] == ["emulator", "rossum"] for line in listed)
    assert any(line.split()[:2] == ["vendor", "rossum"] for line in listed)
