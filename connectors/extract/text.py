"""Getting text out of a document: the PDF text layer, a plain-text file, or tesseract OCR.

pypdfium2 and Pillow are imported inside the functions so that importing the vendor (which the
registry does at start-up) stays cheap. PDFium is not thread-safe, even across documents, so
every call into it holds ``_PDFIUM_LOCK``; tesseract runs outside the lock.

A hostile document must not take the worker down, so everything that costs memory or time in
proportion to what a file *declares* is checked against a limit before it is done: the page
count before any page is read, a page's pixels (its size times the OCR scale, or an image's
declared size) before it is rendered or decoded, and tesseract runs as a subprocess with a
wall-clock timeout and resource limits (address space, CPU seconds). Over a limit, the document
is rejected (``TerminalError``) with the limit's name in the reason.
"""

from __future__ import annotations

import functools
import math
import os
import resource
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable
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

MAX_PAGE_PIXELS = 40_000_000
"""Default pixels one page may have to be OCRed: an A2 sheet at 300 dpi (35 M), 4½ A4 pages.
A page bitmap is one byte per pixel (grayscale), so this bounds a render at 40 MB."""
OCR_MEMORY_MB = 2048
"""Default address space of one tesseract process: a page at ``MAX_PAGE_PIXELS`` needs well
under half of it; virtual size runs ahead of what is resident (thread arenas, mapped models)."""

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
    max_page_pixels: int = MAX_PAGE_PIXELS,
    ocr_memory_mb: int = OCR_MEMORY_MB,
) -> ExtractedText:
    """The text of a document, page by page.

    Raises ``TerminalError`` with a reason a person can act on for anything retrying cannot fix:
    password-protected, corrupt or truncated PDFs, too many pages, pages too large to OCR, OCR
    over its time or memory, and scans or images when OCR is off or tesseract is not installed.
    """
    limits = OcrLimits(ocr_timeout, max_page_pixels, ocr_memory_mb)
    kind = base_mime_type(mime_type)
    if kind == "text/plain":
        pages = _read_plain(path)
        if not any(page.strip() for page in pages):
            raise TerminalError("text file is empty")
        return ExtractedText(pages=pages, method="plain")
    if kind == "application/pdf":
        return _extract_pdf(path, ocr=ocr, max_pages=max_pages, limits=limits)
    if kind in IMAGE_TYPES:
        binary = _ocr_binary(ocr)
        if binary is None:
            raise TerminalError(f"{kind} needs OCR and OCR is not available ({_why_no_ocr(ocr)})")
        return ExtractedText(pages=_ocr_images(binary, path, kind, max_pages, limits), method="ocr")
    raise TerminalError(f"unsupported document type {mime_type!r} for the local extractor")


@dataclass(frozen=True, slots=True)
class OcrLimits:
    """What OCR of one document may cost (the local extractor's settings)."""

    timeout: float
    """Wall-clock seconds for the whole document (``ocr_timeout``)."""
    max_page_pixels: int
    """Pixels of one page image (``max_page_pixels``)."""
    memory_mb: int
    """Address space of one tesseract process, in MiB (``ocr_memory_mb``)."""


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


def _extract_pdf(path: Path, *, ocr: str, max_pages: int, limits: OcrLimits) -> ExtractedText:
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
            sizes = [document.get_page_size(index) for index in range(count)]
        except pdfium.PdfiumError as exc:
            raise TerminalError(f"PDF is unreadable or corrupt ({exc})") from exc
        finally:
            document.close()
    if sum(len("".join(page.split())) for page in pages) >= MIN_TEXT_CHARS:
        return ExtractedText(pages=pages, method="text-layer")
    binary = _ocr_binary(ocr)
    if binary is None:
        raise TerminalError(f"PDF has no text layer and OCR is not available ({_why_no_ocr(ocr)})")
    scale = OCR_DPI / 72
    for index, (width, height) in enumerate(sizes):  # all of them before the first render
        _check_pixels(f"page {index + 1}", width * scale, height * scale, limits)
    deadline = time.monotonic() + limits.timeout
    texts = []
    for index in range(count):
        image = _render_page(path, index)  # one page at a time keeps memory flat
        texts.append(_run_tesseract(binary, image, deadline, limits))
    return ExtractedText(pages=texts, method="ocr")


def _check_pixels(what: str, width: float, height: float, limits: OcrLimits) -> None:
    """Refuse a page image over ``max_page_pixels`` before it is rendered or decoded: its
    bitmap, and tesseract's work on it, grow with its area."""
    pixels = int(width) * int(height)
    if pixels > limits.max_page_pixels:
        raise TerminalError(
            f"{what} is too large to OCR: {int(width):,} x {int(height):,} = {pixels:,} pixels, "
            f"more than the limit of {limits.max_page_pixels:,} (max_page_pixels)"
        )


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


def _ocr_images(binary: str, path: Path, kind: str, max_pages: int, limits: OcrLimits) -> list[str]:
    """OCR each frame of an image file, one at a time (one decoded frame in memory).

    Every frame's declared size is checked before the first is decoded. Pillow's own
    decompression-bomb guard warns (rather than fails) up to twice its ``MAX_IMAGE_PIXELS``,
    and a warning is an error only where the warnings filter says so: the explicit check of
    ``max_page_pixels`` (far below it) is what refuses a large image, whatever the filter.
    """
    from PIL import Image as PILImage

    try:
        with PILImage.open(path) as image:
            frames = getattr(image, "n_frames", 1)
            if frames > max_pages:
                raise TerminalError(
                    f"{kind} has {frames} pages, more than the limit of {max_pages} (max_pages)"
                )
            for frame in range(frames):
                image.seek(frame)
                label = "the image" if frames == 1 else f"page {frame + 1}"
                _check_pixels(label, image.width, image.height, limits)
            deadline = time.monotonic() + limits.timeout
            texts = []
            for frame in range(frames):
                image.seek(frame)
                texts.append(_run_tesseract(binary, image.convert("L"), deadline, limits))
    except (PILImage.DecompressionBombError, PILImage.DecompressionBombWarning) as exc:
        raise TerminalError(f"{kind} is too large to OCR ({exc})") from exc
    except (OSError, ValueError, SyntaxError, EOFError) as exc:
        raise TerminalError(f"{kind} is unreadable or corrupt ({exc})") from exc
    return texts


def _limit_resources(memory_bytes: int, cpu_seconds: int) -> Callable[[], None]:
    """The ``preexec_fn`` of a tesseract process: its address space and CPU time capped, so a
    page that makes it run away is killed by the kernel rather than the host's OOM killer
    choosing the daemon. It does no more than two ``setrlimit`` calls between fork and exec,
    the least a ``preexec_fn`` can do in a process with threads."""

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
        resource.setrlimit(resource.RLIMIT_CPU, (cpu_seconds, cpu_seconds + 1))

    return limit


def _run_tesseract(binary: str, image: Image, deadline: float, limits: OcrLimits) -> str:
    """OCR one page image; the whole document shares one deadline of ``limits.timeout`` s."""
    timeout = limits.timeout
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
                # One thread per page: the worker pool already OCRs documents side by side,
                # and CPU time then tracks wall time (RLIMIT_CPU below).
                env={**os.environ, "OMP_THREAD_LIMIT": "1"},
                preexec_fn=_limit_resources(limits.memory_mb << 20, math.ceil(remaining) + 1),
            )
        except subprocess.TimeoutExpired as exc:
            raise TerminalError(f"OCR took longer than {timeout:g} s (ocr_timeout)") from exc
        except OSError as exc:
            raise TerminalError(f"OCR could not run tesseract ({exc})") from exc
    if done.returncode != 0:
        raise TerminalError(_ocr_failure(done, limits))
    return done.stdout.decode("utf-8", "replace")


def _ocr_failure(done: subprocess.CompletedProcess[bytes], limits: OcrLimits) -> str:
    """Why tesseract failed, in words: over a limit when the kernel or the allocator stopped it."""
    lines = done.stderr.decode("utf-8", "replace").strip().splitlines()
    said = lines[-1] if lines else f"exit status {done.returncode}"
    if done.returncode == -signal.SIGXCPU:
        return f"OCR used more than its CPU time (ocr_timeout {limits.timeout:g} s)"
    out_of_memory = any(
        word in line.lower() for line in lines for word in ("memory", "bad_alloc", "alloc")
    )
    if out_of_memory or done.returncode in (-signal.SIGABRT, -signal.SIGSEGV):
        return (
            f"OCR failed, most likely over its memory limit of {limits.memory_mb} MiB "
            f"(ocr_memory_mb): {said}"
        )
    if done.returncode == -signal.SIGKILL:
        return "OCR was killed over its memory or CPU limit (ocr_memory_mb, ocr_timeout)"
    return f"OCR failed: {said}"
