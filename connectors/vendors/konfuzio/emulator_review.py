"""Review in the Konfuzio emulator: annotation feedback (accept/decline), annotations created
by a person (spans from bounding boxes, the annotation-set decision graph), missing annotations,
and the ``is_reviewed`` guard — mixed into ``KonfuzioState``.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from connectors.emulation.clock import Clock
from connectors.vendors.konfuzio import emulator_content as content
from connectors.vendors.konfuzio.emulator_model import (
    CATEGORIES,
    DONE,
    LABEL_SETS,
    LABELS,
    Annotation,
    AnnotationSet,
    ApiError,
    Document,
    DocumentSet,
    MissingAnnotation,
    Page,
    PerDocument,
    bool_field,
    pk_field,
)

if TYPE_CHECKING:
    from connectors.vendors.konfuzio.emulator import EmulatorOptions


class Review:
    """Annotations, missing annotations and the review guard for ``KonfuzioState``."""

    lock: threading.RLock
    options: EmulatorOptions
    clock: Clock
    documents: dict[int, Document]
    pages: dict[int, Page]
    annotation_sets: dict[int, AnnotationSet]
    annotations: PerDocument[Annotation]
    missing: PerDocument[MissingAnnotation]
    document_sets: dict[int, DocumentSet]

    # the methods these call (tick, document, _next_id, _settle …) are KonfuzioState's

    def review_blockers(self, doc: Document) -> list[str]:
        """Why the document cannot be marked reviewed: annotations still needing feedback and
        labels left unfilled (no correct annotation and no missing annotation), in existing
        annotation sets and in the potential ones of the category."""
        if doc.status != DONE or not doc.extracted:
            return [f"The document is not processed yet (status {doc.status})."]
        anns = self.annotations.of(doc.id)
        missing = self.missing.of(doc.id)
        problems = []
        pending = [a for a in anns if not a.revised]
        if pending:
            problems.append(f"{len(pending)} annotations still need feedback.")
        unfilled = []
        used_label_sets = set()
        for set_id in doc.annotation_set_ids:
            label_set = self.annotation_sets[set_id].label_set_id
            used_label_sets.add(label_set)
            only = (
                sum(
                    1
                    for s in doc.annotation_set_ids
                    if self.annotation_sets[s].label_set_id == label_set
                )
                == 1
            )
            for label_id in LABEL_SETS[label_set].labels:
                filled = any(
                    a.annotation_set_id == set_id and a.label_id == label_id and a.is_correct
                    for a in anns
                )
                marked = any(
                    m.label_id == label_id
                    and (
                        m.annotation_set_id == set_id
                        or (only and m.annotation_set_id is None and m.label_set_id == label_set)
                    )
                    for m in missing
                )
                if not filled and not marked:
                    unfilled.append(LABELS[label_id].name)
        assert doc.category_id is not None
        for label_set in CATEGORIES[doc.category_id].label_sets:
            if label_set in used_label_sets:
                continue
            for label_id in LABEL_SETS[label_set].labels:
                if not any(m.label_id == label_id and m.label_set_id == label_set for m in missing):
                    unfilled.append(LABELS[label_id].name)
        if unfilled:
            problems.append(
                f"{len(unfilled)} labels are unfilled: {', '.join(sorted(set(unfilled)))}."
            )
        return problems

    # ------------------------------------------------------------------ annotations

    def _processed(self, doc: Document) -> None:
        if doc.status != DONE or not doc.extracted:
            raise ApiError(
                400, {"document": [f"The document is not processed yet (status {doc.status})."]}
            )

    def _resolve_set(self, doc: Document, label_id: int, data: Mapping[str, Any]) -> AnnotationSet:
        """The annotation set of a new or moved annotation: ``annotation_set`` names an existing
        one; ``label_set`` creates one if the label set allows several, else reuses its only
        one (or creates it) — the seed's decision graph (001:329-331)."""
        set_id = data.get("annotation_set")
        label_set_id = data.get("label_set", data.get("label_set_id"))
        if isinstance(label_set_id, dict):
            label_set_id = label_set_id.get("id")
        if set_id not in (None, ""):
            found = self.annotation_sets.get(pk_field(set_id, "annotation_set"))
            if found is None or found.document_id != doc.id:
                raise ApiError(
                    400, {"annotation_set": [f'Invalid pk "{set_id}" - object does not exist.']}
                )
            if label_id not in LABEL_SETS[found.label_set_id].labels:
                raise ApiError(
                    400, {"label": ["The label is not in this annotation set's label set."]}
                )
            return found
        if label_set_id in (None, ""):
            raise ApiError(
                400, {"non_field_errors": ["You must specify either annotation_set or label_set."]}
            )
        label_set = pk_field(label_set_id, "label_set")
        assert doc.category_id is not None
        if label_set not in CATEGORIES[doc.category_id].label_sets:
            raise ApiError(
                400, {"label_set": [f"Label set {label_set} is not in the document's category."]}
            )
        if label_id not in LABEL_SETS[label_set].labels:
            raise ApiError(400, {"label": ["The label is not in this label set."]})
        if not LABEL_SETS[label_set].has_multiple_annotation_sets:
            for existing in doc.annotation_set_ids:
                if self.annotation_sets[existing].label_set_id == label_set:
                    return self.annotation_sets[existing]
        created = AnnotationSet(self._next_id("annotation_set"), doc.id, label_set)
        self.annotation_sets[created.id] = created
        doc.annotation_set_ids.append(created.id)
        return created

    def _user_spans(self, doc: Document, raw: Any) -> tuple[list[dict[str, Any]], str, bool]:
        """Spans a client sent (a bbox per span, points from the bottom-left): the text under
        each box from the PDF's text layer, its offsets in the document text. Returns the
        spans, the joined text and whether the client's ``offset_string`` overrode it."""
        if not isinstance(raw, list) or not raw:
            raise ApiError(400, {"span": ["This list may not be empty."]})
        assert doc.extraction is not None
        starts = content.page_starts(doc.extraction)
        spans, texts, custom = [], [], False
        for item in raw:
            if not isinstance(item, dict):
                raise ApiError(400, {"span": ["Expected a list of objects."]})
            try:
                index = int(item["page_index"])
                x0, x1, y0, y1 = (float(item[k]) for k in ("x0", "x1", "y0", "y1"))
            except (KeyError, TypeError, ValueError):
                raise ApiError(
                    400, {"span": ["Each span needs page_index, x0, x1, y0 and y1."]}
                ) from None
            if not 0 <= index < len(doc.page_ids):
                raise ApiError(
                    400, {"span": [f"page_index {index} is not a page of the document."]}
                )
            page = self.pages[doc.page_ids[index]]
            if not (0 <= x0 <= x1 <= page.width + 0.5 and 0 <= y0 <= y1 <= page.height + 0.5):
                raise ApiError(400, {"span": ["The bbox is not a box on the page."]})
            original = (
                content.text_in_box(doc.data, item) if doc.mime_type == "application/pdf" else None
            )
            given = item.get("offset_string")
            text = str(given) if given not in (None, "") else original
            if not text:
                raise ApiError(400, {"span": ["No text found inside the bbox."]})
            custom = custom or (original is not None and text != original)
            page_text = (
                doc.extraction.pages[index].text if index < len(doc.extraction.pages) else ""
            )
            where = content.find_text(page_text, original or text)
            span = {
                "page_index": index,
                "x0": x0,
                "x1": x1,
                "y0": y0,
                "y1": y1,
                "top": round(page.height - y1, 4),
                "bottom": round(page.height - y0, 4),
                "start_offset": starts[index] + where[0] if where else 0,
                "end_offset": starts[index] + where[1] if where else 0,
                "offset_string": text,
                "offset_string_original": original or text,
            }
            spans.append(span)
            texts.append(text)
        return spans, " ".join(texts), custom

    def create_annotation(self, data: Mapping[str, Any], user: str) -> Annotation:
        """``POST annotations/``: a human's annotation (``is_revised`` and ``revised`` both
        accepted for the revised flag, the seed uses the first, the lists the second)."""
        with self.lock:
            document_id = pk_field(data.get("document"), "document", required=True)
            doc = self.documents.get(document_id or 0)
            if doc is None:
                raise ApiError(
                    400, {"document": [f'Invalid pk "{document_id}" - object does not exist.']}
                )
            self.tick()
            self._processed(doc)
            label_id = pk_field(data.get("label"), "label", required=True)
            if label_id not in LABELS:
                raise ApiError(
                    400, {"label": [f'Invalid pk "{label_id}" - object does not exist.']}
                )
            assert label_id is not None
            spans, text, custom = self._user_spans(doc, data.get("span"))
            annotation_set = self._resolve_set(doc, label_id, data)
            now = self.clock.now()
            revised = bool_field(
                data.get("revised", data.get("is_revised")), "revised", default=True
            )
            confidence = data.get("confidence")
            ann = Annotation(
                id=self._next_id("annotation"),
                document_id=doc.id,
                annotation_set_id=annotation_set.id,
                label_id=label_id,
                label_set_id=annotation_set.label_set_id,
                offset_string=text,
                offset_string_original=" ".join(s["offset_string_original"] for s in spans),
                normalized=content.normalize(LABELS[label_id], text),
                confidence=float(confidence) if isinstance(confidence, int | float) else None,
                spans=spans,
                created_at=now,
                updated_at=now,
                is_correct=bool_field(data.get("is_correct"), "is_correct", default=True),
                revised=revised,
                origin=str(data.get("origin") or "api.v3"),
                created_by=user,
                revised_by=user if revised else None,
                custom_offset_string=custom,
                selection_bbox=data.get("selection_bbox")
                if isinstance(data.get("selection_bbox"), dict)
                else None,
            )
            self.annotations[ann.id] = ann
            doc.updated_at = now
            return ann

    def annotation(self, annotation_id: int) -> Annotation:
        with self.lock:
            self.tick()
            ann = self.annotations.get(annotation_id)
            if ann is None:
                raise ApiError(404, "Not found.")
            return ann

    def patch_annotation(
        self, annotation_id: int, data: Mapping[str, Any], user: str
    ) -> Annotation:
        """``PATCH annotations/{id}/``: feedback (``revised``, ``is_correct``), another
        ``label``, a move (``annotation_set``/``label_set``), new ``span`` or
        ``offset_string``, ``selection_bbox``. Unknown keys are ignored, as DRF does."""
        with self.lock:
            ann = self.annotation(annotation_id)
            doc = self.documents[ann.document_id]
            self._processed(doc)
            revised = bool_field(data.get("revised"), "revised", default=None)
            correct = bool_field(data.get("is_correct"), "is_correct", default=None)
            label_id = pk_field(data.get("label"), "label") if "label" in data else None
            if label_id is not None and label_id not in LABELS:
                raise ApiError(
                    400, {"label": [f'Invalid pk "{label_id}" - object does not exist.']}
                )
            new_label = label_id if label_id is not None else ann.label_id
            moved = None
            if data.get("annotation_set") not in (None, "") or data.get("label_set") not in (
                None,
                "",
            ):
                moved = self._resolve_set(doc, new_label, data)
            elif new_label not in LABEL_SETS[ann.label_set_id].labels:
                raise ApiError(
                    400, {"label": ["The label is not in this annotation set's label set."]}
                )
            spans = None
            if "span" in data:
                spans, text, custom = self._user_spans(doc, data["span"])
            if spans is not None:
                ann.spans = spans
                ann.offset_string = text
                ann.offset_string_original = " ".join(s["offset_string_original"] for s in spans)
                ann.custom_offset_string = custom
            if data.get("offset_string") not in (None, ""):
                ann.offset_string = str(data["offset_string"])
                ann.custom_offset_string = ann.offset_string != ann.offset_string_original
            if spans is not None or "offset_string" in data or label_id is not None:
                ann.normalized = content.normalize(LABELS[new_label], ann.offset_string)
            ann.label_id = new_label
            if moved is not None:
                ann.annotation_set_id, ann.label_set_id = moved.id, moved.label_set_id
            if revised is not None:
                ann.revised = revised
                ann.revised_by = user if revised else None
            if correct is not None:
                ann.is_correct = correct
            if isinstance(data.get("selection_bbox"), dict):
                ann.selection_bbox = dict(data["selection_bbox"])
            ann.updated_at = doc.updated_at = self.clock.now()
            return ann

    def delete_annotation(self, annotation_id: int) -> None:
        with self.lock:
            ann = self.annotation(annotation_id)
            del self.annotations[ann.id]
            self.documents[ann.document_id].updated_at = self.clock.now()

    def visible_annotations(self) -> list[Annotation]:
        """Annotations of processed documents (the list endpoint shows no others)."""
        with self.lock:
            self.tick()
            return [
                a for a in self.annotations.values() if self.documents[a.document_id].status == DONE
            ]

    # ------------------------------------------------------------------ missing annotations

    def create_missing(self, data: Mapping[str, Any]) -> MissingAnnotation:
        """``POST missing-annotations/``: "this label is not in the document"."""
        with self.lock:
            document_id = pk_field(data.get("document"), "document", required=True)
            doc = self.documents.get(document_id or 0)
            if doc is None:
                raise ApiError(
                    400, {"document": [f'Invalid pk "{document_id}" - object does not exist.']}
                )
            self.tick()
            self._processed(doc)
            label_id = pk_field(data.get("label"), "label", required=True)
            label_set = pk_field(data.get("label_set"), "label_set", required=True)
            set_id = pk_field(data.get("annotation_set"), "annotation_set")
            assert label_id is not None and label_set is not None and doc.category_id is not None
            if label_set not in CATEGORIES[doc.category_id].label_sets:
                raise ApiError(
                    400,
                    {"label_set": [f"Label set {label_set} is not in the document's category."]},
                )
            if label_id not in LABEL_SETS[label_set].labels:
                raise ApiError(400, {"label": ["The label is not in this label set."]})
            if set_id is not None:
                found = self.annotation_sets.get(set_id)
                if found is None or found.document_id != doc.id or found.label_set_id != label_set:
                    raise ApiError(
                        400, {"annotation_set": [f'Invalid pk "{set_id}" - object does not exist.']}
                    )
            key = (doc.id, label_id, label_set, set_id)
            if any(
                (m.document_id, m.label_id, m.label_set_id, m.annotation_set_id) == key
                for m in self.missing.of(doc.id)
            ):
                raise ApiError(
                    400,
                    {
                        "non_field_errors": [
                            "The fields document, label, label_set, annotation_set must make a "
                            "unique set."
                        ]
                    },
                )
            missing = MissingAnnotation(
                self._next_id("missing"), doc.id, label_id, label_set, set_id, self.clock.now()
            )
            self.missing[missing.id] = missing
            return missing

    def missing_annotation(self, missing_id: int) -> MissingAnnotation:
        with self.lock:
            found = self.missing.get(missing_id)
            if found is None:
                raise ApiError(404, "Not found.")
            return found

    def delete_missing(self, missing_id: int) -> None:
        with self.lock:
            del self.missing[self.missing_annotation(missing_id).id]
