"""The canonical model and the three connector contracts: Source, Vendor, Destination.

The engine (``daemon``) only ever talks to connectors through these classes, so a new vendor or
destination plugs in by implementing one of them and registering it (see ``registry``).
"""

from __future__ import annotations

import abc
import enum
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import IO, Annotated, Any, ClassVar, Protocol

from pydantic import AfterValidator, BaseModel, ConfigDict

# --------------------------------------------------------------------------- canonical model

DOCUMENT_FIELDS: tuple[str, ...] = (
    "document_type",
    "invoice_number",
    "issue_date",
    "due_date",
    "currency",
    "total_amount",
    "net_amount",
    "tax_amount",
    "supplier_name",
    "supplier_vat_id",
    "supplier_iban",
    "supplier_bic",
    "customer_name",
    "customer_vat_id",
    "order_number",
    "payment_reference",
    "payment_terms",
)
"""Canonical document-level field names; anything else a vendor returns is kept as an extra."""

LINE_ITEM_FIELDS: tuple[str, ...] = (
    "description",
    "quantity",
    "unit_price",
    "net_amount",
    "tax_rate",
    "total_amount",
    "item_code",
)

AMOUNT_FIELDS = frozenset({"total_amount", "net_amount", "tax_amount"})
DATE_FIELDS = frozenset({"issue_date", "due_date"})


@dataclass(frozen=True, slots=True)
class BBox:
    """A box on a page in PDF points, origin top-left: (left, top, right, bottom)."""

    left: float
    top: float
    right: float
    bottom: float


@dataclass(slots=True)
class FieldValue:
    """One extracted value with its provenance.

    ``name`` is a canonical name from ``DOCUMENT_FIELDS`` or, for values the mapping does not
    know, ``extra.<vendor label>``. Exactly the ``value_*`` attribute matching the field's kind is
    set when the raw text could be normalised; ``value_text`` always holds a readable form.
    """

    name: str
    value_text: str | None
    raw_text: str | None = None
    value_number: Decimal | None = None
    value_date: date | None = None
    currency: str | None = None
    confidence: float | None = None
    page: int | None = None
    bbox: BBox | None = None
    vendor_label: str | None = None


@dataclass(slots=True)
class LineItem:
    """One invoice line; amounts are exact decimals, ``tax_rate`` is a percentage (19 = 19 %)."""

    line_no: int
    description: str | None = None
    quantity: Decimal | None = None
    unit_price: Decimal | None = None
    net_amount: Decimal | None = None
    tax_rate: Decimal | None = None
    total_amount: Decimal | None = None
    item_code: str | None = None
    extra: dict[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class CanonicalResult:
    """A vendor's extraction after mapping: what the SQL store and the exports hold."""

    fields: list[FieldValue] = field(default_factory=list)
    line_items: list[LineItem] = field(default_factory=list)

    def get(self, name: str) -> FieldValue | None:
        """The first value of a field, or None."""
        for value in self.fields:
            if value.name == name:
                return value
        return None


# --------------------------------------------------------------------------- documents


@dataclass(frozen=True, slots=True)
class DocumentRef:
    """What a vendor gets to see of a stored document.

    ``open`` streams the bytes from the blob store; connectors must not read a large document whole
    into memory when the vendor accepts a stream.
    """

    id: int
    sha256: str
    filename: str
    mime_type: str
    size_bytes: int
    pages: int | None
    received_at: datetime
    metadata: Mapping[str, Any]
    path: Path
    """The blob's path in the content-addressed store (read-only)."""

    def open(self) -> IO[bytes]:
        """Open the blob for reading."""
        return self.path.open("rb")


# --------------------------------------------------------------------------- settings

SettingsConfig = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)


def _not_blank(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be empty")
    return value


SourceName = Annotated[str, AfterValidator(_not_blank)]
"""A source's name (recorded with every document as where it came from): never blank."""


class ConnectorSettings(BaseModel):
    """Base of every connector's settings: unknown keys are errors, a `kind` selects the class."""

    model_config = SettingsConfig

    kind: str
    """Which connector implements this entry (see `docrelay connectors`)."""


# --------------------------------------------------------------------------- vendors


class PollStatus(enum.StrEnum):
    PROCESSING = "processing"
    READY = "ready"
    REJECTED = "rejected"


@dataclass(slots=True)
class SubmitResult:
    """What a vendor answered to an upload.

    ``vendor_ref`` identifies the document at the vendor (document id, annotation URL, …);
    ``data`` holds anything else the connector needs later and is persisted verbatim as JSON.
    """

    vendor_ref: str
    data: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class PollResult:
    """The vendor's processing status. ``retry_after`` hints when to poll again (seconds)."""

    status: PollStatus
    reason: str | None = None
    retry_after: float | None = None
    data: dict[str, Any] | None = None
    """Replaces the submission's stored vendor data when not None."""


@dataclass(frozen=True, slots=True)
class VendorCapabilities:
    webhooks: bool = False
    """The vendor can call us back; polling stays as the fallback."""
    feedback: bool = False
    """`send_feedback` does something."""
    export_status: bool = False
    """`report_delivery` tells the vendor what happened downstream."""
    reconcile_uploads: bool = False
    """`submit` looks up an earlier upload of the same document before uploading again."""
    poll_interval: float = 5.0
    """First delay between status polls, in seconds; later polls back off from it."""


@dataclass(frozen=True, slots=True)
class WebhookHint:
    """A verified webhook call, reduced to "go and look at this vendor reference"."""

    vendor_ref: str
    event: str
    delivery_id: str | None = None
    """The vendor's id for this call, for de-duplicating retries."""


@dataclass(frozen=True, slots=True)
class Correction:
    """A field value corrected (or confirmed, when ``value`` equals the extracted one) by us."""

    field: str
    value: str | None
    vendor_label: str | None = None


@dataclass(slots=True)
class ConnectorContext:
    """What the engine lends every connector."""

    name: str
    """The configured name of this profile / destination / source."""
    data_dir: Path
    """A private directory this connector may use for state files."""
    clock: Callable[[], float]
    """Monotonic seconds; injectable so tests need no real sleep."""


class Vendor(abc.ABC):
    """A document-AI vendor profile.

    Every method runs in a worker thread and may block on I/O. Errors MUST be raised as the
    classes in ``connectors.errors``; anything else is treated as transient and logged with its
    traceback.
    """

    kind: ClassVar[str]
    settings_model: ClassVar[type[ConnectorSettings]]
    capabilities: ClassVar[VendorCapabilities] = VendorCapabilities()

    def __init__(self, settings: ConnectorSettings, context: ConnectorContext) -> None:
        self.settings = settings
        self.context = context

    @abc.abstractmethod
    def submit(self, document: DocumentRef, *, first_attempt: bool = False) -> SubmitResult:
        """Upload the document.

        MUST be safe to repeat for the same document: a connector whose vendor can carry our
        document id looks up an earlier upload before sending the bytes again. The engine sets
        ``first_attempt`` only when no earlier upload can exist (the submission was queued until
        this very claim); the look-up MAY be skipped then.
        """

    @abc.abstractmethod
    def poll(self, vendor_ref: str, data: Mapping[str, Any]) -> PollResult:
        """Ask how processing is going. MUST NOT change anything at the vendor."""

    @abc.abstractmethod
    def fetch(self, vendor_ref: str, data: Mapping[str, Any], document: DocumentRef) -> Any:
        """Return the vendor's result as JSON-serialisable data, verbatim.

        MUST NOT change anything at the vendor. The engine stores what this returns unchanged.
        """

    @abc.abstractmethod
    def normalize(self, raw: Any) -> CanonicalResult:
        """Map a result from ``fetch`` to canonical fields. MUST be pure: no I/O."""

    def parse_webhook(self, headers: Mapping[str, str], body: bytes) -> list[WebhookHint]:
        """Verify a webhook call and say which references to look at.

        MUST verify the vendor's signature with a constant-time compare and raise
        ``WebhookRejected`` on any doubt. MUST NOT trust the payload's content beyond the hint.
        """
        from connectors.errors import WebhookRejected

        raise WebhookRejected(f"{self.kind} does not send webhooks", status_code=404)

    def send_feedback(
        self, vendor_ref: str, data: Mapping[str, Any], corrections: list[Correction]
    ) -> None:
        """Send corrections/confirmations back. MUST be safe to repeat."""

    def report_delivery(
        self, vendor_ref: str, data: Mapping[str, Any], ok: bool, message: str | None
    ) -> None:
        """Tell the vendor that the downstream export succeeded or finally failed."""

    def purge(self, vendor_ref: str, data: Mapping[str, Any]) -> None:
        """Delete the document at the vendor (retention). MUST be safe to repeat: a document
        already gone counts as purged."""
        raise NotImplementedError(f"{self.kind} cannot delete documents")

    def retention_days(self) -> float | None:
        """Days after which finished documents are purged at the vendor; None keeps them."""
        return None

    def close(self) -> None:
        """Release connections; called once at shutdown."""


# --------------------------------------------------------------------------- destinations


@dataclass(frozen=True, slots=True)
class ExportPayload:
    """Everything one export carries: the document, its canonical result and where it came from."""

    document_id: int
    sha256: str
    filename: str
    mime_type: str
    source: str
    source_ref: str | None
    received_at: datetime
    vendor: str
    vendor_kind: str
    vendor_ref: str | None
    submission_id: int
    extraction_id: int
    result: CanonicalResult
    metadata: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class DeliveryReceipt:
    """What the downstream system answered: its reference for the export (file name, id, …)."""

    ref: str


class Destination(abc.ABC):
    """A downstream system that receives exports."""

    kind: ClassVar[str]
    settings_model: ClassVar[type[ConnectorSettings]]
    inline: ClassVar[bool] = False
    """True for destinations that answer in milliseconds (a local folder): the vendor worker
    that finished a document pushes its first attempt right away instead of handing it to the
    destination's own pool. Remote systems keep False, so their slowness never holds back a
    vendor queue."""

    def __init__(self, settings: ConnectorSettings, context: ConnectorContext) -> None:
        self.settings = settings
        self.context = context

    @abc.abstractmethod
    def deliver(self, payload: ExportPayload, idempotency_key: str) -> DeliveryReceipt:
        """Push one export.

        MUST be safe to repeat with the same ``idempotency_key`` (the same export arrives again
        after a crash): downstream writes are upserts keyed by it, or the target de-duplicates.
        """

    def close(self) -> None:
        """Release connections; called once at shutdown."""


# --------------------------------------------------------------------------- sources


class IngestStatus(enum.StrEnum):
    INGESTED = "ingested"
    """Stored and routed; release the original."""
    DUPLICATE = "duplicate"
    """Same bytes were stored before; recorded, release the original."""
    ALREADY = "already"
    """This very item was committed before a crash; only the release is left to do."""
    REJECTED = "rejected"
    """Not a document we can take; quarantine the original with the reason."""


@dataclass(frozen=True, slots=True)
class IngestOutcome:
    status: IngestStatus
    document_id: int | None
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class IntakeItem:
    """One file or attachment offered by a source.

    ``source_ref`` identifies the item within its source (a path relative to the watched folder;
    mailbox + UIDVALIDITY + UID + part). ``rejection`` is set when the source already knows the
    item is unusable (e.g. a truncated PDF); it is then stored as rejected, never sent.
    """

    source: str
    source_ref: str
    filename: str
    open: Callable[[], AbstractContextManager[IO[bytes]]]
    mime_type: str | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)
    rejection: str | None = None
    unique: bool = False
    """``source_ref`` names this item for good (a mail's Message-ID and part): the same
    reference with the same bytes is always the item committed before, released or not. A
    folder path is not unique: the same file dropped again later is a new arrival."""
    route: str | None = None
    """The name of the route a source's own rule chose; None lets the routes decide."""


class IntakeSink(Protocol):
    """The engine side of intake: commits an item durably before the source may release it.

    Also lends sources what must live in the shared store rather than in one process: small
    state (a mailbox folder's UIDVALIDITY and highest UID), leases on accounts and health.
    """

    def ingest(self, item: IntakeItem) -> IngestOutcome:
        """Store the bytes and the rows; returns only after the commit."""
        ...

    def reject_unstored(self, item: IntakeItem, reason: str) -> IngestOutcome:
        """Record an item that is not even downloaded (too large) as rejected; its bytes stay
        at the source. Safe to repeat for a ``unique`` item."""
        ...

    def mark_released(self, document_id: int) -> None:
        """Record that the original was moved/deleted/flagged as configured."""
        ...

    def load_state(self, source: str, key: str) -> dict[str, Any] | None: ...

    def save_state(self, source: str, key: str, value: Mapping[str, Any]) -> None: ...

    def hold_lease(self, name: str, seconds: float) -> bool:
        """Take or renew this process's lease on ``name``; False while another process holds
        an unexpired one."""
        ...

    def drop_lease(self, name: str) -> None: ...

    def report_health(self, name: str, state: str, reason: str | None = None) -> None:
        """``ok`` or a problem (``auth_failed``) an operator must see, kept across restarts."""
        ...


class Source(abc.ABC):
    """An intake source. Runs its own threads between ``start`` and ``stop``."""

    kind: ClassVar[str]
    settings_model: ClassVar[type[ConnectorSettings]]

    def __init__(self, settings: ConnectorSettings, context: ConnectorContext) -> None:
        self.settings = settings
        self.context = context

    @abc.abstractmethod
    def start(self, sink: IntakeSink) -> None:
        """Begin watching; items found are handed to ``sink.ingest``."""

    @abc.abstractmethod
    def scan(self) -> int:
        """A full reconcile pass (called at start and periodically); returns items offered."""

    @abc.abstractmethod
    def stop(self) -> None:
        """Stop watching; MUST return after in-flight items are committed or left untouched."""

    def health(self) -> dict[str, Any]:
        """A few facts for the health endpoint (e.g. ``watch_mode``)."""
        return {}

    def rejected(self, document: DocumentRef, source_ref: str, reason: str) -> None:
        """A document taken from this source was rejected later, by a vendor.

        Lets a source show the rejection where operators look: a folder source puts a copy of
        the original (read from ``document.path``, the blob) into its failed folder with the
        reason beside it. MUST be safe to repeat and MUST NOT raise for a vanished original.
        """
