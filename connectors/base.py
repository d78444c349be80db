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
from urllib.parse import quote

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator

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
    "amount_due",
)
"""Canonical document-level field names; anything else a vendor returns is kept as an extra.

``amount_due`` is what is left to pay (Gini's ``amountToPay``), beside the invoice's
``total_amount``: they differ after a prepayment or a credit."""

LINE_ITEM_FIELDS: tuple[str, ...] = (
    "description",
    "quantity",
    "unit_price",
    "net_amount",
    "tax_rate",
    "total_amount",
    "item_code",
)

AMOUNT_FIELDS = frozenset({"total_amount", "net_amount", "tax_amount", "amount_due"})
DATE_FIELDS = frozenset({"issue_date", "due_date"})


@dataclass(frozen=True, slots=True)
class BBox:
    """A box on a page in PDF points (1/72 inch), origin top-left: (left, top, right, bottom).

    Every vendor's unit (page-image pixels, fractions of the page, points from the bottom) is
    converted to this by its mapping, with the page's size in points kept beside it, so a box
    can be drawn on a rendering of any resolution.
    """

    left: float
    top: float
    right: float
    bottom: float
    page_width: float | None = None
    page_height: float | None = None

    def inside_page(self, tolerance: float = 0.5) -> bool:
        """The box is well-formed and, where the page size is known, lies on the page."""
        if not (0 - tolerance <= self.left <= self.right and 0 - tolerance <= self.top):
            return False
        if self.top > self.bottom:
            return False
        if self.page_width is not None and self.right > self.page_width + tolerance:
            return False
        return self.page_height is None or self.bottom <= self.page_height + tolerance

    @classmethod
    def from_fractions(
        cls,
        left: float,
        top: float,
        right: float,
        bottom: float,
        *,
        page_width: float,
        page_height: float,
    ) -> BBox:
        """A box given in fractions (0..1) of the page."""
        return cls(
            left * page_width,
            top * page_height,
            right * page_width,
            bottom * page_height,
            page_width,
            page_height,
        )

    @classmethod
    def from_pixels(
        cls,
        left: float,
        top: float,
        right: float,
        bottom: float,
        *,
        dpi: float,
        page_width_px: float | None = None,
        page_height_px: float | None = None,
    ) -> BBox:
        """A box in pixels of a page image rendered at ``dpi``."""
        scale = 72.0 / dpi

        def points(value: float | None) -> float | None:
            return None if value is None else round(value * scale, 2)

        return cls(
            round(left * scale, 2),
            round(top * scale, 2),
            round(right * scale, 2),
            round(bottom * scale, 2),
            points(page_width_px),
            points(page_height_px),
        )


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
    vendor_id: str | None = None
    """The vendor's own id of this value (a Rossum datapoint id), for feedback that names it."""


@dataclass(frozen=True, slots=True)
class Provenance:
    """Where a line item's value was read: what a document-level FieldValue carries itself."""

    confidence: float | None = None
    page: int | None = None
    bbox: BBox | None = None
    vendor_label: str | None = None
    raw_text: str | None = None


@dataclass(slots=True)
class LineItem:
    """One invoice line; amounts are exact decimals, ``tax_rate`` is a percentage (19 = 19 %).

    ``provenance`` maps a field name (``quantity``, ``extra.<label>`` …) to where it was read.
    """

    line_no: int
    description: str | None = None
    quantity: Decimal | None = None
    unit_price: Decimal | None = None
    net_amount: Decimal | None = None
    tax_rate: Decimal | None = None
    total_amount: Decimal | None = None
    item_code: str | None = None
    extra: dict[str, str] = field(default_factory=dict)
    provenance: dict[str, Provenance] = field(default_factory=dict)


@dataclass(slots=True)
class CanonicalResult:
    """A vendor's extraction after mapping: what the SQL store and the exports hold."""

    fields: list[FieldValue] = field(default_factory=list)
    line_items: list[LineItem] = field(default_factory=list)
    quality: dict[str, Any] = field(default_factory=dict)
    """The vendor's own verdicts on the result (``all_required_fields_found`` …), verbatim."""
    review: str | None = None
    """Set when this result must wait for a person's review at the vendor before it counts
    (DeepOpinion's human-in-the-loop): the reason. The engine keeps the submission in `review`
    and takes the reviewed result as a new extraction version."""

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
    page_sizes: tuple[tuple[float, float], ...] = ()
    """``(width, height)`` of each page in PDF points, where intake could read them: what a
    mapping needs to turn a vendor's pixels or fractions into points on the page."""

    def open(self) -> IO[bytes]:
        """Open the blob for reading."""
        return self.path.open("rb")


# --------------------------------------------------------------------------- settings

SettingsConfig = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)


class DatabaseUrl:
    """Field metadata, ``Annotated[str, DatabaseUrl()]``: a SQLAlchemy URL whose SQLite file,
    written relative in the configuration file, is relative to that file's directory — as a
    ``Path`` setting is (the engine resolves both when it loads the file)."""


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

    def plain_secrets(self) -> list[str]:
        """Secret values kept in plain ``str`` settings (an API key among extra headers):
        the logs hide them like every ``SecretStr`` field's."""
        return []


def check_mapping_targets(
    value: dict[str, str], known: tuple[str, ...], key: str
) -> dict[str, str]:
    """A mapping override must name a canonical field or ``extra.<name>``."""
    for label, target in value.items():
        extra = target.startswith("extra.") and len(target) > len("extra.")
        if target not in known and not extra:
            raise ValueError(
                f"{key}: {label!r} → {target!r} is neither a canonical field "
                f"({', '.join(known)}) nor extra.<name>"
            )
    return value


class BudgetSettings(BaseModel):
    """What a vendor profile may use and what it costs (``[vendors.<profile>.budget]``).

    Counted in the store, so every ``docrelay run`` on one store shares the counts. Days and
    months are UTC calendar days and months. A document is counted once, when its upload is
    about to start; its pages are the document's page count (1 when unknown). A document
    over a limit waits (is held) until the next period, or until a reload raises the limit.
    """

    model_config = SettingsConfig

    documents_per_day: int | None = Field(None, ge=0)
    """Documents uploaded per UTC day at most; unset: no limit."""
    documents_per_month: int | None = Field(None, ge=0)
    """Documents uploaded per UTC calendar month at most; unset: no limit."""
    pages_per_day: int | None = Field(None, ge=0)
    """Pages uploaded per UTC day at most (a document of unknown page count counts 1)."""
    pages_per_month: int | None = Field(None, ge=0)
    """Pages uploaded per UTC calendar month at most."""
    requests_per_second: float | None = Field(None, gt=0)
    """Vendor calls (upload, status poll, fetch) per second at most, shared through the store
    by every process on it; a call over the rate waits its turn. Unset: no shared limit (the
    connector's own in-process ``rate_limit`` still applies)."""
    price_per_document: Decimal | None = Field(None, ge=0)
    """What the vendor charges per document, for ``docrelay report cost``."""
    price_per_page: Decimal | None = Field(None, ge=0)
    """What the vendor charges per page, for ``docrelay report cost`` (added to the price per
    document when both are set)."""
    currency: str = Field("EUR", pattern=r"^[A-Z]{3}$")
    """ISO 4217 code of the prices."""

    def limits(self) -> dict[str, int]:
        """The limits that are set, by name (``documents_per_day``...)."""
        return {
            name: value
            for name in ("documents_per_day", "documents_per_month", "pages_per_day",
                         "pages_per_month")
            if (value := getattr(self, name)) is not None
        }  # fmt: skip

    @property
    def priced(self) -> bool:
        return self.price_per_document is not None or self.price_per_page is not None


class VendorSettings(ConnectorSettings):
    """What every vendor profile has, whatever the vendor: the engine reads these directly."""

    concurrency: int = Field(2, ge=1)
    """Worker threads of this profile talking to the vendor at the same time."""
    max_in_flight: int | None = Field(None, ge=1)
    """At most this many documents at the vendor at once (uploaded, not finished); new uploads
    wait. Unset: no limit beyond ``concurrency``. Documents waiting for a person's review do
    not count."""
    poll_interval: float | None = Field(None, ge=0)
    """First delay between status polls in seconds (later polls back off from it); unset: the
    connector's own default."""
    rate_limit: float | None = Field(None, gt=0)
    """Requests per second at most, shared by every profile of the same account; unset: the
    connector's own default."""
    mapping: dict[str, str] = Field(default_factory=dict)
    """Extra or overriding vendor label → canonical field (or ``extra.<name>``) entries."""
    line_item_mapping: dict[str, str] = Field(default_factory=dict)
    """Extra or overriding vendor label → canonical line-item field (or ``extra.<name>``)."""
    delete_after_days: float | None = Field(None, gt=0)
    """Delete the document at the vendor this many days after it was done (retention); off
    when unset. docrelay's own store keeps everything."""
    export_status: bool = True
    """Tell the vendor what happened downstream (exported, or why not) where it takes that."""
    review_timeout: float = Field(14.0, gt=0)
    """Days a document may wait for a person's review at the vendor before docrelay gives up
    on it (dead, or the route's fallback); polling keeps going until then."""
    breaker_failures: int = Field(0, ge=0)
    """Circuit breaker: after this many transient failures of vendor calls in a row the
    profile opens (claims nothing) for ``breaker_cooldown`` seconds, then lets one probe
    through; 0 (the default) turns it off. A route's ``outage_after`` moves the documents
    waiting meanwhile to its fallback."""
    breaker_cooldown: float = Field(60.0, gt=0)
    """Seconds an open circuit waits before its next probe."""
    budget: BudgetSettings = Field(default_factory=BudgetSettings)
    """Documents and pages per day and month, calls per second, and prices (see
    ``BudgetSettings``); nothing is limited by default."""

    @field_validator("mapping")
    @classmethod
    def _mapping(cls, value: dict[str, str]) -> dict[str, str]:
        return check_mapping_targets(value, DOCUMENT_FIELDS, "mapping")

    @field_validator("line_item_mapping")
    @classmethod
    def _line_item_mapping(cls, value: dict[str, str]) -> dict[str, str]:
        return check_mapping_targets(value, LINE_ITEM_FIELDS, "line_item_mapping")


class SourceSettings(ConnectorSettings):
    """What every intake source has."""

    name: SourceName
    """This source's name: recorded with every document as where it came from, and what
    routes match on."""
    rescan_interval: float = Field(60.0, gt=0)
    """Seconds between full reconcile passes (the safety net under events and IDLE)."""

    def routes_named(self) -> list[tuple[tuple[str, ...], str]]:
        """The routes this source's own settings choose (key path below the source, route
        name), so the configuration check can refuse a name no route has."""
        return []


class DestinationSettings(ConnectorSettings):
    """What every destination has."""

    rate_limit: float | None = Field(None, gt=0)
    """Pushes per second to this destination at most, all its threads together (an ERP that
    must not be flooded); unset: as fast as its threads go."""


# --------------------------------------------------------------------------- connectors


class ConnectorMetrics:
    """Where a connector reports what it did, for the daemon's ``/metrics``. The engine lends
    each connector one already bound to its configured name; this default discards everything,
    so a connector built without the daemon (``docrelay check``, unit tests) needs none.

    Implementations MUST be thread-safe and cheap (they run on every request and poll) and
    MUST NOT raise. Label values MUST stay few: a template, never a URL with ids in it.
    """

    __slots__ = ()

    def request(self, method: str, endpoint: str, status: str, seconds: float) -> None:
        """One HTTP exchange with the connector's system ended: ``endpoint`` is a path template
        (``annotations/{id}``), ``status`` the HTTP status or ``error``/``timeout``. The kit
        (``connectors.http``) reports these itself; connectors need not."""

    def poll(self) -> None:
        """A source looked for new input once (an IMAP pass over its folders)."""

    def reconnect(self, reason: str) -> None:
        """A source lost or gave up its connection and opens a new one (``reason``: ``error``,
        ``idle`` when it broke while waiting in IMAP IDLE, ``token`` to renew credentials)."""


@dataclass(slots=True)
class ConnectorContext:
    """What the engine lends every connector."""

    name: str
    """The configured name of this profile / destination / source."""
    data_dir: Path
    """A private directory this connector may use for state files."""
    clock: Callable[[], float]
    """Monotonic seconds; injectable so tests need no real sleep."""
    public_url: str | None = None
    """The address vendors reach the daemon's web app at (``web.public_url``, else the listen
    address); None when the web app is off, so nothing can call back."""
    metrics: ConnectorMetrics = field(default_factory=ConnectorMetrics)
    """Counters and timings for ``/metrics``; the default discards them."""

    def webhook_url(self, tail: str = "") -> str | None:
        """The URL a vendor calls for this connector: ``<public_url>/webhooks/<name>[/<tail>]``
        (a tail carries, e.g., an unguessable token for a vendor that does not sign)."""
        if self.public_url is None:
            return None
        url = f"{self.public_url.rstrip('/')}/webhooks/{quote(self.name, safe='')}"
        return f"{url}/{tail.lstrip('/')}" if tail else url


class Connector(abc.ABC):
    """What vendors, destinations and sources share: settings, context, a read-only probe."""

    kind: ClassVar[str]
    settings_model: ClassVar[type[ConnectorSettings]]

    def __init__(self, settings: ConnectorSettings, context: ConnectorContext) -> None:
        self.settings = settings
        self.context = context

    def probe(self) -> list[str]:
        """Check the configuration against the real system, changing nothing there: log in,
        look at the account, the queue, the folder. Returns lines for a person to read.

        MUST be read-only. Raises ``AuthFailed`` when credentials are refused and
        ``TransientError`` when the system cannot be reached (``docrelay check`` exits 4 and 3).
        """
        return [f"{self.kind}: nothing to check beyond the configuration"]

    def close(self) -> None:
        """Release connections; called once at shutdown."""


# --------------------------------------------------------------------------- vendors


class PollStatus(enum.StrEnum):
    PROCESSING = "processing"
    """The vendor is still working; ask again later."""
    REVIEW = "review"
    """The vendor waits for a person before there is a result (a split to confirm, a queue
    that needs confirmation); ask again, with the review deadline, not the processing one."""
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
    raw: Any = None
    """For a vendor whose submit call answers with the result (synchronous extraction): the
    result, as ``fetch`` would return it. The engine stores it as the extraction in the same
    transaction that records the upload, and never calls ``poll`` or ``fetch`` for it."""
    keys: dict[str, str] = field(default_factory=dict)
    """The vendor's other names for this submission (``{"review_id": "17"}``) by which its
    webhooks may refer to it."""
    waited: float = 0.0
    """Seconds ``submit`` spent after the vendor had taken the document (following an upload
    task to its result, say): the vendor was processing meanwhile, so the first status poll
    comes that much sooner than ``poll_interval`` after ``submit`` returned."""


@dataclass(slots=True)
class PollResult:
    """The vendor's processing status. ``retry_after`` hints when to poll again (seconds)."""

    status: PollStatus
    reason: str | None = None
    """Why it was rejected, or what a review waits for."""
    retry_after: float | None = None
    data: dict[str, Any] | None = None
    """Replaces the submission's stored vendor data when not None."""
    vendor_ref: str | None = None
    """Replaces the submission's vendor reference when not None (an upload task that has
    become a document, so later webhooks naming the document find it)."""
    keys: dict[str, str] = field(default_factory=dict)
    """More names for the submission, as ``SubmitResult.keys``."""


@dataclass(frozen=True, slots=True)
class VendorCapabilities:
    webhooks: bool = False
    """The vendor can call us back; polling stays as the fallback."""
    feedback: bool = False
    """`send_feedback` does something."""
    export_status: bool = False
    """`report_delivery` tells the vendor what happened downstream."""
    reconcile_uploads: bool = False
    """`submit` looks up an earlier upload of the same document before uploading again. A
    vendor without it may be sent a document twice after a crash or an unanswered upload (the
    engine records that doubt in the document's history)."""
    poll_interval: float = 5.0
    """First delay between status polls, in seconds; later polls back off from it."""
    offline: bool = False
    """`submit`, `poll` and `fetch` run in this process and reach nothing outside it (no
    account, no bill): a claim of its work lost in a power cut is made and run again for
    free, so the engine commits it without waiting for the disk (``store.engine.relaxed``)."""


@dataclass(frozen=True, slots=True)
class WebhookRequest:
    """A call to ``/webhooks/<profile>[/<tail>]``, as the connector gets to judge it."""

    method: str
    headers: Mapping[str, str]
    """Header names in lower case."""
    body: bytes
    tail: str = ""
    """The path below ``/webhooks/<profile>/`` (e.g. a token the connector put there)."""
    query: Mapping[str, str] = field(default_factory=dict)
    client: str | None = None
    """The caller's address, for a source-address allow-list."""

    def json(self) -> Any:
        """The body parsed as JSON; ``ValueError`` for anything else — not UTF-8, not JSON,
        nested deeper than 1,024 levels, a number beyond 64 bits — never a RecursionError: a
        connector turns it into ``WebhookRejected`` (400), since a vendor retries a 5xx."""
        from connectors import jsonio

        return jsonio.loads(self.body)


@dataclass(frozen=True, slots=True)
class WebhookHint:
    """A verified webhook call, reduced to "go and look at this submission".

    At least one of ``vendor_ref``, ``document_id`` and ``keys`` names it.
    """

    vendor_ref: str | None
    event: str = ""
    delivery_id: str | None = None
    """The vendor's id for this call: a repeat within the replay window is ignored."""
    document_id: int | None = None
    """Our document id, where the vendor echoes the metadata we gave it."""
    keys: Mapping[str, str] = field(default_factory=dict)
    """The vendor's other names (``SubmitResult.keys``)."""
    changed: bool = False
    """The vendor says its result changed (a person edited it): a finished submission is
    fetched again and, when the result differs, stored and exported as a new version."""
    sent_at: float | None = None
    """When the vendor sent the call (Unix seconds), where it says: a stale or future
    timestamp outside the tolerance gets the call refused."""


class CorrectionKind(enum.StrEnum):
    CONFIRM = "confirm"
    """The extracted value is right."""
    CORRECT = "correct"
    """The extracted value was wrong; ``value`` is the right one."""
    ABSENT = "absent"
    """The vendor found a value that is not in the document."""
    ADD = "add"
    """The document has a value the vendor missed; ``value`` is it."""


@dataclass(frozen=True, slots=True)
class Correction:
    """What a person said about one field of a vendor's result."""

    field: str
    value: str | None
    """The right value (None for ``absent``; the extracted one for ``confirm``)."""
    kind: CorrectionKind = CorrectionKind.CORRECT
    old_value: str | None = None
    """What the vendor's result had."""
    vendor_label: str | None = None
    """The vendor's own name of the field (schema id, label) where the result had one."""
    vendor_id: str | None = None
    """The vendor's id of the value (``FieldValue.vendor_id``: a datapoint id) where the result
    had one; the submission's own ids (annotation, document) are in its vendor data."""


@dataclass(frozen=True, slots=True)
class CorrectionOutcome:
    """The vendor's answer to one correction."""

    field: str
    accepted: bool
    reason: str | None = None
    """Why the vendor would not take it (shown to the operator as refused)."""


class Vendor(Connector):
    """A document-AI vendor profile.

    Every method runs in a worker thread and may block on I/O. Errors MUST be raised as the
    classes in ``connectors.errors``; anything else is treated as transient and logged with its
    traceback.
    """

    capabilities: ClassVar[VendorCapabilities] = VendorCapabilities()
    feedback_elsewhere: ClassVar[str | None] = None
    """For a vendor without ``capabilities.feedback``: where a person can correct its results
    instead (its own review tool), for ``docrelay correct`` to say; None: nowhere."""

    @property
    def poll_interval(self) -> float:
        """The first poll delay: the profile's setting, else the connector's default."""
        configured = getattr(self.settings, "poll_interval", None)
        return self.capabilities.poll_interval if configured is None else float(configured)

    @abc.abstractmethod
    def submit(self, document: DocumentRef, *, first_attempt: bool = False) -> SubmitResult:
        """Upload the document.

        MUST be safe to repeat for the same document: a connector whose vendor can carry our
        document id looks up an earlier upload before sending the bytes again. The engine sets
        ``first_attempt`` only when no earlier upload can exist (the submission was queued until
        this very claim); otherwise an earlier call may have reached the vendor (a crash, an
        unanswered request) and the look-up MUST come first. A synchronous vendor returns the
        result in ``SubmitResult.raw`` (and the look-up returns the earlier result, so it is
        not paid for twice).
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

    def parse_webhook(self, request: WebhookRequest) -> list[WebhookHint]:
        """Decide whether a call is authentic and say which submissions to look at.

        MUST verify what the vendor offers (an HMAC compared in constant time, an unguessable
        token in ``request.tail``, the caller's address) and raise ``WebhookRejected`` on any
        doubt. MUST NOT trust the payload's content beyond the hint: the engine fetches the
        authoritative state.
        """
        from connectors.errors import WebhookRejected

        raise WebhookRejected(f"{self.kind} does not send webhooks", status_code=404)

    def send_feedback(
        self,
        vendor_ref: str,
        data: Mapping[str, Any],
        corrections: list[Correction],
        result: CanonicalResult,
    ) -> list[CorrectionOutcome]:
        """Send corrections/confirmations back; ``result`` is the whole current result (with
        every correction applied), for vendors that take the full set.

        Returns one outcome per correction (a correction missing from the list counts as
        accepted). MUST be safe to repeat. Raises for the whole call as usual (transient,
        auth); a refusal of one correction is an outcome, not an exception.
        """
        return [
            CorrectionOutcome(c.field, False, f"{self.kind} takes no feedback") for c in corrections
        ]

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
        return getattr(self.settings, "delete_after_days", None)


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
    version: int = 1
    """1 for the first export of the document to this destination; a later version (after a
    correction or a changed result) replaces what the earlier one made, under the same
    idempotency key."""
    corrected: frozenset[str] = frozenset()
    """The fields a person corrected."""
    original: Path | None = None
    """The stored original file (read-only: the store's blob), for destinations that attach
    it (ERPs want the PDF); None where the engine has none to give."""


@dataclass(frozen=True, slots=True)
class DeliveryReceipt:
    """What the downstream system answered: its reference for the export (file name, id, …)."""

    ref: str
    data: Mapping[str, Any] = field(default_factory=dict)
    """Anything else worth keeping about the record it made (stored as the delivery's
    ``downstream_data``, JSON)."""


class DownstreamState(enum.StrEnum):
    """What became of a record a destination made, as far as it can tell."""

    PENDING = "pending"
    """Still open downstream (a draft invoice): asked again later."""
    POSTED = "posted"
    """Accepted for good (an invoice validated and posted): its final values are the truth."""
    REJECTED = "rejected"
    """Thrown out downstream (cancelled, deleted): the vendor hears of it as a failed export."""


@dataclass(frozen=True, slots=True)
class DownstreamOutcome:
    """A destination's later word on an export, read back by ``Destination.follow``."""

    state: DownstreamState
    reason: str | None = None
    """Why it was rejected, in the downstream system's words."""
    values: Mapping[str, str] = field(default_factory=dict)
    """For ``POSTED``: the record's final values by canonical field name, as text. Each that
    differs from the extraction becomes a correction (what the accountant fixed is what the
    vendor learns from)."""


class Destination(Connector):
    """A downstream system that receives exports."""

    inline: ClassVar[bool] = False
    """True for destinations that answer in milliseconds (a local folder): the vendor worker
    that finished a document pushes its first attempt right away instead of handing it to the
    destination's own pool. Remote systems keep False, so their slowness never holds back a
    vendor queue."""

    can_look_up: ClassVar[bool] = False
    """True when ``lookup`` can tell whether an export already arrived. The engine then marks
    each push in doubt before it is made, and after a crash or an ambiguous failure asks the
    destination first instead of pushing again (for systems that create a record per push
    and cannot de-duplicate by the key themselves)."""

    def lookup(self, payload: ExportPayload, idempotency_key: str) -> DeliveryReceipt | None:
        """The receipt of this export if the destination already holds it — the record made
        under ``idempotency_key`` at ``payload.version`` or newer — else None. MUST NOT
        change anything downstream. Called only when ``can_look_up``."""
        return None

    can_follow: ClassVar[bool] = False
    """True when ``follow`` can tell what became of a record after it was delivered (an ERP
    posts or cancels the draft invoice docrelay made). The engine then asks every
    ``follow_interval()`` seconds until the answer is final."""

    def follow_interval(self) -> float | None:
        """Seconds between two looks at a delivered record; None (or 0) does not follow."""
        return getattr(self.settings, "follow_interval", None) if self.can_follow else None

    def follow(self, receipt: DeliveryReceipt) -> DownstreamOutcome:
        """What became of the record ``receipt`` (as ``deliver`` returned it) names. MUST NOT
        change anything downstream. Called only when ``can_follow``; raises as ``deliver``
        does (transient, auth)."""
        raise NotImplementedError(f"{type(self).__name__} cannot follow its records")

    @abc.abstractmethod
    def deliver(self, payload: ExportPayload, idempotency_key: str) -> DeliveryReceipt:
        """Push one export.

        MUST be safe to repeat with the same ``idempotency_key`` (the same export arrives again
        after a crash): downstream writes are upserts keyed by it, or the target de-duplicates.
        A higher ``payload.version`` under the same key updates what the earlier one made.
        """


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


class Source(Connector):
    """An intake source. Runs its own threads between ``start`` and ``stop``."""

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
