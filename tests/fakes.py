"""In-process fake connectors that keep protocol state, for pipeline unit tests.

A ``ScriptedVendor`` answers each call from a per-profile script, so a test says "503 three
times, then accept" and the pipeline's reaction is observed on the store.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections import defaultdict, deque
from collections.abc import Mapping
from typing import Any, ClassVar, Literal

from connectors.base import (
    CanonicalResult,
    ConnectorSettings,
    CorrectionOutcome,
    DeliveryReceipt,
    Destination,
    DestinationSettings,
    DocumentRef,
    DownstreamOutcome,
    DownstreamState,
    ExportPayload,
    FieldValue,
    PollResult,
    PollStatus,
    SubmitResult,
    Vendor,
    VendorCapabilities,
    VendorSettings,
)
from connectors.errors import AuthFailed, NotReady, RateLimited, TerminalError, TransientError

SCRIPTS: dict[str, deque[str]] = defaultdict(deque)
"""profile → outcomes for the next calls: ok, transient, terminal, auth, ratelimit, processing."""
CALLS: dict[str, list[Any]] = defaultdict(list)
"""profile → (method, document id) for every call, in order."""
GATES: dict[str, threading.Event] = defaultdict(threading.Event)
"""profile → the gate a ``hold`` outcome of submit waits at (set it to let the call finish)."""


class ScriptedSettings(VendorSettings):
    kind: Literal["scripted"] = "scripted"
    concurrency: int = 1
    poll_interval: float | None = 0.0
    sync: bool = False
    """The upload answers with the result (a synchronous vendor)."""
    reconcile: bool = False
    """The vendor can find an earlier upload (``reconcile_uploads``)."""
    waited: float = 0.0
    """Seconds the upload reports it spent after the vendor took the document."""


def _next(profile: str) -> str:
    script = SCRIPTS[profile]
    return script.popleft() if script else "ok"


def _raise(outcome: str) -> None:
    if outcome == "transient":
        raise TransientError("503 Service Unavailable")
    if outcome == "terminal":
        raise TerminalError("vendor refused the document: unsupported layout")
    if outcome == "auth":
        raise AuthFailed("401 Unauthorized: token expired, re-login refused")
    if outcome.startswith("ratelimit"):
        raise RateLimited("429 Too Many Requests", retry_after=float(outcome.split(":")[1]))
    if outcome == "notready":
        raise NotReady("still importing", retry_after=0.05)


class ScriptedVendor(Vendor):
    kind: ClassVar[str] = "scripted"
    settings_model: ClassVar[type[ConnectorSettings]] = ScriptedSettings
    capabilities: ClassVar[VendorCapabilities] = VendorCapabilities(
        poll_interval=0, feedback=True, export_status=True
    )

    def __init__(self, settings: ConnectorSettings, context: Any) -> None:
        super().__init__(settings, context)
        if isinstance(settings, ScriptedSettings) and settings.reconcile:
            self.capabilities = dataclasses.replace(self.capabilities, reconcile_uploads=True)

    def submit(self, document: DocumentRef, *, first_attempt: bool = False) -> SubmitResult:
        CALLS[self.context.name].append(("submit", document.id))
        outcome = _next(self.context.name)
        if outcome == "hold":  # a slow upload, still going when its lease looks run out
            GATES[self.context.name].wait(30)
        _raise(outcome)
        sync = isinstance(self.settings, ScriptedSettings) and self.settings.sync
        return SubmitResult(
            vendor_ref=f"{self.context.name}-{document.id}",
            data={"n": 1},
            raw=self._result(document.id) if sync else None,
            keys={"ticket": f"T{document.id}"},
            waited=self.settings.waited if isinstance(self.settings, ScriptedSettings) else 0.0,
        )

    def poll(self, vendor_ref: str, data: Mapping[str, Any]) -> PollResult:
        CALLS[self.context.name].append(("poll", int(vendor_ref.split("-")[1])))
        outcome = _next(self.context.name)
        if outcome == "processing":
            return PollResult(PollStatus.PROCESSING, retry_after=0.05)
        if outcome.startswith("processing:"):  # processing:<seconds until the next poll>
            return PollResult(PollStatus.PROCESSING, retry_after=float(outcome.split(":")[1]))
        if outcome.startswith("review:"):  # review:<what a person must do>
            return PollResult(PollStatus.REVIEW, reason=outcome.split(":", 1)[1], retry_after=1)
        if outcome == "moved":  # the upload became a document with a reference of its own
            return PollResult(PollStatus.PROCESSING, vendor_ref=f"{vendor_ref}-final")
        if outcome == "rejected":
            return PollResult(PollStatus.REJECTED, reason="vendor says: not an invoice")
        _raise(outcome)
        return PollResult(PollStatus.READY)

    def fetch(self, vendor_ref: str, data: Mapping[str, Any], document: DocumentRef) -> Any:
        CALLS[self.context.name].append(("fetch", document.id))
        return self._result(document.id)

    def _result(self, document_id: int) -> dict[str, Any]:
        """The vendor's result; ``<profile>:fetch`` scripts it: ``needs_review`` (confidence
        too low for this profile's human review), ``total:<amount>`` (a person changed it),
        ``confidence:<0..1>`` (of the total), ``no_total``."""
        outcome = _next(f"{self.context.name}:fetch")
        raw: dict[str, Any] = {"invoice_number": f"INV-{document_id}", "total": "12.50"}
        if outcome.startswith("total:"):
            raw["total"] = outcome.split(":", 1)[1]
        if outcome.startswith("confidence:"):
            raw["confidence"] = float(outcome.split(":", 1)[1])
        if outcome == "no_total":
            del raw["total"]
        review = outcome == "needs_review"
        raw["quality"] = {"all_confidence_thresholds_met": not review}
        if review:
            raw["review"] = "confidence thresholds not met"
        return raw

    def send_feedback(
        self, vendor_ref: str, data: Mapping[str, Any], corrections: list, result: Any
    ) -> list[CorrectionOutcome]:
        CALLS[self.context.name].append(("feedback", corrections))
        outcome = _next(f"{self.context.name}:feedback")
        if outcome.startswith("refuse:"):  # refuse:<field>: that one correction is refused
            field = outcome.split(":", 1)[1]
            return [CorrectionOutcome(field, False, "already exported, no corrections")]
        _raise(outcome)
        return []

    def report_delivery(
        self, vendor_ref: str, data: Mapping[str, Any], ok: bool, message: str | None
    ) -> None:
        CALLS[self.context.name].append(("report", (vendor_ref, ok, message)))
        CALLS[f"{self.context.name}:report-threads"].append(threading.current_thread().name)

    def normalize(self, raw: Any) -> CanonicalResult:
        from decimal import Decimal

        return CanonicalResult(
            fields=[
                FieldValue("invoice_number", raw["invoice_number"], vendor_label="num"),
                *(
                    [
                        FieldValue(
                            "total_amount",
                            raw["total"],
                            value_number=Decimal(raw["total"]),
                            currency="EUR",
                            confidence=raw.get("confidence"),
                            vendor_label="total",
                        )
                    ]
                    if "total" in raw
                    else []
                ),
            ],
            quality=dict(raw.get("quality") or {}),
            review=raw.get("review"),
        )


class LockingSettings(ConnectorSettings):
    kind: Literal["locking"] = "locking"
    database: str
    lock_seconds: float = 2.0


class LockingDestination(Destination):
    """Accepts every export, and right after the first one another process takes the store's
    lock for a while: the push happened, but recording it has to wait."""

    kind: ClassVar[str] = "locking"
    settings_model: ClassVar[type[ConnectorSettings]] = LockingSettings
    inline: ClassVar[bool] = True

    def deliver(self, payload: ExportPayload, idempotency_key: str) -> DeliveryReceipt:
        import sqlite3

        CALLS[self.context.name].append(("deliver", idempotency_key))
        settings = self.settings
        assert isinstance(settings, LockingSettings)
        if len(CALLS[self.context.name]) == 1:
            locker = sqlite3.connect(
                settings.database, isolation_level=None, check_same_thread=False
            )
            locker.execute("BEGIN EXCLUSIVE")
            threading.Timer(settings.lock_seconds, lambda: locker.execute("ROLLBACK")).start()
        return DeliveryReceipt(ref=idempotency_key)


class RecordingSettings(DestinationSettings):
    kind: Literal["recording"] = "recording"
    inline: bool = False
    refuse: bool = False
    """Every push refused as bad credentials (AuthFailed)."""
    concurrency: int | None = None
    lookup: bool = False
    """Answer ``lookup`` from what it holds (``HELD``)."""
    lose_first_answer: bool = False
    """The first push arrives, but its answer is lost (an ambiguous timeout)."""
    follow: Literal["posted", "rejected"] | None = None
    """What ``follow`` says of every record after its first look (pending at the first)."""
    follow_interval: float = 0.2
    posted: dict[str, str] = {}
    """The values a posted record reads back with."""


RECEIVED: dict[str, list[ExportPayload]] = defaultdict(list)
"""Every payload a recording destination was given, by destination name."""
HELD: dict[str, dict[str, int]] = defaultdict(dict)
"""What each recording destination holds: idempotency key → newest version."""
LOOKUPS: dict[str, list[str]] = defaultdict(list)
PUSHED_AT: dict[str, list[float]] = defaultdict(list)
FOLLOWED: dict[str, list[str]] = defaultdict(list)
"""Every record a recording destination was asked about, by destination name."""


class RecordingDestination(Destination):
    """Keeps every payload it is given (inline or from its own pool, as configured)."""

    kind: ClassVar[str] = "recording"
    settings_model: ClassVar[type[ConnectorSettings]] = RecordingSettings

    def __init__(self, settings: ConnectorSettings, context: Any) -> None:
        super().__init__(settings, context)
        assert isinstance(settings, RecordingSettings)
        self.inline = settings.inline
        self.can_look_up = settings.lookup
        self.can_follow = settings.follow is not None

    def follow(self, receipt: DeliveryReceipt) -> DownstreamOutcome:
        FOLLOWED[self.context.name].append(receipt.ref)
        assert isinstance(self.settings, RecordingSettings)
        if FOLLOWED[self.context.name].count(receipt.ref) == 1:
            return DownstreamOutcome(DownstreamState.PENDING)
        if self.settings.follow == "rejected":
            return DownstreamOutcome(DownstreamState.REJECTED, "cancelled by the accountant")
        return DownstreamOutcome(DownstreamState.POSTED, values=self.settings.posted)

    def lookup(self, payload: ExportPayload, idempotency_key: str) -> DeliveryReceipt | None:
        LOOKUPS[self.context.name].append(idempotency_key)
        held = HELD[self.context.name].get(idempotency_key)
        if held is None or held < payload.version:
            return None
        return DeliveryReceipt(ref=f"record-{idempotency_key}", data={"found": True})

    def deliver(self, payload: ExportPayload, idempotency_key: str) -> DeliveryReceipt:
        name = self.context.name
        RECEIVED[name].append(payload)
        PUSHED_AT[name].append(time.monotonic())
        assert isinstance(self.settings, RecordingSettings)
        if self.settings.refuse:
            raise AuthFailed("the ERP refused the API key")
        HELD[name][idempotency_key] = payload.version
        if self.settings.lose_first_answer and len(RECEIVED[name]) == 1:
            raise TransientError("no answer within 30s after the request was sent")
        return DeliveryReceipt(ref=f"record-{idempotency_key}", data={"pushed": True})


def install(monkeypatch: Any) -> None:
    """Register the fake kind with the connector registry for one test."""
    from connectors import registry

    monkeypatch.setitem(registry.BUILTIN["vendor"], "scripted", "tests.fakes:ScriptedVendor")
    monkeypatch.setitem(
        registry.BUILTIN["destination"], "locking", "tests.fakes:LockingDestination"
    )
    monkeypatch.setitem(
        registry.BUILTIN["destination"], "recording", "tests.fakes:RecordingDestination"
    )
    registry.available.cache_clear()
    monkeypatch.setattr(registry, "available", registry.available)
    SCRIPTS.clear()
    CALLS.clear()
    GATES.clear()
    RECEIVED.clear()
    HELD.clear()
    LOOKUPS.clear()
    FOLLOWED.clear()
    PUSHED_AT.clear()
