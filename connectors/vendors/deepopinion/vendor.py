"""The ``deepopinion`` vendor: DeepOpinion Studio's synchronous document extraction and its
human-in-the-loop (HITL) review.

``DeepOpinionVendor`` is the ``Vendor`` contract: pre-flight checks, the extraction (one call
that answers with the result, so ``SubmitResult.raw`` carries it), the HITL found or created
for the profile, review polling and the reviewed result, webhooks, normalize and probe. HTTP
is ``client.DeepOpinionClient``'s, the mapping ``mapping``'s, settings
``settings.DeepOpinionSettings``.

Every choice the seed and the shared API page leave open is listed in NOTES.md.
"""

from __future__ import annotations

import hmac
import logging
import random
import threading
import time
from collections.abc import Callable, Mapping
from ipaddress import ip_address
from typing import Any, ClassVar

import httpx

from connectors import filecheck
from connectors.base import (
    CanonicalResult,
    ConnectorContext,
    ConnectorSettings,
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
from connectors.vendors.deepopinion import mapping
from connectors.vendors.deepopinion.client import DeepOpinionClient
from connectors.vendors.deepopinion.settings import DeepOpinionSettings

log = logging.getLogger(__name__)

WEBP = "image/webp"
EXTENSIONS: dict[str, tuple[str, ...]] = {
    filecheck.PDF: (".pdf",),
    filecheck.JPEG: (".jpg", ".jpeg"),
    filecheck.PNG: (".png",),
    filecheck.TIFF: (".tif", ".tiff"),
    WEBP: (".webp",),
}
"""What DeepOpinion takes (002:730-735) and the extensions of each (the first is given to a
name that has none of its type's)."""
_KNOWN = frozenset(ext for exts in EXTENSIONS.values() for ext in exts)
COMPLETED = mapping.COMPLETED
HITL_NAME_MAX = 120
WEBHOOK_URL_MAX = 255
"""The longest ``webhook_url`` a HITL takes (002:1193)."""
WEBHOOK_EVENT = "review.completed"


class DeepOpinionVendor(Vendor):
    """DeepOpinion: one synchronous extraction per document; low-confidence results wait for
    the HITL's reviews and come back as a new version."""

    kind: ClassVar[str] = "deepopinion"
    settings_model: ClassVar[type[ConnectorSettings]] = DeepOpinionSettings
    capabilities: ClassVar[VendorCapabilities] = VendorCapabilities(
        webhooks=False, feedback=False, reconcile_uploads=False, poll_interval=60.0
    )

    feedback_elsewhere: ClassVar[str | None] = (
        "DeepOpinion takes no feedback outside its human-in-the-loop review: correct the "
        "value there (a profile with hitl = true takes the reviewed values as a new version)"
    )

    settings: DeepOpinionSettings

    def __init__(
        self,
        settings: ConnectorSettings,
        context: ConnectorContext,
        *,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
        jitter: Callable[[], float] = random.random,
        wall: Callable[[], float] = time.time,
    ) -> None:
        if not isinstance(settings, DeepOpinionSettings):
            settings = DeepOpinionSettings.model_validate(settings.model_dump())
        super().__init__(settings, context)
        self.capabilities = VendorCapabilities(  # type: ignore[misc]
            webhooks=settings.webhooks,
            feedback=False,
            reconcile_uploads=False,
            poll_interval=self.poll_interval,
        )
        self.field_map = mapping.LabelMap.fields(settings.mapping)
        self.line_item_map = mapping.LabelMap.line_items(settings.line_item_mapping)
        self.client = DeepOpinionClient(
            settings, transport=transport, clock=context.clock, wall=wall, sleep=sleep,
            jitter=jitter,
        )  # fmt: skip
        self._hitl_lock = threading.Lock()
        self._hitl_id: int | None = None

    # ------------------------------------------------------------------ pre-flight

    def preflight(self, document: DocumentRef) -> str:
        """The MIME type sent, after refusing what DeepOpinion does not take (before any
        request: a refusal here is final, nothing was sent)."""
        mime = base_mime(document.mime_type)
        if mime not in EXTENSIONS:
            raise TerminalError(
                f"DeepOpinion does not take {mime or 'documents of unknown type'}; it reads "
                "PDF, JPEG, PNG, TIFF and WebP"
            )
        limit = self.settings.max_upload_bytes
        if document.size_bytes >= limit:
            raise TerminalError(
                f"the document has {document.size_bytes} bytes; this DeepOpinion profile takes "
                f"files of less than {limit} bytes ({limit / 1048576:g} MiB)"
            )
        return mime

    def upload_name(self, document: DocumentRef, mime: str) -> str:
        """``<stem>.docrelay-<id>-<sha8><ext>``: the name the reviews and the webhook give
        back, with the extension of the document's type."""
        return upload_name(document.filename, EXTENSIONS[mime], known=_KNOWN, tag=tag(document))

    # ------------------------------------------------------------------ submit

    def submit(self, document: DocumentRef, *, first_attempt: bool = False) -> SubmitResult:
        """Check DeepOpinion's limits, make sure the profile's HITL exists (with ``hitl``),
        then extract: one call that answers with the result. No look-up of an earlier call
        exists; the engine records the doubt before a second one (``reconcile_uploads``)."""
        mime = self.preflight(document)
        name = self.upload_name(document, mime)
        hitl_id = self.ensure_hitl() if self.settings.hitl else None
        with document.open() as handle:
            answer = self.client.extract(handle, filename=name, mime_type=mime)
        page_sizes = [list(size) for size in document.page_sizes]
        raw = {"answer": answer, "document_name": name, "page_sizes": page_sizes}
        data: dict[str, Any] = {"docrelay_document": document.id, "document_name": name}
        if hitl_id is not None:
            data["hitl_id"] = hitl_id
            if self.normalize(raw).review:
                # what the reviewed result is made of; the page images would only weigh
                data["answer"] = without_pages(answer)
        return SubmitResult(vendor_ref=name, raw=raw, keys={"document_name": name}, data=data)

    # ------------------------------------------------------------------ HITL

    def hitl_name(self) -> str:
        """The HITL this profile finds or creates: ``docrelay-<profile>``."""
        return f"docrelay-{self.context.name}"[:HITL_NAME_MAX]

    def webhook_url(self) -> str | None:
        """The URL the HITL calls: the profile's webhook URL with the token in its path."""
        token = self.settings.webhook_token
        if not self.settings.webhooks or token is None:
            return None
        url = self.context.webhook_url(token.get_secret_value())
        if url is not None and len(url) > WEBHOOK_URL_MAX:
            log.warning(
                "the webhook URL of profile %s is longer than DeepOpinion's %d characters; "
                "the HITL gets none and reviews are polled only",
                self.context.name,
                WEBHOOK_URL_MAX,
            )
            return None
        return url

    def ensure_hitl(self) -> int:
        """The id of the profile's live HITL for the model: ``hitl_id``, else the one named
        ``docrelay-<profile>``, else a new one; its model, liveness and webhook URL are set
        to ours where they differ. Once per process."""
        with self._hitl_lock:
            if self._hitl_id is not None:
                return self._hitl_id
            configured = self.settings.hitl_id
            if configured is not None:
                found = self.client.hitl(configured)
                if found is None:
                    raise TransientError(
                        f"DeepOpinion has no HITL {configured} in project "
                        f"{self.settings.project_id} (hitl_id); fix the profile"
                    )
            else:
                found = next(
                    (h for h in self.client.hitls() if h.get("name") == self.hitl_name()), None
                )
            if found is None:
                found = self.client.create_hitl(self._hitl_body({}))
                log.info("created DeepOpinion HITL %s (%s)", found.get("id"), self.hitl_name())
            else:
                wanted = self._hitl_body(found)
                if configured is not None and found.get("model_id") != self.settings.model_id:
                    log.warning(
                        "DeepOpinion HITL %s (hitl_id) is for model %s, not %s: left as it is",
                        configured, found.get("model_id"), self.settings.model_id,
                    )  # fmt: skip
                    wanted["model_id"] = found.get("model_id")
                if any(found.get(k) != v for k, v in wanted.items()):
                    found = {**found, **self.client.update_hitl(int(found["id"]), wanted)}
                    log.info("updated DeepOpinion HITL %s to this profile", found.get("id"))
            hitl_id = found.get("id")
            if not isinstance(hitl_id, int) or isinstance(hitl_id, bool):
                raise TransientError("DeepOpinion answered a HITL without an id")
            self._hitl_id = hitl_id
            return hitl_id

    def _hitl_body(self, current: Mapping[str, Any]) -> dict[str, Any]:
        """A HITL's whole body as this profile wants it: live, for the model, calling our
        webhook URL (when webhooks are on; else the URL it has is kept); ``current``'s name,
        description and assignee are kept."""
        assignee = current.get("assigned_user_id")
        if assignee is None:
            assignee = self.client.user_id()
        description = current.get("description")
        if description is None:
            description = f"docrelay profile {self.context.name}: values below their thresholds"
        return {
            "name": current.get("name") or self.hitl_name(),
            "description": str(description)[:255],
            "assigned_user_id": assignee,
            "model_id": self.settings.model_id,
            "is_live": True,
            "webhook_url": self.webhook_url() or current.get("webhook_url") or "",
        }

    # ------------------------------------------------------------------ poll / fetch

    def poll(self, vendor_ref: str, data: Mapping[str, Any]) -> PollResult:
        """Only a document waiting for its review is polled: READY once every review of it is
        COMPLETED. Read-only."""
        hitl_id = _int(data.get("hitl_id"))
        if hitl_id is None:
            return PollResult(PollStatus.READY)
        name = str(data.get("document_name") or vendor_ref)
        reviews = self.client.reviews(hitl_id, name)
        if not reviews:
            return PollResult(
                PollStatus.REVIEW, reason=f"DeepOpinion lists no reviews of {name} (HITL {hitl_id})"
            )
        open_ = [r for r in reviews if r.get("status") != COMPLETED]
        if not open_:
            return PollResult(PollStatus.READY)
        return PollResult(
            PollStatus.REVIEW,
            reason=f"waiting for DeepOpinion's human-in-the-loop review: {len(open_)} of "
            f"{len(reviews)} value(s) to review (HITL {hitl_id})",
        )

    def fetch(self, vendor_ref: str, data: Mapping[str, Any], document: DocumentRef) -> Any:
        """The reviewed result: the original answer (kept in the data at submit) with the
        document's reviews and their values. Read-only."""
        answer = data.get("answer")
        if not isinstance(answer, Mapping):
            raise TerminalError("the submission holds no DeepOpinion answer to review")
        name = str(data.get("document_name") or vendor_ref)
        raw: dict[str, Any] = {
            "answer": dict(answer),
            "document_name": name,
            "page_sizes": [list(size) for size in document.page_sizes],
        }
        hitl_id = _int(data.get("hitl_id"))
        if hitl_id is not None:
            raw["reviews"] = self.client.reviews(hitl_id, name)
        return raw

    def normalize(self, raw: Any) -> CanonicalResult:
        """Pure mapping with this profile's label tables and checks (see ``mapping``)."""
        return mapping.normalize(
            raw,
            self.field_map,
            self.line_item_map,
            hitl=self.settings.hitl,
            required_labels=self.settings.required_labels,
            confidence_threshold=self.settings.confidence_threshold,
        )

    # ------------------------------------------------------------------ webhooks

    def parse_webhook(self, request: WebhookRequest) -> list[WebhookHint]:
        """DeepOpinion does not sign: the token in the path is the proof (compared in
        constant time), the caller's address is checked against ``allow_from`` where set. The
        body's ``document_name`` is only a hint: the engine reads the reviews."""
        token = self.settings.webhook_token
        if not self.settings.webhooks or token is None:
            raise WebhookRejected("webhooks are off: set hitl and webhook_token", status_code=404)
        given = request.tail.strip("/")
        if not hmac.compare_digest(given.encode(), token.get_secret_value().encode()):
            raise WebhookRejected("unknown webhook path", status_code=404)
        networks = self.settings.networks()
        if networks and not _allowed(request.client, networks):
            raise WebhookRejected(
                f"webhooks from {request.client} are not allowed", status_code=403
            )
        try:
            body = request.json() if request.body else None
        except ValueError:
            body = None
        name = body.get("document_name") if isinstance(body, dict) else None
        if not isinstance(name, str) or not name:
            raise WebhookRejected("the webhook names no document", status_code=400)
        event = body.get("event") if isinstance(body.get("event"), str) else WEBHOOK_EVENT
        return [WebhookHint(vendor_ref=name, event=event, keys={"document_name": name})]

    # ------------------------------------------------------------------ check

    def probe(self) -> list[str]:
        """Log in, find the model among the project's and the HITL (GETs only: a missing
        HITL is created at the first submit, not here)."""
        self.client.session.token()
        lines = [f"logged in at {self.client.base_url} as {self.settings.email}"]
        models = self.client.models()
        model = next((m for m in models if _int(m.get("id")) == self.settings.model_id), None)
        if model is None:
            raise TerminalError(
                f"project {self.settings.project_id} has no model {self.settings.model_id} "
                f"(it has {', '.join(str(m.get('id')) for m in models) or 'none'})"
            )
        lines.append(
            f"model {self.settings.model_id}: {model.get('name')!s} ({model.get('status')!s})"
        )
        if not self.settings.hitl:
            lines.append("HITL off: every result is taken as extracted")
        else:
            if self.settings.hitl_id is not None:
                found = self.client.hitl(self.settings.hitl_id)
                what = f"HITL {self.settings.hitl_id}"
            else:
                found = next(
                    (h for h in self.client.hitls() if h.get("name") == self.hitl_name()), None
                )
                what = f"HITL {self.hitl_name()}"
            if found is None:
                lines.append(f"{what} does not exist yet; the first submit creates it")
            else:
                lines.append(f"{what}: id {found.get('id')}, live {found.get('is_live')}")
            url = self.context.webhook_url()
            if not self.settings.webhooks:
                lines.append("no webhook_token: reviews are polled only")
            elif url is None:
                lines.append("the web app is off: reviews are polled only")
            else:
                lines.append(f"the HITL calls back below {url}/<webhook_token> (polling stays on)")
        lines.append(self.feedback_elsewhere or "")
        return lines

    def close(self) -> None:
        self.client.close()


# --------------------------------------------------------------------------- helpers


def base_mime(mime: str | None) -> str:
    """The MIME type without parameters, lower case (``image/jpg`` read as ``image/jpeg``)."""
    kind = (mime or "").split(";")[0].strip().lower()
    return {"image/jpg": "image/jpeg", "image/pjpeg": "image/jpeg", "image/tif": "image/tiff"}.get(
        kind, kind
    )


def tag(document: DocumentRef) -> str:
    """What the uploaded file name carries: our document id and the start of its hash."""
    return upload_tag(document.id, document.sha256)


def without_pages(answer: Mapping[str, Any]) -> dict[str, Any]:
    """The answer without its documents' ``annotated_pages`` (base64 page images)."""
    documents = answer.get("documents")
    if not isinstance(documents, list):
        return dict(answer)
    return {
        **answer,
        "documents": [
            {k: v for k, v in d.items() if k != "annotated_pages"} if isinstance(d, dict) else d
            for d in documents
        ],
    }


def _int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    text = value.strip() if isinstance(value, str) else ""
    if text.isascii() and text.isdigit() and len(text) <= 18:  # "²" is a digit, a bad int
        return int(text)
    return None


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
