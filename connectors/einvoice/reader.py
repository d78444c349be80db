"""One document (an XML file or a PDF) to the raw form, whatever its syntax or container."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from connectors.einvoice import cii, safexml, syntax, ubl
from connectors.einvoice.pdf import NoEmbeddedInvoice, embedded_xml

PDF_TYPES = frozenset({"application/pdf"})
XML_TYPES = frozenset({"application/xml", "text/xml"})
SUPPORTED_TYPES = PDF_TYPES | XML_TYPES


class NotAnEInvoice(ValueError):
    """The document carries no e-invoice we can read; the message says why, for a person."""


def read_xml(data: bytes) -> dict[str, Any]:
    """The raw form of CII or UBL XML bytes, or ``NotAnEInvoice``."""
    try:
        root = safexml.parse(data)
    except safexml.XmlRefused as exc:
        raise NotAnEInvoice(str(exc)) from None
    found = syntax.detect(root)
    if found is None:
        raise NotAnEInvoice(
            f"not an EN 16931 e-invoice: the XML's root is {syntax.describe(root)} "
            "(expected CII CrossIndustryInvoice or UBL Invoice/CreditNote)"
        )
    return cii.read(root) if found == "cii" else ubl.read(root)


def read_document(path: Path, mime_type: str) -> dict[str, Any]:
    """The raw form of a stored document: XML as is, a PDF by its embedded invoice."""
    base = mime_type.split(";", 1)[0].strip().lower()
    if base in PDF_TYPES:
        try:
            name, data = embedded_xml(path)
        except NoEmbeddedInvoice as exc:
            raise NotAnEInvoice(str(exc)) from None
        try:
            raw = read_xml(data)
        except NotAnEInvoice as exc:
            raise NotAnEInvoice(f"the PDF's {name}: {exc}") from None
        return {**raw, "container": "pdf", "attachment": name}
    if base in XML_TYPES:
        size = path.stat().st_size
        if size > safexml.MAX_BYTES:
            raise NotAnEInvoice(f"XML too large: {size:,} bytes (limit {safexml.MAX_BYTES:,})")
        return {**read_xml(path.read_bytes()), "container": "xml"}
    supported = ", ".join(sorted(SUPPORTED_TYPES))
    raise NotAnEInvoice(f"an e-invoice is never {mime_type or 'unknown'} (supported: {supported})")
