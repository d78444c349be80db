"""Rossum's usual invoice schema, shared by the emulator (its queue 1 schema) and the mapping
(the default schema-id → canonical-name table).

Schema ids follow Rossum's invoice template as the API reference names them (`document_id`,
`date_issue`, `amount_total`, `sender_name`, `line_items` → `item_*` …). Where the template has
no id for a canonical field, the id is ours and says so in the label.
"""

from __future__ import annotations

from typing import Any

FIELD_MAP: dict[str, str] = {
    "document_type": "document_type",
    "document_id": "invoice_number",
    "date_issue": "issue_date",
    "date_due": "due_date",
    "currency": "currency",
    "amount_total": "total_amount",
    "amount_total_base": "net_amount",
    "amount_total_tax": "tax_amount",
    "sender_name": "supplier_name",
    "sender_vat_id": "supplier_vat_id",
    "iban": "supplier_iban",
    "bic": "supplier_bic",
    "recipient_name": "customer_name",
    "recipient_vat_id": "customer_vat_id",
    "order_id": "order_number",
    "payment_reference": "payment_reference",
    "var_sym": "payment_reference",
    "terms": "payment_terms",
}
"""Document-level datapoint schema id → canonical field (``var_sym`` is the Czech/Slovak
variable symbol, Rossum's usual payment reference)."""

LINE_ITEM_MAP: dict[str, str] = {
    "item_code": "item_code",
    "item_description": "description",
    "item_quantity": "quantity",
    "item_amount_base": "unit_price",
    "item_total_base": "net_amount",
    "item_amount_total": "total_amount",
    "item_rate": "tax_rate",
}
"""Line-item datapoint schema id → canonical line-item field. In Rossum's template
``item_amount_base`` is the unit price without tax, ``item_total_base`` the line total without
tax and ``item_amount_total`` the line total with tax; a mapping falls back from
``total_amount`` to ``net_amount`` when only the latter was found."""

LINE_ITEMS_ID = "line_items"
LINE_ITEM_TUPLE_ID = "line_item"

_TYPES: dict[str, str] = {
    "date_issue": "date",
    "date_due": "date",
    "amount_total": "number",
    "amount_total_base": "number",
    "amount_total_tax": "number",
    "item_quantity": "number",
    "item_amount_base": "number",
    "item_total_base": "number",
    "item_amount_total": "number",
    "item_rate": "number",
    "currency": "enum",
    "document_type": "enum",
}

_LABELS: dict[str, str] = {
    "document_type": "Document type",
    "document_id": "Invoice number",
    "date_issue": "Issue date",
    "date_due": "Due date",
    "currency": "Currency",
    "amount_total": "Total amount",
    "amount_total_base": "Total without tax",
    "amount_total_tax": "Tax amount",
    "sender_name": "Vendor name",
    "sender_vat_id": "Vendor VAT number",
    "iban": "IBAN",
    "bic": "BIC/SWIFT",
    "recipient_name": "Customer name",
    "recipient_vat_id": "Customer VAT number",
    "order_id": "Order number",
    "payment_reference": "Payment reference (docrelay)",
    "terms": "Payment terms",
    "item_code": "Item code",
    "item_description": "Description",
    "item_quantity": "Quantity",
    "item_amount_base": "Unit price without tax",
    "item_total_base": "Line total without tax",
    "item_amount_total": "Total with tax",
    "item_rate": "Tax rate",
}

CURRENCIES = ("eur", "usd", "gbp", "chf", "czk", "pln", "sek", "nok", "dkk", "huf", "jpy")


def _datapoint(schema_id: str) -> dict[str, Any]:
    kind = _TYPES.get(schema_id, "string")
    point: dict[str, Any] = {
        "category": "datapoint",
        "id": schema_id,
        "label": _LABELS[schema_id],
        "type": kind,
        "rir_field_names": [schema_id],
        "constraints": {"required": False},
        "default_value": None,
        "hidden": False,
        "can_export": True,
    }
    if kind == "date":
        point["format"] = "YYYY-MM-DD"
    elif kind == "number":
        point["format"] = "# ##0.#"
    elif schema_id == "currency":
        point["options"] = [{"value": c, "label": c.upper()} for c in CURRENCIES]
    elif schema_id == "document_type":
        point["options"] = [
            {"value": "tax_invoice", "label": "Tax invoice"},
            {"value": "credit_note", "label": "Credit note"},
            {"value": "proforma", "label": "Pro forma invoice"},
        ]
    return point


def invoice_schema_content() -> list[dict[str, Any]]:
    """The ``content`` of the emulator's invoice schema: sections of datapoints and a table."""
    return [
        {
            "category": "section",
            "id": "basic_info_section",
            "label": "Basic information",
            "icon": None,
            "children": [
                _datapoint(i)
                for i in ("document_type", "document_id", "date_issue", "date_due", "order_id")
            ],
        },
        {
            "category": "section",
            "id": "amounts_section",
            "label": "Amounts",
            "icon": None,
            "children": [
                _datapoint(i)
                for i in ("amount_total", "amount_total_base", "amount_total_tax", "currency")
            ],
        },
        {
            "category": "section",
            "id": "vendor_section",
            "label": "Vendor & customer",
            "icon": None,
            "children": [
                _datapoint(i)
                for i in (
                    "sender_name",
                    "sender_vat_id",
                    "iban",
                    "bic",
                    "recipient_name",
                    "recipient_vat_id",
                )
            ],
        },
        {
            "category": "section",
            "id": "payment_info_section",
            "label": "Payment",
            "icon": None,
            "children": [_datapoint(i) for i in ("payment_reference", "terms")],
        },
        {
            "category": "section",
            "id": "line_items_section",
            "label": "Line items",
            "icon": None,
            "children": [
                {
                    "category": "multivalue",
                    "id": LINE_ITEMS_ID,
                    "label": "Line items",
                    "rir_field_names": ["line_items"],
                    "min_occurrences": 0,
                    "max_occurrences": 1000,
                    "children": {
                        "category": "tuple",
                        "id": LINE_ITEM_TUPLE_ID,
                        "label": "Line item",
                        "rir_field_names": [],
                        "children": [_datapoint(i) for i in LINE_ITEM_MAP],
                    },
                }
            ],
        },
    ]
