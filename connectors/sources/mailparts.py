"""Which parts of an e-mail to take, decided from its raw bytes alone (no I/O).

The mailbox source calls ``extract_parts`` for every fetched message. Mail from the wild is
broken in every way the RFCs allow and many they don't, so nothing here raises on bad input: a
header the standard library cannot parse is read from its raw text instead, and a part that is
recognised but cannot be used (TNEF ``winmail.dat``, S/MIME, a payload that cannot be decoded)
is returned with ``unsupported`` set, so the caller records it as rejected with that reason and
keeps the bytes rather than losing it silently.

Cost is bounded by ``max_parts``: the parser stops creating MIME entities once the limit is
reached, so a message with 100,000 tiny parts costs no more than one with ``max_parts``. The
message is parsed with the ``compat32`` policy, whose parser does not re-parse every part's
Content-Type five times (10,000 parts: 0.16 s instead of 3.7 s); every header that matters is
then interpreted with ``email.policy.default``'s header parser, after raw 8-bit bytes have been
turned into text (UTF-8, else cp1252). Base64 is decoded here, in slices: the standard
library's lenient path copies the encoded text several times (a 30 MB message peaked at 5.5x
its size; with ``message_from_bytes``, whose StringIO holds the text as UCS-4, at 7.7x).
"""

from __future__ import annotations

import binascii
import fnmatch
import hashlib
import io
import re
import urllib.parse
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email import errors as email_errors
from email.feedparser import BytesFeedParser
from email.message import EmailMessage
from email.policy import compat32, default
from email.utils import parsedate_to_datetime
from typing import Any, Literal

from connectors.filenames import INVISIBLE, MAX_NAME_CHARS, fix_8bit, safe_filename

__all__ = [
    "MailInfo",
    "MailPart",
    "Take",
    "decode_base64",
    "extract_parts",
    "message_info",
    "message_key",
]

Take = Literal["attachments", "message", "both"]

MAX_NOTES = 100
"""Notes beyond this many are counted, not listed: a hostile message can earn thousands."""
_FEED_CHUNK = 1 << 16
_B64_SLICE = 1 << 20
_MAX_OPEN_COUNTED = 8
"""Open multiparts whose unseen parts are counted for the part-limit note (a scan each)."""

TNEF_SIGNATURE = b"\x78\x9f\x3e\x22"
_TNEF_TYPES = frozenset({"application/ms-tnef", "application/vnd.ms-tnef"})
_SMIME_TYPES = frozenset({"application/pkcs7-mime", "application/x-pkcs7-mime"})
_SIGNATURE_TYPES = frozenset(
    {"application/pgp-signature", "application/pkcs7-signature", "application/x-pkcs7-signature"}
)
_NESTED_MESSAGE_TYPES = frozenset({"message/rfc822", "message/global"})
_REPORT_TYPES = frozenset(
    {
        "message/delivery-status",
        "message/global-delivery-status",
        "message/disposition-notification",
        "message/global-disposition-notification",
        "message/feedback-report",
        "text/rfc822-headers",
    }
)
_GENERIC_TYPES = frozenset(
    {
        "application/octet-stream",
        "application/x-octet-stream",
        "binary/octet-stream",
        "application/binary",
        "application/unknown",
        "application/x-unknown",
        "application/download",
        "application/x-download",
        "application/force-download",
        "application/save",
    }
)
"""Types that say nothing about the content; the filename's extension says more."""
_TYPE_ALIASES = {
    "application/x-pdf": "application/pdf",
    "application/acrobat": "application/pdf",
    "application/vnd.pdf": "application/pdf",
    "image/jpg": "image/jpeg",
    "image/pjpeg": "image/jpeg",
    "image/x-png": "image/png",
    "image/tif": "image/tiff",
    "image/x-tiff": "image/tiff",
}
_EXTENSION_TYPES = {
    ".pdf": "application/pdf",
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".jpe": "image/jpeg",
    ".tif": "image/tiff",
    ".tiff": "image/tiff",
    ".gif": "image/gif",
    ".bmp": "image/bmp",
    ".webp": "image/webp",
    ".heic": "image/heic",
    ".xml": "application/xml",
    ".json": "application/json",
    ".txt": "text/plain",
    ".csv": "text/csv",
    ".htm": "text/html",
    ".html": "text/html",
    ".zip": "application/zip",
    ".eml": "message/rfc822",
    ".p7m": "application/pkcs7-mime",
    ".p7s": "application/pkcs7-signature",
}
_TYPE_EXTENSIONS = {
    "application/pdf": ".pdf",
    "image/png": ".png",
    "image/jpeg": ".jpg",
    "image/tiff": ".tif",
    "image/gif": ".gif",
    "image/bmp": ".bmp",
    "image/webp": ".webp",
    "image/heic": ".heic",
    "application/xml": ".xml",
    "text/xml": ".xml",
    "application/json": ".json",
    "text/plain": ".txt",
    "text/csv": ".csv",
    "text/html": ".html",
    "application/zip": ".zip",
    "message/rfc822": ".eml",
    "message/global": ".eml",
    "application/ms-tnef": ".dat",
    "application/vnd.ms-tnef": ".dat",
    "application/pkcs7-mime": ".p7m",
    "application/x-pkcs7-mime": ".p7m",
    "application/octet-stream": ".bin",
}

_TYPE_RE = re.compile(r"\s*([a-z0-9][a-z0-9!#$&^_.+-]*/[a-z0-9!#$&^_.+-]+)")
_TOKEN_RE = re.compile(r"\s*([a-z0-9!#$&^_.+-]+)")
_LINEBREAK_RE = re.compile(r"[\r\n]")
_SPACES_RE = re.compile(r"\s+")
_ENCODED_WORD = r"=\?[^?\s]+\?[bq]\?[^?\s]*\?="
_ENCODED_WORDS_RE = re.compile(
    rf"""(?:file)?name\*?\s*=\s*"?\s*({_ENCODED_WORD}(?:\s*{_ENCODED_WORD})*)""", re.IGNORECASE
)
_ADDRESS_RE = re.compile(r"""[^\s<>()\[\],;:"'@]+@[^\s<>()\[\],;:"'@]+""")
_SANE_ADDRESS_RE = re.compile(r"""[^\s<>()\[\],;:"@]+@[^\s<>()\[\],;:"@]+""")
_MESSAGE_ID_RE = re.compile(r"<([^<>]*)>")
_CID_REF_RE = re.compile(rb"""cid:([^"'\s<>()]+)""", re.IGNORECASE)
_HEADER_END_RE = re.compile(rb"\r?\n\r?\n")
_B64_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/="
_B64_JUNK = bytes(sorted(set(range(256)) - set(_B64_ALPHABET)))


@dataclass(frozen=True, slots=True)
class MailPart:
    """One part to take from a message, with a name that is safe to show but never a path."""

    index: int
    """1-based position among the parts returned for this message (stable for the same bytes)."""
    filename: str
    """A display name: decoded, no directory parts, control characters or leading dots, at most
    200 characters; ``attachment-<index><ext>`` when the part has none."""
    mime_type: str
    """Lower-case content type; generic ones (octet-stream) are replaced by the extension's,
    aliases (image/jpg, application/x-pdf) by the registered type."""
    data: bytes
    """The decoded payload (the whole raw message for the ``.eml`` part)."""
    unsupported: str | None = None
    """Why the part cannot be used, when it is recognised but unusable (TNEF, S/MIME, ...)."""
    nested: int = 0
    """Depth of message/rfc822 nesting the part came from (0 = the message itself)."""


@dataclass(frozen=True, slots=True)
class MailInfo:
    """The headers the mailbox source records and de-duplicates by; all tolerant of junk."""

    message_id: str | None
    """The Message-ID without angle brackets or whitespace; None when missing or empty."""
    sender: str | None
    """The From address (addr-spec only, lower-case)."""
    recipients: list[str]
    """To, Cc and Delivered-To addresses, lower-case, each once, in header order."""
    subject: str
    """Decoded, control characters replaced; "" when missing."""
    date: datetime | None
    """From the Date header, timezone-aware (``-0000`` is taken as UTC); None when unparseable."""


# -- text and names -------------------------------------------------------------------------


def _clean_text(text: str) -> str:
    """One line of printable text: what headers become before they are logged or stored."""
    text = INVISIBLE.sub(" ", fix_8bit(text))
    return _SPACES_RE.sub(" ", text).strip()


def _extension(name: str) -> str:
    stem, dot, ext = name.rpartition(".")
    return "." + ext.lower() if dot and stem and ext else ""


def _type_extension(mime: str) -> str:
    return _TYPE_EXTENSIONS.get(mime, "")


def _effective_type(declared: str | None, default_type: str, name: str) -> str:
    """The declared type, normalised; the extension's type when the declared one says nothing."""
    mime = _TYPE_ALIASES.get(declared, declared) if declared else None
    if mime is None or mime in _GENERIC_TYPES:
        if name.lower() == "winmail.dat":
            return "application/ms-tnef"
        guessed = _EXTENSION_TYPES.get(_extension(name))
        if guessed:
            return guessed
    return mime or default_type


# -- headers ----------------------------------------------------------------------------------


def _unfold(value: str) -> str:
    return _LINEBREAK_RE.sub("", value)


def _raw_headers(msg: EmailMessage, names: Iterable[str]) -> dict[str, list[str]]:
    """The raw (unfolded) values of the named headers, by lower-case name, in message order."""
    wanted: dict[str, list[str]] = {name: [] for name in names}
    for key, value in msg.raw_items():
        values = wanted.get(key.lower())
        if values is not None and isinstance(value, str):
            values.append(_unfold(value))
    return wanted


def _parse_header(name: str, value: str) -> Any:
    """``email.policy.default``'s structured header, or None where its parser gives up."""
    try:
        return default.header_factory(name, fix_8bit(value))
    except Exception:  # the parser has known crashes on junk (IndexError on "From: a@")
        return None


def _decoded(name: str, value: str) -> str:
    """An unstructured header's text with encoded words decoded; the raw text where that fails."""
    header = _parse_header(name, value)
    text = _clean_text(str(header)) if header is not None else ""
    return text or _clean_text(value)  # a broken encoded word decodes to nothing


def _addresses(name: str, values: list[str]) -> list[str]:
    found: list[str] = []
    for value in values:
        header = _parse_header(name, value)
        specs: list[str] = []
        try:
            specs = [addr.addr_spec.lower() for addr in header.addresses] if header else []
        except Exception:
            specs = []
        if not specs or not all(_SANE_ADDRESS_RE.fullmatch(spec) for spec in specs):
            salvaged = [spec.lower() for spec in _ADDRESS_RE.findall(fix_8bit(value))]
            specs = salvaged or [spec for spec in specs if "@" in spec.strip("@")]
        found.extend(specs)
    return list(dict.fromkeys(found))


def _message_id(values: list[str]) -> str | None:
    if not values:
        return None
    text = fix_8bit(values[0])
    match = _MESSAGE_ID_RE.search(text)
    ident = "".join((match.group(1) if match else text).split()).strip("<>")
    ident = INVISIBLE.sub("", ident)
    return ident or None


def _date(values: list[str]) -> datetime | None:
    if not values:
        return None
    header = _parse_header("date", values[0])
    when = getattr(header, "datetime", None) if header is not None else None
    if when is None:
        try:
            when = parsedate_to_datetime(values[0])
        except Exception:
            return None
    if not isinstance(when, datetime):
        return None
    return when if when.utcoffset() is not None else when.replace(tzinfo=UTC)


def _info(msg: EmailMessage) -> MailInfo:
    headers = _raw_headers(
        msg, ("message-id", "from", "to", "cc", "delivered-to", "subject", "date")
    )
    senders = _addresses("from", headers["from"])
    recipients = _addresses("to", headers["to"] + headers["cc"] + headers["delivered-to"])
    subject = _decoded("subject", headers["subject"][0]) if headers["subject"] else ""
    return MailInfo(
        message_id=_message_id(headers["message-id"]),
        sender=senders[0] if senders else None,
        recipients=recipients,
        subject=subject,
        date=_date(headers["date"]),
    )


def _header_block(raw: bytes) -> bytes:
    match = _HEADER_END_RE.search(raw)
    return raw[: match.end()] if match else raw


def message_info(raw: bytes) -> MailInfo:
    """The message's identifying headers; only the header block is parsed."""
    counter = _Counter(limit=1)
    parsed = _parse(_header_block(bytes(raw)), counter)
    if parsed.root is None:  # cannot happen with a limit of 1, but never raise
        return MailInfo(None, None, [], "", None)
    return _info(parsed.root)


def message_key(info: MailInfo, raw: bytes) -> str:
    """The identity used to de-duplicate a message across UIDVALIDITY resets and duplicate
    deliveries: the Message-ID when present, else 'sha256:<hex of the raw bytes>'."""
    if info.message_id:
        return info.message_id
    return "sha256:" + hashlib.sha256(raw).hexdigest()


# -- parsing ----------------------------------------------------------------------------------


class _PartLimitReachedError(Exception):
    """Raised inside the parser to stop it creating more MIME entities."""


class _Counter:
    """The parser's message factory: counts the entities it creates and stops at the limit.

    Entities are created in document order, each when its headers start, so when the parser is
    stopped every entity created before the last one is complete.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.created: list[EmailMessage] = []
        self.armed = False

    def __call__(self, policy: Any = compat32) -> EmailMessage:
        if self.armed:
            if len(self.created) >= self.limit:
                raise _PartLimitReachedError
        msg = EmailMessage(policy=policy)
        if self.armed:
            self.created.append(msg)
        return msg


@dataclass(slots=True)
class _Parsed:
    root: EmailMessage | None
    stopped: Literal["limit", "error"] | None = None
    error: str | None = None
    incomplete: EmailMessage | None = None
    """The entity being parsed when the parser failed: not to be trusted."""


def _parse(data: bytes, counter: _Counter) -> _Parsed:
    """Parse with the shared counter; a stopped or failed parse keeps what was complete."""
    start = len(counter.created)
    parser = BytesFeedParser(_factory=counter, policy=compat32)  # probes the factory once
    counter.armed = True
    view = memoryview(data)
    try:
        for offset in range(0, len(data), _FEED_CHUNK):
            parser.feed(bytes(view[offset : offset + _FEED_CHUNK]))
        root = parser.close()
        return _Parsed(root if isinstance(root, EmailMessage) else None)
    except _PartLimitReachedError:
        first = counter.created[start] if len(counter.created) > start else None
        return _Parsed(first, stopped="limit")
    except Exception as exc:  # RecursionError on deep nesting, or a parser bug on junk
        first = counter.created[start] if len(counter.created) > start else None
        last = counter.created[-1] if len(counter.created) > start else None
        return _Parsed(first, stopped="error", error=type(exc).__name__, incomplete=last)
    finally:
        counter.armed = False
        view.release()


def _boundary(msg: EmailMessage) -> str | None:
    try:
        boundary = msg.get_boundary()
    except Exception:
        return None
    return boundary if isinstance(boundary, str) and boundary else None


def _unexamined_parts(raw: bytes, root: EmailMessage) -> int:
    """How many parts the parser never reached, as far as the raw bytes tell cheaply.

    Entities are created in document order, so the multiparts still open when the parser
    stopped are those on the path of last children from the root: count their delimiter lines
    and subtract the parts seen. Parts of multiparts that start after the limit are not counted.
    """
    unseen = 0
    node: EmailMessage = root
    for _ in range(_MAX_OPEN_COUNTED):
        children = node.get_payload() if node.is_multipart() else []
        boundary = _boundary(node) if node.get_content_maintype() == "multipart" else None
        if boundary:
            delimiter = b"\n--" + boundary.encode("utf-8", "surrogateescape")
            total = raw.count(delimiter + b"\r\n") + raw.count(delimiter + b"\n")
            unseen += max(total - len(children), 0)
        if not children:
            break
        node = children[-1]
    return unseen


# -- payloads ---------------------------------------------------------------------------------


def _cut_at_padding(buf: bytes) -> tuple[bytes, bool]:
    """Drop '=' that pad nothing (as binascii does) and end the data at the first real padding."""
    pieces: list[bytes] = []
    count = start = 0
    while (pos := buf.find(b"=", start)) >= 0:
        pieces.append(buf[start:pos])
        count += pos - start
        if count % 4 >= 2:
            return b"".join(pieces), True
        start = pos + 1
    pieces.append(buf[start:])
    return b"".join(pieces), False


def decode_base64(text: str) -> tuple[bytes, bool]:
    """Decode leniently and in slices; returns (data, whether an incomplete last group was cut).

    Like mail clients: characters outside the alphabet are ignored, data ends at the first
    padding (as in ``binascii``), and missing padding is supplied. Slicing keeps the cost to the
    decoded bytes plus about a megabyte, where ``get_payload(decode=True)`` makes several full
    copies of the encoded text (and returns it undecoded when one character too many is left).
    """
    out = io.BytesIO()
    carry = b""
    ended = False
    for start in range(0, len(text), _B64_SLICE):
        chunk = text[start : start + _B64_SLICE].encode("ascii", "ignore")
        buf = carry + chunk.translate(None, _B64_JUNK)
        if b"=" in buf:
            buf, ended = _cut_at_padding(buf)
        usable = len(buf) - len(buf) % 4
        if usable:
            out.write(binascii.a2b_base64(memoryview(buf)[:usable]))
        carry = buf[usable:]
        if ended:
            break
    if len(carry) >= 2:
        out.write(binascii.a2b_base64(carry + b"=" * (4 - len(carry))))
    return out.getvalue(), len(carry) == 1


def _payload_text(part: EmailMessage) -> str | None:
    """The undecoded payload of a leaf as text (8-bit bytes replaced: fine for base64)."""
    if part.is_multipart():
        return None
    payload = part.get_payload()
    return payload if isinstance(payload, str) else None


def _cte(part: EmailMessage) -> str:
    values = _raw_headers(part, ("content-transfer-encoding",))["content-transfer-encoding"]
    if not values:
        return ""
    cte = values[0].strip().strip("\"'").strip().lower()
    return {"7-bit": "7bit", "8-bit": "8bit", "quotedprintable": "quoted-printable"}.get(cte, cte)


_IDENTITY_CTES = frozenset({"", "7bit", "8bit", "binary", "none"})
_UU_CTES = frozenset({"x-uuencode", "uuencode", "uue", "x-uue"})


def _decode_payload(part: EmailMessage) -> tuple[bytes, str | None, str | None]:
    """(data, unsupported reason, note) for a leaf part; never raises."""
    cte = _cte(part)
    try:
        if cte == "base64":
            text = _payload_text(part)
            if text is None:
                return b"", "the part has no payload", None
            data, cut = decode_base64(text)
            if not data and text.strip():
                return text.encode(), "base64 payload cannot be decoded", None
            note = "base64 data ends in an incomplete group; the last bits were dropped"
            return data, None, note if cut else None
        # The raw bytes for identity encodings (8-bit bytes exactly as read); decoded for the
        # quoted-printable and uuencode spellings the standard library knows.
        data = part.get_payload(decode=True)
        if not isinstance(data, bytes):
            return b"", "the part has no payload", None
        known = str(part.get("content-transfer-encoding", "")).lower()
        if cte == "quoted-printable" and known != "quoted-printable":
            return binascii.a2b_qp(data), None, None
        if cte in _IDENTITY_CTES or cte in ("quoted-printable", *_UU_CTES):
            return data, None, None
        return data, f"unknown Content-Transfer-Encoding {_clean_text(cte)[:40]!r}", None
    except Exception as exc:  # never lose the part over a decoder's complaint
        return b"", f"payload cannot be decoded ({type(exc).__name__})", None


# -- the walk ---------------------------------------------------------------------------------


@dataclass(slots=True)
class _Leaf:
    part: EmailMessage
    nested: int
    name: str
    """Safe display name, "" when the part has none."""
    mime: str
    unsupported: str | None = None
    filtered: bool = True
    """Whether the filename/type filters apply (not to containers that may hide a document)."""
    cid: str | None = None
    """For an image that is inline only if an HTML body references this Content-ID."""
    inline: bool = False


@dataclass(slots=True)
class _Notes:
    items: dict[str, None] = field(default_factory=dict)
    dropped: int = 0

    def add(self, note: str) -> None:
        if note in self.items:
            return
        if len(self.items) < MAX_NOTES:
            self.items[note] = None
        else:
            self.dropped += 1

    def as_list(self) -> list[str]:
        notes = list(self.items)
        if self.dropped:
            notes.append(f"{self.dropped} further notes not shown")
        return notes


def _label(name: str, mime: str) -> str:
    return name if name else f"({mime})"


def _filename(headers: dict[str, list[str]]) -> str:
    """The decoded filename (Content-Disposition filename, else Content-Type name), or ""."""
    for header, param in (("content-disposition", "filename"), ("content-type", "name")):
        for value in headers[header][:1]:
            if "name" not in value.lower():  # spare the structured parser (a new class per call)
                continue
            parsed = _parse_header(header, value)
            try:
                name = parsed.params.get(param) if parsed is not None else None
            except Exception:
                name = None
            if not name or not name.strip():
                match = _ENCODED_WORDS_RE.search(value)  # unquoted encoded words: not a token
                name = _decoded("subject", match.group(1)) if match else None
            if name and (cleaned := safe_filename(name)):
                return cleaned
    return ""


def _sealed_reason(mime: str, name: str, parent: str) -> str | None:
    """Why a container that may hold a document cannot be opened here, or None."""
    if parent == "multipart/encrypted":
        return "PGP/MIME encrypted message is not supported"
    if mime in _TNEF_TYPES:
        return f"{name or 'winmail.dat'} (TNEF, Outlook rich text) is not supported"
    if mime in _SMIME_TYPES:
        return f"{name or 'smime.p7m'} (S/MIME encrypted or signed message) is not supported"
    return None


class _Walker:
    def __init__(self, raw: bytes, *, max_depth: int, max_parts: int) -> None:
        self.raw = raw
        self.max_depth = max_depth
        self.max_parts = max_parts
        self.counter = _Counter(limit=max_parts + 1)  # the message itself is not a part
        self.notes = _Notes()
        self.leaves: list[_Leaf] = []
        self.html: list[EmailMessage] = []
        self.distrusted: set[int] = set()

    def run(self) -> MailInfo:
        parsed = _parse(self.raw, self.counter)
        root = parsed.root if parsed.root is not None else EmailMessage(policy=compat32)
        self._after_parse(parsed, self.raw, parsed.root)
        info = _info(root)
        self._walk(root)
        self._resolve_inline()
        return info

    def _after_parse(self, parsed: _Parsed, data: bytes, root: EmailMessage | None) -> None:
        """Note why parsing stopped; ``root`` is given for the message itself, not attachments."""
        if parsed.stopped == "limit":
            if root is not None:
                rest = _unexamined_parts(data, root)
                if rest:
                    self.notes.add(
                        f"part limit of {self.max_parts} reached: {rest} parts not examined"
                    )
                    return
            self.notes.add(f"part limit of {self.max_parts} reached: the rest not examined")
        elif parsed.stopped == "error":
            if parsed.incomplete is not None:
                self.distrusted.add(id(parsed.incomplete))
            self.notes.add(
                f"the MIME structure could not be parsed to the end ({parsed.error}, e.g. "
                "nested too deeply): the rest not examined"
            )

    def _walk(self, root: EmailMessage) -> None:
        stack: list[tuple[EmailMessage, int, str]] = [(root, 0, "")]
        while stack:
            part, depth, parent = stack.pop()
            if id(part) in self.distrusted:
                continue
            headers = _raw_headers(
                part,
                ("content-type", "content-disposition", "content-id", "content-transfer-encoding"),
            )
            match = (
                _TYPE_RE.match(headers["content-type"][0].lower())
                if headers["content-type"]
                else None
            )
            declared = match.group(1) if match else None
            ctype = declared or part.get_default_type()
            if part.is_multipart():
                children = part.get_payload()
                if ctype.startswith("message/"):
                    self._nested(part, children, ctype, depth, stack)
                else:
                    if ctype.startswith("multipart/") and any(
                        isinstance(d, email_errors.CloseBoundaryNotFoundDefect)
                        for d in part.defects
                    ):
                        self.notes.add(
                            f"{ctype} has no closing boundary: the message may be truncated"
                        )
                    stack.extend((child, depth, ctype) for child in reversed(children))
                continue
            self._leaf(part, headers, declared, ctype, depth, parent, stack)

    def _nested(
        self,
        part: EmailMessage,
        children: list[EmailMessage],
        ctype: str,
        depth: int,
        stack: list[tuple[EmailMessage, int, str]],
    ) -> None:
        if ctype not in _NESTED_MESSAGE_TYPES:
            if ctype not in _REPORT_TYPES:
                self.notes.add(f"{ctype} part skipped: not supported")
            return
        if not children:
            return
        if depth + 1 > self.max_depth:
            self.notes.add(
                f"nested message/rfc822 deeper than {self.max_depth} levels not followed"
            )
            return
        sub = children[0]
        if _cte(part) == "base64" and not sub.keys():  # encoded against RFC 2046; Outlook does it
            text = _payload_text(sub)
            if text is not None:
                data, _ = decode_base64(text)
                self._push_message(data, depth + 1, stack)
                return
        stack.append((sub, depth + 1, ctype))

    def _push_message(
        self, data: bytes, depth: int, stack: list[tuple[EmailMessage, int, str]]
    ) -> None:
        """Parse an attached message that arrived as an opaque leaf and walk it next."""
        if depth > self.max_depth:
            self.notes.add(
                f"nested message/rfc822 deeper than {self.max_depth} levels not followed"
            )
            return
        parsed = _parse(data, self.counter)
        self._after_parse(parsed, data, None)
        if parsed.root is not None:
            stack.append((parsed.root, depth, "message/rfc822"))

    def _leaf(
        self,
        part: EmailMessage,
        headers: dict[str, list[str]],
        declared: str | None,
        ctype: str,
        depth: int,
        parent: str,
        stack: list[tuple[EmailMessage, int, str]],
    ) -> None:
        disposition_match = (
            _TOKEN_RE.match(headers["content-disposition"][0].lower())
            if headers["content-disposition"]
            else None
        )
        disposition = disposition_match.group(1) if disposition_match else None
        name = _filename(headers)
        mime = _effective_type(declared, ctype, name)
        label = _label(name, mime)

        if ctype.startswith("multipart/"):  # no usable boundary: the parser kept the raw body
            text = _payload_text(part)
            if text is not None and text.strip():
                reason = f"{ctype} without a usable boundary: its parts cannot be separated"
                self.leaves.append(_Leaf(part, depth, name, ctype, reason, filtered=False))
            return
        if ctype.startswith("message/"):
            if part.get_payload() is None:  # its message was beyond the part limit
                return
            if ctype not in _NESTED_MESSAGE_TYPES:
                if ctype not in _REPORT_TYPES:
                    self.notes.add(f"{ctype} part skipped: not supported")
                return
        if mime in _SIGNATURE_TYPES:
            self.notes.add(f"signature part {label} skipped")
            return
        if parent == "multipart/encrypted" and mime == "application/pgp-encrypted":
            return  # PGP/MIME's control part: it only says "Version: 1"
        reason = _sealed_reason(mime, name, parent)
        if reason:
            self.leaves.append(_Leaf(part, depth, name, mime, reason, filtered=False))
            return
        if mime in _NESTED_MESSAGE_TYPES:  # an attached message that arrived as an opaque leaf
            data, unsupported, _ = _decode_payload(part)
            if unsupported is None:
                self._push_message(data, depth + 1, stack)
                return

        content_id = (
            "".join(headers["content-id"][0].split()).strip("<>").lower()
            if headers["content-id"]
            else ""
        )
        leaf = _Leaf(part, depth, name, mime)
        if disposition == "attachment":
            pass
        elif mime.startswith("image/") and disposition == "inline":
            leaf.inline = True
        elif mime.startswith("image/") and content_id:
            leaf.cid = content_id
        elif not name and mime.startswith("text/"):
            if mime == "text/html":
                self.html.append(part)
            return  # a body, not an attachment
        self.leaves.append(leaf)

    def _resolve_inline(self) -> None:
        pending = [leaf for leaf in self.leaves if leaf.cid]
        if not pending:
            return
        referenced: set[str] = set()
        for body in self.html:
            data, _, _ = _decode_payload(body)
            for ref in _CID_REF_RE.findall(data):
                referenced.add(urllib.parse.unquote(ref.decode("ascii", "replace")).lower())
        for leaf in pending:
            leaf.inline = leaf.cid in referenced


def _matches(patterns: Sequence[str], value: str) -> bool:
    value = value.lower()
    return any(
        fnmatch.fnmatchcase(value, pattern.split(";")[0].strip().lower()) for pattern in patterns
    )


def _eml_part(raw: bytes, info: MailInfo, index: int) -> MailPart:
    stem = safe_filename(info.subject, keep_separators=True)[: MAX_NAME_CHARS - 4].rstrip(". ")
    stem = stem or "message"
    return MailPart(index=index, filename=stem + ".eml", mime_type="message/rfc822", data=raw)


def extract_parts(
    raw: bytes,
    *,
    take: Take = "attachments",
    filename_patterns: Sequence[str] = (),
    mime_types: Sequence[str] = (),
    include_inline: bool = False,
    max_depth: int = 10,
    max_parts: int = 1000,
) -> tuple[MailInfo, list[MailPart], list[str]]:
    """Returns (info, parts to take, notes). notes: human-readable remarks about what was
    skipped and why (e.g. 'part limit of 1000 reached: 9000 parts not examined', 'nested
    message/rfc822 deeper than 10 levels not followed', 'inline image logo.png skipped').

    ``max_parts`` counts every MIME entity below the message, containers and the entities of
    attached messages included, in document order; the parser stops creating them there.

    Filters (globs, case-insensitive, both must match when both are given) apply to
    attachments only: not to the ``.eml`` part, nor to containers that cannot be opened and
    may hide a matching document (TNEF, S/MIME, PGP, a multipart without boundary). A part
    without a filename is matched as ``attachment<ext>``.
    """
    if take not in ("attachments", "message", "both"):
        raise ValueError(f"take must be 'attachments', 'message' or 'both', not {take!r}")
    raw = bytes(raw)
    if take == "message":
        info = message_info(raw)
        return info, [_eml_part(raw, info, 1)], []

    walker = _Walker(
        raw,
        max_depth=max(max_depth, 0),
        max_parts=max(max_parts, 0),
    )
    info = walker.run()
    notes = walker.notes
    parts: list[MailPart] = [_eml_part(raw, info, 1)] if take == "both" else []
    for leaf in walker.leaves:
        label = _label(leaf.name, leaf.mime)
        if leaf.inline and not include_inline:
            notes.add(f"inline image {label} skipped")
            continue
        if leaf.filtered:
            match_name = leaf.name or "attachment" + _type_extension(leaf.mime)
            if filename_patterns and not _matches(filename_patterns, match_name):
                notes.add(f"attachment {label} skipped: not matched by filename_patterns")
                continue
            if mime_types and not _matches(mime_types, leaf.mime):
                notes.add(f"attachment {label} skipped: {leaf.mime} not matched by mime_types")
                continue
        data, unsupported, note = _decode_payload(leaf.part)
        if note:
            notes.add(f"{label}: {note}")
        unsupported = leaf.unsupported or unsupported
        mime = leaf.mime
        if unsupported is None and data.startswith(TNEF_SIGNATURE):
            mime = "application/ms-tnef"
            unsupported = _sealed_reason(mime, leaf.name, "")
        index = len(parts) + 1
        parts.append(
            MailPart(
                index=index,
                filename=leaf.name or f"attachment-{index}{_type_extension(mime)}",
                mime_type=mime,
                data=data,
                unsupported=unsupported,
                nested=leaf.nested,
            )
        )
    return info, parts, notes.as_list()
