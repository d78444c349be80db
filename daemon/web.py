"""The daemon's HTTP side: health, readiness, metrics, status, and vendor webhooks.

A webhook is only a hint (DESIGN invariant 3): after the vendor's signature checks out, the
matching submission is made due now and its worker fetches the authoritative state.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import TYPE_CHECKING

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from connectors.base import WebhookRequest
from connectors.errors import WebhookRejected
from daemon import status

if TYPE_CHECKING:
    from daemon.runtime import Daemon

log = logging.getLogger(__name__)


def create_app(daemon: Daemon) -> Starlette:
    max_body = daemon.config.core.web.max_body_bytes

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
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > max_body:
            return JSONResponse({"error": "body too large"}, status_code=413)
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > max_body:
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

    return Starlette(
        routes=[
            Route("/healthz", healthz),
            Route("/readyz", readyz),
            Route("/status", status_json),
            Route("/metrics", metrics),
            Route("/webhooks/{profile}", webhook, methods=["POST"]),
            Route("/webhooks/{profile}/{tail:path}", webhook, methods=["POST"]),
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
