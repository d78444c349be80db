"""The daemon's HTTP side: health, readiness, metrics, status, vendor webhooks and the API.

A webhook is only a hint (DESIGN invariant 3): after the vendor's signature checks out, the
matching submission is made due now and its worker fetches the authoritative state.

The API (``/api/v1/…``, bearer tokens from ``[web.api]``) lets an ERP or a person correct a
document's fields through the same validated path as ``docrelay correct``.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import threading
from collections.abc import Sequence
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from pydantic import SecretStr
from sqlalchemy.exc import OperationalError
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from connectors.base import WebhookRequest
from connectors.errors import WebhookRejected
from daemon import status, statuspage
from daemon.pipeline.feedback import CorrectionError, InvalidCorrection, UnknownDocument, correct

if TYPE_CHECKING:
    from daemon.runtime import Daemon

log = logging.getLogger(__name__)


class BodyTooLarge(Exception):
    pass


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused (``BodyTooLarge``) as soon as it passes ``limit`` bytes: a
    declared length over the limit is refused before a byte is read."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise BodyTooLarge
    return bytes(body)


def bearer_token(header: str | None, tokens: Sequence[SecretStr]) -> SecretStr | None:
    """The one of ``tokens`` that ``Authorization: Bearer <token>`` names, or None. Every token
    is compared, in constant time (``hmac.compare_digest``), so the answer's timing tells
    nothing of them."""
    scheme, _, given = (header or "").partition(" ")
    if scheme.lower() != "bearer" or not given.strip():
        return None
    offered = given.strip().encode()
    found = None
    for token in tokens:
        if hmac.compare_digest(offered, token.get_secret_value().encode()):
            found = token
    return found


def token_actor(token: SecretStr) -> str:
    """Who made an API call, in the history: ``api:`` and the first 8 hex digits of the token's
    SHA-256 — which of several tokens (one per ERP or person) it was, without the secret."""
    return "api:" + hashlib.sha256(token.get_secret_value().encode()).hexdigest()[:8]


def _correction_request(body: bytes) -> tuple[dict[str, str], list[str], str | None]:
    """``{"values": {field: value}, "confirm": [field], "note": str}`` as ``correct`` takes
    it (a null value: the field is absent), or ValueError saying what is wrong with it."""
    try:
        data = json.loads(body, parse_float=Decimal)  # 12.30 stays 12.30, never a float
    except (ValueError, UnicodeDecodeError):
        raise ValueError("the body is not JSON") from None
    if not isinstance(data, dict):
        raise ValueError("the body must be a JSON object")
    if unknown := sorted(set(data) - {"values", "confirm", "note"}):
        raise ValueError(f"unknown key(s): {', '.join(unknown)} (values, confirm, note)")
    values = data.get("values", {})
    confirm = data.get("confirm", [])
    note = data.get("note")
    if not isinstance(values, dict) or not all(
        isinstance(v, str | int | Decimal | None) and not isinstance(v, bool)
        for v in values.values()
    ):
        raise ValueError('"values" must map field names to strings or numbers (null: absent)')
    if not isinstance(confirm, list) or not all(isinstance(f, str) for f in confirm):
        raise ValueError('"confirm" must be a list of field names')
    if note is not None and not isinstance(note, str):
        raise ValueError('"note" must be a string')
    texts = {k: "" if v is None else str(v) for k, v in values.items()}
    return texts, confirm, note[:500] if note else None


def create_app(daemon: Daemon) -> Starlette:
    max_body = daemon.config.core.web.max_body_bytes
    api = daemon.config.core.web.api

    async def healthz(request: Request) -> Response:
        healthy = await asyncio.to_thread(daemon.healthy)
        sources = {s.context.name: s.health() for s in daemon.sources}
        body = {
            "status": "ok" if healthy else "unhealthy",
            "ready": daemon.ready.is_set(),
            "sources": sources,
            "paused_vendors": daemon.paused,
            "storage": daemon.storage_health(),
        }
        return JSONResponse(body, status_code=200 if healthy else 503)

    async def readyz(request: Request) -> Response:
        ok = daemon.ready.is_set()
        return JSONResponse({"ready": ok}, status_code=200 if ok else 503)

    async def status_json(request: Request) -> Response:
        return JSONResponse(await asyncio.to_thread(status.summary, daemon.engine))

    async def metrics(request: Request) -> Response:
        data = await asyncio.to_thread(status.summary, daemon.engine, errors=0)
        lines = [
            "# HELP docrelay_submissions Submissions per vendor profile and state.",
            "# TYPE docrelay_submissions gauge",
        ]
        for row in data["submissions"]:
            lines.append(
                f'docrelay_submissions{{vendor="{row["vendor"]}",state="{row["state"]}"}} '
                f"{row['count']}"
            )
        lines += ["# HELP docrelay_deliveries Deliveries per destination and state.",
                  "# TYPE docrelay_deliveries gauge"]  # fmt: skip
        for row in data["deliveries"]:
            lines.append(
                f'docrelay_deliveries{{destination="{row["destination"]}",'
                f'state="{row["state"]}"}} {row["count"]}'
            )
        lines += ["# TYPE docrelay_documents gauge"]
        for state, count in data["documents"].items():
            lines.append(f'docrelay_documents{{intake_state="{state}"}} {count}')
        lines += ["# TYPE docrelay_vendor_paused gauge"]
        for name in daemon.vendors:
            lines.append(f'docrelay_vendor_paused{{vendor="{name}"}} {int(name in daemon.paused)}')
        jobs = daemon.job_counters
        lines += [
            "# HELP docrelay_scheduled_job_runs_total Periodic job runs, per job.",
            "# TYPE docrelay_scheduled_job_runs_total counter",
            *(
                f'docrelay_scheduled_job_runs_total{{job="{job}"}} {count}'
                for job, count in sorted(jobs.runs.items())
            ),
            "# HELP docrelay_scheduled_jobs_missed_total Periodic job runs skipped.",
            "# TYPE docrelay_scheduled_jobs_missed_total counter",
            f"docrelay_scheduled_jobs_missed_total {jobs.missed}",
            "# HELP docrelay_scheduled_job_errors_total Periodic job runs that raised.",
            "# TYPE docrelay_scheduled_job_errors_total counter",
            f"docrelay_scheduled_job_errors_total {jobs.errors}",
        ]
        return PlainTextResponse("\n".join(lines) + "\n", media_type="text/plain; version=0.0.4")

    async def webhook(request: Request) -> Response:
        profile = request.path_params["profile"]
        vendor = daemon.vendors.get(profile)
        if vendor is None:
            return JSONResponse({"error": "unknown profile"}, status_code=404)
        try:
            body = await read_body(request, max_body)
        except BodyTooLarge:
            return JSONResponse({"error": "body too large"}, status_code=413)
        call = WebhookRequest(
            method=request.method,
            headers=request.headers,
            body=bytes(body),
            tail=request.path_params.get("tail", ""),
            query=request.query_params,
            client=request.client.host if request.client else None,
        )
        try:
            hints = daemon.replay_guard.admit(profile, vendor.parse_webhook(call))
        except WebhookRejected as exc:
            log.warning("webhook for %s rejected: %s", profile, exc)
            return JSONResponse({"error": str(exc)}, status_code=exc.status_code)
        if hints:
            daemon.hint(profile, hints)
        return JSONResponse({"accepted": len(hints)})

    async def corrections(request: Request) -> Response:
        """Correct or confirm fields of a document; the answers are in README "Corrections"."""
        if not api.tokens:  # off: answer as if there were no such address
            return JSONResponse({"error": "not found"}, status_code=404)
        token = bearer_token(request.headers.get("authorization"), api.tokens)
        if token is None:
            return JSONResponse(
                {"error": "a valid bearer token is required"},
                status_code=401,
                headers={"WWW-Authenticate": 'Bearer realm="docrelay"'},
            )
        document_id = request.path_params["document_id"]
        try:
            body = await read_body(request, api.max_body_bytes)
        except BodyTooLarge:
            return JSONResponse({"error": "body too large"}, status_code=413)
        try:
            values, confirm, note = _correction_request(body)
        except ValueError as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        if not values and not confirm:
            return JSONResponse(
                {"error": 'say what is right: "values" or "confirm"'}, status_code=422
            )
        actor = token_actor(token)
        return await run_in_threadpool(_correct, document_id, values, confirm, note, actor)

    def _correct(
        document_id: int, values: dict[str, str], confirm: list[str], note: str | None, actor: str
    ) -> Response:
        answer: dict[str, Any] = {"document_id": document_id}
        try:
            changed = correct(
                daemon.engine, document_id, values, confirm=confirm, vendors=daemon.vendors,
                origin=actor, note=note,
            )  # fmt: skip
        except UnknownDocument as exc:
            return JSONResponse({**answer, "error": str(exc)}, status_code=404)
        except InvalidCorrection as exc:
            answer |= {"error": f"{exc}; nothing changed", "field": exc.field}
            return JSONResponse(answer, status_code=422)
        except CorrectionError as exc:
            return JSONResponse({**answer, "error": str(exc)}, status_code=409)
        except OperationalError as exc:  # locked or unreachable: nothing was committed
            log.warning("API correction of document %d: store unavailable: %s", document_id,
                        exc.orig)  # fmt: skip
            return JSONResponse(
                {**answer, "error": "the store is busy; try again"},
                status_code=503,
                headers={"Retry-After": "5"},
            )
        log.info("document %d corrected over the API: %s", document_id, "; ".join(changed))
        daemon.wake_all()  # the feedback and the new export versions go out now
        return JSONResponse({**answer, "changed": changed})

    return Starlette(
        routes=[
            Route("/healthz", healthz),
            Route("/readyz", readyz),
            Route("/status", status_json),
            Route("/metrics", metrics),
            Route("/webhooks/{profile}", webhook, methods=["POST"]),
            Route("/webhooks/{profile}/{tail:path}", webhook, methods=["POST"]),
            Route("/api/v1/documents/{document_id:int}/corrections", corrections, methods=["POST"]),
            *statuspage.routes(daemon),
        ]
    )


class WebServer:
    """uvicorn in a background thread, so the main thread keeps signal handling."""

    def __init__(self, daemon: Daemon) -> None:
        import uvicorn

        host, _, port = daemon.config.core.web.listen.rpartition(":")
        self.config = uvicorn.Config(
            create_app(daemon),
            host=host.strip("[]"),
            port=int(port),
            log_level="warning",
            access_log=False,
            lifespan="off",
        )
        self.server = uvicorn.Server(self.config)
        self.loop: asyncio.AbstractEventLoop | None = None
        self.thread = threading.Thread(
            target=lambda: asyncio.run(self._serve()), name="web", daemon=True
        )

    async def _serve(self) -> None:
        self.loop = asyncio.get_running_loop()
        await self.server.serve()

    def responsive(self, timeout: float = 1.0) -> bool:
        """The event loop runs a callback within ``timeout``: a loop blocked by a bug would
        answer neither health checks nor webhooks, and a restart is what helps then."""
        loop = self.loop
        if loop is None or not self.thread.is_alive():
            return False
        future = asyncio.run_coroutine_threadsafe(asyncio.sleep(0), loop)
        try:
            future.result(timeout)
        except TimeoutError:
            future.cancel()
            return False
        return True

    def start(self, timeout: float = 10.0) -> None:
        self.thread.start()
        deadline = threading.Event()
        for _ in range(int(timeout * 100)):
            if self.server.started or not self.thread.is_alive():
                break
            deadline.wait(0.01)
        if not self.server.started:
            raise RuntimeError(f"web server did not start on {self.config.host}:{self.config.port}")
        for server in self.server.servers:
            for sock in server.sockets:
                log.info("web app listening on %s", sock.getsockname()[:2])

    @property
    def port(self) -> int:
        return int(self.server.servers[0].sockets[0].getsockname()[1])

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)
