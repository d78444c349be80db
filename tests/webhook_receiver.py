"""A webhook receiver as a careful downstream system writes one: it verifies the Standard
Webhooks signature with the ``standardwebhooks`` package, upserts by ``Idempotency-Key`` (a
later version replaces the record, a repeat changes nothing) and answers with its record's id.

``answers`` queues scripted answers (a 503, a 400 with a message) given before any checking,
so a test can make the receiver fail the way real ones do. Served with ``tests.servers.serve``.
"""

from __future__ import annotations

import asyncio
import base64
import json
import threading
from collections import deque
from dataclasses import dataclass, field
from random import Random
from typing import Any

from standardwebhooks import Webhook, WebhookVerificationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

SECRET = "whsec_" + base64.b64encode(b"docrelay-test-webhook-secret-32b").decode()


@dataclass
class Seen:
    """One request as it arrived."""

    method: str
    headers: dict[str, str]
    body: bytes
    verified: bool | None = None
    answered: int = 0


@dataclass
class Receiver:
    secret: str = SECRET
    records: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Idempotency-Key → {"id", "version", "body", "webhook_id", "pushes"}."""
    seen: list[Seen] = field(default_factory=list)
    answers: deque[tuple[int, Any, dict[str, str], float]] = field(default_factory=deque)
    lock: threading.Lock = field(default_factory=threading.Lock)
    fail_rate: float = 0.0
    """Share of verified pushes answered 503, seeded: half before the record is touched,
    half after it was written (the answer is lost, the work is done)."""
    random: Random = field(default_factory=lambda: Random(7))
    faults: dict[str, int] = field(default_factory=lambda: {"before": 0, "after": 0})

    def answer(
        self,
        status: int,
        body: Any = None,
        headers: dict[str, str] | None = None,
        *,
        delay: float = 0.0,
    ) -> None:
        """Queue one answer for the next POST, given ``delay`` seconds after it arrived and
        before the signature is even checked; a text body goes out as text/plain."""
        with self.lock:
            self.answers.append((status, body, headers or {}, delay))

    def bodies(self) -> list[dict[str, Any]]:
        """Each record's latest body: what the downstream system holds."""
        with self.lock:
            return [dict(r["body"]) for r in self.records.values()]

    def posts(self) -> list[Seen]:
        with self.lock:
            return [s for s in self.seen if s.method == "POST"]


def create_app(receiver: Receiver | None = None) -> Starlette:
    state = receiver or Receiver()

    async def hook(request: Request) -> Response:
        body = await request.body()
        seen = Seen(request.method, dict(request.headers), body)
        with state.lock:
            state.seen.append(seen)
            scripted = state.answers.popleft() if state.answers else None
        if scripted is not None:
            status, content, headers, delay = scripted
            seen.answered = status
            await asyncio.sleep(delay)
            if isinstance(content, str):
                return Response(content, status, headers=headers, media_type="text/plain")
            return JSONResponse(content, status, headers=headers)
        try:
            Webhook(state.secret).verify(body, dict(request.headers))
        except WebhookVerificationError as exc:
            seen.verified, seen.answered = False, 401
            return JSONResponse({"error": f"bad signature: {exc}"}, 401)
        seen.verified = True
        key = request.headers.get("idempotency-key")
        if not key:
            seen.answered = 422
            return JSONResponse({"error": "Idempotency-Key header required"}, 422)
        fault = None
        with state.lock:
            if state.fail_rate and state.random.random() < state.fail_rate:
                fault = state.random.choice(("before", "after"))
                state.faults[fault] += 1
        if fault == "before":
            seen.answered = 503
            return JSONResponse({"error": "fault injected before the record"}, 503)
        document = json.loads(body)
        with state.lock:
            record = state.records.get(key)
            created = record is None
            if record is None:
                record = state.records[key] = {
                    "id": f"rec-{len(state.records) + 1}",
                    "version": 0,
                    "pushes": 0,
                }
            record["pushes"] += 1
            if document["version"] >= record["version"]:  # an older version never wins
                record.update(
                    version=document["version"],
                    body=document,
                    webhook_id=request.headers["webhook-id"],
                )
        if fault == "after":
            seen.answered = 503
            return JSONResponse({"error": "fault injected after the record was written"}, 503)
        seen.answered = 201 if created else 200
        return JSONResponse({"id": record["id"], "version": record["version"]}, seen.answered)

    async def options(request: Request) -> Response:
        with state.lock:
            state.seen.append(Seen("OPTIONS", dict(request.headers), b"", answered=204))
        return Response(status_code=204, headers={"Allow": "POST, OPTIONS"})

    app = Starlette(
        routes=[
            Route("/hook", hook, methods=["POST"]),
            Route("/hook", options, methods=["OPTIONS"]),
        ]
    )
    app.state.receiver = state
    return app
