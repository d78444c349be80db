"""Rossum content tree → canonical fields and line items (``connectors.vendors.rossum.mapping``).

The fixture follows the content-API shape of the contract's §6.4 example (integer ids, the value
nested under ``content`` with ``normalized_value``, ``rir_confidence``, ``page``, ``position``)
with the invoice template's schema ids from ``schema.py``.
"""

from __future__ import annotations

import copy
import json
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from connectors.base import DOCUMENT_FIELDS, BBox, CanonicalResult, ConnectorContext
from connectors.vendors.rossum.mapping import normalize
from connectors.vendors.rossum.schema import FIELD_MAP, LINE_ITEM_MAP
from connectors.vendors.rossum.settings import RossumSettings
from connectors.vendors.rossum.vendor import RossumVendor

ANNOTATION_URL = "https://acme.rossum.app/api/v1/annotations/319668"

CONTENT_JSON = """
{"content": [
 {"id": 27801931, "url": "ANN/content/27801931", "category": "section",
  "schema_id": "basic_info_section", "children": [
   {"id": 27801932, "url": "ANN/content/27801932", "category": "datapoint",
    "schema_id": "document_id", "validation_sources": ["score"], "time_spent": 0,
    "time_spent_overall": 0, "hidden": false,
    "content": {"value": "2183760194", "normalized_value": "2183760194", "page": 1,
                "position": [761, 48, 925, 84], "rir_text": "2183760194",
                "rir_position": [761, 48, 925, 84], "connector_text": null,
                "rir_confidence": 0.99234}},
   {"id": 27801933, "url": "ANN/content/27801933", "category": "datapoint",
    "schema_id": "date_issue", "validation_sources": ["score"], "hidden": false,
    "content": {"value": "6/8/2018", "normalized_value": "2018-08-06", "page": 1,
                "position": [283, 300, 375, 324], "rir_text": "6/8/2018",
                "rir_confidence": 0.98279}},
   {"id": 27801934, "url": "ANN/content/27801934", "category": "datapoint",
    "schema_id": "email_button", "validation_sources": ["NA"], "content": null},
   {"id": 27801935, "url": "ANN/content/27801935", "category": "datapoint",
    "schema_id": "date_due", "validation_sources": [],
    "content": {"value": "", "normalized_value": null, "page": null, "position": null,
                "rir_text": "", "rir_confidence": null}},
   {"id": 27801936, "url": "ANN/content/27801936", "category": "datapoint",
    "schema_id": "document_type", "validation_sources": ["score"],
    "content": {"value": "tax_invoice", "page": 1, "position": null,
                "rir_confidence": 0.95}},
   {"id": 27801937, "url": "ANN/content/27801937", "category": "datapoint",
    "schema_id": "order_id", "validation_sources": [],
    "content": {"page": 1, "rir_confidence": null}}
  ]},
 {"id": 27801940, "url": "ANN/content/27801940", "category": "section",
  "schema_id": "amounts_section", "children": [
   {"id": 27801941, "url": "ANN/content/27801941", "category": "datapoint",
    "schema_id": "amount_total", "validation_sources": ["human"],
    "content": {"value": "1 190,00", "normalized_value": "1190.00", "page": 1,
                "position": [1134, 1050, 1190, 1080], "rir_confidence": 0.74237}},
   {"id": 27801942, "url": "ANN/content/27801942", "category": "datapoint",
    "schema_id": "amount_total_base", "validation_sources": ["score"],
    "content": {"value": "1.000,00", "normalized_value": "1000.00", "page": 1,
                "position": [1134, 1000, 1190, 1030], "rir_confidence": 0.91}},
   {"id": 27801943, "url": "ANN/content/27801943", "category": "datapoint",
    "schema_id": "amount_total_tax", "validation_sources": ["score"],
    "content": {"value": "190,00", "normalized_value": "190.00", "page": 1,
                "position": [1134, 1020, 1190, 1045], "rir_confidence": 0.9}},
   {"id": 27801944, "url": "ANN/content/27801944", "category": "datapoint",
    "schema_id": "currency", "validation_sources": ["score"],
    "content": {"value": "eur", "page": 1, "position": [1195, 1050, 1230, 1080],
                "rir_confidence": 0.97}},
   {"id": 27801945, "url": "ANN/content/27801945", "category": "multivalue",
    "schema_id": "tax_details", "children": [
     {"id": 27801946, "url": "ANN/content/27801946", "category": "tuple",
      "schema_id": "tax_detail", "children": [
       {"id": 27801947, "url": "ANN/content/27801947", "category": "datapoint",
        "schema_id": "tax_detail_rate",
        "content": {"value": "19 %", "normalized_value": "19", "page": 1,
                    "rir_confidence": 0.8}},
       {"id": 27801948, "url": "ANN/content/27801948", "category": "datapoint",
        "schema_id": "tax_detail_tax",
        "content": {"value": "190,00", "normalized_value": "190.00", "page": 1,
                    "rir_confidence": 0.8}}
     ]}
   ]}
  ]},
 {"id": 27801950, "url": "ANN/content/27801950", "category": "section",
  "schema_id": "vendor_section", "children": [
   {"id": 27801951, "url": "ANN/content/27801951", "category": "datapoint",
    "schema_id": "sender_name", "validation_sources": ["score"],
    "content": {"value": "Quora,   Inc", "page": 1, "position": [10, 10, 200, 40],
                "rir_confidence": 0.88}},
   {"id": 27801952, "url": "ANN/content/27801952", "category": "datapoint",
    "schema_id": "sender_vat_id", "validation_sources": ["score"],
    "content": {"value": "DE 123 456 789", "page": 1, "rir_confidence": 0.7}},
   {"id": 27801953, "url": "ANN/content/27801953", "category": "datapoint",
    "schema_id": "iban", "validation_sources": ["score"],
    "content": {"value": "DE89 3704 0044 0532 0130 00", "page": 2,
                "position": [50, 700, 400, 720], "rir_confidence": 0.93}},
   {"id": 27801954, "url": "ANN/content/27801954", "category": "datapoint",
    "schema_id": "recipient_name", "validation_sources": [],
    "content": {"value": "   ", "page": 1}}
  ]},
 {"id": 27801960, "url": "ANN/content/27801960", "category": "section",
  "schema_id": "payment_info_section", "children": [
   {"id": 27801961, "url": "ANN/content/27801961", "category": "datapoint",
    "schema_id": "payment_reference", "validation_sources": [],
    "content": {"value": "RF18 5390 0754 7034", "page": 1, "rir_confidence": 0.6}},
   {"id": 27801962, "url": "ANN/content/27801962", "category": "datapoint",
    "schema_id": "var_sym", "validation_sources": [],
    "content": {"value": "2183760194", "page": 1, "rir_confidence": 0.6}},
   {"id": 27801963, "url": "ANN/content/27801963", "category": "datapoint",
    "schema_id": "notes", "validation_sources": [],
    "content": {"value": "Thank you for your business", "page": 2,
                "rir_confidence": null}}
  ]},
 {"id": 27801970, "url": "ANN/content/27801970", "category": "section",
  "schema_id": "line_items_section", "children": [
   {"id": 27801971, "url": "ANN/content/27801971", "category": "multivalue",
    "schema_id": "line_items", "children": [
     {"id": 27801972, "url": "ANN/content/27801972", "category": "tuple",
      "schema_id": "line_item", "children": [
       {"id": 27801973, "category": "datapoint", "schema_id": "item_description",
        "content": {"value": "Red Rose", "page": 1, "position": [173, 883, 395, 904]}},
       {"id": 27801974, "category": "datapoint", "schema_id": "item_quantity",
        "content": {"value": "2", "normalized_value": "2", "page": 1}},
       {"id": 27801975, "category": "datapoint", "schema_id": "item_amount_base",
        "content": {"value": "250,00", "normalized_value": "250.00", "page": 1}},
       {"id": 27801976, "category": "datapoint", "schema_id": "item_total_base",
        "content": {"value": "500,00", "normalized_value": "500.00", "page": 1}},
       {"id": 27801977, "category": "datapoint", "schema_id": "item_rate",
        "content": {"value": "19%", "normalized_value": "19", "page": 1}},
       {"id": 27801978, "category": "datapoint", "schema_id": "item_amount_total",
        "content": {"value": "595,00", "normalized_value": "595.00", "page": 1}},
       {"id": 27801979, "category": "datapoint", "schema_id": "item_uom",
        "content": {"value": "pcs", "page": 1}}
     ]},
     {"id": 27801980, "url": "ANN/content/27801980", "category": "tuple",
      "schema_id": "line_item", "children": [
       {"id": 27801981, "category": "datapoint", "schema_id": "item_description",
        "content": {"value": "", "page": 1}},
       {"id": 27801982, "category": "datapoint", "schema_id": "item_quantity",
        "content": {"value": null, "page": 1}}
     ]},
     {"id": 27801983, "url": "ANN/content/27801983", "category": "tuple",
      "schema_id": "line_item", "children": [
       {"id": 27801984, "category": "datapoint", "schema_id": "item_code",
        "content": {"value": "SKU-9", "page": 1}},
       {"id": 27801985, "category": "datapoint", "schema_id": "item_description",
        "content": {"value": "Tulip", "page": 1}},
       {"id": 27801986, "category": "datapoint", "schema_id": "item_quantity",
        "content": {"value": "0.5", "normalized_value": "0.5", "page": 1}},
       {"id": 27801987, "category": "datapoint", "schema_id": "item_total_base",
        "content": {"value": "500,00", "normalized_value": "500.00", "page": 1}}
     ]}
   ]}
  ]},
 {"id": 27801990, "category": "annotation_group_from_the_future", "schema_id": "x",
  "children": [
   {"id": 27801991, "category": "datapoint", "schema_id": "po_box",
    "content": {"value": "PO 77", "page": 1}}
  ]}
]}
"""


def fixture() -> dict[str, Any]:
    """What ``RossumVendor.fetch`` stores for the example annotation."""
    content = json.loads(CONTENT_JSON.replace("ANN", ANNOTATION_URL))["content"]
    annotation = {"id": 319668, "url": ANNOTATION_URL, "status": "to_review"}
    return {"annotation": annotation, "content": content, "schema_url": None}


def by_name(result: CanonicalResult) -> dict[str, Any]:
    return {f.name: f for f in result.fields}


def test_document_fields() -> None:
    fields = by_name(normalize(fixture()))
    number = fields["invoice_number"]
    assert number.value_text == "2183760194"
    assert number.vendor_label == "document_id"
    assert number.confidence == pytest.approx(0.99234)
    assert number.page == 1
    # Rossum's page-image pixels (144 dpi) as PDF points; no page size without page_sizes.
    assert number.bbox == BBox(380.5, 24.0, 462.5, 42.0)
    assert number.vendor_id == "27801932", "the datapoint id, for feedback"
    sized = by_name(normalize({**fixture(), "page_sizes": [[612.0, 792.0]]}))
    assert sized["invoice_number"].bbox == BBox(380.5, 24.0, 462.5, 42.0, 612.0, 792.0)
    assert sized["invoice_number"].bbox.inside_page()
    coarse = by_name(normalize(fixture(), dpi=72.0))["invoice_number"]
    assert coarse.bbox == BBox(761.0, 48.0, 925.0, 84.0), "dpi is the profile's page_dpi"

    issued = fields["issue_date"]
    assert issued.value_date == date(2018, 8, 6)
    assert issued.value_text == "2018-08-06"
    assert issued.raw_text == "6/8/2018"  # as Rossum shows it

    total = fields["total_amount"]
    assert total.value_number == Decimal("1190.00")
    assert total.raw_text == "1 190,00"
    assert total.currency == "EUR"  # from the currency datapoint
    assert fields["net_amount"].value_number == Decimal("1000.00")
    assert fields["tax_amount"].value_number == Decimal("190.00")

    assert fields["currency"].value_text == "EUR"
    assert fields["currency"].raw_text == "eur"
    assert fields["document_type"].value_text == "invoice"
    assert fields["document_type"].raw_text == "tax_invoice"
    assert fields["supplier_name"].value_text == "Quora, Inc"
    assert fields["supplier_vat_id"].value_text == "DE123456789"
    assert fields["supplier_iban"].value_text == "DE89370400440532013000"
    assert fields["supplier_iban"].page == 2
    assert fields["payment_reference"].vendor_label == "payment_reference"


def test_empty_values_and_buttons_are_skipped() -> None:
    result = normalize(fixture())
    names = {f.name for f in result.fields}
    for skipped in ("due_date", "order_number", "customer_name", "extra.email_button"):
        assert skipped not in names
    assert all(f.value_text for f in result.fields)


def test_extras_are_kept() -> None:
    fields = by_name(normalize(fixture()))
    assert fields["extra.notes"].value_text == "Thank you for your business"
    assert fields["extra.var_sym"].value_text == "2183760194"  # payment_reference was taken
    assert fields["extra.po_box"].value_text == "PO 77"  # under an unknown category
    assert fields["extra.tax_detail_rate.1"].value_text == "19"
    assert fields["extra.tax_detail_tax.1"].raw_text == "190,00"
    assert not any(f.name.startswith("extra.item_") for f in normalize(fixture()).fields)


def test_line_items() -> None:
    items = normalize(fixture()).line_items
    assert [i.line_no for i in items] == [1, 2]  # the empty row is skipped
    rose, tulip = items
    assert rose.description == "Red Rose"
    assert rose.quantity == Decimal("2")
    assert rose.unit_price == Decimal("250.00")
    assert rose.net_amount == Decimal("500.00")
    assert rose.tax_rate == Decimal("19")
    assert rose.total_amount == Decimal("595.00")
    assert rose.extra == {"item_uom": "pcs"}
    assert tulip.item_code == "SKU-9"
    assert tulip.quantity == Decimal("0.5")  # not read as a thousands separator
    assert tulip.total_amount == Decimal("500.00")  # falls back to the net line total
    assert set(rose.provenance) >= {"description", "quantity", "extra.item_uom"}
    quantity = rose.provenance["quantity"]
    assert quantity.vendor_label == "item_quantity" and quantity.raw_text == "2"


def test_overrides_from_settings(tmp_path: Path) -> None:
    settings = RossumSettings(
        base_url="https://acme.rossum.app/api/v1",
        token="t",
        queue=1,
        mapping={"notes": "payment_terms", "sender_name": "extra.vendor", "po_box": "order_number"},
        line_item_mapping={"item_uom": "extra.unit", "item_code": "extra.sku"},
    )
    context = ConnectorContext(name="rossum", data_dir=tmp_path, clock=lambda: 0.0)
    vendor = RossumVendor(settings, context)
    try:
        result = vendor.normalize(fixture())
    finally:
        vendor.close()
    fields = by_name(result)
    assert fields["payment_terms"].value_text == "Thank you for your business"
    assert fields["payment_terms"].vendor_label == "notes"
    assert fields["extra.vendor"].value_text == "Quora, Inc"
    assert "supplier_name" not in fields
    assert fields["order_number"].value_text == "PO 77"
    rose, tulip = result.line_items
    assert rose.extra == {"unit": "pcs"}
    assert tulip.item_code is None and tulip.extra == {"sku": "SKU-9"}
    assert normalize(fixture(), FIELD_MAP, LINE_ITEM_MAP) == normalize(fixture())


def test_credit_note_and_other_enum_values() -> None:
    raw = fixture()
    node = raw["content"][0]["children"][4]
    node["content"]["value"] = "credit_note"
    assert by_name(normalize(raw))["document_type"].value_text == "credit_note"
    node["content"]["value"] = "proforma"
    kept = by_name(normalize(raw))["document_type"]
    assert kept.value_text == "proforma" and kept.raw_text == "proforma"


def test_whole_content_answer_and_flat_export_shape() -> None:
    raw = fixture()
    wrapped = {"annotation": raw["annotation"], "content": {"content": raw["content"]}}
    assert normalize(wrapped) == normalize(raw)
    flat = {
        "content": [
            {
                "category": "section",
                "schema_id": "invoice_details_section",
                "children": [
                    {
                        "category": "datapoint",
                        "schema_id": "document_id",
                        "value": "12345",
                        "type": "string",
                        "rir_confidence": 0.99,
                    },
                    {"category": "datapoint", "schema_id": "amount_total", "value": 900.0},
                    {"category": "datapoint", "schema_id": "pay", "type": "button"},
                ],
            }
        ]
    }
    fields = by_name(normalize(flat))
    assert fields["invoice_number"].value_text == "12345"
    assert fields["invoice_number"].confidence == 0.99
    assert fields["total_amount"].value_number == Decimal("900.0")
    assert set(fields) == {"invoice_number", "total_amount"}


def test_every_canonical_name_is_known() -> None:
    result = normalize(fixture())
    for value in result.fields:
        assert value.name in DOCUMENT_FIELDS or value.name.startswith("extra.")


def _broken(path: tuple[Any, ...], value: Any) -> dict[str, Any]:
    raw = copy.deepcopy(fixture())
    target: Any = raw
    for key in path[:-1]:
        target = target[key]
    if value is KeyError:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return raw


@pytest.mark.parametrize(
    "raw",
    [
        None,
        [],
        "content",
        {},
        {"content": None},
        {"content": "not a list"},
        {"content": [1, 2]},
        {"content": {"results": []}},
        _broken(("content", 0, "children", 0, "schema_id"), KeyError),
        _broken(("content", 0, "children", 0, "schema_id"), 42),
        _broken(("content", 0, "children", 0, "content"), "text"),
        _broken(("content", 0, "children", 0, "content", "value"), {"x": 1}),
        _broken(("content", 0, "children", 0, "content", "value"), True),
        _broken(("content", 0, "children", 0, "content", "page"), "one"),
        _broken(("content", 0, "children", 0, "content", "page"), [1]),
        _broken(("content", 0, "children", 0, "content", "position"), [1, 2, 3]),
        _broken(("content", 0, "children", 0, "content", "position"), ["a", "b", "c", "d"]),
        _broken(("content", 0, "children", 0, "content", "position"), "1,2,3,4"),
        _broken(("content", 0, "children", 0, "content", "rir_confidence"), "high"),
        _broken(("content", 0, "children", 0, "content", "rir_confidence"), {}),
        _broken(("content", 0, "children"), "abc"),
        _broken(("content", 1, "children", 4, "children"), [None]),
        _broken(("content", 4, "children", 0, "children", 0, "children"), 5),
    ],
)
def test_malformed_input_raises_only_the_mapped_errors(raw: Any) -> None:
    with pytest.raises((KeyError, TypeError, ValueError)):
        normalize(raw)


def test_deep_nesting_is_refused() -> None:
    node: dict[str, Any] = {"category": "section", "schema_id": "s", "children": []}
    root = node
    for _ in range(100):
        child: dict[str, Any] = {"category": "section", "schema_id": "s", "children": []}
        node["children"].append(child)
        node = child
    with pytest.raises(ValueError, match="deeper"):
        normalize({"content": [root]})
