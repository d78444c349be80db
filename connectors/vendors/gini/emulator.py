"""A local Gini API (documents part) and User Center for trying a docrelay configuration
offline and for tests.

``create_app(EmulatorOptions(...))`` returns a Starlette app that speaks the API as the contract
(``shared/vendor-contracts/gini.md``) distils it, on one port:

* User Center: ``POST``/``GET /oauth/token`` with the client's Basic auth — ``grant_type``
  ``password`` (user e-mail and password), ``client_credentials`` and ``refresh_token``;
  opaque UUID tokens with a short, configurable ``expires_in``.
* API: ``/documents`` — upload (multipart ``file`` part, or the raw body with ``?filename=``)
  answering 201 + ``Location``; document info with ``progress`` PENDING → COMPLETED | ERROR on
  a delay; extractions, candidates and compound line items read from the PDF's text layer by
  the kit's engine; layout; the processed file; feedback (batch PUT/POST, one label PUT,
  DELETE); paginated list; delete. Bearer tokens (any case of the scheme) or the trusted
  backend's Basic client auth + ``X-User-Identifier``. Answers are
  ``application/vnd.gini.v1+json``; links are absolute, on the emulator's own base URL.
* Admin (emulator only, no auth): ``/_emulator/stats``, ``/_emulator/documents``,
  ``/_emulator/tokens/expire``, ``/_emulator/refresh/fail``,
  ``/_emulator/documents/{id}/progress``, and the kit's ``/_emulator/requests`` and ``faults``.

Gini's limits are enforced at upload (files under 10 MiB, text under 512 KiB and UTF-8, no
protected PDFs, the supported formats); only the first 10 pages are read. What the contract
leaves open is decided in ``NOTES.md, "Emulator"``. Throttling, fault injection, the request log
and the clock are the emulator kit's (``connectors.emulation``).
"""

from __future__ import annotations

import base64
import binascii
import json
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from connectors.emulation import extraction as engine
from connectors.emulation import forms
from connectors.emulation.app import admin_body, emulator_app
from connectors.emulation.clock import Clock
from connectors.emulation.options import CommonOptions
from connectors.emulation.requestlog import note
from connectors.filecheck import sniff_mime_type
from connectors.vendors.gini import emulator_content as content
from connectors.vendors.gini.emulator_state import (
    ApiError,
    Document,
    GiniState,
    Token,
    oauth_error,
)

MEDIA_TYPE = "application/vnd.gini.v1+json"
"""What every API answer is (004:123, 327)."""
ACCEPTABLE = frozenset({MEDIA_TYPE, "application/json", "application/*", "*/*"})

MAX_FILE_BYTES = 10 * 1024 * 1024
""""Document file size must be less than 10 MiB" (004:15)."""
MAX_TEXT_BYTES = 512 * 1024
"""Plain text "must be smaller than 512 KiB" (004:18)."""
MULTIPART_OVERHEAD = 64 * 1024
"""What a multipart body may carry beyond its file (boundaries, part headers)."""
DEFAULT_LIMIT, MAX_LIMIT = 20, 250
"""``limit`` when none is given (004:485); the most one page holds (the emulator's choice)."""
METADATA_PREFIX = "x-document-metadata-"

ACCEPTED_TYPES = frozenset(
    {"application/pdf", "image/gif", "image/png", "image/jpeg", "image/tiff", "text/plain"}
)
"""PDF, GIF (non-animated), PNG, JPEG, TIFF and plain text (004:14)."""

FAULTS: tuple[tuple[str, float], ...] = (
    ("502", 0.15),
    ("503", 0.15),
    ("500", 0.10),
    ("500_after", 0.15),
    ("slow", 0.15),
    ("drop_before", 0.10),
    ("drop_during", 0.05),
    ("drop_after", 0.05),
    ("malformed", 0.10),
)
"""The default mix of the kit's fault kinds (``--fail-rate`` draws from it)."""


@dataclass
class EmulatorOptions(CommonOptions):
    """How the emulator behaves. The kit's ``CommonOptions`` bring ``delay`` (seconds from
    upload to COMPLETED/ERROR), ``fail_rate``, ``fault_mix``, ``seed``, ``rate_limit`` and
    ``slow_seconds``, read on every request."""

    fault_mix: tuple[tuple[str, float], ...] = FAULTS
    token_lifetime: float = 3599.0
    """Seconds an access token lives (``expires_in`` shows it rounded down)."""
    refresh_tokens: bool = True
    """Password grants also issue a refresh token (Gini: "if your client is configured")."""
    error_rate: float = 0.0
    """Share of readable uploads (0-1, drawn with ``seed``) that end in ERROR all the same."""
    client_id: str = "client"
    client_secret: str = "secret"  # noqa: S105 - the documented demo client
    username: str = "user@example.com"
    password: str = "secret"  # noqa: S105 - the documented demo login
    ocr: bool = False
    """OCR scans and images with tesseract; without it they end in ERROR."""
    show_metadata: bool = True
    """Document info shows the upload's ``x-document-metadata-*`` headers as ``metadata``
    (an emulator extension, so a client can find an upload again; see NOTES.md, "Emulator")."""

    def check(self) -> None:
        super().check()
        if not 0 <= self.error_rate <= 1:
            raise ValueError("error_rate must be between 0 and 1")
        if self.token_lifetime <= 0:
            raise ValueError("token_lifetime must be above 0")


# --------------------------------------------------------------------------- plumbing


def error_body(status: int, message: str) -> dict[str, Any]:
    """Gini's error body as the emulator invents it (the seed shows none)."""
    return {"message": message, "requestId": str(uuid.uuid4())}


def vnd(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return JSONResponse(body, status, headers=headers, media_type=MEDIA_TYPE)


def _error_response(error: ApiError) -> Response:
    if error.body is not None:
        return JSONResponse(error.body, error.status, headers=error.headers)
    return vnd(error_body(error.status, error.message), error.status, error.headers)


def _check_accept(request: Request) -> None:
    """Answers are the v1 vendor type (or plain JSON, which it is); anything else is 406."""
    accept = request.headers.get("accept", "")
    if not accept.strip():
        return
    offered = {part.split(";", 1)[0].strip().lower() for part in accept.split(",")}
    if not offered & ACCEPTABLE:
        raise ApiError(406, f"Cannot answer {accept}; this API answers {MEDIA_TYPE}")


def base_url(request: Request) -> str:
    """The emulator's own base URL, as the client reached it (Host header)."""
    return str(request.base_url).rstrip("/")


def _basic(request: Request) -> tuple[str, str] | None:
    scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "basic" or not credentials.strip():
        return None
    try:
        client, sep, secret = base64.b64decode(credentials.strip()).decode().partition(":")
    except (binascii.Error, ValueError, UnicodeDecodeError):
        return None
    return (client, secret) if sep else None


CHALLENGE = 'Bearer realm="Gini API"'


def authenticate(request: Request, state: GiniState) -> str:
    """The user a request acts for: a live user token (``Bearer``, any case), or the trusted
    backend's Basic client credentials with ``X-User-Identifier``; else 401."""
    scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer":
        token: Token | None = state.user_for_token(credentials.strip())
        if token is None:
            raise ApiError(
                401,
                "Invalid or expired access token",
                {"WWW-Authenticate": f'{CHALLENGE}, error="invalid_token"'},
            )
        if token.user is None:
            raise ApiError(403, "A client token is for the User Center; use a user's token")
        return token.user
    if scheme.lower() == "basic":
        client = _basic(request)
        if client is None or not state.check_client(*client):
            raise ApiError(401, "Bad client credentials", {"WWW-Authenticate": CHALLENGE})
        user = request.headers.get("x-user-identifier", "").strip()
        if not user:
            raise ApiError(401, "Basic client auth needs X-User-Identifier")
        return f"trusted:{client[0]}:{user}"
    raise ApiError(401, "Full authentication is required", {"WWW-Authenticate": CHALLENGE})


Handler = Callable[[Request, GiniState, str], Awaitable[Response]]


def _api(handler: Handler, *, negotiate: bool = True) -> Any:
    """Wrap an API handler: authenticate, check ``Accept``, answer ``ApiError`` as JSON."""

    async def endpoint(request: Request) -> Response:
        state: GiniState = request.app.state.emulator
        try:
            user = authenticate(request, state)
            if negotiate:
                _check_accept(request)
            return await handler(request, state, user)
        except ApiError as error:
            return _error_response(error)

    return endpoint


async def _json_body(request: Request) -> Any:
    """A strict JSON body (``application/vnd.gini.v1+json`` or ``application/json``)."""
    kind = forms.media_type(request)
    if kind not in (MEDIA_TYPE, "application/json"):
        raise ApiError(415, f"Send {MEDIA_TYPE}, not {kind or 'no Content-Type'}")
    try:
        raw = await forms.read_body(request, 1024 * 1024)
    except forms.BodyError as exc:
        raise ApiError(exc.status, exc.message) from None
    try:
        return json.loads(raw)
    except ValueError as exc:
        raise ApiError(400, f"Malformed JSON: {exc}") from None


# --------------------------------------------------------------------------- User Center


async def token_endpoint(request: Request) -> Response:
    """``/oauth/token``: the client authenticates with Basic; ``grant_type`` in the query or
    the form body. OAuth2 error objects (``{"error", "error_description"}``), as Spring's."""
    state: GiniState = request.app.state.emulator
    try:
        params = dict(request.query_params)
        if request.method == "POST":
            raw = await forms.read_body(request, 64 * 1024)
            params.update(parse_qsl(raw.decode("utf-8", "replace"), keep_blank_values=True))
        client = _basic(request)
        if client is None or not state.check_client(*client):
            raise ApiError(
                401,
                "Bad client credentials",
                {"WWW-Authenticate": 'Basic realm="oauth2/client"'},
                {"error": "unauthorized", "error_description": "Bad client credentials"},
            )
        grant = params.get("grant_type", "")
        if grant == "password":
            answer = state.password_grant(
                client[0], params.get("username", ""), params.get("password", "")
            )
        elif grant == "client_credentials":
            answer = state.client_grant(client[0])
        elif grant == "refresh_token" and request.method == "POST":
            answer = state.refresh_grant(client[0], params.get("refresh_token", ""))
        else:
            raise oauth_error(400, "unsupported_grant_type", f"Unsupported grant type: {grant}")
    except forms.BodyError as exc:
        return JSONResponse({"error": "invalid_request", "error_description": exc.message}, 400)
    except ApiError as error:
        return _error_response(error)
    note(request, grant_type=grant)
    return JSONResponse(answer, headers={"Cache-Control": "no-store", "Pragma": "no-cache"})


# --------------------------------------------------------------------------- documents


def _links(base: str, doc: Document) -> dict[str, str]:
    uri = f"{base}/documents/{doc.id}"
    return {
        "extractions": f"{uri}/extractions",
        "layout": f"{uri}/layout",
        "document": uri,
        "processed": f"{uri}/processed",
    }


def document_json(request: Request, state: GiniState, doc: Document) -> dict[str, Any]:
    """Document information (004:71-100), keys in the seed's order."""
    shown: dict[str, Any] = {
        "id": doc.id,
        "creationDate": int(doc.created_at * 1000),
        "name": doc.name,
        "progress": doc.progress,
        "origin": "UPLOAD",
        "sourceClassification": doc.source_classification,
        "pageCount": doc.page_count,
        "_links": _links(base_url(request), doc),
    }
    if state.options.show_metadata:
        shown["metadata"] = dict(doc.metadata)
    return shown


def _sniff(data: bytes, filename: str, declared: str | None) -> str:
    if data.startswith((b"GIF87a", b"GIF89a")):
        return "image/gif"
    mime = sniff_mime_type(data, filename, declared)
    if mime == "application/octet-stream" and b"\x00" not in data[:4096]:
        try:
            data.decode("utf-8")
        except UnicodeDecodeError:
            return mime
        return "text/plain"
    return mime


def _gif_frames(data: bytes) -> int:
    import io

    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as image:
            return int(getattr(image, "n_frames", 1))
    except (OSError, ValueError, SyntaxError):
        return 1


def _inspect(
    data: bytes, mime: str, ocr: bool, wrongness: engine.WrongnessSettings | None = None
) -> tuple[int, engine.Extraction]:
    """Gini's checks of one file (400/413 when it breaks a limit), its page count and what
    the engine reads of it (``wrongness``: the options, for fields wrong on purpose)."""
    if mime == "text/plain":
        if len(data) >= MAX_TEXT_BYTES:
            raise ApiError(413, "Plain text documents must be smaller than 512 KiB")
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            raise ApiError(400, "Plain text documents have to be encoded in UTF-8") from None
        pages = max(1, len([p for p in text.split("\f") if p.strip()]))
        return pages, content.extract(data, mime, wrongness=wrongness)
    if mime == "image/gif" and _gif_frames(data) > 1:
        raise ApiError(400, "Animated GIF files are not supported")
    pages = 1
    if mime == "application/pdf":
        facts = engine.pdf_facts(data)
        if facts.protection is not None:
            raise ApiError(
                400, "PDF files must not have any security restrictions such as passwords"
            )
        pages = facts.pages or 0
    return pages, content.extract(data, mime, ocr=ocr, wrongness=wrongness)


async def create_document(request: Request, state: GiniState, user: str) -> Response:
    """``POST /documents``: multipart (part ``file``) or the raw body with ``?filename=``;
    201 with ``Location``, no body."""
    multipart = forms.media_type(request) == "multipart/form-data"
    try:
        body = await forms.read_body(
            request,
            MAX_FILE_BYTES - 1 + (MULTIPART_OVERHEAD if multipart else 0),
            too_large="Document file size must be less than 10 MiB",
        )
        if multipart:
            parts = forms.parse_multipart(request, body)
            file = next((p for p in parts if p.name == "file"), None)
            if file is None:
                raise ApiError(400, "Multipart upload without a part named file")
            data, name, declared = file.data, file.filename or "document", file.content_type
        else:
            data, name, declared = body, request.query_params.get("filename") or "document", None
    except forms.BodyError as exc:
        raise ApiError(exc.status, exc.message) from None
    if len(data) >= MAX_FILE_BYTES:
        raise ApiError(413, "Document file size must be less than 10 MiB")
    if not data:
        raise ApiError(400, "The document is empty")
    mime = _sniff(data, name, declared)
    if mime not in ACCEPTED_TYPES:
        raise ApiError(400, f"Unsupported file format {mime}")
    pages, read = await run_in_threadpool(_inspect, data, mime, state.options.ocr, state.options)
    metadata = {
        key[len(METADATA_PREFIX) :]: value
        for key, value in request.headers.items()
        if key.startswith(METADATA_PREFIX)
    }
    doc = state.create_document(
        owner=user,
        name=name,
        mime_type=mime,
        data=data,
        page_count=pages,
        read=read,
        metadata=metadata,
    )
    note(request, document=doc.id, filename=name, metadata=metadata)
    location = f"{base_url(request)}/documents/{doc.id}"
    return Response(status_code=201, headers={"Location": location})


def _number(request: Request, name: str, default: int) -> int:
    text = request.query_params.get(name)
    if text is None or text == "":
        return default
    try:
        value = int(text)
    except ValueError:
        raise ApiError(400, f"{name} must be a whole number") from None
    if value < 0:
        raise ApiError(400, f"{name} must not be negative")
    return value


async def list_documents(request: Request, state: GiniState, user: str) -> Response:
    """``GET /documents?limit=&offset=``: ``{"totalCount", "documents"}``, newest first."""
    limit = min(_number(request, "limit", DEFAULT_LIMIT), MAX_LIMIT)
    offset = _number(request, "offset", 0)
    with state.lock:
        docs = state.documents_of(user)
        page = [document_json(request, state, d) for d in docs[offset : offset + limit]]
    return vnd({"totalCount": len(docs), "documents": page})


def _doc_id(request: Request) -> str:
    return str(request.path_params["id"])


async def get_document(request: Request, state: GiniState, user: str) -> Response:
    with state.lock:
        doc = state.document(user, _doc_id(request))
        headers = {f"{METADATA_PREFIX}{k}": v for k, v in doc.metadata.items()}
        return vnd(document_json(request, state, doc), headers=headers)


async def delete_document(request: Request, state: GiniState, user: str) -> Response:
    state.delete_document(user, _doc_id(request))
    return Response(status_code=204)


async def get_extractions(request: Request, state: GiniState, user: str) -> Response:
    with state.lock:
        doc = state.completed(user, _doc_id(request), "extractions")
        assert doc.result is not None
        return vnd(doc.result)


async def _feedback_document(request: Request, state: GiniState, user: str) -> Document:
    """The document feedback is for: it must exist and be COMPLETED (else 404)."""
    return state.completed(user, _doc_id(request), "extractions")


async def batch_feedback(request: Request, state: GiniState, user: str) -> Response:
    """``PUT``/``POST /documents/{id}/extractions``: ``{"feedback": {label: {value, box?}}}``
    (and optionally ``compoundFeedback``); 204, 404 for an unknown label, 422 for a value
    that breaks its entity's rules."""
    doc = await _feedback_document(request, state, user)
    body = await _json_body(request)
    if not isinstance(body, dict) or not isinstance(body.get("feedback"), dict):
        raise ApiError(400, "Send an object with feedback: a mapping of labels to extractions")
    compound = body.get("compoundFeedback")
    if compound is not None and not isinstance(compound, dict):
        raise ApiError(400, "compoundFeedback must be a mapping of labels to lists")
    state.batch_feedback(doc, body["feedback"], compound, request.method)
    note(request, document=doc.id, labels=sorted(body["feedback"]))
    return Response(status_code=204)


async def label_feedback(request: Request, state: GiniState, user: str) -> Response:
    doc = await _feedback_document(request, state, user)
    label = str(request.path_params["label"])
    if label not in content.LABELS:
        raise ApiError(404, f"Unknown label {label}")
    state.label_feedback(doc, label, await _json_body(request))
    note(request, document=doc.id, labels=[label])
    return Response(status_code=204)


async def delete_label(request: Request, state: GiniState, user: str) -> Response:
    doc = await _feedback_document(request, state, user)
    state.delete_label(doc, str(request.path_params["label"]))
    return Response(status_code=204)


async def get_layout(request: Request, state: GiniState, user: str) -> Response:
    with state.lock:
        doc = state.completed(user, _doc_id(request), "layout")
        if doc.layout is not None:
            return vnd(doc.layout)
        data, mime, pages = doc.data, doc.mime_type, doc.page_count
    words: list[engine.PageWords] = []
    if mime == "application/pdf":
        words = await run_in_threadpool(engine.pdf_words, data, max_pages=content.MAX_PAGES)
    shown = content.layout(words, pages)
    with state.lock:
        doc.layout = shown
    return vnd(shown)


async def get_processed(request: Request, state: GiniState, user: str) -> Response:
    """The file processing used: for native PDFs (and everything, as the emulator does not
    deskew) the upload itself, as its own type."""
    with state.lock:
        doc = state.completed(user, _doc_id(request), "processed document")
        return Response(doc.data, media_type=doc.mime_type)


# --------------------------------------------------------------------------- admin


def _admin(handler: Callable[[Request, GiniState, dict[str, Any]], Any]) -> Any:
    async def endpoint(request: Request) -> Response:
        state: GiniState = request.app.state.emulator
        try:
            try:
                body = await admin_body(request)
            except ValueError as exc:
                raise ApiError(400, str(exc)) from None
            return JSONResponse(handler(request, state, body))
        except ApiError as error:
            return JSONResponse({"detail": error.message}, error.status)

    return endpoint


def _admin_stats(request: Request, state: GiniState, body: dict[str, Any]) -> Any:
    return state.stats()


def _admin_documents(request: Request, state: GiniState, body: dict[str, Any]) -> Any:
    with state.lock:
        state.tick()
        return {"results": [state.admin_document(d) for d in state.documents.values()]}


def _admin_progress(request: Request, state: GiniState, body: dict[str, Any]) -> Any:
    with state.lock:
        doc = state.force_progress(_doc_id(request), body.get("progress"))
        return state.admin_document(doc)


def _admin_expire(request: Request, state: GiniState, body: dict[str, Any]) -> Any:
    return {"expired": state.expire_tokens()}


def _admin_refresh_fail(request: Request, state: GiniState, body: dict[str, Any]) -> Any:
    fail = body.get("fail")
    if not isinstance(fail, bool):
        raise ApiError(400, 'Send {"fail": true} or {"fail": false}')
    with state.lock:
        state.refresh_fails = fail
    return {"fail": fail}


# --------------------------------------------------------------------------- the app


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return vnd(error_body(exc.status_code, str(exc.detail)), exc.status_code, exc.headers)


def _routes() -> list[Route]:
    doc = "/documents/{id}"
    table: list[tuple[str, Handler, list[str], bool]] = [
        ("/documents", list_documents, ["GET"], True),
        ("/documents", create_document, ["POST"], True),
        (doc, get_document, ["GET"], True),
        (doc, delete_document, ["DELETE"], True),
        (f"{doc}/extractions", get_extractions, ["GET"], True),
        (f"{doc}/extractions", batch_feedback, ["PUT", "POST"], True),
        (f"{doc}/extractions/{{label}}", label_feedback, ["PUT"], True),
        (f"{doc}/extractions/{{label}}", delete_label, ["DELETE"], True),
        (f"{doc}/layout", get_layout, ["GET"], True),
        (f"{doc}/processed", get_processed, ["GET"], False),
    ]
    routes = [Route("/oauth/token", token_endpoint, methods=["GET", "POST"])]
    routes += [
        Route(path, _api(handler, negotiate=negotiate), methods=methods)
        for path, handler, methods, negotiate in table
    ]
    admin = [
        ("/_emulator/stats", _admin_stats, ["GET"]),
        ("/_emulator/documents", _admin_documents, ["GET"]),
        ("/_emulator/documents/{id}/progress", _admin_progress, ["POST"]),
        ("/_emulator/tokens/expire", _admin_expire, ["POST"]),
        ("/_emulator/refresh/fail", _admin_refresh_fail, ["POST"]),
    ]
    routes += [Route(path, _admin(handler), methods=methods) for path, handler, methods in admin]
    return routes


def create_app(options: EmulatorOptions | None = None, *, clock: Clock | None = None) -> Starlette:
    """The emulator as an ASGI app; its state is ``app.state.emulator``. ``clock`` (the
    system clock by default) drives processing and token expiry."""
    options = options or EmulatorOptions()
    state = GiniState(options, clock)
    return emulator_app(
        _routes(),
        state=state,
        requests=state.requests,
        faults=state.faults,
        error_body=error_body,
        error_media_type=MEDIA_TYPE,
        exception_handlers={HTTPException: _http_error},
    )
