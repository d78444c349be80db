"""The export files of one document, as bytes: what every file-writing destination writes.

The folder and the SFTP destinations hand this same list to their own way of writing, so a
consumer reading the files sees the same names and the same content whichever carried them.
Names depend on the document only (``<document_id>.json`` …): a repeated export after a crash
rewrites the same files, a later version replaces them.

A new format is one renderer in ``RENDERERS`` and a name in ``FileType``/``FORMATS``; the
destinations need no change beyond their docstrings. ``format`` takes one name (``json``,
``csv``, ``ubl``, or ``both``, which stays json and csv as it always was) or a list of the file
types to write (``["json", "ubl"]``).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import Field, ValidationError, ValidatorFunctionWrapHandler, WrapValidator
from pydantic_core import PydanticCustomError

from connectors import jsonio
from connectors.base import DOCUMENT_FIELDS, LINE_ITEM_FIELDS, ExportPayload
from connectors.destinations.document import export_document
from connectors.destinations.records import as_text, flat_record
from connectors.destinations.ubl import UblProfile, ubl_xml

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
"""How a CSV cell that a spreadsheet would run as a formula begins (OWASP's list)."""

FileType = Literal["json", "csv", "ubl"]
"""One kind of export file: a renderer's name."""


def _one_format_error(value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
    """One message for a wrong ``format``, not one per member of the union."""
    try:
        return handler(value)
    except ValidationError:
        raise PydanticCustomError(
            "export_format",
            'takes json, csv, ubl or both, or a list of json, csv and ubl (["json", "ubl"])',
        ) from None


ExportFormat = Annotated[
    Literal["json", "csv", "ubl", "both"] | Annotated[tuple[FileType, ...], Field(min_length=1)],
    WrapValidator(_one_format_error),
]
"""What a file destination's ``format`` setting takes: one name, or a list of file types."""

ExportFile = tuple[str, bytes]
"""One file to write: its name (no directory) and its whole content."""


def csv_cell(value: object) -> object:
    """A text cell that a spreadsheet would run as a formula (``=HYPERLINK(…)`` in a
    supplier name) gets a leading ``'``; numbers and dates, which we write, stay as they are
    (``-12.50`` is a credit, not a formula)."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return as_text(value)


@dataclass(frozen=True, slots=True)
class RenderOptions:
    """A destination's settings that shape the files' content (not which files there are)."""

    indent: int | None = 2
    """JSON and XML indentation; None for one line."""
    ubl_profile: UblProfile = "xrechnung"
    """The CIUS a UBL invoice claims (``connectors.destinations.ubl``)."""


def json_files(
    payload: ExportPayload, idempotency_key: str, options: RenderOptions
) -> list[ExportFile]:
    """``<document_id>.json``: the canonical export document (``export_document``)."""
    body = export_document(payload, idempotency_key)
    data = jsonio.dumps_bytes(body, indent=options.indent) + b"\n"
    return [(f"{payload.document_id}.json", data)]


def csv_files(
    payload: ExportPayload, idempotency_key: str, options: RenderOptions
) -> list[ExportFile]:
    """``<document_id>.csv`` (one row of canonical fields) and ``<document_id>.lines.csv``
    (one row per line item), formula-looking cells neutralised."""
    record = flat_record(payload)
    head = io.StringIO()
    writer = csv.writer(head)
    writer.writerow(["document_id", *DOCUMENT_FIELDS])
    writer.writerow([payload.document_id, *(csv_cell(record[name]) for name in DOCUMENT_FIELDS)])
    lines = io.StringIO()
    writer = csv.writer(lines)
    writer.writerow(["document_id", "line_no", *LINE_ITEM_FIELDS])
    for item in payload.result.line_items:
        writer.writerow(
            [payload.document_id, item.line_no]
            + [csv_cell(getattr(item, name)) for name in LINE_ITEM_FIELDS]
        )
    return [
        (f"{payload.document_id}.csv", head.getvalue().encode()),
        (f"{payload.document_id}.lines.csv", lines.getvalue().encode()),
    ]


def ubl_files(
    payload: ExportPayload, idempotency_key: str, options: RenderOptions
) -> list[ExportFile]:
    """``<document_id>.xml``: the UBL 2.1 invoice or credit note (XRechnung, ``ubl_xml``)."""
    data = ubl_xml(payload, idempotency_key, indent=options.indent, profile=options.ubl_profile)
    return [(f"{payload.document_id}.xml", data)]


Renderer = Callable[[ExportPayload, str, RenderOptions], list[ExportFile]]

RENDERERS: dict[str, Renderer] = {"json": json_files, "csv": csv_files, "ubl": ubl_files}
"""One renderer per file type."""

FORMATS: dict[str, tuple[str, ...]] = {
    "json": ("json",),
    "csv": ("csv",),
    "ubl": ("ubl",),
    "both": ("json", "csv"),
}
"""Which renderers each one-name ``format`` setting runs, in order."""

EXPORT_SUFFIXES = (".json", ".csv", ".xml")
"""What the export files end in (a probe counts them)."""


def file_types(format: ExportFormat) -> tuple[str, ...]:
    """The renderers a ``format`` setting runs, in order, each once."""
    chosen = FORMATS[format] if isinstance(format, str) else format
    return tuple(dict.fromkeys(chosen))


def export_files(
    payload: ExportPayload,
    idempotency_key: str,
    format: ExportFormat,
    *,
    indent: int | None = 2,
    ubl_profile: UblProfile = "xrechnung",
) -> list[ExportFile]:
    """Every file one export consists of, in the order they are written; built whole before
    anything is written, so a bad value fails the export before a first file lands."""
    options = RenderOptions(indent=indent, ubl_profile=ubl_profile)
    files: list[ExportFile] = []
    for renderer in file_types(format):
        files.extend(RENDERERS[renderer](payload, idempotency_key, options))
    return files
