"""Getting text out of a document: the PDF text layer, a plain-text file, or tesseract OCR.

pypdfium2 and Pillow are imported inside the functions so that importing the vendor (which the
registry does at start-up) stays cheap. PDFium is not thread-safe, even across documents, so
every call into it holds ``_PDFIUM_LOCK``; tesseract runs outside the lock.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from connectors import filecheck
from connectors import pdfium as pdfium_lock
from connectors.errors import TerminalError

if TYPE_CHECKING:
    import pypdfium2 as pdfium
    from PIL.Image import Image

Method = Literal["text-layer", "plain", "ocr"]

IMAGE_TYPES = frozenset({"image/png", "image/jpeg", "image/tiff"})
SUPPORTED_TYPES = frozenset({"application/pdf", "text/plain", *IMAGE_TYPES})

MIN_TEXT_CHARS = 20
"""Fewer non-space characters than this in the text layer means a scan (or an empty page)."""

OCR_DPI = 300
"""Tesseract is trained on ~300 dpi text; lower loses small print, higher only costs time."""

_PDFIUM_LOCK = pdfium_lock.LOCK
_NO_OCR = "install tesseract-ocr to enable it"


@dataclass(slots=True)
class ExtractedText:
    """The text of each page, and how it was obtained (``text-layer``, ``plain`` or ``ocr``)."""

    pages: list[str]
    method: Method


def base_mime_type(mime_type: str) -> str:
    """``text/plain; charset=utf-8`` → ``text/plain``; ``image/jpg`` is read as ``image/jpeg``."""
    base = mime_type.split(";", 1)[0].strip().lower()
    return {"image/jpg": "image/jpeg", "image/pjpeg": "image/jpeg"}.get(base, base)


def tesseract_path() -> str | None:
    """Where tesseract is, or None: OCR is optional and found at run time."""
    return shutil.which("tesseract")


@functools.lru_cache(maxsize=4)
def ocr_languages(binary: str) -> str:
    """``deu+eng`` when German traineddata is installed, else ``eng`` (always shipped)."""
    try:
        listed = subprocess.run(
            [binary, "--list-langs"], capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return "eng"
    langs = set(listed.stdout.split()) | set(listed.stderr.split())
    return "deu+eng" if "deu" in langs else "eng"


def extract_text(
    path: Path,
    mime_type: str,
    *,
    ocr: str = "auto",
    max_pages: int = 50,
    ocr_timeout: float = 60,
) -> ExtractedText:
    """The text of a document, page by page.

    Raises ``TerminalError`` with a reason a person can act on for anything retrying cannot fix:
    password-protected, corrupt or truncated PDFs, too many pages, and scans or images when OCR
    is off or tesseract is not installed.
    """
    kind = base_mime_type(mime_type)
    if kind == "text/plain":
        pages = _read_plain(path)
        if not any(page.strip() for page in pages):
            raise TerminalError("text file is empty")
        return ExtractedText(pages=pages, method="plain")
    if kind == "application/pdf":
        return _extract_pdf(path, ocr=ocr, max_pages=max_pages, ocr_timeout=ocr_timeout)
    if kind in IMAGE_TYPES:
        binary = _ocr_binary(ocr)
        if binary is None:
            raise TerminalError(f"{kind} needs OCR and OCR is not available ({_why_no_ocr(ocr)})")
        images = _open_images(path, kind, max_pages)
        return ExtractedText(pages=_ocr_images(binary, images, ocr_timeout), method="ocr")
    raise TerminalError(f"unsupported document type {mime_type!r} for the local extractor")


def _ocr_binary(ocr: str) -> str | None:
    return tesseract_path() if ocr == "auto" else None


def _why_no_ocr(ocr: str) -> str:
    return "OCR is switched off for this profile" if ocr != "auto" else _NO_OCR


def _read_plain(path: Path) -> list[str]:
    """UTF-8 (with or without BOM), else Windows-1252 (``€`` is 0x80 there), else latin-1.

    Latin-1 decodes any bytes, so a text file is never rejected for its encoding. Form feeds
    separate pages.
    """
    data = path.read_bytes()
    for encoding in ("utf-8-sig", "cp1252"):
        try:
            return data.decode(encoding).split("\f")
        except UnicodeDecodeError:
            continue
    return data.decode("latin-1").split("\f")


def _check_pdf_bytes(path: Path) -> None:
    """Catch truncated uploads before PDFium's repair mode turns them into half a document.

    ``%%EOF`` must be among the last KiB before any trailing whitespace or NUL padding (which
    some writers append and readers accept); the blob is final, so any amount is skipped.
    """
    with path.open("rb") as handle:
        size = os.fstat(handle.fileno()).st_size
        if filecheck.pdf_header_offset(handle.read(filecheck.PDF_HEADER_WINDOW)) < 0:
            raise TerminalError("not a PDF file (no %PDF- header)")
        if not filecheck.pdf_end_found(handle, size, max_padding=None):
            raise TerminalError("PDF is truncated or corrupt (no %%EOF marker at the end)")


def _extract_pdf(path: Path, *, ocr: str, max_pages: int, ocr_timeout: float) -> ExtractedText:
    import pypdfium2 as pdfium

    _check_pdf_bytes(path)
    with _PDFIUM_LOCK:
        try:
            document = pdfium.PdfDocument(path)
        except pdfium.PdfiumError as exc:
            if getattr(exc, "err_code", None) == 4:  # FPDF_ERR_PASSWORD
                raise TerminalError("PDF is password-protected") from exc
            raise TerminalError(f"PDF is unreadable or corrupt ({exc})") from exc
        try:
            count = len(document)
            if count > max_pages:
                raise TerminalError(
                    f"PDF has {count} pages, more than the limit of {max_pages} (max_pages)"
                )
            if count == 0:
                raise TerminalError("PDF has no pages")
            pages = [_page_text(document, index) for index in range(count)]
        except pdfium.PdfiumError as exc:
            raise TerminalError(f"PDF is unreadable or corrupt ({exc})") from exc
        finally:
            document.close()
    if sum(len("".join(page.split())) for page in pages) >= MIN_TEXT_CHARS:
        return ExtractedText(pages=pages, method="text-layer")
    binary = _ocr_binary(ocr)
    if binary is None:
        raise TerminalError(f"PDF has no text layer and OCR is not available ({_why_no_ocr(ocr)})")
    deadline = time.monotonic() + ocr_timeout
    texts = []
    for index in range(count):
        image = _render_page(path, index)  # one page at a time keeps memory flat
        texts.append(_run_tesseract(binary, image, deadline, ocr_timeout))
    return ExtractedText(pages=texts, method="ocr")


def _page_text(document: pdfium.PdfDocument, index: int) -> str:
    page = document[index]
    try:
        textpage = page.get_textpage()
        try:
            text: str = textpage.get_text_range()
        finally:
            textpage.close()
    finally:
        page.close()
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _render_page(path: Path, index: int) -> Image:
    import pypdfium2 as pdfium

    with _PDFIUM_LOCK:
        document = pdfium.PdfDocument(path)
        try:
            page = document[index]
            try:
                bitmap = page.render(scale=OCR_DPI / 72, grayscale=True)
                # to_pil shares the bitmap's buffer for grayscale: copy before closing it.
                image = bitmap.to_pil().copy()
                bitmap.close()
            finally:
                page.close()
        finally:
            document.close()
    return image


def _open_images(path: Path, kind: str, max_pages: int) -> list[Image]:
    from PIL import Image as PILImage

    try:
        with PILImage.open(path) as image:
            frames = getattr(image, "n_frames", 1)
            if frames > max_pages:
                raise TerminalError(
                    f"{kind} has {frames} pages, more than the limit of {max_pages} (max_pages)"
                )
            result = []
            for frame in range(frames):
                image.seek(frame)
                result.append(image.convert("L"))
    except (OSError, ValueError, SyntaxError, EOFError) as exc:
        raise TerminalError(f"{kind} is unreadable or corrupt ({exc})") from exc
    except (PILImage.DecompressionBombError, PILImage.DecompressionBombWarning) as exc:
        raise TerminalError(f"{kind} is too large to OCR ({exc})") from exc
    return result


def _ocr_images(binary: str, images: list[Image], timeout: float) -> list[str]:
    deadline = time.monotonic() + timeout
    return [_run_tesseract(binary, image, deadline, timeout) for image in images]


def _run_tesseract(binary: str, image: Image, deadline: float, timeout: float) -> str:
    """OCR one page image; the whole document shares one deadline of ``timeout`` seconds."""
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise TerminalError(f"OCR took longer than {timeout:g} s (ocr_timeout)")
    with tempfile.TemporaryDirectory(prefix="docrelay-ocr-") as tmp:
        png = Path(tmp) / "page.png"
        image.save(png, format="PNG")
        try:
            done = subprocess.run(
                [binary, str(png), "stdout", "-l", ocr_languages(binary), "--psm", "4"],
                capture_output=True,
                timeout=remaining,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise TerminalError(f"OCR took longer than {timeout:g} s (ocr_timeout)") from exc
        except OSError as exc:
            raise TerminalError(f"OCR could not run tesseract ({exc})") from exc
    if done.returncode != 0:
        message = done.stderr.decode("utf-8", "replace").strip().splitlines()
        raise TerminalError(f"OCR failed: {message[-1] if message else done.returncode}")
    return done.stdout.decode("utf-8", "replace")
