"""Pre-flight inspection at intake: page count and sizes, and refusing what no vendor can read.

Corrupt and password-protected PDFs are rejected here, before any vendor call (a vendor would
only refuse them later, after an upload). The page sizes (PDF points) are kept with the
document, so a vendor's boxes in pixels or fractions of a page become points on the real page.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from connectors.errors import TerminalError
from connectors.pdfium import LOCK

MAX_PAGES = 2000
SIZED_PAGES = 500
"""Page sizes are kept for this many pages at most (a box on a later page has no page size)."""


@dataclass(frozen=True, slots=True)
class Inspection:
    pages: int | None = None
    """The page count (None when the notion does not apply)."""
    page_sizes: list[list[float]] | None = None
    """``[width, height]`` per page in PDF points (images: pixels at their DPI, else 72)."""


def inspect(path: Path, mime_type: str) -> Inspection:
    """What intake records of a document; raises TerminalError for one no vendor can read."""
    if mime_type == "application/pdf":
        return _pdf_pages(path)
    if mime_type.startswith("image/"):
        return _image_frames(path)
    return Inspection()


def _pdf_pages(path: Path) -> Inspection:
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
            sizes = [
                [round(w, 2), round(h, 2)]
                for w, h in (pdf.get_page_size(i) for i in range(min(pages, SIZED_PAGES)))
            ]
        finally:
            pdf.close()
    if pages == 0:
        raise TerminalError("PDF has no pages")
    if pages > MAX_PAGES:
        raise TerminalError(f"PDF has {pages} pages, more than the limit of {MAX_PAGES}")
    return Inspection(pages, sizes)


def _image_frames(path: Path) -> Inspection:
    from PIL import Image

    try:
        with Image.open(path) as image:
            frames = int(getattr(image, "n_frames", 1))
            dpi = image.info.get("dpi") or (72, 72)
            x_dpi, y_dpi = (float(d) or 72.0 for d in dpi)
            size = [round(image.width * 72 / x_dpi, 2), round(image.height * 72 / y_dpi, 2)]
    except (OSError, ValueError, TypeError, Image.DecompressionBombError) as exc:
        raise TerminalError(f"unreadable image: {exc}") from None
    return Inspection(frames, [size] if frames == 1 else None)
