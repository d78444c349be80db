"""File names from outside: made safe to use as a name, and made safe to show."""

from __future__ import annotations

import os
import re

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def display(text: str) -> str:
    """A file name or path from the OS as a str safe for UTF-8 storage and JSON: undecodable
    name bytes become ``\\xNN``."""
    return os.fsencode(text).decode("utf-8", "backslashreplace")


def safe_filename(name: str, fallback: str = "document") -> str:
    """A plain file name from an untrusted one: the last path component only, no control
    characters, no leading dots (hidden files, ``..``), never empty.

    Used for names that come from the store rather than from a directory listing, so a stored
    ``../../etc/passwd`` can only ever become ``passwd`` in the folder it is put in.
    """
    text = name.encode("utf-8", "replace").decode("utf-8")  # no lone surrogates
    for separator in {"/", os.sep, os.altsep or "/"}:
        text = text.rsplit(separator, 1)[-1]
    text = _CONTROL.sub("_", text).strip().lstrip(".").strip()
    return text or fallback
