"""The bytes side of ``connectors.filecheck``: ``sniff_mime_type`` and the PDF helpers that
vendors and emulators share with intake. (Intake's file checks are tested with the folder
source, in ``test_folder_source.py``.)"""

from __future__ import annotations

import io

import pytest

from connectors import filecheck
from connectors.filecheck import (
    MAX_PDF_PADDING,
    PDF_HEADER_WINDOW,
    pdf_end_found,
    pdf_header_offset,
    sniff_mime_type,
)

PDF = b"%PDF-1.4\n1 0 obj\n<<>>\nendobj\ntrailer\n<<>>\n%%EOF\n"
PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR"
JPEG = b"\xff\xd8\xff\xe0\x00\x10JFIF"


@pytest.mark.parametrize(
    ("data", "filename", "declared", "expected"),
    [
        (PDF, "scan.bin", "application/octet-stream", "application/pdf"),
        (PDF, "invoice.png", "image/png", "application/pdf"),  # the bytes win over the label
        (b"\xef\xbb\xbfjunk\r\n" + PDF, "x", None, "application/pdf"),  # header after junk
        (b" " * (PDF_HEADER_WINDOW - 5) + PDF, "x", None, "application/pdf"),  # ends at 1024
        (b" " * (PDF_HEADER_WINDOW - 4) + PDF, "x", None, "application/octet-stream"),
        (PNG, "a.pdf", "application/pdf", "image/png"),
        (JPEG, "a", None, "image/jpeg"),
        (b"II*\x00rest", "a", None, "image/tiff"),
        (b"MM\x00*rest", "a", None, "image/tiff"),
        (b"hello", "a.pdf", "Text/Plain; charset=utf-8", "text/plain"),
        (b"hello", "a.pdf", "application/octet-stream", "application/pdf"),  # by extension
        (b"hello", "a.PNG", "", "image/png"),
        (b"hello", "a.unknown-extension", None, "application/octet-stream"),
        (b"", "", None, "application/octet-stream"),
    ],
)
def test_sniff_mime_type_magic_then_declared_then_extension(
    data: bytes, filename: str, declared: str | None, expected: str
) -> None:
    assert sniff_mime_type(data, filename, declared) == expected


def test_sniff_mime_type_needs_only_the_first_kib() -> None:
    body = b"\n" * 100 + PDF + b"x" * 100_000
    assert sniff_mime_type(body[:PDF_HEADER_WINDOW], "a", None) == "application/pdf"
    assert sniff_mime_type(body, "a", None) == "application/pdf"


@pytest.mark.parametrize(
    ("head", "offset"),
    [
        (PDF, 0),
        (b"garbage%PDF-1.7", 7),
        (b"%PDF", -1),  # too short to be a header
        (b"x" * PDF_HEADER_WINDOW + PDF, -1),  # beyond the window readers search
        (b"", -1),
    ],
)
def test_pdf_header_offset(head: bytes, offset: int) -> None:
    assert pdf_header_offset(head) == offset


def _end_found(data: bytes, max_padding: int | None = MAX_PDF_PADDING) -> bool:
    return pdf_end_found(io.BytesIO(data), len(data), max_padding=max_padding)


def test_pdf_end_found_skips_legal_padding() -> None:
    assert _end_found(PDF)
    assert _end_found(PDF.rstrip(b"\n"))
    assert _end_found(PDF + b"\x00\t\n\x0c\r " * 50_000)  # 300 KB: more than one chunk


def test_pdf_end_found_wants_the_marker_at_the_end() -> None:
    assert not _end_found(b"")
    assert not _end_found(b"\n" * 10)
    assert not _end_found(PDF[:-8])  # cut short
    assert not _end_found(PDF + b"x" * filecheck.TAIL_BYTES)  # an update cut short after it
    assert _end_found(PDF + b"x" * (filecheck.TAIL_BYTES - 10))


def test_pdf_end_found_limits_padding_unless_the_bytes_are_final() -> None:
    padded = PDF + b"\x00" * (MAX_PDF_PADDING + 70_000)  # a preallocated file, say
    assert not _end_found(padded)
    assert _end_found(padded, max_padding=None)
    assert _end_found(PDF + b"\x00" * 1000, max_padding=1000)
    assert not _end_found(PDF + b"\x00" * 100_000, max_padding=1000)
