"""The settings of a watched folder."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from connectors.base import SourceSettings

MiB = 1024 * 1024


class FolderSettings(SourceSettings):
    """A folder watched for incoming documents."""

    kind: Literal["folder"] = "folder"
    """Selects the watched-folder source."""
    path: Path
    """The folder to watch; created when missing."""
    after: Literal["keep", "move", "delete"] = "move"
    """What happens to a file once it is safely stored: ``move`` it to ``processed_dir``,
    ``delete`` it, or ``keep`` it in place. A kept file is not offered again, also after a
    restart, until its size or modification time changes."""
    processed_dir: str = "processed"
    """Where ``after = "move"`` puts taken files; relative to ``path`` unless absolute."""
    failed_dir: str = "failed"
    """Where rejected files go, each with a ``<name>.reason.txt``; relative to ``path`` unless
    absolute. Rejected files are never deleted."""
    polling: bool = False
    """Poll instead of using inotify. Needed for NFS/SMB mounts, where inotify sees nothing."""
    poll_interval: float = Field(5.0, gt=0)
    """Seconds between directory polls when polling."""
    settle_seconds: float = Field(2.0, ge=0)
    """A file's size and mtime must stay unchanged this long before it is taken."""
    incomplete_grace_seconds: float = Field(300.0, ge=0)
    """A file that looks cut short (a PDF without ``%%EOF``) is waited for this long after its
    last change, then rejected."""
    recursive: bool = False
    """Also take files from subfolders (``processed_dir`` and ``failed_dir`` are skipped)."""
    follow_symlinks: bool = False
    """Take symlinked files and folders too, but only when they point inside ``path``."""
    ignore: list[str] = Field(default_factory=list)
    """Extra glob patterns of names to leave alone, added to the built-in ones (``*.part``,
    ``~$*``, ``.*``, ``Thumbs.db``, …)."""
    max_file_bytes: int = Field(100 * MiB, gt=0)
    """Larger files are rejected without being read."""
    workers: int = Field(1, ge=1, le=16)
    """Files taken (hashed, stored, committed, released) at the same time. A take waits mostly
    for the disk (fsyncs); on a slow disk or a network share more takers overlap those waits
    (intake of 1,000 invoices went from 20 to 11 s with 2), at the cost of CPU the rest of
    the pipeline wants on a small machine (no end-to-end gain measured on 2 cores)."""

    @field_validator("path")
    @classmethod
    def _path_not_blank(cls, value: Path) -> Path:
        if not str(value).strip() or value == Path():
            raise ValueError("must name a folder (got an empty path or '.')")
        return value

    @field_validator("processed_dir", "failed_dir")
    @classmethod
    def _dir_not_watched_folder(cls, value: str) -> str:
        if not value.strip() or Path(value) == Path():
            raise ValueError("must name a folder other than the watched folder itself")
        return value

    @field_validator("ignore")
    @classmethod
    def _patterns(cls, value: list[str]) -> list[str]:
        for pattern in value:
            if not pattern.strip():
                raise ValueError("patterns must not be empty")
            if "/" in pattern:
                raise ValueError(f"{pattern!r}: patterns match single names, not paths ('/')")
        return value

    @model_validator(mode="after")
    def _distinct_dirs(self) -> FolderSettings:
        if self.processed_path == self.failed_path:
            raise ValueError("processed_dir and failed_dir must be different folders")
        return self

    @property
    def processed_path(self) -> Path:
        return self.path / self.processed_dir

    @property
    def failed_path(self) -> Path:
        return self.path / self.failed_dir
