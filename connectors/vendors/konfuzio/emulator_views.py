"""The JSON the Konfuzio emulator answers with: projects, categories (with their ``schema``),
labels, label sets, documents (list and detail, with ``pages`` and ``annotation_sets``),
annotations and missing annotations — mixed into ``KonfuzioState``.

Shapes follow the contract (``shared/vendor-contracts/konfuzio.md`` §4: the keys of the SDK's
own API tests, the nesting of Konfuzio's document-validation UI). Links (``file_url``,
``image_url``) are relative to the server, as Konfuzio's are.
"""

from __future__ import annotations

import threading
from typing import Any

from connectors.vendors.konfuzio.emulator_model import (
    CATEGORIES,
    DONE,
    LABEL_SETS,
    LABELS,
    PROJECT,
    STATUSES,
    Annotation,
    AnnotationSet,
    Document,
    DocumentSet,
    LabelDef,
    LabelSetDef,
    MissingAnnotation,
    Page,
    PerDocument,
    iso,
)

IMAGE_SCALE = 2
"""Page images are rendered at 144 dpi: ``size`` is twice ``original_size``."""


def label_set_ref(label_set: LabelSetDef) -> dict[str, Any]:
    return {
        "id": label_set.id,
        "name": label_set.name,
        "api_name": label_set.api_name,
        "description": None,
        "has_multiple_annotation_sets": label_set.has_multiple_annotation_sets,
    }


def label_ref(label: LabelDef) -> dict[str, Any]:
    return {
        "id": label.id,
        "name": label.name,
        "api_name": label.name,
        "description": "",
        "data_type": label.data_type,
        "has_multiple_top_candidates": False,
    }


class Views:
    """JSON renderings for ``KonfuzioState`` (call with its lock held)."""

    lock: threading.RLock
    username: str
    documents: dict[int, Document]
    pages: dict[int, Page]
    annotation_sets: dict[int, AnnotationSet]
    annotations: PerDocument[Annotation]
    missing: PerDocument[MissingAnnotation]

    # ------------------------------------------------------------------ the seeded objects

    def project_json(self) -> dict[str, Any]:
        return {
            "id": PROJECT,
            "name": "Invoices",
            "storage_name": "invoices",
            "priority_processing": False,
            "ocr_method": "default",
            "auto_rotate_documents": False,
            "category_ai_model_parameters": {},
            "category_ai": None,
            "decimal_separator": None,
            "auto_delete_documents_after_days": None,
            "enable_translated_strings": False,
        }

    def category_json(self, category_id: int) -> dict[str, Any]:
        category = CATEGORIES[category_id]
        schema = []
        for set_id in category.label_sets:
            label_set = LABEL_SETS[set_id]
            schema.append(
                {
                    "id": label_set.id,
                    "name": label_set.name,
                    "api_name": label_set.api_name,
                    "has_multiple_annotation_sets": label_set.has_multiple_annotation_sets,
                    "labels": [
                        {k: v for k, v in label_ref(LABELS[lid]).items() if k != "description"}
                        for lid in label_set.labels
                    ],
                }
            )
        return {
            "id": category.id,
            "name": category.name,
            "api_name": category.api_name,
            "project": PROJECT,
            "description": "",
            "active_ai_model": None,
            "ai_model_type": "extraction",
            "extraction_ai_model_parameters": {},
            "schema": schema,
        }

    def label_json(self, label_id: int) -> dict[str, Any]:
        label = LABELS[label_id]
        sets = [s.id for s in LABEL_SETS.values() if label_id in s.labels]
        return {
            **label_ref(label),
            "project": PROJECT,
            "label_sets": sets,
            "categories": sorted({c for s in sets for c in LABEL_SETS[s].categories}),
            "threshold": 0.1,
        }

    def label_set_json(self, set_id: int) -> dict[str, Any]:
        label_set = LABEL_SETS[set_id]
        return {
            **label_set_ref(label_set),
            "project": PROJECT,
            "has_multiple_sections": label_set.has_multiple_annotation_sets,
            "categories": list(label_set.categories),
            "labels": list(label_set.labels),
        }

    # ------------------------------------------------------------------ documents

    def page_json(self, page: Page) -> dict[str, Any]:
        return {
            "id": page.id,
            "number": page.number,
            "image_url": f"/page/show-image/{page.id}/",
            "thumbnail_url": f"/page/show-thumbnail/{page.id}/",
            "original_size": [page.width, page.height],
            "size": [round(page.width * IMAGE_SCALE), round(page.height * IMAGE_SCALE)],
            "angle": page.angle,
        }

    def document_json(self, doc: Document, *, detail: bool = True) -> dict[str, Any]:
        """``GET documents/{id}/`` (``detail``) or one entry of the document list."""
        pages = [self.pages[p] for p in doc.page_ids]
        done = doc.done_at is not None and doc.status == DONE
        processing = (doc.done_at - doc.started_at) if done and doc.done_at else None
        shown: dict[str, Any] = {
            "id": doc.id,
            "project": PROJECT,
            "document_set": doc.document_set_id,
            "number_of_pages": len(pages),
            "data_file_name": doc.file_name,
            "data_file_producer": None,
            "file_url": f"/doc/show/{doc.id}/",
            "original_file_url": f"/doc/show-original/{doc.id}/",
            "thumbnail_url": f"/page/show-thumbnail/{pages[0].id}/" if pages else None,
            "ocr_time": round(processing / 3, 6) if processing is not None else None,
            "categorization_time": round(processing / 3, 6) if processing is not None else None,
            "extraction_time": round(processing / 3, 6) if processing is not None else None,
            "processing_time": round(processing, 6) if processing is not None else None,
            "extraction_url": None,
            "callback_url": doc.callback_url,
            "callback_status_code": doc.callback_status_code,
            "category": doc.category_id,
            "category_confidence": doc.category_confidence,
            "category_is_revised": doc.category_is_revised,
            "status_data": doc.status,
            "status_reason": doc.error,
            "labeling_available": 1 if done else 0,
            "is_reviewed": doc.is_reviewed,
            "dataset_status": doc.dataset_status,
            "assignee": doc.assignee,
            "created_by": self.username,
            "created_at": iso(doc.created_at),
            "updated_at": iso(doc.updated_at),
            "proposed_split": doc.proposed_split,
            "split_is_revised": doc.split_is_revised,
            "enable_translated_strings": False,
        }
        if detail:
            shown["text"] = self.document_text(doc)
            shown["pages"] = [self.page_json(p) for p in pages]
            shown["annotation_sets"] = self.annotation_sets_json(doc)
        return shown

    def document_text(self, doc: Document) -> str | None:
        if doc.extraction is None or not doc.extraction.ok or doc.status != DONE:
            return None
        return "\f".join(page.text for page in doc.extraction.pages)

    def annotation_sets_json(self, doc: Document) -> list[dict[str, Any]]:
        """Existing annotation sets with their labels and annotations, then the "potential"
        ones (``id: null``): label sets of the category the document has no set of yet."""
        if not doc.extracted or doc.category_id is None:
            return []
        by_set: dict[int, list[Annotation]] = {}
        for ann in self.annotations.of(doc.id):
            by_set.setdefault(ann.annotation_set_id, []).append(ann)
        shown = []
        used: set[int] = set()
        for set_id in doc.annotation_set_ids:
            annotation_set = self.annotation_sets[set_id]
            used.add(annotation_set.label_set_id)
            shown.append(
                self._set_json(
                    set_id, LABEL_SETS[annotation_set.label_set_id], by_set.get(set_id, [])
                )
            )
        for label_set_id in CATEGORIES[doc.category_id].label_sets:
            if label_set_id not in used:
                shown.append(self._set_json(None, LABEL_SETS[label_set_id], []))
        return shown

    def _set_json(
        self, set_id: int | None, label_set: LabelSetDef, annotations: list[Annotation]
    ) -> dict[str, Any]:
        labels = []
        for label_id in label_set.labels:
            found = [a for a in annotations if a.label_id == label_id]
            labels.append(
                {
                    **{k: v for k, v in label_ref(LABELS[label_id]).items() if k != "data_type"},
                    "annotations": [self.annotation_json(a, nested=True) for a in found],
                }
            )
        return {"id": set_id, "label_set": label_set_ref(label_set), "labels": labels}

    # ------------------------------------------------------------------ annotations

    def annotation_json(self, ann: Annotation, *, nested: bool = False) -> dict[str, Any]:
        """An annotation inside ``annotation_sets`` (``nested``) or in the annotation list,
        which adds its ``label``, ``label_set`` and ``annotation_set``."""
        shown: dict[str, Any] = {
            "id": ann.id,
            "document": ann.document_id,
            "offset_string": ann.offset_string,
            "offset_string_original": ann.offset_string_original,
            "translated_string": None,
            "normalized": ann.normalized,
            "confidence": ann.confidence,
            "is_correct": ann.is_correct,
            "revised": ann.revised,
            "origin": ann.origin,
            "created_by": ann.created_by,
            "revised_by": ann.revised_by,
            "custom_offset_string": ann.custom_offset_string,
            "span": [dict(s) for s in ann.spans],
            "selection_bbox": dict(ann.selection_bbox) if ann.selection_bbox else None,
            "created_at": iso(ann.created_at),
            "updated_at": iso(ann.updated_at),
        }
        if not nested:
            shown["label"] = label_ref(LABELS[ann.label_id])
            shown["label_set"] = label_set_ref(LABEL_SETS[ann.label_set_id])
            shown["annotation_set"] = ann.annotation_set_id
        return shown

    def missing_json(self, missing: MissingAnnotation) -> dict[str, Any]:
        return {
            "id": missing.id,
            "document": missing.document_id,
            "label": missing.label_id,
            "label_set": missing.label_set_id,
            "annotation_set": missing.annotation_set_id,
            "created_at": iso(missing.created_at),
        }

    def document_set_json(self, document_set: DocumentSet) -> dict[str, Any]:
        return {
            "id": document_set.id,
            "original_file_url": f"/doc/show-original/{document_set.original_document_id}/",
            "original_number_of_pages": document_set.original_number_of_pages,
            "documents": [
                self.document_json(self.documents[d], detail=False)
                for d in document_set.document_ids
                if d in self.documents
            ],
        }

    def admin_document_json(self, doc: Document) -> dict[str, Any]:
        """What ``GET /_emulator/documents`` shows of a document (times in epoch seconds)."""
        return {
            "id": doc.id,
            "status_data": doc.status,
            "status": STATUSES.get(doc.status, "?"),
            "status_reason": doc.error,
            "next_status_at": doc.due_at,
            "done_at": doc.done_at,
            "data_file_name": doc.file_name,
            "category": doc.category_id,
            "callback_url": doc.callback_url,
            "callback_status_code": doc.callback_status_code,
            "proposed_split": doc.proposed_split,
            "document_set": doc.document_set_id,
            "is_reviewed": doc.is_reviewed,
            "annotations": len(self.annotations.of(doc.id)),
        }
