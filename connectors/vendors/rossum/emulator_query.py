"""Finding annotations: the list filters, ordering, and ``annotations/search`` with its
MongoDB-style query (mixed into ``EmulatorState``).

Besides the documented filters, ``metadata__<key>=<value>`` (list) and ``metadata.<key>``
(search) find annotations by the metadata given at upload; the reference has no metadata
filter, so this is the emulator's (see NOTES.md, Emulator).
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from typing import Any

from connectors.vendors.rossum import emulator_content as content
from connectors.vendors.rossum.emulator_model import (
    TIMESTAMPS,
    USER,
    WORKSPACE,
    Annotation,
    ApiError,
    Document,
    iso,
    parse_when,
)

SEARCH_MAX_PAGE = 500
"""``annotations/search`` page size limit (100 when content is sideloaded)."""


class Queries:
    """Annotation filtering, ordering and search for ``EmulatorState``."""

    # state provided by EmulatorState (like the other methods these call)
    lock: threading.RLock
    base_url: str
    annotations: dict[int, Annotation]
    documents: dict[int, Document]

    def filter_annotations(self, params: Mapping[str, str]) -> list[Annotation]:
        """The annotation list filters (AND-combined), then ``ordering`` (default: id)."""
        with self.lock:
            self.tick()
            found = list(self.annotations.values())

            def ints(text: str) -> set[int]:
                try:
                    return {int(x) for x in text.split(",") if x.strip()}
                except ValueError:
                    raise ApiError(400, {"detail": f"Expected ids, got {text!r}."}) from None

            for key, value in params.items():
                if value == "":
                    continue
                if key == "status":
                    wanted = set(value.split(","))
                    found = [a for a in found if a.status in wanted]
                elif key in ("id", "queue", "document"):
                    ids = ints(value)
                    attr = {"id": "id", "queue": "queue_id", "document": "document_id"}[key]
                    found = [a for a in found if getattr(a, attr) in ids]
                elif key == "automated":
                    flag = value.lower() in ("true", "1")
                    found = [a for a in found if a.automated == flag]
                elif key.endswith(("_at_before", "_at_after")):
                    found = self._time_filter(found, key, parse_when(value))
                elif key.startswith("metadata__"):
                    found = [a for a in found if _metadata_match(a.metadata, key[10:], value)]
                elif key == "search":
                    found = [a for a in found if self._text_match(a, value)]
            return self._order(found, params.get("ordering", ""))

    def _time_filter(self, found: list[Annotation], key: str, when: float) -> list[Annotation]:
        name, _, side = key.rpartition("_")
        name = "created_at" if name == "arrived_at" else name

        def stamp(a: Annotation) -> float | None:
            return a.created_at if name == "created_at" else a.stamps.get(name)

        if side == "before":
            return [a for a in found if (s := stamp(a)) is not None and s < when]
        return [a for a in found if (s := stamp(a)) is not None and s >= when]

    def _text_match(self, ann: Annotation, query: str) -> bool:
        haystack = [
            *content.datapoint_values(ann.content),
            self.documents[ann.document_id].file_name,
            *(str(m.get("content", "")) for m in ann.messages),
        ]
        tokens = [t.lower() for text in haystack for t in text.split()]
        return all(any(t.startswith(term) for t in tokens) for term in query.lower().split())

    def _order(self, found: list[Annotation], ordering: str) -> list[Annotation]:
        def key_of(name: str) -> Any:
            if name in ("id", "status", "queue", "document"):
                attr = {"queue": "queue_id", "document": "document_id"}.get(name, name)
                return lambda a: getattr(a, attr)
            if name in ("created_at", "arrived_at", "document__arrived_at"):
                return lambda a: a.created_at
            if name in ("original_file_name", "document__original_file_name"):
                return lambda a: self.documents[a.document_id].file_name
            if name in TIMESTAMPS:
                return lambda a: a.stamps.get(name) or 0.0
            return None

        found.sort(key=lambda a: a.id)
        for term in reversed([t.strip() for t in ordering.split(",") if t.strip()]):
            key = key_of(term.lstrip("-"))
            if key is not None:  # unknown keys are ignored, as DRF does
                found.sort(key=key, reverse=term.startswith("-"))
        return found

    def search(self, body: Any, params: Mapping[str, str]) -> list[Annotation]:
        """``POST annotations/search``: MongoDB-style ``query`` and ``query_string``."""
        if not isinstance(body, dict) or not (body.get("query") or body.get("query_string")):
            raise ApiError(400, {"detail": "Either query or query_string must be provided."})
        query = body.get("query") or {}
        terms = query.get("$and", [query]) if isinstance(query, dict) else None
        if not isinstance(terms, list) or not all(isinstance(t, dict) for t in terms):
            raise ApiError(400, {"query": ["Expected {'$and': [ ... ]}."]})
        string = (body.get("query_string") or {}).get("string", "")
        with self.lock:
            self.tick()
            found = [
                a
                for a in self.annotations.values()
                if all(self._term_match(a, t) for t in terms)
                and (len(string) < 2 or self._text_match(a, string))
            ]
            return self._order(found, params.get("ordering", ""))

    def _search_values(self, ann: Annotation, name: str) -> list[Any]:
        base = self.base_url
        if name.startswith("field."):
            _, schema_id, kind = [*name.split("."), "", ""][:3]
            values = []
            for node in content.walk(ann.content):
                if node["category"] == "datapoint" and node["schema_id"] == schema_id:
                    values.append(_typed(kind, content.export_value(node)))
            return [v for v in values if v is not None]
        if name.startswith("metadata."):
            value = _lookup(ann.metadata, name[9:])
            return [] if value is _MISSING else [value]
        simple = {
            "status": ann.status,
            "queue": f"{base}/queues/{ann.queue_id}",
            "document": f"{base}/documents/{ann.document_id}",
            "annotation": f"{base}/annotations/{ann.id}",
            "original_file_name": self.documents[ann.document_id].file_name,
            "automated": ann.automated,
            "workspace": f"{base}/workspaces/{WORKSPACE}",
            "creator": f"{base}/users/{USER}",
            "modifier": f"{base}/users/{USER}" if ann.modifier_id else None,
            "messages": " ".join(str(m.get("content", "")) for m in ann.messages),
            "rir_poll_id": ann.rir_poll_id,
            "created_at": iso(ann.created_at),
            "arrived_at": iso(ann.created_at),
            **{k: iso(ann.stamps.get(k)) for k in TIMESTAMPS},
        }
        if name not in simple:
            raise ApiError(400, {"query": [f"Unknown field {name!r}."]})
        value = simple[name]
        return [] if value is None else [value]

    def _term_match(self, ann: Annotation, term: dict[str, Any]) -> bool:
        for name, condition in term.items():
            if name == "$and":
                if not all(self._term_match(ann, t) for t in condition):
                    return False
                continue
            values = self._search_values(ann, name)
            if not isinstance(condition, dict):
                condition = {"$eq": condition}
            for op, operand in condition.items():
                if not _compare(op, values, operand):
                    return False
        return True

    def search_cursor(self, body: Any, ordering: str, offset: int) -> str:
        """An opaque ``search_after``: the offset, bound to this body and ordering."""
        raw = json.dumps({"h": _body_hash(body, ordering), "o": offset}).encode()
        return base64.urlsafe_b64encode(raw).decode()

    def search_offset(self, cursor: str, body: Any, ordering: str) -> int:
        """The offset in a cursor; 400 if the body or ordering changed, 410 if unreadable."""
        try:
            data = json.loads(base64.urlsafe_b64decode(cursor.encode()))
            offset = int(data["o"])
        except (ValueError, KeyError, TypeError):
            raise ApiError(410, "search_after is not valid anymore.") from None
        if data.get("h") != _body_hash(body, ordering):
            raise ApiError(400, "Request body and ordering must not change between pages.")
        return offset


# --------------------------------------------------------------------------- helpers

_MISSING = object()


def _lookup(data: Any, path: str) -> Any:
    for part in path.split("__") if "__" in path else path.split("."):
        if not isinstance(data, dict) or part not in data:
            return _MISSING
        data = data[part]
    return data


def _metadata_match(metadata: dict[str, Any], path: str, wanted: str) -> bool:
    """``metadata__key=value``: the value at ``key`` (``__`` nests) equals ``wanted`` as text
    (JSON text for non-strings, so ``true``/``12`` match booleans and numbers)."""
    value = _lookup(metadata, path)
    if value is _MISSING:
        return False
    return (value if isinstance(value, str) else json.dumps(value)) == wanted


def _typed(kind: str, value: str) -> Any:
    if value in ("", None):
        return None
    if kind == "number":
        try:
            return Decimal(value)
        except InvalidOperation:
            return None
    return value


def _compare(op: str, values: list[Any], operand: Any) -> bool:
    """One MongoDB-style operator against a field's values (any value may match)."""
    if op == "$emptyOrMissing":
        empty = not any(v not in (None, "") for v in values)
        return empty if operand else not empty
    if op in ("$in", "$nin"):
        if not isinstance(operand, list):
            raise ApiError(400, {"query": [f"{op} expects a list."]})
        hit = any(_equal(v, o) for v in values for o in operand)
        return hit if op == "$in" else not hit
    if op == "$ne":
        return not any(_equal(v, operand) for v in values)
    if op == "$eq":
        return any(_equal(v, operand) for v in values)
    if op in ("$startsWith", "$anyTokenStartsWith", "$containsPrefixes"):
        prefix = str(operand).lower()
        if len(prefix) < 2:
            raise ApiError(400, {"query": [f"{op} needs at least 2 characters."]})
        texts = [str(v).lower() for v in values]
        if op == "$startsWith":
            return any(t.startswith(prefix) for t in texts)
        tokens = [tok for t in texts for tok in t.split()]
        words = prefix.split() if op == "$containsPrefixes" else [prefix]
        return all(any(tok.startswith(w) for tok in tokens) for w in words)
    if op in ("$gt", "$lt", "$gte", "$lte"):
        checks = {
            "$gt": lambda a, b: a > b,
            "$lt": lambda a, b: a < b,
            "$gte": lambda a, b: a >= b,
            "$lte": lambda a, b: a <= b,
        }
        for value in values:
            try:
                left, right = _comparable(value, operand)
                if checks[op](left, right):
                    return True
            except (TypeError, InvalidOperation):
                continue
        return False
    raise ApiError(400, {"query": [f"Unsupported operator {op!r}."]})


def _comparable(value: Any, operand: Any) -> tuple[Any, Any]:
    if isinstance(value, Decimal):
        return value, Decimal(str(operand))
    return str(value), str(operand)


def _equal(value: Any, operand: Any) -> bool:
    if isinstance(value, Decimal):
        try:
            return value == Decimal(str(operand))
        except InvalidOperation:
            return False
    return bool(value == operand)


def _body_hash(body: Any, ordering: str) -> str:
    text = json.dumps([body, ordering], sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]
