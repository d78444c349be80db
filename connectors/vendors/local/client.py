"""The ``local`` vendor: extraction on this machine, no account, no network.

Submitting is pure (the reference is the document's hash) and the result is ready at once, so
the pipeline's usual submit → poll → fetch cycle runs straight through; the work happens in
``fetch``, in the profile's worker threads (``concurrency``).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import Field, field_validator, model_validator

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
from connectors.extract.templates import INSTALL_HINT, SupplierTemplates
from connectors.extract.text import (
    MAX_PAGE_PIXELS,
    OCR_MEMORY_MB,
    SUPPORTED_TYPES,
    base_mime_type,
    extract_text,
)
from connectors.vendors.local import mapping


class LocalSettings(VendorSettings):
    """Settings of a ``local`` vendor profile."""

    kind: Literal["local"] = "local"
    """Selects the offline rule-based extractor (no account needed)."""
    ocr: Literal["auto", "off"] = "auto"
    """`auto` runs tesseract on scans and images when it is installed; `off` rejects them."""
    max_pages: int = Field(50, ge=1)
    """Documents with more pages than this are rejected rather than read."""
    ocr_timeout: float = Field(60, gt=0)
    """Seconds OCR may take for one whole document before it is rejected (each tesseract
    process also gets as many seconds of CPU time)."""
    max_page_pixels: int = Field(MAX_PAGE_PIXELS, ge=1_000_000)
    """Pixels one page may have to be OCRed (a PDF page at 300 dpi, or an image as declared),
    checked before it is rendered or decoded; a larger one is rejected. The default, 40
    million, is an A2 sheet at 300 dpi."""
    ocr_memory_mb: int = Field(OCR_MEMORY_MB, ge=256)
    """Address space (MiB) of one tesseract process; OCR that needs more is rejected."""
    concurrency: int = Field(2, ge=1)
    """Worker threads extracting at the same time (PDF parsing itself is serialised)."""
    templates: Path | None = None
    """A folder of your own supplier templates in invoice2data's YAML/JSON format: where one
    matches a document, its values replace the rules' (needs ``docrelay[templates]``)."""
    bundled_templates: bool = False
    """Also use the few hundred templates invoice2data ships (foreign suppliers, matched by
    keywords alone): off, so that a stray keyword cannot override the rules."""

    @field_validator("templates")
    @classmethod
    def _templates_folder(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_dir():
            raise ValueError(f"{value} is not a folder of invoice2data templates")
        return value

    @model_validator(mode="after")
    def _invoice2data_installed(self) -> LocalSettings:
        if self.templates is not None or self.bundled_templates:
            if importlib.util.find_spec("invoice2data") is None:
                raise ValueError(f"supplier templates need invoice2data: {INSTALL_HINT}")
        return self


class LocalVendor(Vendor):
    """Reads the text layer (or OCR text) and finds labelled fields with rules."""

    kind: ClassVar[str] = "local"
    settings_model: ClassVar[type[ConnectorSettings]] = LocalSettings
    capabilities: ClassVar[VendorCapabilities] = VendorCapabilities(
        poll_interval=0,
        reconcile_uploads=True,  # submit is pure: repeating it never makes a second upload
        offline=True,
    )

    settings: LocalSettings

    def __init__(self, settings: ConnectorSettings, context: ConnectorContext) -> None:
        if not isinstance(settings, LocalSettings):
            settings = LocalSettings.model_validate(settings.model_dump())
        super().__init__(settings, context)
        self.templates = SupplierTemplates(
            self.settings.templates, bundled=self.settings.bundled_templates
        )

    def submit(self, document: DocumentRef, *, first_attempt: bool = False) -> SubmitResult:
        """Nothing to upload: the reference is the content hash, so repeating is harmless."""
        if base_mime_type(document.mime_type) not in SUPPORTED_TYPES:
            supported = ", ".join(sorted(SUPPORTED_TYPES))
            raise TerminalError(
                f"the local extractor cannot read {document.mime_type or 'unknown'} documents "
                f"(supported: {supported})"
            )
        return SubmitResult(vendor_ref=f"local:{document.sha256}")

    def poll(self, vendor_ref: str, data: Mapping[str, Any]) -> PollResult:
        """Always ready: the extraction runs in ``fetch``."""
        return PollResult(status=PollStatus.READY)

    def fetch(self, vendor_ref: str, data: Mapping[str, Any], document: DocumentRef) -> Any:
        """Extract the text and find the fields; TerminalError for unreadable documents."""
        from connectors.extract.rules import find_fields

        extracted = extract_text(
            document.path,
            document.mime_type,
            ocr=self.settings.ocr,
            max_pages=self.settings.max_pages,
            ocr_timeout=self.settings.ocr_timeout,
            max_page_pixels=self.settings.max_page_pixels,
            ocr_memory_mb=self.settings.ocr_memory_mb,
        )
        found = find_fields(extracted.pages, method=extracted.method)
        return self.templates.apply("\n".join(extracted.pages), found)

    def normalize(self, raw: Any) -> CanonicalResult:
        """Pure mapping of the stored raw result (see ``mapping``)."""
        return mapping.normalize(raw)

    def probe(self) -> list[str]:
        """What this machine can read: text layers always, scans only with tesseract."""
        from connectors.extract import text

        types = ", ".join(sorted(SUPPORTED_TYPES))
        lines = [f"reads {types}; at most {self.settings.max_pages} pages"]
        if self.settings.ocr == "off":
            lines.append("OCR is off: scans and images are rejected")
        elif (binary := text.tesseract_path()) is None:
            lines.append("OCR: tesseract is not installed, so scans and images are rejected")
        else:
            lines.append(f"OCR: {binary} ({text.ocr_languages(binary)})")
        return lines
