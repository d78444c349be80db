"""Which parts of an e-mail are taken: the MIME corpus, header tolerance, take modes, limits."""

from __future__ import annotations

import base64
import binascii
import hashlib
import random
import time
import tracemalloc
from datetime import UTC, datetime, timedelta, timezone

import pytest

from connectors.sources.mailparts import (
    MailInfo,
    MailPart,
    decode_base64,
    extract_parts,
    message_info,
    message_key,
)
from tests import mime_corpus
from tests.mime_corpus import (
    CORPUS,
    CRLF,
    EXPECTED,
    SENT,
    b64,
    big_pdf,
    headers,
    mixed,
    part,
    pdf_part,
    text_body,
    tiny_pdf,
    tiny_png,
)

SMALL_CASES = [name for name in CORPUS if name != "big_base64"]


def assert_safe(name: str) -> None:
    assert name
    assert len(name) <= 200
    assert "/" not in name and "\\" not in name
    assert not name.startswith(".")
    assert not any(ord(ch) < 0x20 or 0x7F <= ord(ch) < 0xA0 for ch in name)


def check_case(name: str, raw: bytes) -> tuple[MailInfo, list[MailPart], list[str]]:
    expected = EXPECTED[name]
    info, parts, notes = extract_parts(raw)
    assert [p.filename for p in parts] == list(expected.filenames)
    assert [p.mime_type for p in parts] == list(expected.mime_types)
    assert [p.index for p in parts] == list(range(1, expected.parts + 1))
    payloads = expected.payloads()
    assert len(payloads) == expected.parts
    for got, want in zip(parts, payloads, strict=True):
        assert got.data == want, got.filename
    assert [p.unsupported is not None for p in parts] == list(
        expected.unsupported or (False,) * expected.parts
    )
    assert [p.nested for p in parts] == list(expected.nested or (0,) * expected.parts)
    for text in expected.notes:
        assert any(text in note for note in notes), (text, notes)
    assert info.message_id == expected.message_id
    assert info.subject == expected.subject
    for p in parts:
        assert_safe(p.filename)
    return info, parts, notes


# -- the corpus -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", SMALL_CASES)
def test_corpus_case(name: str) -> None:
    raw = CORPUS[name]()
    assert b"\x00" not in raw  # IMAP cannot APPEND NUL bytes
    assert raw.count(b"\n") == raw.count(b"\r\n") == raw.count(b"\r")  # nothing to normalise
    assert raw == CORPUS[name](), "builders must be deterministic"
    info, parts, notes = check_case(name, raw)
    # Same bytes, same answer: the index and the generated names are stable.
    assert extract_parts(raw) == (info, parts, notes)


def test_every_case_has_an_expectation() -> None:
    assert set(CORPUS) == set(EXPECTED)
    ids = [EXPECTED[name].message_id for name in CORPUS if EXPECTED[name].same_as is None]
    assert len([i for i in ids if i]) == len({i for i in ids if i}), "Message-IDs must be unique"


def test_r13_big_base64_with_bad_padding_in_time_and_memory() -> None:
    raw = CORPUS["big_base64"]()
    assert len(raw) > 30_000_000
    started = time.perf_counter()
    check_case("big_base64", raw)
    elapsed = time.perf_counter() - started
    assert elapsed < 10, f"{elapsed:.2f} s for a 30 MB message"  # measured ~0.9 s

    tracemalloc.start()
    try:
        _, parts, _ = extract_parts(raw)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert parts[0].data == big_pdf()
    # Beyond the raw bytes the caller holds; measured 2.74x, nearly all of it the stdlib
    # parser's line list. message_from_bytes plus get_payload(decode=True) peak at ~7.7x.
    assert peak < 3.25 * len(raw), f"peak {peak / len(raw):.2f}x the message size"


def test_many_parts_only_max_parts_examined_quickly() -> None:
    raw = CORPUS["many_parts"]()
    started = time.perf_counter()
    _, parts, notes = extract_parts(raw)
    elapsed = time.perf_counter() - started
    assert elapsed < 0.5, f"{elapsed:.2f} s"  # measured ~0.05 s
    assert [p.filename for p in parts] == ["erste.pdf"]
    assert notes == ["part limit of 1000 reached: 9000 parts not examined"]

    _, parts, notes = extract_parts(raw, max_parts=10_000)
    assert [p.filename for p in parts] == ["erste.pdf", "letzte.pdf"]
    assert parts[1].data == tiny_pdf("last")
    assert notes == []

    _, parts, notes = extract_parts(raw, max_parts=0)
    assert parts == []
    assert notes == ["part limit of 0 reached: 10000 parts not examined"]


def test_nesting_depth_limit() -> None:
    raw = CORPUS["nested_5_deep"]()
    _, parts, notes = extract_parts(raw, max_depth=5)
    assert [(p.filename, p.nested) for p in parts] == [("tief.pdf", 5)]
    assert notes == []
    _, parts, notes = extract_parts(raw, max_depth=4)
    assert parts == []
    assert notes == ["nested message/rfc822 deeper than 4 levels not followed"]


def test_nesting_deeper_than_the_stdlib_parser_can_go() -> None:
    inner = b"Content-Type: application/pdf; name=x.pdf\r\n\r\n%PDF-1.4\r\n"
    for level in range(2000):
        inner = b"Subject: level %d\r\nContent-Type: message/rfc822\r\n\r\n" % level + inner
    info, parts, notes = extract_parts(inner, max_depth=5000, max_parts=5000)
    assert info.subject == "level 1999"
    assert parts == []
    assert len(notes) == 1 and "could not be parsed to the end (RecursionError" in notes[0]


def test_duplicates_and_message_keys() -> None:
    plain, duplicate = CORPUS["plain_pdf"](), CORPUS["duplicate"]()
    assert plain == duplicate
    assert EXPECTED["duplicate"].same_as == "plain_pdf"
    key = message_key(message_info(plain), plain)
    assert key == "plain-pdf@corpus.docrelay.test"
    assert message_key(message_info(duplicate), duplicate) == key

    raw = CORPUS["no_message_id"]()
    info = message_info(raw)
    assert info.message_id is None
    assert message_key(info, raw) == "sha256:" + hashlib.sha256(raw).hexdigest()
    keys = {message_key(message_info(CORPUS[name]()), CORPUS[name]()) for name in SMALL_CASES}
    assert len(keys) == len(SMALL_CASES) - 1  # only the duplicate shares a key


# -- headers ----------------------------------------------------------------------------------


def test_message_info_everyday() -> None:
    raw = CORPUS["plain_pdf"]()
    info = message_info(raw)
    assert info == MailInfo(
        message_id="plain-pdf@corpus.docrelay.test",
        sender="billing@acme.example",
        recipients=["ap@customer.example", "controller@customer.example"],
        subject="Rechnung 2024-001",
        date=SENT,
    )
    assert info.date is not None and info.date.utcoffset() == timedelta(hours=1)
    assert extract_parts(raw)[0] == info


def test_message_info_broken_headers() -> None:
    info = message_info(CORPUS["broken_headers"]())
    assert info.message_id == "brokenheaders@corpus.docrelay.test"
    assert info.sender == "billing@acme.example"  # the stdlib reads '"acme billing billing"@...'
    assert info.recipients == ["ap@customer.example", "controller@customer.example"]
    assert info.subject == "Rechnung"
    assert info.date is None


@pytest.mark.parametrize(
    ("header", "field", "value"),
    [
        (b"From: a@", "sender", None),  # IndexError inside the stdlib's address parser
        (b"From: <>", "sender", None),
        (b"From: Foo <Foo@Example.COM>", "sender", "foo@example.com"),
        (b"From: (comment) a@b.example (x)", "sender", "a@b.example"),
        (b"From: M\xfcller <m@x.example>", "sender", "m@x.example"),
        (b"From: undisclosed-recipients:;", "sender", None),
        (b"Message-ID: <", "message_id", None),  # IndexError inside the stdlib
        (b"Message-ID: <>", "message_id", None),
        (b"Message-ID:    ", "message_id", None),
        (b"Message-ID: <a\r\n b@c>", "message_id", "ab@c"),
        (b"Message-ID: bare@id", "message_id", "bare@id"),
        (b"Subject: =?utf-8?Q?a=0D=0Ab=00c?=", "subject", "a b c"),
        (b"Subject: Gr\xc3\xbc\xc3\x9fe", "subject", "Grüße"),  # raw UTF-8
        (b"Subject: Gr\xfc\xdfe", "subject", "Grüße"),  # raw Latin-1
        (b"Subject: =?x-unknown?Q?Caf=E9?=", "subject", "Caf\ufffd"),
        (b"Subject: =?utf-8?B?!!!?=", "subject", "=?utf-8?B?!!!?="),
        (
            b"Subject: =?utf-8?B?UmVjaG51bmc=?=\r\n =?utf-8?Q?_M=C3=A4rz?=",
            "subject",
            "Rechnung März",
        ),
        (
            b"Date: Tue, 1 Jul 2003 10:52:37 -0000",
            "date",
            datetime(2003, 7, 1, 10, 52, 37, tzinfo=UTC),
        ),
        (b"Date: 1 Jul 2003 10:52:37 GMT", "date", datetime(2003, 7, 1, 10, 52, 37, tzinfo=UTC)),
        (
            b"Date: Tue, 1 Jul 2003 10:52:37 +0530",
            "date",
            datetime(2003, 7, 1, 10, 52, 37, tzinfo=timezone(timedelta(hours=5, minutes=30))),
        ),
        (b"Date: Tue, 1 Jul 2003 10:52:37 +9999", "date", None),
        (b"Date: Tue, 1 Jul 99999 10:52:37 +0000", "date", None),
        (b"Date: yesterday", "date", None),
    ],
)
def test_header_tolerance(header: bytes, field: str, value: object) -> None:
    info = message_info(header + b"\r\n\r\nbody\r\n")
    assert getattr(info, field) == value


def test_recipients_collected_lower_case_once() -> None:
    raw = (
        b"To: A <A@x.example>, b@x.example\r\n"
        b"To: c@x.example\r\n"
        b"Cc: group: d@x.example, a@x.example;\r\n"
        b"Delivered-To: Invoices+Acme@Customer.example\r\n"
        b"Delivered-To: a@x.example\r\n\r\n"
    )
    assert message_info(raw).recipients == [
        "a@x.example",
        "b@x.example",
        "c@x.example",
        "d@x.example",
        "invoices+acme@customer.example",
    ]


def test_missing_headers() -> None:
    assert message_info(b"\r\njust a body\r\n") == MailInfo(None, None, [], "", None)
    assert message_info(b"") == MailInfo(None, None, [], "", None)


# -- take modes and filters ---------------------------------------------------------------------


def test_take_message() -> None:
    raw = CORPUS["many_parts"]()
    started = time.perf_counter()
    info, parts, notes = extract_parts(raw, take="message")
    assert time.perf_counter() - started < 0.1  # headers only
    assert parts == [MailPart(1, "10000 Teile.eml", "message/rfc822", raw)]
    assert parts[0].data is raw
    assert notes == []
    assert info == message_info(raw)


def test_take_both_puts_the_message_first() -> None:
    raw = CORPUS["missing_filename"]()
    _, parts, _ = extract_parts(raw, take="both")
    assert [(p.index, p.filename, p.mime_type) for p in parts] == [
        (1, "Scan.eml", "message/rfc822"),
        (2, "attachment-2.pdf", "application/pdf"),
        (3, "attachment-3.png", "image/png"),
        (4, "attachment-4.bin", "application/octet-stream"),
    ]
    assert parts[0].data == raw
    assert parts[2].data == tiny_png()


@pytest.mark.parametrize(
    ("subject", "filename"),
    [
        (b"Rechnung 03/2024", "Rechnung 03_2024.eml"),
        (b"../../etc/passwd", "_.._etc_passwd.eml"),
        (b"...", "message.eml"),
        (b"=?utf-8?B?UmVjaG51bmcgTcOkcno=?=", "Rechnung März.eml"),
        (b"x" * 500, "x" * 196 + ".eml"),
    ],
)
def test_message_part_name_from_subject(subject: bytes, filename: str) -> None:
    raw = b"Subject: " + subject + b"\r\n\r\nbody\r\n"
    _, parts, _ = extract_parts(raw, take="message")
    assert parts[0].filename == filename


def test_message_part_without_subject() -> None:
    _, parts, _ = extract_parts(b"From: a@b.example\r\n\r\nbody\r\n", take="both")
    assert [p.filename for p in parts] == ["message.eml"]


def test_filters_apply_to_attachments_only() -> None:
    raw = CORPUS["path_traversal"]()
    _, parts, notes = extract_parts(raw, filename_patterns=["*.PDF"])
    assert [p.filename for p in parts] == ["evil.pdf", "x.pdf", "attachment-3.pdf", "ab c.pdf"]
    assert "attachment passwd skipped: not matched by filename_patterns" in notes

    _, parts, _ = extract_parts(raw, take="both", mime_types=["application/octet-stream"])
    assert [p.filename for p in parts] == ["Dateinamen.eml", "passwd", "Rechnungfdp.exe"]

    # Both filters must match.
    _, parts, _ = extract_parts(raw, filename_patterns=["*.pdf", "passwd"], mime_types=["*/pdf"])
    assert [p.filename for p in parts] == ["evil.pdf", "x.pdf", "attachment-3.pdf", "ab c.pdf"]

    # A nameless part is matched by its generated name's extension.
    _, parts, _ = extract_parts(CORPUS["missing_filename"](), filename_patterns=["*.png"])
    assert [p.filename for p in parts] == ["attachment-1.png"]
    _, parts, notes = extract_parts(CORPUS["missing_filename"](), mime_types=["image/*"])
    assert [p.mime_type for p in parts] == ["image/png"]
    assert any("application/pdf not matched by mime_types" in note for note in notes)


def test_filters_do_not_hide_containers_that_cannot_be_opened() -> None:
    _, parts, _ = extract_parts(CORPUS["winmail_dat"](), mime_types=["application/pdf"])
    assert [(p.filename, p.unsupported) for p in parts] == [
        ("winmail.dat", "winmail.dat (TNEF, Outlook rich text) is not supported")
    ]


def test_include_inline() -> None:
    raw = CORPUS["inline_logo"]()
    _, parts, notes = extract_parts(raw, include_inline=True)
    assert [(p.filename, p.mime_type) for p in parts] == [
        ("logo.png", "image/png"),
        ("attachment-2.png", "image/png"),
        ("Rechnung.pdf", "application/pdf"),
    ]
    assert [p.data for p in parts] == [
        tiny_png((0, 0, 200)),
        tiny_png((0, 200, 0)),
        tiny_pdf("inline-case"),
    ]
    assert notes == []
    _, parts, _ = extract_parts(raw, include_inline=True, mime_types=["application/pdf"])
    assert [p.filename for p in parts] == ["Rechnung.pdf"]


def test_image_with_content_id_that_no_html_refers_to_is_an_attachment() -> None:
    html = part(b"Content-Type: text/html", body=b'<img src="cid:other@x">')
    photo = part(
        b"Content-Type: image/jpeg",
        b"Content-Transfer-Encoding: base64",
        b"Content-ID: <photo@x>",
        body=b64(b"\xff\xd8\xff photo"),
    )
    _, parts, _ = extract_parts(mixed("Foto", "photo@x", html, photo))
    assert [(p.filename, p.data) for p in parts] == [("attachment-1.jpg", b"\xff\xd8\xff photo")]


# -- odd structures and payloads ----------------------------------------------------------------


def test_unsupported_reasons() -> None:
    _, parts, _ = extract_parts(CORPUS["winmail_dat"]())
    assert parts[0].unsupported == "winmail.dat (TNEF, Outlook rich text) is not supported"
    assert parts[0].data == mime_corpus.TNEF_DATA

    _, parts, _ = extract_parts(CORPUS["missing_boundary"]())
    assert parts[0].unsupported == (
        "multipart/mixed without a usable boundary: its parts cannot be separated"
    )


def test_tnef_recognised_by_its_signature_alone() -> None:
    raw = mixed(
        "x",
        "tnef-sig@x",
        part(
            b"Content-Type: application/octet-stream",
            b"Content-Transfer-Encoding: base64",
            body=b64(mime_corpus.TNEF_DATA),
        ),
    )
    _, parts, _ = extract_parts(raw)
    assert [(p.filename, p.mime_type) for p in parts] == [
        ("attachment-1.dat", "application/ms-tnef")
    ]
    assert parts[0].unsupported is not None and "TNEF" in parts[0].unsupported


def test_smime_and_pgp_encrypted() -> None:
    smime = mixed(
        "x",
        "smime@x",
        part(
            b'Content-Type: application/pkcs7-mime; smime-type=enveloped-data; name="smime.p7m"',
            b"Content-Transfer-Encoding: base64",
            b'Content-Disposition: attachment; filename="smime.p7m"',
            body=b64(b"0\x80 enveloped"),
        ),
    )
    _, parts, _ = extract_parts(smime)
    assert parts[0].unsupported == "smime.p7m (S/MIME encrypted or signed message) is not supported"
    assert parts[0].data == b"0\x80 enveloped"

    top = headers("x", "pgp@x", b'Content-Type: multipart/encrypted; boundary="P"')
    pgp = (
        top
        + CRLF
        + mime_corpus.multipart(
            b"P",
            part(b"Content-Type: application/pgp-encrypted", body=b"Version: 1\r\n"),
            part(
                b'Content-Type: application/octet-stream; name="encrypted.asc"',
                body=b"-----BEGIN PGP MESSAGE-----\r\nabc\r\n-----END PGP MESSAGE-----\r\n",
            ),
        )
    )
    _, parts, _ = extract_parts(pgp)
    assert [(p.filename, p.unsupported) for p in parts] == [
        ("encrypted.asc", "PGP/MIME encrypted message is not supported")
    ]


@pytest.mark.parametrize(
    ("cte", "body", "data", "unsupported"),
    [
        (b"base64", b"JVBERi0xLjQ=\r\n", b"%PDF-1.4", None),
        (b"BASE64 ", b"JVBE Ri0x\r\nLjQ\r\n", b"%PDF-1.4", None),  # spacing, no padding
        (b"base64", b"!!!!\r\n", b"!!!!", "base64 payload cannot be decoded"),
        (b"quoted-printable", b"a=3Db=\r\nc\r\n", b"a=bc", None),  # the last CRLF is the boundary's
        (b"8bit", b"caf\xe9\r\nx\r\n", b"caf\xe9\r\nx", None),
        (b"x-gzip64", b"H4sI\r\n", b"H4sI", "unknown Content-Transfer-Encoding 'x-gzip64'"),
    ],
)
def test_transfer_encodings(cte: bytes, body: bytes, data: bytes, unsupported: str | None) -> None:
    raw = mixed(
        "x",
        "cte@x",
        part(
            b"Content-Type: application/octet-stream",
            b"Content-Transfer-Encoding: " + cte,
            b"Content-Disposition: attachment; filename=f.bin",
            body=body,
        ),
    )
    _, parts, _ = extract_parts(raw)
    assert [(p.data, p.unsupported) for p in parts] == [(data, unsupported)]


def test_truncated_message_is_noted() -> None:
    raw = CORPUS["plain_pdf"]()
    cut = raw[: raw.rindex(b"--=_mix--")]
    _, parts, notes = extract_parts(cut)
    assert [p.data for p in parts] == [tiny_pdf("plain")]
    assert notes == ["multipart/mixed has no closing boundary: the message may be truncated"]


def test_single_part_message_that_is_the_document() -> None:
    raw = (
        headers("Scan", "single@x", b"Content-Type: application/pdf")
        + b"Content-Transfer-Encoding: base64\r\n\r\n"
    )
    raw += b64(tiny_pdf("single"))
    _, parts, _ = extract_parts(raw)
    assert [(p.filename, p.data) for p in parts] == [("attachment-1.pdf", tiny_pdf("single"))]


def test_attached_eml_as_octet_stream_is_opened() -> None:
    inner = mixed(
        "Innen",
        "inner@x",
        pdf_part(tiny_pdf("eml"), b"Content-Disposition: attachment; filename=a.pdf"),
    )
    raw = mixed(
        "Fwd",
        "outer@x",
        text_body(),
        part(
            b"Content-Type: application/octet-stream",
            b"Content-Transfer-Encoding: base64",
            b'Content-Disposition: attachment; filename="Weitergeleitet.eml"',
            body=b64(inner),
        ),
    )
    _, parts, _ = extract_parts(raw)
    assert [(p.filename, p.nested, p.data) for p in parts] == [("a.pdf", 1, tiny_pdf("eml"))]


def test_signature_parts_are_skipped() -> None:
    _, parts, notes = extract_parts(CORPUS["signed_smime"]())
    assert [p.filename for p in parts] == ["signiert.pdf"]
    assert notes == ["signature part smime.p7s skipped"]


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"\r\n",
        b"garbage without headers",
        bytes(range(256)) * 8,
        b"Content-Type: multipart/mixed; boundary=\r\n\r\n--\r\n--\r\n",
        b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n--b\r\n--b--\r\n",
        b"Content-Type: message/rfc822\r\n\r\n",
        b"Content-Type: text/plain; charset=x-unknown\r\n\r\n\xff\xfe",
        b"Content-Disposition: attachment; filename*=x-unknown''%FF%FE\r\n\r\nx",
        b"Content-Disposition: attachment; filename*0*=utf-8''a; filename*5=b\r\n\r\nx",
        b"Content-Type: application/pdf; name==?utf-8?B?!!!?=\r\n\r\nx",
    ],
)
def test_junk_never_raises(raw: bytes) -> None:
    for take in ("attachments", "message", "both"):
        info, parts, notes = extract_parts(raw, take=take, include_inline=True)
        assert isinstance(info, MailInfo)
        for p in parts:
            assert_safe(p.filename)
            assert isinstance(p.data, bytes)
        assert all(isinstance(note, str) for note in notes)


def test_mutated_corpus_never_raises() -> None:
    rng = random.Random(2024)
    for name in SMALL_CASES:
        if name == "many_parts":
            continue
        raw = CORPUS[name]()
        for _ in range(40):
            data = bytearray(raw)
            roll = rng.random()
            if roll < 0.3:
                del data[rng.randrange(len(data)) :]
            elif roll < 0.7:
                for _ in range(rng.randrange(1, 20)):
                    data[rng.randrange(len(data))] = rng.randrange(256)
            else:
                at, start = rng.randrange(len(data)), rng.randrange(len(data))
                data[at:at] = data[start : start + rng.randrange(200)]
            _, parts, _ = extract_parts(bytes(data), take="both", include_inline=True)
            for p in parts:
                assert_safe(p.filename)


# -- base64 ---------------------------------------------------------------------------------------


def test_decode_base64_matches_the_standard_decoder() -> None:
    rng = random.Random(5)
    for size in [*range(10), 57, 58, 59, 1000, 3 * (1 << 20) + 1]:
        data = rng.randbytes(size)
        text = base64.encodebytes(data).decode()
        assert decode_base64(text) == (data, False)
        assert decode_base64(text.replace("=", "")) == (data, False)  # padding lost
        assert decode_base64(text.replace("\n", " \r\n\t")) == (data, False)


@pytest.mark.parametrize(
    ("text", "result"),
    [
        ("", (b"", False)),
        ("QUJD\u00e9REVG", (b"ABCDEF", False)),  # non-ASCII junk ignored
        ("QUI=QUI=", (b"AB", False)),  # data ends at the first real padding, as in binascii
        ("=QUJD", (b"ABC", False)),  # padding that pads nothing is ignored
        ("QUJDR", (b"ABC", True)),  # a dangling character: reported, not decoded
    ],
)
def test_decode_base64_edge_cases(text: str, result: tuple[bytes, bool]) -> None:
    assert decode_base64(text) == result
    if not result[1] and text.isascii():
        assert result[0] == binascii.a2b_base64(text.encode() + b"==")
