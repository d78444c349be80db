"""Vendor-bound messages, driven by committed rows: corrections and export status.

A correction made on our side (``docrelay correct``, the HTTP API, the ``docrelay_corrections``
table) updates the store at once and queues a feedback row; once every delivery of a submission
has ended, an export-status row is queued in the same transaction. Each profile's feedback pool
sends them with the vendor's API; the rows make every send safe to repeat after a crash.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import Any

from sqlalchemy import Connection, Engine, bindparam, func, insert, or_, select, update

from connectors.base import CanonicalResult, Correction, CorrectionKind, FieldValue, Vendor
from connectors.errors import TerminalError
from connectors.normalize import FieldValueError, parse_field_strictly
from daemon import logs
from daemon.config import PipelineSettings
from daemon.pipeline import ledger, states
from daemon.pipeline.deliveries import load_result
from daemon.pipeline.workers import InHand
from daemon.store.engine import reader
from daemon.store.models import (
    ID_MAX,
    DeliveryState,
    Document,
    Extraction,
    Feedback,
    FeedbackKind,
    FeedbackState,
    FieldRow,
    utcnow,
)

log = logging.getLogger(__name__)

feedback_t = Feedback.__table__
documents_t = Document.__table__
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
INSERT_DELIVERY = insert(_dl).returning(_dl.c.id)
LATEST_OF_SUBMISSION = (
    select(extractions.c.id)
    .where(
        extractions.c.submission_id == bindparam("submission_id"),
        extractions.c.normalized_at.is_not(None),
    )
    .order_by(extractions.c.id.desc())
    .limit(1)
)
SELECT_TARGET = select(
    ledger.submissions.c.vendor_ref, ledger.submissions.c.vendor_data, ledger.submissions.c.role
).where(ledger.submissions.c.id == bindparam("submission_id"))


class CorrectionError(ValueError):
    """The correction cannot be applied (unknown document, no extraction yet)."""


class InvalidCorrection(CorrectionError):
    """A field the model does not know, or a value that does not parse as the field's type."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field
        """The field refused, so an API answer or a table row can name it."""


class UnknownDocument(CorrectionError):
    """No document has this id."""


class NotExtractedYet(CorrectionError):
    """The document is known but has no result yet: a correction can come later."""


LATEST_RESULT = (
    select(extractions.c.id, extractions.c.submission_id, ledger.submissions.c.profile)
    .join(ledger.submissions, ledger.submissions.c.id == extractions.c.submission_id)
    .where(
        extractions.c.document_id == bindparam("document_id"),
        extractions.c.normalized_at.is_not(None),
        ledger.submissions.c.role != "shadow",  # the document's result is the primary's
    )
    .order_by(extractions.c.id.desc())
    .limit(1)
)
"""The document's result: the latest extraction of its primary (or fallback) submission."""
SHADOWS_TAKING_FEEDBACK = (
    select(extractions.c.id, extractions.c.submission_id, ledger.submissions.c.profile)
    .join(ledger.submissions, ledger.submissions.c.id == extractions.c.submission_id)
    .where(
        extractions.c.document_id == bindparam("document_id"),
        extractions.c.normalized_at.is_not(None),
        ledger.submissions.c.role == "shadow",
        ledger.submissions.c.shadow_feedback.is_(True),
    )
    .order_by(extractions.c.id.desc())
)
"""The extractions of the document's shadows whose route has ``shadow_feedback``, latest first."""


def correction_kind(
    before: str | None, after: str | None, *, loose: bool = False
) -> CorrectionKind:
    """What a new value is to the vendor's: ``loose`` (a shadow's value, read by another
    vendor) ignores case and surrounding blanks when telling a confirmation."""
    if after is None:
        return CorrectionKind.ABSENT
    if before is None:
        return CorrectionKind.ADD
    same = before.strip().casefold() == after.strip().casefold() if loose else before == after
    return CorrectionKind.CONFIRM if same else CorrectionKind.CORRECT


def correct(
    engine: Engine,
    document_id: int,
    values: Mapping[str, str],
    *,
    confirm: Sequence[str] = (),
    vendors: Mapping[str, Any] | None = None,
    origin: str = "cli",
    note: str | None = None,
) -> list[str]:
    """Apply a person's word on fields of the latest extraction and queue it for the vendor.

    ``values`` maps a field (canonical name or ``extra.<label>``) to its right value: a value
    the extraction lacked is an ``add``, a different one a ``correct``, an empty one says the
    field is ``absent`` from the document. ``confirm`` names fields whose extracted value is
    right. Every value is checked against its field's type before anything changes
    (``InvalidCorrection``). A changed document is exported again, as the next version of each
    of its deliveries. ``origin`` (cli, api, table) is the actor of the history events and
    ``note`` is added to their message. Returns one line per field saying what happened.
    """
    with engine.begin() as conn:
        return apply_correction(
            conn, document_id, values, confirm=confirm, vendors=vendors, origin=origin, note=note
        )


def apply_correction(
    conn: Connection,
    document_id: int,
    values: Mapping[str, str],
    *,
    confirm: Sequence[str] = (),
    vendors: Mapping[str, Any] | None = None,
    origin: str = "cli",
    note: str | None = None,
    skip_destination: str | None = None,
) -> list[str]:
    """``correct`` inside the caller's transaction, so an intake that records the outcome of
    the correction (the ``docrelay_corrections`` table) commits both at once. Every
    ``CorrectionError`` is raised before anything is written. ``skip_destination`` (where
    the correction came from: an ERP's posted values) gets no new version."""
    parsed = {}
    for name, text in values.items():
        try:
            parsed[name] = parse_field_strictly(name, text) if text.strip() else None
        except FieldValueError as exc:
            raise InvalidCorrection(str(exc), name) from None
    for name in confirm:
        if name in parsed:
            raise InvalidCorrection(f"{name}: give a value or confirm it, not both", name)
    changed: list[str] = []
    # The document's row is locked till the commit: two corrections of one document (from the
    # API and the table, on two daemons) take turns, and each export version is made once.
    known = None
    if document_id <= ID_MAX:  # a larger id names no row, and the database would fail on it
        known = conn.execute(
            select(documents_t.c.id).where(documents_t.c.id == document_id).with_for_update()
        ).first()
    if known is None:
        raise UnknownDocument(f"document {document_id} is not in the store")
    row = conn.execute(LATEST_RESULT, {"document_id": document_id}).first()
    if row is None:
        raise NotExtractedYet(f"document {document_id} has no extraction to correct yet")
    vendor = (vendors or {}).get(row.profile)
    send = vendor is None or vendor.capabilities.feedback
    stored = {
        r.name: r
        for r in conn.execute(
            select(fields_t.c.id, fields_t.c.name, fields_t.c.value_text,
                   fields_t.c.value_number, fields_t.c.value_date, fields_t.c.corrected,
                   fields_t.c.vendor_label).where(fields_t.c.extraction_id == row.id)
        )
    }  # fmt: skip
    for name in confirm:
        if name not in stored or stored[name].value_text is None:
            raise InvalidCorrection(f"{name}: the extraction has no value to confirm", name)
    queued: list[dict[str, Any]] = []
    for name, value in parsed.items():
        old = stored.get(name)
        before = old.value_text if old is not None else None
        after = value.value_text if value is not None else None
        kind = correction_kind(before, after)
        columns = {
            "value_text": after,
            "raw_text": values[name],
            "value_number": value.value_number if value else None,
            "value_date": value.value_date if value else None,
            "currency": value.currency if value else None,
            "corrected": True,
            **_vendor_answer_kept(old),
        }
        if old is None:
            conn.execute(
                fields_t.insert(),
                {**columns, "extraction_id": row.id, "document_id": document_id, "name": name},
            )
        else:
            conn.execute(update(fields_t).where(fields_t.c.id == old.id).values(**columns))
        queued.append(_feedback_row(row, document_id, name, kind, before, after, old, origin))
        changed.append(f"{name}: {before or '∅'} → {after or '∅ (not in the document)'}")
    for name in confirm:
        old = stored[name]
        queued.append(
            _feedback_row(row, document_id, name, CorrectionKind.CONFIRM, old.value_text,
                          old.value_text, old, origin)
        )  # fmt: skip
        changed.append(f"{name}: {old.value_text} confirmed")
    for item in queued:
        if send:
            conn.execute(feedback_t.insert(), item)
        ledger.event(
            conn,
            actor=origin,
            kind="corrected" if item["correction"] != CorrectionKind.CONFIRM else "confirmed",
            document_id=document_id,
            submission_id=row.submission_id,
            message=f"{item['field']} ({item['correction']}): {item['old_value']!r} → "
            f"{item['new_value']!r}"
            + ("" if send else f" ({row.profile} takes no feedback)")
            + (f"; {note}" if note else ""),
        )
    truth = {item["field"]: item["new_value"] for item in queued}
    for line in _queue_for_shadows(conn, document_id, truth, vendors, origin):
        changed.append(line)
    if any(item["correction"] != CorrectionKind.CONFIRM for item in queued):
        if versions := export_again(
            conn, document_id, row.submission_id, actor=origin, skip=skip_destination
        ):
            changed.append(f"exported again: {', '.join(versions)}")
    if not send:
        elsewhere = getattr(vendor, "feedback_elsewhere", None)
        changed.append(
            f"{row.profile} takes no feedback: the correction is kept here only"
            + (f"; {elsewhere}" if elsewhere else " (the vendor never learns of it)")
        )
    return changed


def _queue_for_shadows(
    conn: Connection,
    document_id: int,
    truth: Mapping[str, str | None],
    vendors: Mapping[str, Any] | None,
    origin: str,
) -> list[str]:
    """The same word on each field, for each shadow whose route sends it feedback: judged
    against the shadow's own result (what it got right is confirmed), which stays as the
    vendor gave it (the agreement view compares it). Nothing is exported for a shadow."""
    said = []
    seen: set[int] = set()
    for target in conn.execute(SHADOWS_TAKING_FEEDBACK, {"document_id": document_id}):
        if target.submission_id in seen:
            continue  # an older extraction of the same shadow
        seen.add(target.submission_id)
        vendor = (vendors or {}).get(target.profile)
        if vendor is not None and not vendor.capabilities.feedback:
            continue
        stored = {
            r.name: r
            for r in conn.execute(
                select(fields_t.c.name, fields_t.c.value_text, fields_t.c.vendor_label).where(
                    fields_t.c.extraction_id == target.id
                )
            )
        }
        for name, after in truth.items():
            old = stored.get(name)
            before = old.value_text if old is not None else None
            kind = correction_kind(before, after, loose=True)
            conn.execute(
                feedback_t.insert(),
                _feedback_row(target, document_id, name, kind, before, after, old, origin),
            )
        if truth:
            ledger.event(
                conn, actor=origin, kind="corrected", document_id=document_id,
                submission_id=target.submission_id,
                message=f"shadow {target.profile}: {', '.join(truth)} sent to it too",
            )  # fmt: skip
            said.append(f"shadow {target.profile}: the same feedback queued")
    return said


def _vendor_answer_kept(old: Any) -> dict[str, Any]:
    """The columns that keep the vendor's own answer when a field is first corrected (none
    when it was: a row added by a correction), so its accuracy stays measurable."""
    if old is None:
        return {"vendor_value_kept": True}
    if old.corrected:
        return {}
    return {
        "vendor_value_text": old.value_text,
        "vendor_value_number": old.value_number,
        "vendor_value_date": old.value_date,
        "vendor_value_kept": True,
    }


def _feedback_row(
    target: Any,
    document_id: int,
    name: str,
    kind: CorrectionKind,
    before: str | None,
    after: str | None,
    old: Any,
    origin: str,
) -> dict[str, Any]:
    return {
        "document_id": document_id,
        "submission_id": target.submission_id,
        "profile": target.profile,
        "kind": FeedbackKind.CORRECTION,
        "correction": kind,
        "field": name,
        "vendor_label": old.vendor_label if old is not None else None,
        "old_value": before,
        "new_value": after,
        "origin": origin,
        "state": FeedbackState.PENDING,
        "attempts": 0,
        "created_at": utcnow(),
    }


def export_again(
    conn: Connection,
    document_id: int,
    submission_id: int,
    *,
    actor: str,
    skip: str | None = None,
) -> list[str]:
    """Queue the next version of every delivery the submission has had (a corrected result
    must reach the ERP too): the same idempotency key, so the destination updates what it
    made. Returns ``destination vN`` for each."""
    from daemon.pipeline.submissions import next_delivery_versions

    earlier = conn.execute(
        select(_dl.c.destination, _dl.c.idempotency_key, _dl.c.extraction_id)
        .where(_dl.c.submission_id == submission_id, _dl.c.state != DeliveryState.SUPERSEDED)
        .order_by(_dl.c.version.desc(), _dl.c.id.desc())
    ).all()
    latest: dict[str, Any] = {}
    for row in earlier:
        if row.destination != skip:
            latest.setdefault(row.idempotency_key, row)
    if not latest:
        return []  # not exported yet: the first export will carry the correction
    versions = next_delivery_versions(conn, list(latest))
    made = []
    now = utcnow()
    for key, row in latest.items():
        delivery_id = conn.execute(
            INSERT_DELIVERY,
            {
                "document_id": document_id,
                "submission_id": submission_id,
                "extraction_id": row.extraction_id,
                "destination": row.destination,
                "idempotency_key": key,
                "version": versions[key],
                "state": DeliveryState.PENDING,
                "attempts": 0,
                "created_at": now,
            },
        ).scalar_one()
        ledger.event(
            conn, actor=actor, kind="export_again", document_id=document_id,
            submission_id=submission_id, delivery_id=delivery_id, to_state=DeliveryState.PENDING,
            message=f"version {versions[key]} for {row.destination}: the result was corrected",
        )  # fmt: skip
        made.append(f"{row.destination} v{versions[key]}")
    return made


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
    return insert_export_status(
        conn, delivery["document_id"], submission_id, profile, status, message,
        origin="deliveries", lease=lease,
    )  # fmt: skip


def insert_export_status(
    conn: Connection,
    document_id: int,
    submission_id: int,
    profile: str,
    status: str,
    message: str | None,
    *,
    origin: str,
    lease: tuple[str, float] | None = None,
) -> dict[str, Any]:
    """Queue one export-status message (``exported`` / ``failed_export``) for the vendor;
    returns the row with its id."""
    now = utcnow()
    owner, expires = (lease[0], now + timedelta(seconds=lease[1])) if lease else (None, None)
    row: dict[str, Any] = {
        "document_id": document_id,
        "submission_id": submission_id,
        "profile": profile,
        "kind": FeedbackKind.EXPORT_STATUS,
        "field": None,
        "new_value": status,
        "message": message,
        "origin": origin,
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
        self.in_hand = InHand("feedback", feedback_t)

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
        logs.bind(submission_id=first["submission_id"])
        if "document_id" in first:
            logs.bind(document_id=first["document_id"])
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
                refused: dict[str, str] = {}
            else:
                refused = self._send_corrections(first["submission_id"], target, rows)
        except Exception as error:
            self._failed(rows, error, owner)
            return
        sent = [r for r in rows if r["field"] not in refused]
        if sent:
            self._finish(sent, owner, FeedbackState.SENT, "sent", sent_at=utcnow(), error=None)
        for field, reason in refused.items():
            mine = [r for r in rows if r["field"] == field]
            self._finish(mine, owner, FeedbackState.REFUSED, f"refused: {reason}", error=reason)

    def _send_corrections(
        self, submission_id: int, target: Mapping[str, Any], rows: Sequence[Mapping[str, Any]]
    ) -> dict[str, str]:
        """Send the latest word on each field with the whole current result; returns the
        fields the vendor refused, with its reason."""
        with self.reader.connect() as conn:
            extraction_id = conn.execute(
                LATEST_OF_SUBMISSION, {"submission_id": submission_id}
            ).scalar_one()
            result = load_result(conn, extraction_id)
        if target.get("role") == "shadow":  # its result stays as it was: correct it here
            result = _corrected(result, _latest_per_field(rows))
        corrections = []
        for row in _latest_per_field(rows):
            value = result.get(row["field"])
            corrections.append(
                Correction(
                    field=row["field"],
                    value=row["new_value"],
                    kind=CorrectionKind(row["correction"] or CorrectionKind.CORRECT),
                    old_value=row["old_value"],
                    vendor_label=row["vendor_label"] or (value.vendor_label if value else None),
                    vendor_id=value.vendor_id if value else None,
                )
            )
        outcomes = self.vendor.send_feedback(
            target["vendor_ref"], target["vendor_data"] or {}, corrections, result
        )
        return {
            o.field: o.reason or "refused by the vendor" for o in outcomes or [] if not o.accepted
        }

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


def _corrected(result: CanonicalResult, rows: Sequence[Mapping[str, Any]]) -> CanonicalResult:
    """A shadow's result with the corrections applied (as the primary's is in the store), its
    own labels and ids kept, so a vendor that takes the full set gets the corrected set."""
    fields = {f.name: f for f in result.fields}
    for row in rows:
        name, value = row["field"], row["new_value"]
        if value is None:
            fields.pop(name, None)
            continue
        try:
            parsed = parse_field_strictly(name, value)
        except FieldValueError:  # it parsed when it was made: the field's rules have changed
            parsed = FieldValue(name=name, value_text=value, raw_text=value)
        own = fields.get(name)
        fields[name] = dataclasses.replace(
            parsed,
            vendor_label=own.vendor_label if own else row["vendor_label"],
            vendor_id=own.vendor_id if own else None,
            page=own.page if own else None,
            bbox=own.bbox if own else None,
        )
    return dataclasses.replace(result, fields=list(fields.values()))


def _latest_per_field(rows: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The newest row of each field: what a person said last is what the vendor gets."""
    latest: dict[str, Mapping[str, Any]] = {}
    for row in sorted(rows, key=lambda r: r["id"]):
        latest[row["field"]] = row
    return list(latest.values())
