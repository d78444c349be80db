"""The first page of a stored document as a PNG, for the status page: bounded, never the
whole document.

Only page 1 is ever opened; the rendering is scaled so that neither side passes ``MAX_SIDE``
pixels and the area stays under ``MAX_PIXELS``, whatever size the page claims. An image is
refused before decoding when its header declares more than ``MAX_SOURCE_PIXELS`` (explicitly:
Pillow's decompression-bomb check only warns below twice its own limit). Calls block (PDFium
holds the process-wide lock of ``connectors.pdfium``): the web app runs them in a thread, and at
most ``CONCURRENT`` run at once.
"""

from __future__ import annotations

import functools
import io
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from connectors.pdfium import LOCK

if TYPE_CHECKING:
    from PIL.Image import Image

MAX_SIDE = 1400
"""Pixels on the longer side of a rendering (a 96 dpi screen shows A4 at about 800 x 1100)."""
MAX_PIXELS = 2_000_000
MAX_SOURCE_PIXELS = 40_000_000
"""An image document declaring more pixels than this (a 600 dpi A4 scan has ~35 M) is not
decoded for the page view."""
CONCURRENT = 2
IMAGE_TYPES = frozenset({"image/png", "image/jpeg", "image/tiff", "image/gif", "image/webp"})

_slots = threading.BoundedSemaphore(CONCURRENT)


class NoPage(Exception):
    """Why there is no picture of the page (said on the page instead of a broken image)."""


@dataclass(frozen=True, slots=True)
class PageImage:
    png: bytes
    width: int
    """Pixels of the PNG."""
    height: int
    page_width: float
    """The page's size in PDF points (images: pixels at their DPI, else 72), as boxes use."""
    page_height: float


def renderable(mime_type: str) -> bool:
    """A type this module can draw (PDFs and common images); others get a note instead."""
    base = mime_type.split(";", 1)[0].strip().lower()
    return base == "application/pdf" or base in IMAGE_TYPES or base == "image/jpg"


def first_page(path: Path, mime_type: str) -> PageImage:
    """Page 1 of the blob at ``path`` as a PNG, or ``NoPage`` with the reason. Renderings are
    cached by path: blobs are content-addressed, so a path's bytes never change."""
    if not renderable(mime_type):
        raise NoPage(f"no preview for {mime_type} documents")
    if not path.is_file():
        raise NoPage("the original is not in the blob store (purged or never stored)")
    return _cached(str(path), mime_type.split(";", 1)[0].strip().lower())


@functools.lru_cache(maxsize=32)
def _cached(path: str, mime_type: str) -> PageImage:
    with _slots:
        if mime_type == "application/pdf":
            return _pdf(Path(path))
        return _image(Path(path))


def _fit(width: float, height: float) -> float:
    """The scale from ``width`` x ``height`` to at most MAX_SIDE on a side, MAX_PIXELS in all."""
    if width <= 0 or height <= 0:
        raise NoPage(f"the page has no size ({width:g} x {height:g})")
    scale = min(MAX_SIDE / max(width, height), (MAX_PIXELS / (width * height)) ** 0.5)
    return max(scale, 1e-3)


def _pdf(path: Path) -> PageImage:
    import pypdfium2 as pdfium

    with LOCK:
        try:
            document = pdfium.PdfDocument(path)
        except pdfium.PdfiumError as exc:
            raise NoPage(f"PDFium cannot open it: {exc}") from None
        try:
            if len(document) == 0:
                raise NoPage("the PDF has no pages")
            page = document[0]
            try:
                width, height = page.get_size()
                bitmap = page.render(scale=_fit(width, height), may_draw_forms=False)
                try:
                    image = bitmap.to_pil().copy()  # to_pil shares the bitmap's buffer
                finally:
                    bitmap.close()
            finally:
                page.close()
        except pdfium.PdfiumError as exc:
            raise NoPage(f"PDFium cannot render page 1: {exc}") from None
        finally:
            document.close()
    return _png(image, width, height)


def _image(path: Path) -> PageImage:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            if image.width * image.height > MAX_SOURCE_PIXELS:
                raise NoPage(
                    f"the image is {image.width} x {image.height} pixels, more than the "
                    f"preview's limit of {MAX_SOURCE_PIXELS:,}"
                )
            dpi = image.info.get("dpi") or (72, 72)
            x_dpi, y_dpi = (float(d) or 72.0 for d in dpi)
            page_width, page_height = image.width * 72 / x_dpi, image.height * 72 / y_dpi
            image.seek(0)  # the first frame only
            scale = min(1.0, _fit(image.width, image.height))
            size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
            image.draft("RGB", size)  # JPEG decodes at a reduced size straight away
            image.thumbnail(size)  # in its own mode (a grayscale scan: 1 byte a pixel)
            frame = image.convert("RGB")
    except (OSError, ValueError, SyntaxError, EOFError, UnidentifiedImageError) as exc:
        raise NoPage(f"the image cannot be read: {exc}") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise NoPage(f"the image is too large to preview: {exc}") from None
    return _png(frame, page_width, page_height)


def _png(image: Image, page_width: float, page_height: float) -> PageImage:
    out = io.BytesIO()
    image.convert("RGB").save(out, format="PNG", optimize=False, compress_level=6)
    return PageImage(out.getvalue(), image.width, image.height, page_width, page_height)
