"""Vendor-bound messages, driven by committed rows: corrections and export status.

A correction made on our side (``docrelay correct``, later an ERP) updates the store at once and
queues a feedback row; once every delivery of a submission has ended, an export-status row is
queued in the same transaction. Each profile's feedback pool sends them with the vendor's API;
the rows make every send safe to repeat after a crash.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import Any

from sqlalchemy import Connection, Engine, bindparam, func, or_, select, update

from connectors.base import Correction, Vendor
from connectors.errors import TerminalError
from connectors.normalize import normalize_field
from daemon.config import PipelineSettings
from daemon.pipeline import ledger, states
from daemon.pipeline.workers import InHand
from daemon.store.engine import reader
from daemon.store.models import (
    DeliveryState,
    Extraction,
    Feedback,
    FeedbackKind,
    FeedbackState,
    FieldRow,
    utcnow,
)

log = logging.getLogger(__name__)

feedback_t = Feedback.__table__
fields_t = FieldRow.__table__
extractions = Extraction.__table__
ACTIVE = (FeedbackState.PENDING, FeedbackState.FAILED)

_dl = ledger.deliveries
DELIVERY_OUTCOMES = select(
    func.count().filter(_dl.c.state.in_((DeliveryState.PENDING, DeliveryState.FAILED))),
    func.count().filter(_dl.c.state == DeliveryState.DEAD),
).where(_dl.c.submission_id == bindparam("submission_id"))
"""How many deliveries of a submission are still open, and how many ended dead."""
INSERT_FEEDBACK = feedback_t.insert().returning(feedback_t.c.id)
SELECT_TARGET = select(ledger.submissions.c.vendor_ref, ledger.submissions.c.vendor_data).where(
    ledger.submissions.c.id == bindparam("submission_id")
)


class CorrectionError(ValueError):
    """The correction cannot be applied (unknown document, no extraction yet, bad field)."""


def correct(
    engine: Engine,
    document_id: int,
    values: Mapping[str, str],
    *,
    vendors: Mapping[str, Vendor] | None = None,
    origin: str = "cli",
) -> list[str]:
    """Apply corrected field values to the latest extraction and queue them for the vendor.

    Returns one line per field saying what changed. Fields are canonical names or
    ``extra.<label>``; values are normalised the way vendor values are.
    """
    sub = ledger.submissions
    changed: list[str] = []
    with engine.begin() as conn:
        row = conn.execute(
            select(extractions.c.id, extractions.c.submission_id, sub.c.profile, sub.c.state)
            .join(sub, sub.c.id == extractions.c.submission_id)
            .where(
                extractions.c.document_id == document_id, extractions.c.normalized_at.is_not(None)
            )
            .order_by(extractions.c.id.desc())
            .limit(1)
        ).first()
        if row is None:
            raise CorrectionError(f"document {document_id} has no extraction to correct yet")
        vendor = (vendors or {}).get(row.profile)
        for name, text in values.items():
            if not name or (name.startswith("extra.") and len(name) == len("extra.")):
                raise CorrectionError(f"{name!r} is not a field name")
            value = normalize_field(name, text)
            old = conn.execute(
                select(fields_t.c.id, fields_t.c.value_text).where(
                    fields_t.c.extraction_id == row.id, fields_t.c.name == name
                )
            ).first()
            columns = {
                "value_text": value.value_text,
                "raw_text": text,
                "value_number": value.value_number,
                "value_date": value.value_date,
                "currency": value.currency,
                "corrected": True,
            }
            if old is None:
                conn.execute(
                    fields_t.insert(),
                    {
                        **columns,
                        "extraction_id": row.id,
                        "document_id": document_id,
                        "name": name,
                        "confidence": None,
                        "page": None,
                        "bbox": None,
                        "vendor_label": None,
                    },
                )
            else:
                conn.execute(update(fields_t).where(fields_t.c.id == old.id).values(**columns))
            before = old.value_text if old is not None else None
            send = vendor is None or vendor.capabilities.feedback
            if send:
                conn.execute(
                    feedback_t.insert(),
                    {
                        "document_id": document_id,
                        "submission_id": row.submission_id,
                        "profile": row.profile,
                        "kind": FeedbackKind.CORRECTION,
                        "field": name,
                        "old_value": before,
                        "new_value": value.value_text,
                        "origin": origin,
                        "state": FeedbackState.PENDING,
                        "attempts": 0,
                        "created_at": utcnow(),
                    },
                )
            ledger.event(
                conn,
                actor=origin,
                kind="corrected",
                document_id=document_id,
                submission_id=row.submission_id,
                message=f"{name}: {before!r} → {value.value_text!r}"
                + ("" if send else f" ({row.profile} takes no feedback)"),
            )
            changed.append(f"{name}: {before or '∅'} → {value.value_text or '∅'}")
    return changed


def queue_export_status(
    conn: Connection,
    delivery: Mapping[str, Any],
    profile: str,
    *,
    lease: tuple[str, float] | None = None,
) -> dict[str, Any] | None:
    """Once every delivery of the submission has ended, queue the export status for the vendor.

    Runs in the transaction that ended the last delivery; returns the new row (None when
    deliveries are still open). ``lease`` (owner, seconds) hands the row to the caller, which
    sends it itself right after the commit.
    """
    submission_id = delivery["submission_id"]
    open_count, failed = conn.execute(DELIVERY_OUTCOMES, {"submission_id": submission_id}).one()
    if open_count:
        return None
    if failed:
        errors = conn.execute(
            select(_dl.c.destination, _dl.c.error).where(
                _dl.c.submission_id == submission_id, _dl.c.state == DeliveryState.DEAD
            )
        ).all()
        status = "failed_export"
        message = "; ".join(f"{d}: {e}" for d, e in errors)[:2000]
    else:
        status, message = "exported", None
    now = utcnow()
    owner, expires = (lease[0], now + timedelta(seconds=lease[1])) if lease else (None, None)
    row: dict[str, Any] = {
        "document_id": delivery["document_id"],
        "submission_id": submission_id,
        "profile": profile,
        "kind": FeedbackKind.EXPORT_STATUS,
        "field": None,
        "new_value": status,
        "message": message,
        "origin": "deliveries",
        "state": FeedbackState.PENDING,
        "attempts": 0,
        "created_at": now,
        "lease_owner": owner,
        "lease_expires_at": expires,
    }
    row["id"] = conn.execute(INSERT_FEEDBACK, row).scalar_one()
    return row


class FeedbackRunner:
    """Sends one profile's feedback rows; corrections of one submission go in one call."""

    def __init__(
        self, *, engine: Engine, vendor: Vendor, profile: str, settings: PipelineSettings
    ) -> None:
        self.engine = engine
        self.reader = reader(engine)
        self.vendor = vendor
        self.profile = profile
        self.settings = settings
        self.in_hand = InHand("feedback")

    def run(
        self,
        feedback_id: int,
        owner: str,
        *,
        known: tuple[Mapping[str, Any], Mapping[str, Any]] | None = None,
    ) -> None:
        """Send one leased row (with its leasable siblings). ``known`` is (the row, its
        submission) when the caller has both in hand, e.g. a row it just queued."""
        with self.in_hand.hold(feedback_id) as mine:
            if mine:
                self._run(feedback_id, owner, known)

    def _run(
        self,
        feedback_id: int,
        owner: str,
        known: tuple[Mapping[str, Any], Mapping[str, Any]] | None,
    ) -> None:
        if known is None:
            with self.reader.connect() as conn:
                first = (
                    conn.execute(select(feedback_t).where(feedback_t.c.id == feedback_id))
                    .mappings()
                    .one()
                )
                target = (
                    conn.execute(SELECT_TARGET, {"submission_id": first["submission_id"]})
                    .mappings()
                    .one()
                )
        else:
            first, target = known
        if first["lease_owner"] != owner:
            return
        rows = [first]
        if first["kind"] == FeedbackKind.CORRECTION:  # take its siblings along: one confirm
            rows.extend(self._lease_siblings(first, owner))
        try:
            if target["vendor_ref"] is None:
                raise TerminalError("the submission has no vendor reference")
            if first["kind"] == FeedbackKind.EXPORT_STATUS:
                self.vendor.report_delivery(
                    target["vendor_ref"],
                    target["vendor_data"] or {},
                    first["new_value"] == "exported",
                    first["message"],
                )
            else:
                corrections = _latest_per_field(rows)
                self.vendor.send_feedback(
                    target["vendor_ref"], target["vendor_data"] or {}, corrections
                )
        except Exception as error:
            self._failed(rows, error, owner)
            return
        self._finish(rows, owner, FeedbackState.SENT, "sent", sent_at=utcnow(), error=None)

    def _lease_siblings(self, first: Mapping[str, Any], owner: str) -> list[Mapping[str, Any]]:
        """The other pending corrections of the same submission, leased to this worker."""
        with self.engine.begin() as conn:
            pending = (
                select(feedback_t)
                .where(
                    feedback_t.c.submission_id == first["submission_id"],
                    feedback_t.c.kind == FeedbackKind.CORRECTION,
                    feedback_t.c.state.in_(ACTIVE),
                    feedback_t.c.id != first["id"],
                    or_(
                        feedback_t.c.lease_owner.is_(None),
                        feedback_t.c.lease_expires_at < utcnow(),
                    ),
                )
                .order_by(feedback_t.c.id)
            )
            siblings = conn.execute(pending).mappings().all()
            if siblings:
                conn.execute(
                    update(feedback_t)
                    .where(feedback_t.c.id.in_([s["id"] for s in siblings]))
                    .values(lease_owner=owner, lease_expires_at=first["lease_expires_at"])
                )
        return list(siblings)

    def _failed(self, rows: Sequence[Mapping[str, Any]], error: Exception, owner: str) -> None:
        attempts = max(r["attempts"] for r in rows)
        verdict = states.verdict(error, attempts, self.settings, states.FEEDBACK_LANE)
        if not states.is_expected(error):
            log.error("unexpected error sending feedback to %s", self.profile, exc_info=error)
        else:
            log.warning("feedback to %s failed: %s", self.profile, verdict.reason)
        assert verdict.state is not None  # outbox rows always wait in a state of their own
        if verdict.final:
            self._finish(
                rows, owner, verdict.state, verdict.reason, attempts=verdict.attempts,
                error=verdict.reason,
            )  # fmt: skip
            return
        delay = verdict.delay or 0.0
        self._finish(
            rows,
            owner,
            verdict.state,
            f"{verdict.reason} (retry in {delay:.1f}s)",
            attempts=verdict.attempts,
            error=verdict.reason,
            next_attempt_at=utcnow() + timedelta(seconds=delay),
        )

    def _finish(
        self,
        rows: Sequence[Mapping[str, Any]],
        owner: str,
        state: str,
        message: str,
        **values: Any,
    ) -> None:
        with self.engine.begin() as conn:
            for row in rows:
                if not ledger.end_lease(conn, feedback_t, row["id"], owner, state, **values):
                    continue
                kind = row["kind"]
                what = row["field"] if kind == FeedbackKind.CORRECTION else row["new_value"]
                ledger.event(
                    conn,
                    actor=f"worker:{owner}",
                    kind=f"feedback:{kind}",
                    document_id=row["document_id"],
                    submission_id=row["submission_id"],
                    from_state=row["state"],
                    to_state=state,
                    message=f"{what}: {message}",
                )


def _latest_per_field(rows: Sequence[Mapping[str, Any]]) -> list[Correction]:
    latest: dict[str, Any] = {}
    for row in sorted(rows, key=lambda r: r["id"]):
        latest[row["field"]] = row
    return [Correction(field=name, value=row["new_value"]) for name, row in latest.items()]
