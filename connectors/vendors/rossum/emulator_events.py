"""Hooks as objects and the events they receive: which hook gets which event, the payloads
(``annotation_status`` and ``annotation_content``), and what a hook's answer does (operations,
messages, export outcome), mixed into ``EmulatorState``. Delivery is the kit's dispatcher with
Rossum's rules from ``emulator_hooks``.
"""

from __future__ import annotations

import copy
import json
import threading
import uuid
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from connectors.emulation.callbacks import Callback, CallbackDispatcher
from connectors.emulation.clock import Clock
from connectors.vendors.rossum import emulator_content as content
from connectors.vendors.rossum.emulator_hooks import AsyncHookPolling, hook_callback
from connectors.vendors.rossum.emulator_model import (
    QUEUE,
    Annotation,
    ApiError,
    Document,
    iso,
)

if TYPE_CHECKING:
    from connectors.vendors.rossum.emulator import EmulatorOptions

HOOK_EVENTS = frozenset(
    {
        "annotation_status", "annotation_status.changed",
        "annotation_content", "annotation_content.initialize", "annotation_content.started",
        "annotation_content.user_update", "annotation_content.updated",
        "annotation_content.confirm", "annotation_content.export",
        "upload", "upload.created", "email", "email.received",
        "invocation", "invocation.scheduled", "invocation.manual",
    }
)  # fmt: skip
INTERACTIVE_ACTIONS = frozenset({"started", "updated", "user_update", "confirm"})


class HookEvents:
    """Hook CRUD, event emission and hook results for ``EmulatorState``."""

    # state provided by EmulatorState (like the other methods these call)
    lock: threading.RLock
    options: EmulatorOptions
    base_url: str
    hooks: dict[int, dict[str, Any]]
    annotations: dict[int, Annotation]
    documents: dict[int, Document]
    schema_content: list[dict[str, Any]]
    dispatcher: CallbackDispatcher
    clock: Clock

    def create_hook(self, data: Mapping[str, Any]) -> dict[str, Any]:
        """``POST hooks``: validate like the API would (400 with per-field errors) and store."""
        errors: dict[str, list[str]] = {}
        if not isinstance(data.get("name"), str) or not data.get("name"):
            errors["name"] = ["This field is required."]
        kind = data.get("type", "webhook")
        if kind not in ("webhook", "function"):
            errors["type"] = ['"webhook" or "function".']
        events = data.get("events", [])
        if not isinstance(events, list) or any(e not in HOOK_EVENTS for e in events):
            errors["events"] = [f"Known events: {', '.join(sorted(HOOK_EVENTS))}."]
        config = data.get("config", {})
        if not isinstance(config, dict):
            errors["config"] = ["Expected an object."]
        elif kind == "webhook" and not config.get("url"):
            errors["config"] = ["config.url is required for a webhook."]
        queues = self._queue_ids(data.get("queues", []), errors)
        if errors:
            raise ApiError(400, errors)
        with self.lock:
            hook_id = self._next_id("hook")
            now = iso(self.clock.now())
            hook = {
                "id": hook_id,
                "name": data["name"],
                "type": kind,
                "metadata": copy.deepcopy(data.get("metadata") or {}),
                "_queues": queues,
                "run_after": list(data.get("run_after") or []),
                "active": bool(data.get("active", True)),
                "events": list(events),
                "sideload": list(data.get("sideload") or []),
                "config": copy.deepcopy(config),
                "settings": copy.deepcopy(data.get("settings") or {}),
                "settings_schema": data.get("settings_schema"),
                "secrets": copy.deepcopy(data.get("secrets") or {}),
                "test": copy.deepcopy(data.get("test") or {}),
                "description": data.get("description"),
                "extension_source": data.get("extension_source", "custom"),
                "guide": data.get("guide"),
                "read_more_url": data.get("read_more_url"),
                "extension_image_url": data.get("extension_image_url"),
                "token_owner": data.get("token_owner"),
                "token_lifetime_s": data.get("token_lifetime_s"),
                "hook_template": None,
                "created_at": now,
                "modified_at": now,
            }
            self.hooks[hook_id] = hook
            return hook

    def update_hook(self, hook_id: int, data: Mapping[str, Any]) -> dict[str, Any]:
        """``PATCH``/``PUT hooks/{id}``: the merged hook is validated as a new one would be."""
        with self.lock:
            hook = self.hooks.get(hook_id)
            if hook is None:
                raise ApiError(404, "Not found.")
            merged = {**self.hook_json(hook, self.base_url), **data}
            merged["secrets"] = data.get("secrets", hook["secrets"])
            checked = self.create_hook(merged)  # validates; then takes the old id
            del self.hooks[checked["id"]]
            checked["id"] = hook_id
            checked["created_at"] = hook["created_at"]
            self.hooks[hook_id] = checked
            return checked

    def delete_hook(self, hook_id: int) -> None:
        with self.lock:
            if self.hooks.pop(hook_id, None) is None:
                raise ApiError(404, "Not found.")

    def _queue_ids(self, urls: Any, errors: dict[str, list[str]]) -> list[int]:
        ids = []
        for url in urls if isinstance(urls, list) else [None]:
            try:
                queue_id = int(str(url).rstrip("/").rsplit("/", 1)[-1])
            except ValueError:
                queue_id = -1
            if queue_id != QUEUE:
                errors["queues"] = [f"Invalid hyperlink - object does not exist: {url!r}."]
            ids.append(queue_id)
        return ids

    def _hooks_for(self, queue_id: int, event: str, action: str) -> list[dict[str, Any]]:
        return [
            h
            for h in self.hooks.values()
            if h["active"]
            and h["type"] == "webhook"
            and queue_id in h["_queues"]
            and (event in h["events"] or f"{event}.{action}" in h["events"])
        ]

    def _emit_status(self, ann: Annotation, previous: str) -> None:
        for hook in self._hooks_for(ann.queue_id, "annotation_status", "changed"):
            payload = self._payload(hook, "annotation_status", "changed", ann)
            payload["annotation"]["previous_status"] = previous
            self._deliver(hook, payload, ann)

    def _emit_content(self, ann: Annotation, action: str, updated: list[int]) -> None:
        for hook in self._hooks_for(ann.queue_id, "annotation_content", action):
            payload = self._payload(hook, "annotation_content", action, ann)
            payload["annotation"]["content"] = content.render_tree(
                ann.content, payload["annotation"]["url"]
            )
            payload["updated_datapoints"] = list(updated)
            self._deliver(hook, payload, ann)

    def _payload(
        self, hook: dict[str, Any], event: str, action: str, ann: Annotation
    ) -> dict[str, Any]:
        base = self.base_url
        payload: dict[str, Any] = {
            "request_id": str(uuid.uuid4()),
            "timestamp": iso(self.clock.now()),
            "base_url": base.rsplit(self.options.base_path, 1)[0],
            "hook": f"{base}/hooks/{hook['id']}",
            "settings": copy.deepcopy(hook["settings"]),
            "secrets": copy.deepcopy(hook["secrets"]),
            "action": action,
            "event": event,
            "annotation": self.annotation_json(ann, base),
            "document": self.document_json(self.documents[ann.document_id], base),
        }
        if hook.get("token_owner"):
            lifetime = hook.get("token_lifetime_s") or 600
            key = self.login(self.options.username, self.options.password, lifetime)
            payload["rossum_authorization_token"] = key
        if "queues" in hook["sideload"]:
            payload["queues"] = [self.queue_json(base)]
        if "schemas" in hook["sideload"]:
            payload["schemas"] = [self.schema_json(base)]
        return payload

    def _deliver(self, hook: dict[str, Any], payload: dict[str, Any], ann: Annotation) -> None:
        config = hook["config"]
        polling = AsyncHookPolling(
            self.clock,
            poll_interval=self.options.hook_poll_interval,
            max_polling_time=float(config.get("max_polling_time_s", 300)),
            retry_after_polling_failure=bool(config.get("retry_after_polling_failure", True)),
        )
        tags = {
            "hook": hook["id"],
            "event": payload["event"],
            "action": payload["action"],
            "annotation": ann.id,
            "request_id": payload["request_id"],
        }
        self.dispatcher.submit(
            hook_callback(
                url=str(config["url"]),
                body=json.dumps(payload, separators=(",", ":")).encode(),
                secret=config.get("secret") or None,
                tags=tags,
                interactive=payload["action"] in INTERACTIVE_ACTIONS,
                retry_count=int(config.get("retry_count", 4)),
                retry_delays=self.options.hook_retry_delays,
                timeout=float(config.get("timeout_s", 30)),
                retry_on_any_non_2xx=bool(config.get("retry_on_any_non_2xx", False)),
                polling=polling,
            )
        )

    def _hook_result(self, callback: Callback, ok: bool, body: Any) -> None:
        """Apply what an ``annotation_content`` hook answered: operations, messages, and for
        ``export`` the outcome (``exported`` or ``failed_export``)."""
        event, action = callback.tags["event"], callback.tags["action"]
        annotation_id = callback.tags["annotation"]
        if event != "annotation_content" or not isinstance(annotation_id, int):
            return
        with self.lock:
            ann = self.annotations.get(annotation_id)
            if ann is None:
                return
            answer = body if isinstance(body, dict) else {}
            messages = answer.get("messages")
            if isinstance(messages, list):
                ann.messages = [m for m in messages if isinstance(m, dict)]
            operations = answer.get("operations")
            if ok and isinstance(operations, list) and operations:
                try:
                    ann.content, _ = content.apply_operations(
                        ann.content, operations, self.schema_content, self._node_id
                    )
                except content.ContentError as exc:
                    ann.messages.append({"type": "error", "content": f"Hook operations: {exc}"})
            if action != "export" or ann.status != "exporting":
                return
            errors = [m for m in ann.messages if m.get("type") == "error"]
            if ok and not errors:
                self._set_status(ann, "exported")
                return
            if not ok and not errors:
                text = f"Export hook {callback.tags['hook']} failed: {callback.last_error}"
                ann.messages.append({"type": "error", "content": text})
            self._set_status(ann, "failed_export")
