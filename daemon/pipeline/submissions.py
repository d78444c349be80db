"""The submission stages: upload, follow processing, fetch, normalise, hand over to deliveries.

A worker that holds the lease on a submission runs its steps one after the other; every step ends
in one transaction that moves the state and writes the event. Vendor calls happen between
transactions, never inside one, so a slow vendor never holds a database lock.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from sqlalchemy import Engine, bindparam, insert, select, update
from sqlalchemy.exc import OperationalError

from connectors.base import CanonicalResult, DocumentRef, PollStatus, Vendor
from connectors.errors import TerminalError
from daemon.config import PipelineSettings
from daemon.pipeline import ledger, states
from daemon.pipeline.crash import crash_point
from daemon.pipeline.deliveries import DeliveryRunner, export_payload
from daemon.pipeline.intake import Routed, queue_submission
from daemon.pipeline.retry import poll_delay
from daemon.pipeline.workers import InHand
from daemon.store.blobs import BlobStore
from daemon.store.engine import RawJSON, reader
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
INSERT_DELIVERY = insert(ledger.deliveries).returning(ledger.deliveries.c.id)
fields_t = FieldRow.__table__
line_items_t = LineItemRow.__table__
SELECT_WORK = (
    select(
        *(c.label(f"s_{c.name}") for c in ledger.submissions.c),
        *(c.label(f"d_{c.name}") for c in documents.c),
    )
    .join_from(ledger.submissions, documents, documents.c.id == ledger.submissions.c.document_id)
    .where(ledger.submissions.c.id == bindparam("id"))
)
"""A submission and its document in one read (``s_`` and ``d_`` columns)."""


@dataclass
class Hooks:
    """How the stages reach the rest of the engine."""

    inline: Mapping[str, DeliveryRunner]
    """Destinations whose first push the vendor worker makes itself (see Destination.inline)."""

    wake_deliveries: Callable[[str], None]
    wake_profile: Callable[[str], None]
    auth_failed: Callable[[str, str], None]
    """(profile, reason): pause the profile until credentials are fixed."""
    rejected: Callable[[int, str], None] = lambda document_id, reason: None
    """(document, reason): finally rejected by the vendor, no fallback; tell its source."""
    adopt_delivery: Callable[[str, int], None] = lambda destination, delivery_id: None
    """(destination, delivery): a row leased to this process whose inline push the store did
    not record; the destination's pool runs it again."""


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


@dataclass
class _Work:
    """One claimed submission while a worker advances it."""

    sub: dict[str, Any]
    doc: dict[str, Any]
    document: DocumentRef
    owner: str
    actor: str
    processing: dict[str, Any] | None = None
    """The move to `processing`, made in memory, to be written with the poll's outcome."""
    outbox: list[dict[str, Any]] = field(default_factory=list)
    """Delivery rows created (and leased by this worker) for inline destinations."""
    canonical: CanonicalResult | None = None
    extraction_id: int | None = None
    first_attempt: bool = False
    """No earlier upload can exist (queued until this claim): the vendor may skip reconciling."""


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
        self.fresh: set[int] = set()
        """Submissions this process just moved from `queued` to `uploading` (first attempts)."""
        self.in_hand = InHand("submission")

    # ------------------------------------------------------------------ entry point

    def run(self, submission_id: int, owner: str) -> None:
        """Advance one claimed submission as far as it can go now."""
        with self.in_hand.hold(submission_id) as mine:
            if mine:
                self._run(submission_id, owner)

    def _run(self, submission_id: int, owner: str) -> None:
        with self.reader.connect() as conn:
            row = conn.execute(SELECT_WORK, {"id": submission_id}).mappings().one()
        sub = {key[2:]: value for key, value in row.items() if key.startswith("s_")}
        doc = {key[2:]: value for key, value in row.items() if key.startswith("d_")}
        first_attempt = submission_id in self.fresh
        self.fresh.discard(submission_id)
        if sub["lease_owner"] != owner:
            return
        work = _Work(sub, doc, document_ref(doc, self.blobs), owner, f"worker:{owner}")
        work.first_attempt = first_attempt
        step = sub["state"]
        try:
            while sub["state"] in states.ACTIVE:
                step = sub["state"]
                if not self._step(work):
                    return
        except ledger.LeaseLost:
            log.warning("lost the lease on submission %s; another worker has it", submission_id)
        except OperationalError:
            raise  # the store failed, not the step: the pool runs it again once it is back
        except Exception as error:
            self._failed(sub, step, error, owner, work.actor)

    # ------------------------------------------------------------------ the steps

    def _move(self, conn: ledger.Connection, work: _Work, to: str, **values: Any) -> None:
        ledger.move_submission(
            conn,
            work.sub,
            to,
            owner=work.owner,
            actor=work.actor,
            lease_seconds=self.settings.lease_seconds,
            **values,
        )

    def _step(self, work: _Work) -> bool:
        """Do one step; False when the submission must wait (for time or for the vendor)."""
        sub = work.sub
        state = sub["state"]
        if state == S.FAILED:
            with self.engine.begin() as conn:
                self._move(
                    conn, work, sub["resume_state"] or S.QUEUED, kind="retry",
                    message=f"attempt {sub['attempts'] + 1}",
                )  # fmt: skip
            return True
        if state == S.QUEUED:  # normally done by the claim itself
            with self.engine.begin() as conn:
                self._move(conn, work, S.UPLOADING)
            return True
        if state == S.UPLOADING:
            result = self.vendor.submit(work.document, first_attempt=work.first_attempt)
            work.first_attempt = False
            crash_point("after_upload_response")
            now = utcnow()
            first_poll = self.vendor.capabilities.poll_interval
            processing = {
                "message": f"vendor reference {result.vendor_ref}",
                "vendor_ref": result.vendor_ref,
                "vendor_data": result.data,
                "polls": 0,
                "deadline_at": now + timedelta(seconds=self.settings.processing_timeout),
                "next_attempt_at": now + timedelta(seconds=first_poll) if first_poll else None,
            }
            if first_poll > 0:  # the vendor needs time: give the submission back until then
                with self.engine.begin() as conn:
                    ledger.move_submission(
                        conn, sub, S.PROCESSING, owner=work.owner, actor=work.actor,
                        lease_owner=None, lease_expires_at=None, **processing,
                    )  # fmt: skip
                return False
            # Worth asking at once: the move to `processing` is written with the poll's outcome
            # (a crash before that repeats the upload, which `submit` makes safe).
            work.processing = processing
            return self._poll(work)
        if state == S.PROCESSING:
            return self._poll(work)
        if state == S.FETCHED:
            return self._normalize(work)
        if state == S.NORMALIZED:
            with self.engine.begin() as conn:
                self._finish(conn, work)
            self._deliver(work)
            return False
        raise states.IllegalTransition(f"no step for state {state}")

    def _commit_processing(self, conn: ledger.Connection, work: _Work) -> None:
        if work.processing is not None:
            self._move(conn, work, S.PROCESSING, **work.processing)
            work.processing = None

    def _poll(self, work: _Work) -> bool:
        sub, owner = work.sub, work.owner
        now = utcnow()
        pending = work.processing or {}
        deadline = pending.get("deadline_at", sub["deadline_at"])
        if deadline is not None and now > deadline:
            reason = "the vendor did not finish processing before the deadline"
            self._give_up(sub, owner, work.actor, reason)
            return False
        ref = pending.get("vendor_ref", sub["vendor_ref"])
        data = pending.get("vendor_data", sub["vendor_data"]) or {}
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
                self._commit_processing(conn, work)
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
            with self.engine.begin() as conn:
                self._commit_processing(conn, work)
            self._reject(sub, owner, work.actor, result.reason or "the vendor rejected it")
            return False
        raw = self.vendor.fetch(ref, data, work.document)
        raw_json = _checked_json(raw)
        canonical, mapping_error = self._map(raw)
        with self.engine.begin() as conn:
            self._commit_processing(conn, work)
            extraction_id = conn.execute(
                insert(extractions)
                .values(
                    submission_id=sub["id"],
                    document_id=sub["document_id"],
                    vendor=self.profile,
                    raw=raw_json,
                    fetched_at=utcnow(),
                    normalized_at=utcnow() if canonical is not None else None,
                )
                .returning(extractions.c.id)
            ).scalar_one()
            self._move(conn, work, S.FETCHED, vendor_data=data, polls=sub["polls"] + 1)
            if canonical is not None:
                # Pure computation from here to `done`: one transaction, an event per move.
                self._store_canonical(conn, work, extraction_id, canonical)
                self._finish(conn, work, extraction_id)
        crash_point("after_fetch_commit")
        # A place at the vendor is free (max_in_flight): an idle worker may start an upload
        # now rather than when its sleep ends; this one still has the delivery to make.
        self.hooks.wake_profile(self.profile)
        if mapping_error is not None:
            raise mapping_error
        self._deliver(work)
        return False

    def _map(self, raw: Any) -> tuple[CanonicalResult | None, TerminalError | None]:
        try:
            return self.vendor.normalize(raw), None
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            return None, TerminalError(f"the vendor's result could not be mapped: {exc!r}")

    def _normalize(self, work: _Work) -> bool:
        """FETCHED → NORMALIZED for a result stored earlier (a re-fetch, or after a crash)."""
        sub = work.sub
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
        canonical, mapping_error = self._map(extraction["raw"])
        if mapping_error is not None:
            raise mapping_error
        assert canonical is not None
        with self.engine.begin() as conn:
            conn.execute(
                update(extractions)
                .where(extractions.c.id == extraction["id"])
                .values(normalized_at=utcnow())
            )
            self._store_canonical(conn, work, extraction["id"], canonical)
        crash_point("after_normalize_commit")
        return True

    def _store_canonical(
        self, conn: ledger.Connection, work: _Work, extraction_id: int, result: CanonicalResult
    ) -> None:
        write_canonical(conn, extraction_id, work.sub["document_id"], result)
        work.canonical = result
        self._move(
            conn,
            work,
            S.NORMALIZED,
            message=f"{len(result.fields)} fields, {len(result.line_items)} line items",
        )

    def _finish(
        self, conn: ledger.Connection, work: _Work, extraction_id: int | None = None
    ) -> None:
        """NORMALIZED → DONE, with the outbox rows for every destination, in the caller's
        transaction."""
        sub = work.sub
        if extraction_id is None:
            extraction_id = conn.execute(
                select(extractions.c.id)
                .where(extractions.c.submission_id == sub["id"])
                .order_by(extractions.c.id.desc())
                .limit(1)
            ).scalar_one()
        now = utcnow()
        lease = now + timedelta(seconds=self.settings.lease_seconds)
        for destination in sub["destinations"] or []:
            inline = destination in self.hooks.inline
            row = {
                "document_id": sub["document_id"],
                "submission_id": sub["id"],
                "extraction_id": extraction_id,
                "destination": destination,
                "idempotency_key": f"docrelay-{sub['document_id']}-{extraction_id}-{destination}",
                "state": "pending",
                "attempts": 0,
                "created_at": now,
                "lease_owner": work.owner if inline else None,
                "lease_expires_at": lease if inline else None,
            }
            row["id"] = conn.execute(INSERT_DELIVERY, row).scalar_one()
            if inline:
                work.outbox.append(row)
        work.extraction_id = extraction_id
        ledger.move_submission(
            conn, sub, S.DONE, owner=work.owner, actor=work.actor, completed_at=now,
            lease_owner=None, lease_expires_at=None, next_attempt_at=None, error=None,
            error_class=None,
        )  # fmt: skip

    def _deliver(self, work: _Work) -> None:
        """After `done` is committed: push to inline destinations here, wake the other pools."""
        rows, work.outbox = work.outbox, []
        if rows and work.canonical is not None and work.extraction_id is not None:
            payload = export_payload(work.doc, work.sub, work.extraction_id, work.canonical)
            for row in rows:
                runner = self.hooks.inline[row["destination"]]
                try:
                    if not runner.push(row, payload, work.owner, inline=work.sub):
                        self.hooks.wake_deliveries(row["destination"])  # its pool retries
                except OperationalError as exc:  # pushed, perhaps, but not recorded
                    log.warning("delivery %s not recorded (%s); retried", row["id"], exc.orig)
                    self.hooks.adopt_delivery(row["destination"], row["id"])
        else:
            for row in rows:  # nothing in memory to push: the pool's sweep takes them
                self.hooks.wake_deliveries(row["destination"])
        inline = {row["destination"] for row in rows}
        for destination in work.sub["destinations"] or []:
            if destination not in inline:
                self.hooks.wake_deliveries(destination)

    # ------------------------------------------------------------------ outcomes

    def _failed(
        self, sub: dict[str, Any], step: str, error: Exception, owner: str, actor: str
    ) -> None:
        verdict = states.verdict(error, sub["attempts"], self.settings, states.SUBMISSION_LANE)
        if not states.is_expected(error):
            log.error("unexpected error in %s of submission %s", step, sub["id"], exc_info=error)
        else:
            log.warning(
                "submission %s (%s) %s: %s", sub["id"], self.profile, verdict.outcome, error
            )
        try:
            self._apply(sub, verdict, owner, actor)
        except ledger.LeaseLost:
            log.warning("lost the lease on submission %s while recording an error", sub["id"])

    def _apply(self, sub: dict[str, Any], verdict: states.Verdict, owner: str, actor: str) -> None:
        outcome = verdict.outcome
        if verdict.state == S.REJECTED:
            self._reject(sub, owner, actor, verdict.reason)
        elif verdict.state == S.DEAD:
            self._give_up(sub, owner, actor, verdict.reason)
        elif outcome is states.Outcome.PAUSE:
            self.hooks.auth_failed(self.profile, verdict.reason)
            self._release(sub, owner, delay=verdict.delay or 0.0, message=verdict.reason,
                          error_class="auth")  # fmt: skip
        elif outcome is states.Outcome.WAIT:
            self._release(sub, owner, delay=verdict.delay or 0.0)
        else:
            state = sub["state"]
            with self.engine.begin() as conn:
                ledger.move_submission(
                    conn, sub, S.FAILED, owner=owner, actor=actor,
                    message=f"{verdict.reason} (retry {verdict.attempts} in {verdict.delay:.1f}s)",
                    resume_state=state if state != S.FAILED else sub["resume_state"],
                    attempts=verdict.attempts, error=verdict.reason, error_class="transient",
                    next_attempt_at=utcnow() + timedelta(seconds=verdict.delay or 0.0),
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


def _checked_json(raw: Any) -> RawJSON:
    """The vendor result as JSON text, serialised once for the check and the store alike.

    A result that cannot be stored as JSON is the connector's bug: fail loudly."""
    try:
        return RawJSON(json.dumps(raw))
    except (TypeError, ValueError) as exc:
        raise TerminalError(f"the vendor's result is not JSON-serialisable: {exc}") from exc
