"""The source and destination contracts, checked on every registered one against its real
server (a folder, a Dovecot)."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from pydantic import ValidationError

from connectors.base import CanonicalResult, ExportPayload, FieldValue, LineItem, Provenance
from tests.conformance.harness import DESTINATION_PARAMS, DESTINATIONS, SOURCES, RecordingSink
from tests.daemon_proc import wait_until
from tests.invoices import random_spec, render_pdf


@pytest.fixture
def source_run(request: pytest.FixtureRequest, tmp_path: Path):
    with SOURCES[request.param](tmp_path) as started:
        yield started


@pytest.fixture
def destination_run(request: pytest.FixtureRequest, tmp_path: Path):
    with DESTINATIONS[request.param](tmp_path) as started:
        try:
            yield started
        finally:
            started.close()


# --------------------------------------------------------------------------- sources


@pytest.mark.parametrize("source_run", sorted(SOURCES), indirect=True)
def test_a_source_needs_a_name(source_run):
    from connectors import registry

    model = registry.load("source", source_run.kind).settings_model
    without = {k: v for k, v in source_run.settings.items() if k != "name"}
    with pytest.raises(ValidationError, match="name"):
        model.model_validate(without)
    with pytest.raises(ValidationError, match="name"):
        model.model_validate({**without, "name": "  "})


@pytest.mark.parametrize("source_run", sorted(SOURCES), indirect=True)
def test_an_offered_document_is_committed_once_before_it_is_released(source_run):
    data = render_pdf(random_spec(11))
    source_run.offer("invoice-11.pdf", data)
    sink = RecordingSink(commit_seconds=1.0)
    source = source_run.source()
    source.start(sink)
    try:
        released_at = wait_until(
            lambda: source_run.released("invoice-11.pdf") and time.monotonic(),
            25,
            interval=0.05,
            what="released at the source",
        )
        source.scan()  # a reconcile pass after the release offers nothing again
        time.sleep(0.5)
    finally:
        source.stop()
    ingested = [item for item, body in sink.items if body == data]
    assert len(ingested) == 1, "committed once"
    assert ingested[0].source == source_run.settings["name"]
    assert sink.committed_at[0] <= released_at, "released only after the commit returned"


@pytest.mark.parametrize("source_run", sorted(SOURCES), indirect=True)
def test_a_probe_looks_and_changes_nothing(source_run):
    source_run.offer("waiting.pdf", render_pdf(random_spec(12)))
    lines = source_run.source().probe()
    assert lines and all(isinstance(line, str) for line in lines)
    assert not source_run.released("waiting.pdf"), "the probe took nothing"


# --------------------------------------------------------------------------- destinations


def payload(version: int = 1, total: str = "100.00") -> ExportPayload:
    return ExportPayload(
        document_id=42,
        sha256="ab" * 32,
        filename="invoice.pdf",
        mime_type="application/pdf",
        source="scans",
        source_ref="invoice.pdf",
        received_at=datetime(2026, 12, 1, tzinfo=UTC),
        vendor="local",
        vendor_kind="local",
        vendor_ref="local:ab",
        submission_id=7,
        extraction_id=9,
        result=CanonicalResult(
            fields=[
                FieldValue("invoice_number", "INV-42"),
                FieldValue("total_amount", total, value_number=Decimal(total), currency="EUR"),
            ],
            line_items=[
                LineItem(
                    1,
                    description="Widgets",
                    quantity=Decimal(2),
                    total_amount=Decimal(total),
                    provenance={"quantity": Provenance(confidence=0.9, page=1)},
                )
            ],
        ),
        version=version,
    )


@pytest.mark.parametrize("destination_run", DESTINATION_PARAMS, indirect=True)
def test_a_repeated_export_makes_one_record_and_a_new_version_updates_it(destination_run):
    destination = destination_run.destination()
    key = "docrelay-42-out"
    first = destination.deliver(payload(), key)
    again = destination.deliver(payload(), key)  # a crash after the push: the same export
    assert first.ref and again.ref == first.ref
    assert len(destination_run.records()) == 1
    destination.deliver(payload(2, "120.00"), key)
    (record,) = destination_run.records()
    assert record["version"] == 2 and record["fields"]["total_amount"] == "120"
    destination.close()


@pytest.mark.parametrize("destination_run", DESTINATION_PARAMS, indirect=True)
def test_a_destination_probe_writes_nothing(destination_run):
    lines = destination_run.destination().probe()
    assert lines and all(isinstance(line, str) for line in lines)
    assert destination_run.records() == []
