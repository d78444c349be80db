"""JSON renderings of the emulator's objects, as the API reference shows them (mixed into
``EmulatorState``; every URL is built from the request's base URL)."""

from __future__ import annotations

import copy
import threading
from collections import Counter
from typing import TYPE_CHECKING, Any

from connectors.emulation.clock import Clock
from connectors.vendors.rossum.emulator_model import (
    ADMIN_GROUP,
    BY_FIELDS,
    COUNTED_STATUSES,
    ORG,
    QUEUE,
    SCHEMA,
    TIMESTAMPS,
    USER,
    WORKSPACE,
    Annotation,
    ApiError,
    Document,
    Page,
    Upload,
    iso,
)

if TYPE_CHECKING:
    from connectors.vendors.rossum.emulator import EmulatorOptions


class Views:
    """The ``*_json`` methods of ``EmulatorState``."""

    # state provided by EmulatorState (like the other methods these call)
    lock: threading.RLock
    options: EmulatorOptions
    clock: Clock
    queue: dict[str, Any]
    schema_content: list[dict[str, Any]]
    annotations: dict[int, Annotation]
    documents: dict[int, Document]
    hooks: dict[int, dict[str, Any]]
    notes: dict[int, dict[str, Any]]
    upload_records: dict[int, Upload]
    tasks: dict[int, int]

    def organization_json(self, base: str) -> dict[str, Any]:
        return {
            "id": ORG,
            "url": f"{base}/organizations/{ORG}",
            "name": "Emulated Organization",
            "workspaces": [f"{base}/workspaces/{WORKSPACE}"],
            "users": [f"{base}/users/{USER}"],
            "organization_group": f"{base}/organization_groups/1",
            "ui_settings": {},
            "metadata": {},
            "created_at": iso(self.queue["modified_at"]),
            "trial_expires_at": None,
            "is_trial": False,
            "oidc_provider": None,
            "creator": f"{base}/users/{USER}",
            "modified_by": None,
            "modified_at": None,
        }

    def workspace_json(self, base: str) -> dict[str, Any]:
        return {
            "id": WORKSPACE,
            "name": "Emulated Workspace",
            "url": f"{base}/workspaces/{WORKSPACE}",
            "autopilot": False,
            "organization": f"{base}/organizations/{ORG}",
            "queues": [f"{base}/queues/{QUEUE}"],
            "metadata": {},
        }

    def user_json(self, base: str) -> dict[str, Any]:
        name = self.options.username
        return {
            "id": USER,
            "url": f"{base}/users/{USER}",
            "first_name": "Emulator",
            "last_name": "User",
            "email": name,
            "phone_number": None,
            "date_joined": iso(self.queue["modified_at"]),
            "username": name,
            "groups": [f"{base}/groups/{ADMIN_GROUP}"],
            "organization": f"{base}/organizations/{ORG}",
            "queues": [f"{base}/queues/{QUEUE}"],
            "is_active": True,
            "last_login": None,
            "ui_settings": {},
            "metadata": {},
            "oidc_id": None,
            "deleted": False,
            "auth_type": "password",
        }

    def groups_json(self, base: str) -> list[dict[str, Any]]:
        names = ["viewer", "annotator", "admin", "manager", "annotator_limited"]
        return [{"id": i, "url": f"{base}/groups/{i}", "name": n} for i, n in enumerate(names, 1)]

    def schema_json(self, base: str) -> dict[str, Any]:
        return {
            "id": SCHEMA,
            "name": "Invoice schema (docrelay emulator)",
            "url": f"{base}/schemas/{SCHEMA}",
            "queues": [f"{base}/queues/{QUEUE}"],
            "content": copy.deepcopy(self.schema_content),
            "metadata": {},
            "modified_by": None,
            "modified_at": iso(self.queue["modified_at"]),
        }

    def queue_json(self, base: str) -> dict[str, Any]:
        """Queue 1 with live ``counts`` and the hooks attached to it."""
        with self.lock:
            counts = Counter(a.status for a in self.annotations.values())
            q = self.queue
            return {
                "id": QUEUE,
                "name": q["name"],
                "url": f"{base}/queues/{QUEUE}",
                "workspace": f"{base}/workspaces/{WORKSPACE}",
                "connector": None,
                "webhooks": [],
                "hooks": [
                    f"{base}/hooks/{h['id']}" for h in self.hooks.values() if QUEUE in h["_queues"]
                ],
                "schema": f"{base}/schemas/{SCHEMA}",
                "inbox": None,
                "users": [f"{base}/users/{USER}"],
                "session_timeout": q["session_timeout"],
                "rir_url": None,
                "rir_params": None,
                "dedicated_engine": None,
                "generic_engine": None,
                "engine": None,
                "counts": {s: counts.get(s, 0) for s in COUNTED_STATUSES},
                "default_score_threshold": q["default_score_threshold"],
                "automation_enabled": q["automation_enabled"],
                "automation_level": q["automation_level"],
                "locale": q["locale"],
                "metadata": copy.deepcopy(q["metadata"]),
                "use_confirmed_state": q["use_confirmed_state"],
                "document_lifetime": q["document_lifetime"],
                "delete_after": None,
                "status": "active",
                "modified_by": f"{base}/users/{USER}",
                "modified_at": iso(q["modified_at"]),
                "settings": copy.deepcopy(q["settings"]),
                "workflows": [],
                "training_enabled": True,
            }

    def annotation_json(self, ann: Annotation, base: str) -> dict[str, Any]:
        """The annotation object (reference §5.1 field set; ``messages`` defaults to ``[]``)."""
        user = f"{base}/users/{USER}"
        stamps = {key: iso(ann.stamps.get(key)) for key in TIMESTAMPS}
        bys = {
            key: f"{base}/users/{ann.bys[key]}" if ann.bys.get(key) else None for key in BY_FIELDS
        }
        url = f"{base}/annotations/{ann.id}"
        return {
            "document": f"{base}/documents/{ann.document_id}",
            "id": ann.id,
            "queue": f"{base}/queues/{ann.queue_id}",
            "schema": f"{base}/schemas/{SCHEMA}",
            "relations": [],
            "pages": [f"{base}/pages/{p}" for p in ann.page_ids],
            "creator": user,
            "modifier": user if ann.modifier_id else None,
            "modified_by": user if ann.modifier_id else None,
            "created_at": iso(ann.created_at),
            "arrived_at": iso(ann.created_at),
            **stamps,
            **bys,
            "status": ann.status,
            "rir_poll_id": ann.rir_poll_id,
            "messages": copy.deepcopy(ann.messages),
            "url": url,
            "content": f"{url}/content",
            "time_spent": 0.0,
            "metadata": copy.deepcopy(ann.metadata),
            "automated": ann.automated,
            "automatically_rejected": False,
            "related_emails": [],
            "email": None,
            "email_thread": None,
            "has_email_thread_with_replies": False,
            "has_email_thread_with_new_replies": False,
            "automation_blocker": None,
            "suggested_edit": None,
            "organization": f"{base}/organizations/{ORG}",
            "prediction": None,
            "assignees": [],
            "labels": [],
            "restricted_access": False,
            "training_enabled": True,
            "einvoice": False,
        }

    def document_json(self, document: Document, base: str) -> dict[str, Any]:
        return {
            "id": document.id,
            "url": f"{base}/documents/{document.id}",
            "s3_name": document.s3_name,
            "parent": f"{base}/documents/{document.parent_id}" if document.parent_id else None,
            "email": None,
            "annotations": [f"{base}/annotations/{a}" for a in document.annotation_ids],
            "mime_type": document.mime_type,
            "creator": f"{base}/users/{USER}",
            "created_at": iso(document.created_at),
            "arrived_at": iso(document.created_at),
            "original_file_name": document.file_name,
            "content": f"{base}/documents/{document.id}/content",
            "attachment_status": None,
            "metadata": copy.deepcopy(document.metadata),
        }

    def page_json(self, page: Page, base: str) -> dict[str, Any]:
        return {
            "id": page.id,
            "url": f"{base}/pages/{page.id}",
            "annotation": f"{base}/annotations/{page.annotation_id}",
            "number": page.number,
            "rotation_deg": 0,
            "mime_type": "image/png",
            "s3_name": page.s3_name,
            "content": f"{base}/pages/{page.id}/content",
            "metadata": {},
            "width": page.width,
            "height": page.height,
        }

    def note_json(self, note_id: int, base: str) -> dict[str, Any]:
        with self.lock:
            note = self.notes.get(note_id)
            if note is None:
                raise ApiError(404, "Not found.")
            return {
                "id": note["id"],
                "url": f"{base}/notes/{note['id']}",
                "type": note["type"],
                "metadata": note["metadata"],
                "content": note["content"],
                "created_at": note["created_at"],
                "creator": f"{base}/users/{note['creator_id']}",
                "modified_at": None,
                "modifier": None,
                "modified_by": None,
                "annotation": f"{base}/annotations/{note['annotation_id']}",
            }

    def hook_json(self, hook: dict[str, Any], base: str) -> dict[str, Any]:
        shown = {k: copy.deepcopy(v) for k, v in hook.items() if not k.startswith("_")}
        shown.pop("secrets", None)  # write-only
        shown["url"] = f"{base}/hooks/{hook['id']}"
        shown["queues"] = [f"{base}/queues/{q}" for q in hook["_queues"]]
        shown["created_by"] = shown["modified_by"] = f"{base}/users/{USER}"
        return shown

    def upload_json(self, upload_id: int, base: str) -> dict[str, Any]:
        """The upload; ``documents``/``annotations`` are listed once its task has succeeded."""
        with self.lock:
            self.tick()
            upload = self.upload_records.get(upload_id)
            if upload is None:
                raise ApiError(404, "Not found.")
            done = upload.done_at <= self.clock.now()
            return {
                "id": upload.id,
                "url": f"{base}/uploads/{upload.id}",
                "queue": f"{base}/queues/{upload.queue_id}",
                "organization": f"{base}/organizations/{ORG}",
                "creator": f"{base}/users/{USER}",
                "created_at": iso(upload.created_at),
                "email": None,
                "documents": [f"{base}/documents/{d}" for d in upload.document_ids] if done else [],
                "additional_documents": [],
                "annotations": [f"{base}/annotations/{a}" for a in upload.annotation_ids]
                if done
                else [],
            }

    def task_json(self, task_id: int, base: str) -> dict[str, Any]:
        """The ``upload_created`` task: ``running`` for a moment, then ``succeeded``."""
        with self.lock:
            upload_id = self.tasks.get(task_id)
            if upload_id is None:
                raise ApiError(404, "Not found.")
            upload = self.upload_records[upload_id]
            done = upload.done_at <= self.clock.now()
            upload_url = f"{base}/uploads/{upload_id}"
            return {
                "id": task_id,
                "url": f"{base}/tasks/{task_id}",
                "type": "upload_created",
                "status": "succeeded" if done else "running",
                "expires_at": iso(upload.created_at + 86400),
                "detail": None,
                "content": {"upload": upload_url},
                "code": None,
                "result_url": upload_url if done else None,
            }
