"""The folder destination's files: who may read them, and CSV cells no spreadsheet runs."""

from __future__ import annotations

import csv
import os
import stat
import time
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from pydantic import ValidationError

from connectors.base import CanonicalResult, ConnectorContext, ExportPayload, FieldValue, LineItem
from connectors.destinations.folder import FolderDestination, FolderDestinationSettings
from connectors.fsutil import default_file_mode, process_umask


def payload(supplier: str, description: str) -> ExportPayload:
    return ExportPayload(
        document_id=7,
        sha256="cd" * 32,
        filename="bill.pdf",
        mime_type="application/pdf",
        source="scans",
        source_ref="bill.pdf",
        received_at=datetime(2026, 12, 2, tzinfo=UTC),
        vendor="local",
        vendor_kind="local",
        vendor_ref=None,
        submission_id=1,
        extraction_id=1,
        result=CanonicalResult(
            fields=[
                FieldValue("supplier_name", supplier),
                FieldValue("total_amount", "-12.50", value_number=Decimal("-12.50")),
            ],
            line_items=[LineItem(1, description=description, total_amount=Decimal("-12.50"))],
        ),
    )


def destination(tmp_path: Path, **settings: object) -> FolderDestination:
    context = ConnectorContext(
        name="out", data_dir=tmp_path / "state", clock=time.monotonic, public_url=None
    )
    return FolderDestination(
        FolderDestinationSettings(path=tmp_path / "out", format="both", **settings), context
    )


def test_csv_cells_that_would_be_formulas_are_neutralised_and_numbers_kept(tmp_path):
    destination(tmp_path).deliver(payload('=HYPERLINK("http://x","y")', "@SUM(A1)"), "k")
    with (tmp_path / "out" / "7.csv").open(newline="") as handle:
        (row,) = list(csv.DictReader(handle))
    assert row["supplier_name"] == '\'=HYPERLINK("http://x","y")'
    assert row["total_amount"] == "-12.5", "a negative amount is a number, not a formula"
    with (tmp_path / "out" / "7.lines.csv").open(newline="") as handle:
        (line,) = list(csv.DictReader(handle))
    assert line["description"] == "'@SUM(A1)" and line["total_amount"] == "-12.5"
    plain = destination(tmp_path)
    plain.deliver(payload("ACME GmbH", "Widgets - blue"), "k")
    with (tmp_path / "out" / "7.csv").open(newline="") as handle:
        assert next(csv.DictReader(handle))["supplier_name"] == "ACME GmbH"


def test_exports_get_the_umask_mode_by_default_or_the_configured_one(tmp_path):
    old = os.umask(0o027)
    try:
        assert process_umask() == 0o027 and default_file_mode() == 0o640
        destination(tmp_path).deliver(payload("ACME", "x"), "k")
    finally:
        os.umask(old)
    for name in ("7.json", "7.csv", "7.lines.csv"):
        assert stat.S_IMODE((tmp_path / "out" / name).stat().st_mode) == 0o640, name
    destination(tmp_path, file_mode=0o600).deliver(payload("ACME", "x"), "k")
    assert stat.S_IMODE((tmp_path / "out" / "7.json").stat().st_mode) == 0o600
    with pytest.raises(ValidationError):
        FolderDestinationSettings(path=tmp_path, file_mode=0o1777)
