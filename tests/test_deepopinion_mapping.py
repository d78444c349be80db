"""DeepOpinion's extraction answers (and reviewed results) mapped to the canonical model.

The answers are the seed's example (002:749-805) and a realistic invoice built the way the
shared API page describes DeepOpinion's answer: ``bboxes[page][match]`` = the boxes of one value
as fractions of the page, ``matches`` the same values without geometry.
"""

from __future__ import annotations

import copy
from datetime import date
from decimal import Decimal
from typing import Any

import pytest

from connectors.vendors.deepopinion import mapping
from connectors.vendors.deepopinion.mapping import LabelMap, normalize

A4 = [595.28, 841.89]
NAME = "invoice-7.docrelay-7-0123abcd.pdf"

SEED_ANSWER: dict[str, Any] = {
    "model": "Invoice Extraction v1",
    "all_required_fields_found": True,
    "all_confidence_thresholds_met": True,
    "all_data_conversion_passed": True,
    "total_credits_used": 24,
    "documents": [
        {
            "name": "Invoice.pdf",
            "all_required_fields_found": True,
            "all_confidence_thresholds_met": True,
            "all_data_conversion_passed": True,
            "credits_used": 24,
            "matches": [{}],
            "bboxes": [
                [
                    [
                        {
                            "TLx": 0.05868118572292801,
                            "TLy": 0.03465982028241335,
                            "TRx": 0.06412583182093164,
                            "TRy": 0.03465982028241335,
                            "BRx": 0.06412583182093164,
                            "BRy": 0.04150620453572957,
                            "BLx": 0.05868118572292801,
                            "BLy": 0.05868118572292801,
                            "text": "John Doe",
                            "label": "First name",
                            "confidence": 0.9936525225639343,
                        }
                    ]
                ]
            ],
            "annotated_pages": ["..."],
            "hitl": {
                "status": "pending",
                "result": [
                    {
                        "confidences": [
                            {
                                "label": "First name",
                                "value": "John Doe",
                                "expected_confidence": 90,
                                "found": 70,
                            }
                        ]
                    }
                ],
            },
        }
    ],
    "labels": [{"id": 1, "name": "POS"}],
}
"""The seed's response sample, 002:749-805, as printed."""


def box(label: str, text: str, left: float, top: float, right: float, bottom: float,
        confidence: float = 0.97) -> dict[str, Any]:  # fmt: skip
    """One line's box as DeepOpinion gives it: the four corners as fractions of the page."""
    return {
        "TLx": left, "TLy": top, "TRx": right, "TRy": top,
        "BRx": right, "BRy": bottom, "BLx": left, "BLy": bottom,
        "text": text, "label": label, "confidence": confidence,
    }  # fmt: skip


INVOICE_VALUES: list[tuple[int, str, str, tuple[float, float, float, float], float]] = [
    (0, "Supplier name", "Müller Bürobedarf GmbH", (0.08, 0.05, 0.45, 0.07), 0.99),
    (0, "Invoice number", "RE-2024-0117", (0.70, 0.12, 0.88, 0.135), 0.98),
    (0, "Invoice date", "31.01.2024", (0.70, 0.14, 0.84, 0.155), 0.97),
    (0, "Due date", "14.02.2024", (0.70, 0.16, 0.84, 0.175), 0.95),
    (0, "Customer name", "ACME Trading AG", (0.08, 0.20, 0.35, 0.215), 0.96),
    (0, "Supplier VAT ID", "DE 123 456 789", (0.08, 0.08, 0.30, 0.095), 0.93),
    (0, "Line item description", "Kopierpapier A4", (0.08, 0.40, 0.40, 0.415), 0.94),
    (0, "Line item quantity", "10", (0.50, 0.40, 0.55, 0.415), 0.96),
    (0, "Line item unit price", "4,50", (0.60, 0.40, 0.70, 0.415), 0.95),
    (0, "Line item amount", "45,00", (0.80, 0.40, 0.90, 0.415), 0.95),
    (0, "Line item description", "Toner schwarz", (0.08, 0.43, 0.40, 0.445), 0.94),
    (0, "Line item quantity", "2", (0.50, 0.43, 0.55, 0.445), 0.96),
    (0, "Line item unit price", "594,78", (0.60, 0.43, 0.70, 0.445), 0.92),
    (0, "Line item amount", "1.189,56", (0.80, 0.43, 0.90, 0.445), 0.93),
    (1, "Net amount", "1.234,56", (0.75, 0.30, 0.90, 0.315), 0.96),
    (1, "Tax amount", "234,57", (0.75, 0.32, 0.90, 0.335), 0.95),
    (1, "Total amount", "1.469,13", (0.75, 0.34, 0.90, 0.355), 0.62),
    (1, "Currency", "EUR", (0.91, 0.34, 0.95, 0.355), 0.99),
    (1, "IBAN", "DE89 3704 0044 0532 0130 00", (0.08, 0.80, 0.45, 0.815), 0.97),
]
"""(page index, label, text, box fractions, confidence) of a two-page invoice."""


def invoice_answer(
    name: str = NAME, *, bboxes: bool = True, low: bool = True, hitl: bool = True
) -> dict[str, Any]:
    """A DeepOpinion answer for the invoice above; ``low``: the total is below its threshold
    (62 % < 90 %), so with a live HITL the document waits for review."""
    pages: list[list[list[dict[str, Any]]]] = [[], []]
    matches = []
    for page, label, text, (l, t, r, b), confidence in INVOICE_VALUES:  # noqa: E741
        confidence = confidence if low or label != "Total amount" else 0.96
        pages[page].append([box(label, text, l, t, r, b, confidence)])
        matches.append({"label": label, "text": text, "confidence": confidence, "page": page})
    # a value printed on two lines: one box per line
    pages[0].append(
        [
            box("Payment reference", "RE-2024-0117", 0.08, 0.60, 0.30, 0.615),
            box("Payment reference", "Kd 4711", 0.08, 0.62, 0.20, 0.635, 0.91),
        ]
    )
    matches.append(
        {"label": "Payment reference", "text": "RE-2024-0117 Kd 4711", "confidence": 0.91,
         "page": 0}
    )  # fmt: skip
    below = low and hitl
    document = {
        "name": name,
        "all_required_fields_found": True,
        "all_confidence_thresholds_met": not low,
        "all_data_conversion_passed": True,
        "credits_used": 2,
        "matches": matches,
        "bboxes": pages if bboxes else [],
        "annotated_pages": [],
        "hitl": {
            "status": "pending",
            "result": [
                {
                    "confidences": [
                        {"label": "Total amount", "value": "1.469,13",
                         "expected_confidence": 90, "found": 62}
                    ]
                }
            ],
        }
        if below
        else None,
    }  # fmt: skip
    return {
        "model": "Invoice Extraction v1",
        "all_required_fields_found": True,
        "all_confidence_thresholds_met": not low,
        "all_data_conversion_passed": True,
        "total_credits_used": 2,
        "documents": [document],
        "labels": [
            {"id": i, "name": n} for i, n in enumerate(sorted({v[1] for v in INVOICE_VALUES}), 1)
        ],
    }


def stored(answer: dict[str, Any], **extra: Any) -> dict[str, Any]:
    """What the vendor stores: the answer, our upload's name and our page sizes."""
    return {"answer": answer, "document_name": NAME, "page_sizes": [A4, A4], **extra}


def values(result: Any) -> dict[str, Any]:
    return {f.name: f for f in result.fields}


# --------------------------------------------------------------------------- the seed


def test_the_seeds_example_answer_maps() -> None:
    result = normalize({"answer": SEED_ANSWER, "page_sizes": [A4]}, hitl=True)
    (field,) = result.fields
    assert field.name == "extra.First name"
    assert field.value_text == "John Doe"
    assert field.vendor_label == "First name"
    assert field.confidence == pytest.approx(0.9936525225639343)
    assert field.page == 1
    assert field.bbox is not None and field.bbox.inside_page()
    assert field.bbox.left == pytest.approx(0.05868 * 595.28, abs=0.01)
    assert field.bbox.top == pytest.approx(0.03466 * 841.89, abs=0.01)
    assert field.bbox.right == pytest.approx(0.06413 * 595.28, abs=0.01)
    # the seed's BLy repeats TLx (a copy artefact): the union takes the lowest line
    assert field.bbox.bottom == pytest.approx(0.05868 * 841.89, abs=0.01)
    assert result.line_items == []
    assert result.quality == {
        "all_required_fields_found": True,
        "all_confidence_thresholds_met": True,
        "all_data_conversion_passed": True,
        "credits_used": 24,
        "total_credits_used": 24,
        "model": "Invoice Extraction v1",
        "hitl_status": "pending",
        "below_threshold": [{"label": "First name", "found": 70, "expected": 90}],
    }
    assert (
        result.review
        == "waiting for DeepOpinion's human-in-the-loop review: First name 70 % < 90 %"
    )


def test_a_bare_answer_maps_too_without_boxes_in_points() -> None:
    result = normalize(SEED_ANSWER)
    (field,) = result.fields
    assert field.value_text == "John Doe" and field.page == 1
    assert field.bbox is None, "no page size known: no box rather than a box in fractions"
    assert result.review is None, "without the profile's HITL nothing waits"


# --------------------------------------------------------------------------- an invoice


def test_an_invoice_with_boxes_maps_to_canonical_fields_in_points() -> None:
    result = normalize(stored(invoice_answer()), hitl=True)
    got = values(result)
    assert got["invoice_number"].value_text == "RE-2024-0117"
    assert got["issue_date"].value_date == date(2024, 1, 31)
    assert got["due_date"].value_date == date(2024, 2, 14)
    assert got["supplier_name"].value_text == "Müller Bürobedarf GmbH"
    assert got["supplier_vat_id"].value_text == "DE123456789"
    assert got["customer_name"].value_text == "ACME Trading AG"
    assert got["supplier_iban"].value_text == "DE89370400440532013000"
    assert got["currency"].value_text == "EUR"
    assert got["net_amount"].value_number == Decimal("1234.56")
    assert got["tax_amount"].value_number == Decimal("234.57")
    total = got["total_amount"]
    assert total.value_number == Decimal("1469.13")
    assert total.currency == "EUR", "the Currency label's code goes to amounts without one"
    assert total.raw_text == "1.469,13"
    assert total.confidence == pytest.approx(0.62)
    assert total.page == 2
    assert total.bbox is not None
    assert (total.bbox.left, total.bbox.top, total.bbox.right, total.bbox.bottom) == (
        pytest.approx(0.75 * 595.28, abs=0.01),
        pytest.approx(0.34 * 841.89, abs=0.01),
        pytest.approx(0.90 * 595.28, abs=0.01),
        pytest.approx(0.355 * 841.89, abs=0.01),
    )
    assert (total.bbox.page_width, total.bbox.page_height) == (595.28, 841.89)
    reference = got["payment_reference"]
    assert reference.value_text == "RE-2024-0117 Kd 4711", "one box per printed line, joined"
    assert reference.confidence == pytest.approx(0.91), "the lowest of its lines"
    assert reference.bbox is not None
    assert reference.bbox.top == pytest.approx(0.60 * 841.89, abs=0.01)
    assert reference.bbox.bottom == pytest.approx(0.635 * 841.89, abs=0.01)
    assert reference.bbox.right == pytest.approx(0.30 * 595.28, abs=0.01)
    assert all(f.bbox is not None and f.bbox.inside_page() for f in result.fields)

    first, second = result.line_items
    assert (first.line_no, first.description, first.quantity) == (1, "Kopierpapier A4", 10)
    assert (first.unit_price, first.total_amount) == (Decimal("4.50"), Decimal("45.00"))
    assert (second.line_no, second.description, second.quantity) == (2, "Toner schwarz", 2)
    assert (second.unit_price, second.total_amount) == (Decimal("594.78"), Decimal("1189.56"))
    assert second.provenance["total_amount"].page == 1
    assert second.provenance["total_amount"].bbox is not None
    assert second.provenance["total_amount"].confidence == pytest.approx(0.93)


def test_matches_only_give_the_same_values_without_boxes() -> None:
    with_boxes = normalize(stored(invoice_answer()))
    matches_only = normalize(stored(invoice_answer(bboxes=False)))
    assert {f.name: f.value_text for f in matches_only.fields} == {
        f.name: f.value_text for f in with_boxes.fields
    }
    assert {f.name: f.page for f in matches_only.fields} == {
        f.name: f.page for f in with_boxes.fields
    }
    assert all(f.bbox is None for f in matches_only.fields)
    assert [(i.description, i.total_amount) for i in matches_only.line_items] == [
        ("Kopierpapier A4", Decimal("45.00")),
        ("Toner schwarz", Decimal("1189.56")),
    ]


def test_the_flags_and_credits_are_quality_flags() -> None:
    answer = invoice_answer()
    doc = answer["documents"][0]
    doc["all_required_fields_found"] = False
    doc["all_data_conversion_passed"] = False
    result = normalize(stored(answer))
    assert result.quality["all_required_fields_found"] is False
    assert result.quality["all_confidence_thresholds_met"] is False
    assert result.quality["all_data_conversion_passed"] is False
    assert result.quality["credits_used"] == 2
    assert result.quality["total_credits_used"] == 2
    assert result.quality["below_threshold"] == [
        {"label": "Total amount", "found": 62, "expected": 90}
    ]


def test_the_profiles_own_checks_are_quality_flags_too() -> None:
    result = normalize(
        stored(invoice_answer()),
        required_labels=["Invoice number", "Purchase order number"],
        confidence_threshold=0.95,
    )
    assert result.quality["missing_required_labels"] == ["Purchase order number"]
    assert result.quality["low_confidence"] == [
        "Line item amount", "Line item description", "Line item unit price",
        "Payment reference", "Supplier VAT ID", "Total amount",
    ]  # fmt: skip


def test_a_profile_mapping_overrides_and_extends_the_labels() -> None:
    answer = invoice_answer()
    answer["documents"][0]["bboxes"][0].append([box("Kostenstelle", "4711", 0.5, 0.5, 0.6, 0.52)])
    result = normalize(
        stored(answer),
        LabelMap.fields({"Kostenstelle": "extra.cost_centre", "Customer name": "extra.buyer"}),
    )
    got = values(result)
    assert got["extra.cost_centre"].value_text == "4711"
    assert got["extra.buyer"].value_text == "ACME Trading AG"
    assert "customer_name" not in got


def test_a_second_value_of_a_label_is_kept_as_an_extra() -> None:
    answer = invoice_answer()
    answer["documents"][0]["bboxes"][1].append(
        [box("Invoice number", "RE-2024-0118", 0.1, 0.9, 0.3, 0.92, 0.50)]
    )
    got = values(normalize(stored(answer)))
    assert got["invoice_number"].value_text == "RE-2024-0117", "the most confident wins"
    assert got["extra.Invoice number.2"].value_text == "RE-2024-0118"


# --------------------------------------------------------------------------- review


def test_a_pending_hitl_means_review_only_with_the_profiles_hitl_on() -> None:
    raw = stored(invoice_answer())
    assert normalize(raw, hitl=True).review == (
        "waiting for DeepOpinion's human-in-the-loop review: Total amount 62 % < 90 %"
    )
    assert normalize(raw, hitl=False).review is None
    assert normalize(stored(invoice_answer(low=False)), hitl=True).review is None


def review(review_id: int, label: str, value: str | None, reviewed: str | None,
           page: int, status: str = "COMPLETED") -> dict[str, Any]:  # fmt: skip
    """A review as ``GET …/reviews?with_full_data=true`` lists it."""
    return {
        "review_id": review_id, "task_id": review_id, "document_id": 3, "document_name": NAME,
        "page_num": page, "status": status, "created": "2024-01-31T10:00:00.123456+00:00",
        "updated": "2024-01-31T11:00:00.123456+00:00", "user_id": 1, "label": label,
        "confidence_threshold": 90, "ls_annotation_id": review_id, "hitl_id": 5,
        "data": {"value": value, "confidence": 0.62 if value else None,
                 "reviewed_value": reviewed, "bbox": None},
    }  # fmt: skip


def test_a_reviewed_result_takes_the_reviewed_values_and_needs_no_review() -> None:
    answer = mapping_answer = invoice_answer()
    reviews = [
        review(1, "Total amount", "1.469,13", "1.469,31", 1),
        review(2, "Purchase order number", None, "PO-889", 0),
        review(3, "IBAN", "DE89 3704 0044 0532 0130 00", None, 1),
    ]
    result = normalize(stored(mapping_answer, reviews=reviews), hitl=True)
    assert result.review is None
    got = values(result)
    assert got["total_amount"].value_number == Decimal("1469.31")
    assert got["total_amount"].confidence == 1.0
    assert got["total_amount"].bbox is not None, "the reviewed value keeps its place"
    assert got["order_number"].value_text == "PO-889", "a missing label reviewed in"
    assert got["order_number"].page == 1
    assert got["supplier_iban"].value_text == "DE89370400440532013000", "confirmed as read"
    assert got["invoice_number"].value_text == "RE-2024-0117", "unreviewed values stay"
    assert result.quality["reviewed"] is True and result.quality["reviews"] == 3
    assert answer == invoice_answer(), "the mapping changes nothing it was given"


def test_a_value_reviewed_as_empty_is_dropped_and_open_reviews_still_wait() -> None:
    dropped = normalize(
        stored(invoice_answer(), reviews=[review(1, "Due date", "14.02.2024", "", 0)])
    )
    assert "due_date" not in values(dropped)
    waiting = normalize(
        stored(
            invoice_answer(), reviews=[review(1, "Total amount", "1.469,13", None, 1, "PENDING")]
        ),
        hitl=True,
    )
    assert waiting.review == "DeepOpinion's human-in-the-loop review is not finished (1 open)"
    assert values(waiting)["total_amount"].value_number == Decimal("1469.13")


def test_malformed_answers_raise_only_what_the_engine_rejects_on() -> None:
    for raw in ([], {"answer": {"documents": []}}, {"answer": {}},
                {"answer": {"documents": [{"bboxes": "x"}]}}):  # fmt: skip
        with pytest.raises((KeyError, TypeError, ValueError)):
            normalize(copy.deepcopy(raw))
    assert mapping.label_key("Invoice-Number") == "invoicenumber"


def test_a_box_without_area_is_no_box() -> None:
    """The emulator's (and a careless vendor's) all-zero box for a value whose place is not
    known: the value keeps its page but gets no box at the page's corner."""
    zero = dict.fromkeys(("TLx", "TLy", "TRx", "TRy", "BRx", "BRy", "BLx", "BLy"), 0.0)
    real = {"TLx": 0.1, "TLy": 0.2, "TRx": 0.3, "TRy": 0.2, "BRx": 0.3, "BRy": 0.25,
            "BLx": 0.1, "BLy": 0.25}  # fmt: skip
    size = (595.28, 841.89)
    assert mapping.box_on_page([zero], size) is None
    assert mapping.box_on_page([zero, real], size) == mapping.box_on_page([real], size)
