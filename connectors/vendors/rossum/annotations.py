"""Rossum annotations as the vendor and the workflow see them: statuses, ids, and the
annotation just read, kept for the one call that follows at once."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlsplit

from connectors.errors import TransientError

READY_ORDER: dict[str, int] = {
    "to_review": 1,
    "reviewing": 1,
    "postponed": 1,
    "in_workflow": 2,
    "confirmed": 3,
    "exporting": 4,
    "failed_export": 4,
    "exported": 5,
}
"""How far an extracted annotation is; ``ready_status`` picks the first rank that counts."""

READY_RANK: dict[str, int] = {"to_review": 1, "confirmed": 3, "exported": 5}

IMPORTING = frozenset({"created", "importing"})
GONE = {
    "failed_import": "Rossum could not import the document",
    "rejected": "rejected in Rossum",
    "deleted": "deleted in Rossum",
    "purged": "deleted and purged in Rossum",
    "split": "split into several documents in Rossum; docrelay does not follow the parts",
}
STARTABLE = ("to_review", "postponed", "confirmed")
"""Statuses our ``start`` accepts; ``reviewing`` only when the session is ours."""
DONE = frozenset({"confirmed", "exporting", "exported"})
REFUSED = (400, 404, 405, 409, 422)
"""Answers to an action that may mean "already done" (checked by reading the annotation)."""

ANNOTATION_PATH = re.compile(r"/annotations/(\d+)/?$")

RECENT_SECONDS = 5.0
"""How long a polled, ready annotation stands in for a fresh GET in ``fetch``."""


def annotation_id(vendor_ref: str, data: Mapping[str, Any]) -> int | None:
    """The annotation id from the stored data or the reference; None while the upload task
    has not produced one."""
    stored = data.get("annotation_id")
    if isinstance(stored, int) and not isinstance(stored, bool):
        return stored
    if isinstance(stored, str) and stored.isdigit():
        return int(stored)
    if vendor_ref.isdigit():
        return int(vendor_ref)
    match = ANNOTATION_PATH.search(urlsplit(vendor_ref).path)
    return int(match.group(1)) if match else None


def id_of(url: str) -> int:
    """The id in an annotation URL; TransientError for any other URL."""
    match = ANNOTATION_PATH.search(urlsplit(url).path)
    if match is None:
        raise TransientError(f"Rossum named an annotation by an unexpected URL: {url[:200]}")
    return int(match.group(1))


def id_or(url: Any, default: int) -> int:
    """The trailing id of an object URL (a queue, a user), else ``default``."""
    if isinstance(url, str):
        match = re.search(r"/(\d+)/?$", urlsplit(url).path)
        if match:
            return int(match.group(1))
    return default


def sort_id(annotation: Mapping[str, Any]) -> int:
    value = annotation.get("id")
    return value if isinstance(value, int) else -1


def messages_text(value: Any) -> str:
    """Rossum's messages (``[{"content": …}]`` or the older ``[{"error": …}]``) as one line."""
    if not isinstance(value, list):
        return ""
    texts = []
    for item in value:
        if isinstance(item, dict):
            text = item.get("content") or item.get("error") or item.get("detail")
            if text:
                texts.append(str(text))
        elif isinstance(item, str):
            texts.append(item)
    return "; ".join(texts)[:1000]


class RecentAnnotations:
    """An annotation just read, kept for the one call that follows at once (``purpose``): a
    ready poll's for the ``fetch``, a fetch's for the export status report. Each saves one
    request; anything later reads afresh. Thread-safe."""

    def __init__(
        self, seconds: float = RECENT_SECONDS, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.seconds = seconds
        self.clock = clock
        self._lock = threading.Lock()
        self._kept: dict[tuple[str, int], tuple[float, dict[str, Any]]] = {}

    def remember(
        self, annotation_id: int, annotation: dict[str, Any], purpose: str = "fetch"
    ) -> None:
        now = self.clock()
        with self._lock:
            for key in [k for k, (at, _) in self._kept.items() if now - at > self.seconds]:
                del self._kept[key]
            self._kept[(purpose, annotation_id)] = (now, annotation)

    def recall(self, annotation_id: int, purpose: str = "fetch") -> dict[str, Any] | None:
        """The kept annotation (taken: a second recall reads afresh), or None."""
        with self._lock:
            at, annotation = self._kept.pop((purpose, annotation_id), (0.0, None))
        return annotation if self.clock() - at <= self.seconds else None
