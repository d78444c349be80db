"""The Konfuzio emulator's state: the seeded project, everything clients create (tokens,
documents, annotation sets, annotations, missing annotations, document sets), the
``status_data`` pipeline, review, post-processing and callbacks.

Every method takes one re-entrant lock, so HTTP handlers, the clock thread, the callback thread
and tests (``app.state.emulator``) can all use it. Time-driven changes (the next status after
``delay / 6`` seconds) happen in ``tick``, which the clock thread calls when something is due
and every API request calls first, so the emulator behaves the same with or without its
threads. Time is the kit's ``Clock`` (tests pass a ``ManualClock``); the request log, fault
injector and callback dispatcher are the kit's.
"""

from __future__ import annotations

import itertools
import json
import random
import secrets
import threading
from collections import Counter
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from connectors.emulation import extraction as engine
from connectors.emulation.callbacks import Callback, CallbackDispatcher, unsigned
from connectors.emulation.clock import SYSTEM_CLOCK, Clock
from connectors.emulation.faults import FaultInjector
from connectors.emulation.requestlog import RequestLog
from connectors.vendors.konfuzio import emulator_content as content
from connectors.vendors.konfuzio.emulator_model import (
    CATEGORIES,
    COULD_NOT_BE_PROCESSED,
    CREDIT_NOTE,
    DONE,
    EXTRACTION_PIPELINE,
    INVOICE,
    LINE_ITEMS,
    PIPELINE,
    SETTLED,
    SPLIT_PIPELINE,
    STATUSES,
    WAITING_FOR_SPLITTING_CONFIRMATION,
    Annotation,
    AnnotationSet,
    ApiError,
    Document,
    DocumentSet,
    MissingAnnotation,
    Page,
    PerDocument,
    own_label_set,
)
from connectors.vendors.konfuzio.emulator_postprocess import Postprocess
from connectors.vendors.konfuzio.emulator_review import Review
from connectors.vendors.konfuzio.emulator_views import Views

if TYPE_CHECKING:
    from connectors.vendors.konfuzio.emulator import EmulatorOptions

DATASET_STATUSES = {0: "None", 1: "Preparation", 2: "Training", 3: "Test", 4: "Excluded"}


CALLBACK_SENDERS = 4
"""Callbacks sent at once: they are hints (the client fetches the document), so their order
does not matter and one slow receiver answer need not delay the callbacks behind it."""


class KonfuzioState(Views, Review, Postprocess):
    """Everything the emulator knows, behind one lock; see the module docstring."""

    def __init__(self, options: EmulatorOptions, clock: Clock | None = None) -> None:
        self.options = options
        self.clock = clock or SYSTEM_CLOCK
        self.lock = threading.RLock()
        self._wake = threading.Condition(self.lock)
        self._ids: dict[str, Iterator[int]] = {}
        self._rng = random.Random(options.seed)
        self.username = options.username
        self.tokens: dict[str, str] = {}
        """Token → user: one token per user, created on first login, kept until deleted."""
        self.documents: dict[int, Document] = {}
        self._moving: dict[int, Document] = {}
        """Documents started through the pipeline and perhaps not settled yet: the clock looks
        only at these, not at every document the emulator holds."""
        self.pages: dict[int, Page] = {}
        self.annotation_sets: dict[int, AnnotationSet] = {}
        self.annotations: PerDocument[Annotation] = PerDocument()
        self.missing: PerDocument[MissingAnnotation] = PerDocument()
        self.document_sets: dict[int, DocumentSet] = {}
        self.requests = RequestLog(self.clock)
        self.faults = FaultInjector(options, self.clock)
        self.dispatcher = CallbackDispatcher(
            clock=self.clock,
            on_result=self._callback_result,
            user_agent="konfuzio-emulator",
            name="konfuzio-emulator-callbacks",
            senders=CALLBACK_SENDERS,
        )
        self.callbacks_sent: Counter[str] = Counter()
        """Callbacks queued, by ``done``/``failed``."""
        self._thread: threading.Thread | None = None
        self._stopping = False

    # ------------------------------------------------------------------ lifecycle

    def start_background(self) -> None:
        """Start the clock and callback threads (the app's lifespan does this)."""
        with self.lock:
            if self._thread is not None:
                return
            self._stopping = False
            self._thread = threading.Thread(
                target=self._run_clock, name="konfuzio-emulator-clock", daemon=True
            )
            self._thread.start()
        self.dispatcher.start()

    def stop_background(self) -> None:
        with self.lock:
            thread, self._thread = self._thread, None
            self._stopping = True
            self._wake.notify_all()
        if thread is not None:
            thread.join(timeout=10)
        self.dispatcher.stop()

    def _run_clock(self) -> None:
        with self.lock:
            while not self._stopping:
                self.tick()
                due = self._next_due()
                timeout = 60.0 if due is None else max(0.0, due - self.clock.now()) + 0.001
                self.clock.wait(self._wake, min(timeout, 60.0))

    def _next_due(self) -> float | None:
        times = [d.due_at for d in self._moving.values() if d.due_at is not None]
        return min(times) if times else None

    def _next_id(self, kind: str) -> int:
        return next(self._ids.setdefault(kind, itertools.count(1)))

    @property
    def step_seconds(self) -> float:
        """How long each status of the pipeline lasts."""
        return max(0.0, self.options.delay) / len(PIPELINE)

    # ------------------------------------------------------------------ auth

    def obtain_token(self, username: str, password: str) -> str | None:
        """``POST auth/``: the user's token (the same one until it is deleted), or None."""
        if not self.check_password(username, password):
            return None
        with self.lock:
            for key, user in self.tokens.items():
                if user == username:
                    return key
            key = secrets.token_hex(20)
            self.tokens[key] = username
            return key

    def delete_token(self, user: str) -> None:
        """``DELETE auth/``: the user's one token goes."""
        with self.lock:
            for key in [k for k, owner in self.tokens.items() if owner == user]:
                del self.tokens[key]

    def user_for_token(self, key: str) -> str | None:
        with self.lock:
            return self.tokens.get(key)

    def check_password(self, username: str, password: str) -> bool:
        return (username, password) == (self.options.username, self.options.password)

    # ------------------------------------------------------------------ upload

    def create_document(
        self,
        *,
        name: str,
        mime_type: str,
        data: bytes,
        extraction: engine.Extraction,
        category: int | None,
        callback_url: str | None,
        assignee: str | None,
        dataset_status: int,
    ) -> Document:
        """Store an upload and start its pipeline (all checks done by the caller)."""
        with self.lock:
            now = self.clock.now()
            doc = Document(
                id=self._next_id("document"),
                file_name=name,
                mime_type=mime_type,
                data=data,
                original=data,
                created_at=now,
                updated_at=now,
                category_id=category,
                category_confidence=1.0 if category is not None else None,
                callback_url=callback_url,
                assignee=assignee,
                dataset_status=dataset_status,
                extraction=extraction,
            )
            self._add_pages(doc, extraction, list(range(1, len(extraction.pages) + 1)))
            self.documents[doc.id] = doc
            draw_error, draw_split = self._rng.random(), self._rng.random()
            if not extraction.ok:
                doc.error = f"Could not be processed: {extraction.error}"
                self._start(doc, [*PIPELINE[:2]], COULD_NOT_BE_PROCESSED)
            elif draw_error < self.options.error_rate:
                doc.error = "Could not be processed: emulated processing error (error_rate)"
                self._start(doc, [*PIPELINE[:2]], COULD_NOT_BE_PROCESSED)
            elif draw_split < self.options.split_rate:
                self._start(doc, list(SPLIT_PIPELINE), WAITING_FOR_SPLITTING_CONFIRMATION)
            else:
                self._start(doc, list(PIPELINE), DONE)
            self.tick()
            return doc

    def _add_pages(self, doc: Document, extraction: engine.Extraction, sources: list[int]) -> None:
        """Pages of ``doc`` from its extraction; ``sources`` are their numbers in the upload."""
        for page, source in zip(extraction.pages, sources, strict=False):
            width, height = content.page_size(page)
            new = Page(self._next_id("page"), doc.id, page.number, width, height, source)
            self.pages[new.id] = new
            doc.page_ids.append(new.id)

    def _start(self, doc: Document, steps: list[int], settle_at: int) -> None:
        """Run ``steps`` (one per ``step_seconds``), then settle at ``settle_at``."""
        now = self.clock.now()
        doc.status = steps.pop(0)
        doc.steps = steps
        doc.settle_at = settle_at
        doc.started_at = now
        doc.done_at = None
        doc.due_at = now + self.step_seconds
        doc.updated_at = now
        self._moving[doc.id] = doc
        self._wake.notify_all()

    # ------------------------------------------------------------------ the clock

    def tick(self) -> None:
        """Make every status change that is due (cheap when nothing is)."""
        with self.lock:
            now = self.clock.now()
            for doc in list(self._moving.values()):
                if doc.id in self.documents:
                    while doc.due_at is not None and doc.due_at <= now:
                        self._advance(doc)
                if doc.due_at is None or doc.id not in self.documents:
                    del self._moving[doc.id]

    def _advance(self, doc: Document) -> None:
        assert doc.due_at is not None
        at = doc.due_at
        doc.updated_at = at
        if doc.steps:
            doc.status = doc.steps.pop(0)
            doc.due_at = at + self.step_seconds
            return
        doc.due_at = None
        self._settle(doc, doc.settle_at, at)

    def _settle(self, doc: Document, status: int, at: float | None = None) -> None:
        """Reach a status the pipeline stops at: ``DONE`` (annotations, callback), ``41``
        (a proposed split) or ``111`` (a reason, a callback only if configured)."""
        at = self.clock.now() if at is None else at
        doc.due_at = None
        doc.steps = []
        doc.updated_at = at
        if doc.category_id is None and status != COULD_NOT_BE_PROCESSED:
            self._categorize(doc)
        if status == DONE:
            doc.error = None
            doc.status = DONE
            doc.done_at = at
            if not doc.extracted:
                self._extract(doc)
            self._callback(doc, "done")
        elif status == WAITING_FOR_SPLITTING_CONFIRMATION:
            doc.status = status
            self._clear_annotations(doc)
            if doc.proposed_split is None:
                doc.proposed_split = self._proposal(doc)
        else:
            doc.status = COULD_NOT_BE_PROCESSED
            doc.error = doc.error or "Could not be processed."
            self._clear_annotations(doc)
            if self.options.callback_on_failure:
                self._callback(doc, "failed")

    def _categorize(self, doc: Document) -> None:
        """No category given at upload: the document type the engine read decides."""
        extraction = doc.extraction
        found = extraction.get("document_type") if extraction is not None else None
        if found is None:
            doc.category_id, doc.category_confidence = INVOICE, content.CONFIDENCE_INFERRED
        else:
            credit = found.value == "credit_note"
            doc.category_id = CREDIT_NOTE if credit else INVOICE
            doc.category_confidence = content.CONFIDENCE_LABELLED

    def _proposal(self, doc: Document) -> list[dict[str, Any]]:
        """What the splitting "AI" proposes: one entry per group of ``split_proposal``."""
        pages = [self.pages[p] for p in doc.page_ids]
        groups = content.split_proposal(doc.extraction) if doc.extraction else [[1]]
        proposal = []
        for index, numbers in enumerate(groups, start=1):
            chosen = [p for p in pages if p.number in numbers]
            proposal.append(
                {
                    "name": doc.file_name if len(groups) == 1 else f"{doc.file_name} ({index})",
                    "category": doc.category_id,
                    "categories": [doc.category_id] if doc.category_id else [],
                    "pages": [{"id": p.id, "number": p.number, "angle": 0} for p in chosen],
                }
            )
        return proposal

    def _extract(self, doc: Document) -> None:
        """Create the annotation sets and annotations of the document's extraction."""
        self._clear_annotations(doc)
        doc.extracted = True
        if doc.extraction is None or doc.category_id is None:
            return
        now = self.clock.now()
        own = AnnotationSet(self._next_id("annotation_set"), doc.id, own_label_set(doc.category_id))
        lines: dict[int, AnnotationSet] = {}
        self.annotation_sets[own.id] = own
        doc.annotation_set_ids.append(own.id)
        for found in content.find_annotations(doc.extraction):
            if found.line is None:
                annotation_set = own
            else:
                if found.line not in lines:
                    lines[found.line] = AnnotationSet(
                        self._next_id("annotation_set"), doc.id, LINE_ITEMS
                    )
                    self.annotation_sets[lines[found.line].id] = lines[found.line]
                    doc.annotation_set_ids.append(lines[found.line].id)
                annotation_set = lines[found.line]
            span = found.span
            selection = (
                {k: span[k] for k in ("x0", "x1", "y0", "y1", "page_index")}
                if span["x0"] is not None
                else None
            )
            ann = Annotation(
                id=self._next_id("annotation"),
                document_id=doc.id,
                annotation_set_id=annotation_set.id,
                label_id=found.label.id,
                label_set_id=annotation_set.label_set_id,
                offset_string=found.offset_string,
                offset_string_original=found.offset_string,
                normalized=found.normalized,
                confidence=found.confidence,
                spans=[span],
                created_at=now,
                updated_at=now,
                selection_bbox=selection,
            )
            self.annotations[ann.id] = ann

    def _clear_annotations(self, doc: Document) -> None:
        for ann in self.annotations.of(doc.id):
            del self.annotations[ann.id]
        for miss in self.missing.of(doc.id):
            del self.missing[miss.id]
        for set_id in doc.annotation_set_ids:
            self.annotation_sets.pop(set_id, None)
        doc.annotation_set_ids = []
        doc.extracted = False
        doc.is_reviewed = False

    def _reextract(self, doc: Document) -> None:
        """Extraction runs again (after a category change or a split): its annotations are
        replaced, and the callback is sent again when it is done."""
        self._clear_annotations(doc)
        self._start(doc, list(EXTRACTION_PIPELINE), DONE)
        self.tick()

    # ------------------------------------------------------------------ callbacks

    def _callback(self, doc: Document, event: str) -> None:
        if not doc.callback_url:
            return
        body = json.dumps(self.document_json(doc)).encode()
        self.callbacks_sent[event] += 1
        self.dispatcher.submit(
            Callback(
                url=doc.callback_url,
                body=body,
                signer=unsigned,
                timeout=self.options.callback_timeout,
                retry_delays=tuple(self.options.callback_retry_delays),
                tags={"document": doc.id, "event": event, "status_data": doc.status},
            )
        )

    def _callback_result(self, callback: Callback, delivered: bool, result: Any) -> None:
        """The receiver's last answer is the document's ``callback_status_code``."""
        with self.lock:
            doc = self.documents.get(int(callback.tags["document"]))
            if doc is not None:
                doc.callback_status_code = callback.last_status

    # ------------------------------------------------------------------ reading

    def document(self, document_id: int) -> Document:
        with self.lock:
            self.tick()
            doc = self.documents.get(document_id)
            if doc is None:
                raise ApiError(404, "Not found.")
            return doc

    def wait_settled(self, document_id: int, timeout: float) -> Document:
        """Block until the document's pipeline stops (``sync=true``), at most ``timeout``
        seconds on the emulator's clock."""
        with self.lock:
            deadline = self.clock.now() + timeout
            while True:
                doc = self.document(document_id)
                if doc.status in SETTLED and doc.due_at is None:
                    return doc
                now = self.clock.now()
                if now >= deadline:
                    return doc
                due = min(doc.due_at or deadline, deadline)
                self.clock.wait(self._wake, max(0.0, due - now) + 0.001)

    # ------------------------------------------------------------------ document changes

    def patch_document(self, document_id: int, data: Mapping[str, Any], user: str) -> Document:
        """``PATCH documents/{id}/``: ``data_file_name``, ``dataset_status``, ``assignee``,
        ``category`` (a change re-runs extraction), ``category_is_revised``, ``is_reviewed``
        (only when nothing is left to review)."""
        with self.lock:
            doc = self.document(document_id)
            errors: dict[str, list[str]] = {}
            if "data_file_name" in data and not str(data["data_file_name"] or "").strip():
                errors["data_file_name"] = ["This field may not be blank."]
            status = data.get("dataset_status")
            if status is not None and status not in DATASET_STATUSES:
                errors["dataset_status"] = [f'"{status}" is not a valid choice.']
            category = data.get("category")
            if category is not None and category not in CATEGORIES:
                errors["category"] = [f'Invalid pk "{category}" - object does not exist.']
            assignee = data.get("assignee")
            if assignee not in (None, "") and assignee != self.username:
                errors["assignee"] = [f"{assignee} is not a member of this project."]
            reviewed = data.get("is_reviewed")
            if reviewed is not None and not isinstance(reviewed, bool):
                errors["is_reviewed"] = ["Must be a valid boolean."]
            if errors:
                raise ApiError(400, errors)
            if reviewed:
                blockers = self.review_blockers(doc)
                if blockers:
                    raise ApiError(400, {"is_reviewed": blockers})
            if "data_file_name" in data:
                doc.file_name = str(data["data_file_name"]).strip()
            if status is not None:
                doc.dataset_status = int(status)
            if "assignee" in data:
                doc.assignee = assignee or None
            if "category_is_revised" in data:
                doc.category_is_revised = bool(data["category_is_revised"])
            if reviewed is not None:
                doc.is_reviewed = reviewed
            doc.updated_at = self.clock.now()
            if category is not None and category != doc.category_id:
                self.change_category(doc.id, int(category))
            return doc

    def change_category(self, document_id: int, category: int) -> Document:
        """A new category: revised by the user, extraction again if it had run."""
        with self.lock:
            doc = self.document(document_id)
            if category not in CATEGORIES:
                raise ApiError(
                    400, {"category": [f'Invalid pk "{category}" - object does not exist.']}
                )
            doc.category_id = category
            doc.category_confidence = 1.0
            doc.category_is_revised = True
            doc.updated_at = self.clock.now()
            if doc.status == DONE:
                self._reextract(doc)
            return doc

    def delete_document(self, document_id: int) -> None:
        with self.lock:
            doc = self.document(document_id)
            self._clear_annotations(doc)
            for page_id in doc.page_ids:
                self.pages.pop(page_id, None)
            del self.documents[doc.id]

    # ------------------------------------------------------------------ admin

    def force_status(self, document_id: int, status: Any, reason: str | None = None) -> Document:
        """Admin: put a document into a status now. ``2`` finishes it (annotations, callback),
        ``111`` fails it with ``reason``, ``41`` sends it through splitting; any other code is
        set and stays until the next forced change."""
        with self.lock:
            doc = self.document(document_id)
            if not isinstance(status, int) or status not in STATUSES:
                raise ApiError(
                    400, {"status_data": [f"Unknown status {status!r}; known: {sorted(STATUSES)}."]}
                )
            if status == DONE:
                self._settle(doc, DONE)
            elif status == COULD_NOT_BE_PROCESSED:
                doc.error = (
                    reason or "Could not be processed (set through the emulator's admin API)."
                )
                self._settle(doc, COULD_NOT_BE_PROCESSED)
            elif status == WAITING_FOR_SPLITTING_CONFIRMATION:
                self.send_through_split(doc.id)
            else:
                doc.status, doc.steps, doc.due_at = status, [], None
                doc.updated_at = self.clock.now()
            return doc

    def stats(self) -> dict[str, Any]:
        """Counts for ``GET /_emulator/stats``."""
        with self.lock:
            self.tick()
            by_status = Counter(STATUSES[d.status] for d in self.documents.values())
            records = self.requests.entries()
            routes: dict[str, Counter[str]] = {}
            for record in records:
                route = "/".join("{id}" if p.isdigit() else p for p in record.path.split("/"))
                routes.setdefault(f"{record.method} {route}", Counter())[str(record.status)] += 1
            outcomes = self.dispatcher.outcomes()
            return {
                "documents": {"total": len(self.documents), **dict(sorted(by_status.items()))},
                "annotations": len(self.annotations),
                "missing_annotations": len(self.missing),
                "document_sets": len(self.document_sets),
                "requests": {
                    "total": self.requests.total,
                    "by_path": {k: dict(v) for k, v in sorted(routes.items())},
                },
                "throttled": self.faults.throttled,
                "faults": dict(self.faults.counts),
                "callbacks": {
                    "queued": dict(self.callbacks_sent),
                    "attempts": sum(outcomes.values()),
                    "delivered": outcomes["delivered"],
                    "retrying": outcomes["retrying"],
                    "failed": outcomes["failed"],
                    "pending": self.dispatcher.pending,
                },
            }
