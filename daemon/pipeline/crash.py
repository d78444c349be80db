"""Named crash points for the crash tests.

``DOCRELAY_CRASH_AT=<name>[,<name>…]`` makes the daemon SIGKILL itself the first time it reaches
one of the named checkpoints (``<name>@<n>`` at the n-th time). A point reached with a subject
(the document's filename) can be limited to it: ``<name>=<subject>`` crashes only there, which
is how a test plants a poison pill that kills every process that tries it. Unset in
production, where a call costs one dict lookup.
"""

from __future__ import annotations

import os
import signal
import threading

_lock = threading.Lock()
_plan: dict[tuple[str, str | None], int] = {}
for _item in filter(None, os.environ.get("DOCRELAY_CRASH_AT", "").split(",")):
    _point, _, _count = _item.strip().partition("@")
    _name, _, _subject = _point.partition("=")
    _plan[(_name, _subject or None)] = int(_count or 1)

POINTS = (
    "after_blob_write",
    "after_document_commit",
    "before_source_release",
    "after_upload_response",
    "in_vendor_call",  # as a vendor reads the document (submit or fetch); subject: its filename
    "after_fetch_commit",
    "after_normalize_commit",  # only when a stored result is normalised again
    "before_delivery",
    "after_delivery_push",
    "after_correction_apply",  # a docrelay_corrections row applied, its mark not yet committed
)
"""Every checkpoint the code plants, in pipeline order (documented for the tests)."""


def crash_point(name: str, subject: str | None = None) -> None:
    """SIGKILL this process if the plan says so: no cleanup, no flush, like a power cut."""
    if not _plan:
        return
    key = (name, subject) if (name, subject) in _plan else (name, None)
    if key not in _plan:
        return
    with _lock:
        _plan[key] -= 1
        if _plan[key] > 0:
            return
    os.kill(os.getpid(), signal.SIGKILL)
