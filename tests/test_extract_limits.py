"""Rendering and OCR run with limits: a hostile PDF or image (a huge declared size, thousands of
pages, a page that makes OCR run away in time or memory) is rejected with a reason naming the
limit, and the worker stays up. OCR runs a real subprocess: a stand-in for tesseract that
misbehaves on purpose (the real one is not needed to test the limits around it)."""

from __future__ import annotations

import io
import os
import struct
import subprocess
import sys
import time
import warnings
import zlib
from pathlib import Path

import httpx
import pytest

from connectors import filecheck
from connectors.errors import TerminalError
from connectors.extract import text as text_mod
from daemon.pipeline import preflight
from tests.daemon_proc import DaemonProcess, query, wait_until, write_config
from tests.invoices import random_spec, render_pdf, scanned_pdf_bytes
from tests.test_local_vendor import doc_ref, extract, make_vendor


def png_declaring(width: int, height: int) -> bytes:
    """A valid-looking PNG of a few hundred bytes whose header declares ``width`` by ``height``
    one-bit pixels (its data covers a few rows only: nothing gets that far)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    rows = zlib.compress(b"\x00" * (1 + (width + 7) // 8) * 4)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", rows) + chunk(b"IEND", b"")
    )


def blank_pdf(pages: int, width: float = 595, height: float = 842) -> bytes:
    """A PDF of ``pages`` empty pages (no text layer: OCR would be needed)."""
    import pypdfium2 as pdfium

    pdf = pdfium.PdfDocument.new()
    for _ in range(pages):
        pdf.new_page(width, height).close()
    out = io.BytesIO()
    pdf.save(out)
    pdf.close()
    return out.getvalue()


FAKE = {
    "sleeps": "time.sleep(60)",
    "eats": "hog = bytearray(1 << 30)",  # 1 GiB
    "reads": "print('Invoice No.: INV-1')",
}


def fake_tesseract(folder: Path, behaviour: str) -> Path:
    """An executable named ``tesseract`` that answers ``--list-langs`` and then misbehaves."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "tesseract"
    path.write_text(
        f"#!{sys.executable}\n"
        "import sys, time\n"
        "if '--list-langs' in sys.argv:\n"
        "    print('eng')\n"
        "    sys.exit(0)\n"
        f"{FAKE[behaviour]}\n"
    )
    path.chmod(0o755)
    return path


@pytest.fixture
def ocr_by(tmp_path, monkeypatch):
    """Make the local extractor find a stand-in tesseract with the given behaviour."""

    def install(behaviour: str) -> Path:
        binary = fake_tesseract(tmp_path / f"bin-{behaviour}", behaviour)
        monkeypatch.setattr(text_mod, "tesseract_path", lambda: str(binary))
        return binary

    return install


def test_an_image_declaring_50000_by_50000_pixels_is_rejected_unread(tmp_path, ocr_by):
    ocr_by("reads")
    path = tmp_path / "bomb.png"
    path.write_bytes(png_declaring(50_000, 50_000))
    assert path.stat().st_size < 2000
    with pytest.raises(TerminalError, match="too large to OCR"):
        extract(make_vendor(tmp_path), path, "image/png")
    check = filecheck.check_file(path, filecheck.PNG, max_bytes=1 << 20)
    assert check.rejected and "decompression bomb" in check.reason


@pytest.mark.parametrize("action", ["ignore", "default"])
def test_a_large_image_is_refused_without_warnings_being_errors(tmp_path, ocr_by, action):
    """Regression: Pillow only warns between MAX_IMAGE_PIXELS and twice that; the decision
    must not depend on the warnings filter (errors only in the test configuration)."""
    ocr_by("reads")
    path = tmp_path / "large.png"
    path.write_bytes(png_declaring(10_000, 10_000))  # 100 M pixels: Pillow warns, no error
    with warnings.catch_warnings(record=True):
        warnings.simplefilter(action)
        check = filecheck.check_file(path, filecheck.PNG, max_bytes=1 << 20)
        with pytest.raises(TerminalError, match=r"100,000,000 pixels.*\(max_page_pixels\)"):
            extract(make_vendor(tmp_path), path, "image/png")
    assert check.rejected and "decompression bomb" in check.reason


def test_an_image_over_the_configured_pixels_is_rejected_before_it_is_decoded(tmp_path, ocr_by):
    ocr_by("reads")
    path = tmp_path / "scan.png"
    path.write_bytes(png_declaring(3000, 4000))
    with pytest.raises(TerminalError, match=r"12,000,000 pixels, more than the limit of 10,0"):
        extract(make_vendor(tmp_path, max_page_pixels=10_000_000), path, "image/png")
    assert filecheck.check_file(path, filecheck.PNG, max_bytes=1 << 20).ok


def test_a_pdf_page_with_a_huge_mediabox_is_not_rendered(tmp_path, ocr_by, monkeypatch):
    ocr_by("reads")

    def render(*args: object) -> None:
        raise AssertionError("rendered a page over the pixel limit")

    monkeypatch.setattr(text_mod, "_render_page", render)
    path = tmp_path / "poster.pdf"
    path.write_bytes(blank_pdf(1, 14_400, 14_400))  # 200 by 200 inches, the largest PDF allows
    with pytest.raises(TerminalError, match=r"page 1 is too large to OCR: 60,000 x 60,000"):
        extract(make_vendor(tmp_path), path)


def test_a_pdf_with_thousands_of_pages_is_rejected_at_intake_and_by_the_extractor(tmp_path):
    path = tmp_path / "thousands.pdf"
    path.write_bytes(blank_pdf(3000, 100, 100))
    with pytest.raises(TerminalError, match="3000 pages, more than the limit of 2000"):
        preflight.inspect(path, "application/pdf")
    with pytest.raises(TerminalError, match=r"3000 pages, more than the limit of 50 \(max_pages"):
        extract(make_vendor(tmp_path), path)


def test_ocr_that_runs_too_long_is_cut_off(tmp_path, ocr_by):
    binary = ocr_by("sleeps")
    path = tmp_path / "scan.pdf"
    path.write_bytes(scanned_pdf_bytes(random_spec(5), dpi=50))
    started = time.monotonic()
    with pytest.raises(TerminalError, match=r"OCR took longer than 0.5 s \(ocr_timeout\)"):
        extract(make_vendor(tmp_path, ocr_timeout=0.5), path)
    assert time.monotonic() - started < 10
    running = subprocess.run(["pgrep", "-f", str(binary)], capture_output=True, check=False)
    assert running.stdout.strip() == b"", "the timed-out tesseract was killed"


def test_ocr_that_needs_too_much_memory_is_stopped_by_its_limit(tmp_path, ocr_by):
    ocr_by("eats")
    path = tmp_path / "scan.pdf"
    path.write_bytes(scanned_pdf_bytes(random_spec(5), dpi=50))
    with pytest.raises(TerminalError, match=r"memory limit of 256 MiB \(ocr_memory_mb\)"):
        extract(make_vendor(tmp_path, ocr_memory_mb=256), path)


def test_ocr_within_its_limits_reads_the_page(tmp_path, ocr_by):
    """The limits leave an ordinary page alone (the stand-in prints its text)."""
    ocr_by("reads")
    path = tmp_path / "scan.pdf"
    path.write_bytes(scanned_pdf_bytes(random_spec(5), dpi=50))
    vendor = make_vendor(tmp_path, ocr_memory_mb=256)
    raw = vendor.fetch("local:x", {}, doc_ref(path))
    assert raw["method"] == "ocr"


@pytest.mark.e2e
def test_r20_hostile_documents_are_rejected_and_the_daemon_stays_healthy(tmp_path):
    bin_dir = tmp_path / "bin"
    fake_tesseract(bin_dir, "sleeps")
    config = write_config(tmp_path, settle=0.2, local="ocr_timeout = 1")
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    env = {"PATH": f"{bin_dir}:{os.environ['PATH']}"}
    daemon = DaemonProcess(config, env=env).start()
    try:
        hostile = {
            "bomb.png": (png_declaring(50_000, 50_000), "decompression bomb"),
            "poster.pdf": (blank_pdf(1, 14_400, 14_400), "max_page_pixels"),
            "thousands.pdf": (blank_pdf(3000, 100, 100), "3000 pages"),
            "slow-scan.pdf": (scanned_pdf_bytes(random_spec(6), dpi=50), "ocr_timeout"),
        }
        for name, (data, _) in hostile.items():
            (inbox / name).write_bytes(data)
        (inbox / "good.pdf").write_bytes(render_pdf(random_spec(7)))

        def states() -> dict[str, dict]:
            rows = query(tmp_path, "SELECT filename, state, error FROM docrelay_documents")
            return {r["filename"]: dict(r) for r in rows}

        names = [*hostile, "good.pdf"]
        docs = wait_until(
            lambda: (
                (d := states())
                and all(d.get(n, {}).get("state") in ("rejected", "done") for n in names)
                and d
            ),
            60,
            what="every document ended",
        )
        assert docs["good.pdf"]["state"] == "done", docs
        for name, (_, reason) in hostile.items():
            assert docs[name]["state"] == "rejected", docs[name]
            assert reason in (docs[name]["error"] or ""), docs[name]
            kept = inbox / "failed" / name
            wait_until(kept.exists, 10, what=f"{name} kept in failed/")
            assert kept.read_bytes() == hostile[name][0], "the original kept as it was"
        assert daemon.alive()
        assert httpx.get(f"{daemon.url}/healthz", timeout=5).status_code == 200
    finally:
        assert daemon.stop() == 0, daemon.log()
