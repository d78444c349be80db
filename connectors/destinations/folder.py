"""Folder destination: one JSON (and optionally CSV) file per document, written atomically.

Files are named by document id, so a repeated delivery (after a crash between the write and the
outbox update) rewrites the same file instead of adding a second one.
"""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path
from typing import Literal

from pydantic import Field

from connectors import jsonio
from connectors.base import (
    DOCUMENT_FIELDS,
    LINE_ITEM_FIELDS,
    ConnectorContext,
    DeliveryReceipt,
    Destination,
    DestinationSettings,
    ExportPayload,
)
from connectors.destinations.document import export_document
from connectors.destinations.records import as_text, flat_record
from connectors.errors import TransientError
from connectors.fsutil import atomic_write, default_file_mode

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
"""How a CSV cell that a spreadsheet would run as a formula begins (OWASP's list)."""


def csv_cell(value: object) -> object:
    """A text cell that a spreadsheet would run as a formula (``=HYPERLINK(…)`` in a
    supplier name) gets a leading ``'``; numbers and dates, which we write, stay as they are
    (``-12.50`` is a credit, not a formula)."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return as_text(value)


class FolderDestinationSettings(DestinationSettings):
    kind: Literal["folder"] = "folder"
    """Selects the folder destination: export files written atomically."""
    path: Path
    """Directory the export files are written to (created if missing)."""
    format: Literal["json", "csv", "both"] = "json"
    """``json``: one ``<document_id>.json``; ``csv``: ``<document_id>.csv`` (one row of fields)
    plus ``<document_id>.lines.csv``; ``both``: all of them."""
    indent: int | None = Field(2, ge=0)
    """JSON indentation; none for one line per file."""
    file_mode: int | None = Field(None, ge=0, le=0o777)
    """Permissions of the files written (TOML takes ``0o640``); unset: 0666 less the
    process's umask, as any program's new files get (0644 under umask 022)."""


class FolderDestination(Destination):
    kind = "folder"
    settings_model = FolderDestinationSettings
    inline = True
    settings: FolderDestinationSettings

    def __init__(self, settings: FolderDestinationSettings, context: ConnectorContext) -> None:
        super().__init__(settings, context)
        self.file_mode = default_file_mode() if settings.file_mode is None else settings.file_mode

    def deliver(self, payload: ExportPayload, idempotency_key: str) -> DeliveryReceipt:
        root = self.settings.path
        written: list[str] = []
        try:
            if self.settings.format in ("json", "both"):
                body = export_document(payload, idempotency_key)
                data = jsonio.dumps_bytes(body, indent=self.settings.indent)
                target = root / f"{payload.document_id}.json"
                atomic_write(target, data + b"\n", mode=self.file_mode)
                written.append(target.name)
            if self.settings.format in ("csv", "both"):
                written.extend(self._write_csv(root, payload))
        except OSError as exc:  # disk full, permissions, NFS away: worth retrying
            raise TransientError(f"cannot write to {root}: {exc.strerror or exc}") from exc
        return DeliveryReceipt(ref=",".join(written))

    def probe(self) -> list[str]:
        """The folder exists (or can be made) and takes files; writes nothing that stays."""
        root = self.settings.path
        existing = root
        while not existing.exists() and existing != existing.parent:
            existing = existing.parent
        if not existing.is_dir():
            raise TransientError(f"{existing} is not a directory: {root} cannot be made there")
        if not os.access(existing, os.W_OK | os.X_OK):
            raise TransientError(f"no permission to write in {existing}")
        if not root.exists():
            return [f"{root} does not exist yet; it will be made in {existing} at the first export"]
        count = sum(1 for p in root.iterdir() if p.suffix in (".json", ".csv"))
        return [f"{root} is writable; {count} export file(s) in it"]

    def _write_csv(self, root: Path, payload: ExportPayload) -> list[str]:
        record = flat_record(payload)
        head = io.StringIO()
        writer = csv.writer(head)
        writer.writerow(["document_id", *DOCUMENT_FIELDS])
        writer.writerow(
            [payload.document_id, *(csv_cell(record[name]) for name in DOCUMENT_FIELDS)]
        )
        lines = io.StringIO()
        writer = csv.writer(lines)
        writer.writerow(["document_id", "line_no", *LINE_ITEM_FIELDS])
        for item in payload.result.line_items:
            writer.writerow(
                [payload.document_id, item.line_no]
                + [csv_cell(getattr(item, name)) for name in LINE_ITEM_FIELDS]
            )
        names = [f"{payload.document_id}.csv", f"{payload.document_id}.lines.csv"]
        atomic_write(root / names[0], head.getvalue().encode(), mode=self.file_mode)
        atomic_write(root / names[1], lines.getvalue().encode(), mode=self.file_mode)
        return names
