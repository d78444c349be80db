"""Gini's extractions to the canonical model: the seed's examples, boxes in points, compound
line items, the profile's overrides, precedence among labels, the page-limit flag."""

from __future__ import annotations

import copy
import json
from datetime import date
from decimal import Decimal
from typing import Any

import pytest

from connectors.base import BBox
from connectors.vendors.gini import mapping
from connectors.vendors.gini.mapping import LabelMap, format_gini_amount, parse_gini_amount
from tests.gini_payloads import FEEDBACK_EXTRACTIONS, SEED_DOCUMENT, SEED_EXTRACTIONS

A4 = [[595.28, 841.89]]


def stored(extractions: dict[str, Any], **more: Any) -> dict[str, Any]:
    """What fetch stores, through JSON as the engine keeps it."""
    return json.loads(json.dumps({"extractions": extractions, "page_sizes": A4, **more}))


def test_the_seeds_amount_to_pay_gives_amount_due_and_currency_with_its_box():
    result = mapping.normalize(stored(SEED_EXTRACTIONS))
    due = result.get("amount_due")
    assert due is not None
    assert (due.value_number, due.currency, due.value_text) == (Decimal("24.99"), "EUR", "24.99")
    assert (due.raw_text, due.vendor_label, due.page) == ("24.99:EUR", "amountToPay", 1)
    assert due.bbox == BBox(516.0, 588.0, 558.0, 597.0, 595.28, 841.89)
    assert due.bbox.inside_page()
    currency = result.get("currency")
    assert currency is not None and currency.value_text == "EUR"
    assert [f.name for f in result.fields] == ["amount_due", "currency", "total_amount"]
    total = result.get("total_amount")
    assert total is not None and total.vendor_label == "amountToPay"  # no total label: derived
    alone = mapping.normalize(stored(SEED_EXTRACTIONS), amount_to_pay_is_total=False)
    assert alone.get("total_amount") is None


def test_the_feedback_chapters_result_maps_iban_and_reference():
    result = mapping.normalize(stored(FEEDBACK_EXTRACTIONS))
    iban = result.get("supplier_iban")
    reference = result.get("payment_reference")
    assert iban is not None and iban.value_text == "DE68130300000017850360"
    assert iban.bbox == BBox(447.0, 746.0, 547.0, 753.0, 595.28, 841.89)
    assert reference is not None and reference.value_text == "ReNr 123, KdNr 32"
    assert reference.bbox is None and reference.page is None  # no box in the answer
    assert result.get("amount_due").value_number == Decimal("5.60")  # type: ignore[union-attr]


def test_payment_labels_dates_and_unknown_labels():
    extractions = {
        "extractions": {
            "bic": {"entity": "bic", "value": "COBADEFFXXX"},
            "paymentRecipient": {"entity": "companyname", "value": "Zalando SE"},
            "paymentPurpose": {"entity": "text", "value": "Bestellung 10 4711"},
            "paymentDueDate": {"entity": "date", "value": "2026-04-15"},
            "invoiceDate": {"entity": "date", "value": "2026-03-15"},
            "invoiceNumber": {"entity": "text", "value": "RE-2026-0042"},
            "totalAmount": {"entity": "amount", "value": "119.0:EUR"},
            "docType": {"entity": "doctype", "value": "Invoice"},
            "shippingCost": {"entity": "amount", "value": "4.95:EUR"},
            "senderName": {"entity": "text", "value": "Zalando"},
        },
        "candidates": {},
    }
    result = mapping.normalize(stored(extractions))
    got = {f.name: f for f in result.fields}
    assert got["supplier_bic"].value_text == "COBADEFFXXX"
    assert got["supplier_name"].value_text == "Zalando SE"  # paymentRecipient before senderName
    assert got["extra.senderName"].value_text == "Zalando"
    assert got["payment_reference"].value_text == "Bestellung 10 4711"  # no paymentReference
    assert got["due_date"].value_date == date(2026, 4, 15)
    assert got["issue_date"].value_date == date(2026, 3, 15)
    assert got["invoice_number"].value_text == "RE-2026-0042"
    assert got["total_amount"].value_number == Decimal("119.0")
    assert got["document_type"].value_text == "invoice"
    assert (got["extra.shippingCost"].value_number, got["extra.shippingCost"].currency) == (
        Decimal("4.95"),
        "EUR",
    )


def test_payment_reference_wins_over_payment_purpose_and_both_are_kept():
    extractions = {
        "extractions": {
            "paymentPurpose": {"entity": "text", "value": "Bestellung"},
            "paymentReference": {"entity": "reference", "value": "ReNr 1"},
        }
    }
    got = {f.name: f.value_text for f in mapping.normalize(stored(extractions)).fields}
    assert got == {"payment_reference": "ReNr 1", "extra.paymentPurpose": "Bestellung"}


def test_the_profiles_mapping_overrides_and_extends_the_defaults():
    extractions = {
        "extractions": {
            "iban": {"entity": "iban", "value": "DE68130300000017850360"},
            "kundennummer": {"entity": "text", "value": "K-77"},
        }
    }
    fields = LabelMap.fields({"kundennummer": "customer_vat_id", "iban": "extra.account"})
    got = {f.name: f.value_text for f in mapping.normalize(stored(extractions), fields).fields}
    assert got == {"extra.account": "DE68130300000017850360", "customer_vat_id": "K-77"}


def test_compound_line_items_become_line_items_with_provenance():
    box = {"page": 1, "left": 50.0, "top": 300.0, "width": 200.0, "height": 10.0}
    extractions = {
        "extractions": {},
        "compoundExtractions": {
            "lineItems": [
                {
                    "description": {"entity": "text", "value": "Shirt blau", "box": box},
                    "quantity": {"entity": "numeric", "value": "2"},
                    "baseGross": {"entity": "amount", "value": "19.99:EUR"},
                    "artNumber": {"entity": "text", "value": "ZA-11"},
                    "colour": {"entity": "text", "value": "blue"},
                },
                {
                    "description": {"entity": "text", "value": "Versand"},
                    "quantity": {"entity": "numeric", "value": "viele"},
                },
            ],
            "taxes": [{"rate": {"entity": "percentage", "value": "19"}}],
        },
    }
    result = mapping.normalize(stored(extractions))
    first, second = result.line_items
    assert (first.line_no, first.description, first.quantity) == (1, "Shirt blau", Decimal("2"))
    assert (first.unit_price, first.item_code, first.extra) == (
        Decimal("19.99"),
        "ZA-11",
        {"colour": "blue"},
    )
    assert first.provenance["unit_price"].raw_text == "19.99:EUR"
    assert first.provenance["description"].bbox == BBox(50.0, 300.0, 250.0, 310.0, 595.28, 841.89)
    assert second.quantity is None and second.extra == {"quantity": "viele"}
    assert set(second.provenance) == {"description", "extra.quantity"}
    assert result.get("extra.taxes.1.rate").value_text == "19"  # type: ignore[union-attr]


def test_boxes_are_scaled_from_gini_pages_to_ours_and_clamped():
    extractions = {
        "extractions": {
            "iban": {
                "entity": "iban",
                "value": "DE68130300000017850360",
                "box": {"page": 1, "left": 500.0, "top": 800.0, "width": 600.0, "height": 10.0},
            }
        }
    }
    raw = stored(extractions, gini_page_sizes=[[1000.0, 1000.0]])
    box = mapping.normalize(raw).get("supplier_iban").bbox  # type: ignore[union-attr]
    assert box == BBox(297.64, 673.51, 595.28, 681.93, 595.28, 841.89)
    unknown = {"extractions": extractions, "page_sizes": []}
    plain = mapping.normalize(unknown).get("supplier_iban").bbox  # type: ignore[union-attr]
    assert plain == BBox(500.0, 800.0, 1100.0, 810.0)  # no page size known: as Gini gave it


def test_a_long_document_is_flagged_in_quality():
    raw = stored(SEED_EXTRACTIONS, pages={"total": 14, "read": 10}, document=SEED_DOCUMENT)
    quality = mapping.normalize(raw).quality
    assert quality["partial"] is True and quality["pages_read"] == 10
    assert quality["pages_total"] == 14 and quality["source_classification"] == "SCANNED"
    assert "partial" not in mapping.normalize(stored(SEED_EXTRACTIONS)).quality


def test_normalize_is_pure_and_takes_the_bare_answer_too():
    raw = stored(SEED_EXTRACTIONS)
    before = copy.deepcopy(raw)
    assert mapping.normalize(raw) == mapping.normalize(raw)
    assert raw == before
    bare = mapping.normalize(json.loads(json.dumps(SEED_EXTRACTIONS)))
    assert bare.get("amount_due") is not None and bare.get("amount_due").bbox.page_width is None  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "raw",
    [
        [],
        {"extractions": {"extractions": []}},
        {"extractions": {"extractions": {"iban": "DE68"}}},
        {"extractions": {"extractions": {}, "compoundExtractions": {"lineItems": {}}}},
    ],
)
def test_malformed_input_raises_type_or_value_errors(raw):
    with pytest.raises((TypeError, ValueError, KeyError)):
        mapping.normalize(raw)


def test_gini_amounts():
    assert parse_gini_amount("21.0:EUR") == (Decimal("21.0"), "EUR")
    assert parse_gini_amount("-3.5:usd") == (Decimal("-3.5"), "USD")
    assert parse_gini_amount("21,0 EUR") is None
    assert format_gini_amount(Decimal("5.6"), "eur") == "5.60:EUR"
    assert format_gini_amount(Decimal("5.125"), "EUR") == "5.125:EUR"
