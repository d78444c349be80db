"""Putting a file into a folder without ever replacing one that is there.

A hard link fails atomically when the name is taken; a clash gets `` (1)``, `` (2)``, …
suffixes, and every name is shortened to the file system's ``NAME_MAX``. Moves across file
systems copy to a hidden temporary name, fsync, and place that.
"""

from __future__ import annotations

import errno
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

_NO_HARDLINKS = frozenset(
    {errno.EPERM, errno.EACCES, errno.EMLINK, errno.ENOTSUP, errno.EOPNOTSUPP, errno.ENOSYS}
)
_MAX_NAME_CANDIDATES = 10_000
_LINK_NOFOLLOW = os.link in os.supports_follow_symlinks


def encoded_len(text: str) -> int:
    """The length of a name on disk, in bytes (what ``NAME_MAX`` counts)."""
    return len(os.fsencode(text))


def _name_max(directory: Path) -> int:
    try:
        return int(os.pathconf(directory, "PC_NAME_MAX"))
    except (OSError, ValueError, AttributeError):
        return 255


def _candidate_names(name: str, max_bytes: int) -> Iterator[str]:
    """``name``, then ``stem (1).ext``, ``stem (2).ext``, …, each shortened to fit ``max_bytes``."""
    stem, ext = os.path.splitext(name)
    if not stem or encoded_len(ext) > 32:
        stem, ext = name, ""
    for index in range(_MAX_NAME_CANDIDATES):
        tail = (f" ({index})" if index else "") + ext
        budget = max_bytes - encoded_len(tail)
        cut = stem
        while cut and encoded_len(cut) > budget:
            cut = cut[:-1]
        yield (cut or "_") + tail


def _place(src: Path, dest: Path) -> None:
    """Rename ``src`` to ``dest`` without ever replacing an existing ``dest``.

    A hard link fails atomically when ``dest`` exists; where hard links are not available (SMB,
    FAT, protected_hardlinks) an existence check plus rename is the best there is.
    """
    try:
        if _LINK_NOFOLLOW:
            os.link(src, dest, follow_symlinks=False)
        else:  # pragma: no cover - platforms without linkat
            os.link(src, dest)
    except FileExistsError:
        raise
    except OSError as exc:
        if exc.errno not in _NO_HARDLINKS:
            raise
        if os.path.lexists(dest):
            raise FileExistsError(errno.EEXIST, "destination exists", str(dest)) from None
        os.rename(src, dest)
        return
    try:
        os.unlink(src)
    except OSError:
        os.unlink(dest)
        raise


def _temporary_path(directory: Path) -> Path:
    """A hidden name in ``directory``: ignored by the folder source (``.*``) while it exists."""
    return directory / f".docrelay-{uuid.uuid4().hex}.tmp"


def stage_copy(src: Path, dest_dir: Path, *, content_only: bool = False) -> Path:
    """Copy ``src`` to a hidden temporary name in ``dest_dir`` and fsync it, ready to be placed
    without clobbering.

    By default the copy is what a move would leave: a symlink is copied as the link, mode and
    times come along. ``content_only`` copies the bytes alone, for copies of stored blobs (a
    read-only blob must not make a read-only copy).
    """
    staged = _temporary_path(dest_dir)
    try:
        if content_only:
            shutil.copyfile(src, staged)
        else:
            shutil.copy2(src, staged, follow_symlinks=False)
        if not staged.is_symlink():
            with staged.open("rb") as stream:
                os.fsync(stream.fileno())
    except BaseException:
        staged.unlink(missing_ok=True)
        raise
    return staged


def move_no_clobber(
    src: Path, dest_dir: Path, *, name: str | None = None, reserve_bytes: int = 0
) -> Path:
    """Move a file into ``dest_dir`` under ``name`` (default: its own), or ``name (1).ext`` …
    on a clash.

    Never overwrites. Names are shortened to fit the filesystem's limit minus ``reserve_bytes``
    (room for a ``.reason.txt`` suffix). Works across filesystems (copy, fsync, then place).
    A symlink is moved as the link itself. ``name`` must be a plain file name (see
    ``connectors.filenames.safe_filename``). Returns the new path.
    """
    dest_dir.mkdir(parents=True, exist_ok=True)
    names = _candidate_names(name or src.name, _name_max(dest_dir) - reserve_bytes)
    source, staged = src, False
    name = next(names)
    try:
        while True:
            dest = dest_dir / name
            try:
                _place(source, dest)
            except FileExistsError:
                name = next(names, "")
                if not name:
                    raise
                continue
            except OSError as exc:
                if exc.errno != errno.EXDEV or staged:
                    raise
                source, staged = stage_copy(src, dest_dir), True
                continue
            break
    finally:
        if staged and os.path.lexists(source):
            source.unlink(missing_ok=True)
    if staged:
        src.unlink()
    return dest


def write_atomic(path: Path, text: str) -> None:
    """Write a text file whole or not at all (temporary name, fsync, rename).

    Unlike ``connectors.fsutil.atomic_write`` the file gets the usual ``0666 & ~umask`` mode,
    not ``mkstemp``'s 0600: these files are for the people who read the folder.
    """
    temporary = _temporary_path(path.parent)
    try:
        with temporary.open("x", encoding="utf-8") as stream:
            stream.write(text)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
