"""The one file-name sanitiser (``connectors.filenames``), used by the mail parser, the folder
source and whatever else turns an outside name into a file name. Security regressions are
named after what they guard against (RELIABILITY 10 and 13)."""

from __future__ import annotations

import os
import random
import re

import pytest

from connectors.filenames import (
    INVISIBLE,
    MAX_NAME_BYTES,
    MAX_NAME_CHARS,
    UPLOAD_TAG,
    display,
    fix_8bit,
    safe_filename,
    upload_name,
    upload_tag,
)


@pytest.mark.parametrize(
    ("name", "safe"),
    [
        ("../../etc/passwd", "passwd"),
        ("C:\\Windows\\evil.pdf", "evil.pdf"),
        ("C:evil.pdf", "evil.pdf"),
        ("\\\\server\\share\\x.pdf", "x.pdf"),
        ("/abs/x.pdf", "x.pdf"),
        ("report.pdf/", "report.pdf"),
        ("..", ""),
        ("foo/..", ""),
        (".hidden.pdf", "hidden.pdf"),
        ("a\x00b\nc.pdf", "ab c.pdf"),
        ("invoice\u202efdp.exe", "invoicefdp.exe"),
        ("Rechnung Ma\u0308rz.pdf", "Rechnung März.pdf"),  # NFD, as macOS writes it
        ("  spaced   out .pdf  ", "spaced out .pdf"),
        ("x" * 300 + ".pdf", "x" * 196 + ".pdf"),
        ("y" * 300, "y" * 200),
    ],
)
def test_safe_filename(name: str, safe: str) -> None:
    assert safe_filename(name) == safe


@pytest.mark.parametrize(
    ("name", "safe"),
    [
        ("..\\..\\boot.ini", "boot.ini"),
        ("sub/dir\\x.pdf", "x.pdf"),
        ("a/b/../../../c.pdf", "c.pdf"),
        ("x.pdf\\", "x.pdf"),
        ("./x.pdf", "x.pdf"),
        ("/", ""),
        ("", ""),
    ],
)
def test_r10_path_traversal_keeps_only_the_last_component(name: str, safe: str) -> None:
    assert safe_filename(name) == safe


@pytest.mark.parametrize(
    ("name", "safe"),
    [
        ("d:/x/y.pdf", "y.pdf"),
        ("C:", ""),
        ("C:C:x.pdf", "x.pdf"),  # once stripped, not drive-relative again
        (" C:x.pdf", "x.pdf"),
        (".C:x.pdf", "x.pdf"),
        ("C: .D:x.pdf", "x.pdf"),
        ("invoice:C.pdf", "invoice:C.pdf"),  # not a drive: only a leading one goes
        ("CC:x.pdf", "CC:x.pdf"),
    ],
)
def test_drive_letters_go(name: str, safe: str) -> None:
    assert safe_filename(name) == safe


@pytest.mark.parametrize(
    ("name", "safe"),
    [
        ("a\x00b.pdf", "ab.pdf"),
        ("\x00", ""),
        ("x.pdf\x00.exe", "x.pdf.exe"),  # NUL cannot cut a name short
        ("a\tb\r\nc.pdf", "a b c.pdf"),
        ("a\x85b\u2028c.pdf", "a b c.pdf"),
        ("zero\u200bwidth\ufeff.pdf", "zerowidth.pdf"),
        ("e\u200b\u0301.pdf", "é.pdf"),  # NFC after removal: no stray combining accent
        ("bidi\u2066isolate\u2069.pdf", "bidiisolate.pdf"),
        ("tag\U000e0041.pdf", "tag.pdf"),
    ],
)
def test_nul_and_invisible_characters(name: str, safe: str) -> None:
    assert safe_filename(name) == safe


@pytest.mark.parametrize(
    ("name", "safe"),
    [
        ("...", ""),
        (".", ""),
        (". . .", ""),
        ("...pdf", "pdf"),
        ("x.pdf...", "x.pdf"),
        ("x.pdf. . ", "x.pdf"),
        ("a..b.pdf", "a..b.pdf"),
    ],
)
def test_names_of_dots(name: str, safe: str) -> None:
    assert safe_filename(name) == safe


def test_long_names_fit_a_directory_entry() -> None:
    two_byte = safe_filename("ä" * 150 + ".pdf")  # 304 bytes, 154 characters
    assert two_byte == "ä" * 125 + ".pdf"
    assert len(two_byte.encode()) == 254
    three_byte = safe_filename("€" * 100)  # 300 bytes, no extension
    assert three_byte == "€" * 85
    four_byte = safe_filename("a" + "\U0001f600" * 80 + ".pdf")  # cut inside no character
    assert four_byte == "a" + "\U0001f600" * 62 + ".pdf"
    assert len(safe_filename("b" * 300 + ".tar.gz").encode()) <= MAX_NAME_BYTES
    assert safe_filename("c" * 300 + ".tar.gz").endswith("c.gz")
    long_ext = safe_filename("d" * 300 + "." + "e" * 20)  # not an extension: plain cut
    assert long_ext == "d" * 200
    assert safe_filename("x" * 10_000 + "/y.pdf") == "y.pdf"  # the tail is what counts


@pytest.mark.parametrize(
    "name",
    [
        "=?utf-8?B?!!!?=",
        "=?x-unknown?Q?Rechnung_f=FCr_M=E4rz?=.pdf",
        "=?utf-8?Q?..=2F..=2Fetc=2Fpasswd?=",
        "=?utf-8?B?Li4vLi4vZXRjL3Bhc3N3ZA==?=",  # "../../etc/passwd", encoded
    ],
)
def test_rfc2047_leftovers_stay_inert_text(name: str) -> None:
    """Encoded words the header parser could not decode are not decoded a second time here:
    they come out as they are, and cannot turn into a path."""
    assert safe_filename(name) == name
    assert safe_filename("../" + name) == name


def test_undecodable_bytes_become_text() -> None:
    assert safe_filename(os.fsdecode(b"caf\xe9.pdf")) == "café.pdf"  # Latin-1 on disk
    assert safe_filename(os.fsdecode(b"caf\xc3\xa9.pdf")) == "café.pdf"
    assert safe_filename("\ud800x.pdf") == "\ufffdx.pdf"  # a lone surrogate
    assert fix_8bit("M\udcc3\udca4rz") == "März"  # UTF-8 bytes the mail parser escaped
    assert fix_8bit("M\udce4rz") == "März"  # cp1252


def test_fallback_only_when_nothing_is_left() -> None:
    assert safe_filename("..", fallback="document-3") == "document-3"
    assert safe_filename("", fallback="document-4") == "document-4"
    assert safe_filename("\u202e", fallback="x") == "x"
    assert safe_filename("ok.pdf", fallback="x") == "ok.pdf"


@pytest.mark.parametrize(
    ("subject", "safe"),
    [
        ("Rechnung 03/2024", "Rechnung 03_2024"),
        ("../../etc/passwd", "_.._etc_passwd"),
        ("C: the invoice", "C: the invoice"),  # a subject is text: no drive letters in it
        ("...", ""),
    ],
)
def test_keep_separators_is_for_text(subject: str, safe: str) -> None:
    assert safe_filename(subject, keep_separators=True) == safe


def test_display_keeps_the_name_but_makes_it_storable() -> None:
    raw = os.fsdecode(b"caf\xe9 ../x\n.pdf")
    assert display(raw) == "caf\\xe9 ../x\n.pdf"
    display(raw).encode("utf-8")


def test_hostile_names_always_come_out_safe() -> None:
    """Fuzz: whatever goes in, what comes out is a plain, visible, short name, and sanitising
    it again changes nothing."""
    alphabet = [
        *"/\\.:  aZ9_-~",
        "..",
        "C:",
        "\x00",
        "\n",
        "\x85",
        "\u202e",
        "\u200b",
        "\u0301",
        "\ufeff",
        "\udce4",
        "\ud800",
        "é",
        "€",
        "\U0001f600",
        ".pdf",
        "=?utf-8?B?",
        "?=",
    ]
    rng = random.Random(10)
    for _ in range(5000):
        name = "".join(rng.choice(alphabet) for _ in range(rng.choice([1, 5, 40, 150, 400])))
        for keep in (False, True):
            safe = safe_filename(name, keep_separators=keep)
            assert "/" not in safe and "\\" not in safe, repr(name)
            assert not safe.startswith((".", " ")) and not safe.endswith((".", " ")), repr(name)
            assert not INVISIBLE.search(safe), repr(name)
            assert len(safe) <= MAX_NAME_CHARS, repr(name)
            assert len(safe.encode("utf-8")) <= MAX_NAME_BYTES, repr(name)
            assert safe not in (".", ".."), repr(name)
            if not keep:  # no drive letter left
                assert not re.match("[A-Za-z]:", safe), repr(name)
            assert safe_filename(safe, keep_separators=keep) == safe, repr(name)


def test_upload_names_carry_the_type_and_our_tag():
    tag = upload_tag(17, "ab12cd34" + "0" * 56)
    assert tag == "docrelay-17-ab12cd34"
    pdf = (".pdf",)
    known = {".pdf", ".jpg", ".jpeg"}
    assert upload_name("Rechnung.pdf", pdf, known=known, tag=tag) == f"Rechnung.{tag}.pdf"
    assert upload_name("Rechnung.PDF", pdf, known=known) == "Rechnung.PDF"
    assert upload_name("scan.jpg", pdf, known=known, tag=tag) == f"scan.{tag}.pdf"  # not a JPEG
    assert upload_name("bill.2024", pdf, known=known) == "bill.2024.pdf"  # kept: not a type
    assert upload_name("photo.jpeg", (".jpg", ".jpeg"), known=known) == "photo.jpeg"
    assert upload_name("../../etc/x\u202e.pdf", pdf, tag=tag) == f"x.{tag}.pdf"
    assert upload_name("", pdf, tag=tag) == f"document.{tag}.pdf"
    assert upload_name("notes", ()) == "notes"
    found = UPLOAD_TAG.search(upload_name("a.b.pdf", pdf, known=known, tag=tag))
    assert found is not None and found.groups() == ("17", "ab12cd34")
