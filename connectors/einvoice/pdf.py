"""Find the e-invoice XML embedded in a Factur-X / ZUGFeRD (or XRechnung-in-PDF) file.

pypdf reads the PDF's embedded files; the first one named as Factur-X 1.0, ZUGFeRD 2.x or the
XRechnung reference profile name it (``EMBEDDED_NAMES``, compared case-insensitively) is the
invoice. We do not use the ``factur-x`` library's ``get_xml_from_pdf``: it parses every
attachment with lxml's default parser before we can apply our limits (see ``safexml``), and it
brings ``requests`` along for a Schematron server we never call. The XML is returned as bytes
for ``safexml.parse``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

EMBEDDED_NAMES: Final = ("factur-x.xml", "zugferd-invoice.xml", "xrechnung.xml")
"""Attachment names that hold the invoice (``ZUGFeRD-invoice.xml`` matches case-insensitively)."""
MAX_ATTACHMENT_BYTES: Final = 10 * 1024 * 1024
"""A larger embedded invoice is refused (see ``safexml.MAX_BYTES``)."""


class NoEmbeddedInvoice(LookupError):
    """The PDF carries no e-invoice attachment; the message says what it carries instead."""


def embedded_xml(path: Path) -> tuple[str, bytes]:
    """(attachment name, XML bytes) of the PDF's e-invoice, or ``NoEmbeddedInvoice``."""
    from pypdf import PdfReader
    from pypdf.errors import PyPdfError

    try:
        reader = PdfReader(path)
        names = list(reader.attachments)
    except (PyPdfError, OSError, ValueError, KeyError, TypeError) as exc:
        raise NoEmbeddedInvoice(f"the PDF's attachments cannot be read: {exc}") from None
    wanted = {name.lower() for name in EMBEDDED_NAMES}
    for name in names:
        if name.lower() not in wanted:
            continue
        try:
            contents = reader.attachments[name]
        except (PyPdfError, ValueError, KeyError, TypeError) as exc:
            raise NoEmbeddedInvoice(f"the PDF's {name} cannot be read: {exc}") from None
        for content in contents:
            if len(content) > MAX_ATTACHMENT_BYTES:
                raise NoEmbeddedInvoice(
                    f"the PDF's {name} is {len(content):,} bytes (limit {MAX_ATTACHMENT_BYTES:,})"
                )
            if content:
                return name, content
    found = ", ".join(sorted(names)) if names else "none"
    raise NoEmbeddedInvoice(
        f"no embedded e-invoice (looked for {', '.join(EMBEDDED_NAMES)}; attachments: {found})"
    )
