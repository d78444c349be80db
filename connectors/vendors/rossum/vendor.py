"""The ``rossum`` vendor: Rossum's REST API (rossum.ai), one queue per profile.

``RossumVendor`` is the ``Vendor`` contract: upload with reconcile, status polling, fetch,
normalize and webhooks here; the changes it makes at Rossum (feedback, export status,
retention) are ``workflow.RossumWorkflow``'s, HTTP is ``client.RossumClient``'s, settings are
``settings.RossumSettings``.

Every choice the API reference leaves open is listed in NOTES.md, "Client and mapping".
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar
from urllib.parse import urlsplit

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
from connectors.vendors.rossum import mapping
from connectors.vendors.rossum.annotations import (
    ANNOTATION_PATH,
    GONE,
    READY_ORDER,
    READY_RANK,
    RecentAnnotations,
    annotation_id,
    id_of,
    messages_text,
    sort_id,
)
from connectors.vendors.rossum.client import RossumClient
from connectors.vendors.rossum.schema import FIELD_MAP, LINE_ITEM_MAP
from connectors.vendors.rossum.settings import RossumSettings
from connectors.vendors.rossum.workflow import RossumWorkflow

log = logging.getLogger(__name__)

METADATA_DOCUMENT_ID = "docrelay_document_id"
METADATA_SHA256 = "docrelay_sha256"
SIGNATURE_HEADER = "x-rossum-signature-sha256"


class _TaskGone(TransientError):
    """The upload task is no longer there (tasks expire); handled inside the vendor."""


@dataclass(slots=True)
class _Upload:
    """Where an upload task led."""

    task_url: str
    upload_url: str | None = None
    annotations: list[str] = field(default_factory=list)
    documents: list[str] = field(default_factory=list)


class RossumVendor(Vendor):
    """Rossum: upload to a queue, wait for the annotation, read its content tree."""

    kind: ClassVar[str] = "rossum"
    settings_model: ClassVar[type[ConnectorSettings]] = RossumSettings
    capabilities: ClassVar[VendorCapabilities] = VendorCapabilities(
        webhooks=True, feedback=True, export_status=True, reconcile_uploads=True, poll_interval=2.0
    )

    settings: RossumSettings

    UPLOAD_WAIT: ClassVar[float] = 30.0
    """Seconds ``submit`` follows the upload task before leaving the rest to ``poll``."""
    RECONCILE_MARGIN: ClassVar[timedelta] = timedelta(hours=1)
    """Reconcile looks at annotations that arrived after the document's receipt minus this."""

    def __init__(
        self,
        settings: ConnectorSettings,
        context: ConnectorContext,
        *,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        if not isinstance(settings, RossumSettings):
            settings = RossumSettings.model_validate(settings.model_dump())
        super().__init__(settings, context)
        self.capabilities = VendorCapabilities(  # type: ignore[misc]
            webhooks=True,
            feedback=True,
            export_status=settings.export_status,
            reconcile_uploads=True,
            poll_interval=self.poll_interval,
        )
        self.field_map = {**FIELD_MAP, **settings.mapping}
        self.line_item_map = {**LINE_ITEM_MAP, **settings.line_item_mapping}
        self.client = RossumClient(
            settings, transport=transport, clock=context.clock, sleep=sleep, jitter=jitter
        )
        self.recent = RecentAnnotations()
        self.workflow = RossumWorkflow(self.client, settings, self.field_map, self.recent)

    # ------------------------------------------------------------------ references

    def annotation_ref(self, annotation_id: int) -> str:
        """The ``vendor_ref`` of an annotation: its API URL below our ``base_url``."""
        return self.client.annotation_url(annotation_id)

    @staticmethod
    def annotation_id(vendor_ref: str, data: Mapping[str, Any]) -> int | None:
        """The annotation id from the stored data or the reference; None while the upload task
        has not produced one."""
        return annotation_id(vendor_ref, data)

    def _require_id(self, vendor_ref: str, data: Mapping[str, Any]) -> int:
        annotation_id = self.annotation_id(vendor_ref, data)
        if annotation_id is None:
            raise NotReady("the upload has not produced an annotation yet")
        return annotation_id

    # ------------------------------------------------------------------ submit

    def submit(self, document: DocumentRef, *, first_attempt: bool = False) -> SubmitResult:
        """Reconcile by our document id in the annotation metadata, else upload and follow the
        task to the annotation (see NOTES.md for why this never uploads twice). On a first
        attempt no earlier upload can exist, so the look-up is skipped (one request less)."""
        if document.size_bytes > self.settings.max_upload_bytes:
            raise TerminalError(
                f"the document has {document.size_bytes} bytes; this Rossum profile accepts at "
                f"most {self.settings.max_upload_bytes}"
            )
        since = self._since(document)
        base_data: dict[str, Any] = {
            "queue": self.settings.queue,
            "document_id": document.id,
            "sha256": document.sha256,
            "since": since.isoformat(),
        }
        existing = (
            None if first_attempt else self._find_existing(document.id, document.sha256, since)
        )
        if existing is not None:
            log.info(
                "document %s is already annotation %s at Rossum; not uploading again",
                document.id,
                existing.get("id"),
            )
            return self._result(existing, {**base_data, "reconciled": True})

        response = self._upload(document)
        accepted = self.client.clock()  # Rossum's processing runs from here, task or not
        try:  # from here on the upload exists: never fail on the answer's shape alone
            body = self.client.json_object(response, "POST", "uploads")
        except TransientError:
            body = {}
        direct = self._annotations_in(body)
        if direct:  # a synchronous upload answer (`results[].annotation`)
            upload = _Upload(task_url="", annotations=direct)
        else:
            task_url = body.get("url") or response.headers.get("Location")
            if not isinstance(task_url, str) or not task_url:
                raise TransientError("Rossum accepted the upload but named no task to follow")
            upload = _Upload(task_url=self.client.url(task_url))
            try:
                done = self._follow(upload, deadline=self.client.clock() + self.UPLOAD_WAIT)
            except TransientError as exc:
                log.info("following Rossum upload task failed (%s); poll continues", exc)
                done = False
            if not done:
                return SubmitResult(
                    vendor_ref=upload.task_url,
                    data={**base_data, "task_url": upload.task_url, "pending": True},
                    waited=self.client.clock() - accepted,
                )
        annotation_id = id_of(upload.annotations[0])
        data = {
            **base_data,
            "annotation_id": annotation_id,
            "annotation_url": upload.annotations[0],
            "task_url": upload.task_url or None,
            "upload_url": upload.upload_url,
            "document_url": upload.documents[0] if upload.documents else None,
        }
        if len(upload.annotations) > 1:
            data["annotations"] = upload.annotations
        return SubmitResult(
            vendor_ref=self.annotation_ref(annotation_id),
            data=data,
            waited=self.client.clock() - accepted,
        )

    def _since(self, document: DocumentRef) -> datetime:
        received = document.received_at
        if received.tzinfo is None:
            received = received.replace(tzinfo=UTC)
        return min(received, datetime.now(UTC)) - self.RECONCILE_MARGIN

    def _result(self, annotation: Mapping[str, Any], base: dict[str, Any]) -> SubmitResult:
        annotation_id = annotation.get("id")
        if not isinstance(annotation_id, int):
            annotation_id = id_of(str(annotation.get("url", "")))
        return SubmitResult(
            vendor_ref=self.annotation_ref(annotation_id),
            data={
                **base,
                "annotation_id": annotation_id,
                "annotation_url": annotation.get("url"),
                "document_url": annotation.get("document"),
            },
        )

    def _find_existing(
        self, document_id: int, sha256: str, since: datetime
    ) -> dict[str, Any] | None:
        """The newest live annotation in our queue whose metadata carries this document.

        Asks with ``metadata__docrelay_document_id=<id>`` (what the emulator and NOTES.md
        propose; the API reference documents no metadata filter) and always matches the
        metadata here as well, so a server that ignores the filter only costs more pages. A
        server that refuses it (4xx) is asked again without it. The documented queue and
        arrival-time filters bound the scan either way (NOTES.md, "Reconcile").
        """
        params: dict[str, Any] = {
            "queue": self.settings.queue,
            "arrived_at_after": since.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S"),
            "ordering": "-created_at",
            "page_size": 100,
        }
        try:
            return self._scan(
                {**params, f"metadata__{METADATA_DOCUMENT_ID}": str(document_id)},
                document_id,
                sha256,
            )
        except TerminalError as exc:
            log.info("Rossum refused the metadata filter (%s); scanning the queue", exc)
            return self._scan(params, document_id, sha256)

    def _scan(
        self, params: Mapping[str, Any], document_id: int, sha256: str
    ) -> dict[str, Any] | None:
        best: dict[str, Any] | None = None
        for annotation in self.client.paginate("annotations", params):
            metadata = annotation.get("metadata")
            if not isinstance(metadata, dict):
                continue
            if str(metadata.get(METADATA_DOCUMENT_ID)) != str(document_id):
                continue
            if metadata.get(METADATA_SHA256) not in (None, sha256):
                continue
            if annotation.get("status") in ("deleted", "purged"):
                continue
            if best is None or sort_id(annotation) > sort_id(best):
                best = annotation
        return best

    def _upload(self, document: DocumentRef) -> httpx.Response:
        metadata = json.dumps({METADATA_DOCUMENT_ID: document.id, METADATA_SHA256: document.sha256})
        mime = document.mime_type or "application/octet-stream"
        with document.open() as handle:  # httpx streams it in 64 kB chunks, seeking to 0 on replay
            return self.client.request(
                "POST",
                "uploads",
                params={"queue": self.settings.queue},
                data={"metadata": metadata},
                files={"content": (document.filename, handle, mime)},
                replayable=False,
            )

    def _annotations_in(self, body: Mapping[str, Any]) -> list[str]:
        results = body.get("results")
        if not isinstance(results, list):
            return []
        return [
            r["annotation"]
            for r in results
            if isinstance(r, dict) and isinstance(r.get("annotation"), str)
        ]

    def _follow(self, upload: _Upload, *, deadline: float | None) -> bool:
        """Follow the task to its upload and the upload to its annotations.

        True when the annotations are known (filled into ``upload``); False when the task is
        still running at ``deadline`` (None: look once). TerminalError when the task failed.
        """
        wait = 0.25
        while True:
            if self._task_done(upload):
                return True
            if deadline is None or self.client.clock() + wait > deadline:
                return False
            self.client.sleep(wait)
            wait = min(wait * 2, 2.0)

    def _task_done(self, upload: _Upload) -> bool:
        if upload.upload_url is None:
            response = self.client.request(
                "GET", upload.task_url, params={"no_redirect": "true"}, allow=(303, 404)
            )
            if response.status_code == 404:
                raise _TaskGone(
                    f"Rossum no longer has the task {self.client.path(upload.task_url)}"
                )
            if response.status_code == 303:
                location = response.headers.get("Location")
                if not location:
                    raise TransientError("Rossum redirected from the task without a Location")
                upload.upload_url = self.client.url(location)
            else:
                task = self.client.json_object(response, "GET", upload.task_url)
                status = task.get("status")
                if status == "failed":
                    detail = task.get("detail") or task.get("code") or "no detail given"
                    raise TerminalError(f"Rossum could not import the upload: {detail}")
                if status != "succeeded":
                    return False
                content = task.get("content")
                target = content.get("upload") if isinstance(content, dict) else None
                target = target or task.get("result_url")
                if not isinstance(target, str) or not target:
                    raise TransientError("Rossum's upload task succeeded without naming the upload")
                upload.upload_url = self.client.url(target)
        body = self.client.get(upload.upload_url)
        annotations = [a for a in body.get("annotations") or [] if isinstance(a, str)]
        if not annotations:
            return False  # the task is done but the annotation is not listed yet
        upload.annotations = annotations
        upload.documents = [d for d in body.get("documents") or [] if isinstance(d, str)]
        return True

    # ------------------------------------------------------------------ poll / fetch

    def poll(self, vendor_ref: str, data: Mapping[str, Any]) -> PollResult:
        """Read the annotation's status (and, for a pending upload, the task). Read-only."""
        new_data: dict[str, Any] | None = None
        annotation_id = self.annotation_id(vendor_ref, data)
        if annotation_id is None:
            resolved = self._resolve_pending(vendor_ref, data)
            if isinstance(resolved, PollResult):
                return resolved
            new_data = resolved
            annotation_id = int(resolved["annotation_id"])
        annotation = self.client.annotation(annotation_id)
        if annotation is None:
            return PollResult(
                PollStatus.REJECTED,
                reason=f"annotation {annotation_id} no longer exists at Rossum",
                data=new_data,
            )
        result = self.status_result(annotation)
        result.data = new_data
        if new_data is not None:  # the task became an annotation: webhooks name that one
            result.vendor_ref = self.annotation_ref(annotation_id)
        if result.status == PollStatus.READY:
            self.recent.remember(annotation_id, annotation)
        return result

    def status_result(self, annotation: Mapping[str, Any]) -> PollResult:
        """Map an annotation's status to a PollResult (the table in NOTES.md)."""
        status = str(annotation.get("status") or "")
        if status in GONE:
            reason = GONE[status]
            messages = messages_text(annotation.get("messages"))
            return PollResult(
                PollStatus.REJECTED, reason=f"{reason}: {messages}" if messages else reason
            )
        rank = READY_ORDER.get(status)
        if rank is not None and rank >= READY_RANK[self.settings.ready_status]:
            return PollResult(PollStatus.READY)
        if rank is not None and rank < READY_RANK["confirmed"]:  # a person must confirm it
            wanted = self.settings.ready_status
            return PollResult(
                PollStatus.REVIEW, reason=f"{status} in Rossum; taken once it is {wanted}"
            )
        # importing/created, waiting for a person, or a status added after this was written
        # (the API asks clients to tolerate new enum values): ask again, backing off.
        return PollResult(PollStatus.PROCESSING)

    def _resolve_pending(
        self, vendor_ref: str, data: Mapping[str, Any]
    ) -> dict[str, Any] | PollResult:
        task_url = data.get("task_url") or vendor_ref
        upload = _Upload(task_url=self.client.url(str(task_url)))
        try:
            done = self._follow(upload, deadline=None)
        except _TaskGone:
            return self._reconcile_pending(data)
        except TerminalError as exc:
            return PollResult(PollStatus.REJECTED, reason=str(exc))
        if not done:
            return PollResult(PollStatus.PROCESSING)
        annotation_url = upload.annotations[0]
        return {
            **data,
            "pending": False,
            "annotation_id": id_of(annotation_url),
            "annotation_url": annotation_url,
            "upload_url": upload.upload_url,
            "document_url": upload.documents[0] if upload.documents else None,
        }

    def _reconcile_pending(self, data: Mapping[str, Any]) -> dict[str, Any] | PollResult:
        """The task expired before we saw its result: find the annotation by our metadata."""
        document_id, sha256, since = data.get("document_id"), data.get("sha256"), data.get("since")
        found = None
        if isinstance(document_id, int) and isinstance(sha256, str) and isinstance(since, str):
            found = self._find_existing(document_id, sha256, datetime.fromisoformat(since))
        if found is None:
            return PollResult(
                PollStatus.REJECTED,
                reason="Rossum's upload task expired and no annotation carries our document id",
            )
        return {**data, "pending": False, **self._result(found, {}).data}

    def fetch(self, vendor_ref: str, data: Mapping[str, Any], document: DocumentRef) -> Any:
        """The annotation and its content tree, verbatim (two GETs, nothing changed), with the
        document's page sizes in points from our own copy (to place Rossum's pixel boxes)."""
        annotation_id = self._require_id(vendor_ref, data)
        annotation = self.recent.recall(annotation_id) or self.client.annotation(annotation_id)
        if annotation is None:
            raise TerminalError(f"annotation {annotation_id} no longer exists at Rossum")
        content = self.client.content(annotation_id)
        # The export status is usually reported right after (inline export): it starts from
        # this read instead of another GET; a change meanwhile makes `start` refuse, and the
        # retry reads afresh.
        self.recent.remember(annotation_id, annotation, "report")
        return {
            "annotation": annotation,
            "content": content,
            "schema_url": annotation.get("schema"),
            "page_sizes": [list(size) for size in document.page_sizes],
        }

    def normalize(self, raw: Any) -> CanonicalResult:
        """Pure mapping with this profile's schema-id tables (see ``mapping``)."""
        return mapping.normalize(
            raw, self.field_map, self.line_item_map, dpi=self.settings.page_dpi
        )

    # ------------------------------------------------------------------ webhooks

    def parse_webhook(self, request: WebhookRequest) -> list[WebhookHint]:
        """Verify ``X-Rossum-Signature-SHA256`` and name the annotation to look at."""
        headers, body = request.headers, request.body
        secret = self.settings.webhook_secret
        if secret is None:
            raise WebhookRejected(
                "webhooks are refused: set webhook_secret to the Rossum hook's config.secret",
                status_code=401,
            )
        lowered = {str(k).lower(): v for k, v in headers.items()}
        header = lowered.get(SIGNATURE_HEADER)
        if not header:
            raise WebhookRejected("missing X-Rossum-Signature-SHA256 header", status_code=401)
        scheme, _, given = header.strip().partition("=")
        if scheme.strip().lower() != "sha256" or not given:
            raise WebhookRejected("unsupported webhook signature scheme", status_code=401)
        expected = hmac.new(secret.get_secret_value().encode(), body, hashlib.sha256).hexdigest()
        given_bytes = given.strip().lower().encode("utf-8", "replace")
        if not hmac.compare_digest(expected.encode("ascii"), given_bytes):
            raise WebhookRejected("webhook signature does not match", status_code=401)
        try:
            payload = request.json()
        except ValueError:
            raise WebhookRejected("webhook body is not JSON", status_code=400) from None
        if not isinstance(payload, dict):
            raise WebhookRejected("webhook body is not a JSON object", status_code=400)
        event, action = payload.get("event"), payload.get("action")
        if event not in ("annotation_status", "annotation_content"):
            return []
        annotation = payload.get("annotation")
        annotation_id: Any = annotation.get("id") if isinstance(annotation, dict) else None
        if not (isinstance(annotation_id, int) and not isinstance(annotation_id, bool)):
            url = annotation.get("url") if isinstance(annotation, dict) else None
            annotation_id = _annotation_in(url)
        request_id = payload.get("request_id")
        return [
            WebhookHint(
                vendor_ref=self.annotation_ref(annotation_id),
                event=f"{event}.{action}",
                delivery_id=str(request_id) if request_id else None,
                changed=event == "annotation_content" and action in EDITED,
                sent_at=_timestamp(payload.get("timestamp")),
            )
        ]

    # ------------------------------------------------------------------ check

    def probe(self) -> list[str]:
        """Log in and read the queue (GETs only): the account, the queue and its hooks."""
        queue = self.client.get_object(f"queues/{self.settings.queue}")
        who = self.settings.username or "an API token"
        counts = queue.get("counts")
        waiting = ""
        if isinstance(counts, Mapping):
            waiting = ", ".join(f"{n} {status}" for status, n in sorted(counts.items()) if n)
        hooks = queue.get("hooks") if isinstance(queue.get("hooks"), list) else []
        lines = [
            f"logged in at {self.client.base_url} as {who}",
            f"queue {self.settings.queue}: {queue.get('name')!s} ({waiting or 'empty'})",
            f"{len(hooks)} hook(s) on the queue; "
            + (
                "webhooks are verified with webhook_secret"
                if self.settings.webhook_secret is not None
                else "webhooks are refused (no webhook_secret): polling only"
            ),
        ]
        if self.context.webhook_url() is not None:
            lines.append(f"point a hook at {self.context.webhook_url()}")
        return lines

    # ------------------------------------------------------------------ changes (workflow)

    def send_feedback(
        self,
        vendor_ref: str,
        data: Mapping[str, Any],
        corrections: list[Correction],
        result: CanonicalResult | None = None,
    ) -> list[CorrectionOutcome]:
        """Write corrected values into the annotation and confirm it (``RossumWorkflow``).

        Safe to repeat: replacing with the same value changes nothing, and an annotation that is
        already confirmed/exported with these values counts as done.
        """
        if not corrections:
            return []
        return self.workflow.send_feedback(self._require_id(vendor_ref, data), corrections)

    def report_delivery(
        self, vendor_ref: str, data: Mapping[str, Any], ok: bool, message: str | None
    ) -> None:
        """Move the annotation to ``exported``, or record the failure (``failed_export``).

        Idempotent: an annotation already in the target state is left alone.
        """
        if not self.settings.export_status:
            return
        self.workflow.report_delivery(self._require_id(vendor_ref, data), ok, message)

    def retention_days(self) -> float | None:
        return self.settings.delete_after_days

    def purge(self, vendor_ref: str, data: Mapping[str, Any]) -> None:
        """Retention: delete the annotation (and purge it where Rossum allows)."""
        self.delete_annotation(vendor_ref, data)

    def delete_annotation(self, vendor_ref: str, data: Mapping[str, Any] | None = None) -> None:
        """Delete the annotation at Rossum and purge it (retention); safe to repeat."""
        self.workflow.delete(self._require_id(vendor_ref, data or {}))

    def close(self) -> None:
        self.client.close()


EDITED = frozenset({"updated", "user_update", "confirm"})
"""``annotation_content`` actions that mean a person changed (or confirmed) the values: a
finished document is fetched again and exported anew when its values differ (NOTES.md)."""


def _annotation_in(url: Any) -> int:
    """The annotation id a hook payload's URL names; WebhookRejected (400) for anything else,
    an unparseable URL (``http://[bad]/``) or an id of absurd length included."""
    try:
        match = ANNOTATION_PATH.search(urlsplit(url).path) if isinstance(url, str) else None
    except ValueError:
        match = None
    digits = match.group(1) if match is not None else ""
    if not (digits.isascii() and 0 < len(digits) <= 18):
        raise WebhookRejected("webhook names no annotation", status_code=400)
    return int(digits)


def _timestamp(value: Any) -> float | None:
    """A hook payload's ``timestamp`` as Unix seconds (None when absent or unreadable)."""
    if not isinstance(value, str):
        return None
    try:
        when = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return (when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp()
