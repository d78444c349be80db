"""The submission stages: upload, follow processing, fetch, normalise, hand over to deliveries.

A worker that holds the lease on a submission runs its steps one after the other; every step ends
in one transaction that moves the state and writes the event. Vendor calls happen between
transactions, never inside one, so a slow vendor never holds a database lock.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import Engine, insert, select, update

from connectors.base import CanonicalResult, DocumentRef, PollStatus, Vendor
from connectors.errors import TerminalError
from daemon.config import PipelineSettings
from daemon.pipeline import ledger, states
from daemon.pipeline.crash import crash_point
from daemon.pipeline.intake import Routed, queue_submission
from daemon.pipeline.retry import poll_delay, retry_delay
from daemon.store.blobs import BlobStore
from daemon.store.engine import reader
from daemon.store.models import (
    Document,
    Extraction,
    FieldRow,
    LineItemRow,
    SubmissionState,
    utcnow,
)

log = logging.getLogger(__name__)
S = SubmissionState

documents = Document.__table__
extractions = Extraction.__table__
fields_t = FieldRow.__table__
line_items_t = LineItemRow.__table__


@dataclass
class Hooks:
    """How the stages reach the rest of the engine."""

    wake_deliveries: Callable[[str], None]
    wake_profile: Callable[[str], None]
    auth_failed: Callable[[str, str], None]
    """(profile, reason): pause the profile until credentials are fixed."""
    rejected: Callable[[int, str], None] = lambda document_id, reason: None
    """(document, reason): finally rejected by the vendor, no fallback; tell its source."""


def document_ref(row: Mapping[str, Any], blobs: BlobStore) -> DocumentRef:
    return DocumentRef(
        id=row["id"],
        sha256=row["sha256"],
        filename=row["filename"],
        mime_type=row["mime_type"],
        size_bytes=row["size_bytes"],
        pages=row["pages"],
        received_at=row["received_at"],
        metadata=row["metadata"] or {},
        path=blobs.path(row["sha256"]),
    )


class SubmissionRunner:
    """Runs the steps of the submissions of one vendor profile."""

    def __init__(
        self,
        *,
        engine: Engine,
        blobs: BlobStore,
        vendor: Vendor,
        profile: str,
        vendors: Mapping[str, Vendor],
        settings: PipelineSettings,
        hooks: Hooks,
    ) -> None:
        self.engine = engine
        self.reader = reader(engine)
        self.blobs = blobs
        self.vendor = vendor
        self.profile = profile
        self.vendors = vendors
        self.settings = settings
        self.hooks = hooks

    # ------------------------------------------------------------------ entry point

    def run(self, submission_id: int, owner: str) -> None:
        """Advance one claimed submission as far as it can go now."""
        actor = f"worker:{owner}"
        with self.reader.connect() as conn:
            sub = dict(
                conn.execute(
                    select(ledger.submissions).where(ledger.submissions.c.id == submission_id)
                )
                .mappings()
                .one()
            )
            doc = dict(
                conn.execute(select(documents).where(documents.c.id == sub["document_id"]))
                .mappings()
                .one()
            )
        if sub["lease_owner"] != owner:
            return
        document = document_ref(doc, self.blobs)
        step = sub["state"]
        try:
            while sub["state"] in states.ACTIVE:
                step = sub["state"]
                if not self._step(sub, document, owner, actor):
                    return
        except ledger.LeaseLost:
            log.warning("lost the lease on submission %s; another worker has it", submission_id)
        except Exception as error:
            self._failed(sub, step, error, owner, actor)

    # ------------------------------------------------------------------ the steps

    def _step(self, sub: dict[str, Any], document: DocumentRef, owner: str, actor: str) -> bool:
        """Do one step; False when the submission must wait (for time or for the vendor)."""
        state = sub["state"]
        lease = self.settings.lease_seconds
        if state == S.FAILED:
            resume = sub["resume_state"] or S.QUEUED
            with self.engine.begin() as conn:
                ledger.move_submission(
                    conn, sub, resume, owner=owner, actor=actor, kind="retry",
                    message=f"attempt {sub['attempts'] + 1}", lease_seconds=lease,
                )  # fmt: skip
            return True
        if state == S.QUEUED:
            with self.engine.begin() as conn:
                ledger.move_submission(
                    conn, sub, S.UPLOADING, owner=owner, actor=actor, lease_seconds=lease
                )
            return True
        if state == S.UPLOADING:
            result = self.vendor.submit(document)
            crash_point("after_upload_response")
            now = utcnow()
            first_poll = self.vendor.capabilities.poll_interval
            with self.engine.begin() as conn:
                ledger.move_submission(
                    conn, sub, S.PROCESSING, owner=owner, actor=actor, lease_seconds=lease,
                    message=f"vendor reference {result.vendor_ref}",
                    vendor_ref=result.vendor_ref, vendor_data=result.data, polls=0,
                    deadline_at=now + timedelta(seconds=self.settings.processing_timeout),
                    next_attempt_at=now + timedelta(seconds=first_poll) if first_poll else None,
                )  # fmt: skip
            return first_poll <= 0
        if state == S.PROCESSING:
            return self._poll(sub, document, owner, actor)
        if state == S.FETCHED:
            return self._normalize(sub, owner, actor)
        if state == S.NORMALIZED:
            self._finish(sub, owner, actor)
            return False
        raise states.IllegalTransition(f"no step for state {state}")

    def _poll(self, sub: dict[str, Any], document: DocumentRef, owner: str, actor: str) -> bool:
        now = utcnow()
        deadline = sub["deadline_at"]
        if deadline is not None and now > deadline:
            self._give_up(sub, owner, actor, "vendor did not finish processing before the deadline")
            return False
        ref, data = sub["vendor_ref"], sub["vendor_data"] or {}
        result = self.vendor.poll(ref, data)
        if result.data is not None:
            data = result.data
        if result.status == PollStatus.PROCESSING:
            delay = result.retry_after or poll_delay(
                sub["polls"],
                first=max(self.vendor.capabilities.poll_interval, 0.5),
                maximum=self.settings.poll_backoff_max,
            )
            with self.engine.begin() as conn:
                conn.execute(
                    update(ledger.submissions)
                    .where(
                        ledger.submissions.c.id == sub["id"],
                        ledger.submissions.c.lease_owner == owner,
                    )
                    .values(
                        polls=sub["polls"] + 1,
                        vendor_data=data,
                        next_attempt_at=now + timedelta(seconds=delay),
                        lease_owner=None,
                        lease_expires_at=None,
                        updated_at=now,
                    )
                )
            return False
        if result.status == PollStatus.REJECTED:
            self._reject(sub, owner, actor, result.reason or "the vendor rejected the document")
            return False
        raw = self.vendor.fetch(ref, data, document)
        _ensure_json(raw)
        with self.engine.begin() as conn:
            conn.execute(
                insert(extractions).values(
                    submission_id=sub["id"],
                    document_id=sub["document_id"],
                    vendor=self.profile,
                    raw=raw,
                    fetched_at=utcnow(),
                )
            )
            ledger.move_submission(
                conn, sub, S.FETCHED, owner=owner, actor=actor, vendor_data=data,
                polls=sub["polls"] + 1, lease_seconds=self.settings.lease_seconds,
            )  # fmt: skip
        crash_point("after_fetch_commit")
        return True

    def _normalize(self, sub: dict[str, Any], owner: str, actor: str) -> bool:
        with self.reader.connect() as conn:
            extraction = (
                conn.execute(
                    select(extractions.c.id, extractions.c.raw)
                    .where(extractions.c.submission_id == sub["id"])
                    .order_by(extractions.c.id.desc())
                    .limit(1)
                )
                .mappings()
                .one()
            )
        try:
            result = self.vendor.normalize(extraction["raw"])
        except (KeyError, TypeError, ValueError) as exc:
            raise TerminalError(f"the vendor's result could not be mapped: {exc!r}") from exc
        with self.engine.begin() as conn:
            write_canonical(conn, extraction["id"], sub["document_id"], result)
            conn.execute(
                update(extractions)
                .where(extractions.c.id == extraction["id"])
                .values(normalized_at=utcnow())
            )
            ledger.move_submission(
                conn,
                sub,
                S.NORMALIZED,
                owner=owner,
                actor=actor,
                message=f"{len(result.fields)} fields, {len(result.line_items)} line items",
                lease_seconds=self.settings.lease_seconds,
            )
        crash_point("after_normalize_commit")
        return True

    def _finish(self, sub: dict[str, Any], owner: str, actor: str) -> None:
        """NORMALIZED → DONE, and the outbox rows for every destination, in one transaction."""
        with self.engine.begin() as conn:
            extraction_id = conn.execute(
                select(extractions.c.id)
                .where(extractions.c.submission_id == sub["id"])
                .order_by(extractions.c.id.desc())
                .limit(1)
            ).scalar_one()
            now = utcnow()
            for destination in sub["destinations"] or []:
                conn.execute(
                    insert(ledger.deliveries).values(
                        document_id=sub["document_id"],
                        submission_id=sub["id"],
                        extraction_id=extraction_id,
                        destination=destination,
                        idempotency_key=f"docrelay-{sub['document_id']}-{extraction_id}-{destination}",
                        state="pending",
                        created_at=now,
                    )
                )
            ledger.move_submission(
                conn,
                sub,
                S.DONE,
                owner=owner,
                actor=actor,
                completed_at=now,
                lease_owner=None,
                lease_expires_at=None,
                next_attempt_at=None,
                error=None,
                error_class=None,
            )
        for destination in sub["destinations"] or []:
            self.hooks.wake_deliveries(destination)

    # ------------------------------------------------------------------ outcomes

    def _failed(
        self, sub: dict[str, Any], step: str, error: Exception, owner: str, actor: str
    ) -> None:
        action = states.classify(error)
        if not states.is_expected(error):
            log.error("unexpected error in %s of submission %s", step, sub["id"], exc_info=error)
        else:
            log.warning("submission %s (%s) %s: %s", sub["id"], self.profile, action, error)
        try:
            if action == "reject":
                self._reject(sub, owner, actor, str(error))
            elif action == "pause":
                self.hooks.auth_failed(self.profile, str(error))
                self._release(sub, owner, delay=60.0, message=str(error), error_class="auth")
            elif action == "wait":
                self._release(sub, owner, delay=states.retry_after(error) or 5.0)
            else:
                self._retry_later(sub, error, owner, actor)
        except ledger.LeaseLost:
            log.warning("lost the lease on submission %s while recording an error", sub["id"])

    def _retry_later(self, sub: dict[str, Any], error: Exception, owner: str, actor: str) -> None:
        attempts = sub["attempts"] + 1
        message = f"{type(error).__name__}: {error}"
        if attempts >= self.settings.max_attempts:
            self._give_up(sub, owner, actor, f"gave up after {attempts} attempts: {message}")
            return
        delay = retry_delay(
            attempts,
            initial=self.settings.backoff_initial,
            maximum=self.settings.backoff_max,
            retry_after=states.retry_after(error),
            retry_after_max=self.settings.retry_after_max,
        )
        state = sub["state"]
        with self.engine.begin() as conn:
            ledger.move_submission(
                conn, sub, S.FAILED, owner=owner, actor=actor,
                message=f"{message} (retry {attempts} in {delay:.1f}s)",
                resume_state=state if state != S.FAILED else sub["resume_state"],
                attempts=attempts, error=message, error_class="transient",
                next_attempt_at=utcnow() + timedelta(seconds=delay),
                lease_owner=None, lease_expires_at=None,
            )  # fmt: skip

    def _release(
        self,
        sub: dict[str, Any],
        owner: str,
        *,
        delay: float,
        message: str | None = None,
        error_class: str | None = None,
    ) -> None:
        values: dict[str, Any] = {
            "lease_owner": None,
            "lease_expires_at": None,
            "next_attempt_at": utcnow() + timedelta(seconds=delay),
        }
        if message is not None:
            values.update(error=message, error_class=error_class)
        with self.engine.begin() as conn:
            conn.execute(
                update(ledger.submissions)
                .where(
                    ledger.submissions.c.id == sub["id"],
                    ledger.submissions.c.lease_owner == owner,
                )
                .values(**values)
            )

    def _reject(self, sub: dict[str, Any], owner: str, actor: str, reason: str) -> None:
        self._end(sub, S.REJECTED, owner, actor, reason, "terminal")

    def _give_up(self, sub: dict[str, Any], owner: str, actor: str, reason: str) -> None:
        self._end(sub, S.DEAD, owner, actor, reason, "transient")

    def _end(
        self,
        sub: dict[str, Any],
        state: str,
        owner: str,
        actor: str,
        reason: str,
        error_class: str,
    ) -> None:
        """A final failure; hands the document to the route's fallback profile if there is one."""
        fallback = sub["fallback"] if sub["role"] == "primary" else None
        with self.engine.begin() as conn:
            ledger.move_submission(
                conn, sub, state, owner=owner, actor=actor, message=reason, error=reason,
                error_class=error_class, completed_at=utcnow(), lease_owner=None,
                lease_expires_at=None, next_attempt_at=None,
            )  # fmt: skip
            if fallback and fallback in self.vendors:
                queue_submission(
                    conn,
                    sub["document_id"],
                    Routed(
                        profile=fallback,
                        vendor_kind=self.vendors[fallback].kind,
                        destinations=list(sub["destinations"] or []),
                        fallback=None,
                        route=f"fallback of {self.profile}",
                    ),
                    actor=actor,
                    role="fallback",
                )
        if fallback and fallback in self.vendors:
            self.hooks.wake_profile(fallback)
        elif state == S.REJECTED:
            self.hooks.rejected(sub["document_id"], reason)


def write_canonical(
    conn: ledger.Connection, extraction_id: int, document_id: int, result: CanonicalResult
) -> None:
    """Insert the fields and line items of one extraction (executemany, one round trip each)."""
    if result.fields:
        conn.execute(
            insert(fields_t),
            [
                {
                    "extraction_id": extraction_id,
                    "document_id": document_id,
                    "name": f.name,
                    "value_text": f.value_text,
                    "raw_text": f.raw_text,
                    "value_number": f.value_number,
                    "value_date": f.value_date,
                    "currency": f.currency,
                    "confidence": f.confidence,
                    "page": f.page,
                    "bbox": (
                        f"{f.bbox.left},{f.bbox.top},{f.bbox.right},{f.bbox.bottom}"
                        if f.bbox
                        else None
                    ),
                    "vendor_label": f.vendor_label,
                    "corrected": False,
                }
                for f in result.fields
            ],
        )
    if result.line_items:
        conn.execute(
            insert(line_items_t),
            [
                {
                    "extraction_id": extraction_id,
                    "document_id": document_id,
                    "line_no": li.line_no,
                    "description": li.description,
                    "quantity": li.quantity,
                    "unit_price": li.unit_price,
                    "net_amount": li.net_amount,
                    "tax_rate": li.tax_rate,
                    "total_amount": li.total_amount,
                    "item_code": li.item_code,
                    "extra": li.extra,
                }
                for li in result.line_items
            ],
        )


def _ensure_json(raw: Any) -> None:
    """A vendor result that cannot be stored as JSON is the connector's bug: fail loudly."""
    try:
        json.dumps(raw)
    except (TypeError, ValueError) as exc:
        raise TerminalError(f"the vendor's result is not JSON-serialisable: {exc}") from exc
