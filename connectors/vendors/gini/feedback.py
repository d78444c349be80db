"""Corrections as Gini feedback: one batch ``PUT …/extractions`` with the full corrected set,
``DELETE …/extractions/{label}`` for a value that is not in the document.

Gini learns from the whole picture (seed 004:178-266): *positive* feedback (a value confirmed),
*negative* (a value corrected) and *complementary* (a value Gini missed, entered by a person)
all go in one batch, every label with its value as it now stands. A value Gini found
"erroneously (i.e. is not present in the source document)" is deleted (004:298-306) and left
out of the batch. ``plan`` is pure (the request bodies from the result and the corrections);
``GiniFeedback.send`` makes the requests and turns Gini's 4xx answers into refusals.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from connectors.base import (
    AMOUNT_FIELDS,
    DATE_FIELDS,
    CanonicalResult,
    Correction,
    CorrectionKind,
    CorrectionOutcome,
    FieldValue,
)
from connectors.normalize import normalize_field
from connectors.vendors.gini.client import GiniClient
from connectors.vendors.gini.mapping import (
    EXTRA,
    LabelMap,
    format_gini_amount,
    parse_gini_amount,
)

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Plan:
    """What to send: the batch (label → ``{"value": …}``), the labels to delete, which label
    each correction rides on, and the corrections refused before any request."""

    batch: dict[str, dict[str, str]] = field(default_factory=dict)
    delete: list[str] = field(default_factory=list)
    label_of: dict[str, str] = field(default_factory=dict)
    """Correction field → the label it was sent as."""
    refused: dict[str, str] = field(default_factory=dict)
    added: set[str] = field(default_factory=set)
    """Labels the document's extractions lacked (complementary feedback): Gini may not know
    them at all, and one unknown label makes it refuse the whole batch."""


def label_for(name: str, vendor_label: str | None, field_map: LabelMap) -> str | None:
    """The Gini label a canonical field is sent as: the one it was read from, else the first
    the mapping names for it (``extra.<label>`` is that label)."""
    if vendor_label:
        return vendor_label
    if name.startswith(EXTRA):
        rest = name[len(EXTRA) :]
        return rest if rest and "." not in rest else None
    labels = field_map.labels_for(name)
    return labels[0] if labels else None


def _is_primary(value: FieldValue, field_map: LabelMap) -> bool:
    """The field a label's value is sent from (not a ``currency`` derived from ``amountToPay``,
    not a compound row's ``extra.<label>.<n>.<sub>``)."""
    label = value.vendor_label
    if not label:
        return False
    if value.name.startswith(EXTRA):
        return value.name == f"{EXTRA}{label}"
    target = field_map.get(label)
    return target is None or target == value.name


def _currency_for(value: FieldValue, result: CanonicalResult, hint: str | None) -> str | None:
    """The currency an amount is sent with: a currency derived from the same label (a person
    may have corrected it), the amount's own, what Gini gave, the document's."""
    for other in result.fields:
        if (
            other.name == "currency"
            and other.vendor_label == value.vendor_label
            and other.value_text
        ):
            return other.value_text.upper()
    if value.currency:
        return value.currency.upper()
    if hint:
        return hint
    currency = result.get("currency")
    return currency.value_text.upper() if currency and currency.value_text else None


def gini_value(value: FieldValue, result: CanonicalResult) -> str | None:
    """A field as Gini writes it (``"5.60:EUR"``, ``2026-03-31``, a compact IBAN); None when
    it cannot be (an amount without a currency)."""
    if value.value_text is None:
        return None
    original = parse_gini_amount(value.raw_text)
    is_amount = value.name in AMOUNT_FIELDS or (
        value.name.startswith(EXTRA) and (original is not None or value.value_number is not None)
    )
    if is_amount:
        number = value.value_number
        if number is None:
            number = original[0] if original is not None else None
        if number is None:
            return None
        currency = _currency_for(value, result, original[1] if original else None)
        return format_gini_amount(Decimal(number), currency) if currency else None
    if value.name in DATE_FIELDS and value.value_date is not None:
        return value.value_date.isoformat()
    return value.value_text


def plan(result: CanonicalResult, corrections: list[Correction], field_map: LabelMap) -> Plan:
    """The requests for these corrections against the whole current result (pure)."""
    out = Plan()
    for value in result.fields:
        if not _is_primary(value, field_map):
            continue
        text = gini_value(value, result)
        if text is not None:
            out.batch[value.vendor_label] = {"value": text}  # type: ignore[index]
    for correction in corrections:
        current = result.get(correction.field)
        label = label_for(
            correction.field,
            correction.vendor_label or (current.vendor_label if current else None),
            field_map,
        )
        if label is None:
            out.refused[correction.field] = (
                f"no Gini label is known for {correction.field} (name one in the profile's mapping)"
            )
            continue
        out.label_of[correction.field] = label
        kind = correction.kind
        if kind == CorrectionKind.CORRECT and correction.value is None:
            kind = CorrectionKind.ABSENT
        if kind == CorrectionKind.ABSENT:
            if correction.field == "currency" and field_map.get(label) != "currency":
                out.refused[correction.field] = (
                    f"the currency is part of Gini's {label}; correct {field_map.get(label)} "
                    "or mark it absent instead"
                )
                continue
            out.batch.pop(label, None)
            if label not in out.delete:
                out.delete.append(label)
            continue
        text = _corrected(correction, label, result, field_map, out)
        if text is None:
            continue
        if label not in out.batch:
            out.added.add(label)
        out.batch[label] = {"value": text}
        if label in out.delete:
            out.delete.remove(label)
    return out


def _corrected(
    correction: Correction,
    label: str,
    result: CanonicalResult,
    field_map: LabelMap,
    out: Plan,
) -> str | None:
    name = correction.field
    if name == "currency" and field_map.get(label) not in (None, "currency"):
        # the currency half of an amount label (``amountToPay``): send the amount with it
        currency = (correction.value or "").strip().upper()
        amount = next(
            (v for v in result.fields if v.vendor_label == label and v.name != "currency"), None
        )
        number = amount.value_number if amount is not None else None
        if number is None or len(currency) != 3 or not currency.isalpha():
            out.refused[name] = f"cannot send currency {correction.value!r} as part of {label}"
            return None
        return format_gini_amount(Decimal(number), currency)
    text = correction.value
    if text is None:  # a confirmation of a value the result no longer holds
        current = result.get(name)
        text = current.value_text if current is not None else None
    if text is None:
        out.refused[name] = f"{name}: there is no value to send"
        return None
    if parse_gini_amount(text) is not None:
        return text.strip()
    value = normalize_field(name, text)
    current = result.get(name)
    if current is not None:
        value.vendor_label = current.vendor_label
        value.currency = value.currency or current.currency
    value.vendor_label = value.vendor_label or label
    sent = gini_value(value, result)
    if sent is None:
        out.refused[name] = (
            f"{name}: {text!r} cannot be written as Gini's amount (number and currency, "
            "e.g. 5.60:EUR)"
        )
    return sent


def _reason(client: GiniClient, method: str, url: str, response: Any) -> str:
    what = {
        404: "does not know the document or the label",
        422: "found a value invalid for the label's entity",
    }.get(response.status_code, "refused the feedback")
    return client.describe(method, client.path(url), response, what)


class GiniFeedback:
    """Sends a ``Plan``; one outcome per correction."""

    def __init__(self, client: GiniClient, field_map: LabelMap) -> None:
        self.client = client
        self.field_map = field_map

    def send(
        self,
        extractions_url: str,
        corrections: list[Correction],
        result: CanonicalResult,
    ) -> list[CorrectionOutcome]:
        """PUT the batch (when it holds anything), then DELETE each absent label; a 404 on a
        DELETE counts as done (the label is gone: safe to repeat)."""
        todo = plan(result, corrections, self.field_map)
        refused = dict(todo.refused)
        label_refusals: dict[str, str] = {}
        if todo.batch:
            response = self.client.put_feedback(extractions_url, todo.batch)
            if response.status_code == 404 and todo.added and todo.added != set(todo.batch):
                # One label Gini does not know refuses the lot: send what it read without the
                # added labels, and refuse those alone (NOTES.md, feedback).
                reason = _reason(self.client, "PUT", extractions_url, response)
                label_refusals.update(dict.fromkeys(todo.added, reason))
                log.info("Gini refused added labels %s: %s", sorted(todo.added), reason)
                kept = {k: v for k, v in todo.batch.items() if k not in todo.added}
                response = self.client.put_feedback(extractions_url, kept)
                todo.batch = kept
            if response.status_code >= 400:
                reason = _reason(self.client, "PUT", extractions_url, response)
                label_refusals.update(dict.fromkeys(todo.batch, reason))
                log.info("Gini refused the feedback: %s", reason)
        for label in todo.delete:
            url = f"{extractions_url.rstrip('/')}/{label}"
            response = self.client.delete_extraction(url)
            if response.status_code >= 400 and response.status_code != 404:
                label_refusals[label] = _reason(self.client, "DELETE", url, response)
        outcomes = []
        for correction in corrections:
            name = correction.field
            reason = refused.get(name)
            if reason is None:
                reason = label_refusals.get(todo.label_of.get(name, ""))
            outcomes.append(CorrectionOutcome(name, reason is None, reason))
        return outcomes


def batch_of(body: Mapping[str, Any]) -> dict[str, str]:
    """label → value of a feedback body (for tests and logs)."""
    feedback = body.get("feedback", {})
    return {k: v.get("value") for k, v in feedback.items() if isinstance(v, Mapping)}
