"""The files ``after = "keep"`` has taken, remembered in ``kept.json`` across restarts.

A kept file stays in the watched folder, so without this record every restart would offer it
again. It is keyed by the path relative to the folder and remembers (size, mtime_ns): a kept
file that changes is offered again. Losing the record costs nothing but repeats: the store
recognises the files.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Mapping
from pathlib import Path

from connectors.filenames import display
from connectors.fsutil import atomic_write

log = logging.getLogger(__name__)

KEPT_FILE = "kept.json"
"""In the source's ``data_dir``: the files ``after = "keep"`` has taken."""
KEPT_SAVE_INTERVAL = 1.0
"""Seconds between writes of ``KEPT_FILE``: a burst of files costs one fsync a second, not one
each. A crash loses at most this much, and those files are merely offered again (the store
recognises them)."""
_KEPT_VERSION = 1

Signature = tuple[int, int]
"""(size, mtime_ns) of a file when it was taken."""


class KeptFiles:
    """Relative path → signature of the files kept in place, and their persistence.

    Thread-safe: the source's worker adds and looks up, scans forget, and ``save`` may run on
    the worker and on the thread calling ``stop`` at once.
    """

    def __init__(self, path: Path, root: Path, *, clock: Callable[[], float], label: str) -> None:
        self.path = path
        """Where the record is written (``<data_dir>/kept.json``)."""
        self._root = root
        """The watched folder: a record written for another folder is not used."""
        self._clock = clock
        self._label = label
        self._lock = threading.Lock()
        """Guards the fields below."""
        self._files: dict[str, Signature] = {}
        self._dirty = False
        self._saved_at = float("-inf")
        self._save_lock = threading.Lock()
        """Serialises writes of the record, so a later snapshot is never overwritten."""
        self._save_error: str | None = None

    def get(self, rel: str) -> Signature | None:
        with self._lock:
            return self._files.get(rel)

    def add(self, rel: str, signature: Signature) -> None:
        with self._lock:
            self._files[rel] = signature
            self._dirty = True

    def snapshot(self) -> dict[str, Signature]:
        with self._lock:
            return dict(self._files)

    def forget_gone(self, snapshot: Mapping[str, Signature], present: set[str]) -> None:
        """Forget the files of ``snapshot`` not ``present`` any more, unless re-kept since."""
        with self._lock:
            for rel, signature in snapshot.items():
                if rel not in present and self._files.get(rel) == signature:
                    del self._files[rel]
                    self._dirty = True

    @property
    def dirty(self) -> bool:
        """Changed since the last write."""
        with self._lock:
            return self._dirty

    def save_due(self) -> float | None:
        """Clock time the record should be written, or None when nothing changed."""
        with self._lock:
            if not self._dirty:
                return None
            return self._saved_at + KEPT_SAVE_INTERVAL

    def load(self) -> None:
        """Read the record written before a restart.

        Anything unreadable, or a record written for another folder, is ignored with a warning:
        the kept files are then offered again, and the store recognises them.
        """
        path = self.path
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            return
        except OSError as exc:
            log.warning("folder %s: cannot read %s: %s", self._label, path, exc)
            return
        try:
            data = json.loads(raw)
            if data.get("version") != _KEPT_VERSION:
                raise ValueError(f"unknown version {data.get('version')!r}")
            if data.get("root") != str(self._root):
                log.info(
                    "folder %s: %s is for %s, not %s; ignoring it",
                    self._label,
                    path,
                    display(str(data.get("root"))),
                    display(str(self._root)),
                )
                return
            kept: dict[str, Signature] = {}
            for rel, entry in data["files"].items():
                size, mtime_ns = entry[0], entry[1]
                if type(size) is not int or type(mtime_ns) is not int:
                    raise ValueError(f"bad entry for {rel!r}")
                kept[rel] = (size, mtime_ns)
        except (ValueError, TypeError, KeyError, IndexError, AttributeError) as exc:
            log.warning(
                "folder %s: ignoring %s (%s); files kept in the folder are offered again",
                self._label,
                path,
                exc,
            )
            return
        with self._lock:
            self._files = kept
        log.debug("folder %s: %d kept file(s) remembered", self._label, len(kept))

    def save(self) -> None:
        """Write the record atomically if anything changed since the last write.

        The snapshot is taken under the save lock, so a later snapshot is never overwritten by
        an earlier one. The sha256 slot is null: the source does not hash, the store does. A
        failed write is logged (once per distinct error) and retried at the next save.
        """
        with self._save_lock:
            with self._lock:
                if not self._dirty:
                    return
                snapshot = sorted(self._files.items())
                self._dirty = False
                self._saved_at = self._clock()
            data = {
                "version": _KEPT_VERSION,
                "root": str(self._root),
                "files": {rel: [size, mtime_ns, None] for rel, (size, mtime_ns) in snapshot},
            }
            try:
                atomic_write(self.path, json.dumps(data, indent=1).encode("ascii"))
            except OSError as exc:
                with self._lock:
                    self._dirty = True
                complaint = str(exc)
                level = logging.DEBUG if complaint == self._save_error else logging.WARNING
                self._save_error = complaint
                log.log(
                    level,
                    "folder %s: cannot save the kept files to %s: %s; retrying",
                    self._label,
                    self.path,
                    exc,
                )
                return
            self._save_error = None
