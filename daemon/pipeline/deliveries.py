"""The outbox worker: pushes one committed delivery row to its destination, safely repeatable.

The row exists before the push (committed with the submission's move to ``done``), the push
carries the row's idempotency key, and the row is marked delivered only after the destination
answered: a crash anywhere in between repeats the push with the same key, never loses it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import Engine, select
from sqlalchemy.exc import OperationalError

from connectors.base import (
    BBox,
    CanonicalResult,
    DeliveryReceipt,
    Destination,
    ExportPayload,
    FieldValue,
    LineItem,
    Provenance,
)
from connectors.ratelimit import RateLimiter
from daemon import logs
from daemon.config import PipelineSettings
from daemon.pipeline import ledger, states
from daemon.pipeline.crash import crash_point
from daemon.pipeline.workers import InHand
from daemon.store.blobs import BlobStore
from daemon.store.engine import reader, relaxed
from daemon.store.models import (
    DeliveryState,
    Document,
    Extraction,
    FieldRow,
    LineItemRow,
    utcnow,
)

log = logging.getLogger(__name__)

documents = Document.__table__
extractions = Extraction.__table__
fields_t = FieldRow.__table__
line_items_t = LineItemRow.__table__


def load_result(conn: ledger.Connection, extraction_id: int) -> CanonicalResult:
    """The canonical result of one extraction as stored (with corrections applied)."""
    fields = [
        FieldValue(
            name=row.name,
            value_text=row.value_text,
            raw_text=row.raw_text,
            value_number=row.value_number,
            value_date=row.value_date,
            currency=row.currency,
            confidence=row.confidence,
            page=row.page,
            bbox=(
                BBox(*map(float, row.bbox.split(",")), row.page_width, row.page_height)
                if row.bbox
                else None
            ),
            vendor_label=row.vendor_label,
            vendor_id=row.vendor_id,
        )
        for row in conn.execute(
            select(fields_t)
            .where(fields_t.c.extraction_id == extraction_id)
            .order_by(fields_t.c.id)
        )
    ]
    items = [
        LineItem(
            line_no=row.line_no,
            description=row.description,
            quantity=row.quantity,
            unit_price=row.unit_price,
            net_amount=row.net_amount,
            tax_rate=row.tax_rate,
            total_amount=row.total_amount,
            item_code=row.item_code,
            extra=row.extra or {},
            provenance={
                name: provenance_from_json(value) for name, value in (row.provenance or {}).items()
            },
        )
        for row in conn.execute(
            select(line_items_t)
            .where(line_items_t.c.extraction_id == extraction_id)
            .order_by(line_items_t.c.line_no)
        )
    ]
    quality = conn.execute(
        select(extractions.c.quality).where(extractions.c.id == extraction_id)
    ).scalar_one_or_none()
    return CanonicalResult(fields=fields, line_items=items, quality=quality or {})


def provenance_from_json(value: Mapping[str, Any]) -> Provenance:
    """The inverse of ``submissions.provenance_json``."""
    box = value.get("bbox")
    return Provenance(
        confidence=value.get("confidence"),
        page=value.get("page"),
        bbox=BBox(*box, value.get("page_width"), value.get("page_height")) if box else None,
        vendor_label=value.get("vendor_label"),
        raw_text=value.get("raw_text"),
    )


def export_payload(
    doc: Mapping[str, Any],
    sub: Mapping[str, Any],
    extraction_id: int,
    result: CanonicalResult,
    *,
    version: int = 1,
    corrected: frozenset[str] = frozenset(),
    blobs: BlobStore | None = None,
) -> ExportPayload:
    """An export from the rows of a document and its submission plus a canonical result;
    with ``blobs``, the payload points at the stored original."""
    return ExportPayload(
        document_id=doc["id"],
        sha256=doc["sha256"],
        filename=doc["filename"],
        mime_type=doc["mime_type"],
        source=doc["source"],
        source_ref=doc["source_ref"],
        received_at=doc["received_at"],
        vendor=sub["profile"],
        vendor_kind=sub["vendor_kind"],
        vendor_ref=sub["vendor_ref"],
        submission_id=sub["id"],
        extraction_id=extraction_id,
        result=result,
        metadata=doc["metadata"] or {},
        version=version,
        corrected=corrected,
        original=blobs.path(doc["sha256"]) if blobs is not None else None,
    )


def build_payload(
    conn: ledger.Connection, delivery: Mapping[str, Any], blobs: BlobStore | None = None
) -> ExportPayload:
    """The export of one outbox row, as stored (with corrections applied)."""
    doc = conn.execute(select(documents).where(documents.c.id == delivery["document_id"]))
    sub = conn.execute(
        select(ledger.submissions).where(ledger.submissions.c.id == delivery["submission_id"])
    )
    result = load_result(conn, delivery["extraction_id"])
    corrected = conn.execute(
        select(fields_t.c.name).where(
            fields_t.c.extraction_id == delivery["extraction_id"], fields_t.c.corrected
        )
    ).scalars()
    return export_payload(
        doc.mappings().one(),
        sub.mappings().one(),
        delivery["extraction_id"],
        result,
        version=delivery["version"],
        corrected=frozenset(corrected),
        blobs=blobs,
    )


class DeliveryRunner:
    """Runs the pushes of one destination."""

    def __init__(
        self,
        *,
        engine: Engine,
        destination: Destination,
        name: str,
        settings: PipelineSettings,
        blobs: BlobStore | None = None,
        on_auth_failed: Callable[[str, str], None] = lambda name, reason: None,
        on_final: Callable[
            [ledger.Connection, Mapping[str, Any], bool, str | None, Mapping[str, Any] | None],
            Callable[[], None] | None,
        ] = lambda *a: None,
    ) -> None:
        self.engine = engine
        self.reader = reader(engine)
        self.relaxed = relaxed(engine)
        self.destination = destination
        self.name = name
        self.settings = settings
        self.blobs = blobs
        self.on_auth_failed = on_auth_failed
        """(destination, reason): credentials refused; the runtime holds this destination's
        deliveries (they wait, none is lost) and shows it as needing re-authentication."""
        self.on_final = on_final
        """Called in the transaction that ends a delivery (delivered, or dead), so the export
        status for the vendor is queued atomically with it; what it returns runs after the
        commit (sending it, or waking the worker that sends it). Its last argument is the
        submission row when the push was made inline by the vendor's own worker (None
        otherwise): that worker holds the row, so nothing needs reading back."""
        rate = getattr(destination.settings, "rate_limit", None)
        self.limiter = RateLimiter(rate, clock=time.monotonic, sleep=time.sleep) if rate else None
        """The destination's ``rate_limit``: one token per push, shared by its threads."""
        self.in_hand = InHand("delivery", ledger.deliveries)
        self.adopt: Callable[[int], None] = lambda delivery_id: None
        """Hand a leased row to this destination's pool to run again (set by the runtime)."""
        self._recording: list[_Outcome] = []
        """Inline pushes made, their outcome not yet written (see _record_inline)."""
        self._recording_lock = threading.Lock()
        self._writer = threading.Lock()
        """Held by the one thread writing the recorded outcomes now."""
        self._unrecorded: dict[int, DeliveryReceipt] = {}
        """Pushes the destination took but the store could not record (it was locked or
        full): the next run of the row records the receipt instead of pushing again."""

    def run(self, delivery_id: int, owner: str) -> None:
        table = ledger.deliveries
        with self.reader.connect() as conn:
            delivery = dict(
                conn.execute(select(table).where(table.c.id == delivery_id)).mappings().one()
            )
            if delivery["lease_owner"] != owner:
                return
            payload = build_payload(conn, delivery, self.blobs)
        self.push(delivery, payload, owner)

    def push(
        self,
        delivery: dict[str, Any],
        payload: ExportPayload,
        owner: str,
        *,
        inline: Mapping[str, Any] | None = None,
    ) -> bool:
        """Deliver one leased outbox row and record the outcome; True when delivered.

        ``inline``: the submission row of the vendor worker that pushes right after `done`
        (see Destination.inline).
        """
        with self.in_hand.hold(delivery["id"]) as mine:
            logs.bind(document_id=delivery["document_id"], submission_id=delivery["submission_id"])
            return mine and self._push(delivery, payload, owner, inline)

    def _push(
        self,
        delivery: dict[str, Any],
        payload: ExportPayload,
        owner: str,
        inline: Mapping[str, Any] | None,
    ) -> bool:
        actor = f"worker:{owner}"
        receipt = self._unrecorded.pop(delivery["id"], None)
        found = False
        if receipt is None:
            key = delivery["idempotency_key"]
            try:
                if self.destination.can_look_up:
                    if delivery.get("in_doubt_at") is not None:
                        receipt = self.destination.lookup(payload, key)
                        found = receipt is not None
                    if receipt is None:
                        self._mark_in_doubt(delivery, owner)
                if receipt is None:
                    if self.limiter is not None:
                        self.limiter.acquire()
                    crash_point("before_delivery")
                    receipt = self.destination.deliver(payload, key)
                    crash_point("after_delivery_push")
            except ledger.LeaseLost:
                return False
            except Exception as error:
                self._failed(delivery, error, owner, actor)
                return False
        what = "found at" if found else "delivered to"
        why = " by its key: an earlier push had arrived" if found else ""
        outcome = _Outcome(
            delivery,
            DeliveryState.DELIVERED,
            owner,
            actor,
            f"{what} {self.name}{why}: {receipt.ref}",
            (True, None, inline),
            {
                "downstream_ref": receipt.ref,
                "downstream_data": dict(receipt.data) or None,
                "in_doubt_at": None,
                "delivered_at": utcnow(),
                "error": None,
            },
            receipt,
        )
        if inline is not None:
            self._record_inline(outcome)
            return True
        try:
            self._write([outcome])
        except OperationalError:
            self._unrecorded[delivery["id"]] = receipt  # the next run only records it
            raise
        return True

    def _record_inline(self, mine: _Outcome) -> None:
        """Write the outcome of an inline push, together with those other vendor workers
        made meanwhile: one transaction for all that waited for the store's write lock at the
        same time, instead of one each behind the others (group commit). The thread that
        finds no other writing writes them all, as long as more keep coming; the others go on
        with their next document at once. Until written, a row stays leased here: a crash
        before means it is pushed again, under its key, as after any crash after a push.

        Raises OperationalError when ``mine`` could not be written (the caller adopts it);
        the others of a failed batch go to this destination's pool, which records them."""
        with self._recording_lock:
            self._recording.append(mine)
        while self._writer.acquire(blocking=False):
            try:
                with self._recording_lock:
                    batch, self._recording = self._recording, []
                if batch:
                    try:
                        self._write(batch)
                    except OperationalError:
                        for outcome in batch:
                            self._unrecorded[outcome.delivery["id"]] = outcome.receipt
                            if outcome is not mine:
                                self.adopt(outcome.delivery["id"])
                        if any(outcome is mine for outcome in batch):
                            raise
            finally:
                self._writer.release()
            with self._recording_lock:
                if not self._recording:  # else one came while this thread wrote: go on
                    return

    def _mark_in_doubt(self, delivery: dict[str, Any], owner: str) -> None:
        """On record before the push: should its outcome be lost, the next run asks the
        destination before pushing again."""
        now = utcnow()
        with self.engine.begin() as conn:
            if not ledger.mark_in_doubt(conn, delivery["id"], owner, now):
                raise ledger.LeaseLost(f"delivery {delivery['id']} is no longer ours")
        delivery["in_doubt_at"] = now

    def _failed(self, delivery: dict[str, Any], error: Exception, owner: str, actor: str) -> None:
        verdict = states.verdict(error, delivery["attempts"], self.settings, states.DELIVERY_LANE)
        if states.classify(error) is states.Outcome.PAUSE:
            self.on_auth_failed(self.name, str(error))
        if not states.is_expected(error):
            log.error("unexpected error delivering %s", delivery["id"], exc_info=error)
        else:
            log.warning("delivery %s to %s failed: %s", delivery["id"], self.name, error)
        assert verdict.state is not None  # outbox rows always wait in a state of their own
        if verdict.final:
            self._set(
                delivery,
                verdict.state,
                owner,
                actor,
                verdict.reason,
                final=(False, verdict.reason, None),
                attempts=verdict.attempts,
                error=verdict.reason,
            )
            return
        delay = verdict.delay or 0.0
        self._set(
            delivery,
            verdict.state,
            owner,
            actor,
            f"{verdict.reason} (retry in {delay:.1f}s)",
            attempts=verdict.attempts,
            error=verdict.reason,
            next_attempt_at=utcnow() + timedelta(seconds=delay),
        )

    def _set(
        self,
        delivery: dict[str, Any],
        state: str,
        owner: str,
        actor: str,
        message: str,
        *,
        final: tuple[bool, str | None, Mapping[str, Any] | None] | None = None,
        **values: Any,
    ) -> None:
        self._write([_Outcome(delivery, state, owner, actor, message, final, values)])

    def _write(self, outcomes: list[_Outcome]) -> None:
        """Record outcomes of pushes in one transaction; what ``on_final`` returns runs
        after the commit."""
        afters: list[Callable[[], None]] = []
        # Lost in a power cut, a push is made again: the key makes that safe, and a push to a
        # destination that looks keys up was marked in doubt durably before it went out.
        with self.relaxed.begin() as conn:
            for o in outcomes:
                delivery = o.delivery
                if not ledger.end_lease(
                    conn, ledger.deliveries, delivery["id"], o.owner, o.state, **o.values
                ):
                    log.warning("lost the lease on delivery %s", delivery["id"])
                    continue
                ledger.event(
                    conn,
                    actor=o.actor,
                    kind="delivery",
                    document_id=delivery["document_id"],
                    submission_id=delivery["submission_id"],
                    delivery_id=delivery["id"],
                    from_state=delivery["state"],
                    to_state=o.state,
                    message=o.message,
                )
                if o.final is not None and (after := self.on_final(conn, delivery, *o.final)):
                    afters.append(after)
        for o in outcomes:
            if o.state == DeliveryState.DELIVERED:
                delivery = o.delivery
                log.info(
                    "document %s exported to %s (version %s): %s",
                    delivery["document_id"],
                    self.name,
                    delivery.get("version", 1),
                    o.receipt.ref if o.receipt is not None else "",
                    extra={
                        "document_id": delivery["document_id"],
                        "submission_id": delivery["submission_id"],
                        "delivery_id": delivery["id"],
                    },
                )
        for after in afters:
            after()


@dataclass
class _Outcome:
    """What a push came to, to be written: the row's new state, its event, its values."""

    delivery: dict[str, Any]
    state: str
    owner: str
    actor: str
    message: str
    final: tuple[bool, str | None, Mapping[str, Any] | None] | None
    values: dict[str, Any]
    receipt: DeliveryReceipt | None = None
