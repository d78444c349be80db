"""The testkit vendor: a test-only connector on the connector kit, for what the built-in
vendors do not exercise yet (synchronous submit, review before and after a result, callbacks
authenticated by a token in their path, per-field feedback refusals).

It has the shape every connector has — settings, client, vendor, mapping — in one module
because it is small; its emulator is ``emulator.py`` beside it.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Mapping
from typing import Any, ClassVar, Literal

from pydantic import Field, SecretStr

from connectors.auth import LoginSession
from connectors.base import (
    DOCUMENT_FIELDS,
    BBox,
    CanonicalResult,
    ConnectorContext,
    ConnectorSettings,
    Correction,
    CorrectionOutcome,
    DocumentRef,
    LineItem,
    PollResult,
    PollStatus,
    Provenance,
    SubmitResult,
    Vendor,
    VendorCapabilities,
    VendorSettings,
    WebhookHint,
    WebhookRequest,
)
from connectors.errors import WebhookRejected
from connectors.http import HttpClient
from connectors.normalize import normalize_field, normalize_line_item

# --------------------------------------------------------------------------- settings


class TestkitSettings(VendorSettings):
    """A testkit profile."""

    kind: Literal["testkit"] = "testkit"
    """Selects the test-only vendor."""
    base_url: str
    """The emulator's API root, e.g. ``http://127.0.0.1:8790/api``."""
    user: str = "kit"
    """The login user."""
    password: SecretStr
    """The login password."""
    mode: Literal["async", "sync"] = "async"
    """``sync``: the upload answers with the result."""
    human_review: bool = True
    """Results the vendor marks for review wait in ``review`` until a person checked them."""
    callback_token: SecretStr | None = None
    """The unguessable path the vendor calls back on (``/webhooks/<profile>/<token>``); no
    callbacks without it."""
    allow_from: list[str] = Field(default_factory=list)
    """Addresses callbacks may come from; empty: any."""
    timeout: float = Field(30.0, gt=0)
    """Seconds one request may take (a synchronous upload waits for the extraction)."""
    max_retries: int = Field(2, ge=0)
    """Retries of one request inside the call."""
    poll_interval: float | None = Field(0.3, ge=0)
    """First delay between status polls."""


# --------------------------------------------------------------------------- vendor


class TestkitVendor(Vendor):
    kind: ClassVar[str] = "testkit"
    settings_model: ClassVar[type[ConnectorSettings]] = TestkitSettings
    capabilities: ClassVar[VendorCapabilities] = VendorCapabilities(
        webhooks=True, feedback=True, reconcile_uploads=True, poll_interval=0.3
    )

    settings: TestkitSettings

    def __init__(self, settings: ConnectorSettings, context: ConnectorContext) -> None:
        super().__init__(settings, context)
        self.http = HttpClient(
            self.settings.base_url,
            name="testkit",
            auth=LoginSession(self._login, secrets=[self.settings.password]),
            account=self.settings.user,
            timeout=self.settings.timeout,
            max_retries=self.settings.max_retries,
            secrets=[self.settings.password, self.settings.callback_token],
        )

    def _login(self) -> str:
        password = self.settings.password.get_secret_value()
        response = self.http.request(
            "POST", "login", json={"user": self.settings.user, "password": password}, auth=False
        )
        return str(self.http.json_object(response, "POST", "login")["token"])

    # ------------------------------------------------------------------ submit / poll / fetch

    def submit(self, document: DocumentRef, *, first_attempt: bool = False) -> SubmitResult:
        """Look up our document id first unless this is the first attempt; a synchronous
        look-up returns the stored result, so nothing is extracted (or paid for) twice."""
        if not first_attempt:
            found = self.http.get_object("documents", {"external_id": str(document.id)})
            earlier = [d for d in found.get("results", []) if d.get("status") != "rejected"]
            if earlier:
                return self._answer(document, earlier[-1], reconciled=True)
        callback = None
        if self.settings.callback_token is not None:
            callback = self.context.webhook_url(self.settings.callback_token.get_secret_value())
        form = {"external_id": str(document.id), "mode": self.settings.mode}
        if callback:
            form["callback_url"] = callback
        with document.open() as handle:
            response = self.http.request(
                "POST",
                "documents",
                data=form,
                files={"file": (document.filename, handle, document.mime_type)},
                replayable=False,
            )
        return self._answer(document, self.http.json_object(response, "POST", "documents"))

    def _answer(
        self, document: DocumentRef, doc: Mapping[str, Any], *, reconciled: bool = False
    ) -> SubmitResult:
        ref = str(doc["id"])
        data = {"reconciled": reconciled}
        if self.settings.mode != "sync":
            return SubmitResult(vendor_ref=ref, data=data)
        result = doc.get("result")
        if result is None:  # a look-up: the listing carries no result
            result = self.http.get_object(f"documents/{ref}/result")
        raw = {**result, "page_sizes": [list(s) for s in document.page_sizes]}
        keys = {"review_id": str(result["review_id"])} if result.get("review_id") else {}
        return SubmitResult(vendor_ref=ref, data=data, raw=raw, keys=keys)

    def poll(self, vendor_ref: str, data: Mapping[str, Any]) -> PollResult:
        doc = self.http.get_object(f"documents/{vendor_ref}")
        status = doc.get("status")
        review = doc.get("review") or {}
        if status == "rejected":
            return PollResult(PollStatus.REJECTED, reason=doc.get("error") or "rejected")
        if status == "review" or (status == "ready" and review.get("state") == "pending"):
            keys = {"review_id": str(review["id"])} if review.get("id") else {}
            return PollResult(PollStatus.REVIEW, reason=review.get("reason"), keys=keys)
        if status == "ready":
            return PollResult(PollStatus.READY)
        return PollResult(PollStatus.PROCESSING)

    def fetch(self, vendor_ref: str, data: Mapping[str, Any], document: DocumentRef) -> Any:
        result = self.http.get_object(f"documents/{vendor_ref}/result")
        return {**result, "page_sizes": [list(s) for s in document.page_sizes]}

    def normalize(self, raw: Any) -> CanonicalResult:
        """Labels are canonical names already; boxes are fractions of the page."""
        sizes = raw.get("page_sizes") or []

        def box(value: Mapping[str, Any]) -> BBox | None:
            page, given = value.get("page"), value.get("box")
            if not given or not page or page > len(sizes):
                return None
            w, h = sizes[page - 1]
            return BBox.from_fractions(*given, page_width=w, page_height=h)

        fields = []
        for value in raw["fields"]:
            label = value["label"]
            field = normalize_field(
                label if label in DOCUMENT_FIELDS else f"extra.{label}",
                value["text"],
                confidence=value.get("confidence"),
                page=value.get("page"),
                bbox=box(value),
                vendor_label=label,
            )
            fields.append(field)
        items = []
        for number, row in enumerate(raw.get("line_items") or [], start=1):
            item: LineItem = normalize_line_item(number, {c["label"]: c["text"] for c in row})
            item.provenance = {
                c["label"] if c["label"] not in item.extra else f"extra.{c['label']}": Provenance(
                    page=c.get("page"), bbox=box(c), vendor_label=c["label"], raw_text=c["text"]
                )
                for c in row
            }
            items.append(item)
        review = None
        if raw.get("needs_review") and self.settings.human_review:
            review = "values below the confidence thresholds wait for a person's review"
        return CanonicalResult(
            fields=fields, line_items=items, quality=dict(raw.get("quality") or {}), review=review
        )

    # ------------------------------------------------------------------ webhooks, feedback

    def parse_webhook(self, request: WebhookRequest) -> list[WebhookHint]:
        """The vendor does not sign: the token in the path is the proof, checked in constant
        time, and the caller's address when an allow-list is set."""
        token = self.settings.callback_token
        if token is None:
            raise WebhookRejected("callbacks are off: set callback_token", status_code=404)
        if not hmac.compare_digest(request.tail.encode(), token.get_secret_value().encode()):
            raise WebhookRejected("unknown callback path", status_code=404)
        if self.settings.allow_from and request.client not in self.settings.allow_from:
            raise WebhookRejected(
                f"callbacks from {request.client} are not allowed", status_code=403
            )
        try:
            body = json.loads(request.body)
        except ValueError:
            raise WebhookRejected("callback body is not JSON", status_code=400) from None
        sent_at = body.get("sent_at")
        hint = WebhookHint(
            vendor_ref=str(body["document"]) if body.get("document") is not None else None,
            event=str(body.get("event")),
            delivery_id=body.get("event_id"),
            keys={"review_id": str(body["review_id"])} if body.get("review_id") else {},
            changed=body.get("event") == "document.changed",
            sent_at=float(sent_at) if isinstance(sent_at, int | float) else None,
        )
        return [hint]

    def send_feedback(
        self,
        vendor_ref: str,
        data: Mapping[str, Any],
        corrections: list[Correction],
        result: CanonicalResult,
    ) -> list[CorrectionOutcome]:
        body = {
            "corrections": [
                {"field": c.field, "kind": str(c.kind), "value": c.value, "old": c.old_value}
                for c in corrections
            ]
        }
        response = self.http.request("POST", f"documents/{vendor_ref}/feedback", json=body)
        answer = self.http.json_object(response, "POST", "feedback")
        return [
            CorrectionOutcome(o["field"], bool(o["accepted"]), o.get("reason"))
            for o in answer.get("outcomes", [])
        ]

    def probe(self) -> list[str]:
        account = self.http.get_object("account")
        return [f"logged in as {account['user']}; {account['documents']} document(s)"]

    def close(self) -> None:
        self.http.close()
