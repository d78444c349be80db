"""What became of a delivered record downstream: posted (its final values teach the vendor) or
rejected (the vendor hears of a failed export).

For destinations that can tell (``Destination.can_follow``: an ERP that posts or cancels the
draft invoice docrelay made), a periodic round asks about each delivered record until the
answer is final. A posted record's values that differ from the extraction go through the one
correction path (``feedback.correct``, origin ``erp:<destination>``): the vendor that read the
document learns them, and every other destination gets them as a new version. A rejected one
becomes an export-status message (``failed_export``) for vendors that show it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from datetime import timedelta
from typing import Any

from sqlalchemy import Connection, Engine, and_, exists, or_, select, update
from sqlalchemy.orm import aliased

from connectors.base import DeliveryReceipt, Destination, DownstreamOutcome, DownstreamState
from connectors.errors import DocrelayError
from connectors.normalize import FieldValueError, parse_field_strictly
from daemon.pipeline import ledger
from daemon.pipeline.feedback import (
    LATEST_RESULT,
    CorrectionError,
    apply_correction,
    fields_t,
    insert_export_status,
)
from daemon.store.models import (
    DeliveryState,
    Extraction,
    utcnow,
)

log = logging.getLogger(__name__)

_dl = ledger.deliveries
_later = aliased(_dl)
extractions = Extraction.__table__

BATCH = 100
"""Records asked about in one round; the rest wait for the next."""


def due(destination: str, interval: float, limit: int = BATCH) -> Any:
    """Delivered records of ``destination`` whose outcome is open and that were not asked
    about for ``interval`` seconds — only the newest version of each delivery (an older one
    was replaced by it), oldest question first."""
    cutoff = utcnow() - timedelta(seconds=interval)
    newer = exists().where(
        _later.c.idempotency_key == _dl.c.idempotency_key, _later.c.version > _dl.c.version
    )
    return (
        select(
            _dl.c.id,
            _dl.c.document_id,
            _dl.c.submission_id,
            _dl.c.downstream_ref,
            _dl.c.downstream_data,
            _dl.c.followed_at,
            _dl.c.version,
        )
        .where(
            _dl.c.destination == destination,
            _dl.c.state == DeliveryState.DELIVERED,
            _dl.c.outcome.is_(None),
            _dl.c.downstream_ref.is_not(None),
            or_(_dl.c.followed_at.is_(None), _dl.c.followed_at <= cutoff),
            ~newer,
        )
        .order_by(_dl.c.followed_at.is_not(None), _dl.c.followed_at, _dl.c.id)
        .limit(limit)
    )


class OutcomeFollower:
    """Asks one destination about its delivered records; one round per ``run_once``."""

    def __init__(
        self,
        *,
        engine: Engine,
        destination: Destination,
        name: str,
        interval: float,
        vendors: Mapping[str, Any],
        reports_export_status: Callable[[str], bool] = lambda profile: False,
        changed: Callable[[str], None] = lambda profile: None,
    ) -> None:
        self.engine = engine
        self.destination = destination
        self.name = name
        self.interval = interval
        self.vendors = vendors
        self.reports_export_status = reports_export_status
        """Whether a profile wants export-status messages (the vendor shows failed exports)."""
        self.changed = changed
        """Called after a round queued vendor feedback or new deliveries for a profile."""

    def run_once(self) -> int:
        """Ask about every record due; returns how many got a final outcome. A transient or
        auth failure ends the round (the next one asks again)."""
        with self.engine.connect() as conn:
            rows = conn.execute(due(self.name, self.interval)).all()
        finished = 0
        for row in rows:
            if not self._claim(row):
                continue  # another process asked about it just now
            receipt = DeliveryReceipt(ref=row.downstream_ref, data=row.downstream_data or {})
            try:
                outcome = self.destination.follow(receipt)
            except DocrelayError as exc:
                log.warning("%s: cannot tell what became of %s: %s", self.name, receipt.ref, exc)
                break
            if outcome.state == DownstreamState.PENDING:
                continue
            profile = self._record(row, outcome)
            finished += 1
            if profile is not None:
                self.changed(profile)
        return finished

    def _claim(self, row: Any) -> bool:
        """Move the record's question clock on, only if no one else did since it was read."""
        was = _dl.c.followed_at
        with self.engine.begin() as conn:
            claimed = conn.execute(
                update(_dl)
                .where(
                    _dl.c.id == row.id,
                    was.is_(None) if row.followed_at is None else was == row.followed_at,
                )
                .values(followed_at=utcnow())
            )
        return claimed.rowcount == 1

    def _record(self, row: Any, outcome: DownstreamOutcome) -> str | None:
        """Store the final outcome, and in the same transaction what it means for the vendor
        and the other destinations. Returns the profile when something was queued for it."""
        now = utcnow()
        with self.engine.begin() as conn:
            done = conn.execute(
                update(_dl)
                .where(_dl.c.id == row.id, _dl.c.outcome.is_(None))
                .values(
                    outcome=outcome.state,
                    outcome_reason=outcome.reason,
                    outcome_data=dict(outcome.values) or None,
                    outcome_at=now,
                )
            )
            if done.rowcount != 1:
                return None
            profile = conn.execute(
                select(ledger.submissions.c.profile).where(
                    ledger.submissions.c.id == row.submission_id
                )
            ).scalar_one()
            if outcome.state == DownstreamState.REJECTED:
                return self._rejected(conn, row, profile, outcome)
            return self._posted(conn, row, profile, outcome)

    def _rejected(
        self, conn: Connection, row: Any, profile: str, outcome: DownstreamOutcome
    ) -> str | None:
        reason = outcome.reason or "rejected"
        ledger.event(
            conn, actor=f"destination:{self.name}", kind="downstream_rejected",
            document_id=row.document_id, submission_id=row.submission_id, delivery_id=row.id,
            message=f"{self.name}: {row.downstream_ref} {reason}",
        )  # fmt: skip
        log.warning("document %s: %s %s", row.document_id, self.name, reason)
        if not self.reports_export_status(profile):
            return None
        insert_export_status(
            conn, row.document_id, row.submission_id, profile, "failed_export",
            f"{self.name}: {reason}"[:2000], origin=f"erp:{self.name}",
        )  # fmt: skip
        return profile

    def _posted(
        self, conn: Connection, row: Any, profile: str, outcome: DownstreamOutcome
    ) -> str | None:
        differing = self._differing(conn, row.document_id, outcome.values)
        ledger.event(
            conn, actor=f"destination:{self.name}", kind="downstream_posted",
            document_id=row.document_id, submission_id=row.submission_id, delivery_id=row.id,
            message=f"{self.name}: {row.downstream_ref} posted"
            + (f"; changed there: {', '.join(sorted(differing))}" if differing else ""),
        )  # fmt: skip
        if not differing:
            return None
        try:
            with conn.begin_nested():  # a refusal leaves the outcome recorded
                changed = apply_correction(
                    conn, row.document_id, differing, vendors=self.vendors,
                    origin=f"erp:{self.name}", skip_destination=self.name,
                )  # fmt: skip
        except CorrectionError as exc:  # the store moved on (no extraction): keep the outcome
            log.warning("document %s: %s's values not applied: %s", row.document_id, self.name, exc)
            return None
        log.info("document %s: posted in %s; %s", row.document_id, self.name, "; ".join(changed))
        return profile

    def _differing(
        self, conn: Connection, document_id: int, values: Mapping[str, str]
    ) -> dict[str, str]:
        """The posted values that differ from the latest extraction's, compared normalised
        (``19.0`` and ``19.00`` agree); a value that does not parse is left out, logged."""
        latest = (
            LATEST_RESULT.with_only_columns(extractions.c.id)
            .params(document_id=document_id)
            .scalar_subquery()
        )  # the primary's result: the one exported, never a shadow's
        stored = dict(
            conn.execute(
                select(fields_t.c.name, fields_t.c.value_text).where(
                    and_(fields_t.c.extraction_id == latest, fields_t.c.name.in_(list(values)))
                )
            ).all()
        )
        differing = {}
        for name, text in values.items():
            try:
                value = parse_field_strictly(name, text)
            except FieldValueError as exc:
                log.warning("%s: posted %s not understood: %s", self.name, name, exc)
                continue
            if value.value_text != stored.get(name):
                differing[name] = text
        return differing
