"""The Gini emulator's state: clients, users and their tokens (the User Center), each user's
documents with their processing, extractions and the feedback received.

One re-entrant lock guards everything, so HTTP handlers and tests (``app.state.emulator``) can
share it. Processing is time-driven without a thread: ``tick`` (which every request calls
first) turns each document whose delay has passed from ``PENDING`` into ``COMPLETED`` or
``ERROR``. Time is the kit's ``Clock`` (tests pass a ``ManualClock``).
"""

from __future__ import annotations

import copy
import random
import threading
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from connectors.emulation import extraction as engine
from connectors.emulation.clock import SYSTEM_CLOCK, Clock
from connectors.emulation.faults import FaultInjector
from connectors.emulation.requestlog import RequestLog
from connectors.vendors.gini import emulator_content as content

if TYPE_CHECKING:
    from connectors.vendors.gini.emulator import EmulatorOptions

PENDING, COMPLETED, ERROR = "PENDING", "COMPLETED", "ERROR"


class ApiError(Exception):
    """An answer other than success: status, message, extra headers; ``body`` replaces the
    Gini error body (the User Center answers OAuth2 error objects)."""

    def __init__(
        self,
        status: int,
        message: str,
        headers: dict[str, str] | None = None,
        body: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}
        self.body = body


def oauth_error(status: int, error: str, description: str) -> ApiError:
    return ApiError(status, description, body={"error": error, "error_description": description})


@dataclass
class Token:
    value: str
    client: str
    user: str | None
    """The user's e-mail; None for a client-credentials token (User Center use only)."""
    expires_at: float


@dataclass
class Document:
    id: str
    owner: str
    name: str
    mime_type: str
    data: bytes
    created_at: float
    due_at: float
    """When processing ends (``created_at`` + delay)."""
    outcome: str
    """``COMPLETED`` or ``ERROR``: what processing will end in."""
    page_count: int
    source_classification: str
    metadata: dict[str, str]
    """The ``x-document-metadata-*`` headers of the upload, by lower-case name."""
    read: engine.Extraction
    error: str | None = None
    """Why it ends in ERROR (shown only by the admin API: Gini's document has no reason)."""
    progress: str = PENDING
    completed_at: float | None = None
    result: dict[str, Any] | None = None
    """The extractions as shown now (feedback applied), once COMPLETED."""
    layout: dict[str, Any] | None = None
    feedback: list[dict[str, Any]] = field(default_factory=list)


class GiniState:
    """Everything the emulator knows, behind one lock; see the module docstring."""

    def __init__(self, options: EmulatorOptions, clock: Clock | None = None) -> None:
        self.options = options
        self.clock = clock or SYSTEM_CLOCK
        self.lock = threading.RLock()
        self._rng = random.Random(options.seed)
        self.tokens: dict[str, Token] = {}
        self.refresh_tokens: dict[str, tuple[str, str]] = {}
        """Refresh token → (client, user)."""
        self.documents: dict[str, Document] = {}
        self.counts: Counter[str] = Counter()
        """``tokens.issued``, ``tokens.refreshed``, ``feedback`` … for the stats."""
        self.refresh_fails = False
        """While set, refresh grants answer 400 ``invalid_grant`` (admin switch)."""
        self.requests = RequestLog(self.clock)
        self.faults = FaultInjector(options, self.clock)

    # ------------------------------------------------------------------ the User Center

    def check_client(self, client: str, secret: str) -> bool:
        return (client, secret) == (self.options.client_id, self.options.client_secret)

    def _issue(self, client: str, user: str | None, *, refreshable: bool) -> dict[str, Any]:
        lifetime = self.options.token_lifetime
        token = Token(str(uuid.uuid4()), client, user, self.clock.now() + lifetime)
        self.tokens[token.value] = token
        answer: dict[str, Any] = {
            "access_token": token.value,
            "token_type": "bearer",
            "expires_in": int(lifetime),
        }
        if refreshable and user is not None and self.options.refresh_tokens:
            refresh = str(uuid.uuid4())
            self.refresh_tokens[refresh] = (client, user)
            answer["refresh_token"] = refresh
        answer["scope"] = "read write"
        return answer

    def password_grant(self, client: str, username: str, password: str) -> dict[str, Any]:
        with self.lock:
            if (username, password) != (self.options.username, self.options.password):
                raise oauth_error(400, "invalid_grant", "Bad credentials")
            self.counts["tokens.issued"] += 1
            return self._issue(client, username, refreshable=True)

    def client_grant(self, client: str) -> dict[str, Any]:
        with self.lock:
            self.counts["tokens.issued"] += 1
            return self._issue(client, None, refreshable=False)

    def refresh_grant(self, client: str, refresh_token: str) -> dict[str, Any]:
        with self.lock:
            owner = self.refresh_tokens.get(refresh_token)
            if self.refresh_fails or owner is None or owner[0] != client:
                self.counts["tokens.refresh_refused"] += 1
                raise oauth_error(400, "invalid_grant", f"Invalid refresh token: {refresh_token}")
            self.counts["tokens.refreshed"] += 1
            answer = self._issue(client, owner[1], refreshable=False)
            answer["refresh_token"] = refresh_token  # refresh tokens are reused, not rotated
            return answer

    def user_for_token(self, value: str) -> Token | None:
        """The live token, or None (unknown or expired)."""
        with self.lock:
            token = self.tokens.get(value)
            if token is None or token.expires_at <= self.clock.now():
                return None
            return token

    def expire_tokens(self) -> int:
        """Admin: every access token expires now (refresh tokens stay valid)."""
        with self.lock:
            now = self.clock.now()
            for token in self.tokens.values():
                token.expires_at = min(token.expires_at, now)
            return len(self.tokens)

    # ------------------------------------------------------------------ documents

    def create_document(
        self,
        *,
        owner: str,
        name: str,
        mime_type: str,
        data: bytes,
        page_count: int,
        read: engine.Extraction,
        metadata: dict[str, str],
    ) -> Document:
        """Store an upload (all checks done by the caller) and start its processing."""
        with self.lock:
            now = self.clock.now()
            draw = self._rng.random()
            outcome, error = COMPLETED, None
            if not read.ok:
                outcome, error = ERROR, read.error
            elif draw < self.options.error_rate:
                outcome, error = ERROR, "emulated processing error (error_rate)"
            doc = Document(
                id=str(uuid.uuid1(node=self._rng.getrandbits(48))),
                owner=owner,
                name=name,
                mime_type=mime_type,
                data=data,
                created_at=now,
                due_at=now + self.options.delay,
                outcome=outcome,
                page_count=page_count,
                source_classification=_classification(mime_type, read),
                metadata=metadata,
                read=read,
                error=error,
            )
            self.documents[doc.id] = doc
            self.tick()
            return doc

    def tick(self) -> None:
        """Finish every document whose delay has passed."""
        with self.lock:
            now = self.clock.now()
            for doc in self.documents.values():
                if doc.progress == PENDING and doc.due_at <= now:
                    self._finish(doc, doc.outcome, doc.due_at)

    def _finish(self, doc: Document, progress: str, at: float) -> None:
        doc.progress = progress
        doc.completed_at = at
        if progress == COMPLETED and doc.result is None:
            doc.result = content.extractions(doc.read)

    def force_progress(self, document_id: str, progress: Any) -> Document:
        """Admin: end a document's processing now, in COMPLETED or ERROR."""
        with self.lock:
            doc = self.documents.get(document_id)
            if doc is None:
                raise ApiError(404, f"No document {document_id}")
            if progress not in (COMPLETED, ERROR):
                raise ApiError(400, "progress must be COMPLETED or ERROR")
            if progress == ERROR:
                doc.error = doc.error or "set through the emulator's admin API"
                doc.result = None
            self._finish(doc, progress, self.clock.now())
            return doc

    def document(self, owner: str, document_id: str) -> Document:
        """The user's document, or 404 (another user's documents do not exist for them)."""
        with self.lock:
            self.tick()
            doc = self.documents.get(document_id)
            if doc is None or doc.owner != owner:
                raise ApiError(404, f"No document found under the URI for id {document_id}")
            return doc

    def completed(self, owner: str, document_id: str, what: str) -> Document:
        """The user's document if its processing is COMPLETED, else 404 (its extractions,
        layout and processed file do not exist before; the emulator's choice)."""
        doc = self.document(owner, document_id)
        if doc.progress != COMPLETED:
            raise ApiError(404, f"No {what} for document {document_id}: it is {doc.progress}")
        return doc

    def documents_of(self, owner: str) -> list[Document]:
        """The user's documents, newest first."""
        with self.lock:
            self.tick()
            found = [d for d in self.documents.values() if d.owner == owner]
            return sorted(found, key=lambda d: d.created_at, reverse=True)

    def delete_document(self, owner: str, document_id: str) -> None:
        with self.lock:
            doc = self.document(owner, document_id)
            del self.documents[doc.id]

    # ------------------------------------------------------------------ feedback

    def _record(self, doc: Document, kind: str, body: dict[str, Any]) -> None:
        doc.feedback.append({"at": self.clock.now(), "kind": kind, **body})
        self.counts["feedback"] += 1

    def batch_feedback(
        self,
        doc: Document,
        feedback: dict[str, Any],
        compound: dict[str, Any] | None,
        method: str,
    ) -> None:
        """``PUT``/``POST /documents/{id}/extractions``: checked whole, then applied whole."""
        with self.lock:
            for label, entry in feedback.items():
                _check_entry(label, entry)
            for label, rows in (compound or {}).items():
                if label != content.LINE_ITEMS:
                    raise ApiError(404, f"Unknown compound extraction {label}")
                if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
                    raise ApiError(400, f"compoundFeedback.{label} must be a list of objects")
                for row in rows:
                    for name, entry in row.items():
                        if name not in content.LINE_ITEM_LABELS:
                            raise ApiError(404, f"Unknown label {label}.{name}")
                        _check_value(content.LINE_ITEM_LABELS[name][0], entry, name)
            assert doc.result is not None
            for label, entry in feedback.items():
                self._apply(doc, label, entry)
            for label, rows in (compound or {}).items():
                doc.result["compoundExtractions"][label] = [
                    {
                        name: _shown(content.LINE_ITEM_LABELS[name][0], entry)
                        for name, entry in row.items()
                    }
                    for row in rows
                ]
            body: dict[str, Any] = {"method": method, "feedback": copy.deepcopy(feedback)}
            if compound:
                body["compoundFeedback"] = copy.deepcopy(compound)
            self._record(doc, "batch", body)

    def label_feedback(self, doc: Document, label: str, entry: Any) -> None:
        """``PUT /documents/{id}/extractions/{label}``: correct, confirm or add one label."""
        with self.lock:
            _check_entry(label, entry)
            self._apply(doc, label, entry)
            self._record(doc, "label", {"method": "PUT", "label": label, "value": entry})

    def delete_label(self, doc: Document, label: str) -> None:
        """``DELETE /documents/{id}/extractions/{label}``: the extraction was wrong."""
        with self.lock:
            assert doc.result is not None
            if label not in content.LABELS or label not in doc.result["extractions"]:
                raise ApiError(404, f"No extraction {label} in document {doc.id}")
            del doc.result["extractions"][label]
            self._record(doc, "delete", {"method": "DELETE", "label": label})

    def _apply(self, doc: Document, label: str, entry: dict[str, Any]) -> None:
        assert doc.result is not None
        definition = content.LABELS[label]
        old = doc.result["extractions"].get(label, {})
        shown = _shown(definition.entity, entry)
        if "box" not in shown and "box" in old and entry["value"] == old.get("value"):
            shown = {"box": old["box"], **shown}
        if definition.candidates and old.get("candidates"):
            shown["candidates"] = old["candidates"]
        doc.result["extractions"][label] = shown

    # ------------------------------------------------------------------ admin

    def stats(self) -> dict[str, Any]:
        with self.lock:
            self.tick()
            by_progress = Counter(d.progress for d in self.documents.values())
            routes: dict[str, Counter[str]] = {}
            for record in self.requests.entries():
                routes.setdefault(f"{record.method} {route_of(record.path)}", Counter())[
                    str(record.status)
                ] += 1
            return {
                "documents": {"total": len(self.documents), **dict(sorted(by_progress.items()))},
                "requests": {
                    "total": self.requests.total,
                    "by_path": {k: dict(v) for k, v in sorted(routes.items())},
                },
                "tokens": {
                    "issued": self.counts["tokens.issued"],
                    "refreshed": self.counts["tokens.refreshed"],
                    "refresh_refused": self.counts["tokens.refresh_refused"],
                    "live": sum(t.expires_at > self.clock.now() for t in self.tokens.values()),
                },
                "feedback": self.counts["feedback"],
                "throttled": self.faults.throttled,
                "faults": dict(self.faults.counts),
            }

    def admin_document(self, doc: Document) -> dict[str, Any]:
        return {
            "id": doc.id,
            "owner": doc.owner,
            "name": doc.name,
            "mime_type": doc.mime_type,
            "progress": doc.progress,
            "pageCount": doc.page_count,
            "metadata": dict(doc.metadata),
            "created_at": doc.created_at,
            "completed_at": doc.completed_at,
            "error": doc.error if doc.progress == ERROR else None,
            "feedback": copy.deepcopy(doc.feedback),
        }


def route_of(path: str) -> str:
    """``/documents/<uuid>/extractions/iban`` → ``/documents/{id}/extractions/{label}``."""
    parts = path.split("/")
    if len(parts) > 2 and parts[1] == "documents":
        parts[2] = "{id}"
        if len(parts) > 4 and parts[3] == "extractions":
            parts[4] = "{label}"
    return "/".join(parts)


def _classification(mime_type: str, read: engine.Extraction) -> str:
    if mime_type == "text/plain":
        return "TEXT"
    if mime_type == "application/pdf":
        return "SANDWICH" if read.method == "ocr" else "NATIVE"
    return "SCANNED"


def _check_entry(label: str, entry: Any) -> None:
    definition = content.LABELS.get(label)
    if definition is None:
        raise ApiError(404, f"Unknown label {label}")
    _check_value(definition.entity, entry, label)


def _check_value(entity: str, entry: Any, label: str) -> None:
    if not isinstance(entry, dict) or "value" not in entry or set(entry) - {"value", "box"}:
        raise ApiError(422, f"{label}: send an object with value and an optional box")
    problem = content.invalid_value(entity, entry["value"]) or content.invalid_box(entry.get("box"))
    if problem is not None:
        raise ApiError(422, f"{label}: {problem}")


def _shown(entity: str, entry: dict[str, Any]) -> dict[str, Any]:
    shown: dict[str, Any] = {}
    if entry.get("box") is not None:
        shown["box"] = {k: entry["box"][k] for k in ("height", "left", "page", "top", "width")}
    return {**shown, "entity": entity, "value": entry["value"]}
