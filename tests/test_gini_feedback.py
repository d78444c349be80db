"""Corrections as Gini feedback: the seed's scenario gives the seed's batch, absent values are
DELETEd, Gini's 4xx answers become refusals on the corrections."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from dataclasses import replace
from decimal import Decimal
from pathlib import Path

import pytest

from connectors.base import CanonicalResult, Correction, CorrectionKind, FieldValue
from connectors.vendors.gini import feedback, mapping
from connectors.vendors.gini.vendor import GiniVendor
from tests.gini_payloads import FEEDBACK_EXTRACTIONS, SEED_FEEDBACK
from tests.test_gini_client import API, FakeClock, FakeGini, make_document, make_vendor


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def fake(clock: FakeClock) -> FakeGini:
    made = FakeGini(clock)
    made.extractions = copy.deepcopy(FEEDBACK_EXTRACTIONS)
    return made


@pytest.fixture
def ready(fake: FakeGini, clock: FakeClock, tmp_path: Path) -> Iterator[tuple]:
    vendor = make_vendor(fake, clock, tmp_path)
    submitted = vendor.submit(make_document(tmp_path), first_attempt=True)
    fake.documents[submitted.vendor_ref]["progress"] = "COMPLETED"
    data = vendor.poll(submitted.vendor_ref, submitted.data).data or submitted.data
    raw = vendor.fetch(submitted.vendor_ref, data, make_document(tmp_path))
    yield vendor, submitted.vendor_ref, data, vendor.normalize(json.loads(json.dumps(raw)))
    vendor.close()


def applied(result: CanonicalResult, name: str, text: str | None) -> CanonicalResult:
    """The result as the engine stores it after a person's correction of ``name``."""
    fields = []
    found = False
    for value in result.fields:
        if value.name == name:
            found = True
            fresh = mapping.normalize_field(name, text) if text is not None else None
            fields.append(
                replace(
                    value,
                    value_text=fresh.value_text if fresh else None,
                    raw_text=text,
                    value_number=fresh.value_number if fresh else None,
                    currency=fresh.currency if fresh else None,
                )
            )
        else:
            fields.append(value)
    if not found and text is not None:
        fields.append(mapping.normalize_field(name, text))
    return CanonicalResult(fields=fields, line_items=result.line_items, quality=result.quality)


def test_the_seeds_scenario_sends_the_seeds_batch(ready, fake):
    vendor, ref, data, result = ready
    result = applied(result, "payment_reference", "ReNr 1735, KdNr 37")
    result = applied(result, "supplier_name", "Zalando SE")
    corrections = [
        Correction("amount_due", "5.60", CorrectionKind.CONFIRM, "5.60", "amountToPay"),
        Correction("supplier_iban", "DE68130300000017850360", CorrectionKind.CONFIRM),
        Correction(
            "payment_reference", "ReNr 1735, KdNr 37", CorrectionKind.CORRECT,
            "ReNr 123, KdNr 32", "paymentReference",
        ),
        Correction("supplier_name", "Zalando SE", CorrectionKind.ADD),
    ]  # fmt: skip
    outcomes = vendor.send_feedback(ref, data, corrections, result)
    assert all(o.accepted for o in outcomes) and len(outcomes) == 4
    assert fake.feedback == [SEED_FEEDBACK]  # one PUT, the full corrected set
    puts = [r for m, p, r in fake.requests if m == "PUT"]
    assert [str(r.url) for r in puts] == [f"{API}/documents/{ref}/extractions"]
    assert fake.deleted == []


def test_an_absent_value_is_deleted_and_left_out_of_the_batch(ready, fake):
    vendor, ref, data, result = ready
    result = applied(result, "supplier_iban", None)
    corrections = [Correction("supplier_iban", None, CorrectionKind.ABSENT, vendor_label="iban")]
    outcomes = vendor.send_feedback(ref, data, corrections, result)
    assert outcomes[0].accepted
    assert fake.deleted == ["iban"]
    assert feedback.batch_of(fake.feedback[0]) == {
        "amountToPay": "5.60:EUR",
        "paymentReference": "ReNr 123, KdNr 32",
    }
    again = vendor.send_feedback(ref, data, corrections, result)  # safe to repeat: 404 is done
    assert again[0].accepted and fake.count("DELETE", f"/documents/{ref}/extractions/iban") == 2


def test_a_corrected_amount_is_sent_in_ginis_form_with_a_corrected_currency(ready, fake):
    vendor, ref, data, result = ready
    result = applied(result, "amount_due", "1.234,50")
    result = applied(result, "currency", "CHF")
    corrections = [
        Correction("amount_due", "1.234,50", CorrectionKind.CORRECT, "5.60", "amountToPay"),
        Correction("currency", "CHF", CorrectionKind.CORRECT, "EUR", "amountToPay"),
    ]
    outcomes = vendor.send_feedback(ref, data, corrections, result)
    assert all(o.accepted for o in outcomes)
    assert feedback.batch_of(fake.feedback[0])["amountToPay"] == "1234.50:CHF"


def test_a_422_is_a_readable_refusal_on_the_corrections_in_the_batch(ready, fake):
    vendor, ref, data, result = ready
    fake.feedback_status = 422
    result = applied(result, "payment_reference", "x")
    corrections = [Correction("payment_reference", "x", CorrectionKind.CORRECT, "ReNr 123")]
    (outcome,) = vendor.send_feedback(ref, data, corrections, result)
    assert not outcome.accepted
    assert "422" in (outcome.reason or "") and "invalid" in (outcome.reason or "")


def test_an_added_label_gini_does_not_know_is_refused_alone(ready, fake):
    vendor, ref, data, result = ready
    fake.unknown_labels = {"netAmount"}
    result = applied(applied(result, "net_amount", "70.00 EUR"), "payment_reference", "ReNr 9")
    corrections = [
        Correction("net_amount", "70.00 EUR", CorrectionKind.ADD),
        Correction("payment_reference", "ReNr 9", CorrectionKind.CORRECT, "ReNr 123"),
    ]
    added, corrected = vendor.send_feedback(ref, data, corrections, result)
    assert not added.accepted and "Unknown label netAmount" in (added.reason or "")
    assert corrected.accepted, corrected.reason
    first, second = fake.feedback[-2:]
    assert "netAmount" in first["feedback"] and "netAmount" not in second["feedback"]
    assert second["feedback"]["paymentReference"] == {"value": "ReNr 9"}


def test_what_cannot_be_sent_is_refused_before_any_request():
    result = CanonicalResult(
        fields=[FieldValue("amount_due", "12.00", "12", value_number=Decimal("12"),
                           vendor_label="amountToPay")]
    )  # fmt: skip
    plan = feedback.plan(
        result,
        [
            Correction("amount_due", "zwölf", CorrectionKind.CORRECT, "12.00", "amountToPay"),
            Correction("extra.a.1.b", "x", CorrectionKind.ADD),
        ],
        mapping.DEFAULT_FIELDS,
    )
    assert "cannot be written as Gini's amount" in plan.refused["amount_due"]
    assert "no Gini label" in plan.refused["extra.a.1.b"]
    assert plan.batch == {}  # the amount has no currency anywhere: nothing to send for it


def test_an_added_field_without_a_label_goes_under_the_first_default_label():
    plan = feedback.plan(
        CanonicalResult(fields=[mapping.normalize_field("invoice_number", "RE-1")]),
        [Correction("invoice_number", "RE-1", CorrectionKind.ADD)],
        mapping.DEFAULT_FIELDS,
    )
    assert plan.batch == {"invoiceNumber": {"value": "RE-1"}} and plan.refused == {}


def test_no_corrections_no_requests(ready, fake):
    vendor, ref, data, result = ready
    before = len(fake.requests)
    assert GiniVendor.send_feedback(vendor, ref, data, [], result) == []
    assert len(fake.requests) == before


def test_a_gone_document_refuses_the_whole_batch(ready, fake):
    vendor, ref, data, result = ready
    del fake.documents[ref]
    corrections = [Correction("supplier_iban", "DE68130300000017850360", CorrectionKind.CONFIRM)]
    (outcome,) = vendor.send_feedback(ref, data, corrections, result)
    assert not outcome.accepted and "404" in (outcome.reason or "")
