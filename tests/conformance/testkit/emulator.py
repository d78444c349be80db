"""The testkit vendor's emulator: a small document-AI API built on the emulator kit.

It does what none of the built-in vendors does yet, so the engine's contract is exercised end
to end before the vendors that need it are built: a synchronous upload whose answer is the
result (DeepOpinion), a person's review before the result exists (Konfuzio's split) or after
it (a human-in-the-loop check of low-confidence values), unsigned callbacks whose URL carries
an unguessable token, and feedback refused per field.

API (JSON, ``Authorization: Bearer <token>`` from ``POST /api/login``):

* ``POST /api/documents`` multipart ``file`` + ``external_id``, ``mode`` (``async``/``sync``),
  ``callback_url``: async answers 201 ``{id, status: "processing"}``; sync waits for the
  extraction and answers 200 ``{id, status, result}``.
* ``GET /api/documents?external_id=N`` (look-up), ``GET /api/documents/{id}``
  (``status`` processing | review | ready | rejected, ``review`` {id, state, reason}),
  ``GET /api/documents/{id}/result``, ``POST /api/documents/{id}/feedback``.
* Admin: ``POST /_emulator/documents/{id}/review`` ``{"set": {field: text}}`` finishes a review
  (and sends the callback), ``GET /_emulator/documents``.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import secrets
import threading
import uuid
from typing import Any, Literal

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from connectors.emulation.app import emulator_app
from connectors.emulation.callbacks import Callback, CallbackDispatcher
from connectors.emulation.clock import SYSTEM_CLOCK, Clock
from connectors.emulation.extraction import extract
from connectors.emulation.faults import FaultInjector
from connectors.emulation.forms import BodyError, parse_multipart, read_body
from connectors.emulation.options import CommonOptions
from connectors.emulation.requestlog import RequestLog, note
from connectors.filecheck import sniff_mime_type

PREFIX = "/api"
MAX = 20 * 1024 * 1024
"""The largest upload the emulator takes."""


@dataclasses.dataclass
class Options(CommonOptions):
    delay: float = 0.3
    """Seconds of asynchronous processing."""
    sync_delay: float = 0.0
    """Seconds a synchronous extraction keeps the upload request open."""
    review: Literal["none", "before", "after"] = "none"
    """``before``: documents wait for a person (a split to confirm) before there is a result;
    ``after``: results come with low confidence and wait for a person's check."""
    user: str = "kit"
    password: str = "kit-secret"
    rate_limit: float = 0.0


@dataclasses.dataclass
class Document:
    id: int
    external_id: str
    filename: str
    mime_type: str
    data: bytes
    callback_url: str | None
    ready_at: float
    status: str = "processing"
    review: dict[str, Any] | None = None
    result: dict[str, Any] | None = None
    error: str | None = None
    locked: set[str] = dataclasses.field(default_factory=set)
    """Fields whose feedback is refused (as if already posted downstream)."""
    feedback: list[dict[str, Any]] = dataclasses.field(default_factory=list)

    def view(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "external_id": self.external_id,
            "filename": self.filename,
            "status": self.status,
            "review": self.review,
            "error": self.error,
        }


class State:
    def __init__(self, options: Options, clock: Clock) -> None:
        self.options = options
        self.clock = clock
        self.lock = threading.RLock()
        self.documents: dict[int, Document] = {}
        self.ids = itertools.count(1)
        self.tokens: set[str] = set()
        self.requests = RequestLog(clock)
        self.faults = FaultInjector(options, clock)
        self.callbacks = CallbackDispatcher(clock=clock, name="testkit-callbacks")

    # ------------------------------------------------------------------ lifecycle

    def tick(self) -> None:
        now = self.clock.now()
        with self.lock:
            for doc in self.documents.values():
                if doc.status == "processing" and now >= doc.ready_at:
                    self._finish(doc)

    def _finish(self, doc: Document) -> None:
        read = extract(doc.data, doc.mime_type, wrongness=self.options)
        if not read.ok:
            doc.status, doc.error = "rejected", read.error
            return
        review = self.options.review
        doc.result = _result(doc, read, needs_review=review == "after")
        if review == "before":
            doc.status = "review"
            doc.review = {"id": f"R{doc.id}", "state": "pending", "reason": "confirm the split"}
            return
        doc.status = "ready"
        if review == "after":
            doc.review = {
                "id": f"R{doc.id}",
                "state": "pending",
                "reason": "values below the confidence thresholds",
            }
        self._callback(doc, "document.ready")

    def finish_review(self, doc_id: int, changes: dict[str, str]) -> Document:
        with self.lock:
            doc = self.documents[doc_id]
            assert doc.review is not None and doc.result is not None, "no review pending"
            for value in doc.result["fields"]:
                if value["label"] in changes:
                    value["text"] = changes[value["label"]]
                value["confidence"] = 1.0
            doc.result["needs_review"] = False
            doc.result["quality"] = {"all_confidence_thresholds_met": True}
            doc.review = {**doc.review, "state": "done"}
            doc.status = "ready"
            self._callback(doc, "review.completed")
            return doc

    def _callback(self, doc: Document, event: str) -> None:
        if not doc.callback_url:
            return
        body = {
            "event": event,
            "event_id": str(uuid.uuid4()),
            "sent_at": self.clock.now(),
            "document": doc.id,
            "review_id": doc.review["id"] if doc.review else None,
        }
        self.callbacks.submit(
            Callback(url=doc.callback_url, body=json.dumps(body).encode(), tags={"event": event})
        )


def _result(doc: Document, read: Any, *, needs_review: bool) -> dict[str, Any]:
    """Fields with boxes as fractions of the page (the vendor's unit)."""
    sizes = {p.number: (p.width, p.height) for p in read.pages}

    def box(found: Any) -> list[float] | None:
        size = sizes.get(found.page)
        if found.box is None or not size or not size[0] or not size[1]:
            return None
        w, h = size
        b = found.box
        return [
            round(b.left / w, 5),
            round(b.top / h, 5),
            round(b.right / w, 5),
            round(b.bottom / h, 5),
        ]

    confidence = 0.42 if needs_review else 0.97
    return {
        "document": doc.id,
        "fields": [
            {
                "label": name,
                "text": found.text,
                "confidence": confidence if found.confidence is None else found.confidence,
                "page": found.page,
                "box": box(found),
            }
            for name, found in read.fields.items()
        ],
        "line_items": [
            [
                {"label": label, "text": cell.text, "page": cell.page, "box": box(cell)}
                for label, cell in item.cells.items()
            ]
            for item in read.line_items
        ],
        "needs_review": needs_review,
        "review_id": f"R{doc.id}" if needs_review else None,
        "quality": {"all_confidence_thresholds_met": not needs_review},
    }


# --------------------------------------------------------------------------- HTTP


def _json(status: int, body: Any) -> JSONResponse:
    return JSONResponse(body, status_code=status)


def create_app(options: Options | None = None, *, clock: Clock | None = None) -> Any:
    options = options or Options()
    state = State(options, clock or SYSTEM_CLOCK)

    def authorized(request: Request) -> bool:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        return scheme.lower() == "bearer" and token in state.tokens

    def guarded(handler: Any) -> Any:
        async def endpoint(request: Request) -> Response:
            if not authorized(request):
                return _json(401, {"error": "unauthorized"})
            state.tick()
            return await handler(request)

        return endpoint

    async def login(request: Request) -> Response:
        body = await request.json()
        if (body.get("user"), body.get("password")) != (options.user, options.password):
            return _json(401, {"error": "wrong user or password"})
        token = secrets.token_hex(16)
        state.tokens.add(token)
        return _json(200, {"token": token})

    async def account(request: Request) -> Response:
        return _json(200, {"user": options.user, "documents": len(state.documents)})

    async def upload(request: Request) -> Response:
        try:
            parts = {p.name: p for p in parse_multipart(request, await read_body(request, MAX))}
        except BodyError as exc:
            return _json(exc.status, {"error": exc.message})
        file = parts.get("file")
        if file is None or file.filename is None:
            return _json(400, {"error": "file missing"})

        def text(name: str) -> str:
            return parts[name].text if name in parts else ""

        mode = text("mode") or "async"
        with state.lock:
            doc = Document(
                id=next(state.ids),
                external_id=text("external_id"),
                filename=file.filename,
                mime_type=sniff_mime_type(file.data, file.filename, file.content_type),
                data=file.data,
                callback_url=text("callback_url") or None,
                ready_at=state.clock.now() + (0 if mode == "sync" else options.delay),
            )
            state.documents[doc.id] = doc
        note(request, document=doc.id, external_id=doc.external_id, mode=mode)
        if mode != "sync":
            return _json(201, doc.view())
        await state.clock.async_sleep(options.sync_delay)
        with state.lock:
            state._finish(doc)
            return _json(200, {**doc.view(), "result": doc.result})

    async def documents(request: Request) -> Response:
        wanted = request.query_params.get("external_id")
        with state.lock:
            found = [d.view() for d in state.documents.values() if wanted in (None, d.external_id)]
        return _json(200, {"results": found})

    def _doc(request: Request) -> Document | None:
        return state.documents.get(int(request.path_params["id"]))

    async def document(request: Request) -> Response:
        doc = _doc(request)
        return _json(404, {"error": "no such document"}) if doc is None else _json(200, doc.view())

    async def result(request: Request) -> Response:
        doc = _doc(request)
        if doc is None:
            return _json(404, {"error": "no such document"})
        if doc.result is None or doc.status in ("processing", "review"):
            return _json(409, {"error": f"the document is {doc.status}"})
        return _json(200, doc.result)

    async def feedback(request: Request) -> Response:
        doc = _doc(request)
        if doc is None:
            return _json(404, {"error": "no such document"})
        body = await request.json()
        outcomes = []
        with state.lock:
            for correction in body.get("corrections", []):
                name = correction.get("field")
                refused = name in doc.locked
                if not refused:
                    doc.feedback.append(correction)
                reason = "the value was posted already; it cannot change" if refused else None
                outcomes.append({"field": name, "accepted": not refused, "reason": reason})
        return _json(200, {"outcomes": outcomes})

    async def admin_review(request: Request) -> Response:
        body = await request.json()
        doc = state.finish_review(int(request.path_params["id"]), dict(body.get("set") or {}))
        return _json(200, doc.view())

    async def admin_lock(request: Request) -> Response:
        body = await request.json()
        with state.lock:
            state.documents[int(request.path_params["id"])].locked = set(body.get("fields", []))
        return _json(200, {})

    async def admin_documents(request: Request) -> Response:
        state.tick()
        with state.lock:
            shown = [{**d.view(), "feedback": d.feedback} for d in state.documents.values()]
        return _json(200, {"results": shown})

    routes = [
        Route(f"{PREFIX}/login", login, methods=["POST"]),
        Route(f"{PREFIX}/account", guarded(account), methods=["GET"]),
        Route(f"{PREFIX}/documents", guarded(upload), methods=["POST"]),
        Route(f"{PREFIX}/documents", guarded(documents), methods=["GET"]),
        Route(f"{PREFIX}/documents/{{id:int}}", guarded(document), methods=["GET"]),
        Route(f"{PREFIX}/documents/{{id:int}}/result", guarded(result), methods=["GET"]),
        Route(f"{PREFIX}/documents/{{id:int}}/feedback", guarded(feedback), methods=["POST"]),
        Route("/_emulator/documents/{id:int}/review", admin_review, methods=["POST"]),
        Route("/_emulator/documents/{id:int}/lock", admin_lock, methods=["POST"]),
        Route("/_emulator/documents", admin_documents, methods=["GET"]),
    ]
    return emulator_app(
        routes,
        state=state,
        requests=state.requests,
        faults=state.faults,
        callbacks=state.callbacks,
        api_prefix=PREFIX,
        on_start=state.callbacks.start,
        on_stop=state.callbacks.stop,
    )
