"""What docrelay changes at Rossum: feedback writes, export status, retention deletes.

Every change follows the reference's recipe: ``start`` the annotation (never taking over a
person's session), change it, ``confirm``; on failure ``cancel`` hands it back. Each step is
safe to repeat: a refusal that may mean "already done" is checked by reading the annotation.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from connectors.base import Correction, CorrectionOutcome
from connectors.errors import AuthFailed, NotReady, TerminalError, TransientError
from connectors.vendors.rossum.annotations import (
    DONE,
    GONE,
    IMPORTING,
    REFUSED,
    STARTABLE,
    RecentAnnotations,
    id_or,
)
from connectors.vendors.rossum.client import RossumClient
from connectors.vendors.rossum.settings import RossumSettings

log = logging.getLogger(__name__)

MAX_MESSAGE = 4096
"""Rossum's limit for a message's ``content`` (contract §13)."""


class RossumWorkflow:
    """Annotation changes for one profile; the vendor resolves references to ids first."""

    def __init__(
        self,
        client: RossumClient,
        settings: RossumSettings,
        field_map: Mapping[str, str],
        recent: RecentAnnotations,
    ) -> None:
        self.client = client
        self.settings = settings
        self.field_map = field_map
        self.recent = recent
        self._user_id: int | None = None

    # ------------------------------------------------------------------ feedback

    def send_feedback(
        self, annotation_id: int, corrections: list[Correction]
    ) -> list[CorrectionOutcome]:
        """Write corrected values into the annotation and confirm it (start → replace → confirm).

        Safe to repeat: replacing with the same value changes nothing, and an annotation that is
        already confirmed/exported with these values counts as done. A field the queue's schema
        has no datapoint for is refused, the others go through.
        """
        annotation = self.recent.recall(annotation_id) or self.client.annotation(annotation_id)
        if annotation is None:
            raise TerminalError(f"annotation {annotation_id} no longer exists at Rossum")
        status = str(annotation.get("status") or "")
        points = _top_level_datapoints(self.client.content(annotation_id))
        ops: list[dict[str, Any]] = []
        unchanged = True
        missing: list[str] = []
        for correction in corrections:
            found = self._datapoint_for(correction, points)
            if found is None:
                missing.append(correction.field)
                continue
            new_value = correction.value or ""
            unchanged = unchanged and _current_text(found) == new_value
            ops.append(
                {
                    "op": "replace",
                    "id": found["id"],
                    "value": {"content": {"value": new_value}, "validation_sources": ["human"]},
                }
            )
        refused = [
            CorrectionOutcome(name, False, "the Rossum queue's schema has no datapoint for it")
            for name in missing
        ]
        if missing:
            log.warning("Rossum's schema has no datapoint for %s; not sent", ", ".join(missing))
        if not ops:
            return refused
        if unchanged and status in DONE:
            return refused  # a repeat after the first send went through
        self._begin(annotation_id, annotation, "corrections")
        try:
            self.client.request(
                "POST", f"annotations/{annotation_id}/content/operations", json={"operations": ops}
            )
            self._confirm(annotation_id)
        except BaseException:
            self._cancel(annotation_id)
            raise
        return refused

    def _datapoint_for(
        self, correction: Correction, points: Mapping[str, dict[str, Any]]
    ) -> dict[str, Any] | None:
        candidates: list[str] = []
        if correction.vendor_label:
            candidates.append(correction.vendor_label)
        candidates += [sid for sid, name in self.field_map.items() if name == correction.field]
        if correction.field.startswith("extra."):
            candidates.append(correction.field[len("extra.") :])
        for schema_id in candidates:
            if schema_id in points:
                return points[schema_id]
        return None

    def _ensure_startable(self, status: str, what: str) -> None:
        if status in STARTABLE:
            return
        if status in IMPORTING:
            raise NotReady("Rossum is still importing the document")
        if status in ("reviewing", "in_workflow"):
            raise TransientError(
                f"the annotation is {status} in Rossum; {what} wait until that is over"
            )
        raise TerminalError(f"Rossum does not take {what} for an annotation in status {status!r}")

    def _begin(self, annotation_id: int, annotation: Mapping[str, Any], what: str) -> None:
        """``start`` the annotation for our edits, never taking over a person's session.

        A ``reviewing`` annotation is ours to continue only when Rossum names our user as its
        modifier or assignee (an earlier attempt of ours started it and then failed).
        """
        status = str(annotation.get("status") or "")
        own = status == "reviewing" and self._own_session(annotation)
        if not own:
            self._ensure_startable(status, what)
        statuses = [*STARTABLE, "reviewing"] if own else list(STARTABLE)
        ref = f"annotations/{annotation_id}/start"
        response = self.client.request("POST", ref, json={"statuses": statuses}, allow=(409,))
        if response.status_code != 409:
            return
        again = self.client.annotation(annotation_id)  # a retried start that had gone through?
        if again is not None and again.get("status") == "reviewing" and self._own_session(again):
            return
        what = "would not let us start the annotation"
        raise TransientError(self.client.describe("POST", self.client.path(ref), response, what))

    def _own_session(self, annotation: Mapping[str, Any]) -> bool:
        me = self._me()
        if me is None:
            return False
        holders = [annotation.get("modifier"), *(annotation.get("assignees") or [])]
        return any(id_or(holder, -1) == me for holder in holders)

    def _me(self) -> int | None:
        """Our user id at Rossum (``GET /v1/auth/user``), asked once; None if unknown."""
        if self._user_id is None:
            response = self.client.request("GET", "auth/user", allow=REFUSED)
            user = (
                {}
                if response.status_code in REFUSED
                else self.client.json_object(response, "GET", "auth/user")
            )
            user_id = user.get("id")
            self._user_id = user_id if isinstance(user_id, int) else id_or(user.get("url"), -1)
        return self._user_id if self._user_id >= 0 else None

    def _confirm(self, annotation_id: int) -> None:
        """Confirm; a refusal counts as success when the annotation is confirmed or beyond
        already (confirm is not documented as idempotent, a repeat may get 409)."""
        ref = f"annotations/{annotation_id}/confirm"
        response = self.client.request("POST", ref, json={}, allow=REFUSED)
        if response.status_code not in REFUSED:
            return
        annotation = self.client.annotation(annotation_id)
        if annotation is not None and annotation.get("status") in (*DONE, "in_workflow"):
            return
        raise TerminalError(
            self.client.describe(
                "POST", self.client.path(ref), response, "would not confirm the annotation"
            )
        )

    def _cancel(self, annotation_id: int) -> None:
        """Hand a started annotation back (best effort: our session would time out anyway)."""
        try:
            self.client.request(
                "POST", f"annotations/{annotation_id}/cancel", json={}, allow=REFUSED
            )
        except (TransientError, TerminalError, AuthFailed) as exc:
            log.debug("could not cancel annotation %s: %s", annotation_id, exc)

    # ------------------------------------------------------------------ export status

    def report_delivery(self, annotation_id: int, ok: bool, message: str | None) -> None:
        """Move the annotation to ``exported``, or record the failure (``failed_export``).

        Idempotent: an annotation already in the target state is left alone.
        """
        annotation = self.recent.recall(annotation_id, "report") or self.client.annotation(
            annotation_id
        )
        if annotation is None:
            log.info("annotation %s is gone at Rossum; export status not reported", annotation_id)
            return
        status = str(annotation.get("status") or "")
        if ok:
            self._mark_exported(annotation_id, annotation, status)
        else:
            self._mark_failed(annotation_id, status, message)

    def _mark_exported(
        self, annotation_id: int, annotation: Mapping[str, Any], status: str
    ) -> None:
        if status in ("exported", "exporting"):
            return
        if status in ("to_review", "postponed") or (
            status == "reviewing" and self._own_session(annotation)
        ):
            self._begin(annotation_id, annotation, "export status changes")
            try:
                self._confirm(annotation_id)
            except BaseException:
                self._cancel(annotation_id)
                raise
            after = self.client.annotation(annotation_id)
            if after is None:
                return
            annotation, status = after, str(after.get("status") or "")
            if status in ("exported", "exporting", "in_workflow"):
                return
        if status == "confirmed":
            self._export_confirmed(annotation_id, annotation)
            return
        if status in IMPORTING or status in ("reviewing", "in_workflow"):
            self._ensure_startable(status, "export status changes")
        log.info("annotation %s is %s at Rossum; not marked exported", annotation_id, status)

    def _export_confirmed(self, annotation_id: int, annotation: Mapping[str, Any]) -> None:
        """``confirmed`` → ``exported`` with the documented queue export (``to_status``), or a
        PATCH where that endpoint is refused."""
        queue = id_or(annotation.get("queue"), self.settings.queue)
        response = self.client.request(
            "POST",
            f"queues/{queue}/export",
            params={
                "id": annotation_id,
                "status": "confirmed",
                "to_status": "exported",
                "format": "json",
            },
            allow=REFUSED,
        )
        if response.status_code not in REFUSED:
            return
        self.client.request("PATCH", f"annotations/{annotation_id}", json={"status": "exported"})

    def _mark_failed(self, annotation_id: int, status: str, message: str | None) -> None:
        if status == "failed_export" or status in GONE:
            return
        text = f"docrelay could not deliver the export: {message or 'no reason given'}"
        messages = [{"type": "error", "content": self.client.scrub(text)[:MAX_MESSAGE]}]
        ref = f"annotations/{annotation_id}"
        response = self.client.request(
            "PATCH", ref, json={"status": "failed_export", "messages": messages}, allow=REFUSED
        )
        if response.status_code not in REFUSED:
            return
        # Setting failed_export is not documented; keep the reason visible at least.
        response = self.client.request("PATCH", ref, json={"messages": messages}, allow=REFUSED)
        if response.status_code in REFUSED:
            raise TerminalError(
                self.client.describe(
                    "PATCH", self.client.path(ref), response, "refused the export failure"
                )
            )
        log.info(
            "Rossum refused status failed_export for annotation %s; message added, status %s kept",
            annotation_id,
            status,
        )

    # ------------------------------------------------------------------ retention

    def delete(self, annotation_id: int) -> None:
        """Delete the annotation at Rossum and purge it (retention); safe to repeat."""
        annotation = self.client.annotation(annotation_id)
        if annotation is None or annotation.get("status") == "purged":
            return
        if annotation.get("status") != "deleted":
            response = self.client.request(
                "POST", f"annotations/{annotation_id}/delete", json={}, allow=(404,)
            )
            if response.status_code == 404:
                return
        url = annotation.get("url")
        if not isinstance(url, str):
            url = self.client.annotation_url(annotation_id)
        response = self.client.request(
            "POST", "annotations/purge_deleted", json={"annotations": [url]}, allow=(404, 405)
        )
        if response.status_code in (404, 405):  # deleted is still done; purge is Rossum's job then
            log.warning(
                "Rossum has no purge_deleted endpoint (%s); annotation %s is deleted, not purged",
                response.status_code,
                annotation_id,
            )


# --------------------------------------------------------------------------- helpers


def _top_level_datapoints(content: list[Any]) -> dict[str, dict[str, Any]]:
    """schema id → datapoint node, outside tables; the first one wins."""
    found: dict[str, dict[str, Any]] = {}

    def walk(nodes: Any) -> None:
        if not isinstance(nodes, list):
            return
        for node in nodes:
            if not isinstance(node, dict):
                continue
            category = node.get("category")
            if category == "datapoint":
                schema_id = node.get("schema_id")
                if isinstance(schema_id, str) and "id" in node:
                    found.setdefault(schema_id, node)
            elif category not in ("multivalue", "tuple"):
                walk(node.get("children"))

    walk(content)
    return found


def _current_text(node: Mapping[str, Any]) -> str:
    body = node.get("content")
    if not isinstance(body, dict):
        return ""
    value = body.get("normalized_value") or body.get("value")
    return "" if value is None else str(value)
