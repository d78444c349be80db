"""JSON in and out, with orjson: the daemon parses every vendor answer and stores every result
as JSON, and the standard library's encoder and decoder were a sixth of its CPU per document.

Same data model as ``json`` (str keys, no Decimal); non-str dict keys become strings as
``json.dumps`` makes them, and the text is UTF-8 rather than ``\\u`` escapes.
"""

from __future__ import annotations

import json
from typing import Any

import orjson

JSONDecodeError = orjson.JSONDecodeError
"""Raised for text that is not JSON; a ``ValueError`` (and a ``json.JSONDecodeError``)."""

_OPTIONS = orjson.OPT_NON_STR_KEYS


def loads(data: bytes | bytearray | memoryview | str) -> Any:
    """Parse JSON text (nesting deeper than 1,024 levels is a ``JSONDecodeError`` too)."""
    return orjson.loads(data)


def dumps(value: Any) -> str:
    """Compact JSON text; ``TypeError`` for what JSON cannot hold (a Decimal, a set)."""
    return orjson.dumps(value, option=_OPTIONS).decode()


def dumps_bytes(value: Any, *, indent: int | None = None) -> bytes:
    """UTF-8 JSON, indented by ``indent`` spaces (2 at C speed; other widths by ``json``)."""
    if indent is None:
        return orjson.dumps(value, option=_OPTIONS)
    if indent == 2:
        return orjson.dumps(value, option=_OPTIONS | orjson.OPT_INDENT_2)
    return json.dumps(value, indent=indent, ensure_ascii=False).encode()
