"""Parsing XML that arrived from anyone: no entities, no DTD, no network, bounded size and depth.

An e-invoice is data, never markup with macros: a DOCTYPE has no business in one (EN 16931's
syntaxes are defined by XSDs), so any DOCTYPE is refused before lxml sees the bytes. That alone
stops entity expansion (billion laughs) and external entities (file or network reads); the
parser is configured to resolve nothing and fetch nothing as a second line, and a DOCTYPE the
byte scan cannot see (a UTF-16 document) is refused after parsing, before anything is read.
Size is capped before parsing, depth after (libxml2's own limit is 256 levels with
``huge_tree`` off; ours is far lower, since real invoices nest about 10 deep).
"""

from __future__ import annotations

import re
from typing import Final

from lxml import etree

MAX_BYTES: Final = 10 * 1024 * 1024
"""Larger XML is refused unparsed: the corpus's biggest invoice is under 100 KiB."""
MAX_DEPTH: Final = 40
"""Deeper XML is refused: EN 16931 invoices nest about a dozen levels."""

_DOCTYPE_RE: Final = re.compile(rb"<!DOCTYPE|<!ENTITY", re.IGNORECASE)


class XmlRefused(ValueError):
    """The bytes are not XML we are willing to read; the message says why, for a person."""


def _parser() -> etree.XMLParser:
    return etree.XMLParser(
        resolve_entities=False,
        no_network=True,
        load_dtd=False,
        dtd_validation=False,
        huge_tree=False,
        remove_comments=True,
        remove_pis=True,
    )


def parse(data: bytes) -> etree._Element:
    """The root element of ``data``, or ``XmlRefused`` (too large, a DOCTYPE, not well-formed,
    too deep)."""
    if len(data) > MAX_BYTES:
        raise XmlRefused(f"XML too large: {len(data):,} bytes (limit {MAX_BYTES:,})")
    if _DOCTYPE_RE.search(data):
        raise XmlRefused("XML with a DOCTYPE or entity declaration is refused (not an e-invoice)")
    try:
        root = etree.fromstring(data, _parser())
    except etree.XMLSyntaxError as exc:
        raise XmlRefused(f"not well-formed XML: {exc}") from None
    if root is None:  # pragma: no cover - lxml raises for empty input
        raise XmlRefused("empty XML document")
    docinfo = root.getroottree().docinfo
    if docinfo.doctype or docinfo.internalDTD is not None:  # one the byte scan missed (UTF-16)
        raise XmlRefused("XML with a DOCTYPE or entity declaration is refused (not an e-invoice)")
    depth = _depth(root)
    if depth > MAX_DEPTH:
        raise XmlRefused(f"XML nested {depth} levels deep (limit {MAX_DEPTH})")
    return root


def _depth(root: etree._Element) -> int:
    """The nesting depth, iteratively (a recursive walk could itself overflow)."""
    deepest = 0
    stack = [(root, 1)]
    while stack:
        element, level = stack.pop()
        deepest = max(deepest, level)
        if deepest > MAX_DEPTH:
            return deepest
        stack.extend((child, level + 1) for child in element)
    return deepest
