"""File names from outside (mail headers, uploads, the store, a directory listing), made safe.

``safe_filename`` is the one sanitiser: whatever it returns is a plain name that cannot act as a
path (no directory part, no ``..``, no drive letter, not hidden), carries no control or
invisible characters (bidi overrides that disguise ``fdp.exe`` as ``exe.pdf``, zero-width
spaces), and fits in a directory entry. ``display`` is for the other direction: a name or path
the OS gave us, as text a log line, the store and JSON can hold.
"""

from __future__ import annotations

import os
import re
import unicodedata
from collections.abc import Collection

MAX_NAME_CHARS = 200
"""Longest name ``safe_filename`` returns, in characters."""
MAX_NAME_BYTES = 255
"""Longest name ``safe_filename`` returns, in UTF-8 bytes: ``NAME_MAX`` of ext4, XFS, btrfs
(and no more than 255 UTF-16 units, the limit of NTFS and SMB)."""
MAX_EXTENSION_CHARS = 16
"""An extension longer than this (or with a space in it) is not kept when a name is shortened."""

INVISIBLE = re.compile(
    "[\x00-\x1f\x7f-\x9f\u00ad\u061c\u180e\u200b-\u200f\u202a-\u202e\u2060-\u206f\ufeff"
    "\ufff9-\ufffb\U000e0000-\U000e007f]"
)
"""Control and invisible characters: C0 and C1 controls, soft hyphen, bidi marks, embeddings,
overrides and isolates, zero-width characters, the BOM, interlinear annotations, tags."""

_SURROGATES = re.compile("[\udc80-\udcff]+")
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")
_SPACE_CONTROLS = re.compile("[\t\n\x0b\x0c\r\x85\u2028\u2029]")
_SPACES = re.compile(r"\s+")
_DRIVES = re.compile(r"^(?:[ .]*[A-Za-z]:)+")
"""``C:``, also repeated or behind dots and spaces: what is left must not be drive-relative."""


def fix_8bit(text: str) -> str:
    """Turn raw 8-bit bytes (surrogate-escaped, as ``os.fsdecode`` and the e-mail parser leave
    them) into text: UTF-8, else cp1252; any other lone surrogate becomes U+FFFD.

    Mailers that put unencoded UTF-8 or Latin-1 into headers are common; the standard library
    would show every such byte as U+FFFD. The result always encodes as UTF-8.
    """

    def decode(match: re.Match[str]) -> str:
        raw = bytes(ord(ch) - 0xDC00 for ch in match.group())
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            return raw.decode("cp1252", "replace")

    text = _SURROGATES.sub(decode, text)
    return _LONE_SURROGATE.sub("\ufffd", text)


def display(text: str) -> str:
    """A file name or path from the OS as a str safe for UTF-8 storage and JSON: undecodable
    name bytes become ``\\xNN``.

    Unlike ``safe_filename`` it changes nothing else, so it still says which file it was.
    """
    return os.fsencode(text).decode("utf-8", "backslashreplace")


def safe_filename(name: str, *, fallback: str = "", keep_separators: bool = False) -> str:
    """A plain file name made from an untrusted one; ``fallback`` when nothing usable is left.

    Keeps the last path component only (``/`` and ``\\`` both separate, a drive letter goes),
    so a stored ``../../etc/passwd`` can only ever become ``passwd`` in the folder it is put in.
    Decodes stray 8-bit bytes (``fix_8bit``) and normalises to NFC; line breaks and tabs become
    spaces, other control and invisible characters go, runs of white space become one space,
    and leading or trailing dots and spaces go (no hidden files, nothing Windows would strip).
    The result has at most ``MAX_NAME_CHARS`` characters and ``MAX_NAME_BYTES`` bytes; a name
    that had to be shortened keeps its extension.

    ``keep_separators`` turns ``/`` and ``\\`` into ``_`` instead of dropping what precedes
    them: for subjects, where "Rechnung 03/2024" is text, not a directory. Encoded words (RFC
    2047) are not decoded here, that is the header parser's job: left over, they are inert text.
    The fallback is returned as given: callers pass a safe one (``document-17``) or check for "".
    """
    if len(name) > 4 * MAX_NAME_CHARS:
        name = name[-4 * MAX_NAME_CHARS :]  # the last path component and extension are at the end
    name = INVISIBLE.sub("", _SPACE_CONTROLS.sub(" ", fix_8bit(name)))
    name = _SPACES.sub(" ", unicodedata.normalize("NFC", name))  # NFC after the removal
    if keep_separators:
        name = name.replace("/", "_").replace("\\", "_")
    else:
        name = name.rstrip("/\\ ")
        name = _DRIVES.sub("", name[max(name.rfind("/"), name.rfind("\\")) + 1 :])
    name = name.strip(". ")
    return _shortened(name) or fallback


def _shortened(name: str) -> str:
    """``name`` cut to ``MAX_NAME_CHARS`` and ``MAX_NAME_BYTES``, keeping a short extension."""
    if len(name) <= MAX_NAME_CHARS and len(name.encode()) <= MAX_NAME_BYTES:
        return name
    stem, dot, ext = name.rpartition(".")
    if dot and 0 < len(ext) <= MAX_EXTENSION_CHARS and " " not in ext:
        ext = "." + ext
    else:
        stem, ext = name, ""
    stem = stem[: MAX_NAME_CHARS - len(ext)]
    stem = stem.encode()[: MAX_NAME_BYTES - len(ext.encode())].decode("utf-8", "ignore")
    return stem.rstrip(". ") + ext


UPLOAD_TAG = re.compile(r"\.docrelay-(\d+)-([0-9a-f]{8})")
"""The tag ``upload_name`` puts before the extension: our document id and its hash's start."""


def upload_tag(document_id: int, sha256: str) -> str:
    """``docrelay-<id>-<sha8>``: the id finds our document, the hash tells a store started
    afresh (which reuses ids, never hashes) from the one that uploaded it."""
    return f"docrelay-{document_id}-{sha256[:8]}"


def upload_name(
    filename: str,
    extensions: tuple[str, ...],
    *,
    known: Collection[str] = (),
    tag: str | None = None,
) -> str:
    """The name a vendor gets for an upload: ours made plain (``safe_filename``), ending in one
    of its type's ``extensions`` (the first is added when it has none of them; a suffix that
    names another ``known`` type, a PDF called ``scan.jpg``, is dropped, any other such as
    ``scan.2024`` kept), with ``tag`` (``upload_tag``) before the extension, so that a look-up
    by name finds an earlier upload after a lost answer."""
    base = safe_filename(filename, fallback="document")
    stem, suffix = os.path.splitext(base)
    if extensions and suffix.lower() not in extensions:
        stem, suffix = (stem if suffix.lower() in known else base), extensions[0]
    stem = stem or "document"
    return f"{stem}.{tag}{suffix}" if tag else f"{stem}{suffix}"
