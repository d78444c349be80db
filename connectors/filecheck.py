"""What a file or a byte string is, and whether it is a document a vendor can take.

The one place for "is this a PDF / what type are these bytes": intake (folder source, ``docrelay
submit``) calls ``sniff_mime`` and ``check_file`` before a file is stored; vendors and emulators,
which hold bytes of unknown origin, call ``sniff_mime_type`` and the PDF helpers
(``pdf_header_offset``, ``pdf_end_found``).

The checks read as little as possible (a PDF: its first 4 KiB and last 1 KiB) so a folder full of
large scans is checked quickly; the vendor does the real parsing. They tell three things apart:
the file is fine, it looks like it is still being written (the caller waits and asks again), or
it can never be used (the caller quarantines it with the reason, worded for the person who put it
there).
"""

from __future__ import annotations

import codecs
import enum
import mimetypes
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING

if TYPE_CHECKING:
    from PIL import Image

HEAD_BYTES = 4096
"""How much of the start of a file is read for sniffing."""
TAIL_BYTES = 1024
"""How much of the end is searched for an end marker (``%%EOF``, ``IEND``)."""
MAX_PDF_PADDING = 1 << 20
"""How much whitespace/NUL padding after a PDF's ``%%EOF`` is skipped to find it. Padding is
legal, and some scanners and transfer tools add it; a file with more is judged incomplete."""

PDF_MAGIC = b"%PDF-"
PDF_HEADER_WINDOW = 1024
"""Readers (Acrobat, PDFium) find a PDF's header anywhere in its first 1024 bytes; bytes of
unknown origin are sniffed the same way. Intake is stricter: it wants the header at offset 0."""

PDF = "application/pdf"
PNG = "image/png"
JPEG = "image/jpeg"
TIFF = "image/tiff"
TEXT = "text/plain"
XML = "application/xml"
OCTET_STREAM = "application/octet-stream"

IMAGE_MIME_TYPES = frozenset({PNG, JPEG, TIFF})
SUPPORTED_MIME_TYPES = frozenset({PDF, TEXT, XML} | IMAGE_MIME_TYPES)
TEXT_EXTENSIONS = frozenset({".txt"})
"""Only these are taken as plain text: other text-like files (.csv, .json) are not documents."""
XML_EXTENSIONS = frozenset({".xml"})
"""Files taken as XML (structured e-invoices: XRechnung, UBL, CII), when they start like XML;
whether the XML is an invoice is the vendor's (``einvoice``) business."""

_SUPPORTED_MAGIC: tuple[tuple[bytes, str], ...] = (
    (PDF_MAGIC, PDF),
    (b"\x89PNG\r\n\x1a\n", PNG),
    (b"\xff\xd8\xff", JPEG),
    (b"II*\x00", TIFF),
    (b"MM\x00*", TIFF),
)

_UNSUPPORTED_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"PK\x03\x04", "application/zip container"),
    (b"PK\x05\x06", "application/zip container"),
    (b"PK\x07\x08", "application/zip container"),
    (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", "OLE2 container: legacy Office file or Outlook message"),
    (b"\x1f\x8b", "gzip archive"),
    (b"7z\xbc\xaf\x27\x1c", "7-Zip archive"),
    (b"Rar!\x1a\x07", "RAR archive"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
    (b"{\\rtf", "application/rtf"),
    (b"%!PS", "application/postscript"),
    (b"\x7fELF", "executable"),
)

_TRUNCATED = "truncated or still being written"
_PDF_INCOMPLETE = f"incomplete PDF: no %%EOF marker ({_TRUNCATED})"
EMPTY_FILE = "empty file (0 bytes)"
"""The reason given for a file that stays empty beyond the caller's grace (WAIT until then)."""
_TEXT_CONTROL = frozenset(range(0x20)) - {0x09, 0x0A, 0x0B, 0x0C, 0x0D, 0x1A, 0x1B}


class Verdict(enum.StrEnum):
    OK = "ok"
    """Take the file."""
    WAIT = "wait"
    """Looks incomplete: ask again later; reject with ``reason`` once the caller's grace ends."""
    REJECT = "reject"
    """Can never be used; quarantine it with ``reason``."""


@dataclass(frozen=True, slots=True)
class CheckResult:
    """The outcome of ``check_file``; ``reason`` is set for WAIT and REJECT."""

    verdict: Verdict
    reason: str | None = None

    @property
    def ok(self) -> bool:
        return self.verdict is Verdict.OK

    @property
    def wait(self) -> bool:
        return self.verdict is Verdict.WAIT

    @property
    def rejected(self) -> bool:
        return self.verdict is Verdict.REJECT


OK = CheckResult(Verdict.OK)


def _wait(reason: str) -> CheckResult:
    return CheckResult(Verdict.WAIT, reason)


def _reject(reason: str) -> CheckResult:
    return CheckResult(Verdict.REJECT, reason)


class NotARegularFileError(OSError):
    """The path is a FIFO, device, socket or directory: never open those for reading."""


def open_regular(path: Path, *, follow_symlinks: bool = True) -> IO[bytes]:
    """Open a regular file for reading, refusing anything else without blocking.

    ``O_NONBLOCK`` keeps a FIFO swapped in behind our back from hanging the caller; with
    ``follow_symlinks=False`` a symlink in the last component fails with ``ELOOP``.
    """
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)
    if not follow_symlinks:
        flags |= getattr(os, "O_NOFOLLOW", 0)
    fd = os.open(path, flags)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise NotARegularFileError(f"not a regular file: {path}")
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def _looks_like_text(data: bytes) -> bool:
    """No NUL bytes and few control characters; decodes as UTF-8 or, failing that, latin-1."""
    if b"\x00" in data:
        return False
    if not data:
        return True
    controls = sum(1 for byte in data if byte in _TEXT_CONTROL)
    return controls * 20 <= len(data)


def _magic(head: bytes) -> str | None:
    for signature, mime in _SUPPORTED_MAGIC:
        if head.startswith(signature):
            return mime
    return None


def describe_content(head: bytes) -> str:
    """A human-readable guess at what a file is, for rejection messages."""
    if (mime := _magic(head)) is not None:
        return mime
    for signature, what in _UNSUPPORTED_MAGIC:
        if head.startswith(signature):
            return what
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    if head[4:8] == b"ftyp":
        brand = head[8:12]
        return "image/heic" if brand in (b"heic", b"heix", b"mif1", b"msf1") else "ISO media file"
    if head.lstrip().startswith(b"<"):
        return "XML/HTML markup"
    if _looks_like_text(head):
        return "text, but only .txt files are taken as text"
    return "unrecognised binary content"


def sniff_mime(path: Path, head: bytes | None = None) -> str | None:
    """The MIME type of a supported document, or None when it is not one.

    Magic bytes decide first, so a renamed file is judged by what it is; the extension only
    decides for plain text, which has no signature. ``head`` is the file's first bytes when the
    caller already has them (at least 4 KiB, or the whole file). OSError propagates.
    """
    if head is None:
        with open_regular(path) as stream:
            head = stream.read(HEAD_BYTES)
    if (mime := _magic(head)) is not None:
        return mime
    if path.suffix.lower() in TEXT_EXTENSIONS and _looks_like_text(head):
        return TEXT
    if path.suffix.lower() in XML_EXTENSIONS and _looks_like_xml(head):
        return XML
    return None


def _looks_like_xml(head: bytes) -> bool:
    """Text whose first non-blank character (after a UTF-8 BOM) opens markup."""
    body = head.removeprefix(codecs.BOM_UTF8).lstrip()
    return body.startswith(b"<") and _looks_like_text(head)


def sniff_mime_type(data: bytes, filename: str, declared: str | None) -> str:
    """The type of bytes received from a client, as a vendor decides it: magic bytes first
    (clients often declare ``application/octet-stream``), then the declared type without its
    parameters, then the file name's extension; ``application/octet-stream`` when all fail.

    Unlike ``sniff_mime`` it never says None and takes a PDF header anywhere in the first
    ``PDF_HEADER_WINDOW`` bytes. ``data`` may be the whole body or just its first KiB.
    """
    if pdf_header_offset(data) >= 0:
        return PDF
    if (mime := _magic(data)) is not None:
        return mime
    base = (declared or "").split(";", 1)[0].strip().lower()
    if base and base != OCTET_STREAM:
        return base
    guessed, _ = mimetypes.guess_type(filename)
    return guessed or OCTET_STREAM


def _extension(path: Path) -> str:
    return path.suffix.lower() or "(no extension)"


def check_file(path: Path, mime: str | None, *, max_bytes: int) -> CheckResult:
    """Decide whether a file can be taken as ``mime`` (from ``sniff_mime``).

    An empty file is WAIT, not REJECT: copy tools and scanners often create the file before
    they write it. Follows symlinks (the caller has vetted the path). FileNotFoundError and
    other OSErrors propagate: a vanished or unreadable file is the caller's business, not a bad
    document.
    """
    with open_regular(path) as stream:
        size = os.fstat(stream.fileno()).st_size
        if size == 0:  # copy tools create the file first and fill it later
            return _wait(EMPTY_FILE)
        if size > max_bytes:
            return _reject(f"file too large: {size:,} bytes (limit {max_bytes:,} bytes)")
        head = stream.read(HEAD_BYTES)
        if mime is None or mime not in SUPPORTED_MIME_TYPES:
            what = mime or describe_content(head)
            return _reject(f"unsupported file type: {_extension(path)} ({what})")
        if mime == PDF:
            return _check_pdf(stream, head, size)
        if mime == TEXT:
            return _check_text(stream)
        if mime == XML:
            return OK if _looks_like_xml(head) else _reject("not an XML file: no markup")
        return _check_image(stream, mime, size)


def _tail(stream: IO[bytes], size: int) -> bytes:
    stream.seek(max(0, size - TAIL_BYTES))
    return stream.read(TAIL_BYTES)


_PDF_PADDING = b"\x00\t\n\x0c\r "
"""PDF whitespace (ISO 32000-1, 7.2.2): the bytes that may follow ``%%EOF``."""


def pdf_header_offset(head: bytes) -> int:
    """Where ``%PDF-`` starts within the first ``PDF_HEADER_WINDOW`` bytes of ``head``, or -1."""
    return head.find(PDF_MAGIC, 0, PDF_HEADER_WINDOW)


def pdf_end_found(
    stream: IO[bytes], size: int, *, max_padding: int | None = MAX_PDF_PADDING
) -> bool:
    """``%%EOF`` is among the last ``TAIL_BYTES`` before any trailing padding: the PDF is not
    cut short.

    ``size`` is the stream's length. Padding is skipped up to ``max_padding`` bytes (checked per
    64 KiB read); more means "not found", since a file being written may be preallocated with
    NULs. ``None`` skips any
    amount, for bytes that are final (a stored blob). Moves the stream's position.
    """
    return b"%%EOF" in _pdf_tail(stream, size, max_padding)


def _pdf_tail(stream: IO[bytes], size: int, max_padding: int | None) -> bytes:
    """The last ``TAIL_BYTES`` before any trailing padding, read backwards in chunks so a
    padded file costs no more than its padding (at most ``max_padding``)."""
    end = size
    while end > 0 and (max_padding is None or size - end <= max_padding):
        start = max(0, end - (1 << 16))
        stream.seek(start)
        content = stream.read(end - start).rstrip(_PDF_PADDING)
        if content:
            end = start + len(content)
            break
        end = start
    start = max(0, end - TAIL_BYTES)
    stream.seek(start)
    return stream.read(end - start)


def _check_pdf(stream: IO[bytes], head: bytes, size: int) -> CheckResult:
    if not head.startswith(PDF_MAGIC):
        return _reject(f"not a PDF: does not start with %PDF- ({describe_content(head)})")
    if not pdf_end_found(stream, size):
        return _wait(_PDF_INCOMPLETE)
    return OK


def _check_text(stream: IO[bytes]) -> CheckResult:
    stream.seek(0)
    decoder: codecs.IncrementalDecoder | None = codecs.getincrementaldecoder("utf-8")()
    while chunk := stream.read(1 << 16):
        if not _looks_like_text(chunk):
            return _reject("not a text file: contains binary data (NUL or control bytes)")
        if decoder is not None:
            try:
                decoder.decode(chunk)
            except UnicodeDecodeError:
                decoder = None  # latin-1 decodes any byte: the file is taken as latin-1
    return OK


def _check_image(stream: IO[bytes], mime: str, size: int) -> CheckResult:
    """Open and verify with Pillow (imported here: only image intake pays for it)."""
    from PIL import Image, UnidentifiedImageError

    label = mime.removeprefix("image/").upper()
    if mime == PNG and b"IEND" not in _tail(stream, size):
        return _wait(f"incomplete PNG: no IEND chunk ({_TRUNCATED})")
    try:
        stream.seek(0)
        with Image.open(stream) as image:
            if _bomb(image):
                return _reject(_TOO_LARGE)
            image.verify()
        stream.seek(0)
        with Image.open(stream) as image:
            if mime == JPEG:
                return _check_jpeg_data(image)
            if mime == TIFF:
                return _check_tiff_extent(image, size)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        return _reject(_TOO_LARGE)
    except UnidentifiedImageError:
        if mime == TIFF:  # the directory Pillow needs is often written last
            return _wait(f"incomplete TIFF: image directory unreadable ({_TRUNCATED})")
        return _reject(f"broken {label} image: cannot be opened")
    except (OSError, SyntaxError, ValueError, EOFError, Warning) as exc:
        return _reject(f"broken {label} image: {exc}")
    return OK


_TOO_LARGE = "image too large (decompression bomb guard)"


def _bomb(image: Image.Image) -> bool:
    """More pixels than Pillow's ``MAX_IMAGE_PIXELS``, from the declared size (nothing decoded).

    Pillow itself only warns up to twice that, and a warning refuses the file only where
    warnings are errors (the test suite): this check decides the same everywhere.
    """
    from PIL import Image

    limit = Image.MAX_IMAGE_PIXELS
    return limit is not None and image.width * image.height > limit


def _check_jpeg_data(image: Image.Image) -> CheckResult:
    """Decode at 1/8 scale: cheap, and it reads all the compressed data, so truncation shows."""
    image.draft("L", (max(1, image.width // 8), max(1, image.height // 8)))
    try:
        image.load()
    except OSError as exc:
        if "truncated" in str(exc):
            return _wait(f"incomplete JPEG: image data is cut short ({_TRUNCATED})")
        raise
    return OK


_TIFF_EXTENTS = ((273, 279), (324, 325))  # (StripOffsets, StripByteCounts), (TileOffsets, ...)
_MAX_TIFF_PAGES = 2000


def _check_tiff_extent(image: Image.Image, size: int) -> CheckResult:
    """Every page's image data must lie inside the file; otherwise it is cut short."""
    pages = min(getattr(image, "n_frames", 1), _MAX_TIFF_PAGES)
    for page in range(pages):
        image.seek(page)
        tags = getattr(image, "tag_v2", {})
        for offsets_tag, counts_tag in _TIFF_EXTENTS:
            offsets, counts = tags.get(offsets_tag), tags.get(counts_tag)
            if offsets is None or counts is None:
                continue
            if isinstance(offsets, int):
                offsets, counts = (offsets,), (counts,)
            end = max((o + c for o, c in zip(offsets, counts, strict=False)), default=0)
            if end > size:
                return _wait(
                    f"incomplete TIFF: page {page + 1} extends past the end of the file"
                    f" ({_TRUNCATED})"
                )
    return OK
