"""A local Konfuzio Server (REST API v3) for trying a docrelay configuration offline and for
tests.

``create_app(EmulatorOptions(...))`` returns a Starlette app that speaks Konfuzio's API v3 as
the contract (``shared/vendor-contracts/konfuzio.md``) distils it: token auth, project 1 with
categories 1 (invoice) and 2 (credit note), their label sets and labels, multipart uploads
whose ``status_data`` passes the pipeline on a configurable delay (some through splitting and
status 41), annotations read from the PDF's text layer by the kit's engine, review (annotation
feedback, human annotations, missing annotations, ``is_reviewed``), post-processing, document
sets, ``/doc/show/{id}/`` and unsigned callbacks. What the contract leaves open is decided in
NOTES.md under "Emulator". Throttling, fault injection, the request log, the clock and callback
delivery are the emulator kit's (``connectors.emulation``).

Run it with ``docrelay emulate konfuzio`` (``emulator_cli``) or any ASGI server with lifespan
on. ``app.state.emulator`` is the state for tests; ``/_emulator/...`` serves other processes.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from connectors.emulation.app import admin_body, emulator_app
from connectors.emulation.clock import Clock
from connectors.emulation.forms import media_type
from connectors.emulation.options import CommonOptions
from connectors.emulation.requestlog import note
from connectors.filecheck import sniff_mime_type
from connectors.vendors.konfuzio import emulator_content as content
from connectors.vendors.konfuzio.emulator_http import (
    authenticate,
    body_data,
    created_between,
    json_object,
    paginate,
    parse_multipart,
    read_body,
    shape,
)
from connectors.vendors.konfuzio.emulator_model import (
    CATEGORIES,
    LABEL_SETS,
    LABELS,
    PROJECT,
    ApiError,
    bool_field,
    pk_field,
)
from connectors.vendors.konfuzio.emulator_state import DATASET_STATUSES, KonfuzioState

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

ACCEPTED_TYPES = frozenset(
    {
        "application/pdf",
        "image/tiff",
        "image/jpeg",
        "image/png",
        "application/msword",
        "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
        "application/vnd.ms-excel",
        "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        "application/vnd.ms-powerpoint",
        "application/vnd.openxmlformats-officedocument.presentationml.presentation",
        "application/vnd.oasis.opendocument.text",
        "application/vnd.oasis.opendocument.spreadsheet",
        "application/vnd.oasis.opendocument.presentation",
    }
)
"""The file types Konfuzio lists (000:280-316); office files are taken and then end in 111,
as the emulator does not convert them."""

EXTERNAL_ID_PARAMETER = "docrelay_document_id"
"""The ``callback_url`` query parameter the request log reads a client's own id from."""


@dataclass
class EmulatorOptions(CommonOptions):
    """How the emulator behaves. The kit's ``CommonOptions`` bring ``delay``, ``fail_rate``,
    ``fault_mix``, ``seed``, ``rate_limit`` and ``slow_seconds``, read on every request."""

    delay: float = 1.0
    """Seconds from upload to ``DONE`` (or 41/111), spread evenly over the six statuses before."""
    fault_mix: tuple[tuple[str, float], ...] = FAULTS
    split_rate: float = 0.0
    """Share of uploads (0-1, drawn with ``seed``) that pass splitting and wait in 41."""
    error_rate: float = 0.0
    """Share of readable uploads that end in 111 all the same ("emulated processing error")."""
    callback_on_failure: bool = False
    """Also send the callback when a document ends in 111 (Konfuzio sends it on success only)."""
    callback_retry_delays: tuple[float, ...] = (2.0, 4.0, 8.0, 16.0)
    """Waits before callback retries (connection errors, 408/425/429/5xx); () = one attempt."""
    callback_timeout: float = 30.0
    username: str = "user@example.com"
    password: str = "secret"  # noqa: S105 - the documented demo login
    ocr: bool = False
    """OCR scans and images with tesseract; without it they end in 111."""
    sync_timeout: float = 600.0
    """The longest a ``sync=true`` upload waits for its document to settle."""

    def check(self) -> None:
        super().check()
        if not 0 <= self.split_rate <= 1 or not 0 <= self.error_rate <= 1:
            raise ValueError("split_rate and error_rate must be between 0 and 1")


Handler = Callable[[Request, KonfuzioState, str], Awaitable[Response]]


def _api(handler: Handler, *, auth: bool = True) -> Any:
    """Wrap a handler: check credentials (the user goes to the handler) and turn an
    ``ApiError`` into its JSON answer."""

    async def endpoint(request: Request) -> Response:
        state: KonfuzioState = request.app.state.emulator
        try:
            user = authenticate(request, state) if auth else ""
            return await handler(request, state, user)
        except ApiError as error:
            return JSONResponse(error.body, error.status, headers=error.headers)

    return endpoint


def _id(request: Request, name: str = "id") -> int:
    return int(request.path_params[name])


def _ids(text: str | None, name: str) -> set[int] | None:
    if not text:
        return None
    try:
        return {int(part) for part in text.split(",") if part.strip()}
    except ValueError:
        raise ApiError(400, {name: ["Enter a whole number."]}) from None


def _listing(request: Request, items: list[dict[str, Any]]) -> JSONResponse:
    return JSONResponse(paginate(request, items))


# --------------------------------------------------------------------------- auth


async def obtain_token(request: Request, state: KonfuzioState, user: str) -> Response:
    """``POST auth/`` (JSON or form): ``{"token": ...}``; wrong credentials 400, as DRF's
    ``ObtainAuthToken`` answers (the SDK turns 400/403 into "credentials are not correct")."""
    body = json_object(await body_data(request))
    missing = {k: ["This field is required."] for k in ("username", "password") if not body.get(k)}
    if missing:
        raise ApiError(400, missing)
    token = state.obtain_token(str(body["username"]), str(body["password"]))
    if token is None:
        raise ApiError(400, {"non_field_errors": ["Unable to log in with provided credentials."]})
    return JSONResponse({"token": token})


async def delete_token(request: Request, state: KonfuzioState, user: str) -> Response:
    """``DELETE auth/``: the user's token is deleted (a later ``POST auth/`` makes a new one)."""
    state.delete_token(user)
    return Response(status_code=204)


# --------------------------------------------------------------------------- the seeded objects


async def list_projects(request: Request, state: KonfuzioState, user: str) -> Response:
    return _listing(request, [state.project_json()])


async def get_project(request: Request, state: KonfuzioState, user: str) -> Response:
    if _id(request) != PROJECT:
        raise ApiError(404, "Not found.")
    return JSONResponse(shape(request, state.project_json()))


def _project_filter(request: Request) -> bool:
    """Lists of project objects: ``project=1`` (or none) shows them, any other project none."""
    wanted = _ids(request.query_params.get("project"), "project")
    return wanted is None or PROJECT in wanted


async def list_categories(request: Request, state: KonfuzioState, user: str) -> Response:
    found = [state.category_json(c) for c in CATEGORIES] if _project_filter(request) else []
    return _listing(request, found)


async def get_category(request: Request, state: KonfuzioState, user: str) -> Response:
    if _id(request) not in CATEGORIES:
        raise ApiError(404, "Not found.")
    return JSONResponse(shape(request, state.category_json(_id(request))))


async def list_labels(request: Request, state: KonfuzioState, user: str) -> Response:
    found = [state.label_json(label) for label in LABELS] if _project_filter(request) else []
    return _listing(request, found)


async def get_label(request: Request, state: KonfuzioState, user: str) -> Response:
    if _id(request) not in LABELS:
        raise ApiError(404, "Not found.")
    return JSONResponse(shape(request, state.label_json(_id(request))))


async def list_label_sets(request: Request, state: KonfuzioState, user: str) -> Response:
    found = [state.label_set_json(s) for s in LABEL_SETS] if _project_filter(request) else []
    return _listing(request, found)


async def get_label_set(request: Request, state: KonfuzioState, user: str) -> Response:
    if _id(request) not in LABEL_SETS:
        raise ApiError(404, "Not found.")
    return JSONResponse(shape(request, state.label_set_json(_id(request))))


# --------------------------------------------------------------------------- upload


def _callback_url(text: str | None) -> str | None:
    if not text:
        return None
    parts = urlsplit(text.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ApiError(400, {"callback_url": ["Enter a valid URL."]})
    return text.strip()


def _external_id(callback_url: str | None) -> int | None:
    """Our own id, if the client put one into the callback URL (see NOTES.md)."""
    if not callback_url:
        return None
    values = parse_qs(urlsplit(callback_url).query).get(EXTERNAL_ID_PARAMETER) or []
    return int(values[0]) if values and values[0].isdigit() else None


async def create_document(request: Request, state: KonfuzioState, user: str) -> Response:
    """``POST documents/``: multipart only (``project``, ``data_file``; optional ``category``,
    ``sync``, ``callback_url``, ``assignee``, ``dataset_status``); 201 with the document."""
    kind = media_type(request)
    if kind != "multipart/form-data":
        raise ApiError(415, f'Unsupported media type "{kind or "none"}" in request.')
    parts = parse_multipart(request, await read_body(request))
    fields = {p.name: p.text for p in parts if p.filename is None}
    file = next((p for p in parts if p.name == "data_file" and p.filename is not None), None)
    errors: dict[str, list[str]] = {}
    if file is None:
        errors["data_file"] = ["No file was submitted."]
    elif not file.data:
        errors["data_file"] = ["The submitted file is empty."]
    project = pk_field(fields.get("project"), "project", required=True)
    if project != PROJECT:
        errors["project"] = [f'Invalid pk "{project}" - object does not exist.']
    category = pk_field(fields.get("category"), "category")
    if category is not None and category not in CATEGORIES:
        errors["category"] = [f'Invalid pk "{category}" - object does not exist.']
    dataset_status = pk_field(fields.get("dataset_status"), "dataset_status") or 0
    if dataset_status not in DATASET_STATUSES:
        errors["dataset_status"] = [f'"{dataset_status}" is not a valid choice.']
    assignee = (fields.get("assignee") or "").strip() or None
    if assignee is not None and assignee != state.username:
        errors["assignee"] = [f"{assignee} is not a member of this project."]
    sync = bool_field(fields.get("sync"), "sync", default=False)
    callback_url = _callback_url(fields.get("callback_url"))
    if errors:
        raise ApiError(400, errors)
    assert file is not None and file.filename is not None
    declared = file.content_type
    if declared and declared.lower().startswith("multipart/"):
        declared = None  # the SDK labels the file part itself multipart/form-data
    mime = sniff_mime_type(file.data, file.filename, declared)
    if mime not in ACCEPTED_TYPES:
        raise ApiError(400, {"data_file": [f"File type {mime} is not supported."]})
    extraction = await run_in_threadpool(
        content.extract, file.data, mime, ocr=state.options.ocr, wrongness=state.options
    )
    doc = state.create_document(
        name=file.filename,
        mime_type=mime,
        data=file.data,
        extraction=extraction,
        category=category,
        callback_url=callback_url,
        assignee=assignee,
        dataset_status=dataset_status,
    )
    note(
        request,
        document=doc.id,
        data_file_name=doc.file_name,
        callback_url=callback_url,
        document_id=_external_id(callback_url),
    )
    if sync:
        doc = await run_in_threadpool(state.wait_settled, doc.id, state.options.sync_timeout)
    with state.lock:
        return JSONResponse(state.document_json(doc), status_code=201)


# --------------------------------------------------------------------------- documents


async def list_documents(request: Request, state: KonfuzioState, user: str) -> Response:
    """Filters: ``project``, ``category``, ``status_data``, ``dataset_status``,
    ``is_reviewed``, ``assignee``, ``id``, ``document_set``, ``created_at_after/before``."""
    params = request.query_params
    with state.lock:
        state.tick()
        docs = list(state.documents.values())
        if not _project_filter(request):
            docs = []
        for name, attr in (
            ("category", "category_id"),
            ("status_data", "status"),
            ("dataset_status", "dataset_status"),
            ("id", "id"),
            ("document_set", "document_set_id"),
        ):
            wanted = _ids(params.get(name), name)
            if wanted is not None:
                docs = [d for d in docs if getattr(d, attr) in wanted]
        if params.get("is_reviewed"):
            reviewed = bool_field(params["is_reviewed"], "is_reviewed", default=None)
            docs = [d for d in docs if d.is_reviewed == reviewed]
        if params.get("assignee"):
            docs = [d for d in docs if d.assignee == params["assignee"]]
        docs = created_between(request, lambda d: d.created_at, docs)
        shown = [state.document_json(d, detail=False) for d in docs]
    return _listing(request, shown)


async def get_document(request: Request, state: KonfuzioState, user: str) -> Response:
    with state.lock:
        return JSONResponse(shape(request, state.document_json(state.document(_id(request)))))


async def patch_document(request: Request, state: KonfuzioState, user: str) -> Response:
    body = json_object(await body_data(request))
    if "category" in body:
        body["category"] = pk_field(body["category"], "category")
    if "dataset_status" in body:
        body["dataset_status"] = pk_field(body["dataset_status"], "dataset_status")
    if "is_reviewed" in body:
        body["is_reviewed"] = bool_field(body["is_reviewed"], "is_reviewed", default=None)
    with state.lock:
        doc = state.patch_document(_id(request), body, user)
        return JSONResponse(state.document_json(doc))


async def delete_document(request: Request, state: KonfuzioState, user: str) -> Response:
    state.delete_document(_id(request))
    return Response(status_code=204)


async def postprocess(request: Request, state: KonfuzioState, user: str) -> Response:
    """``POST documents/{id}/postprocess/``: 200 with the resulting documents."""
    items = await body_data(request)
    docs = await run_in_threadpool(state.postprocess, _id(request), items)
    with state.lock:
        return JSONResponse([state.document_json(d, detail=False) for d in docs])


async def get_page(request: Request, state: KonfuzioState, user: str) -> Response:
    """``GET documents/{id}/pages/{number}/``: the page, its ``entities`` (none: the emulator
    keeps no word boxes) and ``page_image``."""
    with state.lock:
        doc = state.document(_id(request))
        number = _id(request, "number")
        if not 1 <= number <= len(doc.page_ids):
            raise ApiError(404, "Not found.")
        page = state.pages[doc.page_ids[number - 1]]
        shown = {**state.page_json(page), "document": doc.id, "entities": []}
        shown["page_image"] = shown["image_url"]
    return JSONResponse(shape(request, shown))


async def get_document_set(request: Request, state: KonfuzioState, user: str) -> Response:
    with state.lock:
        state.tick()
        found = state.document_sets.get(_id(request))
        if found is None:
            raise ApiError(404, "Not found.")
        return JSONResponse(shape(request, state.document_set_json(found)))


def _file_response(data: bytes, mime: str, name: str) -> Response:
    disposition = f"attachment; filename*=utf-8''{quote(name, safe='')}"
    return Response(data, media_type=mime, headers={"Content-Disposition": disposition})


async def show_document(request: Request, state: KonfuzioState, user: str) -> Response:
    """``/doc/show/{id}/``: the document's PDF as it is now (Konfuzio's "OCR version"; the
    emulator runs no OCR, so it is the uploaded PDF, or the split part)."""
    with state.lock:
        doc = state.document(_id(request))
        return _file_response(doc.data, doc.mime_type, doc.file_name)


async def show_original(request: Request, state: KonfuzioState, user: str) -> Response:
    with state.lock:
        doc = state.document(_id(request))
        return _file_response(doc.original, doc.mime_type, doc.file_name)


async def page_image(request: Request, state: KonfuzioState, user: str) -> Response:
    """``/page/show-image/{id}/`` (144 dpi) and ``/page/show-thumbnail/{id}/`` (36 dpi) as PNG."""
    with state.lock:
        page = state.pages.get(_id(request))
        doc = state.documents.get(page.document_id) if page is not None else None
        if page is None or doc is None or doc.mime_type != "application/pdf":
            raise ApiError(404, "Not found.")
        data, number = doc.data, page.number
    scale = 0.5 if "thumbnail" in request.url.path else 2.0
    png = await run_in_threadpool(content.render_png, data, number, scale)
    return Response(png, media_type="image/png")


# --------------------------------------------------------------------------- annotations


async def list_annotations(request: Request, state: KonfuzioState, user: str) -> Response:
    """Filters: ``document``, ``label``, ``label_set``, ``annotation_set``, ``is_correct``,
    ``revised``, ``created_at_after/before``."""
    params = request.query_params
    found = state.visible_annotations()
    for name, attr in (
        ("document", "document_id"),
        ("label", "label_id"),
        ("label_set", "label_set_id"),
        ("annotation_set", "annotation_set_id"),
    ):
        wanted = _ids(params.get(name), name)
        if wanted is not None:
            found = [a for a in found if getattr(a, attr) in wanted]
    for name in ("is_correct", "revised"):
        if params.get(name):
            value = bool_field(params[name], name, default=None)
            found = [a for a in found if getattr(a, name) == value]
    found = created_between(request, lambda a: a.created_at, found)
    with state.lock:
        shown = [state.annotation_json(a) for a in found]
    return _listing(request, shown)


async def create_annotation(request: Request, state: KonfuzioState, user: str) -> Response:
    body = json_object(await body_data(request))
    ann = await run_in_threadpool(state.create_annotation, body, user)
    with state.lock:
        return JSONResponse(state.annotation_json(ann), status_code=201)


async def get_annotation(request: Request, state: KonfuzioState, user: str) -> Response:
    with state.lock:
        return JSONResponse(shape(request, state.annotation_json(state.annotation(_id(request)))))


async def patch_annotation(request: Request, state: KonfuzioState, user: str) -> Response:
    body = json_object(await body_data(request))
    ann = await run_in_threadpool(state.patch_annotation, _id(request), body, user)
    with state.lock:
        return JSONResponse(state.annotation_json(ann))


async def delete_annotation(request: Request, state: KonfuzioState, user: str) -> Response:
    state.delete_annotation(_id(request))
    return Response(status_code=204)


async def list_missing(request: Request, state: KonfuzioState, user: str) -> Response:
    wanted = _ids(request.query_params.get("document"), "document")
    with state.lock:
        found = [m for m in state.missing.values() if wanted is None or m.document_id in wanted]
        shown = [state.missing_json(m) for m in found]
    return _listing(request, shown)


async def create_missing(request: Request, state: KonfuzioState, user: str) -> Response:
    body = json_object(await body_data(request))
    with state.lock:
        return JSONResponse(state.missing_json(state.create_missing(body)), status_code=201)


async def get_missing(request: Request, state: KonfuzioState, user: str) -> Response:
    with state.lock:
        return JSONResponse(state.missing_json(state.missing_annotation(_id(request))))


async def delete_missing(request: Request, state: KonfuzioState, user: str) -> Response:
    state.delete_missing(_id(request))
    return Response(status_code=204)


# --------------------------------------------------------------------------- admin


def _admin(handler: Callable[[Request, KonfuzioState, dict[str, Any]], Any]) -> Any:
    """An ``/_emulator`` endpoint: no auth, a JSON object body, ``ApiError`` as JSON."""

    async def endpoint(request: Request) -> Response:
        state: KonfuzioState = request.app.state.emulator
        try:
            try:
                body = await admin_body(request)
            except ValueError as exc:
                raise ApiError(400, str(exc)) from None
            return JSONResponse(await run_in_threadpool(handler, request, state, body))
        except ApiError as error:
            return JSONResponse(error.body, error.status)

    return endpoint


def _admin_stats(request: Request, state: KonfuzioState, body: dict[str, Any]) -> Any:
    return state.stats()


def _admin_documents(request: Request, state: KonfuzioState, body: dict[str, Any]) -> Any:
    with state.lock:
        state.tick()
        return {"results": [state.admin_document_json(d) for d in state.documents.values()]}


def _admin_status(request: Request, state: KonfuzioState, body: dict[str, Any]) -> Any:
    with state.lock:
        doc = state.force_status(_id(request), body.get("status_data"), body.get("reason"))
        return state.admin_document_json(doc)


def _admin_split(request: Request, state: KonfuzioState, body: dict[str, Any]) -> Any:
    with state.lock:
        doc = state.send_through_split(_id(request), body.get("proposed_split"))
        return state.admin_document_json(doc)


def _admin_finish_split(request: Request, state: KonfuzioState, body: dict[str, Any]) -> Any:
    with state.lock:
        docs = state.finish_split(_id(request), body.get("documents"))
        return {"results": [state.admin_document_json(d) for d in docs]}


def _admin_category(request: Request, state: KonfuzioState, body: dict[str, Any]) -> Any:
    with state.lock:
        category = pk_field(body.get("category"), "category", required=True)
        assert category is not None
        return state.admin_document_json(state.change_category(_id(request), category))


# --------------------------------------------------------------------------- the app


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    detail = {404: "Not found.", 405: f'Method "{request.method}" not allowed.'}.get(
        exc.status_code, exc.detail
    )
    return JSONResponse({"detail": detail}, status_code=exc.status_code, headers=exc.headers)


API = "/api/v3"


def _routes() -> list[Route]:
    table: list[tuple[str, Handler, list[str], bool]] = [
        (f"{API}/auth/", obtain_token, ["POST"], False),
        (f"{API}/auth/", delete_token, ["DELETE"], True),
        (f"{API}/projects/", list_projects, ["GET"], True),
        (f"{API}/projects/{{id:int}}/", get_project, ["GET"], True),
        (f"{API}/categories/", list_categories, ["GET"], True),
        (f"{API}/categories/{{id:int}}/", get_category, ["GET"], True),
        (f"{API}/labels/", list_labels, ["GET"], True),
        (f"{API}/labels/{{id:int}}/", get_label, ["GET"], True),
        (f"{API}/label-sets/", list_label_sets, ["GET"], True),
        (f"{API}/label-sets/{{id:int}}/", get_label_set, ["GET"], True),
        (f"{API}/documents/", list_documents, ["GET"], True),
        (f"{API}/documents/", create_document, ["POST"], True),
        (f"{API}/documents/{{id:int}}/", get_document, ["GET"], True),
        (f"{API}/documents/{{id:int}}/", patch_document, ["PATCH"], True),
        (f"{API}/documents/{{id:int}}/", delete_document, ["DELETE"], True),
        (f"{API}/documents/{{id:int}}/postprocess/", postprocess, ["POST"], True),
        (f"{API}/documents/{{id:int}}/pages/{{number:int}}/", get_page, ["GET"], True),
        (f"{API}/document-sets/{{id:int}}/", get_document_set, ["GET"], True),
        (f"{API}/annotations/", list_annotations, ["GET"], True),
        (f"{API}/annotations/", create_annotation, ["POST"], True),
        (f"{API}/annotations/{{id:int}}/", get_annotation, ["GET"], True),
        (f"{API}/annotations/{{id:int}}/", patch_annotation, ["PATCH"], True),
        (f"{API}/annotations/{{id:int}}/", delete_annotation, ["DELETE"], True),
        (f"{API}/missing-annotations/", list_missing, ["GET"], True),
        (f"{API}/missing-annotations/", create_missing, ["POST"], True),
        (f"{API}/missing-annotations/{{id:int}}/", get_missing, ["GET"], True),
        (f"{API}/missing-annotations/{{id:int}}/", delete_missing, ["DELETE"], True),
        ("/doc/show/{id:int}/", show_document, ["GET"], True),
        ("/doc/show-original/{id:int}/", show_original, ["GET"], True),
        ("/page/show-image/{id:int}/", page_image, ["GET"], True),
        ("/page/show-thumbnail/{id:int}/", page_image, ["GET"], True),
    ]
    routes = [
        Route(path, _api(handler, auth=auth), methods=methods)
        for path, handler, methods, auth in table
    ]
    admin = [
        ("/_emulator/stats", _admin_stats, ["GET"]),
        ("/_emulator/documents", _admin_documents, ["GET"]),
        ("/_emulator/documents/{id:int}/status", _admin_status, ["POST"]),
        ("/_emulator/documents/{id:int}/split", _admin_split, ["POST"]),
        ("/_emulator/documents/{id:int}/finish-split", _admin_finish_split, ["POST"]),
        ("/_emulator/documents/{id:int}/category", _admin_category, ["POST"]),
    ]
    routes += [Route(path, _admin(handler), methods=methods) for path, handler, methods in admin]
    return routes


def create_app(options: EmulatorOptions | None = None, *, clock: Clock | None = None) -> Starlette:
    """The emulator as an ASGI app; its state is ``app.state.emulator``. ``clock`` (the
    system clock by default) drives the pipeline and callback retries."""
    options = options or EmulatorOptions()
    state = KonfuzioState(options, clock)
    return emulator_app(
        _routes(),
        state=state,
        requests=state.requests,
        faults=state.faults,
        callbacks=state.dispatcher,
        exception_handlers={HTTPException: _http_error},
        on_start=state.start_background,
        on_stop=state.stop_background,
    )
