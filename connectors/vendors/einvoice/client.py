"""The ``einvoice`` vendor: the document's own structured invoice, read on this machine.

Synchronous and offline: ``submit`` reads the XML (or the PDF's embedded XML), checks that its
numbers agree, and answers with the result, so the engine never polls. A document without an
e-invoice, or whose e-invoice fails the checks, is a ``TerminalError`` with the reason: on a
route ``{ vendor = "einvoice", fallback = "<vendor>" }`` the engine then hands the document to
the fallback with that reason in its history (``submissions._end``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar, Literal

from pydantic import Field

from connectors.base import (
    CanonicalResult,
    ConnectorContext,
    ConnectorSettings,
    DocumentRef,
    PollResult,
    PollStatus,
    SubmitResult,
    Vendor,
    VendorCapabilities,
    VendorSettings,
)
from connectors.errors import TerminalError
from connectors.vendors.einvoice import mapping


class EInvoiceSettings(VendorSettings):
    """Settings of an ``einvoice`` vendor profile."""

    kind: Literal["einvoice"] = "einvoice"
    """Selects the e-invoice reader (XRechnung / EN 16931 CII and UBL, Factur-X / ZUGFeRD)."""
    on_inconsistent: Literal["reject", "trust"] = "reject"
    """`reject`: an e-invoice whose sums do not add up or that lacks a mandatory field is
    refused with the rule it breaks (the route's fallback gets it); `trust`: it is taken
    anyway, its problems kept in the raw result and its values without confidence."""
    compare_pdf_text: bool = True
    """A PDF's embedded invoice must agree with the PDF's own text: its invoice number and
    grand total must be printed on the pages (a disagreement counts as inconsistent). PDFs
    without a text layer are not compared."""
    concurrency: int = Field(2, ge=1)
    """Worker threads reading at the same time."""


def _reference(document: DocumentRef) -> str:
    return f"einvoice:{document.sha256}"


def _compare_text(document: DocumentRef, raw: Mapping[str, Any]) -> tuple[str, list[str]]:
    """(what was compared, disagreements) between a PDF's text layer and its XML."""
    from connectors.einvoice.pdftext import disagreements
    from connectors.extract.text import extract_text

    try:
        pages = extract_text(document.path, "application/pdf", ocr="off").pages
    except TerminalError as exc:  # no text layer, too many pages: nothing to compare with
        return f"not compared: {exc}", []
    return "invoice number and grand total", disagreements(raw, pages)


class EInvoiceVendor(Vendor):
    """Reads the e-invoice a document carries; refuses documents that carry none."""

    kind: ClassVar[str] = "einvoice"
    settings_model: ClassVar[type[ConnectorSettings]] = EInvoiceSettings
    capabilities: ClassVar[VendorCapabilities] = VendorCapabilities(
        poll_interval=0,
        reconcile_uploads=True,  # nothing is uploaded: repeating submit reads the file again
        offline=True,
    )

    settings: EInvoiceSettings

    def __init__(self, settings: ConnectorSettings, context: ConnectorContext) -> None:
        if not isinstance(settings, EInvoiceSettings):
            settings = EInvoiceSettings.model_validate(settings.model_dump())
        super().__init__(settings, context)

    def _read(self, document: DocumentRef) -> dict[str, Any]:
        from connectors.einvoice.checks import problems
        from connectors.einvoice.reader import NotAnEInvoice, read_document

        try:
            raw = read_document(document.path, document.mime_type)
        except NotAnEInvoice as exc:
            raise TerminalError(f"no usable e-invoice: {exc}") from None
        found = problems(raw)
        if raw.get("container") == "pdf" and self.settings.compare_pdf_text:
            raw["text_check"], disagreeing = _compare_text(document, raw)
            found += disagreeing
        if found and self.settings.on_inconsistent == "reject":
            raise TerminalError(f"inconsistent e-invoice: {'; '.join(found)}")
        return {**raw, "problems": found}

    def submit(self, document: DocumentRef, *, first_attempt: bool = False) -> SubmitResult:
        """Read and check the e-invoice; the result is the answer (nothing leaves the machine)."""
        return SubmitResult(vendor_ref=_reference(document), raw=self._read(document))

    def poll(self, vendor_ref: str, data: Mapping[str, Any]) -> PollResult:
        """Always ready: the result came with ``submit``."""
        return PollResult(status=PollStatus.READY)

    def fetch(self, vendor_ref: str, data: Mapping[str, Any], document: DocumentRef) -> Any:
        """Read the document again (as ``submit`` did); nothing is kept between calls."""
        return self._read(document)

    def normalize(self, raw: Any) -> CanonicalResult:
        """Pure mapping of the stored raw result (see ``mapping``)."""
        return mapping.normalize(raw)

    def probe(self) -> list[str]:
        """What this profile reads and what it does with inconsistent invoices."""
        from connectors.einvoice.pdf import EMBEDDED_NAMES
        from connectors.einvoice.reader import SUPPORTED_TYPES

        return [
            f"reads {', '.join(sorted(SUPPORTED_TYPES))}: CII and UBL XML, PDFs embedding "
            f"{', '.join(EMBEDDED_NAMES)}",
            f"inconsistent e-invoices: {self.settings.on_inconsistent}",
        ]
