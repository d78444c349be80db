"""The submission stages: upload, follow processing, fetch, normalise, hand over to deliveries.

A worker that holds the lease on a submission runs its steps one after the other; every step ends
in one transaction that moves the state and writes the event. Vendor calls happen between
transactions, never inside one, so a slow vendor never holds a database lock.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine, bindparam, func, insert, select, update
from sqlalchemy.exc import OperationalError

from connectors import jsonio
from connectors.base import (
    CanonicalResult,
    DocumentRef,
    PollResult,
    PollStatus,
    Provenance,
    Vendor,
    VendorSettings,
)
from connectors.errors import RateLimited, StoreUnavailable, TerminalError, TransientError
from daemon import logs
from daemon.config import PipelineSettings, Route
from daemon.pipeline import budgets, fallbacks, ledger, states
from daemon.pipeline.breaker import Breaker
from daemon.pipeline.crash import crash_point
from daemon.pipeline.deliveries import DeliveryRunner, export_payload, load_result
from daemon.pipeline.retry import poll_delay
from daemon.pipeline.workers import InHand, Isolation
from daemon.store.blobs import BlobStore
from daemon.store.engine import RawJSON, reader, relaxed
from daemon.store.models import (
    DeliveryState,
    Document,
    Extraction,
    FieldRow,
    LineItemRow,
    SubmissionState,
    utcnow,
)

log = logging.getLogger(__name__)
S = SubmissionState

KEEP_SECONDS = 2.0
"""Longest wait for the vendor through which a submission stays leased here (see keeps)."""

documents = Document.__table__
extractions = Extraction.__table__
INSERT_DELIVERY = insert(ledger.deliveries).returning(ledger.deliveries.c.id)
_earlier = extractions.alias("earlier")
INSERT_EXTRACTION = (
    insert(extractions)
    .values(
        version=select(func.coalesce(func.max(_earlier.c.version), 0) + 1)
        .where(_earlier.c.document_id == bindparam("of_document"))
        .scalar_subquery()
    )
    .returning(extractions.c.id, extractions.c.version)
)
"""A new extraction, numbered after the document's earlier ones in the same statement."""
LATEST_EXTRACTION = (
    select(extractions.c.id, extractions.c.version, extractions.c.review_reason)
    .where(
        extractions.c.submission_id == bindparam("submission_id"),
        extractions.c.normalized_at.is_not(None),
    )
    .order_by(extractions.c.id.desc())
    .limit(1)
)
DELIVERY_VERSIONS = (
    select(ledger.deliveries.c.idempotency_key, func.max(ledger.deliveries.c.version))
    .where(ledger.deliveries.c.idempotency_key.in_(bindparam("keys", expanding=True)))
    .group_by(ledger.deliveries.c.idempotency_key)
)
SUPERSEDE = (
    update(ledger.deliveries)
    .where(
        ledger.deliveries.c.idempotency_key.in_(bindparam("keys", expanding=True)),
        ledger.deliveries.c.state.in_(states.DELIVERY_ACTIVE),
        ledger.deliveries.c.lease_owner.is_(None),
    )
    .values(state=DeliveryState.SUPERSEDED, next_attempt_at=None)
)
fields_t = FieldRow.__table__
line_items_t = LineItemRow.__table__
INSERT_FIELDS = insert(fields_t)
INSERT_LINE_ITEMS = insert(line_items_t)
SELECT_WORK = (
    select(*ledger.WORK_COLUMNS)
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
    isolation: Isolation = field(default_factory=Isolation)
    """Shared by every profile's runner: a crash suspect's step runs alone in the process."""
    route: Callable[[str | None], Route | None] = lambda name: None
    """The route of that name as configured now (its ``fallback_on``, confidence rules)."""
    moved: Callable[[fallbacks.Next, fallbacks.Move], None] = lambda nxt, move: None
    """A document moved on along its chain (committed): count it, wake the next profile."""
    budget_held: Callable[[str, str], None] = lambda profile, limit: None
    """(profile, limit name): a document was held by the profile's budget (for metrics)."""


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
        page_sizes=tuple((w, h) for w, h in row.get("page_sizes") or ()),
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
    keys: dict[str, str] = field(default_factory=dict)
    """The vendor's other names for the submission, to be written with the next move."""
    outbox: list[dict[str, Any]] = field(default_factory=list)
    """Delivery rows created (and leased by this worker) for inline destinations."""
    canonical: CanonicalResult | None = None
    extraction_id: int | None = None
    first_attempt: bool = False
    """No earlier upload can exist (queued until this claim): the vendor may skip reconciling."""
    again_in: float | None = None
    """Seconds after which this process runs the submission again, its lease kept."""
    moved: list[tuple[fallbacks.Next, fallbacks.Move]] = field(default_factory=list)
    """Moves on along the chain made in the transaction now open, for ``Hooks.moved``."""

    def announce(self, hooks: Hooks) -> None:
        """After the commit: tell the engine of the moves made."""
        moved, self.moved = self.moved, []
        for nxt, move in moved:
            hooks.moved(nxt, move)


def vendor_settings(vendor: Vendor) -> VendorSettings:
    """The profile's settings as the engine reads them (the base every vendor's settings
    extend); a connector whose settings do not extend it gets the defaults."""
    settings = vendor.settings
    if isinstance(settings, VendorSettings):
        return settings
    return VendorSettings(kind=settings.kind)


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
        self.relaxed = relaxed(engine)
        """Commits a power cut may undo (see ``store.engine.relaxed``)."""
        self.blobs = blobs
        self.vendor = vendor
        self.profile = profile
        self.vendors = vendors
        self.settings = settings
        self.profile_settings = vendor_settings(vendor)
        self.hooks = hooks
        self.breaker = Breaker(
            engine,
            profile,
            failures=self.profile_settings.breaker_failures,
            cooldown=self.profile_settings.breaker_cooldown,
        )
        """Shared by this profile's pools: what they may claim while the vendor is out."""
        self.budget = self.profile_settings.budget
        self.pacer = budgets.Pacer(engine, profile, self.budget.requests_per_second)
        """Spaces this profile's vendor calls by ``requests_per_second``, across processes."""
        self.fresh: set[int] = set()
        """Submissions this process just moved from `queued` to `uploading` (first attempts)."""
        self.claimed: dict[int, dict[str, Any]] = {}
        """Rows of submissions just claimed, as the claim left them (``WORK_COLUMNS``): the
        first step of each starts from its row instead of reading it again."""
        self.in_hand = InHand("submission", ledger.submissions)

    @property
    def kinds(self) -> dict[str, str]:
        """Every configured profile's vendor kind: the profiles a chain may move on to."""
        return {name: vendor.kind for name, vendor in self.vendors.items()}

    # ------------------------------------------------------------------ entry point

    def run(self, submission_id: int, owner: str) -> float | None:
        """Advance one claimed submission as far as it can go now; returns the seconds after
        which the pool is to run it again, still leased (see ``keeps``), or None."""
        with self.in_hand.hold(submission_id) as mine:
            if mine:
                return self._run(submission_id, owner)
        return None

    def keeps(self, delay: float) -> bool:
        """Whether a submission that waits ``delay`` seconds for the vendor stays leased to
        this process meanwhile: a short wait (the first status poll right after an upload)
        costs no write to give it back and none to claim it again. A wait well inside the
        lease only, so no renewal is needed; a longer one gives it back."""
        return 0 < delay <= min(KEEP_SECONDS, self.settings.lease_seconds / 10)

    def _keep(self, work: _Work, delay: float) -> None:
        """Run this submission again in ``delay`` seconds from the row as it is now, with
        what is still to be written (the move to `processing`, the vendor's keys)."""
        work.again_in = delay
        self.claimed[work.sub["id"]] = {
            **{f"s_{key}": value for key, value in work.sub.items()},
            **{f"d_{key}": value for key, value in work.doc.items()},
            "w_processing": work.processing,
            "w_keys": work.keys,
        }

    def kept_for(
        self, refs: Iterable[str], document_ids: Iterable[int], keys: Mapping[str, Iterable[str]]
    ) -> list[int]:
        """The submissions kept here for a moment (see ``_keep``) that webhooks named: the
        store may not know their vendor reference or state yet (the move to `processing` is
        written with the poll's outcome), so a hint is matched against the rows in memory."""
        refs, document_ids = set(refs), set(document_ids)
        names = {(key, value) for key, values in keys.items() for value in values}
        found = []
        for sub_id, row in self.claimed.copy().items():  # a copy: workers change it meanwhile
            pending = row.get("w_processing") or {}
            if (
                pending.get("vendor_ref", row.get("s_vendor_ref")) in refs
                or row.get("s_document_id") in document_ids
                or names & set((row.get("w_keys") or {}).items())
            ):
                found.append(sub_id)
        return found

    def _run(self, submission_id: int, owner: str) -> float | None:
        row = self.claimed.pop(submission_id, None)
        if row is None:  # adopted, or claimed by a caller that kept no rows
            with self.reader.connect() as conn:
                row = dict(conn.execute(SELECT_WORK, {"id": submission_id}).mappings().one())
        sub = {key[2:]: value for key, value in row.items() if key.startswith("s_")}
        doc = {key[2:]: value for key, value in row.items() if key.startswith("d_")}
        first_attempt = submission_id in self.fresh
        self.fresh.discard(submission_id)
        if sub["lease_owner"] != owner:
            return None
        logs.bind(document_id=sub["document_id"])
        work = _Work(sub, doc, document_ref(doc, self.blobs), owner, f"worker:{owner}")
        work.first_attempt = first_attempt
        work.processing = row.get("w_processing")
        work.keys = row.get("w_keys") or {}
        if not sub["crashes"]:
            with self.hooks.isolation.shared():
                return self._steps(work)
        with self.hooks.isolation.alone():
            if not self._suspect_starts(work):
                return None
            again = self._steps(work)
            with self.engine.begin() as conn:  # it ran and this process lives: not the culprit
                conn.execute(
                    update(ledger.submissions)
                    .where(ledger.submissions.c.id == submission_id)
                    .values(crashes=0)
                )
            sub["crashes"] = 0
            if (kept := self.claimed.get(submission_id)) is not None:
                kept["s_crashes"] = 0
            return again

    def _suspect_starts(self, work: _Work) -> bool:
        """Before a crash suspect's run: dead once it crashed the worker ``max_attempts``
        times, else this run is counted as a crash until it ends (it is written first: a
        SIGKILL or the OOM killer leaves no chance to write afterwards). False: not to run."""
        sub = work.sub
        crashes, limit = sub["crashes"], self.settings.max_attempts
        if crashes >= limit:
            reason = (
                f"crashed the worker {crashes} times (last in {sub['state']}): "
                "a document that kills the process reading it is not tried again"
            )
            log.error("submission %s (%s) goes dead: %s", sub["id"], self.profile, reason)
            try:
                self._end(sub, S.DEAD, work.owner, work.actor, reason, "crash")
            except ledger.LeaseLost:
                pass
            return False
        with self.engine.begin() as conn:
            counted = conn.execute(
                update(ledger.submissions)
                .where(
                    ledger.submissions.c.id == sub["id"],
                    ledger.submissions.c.lease_owner == work.owner,
                )
                .values(crashes=crashes + 1)
            ).rowcount
            if counted != 1:
                return False
            ledger.event(
                conn, actor=work.actor, kind="suspect", document_id=sub["document_id"],
                submission_id=sub["id"], from_state=sub["state"], to_state=sub["state"],
                message=f"it crashed the worker {crashes} time(s): running it alone "
                f"(dead after {limit})",
            )  # fmt: skip
        log.warning(
            "submission %s (%s) crashed the worker %d time(s); running it alone",
            sub["id"], self.profile, crashes,
        )  # fmt: skip
        sub["crashes"] = crashes + 1
        return True

    def _steps(self, work: _Work) -> float | None:
        """The steps of one run, until the submission must wait or has ended."""
        sub, submission_id, owner = work.sub, work.sub["id"], work.owner
        step = sub["state"]
        try:
            while sub["state"] in states.ACTIVE:
                step = sub["state"]
                if not self._step(work):
                    return work.again_in
        except ledger.LeaseLost:
            log.warning("lost the lease on submission %s; another worker has it", submission_id)
        except OperationalError:
            raise  # the store failed, not the step: the pool runs it again once it is back
        except Exception as error:
            self._failed(sub, step, error, owner, work.actor)
        return None

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
            if work.processing is not None:  # uploaded; its record waits for the poll's
                return self._poll(work)
            return self._upload(work)
        if state in (S.PROCESSING, S.REVIEW):
            return self._poll(work)
        if state == S.FETCHED:
            return self._normalize(work)
        if state == S.NORMALIZED:
            with self.engine.begin() as conn:
                latest = conn.execute(LATEST_EXTRACTION, {"submission_id": sub["id"]}).one()
                if latest.review_reason:
                    self._to_review(conn, work, latest.review_reason)
                    return False
                self._finish(conn, work, latest.id, latest.version)
            work.announce(self.hooks)
            self._deliver(work)
            return False
        raise states.IllegalTransition(f"no step for state {state}")

    def _upload(self, work: _Work) -> bool:
        sub = work.sub
        if self.budget.limits() and sub["charged_at"] is None:
            exhausted = budgets.charge(
                self.engine, sub, owner=work.owner, profile=self.profile, budget=self.budget,
                pages=work.doc["pages"],
            )  # fmt: skip
            if exhausted is not None:
                self._over_budget(work, exhausted)
                return False
        if not work.first_attempt and not self.vendor.capabilities.reconcile_uploads:
            with self.engine.begin() as conn:  # the doubt is on record before the second send
                ledger.event(
                    conn, actor=work.actor, kind="in_doubt", document_id=sub["document_id"],
                    submission_id=sub["id"],
                    message=f"an earlier upload to {self.profile} may have reached it, and "
                    f"{self.vendor.kind} offers no look-up: sending again, so the vendor may "
                    "process (and bill) this document twice",
                )  # fmt: skip
        crash_point("in_vendor_call", work.doc["filename"])
        self.pacer.wait()
        result = self.vendor.submit(work.document, first_attempt=work.first_attempt)
        self.breaker.success()
        work.first_attempt = False
        crash_point("after_upload_response")
        now = utcnow()
        first_poll = self.vendor.poll_interval
        if first_poll > 0:  # the vendor's processing ran while submit followed up the upload
            first_poll = max(0.0, first_poll - result.waited)
        processing = {
            "message": f"vendor reference {result.vendor_ref}",
            "vendor_ref": result.vendor_ref,
            "vendor_data": result.data,
            "polls": 0,
            "deadline_at": now + timedelta(seconds=self.settings.processing_timeout),
            "next_attempt_at": now + timedelta(seconds=first_poll) if first_poll else None,
        }
        if sub["charged_at"] is None:  # no budget: counted (for the cost report) as it went
            processing["charged_at"] = now
        work.keys.update(result.keys)
        if result.raw is not None:  # a synchronous vendor: the answer is the result
            self._store_result(work, result.raw, upload=processing)
            return False
        if first_poll > 0:  # the vendor needs time: give the submission back until then
            keep = self.keeps(first_poll)  # or keep it, for a moment
            if keep and self.vendor.capabilities.reconcile_uploads:
                # As when asking at once (below): the move to `processing` is written with the
                # poll's outcome. A crash before that repeats the upload, and the look-up
                # finds the first one.
                work.processing = processing
                self._keep(work, first_poll)
                return False
            with self.engine.begin() as conn:
                if keep:
                    self._move(conn, work, S.PROCESSING, **processing)
                else:
                    ledger.move_submission(
                        conn, sub, S.PROCESSING, owner=work.owner, actor=work.actor,
                        lease_owner=None, lease_expires_at=None, **processing,
                    )  # fmt: skip
                self._write_keys(conn, work)
            if keep:
                self._keep(work, first_poll)
            return False
        # Worth asking at once: the move to `processing` is written with the poll's outcome
        # (a crash before that repeats the upload, which `submit` makes safe).
        work.processing = processing
        return self._poll(work)

    def _commit_processing(self, conn: ledger.Connection, work: _Work) -> None:
        if work.processing is not None:
            self._move(conn, work, S.PROCESSING, **work.processing)
            work.processing = None
        self._write_keys(conn, work)

    def _write_keys(self, conn: ledger.Connection, work: _Work) -> None:
        if work.keys:
            ledger.add_keys(conn, self.profile, work.sub["id"], work.keys)
            work.keys = {}

    def _poll(self, work: _Work) -> bool:
        sub, owner = work.sub, work.owner
        if self._past_deadline(work):
            return False
        now = utcnow()
        pending = work.processing or {}
        deadline = pending.get("deadline_at", sub["deadline_at"])
        if deadline is not None and now > deadline:
            if sub["state"] == S.REVIEW:
                days = self.profile_settings.review_timeout
                reason = f"the review at the vendor was not finished within {days:g} days"
            else:
                reason = "the vendor did not finish processing before the deadline"
            self._give_up(sub, owner, work.actor, reason)
            return False
        ref = pending.get("vendor_ref", sub["vendor_ref"])
        data = pending.get("vendor_data", sub["vendor_data"]) or {}
        self.pacer.wait()
        result = self.vendor.poll(ref, data)
        self.breaker.success()
        if result.data is not None:
            data = result.data
        work.keys.update(result.keys)
        changes: dict[str, Any] = {"vendor_data": data}
        if result.vendor_ref is not None and result.vendor_ref != ref:
            ref = changes["vendor_ref"] = result.vendor_ref
        if result.status in (PollStatus.PROCESSING, PollStatus.REVIEW):
            self._wait(work, result, changes)
            return False
        if result.status == PollStatus.REJECTED:
            with self.engine.begin() as conn:
                self._commit_processing(conn, work)
                if len(changes) > 1:
                    conn.execute(
                        update(ledger.submissions)
                        .where(ledger.submissions.c.id == sub["id"])
                        .values(**changes)
                    )
            self._reject(sub, owner, work.actor, result.reason or "the vendor rejected it")
            return False
        crash_point("in_vendor_call", work.doc["filename"])
        self.pacer.wait()
        raw = self.vendor.fetch(ref, data, work.document)
        self.breaker.success()
        self._store_result(work, raw, changes=changes)
        return False

    def _wait(self, work: _Work, result: PollResult, changes: dict[str, Any]) -> None:
        """The vendor is still working, or waits for a person: poll again, backing off."""
        sub, now = work.sub, utcnow()
        review = result.status == PollStatus.REVIEW
        delay = result.retry_after or poll_delay(
            sub["polls"],
            first=max(self.vendor.poll_interval, 0.5),
            maximum=self.settings.review_poll_max
            if review or sub["state"] == S.REVIEW
            else self.settings.poll_backoff_max,
        )
        values: dict[str, Any] = {
            **changes,
            "polls": sub["polls"] + 1,
            "next_attempt_at": now + timedelta(seconds=delay),
            "lease_owner": None,
            "lease_expires_at": None,
        }
        with self.engine.begin() as conn:
            self._commit_processing(conn, work)
            if review and sub["state"] != S.REVIEW:
                self._move_to_review(conn, work, result.reason, values)
            elif not review and sub["state"] == S.REVIEW:
                ledger.move_submission(
                    conn, sub, S.PROCESSING, owner=work.owner, actor=work.actor,
                    message="the review is over; the vendor is processing the document again",
                    deadline_at=now + timedelta(seconds=self.settings.processing_timeout),
                    review_reason=None, **values,
                )  # fmt: skip
            else:
                if review and result.reason and result.reason != sub["review_reason"]:
                    values["review_reason"] = result.reason
                keep = not review and self.keeps(delay)
                if keep:  # still processing, back in a moment: the lease stays
                    values.update(
                        lease_owner=work.owner,
                        lease_expires_at=now + timedelta(seconds=self.settings.lease_seconds),
                    )
                written = conn.execute(
                    update(ledger.submissions)
                    .where(
                        ledger.submissions.c.id == sub["id"],
                        ledger.submissions.c.lease_owner == work.owner,
                    )
                    .values(**values, updated_at=now)
                ).rowcount
                if keep and written == 1:
                    sub.update(values, updated_at=now)
                    self._keep(work, delay)

    def _move_to_review(
        self, conn: ledger.Connection, work: _Work, reason: str | None, values: dict[str, Any]
    ) -> None:
        now = utcnow()
        reason = reason or "waiting for a person's review at the vendor"
        ledger.move_submission(
            conn, work.sub, S.REVIEW, owner=work.owner, actor=work.actor, message=reason,
            review_reason=reason, review_since=now,
            deadline_at=now + timedelta(days=self.profile_settings.review_timeout), **values,
        )  # fmt: skip

    def _to_review(self, conn: ledger.Connection, work: _Work, reason: str) -> None:
        """A result that needs a person's check at the vendor first: wait in `review`."""
        delay = max(self.vendor.poll_interval, 0.5)
        self._move_to_review(
            conn,
            work,
            reason,
            {
                "polls": 0,
                "next_attempt_at": utcnow() + timedelta(seconds=delay),
                "lease_owner": None,
                "lease_expires_at": None,
            },
        )

    def _store_result(
        self,
        work: _Work,
        raw: Any,
        *,
        upload: dict[str, Any] | None = None,
        changes: Mapping[str, Any] | None = None,
    ) -> None:
        """Store the vendor's result as a new extraction and, when it maps, carry it through
        to `done` (or `review`) in the same transaction. ``upload`` is the upload's record for
        a synchronous vendor (uploading → fetched); ``changes`` the poll's for the others."""
        sub = work.sub
        raw_json = _checked_json(raw)
        canonical, mapping_error = self._map(raw)
        if sub["reopened_at"] is not None and canonical is not None:
            if self._close_unchanged(work, canonical, changes or {}):
                return
        # A fetched result may be lost in a power cut and is fetched again; a synchronous
        # vendor's answer was paid for, so its record is durable (an offline one's was not).
        paid = upload is not None and not self.vendor.capabilities.offline
        engine = self.engine if paid else self.relaxed
        with ledger.begin(engine) as conn:  # its moves as one UPDATE
            if upload is not None:
                self._move(conn, work, S.FETCHED, **upload)
                self._write_keys(conn, work)
            else:
                self._commit_processing(conn, work)
                self._move(conn, work, S.FETCHED, polls=sub["polls"] + 1, **(changes or {}))
            extraction_id, version = conn.execute(
                INSERT_EXTRACTION,
                {
                    "submission_id": sub["id"],
                    "document_id": sub["document_id"],
                    "of_document": sub["document_id"],
                    "vendor": self.profile,
                    "raw": raw_json,
                    "fetched_at": utcnow(),
                    "normalized_at": utcnow() if canonical is not None else None,
                    "quality": canonical.quality if canonical is not None else {},
                    "review_reason": canonical.review if canonical is not None else None,
                },
            ).one()
            if canonical is not None:
                # Pure computation from here to `done`: one transaction, an event per move.
                self._store_canonical(conn, work, extraction_id, canonical)
                if canonical.review:
                    self._to_review(conn, work, canonical.review)
                else:
                    self._finish(conn, work, extraction_id, version)
        crash_point("after_fetch_commit")
        work.announce(self.hooks)
        # A place at the vendor is free (max_in_flight): an idle worker may start an upload
        # now rather than when its sleep ends; this one still has the delivery to make.
        self.hooks.wake_profile(self.profile)
        if mapping_error is not None:
            raise mapping_error
        if sub["state"] == S.DONE:
            log.info(
                "document %s extracted by %s: %d fields, %d line items",
                sub["document_id"],
                self.profile,
                len(canonical.fields) if canonical else 0,
                len(canonical.line_items) if canonical else 0,
            )
            self._deliver(work)

    def _close_unchanged(
        self, work: _Work, canonical: CanonicalResult, changes: Mapping[str, Any]
    ) -> bool:
        """A re-opened submission whose fetched result is what was stored before: back to
        `done` without a new version or export. False when it did change."""
        sub = work.sub
        with self.reader.connect() as conn:
            latest = conn.execute(LATEST_EXTRACTION, {"submission_id": sub["id"]}).first()
            before = load_result(conn, latest.id) if latest is not None else None
        if before is None or not same_result(before, canonical):
            return False
        with self.engine.begin() as conn:
            self._commit_processing(conn, work)
            ledger.move_submission(
                conn, sub, S.DONE, owner=work.owner, actor=work.actor,
                message="the vendor's result is unchanged; nothing to export again",
                completed_at=utcnow(), reopened_at=None, lease_owner=None,
                lease_expires_at=None, next_attempt_at=None, **changes,
            )  # fmt: skip
        return True

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
                .values(
                    normalized_at=utcnow(),
                    quality=canonical.quality,
                    review_reason=canonical.review,
                )
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
        self, conn: ledger.Connection, work: _Work, extraction_id: int, version: int
    ) -> None:
        """NORMALIZED → DONE, with the outbox rows for every destination, in the caller's
        transaction. ``version`` is the extraction's: after the document's first one, each
        delivery is a new version of the one made before."""
        sub = work.sub
        if sub["role"] == "shadow":
            fallbacks.promoted(conn, sub)  # promoted meanwhile: it exports after all
        elif self._moved_for_weakness(conn, work, extraction_id):
            return
        now = utcnow()
        work.outbox.extend(
            queue_exports(
                conn, sub, sha256=work.doc["sha256"], extraction_id=extraction_id,
                version=version, inline=self.hooks.inline, owner=work.owner,
                lease_expires_at=now + timedelta(seconds=self.settings.lease_seconds),
            )
        )  # fmt: skip
        work.extraction_id = extraction_id
        ledger.move_submission(
            conn, sub, S.DONE, owner=work.owner, actor=work.actor, completed_at=now,
            lease_owner=None, lease_expires_at=None, next_attempt_at=None, error=None,
            error_class=None, review_reason=None, reopened_at=None,
        )  # fmt: skip

    def _moved_for_weakness(self, conn: ledger.Connection, work: _Work, extraction_id: int) -> bool:
        """A result too weak for the route (``required``, ``min_confidence``) with a profile
        left in the chain: this submission ends `done` unexported and the document moves on.
        The last profile of the chain keeps what it read."""
        sub = work.sub
        if not fallbacks.chain(sub):
            return False
        route = self.hooks.route(work.doc["route"])
        if route is None or not fallbacks.moves_on(route, "low_confidence"):
            return False
        if not route.required and not route.min_confidence:
            return False
        result = work.canonical or load_result(conn, extraction_id)
        detail = fallbacks.weak_result(result, route)
        if detail is None:
            return False
        nxt = fallbacks.choose(conn, sub, self.kinds)
        if nxt is None:
            return False
        move = fallbacks.Move("low_confidence", detail)
        reason = f"moved to fallback {nxt.profile}: {detail}"
        ledger.move_submission(
            conn, sub, S.DONE, owner=work.owner, actor=work.actor, kind="moved", message=reason,
            completed_at=utcnow(), lease_owner=None, lease_expires_at=None,
            next_attempt_at=None, error=reason, error_class=move.trigger, review_reason=None,
            reopened_at=None,
        )  # fmt: skip
        work.moved.append((fallbacks.take(conn, sub, nxt, move, kinds=self.kinds,
                                          actor=work.actor), move))  # fmt: skip
        return True

    def _deliver(self, work: _Work) -> None:
        """After `done` is committed: push to inline destinations here, wake the other pools."""
        rows, work.outbox = work.outbox, []
        if rows and work.canonical is not None and work.extraction_id is not None:
            payload = export_payload(
                work.doc, work.sub, work.extraction_id, work.canonical, blobs=self.blobs
            )
            for row in rows:
                runner = self.hooks.inline[row["destination"]]
                if row["version"] != payload.version:
                    payload = dataclasses.replace(payload, version=row["version"])
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

    # ------------------------------------------------------------------ budgets

    def _over_budget(self, work: _Work, exhausted: budgets.Exhausted) -> None:
        """A document that does not fit in the profile's budget (nothing was sent): on to the
        next profile of its chain when the route moves on for ``budget`` and no earlier
        attempt may have reached this vendor; else held."""
        if work.first_attempt:
            spent = f"{exhausted.name} reached ({exhausted.used}/{exhausted.limit})"
            move = fallbacks.Move("budget", f"over budget: {spent}")
            if self._move_on(work.sub, S.DEAD, work.owner, work.actor, move):
                return
        self._hold(work, exhausted)

    def _hold(self, work: _Work, exhausted: budgets.Exhausted) -> None:
        """Give the submission back unsent (not failed, no attempt counted) until the period
        ends, or ``HOLD_RECHECK`` sooner; a reload that changes the profile re-checks at
        once. One warning per profile and period (whichever process runs out first)."""
        sub, now = work.sub, utcnow()
        wake = min(exhausted.until, now + timedelta(seconds=budgets.HOLD_RECHECK))
        reason = exhausted.describe()
        held = {
            "lease_owner": None, "lease_expires_at": None, "next_attempt_at": wake,
            "error": reason, "error_class": budgets.BUDGET,
        }  # fmt: skip
        with self.engine.begin() as conn:
            first = budgets.first_exhaustion(conn, exhausted, now)
            if sub["state"] == S.UPLOADING and work.first_attempt:  # queued until this claim
                ledger.move_submission(
                    conn, sub, S.QUEUED, owner=work.owner, actor=work.actor, kind="held",
                    message=reason, **held,
                )  # fmt: skip
            else:  # an earlier attempt may have reached the vendor: its state stays
                written = conn.execute(
                    update(ledger.submissions)
                    .where(
                        ledger.submissions.c.id == sub["id"],
                        ledger.submissions.c.lease_owner == work.owner,
                    )
                    .values(**held, updated_at=now)
                ).rowcount
                if written != 1:
                    raise ledger.LeaseLost(f"submission {sub['id']} moved or lease lost")
        work.first_attempt = False
        self.hooks.budget_held(self.profile, exhausted.name)
        if first:
            log.warning("profile %s: %s; documents wait", self.profile, reason)

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
        if isinstance(error, TransientError) and not isinstance(
            error, RateLimited | StoreUnavailable
        ):  # the vendor is out (a rate limit is the vendor answering)
            try:
                self.breaker.failure()
            except OperationalError as exc:
                log.warning("circuit of %s not updated, the store failed: %s", self.profile, exc)

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
        """A final failure; hands the document on to the next profile of its route's chain
        when the route moves on for it (``rejected``, ``dead``)."""
        trigger = "rejected" if state == S.REJECTED else "dead"
        move = fallbacks.Move(trigger, f"{trigger}: {reason}")
        if self._move_on(sub, state, owner, actor, move, error=reason, error_class=error_class):
            return
        with self.engine.begin() as conn:
            ledger.move_submission(
                conn, sub, state, owner=owner, actor=actor, message=reason, error=reason,
                error_class=error_class, completed_at=utcnow(), lease_owner=None,
                lease_expires_at=None, next_attempt_at=None,
            )  # fmt: skip
        if state == S.REJECTED and sub["role"] != "shadow":
            self.hooks.rejected(sub["document_id"], reason)

    def _move_on(
        self,
        sub: dict[str, Any],
        state: str,
        owner: str,
        actor: str,
        move: fallbacks.Move,
        *,
        error: str | None = None,
        error_class: str | None = None,
    ) -> bool:
        """End ``sub`` in ``state`` and hand its document to the next profile of its chain,
        when the route moves on for ``move``'s trigger and a profile is left; else False and
        nothing is written."""
        if not fallbacks.chain(sub) and sub["role"] != "shadow":
            return False
        with self.engine.begin() as conn:
            if sub["role"] == "shadow":
                fallbacks.promoted(conn, sub)
            nxt = self._next(conn, sub, move.trigger)
            if nxt is None:
                return False
            message = f"moved to fallback {nxt.profile}: {error or move.detail}"
            ledger.move_submission(
                conn, sub, state, owner=owner, actor=actor, message=message, kind="moved",
                error=error or message, error_class=error_class or move.trigger,
                completed_at=utcnow(), lease_owner=None, lease_expires_at=None,
                next_attempt_at=None,
            )  # fmt: skip
            nxt = fallbacks.take(conn, sub, nxt, move, kinds=self.kinds, actor=actor)
        self.hooks.moved(nxt, move)
        return True

    def _past_deadline(self, work: _Work) -> bool:
        """The route's ``deadline`` passed while this profile still works on the document:
        it moves on (and a late answer from here is ignored)."""
        sub = work.sub
        if not fallbacks.chain(sub) or sub["state"] == S.REVIEW or work.processing is not None:
            return False
        route = self.hooks.route(work.doc["route"])
        if route is None or route.deadline is None or not fallbacks.moves_on(route, "deadline"):
            return False
        waited = (utcnow() - sub["created_at"]).total_seconds()
        if waited < route.deadline:
            return False
        detail = fallbacks.overdue(self.profile, waited, route.deadline)
        move = fallbacks.Move("deadline", detail)
        return self._move_on(sub, S.DEAD, work.owner, work.actor, move)

    def _next(
        self, conn: ledger.Connection, sub: dict[str, Any], trigger: str
    ) -> fallbacks.Next | None:
        """The profile the document of ``sub`` moves on to for ``trigger``, if any."""
        if not fallbacks.chain(sub):
            return None
        route_name = conn.execute(
            select(documents.c.route).where(documents.c.id == sub["document_id"])
        ).scalar()
        if not fallbacks.moves_on(self.hooks.route(route_name), trigger):
            return None
        return fallbacks.choose(conn, sub, self.kinds)


def queue_exports(
    conn: ledger.Connection,
    sub: Mapping[str, Any],
    *,
    sha256: str,
    extraction_id: int,
    version: int,
    inline: Collection[str] = (),
    owner: str | None = None,
    lease_expires_at: datetime | None = None,
) -> list[dict[str, Any]]:
    """The outbox rows of one extraction, one per destination of ``sub``; ``version`` is the
    extraction's: after the document's first one, each delivery is a new version of the one
    made before. Rows for ``inline`` destinations are leased to ``owner`` (the vendor worker
    pushes them itself) and returned."""
    destinations = list(sub["destinations"] or [])
    if version > 1:
        keys = delivery_keys(conn, sub["document_id"], sha256, destinations)
        versions = next_delivery_versions(conn, list(keys.values()))
    else:
        keys = {name: delivery_key(sub["document_id"], sha256, name) for name in destinations}
        versions = {}
    now = utcnow()
    leased = []
    for destination in destinations:
        mine = destination in inline and owner is not None
        key = keys[destination]
        row = {
            "document_id": sub["document_id"],
            "submission_id": sub["id"],
            "extraction_id": extraction_id,
            "destination": destination,
            "idempotency_key": key,
            "version": versions.get(key, 1),
            "state": "pending",
            "attempts": 0,
            "created_at": now,
            "lease_owner": owner if mine else None,
            "lease_expires_at": lease_expires_at if mine else None,
        }
        row["id"] = conn.execute(INSERT_DELIVERY, row).scalar_one()
        if mine:
            leased.append(row)
    return leased


def delivery_key(document_id: int, sha256: str, destination: str) -> str:
    """The idempotency key of a document's export to one destination: every version of it
    carries the same key, so the destination updates what the first one made. A prefix of the
    document's hash makes it unique beyond this store: a fresh store (a reinstall, a second
    docrelay on the same ERP) counts documents from 1 again, and its keys must not find the
    records another one made."""
    return f"docrelay-{document_id}-{sha256[:8]}-{destination}"


def delivery_keys(
    conn: ledger.Connection, document_id: int, sha256: str, destinations: list[str]
) -> dict[str, str]:
    """Each destination's key for a document exported before: the one its deliveries carry
    (stores before 0.6 made keys without the hash), else a new one."""
    dl = ledger.deliveries
    known = dict(
        conn.execute(
            select(dl.c.destination, dl.c.idempotency_key)
            .where(dl.c.document_id == document_id, dl.c.destination.in_(destinations))
            .order_by(dl.c.id.desc())
        ).all()
    )
    return {
        name: known.get(name) or delivery_key(document_id, sha256, name) for name in destinations
    }


def next_delivery_versions(conn: ledger.Connection, keys: list[str]) -> dict[str, int]:
    """The version each key's next delivery gets; older ones that have not gone out yet are
    superseded by it (they would only push what the new one pushes, or older)."""
    if not keys:
        return {}
    found = dict(conn.execute(DELIVERY_VERSIONS, {"keys": keys}).all())
    conn.execute(SUPERSEDE, {"keys": keys})
    return {key: (found.get(key) or 0) + 1 for key in keys}


def same_result(a: CanonicalResult, b: CanonicalResult) -> bool:
    """Two results hold the same values (provenance such as confidence aside)."""

    def values(result: CanonicalResult) -> Any:
        return (
            sorted((f.name, f.value_text or "") for f in result.fields),
            [
                (li.line_no, li.description, li.quantity, li.unit_price, li.net_amount,
                 li.tax_rate, li.total_amount, li.item_code, sorted(li.extra.items()))
                for li in sorted(result.line_items, key=lambda li: li.line_no)
            ],
        )  # fmt: skip

    return bool(values(a) == values(b))


def _bbox_text(bbox: Any) -> str | None:
    return f"{bbox.left},{bbox.top},{bbox.right},{bbox.bottom}" if bbox else None


def write_canonical(
    conn: ledger.Connection, extraction_id: int, document_id: int, result: CanonicalResult
) -> None:
    """Insert the fields and line items of one extraction (executemany, one round trip each)."""
    if result.fields:
        conn.execute(
            INSERT_FIELDS,
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
                    "bbox": _bbox_text(f.bbox),
                    "page_width": f.bbox.page_width if f.bbox else None,
                    "page_height": f.bbox.page_height if f.bbox else None,
                    "vendor_label": f.vendor_label,
                    "vendor_id": f.vendor_id,
                    "corrected": False,
                }
                for f in result.fields
            ],
        )
    if result.line_items:
        conn.execute(
            INSERT_LINE_ITEMS,
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
                    "provenance": {name: provenance_json(p) for name, p in li.provenance.items()},
                }
                for li in result.line_items
            ],
        )


def provenance_json(p: Provenance) -> dict[str, Any]:
    """A line-item value's provenance as stored (JSON), keys with no value left out."""
    box = p.bbox
    stored = {
        "confidence": p.confidence,
        "page": p.page,
        "bbox": [box.left, box.top, box.right, box.bottom] if box else None,
        "page_width": box.page_width if box else None,
        "page_height": box.page_height if box else None,
        "vendor_label": p.vendor_label,
        "raw_text": p.raw_text,
    }
    return {key: value for key, value in stored.items() if value is not None}


def _checked_json(raw: Any) -> RawJSON:
    """The vendor result as JSON text, serialised once for the check and the store alike.

    A result that cannot be stored as JSON is the connector's bug: fail loudly."""
    try:
        return RawJSON(jsonio.dumps(raw))
    except (TypeError, ValueError) as exc:
        raise TerminalError(f"the vendor's result is not JSON-serialisable: {exc}") from exc
