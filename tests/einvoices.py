"""E-invoices for tests: a generated invoice as UBL (through our writer), embedded in its PDF
as Factur-X embeds its XML, and the corpus's real samples."""

from __future__ import annotations

import io
from decimal import Decimal
from pathlib import Path

from connectors.base import CanonicalResult, FieldValue, LineItem
from connectors.destinations.ubl import ubl_xml
from tests.invoices import InvoiceSpec, expected_fields, render_pdf

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "einvoice"


def canonical_of(spec: InvoiceSpec) -> CanonicalResult:
    """The spec's fields and lines as a vendor would have read them."""
    fields = []
    for name, value in expected_fields(spec).items():
        if isinstance(value, Decimal):
            fields.append(FieldValue(name, str(value), value_number=value, currency=spec.currency))
        elif hasattr(value, "isoformat"):
            fields.append(FieldValue(name, value.isoformat(), value_date=value))  # type: ignore[union-attr]
        else:
            fields.append(FieldValue(name, str(value)))
    lines = [
        LineItem(
            index + 1,
            description,
            quantity,
            price,
            spec.line_total(index),
            rate,
            item_code=spec.item_codes[index] if spec.item_codes else None,
        )
        for index, (description, quantity, price, rate) in enumerate(spec.lines)
    ]
    return CanonicalResult(fields=fields, line_items=lines)


def ubl_of(spec: InvoiceSpec) -> bytes:
    """The spec as a UBL 2.1 invoice, written by the folder destination's writer."""
    from tests.test_destination_ubl import payload

    result = canonical_of(spec)
    return ubl_xml(payload(result.fields, result.line_items, version=1), "test-key")


def embed(pdf: bytes, xml: bytes, name: str = "factur-x.xml") -> bytes:
    """The PDF with ``xml`` attached under ``name`` (as Factur-X / ZUGFeRD attach theirs)."""
    from pypdf import PdfReader, PdfWriter

    writer = PdfWriter(clone_from=PdfReader(io.BytesIO(pdf)))
    writer.add_attachment(name, xml)
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def einvoice_pdf(spec: InvoiceSpec) -> bytes:
    """The generated invoice's PDF carrying its own UBL as ``factur-x.xml``."""
    return embed(render_pdf(spec), ubl_of(spec))
