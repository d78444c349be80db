"""E-mails that break MIME parsers, as raw bytes, with what ``extract_parts`` must make of them.

Each case is built by hand (not by the standard library's generator, which would only produce
what its own parser likes), with CRLF line endings only and no NUL bytes, so the IMAP
integration tests can APPEND the same corpus to a real server and assert the same outcomes.
``CORPUS`` maps a case name to a builder; ``EXPECTED`` says what ``extract_parts(raw)`` returns
for it with the defaults (``take="attachments"``). The big case is built only when asked for.
"""

from __future__ import annotations

import base64
import random
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache

CRLF = b"\r\n"
BIG_ATTACHMENT_BYTES = 22_500_001
"""The decoded size of the big case's PDF: about 30 MB of base64, and not a multiple of 3, so
the encoding needs padding (which the case then leaves out)."""
MANY_PARTS = 10_000


def tiny_pdf(label: str) -> bytes:
    """A small, structurally valid one-page PDF; ``label`` makes each attachment distinct."""
    return (
        b"%PDF-1.4\n% " + label.encode() + b"\n"
        b"1 0 obj<</Type/Catalog/Pages 2 0 R>>endobj\n"
        b"2 0 obj<</Type/Pages/Kids[3 0 R]/Count 1>>endobj\n"
        b"3 0 obj<</Type/Page/Parent 2 0 R/MediaBox[0 0 200 200]>>endobj\n"
        b"trailer<</Root 1 0 R>>\n%%EOF\n"
    )


def tiny_png(rgb: tuple[int, int, int] = (200, 30, 30)) -> bytes:
    """A valid 1x1 PNG."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    header = struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)
    pixels = zlib.compress(b"\x00" + bytes(rgb))
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")
    )


TNEF_DATA = b"\x78\x9f\x3e\x22\x01\x00\x01\x06\x90\x08\x00" + b"\x01\x02\x03 rich text body" * 8
"""The start of a TNEF stream (signature, key, attribute), as Outlook's winmail.dat has it."""
XML_LATIN1 = '<?xml version="1.0" encoding="UTF-8"?><Invoice><Name>Müller</Name></Invoice>'.encode(
    "latin-1"
)
"""An XML invoice declared UTF-8 but written in Latin-1: the bytes must arrive untouched. No
line break at the end: the CRLF before a boundary belongs to the boundary, not the part."""


@cache
def big_pdf() -> bytes:
    """The big case's attachment: deterministic, 22.5 MB (about 0.1 s to make)."""
    body = random.Random(30).randbytes(BIG_ATTACHMENT_BYTES - 32)
    data = b"%PDF-1.4\n" + body + b"\n%%EOF\n"
    return data + b" " * (BIG_ATTACHMENT_BYTES - len(data))


def b64(data: bytes) -> bytes:
    """Base64 in 76-character CRLF lines, as mailers write it."""
    return base64.encodebytes(data).replace(b"\n", CRLF)


def headers(
    subject: bytes | str,
    message_id: str | None,
    *extra: bytes,
    sender: bytes = b"Acme Billing <Billing@Acme.example>",
) -> bytes:
    lines = [
        b"From: " + sender,
        b"To: AP Inbox <ap@customer.example>",
        b"Cc: controller@customer.example",
        b"Date: Tue, 05 Mar 2024 09:15:00 +0100",
        b"Subject: " + (subject.encode() if isinstance(subject, str) else subject),
    ]
    if message_id is not None:
        lines.append(b"Message-ID: <" + message_id.encode() + b">")
    lines.append(b"MIME-Version: 1.0")
    lines.extend(extra)
    return CRLF.join(lines) + CRLF


def part(*header_lines: bytes, body: bytes) -> bytes:
    return CRLF.join(header_lines) + CRLF + CRLF + body


def multipart(boundary: bytes, *parts: bytes, close: bool = True) -> bytes:
    """A multipart body: each part after a delimiter line, then the close delimiter."""
    out = b"This is a multi-part message in MIME format." + CRLF
    for p in parts:
        out += b"--" + boundary + CRLF + p + (b"" if p.endswith(CRLF) else CRLF)
    if close:
        out += b"--" + boundary + b"--" + CRLF
    return out


def mixed(
    subject: bytes | str, message_id: str | None, *parts: bytes, boundary: bytes = b"=_mix"
) -> bytes:
    top = headers(
        subject, message_id, b'Content-Type: multipart/mixed; boundary="' + boundary + b'"'
    )
    return top + CRLF + multipart(boundary, *parts)


def text_body(text: str = "Sehr geehrte Damen und Herren,\r\nanbei die Rechnung.\r\n") -> bytes:
    return part(
        b"Content-Type: text/plain; charset=utf-8",
        b"Content-Transfer-Encoding: 8bit",
        body=text.encode(),
    )


def pdf_part(data: bytes, *disposition: bytes, content_type: bytes = b"application/pdf") -> bytes:
    return part(
        b"Content-Type: " + content_type,
        b"Content-Transfer-Encoding: base64",
        *disposition,
        body=b64(data),
    )


# -- the cases --------------------------------------------------------------------------------


def plain_pdf() -> bytes:
    """The everyday case: a text body and one PDF."""
    return mixed(
        "Rechnung 2024-001",
        "plain-pdf@corpus.docrelay.test",
        text_body(),
        pdf_part(
            tiny_pdf("plain"),
            b'Content-Disposition: attachment; filename="Rechnung-2024-001.pdf"',
            content_type=b'application/pdf; name="Rechnung-2024-001.pdf"',
        ),
    )


def rfc2231_continuation() -> bytes:
    """A non-ASCII filename split over RFC 2231 continuations, as Thunderbird writes it."""
    disposition = (
        b"Content-Disposition: attachment;\r\n"
        b" filename*0*=utf-8''Rechnung%20M%C3%A4rz;\r\n"
        b" filename*1*=%202024%20%E2%80%93%20Nr.%2017.pdf"
    )
    return mixed(
        "Rechnung M=?utf-8?q?=C3=A4?=rz",
        "rfc2231@corpus.docrelay.test",
        text_body(),
        pdf_part(tiny_pdf("rfc2231"), disposition, content_type=b"application/octet-stream"),
    )


def rfc2047_filenames() -> bytes:
    """Encoded words in filenames: against RFC 2047, and what Outlook and most webmail send."""
    return mixed(
        "=?utf-8?B?R3V0c2NocmlmdCB1bmQgUmVjaG51bmc=?=",
        "rfc2047@corpus.docrelay.test",
        text_body(),
        pdf_part(
            tiny_pdf("rfc2047-b"),
            b'Content-Disposition: attachment; filename="=?utf-8?B?UmVjaG51bmcgR3LDtsOfZS5wZGY=?="',
        ),
        pdf_part(
            tiny_pdf("rfc2047-q"),
            b'Content-Disposition: attachment; filename="=?iso-8859-1?Q?Gutschrift_M=E4rz.pdf?="',
        ),
        pdf_part(  # not even quoted: the value is no token, the standard library drops it
            tiny_pdf("rfc2047-unquoted"),
            b"Content-Disposition: attachment; filename==?utf-8?Q?Lieferschein_=C3=9C.pdf?=",
        ),
    )


def missing_filename() -> bytes:
    """Attachments without any name: named from their type."""
    return mixed(
        "Scan",
        "missing-filename@corpus.docrelay.test",
        text_body(),
        pdf_part(tiny_pdf("nameless"), b"Content-Disposition: attachment"),
        part(
            b"Content-Type: image/png", b"Content-Transfer-Encoding: base64", body=b64(tiny_png())
        ),
        part(
            b"Content-Type: application/octet-stream",
            b"Content-Transfer-Encoding: base64",
            body=b64(b"\x01\x02\x03 opaque"),
        ),
    )


NESTED_DEPTH = 5


def nested_5_deep() -> bytes:
    """A PDF at the bottom of five forwarded-as-attachment messages."""
    inner = (
        headers("Ebene 5", "nested-5@corpus.docrelay.test")
        + b'Content-Type: multipart/mixed; boundary="=_n5"\r\n'
    )
    inner += CRLF + multipart(
        b"=_n5",
        text_body("ganz unten\r\n"),
        pdf_part(tiny_pdf("deep"), b'Content-Disposition: attachment; filename="tief.pdf"'),
    )
    for level in range(NESTED_DEPTH - 1, -1, -1):
        boundary = b"=_n%d" % level
        wrapped = part(
            b"Content-Type: message/rfc822",
            b'Content-Disposition: attachment; filename="weitergeleitet.eml"',
            body=inner,
        )
        if level == 0:
            return mixed(
                "Fwd: Fwd: Fwd: Fwd: Fwd: Rechnung",
                "nested-0@corpus.docrelay.test",
                text_body(),
                wrapped,
                boundary=boundary,
            )
        top = (
            headers(f"Ebene {level}", f"nested-{level}@corpus.docrelay.test")
            + b'Content-Type: multipart/mixed; boundary="'
            + boundary
            + b'"\r\n'
        )
        inner = top + CRLF + multipart(boundary, text_body(f"Ebene {level}\r\n"), wrapped)
    raise AssertionError("unreachable")


def winmail_dat() -> bytes:
    """Outlook's rich text format: the documents are inside winmail.dat, out of reach."""
    return mixed(
        "Rechnung (RTF)",
        "winmail@corpus.docrelay.test",
        text_body(),
        part(
            b'Content-Type: application/ms-tnef; name="winmail.dat"',
            b"Content-Transfer-Encoding: base64",
            b'Content-Disposition: attachment; filename="winmail.dat"',
            body=b64(TNEF_DATA),
        ),
    )


def wrong_charset() -> bytes:
    """Unknown charsets, Latin-1 bytes declared UTF-8, raw 8-bit Latin-1 in a filename."""
    return mixed(
        "=?x-unknown?Q?Rechnung_f=FCr_M=E4rz?=",
        "wrong-charset@corpus.docrelay.test",
        part(
            b'Content-Type: text/plain; charset="x-unknown"',
            b"Content-Transfer-Encoding: 8bit",
            body="Grüße\r\n".encode("latin-1"),
        ),
        part(
            b'Content-Type: text/xml; charset=utf-8; name="Rechnung.xml"',
            b"Content-Transfer-Encoding: 8bit",
            b'Content-Disposition: attachment; filename="Rechnung.xml"',
            body=XML_LATIN1,
        ),
        pdf_part(
            tiny_pdf("latin1-name"),
            b'Content-Disposition: attachment; filename="'
            + "Übersicht.pdf".encode("latin-1")
            + b'"',
        ),
    )


def many_parts() -> bytes:
    """10,000 parts: a PDF first and last, 9,998 one-line text parts between."""
    filler = [
        part(b"Content-Type: text/plain; charset=us-ascii", body=b"Zeile %d" % i)
        for i in range(MANY_PARTS - 2)
    ]
    return mixed(
        "10000 Teile",
        "many-parts@corpus.docrelay.test",
        pdf_part(tiny_pdf("first"), b'Content-Disposition: attachment; filename="erste.pdf"'),
        *filler,
        pdf_part(tiny_pdf("last"), b'Content-Disposition: attachment; filename="letzte.pdf"'),
    )


def big_base64() -> bytes:
    """About 30 MB: a 22.5 MB PDF in base64 whose final padding was lost."""
    encoded = b64(big_pdf()).rstrip(b"=\r\n") + CRLF
    assert len(big_pdf()) % 3 and not encoded.rstrip().endswith(b"=")
    return mixed(
        "Großer Scan",
        "big-base64@corpus.docrelay.test",
        text_body(),
        part(
            b'Content-Type: application/pdf; name="scan.pdf"',
            b"Content-Transfer-Encoding: base64",
            b'Content-Disposition: attachment; filename="scan.pdf"',
            body=encoded,
        ),
    )


def inline_logo() -> bytes:
    """An HTML mail with a signature logo and a banner (both inline) and the real invoice."""
    html = part(
        b"Content-Type: text/html; charset=utf-8",
        b"Content-Transfer-Encoding: quoted-printable",
        body=(
            b'<html><body><img src=3D"cid:banner.png@01DA6F" alt=3D"Acme">\r\n'
            b"<p>Anbei die Rechnung=\r\n"
            b'.</p><img src=3D"cid:logo@acme.example"></body></html>\r\n'
        ),
    )
    alternative = part(
        b'Content-Type: multipart/alternative; boundary="=_alt"',
        body=multipart(b"=_alt", text_body("Anbei die Rechnung.\r\n"), html),
    )
    logo = part(
        b'Content-Type: image/png; name="logo.png"',
        b"Content-Transfer-Encoding: base64",
        b'Content-Disposition: inline; filename="logo.png"',
        b"Content-ID: <logo@acme.example>",
        body=b64(tiny_png((0, 0, 200))),
    )
    banner = part(  # no disposition at all: inline only because the HTML refers to it
        b"Content-Type: image/png",
        b"Content-Transfer-Encoding: base64",
        b"Content-ID: <banner.png@01DA6F>",
        body=b64(tiny_png((0, 200, 0))),
    )
    related = part(
        b'Content-Type: multipart/related; boundary="=_rel"; type="multipart/alternative"',
        body=multipart(b"=_rel", alternative, logo, banner),
    )
    return mixed(
        "Ihre Rechnung",
        "inline-logo@corpus.docrelay.test",
        related,
        pdf_part(
            tiny_pdf("inline-case"), b'Content-Disposition: attachment; filename="Rechnung.pdf"'
        ),
    )


def path_traversal() -> bytes:
    """Filenames that are paths, dots, or carry NUL, newline and a right-to-left override."""
    names = [
        b'filename="../../etc/passwd"',
        b'filename="C:\\\\Windows\\\\evil.pdf"',  # a quoted-string: "\\" is one backslash
        b'filename="/abs/x.pdf"',
        b'filename=".."',
        b"filename*=utf-8''a%00b%0Ac.pdf",
        b"filename*=utf-8''Rechnung%E2%80%AEfdp.exe",
    ]
    types = [
        b"application/octet-stream",
        b"application/pdf",
        b"application/pdf",
        b"application/pdf",
        b"application/pdf",
        b"application/octet-stream",
    ]
    return mixed(
        "Dateinamen",
        "path-traversal@corpus.docrelay.test",
        text_body(),
        *(
            pdf_part(
                tiny_pdf(f"traversal-{i}"),
                b"Content-Disposition: attachment; " + name,
                content_type=ctype,
            )
            for i, (name, ctype) in enumerate(zip(names, types, strict=True))
        ),
    )


def no_message_id() -> bytes:
    """No Message-ID: de-duplicated by the hash of its bytes."""
    return mixed(
        "Rechnung ohne ID",
        None,
        text_body(),
        pdf_part(tiny_pdf("no-id"), b'Content-Disposition: attachment; filename="ohne-id.pdf"'),
    )


def no_attachments() -> bytes:
    """Text and HTML, nothing to take."""
    top = headers(
        "Nur Text",
        "no-attachments@corpus.docrelay.test",
        b'Content-Type: multipart/alternative; boundary="=_a"',
    )
    html = part(b"Content-Type: text/html; charset=utf-8", body=b"<p>Nur Text</p>")
    return top + CRLF + multipart(b"=_a", text_body("Nur Text\r\n"), html)


def missing_boundary() -> bytes:
    """Declared multipart without a boundary: the parts cannot be told apart."""
    top = headers(
        "Kaputt", "missing-boundary@corpus.docrelay.test", b"Content-Type: multipart/mixed"
    )
    return (
        top
        + CRLF
        + multipart(
            b"lost",
            text_body(),
            pdf_part(tiny_pdf("lost"), b"Content-Disposition: attachment; filename=x.pdf"),
        )
    )


def broken_headers() -> bytes:
    """Headers the standard library's parser chokes on or misreads; a PDF in sloppy base64."""
    sloppy = b64(tiny_pdf("sloppy")).replace(CRLF, b" \r\n\t").rstrip(b"=\r\n\t ") + b"!!\r\n"
    top = CRLF.join(
        [
            b'From: "Acme Billing" Billing@Acme.example',  # no angle brackets
            b"To: ap@customer.example, broken, <controller@customer.example",
            b"Date: Tue, 32 Foo 2024 99:99 +9999",
            b"Subject: =?utf-8?B?!!!?= Rechnung",
            b"Message-ID:   <broken headers@corpus.docrelay.test> (comment)",
            b"MIME-Version: 1.0",
            b"Content-Type: multipart/mixed; boundary=XYZ",
        ]
    )
    attachment = part(
        b"Content-Type: application/pdf",
        b"Content-Transfer-Encoding: base64",
        b"Content-Disposition: attachment; filename=sloppy.pdf",
        body=sloppy,
    )
    return top + CRLF + CRLF + multipart(b"XYZ", attachment)


def signed_smime() -> bytes:
    """S/MIME signed: the content is taken, the signature is not."""
    inner = part(
        b'Content-Type: multipart/mixed; boundary="=_in"',
        body=multipart(
            b"=_in",
            text_body(),
            pdf_part(
                tiny_pdf("signed"), b'Content-Disposition: attachment; filename="signiert.pdf"'
            ),
        ),
    )
    signature = part(
        b'Content-Type: application/pkcs7-signature; name="smime.p7s"',
        b"Content-Transfer-Encoding: base64",
        b'Content-Disposition: attachment; filename="smime.p7s"',
        body=b64(b"0\x82\x01\x00 not really DER"),
    )
    top = headers(
        "Signiert",
        "signed@corpus.docrelay.test",
        b'Content-Type: multipart/signed; protocol="application/pkcs7-signature";\r\n'
        b' micalg=sha-256; boundary="=_sig"',
    )
    return top + CRLF + multipart(b"=_sig", inner, signature)


def base64_rfc822() -> bytes:
    """An attached message in base64, which RFC 2046 forbids and some gateways do anyway."""
    attached = headers(
        "Original",
        "base64-inner@corpus.docrelay.test",
        b'Content-Type: multipart/mixed; boundary="=_b"',
    )
    attached += CRLF + multipart(
        b"=_b",
        text_body(),
        pdf_part(tiny_pdf("b64-rfc822"), b'Content-Disposition: attachment; filename="innen.pdf"'),
    )
    return mixed(
        "Fwd: Original",
        "base64-rfc822@corpus.docrelay.test",
        text_body(),
        part(
            b"Content-Type: message/rfc822",
            b"Content-Transfer-Encoding: base64",
            b'Content-Disposition: attachment; filename="Original.eml"',
            body=b64(attached),
        ),
    )


# -- what the parser must make of them ---------------------------------------------------------


@dataclass(frozen=True)
class Expected:
    """What ``extract_parts(raw)`` returns for a case with its defaults."""

    filenames: tuple[str, ...]
    """The display names of the parts taken, in order: their number is the number of parts."""
    mime_types: tuple[str, ...]
    payloads: Callable[[], tuple[bytes, ...]]
    """The exact bytes attached, in order (a function: the big case's are big)."""
    message_id: str | None
    subject: str
    unsupported: tuple[bool, ...] = ()
    """Per part, whether ``unsupported`` is set; () means none is."""
    nested: tuple[int, ...] = ()
    """Per part, its message/rfc822 depth; () means all are 0."""
    notes: tuple[str, ...] = ()
    """Text each found in some note."""
    same_as: str | None = None
    """The case this one is a byte-for-byte duplicate of."""

    @property
    def parts(self) -> int:
        return len(self.filenames)


def _pdfs(*labels: str) -> Callable[[], tuple[bytes, ...]]:
    return lambda: tuple(tiny_pdf(label) for label in labels)


SENT = datetime(2024, 3, 5, 8, 15, tzinfo=UTC)
PDF = "application/pdf"

CORPUS: dict[str, Callable[[], bytes]] = {
    "plain_pdf": plain_pdf,
    "rfc2231_continuation": rfc2231_continuation,
    "rfc2047_filenames": rfc2047_filenames,
    "missing_filename": missing_filename,
    "nested_5_deep": nested_5_deep,
    "winmail_dat": winmail_dat,
    "wrong_charset": wrong_charset,
    "many_parts": many_parts,
    "big_base64": big_base64,
    "inline_logo": inline_logo,
    "path_traversal": path_traversal,
    "no_message_id": no_message_id,
    "no_attachments": no_attachments,
    "duplicate": plain_pdf,
    "missing_boundary": missing_boundary,
    "broken_headers": broken_headers,
    "signed_smime": signed_smime,
    "base64_rfc822": base64_rfc822,
}

EXPECTED: dict[str, Expected] = {
    "plain_pdf": Expected(
        ("Rechnung-2024-001.pdf",),
        (PDF,),
        _pdfs("plain"),
        "plain-pdf@corpus.docrelay.test",
        "Rechnung 2024-001",
    ),
    "rfc2231_continuation": Expected(
        ("Rechnung März 2024 – Nr. 17.pdf",),
        (PDF,),
        _pdfs("rfc2231"),
        "rfc2231@corpus.docrelay.test",
        "Rechnung März",
    ),
    "rfc2047_filenames": Expected(
        ("Rechnung Größe.pdf", "Gutschrift März.pdf", "Lieferschein Ü.pdf"),
        (PDF, PDF, PDF),
        _pdfs("rfc2047-b", "rfc2047-q", "rfc2047-unquoted"),
        "rfc2047@corpus.docrelay.test",
        "Gutschrift und Rechnung",
    ),
    "missing_filename": Expected(
        ("attachment-1.pdf", "attachment-2.png", "attachment-3.bin"),
        (PDF, "image/png", "application/octet-stream"),
        lambda: (tiny_pdf("nameless"), tiny_png(), b"\x01\x02\x03 opaque"),
        "missing-filename@corpus.docrelay.test",
        "Scan",
    ),
    "nested_5_deep": Expected(
        ("tief.pdf",),
        (PDF,),
        _pdfs("deep"),
        "nested-0@corpus.docrelay.test",
        "Fwd: Fwd: Fwd: Fwd: Fwd: Rechnung",
        nested=(NESTED_DEPTH,),
    ),
    "winmail_dat": Expected(
        ("winmail.dat",),
        ("application/ms-tnef",),
        lambda: (TNEF_DATA,),
        "winmail@corpus.docrelay.test",
        "Rechnung (RTF)",
        unsupported=(True,),
    ),
    "wrong_charset": Expected(
        ("Rechnung.xml", "Übersicht.pdf"),
        ("text/xml", PDF),
        lambda: (XML_LATIN1, tiny_pdf("latin1-name")),
        "wrong-charset@corpus.docrelay.test",
        "Rechnung f\ufffdr M\ufffdrz",
    ),
    "many_parts": Expected(
        ("erste.pdf",),
        (PDF,),
        _pdfs("first"),
        "many-parts@corpus.docrelay.test",
        "10000 Teile",
        notes=("part limit of 1000 reached: 9000 parts not examined",),
    ),
    "big_base64": Expected(
        ("scan.pdf",),
        (PDF,),
        lambda: (big_pdf(),),
        "big-base64@corpus.docrelay.test",
        "Großer Scan",
    ),
    "inline_logo": Expected(
        ("Rechnung.pdf",),
        (PDF,),
        _pdfs("inline-case"),
        "inline-logo@corpus.docrelay.test",
        "Ihre Rechnung",
        notes=("inline image logo.png skipped", "inline image (image/png) skipped"),
    ),
    "path_traversal": Expected(
        ("passwd", "evil.pdf", "x.pdf", "attachment-4.pdf", "ab c.pdf", "Rechnungfdp.exe"),
        ("application/octet-stream", PDF, PDF, PDF, PDF, "application/octet-stream"),
        _pdfs(*(f"traversal-{i}" for i in range(6))),
        "path-traversal@corpus.docrelay.test",
        "Dateinamen",
    ),
    "no_message_id": Expected(
        ("ohne-id.pdf",),
        (PDF,),
        _pdfs("no-id"),
        None,
        "Rechnung ohne ID",
    ),
    "no_attachments": Expected(
        (),
        (),
        lambda: (),
        "no-attachments@corpus.docrelay.test",
        "Nur Text",
    ),
    "duplicate": Expected(
        ("Rechnung-2024-001.pdf",),
        (PDF,),
        _pdfs("plain"),
        "plain-pdf@corpus.docrelay.test",
        "Rechnung 2024-001",
        same_as="plain_pdf",
    ),
    "missing_boundary": Expected(
        ("attachment-1",),
        ("multipart/mixed",),
        lambda: (
            multipart(
                b"lost",
                text_body(),
                pdf_part(tiny_pdf("lost"), b"Content-Disposition: attachment; filename=x.pdf"),
            ),
        ),
        "missing-boundary@corpus.docrelay.test",
        "Kaputt",
        unsupported=(True,),
    ),
    "broken_headers": Expected(
        ("sloppy.pdf",),
        (PDF,),
        _pdfs("sloppy"),
        "brokenheaders@corpus.docrelay.test",
        "Rechnung",  # the stdlib drops an undecodable encoded word
    ),
    "signed_smime": Expected(
        ("signiert.pdf",),
        (PDF,),
        _pdfs("signed"),
        "signed@corpus.docrelay.test",
        "Signiert",
        notes=("signature part smime.p7s skipped",),
    ),
    "base64_rfc822": Expected(
        ("innen.pdf",),
        (PDF,),
        _pdfs("b64-rfc822"),
        "base64-rfc822@corpus.docrelay.test",
        "Fwd: Original",
        nested=(1,),
    ),
}
