"""The emulator's data shapes: the kit's extraction in Rossum's content tree, content
operations, and the export formats (JSON, CSV, XML).

Extraction is the kit's engine (``connectors.emulation.extraction``) reading the PDF's text
layer; its canonical fields are put into the queue schema's datapoints by inverting
``schema.FIELD_MAP`` and ``schema.LINE_ITEM_MAP``. ``value`` keeps the text as printed,
``normalized_value`` is the engine's normalised value (ISO date, plain decimal), as the API
reference describes. Positions: the engine gives PDF points, Rossum's positions are pixels of
the page rendered at 144 dpi — ``_pixels`` is the one place that converts.
"""

from __future__ import annotations

import copy
import csv
import io
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any
from xml.etree import ElementTree as ET

from connectors import pdfium as pdfium_lock
from connectors.base import BBox
from connectors.emulation import extraction as engine
from connectors.normalize import parse_amount, parse_date
from connectors.vendors.rossum import schema as invoice_schema

PAGE_SCALE = 2
"""Pages are rendered at 144 dpi (2 x PDF points); positions are pixels of that image."""

MAX_PAGES = 200
"""Beyond this many pages an import fails (Rossum itself extracts the first 32)."""

CONFIDENCE_LABELLED = 0.97
"""``rir_confidence`` of a value found next to its label."""
CONFIDENCE_INFERRED = 0.6
"""``rir_confidence`` of a guessed value (letterhead supplier, unlabelled date or IBAN): below the
queue's default score threshold of 0.8, so it carries no ``score`` validation source."""

EXTRACTABLE_TYPES = frozenset({"application/pdf", "image/png", "image/jpeg", "image/tiff"})

_DOCUMENT_TYPES = {"invoice": "tax_invoice", "credit_note": "credit_note"}
_LINE_CELLS = (
    ("item_description", "description"),
    ("item_code", "item_code"),
    ("item_quantity", "quantity"),
    ("item_amount_base", "unit_price"),
    ("item_total_base", "total_amount"),
    ("item_rate", "tax_rate"),
)
"""Table column schema id → the engine's line-item cell."""
_EMPTY_CONTENT: dict[str, Any] = {
    "value": "",
    "normalized_value": None,
    "page": None,
    "position": None,
    "rir_text": None,
    "rir_raw_text": None,
    "rir_page": None,
    "rir_position": None,
    "rir_confidence": None,
    "connector_text": None,
    "connector_position": None,
    "ocr_text": None,
    "ocr_raw_text": None,
    "ocr_position": None,
}


class ContentError(ValueError):
    """A content operation the API refuses (answered with 400)."""


# --------------------------------------------------------------------------- schema helpers


def schema_datapoints(content: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Every datapoint of a schema by id (document level and table columns alike)."""
    found: dict[str, dict[str, Any]] = {}

    def walk(node: dict[str, Any]) -> None:
        if node["category"] == "datapoint":
            found[node["id"]] = node
        children = node.get("children")
        if isinstance(children, dict):
            walk(children)
        elif isinstance(children, list):
            for child in children:
                walk(child)

    for section in content:
        walk(section)
    return found


def _inverse(table: dict[str, str], known: set[str]) -> dict[str, str]:
    """Canonical name → the first schema id mapping to it that the schema has."""
    inverse: dict[str, str] = {}
    for schema_id, canonical in table.items():
        if schema_id in known:
            inverse.setdefault(canonical, schema_id)
    return inverse


# --------------------------------------------------------------------------- extraction


@dataclass
class Found:
    """One value the engine read, ready to go into a datapoint's ``content``."""

    value: str
    normalized: str | None
    page: int | None
    rir_text: str | None
    confidence: float
    position: list[int] | None = None


@dataclass
class Extraction:
    """What the import produced: values by schema id, table rows, page sizes, or an error."""

    error: str | None = None
    fields: dict[str, Found] = field(default_factory=dict)
    line_items: list[dict[str, Found]] = field(default_factory=list)
    page_sizes: list[tuple[int, int]] = field(default_factory=list)


def extract(
    data: bytes,
    mime_type: str,
    *,
    ocr: bool = False,
    wrongness: engine.WrongnessSettings | None = None,
) -> Extraction:
    """Read a document like Rossum's engine would, or say why the import fails (``wrongness``:
    the emulator's options, for fields wrong or missed on purpose)."""
    if mime_type not in EXTRACTABLE_TYPES:
        return Extraction(error=f"Unsupported file type {mime_type}.")
    read = engine.extract(data, mime_type, ocr=ocr, max_pages=MAX_PAGES, wrongness=wrongness)
    if read.error is not None:
        return Extraction(error=f"Import failed: {read.error}.")
    return _to_schema(read)


def _pixels(box: BBox | None) -> list[int] | None:
    """A box in PDF points (origin top-left) as Rossum's ``position``: ``[left, top, right,
    bottom]`` in pixels of the page image at 144 dpi. The only unit conversion here."""
    if box is None:
        return None
    return [round(edge * PAGE_SCALE) for edge in (box.left, box.top, box.right, box.bottom)]


def _page_pixels(page: engine.PageInfo) -> tuple[int, int]:
    """A page's size in the same pixels (0 x 0 for images, which have no size in points)."""
    if page.width is None or page.height is None:
        return (0, 0)
    return (round(page.width * PAGE_SCALE), round(page.height * PAGE_SCALE))


def _found(value: engine.FoundValue, confidence: float) -> Found:
    return Found(
        value=value.text,
        normalized=value.value,
        page=value.page,
        rir_text=value.text,
        confidence=confidence,
        position=_pixels(value.box),
    )


def _to_schema(read: engine.Extraction) -> Extraction:
    """The engine's canonical values keyed by this queue's schema ids."""
    known = set(schema_datapoints(invoice_schema.invoice_schema_content()))
    field_ids = _inverse(invoice_schema.FIELD_MAP, known)
    result = Extraction(page_sizes=[_page_pixels(page) for page in read.pages])
    for name, value in read.fields.items():
        schema_id = field_ids.get(name)
        if schema_id is None:
            continue
        confidence = CONFIDENCE_INFERRED if value.inferred else CONFIDENCE_LABELLED
        found = _found(value, confidence if value.confidence is None else value.confidence)
        if name == "currency":
            option = (value.value or "").lower()
            found.value = found.normalized = option if option in invoice_schema.CURRENCIES else ""
        elif name == "document_type":
            found.value = found.normalized = _DOCUMENT_TYPES.get(value.value or "", "")
        result.fields[schema_id] = found
    for item in read.line_items:
        result.line_items.append(
            {
                schema_id: _found(item.cells[cell], CONFIDENCE_LABELLED)
                for schema_id, cell in _LINE_CELLS
                if cell in item.cells and schema_id in known
            }
        )
    return result


def render_page_png(data: bytes, number: int) -> bytes:
    """One page of a PDF as a PNG at 144 dpi (what ``pages/{id}/content`` serves)."""
    import pypdfium2 as pdfium

    with pdfium_lock.LOCK:
        document = pdfium.PdfDocument(data)
        try:
            page = document[number - 1]
            try:
                image = page.render(scale=PAGE_SCALE).to_pil()
            finally:
                page.close()
        finally:
            document.close()
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


# --------------------------------------------------------------------------- content tree

NextId = Callable[[], int]


def _datapoint_node(next_id: NextId, schema_node: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": next_id(),
        "category": "datapoint",
        "schema_id": schema_node["id"],
        "type": schema_node.get("type", "string"),
        "content": dict(_EMPTY_CONTENT),
        "validation_sources": [],
        "time_spent": 0.0,
        "time_spent_overall": 0.0,
        "hidden": bool(schema_node.get("hidden", False)),
    }


def _tuple_node(next_id: NextId, schema_tuple: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": next_id(),
        "category": "tuple",
        "schema_id": schema_tuple["id"],
        "children": [_datapoint_node(next_id, c) for c in schema_tuple["children"]],
        "time_spent": 0.0,
        "time_spent_overall": 0.0,
        "hidden": False,
    }


def empty_tree(schema_content: list[dict[str, Any]], next_id: NextId) -> list[dict[str, Any]]:
    """The annotation data of a fresh import: every schema node, no values, no table rows."""
    sections: list[dict[str, Any]] = []
    for section in schema_content:
        sections.append({"id": next_id(), "category": "section", "schema_id": section["id"]})
        children = []
        for child in section["children"]:
            if child["category"] == "multivalue":
                children.append(
                    {
                        "id": next_id(),
                        "category": "multivalue",
                        "schema_id": child["id"],
                        "children": [],
                        "time_spent": 0.0,
                        "time_spent_overall": 0.0,
                        "hidden": False,
                    }
                )
            else:
                children.append(_datapoint_node(next_id, child))
        sections[-1]["children"] = children
    return sections


def _fill(node: dict[str, Any], found: Found, threshold: float) -> None:
    node["content"].update(
        value=found.value,
        normalized_value=found.normalized,
        page=found.page,
        position=found.position,
        rir_text=found.rir_text,
        rir_raw_text=found.rir_text,
        rir_page=found.page,
        rir_position=found.position,
        rir_confidence=found.confidence,
    )
    node["validation_sources"] = ["score"] if found.confidence >= threshold else []


def fill_tree(
    tree: list[dict[str, Any]],
    schema_content: list[dict[str, Any]],
    extraction: Extraction,
    next_id: NextId,
    *,
    threshold: float,
) -> None:
    """Put the extracted values into the annotation data, adding one tuple per table row."""
    tuples = {
        c["id"]: c["children"]
        for section in schema_content
        for c in section["children"]
        if c["category"] == "multivalue" and isinstance(c["children"], dict)
    }
    for node in walk(tree):
        if node["category"] == "datapoint" and node["schema_id"] in extraction.fields:
            _fill(node, extraction.fields[node["schema_id"]], threshold)
        elif node["category"] == "multivalue" and node["schema_id"] in tuples:
            for row in extraction.line_items:
                row_node = _tuple_node(next_id, tuples[node["schema_id"]])
                for cell in row_node["children"]:
                    if cell["schema_id"] in row:
                        _fill(cell, row[cell["schema_id"]], threshold)
                node["children"].append(row_node)


def walk(nodes: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """Every node of a content tree, parents before children."""
    for node in nodes:
        yield node
        children = node.get("children")
        if isinstance(children, list):
            yield from walk(children)


def render_tree(nodes: list[dict[str, Any]], annotation_url: str) -> list[dict[str, Any]]:
    """The tree as the API shows it: every node with its ``url`` right after its ``id``."""
    rendered = []
    for node in nodes:
        out: dict[str, Any] = {"id": node["id"], "url": f"{annotation_url}/content/{node['id']}"}
        for key, value in node.items():
            if key == "id":
                continue
            if key == "children" and isinstance(value, list):
                out[key] = render_tree(value, annotation_url)
            else:
                out[key] = copy.deepcopy(value)
        rendered.append(out)
    return rendered


def prune_tree(nodes: list[dict[str, Any]], keep: set[int]) -> list[dict[str, Any]]:
    """Only the nodes in ``keep`` and their ancestors; a kept multivalue keeps all its rows
    (the operations endpoint answers with "only updated datapoints and updated grid")."""
    pruned = []
    for node in nodes:
        children = node.get("children")
        if node["id"] in keep:
            pruned.append(node)
        elif isinstance(children, list):
            inner = prune_tree(children, keep)
            if inner:
                pruned.append({**node, "children": inner})
    return pruned


def datapoint_values(tree: list[dict[str, Any]]) -> Iterator[str]:
    """Every non-empty value, for full-text search."""
    for node in walk(tree):
        if node["category"] == "datapoint" and node.get("content"):
            value = node["content"].get("value")
            if value:
                yield str(value)


# --------------------------------------------------------------------------- operations


def normalize_value(kind: str, value: str) -> str | None:
    """``normalized_value`` for an edited value: ISO date, plain decimal, or the text."""
    if not value:
        return None
    if kind == "date":
        parsed = parse_date(value)
        return parsed.isoformat() if parsed else None
    if kind == "number":
        number, _ = parse_amount(value)
        return engine.plain_number(number)
    return value


def _id(raw: Any) -> int:
    """Datapoint ids come as integers or strings (both appear in the reference)."""
    try:
        return int(raw)
    except (TypeError, ValueError):
        raise ContentError(f"Invalid datapoint id {raw!r}.") from None


def update_datapoint(node: dict[str, Any], value: dict[str, Any]) -> None:
    """Apply a ``replace`` (or a PATCH of one datapoint) to a datapoint node."""
    if node["category"] != "datapoint":
        raise ContentError(f"Only datapoints can be updated, {node['id']} is a {node['category']}.")
    content = value.get("content")
    if content is not None:
        if not isinstance(content, dict):
            raise ContentError("content must be an object.")
        if node["content"] is None:
            raise ContentError(f"Datapoint {node['id']} holds no value.")
        kind = node.get("type", "")
        if "value" in content:
            text = "" if content["value"] is None else str(content["value"])
            if len(text) > 1500:
                raise ContentError("value is longer than 1500 characters.")
            normalized = normalize_value(kind, text)
            given = content.get("normalized_value")
            if given is not None and str(given) != normalized:
                return  # "they must match, otherwise datapoint won't be modified"
            node["content"]["value"] = text
            node["content"]["normalized_value"] = normalized
        elif content.get("normalized_value") is not None:
            text = str(content["normalized_value"])
            node["content"]["value"] = text
            node["content"]["normalized_value"] = normalize_value(kind, text)
        for key in ("position", "page"):
            if key in content:
                node["content"][key] = content[key]
    if "hidden" in value:
        node["hidden"] = bool(value["hidden"])
    if "validation_sources" in value:
        node["validation_sources"] = list(value["validation_sources"] or [])
    elif content is not None and "human" not in node["validation_sources"]:
        node["validation_sources"] = [*node["validation_sources"], "human"]


def apply_operations(
    tree: list[dict[str, Any]],
    operations: list[dict[str, Any]],
    schema_content: list[dict[str, Any]],
    next_id: NextId,
) -> tuple[list[dict[str, Any]], list[int]]:
    """The tree after ``replace``/``add``/``remove`` operations, and the ids they touched.

    Works on a copy and raises ``ContentError`` on the first bad operation, so a request either
    applies completely or not at all.
    """
    tree = copy.deepcopy(tree)
    tuples = {
        c["id"]: c["children"]
        for section in schema_content
        for c in section["children"]
        if c["category"] == "multivalue"
    }
    touched: list[int] = []
    for operation in operations:
        if not isinstance(operation, dict):
            raise ContentError("Each operation must be an object.")
        op = operation.get("op")
        target = _id(operation.get("id"))
        nodes = {n["id"]: n for n in walk(tree)}
        parents = {c["id"]: n for n in walk(tree) for c in n.get("children") or []}
        node = nodes.get(target)
        if node is None:
            raise ContentError(f"Datapoint {target} does not exist.")
        if op == "replace":
            update_datapoint(node, operation.get("value") or {})
            touched.append(target)
        elif op == "remove":
            parent = parents.get(target)
            if parent is None or parent["category"] != "multivalue":
                raise ContentError(f"Only children of a multivalue can be removed ({target}).")
            parent["children"] = [c for c in parent["children"] if c["id"] != target]
            touched.extend([target, parent["id"]])
        elif op == "add":
            if node["category"] != "multivalue":
                raise ContentError(f"Rows can only be added to a multivalue ({target}).")
            child_schema = tuples.get(node["schema_id"])
            if child_schema is None:
                raise ContentError(f"Unknown multivalue {node['schema_id']}.")
            row = _new_row(child_schema, operation.get("value"), next_id)
            node["children"].append(row)
            touched.extend([node["id"], *(n["id"] for n in walk([row]))])
        else:
            raise ContentError(f"Unknown operation {op!r} (replace, add or remove).")
    return tree, touched


def _new_row(child_schema: dict[str, Any], value: Any, next_id: NextId) -> dict[str, Any]:
    """A new table row (or list item) with the given cells filled, the rest empty."""
    cells = value if isinstance(value, list) else [value] if isinstance(value, dict) else []
    if child_schema["category"] == "tuple":
        row = _tuple_node(next_id, child_schema)
        by_schema = {c["schema_id"]: c for c in row["children"]}
    else:
        row = _datapoint_node(next_id, child_schema)
        by_schema = {row["schema_id"]: row}
    for cell in cells:
        schema_id = cell.get("schema_id") if isinstance(cell, dict) else None
        if schema_id not in by_schema:
            raise ContentError(f"Unknown schema_id {schema_id!r} for a new row.")
        assert isinstance(cell, dict)
        update_datapoint(by_schema[schema_id], cell)
    return row


# --------------------------------------------------------------------------- export


def export_value(node: dict[str, Any]) -> str:
    """The exported value: normalized for numbers and dates, the value otherwise."""
    content = node.get("content") or {}
    if node.get("type") in ("number", "date"):
        normalized = content.get("normalized_value")
        if normalized is not None:
            return str(normalized)
    value = content.get("value")
    return "" if value is None else str(value)


def export_tree(
    nodes: list[dict[str, Any]], exportable: Callable[[str], bool]
) -> list[dict[str, Any]]:
    """The flat export form of the content: no ids or urls, datapoints with a plain ``value``."""
    out = []
    for node in nodes:
        if node["category"] == "datapoint":
            if not exportable(node["schema_id"]):
                continue
            out.append(
                {
                    "category": "datapoint",
                    "schema_id": node["schema_id"],
                    "value": export_value(node),
                    "type": node.get("type", "string"),
                    "rir_confidence": (node.get("content") or {}).get("rir_confidence"),
                }
            )
        else:
            out.append(
                {
                    "category": node["category"],
                    "schema_id": node["schema_id"],
                    "children": export_tree(node.get("children") or [], exportable),
                }
            )
    return out


def export_xml(results: list[dict[str, Any]], pagination: dict[str, Any]) -> bytes:
    """The XML export: the JSON export's shape as elements (queues_export.xsd is not public)."""
    root = ET.Element("export")
    items = ET.SubElement(root, "results")
    for result in results:
        annotation = ET.SubElement(items, "annotation", url=result["url"])
        for key in ("status", "arrived_at", "exported_at"):
            _text(annotation, key, result.get(key))
        document = ET.SubElement(annotation, "document", url=result["document"]["url"])
        _text(document, "file_name", result["document"]["file_name"])
        _text(document, "file", result["document"]["file"])
        _text(annotation, "modifier", result.get("modifier"))
        ET.SubElement(annotation, "schema", url=result["schema"]["url"])
        metadata = ET.SubElement(annotation, "metadata")
        for key, value in (result.get("metadata") or {}).items():
            _text(metadata, "item", value if isinstance(value, str) else repr(value)).set(
                "key", str(key)
            )
        content = ET.SubElement(annotation, "content")
        _xml_nodes(content, result["content"])
    pages = ET.SubElement(root, "pagination")
    for key in ("next", "previous", "total", "total_pages"):
        _text(pages, key, pagination.get(key))
    declaration = b'<?xml version="1.0" encoding="utf-8"?>'
    return declaration + ET.tostring(root, encoding="unicode").encode()


def _text(parent: ET.Element, tag: str, value: Any) -> ET.Element:
    element = ET.SubElement(parent, tag)
    if value is not None:
        element.text = str(value)
    return element


def _xml_nodes(parent: ET.Element, nodes: list[dict[str, Any]]) -> None:
    for node in nodes:
        if node["category"] == "datapoint":
            attributes = {"schema_id": node["schema_id"], "type": node["type"]}
            if node.get("rir_confidence") is not None:
                attributes["rir_confidence"] = str(node["rir_confidence"])
            element = ET.SubElement(parent, "datapoint", attributes)
            element.text = node["value"]
        else:
            element = ET.SubElement(parent, node["category"], schema_id=node["schema_id"])
            _xml_nodes(element, node["children"])


META_COLUMNS = (
    "meta_arrived_at",
    "meta_file",
    "meta_file_name",
    "meta_status",
    "meta_url",
    "meta_automated",
    "meta_modified_at",
    "meta_assigned_at",
)

_QUOTING = {
    "quote_minimal": csv.QUOTE_MINIMAL,
    "quote_none": csv.QUOTE_NONE,
    "quote_all": csv.QUOTE_ALL,
    "quote_non_numeric": csv.QUOTE_NONNUMERIC,
}


@dataclass
class CsvRow:
    """One annotation for the CSV export: meta columns, document values, table rows."""

    meta: dict[str, str]
    values: dict[str, str]
    rows: list[dict[str, str]]


def csv_rows(tree: list[dict[str, Any]]) -> tuple[dict[str, str], list[dict[str, str]]]:
    """Document-level values and one dict per table row, keyed by schema id."""
    values: dict[str, str] = {}
    rows: list[dict[str, str]] = []
    for node in tree:
        for child in node.get("children") or []:
            if child["category"] == "datapoint":
                values[child["schema_id"]] = export_value(child)
            elif child["category"] == "multivalue":
                for row in child.get("children") or []:
                    cells = row.get("children") if row["category"] == "tuple" else [row]
                    rows.append({c["schema_id"]: export_value(c) for c in cells or []})
    return values, rows


def export_csv(
    annotations: list[CsvRow],
    schema_content: list[dict[str, Any]],
    params: dict[str, str],
    exportable: Callable[[str], bool],
) -> bytes:
    """CSV with one line per table row (document values repeated), or one line per annotation
    without a table. Header: schema labels for datapoints, the names of meta columns."""
    labels = {k: v.get("label") or k for k, v in schema_datapoints(schema_content).items()}
    default = [k for k in labels if exportable(k)]

    def names(key: str) -> list[str]:
        return [c for c in params.get(key, "").split(",") if c]

    columns = names("columns") or default
    columns = names("prepend_columns") + columns + names("append_columns")
    unknown = [c for c in columns if c not in labels and c not in META_COLUMNS]
    if unknown:
        raise ContentError(f"Unknown columns: {', '.join(unknown)}.")
    quoting_name = params.get("quoting", "quote_minimal")
    if quoting_name not in _QUOTING:
        raise ContentError(f"quoting must be one of {', '.join(_QUOTING)}.")
    options: dict[str, Any] = {
        "delimiter": params.get("delimiter", ","),
        "quotechar": params.get("quote_char", '"'),
        "quoting": _QUOTING[quoting_name],
        "lineterminator": "\n",
    }
    if params.get("escape_char"):
        options["escapechar"] = params["escape_char"]
    elif quoting_name == "quote_none":
        raise ContentError("escape_char is required with quote_none.")
    for key in ("delimiter", "quotechar"):
        if len(options[key]) != 1:
            raise ContentError(f"{key} must be one character.")
    buffer = io.StringIO()
    writer = csv.writer(buffer, **options)
    writer.writerow([c if c in META_COLUMNS else labels[c] for c in columns])
    for annotation in annotations:
        for row in annotation.rows or [{}]:
            merged = {**annotation.meta, **annotation.values, **row}
            writer.writerow([merged.get(c, "") for c in columns])
    return buffer.getvalue().encode("utf-8")
