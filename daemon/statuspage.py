"""The read-only status page the daemon serves at ``/``: what an operator looks at.

``/`` shows the pipeline's counts, each vendor profile's and destination's health, what
needs a person (review, re-authentication, dead items, refused feedback) with the reason, and
the recent failures. ``/documents/{id}`` shows one document: its history, its current fields
(the ``docrelay_fields`` view, corrections included) and its first page with each field's box
drawn over it (an inline SVG in PDF points over the PNG of ``/documents/{id}/page.png``).

Server-rendered with Jinja2 (``daemon/templates``), autoescaped: everything shown comes from
documents and vendors, so a filename like ``<script>`` is text. No JavaScript, no external
resources; a Content-Security-Policy forbids both. Every query and rendering runs in a thread.
It is on the admin listener, behind ``web.status_tokens`` when there are any, like ``/status``.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import json
import logging
import os
import socket
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any

from jinja2 import Environment, PackageLoader, StrictUndefined
from pydantic import SecretStr
from sqlalchemy import Connection, bindparam, func, or_, select, text
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from connectors.base import DOCUMENT_FIELDS
from daemon import pageimage, status
from daemon.pipeline import ledger
from daemon.pipeline.feedback import LATEST_RESULT
from daemon.store.models import (
    ID_MAX,
    CorrectionRequestState,
    DeliveryState,
    Extraction,
    FeedbackState,
    FieldRow,
    LineItemRow,
    SubmissionState,
    utcnow,
)

if TYPE_CHECKING:
    from daemon.runtime import Daemon

log = logging.getLogger(__name__)

Endpoint = Callable[[Request], Awaitable[Response]]
LIST_LIMIT = 15
"""Rows per list on the overview (newest first); the counts above them are complete."""
EVENT_LIMIT = 500
"""A document's history shows its latest this many events (oldest of them first)."""
CORRECTIONS_WINDOW = timedelta(hours=24)
"""Refused ``docrelay_corrections`` rows younger than this need a person."""
FAILED_STATES = ("rejected", "dead", "failed", "unrouted")
"""Documents listed under "Recent failures": refused, given up, retrying, or sent nowhere."""
STATE_ORDER = {state: index for index, state in enumerate(
    ["accepted", *SubmissionState, "unrouted", "duplicate"])}  # fmt: skip
"""The order of the document counts: the way through the pipeline, then the side exits."""
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; img-src 'self'; style-src 'unsafe-inline'; base-uri 'none'; "
        "form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
PALETTE = ("#d62728", "#1f77b4", "#2ca02c", "#9467bd", "#e6700a", "#0f9fb0", "#d4459f",
           "#8c564b", "#a8a812", "#5d6873", "#3b4cc0", "#6a8f00", "#b8860b", "#c51b7d",
           "#00796b", "#7b3294")  # fmt: skip
"""Box colours, one per field in table order (the table shows the same colour)."""
FIELD_ORDER = {name: index for index, name in enumerate(DOCUMENT_FIELDS)}


def routes(daemon: Daemon) -> list[Route]:
    """The page's routes, for ``daemon.web``'s route list."""

    def overview_page() -> Response:
        return _html("overview.html.j2", overview_data(daemon))

    def document_page(document_id: int) -> Response:
        data = document_data(daemon, document_id)
        if data is None:
            return _html("missing.html.j2", {"document_id": document_id}, status_code=404)
        return _html("document.html.j2", data)

    def accuracy_page() -> Response:
        return _html("accuracy.html.j2", accuracy_data(daemon))

    async def overview(request: Request) -> Response:
        return await asyncio.to_thread(overview_page)

    async def accuracy(request: Request) -> Response:
        return await asyncio.to_thread(accuracy_page)

    async def document(request: Request) -> Response:
        return await asyncio.to_thread(document_page, request.path_params["document_id"])

    async def page_png(request: Request) -> Response:
        document_id = request.path_params["document_id"]
        page, reason = await asyncio.to_thread(_page_of, daemon, document_id)
        if page is None:
            return Response(reason or "no page", status_code=404, headers=SECURITY_HEADERS)
        return Response(page.png, media_type="image/png", headers=SECURITY_HEADERS)

    tokens = daemon.config.core.web.status_tokens
    return [
        Route("/", _guarded(tokens, overview)),
        Route("/accuracy", _guarded(tokens, accuracy)),
        Route("/documents/{document_id:int}", _guarded(tokens, document)),
        Route("/documents/{document_id:int}/page.png", _guarded(tokens, page_png)),
    ]


def _guarded(tokens: Sequence[SecretStr], endpoint: Endpoint) -> Endpoint:
    """``endpoint`` behind ``web.status_tokens``, like ``/status`` (it shows more): open when
    there are none. A browser cannot send a bearer token, so the token is also taken as the
    password of HTTP Basic (any user name), and the 401 asks for that: the browser prompts."""
    if not tokens:
        return endpoint

    async def checked(request: Request) -> Response:
        if not status_token_given(request.headers.get("authorization"), tokens):
            return Response(
                "a status token is required (web.status_tokens): as the password, any user\n",
                status_code=401,
                headers={
                    **SECURITY_HEADERS,
                    "WWW-Authenticate": 'Basic realm="docrelay status", charset="UTF-8"',
                },
            )
        return await endpoint(request)

    return checked


def status_token_given(header: str | None, tokens: Sequence[SecretStr]) -> bool:
    """``Authorization`` names one of ``tokens``: ``Bearer <token>``, or ``Basic`` with the
    token as the password. Compared as ``daemon.web.bearer_token`` does (constant time)."""
    from daemon.web import bearer_token  # web imports this module

    scheme, _, given = (header or "").partition(" ")
    if scheme.lower() == "basic":
        try:
            decoded = base64.b64decode(given.strip(), validate=True).decode("utf-8")
        except (ValueError, UnicodeDecodeError):
            return False
        header = "Bearer " + decoded.partition(":")[2]
    return bearer_token(header, tokens) is not None


@functools.cache
def _environment() -> Environment:
    env = Environment(
        loader=PackageLoader("daemon", "templates"),
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["when"] = when
    env.filters["ago"] = ago
    env.filters["number"] = number
    return env


def _html(template: str, data: Mapping[str, Any], status_code: int = 200) -> HTMLResponse:
    page = _environment().get_template(template).render(**data, now=datetime.now(UTC))
    return HTMLResponse(page, status_code=status_code, headers=SECURITY_HEADERS)


def _as_datetime(value: Any) -> datetime | None:
    """A timestamp from a table (aware) or a view (SQLite gives naive UTC text)."""
    if value is None or value == "":
        return None
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            return None
    if not isinstance(value, datetime):
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def when(value: Any) -> str:
    """``2026-12-04 01:23:45 UTC``: the store's clock, to the second."""
    moment = _as_datetime(value)
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC") if moment else "—"


def ago(value: Any) -> str:
    """``3 min ago``: how long ago, roughly, for scanning a list."""
    moment = _as_datetime(value)
    if moment is None:
        return ""
    seconds = (datetime.now(UTC) - moment).total_seconds()
    if seconds < 0:
        return "in the future"
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{int(seconds // size)} {unit} ago"
    return f"{int(seconds)} s ago"


def number(value: Any, places: int = 0) -> str:
    """A stored number as people write it: ``5379.1000`` (or SQLite's float 5379.1) is
    ``5379.10`` with ``places=2``, ``6.5000`` is ``6.5``; not a number: as it is."""
    if value is None or isinstance(value, bool):
        return ""
    try:
        exact = Decimal(str(value)).normalize()
    except InvalidOperation:
        return str(value)
    if exact.is_finite() and places and exact.as_tuple().exponent > -places:  # type: ignore[operator]
        exact = exact.quantize(Decimal(1).scaleb(-places))
    return f"{exact:f}"


def accuracy_data(daemon: Daemon) -> dict[str, Any]:
    """What ``/accuracy`` shows: ``docrelay report accuracy`` as a chart."""
    from daemon import accuracy

    report = accuracy.accuracy(daemon.reader)
    return {
        "chart": accuracy.chart(report),
        "calibration": report.calibration,
        "bands": [label for label, _low, _high in accuracy.CONFIDENCE_BANDS],
    }


def overview_data(daemon: Daemon) -> dict[str, Any]:
    """Everything ``/`` shows, read in one go from the store and the running daemon."""
    summary = status.summary(daemon.engine, errors=LIST_LIMIT)
    sub, dl = ledger.submissions, ledger.deliveries
    with daemon.reader.connect() as conn:
        documents = {
            r.state: r.n
            for r in conn.execute(
                text("SELECT state, COUNT(*) AS n FROM docrelay_documents GROUP BY state")
            )
        }
        failures = _rows(
            conn.execute(
                text(
                    "SELECT document_id, filename, state, vendor, error, received_at, attempts "
                    "FROM docrelay_documents WHERE state IN :states "
                    "ORDER BY document_id DESC LIMIT :n"
                ).bindparams(bindparam("states", expanding=True)),
                {"n": LIST_LIMIT, "states": list(FAILED_STATES)},
            )
        )
        recent = _rows(
            conn.execute(
                text(
                    "SELECT document_id, filename, state, vendor, source, received_at "
                    "FROM docrelay_documents ORDER BY document_id DESC LIMIT :n"
                ),
                {"n": LIST_LIMIT},
            )
        )
        dead = _rows(
            conn.execute(
                select(sub.c.id, sub.c.document_id, sub.c.profile, sub.c.error, sub.c.updated_at)
                .where(sub.c.state == SubmissionState.DEAD)
                .order_by(sub.c.id.desc())
                .limit(LIST_LIMIT)
            )
        )
        names = _filenames(
            conn, dead, summary["in_review"], summary["delivery_problems"],
            summary["feedback_problems"], summary["corrections_refused"],
        )  # fmt: skip
        totals = _needs_a_person(conn)
        vendor_errors = _last_errors(conn, sub, sub.c.profile, sub.c.updated_at)
        destination_errors = _last_errors(conn, dl, dl.c.destination, dl.c.created_at)
    health = {row["name"]: row for row in summary["connectors"]}
    vendors = _connectors(
        sorted(daemon.vendors),
        summary["submissions"],
        "vendor",
        daemon.paused,
        health,
        vendor_errors,
        trouble=(SubmissionState.FAILED, SubmissionState.DEAD),
        circuits={row["vendor"]: row for row in summary.get("breakers", [])},
    )
    destinations = _connectors(
        sorted(daemon.destinations),
        summary["deliveries"],
        "destination",
        daemon.paused_destinations,
        health,
        destination_errors,
        trouble=(DeliveryState.FAILED, DeliveryState.DEAD),
    )
    reauth = [c for c in (*vendors, *destinations) if c["needs_reauth"]]
    attention = len(reauth) + sum(totals.values())
    return {
        "instance": {
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "uptime": _duration(time.time() - daemon.started_at),
            "ready": daemon.ready.is_set(),
            "healthy": daemon.healthy(),
            "storage": daemon.storage_health(),
        },
        "sources": [{"name": s.context.name, "health": s.health()} for s in daemon.sources],
        "processes": [{**p, "this": p["id"] == daemon.owner} for p in summary["processes"]],
        "budgets": [b for b in summary["budgets"] if b["of"] is not None],
        "documents": dict(
            sorted(documents.items(), key=lambda kv: (STATE_ORDER.get(kv[0], 99), kv[0]))
        ),
        "documents_total": sum(documents.values()),
        "submission_states": _pivot(summary["submissions"], "vendor"),
        "delivery_states": _pivot(summary["deliveries"], "destination"),
        "vendors": vendors,
        "destinations": destinations,
        "oldest_waiting": summary["oldest_waiting"],
        "in_review": summary["in_review"],
        "reauth": reauth,
        "dead": dead,
        "delivery_problems": summary["delivery_problems"],
        "feedback_problems": summary["feedback_problems"],
        "corrections_refused": [
            row
            for row in summary["corrections_refused"]
            if (at := _as_datetime(row["at"])) is not None and at >= utcnow() - CORRECTIONS_WINDOW
        ],
        "attention": attention,
        "totals": totals,
        "failures": failures,
        "recent": recent,
        "filenames": names,
    }


def _needs_a_person(conn: Connection) -> dict[str, int]:
    """How many of each kind wait for a person (the lists show the newest ``LIST_LIMIT``).

    A refused row of ``docrelay_corrections`` stays refused for good (the ERP inserts a new
    one): only those of the last ``CORRECTIONS_WINDOW`` count, or the page would never be
    quiet again."""
    sub, dl, fb = ledger.submissions, ledger.deliveries, ledger.feedback
    since = utcnow() - CORRECTIONS_WINDOW
    ct = status.ct
    queries = {
        "in_review": select(func.count()).where(sub.c.state == SubmissionState.REVIEW),
        "dead": select(func.count()).where(sub.c.state == SubmissionState.DEAD),
        "delivery_problems": select(func.count()).where(
            or_(dl.c.state == DeliveryState.DEAD, dl.c.outcome == "rejected")
        ),
        "feedback_problems": select(func.count()).where(
            fb.c.state.in_((FeedbackState.REFUSED, FeedbackState.DEAD))
        ),
        "corrections_refused": select(func.count()).where(
            ct.c.state == CorrectionRequestState.REFUSED, ct.c.applied_at >= since
        ),
    }
    return {name: conn.execute(query).scalar_one() for name, query in queries.items()}


def _rows(result: Iterable[Any]) -> list[dict[str, Any]]:
    return [dict(row._mapping) for row in result]


def _filenames(conn: Connection, *lists: list[dict[str, Any]]) -> dict[int, str]:
    """The filenames of the documents the lists name, so each row can say which file it is."""
    ids = {r["document_id"] for rows in lists for r in rows if r.get("document_id") is not None}
    if not ids:
        return {}
    docs = ledger.documents
    query = select(docs.c.id, docs.c.filename).where(docs.c.id.in_(sorted(ids)))
    return {r.id: r.filename for r in conn.execute(query)}


def _last_errors(conn: Connection, table: Any, name: Any, at: Any) -> dict[str, dict[str, Any]]:
    """Per connector: its most recent error (a submission's or a delivery's), with when."""
    newest = (
        select(name.label("name"), func.max(table.c.id).label("id"))
        .where(table.c.error.is_not(None))
        .group_by(name)
        .subquery()
    )
    rows = conn.execute(
        select(newest.c.name, table.c.error, table.c.document_id, at.label("at")).join(
            table, table.c.id == newest.c.id
        )
    )
    return {r.name: {"error": r.error, "document_id": r.document_id, "at": r.at} for r in rows}


def _connectors(
    configured: list[str],
    counts: list[dict[str, Any]],
    key: str,
    paused: Mapping[str, str],
    health: Mapping[str, Mapping[str, Any]],
    errors: Mapping[str, Mapping[str, Any]],
    *,
    trouble: tuple[str, ...],
    circuits: Mapping[str, Mapping[str, Any]] | None = None,
) -> list[dict[str, Any]]:
    """One row per vendor profile or destination: configured ones, and any the store still
    has work for. ``status`` is the word the page leads with; a vendor's open circuit breaker
    (``circuits``, ``status.summary``'s rows) comes right after a refused login."""
    states: dict[str, dict[str, int]] = {}
    for row in counts:
        states.setdefault(row[key], {})[row["state"]] = row["count"]
    result = []
    for name in [*configured, *sorted(set(states) - set(configured))]:
        record = health.get(name)
        needs_reauth = name in paused or bool(record and record["state"] == "auth_failed")
        by_state = states.get(name, {})
        circuit = (circuits or {}).get(name)
        open_circuit = circuit is not None and circuit["state"] != "closed"
        if needs_reauth:
            word = "needs re-auth"
        elif open_circuit:
            word = "circuit half-open" if circuit["state"] == "half_open" else "circuit open"
        elif name not in configured:
            word = "not configured"
        elif any(by_state.get(state) for state in trouble):
            word = "errors"
        else:
            word = "ok"
        result.append(
            {
                "name": name,
                "status": word,
                "needs_reauth": needs_reauth,
                "reason": paused.get(name)
                or (record or {}).get("reason")
                or (_circuit_reason(circuit) if open_circuit else None),
                "since": (record or {}).get("since")
                or (circuit["opened_at"] if open_circuit else None),
                "states": dict(sorted(by_state.items())),
                "total": sum(by_state.values()),
                "last_error": errors.get(name),
            }
        )
    return result


def _circuit_reason(circuit: Mapping[str, Any]) -> str:
    """What an open breaker means for the documents, in the words of the health column."""
    failures = circuit.get("failures") or 0
    probe = f"; next probe at {circuit['retry_at']}" if circuit.get("retry_at") else ""
    return (
        f"{failures} transient failure(s) in a row: nothing is sent to the vendor{probe} "
        "(a route with a fallback moves its waiting documents there after outage_after)"
    )


def _pivot(counts: list[dict[str, Any]], key: str) -> dict[str, Any]:
    """``[{vendor, state, count}]`` → a table: rows per name, a column per state seen."""
    columns = sorted({row["state"] for row in counts})
    table: dict[str, dict[str, int]] = {}
    for row in counts:
        table.setdefault(row[key], {})[row["state"]] = row["count"]
    return {"columns": columns, "rows": table}


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    days, seconds = divmod(seconds, 86400)
    hours, seconds = divmod(seconds, 3600)
    minutes, seconds = divmod(seconds, 60)
    if days:
        return f"{days} d {hours} h"
    if hours:
        return f"{hours} h {minutes} min"
    return f"{minutes} min {seconds} s"


def document_data(daemon: Daemon, document_id: int) -> dict[str, Any] | None:
    """Everything ``/documents/{id}`` shows, or None for an unknown document."""
    if document_id > ID_MAX:  # from the URL: no such row, and too large for the database
        return None
    docs, sub, ev = ledger.documents, ledger.submissions, ledger.events
    with daemon.reader.connect() as conn:
        stored = conn.execute(select(docs).where(docs.c.id == document_id)).mappings().first()
        if stored is None:
            return None
        submissions = _rows(
            conn.execute(select(sub).where(sub.c.document_id == document_id).order_by(sub.c.id))
        )
        dl = ledger.deliveries
        deliveries = _rows(
            conn.execute(
                select(dl).where(dl.c.document_id == document_id)
                .order_by(dl.c.destination, dl.c.version)
            )
        )  # fmt: skip
        # The latest normalised extraction, as docrelay_fields and the corrections take it;
        # looked up for this document alone (the views compute theirs for every document).
        latest = conn.execute(LATEST_RESULT, {"document_id": document_id}).first()
        fields: list[dict[str, Any]] = []
        lines: list[dict[str, Any]] = []
        version = None
        if latest is not None:
            fl, li, ex = FieldRow.__table__, LineItemRow.__table__, Extraction.__table__
            version = conn.execute(select(ex.c.version).where(ex.c.id == latest.id)).scalar()
            fields = _rows(
                conn.execute(
                    select(fl.c.name.label("field"), *(c for c in fl.c if c.name != "name"))
                    .where(fl.c.extraction_id == latest.id)
                )
            )  # fmt: skip
            lines = _rows(
                conn.execute(select(li).where(li.c.extraction_id == latest.id)
                             .order_by(li.c.line_no))
            )  # fmt: skip
        events = _rows(
            conn.execute(
                select(ev).where(ev.c.document_id == document_id).order_by(ev.c.id.desc())
                .limit(EVENT_LIMIT)
            )
        )[::-1]  # fmt: skip
    shadows = {s["id"] for s in submissions if s["role"] == "shadow"}
    for event in events:
        event["shadow"] = event["submission_id"] in shadows
    fields.sort(key=lambda f: (FIELD_ORDER.get(f["field"], len(FIELD_ORDER)), f["field"]))
    for index, field in enumerate(fields):
        field["colour"] = PALETTE[index % len(PALETTE)]
        field["box"] = _box(field.get("bbox"))
    page, reason = _page_of(daemon, document_id, stored)
    overlay = _overlay(page, fields, lines) if page is not None else None
    return {
        "doc": _document_row(stored, submissions, deliveries, version),
        "stored": dict(stored),
        "submissions": submissions,
        "deliveries": deliveries,
        "fields": fields,
        "lines": lines,
        "events": events,
        "events_cut": len(events) == EVENT_LIMIT,
        "page": page,
        "page_reason": reason,
        "overlay": overlay,
    }


def _document_row(
    stored: Mapping[str, Any],
    submissions: list[dict[str, Any]],
    deliveries: list[dict[str, Any]],
    version: int | None,
) -> dict[str, Any]:
    """The document's ``docrelay_documents`` row, as the view defines it (the latest
    non-shadow submission's state, vendor and error, else intake's; the last delivery's
    time)."""
    last = next((s for s in reversed(submissions) if s["role"] != "shadow"), {})
    delivered = [d["delivered_at"] for d in deliveries if d["state"] == DeliveryState.DELIVERED]
    return {
        **stored,
        "document_id": stored["id"],
        "state": last.get("state") or stored["intake_state"],
        "vendor": last.get("profile"),
        "vendor_ref": last.get("vendor_ref"),
        "completed_at": last.get("completed_at"),
        "exported_at": max(delivered) if delivered else None,
        "error": last.get("error") or stored["error"],
        "review_reason": last.get("review_reason"),
        "extraction_version": version,
    }


def _page_of(
    daemon: Daemon, document_id: int, stored: Mapping[str, Any] | None = None
) -> tuple[pageimage.PageImage | None, str | None]:
    """The document's first page, or None and why there is none."""
    if stored is None:
        docs = ledger.documents
        with daemon.reader.connect() as conn:
            stored = None if document_id > ID_MAX else conn.execute(
                select(docs.c.sha256, docs.c.mime_type).where(docs.c.id == document_id)
            ).mappings().first()  # fmt: skip
        if stored is None:
            return None, "no such document"
    try:
        path = daemon.blobs.path(stored["sha256"])
        return pageimage.first_page(path, stored["mime_type"]), None
    except pageimage.NoPage as exc:
        return None, str(exc)
    except Exception as exc:  # a PDFium or Pillow failure must cost only the picture
        log.warning("document %d: page 1 could not be drawn: %s", document_id, exc)
        return None, f"page 1 could not be drawn ({type(exc).__name__}: {exc})"


def _box(value: Any) -> tuple[float, float, float, float] | None:
    """``left,top,right,bottom`` (the ``bbox`` column) as numbers, None when unusable."""
    if isinstance(value, list | tuple):
        parts = list(value)
    elif isinstance(value, str):
        parts = value.split(",")
    else:
        return None
    try:
        left, top, right, bottom = (float(p) for p in parts)
    except (TypeError, ValueError):
        return None
    if not (right > left and bottom > top):
        return None
    return left, top, right, bottom


def _overlay(
    page: pageimage.PageImage, fields: list[dict[str, Any]], lines: list[dict[str, Any]]
) -> dict[str, Any]:
    """The SVG's boxes on page 1, in the rendered page's points: a box stored for another
    page size (a vendor's own rendering) is scaled to this one."""
    width, height = page.page_width, page.page_height

    def placed(box: tuple[float, float, float, float], pw: Any, ph: Any) -> dict[str, float]:
        sx = width / pw if isinstance(pw, int | float) and pw > 0 else 1.0
        sy = height / ph if isinstance(ph, int | float) and ph > 0 else 1.0
        left, top, right, bottom = box
        return {"x": left * sx, "y": top * sy, "w": (right - left) * sx,
                "h": (bottom - top) * sy}  # fmt: skip

    boxes = []
    elsewhere = 0
    for field in fields:
        if field["box"] is None:
            continue
        if field.get("page") not in (None, 1):
            elsewhere += 1
            continue
        boxes.append(
            {**placed(field["box"], field.get("page_width"), field.get("page_height")),
             "label": field["field"], "colour": field["colour"], "kind": "field"}
        )  # fmt: skip
    cells = []
    for line in lines:
        provenance = line.get("provenance")
        if isinstance(provenance, str):  # JSON text on some backends
            try:
                provenance = json.loads(provenance)
            except ValueError:
                provenance = None
        for name, where in (provenance or {}).items() if isinstance(provenance, dict) else ():
            box = _box(where.get("bbox")) if isinstance(where, dict) else None
            if box is None:
                continue
            if where.get("page") not in (None, 1):
                elsewhere += 1
                continue
            cells.append(
                {**placed(box, where.get("page_width"), where.get("page_height")),
                 "label": f"#{line['line_no']} {name}", "kind": "line"}
            )  # fmt: skip
    size = max(6.0, min(width, height) / 64)
    _place_labels(boxes, size, width, height)
    return {"width": width, "height": height, "boxes": boxes, "cells": cells,
            "elsewhere": elsewhere, "label_size": size}  # fmt: skip


Rect = tuple[float, float, float, float]


def _place_labels(boxes: list[dict[str, Any]], size: float, width: float, height: float) -> None:
    """Put each box's name where it covers no other box and no name placed before it: above
    the box, else below, right or left of it, else wherever it covers least. Sets ``tx``,
    ``ty`` (the text's baseline start) on each box. The text's width is estimated (bold sans
    at ~0.66 em a character, generously): no font metrics without a browser."""

    def overlap(a: Rect, b: Rect) -> float:
        dx = min(a[2], b[2]) - max(a[0], b[0])
        dy = min(a[3], b[3]) - max(a[1], b[1])
        return dx * dy if dx > 0 and dy > 0 else 0.0

    taken: list[Rect] = [(b["x"], b["y"], b["x"] + b["w"], b["y"] + b["h"]) for b in boxes]
    for box in sorted(boxes, key=lambda b: (b["y"], b["x"])):
        text_w, text_h = 0.66 * size * len(box["label"]), size
        left, top, right, bottom = box["x"], box["y"], box["x"] + box["w"], box["y"] + box["h"]
        candidates = [
            (left, top - 1.5 - text_h),  # above
            (left, bottom + 1.5),  # below
            (right + 2, (top + bottom - text_h) / 2),  # right
            (left - 2 - text_w, (top + bottom - text_h) / 2),  # left
            (right - text_w, top - 1.5 - text_h),  # above, right-aligned
        ]
        own = (left, top, right, bottom)
        best: tuple[float, Rect] | None = None
        for x, y in candidates:
            x = min(max(x, 0.0), max(width - text_w, 0.0))
            y = min(max(y, 0.0), max(height - text_h, 0.0))
            rect = (x, y, x + text_w, y + text_h)
            cost = sum(overlap(rect, other) for other in taken if other != own)
            cost += overlap(rect, own) * 0.5  # on its own box: better than on another's
            if best is None or cost < best[0]:
                best = (cost, rect)
            if cost == 0:
                break
        assert best is not None
        rect = best[1]
        taken.append(rect)
        box["tx"], box["ty"] = rect[0], rect[1] + text_h * 0.82
