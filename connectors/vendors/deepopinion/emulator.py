"""A local DeepOpinion API for trying a docrelay configuration offline and for tests.

``create_app(EmulatorOptions(...))`` returns a Starlette app that speaks the API as NOTES.md
("The API as docrelay reads it") fixes it (contract ``shared/vendor-contracts/deepopinion.md``,
seed 002):

* Auth: ``POST /auth/register`` and ``/auth/login`` answer an HS256 JWT with ``exp``; every
  other route needs it (``Authorization: Bearer <jwt>`` or the bare token), else 401.
* The seeded workspace 1, project 1 and model 1; ``GET /models`` (envelope) and the project's
  models (bare array).
* The synchronous extraction: ``POST /organizations/{o}/projects/{p}/models/{m}/extract``,
  multipart ``file``, answering after ``--delay`` seconds without holding up other requests;
  values read from the PDF's text layer by the kit's engine (``emulator_content``).
* HITLs and their reviews; reviews are created for low-confidence documents while the model
  has a live HITL.
* Admin (emulator only, no auth): ``POST /_emulator/reviews/complete`` (completes a
  document's reviews and sends the HITL's webhook), ``GET /_emulator/stats``,
  ``GET /_emulator/documents``, and the kit's ``/_emulator/requests``, ``faults`` and
  ``callbacks``.

Errors are ``{"message", "status": "FAIL"}``, the fault middleware's too. Every choice the
spec leaves open is listed in NOTES.md under "Emulator".
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from connectors.emulation import extraction as engine
from connectors.emulation import forms, wrongness
from connectors.emulation.app import admin_body, emulator_app
from connectors.emulation.callbacks import DEFAULT_RETRY_DELAYS
from connectors.emulation.clock import Clock
from connectors.emulation.options import CommonOptions
from connectors.emulation.requestlog import note
from connectors.filecheck import sniff_mime_type
from connectors.vendors.deepopinion import emulator_content as content
from connectors.vendors.deepopinion.emulator_state import (
    MODEL_ID,
    MODEL_NAME,
    ApiError,
    DeepOpinionState,
    User,
)

MAX_FILE_BYTES = 50 * 1024 * 1024
"""Files of 50 MiB or more are refused with 413 (ours)."""
MULTIPART_OVERHEAD = 64 * 1024
ACCEPTED_TYPES = frozenset(
    {"application/pdf", "image/jpeg", "image/png", "image/tiff", "image/webp"}
)
"""pdf, jpeg/jpg, png, tiff, webp (002:733-738), told by the file's first bytes."""
DEFAULT_LIMIT = 10
TRUE = frozenset({"true", "1", "yes"})


@dataclass
class EmulatorOptions(CommonOptions):
    """How the emulator behaves. The kit's ``CommonOptions`` bring ``delay`` (seconds an
    extraction call takes), ``fail_rate``, ``fault_mix``, ``seed``, ``rate_limit`` and
    ``slow_seconds``, read on every request."""

    delay: float = 2.0
    token_lifetime: float = 1_209_600.0
    """Seconds from a token's ``iat`` to its ``exp`` (14 days)."""
    threshold: float = 90.0
    """Every label's ``expected_confidence``, in percent."""
    low_confidence_rate: float = 0.2
    """Share of files (by SHA-256 and ``seed``) with one or two values under the threshold."""
    username: str = "user@example.com"
    password: str = "secret"  # noqa: S105 - the documented demo login
    webhook_retry_delays: tuple[float, ...] = DEFAULT_RETRY_DELAYS
    """Waits before each webhook retry (the kit's 2, 4, 8, 16 s)."""

    def check(self) -> None:
        super().check()
        if self.token_lifetime <= 0:
            raise ValueError("token_lifetime must be above 0")
        if not 0 <= self.threshold <= 100:
            raise ValueError("threshold must be between 0 and 100")
        if not 0 <= self.low_confidence_rate <= 1:
            raise ValueError("low_confidence_rate must be between 0 and 1")


# --------------------------------------------------------------------------- plumbing


def error_body(status: int, message: str) -> dict[str, Any]:
    """DeepOpinion's error body as the spec fixes it (ours)."""
    return {"message": message, "status": "FAIL"}


def _error_response(error: ApiError) -> Response:
    return JSONResponse(error_body(error.status, error.message), error.status)


def authenticate(request: Request, state: DeepOpinionState) -> User:
    """The user of a ``Bearer <jwt>`` (any case of the scheme) or bare-token header."""
    header = request.headers.get("authorization", "").strip()
    scheme, _, rest = header.partition(" ")
    token = rest.strip() if scheme.lower() == "bearer" else header
    if not token:
        raise ApiError(401, "Invalid token. Please log in again.")
    return state.user_for_token(token)


Handler = Callable[[Request, DeepOpinionState, User], Awaitable[Response]]


def _api(handler: Handler) -> Any:
    """Wrap an API handler: authenticate, check the path's workspace and project, answer
    ``ApiError`` as DeepOpinion's error body."""

    async def endpoint(request: Request) -> Response:
        state: DeepOpinionState = request.app.state.emulator
        try:
            user = authenticate(request, state)
            params = request.path_params
            if "organization_id" in params:
                state.check_project(params["organization_id"], params["project_id"])
            return await handler(request, state, user)
        except ApiError as error:
            return _error_response(error)

    return endpoint


async def _json_object(request: Request) -> dict[str, Any]:
    try:
        raw = await forms.read_body(request, 1024 * 1024)
    except forms.BodyError as exc:
        raise ApiError(exc.status, exc.message) from None
    try:
        body = json.loads(raw)
    except ValueError:
        raise ApiError(400, "Send a JSON object.") from None
    if not isinstance(body, dict):
        raise ApiError(400, "Send a JSON object.")
    return body


def _text(body: dict[str, Any], name: str, *, limit: int | None = None) -> str:
    value = body.get(name)
    if not isinstance(value, str) or not value.strip():
        raise ApiError(400, f"{name} is required.")
    if limit is not None and len(value) > limit:
        raise ApiError(400, f"{name} must be at most {limit} characters.")
    return value


def _flag(request: Request, name: str) -> bool:
    return request.query_params.get(name, "").strip().lower() in TRUE


def _number(request: Request, name: str, default: int) -> int:
    text = request.query_params.get(name)
    if text is None or text == "":
        return default
    try:
        value = int(text)
    except ValueError:
        raise ApiError(400, f"{name} must be a whole number.") from None
    if value < 0:
        raise ApiError(400, f"{name} must not be negative.")
    return value


# --------------------------------------------------------------------------- auth


async def register(request: Request) -> Response:
    """``POST /auth/register`` (002:2694-2715): 200 ``status: CREATED``."""
    state: DeepOpinionState = request.app.state.emulator
    try:
        body = await _json_object(request)
        email = _text(body, "email")
        password = _text(body, "password")
        if "@" not in email:
            raise ApiError(400, "email is not an e-mail address.")
        if len(password) < 8:
            raise ApiError(400, "password must have at least 8 characters.")
        names = [body.get("first_name") or "", body.get("last_name") or ""]
        if not all(isinstance(n, str) for n in names):
            raise ApiError(400, "first_name and last_name must be strings.")
        user = state.register(names[0], names[1], email, password)
    except ApiError as error:
        return _error_response(error)
    note(request, user=user.id)
    return JSONResponse(
        {
            "auth_token": state.issue_token(user),
            "message": "Successfully registered.",
            "status": "CREATED",
        }
    )


async def login(request: Request) -> Response:
    """``POST /auth/login`` (002:2716-2729): 200 ``status: OK``; 401 for wrong credentials."""
    state: DeepOpinionState = request.app.state.emulator
    try:
        body = await _json_object(request)
        email, password = body.get("email"), body.get("password")
        if not isinstance(email, str) or not isinstance(password, str):
            raise ApiError(401, "Invalid email or password.")
        user = state.login(email, password)
    except ApiError as error:
        return _error_response(error)
    note(request, user=user.id)
    return JSONResponse(
        {
            "auth_token": state.issue_token(user),
            "message": "Successfully logged in.",
            "status": "OK",
        }
    )


# --------------------------------------------------------------------------- models


async def list_models(request: Request, state: DeepOpinionState, user: User) -> Response:
    """``GET /models?offset=&limit=&type=&search=`` (002:1854-1891); ``count`` is the number
    of models on this page."""
    offset = _number(request, "offset", 0)
    limit = _number(request, "limit", DEFAULT_LIMIT)
    models = [state.model_json()]
    kind = request.query_params.get("type")
    search = request.query_params.get("search")
    models = [
        m
        for m in models
        if (not kind or m["type"] == kind.upper())
        and (not search or search.lower() in m["name"].lower())
    ]
    page = models[offset : offset + limit]
    return JSONResponse(
        {
            "models": page,
            "has_more": offset + len(page) < len(models),
            "offset": offset,
            "limit": limit,
            "count": len(page),
        }
    )


async def project_models(request: Request, state: DeepOpinionState, user: User) -> Response:
    return JSONResponse([state.model_json()])


# --------------------------------------------------------------------------- extraction


async def _upload(request: Request) -> tuple[bytes, str]:
    """The ``file`` part of a multipart body and its file name; 400/413/415 as the spec says."""
    if forms.media_type(request) != "multipart/form-data":
        raise ApiError(400, "Send multipart/form-data with a part named file.")
    try:
        body = await forms.read_body(
            request,
            MAX_FILE_BYTES - 1 + MULTIPART_OVERHEAD,
            too_large="The file must be smaller than 50 MiB.",
        )
        parts = forms.parse_multipart(request, body)
    except forms.BodyError as exc:
        raise ApiError(exc.status, exc.message) from None
    file = next((p for p in parts if p.name == "file"), None)
    if file is None:
        raise ApiError(400, "The part file is missing.")
    if len(file.data) >= MAX_FILE_BYTES:
        raise ApiError(413, "The file must be smaller than 50 MiB.")
    if not file.data:
        raise ApiError(400, "The file is empty.")
    return file.data, file.filename or "document"


def _read(data: bytes, mime: str, state: DeepOpinionState) -> content.Reading:
    """The scored reading of a file (worker thread); the same bytes are read only once."""
    options = state.options
    key = hashlib.sha256(data).hexdigest() + wrongness.fingerprint(options)
    cached = state.cached_reading(key)
    if cached is not None:
        return cached
    reading = content.read_file(data, mime, options)
    content.score(
        reading,
        seed=options.seed,
        threshold=options.threshold,
        low_confidence_rate=options.low_confidence_rate,
    )
    state.keep_reading(reading, key)
    return reading


async def extract(request: Request, state: DeepOpinionState, user: User) -> Response:
    """The synchronous extraction (002:728-805): answers after ``delay`` seconds, which run
    on the event loop (an async sleep) while the file is read in a worker thread, so other
    calls go on meanwhile."""
    params = request.path_params
    model_id = params["model_id"]
    state.check_model(params["organization_id"], params["project_id"], model_id)
    data, name = await _upload(request)
    mime = sniff_mime_type(data, "", None)
    if mime not in ACCEPTED_TYPES:
        raise ApiError(415, f"Unsupported file format {mime}; send pdf, jpeg, png, tiff or webp.")
    if mime == "application/pdf":
        facts = await run_in_threadpool(engine.pdf_facts, data)
        if facts.protection == "password" or facts.error is not None:
            raise ApiError(400, f"The PDF cannot be read: {facts.error or 'it needs a password'}.")
    doc = state.start_document(name, hashlib.sha256(data).hexdigest())
    note(request, document=doc.id, filename=name)
    _, reading = await asyncio.gather(
        state.clock.async_sleep(state.options.delay),
        run_in_threadpool(_read, data, mime, state),
    )
    annotated: list[str] = []
    if _flag(request, "return_annotated_pages"):
        annotated = await run_in_threadpool(content.annotated_pages, data, mime, reading)
    hitl = state.finish_document(doc, reading, model_id)
    threshold = state.options.threshold
    shown = content.document_json(
        reading,
        name,
        threshold=threshold,
        with_bboxes=_flag(request, "return_bboxes"),
        annotated=annotated,
        hitl=hitl,
    )
    flags = reading.flags(threshold)
    return JSONResponse(
        {
            "model": MODEL_NAME,
            **flags,
            "total_credits_used": shown["credits_used"],
            "documents": [shown],
            "labels": content.labels_json(),
        }
    )


# --------------------------------------------------------------------------- HITL


def _hitl_fields(body: dict[str, Any], *, creating: bool) -> dict[str, Any]:
    """The HITL fields of a POST/PUT body, checked (ours: PUT changes only what it names)."""
    fields: dict[str, Any] = {}
    if creating or "name" in body:
        fields["name"] = _text(body, "name", limit=120)
    if body.get("description") is not None:
        fields["description"] = body["description"]
        if not isinstance(fields["description"], str) or len(fields["description"]) > 255:
            raise ApiError(400, "description must be a string of at most 255 characters.")
    for name in ("assigned_user_id", "model_id"):
        if name in body:
            value = body[name]
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
                raise ApiError(400, f"{name} must be an integer.")
            fields[name] = value
    if "model_id" in fields and fields["model_id"] != MODEL_ID:
        raise ApiError(404, f"Model {fields['model_id']} not found.")
    if "is_live" in body:
        if not isinstance(body["is_live"], bool):
            raise ApiError(400, "is_live must be true or false.")
        fields["is_live"] = body["is_live"]
    if "webhook_url" in body:
        url = body["webhook_url"]
        if url is not None and (not isinstance(url, str) or len(url) > 255):
            raise ApiError(400, "webhook_url must be a string of at most 255 characters.")
        fields["webhook_url"] = url or None
    return fields


async def list_hitls(request: Request, state: DeepOpinionState, user: User) -> Response:
    with state.lock:
        return JSONResponse([h.as_json() for h in state.hitls.values()])


async def create_hitl(request: Request, state: DeepOpinionState, user: User) -> Response:
    fields = _hitl_fields(await _json_object(request), creating=True)
    hitl = state.create_hitl(fields)
    note(request, hitl=hitl.id)
    return JSONResponse(hitl.as_json(), status_code=201)


async def get_hitl(request: Request, state: DeepOpinionState, user: User) -> Response:
    return JSONResponse(state.hitl(request.path_params["hitl_id"]).as_json())


async def update_hitl(request: Request, state: DeepOpinionState, user: User) -> Response:
    hitl_id = request.path_params["hitl_id"]
    state.hitl(hitl_id)
    fields = _hitl_fields(await _json_object(request), creating=False)
    return JSONResponse(state.update_hitl(hitl_id, fields).as_json())


async def assign_hitl(request: Request, state: DeepOpinionState, user: User) -> Response:
    hitl_id = request.path_params["hitl_id"]
    state.hitl(hitl_id)
    body = await _json_object(request)
    if "assigned_user_id" not in body:
        raise ApiError(400, "assigned_user_id is required.")
    fields = _hitl_fields({"assigned_user_id": body["assigned_user_id"]}, creating=False)
    return JSONResponse(state.update_hitl(hitl_id, fields).as_json())


async def list_reviews(request: Request, state: DeepOpinionState, user: User) -> Response:
    """``GET .../hitls/{id}/reviews?with_full_data=&status=&document_name=``: bare array."""
    params = request.query_params
    found = state.reviews_of(
        request.path_params["hitl_id"],
        status=params.get("status") or None,
        document_name=params.get("document_name") or None,
    )
    full = _flag(request, "with_full_data")
    with state.lock:
        return JSONResponse([r.as_json(full=full) for r in found])


# --------------------------------------------------------------------------- admin


def _admin(handler: Callable[[DeepOpinionState, dict[str, Any]], Any]) -> Any:
    async def endpoint(request: Request) -> Response:
        state: DeepOpinionState = request.app.state.emulator
        try:
            try:
                body = await admin_body(request)
            except ValueError as exc:
                raise ApiError(400, str(exc)) from None
            return JSONResponse(handler(state, body))
        except ApiError as error:
            return JSONResponse({"detail": error.message}, error.status)

    return endpoint


def _admin_complete(state: DeepOpinionState, body: dict[str, Any]) -> Any:
    document_id, name = body.get("document_id"), body.get("document_name")
    values = body.get("values") or {}
    if document_id is None and not isinstance(name, str):
        raise ApiError(400, "Send document_name or document_id.")
    if document_id is not None and (
        isinstance(document_id, bool) or not isinstance(document_id, int)
    ):
        raise ApiError(400, "document_id must be an integer.")
    if not isinstance(values, dict):
        raise ApiError(400, "values must map labels to values.")
    return state.complete_reviews(document_id=document_id, document_name=name, values=values)


def _admin_stats(state: DeepOpinionState, body: dict[str, Any]) -> Any:
    return state.stats()


def _admin_documents(state: DeepOpinionState, body: dict[str, Any]) -> Any:
    return {"results": state.documents_json()}


# --------------------------------------------------------------------------- the app


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return JSONResponse(error_body(exc.status_code, str(exc.detail)), exc.status_code, exc.headers)


def _routes() -> list[Route]:
    project = "/organizations/{organization_id:int}/projects/{project_id:int}"
    hitl = f"{project}/hitls/{{hitl_id:int}}"
    table: list[tuple[str, Handler, list[str]]] = [
        ("/models", list_models, ["GET"]),
        (f"{project}/models", project_models, ["GET"]),
        (f"{project}/models/{{model_id:int}}/extract", extract, ["POST"]),
        (f"{project}/hitls", list_hitls, ["GET"]),
        (f"{project}/hitls", create_hitl, ["POST"]),
        (hitl, get_hitl, ["GET"]),
        (hitl, update_hitl, ["PUT"]),
        (f"{hitl}/assign", assign_hitl, ["PUT"]),
        (f"{hitl}/reviews", list_reviews, ["GET"]),
    ]
    routes = [
        Route("/auth/register", register, methods=["POST"]),
        Route("/auth/login", login, methods=["POST"]),
    ]
    routes += [Route(path, _api(handler), methods=methods) for path, handler, methods in table]
    admin = [
        ("/_emulator/stats", _admin_stats, ["GET"]),
        ("/_emulator/documents", _admin_documents, ["GET"]),
        ("/_emulator/reviews/complete", _admin_complete, ["POST"]),
    ]
    routes += [Route(path, _admin(handler), methods=methods) for path, handler, methods in admin]
    return routes


def create_app(options: EmulatorOptions | None = None, *, clock: Clock | None = None) -> Starlette:
    """The emulator as an ASGI app; its state is ``app.state.emulator``. ``clock`` (the
    system clock by default) drives the delay, token expiry and webhook retries."""
    options = options or EmulatorOptions()
    options.check()
    state = DeepOpinionState(options, clock)
    return emulator_app(
        _routes(),
        state=state,
        requests=state.requests,
        faults=state.faults,
        callbacks=state.dispatcher,
        error_body=error_body,
        exception_handlers={HTTPException: _http_error},
        on_start=state.dispatcher.start,
        on_stop=state.dispatcher.stop,
    )
