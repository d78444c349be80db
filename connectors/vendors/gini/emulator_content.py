"""What the Gini emulator's "AI" finds, in Gini's shapes: the kit's extraction engine
(``connectors.emulation.extraction``) rendered as specific extractions, candidates and compound
extractions (``extractions``), and the kit's words as Gini's layout (``layout``).

Gini's coordinates are DTP points with the origin at the upper-left corner of the page
(004:309-310), which is the engine's system too, so boxes only change shape:
``{"height", "left", "page", "top", "width"}``, rounded to 0.1 pt. Values are strings in Gini's
formats: amounts ``"24.99:EUR"``, IBANs without spaces, dates ``yyyy-mm-dd``. The label
catalogue (``LABELS``) is the emulator's: the full list is in a chapter the seed does not have
(see NOTES.md, "Emulator").
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from typing import Any

from connectors.base import BBox
from connectors.emulation import extraction as engine

MAX_PAGES = 10
""""Only the first 10 pages of a document are processed" (004:19)."""

A4 = (595.3, 841.9)
"""``sizeX``/``sizeY`` of pages whose size the engine does not know (text files, images)."""

DEFAULT_CURRENCY = "EUR"
"""The currency of an amount printed without one (Gini reads German documents, 004:20)."""


@dataclass(frozen=True, slots=True)
class LabelDef:
    """One specific extraction: its entity, the candidate list it points to, and the canonical
    field the engine reads it from (None: only ever set by feedback)."""

    entity: str
    candidates: str | None = None
    source: str | None = None


LABELS: dict[str, LabelDef] = {
    "amountToPay": LabelDef("amount", "amounts", "total_amount"),
    "iban": LabelDef("iban", "ibans", "supplier_iban"),
    "bic": LabelDef("bic", "bics", "supplier_bic"),
    "paymentRecipient": LabelDef("companyname", None, "supplier_name"),
    "paymentReference": LabelDef("reference", None, "payment_reference"),
    "paymentPurpose": LabelDef("text", None, None),
    "invoiceId": LabelDef("text", None, "invoice_number"),
    "documentDate": LabelDef("date", "dates", "issue_date"),
    "paymentDueDate": LabelDef("date", "dates", "due_date"),
    "docType": LabelDef("doctype", None, "document_type"),
    "customerName": LabelDef("companyname", None, "customer_name"),
}
"""Specific extractions by label (the only labels feedback may name; others are 404)."""

LINE_ITEMS = "lineItems"
"""The compound extraction of invoice lines."""

LINE_ITEM_LABELS: dict[str, tuple[str, str]] = {
    "description": ("text", "description"),
    "artNumber": ("text", "item_code"),
    "quantity": ("numeric", "quantity"),
    "baseGross": ("amount", "unit_price"),
    "grossAmount": ("amount", "total_amount"),
    "taxRate": ("numeric", "tax_rate"),
}
"""A line item's labels: (entity, the engine's cell name)."""

DOC_TYPES = {"invoice": "Invoice", "credit_note": "CreditNote"}


def extract(
    data: bytes,
    mime_type: str,
    *,
    ocr: bool = False,
    wrongness: engine.WrongnessSettings | None = None,
) -> engine.Extraction:
    """The engine's reading of the first ``MAX_PAGES`` pages of one file; ``wrongness``: the
    emulator's options, for fields wrong or missed on purpose."""
    return engine.extract(
        data, mime_type, ocr=ocr, read_pages=MAX_PAGES, max_pages=MAX_PAGES, wrongness=wrongness
    )


# --------------------------------------------------------------------------- extractions


def gini_box(box: BBox | None, page: int | None) -> dict[str, Any] | None:
    """An engine box as Gini's (keys in the seed's order, 004:134-140)."""
    if box is None or page is None:
        return None
    return {
        "height": round(box.bottom - box.top, 1),
        "left": round(box.left, 1),
        "page": page,
        "top": round(box.top, 1),
        "width": round(box.right - box.left, 1),
    }


def _amount(found: engine.FoundValue, currency: str) -> str | None:
    if found.value is None:
        return None
    return f"{found.value}:{currency}"


def _value(entity: str, found: engine.FoundValue, currency: str) -> str | None:
    if entity == "amount":
        return _amount(found, currency)
    if entity == "doctype":
        return DOC_TYPES.get(found.value or "", "Invoice")
    if entity == "companyname" or entity == "reference" or entity == "text":
        return found.text
    return found.value


def _extraction(entity: str, value: str, box: dict[str, Any] | None) -> dict[str, Any]:
    shown: dict[str, Any] = {"box": box} if box is not None else {}
    return {**shown, "entity": entity, "value": value}


def currency_of(read: engine.Extraction) -> str:
    found = read.get("currency")
    return (found.value if found is not None and found.value else None) or DEFAULT_CURRENCY


def extractions(read: engine.Extraction) -> dict[str, Any]:
    """``GET /documents/{id}/extractions`` for what the engine read (before any feedback):
    ``extractions``, ``candidates`` and ``compoundExtractions``."""
    currency = currency_of(read)
    specific: dict[str, dict[str, Any]] = {}
    candidates: dict[str, list[dict[str, Any]]] = {}

    def candidate(name: str, entry: dict[str, Any]) -> None:
        listed = candidates.setdefault(name, [])
        if all(c["value"] != entry["value"] for c in listed):
            listed.append(entry)

    for label, definition in LABELS.items():
        source = definition.source
        if label == "paymentPurpose":
            source = "payment_reference" if read.get("payment_reference") else "invoice_number"
        found = read.get(source) if source else None
        if found is None:
            continue
        value = _value(definition.entity, found, currency)
        if value is None:
            continue
        entry = _extraction(definition.entity, value, gini_box(found.box, found.page))
        if definition.candidates:
            candidate(definition.candidates, dict(entry))
            entry["candidates"] = definition.candidates
        specific[label] = entry
    for name in ("net_amount", "tax_amount"):
        found = read.get(name)
        value = _amount(found, currency) if found is not None else None
        if found is not None and value is not None:
            candidate("amounts", _extraction("amount", value, gini_box(found.box, found.page)))
    return {
        "extractions": specific,
        "candidates": candidates,
        "compoundExtractions": {LINE_ITEMS: line_items(read, currency)} if read.line_items else {},
    }


def line_items(read: engine.Extraction, currency: str) -> list[dict[str, Any]]:
    items = []
    for item in read.line_items:
        shown: dict[str, Any] = {}
        for label, (entity, cell_name) in LINE_ITEM_LABELS.items():
            cell = item.cells.get(cell_name)
            if cell is None:
                continue
            value = _amount(cell, currency) if entity == "amount" else (cell.value or cell.text)
            if value is None:
                continue
            shown[label] = _extraction(entity, value, gini_box(cell.box, cell.page))
        items.append(shown)
    return items


# --------------------------------------------------------------------------- feedback

_AMOUNT_RE = re.compile(r"^-?\d+(?:\.\d+)?:[A-Z]{3}$")
_IBAN_RE = re.compile(r"^[A-Z]{2}\d{2}[A-Z0-9]{11,30}$")
_BIC_RE = re.compile(r"^[A-Z]{6}[A-Z0-9]{2}(?:[A-Z0-9]{3})?$")
_NUMERIC_RE = re.compile(r"^-?\d+(?:\.\d+)?$")
_BOX_KEYS = ("height", "left", "page", "top", "width")


def invalid_value(entity: str, value: Any) -> str | None:
    """Why ``value`` breaks the emulator's validation rules for ``entity`` (None: it is valid).
    The rules are the emulator's (the seed names "entity validation rules" only, 004:266)."""
    if not isinstance(value, str) or not value.strip():
        return "value must be a non-empty string"
    if entity == "amount" and not _AMOUNT_RE.match(value):
        return f"{value!r} is not an amount like 24.99:EUR"
    if entity == "iban" and not _IBAN_RE.match(value):
        return f"{value!r} is not an IBAN (15-34 letters and digits, no spaces)"
    if entity == "bic" and not _BIC_RE.match(value):
        return f"{value!r} is not a BIC"
    if entity == "numeric" and not _NUMERIC_RE.match(value):
        return f"{value!r} is not a number"
    if entity == "date":
        try:
            date.fromisoformat(value)
        except ValueError:
            return f"{value!r} is not a date like 2026-01-31"
        if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
            return f"{value!r} is not a date like 2026-01-31"
    return None


def invalid_box(box: Any) -> str | None:
    """Why a feedback ``box`` is not one (None: it is, or there is none)."""
    if box is None:
        return None
    if not isinstance(box, Mapping) or set(box) != set(_BOX_KEYS):
        return f"box must have exactly {', '.join(_BOX_KEYS)}"
    if any(isinstance(box[k], bool) or not isinstance(box[k], int | float) for k in _BOX_KEYS):
        return "box values must be numbers"
    if box["page"] < 1 or box["width"] < 0 or box["height"] < 0:
        return "box page must be 1 or more, width and height not negative"
    return None


# --------------------------------------------------------------------------- layout


def _words_box(words: list[Any]) -> dict[str, float]:
    left = min(w.box.left for w in words)
    top = min(w.box.top for w in words)
    right = max(w.box.right for w in words)
    bottom = max(w.box.bottom for w in words)
    return {
        "l": round(left, 2),
        "t": round(top, 2),
        "w": round(right - left, 2),
        "h": round(bottom - top, 2),
    }


def _word(word: engine.Word) -> dict[str, Any]:
    return {
        "l": round(word.box.left, 2),
        "t": round(word.box.top, 2),
        "w": round(word.box.right - word.box.left, 2),
        "h": round(word.box.bottom - word.box.top, 2),
        "fontSize": round(word.font_size, 1),
        "fontFamily": word.font_name,
        "bold": word.bold,
        "text": word.text,
    }


def _paragraphs(lines: list[list[engine.Word]]) -> list[list[list[engine.Word]]]:
    """Lines one below the other, each less than a line height apart, form a paragraph."""
    paragraphs: list[list[list[engine.Word]]] = []
    previous: list[engine.Word] | None = None
    for line in lines:
        if previous is not None and paragraphs:
            height = max(w.box.bottom - w.box.top for w in previous)
            gap = min(w.box.top for w in line) - max(w.box.bottom for w in previous)
            if 0 <= gap < height:
                paragraphs[-1].append(line)
                previous = line
                continue
        paragraphs.append([line])
        previous = line
    return paragraphs


def layout(pages: list[engine.PageWords], page_count: int) -> dict[str, Any]:
    """``GET /documents/{id}/layout``: ``{"pages": [...]}``, one text zone per page; no
    regions (the emulator finds no remittance slips). Pages without known words (text files,
    images) have their A4 size and no text zones."""
    by_number = {page.number: page for page in pages}
    shown = []
    for number in range(1, min(page_count, MAX_PAGES) + 1):
        page = by_number.get(number)
        width, height = (page.width, page.height) if page is not None else A4
        paragraphs = _paragraphs(page.lines) if page is not None else []
        zones = []
        if paragraphs:
            zones.append(
                {
                    "paragraphs": [
                        {
                            **_words_box([w for line in paragraph for w in line]),
                            "lines": [
                                {**_words_box(line), "wds": [_word(w) for w in line]}
                                for line in paragraph
                            ],
                        }
                        for paragraph in paragraphs
                    ]
                }
            )
        shown.append(
            {
                "number": number,
                "sizeX": round(width, 1),
                "sizeY": round(height, 1),
                "textZones": zones,
                "regions": [],
            }
        )
    return {"pages": shown}
