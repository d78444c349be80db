"""The ``konfuzio`` vendor: Konfuzio Server's REST API v3, one project per profile.

``KonfuzioVendor`` is the ``Vendor`` contract: pre-flight checks, upload with reconcile, status
polling, fetch, normalize and callbacks here; feedback (Konfuzio's review operations) is
``review.KonfuzioReview``'s, HTTP is ``client.KonfuzioClient``'s, the mapping ``mapping``'s,
settings ``settings.KonfuzioSettings``.

Every choice the API reference leaves open is listed in NOTES.md.
"""

from __future__ import annotations

import hmac
import logging
import os
import random
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from ipaddress import ip_address
from typing import Any, ClassVar

import httpx

from connectors.base import (
    CanonicalResult,
    ConnectorContext,
    ConnectorSettings,
    Correction,
    CorrectionOutcome,
    DocumentRef,
    PollResult,
    PollStatus,
    SubmitResult,
    Vendor,
    VendorCapabilities,
    WebhookHint,
    WebhookRequest,
)
from connectors.errors import NotReady, TerminalError, TransientError, WebhookRejected
from connectors.filenames import upload_name, upload_tag
from connectors.vendors.konfuzio import mapping
from connectors.vendors.konfuzio.client import KonfuzioClient
from connectors.vendors.konfuzio.review import KonfuzioReview
from connectors.vendors.konfuzio.settings import KonfuzioSettings

log = logging.getLogger(__name__)

STATUS_NAMES: dict[int, str] = {
    0: "queuing for OCR",
    10: "OCR in progress",
    1: "queuing for extraction",
    20: "extraction in progress",
    3: "queuing for categorization",
    30: "categorization in progress",
    4: "queuing for splitting",
    40: "splitting in progress",
    41: "waiting for splitting confirmation",
    2: "done",
    111: "could not be processed",
}
"""Every ``status_data`` code (the Konfuzio SDK's ``DocumentStatuses``; the seed names 41)."""
DONE = 2
WAITING_FOR_SPLIT = 41
FAILED = 111
PROCESSING_CODES = frozenset({0, 10, 1, 20, 3, 30, 4, 40})

POLL_FIELDS = (
    "id,status_data,labeling_available,is_reviewed,proposed_split,document_set,"
    "data_file_name,number_of_pages,status_reason,status_data_message,error_message,"
    "processing_error"
)
"""What a poll asks for (``?fields=``, as Konfuzio's own UI polls): not the annotations or the
text, which only ``fetch`` needs. A server that ignores ``fields`` answers the whole detail."""
LOOKUP_FIELDS = "id,project,data_file_name,created_at,status_data,callback_url,document_set"
FAILURE_FIELDS = (
    "status_reason",
    "status_data_message",
    "error_message",
    "processing_error",
    "error",
    "detail",
)
"""Where a reason for status 111 may be found; the API documents none (NOTES.md)."""
MAX_SPLIT_KEPT = 50
"""At most this many parts of a proposed split are kept in the vendor data."""

MIME_EXTENSIONS: dict[str, tuple[str, ...]] = {
    "application/pdf": (".pdf",),
    "image/tiff": (".tif", ".tiff"),
    "image/jpeg": (".jpg", ".jpeg"),
    "image/png": (".png",),
    "application/vnd.ms-excel": (".xls",),
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet": (".xlsx",),
    "application/vnd.ms-powerpoint": (".ppt",),
    "application/vnd.openxmlformats-officedocument.presentationml.presentation": (".pptx",),
    "application/msword": (".doc",),
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document": (".docx",),
    "application/vnd.oasis.opendocument.text": (".odt",),
    "application/vnd.oasis.opendocument.spreadsheet": (".ods",),
    "application/vnd.oasis.opendocument.presentation": (".odp",),
    "application/x-mspublisher": (".pub",),
    "text/plain": (".txt",),
}
"""A document's type as the extension Konfuzio goes by (the first is the one given to a name
that has none)."""


class KonfuzioVendor(Vendor):
    """Konfuzio: upload to a project, wait for ``status_data`` 2, read ``annotation_sets``."""

    kind: ClassVar[str] = "konfuzio"
    settings_model: ClassVar[type[ConnectorSettings]] = KonfuzioSettings
    capabilities: ClassVar[VendorCapabilities] = VendorCapabilities(
        webhooks=True, feedback=True, reconcile_uploads=True, poll_interval=5.0
    )

    settings: KonfuzioSettings

    RECONCILE_MARGIN: ClassVar[timedelta] = timedelta(minutes=10)
    """The look-up takes documents Konfuzio created after our receipt of the document minus
    this (clocks differ); older ones are another life of the same document id."""

    def __init__(
        self,
        settings: ConnectorSettings,
        context: ConnectorContext,
        *,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
        jitter: Callable[[], float] = random.random,
        wall: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        if not isinstance(settings, KonfuzioSettings):
            settings = KonfuzioSettings.model_validate(settings.model_dump())
        super().__init__(settings, context)
        self.capabilities = VendorCapabilities(  # type: ignore[misc]
            webhooks=True,
            feedback=True,
            reconcile_uploads=True,
            poll_interval=self.poll_interval,
        )
        self.wall = wall
        self.field_map = mapping.LabelMap.fields(settings.mapping)
        self.line_item_map = mapping.LabelMap.line_items(settings.line_item_mapping)
        self.client = KonfuzioClient(
            settings, transport=transport, clock=context.clock, sleep=sleep, jitter=jitter
        )
        self.review = KonfuzioReview(self.client, self.field_map)

    # ------------------------------------------------------------------ references

    @staticmethod
    def document_id(vendor_ref: str, data: Mapping[str, Any]) -> int:
        """The Konfuzio document id: the reference, else the one in the vendor data."""
        if vendor_ref.isdigit():
            return int(vendor_ref)
        stored = data.get("konfuzio_document")
        if isinstance(stored, int) and not isinstance(stored, bool):
            return stored
        raise NotReady("the submission names no Konfuzio document yet")

    def callback_url(self, document: DocumentRef) -> str | None:
        """Where Konfuzio calls back for this document: the profile's webhook URL with the
        unguessable token and our document id in its path; None when callbacks are off."""
        token = self.settings.callback_token
        if token is None:
            return None
        return self.context.webhook_url(f"{token.get_secret_value()}/{document.id}")

    # ------------------------------------------------------------------ submit

    def preflight(self, document: DocumentRef) -> str:
        """The extension Konfuzio will see, after refusing what it does not take (before any
        request: a refusal here is final, nothing was sent)."""
        ext = file_extension(document)
        allowed = self.settings.file_types
        if ext not in allowed:
            what = document.mime_type or "unknown type"
            raise TerminalError(
                f"Konfuzio does not take {what} documents ({ext or 'no extension'}); "
                f"this profile sends {', '.join(allowed)}"
            )
        pages = document.pages
        if pages is not None and pages > self.settings.max_pages:
            raise TerminalError(
                f"the document has {pages} pages; Konfuzio takes at most "
                f"{self.settings.max_pages} per document"
            )
        limit = self.settings.max_upload_bytes
        if limit is not None and document.size_bytes > limit:
            raise TerminalError(
                f"the document has {document.size_bytes} bytes; this Konfuzio profile takes "
                f"at most {limit}"
            )
        return ext

    def upload_name(self, document: DocumentRef, ext: str) -> str:
        """The file name Konfuzio gets: ours, with the extension of its type, tagged with our
        document id and the start of its hash unless ``tag_file_name`` is off."""
        return upload_name(
            document.filename,
            (ext, *_aliases(ext)) if ext else (),
            known=_KNOWN,
            tag=tag(document) if self.settings.tag_file_name else None,
        )

    def submit(self, document: DocumentRef, *, first_attempt: bool = False) -> SubmitResult:
        """Check Konfuzio's limits, look up an earlier upload (unless this is the first
        attempt), else upload: ``POST documents/`` as multipart, the file streamed."""
        ext = self.preflight(document)
        name = self.upload_name(document, ext)
        since = self._since(document)
        base: dict[str, Any] = {
            "project": self.settings.project,
            "docrelay_document": document.id,
            "file_name": name,
            "since": since.isoformat(),
            "callbacks": self.callback_url(document) is not None,
        }
        if not first_attempt:
            existing = self._find_existing(document, name, since)
            if existing is not None:
                log.info(
                    "document %s is already document %s at Konfuzio; not uploading again",
                    document.id,
                    existing["id"],
                )
                return self._result(existing, {**base, "reconciled": True})
        response = self._upload(document, name)
        try:  # from here on the upload exists: never fail on the answer's shape alone
            body = self.client.json_object(response, "POST", "documents/")
        except TransientError:
            body = {}
        if _int(body.get("id")) is None:
            found = self._find_existing(document, name, since)
            if found is None:
                raise TransientError(
                    "Konfuzio accepted the upload but named no document id; the retry looks "
                    "it up before uploading again"
                )
            body = found
        return self._result(body, {**base, "reconciled": False})

    def _since(self, document: DocumentRef) -> datetime:
        received = document.received_at
        if received.tzinfo is None:
            received = received.replace(tzinfo=UTC)
        return min(received, self.wall()) - self.RECONCILE_MARGIN

    def _result(self, doc: Mapping[str, Any], base: dict[str, Any]) -> SubmitResult:
        doc_id = _int(doc.get("id"))
        assert doc_id is not None
        data = {**base, "konfuzio_document": doc_id}
        if doc.get("document_set") is not None:
            data["document_set"] = doc["document_set"]
        return SubmitResult(vendor_ref=str(doc_id), data=data)

    def _upload(self, document: DocumentRef, name: str) -> httpx.Response:
        form: dict[str, str] = {"project": str(self.settings.project), "sync": "false"}
        if self.settings.category is not None:
            form["category"] = str(self.settings.category)
        if self.settings.assignee:
            form["assignee"] = self.settings.assignee
        callback = self.callback_url(document)
        if callback is not None:
            form["callback_url"] = callback
        mime = document.mime_type or "application/octet-stream"
        with document.open() as handle:  # httpx streams it in 64 kB chunks
            return self.client.request(
                "POST",
                "documents/",
                data=form,
                files={"data_file": (name, handle, mime)},
                replayable=False,
                timeout=self.settings.upload_timeout,
            )

    def _find_existing(
        self, document: DocumentRef, name: str, since: datetime
    ) -> dict[str, Any] | None:
        """The first upload of this document in our project, or None.

        Lists the project's documents created since (``created_at_after`` takes a date and
        excludes it: the day before is asked, the time checked here), newest first, and takes
        the oldest that carries our tag in its file name, or our callback URL (which has our
        document id in its path), or — with tagging off — our file name. A document Konfuzio
        could not process (111) does not count: uploading again is what a retry is for.
        """
        params = {
            "project": self.settings.project,
            "created_at_after": (since.date() - timedelta(days=1)).isoformat(),
            "ordering": "-created_at",
            "fields": LOOKUP_FIELDS,
        }
        try:
            return self._scan(document, name, since, params)
        except TerminalError as exc:  # a server that refuses a filter: the project alone
            log.info("Konfuzio refused the look-up's filters (%s); listing the project", exc)
            return self._scan(document, name, since, {"project": self.settings.project})

    def _scan(
        self, document: DocumentRef, name: str, since: datetime, params: Mapping[str, Any]
    ) -> dict[str, Any] | None:
        marker = tag(document)
        callback = self.callback_url(document)
        best: dict[str, Any] | None = None
        for doc in self.client.paginate("documents/", params):
            doc_id = _int(doc.get("id"))
            if doc_id is None or doc.get("status_data") == FAILED:
                continue
            project = doc.get("project")
            if project is not None and _int(project) != self.settings.project:
                continue
            created = _datetime(doc.get("created_at"))
            if created is not None and created < since:
                continue
            file_name = doc.get("data_file_name")
            file_name = file_name if isinstance(file_name, str) else ""
            if self.settings.tag_file_name:
                found = marker in file_name
            else:
                found = file_name == name and created is not None
            if not found and callback is not None:
                found = doc.get("callback_url") == callback
            if found and (best is None or doc_id < int(best["id"])):
                best = {**doc, "id": doc_id}
        return best

    # ------------------------------------------------------------------ poll / fetch

    def poll(self, vendor_ref: str, data: Mapping[str, Any]) -> PollResult:
        """Read the document's ``status_data`` (a few fields only). Read-only."""
        doc_id = self.document_id(vendor_ref, data)
        detail = self.client.document(doc_id, POLL_FIELDS)
        if detail is None:
            return self._gone(doc_id, data)
        return self.status_result(detail, data)

    def status_result(self, detail: Mapping[str, Any], data: Mapping[str, Any]) -> PollResult:
        """Map a document's ``status_data`` to a PollResult (the table in NOTES.md)."""
        code = _int(detail.get("status_data"))
        new = dict(data)
        if detail.get("document_set") is not None:
            new["document_set"] = detail["document_set"]
        name = STATUS_NAMES.get(code, "unknown") if code is not None else "missing"
        if code == WAITING_FOR_SPLIT:
            proposed = detail.get("proposed_split")
            parts = proposed[:MAX_SPLIT_KEPT] if isinstance(proposed, list) else []
            new["proposed_split"] = parts
            return PollResult(
                PollStatus.REVIEW, reason=split_reason(parts), data=_changed(new, data)
            )
        if code == FAILED:
            return PollResult(
                PollStatus.REJECTED, reason=failure_reason(detail), data=_changed(new, data)
            )
        if code == DONE:
            available = detail.get("labeling_available", 1)
            if available not in (1, True, None):
                return PollResult(PollStatus.PROCESSING, data=_changed(new, data))
            if self.settings.wait_for_review and detail.get("is_reviewed") is not True:
                return PollResult(
                    PollStatus.REVIEW,
                    reason="Konfuzio has extracted the document; waiting for a person to mark "
                    "it reviewed there (wait_for_review)",
                    data=_changed(new, data),
                )
            self._record_split(new)
            return PollResult(PollStatus.READY, data=_changed(new, data))
        if code not in PROCESSING_CODES:
            log.info("Konfuzio document %s has status_data %r (%s)", detail.get("id"), code, name)
        return PollResult(PollStatus.PROCESSING, data=_changed(new, data))

    def _record_split(self, data: dict[str, Any]) -> None:
        """After a confirmed split into several documents, name them in the vendor data: this
        submission follows one of them only (NOTES.md, "Splitting")."""
        proposed = data.get("proposed_split")
        if not isinstance(proposed, list) or len(proposed) < 2 or "split_documents" in data:
            return
        parts = self._set_members(data.get("document_set"))
        if parts:
            data["split_documents"] = parts
            log.warning(
                "Konfuzio split the document into %d documents (%s); docrelay follows %s only",
                len(parts),
                ", ".join(map(str, parts)),
                data.get("konfuzio_document"),
            )

    def _set_members(self, document_set: Any) -> list[int]:
        set_id = _int(document_set)
        if set_id is None:
            return []
        ref = f"document-sets/{set_id}/"
        response = self.client.request("GET", ref, allow=(404,))
        if response.status_code == 404:
            return []
        body = self.client.json_object(response, "GET", ref)
        members = body.get("documents")
        ids = [
            _int(m.get("id") if isinstance(m, Mapping) else m)
            for m in (members if isinstance(members, list) else [])
        ]
        return sorted(i for i in ids if i is not None)

    def _gone(self, doc_id: int, data: Mapping[str, Any]) -> PollResult:
        """The document is no longer there: the parts of a split, or deleted at Konfuzio."""
        others = [p for p in self._set_members(data.get("document_set")) if p != doc_id]
        for other in others:
            detail = self.client.document(other, POLL_FIELDS)
            if detail is None:
                continue
            new = {**data, "konfuzio_document": other, "split_from": doc_id}
            new["split_documents"] = others
            result = self.status_result(detail, new)
            result.data = result.data or new
            result.vendor_ref = str(other)
            log.info("Konfuzio document %s became %s (split); following it", doc_id, other)
            return result
        return PollResult(
            PollStatus.REJECTED, reason=f"Konfuzio no longer has document {doc_id} (deleted there)"
        )

    def fetch(self, vendor_ref: str, data: Mapping[str, Any], document: DocumentRef) -> Any:
        """The document detail with its ``annotation_sets``, verbatim (one GET) but for the
        callback token in ``callback_url``, with the page sizes in points from our own copy
        (to place Konfuzio's boxes)."""
        doc_id = self.document_id(vendor_ref, data)
        detail = self.client.document(doc_id)
        if detail is None:
            raise TerminalError(f"Konfuzio no longer has document {doc_id}")
        token = self.settings.callback_token
        callback = detail.get("callback_url")
        if token is not None and isinstance(callback, str):
            # the one change to the verbatim answer: our callback secret stays out of the store
            detail["callback_url"] = callback.replace(token.get_secret_value(), "***")
        return {"document": detail, "page_sizes": [list(size) for size in document.page_sizes]}

    def normalize(self, raw: Any) -> CanonicalResult:
        """Pure mapping with this profile's label tables (see ``mapping``)."""
        return mapping.normalize(
            raw, self.field_map, self.line_item_map, origin=self.settings.bbox_origin
        )

    # ------------------------------------------------------------------ callbacks

    def parse_webhook(self, request: WebhookRequest) -> list[WebhookHint]:
        """Konfuzio does not sign callbacks: the token in the path is the proof (compared in
        constant time), the caller's address is checked against ``allow_from`` where set. The
        path's document id (ours) and the body's ``id`` (Konfuzio's) are only hints: the
        engine fetches the document. Every callback may mean a re-extraction (``changed``):
        an unchanged result costs one fetch and no new version."""
        token = self.settings.callback_token
        if token is None:
            raise WebhookRejected("callbacks are off: set callback_token", status_code=404)
        given, _, rest = request.tail.strip("/").partition("/")
        if not hmac.compare_digest(given.encode(), token.get_secret_value().encode()):
            raise WebhookRejected("unknown callback path", status_code=404)
        if rest and _int(rest) is None:  # ASCII digits of a sane length only
            raise WebhookRejected("unknown callback path", status_code=404)
        networks = self.settings.networks()
        if networks and not _allowed(request.client, networks):
            raise WebhookRejected(
                f"callbacks from {request.client} are not allowed", status_code=403
            )
        document_id = _int(rest) if rest else None
        vendor_ref = None
        try:
            body = request.json() if request.body else None
        except ValueError:
            body = None
        if isinstance(body, dict):
            konfuzio_id = _int(body.get("id"))
            vendor_ref = str(konfuzio_id) if konfuzio_id is not None else None
        if vendor_ref is None and document_id is None:
            raise WebhookRejected("the callback names no document", status_code=400)
        return [
            WebhookHint(
                vendor_ref=vendor_ref,
                event="document.processed",
                document_id=document_id,
                changed=True,
            )
        ]

    # ------------------------------------------------------------------ feedback

    def send_feedback(
        self,
        vendor_ref: str,
        data: Mapping[str, Any],
        corrections: list[Correction],
        result: CanonicalResult | None = None,
    ) -> list[CorrectionOutcome]:
        """Konfuzio's own review operations, one or more per correction (``KonfuzioReview``):
        accept, decline, a human annotation, a missing annotation; the document is marked
        reviewed when nothing is left to review. Safe to repeat."""
        if not corrections:
            return []
        return self.review.send(self.document_id(vendor_ref, data), corrections)

    def purge(self, vendor_ref: str, data: Mapping[str, Any]) -> None:
        """Retention: ``DELETE documents/{id}/``; a document already gone counts as purged."""
        doc_id = self.document_id(vendor_ref, data)
        self.client.request("DELETE", f"documents/{doc_id}/", allow=(404,))

    # ------------------------------------------------------------------ check

    def probe(self) -> list[str]:
        """Log in and read the project, its category and labels (GETs only)."""
        project = self.client.get_object(f"projects/{self.settings.project}/")
        who = self.settings.username or "an API token"
        lines = [
            f"logged in at {self.client.base_url} as {who}",
            f"project {self.settings.project}: {project.get('name')!s}",
        ]
        if self.settings.category is not None:
            category = self.client.get_object(f"categories/{self.settings.category}/")
            lines.append(f"category {self.settings.category}: {category.get('name')!s}")
        try:
            labels = [
                label
                for label in self.client.paginate(
                    "labels/", {"project": self.settings.project}, max_pages=20
                )
                if _int(label.get("project", self.settings.project)) == self.settings.project
            ]
        except TerminalError as exc:
            lines.append(f"the project's labels could not be listed: {exc}")
        else:
            lines.append(self._labels_line(labels))
        url = self.context.webhook_url()
        if self.settings.callback_token is None:
            lines.append("callbacks are off (no callback_token): polling only")
        elif url is None:
            lines.append("callbacks are off (the web app is off): polling only")
        else:
            lines.append(f"Konfuzio calls back below {url}/<callback_token>/ (polling stays on)")
        return lines

    def _labels_line(self, labels: list[dict[str, Any]]) -> str:
        mapped: list[str] = []
        unmapped: list[str] = []
        for label in labels:
            name = str(label.get("name") or label.get("api_name") or label.get("id"))
            target = self.field_map.get(name, label.get("api_name")) or self.line_item_map.get(
                name, label.get("api_name")
            )
            (mapped if target else unmapped).append(f"{target} ← {name}" if target else name)
        line = f"{len(labels)} label(s); mapped: {', '.join(mapped) or 'none'}"
        if unmapped:
            line += f"; kept as extra.<label>: {', '.join(unmapped)}"
        return line

    def close(self) -> None:
        self.client.close()


# --------------------------------------------------------------------------- helpers

_KNOWN = frozenset(ext for exts in MIME_EXTENSIONS.values() for ext in exts)


def _aliases(ext: str) -> tuple[str, ...]:
    for exts in MIME_EXTENSIONS.values():
        if ext in exts:
            return exts
    return (ext,)


def file_extension(document: DocumentRef) -> str:
    """The document's type as an extension: from its MIME type where we know it, else from
    its name (lower case, with the dot; ``""`` for neither)."""
    exts = MIME_EXTENSIONS.get((document.mime_type or "").split(";")[0].strip().lower())
    if exts is not None:
        suffix = os.path.splitext(document.filename)[1].lower()
        return suffix if suffix in exts else exts[0]
    return os.path.splitext(document.filename)[1].lower()


def tag(document: DocumentRef) -> str:
    """What the uploaded file name carries: our document id and the start of its hash (a
    store started afresh reuses ids, never hashes)."""
    return upload_tag(document.id, document.sha256)


def split_reason(parts: list[Any]) -> str:
    """The review reason of status 41, with the proposal's shape."""
    sizes = []
    for part in parts:
        pages = part.get("pages") if isinstance(part, Mapping) else None
        sizes.append(f"{len(pages)} page(s)" if isinstance(pages, list) else "?")
    proposal = f" into {len(parts)} documents ({', '.join(sizes)})" if parts else ""
    return (
        f"Konfuzio proposes to split the document{proposal} and waits for a person to confirm "
        "(status 41, waiting for splitting confirmation)"
    )


def failure_reason(detail: Mapping[str, Any]) -> str:
    """The rejection reason of status 111, with whatever message the document carries."""
    reason = "Konfuzio could not process the document (status 111, could not be processed)"
    for key in FAILURE_FIELDS:
        value = detail.get(key)
        if isinstance(value, str) and value.strip():
            return f"{reason}: {' '.join(value.split())[:500]}"
    return reason


def _changed(new: dict[str, Any], old: Mapping[str, Any]) -> dict[str, Any] | None:
    return new if new != dict(old) else None


def _int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    text = value.strip() if isinstance(value, str) else ""
    if text.isascii() and text.isdigit() and len(text) <= 18:  # "²" is a digit, a bad int
        return int(text)
    return None


def _datetime(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        when = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def _allowed(client: str | None, networks: list[Any]) -> bool:
    if client is None:
        return False
    try:
        address = ip_address(client)
    except ValueError:
        return False
    if address.version == 6 and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return any(address in network for network in networks)
