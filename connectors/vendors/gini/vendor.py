"""The ``gini`` vendor: Gini's document API (``api.gini.net``), tokens from its user centre.

``GiniVendor`` is the ``Vendor`` contract: pre-flight checks, upload with reconcile, status
polling (Gini has no webhooks), fetch, normalize, feedback, probe and purge. HTTP is
``client.GiniClient``'s, the mapping ``mapping``'s, feedback ``feedback.GiniFeedback``'s,
settings ``settings.GiniSettings``.

Every choice the seed and the contract leave open is listed in NOTES.md.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

import httpx

from connectors import filecheck
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
from connectors.errors import TerminalError, TransientError, WebhookRejected
from connectors.filenames import upload_name, upload_tag
from connectors.vendors.gini import mapping
from connectors.vendors.gini.client import GiniClient
from connectors.vendors.gini.feedback import GiniFeedback
from connectors.vendors.gini.settings import GiniSettings

log = logging.getLogger(__name__)

PENDING = "PENDING"
COMPLETED = "COMPLETED"
ERROR = "ERROR"

EXTENSIONS: dict[str, str] = {
    "application/pdf": ".pdf",
    "image/gif": ".gif",
    "image/png": ".png",
    "image/jpeg": ".jpg",
    "image/tiff": ".tif",
    "text/plain": ".txt",
}
"""The extension a file name gets when it has none of its type's."""
_ALIASES: dict[str, tuple[str, ...]] = {
    ".jpg": (".jpg", ".jpeg"),
    ".tif": (".tif", ".tiff"),
}
DOCUMENT_KEYS = ("id", "name", "pageCount", "creationDate", "origin", "progress",
                 "sourceClassification")  # fmt: skip
"""What of the document information is kept in the submission's data (not the links,
kept apart)."""


class GiniVendor(Vendor):
    """Gini: upload to ``/documents``, poll ``progress`` until COMPLETED, read extractions."""

    kind: ClassVar[str] = "gini"
    settings_model: ClassVar[type[ConnectorSettings]] = GiniSettings
    capabilities: ClassVar[VendorCapabilities] = VendorCapabilities(
        webhooks=False, feedback=True, reconcile_uploads=True, poll_interval=2.0
    )

    settings: GiniSettings

    RECONCILE_MARGIN: ClassVar[timedelta] = timedelta(minutes=10)
    """The look-up takes documents Gini created after our receipt of the document minus this
    (clocks differ)."""

    def __init__(
        self,
        settings: ConnectorSettings,
        context: ConnectorContext,
        *,
        transport: httpx.BaseTransport | None = None,
        auth_transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
        jitter: Callable[[], float] = random.random,
        wall: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        if not isinstance(settings, GiniSettings):
            settings = GiniSettings.model_validate(settings.model_dump())
        super().__init__(settings, context)
        self.capabilities = VendorCapabilities(  # type: ignore[misc]
            webhooks=False,
            feedback=True,
            # the look-up needs our id on the upload: in its name, or in metadata Gini shows
            reconcile_uploads=settings.tag_file_name or settings.document_id_metadata is not None,
            poll_interval=self.poll_interval,
        )
        self.wall = wall
        self.field_map = mapping.LabelMap.fields(settings.mapping)
        self.line_item_map = mapping.LabelMap.line_items(settings.line_item_mapping)
        self.client = GiniClient(
            settings,
            transport=transport,
            auth_transport=auth_transport,
            clock=context.clock,
            sleep=sleep,
            jitter=jitter,
        )
        self.feedback = GiniFeedback(self.client, self.field_map)

    # ------------------------------------------------------------------ pre-flight

    def preflight(self, document: DocumentRef) -> tuple[str, int | None]:
        """Refuse what Gini would refuse, before any request (a ``TerminalError``, final);
        returns the MIME type sent and the page count where known. A document longer than
        ``max_pages`` is accepted: Gini reads its first pages (the result says so)."""
        mime = base_mime(document.mime_type)
        if mime not in self.settings.file_types:
            raise TerminalError(
                f"Gini does not take {mime or 'documents of unknown type'}; this profile sends "
                f"{', '.join(self.settings.file_types)}"
            )
        limit = self.settings.max_upload_bytes
        if document.size_bytes >= limit:
            raise TerminalError(
                f"the document has {document.size_bytes} bytes; Gini takes files of less than "
                f"{limit} bytes ({limit / 1048576:g} MiB)"
            )
        pages = document.pages
        if mime == "text/plain":
            self._check_text(document)
        elif mime == "application/pdf":
            pages = check_pdf(document, pages)
        elif mime == "image/gif":
            check_gif(document)
        return mime, pages

    def _check_text(self, document: DocumentRef) -> None:
        limit = self.settings.max_text_bytes
        if document.size_bytes >= limit:
            raise TerminalError(
                f"the text has {document.size_bytes} bytes; Gini takes plain text of less than "
                f"{limit} bytes ({limit / 1024:g} KiB)"
            )
        with document.open() as handle:
            data = handle.read(limit)
        try:
            data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise TerminalError(
                f"the text is not UTF-8 (byte {exc.start}); Gini takes plain text in UTF-8 only"
            ) from None

    def upload_name(self, document: DocumentRef, mime: str) -> str:
        """The file name Gini gets (``?filename=`` or the multipart part's): ours with its
        type's extension, tagged with our document id and the start of its hash unless
        ``tag_file_name`` is off."""
        ext = EXTENSIONS.get(mime, "")
        return upload_name(
            document.filename,
            _ALIASES.get(ext, (ext,)) if ext else (),
            known=_KNOWN,
            tag=tag(document) if self.settings.tag_file_name else None,
        )

    # ------------------------------------------------------------------ submit

    def submit(self, document: DocumentRef, *, first_attempt: bool = False) -> SubmitResult:
        """Check Gini's limits, look up an earlier upload (unless this is the first attempt),
        else upload (raw body with ``?filename=``, or multipart) and take the document's URI
        from ``Location``."""
        mime, pages = self.preflight(document)
        name = self.upload_name(document, mime)
        since = self._since(document)
        base: dict[str, Any] = {
            "docrelay_document": document.id,
            "file_name": name,
            "since": since.isoformat(),
        }
        if pages is not None:
            base["pages"] = {"total": pages, "read": min(pages, self.settings.max_pages)}
            if pages > self.settings.max_pages:
                log.warning(
                    "document %s has %d pages; Gini reads only the first %d",
                    document.id,
                    pages,
                    self.settings.max_pages,
                )
        if not first_attempt and self.capabilities.reconcile_uploads:
            existing = self._find_existing(document, name, since)
            if existing is not None:
                log.info(
                    "document %s is already document %s at Gini; not uploading again",
                    document.id,
                    existing[0],
                )
                return self._result(existing[0], existing[1], {**base, "reconciled": True})
        with document.open() as handle:
            location = self.client.upload(
                handle,
                filename=name,
                mime_type=mime,
                size=document.size_bytes,
                headers=self.settings.metadata_headers(document.id),
                timeout=self.settings.upload_timeout,
            )
        doc_id = location.rstrip("/").rsplit("/", 1)[-1]
        return self._result(doc_id, {"document": location}, {**base, "reconciled": False})

    def _result(self, doc_id: str, links: Mapping[str, Any], base: dict[str, Any]) -> SubmitResult:
        return SubmitResult(vendor_ref=doc_id, data={**base, "links": dict(links)})

    def _since(self, document: DocumentRef) -> datetime:
        received = document.received_at
        if received.tzinfo is None:
            received = received.replace(tzinfo=UTC)
        return min(received, self.wall()) - self.RECONCILE_MARGIN

    def _find_existing(
        self, document: DocumentRef, name: str, since: datetime
    ) -> tuple[str, dict[str, str]] | None:
        """The first upload of this document, or None: a document in the list that carries
        our tag in its name (or our id in its metadata, where Gini shows metadata), created
        since ``since``, not in ERROR; the oldest of several."""
        marker = tag(document)
        key = self.settings.document_id_metadata
        since_ms = since.timestamp() * 1000
        best: tuple[float, str, dict[str, str]] | None = None
        for doc in self.client.iter_documents(
            page_size=self.settings.lookup_page_size, max_pages=self.settings.lookup_pages
        ):
            doc_id = doc.get("id")
            if not isinstance(doc_id, str) or not doc_id or doc.get("progress") == ERROR:
                continue
            created = doc.get("creationDate")
            created = float(created) if isinstance(created, int | float) else None
            if created is not None and created < since_ms:
                continue
            doc_name = doc.get("name") if isinstance(doc.get("name"), str) else ""
            found = (self.settings.tag_file_name and marker in doc_name) or (
                key is not None and metadata_value(doc, key) == str(document.id)
            )
            if not found:
                continue
            when = created if created is not None else float("inf")
            if best is None or when < best[0]:
                best = (when, doc_id, self._links(doc, doc_id))
        return (best[1], best[2]) if best is not None else None

    def _links(self, doc: Mapping[str, Any], doc_id: str) -> dict[str, str]:
        links = {k: v for k, v in (doc.get("_links") or {}).items() if isinstance(v, str)}
        if "document" not in links:
            # the list's items are document informations with _links (004:479-509); one
            # without: its URI is the only one we can name, rather than upload twice
            log.warning("Gini listed document %s without _links; using its URI by id", doc_id)
            links["document"] = self.client.url(f"documents/{doc_id}")
        return {k: self.client.url(v) for k, v in links.items()}

    # ------------------------------------------------------------------ poll / fetch

    @staticmethod
    def document_url(data: Mapping[str, Any]) -> str:
        """The document's URI as Gini gave it (``Location``, ``_links.document``)."""
        links = data.get("links")
        url = links.get("document") if isinstance(links, Mapping) else None
        if not isinstance(url, str) or not url:
            raise TerminalError("the submission holds no Gini document URI")
        return url

    def poll(self, vendor_ref: str, data: Mapping[str, Any]) -> PollResult:
        """``GET`` the document URI and read ``progress``. Read-only."""
        detail = self.client.document(self.document_url(data))
        if detail is None:
            return PollResult(
                PollStatus.REJECTED, reason=f"Gini no longer has document {vendor_ref}"
            )
        return self.status_result(detail, data)

    def status_result(self, detail: Mapping[str, Any], data: Mapping[str, Any]) -> PollResult:
        """``progress`` → PollResult (the table in NOTES.md); the links and a few facts of the
        document information go into the data."""
        new = dict(data)
        links = detail.get("_links")
        if isinstance(links, Mapping):
            merged = dict(new.get("links") or {})
            merged.update({k: self.client.url(v) for k, v in links.items() if isinstance(v, str)})
            new["links"] = merged
        new["document_info"] = {k: detail[k] for k in DOCUMENT_KEYS if k in detail}
        changed = new if new != dict(data) else None
        progress = detail.get("progress")
        if progress == COMPLETED:
            return PollResult(PollStatus.READY, data=changed)
        if progress == ERROR:
            return PollResult(
                PollStatus.REJECTED,
                reason="Gini could not process the document (progress ERROR)",
                data=changed,
            )
        if progress != PENDING:
            log.info("Gini document %s has progress %r", detail.get("id"), progress)
        return PollResult(PollStatus.PROCESSING, data=changed)

    def _link(self, data: Mapping[str, Any], name: str) -> str:
        links = data.get("links")
        url = links.get(name) if isinstance(links, Mapping) else None
        if isinstance(url, str) and url:
            return url
        detail = self.client.document(self.document_url(data))  # read-only: the links again
        if detail is None:
            raise TerminalError("Gini no longer has the document")
        found = (detail.get("_links") or {}).get(name)
        if not isinstance(found, str) or not found:
            raise TransientError(f"Gini's document information has no {name} link")
        return self.client.url(found)

    def fetch(self, vendor_ref: str, data: Mapping[str, Any], document: DocumentRef) -> Any:
        """``GET`` the extractions link, verbatim, with our page sizes, the page counts, the
        document information the poll saw and — only where intake knew no page sizes (an
        image) — Gini's page sizes from the layout link (to place the boxes)."""
        extractions = self.client.extractions(self._link(data, "extractions"))
        raw: dict[str, Any] = {
            "extractions": extractions,
            "document": data.get("document_info"),
            "page_sizes": [list(size) for size in document.page_sizes],
        }
        pages = data.get("pages")
        if not isinstance(pages, Mapping):
            info = data.get("document_info")
            count = info.get("pageCount") if isinstance(info, Mapping) else None
            if isinstance(count, int) and not isinstance(count, bool):
                pages = {"total": count, "read": min(count, self.settings.max_pages)}
        if pages is not None:
            raw["pages"] = dict(pages)
        if not document.page_sizes:
            raw["gini_page_sizes"] = self.page_sizes(data)
        return raw

    def page_sizes(self, data: Mapping[str, Any]) -> list[list[float]]:
        """Gini's page sizes in points (``sizeX``, ``sizeY`` of the layout's pages)."""
        layout = self.client.layout(self._link(data, "layout"))
        sizes: list[list[float]] = []
        for page in layout.get("pages") or []:
            if isinstance(page, Mapping):
                sizes.append([page.get("sizeX"), page.get("sizeY")])  # type: ignore[list-item]
        return sizes

    def layout(self, vendor_ref: str, data: Mapping[str, Any]) -> dict[str, Any]:
        """The document's layout (pages, text zones, words with positions)."""
        return self.client.layout(self._link(data, "layout"))

    def processed(self, vendor_ref: str, data: Mapping[str, Any]) -> tuple[bytes, str]:
        """The processed file Gini read and its content type."""
        return self.client.processed(self._link(data, "processed"))

    def normalize(self, raw: Any) -> CanonicalResult:
        """Pure mapping with this profile's label tables (see ``mapping``)."""
        return mapping.normalize(
            raw,
            self.field_map,
            self.line_item_map,
            amount_to_pay_is_total=self.settings.amount_to_pay_is_total,
        )

    # ------------------------------------------------------------------ no webhooks

    def parse_webhook(self, request: WebhookRequest) -> list[WebhookHint]:
        """Gini sends no webhooks (polling only): every call is refused."""
        raise WebhookRejected("Gini sends no webhooks; this profile polls", status_code=404)

    # ------------------------------------------------------------------ feedback

    def send_feedback(
        self,
        vendor_ref: str,
        data: Mapping[str, Any],
        corrections: list[Correction],
        result: CanonicalResult | None = None,
    ) -> list[CorrectionOutcome]:
        """One ``PUT …/extractions`` with the full corrected set, a ``DELETE
        …/extractions/{label}`` per absent value (``GiniFeedback``). Safe to repeat."""
        if not corrections:
            return []
        return self.feedback.send(
            self._link(data, "extractions"), corrections, result or CanonicalResult()
        )

    def purge(self, vendor_ref: str, data: Mapping[str, Any]) -> None:
        """Retention: ``DELETE`` the document URI (its extractions and layout go with it);
        a document already gone counts as purged."""
        self.client.request("DELETE", self.document_url(data), allow=(404,))

    # ------------------------------------------------------------------ check

    def probe(self) -> list[str]:
        """Get a token (or use the trusted-backend credentials) and list one page of
        documents. Read-only."""
        lines: list[str] = []
        if self.client.session is not None:
            self.client.session.token()
            lines.append(
                f"got a token from {self.settings.token_url} ({self.settings.auth} grant"
                + (f" for {self.settings.username})" if self.settings.username else ")")
            )
        else:
            lines.append(f"trusted backend: Basic client auth as {self.settings.user_identifier}")
        page = self.client.list_documents(limit=1)
        total = page.get("totalCount")
        lines.append(f"{self.client.base_url}/documents answers: {total!s} document(s)")
        lines.append("Gini sends no webhooks: polling only")
        return lines

    def close(self) -> None:
        self.client.close()


# --------------------------------------------------------------------------- helpers

_KNOWN = frozenset({".pdf", ".gif", ".png", ".jpg", ".jpeg", ".tif", ".tiff", ".txt"})


def base_mime(mime: str | None) -> str:
    """The MIME type without parameters, lower case (``image/jpg`` read as ``image/jpeg``)."""
    kind = (mime or "").split(";")[0].strip().lower()
    return {"image/jpg": "image/jpeg", "image/pjpeg": "image/jpeg"}.get(kind, kind)


def tag(document: DocumentRef) -> str:
    """What the uploaded file name carries: our document id and the start of its hash."""
    return upload_tag(document.id, document.sha256)


def metadata_value(doc: Mapping[str, Any], key: str) -> str | None:
    """Our metadata ``key`` as a listed document may show it (the seed shows none: a
    ``metadata`` object, with or without the header prefix, or a top-level header name)."""
    header = f"x-document-metadata-{key}"
    for holder in (doc.get("metadata"), doc.get("_metadata"), doc):
        if isinstance(holder, Mapping):
            for name in (key, header):
                value = holder.get(name)
                if isinstance(value, str | int) and not isinstance(value, bool):
                    return str(value)
    return None


def check_pdf(document: DocumentRef, pages: int | None) -> int | None:
    """Refuse a PDF with a password or any security handler (Gini: "must not have any
    security restrictions such as password protection"); returns its page count."""
    import pypdfium2 as pdfium
    import pypdfium2.raw as pdfium_c

    from connectors import pdfium as pdfium_lock

    with document.open() as handle:
        head = handle.read(filecheck.PDF_HEADER_WINDOW)
    if filecheck.pdf_header_offset(head) < 0:
        raise TerminalError("not a PDF file (no %PDF- header)")
    with pdfium_lock.LOCK:
        try:
            pdf = pdfium.PdfDocument(document.path)
        except pdfium.PdfiumError as exc:
            if getattr(exc, "err_code", None) == 4:  # FPDF_ERR_PASSWORD
                raise TerminalError(
                    "the PDF is password-protected; Gini takes no PDF with security restrictions"
                ) from None
            raise TerminalError(f"the PDF is unreadable or corrupt ({exc})") from None
        try:
            if pdfium_c.FPDF_GetSecurityHandlerRevision(pdf.raw) != -1:
                raise TerminalError(
                    "the PDF is encrypted with restrictions (an owner password); Gini takes "
                    "no PDF with security restrictions"
                )
            return len(pdf)
        finally:
            pdf.close()


def check_gif(document: DocumentRef) -> None:
    """Refuse an animated GIF (Gini: "GIF (non-animated)")."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(document.path) as image:
            frames = getattr(image, "n_frames", 1)
    except (OSError, UnidentifiedImageError) as exc:
        raise TerminalError(f"the GIF is unreadable ({exc})") from None
    if frames > 1:
        raise TerminalError(f"the GIF is animated ({frames} frames); Gini takes still GIFs only")
