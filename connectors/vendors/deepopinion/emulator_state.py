"""The DeepOpinion emulator's state: users and their JWTs, the seeded workspace, project and
model, HITLs, the documents of every extraction call, their reviews, and the webhooks.

One re-entrant lock guards everything, so HTTP handlers and tests (``app.state.emulator``)
can share it. Time is the kit's ``Clock`` (tests pass a ``ManualClock``); webhooks go out
through the kit's ``CallbackDispatcher``, unsigned.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import itertools
import json
import secrets
import threading
import uuid
from collections import Counter, OrderedDict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from connectors.emulation.callbacks import Callback, CallbackDispatcher, unsigned
from connectors.emulation.clock import SYSTEM_CLOCK, Clock
from connectors.emulation.faults import FaultInjector
from connectors.emulation.requestlog import RequestLog
from connectors.vendors.deepopinion import emulator_content as content

if TYPE_CHECKING:
    from connectors.vendors.deepopinion.emulator import EmulatorOptions

ORGANIZATION_ID, PROJECT_ID, MODEL_ID = 1, 1, 1
MODEL_NAME = "Invoice Extraction v1"
PENDING, COMPLETED = "PENDING", "COMPLETED"
EXPIRED = "Token expired. Please log in again."
INVALID = "Invalid token. Please log in again."
READING_CACHE = 512
"""Readings kept by SHA-256 (the same file is read once)."""


class ApiError(Exception):
    """An answer other than success: ``{"message", "status": "FAIL"}`` with ``status``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def timestamp(epoch: float) -> str:
    """``2024-01-31T10:00:00.123456+00:00``."""
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="microseconds")


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass
class User:
    id: int
    email: str
    password: str
    first_name: str
    last_name: str


@dataclass
class Hitl:
    id: int
    name: str
    description: str
    assigned_user_id: int | None
    model_id: int
    is_live: bool
    webhook_url: str | None
    created_at: float
    updated_at: float

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "description": self.description,
            "project_id": PROJECT_ID,
            "created_at": timestamp(self.created_at),
            "updated_at": timestamp(self.updated_at),
            "assigned_user_id": self.assigned_user_id,
            "model_id": self.model_id,
            "is_live": self.is_live,
            "webhook_url": self.webhook_url,
            "labels": {},
        }


@dataclass
class Review:
    id: int
    document_id: int
    document_name: str
    page_num: int
    label: str
    hitl_id: int
    user_id: int | None
    confidence_threshold: float
    value: str | None
    confidence: float | None
    bbox: dict[str, Any] | None
    created: float
    updated: float
    status: str = PENDING
    reviewed_value: str | None = None

    def as_json(self, *, full: bool) -> dict[str, Any]:
        shown: dict[str, Any] = {
            "review_id": self.id,
            "task_id": self.document_id,
            "document_id": self.document_id,
            "document_name": self.document_name,
            "page_num": self.page_num,
            "status": self.status,
            "created": timestamp(self.created),
            "updated": timestamp(self.updated),
            "user_id": self.user_id,
            "label": self.label,
            "confidence_threshold": self.confidence_threshold,
            "ls_annotation_id": self.id,
            "hitl_id": self.hitl_id,
        }
        if full:
            shown["data"] = {
                "value": self.value,
                "confidence": self.confidence,
                "reviewed_value": self.reviewed_value,
                "bbox": self.bbox,
            }
        return shown


@dataclass
class Document:
    """One extraction call's document."""

    id: int
    name: str
    sha256: str
    created_at: float
    finished_at: float | None = None
    flags: dict[str, bool] = field(default_factory=dict)
    credits: int = 0
    hitl_id: int | None = None
    hitl_status: str | None = None
    review_ids: list[int] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "sha256": self.sha256,
            "created_at": timestamp(self.created_at),
            "finished_at": None if self.finished_at is None else timestamp(self.finished_at),
            **self.flags,
            "credits_used": self.credits,
            "hitl_id": self.hitl_id,
            "hitl_status": self.hitl_status,
            "reviews": list(self.review_ids),
        }


class DeepOpinionState:
    """Everything the emulator knows, behind one lock; see the module docstring."""

    def __init__(self, options: EmulatorOptions, clock: Clock | None = None) -> None:
        self.options = options
        self.clock = clock or SYSTEM_CLOCK
        self.lock = threading.RLock()
        self.secret = secrets.token_bytes(32)
        """Signs the emulator's HS256 tokens (real DeepOpinion signs RS256)."""
        self.users: dict[str, User] = {}
        self._ids = {name: itertools.count(1) for name in ("user", "hitl", "review", "document")}
        self.hitls: dict[int, Hitl] = {}
        self.reviews: dict[int, Review] = {}
        self.documents: dict[int, Document] = {}
        self.counts: Counter[str] = Counter()
        self._readings: OrderedDict[str, content.Reading] = OrderedDict()
        self.requests = RequestLog(self.clock)
        self.faults = FaultInjector(options, self.clock)
        self.dispatcher = CallbackDispatcher(
            clock=self.clock,
            on_result=self._webhook_result,
            user_agent="deepopinion-emulator",
            name="deepopinion-emulator-webhooks",
        )
        self.created = self.clock.now()
        self.register("Demo", "User", options.username, options.password)

    # ------------------------------------------------------------------ users and tokens

    def register(self, first: str, last: str, email: str, password: str) -> User:
        with self.lock:
            if email.lower() in self.users:
                raise ApiError(400, "User already exists. Please log in.")
            user = User(next(self._ids["user"]), email, password, first, last)
            self.users[email.lower()] = user
            return user

    def login(self, email: str, password: str) -> User:
        with self.lock:
            user = self.users.get(email.lower())
            if user is None or not hmac.compare_digest(user.password, password):
                raise ApiError(401, "Invalid email or password.")
            return user

    def issue_token(self, user: User) -> str:
        """An HS256 JWT with the seed's claims (002:27) and ``exp`` = now + the lifetime."""
        now = int(self.clock.now())
        claims = {
            "exp": now + int(self.options.token_lifetime),
            "sub": user.id,
            "iss": "deepopinion.ai",
            "languages": ["*"],
            "functionality": ["Analysis/*", "Training/*", "Models/*"],
            "iat": now,
        }
        header = _b64(json.dumps({"typ": "JWT", "alg": "HS256"}).encode())
        payload = _b64(json.dumps(claims, separators=(",", ":")).encode())
        signed = f"{header}.{payload}"
        signature = hmac.new(self.secret, signed.encode(), hashlib.sha256).digest()
        with self.lock:
            self.counts["tokens.issued"] += 1
        return f"{signed}.{_b64(signature)}"

    def user_for_token(self, token: str) -> User:
        """The user a token stands for; 401 when it is garbled, forged, expired or unknown."""
        parts = token.split(".")
        if len(parts) != 3:
            raise ApiError(401, INVALID)
        expected = hmac.new(self.secret, f"{parts[0]}.{parts[1]}".encode(), hashlib.sha256)
        try:
            valid = hmac.compare_digest(_b64(expected.digest()), parts[2])
            claims = json.loads(_unb64(parts[1]))
        except (ValueError, UnicodeDecodeError):
            raise ApiError(401, INVALID) from None
        if not valid or not isinstance(claims, dict):
            raise ApiError(401, INVALID)
        if not isinstance(claims.get("exp"), int) or self.clock.now() >= claims["exp"]:
            raise ApiError(401, EXPIRED)
        with self.lock:
            user = next((u for u in self.users.values() if u.id == claims.get("sub")), None)
        if user is None:
            raise ApiError(401, INVALID)
        return user

    # ------------------------------------------------------------------ seeded objects

    def check_project(self, organization_id: int, project_id: int) -> None:
        if organization_id != ORGANIZATION_ID:
            raise ApiError(404, f"Organization {organization_id} not found.")
        if project_id != PROJECT_ID:
            raise ApiError(404, f"Project {project_id} not found.")

    def check_model(self, organization_id: int, project_id: int, model_id: int) -> None:
        self.check_project(organization_id, project_id)
        if model_id != MODEL_ID:
            raise ApiError(404, f"Model {model_id} not found.")

    def model_json(self) -> dict[str, Any]:
        """Model 1 in the listing's shape (002:1870-1886)."""
        return {
            "base": "Invoice Pre-Trained",
            "created": timestamp(self.created),
            "display_name": MODEL_NAME,
            "uuid": str(uuid.uuid5(uuid.NAMESPACE_URL, "deepopinion-emulator/models/1")),
            "id": MODEL_ID,
            "language": "en",
            "long_description": "Reads invoices: numbers, dates, amounts, parties, lines.",
            "name": MODEL_NAME,
            "owner": "Demo User",
            "progress": 100.0,
            "project_id": PROJECT_ID,
            "score": 0.95,
            "short_description": "Invoice extraction",
            "status": "PUBLISHED",
            "type": "LABEL",
        }

    # ------------------------------------------------------------------ HITLs

    def create_hitl(self, fields: dict[str, Any]) -> Hitl:
        with self.lock:
            now = self.clock.now()
            hitl = Hitl(
                id=next(self._ids["hitl"]),
                name=fields["name"],
                description=fields.get("description") or "",
                assigned_user_id=fields.get("assigned_user_id"),
                model_id=fields.get("model_id", MODEL_ID),
                is_live=bool(fields.get("is_live", False)),
                webhook_url=fields.get("webhook_url"),
                created_at=now,
                updated_at=now,
            )
            self.hitls[hitl.id] = hitl
            return hitl

    def hitl(self, hitl_id: int) -> Hitl:
        with self.lock:
            found = self.hitls.get(hitl_id)
            if found is None:
                raise ApiError(404, f"HITL {hitl_id} not found.")
            return found

    def update_hitl(self, hitl_id: int, fields: dict[str, Any]) -> Hitl:
        with self.lock:
            hitl = self.hitl(hitl_id)
            for key, value in fields.items():
                setattr(hitl, key, value)
            hitl.updated_at = self.clock.now()
            return hitl

    def live_hitl(self, model_id: int) -> Hitl | None:
        """The model's live HITL with the lowest id (reviews go there)."""
        with self.lock:
            live = [h for h in self.hitls.values() if h.model_id == model_id and h.is_live]
            return min(live, key=lambda h: h.id) if live else None

    def reviews_of(
        self, hitl_id: int, *, status: str | None = None, document_name: str | None = None
    ) -> list[Review]:
        with self.lock:
            self.hitl(hitl_id)
            return [
                r
                for r in self.reviews.values()
                if r.hitl_id == hitl_id
                and (status is None or r.status == status.upper())
                and (document_name is None or r.document_name == document_name)
            ]

    # ------------------------------------------------------------------ extraction

    def cached_reading(self, key: str) -> content.Reading | None:
        """The kept reading for ``key`` (the file's SHA-256 and the wrongness settings)."""
        with self.lock:
            reading = self._readings.get(key)
            if reading is not None:
                self._readings.move_to_end(key)
            return reading

    def keep_reading(self, reading: content.Reading, key: str | None = None) -> None:
        with self.lock:
            self._readings[key or reading.sha256] = reading
            while len(self._readings) > READING_CACHE:
                self._readings.popitem(last=False)

    def start_document(self, name: str, sha256: str) -> Document:
        with self.lock:
            doc = Document(next(self._ids["document"]), name, sha256, self.clock.now())
            self.documents[doc.id] = doc
            return doc

    def finish_document(
        self, doc: Document, reading: content.Reading, model_id: int
    ) -> dict[str, Any] | None:
        """Record the answer of one call; create reviews when a threshold is not met or a
        required label is missing and the model has a live HITL. The ``hitl`` entry or None."""
        threshold = self.options.threshold
        with self.lock:
            doc.finished_at = self.clock.now()
            doc.flags = reading.flags(threshold)
            doc.credits = reading.pages
            self.counts["extractions"] += 1
            self.counts["credits"] += reading.pages
            needs_look = not (
                doc.flags["all_confidence_thresholds_met"]
                and doc.flags["all_required_fields_found"]
            )
            hitl = self.live_hitl(model_id) if needs_look else None
            if hitl is None:
                return None
            now = self.clock.now()
            looks = [
                (v.label, v.page or 0, v.text, v.confidence, content.value_box(reading, v))
                for v in reading.below(threshold)
            ]
            looks += [(label, 0, None, None, None) for label in reading.missing()]
            for label, page, text, confidence, box in looks:
                review = Review(
                    id=next(self._ids["review"]),
                    document_id=doc.id,
                    document_name=doc.name,
                    page_num=page,
                    label=label,
                    hitl_id=hitl.id,
                    user_id=hitl.assigned_user_id,
                    confidence_threshold=threshold,
                    value=text,
                    confidence=confidence,
                    bbox=box,
                    created=now,
                    updated=now,
                )
                self.reviews[review.id] = review
                doc.review_ids.append(review.id)
            doc.hitl_id, doc.hitl_status = hitl.id, "pending"
            return {"status": "pending", "result": content.hitl_result(reading, threshold)}

    # ------------------------------------------------------------------ review completion

    def complete_reviews(
        self,
        *,
        document_id: int | None = None,
        document_name: str | None = None,
        values: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Complete the pending reviews of one document (by id) or of every document of that
        name, then queue one webhook per document whose HITL has a ``webhook_url``."""
        values = values or {}
        with self.lock:
            if document_id is not None:
                docs = [self.documents[document_id]] if document_id in self.documents else []
            else:
                docs = [d for d in self.documents.values() if d.name == document_name]
            if not docs:
                raise ApiError(404, "No such document.")
            now = self.clock.now()
            done: list[dict[str, Any]] = []
            for doc in docs:
                pending = [
                    self.reviews[r] for r in doc.review_ids if self.reviews[r].status == PENDING
                ]
                if not pending:
                    continue
                for review in pending:
                    given = values.get(review.label)
                    review.reviewed_value = review.value if given is None else str(given)
                    review.status, review.updated = COMPLETED, now
                    self.counts["reviews.completed"] += 1
                doc.hitl_status = "completed"
                ids = [r.id for r in pending]
                done.append({"document_id": doc.id, "review_ids": ids})
                self._webhook(doc, ids)
            if not done:
                raise ApiError(409, "The document has no pending reviews.")
            return {"completed": done}

    def _webhook(self, doc: Document, review_ids: list[int]) -> None:
        hitl = self.hitls.get(doc.hitl_id or 0)
        if hitl is None or not hitl.webhook_url:
            return
        body = {
            "event": "review.completed",
            "hitl_id": hitl.id,
            "document_id": doc.id,
            "document_name": doc.name,
            "review_ids": review_ids,
            "status": COMPLETED,
        }
        self.counts["webhooks.queued"] += 1
        self.dispatcher.submit(
            Callback(
                url=hitl.webhook_url,
                body=json.dumps(body).encode(),
                signer=unsigned,
                retry_delays=tuple(self.options.webhook_retry_delays),
                tags={"event": "review.completed", "document": doc.id, "hitl": hitl.id},
            )
        )

    def _webhook_result(self, callback: Callback, delivered: bool, result: Any) -> None:
        with self.lock:
            self.counts["webhooks.delivered" if delivered else "webhooks.failed"] += 1

    # ------------------------------------------------------------------ admin

    def stats(self) -> dict[str, Any]:
        with self.lock:
            by_path: Counter[str] = Counter(f"{r.method} {r.path}" for r in self.requests.entries())
            return {
                "documents": len(self.documents),
                "extractions": self.counts["extractions"],
                "credits": self.counts["credits"],
                "reviews": dict(Counter(r.status for r in self.reviews.values())),
                "webhooks": {
                    "queued": self.counts["webhooks.queued"],
                    "delivered": self.counts["webhooks.delivered"],
                    "failed": self.counts["webhooks.failed"],
                    "pending": self.dispatcher.pending,
                },
                "requests": {
                    "total": self.requests.total,
                    "by_path": dict(sorted(by_path.items())),
                },
                "tokens": {"issued": self.counts["tokens.issued"]},
                "throttled": self.faults.throttled,
                "faults": dict(self.faults.counts),
            }

    def documents_json(self) -> list[dict[str, Any]]:
        with self.lock:
            return [d.as_json() for d in self.documents.values()]
