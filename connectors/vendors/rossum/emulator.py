"""A local Rossum API for trying a docrelay configuration offline and for tests.

``create_app(EmulatorOptions(...))`` returns a Starlette app that speaks Rossum's REST API as the
reference documents it: token login, queue 1 with the invoice schema from ``schema.py``, uploads
that are "extracted" by reading the PDF's text layer, the annotation lifecycle and its actions,
content operations, queue export (JSON, CSV, XML), and signed webhooks. Behaviour the reference
leaves open follows the contract's proposals; every such choice is listed in NOTES.md under
"Emulator". ``app.state.emulator`` is the state for tests; ``/_emulator/stats`` and
``/_emulator/annotations/{id}/status`` do the same for other processes. Throttling, fault
injection, the request log (``app.state.requests``, ``/_emulator/requests``), the clock and
webhook delivery are the emulator kit's (``connectors.emulation``).

Run it with ``docrelay emulate rossum`` (``emulator_cli``) or any ASGI server with lifespan on.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from connectors.emulation.app import emulator_app
from connectors.emulation.clock import Clock
from connectors.emulation.forms import disposition_filename, media_type
from connectors.emulation.options import CommonOptions
from connectors.emulation.requestlog import note
from connectors.filecheck import sniff_mime_type
from connectors.vendors.rossum import emulator_content as content
from connectors.vendors.rossum.emulator_http import (
    authenticate,
    json_body,
    page_params,
    paginate,
    parse_multipart,
    read_body,
)
from connectors.vendors.rossum.emulator_model import (
    ORG,
    QUEUE,
    SCHEMA,
    USER,
    WORKSPACE,
    Annotation,
    ApiError,
    FileIn,
    Upload,
)
from connectors.vendors.rossum.emulator_query import SEARCH_MAX_PAGE
from connectors.vendors.rossum.emulator_state import EmulatorState

FAULTS: tuple[tuple[str, float], ...] = (
    ("502", 0.15),  # Bad Gateway, request not processed
    ("503", 0.15),  # Service Unavailable + Retry-After: 1, not processed
    ("500", 0.10),  # Server Error, not processed
    ("500_after", 0.15),  # processed, then 500: the timeout-after-send case to reconcile
    ("slow", 0.15),  # slow_seconds (2 s) pause, then processed and answered normally
    ("drop_before", 0.10),  # connection closed without an answer, not processed
    ("drop_during", 0.05),  # processed, then the connection closes mid-answer
    ("drop_after", 0.05),  # processed, then the connection closes without an answer
    ("malformed", 0.10),  # processed; a 2xx answer's JSON body cut in half
)
"""The default mix of the kit's fault kinds (see NOTES.md, Emulator); ``fault_mix`` may name
any kind of ``connectors.emulation.faults.KINDS``."""


@dataclass
class EmulatorOptions(CommonOptions):
    """How the emulator behaves; the defaults are Rossum's documented ones where it has any.
    The kit's ``CommonOptions`` bring ``delay``, ``fail_rate``, ``fault_mix``, ``seed``,
    ``rate_limit`` and ``slow_seconds``, read on every request (a test may change them)."""

    delay: float = 1.0
    """Seconds from upload to ``to_review`` (the "AI engine" time)."""
    rate_limit: float = 10.0
    """Requests per second per token (token bucket, burst = rate); 0 disables throttling."""
    fault_mix: tuple[tuple[str, float], ...] = FAULTS
    """Fault kinds and weights to draw from (tests narrow it to one kind)."""
    webhook_url: str | None = None
    """If set, a hook for ``webhook_events`` posts there."""
    webhook_events: tuple[str, ...] = ("annotation_status",)
    """The events of that hook: by default what docrelay needs (NOTES.md, "Hints"); add
    ``annotation_content`` to see the interactive events and hook-driven export."""
    webhook_secret: str = "emulator-secret"  # noqa: S105 - the documented demo secret
    token_lifetime: float = 583200
    """Default and maximum token lifetime in seconds (162 hours)."""
    username: str = "user@example.com"
    password: str = "secret"  # noqa: S105 - the documented demo login
    base_path: str = "/api"
    hook_retry_delays: tuple[float, ...] = (2.0, 4.0, 8.0, 16.0)
    """Waits before webhook retries 1-4: five attempts within ~30 s, as Rossum documents."""
    hook_poll_interval: float = 30.0
    """How often an asynchronous (202 + Location) webhook is polled."""
    ocr: bool = False
    """OCR scans and images with tesseract (slow); without it they end in ``failed_import``."""


Handler = Callable[[Request, EmulatorState, str], Awaitable[Response]]


def _api(handler: Handler, *, auth: bool = True, basic: bool = False) -> Any:
    """Wrap a handler: note the base URL objects link with, check credentials, and turn an
    ``ApiError`` into its JSON answer. (State methods bring time-driven changes up to date.)"""

    async def endpoint(request: Request) -> Response:
        state: EmulatorState = request.app.state.emulator
        base = str(request.base_url).rstrip("/") + state.options.base_path + "/v1"
        state.base_url = base
        try:
            if auth:
                authenticate(request, state, basic=basic)
            return await handler(request, state, base)
        except ApiError as error:
            return JSONResponse(error.body, error.status, headers=error.headers)

    return endpoint


def _id(request: Request, name: str = "id") -> int:
    return int(request.path_params[name])


def _page_response(request: Request, items: list[Any], **extra: Any) -> JSONResponse:
    page, pagination = paginate(request, items)
    return JSONResponse({"pagination": pagination, "results": page, **extra})


# --------------------------------------------------------------------------- root and auth


async def root(request: Request, state: EmulatorState, base: str) -> Response:
    names = ("organizations workspaces schemas connectors inboxes queues documents users "
             "groups annotations pages").split()  # fmt: skip
    return JSONResponse({name: f"{base}/{name}" for name in names})


async def login(request: Request, state: EmulatorState, base: str) -> Response:
    body = await json_body(request, forms=True)
    if not isinstance(body, dict):
        raise ApiError(400, {"non_field_errors": ["Expected an object."]})
    lifetime = body.get("max_token_lifetime_s")
    try:
        lifetime = None if lifetime in (None, "") else float(lifetime)
    except (TypeError, ValueError):
        raise ApiError(400, {"max_token_lifetime_s": ["A valid number is required."]}) from None
    key = state.login(str(body.get("username", "")), str(body.get("password", "")), lifetime)
    if key is None:
        raise ApiError(401, "Unable to log in with provided credentials.")
    return JSONResponse({"key": key, "domain": None})


async def logout(request: Request, state: EmulatorState, base: str) -> Response:
    state.logout(request.headers.get("authorization", "").partition(" ")[2].strip())
    return JSONResponse({"detail": "Successfully logged out."})


# --------------------------------------------------------------------------- fixed objects


def _one_object(kind: str) -> tuple[Handler, Handler]:
    """List and detail handlers for the fixed objects (organization, workspace, queue, schema,
    user, groups)."""

    def objects(state: EmulatorState, base: str) -> dict[int, dict[str, Any]]:
        if kind == "groups":
            return {g["id"]: g for g in state.groups_json(base)}
        render = {
            "organizations": (ORG, state.organization_json),
            "workspaces": (WORKSPACE, state.workspace_json),
            "queues": (QUEUE, state.queue_json),
            "schemas": (SCHEMA, state.schema_json),
            "users": (USER, state.user_json),
        }[kind]
        return {render[0]: render[1](base)}

    async def listing(request: Request, state: EmulatorState, base: str) -> Response:
        found = list(objects(state, base).values())
        for key, value in request.query_params.items():
            if key in ("id", "name", "username", "email") and value:
                found = [o for o in found if str(o.get(key)) in value.split(",")]
        return _page_response(request, found)

    async def detail(request: Request, state: EmulatorState, base: str) -> Response:
        found = objects(state, base).get(_id(request))
        if found is None:
            raise ApiError(404, "Not found.")
        return JSONResponse(found)

    return listing, detail


async def auth_user(request: Request, state: EmulatorState, base: str) -> Response:
    return JSONResponse(state.user_json(base))


async def patch_queue(request: Request, state: EmulatorState, base: str) -> Response:
    if _id(request) != QUEUE:
        raise ApiError(404, "Not found.")
    body = await json_body(request)
    if not isinstance(body, dict):
        raise ApiError(400, "Expected an object.")
    state.update_queue(body)
    return JSONResponse(state.queue_json(base))


# --------------------------------------------------------------------------- uploads


def _json_field(text: str | None, name: str) -> dict[str, Any]:
    if text is None or not text.strip():
        return {}
    try:
        value = json.loads(text)
    except ValueError:
        raise ApiError(400, {name: ["Value must be valid JSON."]}) from None
    if not isinstance(value, dict):
        raise ApiError(400, {name: ["Value must be a JSON object."]})
    if name == "metadata" and len(json.dumps(value)) > 4096:
        raise ApiError(400, {name: ["Metadata may be at most 4 kB."]})
    return value


async def _upload_files(
    request: Request, state: EmulatorState
) -> tuple[list[FileIn], dict[str, Any], dict[str, Any]]:
    """Files, metadata and values of an upload request, extracted outside the state lock."""
    body = await read_body(request)
    raw: list[tuple[str, bytes, str | None]] = []
    fields: dict[str, str] = {}
    if media_type(request) == "multipart/form-data":
        for part in parse_multipart(request, body):
            if part.name == "content" and part.filename is not None:
                raw.append((part.filename, part.data, part.content_type))
            elif part.name in ("metadata", "values"):
                fields[part.name] = part.data.decode("utf-8", "replace")
    else:
        name = request.path_params.get("filename") or disposition_filename(
            request.headers.get("content-disposition", "")
        )
        if body and name:
            raw.append((name, body, request.headers.get("content-type")))
        fields = {k: v for k, v in request.query_params.items() if k in ("metadata", "values")}
    if not raw:
        raise ApiError(400, {"content": ["No file was submitted."]})
    metadata = _json_field(fields.get("metadata"), "metadata")
    values = _json_field(fields.get("values"), "values")
    files = []
    for name, data, declared in raw:
        mime = sniff_mime_type(data, name, declared)
        extraction = await run_in_threadpool(
            content.extract, data, mime, ocr=state.options.ocr, wrongness=state.options
        )
        files.append(FileIn(name=name, data=data, mime_type=mime, extraction=extraction))
    return files, metadata, values


def _note_upload(request: Request, upload: Upload) -> None:
    """What the request log shows of an upload: its ids and the client's document id."""
    note(
        request,
        upload=upload.id,
        documents=list(upload.document_ids),
        annotations=list(upload.annotation_ids),
        document_id=upload.metadata.get("docrelay_document_id"),
    )


def _queue_param(request: Request) -> int:
    text = request.query_params.get("queue", "")
    try:
        return int(text.rstrip("/").rsplit("/", 1)[-1])
    except ValueError:
        raise ApiError(400, {"queue": ["This field is required (queue id or URL)."]}) from None


async def create_upload(request: Request, state: EmulatorState, base: str) -> Response:
    queue = _queue_param(request)
    reject = request.query_params.get("reject_identical", "").lower() in ("true", "1")
    files, metadata, values = await _upload_files(request, state)
    if reject and len(files) > 1:
        raise ApiError(400, {"content": ["Only one file is allowed with reject_identical."]})
    upload = state.create_upload(queue, files, metadata, values, reject_identical=reject)
    _note_upload(request, upload)
    task = f"{base}/tasks/{upload.task_id}"
    return JSONResponse({"url": task}, status_code=202, headers={"Location": task})


async def queue_upload(request: Request, state: EmulatorState, base: str) -> Response:
    """``POST queues/{id}/upload``: synchronous, 201 with the annotation and document URLs."""
    files, metadata, values = await _upload_files(request, state)
    upload = state.create_upload(_id(request), files, metadata, values)
    _note_upload(request, upload)
    results = [
        {"annotation": f"{base}/annotations/{a}", "document": f"{base}/documents/{d}"}
        for a, d in zip(upload.annotation_ids, upload.document_ids, strict=True)
    ]
    return JSONResponse({"results": results, **results[0]}, status_code=201)


async def get_upload(request: Request, state: EmulatorState, base: str) -> Response:
    return JSONResponse(state.upload_json(_id(request), base))


async def get_task(request: Request, state: EmulatorState, base: str) -> Response:
    task = state.task_json(_id(request), base)
    no_redirect = request.query_params.get("no_redirect", "").lower() in ("true", "1")
    if task["status"] == "succeeded" and not no_redirect:
        return RedirectResponse(task["result_url"], status_code=303)
    return JSONResponse(task)


# --------------------------------------------------------------------------- documents, pages


async def list_documents(request: Request, state: EmulatorState, base: str) -> Response:
    with state.lock:
        found = list(state.documents.values())
    params = request.query_params
    if params.get("id"):
        ids = {int(i) for i in params["id"].split(",") if i.strip().isdigit()}
        found = [d for d in found if d.id in ids]
    if params.get("original_file_name"):
        found = [d for d in found if d.file_name == params["original_file_name"]]
    return _page_response(request, [state.document_json(d, base) for d in found])


async def create_document(request: Request, state: EmulatorState, base: str) -> Response:
    body = await read_body(request)
    if media_type(request) != "multipart/form-data":
        raise ApiError(400, {"content": ["Send the file as multipart field 'content'."]})
    parts = {p.name: p for p in parse_multipart(request, body)}
    file = parts.get("content")
    if file is None or file.filename is None:
        raise ApiError(400, {"content": ["No file was submitted."]})
    meta = parts.get("metadata")
    metadata = _json_field(meta.data.decode() if meta else None, "metadata")
    parent = parts.get("parent")
    parent_id = int(parent.data.decode().rstrip("/").rsplit("/", 1)[-1]) if parent else None
    mime = sniff_mime_type(file.data, file.filename, file.content_type)
    document = state.create_document(file.filename, mime, file.data, metadata, parent_id)
    return JSONResponse(state.document_json(document, base), status_code=201)


async def get_document(request: Request, state: EmulatorState, base: str) -> Response:
    return JSONResponse(state.document_json(state.document(_id(request)), base))


async def patch_document(request: Request, state: EmulatorState, base: str) -> Response:
    document = state.document(_id(request))
    body = await json_body(request)
    if "metadata" in body:
        document.metadata = _json_field(json.dumps(body["metadata"]), "metadata")
    return JSONResponse(state.document_json(document, base))


async def document_content(request: Request, state: EmulatorState, base: str) -> Response:
    document = state.document(_id(request))
    disposition = f"inline; filename*=utf-8''{quote(document.file_name, safe='')}"
    return Response(
        document.data, media_type=document.mime_type, headers={"Content-Disposition": disposition}
    )


async def list_pages(request: Request, state: EmulatorState, base: str) -> Response:
    with state.lock:
        pages = list(state.pages.values())
    wanted = request.query_params.get("annotation")
    if wanted:
        ids = {int(i) for i in wanted.split(",") if i.strip().isdigit()}
        pages = [p for p in pages if p.annotation_id in ids]
    return _page_response(request, [state.page_json(p, base) for p in pages])


async def get_page(request: Request, state: EmulatorState, base: str) -> Response:
    page = state.pages.get(_id(request))
    if page is None:
        raise ApiError(404, "Not found.")
    return JSONResponse(state.page_json(page, base))


async def page_content(request: Request, state: EmulatorState, base: str) -> Response:
    page = state.pages.get(_id(request))
    if page is None:
        raise ApiError(404, "Not found.")
    document = state.document(state.get_annotation(page.annotation_id).document_id)
    if document.mime_type != "application/pdf":
        return Response(document.data, media_type=document.mime_type)
    png = await run_in_threadpool(content.render_page_png, document.data, page.number)
    return Response(png, media_type="image/png")


# --------------------------------------------------------------------------- annotations


def _fields(request: Request, shown: dict[str, Any]) -> dict[str, Any]:
    """``fields=`` keeps only these attributes, ``fields!=`` drops them."""
    keep = [f for f in request.query_params.get("fields", "").split(",") if f]
    drop = {f for f in request.query_params.get("fields!", "").split(",") if f}
    if keep:
        shown = {k: v for k, v in shown.items() if k in keep}
    return {k: v for k, v in shown.items() if k not in drop}


def _sideloads(
    request: Request, state: EmulatorState, base: str, page: list[Annotation]
) -> dict[str, Any]:
    """``sideload=documents,queues,schemas,modifiers,creators,pages,content``."""
    wanted = {s for s in request.query_params.get("sideload", "").split(",") if s}
    extra: dict[str, Any] = {}
    if "documents" in wanted:
        extra["documents"] = [
            state.document_json(state.document(a.document_id), base) for a in page
        ]
    if "queues" in wanted:
        extra["queues"] = [state.queue_json(base)] if page else []
    if "schemas" in wanted:
        extra["schemas"] = [state.schema_json(base)] if page else []
    for name in ("modifiers", "creators", "assignees", "confirmed_bys", "exported_bys"):
        if name in wanted:
            extra[name] = [state.user_json(base)] if page else []
    if "pages" in wanted:
        extra["pages"] = [state.page_json(state.pages[p], base) for a in page for p in a.page_ids]
    if "content" in wanted:
        ids = {s for s in request.query_params.get("content.schema_id", "").split(",") if s}
        extra["content"] = [
            node
            for a in page
            for node in content.walk(content.render_tree(a.content, f"{base}/annotations/{a.id}"))
            if node["category"] == "datapoint" and (not ids or node["schema_id"] in ids)
        ]
    return extra


async def list_annotations(request: Request, state: EmulatorState, base: str) -> Response:
    found = state.filter_annotations(request.query_params)
    page, pagination = paginate(request, found)
    with state.lock:
        results = [_fields(request, state.annotation_json(a, base)) for a in page]
        extra = _sideloads(request, state, base, page)
    return JSONResponse({"pagination": pagination, "results": results, **extra})


async def search_annotations(request: Request, state: EmulatorState, base: str) -> Response:
    """Cursor pagination (``search_after`` in ``next``); ``page`` works too (the SDK uses it)."""
    body = await json_body(request)
    params = request.query_params
    found = state.search(body, params)
    maximum = 100 if "content" in params.get("sideload", "") else SEARCH_MAX_PAGE
    page_number, size = page_params(request, maximum=maximum)
    ordering = params.get("ordering", "")
    if params.get("search_after"):
        offset = state.search_offset(params["search_after"], body, ordering)
    else:
        offset = (page_number - 1) * size
    page = found[offset : offset + size]
    end = offset + len(page)
    next_url = None
    if end < len(found):
        cursor = state.search_cursor(body, ordering, end)
        next_url = str(
            request.url.remove_query_params("page").include_query_params(search_after=cursor)
        )
    pagination = {
        "total": len(found),
        "total_pages": max(1, -(-len(found) // size)),
        "next": next_url,
        "previous": None,
    }
    with state.lock:
        results = [_fields(request, state.annotation_json(a, base)) for a in page]
        extra = _sideloads(request, state, base, page)
    return JSONResponse({"pagination": pagination, "results": results, **extra})


async def get_annotation(request: Request, state: EmulatorState, base: str) -> Response:
    ann = state.get_annotation(_id(request))
    with state.lock:
        return JSONResponse(_fields(request, state.annotation_json(ann, base)))


async def change_annotation(request: Request, state: EmulatorState, base: str) -> Response:
    body = await json_body(request)
    if not isinstance(body, dict):
        raise ApiError(400, "Expected an object.")
    state.patch_annotation(_id(request), body)
    return await get_annotation(request, state, base)


async def get_content(request: Request, state: EmulatorState, base: str) -> Response:
    return JSONResponse(state.content_json(_id(request), base))


async def patch_content(request: Request, state: EmulatorState, base: str) -> Response:
    """``PATCH content``: a partial tree; datapoints it leaves out are kept."""
    body = await json_body(request)
    tree = body.get("content") if isinstance(body, dict) else None
    if not isinstance(tree, list):
        raise ApiError(400, {"content": ["Expected a list of sections."]})
    operations = [
        {"op": "replace", "id": node["id"], "value": node}
        for node in content.walk(tree)
        if isinstance(node, dict) and node.get("category") == "datapoint" and "id" in node
    ]
    state.operations(_id(request), operations)
    return JSONResponse(state.content_json(_id(request), base))


async def get_datapoint(request: Request, state: EmulatorState, base: str) -> Response:
    return JSONResponse(state.datapoint_json(_id(request), _id(request, "node"), base))


async def patch_datapoint(request: Request, state: EmulatorState, base: str) -> Response:
    state.patch_datapoint(_id(request), _id(request, "node"), await json_body(request))
    return JSONResponse(state.datapoint_json(_id(request), _id(request, "node"), base))


async def content_operations(request: Request, state: EmulatorState, base: str) -> Response:
    """Answers with the changed part of the tree, or all of it with ``full_response=true``."""
    body = await json_body(request)
    operations = body.get("operations") if isinstance(body, dict) else None
    touched = state.operations(_id(request), operations)
    tree = state.content_json(_id(request), base)["content"]
    if request.query_params.get("full_response", "").lower() not in ("true", "1"):
        tree = content.prune_tree(tree, set(touched))
    return JSONResponse({"content": tree})


async def annotation_action(request: Request, state: EmulatorState, base: str) -> Response:
    """``start``/``confirm``/``cancel``/``postpone``/``delete``/``reject``."""
    action = request.path_params["action"]
    body = await json_body(request)
    body = body if isinstance(body, dict) else {}
    annotation_id = _id(request)
    if action == "start":
        statuses = body.get("statuses")
        if statuses is not None and not isinstance(statuses, list):
            raise ApiError(400, {"statuses": ["Expected a list of statuses."]})
        state.start(annotation_id, statuses)
        session = state.queue["session_timeout"]
        return JSONResponse(
            {"annotation": f"{base}/annotations/{annotation_id}", "session_timeout": session}
        )
    if action == "reject":
        note = str(body.get("note_content", ""))
        return JSONResponse(state.reject(annotation_id, note, base))
    if action not in ("confirm", "cancel", "postpone", "delete"):
        raise ApiError(404, "Not found.")
    getattr(state, action)(annotation_id)
    return Response(status_code=204)


async def get_note(request: Request, state: EmulatorState, base: str) -> Response:
    return JSONResponse(state.note_json(_id(request), base))


# --------------------------------------------------------------------------- export

_EXPORT_PARAMS = frozenset(
    {"format", "to_status", "columns", "prepend_columns", "append_columns", "delimiter",
     "quote_char", "quoting", "escape_char", "page", "page_size", "ordering", "queue"}
)  # fmt: skip
_ACCEPT = {
    "application/json": "json",
    "text/csv": "csv",
    "application/xml": "xml",
    "text/xml": "xml",
}


async def export_queue(request: Request, state: EmulatorState, base: str) -> Response:
    """``GET/POST queues/{id}/export``: JSON and XML paginated (XML, like CSV, returns every
    match when no page is asked for), ``to_status`` (POST only) moves the exported page."""
    if _id(request) != QUEUE:
        raise ApiError(404, "Not found.")
    params = request.query_params
    accept = request.headers.get("accept", "").split(",")[0].split(";")[0].strip()
    fmt = params.get("format") or _ACCEPT.get(accept, "json")
    if fmt not in ("json", "csv", "xml"):
        raise ApiError(400, {"format": [f"Unsupported format {fmt!r} (json, csv or xml)."]})
    to_status = params.get("to_status") or None
    if to_status is not None:
        if request.method != "POST":
            raise ApiError(400, {"to_status": ["to_status is only valid with POST."]})
        if to_status not in ("exporting", "exported"):
            raise ApiError(400, {"to_status": ['"exporting" or "exported".']})
    filters = {k: v for k, v in params.items() if k not in _EXPORT_PARAMS}
    filters["queue"] = str(QUEUE)
    filters["ordering"] = params.get("ordering", "")
    found = state.filter_annotations(filters)
    paged = fmt == "json" or "page" in params or "page_size" in params
    maximum = 1000 if fmt == "csv" else 100
    if paged:
        page, pagination = paginate(request, found, maximum=maximum)
    else:
        page = found
        pagination = {"total": len(found), "total_pages": 1, "next": None, "previous": None}
    exported = state.export(page, to_status)
    with state.lock:
        results = [_export_result(state, ann, tree, base) for ann, tree in exported]
    if fmt == "json":
        return JSONResponse({"pagination": pagination, "results": results})
    if fmt == "xml":
        return Response(content.export_xml(results, pagination), media_type="application/xml")
    rows = []
    for (ann, _), result in zip(exported, results, strict=True):
        values, table = content.csv_rows(ann.content)
        meta = {
            "meta_arrived_at": result["arrived_at"] or "",
            "meta_file": result["document"]["file"],
            "meta_file_name": result["document"]["file_name"],
            "meta_status": result["status"],
            "meta_url": result["url"],
            "meta_automated": str(ann.automated).lower(),
            "meta_modified_at": result["modified_at"] or "",
            "meta_assigned_at": result["assigned_at"] or "",
        }
        rows.append(content.CsvRow(meta=meta, values=values, rows=table))
    try:
        body = content.export_csv(rows, state.schema_content, dict(params), state.exportable)
    except content.ContentError as exc:
        raise ApiError(400, {"columns": [str(exc)]}) from None
    return Response(body, media_type="text/csv; charset=utf-8")


def _export_result(
    state: EmulatorState, ann: Annotation, tree: list[dict[str, Any]], base: str
) -> dict[str, Any]:
    shown = state.annotation_json(ann, base)
    document = state.documents[ann.document_id]
    return {
        "url": shown["url"],
        "status": shown["status"],
        "arrived_at": shown["arrived_at"],
        "exported_at": shown["exported_at"],
        "modified_at": shown["modified_at"],
        "assigned_at": shown["assigned_at"],
        "document": {
            "url": f"{base}/documents/{document.id}",
            "file_name": document.file_name,
            "file": f"{base}/documents/{document.id}/content",
        },
        "modifier": shown["modifier"],
        "schema": {"url": shown["schema"]},
        "metadata": shown["metadata"],
        "content": tree,
    }


# --------------------------------------------------------------------------- hooks


async def list_hooks(request: Request, state: EmulatorState, base: str) -> Response:
    with state.lock:
        hooks = [state.hook_json(h, base) for h in state.hooks.values()]
    params = request.query_params
    if params.get("id"):
        hooks = [h for h in hooks if str(h["id"]) in params["id"].split(",")]
    if params.get("queue"):
        hooks = [
            h for h in hooks if any(q.endswith(f"/queues/{params['queue']}") for q in h["queues"])
        ]
    if params.get("active"):
        hooks = [h for h in hooks if h["active"] == (params["active"].lower() == "true")]
    if params.get("events"):
        hooks = [h for h in hooks if set(params["events"].split(",")) & set(h["events"])]
    return _page_response(request, hooks)


async def create_hook(request: Request, state: EmulatorState, base: str) -> Response:
    body = await json_body(request)
    if not isinstance(body, dict):
        raise ApiError(400, "Expected an object.")
    hook = state.create_hook(body)
    return JSONResponse(state.hook_json(hook, base), status_code=201)


async def hook_detail(request: Request, state: EmulatorState, base: str) -> Response:
    hook_id = _id(request)
    if request.method == "DELETE":
        state.delete_hook(hook_id)
        return Response(status_code=204)
    if request.method in ("PATCH", "PUT"):
        body = await json_body(request)
        if not isinstance(body, dict):
            raise ApiError(400, "Expected an object.")
        return JSONResponse(state.hook_json(state.update_hook(hook_id, body), base))
    hook = state.hooks.get(hook_id)
    if hook is None:
        raise ApiError(404, "Not found.")
    return JSONResponse(state.hook_json(hook, base))


# --------------------------------------------------------------------------- admin


async def admin_stats(request: Request) -> Response:
    return JSONResponse(request.app.state.emulator.stats())


async def admin_annotations(request: Request) -> Response:
    """Every annotation with its status, metadata and when its import finished (epoch seconds):
    what benchmarks need to measure latency from "the vendor finished" onwards."""
    state: EmulatorState = request.app.state.emulator
    with state.lock:
        state.tick()
        rows = [
            {
                "id": ann.id,
                "status": ann.status,
                "ready_at": ann.ready_at,
                "metadata": ann.metadata,
            }
            for ann in state.annotations.values()
        ]
    return JSONResponse({"results": rows})


async def admin_status(request: Request) -> Response:
    """Force a status (``{"status": ...}``) or run an action as a UI user (``{"action": ...}``)."""
    state: EmulatorState = request.app.state.emulator
    try:
        body = await json_body(request)
        body = body if isinstance(body, dict) else {}
        shown = state.force_status(
            _id(request), body.get("status"), body.get("action"), body.get("messages")
        )
    except ApiError as error:
        return JSONResponse(error.body, error.status)
    return JSONResponse(shown)


# --------------------------------------------------------------------------- the app


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    detail = {404: "Not found.", 405: f'Method "{request.method}" not allowed.'}.get(
        exc.status_code, exc.detail
    )
    return JSONResponse({"detail": detail}, status_code=exc.status_code, headers=exc.headers)


def _routes(prefix: str) -> list[Route]:
    orgs, org = _one_object("organizations")
    workspaces, workspace = _one_object("workspaces")
    queues, queue = _one_object("queues")
    schemas, schema = _one_object("schemas")
    users, user = _one_object("users")
    groups, group = _one_object("groups")
    table: list[tuple[str, Handler, list[str], dict[str, bool]]] = [
        ("", root, ["GET"], {"auth": False}),
        ("/auth/login", login, ["POST"], {"auth": False}),
        ("/auth/logout", logout, ["POST"], {}),
        ("/auth/user", auth_user, ["GET"], {}),
        ("/organizations", orgs, ["GET"], {}),
        ("/organizations/{id:int}", org, ["GET"], {}),
        ("/workspaces", workspaces, ["GET"], {}),
        ("/workspaces/{id:int}", workspace, ["GET"], {}),
        ("/queues", queues, ["GET"], {}),
        ("/queues/{id:int}", queue, ["GET"], {}),
        ("/queues/{id:int}", patch_queue, ["PATCH", "PUT"], {}),
        ("/queues/{id:int}/upload", queue_upload, ["POST"], {"basic": True}),
        ("/queues/{id:int}/upload/{filename}", queue_upload, ["POST"], {"basic": True}),
        ("/queues/{id:int}/export", export_queue, ["GET", "POST"], {"basic": True}),
        ("/schemas", schemas, ["GET"], {}),
        ("/schemas/{id:int}", schema, ["GET"], {}),
        ("/users", users, ["GET"], {}),
        ("/users/{id:int}", user, ["GET"], {}),
        ("/groups", groups, ["GET"], {}),
        ("/groups/{id:int}", group, ["GET"], {}),
        ("/uploads", create_upload, ["POST"], {"basic": True}),
        ("/uploads/{filename}", create_upload, ["POST"], {"basic": True}),
        ("/uploads/{id:int}", get_upload, ["GET"], {}),
        ("/tasks/{id:int}", get_task, ["GET"], {}),
        ("/documents", list_documents, ["GET"], {}),
        ("/documents", create_document, ["POST"], {"basic": True}),
        ("/documents/{id:int}", get_document, ["GET"], {}),
        ("/documents/{id:int}", patch_document, ["PATCH"], {}),
        ("/documents/{id:int}/content", document_content, ["GET"], {}),
        ("/pages", list_pages, ["GET"], {}),
        ("/pages/{id:int}", get_page, ["GET"], {}),
        ("/pages/{id:int}/content", page_content, ["GET"], {}),
        ("/annotations", list_annotations, ["GET"], {}),
        ("/annotations/search", search_annotations, ["POST"], {}),
        ("/annotations/{id:int}", get_annotation, ["GET"], {}),
        ("/annotations/{id:int}", change_annotation, ["PATCH", "PUT"], {}),
        ("/annotations/{id:int}/content", get_content, ["GET"], {}),
        ("/annotations/{id:int}/content", patch_content, ["PATCH"], {}),
        ("/annotations/{id:int}/content/operations", content_operations, ["POST"], {}),
        ("/annotations/{id:int}/content/{node:int}", get_datapoint, ["GET"], {}),
        ("/annotations/{id:int}/content/{node:int}", patch_datapoint, ["PATCH"], {}),
        ("/annotations/{id:int}/{action}", annotation_action, ["POST"], {}),
        ("/notes/{id:int}", get_note, ["GET"], {}),
        ("/hooks", list_hooks, ["GET"], {}),
        ("/hooks", create_hook, ["POST"], {}),
        ("/hooks/{id:int}", hook_detail, ["GET", "PATCH", "PUT", "DELETE"], {}),
    ]
    routes = [
        Route(prefix + path, _api(handler, **flags), methods=methods)
        for path, handler, methods, flags in table
    ]
    routes.append(Route("/_emulator/stats", admin_stats, methods=["GET"]))
    routes.append(Route("/_emulator/annotations", admin_annotations, methods=["GET"]))
    routes.append(Route("/_emulator/annotations/{id:int}/status", admin_status, methods=["POST"]))
    return routes


def create_app(options: EmulatorOptions | None = None, *, clock: Clock | None = None) -> Starlette:
    """The emulator as an ASGI app; its state is ``app.state.emulator``. ``clock`` (the
    system clock by default) drives processing delays, token expiry and webhook retries."""
    options = options or EmulatorOptions()
    state = EmulatorState(options, clock)
    prefix = options.base_path.rstrip("/") + "/v1"
    return emulator_app(
        _routes(prefix),
        state=state,
        requests=state.requests,
        faults=state.faults,
        callbacks=state.dispatcher,
        api_prefix=prefix,
        exception_handlers={HTTPException: _http_error},
        on_start=state.start_background,
        on_stop=state.stop_background,
    )
