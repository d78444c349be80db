"""The Konfuzio mapping on realistic document details (``tests/konfuzio_payloads.py``, shaped
like contract §4 and Konfuzio's own UI mock): canonical fields, line items from repeating label
sets, boxes in PDF points on the page, overrides, and what is ignored."""

from __future__ import annotations

import json
from datetime import date
from decimal import Decimal

import pytest

from connectors.base import LINE_ITEM_FIELDS, VendorSettings
from connectors.vendors.konfuzio import mapping
from connectors.vendors.konfuzio.mapping import LabelMap, label_key, normalize
from tests.konfuzio_payloads import (
    OURS,
    PAGE,
    annotation,
    fetched,
    invoice_detail,
    label,
    label_set,
    span,
)


def by_name(result):
    return {f.name: f for f in result.fields}


def test_a_processed_invoice_maps_to_canonical_fields_with_provenance() -> None:
    result = normalize(fetched())
    got = by_name(result)
    number = got["invoice_number"]
    assert number.value_text == "RE-2024-0042"
    assert (number.vendor_label, number.vendor_id, number.confidence, number.page) == (
        "Rechnungsnummer",
        "810",
        0.96,
        1,
    )
    assert got["issue_date"].value_date == date(2024, 3, 5)
    total = got["total_amount"]
    assert total.value_number == Decimal("25.50") and total.currency == "EUR"
    assert total.raw_text == "25,50"
    assert got["currency"].value_text == "EUR"
    assert got["supplier_name"].value_text == "ACME GmbH", "the declined 'Widget' is no value"
    # the weaker second annotation of a label and an unknown label are kept, as extras
    assert got["extra.Rechnungsnummer"].value_text == "K-991"
    assert got["extra.Kundennummer"].value_text == "K-991"
    assert result.quality == {
        "is_reviewed": False,
        "category": 12,
        "category_confidence": 0.97,
        "category_is_revised": False,
    }


def test_null_id_sets_are_ignored_even_with_something_in_them() -> None:
    result = normalize(fetched())
    names = {f.name for f in result.fields}
    assert "order_number" not in names  # "Bestellnummer" sits in a potential set
    assert not any("Bestellnummer" in n or "Zahlungsbedingungen" in n for n in names)


def test_repeating_label_sets_become_line_items_in_print_order() -> None:
    items = normalize(fetched()).line_items
    assert [(i.line_no, i.description) for i in items] == [(1, "Widget A"), (2, "Widget B")]
    first, second = items
    assert (first.quantity, first.unit_price, first.total_amount) == (
        Decimal("2"),
        Decimal("10.00"),
        Decimal("20.00"),
    )
    assert (second.quantity, second.unit_price, second.total_amount) == (
        Decimal("1"),
        Decimal("5.50"),
        Decimal("5.50"),
    )
    cell = second.provenance["unit_price"]
    assert cell.vendor_label == "Einzelpreis" and cell.raw_text == "5,50" and cell.page == 1
    for item in items:
        assert set(item.provenance) <= set(LINE_ITEM_FIELDS) | {f"extra.{k}" for k in item.extra}


def test_boxes_are_pdf_points_from_the_top_left_inside_the_page() -> None:
    result = normalize(fetched())
    boxes = [f.bbox for f in result.fields] + [
        p.bbox for item in result.line_items for p in item.provenance.values()
    ]
    assert boxes and all(b is not None and b.inside_page() for b in boxes)
    number = by_name(result)["invoice_number"].bbox
    found = span("RE-2024-0042")
    sx, sy = OURS[0] / PAGE[0], OURS[1] / PAGE[1]
    assert number.page_width == OURS[0] and number.page_height == OURS[1]
    assert number.left == pytest.approx(found["x0"] * sx, abs=0.01)
    assert number.right == pytest.approx(found["x1"] * sx, abs=0.01)
    # Konfuzio counts y from the bottom: y1 is the top edge
    assert number.top == pytest.approx((PAGE[1] - found["y1"]) * sy, abs=0.01)
    assert number.bottom == pytest.approx((PAGE[1] - found["y0"]) * sy, abs=0.01)
    # line 2 of the text ("Rechnung …") is printed 74 pt below the top of the page
    assert number.top == pytest.approx(74.0, abs=0.1)


def test_without_our_page_size_konfuzios_original_size_is_the_page() -> None:
    result = normalize(fetched(sizes=()))
    box = by_name(result)["invoice_number"].bbox
    assert (box.page_width, box.page_height) == PAGE
    assert box.top == pytest.approx(74.0, abs=0.01)


def test_a_top_left_origin_can_be_configured() -> None:
    top_left = normalize(fetched(), origin="top-left")
    found = span("RE-2024-0042")
    box = by_name(top_left)["invoice_number"].bbox
    assert box.top == pytest.approx(found["y0"] * OURS[1] / PAGE[1], abs=0.01)
    assert box.bottom == pytest.approx(found["y1"] * OURS[1] / PAGE[1], abs=0.01)


def test_a_box_without_any_page_size_is_left_out_rather_than_guessed() -> None:
    detail = invoice_detail(pages=[])
    result = normalize(fetched(detail, sizes=()))
    number = by_name(result)["invoice_number"]
    assert number.bbox is None and number.page == 1 and number.value_text == "RE-2024-0042"


def test_a_multi_line_value_gets_one_box_over_its_spans() -> None:
    detail = invoice_detail()
    supplier = detail["annotation_sets"][0]["labels"][4]["annotations"][1]
    supplier["offset_string"] = "ACME GmbH Rechnung"
    supplier["span"] = [span("ACME GmbH"), span("Rechnung", line=1)]
    box = by_name(normalize(fetched(detail)))["supplier_name"].bbox
    assert box.top == pytest.approx(60.0 * OURS[1] / PAGE[1], abs=0.01)
    assert box.bottom == pytest.approx(84.0 * OURS[1] / PAGE[1], abs=0.01)


def test_the_profiles_mapping_extends_and_overrides_the_defaults() -> None:
    settings = VendorSettings(
        kind="konfuzio",
        mapping={"Kundennummer": "order_number", "Lieferant": "customer_name"},
        line_item_mapping={"Menge": "extra.menge"},
    )
    result = normalize(
        fetched(),
        LabelMap.fields(settings.mapping),
        LabelMap.line_items(settings.line_item_mapping),
    )
    got = by_name(result)
    assert got["order_number"].value_text == "K-991"
    assert got["customer_name"].value_text == "ACME GmbH" and "supplier_name" not in got
    first = result.line_items[0]
    assert first.quantity is None and first.extra["menge"] == "2"
    assert first.provenance["extra.menge"].vendor_label == "Menge"


def test_label_names_are_compared_without_case_spaces_and_punctuation() -> None:
    assert label_key("USt-IdNr.") == label_key("ust idnr") == "ustidnr"
    assert label_key("Fällig am") == "fälligam"
    fields = LabelMap.fields({"Mein Feld": "payment_reference"})
    assert fields.get("RECHNUNGS-NR") == "invoice_number"
    assert fields.get("invoice_number") == "invoice_number"
    assert fields.get("mein_feld") == "payment_reference"
    assert fields.get("Unbekannt") is None
    assert fields.labels_for("payment_reference")[0] == "Mein Feld"


def test_konfuzios_normalized_value_stands_in_where_the_text_does_not_parse() -> None:
    detail = invoice_detail()
    labels = detail["annotation_sets"][0]["labels"]
    labels[2]["annotations"][0].update(offset_string="fünfundzwanzig Euro", normalized=25.5)
    labels[1]["annotations"][0].update(offset_string="13.07.", normalized="0000-07-13")
    got = by_name(normalize(fetched(detail)))
    total = got["total_amount"]
    assert total.value_number == Decimal("25.5") and total.raw_text == "fünfundzwanzig Euro"
    date_field = got["issue_date"]
    assert date_field.value_date is None, "a date without a year is not made up"
    assert date_field.value_text == "13.07."


def test_a_repeating_set_without_line_item_labels_keeps_its_values_as_numbered_extras() -> None:
    detail = invoice_detail()
    detail["annotation_sets"] += [
        {
            "id": 9300 + n,
            "label_set": label_set(50, "Reiseverbindung", multiple=True),
            "labels": [label(501, "Bahnhof", [annotation(text)])],
        }
        for n, text in enumerate(("Widget A", "Widget B"), start=1)
    ]
    got = by_name(normalize(fetched(detail)))
    assert got["extra.Bahnhof.1"].value_text == "Widget A"
    assert got["extra.Bahnhof.2"].value_text == "Widget B"


def test_the_validation_ui_mock_shape_maps_too() -> None:
    """A fragment of Konfuzio's own mock (document-validation-ui ``tests/mock/document.json``):
    a repeating ``Zahlungsposition`` set and page sizes of a real A4 scan."""
    raw = {
        "document": {
            "id": 1369630,
            "status_data": 2,
            "labeling_available": 1,
            "pages": [{"id": 71910, "number": 1, "original_size": [595.0008, 835.9992]}],
            "annotation_sets": [
                {
                    "id": 92316,
                    "label_set": {
                        "id": 31,
                        "name": "Zahlungsposition",
                        "api_name": "Zahlungsposition",
                        "has_multiple_annotation_sets": True,
                    },
                    "labels": [
                        {
                            "id": 93,
                            "name": "Anzahl",
                            "api_name": "Anzahl",
                            "annotations": [
                                {
                                    "id": 509281,
                                    "offset_string": "1",
                                    "normalized": "1",
                                    "confidence": 0.8599803723839154,
                                    "is_correct": False,
                                    "revised": False,
                                    "span": [
                                        {
                                            "x0": 120.8592,
                                            "y0": 630.3168,
                                            "x1": 124.7328,
                                            "y1": 637.2936,
                                            "page_index": 0,
                                        }
                                    ],
                                }
                            ],
                        },
                        {
                            "id": 94,
                            "name": "Preis",
                            "api_name": "Preis",
                            "annotations": [
                                {
                                    "id": 509287,
                                    "offset_string": "5,10€",
                                    "normalized": "5,10€",
                                    "confidence": 0.7999779474410336,
                                    "is_correct": False,
                                    "revised": False,
                                    "span": [
                                        {
                                            "x0": 149.5224,
                                            "y0": 629.5464,
                                            "x1": 169.6824,
                                            "y1": 638.0712,
                                            "page_index": 0,
                                        }
                                    ],
                                }
                            ],
                        },
                    ],
                }
            ],
        },
        "page_sizes": [[595.0008, 835.9992]],
    }
    (item,) = normalize(raw).line_items
    assert item.quantity == Decimal("1") and item.unit_price == Decimal("5.10")
    box = item.provenance["unit_price"].bbox
    assert box.top == pytest.approx(835.9992 - 638.0712, abs=0.01) and box.inside_page()


def test_normalize_is_pure_and_survives_the_json_round_trip() -> None:
    raw = json.loads(json.dumps(fetched()))
    assert normalize(raw) == normalize(raw)
    assert normalize(invoice_detail()) == normalize(fetched(sizes=()))  # a bare detail maps


@pytest.mark.parametrize(
    "raw",
    [
        [],
        {"document": {"id": 1}},
        {"document": {"annotation_sets": "nope"}},
        {"document": {"annotation_sets": [{"id": 1, "labels": [{"id": 2}]}]}},
        {"document": {"annotation_sets": [{"id": 1, "labels": [{"name": "x", "annotations": 3}]}]}},
    ],
)
def test_malformed_results_raise_what_the_engine_rejects_on(raw) -> None:
    with pytest.raises((KeyError, TypeError, ValueError)):
        mapping.normalize(raw)


def test_confidence_is_kept_between_zero_and_one() -> None:
    detail = invoice_detail()
    labels = detail["annotation_sets"][0]["labels"]
    labels[0]["annotations"][0]["confidence"] = 96
    labels[1]["annotations"][0]["confidence"] = -1
    got = by_name(normalize(fetched(detail)))
    assert got["invoice_number"].confidence == pytest.approx(0.96)
    assert got["issue_date"].confidence is None


def test_canonical_and_line_prefixed_label_names_are_known() -> None:
    """What a project named after docrelay's own fields has (``invoice_number``,
    ``line_quantity``): recognised without any mapping."""
    fields, items = LabelMap.fields(), LabelMap.line_items()
    assert fields.get("total_amount") == "total_amount"
    assert items.get("line_quantity") == "quantity"
    assert items.get("Line Item Unit Price") == "unit_price"
    assert items.get("line_description", "line_description") == "description"
