"""Which paths a watched folder may take files from (RELIABILITY 10).

A file is taken only when its resolved path lies inside the watched folder and outside the
folders the source writes to (``processed_dir``, ``failed_dir``), and no component of its path
matches an ignore pattern. These rules cost no I/O, so every event and directory entry is put
through them; whether a path is a symlink is for the caller to find out.
"""

from __future__ import annotations

import fnmatch
import os
from dataclasses import dataclass
from pathlib import Path

from connectors.sources.folder.failed import REASON_SUFFIX
from connectors.sources.folder.settings import FolderSettings

DEFAULT_IGNORE: tuple[str, ...] = (
    "*.part",
    "*.partial",
    "*.tmp",
    "*.crdownload",
    "*.download",
    "~$*",
    ".~lock.*",
    ".DS_Store",
    "Thumbs.db",
    "desktop.ini",
    "@eaDir",
    "#recycle",
    ".*",
    f"*{REASON_SUFFIX}",
)
"""Names never taken (matched case-insensitively against every path component): partial
downloads, Office lock files, NAS and desktop litter, dot files/dirs (which also covers our own
temporary files), and reason files."""


@dataclass(frozen=True, slots=True)
class FolderPaths:
    """The watched folder, the folders written to, and the names left alone."""

    root: Path
    processed: Path
    failed: Path
    ignore: tuple[str, ...]
    """Lower-case glob patterns: the built-in ones and the configured ones."""
    recursive: bool

    @classmethod
    def configured(cls, settings: FolderSettings) -> FolderPaths:
        """The paths as configured, absolute but not resolved: what holds before ``resolved``."""
        root = settings.path.absolute()
        return cls(
            root=root,
            processed=root / settings.processed_dir,
            failed=root / settings.failed_dir,
            ignore=tuple(p.lower() for p in (*DEFAULT_IGNORE, *settings.ignore)),
            recursive=settings.recursive,
        )

    @classmethod
    def resolved(cls, settings: FolderSettings) -> FolderPaths:
        """Create the folders that are missing and resolve them all.

        Raises ``NotADirectoryError`` when the watched path is no folder and ``ValueError``
        when processed/failed are the same folder, or the watched folder or one containing it.
        """
        settings.path.mkdir(parents=True, exist_ok=True)
        root = settings.path.resolve(strict=True)
        if not root.is_dir():
            raise NotADirectoryError(f"folder {settings.name}: {root} is not a folder")
        failed, processed = root / settings.failed_dir, root / settings.processed_dir
        failed.mkdir(parents=True, exist_ok=True)
        if settings.after == "move":
            processed.mkdir(parents=True, exist_ok=True)
        failed, processed = failed.resolve(), processed.resolve()
        for label, directory in (("failed_dir", failed), ("processed_dir", processed)):
            if root.is_relative_to(directory):
                raise ValueError(
                    f"folder {settings.name}: {label} {directory} must not be the watched"
                    f" folder {root} or contain it"
                )
        if failed == processed:
            raise ValueError(
                f"folder {settings.name}: processed_dir and failed_dir are the same folder"
            )
        configured = cls.configured(settings)
        return cls(root, processed, failed, configured.ignore, configured.recursive)

    def ignored_name(self, name: str) -> bool:
        lowered = name.lower()
        return any(fnmatch.fnmatchcase(lowered, pattern) for pattern in self.ignore)

    def excluded_entry(self, entry: os.DirEntry[str]) -> bool:
        """An ignored name, or the processed or failed folder itself."""
        if self.ignored_name(entry.name):
            return True
        return Path(entry.path) in (self.processed, self.failed)

    def in_excluded_dir(self, path: Path) -> bool:
        return path.is_relative_to(self.processed) or path.is_relative_to(self.failed)

    def inside(self, real: Path) -> bool:
        """A resolved path we may read: inside the root, outside processed/failed."""
        return real.is_relative_to(self.root) and not self.in_excluded_dir(real)

    def candidate(self, path: Path) -> bool:
        """Cheap, I/O-free filter for event paths."""
        try:
            parts = path.relative_to(self.root).parts
        except ValueError:
            return False
        if not parts or (len(parts) > 1 and not self.recursive):
            return False
        if any(self.ignored_name(part) for part in parts):
            return False
        return not self.in_excluded_dir(path)

    def relative(self, path: Path) -> Path:
        return path.relative_to(self.root)
