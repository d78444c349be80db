"""Corrections as Konfuzio's own review operations (contract §5, seed 001:349-423).

Each ``Correction`` becomes what a person would do in Konfuzio's review UI:

* ``confirm`` — accept the annotation: ``PATCH annotations/{id}/ {"revised": true,
  "is_correct": true}``;
* ``correct`` — decline the wrong annotation (``{"revised": true, "is_correct": false}``) and
  accept one that already reads the right value, or create one: ``POST annotations/`` with
  ``is_revised`` (the create endpoint's name for PATCH's ``revised``) and a span where the value
  is printed (found in the document's text and placed by its character boxes, else the wrong
  annotation's place with the right text);
* ``add`` — the same for a value the AI missed (its label is "unfilled");
* ``absent`` — decline what the AI found and record a missing annotation:
  ``POST missing-annotations/ {"document", "label", "label_set", "annotation_set"}``.

When nothing is left to review (no unrevised annotation, every label filled or marked
missing) the document is marked reviewed: ``PATCH documents/{id}/ {"is_reviewed": true}``.

Every step reads the state first and does only what is missing, so a repeat after a crash or
a lost answer changes nothing twice. A correction Konfuzio refuses (a 4xx) is a refused
outcome with Konfuzio's message; the others go on.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from connectors.base import (
    AMOUNT_FIELDS,
    DATE_FIELDS,
    Correction,
    CorrectionKind,
    CorrectionOutcome,
)
from connectors.errors import TerminalError, TransientError
from connectors.normalize import normalize_field
from connectors.vendors.konfuzio.client import KonfuzioClient
from connectors.vendors.konfuzio.mapping import EXTRA, LabelMap, label_key

log = logging.getLogger(__name__)

REFUSALS = (400, 403, 404, 405, 409, 422)
"""Answers to a review operation that refuse this one correction, not the profile: a 403 here
is a locked document (reviewed, in a training dataset), not bad credentials."""


class Refused(Exception):
    """Konfuzio refused one operation; the correction is refused with this reason."""


@dataclass(slots=True)
class Slot:
    """A label in one annotation set (``set_id`` None: a potential set, nothing found yet)."""

    set_id: int | None
    label_set_id: int | None
    label_id: int | None
    name: str
    api_name: str | None
    multiple: bool
    """``has_multiple_top_candidates``: the label may hold several values at once."""
    repeating: bool
    annotations: list[dict[str, Any]] = field(default_factory=list)


@dataclass(slots=True)
class _State:
    """One ``send``: the document as read at its start, and what was learnt since."""

    doc_id: int
    document: dict[str, Any]
    slots: list[Slot]
    missing: list[dict[str, Any]] | None = None
    chars: dict[str, Any] | None = None
    chars_read: bool = False
    changed: bool = False


class KonfuzioReview:
    """Feedback for one profile; the vendor resolves references to document ids first."""

    def __init__(self, client: KonfuzioClient, field_map: LabelMap) -> None:
        self.client = client
        self.field_map = field_map

    # ------------------------------------------------------------------ the call

    def send(self, doc_id: int, corrections: list[Correction]) -> list[CorrectionOutcome]:
        """One outcome per correction; then the document is marked reviewed if nothing is
        left to review."""
        document = self.client.document(doc_id)
        if document is None:
            raise TerminalError(f"Konfuzio no longer has document {doc_id}")
        state = _State(doc_id, document, slots(document))
        outcomes = []
        for correction in corrections:
            try:
                reason = self._apply(state, correction)
            except Refused as exc:
                reason = str(exc)
            if reason is not None:
                log.info("Konfuzio refused the correction of %s: %s", correction.field, reason)
            outcomes.append(CorrectionOutcome(correction.field, reason is None, reason))
        if any(o.accepted for o in outcomes):
            self._finish(state)
        return outcomes

    def _apply(self, state: _State, correction: Correction) -> str | None:
        """Carry out one correction; a reason when it cannot be done."""
        slot, named = self._find(state, correction)
        if slot is None:
            return (
                f"the Konfuzio document has no label for {correction.field} "
                "(map one with the profile's mapping)"
            )
        kind = correction.kind
        if kind == CorrectionKind.CORRECT and correction.value is None:
            kind = CorrectionKind.ABSENT
        if kind == CorrectionKind.CONFIRM:
            return self._confirm(state, slot, named, correction)
        if kind == CorrectionKind.ABSENT:
            self._absent(state, slot, named, correction)
            return None
        if not correction.value:
            return "no value given"
        return self._ensure(state, slot, named, correction, correction.value)

    # ------------------------------------------------------------------ finding the label

    def _find(
        self, state: _State, correction: Correction
    ) -> tuple[Slot | None, dict[str, Any] | None]:
        """The label (in its annotation set) a correction is about, and the annotation it
        names (``vendor_id``, the annotation id our result carries) where it still exists."""
        if correction.vendor_id:
            for slot in state.slots:
                for annotation in slot.annotations:
                    if str(annotation.get("id")) == correction.vendor_id:
                        return slot, annotation
        names = [correction.vendor_label, *self.field_map.labels_for(correction.field)]
        if correction.field.startswith(EXTRA):
            names.append(correction.field[len(EXTRA) :])
        names.append(correction.field)
        ranked = [key for key in (label_key(n) for n in names if n) if key]

        def rank(slot: Slot) -> int | None:
            found = [
                ranked.index(k)
                for k in (label_key(slot.name), label_key(slot.api_name or ""))
                if k and k in ranked
            ]
            return min(found) if found else None

        candidates = [(rank(s), s) for s in state.slots]
        matches = [(r, s) for r, s in candidates if r is not None]
        if not matches:
            return None, None
        # a document-level set that exists first, then a potential one, tables last; within
        # those the label named by the correction before other labels of the field
        matches.sort(key=lambda m: (m[1].repeating, m[1].set_id is None, m[0]))
        return matches[0][1], None

    # ------------------------------------------------------------------ the kinds

    def _confirm(
        self, state: _State, slot: Slot, named: dict[str, Any] | None, correction: Correction
    ) -> str | None:
        target = named
        if target is None or not _live(target):
            wanted = correction.value or correction.old_value
            target = next(
                (
                    a
                    for a in slot.annotations
                    if _live(a) and wanted and same_value(correction.field, _text(a), wanted)
                ),
                None,
            )
        if target is not None:
            self._accept(state, target)
            return None
        if correction.value:
            return self._ensure(state, slot, None, correction, correction.value)
        return f"Konfuzio has no annotation of {slot.name} to confirm"

    def _absent(
        self, state: _State, slot: Slot, named: dict[str, Any] | None, correction: Correction
    ) -> None:
        for annotation in self._wrong(slot, named, correction, keep=None):
            self._decline(state, annotation)
        self._mark_missing(state, slot)

    def _ensure(
        self,
        state: _State,
        slot: Slot,
        named: dict[str, Any] | None,
        correction: Correction,
        value: str,
    ) -> str | None:
        """The label holds ``value``, accepted, and nothing wrong beside it."""
        match = next(
            (
                a
                for a in slot.annotations
                if _live(a) and same_value(correction.field, _text(a), value)
            ),
            None,
        )
        wrong = self._wrong(slot, named, correction, keep=match)
        if match is not None:
            self._accept(state, match)
            for annotation in wrong:
                self._decline(state, annotation)
            self._unmark_missing(state, slot)
            return None
        span = self._position(state, value) or _moved(wrong or _declined(slot, correction), value)
        if span is None:
            return (
                f"Konfuzio needs to know where {value!r} is printed, and it is not in the "
                "document's text"
            )
        for annotation in wrong:
            self._decline(state, annotation)
        self._unmark_missing(state, slot)
        self._create(state, slot, value, span)
        return None

    def _wrong(
        self,
        slot: Slot,
        named: dict[str, Any] | None,
        correction: Correction,
        *,
        keep: dict[str, Any] | None,
    ) -> list[dict[str, Any]]:
        """The live annotations a correction says are wrong: the one it names; else those
        reading the old value; else, for a label that holds one value, all of them."""
        live = [a for a in slot.annotations if _live(a) and a is not keep]
        if named is not None:
            return [named] if named in live else []
        if correction.old_value:
            old = [a for a in live if same_value(correction.field, _text(a), correction.old_value)]
            if old or slot.multiple:
                return old
        return [] if slot.multiple else live

    # ------------------------------------------------------------------ operations

    def _op(self, method: str, ref: str, body: Mapping[str, Any] | None = None) -> Any:
        response = self.client.request(method, ref, json=body, allow=REFUSALS)
        if response.status_code in REFUSALS:
            raise Refused(self.client.describe(method, self.client.path(ref), response, "refused"))
        return response

    def _accept(self, state: _State, annotation: dict[str, Any]) -> None:
        if annotation.get("revised") is True and annotation.get("is_correct") is True:
            return
        self._op("PATCH", f"annotations/{annotation['id']}/", {"revised": True, "is_correct": True})
        annotation.update(revised=True, is_correct=True)
        state.changed = True

    def _decline(self, state: _State, annotation: dict[str, Any]) -> None:
        if annotation.get("revised") is True and annotation.get("is_correct") is not True:
            return
        body = {"revised": True, "is_correct": False}
        self._op("PATCH", f"annotations/{annotation['id']}/", body)
        annotation.update(body)
        state.changed = True

    def _create(self, state: _State, slot: Slot, value: str, span: list[dict[str, Any]]) -> None:
        """A human annotation: in the label's annotation set, else (a potential set) by its
        label set, which makes the set (the seed's decision graph, 001:331)."""
        if slot.label_id is None:
            raise Refused(f"Konfuzio gave no id for the label {slot.name}")
        body: dict[str, Any] = {
            "document": state.doc_id,
            "label": slot.label_id,
            "is_correct": True,
            "is_revised": True,  # create says is_revised; PATCH and reads say revised
            "span": span,
        }
        if slot.set_id is not None:
            body["annotation_set"] = slot.set_id
        elif slot.label_set_id is not None:
            body["label_set"] = slot.label_set_id
        else:
            raise Refused(f"Konfuzio gave no annotation set or label set for {slot.name}")
        response = self._op("POST", "annotations/", body)
        try:
            created = self.client.json_object(response, "POST", "annotations/")
        except TransientError:  # the annotation exists; its echo does not matter
            created = {}
        slot.annotations.append(
            {"id": created.get("id"), "offset_string": value, "revised": True, "is_correct": True}
        )
        state.changed = True

    def _missing(self, state: _State) -> list[dict[str, Any]]:
        if state.missing is None:
            state.missing = list(
                self.client.paginate("missing-annotations/", {"document": state.doc_id})
            )
        return state.missing

    def _mark_missing(self, state: _State, slot: Slot) -> None:
        if any(_same_slot(m, slot) for m in self._missing(state)):
            return
        body: dict[str, Any] = {
            "document": state.doc_id,
            "label": slot.label_id,
            "label_set": slot.label_set_id,
        }
        if slot.set_id is not None:
            body["annotation_set"] = slot.set_id
        response = self._op("POST", "missing-annotations/", body)
        try:
            created = self.client.json_object(response, "POST", "missing-annotations/")
        except TransientError:  # recorded at Konfuzio; keep what we sent
            created = {}
        self._missing(state).append({**body, **created})
        state.changed = True

    def _unmark_missing(self, state: _State, slot: Slot) -> None:
        """A value is there after all: an earlier "not in the document" is withdrawn."""
        for entry in [m for m in self._missing(state) if _same_slot(m, slot)]:
            if entry.get("id") is not None:
                response = self.client.request(
                    "DELETE", f"missing-annotations/{entry['id']}/", allow=(404,)
                )
                if response.status_code != 404:
                    state.changed = True
            self._missing(state).remove(entry)

    # ------------------------------------------------------------------ positions

    def _position(self, state: _State, value: str) -> list[dict[str, Any]] | None:
        """Spans for ``value`` where the document's text has it, placed by the character
        boxes of ``GET documents/{id}/bbox``; None when the text does not have it or the
        boxes cannot be read."""
        text = state.document.get("text")
        if not isinstance(text, str) or not value.strip():
            return None
        pattern = r"\s+".join(re.escape(part) for part in value.split())
        found = re.search(pattern, text)
        if found is None:
            return None
        chars = self._chars(state)
        if not chars:
            return None
        groups: dict[tuple[Any, Any], list[tuple[int, Mapping[str, Any]]]] = {}
        for offset in range(found.start(), found.end()):
            char = chars.get(str(offset))
            if not isinstance(char, Mapping) or text[offset].isspace():
                continue
            groups.setdefault((char.get("page_index"), char.get("line_index")), []).append(
                (offset, char)
            )
        spans = []
        for (page_index, _), members in groups.items():
            try:
                x0 = min(float(c["x0"]) for _, c in members)
                x1 = max(float(c["x1"]) for _, c in members)
                y0 = min(float(c["y0"]) for _, c in members)
                y1 = max(float(c["y1"]) for _, c in members)
            except (KeyError, TypeError, ValueError):
                return None
            start, end = members[0][0], members[-1][0] + 1
            spans.append(
                {
                    "page_index": page_index,
                    "x0": x0,
                    "x1": x1,
                    "y0": y0,
                    "y1": y1,
                    "offset_string": text[start:end],
                }
            )
        return spans or None

    def _chars(self, state: _State) -> dict[str, Any] | None:
        if not state.chars_read:
            state.chars_read = True
            ref = f"documents/{state.doc_id}/bbox"
            response = self.client.request("GET", ref, allow=(400, 404, 405))
            if response.status_code == 200:
                try:
                    state.chars = self.client.json_object(response, "GET", ref)
                except TransientError:  # no boxes: the wrong annotation's place is used
                    state.chars = None
        return state.chars

    # ------------------------------------------------------------------ reviewed

    def _finish(self, state: _State) -> None:
        """Mark the document reviewed when nothing is left: Konfuzio's rule (001:368, 417)."""
        document = self.client.document(state.doc_id)
        if document is None or document.get("is_reviewed") is True:
            return
        state.missing = None
        left = pending(slots(document), self._missing(state))
        if left:
            log.info(
                "Konfuzio document %s keeps %d item(s) to review; not marked reviewed",
                state.doc_id,
                left,
            )
            return
        ref = f"documents/{state.doc_id}/"
        response = self.client.request("PATCH", ref, json={"is_reviewed": True}, allow=REFUSALS)
        if response.status_code in REFUSALS:
            log.info(
                "Konfuzio would not mark document %s reviewed: %s",
                state.doc_id,
                self.client.body_text(response, 300),
            )


# --------------------------------------------------------------------------- helpers


def slots(document: Mapping[str, Any]) -> list[Slot]:
    """Every label of every annotation set of the document, potential sets included."""
    found: list[Slot] = []
    counts: dict[Any, int] = {}
    raw_sets = document.get("annotation_sets")
    for raw in raw_sets if isinstance(raw_sets, list) else []:
        if not isinstance(raw, Mapping):
            continue
        label_set = raw.get("label_set")
        ls = label_set if isinstance(label_set, Mapping) else {"id": label_set}
        set_id = _id(raw.get("id"))
        repeating = bool(ls.get("has_multiple_annotation_sets") or ls.get("has_multiple_sections"))
        if set_id is not None:
            counts[ls.get("id")] = counts.get(ls.get("id"), 0) + 1
        for label in raw.get("labels") or []:
            if not isinstance(label, Mapping):
                continue
            name = label.get("name") or label.get("api_name")
            if not isinstance(name, str):
                continue
            annotations = [a for a in label.get("annotations") or [] if isinstance(a, dict)]
            found.append(
                Slot(
                    set_id=set_id,
                    label_set_id=_id(ls.get("id")),
                    label_id=_id(label.get("id")),
                    name=name,
                    api_name=label.get("api_name")
                    if isinstance(label.get("api_name"), str)
                    else None,
                    multiple=bool(label.get("has_multiple_top_candidates")),
                    repeating=repeating,
                    annotations=annotations,
                )
            )
    for slot in found:
        if counts.get(slot.label_set_id, 0) > 1:
            slot.repeating = True
    return found


def pending(found: list[Slot], missing: list[dict[str, Any]]) -> int:
    """What keeps a document from being reviewed: annotations not revised ("feedback
    required") and labels of existing sets with no live value and no missing annotation
    ("unfilled"). Potential sets (no id) are not counted."""
    left = 0
    for slot in found:
        if slot.set_id is None:
            continue
        left += sum(1 for a in slot.annotations if a.get("revised") is not True)
        if not any(_live(a) for a in slot.annotations) and not any(
            _same_slot(m, slot) for m in missing
        ):
            left += 1
    return left


def same_value(field_name: str, a: str | None, b: str | None) -> bool:
    """Two texts mean the same value of a field (``5,10 €`` and ``5.10`` for an amount)."""
    if a is None or b is None:
        return False
    left, right = normalize_field(field_name, a), normalize_field(field_name, b)
    if field_name in AMOUNT_FIELDS and left.value_number is not None:
        return left.value_number == right.value_number
    if field_name in DATE_FIELDS and left.value_date is not None:
        return left.value_date == right.value_date
    return (left.value_text or "").casefold() == (right.value_text or "").casefold()


def _live(annotation: Mapping[str, Any]) -> bool:
    """Not declined (a declined annotation is "revised" and not "is_correct")."""
    return not (annotation.get("revised") is True and annotation.get("is_correct") is not True)


def _text(annotation: Mapping[str, Any]) -> str | None:
    text = annotation.get("offset_string")
    return text if isinstance(text, str) else None


def _declined(slot: Slot, correction: Correction) -> list[dict[str, Any]]:
    """Declined annotations of the label (a repeat: the wrong one went in the first time)."""
    declined = [a for a in slot.annotations if not _live(a)]
    if correction.vendor_id:
        named = [a for a in declined if str(a.get("id")) == correction.vendor_id]
        return named or declined
    return declined


def _moved(annotations: list[dict[str, Any]], value: str) -> list[dict[str, Any]] | None:
    """The first annotation's place with the right text: Konfuzio's span ``offset_string``
    is what a person may set "if the text existing at the specified coordinates is wrong"."""
    for annotation in annotations:
        spans = annotation.get("span")
        spans = [spans] if isinstance(spans, Mapping) else spans
        for span in spans if isinstance(spans, list) else []:
            if not isinstance(span, Mapping):
                continue
            keys = ("page_index", "x0", "x1", "y0", "y1")
            if all(isinstance(span.get(k), int | float) for k in keys):
                return [{**{k: span[k] for k in keys}, "offset_string": value}]
    return None


def _id(value: Any) -> int | None:
    if isinstance(value, Mapping):
        value = value.get("id")
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return None


def _same_slot(missing: Mapping[str, Any], slot: Slot) -> bool:
    if _id(missing.get("label")) != slot.label_id:
        return False
    set_id = _id(missing.get("annotation_set"))
    if set_id is not None and slot.set_id is not None:
        return set_id == slot.set_id
    return _id(missing.get("label_set")) == slot.label_set_id
