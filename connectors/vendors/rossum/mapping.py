"""Map a fetched Rossum annotation (its content tree) to the canonical model. Pure, no I/O.

The input is what ``RossumVendor.fetch`` stores: ``{"annotation": {...}, "content": [...]}``
with ``content`` the list of sections from ``GET /v1/annotations/{id}/content`` (contract §6).
The flat datapoint shape of connector payloads and queue exports (§6.6: ``value`` beside
``category``, no nested ``content`` object) is read too, so a stored export maps the same way.

Rules (contract §12):

* sections and unknown categories are only grouping: their children are walked;
* a datapoint's text is ``normalized_value`` (ISO date, plain decimal) when present, else
  ``value``; ``raw_text`` keeps ``value`` as the UI shows it, ``vendor_label`` the schema id,
  ``confidence`` ``rir_confidence``, ``page`` the 1-based page, ``vendor_id`` the datapoint id
  and ``bbox`` the ``position`` turned from Rossum's page-image pixels (``PAGE_DPI``, the
  contract gives no unit: NOTES.md) into PDF points, with the page's size from the
  ``page_sizes`` that ``fetch`` adds from docrelay's copy of the document; line items keep the
  same provenance per cell;
* ``""``, ``null``, blank and missing values are no value and are skipped, as are buttons;
* datapoints the map does not know become ``extra.<schema_id>``; a second datapoint mapping to
  a canonical name already taken (``var_sym`` after ``payment_reference``) becomes an extra too;
* a multivalue of tuples whose cells the line-item map knows (or whose id is ``line_items``)
  gives one ``LineItem`` per non-empty row, in the tree's order; other tables keep their cells
  as ``extra.<cell schema_id>.<row>``; a multivalue of plain datapoints is a list of datapoints;
* the ``currency`` enum is lower-case (``eur``) and becomes the ISO code, and amounts without a
  currency of their own take it; ``document_type`` maps ``tax_invoice`` → ``invoice``.

Malformed input raises only KeyError, TypeError or ValueError (the engine rejects on those).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any, Final

from connectors.base import (
    LINE_ITEM_FIELDS,
    BBox,
    CanonicalResult,
    FieldValue,
    LineItem,
    Provenance,
)
from connectors.normalize import normalize_currency, normalize_field, normalize_line_item
from connectors.vendors.rossum.schema import FIELD_MAP, LINE_ITEM_MAP, LINE_ITEMS_ID

DOCUMENT_TYPES: Final[dict[str, str]] = {
    "tax_invoice": "invoice",
    "invoice": "invoice",
    "credit_note": "credit_note",
    "credit_memo": "credit_note",
}
"""Rossum's ``document_type`` enum values → canonical; others keep their text unnormalised."""

MAX_DEPTH: Final = 32
"""Content trees are four levels deep; anything much deeper is malformed, not recursed into."""

EXTRA: Final = "extra."
PAGE_DPI: Final = 144.0
"""The resolution of Rossum's page images, which ``position`` is in pixels of (the reference
gives no unit; NOTES.md): 2 pixels per PDF point."""


@dataclass(frozen=True, slots=True)
class Point:
    """One datapoint with a value, read from the tree."""

    schema_id: str
    text: str
    """What gets parsed: ``normalized_value`` when present, else ``value``."""
    raw: str
    """``value`` as Rossum shows it (``normalized_value`` when there is no ``value``)."""
    normalized: bool
    confidence: float | None
    page: int | None
    position: tuple[float, float, float, float] | None
    """As Rossum gives it: (left, top, right, bottom) in pixels of the page image."""
    node_id: str | None = None
    """The datapoint's id (what feedback names)."""


class Pages:
    """Turns Rossum's page-image pixels into PDF points on the document's pages."""

    __slots__ = ("scale", "sizes")

    def __init__(self, dpi: float, sizes: Any) -> None:
        self.scale = 72.0 / dpi
        self.sizes: list[tuple[float | None, float | None]] = [
            (float(size[0]), float(size[1]))
            if isinstance(size, Sequence) and len(size) == 2
            else (None, None)
            for size in (sizes if isinstance(sizes, Sequence) else ())
        ]
        """(width, height) in points per page, from docrelay's copy of the document."""

    def box(self, point: Point) -> BBox | None:
        pixels = point.position
        if pixels is None:
            return None
        page = point.page
        width, height = (None, None)
        if page is not None and 0 < page <= len(self.sizes):
            width, height = self.sizes[page - 1]
        scale = self.scale
        left, top, right, bottom = pixels
        return BBox(
            round(left * scale, 2),
            round(top * scale, 2),
            round(right * scale, 2),
            round(bottom * scale, 2),
            width,
            height,
        )

    def provenance(self, point: Point) -> Provenance:
        return Provenance(
            confidence=point.confidence,
            page=point.page,
            bbox=self.box(point),
            vendor_label=point.schema_id,
            raw_text=point.raw,
        )


def normalize(
    raw: Any,
    field_map: Mapping[str, str] = FIELD_MAP,
    line_item_map: Mapping[str, str] = LINE_ITEM_MAP,
    *,
    dpi: float = PAGE_DPI,
) -> CanonicalResult:
    """The canonical result of one fetched annotation; boxes in PDF points (``dpi`` is the
    resolution of Rossum's page images, NOTES.md)."""
    pages = Pages(dpi, raw.get("page_sizes") if isinstance(raw, Mapping) else None)
    points: list[Point] = []
    tables: list[Mapping[str, Any]] = []
    _walk(_content(raw), points, tables, 0)

    currency = next(
        (normalize_currency(p.text) for p in points if field_map.get(p.schema_id) == "currency"),
        None,
    )
    fields: list[FieldValue] = []
    taken: set[str] = set()
    for point in points:
        name = field_map.get(point.schema_id) or f"{EXTRA}{point.schema_id}"
        if not name.startswith(EXTRA):
            if name in taken:
                name = f"{EXTRA}{point.schema_id}"
            else:
                taken.add(name)
        fields.append(_field(name, point, currency, pages))

    items: list[LineItem] = []
    for table in tables:
        rows = [_row(tuple_node) for tuple_node in _children(table)]
        rows = [row for row in rows if row]
        if _is_line_table(table, rows, line_item_map):
            for row in rows:
                items.append(_line_item(len(items) + 1, row, line_item_map, pages))
        else:
            for number, row in enumerate(rows, start=1):
                for point in row:
                    name = f"{EXTRA}{point.schema_id}.{number}"
                    fields.append(_field(name, point, currency, pages))
    return CanonicalResult(fields=fields, line_items=items)


# --------------------------------------------------------------------------- the tree


def _content(raw: Any) -> list[Any]:
    if not isinstance(raw, Mapping):
        raise TypeError(f"a Rossum result must be an object, not {type(raw).__name__}")
    content = raw["content"]
    if isinstance(content, Mapping):  # the whole `GET …/content` answer was stored
        content = content["content"]
    return _list(content, "content")


def _list(value: Any, what: str) -> list[Any]:
    if isinstance(value, str | bytes) or not isinstance(value, Sequence):
        raise TypeError(f"{what} must be a list, not {type(value).__name__}")
    return list(value)


def _node(value: Any) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise TypeError(f"a content node must be an object, not {type(value).__name__}")
    return value


def _children(node: Mapping[str, Any]) -> list[Any]:
    children = node.get("children")
    if children is None:
        return []
    if isinstance(children, Mapping):  # a schema-style single child
        return [children]
    return _list(children, f"children of {node.get('schema_id')!r}")


def _walk(
    nodes: list[Any], points: list[Point], tables: list[Mapping[str, Any]], depth: int
) -> None:
    if depth > MAX_DEPTH:
        raise ValueError(f"the content tree is deeper than {MAX_DEPTH} levels")
    for value in nodes:
        node = _node(value)
        category = node.get("category")
        if category == "datapoint":
            point = _point(node)
            if point is not None:
                points.append(point)
        elif category == "multivalue":
            children = [_node(child) for child in _children(node)]
            if any(child.get("category") == "tuple" for child in children):
                tables.append(node)
            else:
                _walk(children, points, tables, depth + 1)
        else:  # sections, a stray tuple, categories added after this was written
            _walk(_children(node), points, tables, depth + 1)


def _row(value: Any) -> list[Point]:
    node = _node(value)
    if node.get("category") not in ("tuple", None):
        point = _point(node) if node.get("category") == "datapoint" else None
        return [point] if point is not None else []
    row: list[Point] = []
    for cell in _children(node):
        cell_node = _node(cell)
        if cell_node.get("category") == "datapoint":
            point = _point(cell_node)
            if point is not None:
                row.append(point)
    return row


def _point(node: Mapping[str, Any]) -> Point | None:
    """The datapoint's value, or None for a button or an empty value."""
    schema_id = node["schema_id"]
    if not isinstance(schema_id, str) or not schema_id:
        raise TypeError(f"schema_id must be a non-empty string, not {schema_id!r}")
    if node.get("type") == "button":
        return None
    body = node.get("content")
    if body is None:
        if "value" not in node and "normalized_value" not in node:
            return None  # a button (content null) or a datapoint without data
        body = node  # the flat connector/export shape
    elif not isinstance(body, Mapping):
        raise TypeError(f"content of {schema_id!r} must be an object")
    value = _text(body.get("value"))
    normalized = _text(body.get("normalized_value"))
    if normalized is not None:
        text, raw = normalized, value if value is not None else normalized
    elif value is not None:
        text, raw = value, value
    else:
        return None
    return Point(
        schema_id=schema_id,
        text=text,
        raw=raw,
        normalized=normalized is not None,
        confidence=_confidence(body.get("rir_confidence")),
        page=_page(body.get("page")),
        position=_position(body.get("position")),
        node_id=str(node["id"]) if node.get("id") is not None else None,
    )


def _text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        raise TypeError(f"a datapoint value cannot be a boolean ({value!r})")
    if isinstance(value, str):
        return value if value.strip() else None
    if isinstance(value, int | Decimal):
        return str(value)
    if isinstance(value, float):  # "JSON number format": keep the digits, never an exponent
        try:
            return format(Decimal(repr(value)), "f")
        except InvalidOperation as exc:
            raise ValueError(f"{value!r} is not a number") from exc
    raise TypeError(f"a datapoint value must be text or a number, not {type(value).__name__}")


def _confidence(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise TypeError(f"rir_confidence must be a number, not {value!r}")
    return float(value)


def _page(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise TypeError(f"page must be an integer, not {value!r}")
    page = int(value)
    return page if page >= 1 else None


def _position(value: Any) -> tuple[float, float, float, float] | None:
    if value is None:
        return None
    box = _list(value, "position")
    if not box:
        return None
    if len(box) != 4:
        raise ValueError(f"position must have four numbers, not {len(box)}")
    if any(isinstance(v, bool) or not isinstance(v, int | float) for v in box):
        raise TypeError(f"position must hold numbers, not {box!r}")
    left, top, right, bottom = box
    return float(left), float(top), float(right), float(bottom)


# --------------------------------------------------------------------------- values


def _field(name: str, point: Point, currency: str | None, pages: Pages) -> FieldValue:
    text = point.text
    if name == "document_type":
        text = DOCUMENT_TYPES.get(text.strip().lower(), text)
    value = normalize_field(
        name,
        text,
        confidence=point.confidence,
        page=point.page,
        bbox=pages.box(point),
        vendor_label=point.schema_id,
        currency=currency,
        decimal="." if point.normalized else None,
    )
    value.raw_text = point.raw
    value.vendor_id = point.node_id
    return value


def _is_line_table(
    table: Mapping[str, Any], rows: list[list[Point]], line_item_map: Mapping[str, str]
) -> bool:
    if table.get("schema_id") == LINE_ITEMS_ID:
        return True
    return any(point.schema_id in line_item_map for row in rows for point in row)


def _line_item(
    line_no: int, row: list[Point], line_item_map: Mapping[str, str], pages: Pages
) -> LineItem:
    """One row; each cell is parsed with its own decimal hint (normalised cells use ``.``)."""
    item = LineItem(line_no=line_no)
    for point in row:
        target = line_item_map.get(point.schema_id)
        if target is None or target.startswith(EXTRA):
            key = target[len(EXTRA) :] if target else point.schema_id
            if key not in item.extra:
                item.extra[key] = " ".join(point.raw.split())
                item.provenance[f"{EXTRA}{key}"] = pages.provenance(point)
            continue
        item.provenance.setdefault(target, pages.provenance(point))
        part = normalize_line_item(
            line_no, {target: point.text}, decimal="." if point.normalized else None
        )
        for attr in LINE_ITEM_FIELDS:
            parsed = getattr(part, attr)
            if parsed is not None and getattr(item, attr) is None:
                setattr(item, attr, parsed)
        for key, text in part.extra.items():  # a value that did not parse: keep the text
            item.extra.setdefault(key, text)
    if item.total_amount is None and item.net_amount is not None:
        item.total_amount = item.net_amount
    return item
