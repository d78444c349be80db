"""The emulator's state: one organization, workspace, queue and user, plus everything clients
create (uploads, documents, annotations, hooks, tokens), and the annotation lifecycle.

Every method takes one re-entrant lock, so the HTTP handlers, the background clock and tests
(through ``app.state.emulator``) can all use it. Time-driven changes (``importing`` → ``to_review``
after the configured delay, finished tasks, session timeouts) happen in ``tick``, which the clock
thread calls when something is due and every API request calls first, so the emulator behaves
the same with or without the background threads. Time is the kit's ``Clock`` (a test may pass a
``ManualClock``); the request log, fault injector and webhook dispatcher are the kit's too.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import secrets
import string
import threading
from collections import Counter
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from connectors.emulation.clock import SYSTEM_CLOCK, Clock
from connectors.emulation.faults import FaultInjector
from connectors.emulation.requestlog import RequestLog
from connectors.vendors.rossum import emulator_content as content
from connectors.vendors.rossum import emulator_hooks as hooks
from connectors.vendors.rossum.emulator_events import HookEvents
from connectors.vendors.rossum.emulator_model import (
    BY_FIELDS,
    PATCH_TRANSITIONS,
    QUEUE,
    START_STATUSES,
    STATUSES,
    USER,
    Annotation,
    ApiError,
    Document,
    FileIn,
    Page,
    Token,
    Upload,
    duration,
    iso,
)
from connectors.vendors.rossum.emulator_query import Queries
from connectors.vendors.rossum.emulator_views import Views
from connectors.vendors.rossum.schema import invoice_schema_content

if TYPE_CHECKING:
    from connectors.vendors.rossum.emulator import EmulatorOptions


class EmulatorState(Views, Queries, HookEvents):
    """Everything the emulator knows, behind one lock; see the module docstring."""

    def __init__(self, options: EmulatorOptions, clock: Clock | None = None) -> None:
        self.options = options
        self.clock = clock or SYSTEM_CLOCK
        self.lock = threading.RLock()
        self._wake = threading.Condition(self.lock)
        self._ids: dict[str, Iterator[int]] = {}
        self.base_url = f"http://127.0.0.1{options.base_path}/v1"
        """The API's own URL as the last request saw it; background events link with it."""
        self.schema_content = invoice_schema_content()
        self._schema_nodes = content.schema_datapoints(self.schema_content)
        self.queue = self._initial_queue()
        self.tokens: dict[str, Token] = {}
        self.documents: dict[int, Document] = {}
        self.annotations: dict[int, Annotation] = {}
        self.upload_records: dict[int, Upload] = {}
        self.tasks: dict[int, int] = {}
        """Task id → upload id."""
        self.pages: dict[int, Page] = {}
        self.hooks: dict[int, dict[str, Any]] = {}
        self.notes: dict[int, dict[str, Any]] = {}
        self.requests = RequestLog(self.clock)
        """Every API request (the kit's log; ``request_log`` is the short form)."""
        self.faults = FaultInjector(options, self.clock)
        """Throttling and faults, reading ``options`` on every request."""
        self.dispatcher = hooks.dispatcher(self.clock, self._hook_result)
        self._clock: threading.Thread | None = None
        self._stopping = False
        if options.webhook_url:
            self.create_hook(
                {
                    "name": "docrelay webhook",
                    "queues": [f"{self.base_url}/queues/{QUEUE}"],
                    "events": list(options.webhook_events),
                    "config": {"url": options.webhook_url, "secret": options.webhook_secret},
                }
            )

    # ------------------------------------------------------------------ lifecycle

    def start_background(self) -> None:
        """Start the clock and the webhook thread (the app's lifespan does this)."""
        with self.lock:
            if self._clock is not None:
                return
            self._stopping = False
            self._clock = threading.Thread(target=self._run_clock, name="rossum-emulator-clock")
            self._clock.daemon = True
            self._clock.start()
        self.dispatcher.start()

    def stop_background(self) -> None:
        """Stop both threads and wait for them."""
        with self.lock:
            clock, self._clock = self._clock, None
            self._stopping = True
            self._wake.notify_all()
        if clock is not None:
            clock.join(timeout=10)
        self.dispatcher.stop()

    def _run_clock(self) -> None:
        with self.lock:
            while not self._stopping:
                self.tick()
                due = self._next_due()
                timeout = None if due is None else max(0.0, due - self.clock.now()) + 0.001
                self.clock.wait(self._wake, min(timeout, 60.0) if timeout is not None else 60.0)

    def _next_due(self) -> float | None:
        times = [a.ready_at for a in self.annotations.values() if a.status == "importing"]
        times += [a.export_due for a in self.annotations.values() if a.export_due is not None]
        return min(times) if times else None

    def _next_id(self, kind: str) -> int:
        return next(self._ids.setdefault(kind, itertools.count(1)))

    def _node_id(self) -> int:
        return self._next_id("datapoint")

    # ------------------------------------------------------------------ test/admin view

    @property
    def uploads(self) -> list[dict[str, Any]]:
        """Every upload: queue, file names, sha256s, metadata, document and annotation ids."""
        with self.lock:
            return [
                {
                    "id": u.id,
                    "queue": u.queue_id,
                    "filenames": [self.documents[d].file_name for d in u.document_ids],
                    "filename": self.documents[u.document_ids[0]].file_name,
                    "sha256": self.documents[u.document_ids[0]].sha256,
                    "sha256s": [self.documents[d].sha256 for d in u.document_ids],
                    "metadata": copy.deepcopy(u.metadata),
                    "documents": list(u.document_ids),
                    "annotations": list(u.annotation_ids),
                }
                for u in self.upload_records.values()
            ]

    @property
    def request_log(self) -> list[tuple[str, str, int]]:
        """``(method, path, status)`` of every API request (0 = connection dropped); the
        full records are ``requests``."""
        return [(r.method, r.path, r.status) for r in self.requests.entries()]

    def annotation(self, annotation_id: int) -> dict[str, Any]:
        """The annotation as the API shows it, with its content tree under ``data``."""
        with self.lock:
            self.tick()
            ann = self._annotation(annotation_id)
            shown = self.annotation_json(ann, self.base_url)
            shown["data"] = content.render_tree(ann.content, shown["url"])
            return shown

    def stats(self) -> dict[str, Any]:
        """Counts for ``GET /_emulator/stats``."""
        with self.lock:
            self.tick()
            by_status = Counter(a.status for a in self.annotations.values())
            records = self.requests.entries()
            requests: dict[str, Counter[str]] = {}
            for record in records:
                parts = record.path.split("/")
                route = "/".join("{id}" if p.isdigit() else p for p in parts)
                requests.setdefault(f"{record.method} {route}", Counter())[str(record.status)] += 1
            outcomes = self.dispatcher.outcomes()
            return {
                "uploads": len(self.upload_records),
                "documents": len(self.documents),
                "annotations": {"total": len(self.annotations), **dict(sorted(by_status.items()))},
                "requests": {
                    "total": self.requests.total,
                    "by_path": {k: dict(v) for k, v in sorted(requests.items())},
                    "by_status": dict(Counter(str(r.status) for r in records)),
                },
                "throttled": self.faults.throttled,
                "faults": dict(self.faults.counts),
                "webhook_deliveries": {
                    "attempts": sum(outcomes.values()),
                    "delivered": outcomes["delivered"],
                    "retrying": outcomes["retrying"],
                    "failed": outcomes["failed"],
                    "polling": outcomes["polling"],
                    "pending": self.dispatcher.pending,
                    "log": self.dispatcher.snapshot()[-200:],
                },
            }

    def force_status(
        self, annotation_id: int, status: str | None, action: str | None, messages: Any
    ) -> dict[str, Any]:
        """Admin: set a status as if a person did it in the UI (``action`` runs the real logic)."""
        with self.lock:
            self.tick()
            ann = self._annotation(annotation_id)
            if action is not None:
                if action not in ("start", "confirm", "postpone", "delete", "reject", "cancel"):
                    raise ApiError(400, {"action": [f"Unknown action {action!r}."]})
                if action == "confirm" and ann.status != "reviewing":
                    self.start(annotation_id)
                getattr(self, action)(annotation_id)
            elif status is not None:
                if status not in STATUSES:
                    raise ApiError(400, {"status": [f"Unknown status {status!r}."]})
                self._set_status(ann, status)
            else:
                raise ApiError(400, {"status": ["Give a status or an action."]})
            if messages is not None:
                ann.messages = list(messages)
            return self.annotation_json(ann, self.base_url)

    # ------------------------------------------------------------------ auth

    def login(self, username: str, password: str, lifetime: float | None) -> str | None:
        """A new token, or None for wrong credentials."""
        if username != self.options.username or password != self.options.password:
            return None
        cap = self.options.token_lifetime
        seconds = cap if lifetime is None else max(0.0, min(float(lifetime), cap))
        alphabet = string.ascii_lowercase + string.digits
        key = "".join(secrets.choice(alphabet) for _ in range(40))
        with self.lock:
            self.tokens[key] = Token(key, USER, self.clock.now() + seconds)
        return key

    def logout(self, key: str) -> None:
        with self.lock:
            self.tokens.pop(key, None)

    def user_for(self, key: str) -> int | None:
        """The user a token belongs to, or None when it is unknown or expired."""
        with self.lock:
            token = self.tokens.get(key)
            if token is None:
                return None
            if token.expires_at <= self.clock.now():
                del self.tokens[key]
                return None
            return token.user_id

    def check_basic(self, username: str, password: str) -> bool:
        return username == self.options.username and password == self.options.password

    # ------------------------------------------------------------------ static objects

    def _initial_queue(self) -> dict[str, Any]:
        return {
            "name": "Invoices",
            "session_timeout": "01:00:00",
            "default_score_threshold": 0.8,
            "automation_enabled": False,
            "automation_level": "never",
            "locale": "en_GB",
            "metadata": {},
            "use_confirmed_state": False,
            "document_lifetime": None,
            "settings": {
                "columns": [],
                "hide_export_button": True,
                "automation": {"automate_duplicates": True, "automate_suggested_edit": False},
                "rejection_config": {"enabled": True},
                "accepted_mime_types": [],
                "upload_values": [],
                "suggested_edit": "disable",
                "workflows": {"enabled": False},
            },
            "modified_at": self.clock.now(),
        }

    def update_queue(self, data: Mapping[str, Any]) -> None:
        """PATCH/PUT of a queue's settings that change how the emulator behaves."""
        types: dict[str, type | tuple[type, ...]] = {
            "name": str,
            "use_confirmed_state": bool,
            "automation_enabled": bool,
            "automation_level": str,
            "default_score_threshold": (int, float),
            "session_timeout": str,
            "locale": str,
            "metadata": dict,
            "settings": dict,
        }
        errors = {
            key: [f"Expected {getattr(kind, '__name__', 'a number')}."]
            for key, kind in types.items()
            if key in data and not isinstance(data[key], kind)
        }
        level = data.get("automation_level")
        if level is not None and level not in ("never", "confident", "always"):
            errors["automation_level"] = ['"never", "confident" or "always".']
        if "session_timeout" in data and "session_timeout" not in errors:
            try:
                duration(data["session_timeout"])
            except ValueError:
                errors["session_timeout"] = ["Use [DD ][HH:[MM:]]ss."]
        if errors:
            raise ApiError(400, errors)
        with self.lock:
            for key in types:
                if key in data:
                    self.queue[key] = copy.deepcopy(data[key])
            self.queue["modified_at"] = self.clock.now()

    # ------------------------------------------------------------------ uploads

    def create_upload(
        self,
        queue_id: int,
        files: list[FileIn],
        metadata: dict[str, Any],
        values: dict[str, Any],
        *,
        reject_identical: bool = False,
    ) -> Upload:
        """Store the files and start their import, all at once (a request either creates
        everything or nothing)."""
        with self.lock:
            if queue_id != QUEUE:
                raise ApiError(400, {"queue": ["Invalid queue - object does not exist."]})
            if reject_identical:
                for f in files:
                    digest = hashlib.sha256(f.data).hexdigest()
                    if any(
                        d.sha256 == digest and d.file_name == f.name
                        for d in self.documents.values()
                    ):
                        raise ApiError(409, {"detail": f"Identical document {f.name} exists."})
            now = self.clock.now()
            delay = max(0.0, self.options.delay)
            upload = Upload(
                id=self._next_id("upload"),
                queue_id=queue_id,
                created_at=now,
                done_at=now + min(delay, 0.25),
                task_id=self._next_id("task"),
                metadata=copy.deepcopy(metadata),
                values=copy.deepcopy(values),
            )
            for f in files:
                document = self._new_document(f.name, f.mime_type, f.data, upload.id)
                ann = self._new_annotation(document, queue_id, f.extraction, now + delay)
                ann.upload_id = upload.id
                ann.metadata = copy.deepcopy(metadata)
                ann.values = copy.deepcopy(values)
                upload.document_ids.append(document.id)
                upload.annotation_ids.append(ann.id)
            self.upload_records[upload.id] = upload
            self.tasks[upload.task_id] = upload.id
            self._wake.notify_all()
            self.tick()
            return upload

    def create_document(
        self, name: str, mime_type: str, data: bytes, metadata: dict[str, Any], parent: int | None
    ) -> Document:
        """``POST /documents``: a stored file without an annotation."""
        with self.lock:
            document = self._new_document(name, mime_type, data, None)
            document.metadata = copy.deepcopy(metadata)
            document.parent_id = parent
            return document

    def _new_document(self, name: str, mime_type: str, data: bytes, upload: int | None) -> Document:
        document = Document(
            id=self._next_id("document"),
            file_name=name,
            mime_type=mime_type,
            data=data,
            sha256=hashlib.sha256(data).hexdigest(),
            s3_name=secrets.token_hex(16),
            created_at=self.clock.now(),
            upload_id=upload,
        )
        self.documents[document.id] = document
        return document

    def _new_annotation(
        self, document: Document, queue_id: int, extraction: content.Extraction, ready_at: float
    ) -> Annotation:
        ann = Annotation(
            id=self._next_id("annotation"),
            document_id=document.id,
            queue_id=queue_id,
            created_at=document.created_at,
            ready_at=ready_at,
            content=content.empty_tree(self.schema_content, self._node_id),
            extraction=extraction,
        )
        ann.stamps["modified_at"] = document.created_at
        document.annotation_ids.append(ann.id)
        self.annotations[ann.id] = ann
        return ann

    # ------------------------------------------------------------------ the clock

    def tick(self) -> None:
        """Make every time-driven change that is due (cheap when nothing is)."""
        with self.lock:
            now = self.clock.now()
            for ann in list(self.annotations.values()):
                if ann.status == "importing" and ann.ready_at <= now:
                    self._finish_import(ann)
                elif ann.export_due is not None and ann.export_due <= now:
                    ann.export_due = None
                    if ann.status == "exporting":
                        self._set_status(ann, "exported")
                elif ann.status == "reviewing":
                    assigned = ann.stamps.get("assigned_at") or now
                    if now - assigned > duration(self.queue["session_timeout"]):
                        self._set_status(ann, "to_review")

    def _finish_import(self, ann: Annotation) -> None:
        extraction = ann.extraction
        if extraction.error:
            ann.messages = [{"type": "error", "content": extraction.error}]
            self._set_status(ann, "failed_import")
            return
        content.fill_tree(
            ann.content,
            self.schema_content,
            extraction,
            self._node_id,
            threshold=float(self.queue["default_score_threshold"]),
        )
        self._apply_upload_values(ann)
        for number, (width, height) in enumerate(extraction.page_sizes, start=1):
            page = Page(self._next_id("page"), ann.id, number, width, height, secrets.token_hex(16))
            self.pages[page.id] = page
            ann.page_ids.append(page.id)
        self._emit_content(ann, "initialize", [])
        level = self.queue["automation_level"] if self.queue["automation_enabled"] else "never"
        if level == "always" or (level == "confident" and self._all_validated(ann)):
            ann.automated = True
            self._process_confirmed(ann, immediate=True)
        else:
            self._set_status(ann, "to_review")

    def _apply_upload_values(self, ann: Annotation) -> None:
        """``values`` of the upload go into datapoints whose ``rir_field_names`` name them."""
        for node in content.walk(ann.content):
            if node["category"] != "datapoint":
                continue
            sources = self._schema_nodes.get(node["schema_id"], {}).get("rir_field_names") or []
            for key, value in ann.values.items():
                if key in sources:
                    content.update_datapoint(
                        node, {"content": {"value": str(value)}, "validation_sources": []}
                    )

    def _all_validated(self, ann: Annotation) -> bool:
        return all(
            n["validation_sources"]
            for n in content.walk(ann.content)
            if n["category"] == "datapoint" and (n["content"] or {}).get("value")
        )

    # ------------------------------------------------------------------ status changes

    def _annotation(self, annotation_id: int) -> Annotation:
        ann = self.annotations.get(annotation_id)
        if ann is None:
            raise ApiError(404, "Not found.")
        return ann

    def _set_status(self, ann: Annotation, status: str, *, by_user: bool = False) -> None:
        previous = ann.status
        now = self.clock.now()
        ann.status = status
        ann.stamps["modified_at"] = now
        stamp = {
            "confirmed": "confirmed_at",
            "deleted": "deleted_at",
            "exported": "exported_at",
            "failed_export": "export_failed_at",
            "purged": "purged_at",
            "rejected": "rejected_at",
            "reviewing": "assigned_at",
        }.get(status)
        if stamp:
            ann.stamps[stamp] = now
            by = stamp.replace("_at", "_by")
            if by in BY_FIELDS:
                ann.bys[by] = USER
        if by_user:
            ann.modifier_id = USER
        if status != "exporting":
            ann.export_due = None
        if previous != status:
            self._emit_status(ann, previous)

    def _export_hooks(self, ann: Annotation) -> list[dict[str, Any]]:
        return self._hooks_for(ann.queue_id, "annotation_content", "export")

    def _process_confirmed(self, ann: Annotation, *, immediate: bool) -> None:
        """After confirm (or automation): ``confirmed`` in confirmed-state queues, else export."""
        if self.queue["use_confirmed_state"]:
            self._set_status(ann, "confirmed", by_user=not ann.automated)
        else:
            self._export(ann, immediate=immediate)

    def _export(self, ann: Annotation, *, immediate: bool) -> None:
        """``exporting`` while export hooks run, else ``exported`` (now, or at the next tick
        for the asynchronous ``to_status=exporting``)."""
        if ann.status == "reviewing" or immediate:
            ann.stamps["confirmed_at"] = self.clock.now()
            ann.bys["confirmed_by"] = USER
        if self._export_hooks(ann):
            self._set_status(ann, "exporting")
            self._emit_content(ann, "export", [])
        elif immediate:
            self._set_status(ann, "exported")
        else:
            self._set_status(ann, "exporting")
            ann.export_due = self.clock.now()
            self._wake.notify_all()

    # ------------------------------------------------------------------ actions

    def start(self, annotation_id: int, statuses: list[str] | None = None) -> None:
        """``start``: to ``reviewing`` from one of ``statuses`` (documented default), else 409."""
        with self.lock:
            self.tick()
            ann = self._annotation(annotation_id)
            allowed = START_STATUSES if statuses is None else tuple(statuses)
            if ann.status not in allowed:
                raise ApiError(409, f"Annotation is {ann.status}, not one of {', '.join(allowed)}.")
            if ann.status != "reviewing":
                ann.status_before_start = ann.status
            self._set_status(ann, "reviewing", by_user=True)
            self._emit_content(ann, "started", [])

    def _require_started(self, ann: Annotation, verb: str) -> None:
        if ann.status != "reviewing":
            raise ApiError(
                409, f"Cannot {verb} an annotation in status {ann.status}; start it first."
            )

    def confirm(self, annotation_id: int) -> None:
        """``confirm`` a started annotation: ``confirmed`` or export (``_process_confirmed``)."""
        with self.lock:
            self.tick()
            ann = self._annotation(annotation_id)
            self._require_started(ann, "confirm")
            ann.modifier_id = USER
            self._emit_content(ann, "confirm", [])
            self._process_confirmed(ann, immediate=True)

    def cancel(self, annotation_id: int) -> None:
        """``cancel``: back to the status the annotation had before ``start``."""
        with self.lock:
            self.tick()
            ann = self._annotation(annotation_id)
            self._require_started(ann, "cancel")
            self._set_status(ann, ann.status_before_start or "to_review", by_user=True)

    def postpone(self, annotation_id: int) -> None:
        """``postpone`` (the source statuses are ours; the reference lists none)."""
        with self.lock:
            self.tick()
            ann = self._annotation(annotation_id)
            allowed = ("to_review", "reviewing", "confirmed", "failed_export", "postponed")
            if ann.status not in allowed:
                raise ApiError(409, f"Cannot postpone an annotation in status {ann.status}.")
            self._set_status(ann, "postponed", by_user=True)

    def delete(self, annotation_id: int) -> None:
        """``delete``: mark ``deleted`` (the annotation stays readable, as in Rossum)."""
        with self.lock:
            self.tick()
            ann = self._annotation(annotation_id)
            if ann.status in ("purged", "created"):
                raise ApiError(409, f"Cannot delete an annotation in status {ann.status}.")
            self._set_status(ann, "deleted", by_user=True)

    def reject(self, annotation_id: int, note: str = "", base: str = "") -> dict[str, Any]:
        """``reject`` with a rejection note; answers ``{"status", "note"}``."""
        with self.lock:
            self.tick()
            ann = self._annotation(annotation_id)
            if ann.status not in ("to_review", "reviewing", "postponed", "confirmed"):
                raise ApiError(409, f"Cannot reject an annotation in status {ann.status}.")
            note_id = self._next_id("note")
            base = base or self.base_url
            self.notes[note_id] = {
                "id": note_id,
                "type": "rejection",
                "metadata": {},
                "content": note,
                "created_at": iso(self.clock.now()),
                "creator_id": USER,
                "annotation_id": ann.id,
            }
            self._set_status(ann, "rejected", by_user=True)
            return {"status": "rejected", "note": f"{base}/notes/{note_id}"}

    def patch_annotation(self, annotation_id: int, data: Mapping[str, Any]) -> None:
        """PATCH/PUT: ``status`` (see ``PATCH_TRANSITIONS``), ``metadata``, ``messages``."""
        with self.lock:
            self.tick()
            ann = self._annotation(annotation_id)
            errors: dict[str, list[str]] = {}
            if "metadata" in data and not isinstance(data["metadata"], dict):
                errors["metadata"] = ["Expected a dictionary of items."]
            elif "metadata" in data and len(json.dumps(data["metadata"])) > 4096:
                errors["metadata"] = ["Metadata may be at most 4 kB."]
            if "messages" in data and not (
                isinstance(data["messages"], list)
                and all(isinstance(m, dict) for m in data["messages"])
            ):
                errors["messages"] = ["Expected a list of message objects."]
            target = data.get("status")
            if target is not None and target != ann.status and target not in PATCH_TRANSITIONS:
                allowed = ", ".join(sorted(PATCH_TRANSITIONS))
                errors["status"] = [f"Status {target!r} cannot be set by PATCH ({allowed})."]
            if errors:
                raise ApiError(400, errors)
            if target is not None and target != ann.status:
                if ann.status not in PATCH_TRANSITIONS[target]:
                    raise ApiError(409, f"Cannot change status from {ann.status} to {target}.")
            if "metadata" in data:
                ann.metadata = copy.deepcopy(data["metadata"])
            if "messages" in data:
                ann.messages = copy.deepcopy(data["messages"])
            ann.modifier_id = USER
            ann.stamps["modified_at"] = self.clock.now()
            if target is not None and target != ann.status:
                if target == "exporting":
                    self._export(ann, immediate=False)
                else:
                    self._set_status(ann, target, by_user=True)

    # ------------------------------------------------------------------ content

    def content_json(self, annotation_id: int, base: str) -> dict[str, Any]:
        """``GET content``: the tree, plus the deprecated ``results`` copy."""
        with self.lock:
            self.tick()
            ann = self._annotation(annotation_id)
            tree = content.render_tree(ann.content, f"{base}/annotations/{ann.id}")
            return {"content": tree, "results": copy.deepcopy(tree)}

    def datapoint_json(self, annotation_id: int, node_id: int, base: str) -> dict[str, Any]:
        with self.lock:
            ann = self._annotation(annotation_id)
            for node in content.render_tree(ann.content, f"{base}/annotations/{ann.id}"):
                for found in content.walk([node]):
                    if found["id"] == node_id:
                        return found
            raise ApiError(404, "Not found.")

    def operations(self, annotation_id: int, operations: Any) -> list[int]:
        """``content/operations``: all or nothing; 400 on an unknown id or a bad operation.
        Returns the ids of the nodes it changed (added rows with all their cells)."""
        if not isinstance(operations, list):
            raise ApiError(400, {"operations": ["Expected a list of operations."]})
        with self.lock:
            self.tick()
            ann = self._annotation(annotation_id)
            self._require_started(ann, "change the data of")
            try:
                tree, touched = content.apply_operations(
                    ann.content, operations, self.schema_content, self._node_id
                )
            except content.ContentError as exc:
                raise ApiError(400, {"operations": [str(exc)]}) from None
            ann.content = tree
            ann.modifier_id = USER
            ann.stamps["modified_at"] = self.clock.now()
            if touched:
                self._emit_content(ann, "updated", touched)
            return touched

    def patch_datapoint(self, annotation_id: int, node_id: int, data: Any) -> None:
        """``PATCH content/{id}``: one datapoint, same rules as a ``replace`` operation."""
        if not isinstance(data, dict):
            raise ApiError(400, {"detail": "Expected an object."})
        self.operations(annotation_id, [{"op": "replace", "id": node_id, "value": data}])

    def document(self, document_id: int) -> Document:
        with self.lock:
            document = self.documents.get(document_id)
            if document is None:
                raise ApiError(404, "Not found.")
            return document

    def get_annotation(self, annotation_id: int) -> Annotation:
        with self.lock:
            self.tick()
            return self._annotation(annotation_id)

    # ------------------------------------------------------------------ export

    def export(
        self, annotations: list[Annotation], to_status: str | None
    ) -> list[tuple[Annotation, list[dict[str, Any]]]]:
        """Move the page being exported to ``to_status`` and return it with its flat content."""
        with self.lock:
            if to_status is not None:
                for ann in annotations:
                    if ann.status in ("exported", "exporting"):
                        continue  # "left untouched"
                    if to_status == "exporting":
                        self._export(ann, immediate=False)
                    else:
                        ann.stamps["confirmed_at"] = (
                            ann.stamps.get("confirmed_at") or self.clock.now()
                        )
                        self._set_status(ann, "exported", by_user=True)
            exportable = self.exportable
            return [(a, content.export_tree(a.content, exportable)) for a in annotations]

    def exportable(self, schema_id: str) -> bool:
        """Datapoints with ``can_export: false`` stay out of exports."""
        return bool(self._schema_nodes.get(schema_id, {}).get("can_export", True))
