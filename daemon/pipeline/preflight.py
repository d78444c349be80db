"""Pre-flight inspection at intake: page count, and refusing what no vendor can read.

Corrupt and password-protected PDFs are rejected here, before any vendor call (a vendor would
only refuse them later, after an upload).
"""

from __future__ import annotations

from pathlib import Path

from connectors.errors import TerminalError
from connectors.pdfium import LOCK

MAX_PAGES = 2000


def inspect(path: Path, mime_type: str) -> int | None:
    """Return the page count (None when the notion does not apply); raise TerminalError."""
    if mime_type == "application/pdf":
        return _pdf_pages(path)
    if mime_type.startswith("image/"):
        return _image_frames(path)
    return None


def _pdf_pages(path: Path) -> int:
    import pypdfium2 as pdfium

    with LOCK:
        try:
            pdf = pdfium.PdfDocument(str(path))
        except pdfium.PdfiumError as exc:
            if "password" in str(exc).lower():
                raise TerminalError("PDF is password-protected") from None
            raise TerminalError(f"corrupt PDF: {exc}") from None
        try:
            pages = len(pdf)
        finally:
            pdf.close()
    if pages == 0:
        raise TerminalError("PDF has no pages")
    if pages > MAX_PAGES:
        raise TerminalError(f"PDF has {pages} pages, more than the limit of {MAX_PAGES}")
    return pages


def _image_frames(path: Path) -> int:
    from PIL import Image

    try:
        with Image.open(path) as image:
            return int(getattr(image, "n_frames", 1))
    except (OSError, Image.DecompressionBombError) as exc:
        raise TerminalError(f"unreadable image: {exc}") from None
