"""Folder destination: JSON, CSV and/or UBL XML files per document, written atomically.

Files are named by document id, so a repeated delivery (after a crash between the write and the
outbox update) rewrites the same file instead of adding a second one.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import Field

from connectors.base import (
    ConnectorContext,
    DeliveryReceipt,
    Destination,
    DestinationSettings,
    ExportPayload,
)
from connectors.destinations.files import (
    EXPORT_SUFFIXES,
    FORMULA_STARTS,
    ExportFormat,
    UblProfile,
    csv_cell,
    export_files,
)
from connectors.errors import TransientError
from connectors.fsutil import atomic_write, default_file_mode

__all__ = ["FORMULA_STARTS", "FolderDestination", "FolderDestinationSettings", "csv_cell"]


class FolderDestinationSettings(DestinationSettings):
    kind: Literal["folder"] = "folder"
    """Selects the folder destination: export files written atomically."""
    path: Path
    """Directory the export files are written to (created if missing)."""
    format: ExportFormat = "json"
    """``json``: one ``<document_id>.json``; ``csv``: ``<document_id>.csv`` (one row of fields)
    plus ``<document_id>.lines.csv``; ``ubl``: ``<document_id>.xml``, a UBL 2.1 XRechnung
    invoice or credit note (``connectors.destinations.ubl``); ``both``: json and csv; or a
    list of these file types (``["json", "ubl"]``)."""
    indent: int | None = Field(2, ge=0)
    """JSON and XML indentation; none for one line per file."""
    ubl_profile: UblProfile = "xrechnung"
    """What a UBL invoice claims to follow: ``xrechnung`` (XRechnung 3.0, for German
    receivers) or ``peppol`` (Peppol BIS Billing 3.0); both are EN 16931."""
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
        files = export_files(
            payload,
            idempotency_key,
            self.settings.format,
            indent=self.settings.indent,
            ubl_profile=self.settings.ubl_profile,
        )
        try:
            for name, data in files:
                atomic_write(root / name, data, mode=self.file_mode)
        except OSError as exc:  # disk full, permissions, NFS away: worth retrying
            raise TransientError(f"cannot write to {root}: {exc.strerror or exc}") from exc
        return DeliveryReceipt(ref=",".join(name for name, _ in files))

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
        count = sum(1 for p in root.iterdir() if p.suffix in EXPORT_SUFFIXES)
        return [f"{root} is writable; {count} export file(s) in it"]
