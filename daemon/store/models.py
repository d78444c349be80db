"""Tables of the store. The views in ``views.py`` over them are the public SQL interface.

States are persisted enums (stored as plain strings so people can query them without a lookup
table); the allowed transitions live in ``daemon.pipeline.states``.
"""

from __future__ import annotations

import enum
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Date,
    DateTime,
    Double,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    Numeric,
    String,
    Text,
    TypeDecorator,
    false,
    text,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite stores them naive)."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


AMOUNT = Numeric(18, 4)
"""Exact decimals for money and quantities: never floats."""


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map = {
        datetime: UTCDateTime(),
        dict[str, Any]: JSON(),
        Decimal: AMOUNT,
        date: Date(),
    }


class SubmissionState(enum.StrEnum):
    QUEUED = "queued"
    UPLOADING = "uploading"
    PROCESSING = "processing"
    FETCHED = "fetched"
    NORMALIZED = "normalized"
    REVIEW = "review"
    DONE = "done"
    FAILED = "failed"
    DEAD = "dead"
    REJECTED = "rejected"


class DeliveryState(enum.StrEnum):
    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"
    DEAD = "dead"
    SUPERSEDED = "superseded"
    """A newer version of the same delivery was queued before this one went out."""


class FeedbackState(enum.StrEnum):
    PENDING = "pending"
    SENT = "sent"
    FAILED = "failed"
    DEAD = "dead"
    """Gave up after transient failures."""
    REFUSED = "refused"
    """The vendor refused it for good (its reason is the error); ``docrelay retry`` takes it."""


ID_MAX = 2**31 - 1
"""The largest id an ``Integer`` primary key holds on every store (PostgreSQL's and MariaDB's
``INTEGER``): a larger one, from a URL or a command line, names no row and must not reach the
database, which would fail on it (SQLite past 2**63, the others past this)."""


class Document(Base):
    """One arrival of bytes. The same bytes arriving again is a new row marked ``duplicate_of``."""

    __tablename__ = "documents"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    sha256: Mapped[str] = mapped_column(String(64), index=True)
    filename: Mapped[str] = mapped_column(String(1024))
    mime_type: Mapped[str] = mapped_column(String(255))
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    pages: Mapped[int | None]
    page_sizes: Mapped[list[list[float]] | None] = mapped_column(JSON)
    """``[width, height]`` of each page in PDF points (at most the first 500)."""
    source: Mapped[str] = mapped_column(String(255))
    source_ref: Mapped[str | None] = mapped_column(String(2048))
    metadata_: Mapped[dict[str, Any]] = mapped_column("metadata", default=dict)
    received_at: Mapped[datetime] = mapped_column(default=utcnow)
    released_at: Mapped[datetime | None]
    """When the source released the original (moved/deleted/flagged); NULL = still to do."""
    duplicate_of: Mapped[int | None] = mapped_column(ForeignKey("documents.id"))
    route: Mapped[str | None] = mapped_column(String(255))
    intake_state: Mapped[str] = mapped_column(String(16), default="accepted")
    """`accepted`, `duplicate`, `rejected` (at intake) or `unrouted` (no route matched)."""
    error: Mapped[str | None] = mapped_column(Text)
    """Why nothing was sent (no route matched, rejected at intake)."""

    __table_args__ = (Index(None, "source", "source_ref"),)


class Submission(Base):
    """One document sent to one vendor profile, walking the state machine."""

    __tablename__ = "submissions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    document_id: Mapped[int] = mapped_column(ForeignKey("documents.id"), index=True)
    profile: Mapped[str] = mapped_column(String(255))
    vendor_kind: Mapped[str] = mapped_column(String(64))
    role: Mapped[str] = mapped_column(String(16), default="primary")
    """`primary`, `fallback` (the document moved on to it along the route's chain) or
    `shadow` (the same document read by another vendor for comparison: never exported)."""
    shadow_feedback: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    """A shadow of a route with ``shadow_feedback``: corrections of the primary's result are
    sent to this vendor too."""
    state: Mapped[str] = mapped_column(String(16))
    resume_state: Mapped[str | None] = mapped_column(String(16))
    """For `failed`: the state the retry resumes from."""
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    polls: Mapped[int] = mapped_column(Integer, default=0)
    crashes: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    """Runs of this submission's steps that the worker process did not survive (killed, out
    of memory, a crash in a parser): a poison pill goes `dead` after ``max_attempts``. Set
    when a dead worker's lease is recovered, raised before each run of a suspect, and back
    to 0 when a run ends normally."""
    next_attempt_at: Mapped[datetime | None]
    deadline_at: Mapped[datetime | None]
    lease_owner: Mapped[str | None] = mapped_column(String(255))
    lease_expires_at: Mapped[datetime | None]
    vendor_ref: Mapped[str | None] = mapped_column(String(1024), index=True)
    vendor_data: Mapped[dict[str, Any]] = mapped_column(default=dict)
    destinations: Mapped[list[str]] = mapped_column(JSON, default=list)
    fallback: Mapped[str | None] = mapped_column(String(255))
    """The profile the document moves on to when this one hits a trigger of its route's
    ``fallback_on``; None at the end of the chain."""
    later_fallbacks: Mapped[list[str] | None] = mapped_column(JSON)
    """The rest of the chain after ``fallback``, in order (None: none)."""
    error: Mapped[str | None] = mapped_column(Text)
    error_class: Mapped[str | None] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    completed_at: Mapped[datetime | None]
    purged_at: Mapped[datetime | None]
    """When the document was deleted at the vendor after the profile's retention."""
    review_reason: Mapped[str | None] = mapped_column(Text)
    """In `review`: what the vendor waits for a person to do (confirm a split, check values)."""
    review_since: Mapped[datetime | None]
    """When the submission last went into `review`."""
    reopened_at: Mapped[datetime | None]
    """When a finished submission was re-opened because the vendor said its result changed;
    the next fetch is compared with the result stored before."""
    charged_at: Mapped[datetime | None]
    """When this submission was counted as sent to the vendor (its budget reserved, once):
    what ``docrelay report cost`` counts and bills by."""

    __table_args__ = (
        Index(None, "profile", "state", "next_attempt_at"),
        Index(None, "document_id", "profile", unique=True),
    )


class Extraction(Base):
    """A vendor's raw result, verbatim, and the time it was normalised into fields."""

    __tablename__ = "extractions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    submission_id: Mapped[int] = mapped_column(ForeignKey("submissions.id"), index=True)
    document_id: Mapped[int] = mapped_column(ForeignKey("documents.id"), index=True)
    vendor: Mapped[str] = mapped_column(String(255))
    raw: Mapped[Any] = mapped_column(JSON)
    fetched_at: Mapped[datetime] = mapped_column(default=utcnow)
    normalized_at: Mapped[datetime | None]
    version: Mapped[int] = mapped_column(Integer, default=1, server_default="1")
    """1 for a document's first extraction; each later one (after review, after the vendor
    said its result changed) counts up."""
    quality: Mapped[dict[str, Any]] = mapped_column(default=dict, server_default="{}")
    """The vendor's own quality flags (e.g. all_required_fields_found), as it gave them."""
    review_reason: Mapped[str | None] = mapped_column(Text)
    """Set when this result waits for a person's review before it counts (HITL)."""


class FieldRow(Base):
    __tablename__ = "fields"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    extraction_id: Mapped[int] = mapped_column(ForeignKey("extractions.id"), index=True)
    document_id: Mapped[int] = mapped_column(ForeignKey("documents.id"), index=True)
    name: Mapped[str] = mapped_column(String(255))
    value_text: Mapped[str | None] = mapped_column(Text)
    raw_text: Mapped[str | None] = mapped_column(Text)
    value_number: Mapped[Decimal | None]
    value_date: Mapped[date | None]
    currency: Mapped[str | None] = mapped_column(String(3))
    confidence: Mapped[float | None] = mapped_column(Float)
    page: Mapped[int | None]
    bbox: Mapped[str | None] = mapped_column(String(128))
    """`left,top,right,bottom` in PDF points, origin top-left of the page."""
    page_width: Mapped[float | None] = mapped_column(Float)
    """The page's size in PDF points, so a box can be drawn on a rendering of any size."""
    page_height: Mapped[float | None] = mapped_column(Float)
    vendor_label: Mapped[str | None] = mapped_column(String(255))
    vendor_id: Mapped[str | None] = mapped_column(String(255))
    """The vendor's id of the value (a datapoint id), for feedback."""
    corrected: Mapped[bool] = mapped_column(Boolean, default=False)
    vendor_value_text: Mapped[str | None] = mapped_column(Text)
    """For a corrected row: the vendor's own value before the first correction (NULL: the
    vendor had none, the row was added by the correction), so accuracy can be measured."""
    vendor_value_number: Mapped[Decimal | None]
    vendor_value_date: Mapped[date | None]
    vendor_value_kept: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    """True once ``vendor_value_*`` hold the vendor's answer; a row corrected before they
    existed (revision 0012) has False: its vendor answer is unknown."""


class LineItemRow(Base):
    __tablename__ = "line_items"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    extraction_id: Mapped[int] = mapped_column(ForeignKey("extractions.id"), index=True)
    document_id: Mapped[int] = mapped_column(ForeignKey("documents.id"), index=True)
    line_no: Mapped[int]
    description: Mapped[str | None] = mapped_column(Text)
    quantity: Mapped[Decimal | None]
    unit_price: Mapped[Decimal | None]
    net_amount: Mapped[Decimal | None]
    tax_rate: Mapped[Decimal | None]
    total_amount: Mapped[Decimal | None]
    item_code: Mapped[str | None] = mapped_column(String(255))
    extra: Mapped[dict[str, Any]] = mapped_column(default=dict)
    provenance: Mapped[dict[str, Any]] = mapped_column(default=dict, server_default="{}")
    """Per line-item field: confidence, page, bbox, page size, vendor label, raw text."""


class Delivery(Base):
    """The outbox: one extraction to one destination, pushed with an idempotency key."""

    __tablename__ = "deliveries"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    document_id: Mapped[int] = mapped_column(ForeignKey("documents.id"), index=True)
    submission_id: Mapped[int] = mapped_column(ForeignKey("submissions.id"))
    extraction_id: Mapped[int] = mapped_column(ForeignKey("extractions.id"))
    destination: Mapped[str] = mapped_column(String(255))
    idempotency_key: Mapped[str] = mapped_column(String(255))
    """Stable per (document, destination): every version of the export carries it."""
    version: Mapped[int] = mapped_column(Integer, default=1, server_default="1")
    """1 for the first export; a re-extraction or a correction exports version 2, 3, … of the
    same delivery, which the destination applies as an update of what it made."""
    state: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime | None]
    lease_owner: Mapped[str | None] = mapped_column(String(255))
    lease_expires_at: Mapped[datetime | None]
    downstream_ref: Mapped[str | None] = mapped_column(String(2048))
    downstream_data: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    """What the destination said of the record beyond its reference (``DeliveryReceipt.data``)."""
    in_doubt_at: Mapped[datetime | None]
    """Set before a push to a destination that can look a key up, cleared with its outcome:
    a push interrupted by a crash or an ambiguous timeout is looked up before it is repeated."""
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    delivered_at: Mapped[datetime | None]
    outcome: Mapped[str | None] = mapped_column(String(16))
    """What became of the record downstream once final (``DownstreamState``: posted or
    rejected), for destinations that can tell; null while unknown or still open."""
    outcome_reason: Mapped[str | None] = mapped_column(Text)
    outcome_data: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    """The record's final values as the destination read them back (posted invoices)."""
    outcome_at: Mapped[datetime | None]
    followed_at: Mapped[datetime | None]
    """When the destination was last asked about the record (the follow job's clock)."""

    __table_args__ = (
        Index(None, "destination", "state", "next_attempt_at"),
        Index(None, "idempotency_key", "version", unique=True),
    )


class FeedbackKind(enum.StrEnum):
    CORRECTION = "correction"
    """A field value changed on our side (CLI, ERP): the vendor learns the right value."""
    EXPORT_STATUS = "export_status"
    """What happened downstream (exported / failed_export), shown in the vendor's UI."""


class Feedback(Base):
    """Messages to a vendor driven by a committed row: corrections and export status."""

    __tablename__ = "feedback"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    document_id: Mapped[int] = mapped_column(ForeignKey("documents.id"), index=True)
    submission_id: Mapped[int] = mapped_column(ForeignKey("submissions.id"), index=True)
    profile: Mapped[str] = mapped_column(String(255))
    kind: Mapped[str] = mapped_column(String(32), default=FeedbackKind.CORRECTION)
    field: Mapped[str | None] = mapped_column(String(255))
    correction: Mapped[str | None] = mapped_column(String(16))
    """For corrections: confirm, correct, absent or add (``connectors.base.CorrectionKind``)."""
    vendor_label: Mapped[str | None] = mapped_column(String(255))
    """The vendor's own name of the field (schema id, label) as the extraction had it."""
    old_value: Mapped[str | None] = mapped_column(Text)
    new_value: Mapped[str | None] = mapped_column(Text)
    message: Mapped[str | None] = mapped_column(Text)
    origin: Mapped[str] = mapped_column(String(255), default="cli")
    state: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime | None]
    lease_owner: Mapped[str | None] = mapped_column(String(255))
    lease_expires_at: Mapped[datetime | None]
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    sent_at: Mapped[datetime | None]

    __table_args__ = (Index(None, "profile", "state", "next_attempt_at"),)


class CorrectionAction(enum.StrEnum):
    """What a row of ``docrelay_corrections`` says of its field."""

    CORRECT = "correct"
    """``value`` is the right value (an ``add`` when the extraction had none)."""
    CONFIRM = "confirm"
    """The extracted value is right; ``value`` is not read."""
    ABSENT = "absent"
    """The field is not in the document; ``value`` is not read."""


class CorrectionRequestState(enum.StrEnum):
    PENDING = "pending"
    """Inserted, not picked up yet (or waiting for the document's result: see ``reason``)."""
    APPLIED = "applied"
    REFUSED = "refused"
    """Not applied, for good; ``reason`` says why (an unknown field, a value of the wrong type)."""


class CorrectionRequest(Base):
    """A correction an ERP job or a person inserts, with just ``document_id``, ``field`` and
    ``value``. The daemon picks pending rows up, applies them as ``docrelay correct`` would, and
    marks each applied or refused (with the reason) in the same transaction; rows are never
    deleted. No foreign key: a row naming an unknown document is refused with a reason
    rather than failing the ERP's insert on some backends only."""

    __tablename__ = "docrelay_corrections"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    document_id: Mapped[int] = mapped_column(Integer)
    field: Mapped[str] = mapped_column(String(255))
    """A canonical field name (``total_amount``) or ``extra.<label>``."""
    value: Mapped[str | None] = mapped_column(Text)
    action: Mapped[str] = mapped_column(
        String(16), default=CorrectionAction.CORRECT, server_default=CorrectionAction.CORRECT
    )
    note: Mapped[str | None] = mapped_column(Text)
    """Free text for the document's history (who asked, why)."""
    created_at: Mapped[datetime] = mapped_column(
        default=utcnow, server_default=text("CURRENT_TIMESTAMP")
    )
    """When the row was inserted (the database's clock when the insert leaves it out)."""
    state: Mapped[str] = mapped_column(
        String(16),
        default=CorrectionRequestState.PENDING,
        server_default=CorrectionRequestState.PENDING,
    )
    reason: Mapped[str | None] = mapped_column(Text)
    """Why the row was refused, or what a pending row waits for."""
    applied_at: Mapped[datetime | None]
    """When the row was applied or refused."""

    __table_args__ = (Index(None, "state", "id"),)


class SubmissionKey(Base):
    """A vendor's other names for a submission (a review id, its own document id), so a
    webhook that names only those finds the submission."""

    __tablename__ = "submission_keys"

    profile: Mapped[str] = mapped_column(String(255), primary_key=True)
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(String(512), primary_key=True)
    submission_id: Mapped[int] = mapped_column(ForeignKey("submissions.id"), index=True)


class Event(Base):
    """Append-only audit trail: who did what to which row, when and why."""

    __tablename__ = "events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[datetime] = mapped_column(default=utcnow)
    document_id: Mapped[int | None] = mapped_column(ForeignKey("documents.id"), index=True)
    submission_id: Mapped[int | None] = mapped_column(ForeignKey("submissions.id"))
    delivery_id: Mapped[int | None] = mapped_column(ForeignKey("deliveries.id"))
    actor: Mapped[str] = mapped_column(String(255))
    kind: Mapped[str] = mapped_column(String(64))
    from_state: Mapped[str | None] = mapped_column(String(16))
    to_state: Mapped[str | None] = mapped_column(String(16))
    message: Mapped[str | None] = mapped_column(Text)


class ProfileHealth(Base):
    """Per vendor profile / destination health that must survive restarts (needs re-auth)."""

    __tablename__ = "connector_health"

    name: Mapped[str] = mapped_column(String(255), primary_key=True)
    state: Mapped[str] = mapped_column(String(32))
    """`ok`, `auth_failed`."""
    reason: Mapped[str | None] = mapped_column(Text)
    since: Mapped[datetime] = mapped_column(default=utcnow)


class CircuitBreaker(Base):
    """A vendor profile's circuit breaker, in the store so every process on it agrees: after
    ``breaker_failures`` transient failures in a row the profile is `open` (claims nothing)
    until ``retry_at``, then `half_open` (one probe claim, which holds it until ``retry_at``
    again); the probe's success closes it, a failure opens it again."""

    __tablename__ = "circuit_breakers"

    profile: Mapped[str] = mapped_column(String(255), primary_key=True)
    state: Mapped[str] = mapped_column(String(16), default="closed")
    """`closed`, `open` or `half_open`."""
    failures: Mapped[int] = mapped_column(Integer, default=0)
    """Transient failures of vendor calls in a row (a success sets it back to 0)."""
    opened_at: Mapped[datetime | None]
    """When this outage began (its first opening; a failed probe keeps it)."""
    retry_at: Mapped[datetime | None]
    """Open: when the next probe may go; half-open: when a probe that never reported is
    given up and another one may go."""
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class BudgetUsage(Base):
    """What a vendor profile used in one UTC day or month: documents and pages reserved at
    upload by guarded UPDATEs (``used + n <= limit``), so processes sharing the store never
    go over a budget together."""

    __tablename__ = "budget_usage"

    profile: Mapped[str] = mapped_column(String(255), primary_key=True)
    period: Mapped[str] = mapped_column(String(8), primary_key=True)
    """`day` or `month`."""
    starts_at: Mapped[datetime] = mapped_column(primary_key=True)
    """The period's first moment (UTC midnight, or the first of the month)."""
    documents: Mapped[int] = mapped_column(Integer, default=0)
    pages: Mapped[int] = mapped_column(Integer, default=0)
    documents_limit: Mapped[int | None]
    """The documents limit as the last reservation saw it (for status and metrics)."""
    pages_limit: Mapped[int | None]
    exhausted_at: Mapped[datetime | None]
    """When a document was first held in this period (reset by the next reservation): the
    one warning per profile and period is logged by whoever sets it."""
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class RequestPace(Base):
    """The next free slot of a vendor profile's shared ``requests_per_second``: each call
    takes one by a single UPDATE and waits until it, so processes on one store share the rate."""

    __tablename__ = "request_pace"

    profile: Mapped[str] = mapped_column(String(255), primary_key=True)
    next_slot: Mapped[float] = mapped_column(Double, default=0.0)
    """Unix seconds of the next free slot (a double: a 4-byte float would round to minutes)."""


class SourceState(Base):
    """What a source remembers between runs, e.g. a mailbox folder's UIDVALIDITY and highest
    UID. In the store rather than a file so that any daemon sharing the store can take over."""

    __tablename__ = "source_state"

    source: Mapped[str] = mapped_column(String(255), primary_key=True)
    key: Mapped[str] = mapped_column(String(512), primary_key=True)
    value: Mapped[dict[str, Any]] = mapped_column(default=dict)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class SourceLease(Base):
    """One process at a time works a source account (a mailbox): two daemons on one store
    never fetch and post-process the same messages."""

    __tablename__ = "source_leases"

    name: Mapped[str] = mapped_column(String(255), primary_key=True)
    owner: Mapped[str] = mapped_column(String(255))
    expires_at: Mapped[datetime]


class Process(Base):
    """One ``docrelay run`` on this store, alive while its heartbeat is fresh.

    Liveness is this row, not a host name and pid (containers share host names, pids are
    reused): a process whose heartbeat is older than its ``lost_after`` is lost, and its
    leases (work rows, sources, periodic jobs) are given to the others."""

    __tablename__ = "processes"

    id: Mapped[str] = mapped_column(String(255), primary_key=True)
    """The lease owner of everything this process holds."""
    host: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int] = mapped_column(Integer)
    version: Mapped[str] = mapped_column(String(64))
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    heartbeat_at: Mapped[datetime] = mapped_column(default=utcnow)
    lost_after: Mapped[float] = mapped_column(Double)
    """Seconds without a heartbeat after which the others take this process for dead."""
    ended_at: Mapped[datetime | None]
    ended: Mapped[str | None] = mapped_column(String(16))
    """`stopped` (a clean stop) or `lost` (its heartbeat stopped)."""

    __table_args__ = (Index(None, "ended", "heartbeat_at"),)


class StoreInfo(Base):
    """Facts about the store itself that every process must agree on (the blob directory's
    token: processes sharing a store must share its blob directory)."""

    __tablename__ = "store_info"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(String(255))
