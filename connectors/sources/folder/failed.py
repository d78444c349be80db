"""The failed folder: files that were rejected, each with a ``<name>.reason.txt`` beside it.

Two kinds land there: originals the source rejected itself (``quarantine``), and copies of
stored documents a vendor rejected later (``add_copy``). A reason file is ``key: value`` lines
for the person who looks; its ``document: <id>`` line also tells the source, after a restart,
which documents are there already (``document_ids_in``). Nothing here deletes or overwrites.
"""

from __future__ import annotations

import logging
import os
import re
from datetime import UTC, datetime
from pathlib import Path

from connectors.filenames import display
from connectors.sources.folder.placement import (
    encoded_len,
    move_no_clobber,
    stage_copy,
    write_atomic,
)

log = logging.getLogger(__name__)

REASON_SUFFIX = ".reason.txt"
_DOCUMENT_LINE = re.compile(rb"^document: (\d+)$", re.MULTILINE)
_REASON_READ_BYTES = 64 * 1024
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def one_line(text: str) -> str:
    """Control characters (newlines above all) become spaces, so a vendor's multi-line message
    cannot break the reason file's ``key: value`` lines or forge a ``document:`` line."""
    return _CONTROL.sub(" ", text)


def reason_text(
    reason: str, file: str, original: str, size: int, document_id: int | None = None
) -> str:
    """The reason file's lines: why, which file, where it came from, its size, when."""
    text = (
        f"reason: {one_line(reason)}\n"
        f"file: {one_line(file)}\n"
        f"original: {one_line(original)}\n"
        f"size: {size} bytes\n"
        f"time: {datetime.now(UTC).isoformat(timespec='seconds')}\n"
    )
    if document_id is not None:
        text += f"document: {document_id}\n"
    return text


def write_reason(dest: Path, text: str) -> None:
    """Write ``<dest>.reason.txt``; a failure only costs the explanation, so it is logged."""
    try:
        write_atomic(dest.with_name(dest.name + REASON_SUFFIX), text)
    except OSError as exc:
        log.warning("could not write the reason file for %s: %s", display(str(dest)), exc)


def quarantine(
    path: Path, failed_dir: Path, reason: str, *, document_id: int | None = None
) -> Path:
    """Move a rejected file into ``failed_dir`` and write ``<name>.reason.txt`` beside it.

    Never overwrites or deletes anything. The reason file is written atomically; if only that
    write fails the file stays quarantined (the store has the reason too) and a warning is logged.
    ``document_id``, when the store has one, is written as a ``document: <id>`` line: it is how
    ``FolderSource.rejected`` knows a document is in the failed folder already. Returns the
    quarantined file's path.
    """
    dest = move_no_clobber(path, failed_dir, reserve_bytes=encoded_len(REASON_SUFFIX))
    try:
        size = os.lstat(dest).st_size
    except OSError as exc:
        log.warning("could not write the reason file for %s: %s", display(str(dest)), exc)
        return dest
    text = reason_text(reason, display(path.name), display(str(path)), size, document_id)
    write_reason(dest, text)
    return dest


def add_copy(blob: Path, failed_dir: Path, name: str, text: str) -> Path:
    """Put a copy of a stored document into ``failed_dir`` as ``name`` (a plain file name; a
    clash gets a `` (1)`` suffix) and write ``text`` as its reason file.

    The copy is staged under a hidden name first, so the failed folder never shows part of
    one. OSError propagates when the copy cannot be made (a missing blob, a full disk); a
    reason file that cannot be written is only logged. Returns the copy's path.
    """
    failed_dir.mkdir(parents=True, exist_ok=True)
    staged = stage_copy(blob, failed_dir, content_only=True)
    try:
        dest = move_no_clobber(
            staged, failed_dir, name=name, reserve_bytes=encoded_len(REASON_SUFFIX)
        )
    finally:
        staged.unlink(missing_ok=True)
    write_reason(dest, text)
    return dest


def document_ids_in(directory: Path) -> set[int]:
    """The ``document: <id>`` lines of every reason file under ``directory``."""
    ids: set[int] = set()
    for folder, dirnames, filenames in os.walk(directory):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for filename in filenames:
            if not filename.endswith(REASON_SUFFIX):
                continue
            try:
                with open(os.path.join(folder, filename), "rb") as stream:
                    head = stream.read(_REASON_READ_BYTES)
            except OSError:
                continue
            ids.update(int(match) for match in _DOCUMENT_LINE.findall(head))
    return ids
