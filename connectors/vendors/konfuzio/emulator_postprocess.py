"""Post-processing in the Konfuzio emulator: split, rotate and sort
(``documents/{id}/postprocess/``), document sets, and the admin side of splitting (send a
document through 41, confirm its proposed split) — mixed into ``KonfuzioState``.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

from connectors.emulation.clock import Clock
from connectors.vendors.konfuzio import emulator_content as content
from connectors.vendors.konfuzio.emulator_model import (
    CATEGORIES,
    DONE,
    WAITING_FOR_SPLITTING_CONFIRMATION,
    Annotation,
    AnnotationSet,
    ApiError,
    Document,
    DocumentSet,
    MissingAnnotation,
    Page,
    PerDocument,
    pk_field,
)

if TYPE_CHECKING:
    from connectors.vendors.konfuzio.emulator import EmulatorOptions


class Postprocess:
    """Split, rotate and sort for ``KonfuzioState``."""

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

    def postprocess(self, document_id: int, items: Any) -> list[Document]:
        """``POST documents/{id}/postprocess/``: split, rotate and sort in one request. Each
        item is one resulting document (``name``, ``category``, ``pages: [{id, angle}]``);
        together they must use every page once. The first result keeps the document's id;
        all then run extraction again. One item with every page in order, unturned, rejects a
        proposed split and just continues with the document."""
        with self.lock:
            doc = self.document(document_id)
            if doc.status not in (DONE, WAITING_FOR_SPLITTING_CONFIRMATION):
                raise ApiError(
                    400,
                    {
                        "non_field_errors": [
                            f"The document cannot be post-processed in status {doc.status}."
                        ]
                    },
                )
            plan = self._plan(doc, items)
            trivial = (
                len(plan) == 1
                and [p.id for p, _ in plan[0][1]] == doc.page_ids
                and not any(a for _, a in plan[0][1])
            )
            if not trivial and doc.mime_type != "application/pdf":
                raise ApiError(
                    400, {"non_field_errors": ["Only PDF documents can be split or rotated."]}
                )
            results = []
            document_set = None
            if len(plan) > 1:
                if doc.document_set_id is not None:
                    document_set = self.document_sets[doc.document_set_id]
                else:
                    document_set = DocumentSet(
                        self._next_id("document_set"), doc.id, len(doc.page_ids), [doc.id]
                    )
                    self.document_sets[document_set.id] = document_set
            files = [(doc.data, doc.extraction)] if trivial else []
            for _, pages in [] if trivial else plan:  # every part from the file as it was
                numbers = [p.number for p, _ in pages]
                data = content.select_pages(doc.data, numbers, [a for _, a in pages])
                files.append((data, content.extract(data, doc.mime_type, ocr=self.options.ocr)))
            name = doc.file_name
            for index, ((item, pages), (data, extraction)) in enumerate(
                zip(plan, files, strict=True)
            ):
                target = doc if index == 0 else self._copy_document(doc)
                target.data, target.extraction = data, extraction
                target.file_name = str(item.get("name") or name)
                category = item.get("category")
                if category not in (None, ""):
                    target.category_id = int(category)
                target.page_ids = []
                for number, (page, angle) in enumerate(pages, start=1):
                    page.document_id, page.number = target.id, number
                    page.angle = ((page.angle + angle + 180) % 360) - 180
                    target.page_ids.append(page.id)
                target.proposed_split = None
                target.split_is_revised = True
                if document_set is not None:
                    target.document_set_id = document_set.id
                    if target.id not in document_set.document_ids:
                        document_set.document_ids.append(target.id)
                self._reextract(target)
                results.append(target)
            return results

    def _plan(
        self, doc: Document, items: Any
    ) -> list[tuple[dict[str, Any], list[tuple[Page, int]]]]:
        if not isinstance(items, list) or not items or not all(isinstance(i, dict) for i in items):
            raise ApiError(400, {"non_field_errors": ["Expected a list of documents."]})
        plan, seen = [], []
        for item in items:
            pages = item.get("pages")
            if not isinstance(pages, list) or not pages:
                raise ApiError(400, {"pages": ["Every document needs at least one page."]})
            chosen = []
            for entry in pages:
                page_id = entry.get("id") if isinstance(entry, dict) else entry
                page = self.pages.get(pk_field(page_id, "pages") or 0)
                if page is None or page.document_id != doc.id:
                    raise ApiError(
                        400, {"pages": [f"Page {page_id} is not a page of the document."]}
                    )
                angle = entry.get("angle", 0) if isinstance(entry, dict) else 0
                if not isinstance(angle, int) or angle % 90:
                    raise ApiError(400, {"pages": [f"Angle {angle!r} is not a multiple of 90."]})
                chosen.append((page, angle % 360))
                seen.append(page.id)
            category = item.get("category")
            if category not in (None, "") and category not in CATEGORIES:
                raise ApiError(
                    400, {"category": [f'Invalid pk "{category}" - object does not exist.']}
                )
            plan.append((item, chosen))
        if sorted(seen) != sorted(doc.page_ids):
            raise ApiError(
                400, {"pages": ["The documents must use every page of the document exactly once."]}
            )
        return plan

    def _copy_document(self, doc: Document) -> Document:
        """A new document split off ``doc``: same upload settings, its own id."""
        now = self.clock.now()
        new = Document(
            id=self._next_id("document"),
            file_name=doc.file_name,
            mime_type=doc.mime_type,
            data=b"",
            original=doc.original,
            created_at=now,
            updated_at=now,
            category_id=doc.category_id,
            category_confidence=doc.category_confidence,
            callback_url=doc.callback_url,
            assignee=doc.assignee,
            dataset_status=doc.dataset_status,
        )
        self.documents[new.id] = new
        return new

    def send_through_split(self, document_id: int, proposal: Any = None) -> Document:
        """Admin: to 41 with ``proposal`` (validated like a postprocess body) or the splitting
        "AI"'s own proposal."""
        with self.lock:
            doc = self.document(document_id)
            if doc.extraction is None or not doc.extraction.ok:
                raise ApiError(
                    400, {"detail": "A document that could not be read cannot be split."}
                )
            if proposal is not None:
                self._plan(doc, proposal)
            doc.proposed_split = proposal
            self._settle(doc, WAITING_FOR_SPLITTING_CONFIRMATION)
            return doc

    def finish_split(self, document_id: int, items: Any = None) -> list[Document]:
        """Admin: a person confirms the proposed split (or ``items``) in the UI."""
        with self.lock:
            doc = self.document(document_id)
            if doc.status != WAITING_FOR_SPLITTING_CONFIRMATION:
                raise ApiError(
                    400,
                    {
                        "detail": f"Document {doc.id} is not waiting for a split "
                        f"(status {doc.status})."
                    },
                )
            return self.postprocess(doc.id, items if items is not None else doc.proposed_split)
