"""Small file-system helpers shared by connectors and the engine: durable, atomic writes."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def fsync_dir(path: Path) -> None:
    """Make a rename in ``path`` durable (the directory entry itself must reach the disk)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def process_umask() -> int:
    """The process's umask, read without changing it (``os.umask`` can only set it, which
    would race with other threads creating files): Linux shows it in ``/proc/self/status``."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    current = os.umask(0o022)  # no /proc: set and restore at once
    os.umask(current)
    return current


def default_file_mode() -> int:
    """What ``open()`` would give a new file: 0666 less the umask (0644 under 022)."""
    return 0o666 & ~process_umask()


def atomic_write(path: Path, data: bytes, *, mode: int | None = None) -> None:
    """Write a file so readers see the old content or the new, never a part (temp + rename).

    The file is private (0600, ``mkstemp``'s) unless ``mode`` is given: exports for other
    programs to read pass one (``default_file_mode()`` or the configured one)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name[:50]}.", suffix=".tmp")
    try:
        if mode is not None:
            os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp_name, path)
        fsync_dir(path.parent)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
