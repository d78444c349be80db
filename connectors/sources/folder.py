"""The watched-folder intake source.

Files dropped into a folder (by a scanner, a person, an SMB share) are taken once their size and
mtime have stopped changing, checked cheaply (``filecheck``), committed by the engine
(``sink.ingest``) and only then moved to ``processed/``, deleted or kept. Unusable files go to
``failed/`` with a ``<name>.reason.txt`` beside them; a rejected file is never deleted.

Watchdog events only make intake faster. ``scan()`` finds everything on its own, so lost events
(NFS/SMB mounts, an exhausted inotify limit, a queue overflow) delay files but never lose them.

Threads: the observer thread only records paths and wakes the worker; the single worker thread
stats, checks, calls the sink (which may be slow) and releases, one file at a time.
"""

from __future__ import annotations

import errno
import fnmatch
import logging
import os
import shutil
import stat
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, ClassVar, Literal

from pydantic import Field, field_validator, model_validator
from watchdog.events import (
    EVENT_TYPE_CLOSED,
    EVENT_TYPE_CREATED,
    EVENT_TYPE_MODIFIED,
    EVENT_TYPE_MOVED,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver
from watchdog.observers.polling import PollingObserverVFS

from connectors.base import (
    ConnectorContext,
    ConnectorSettings,
    IngestOutcome,
    IngestStatus,
    IntakeItem,
    IntakeSink,
    Source,
)
from connectors.sources.filecheck import CheckResult, Verdict, check_file, open_regular, sniff_mime

log = logging.getLogger(__name__)

MiB = 1024 * 1024
REASON_SUFFIX = ".reason.txt"

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

_NO_HARDLINKS = frozenset(
    {errno.EPERM, errno.EACCES, errno.EMLINK, errno.ENOTSUP, errno.EOPNOTSUPP, errno.ENOSYS}
)
_MAX_NAME_CANDIDATES = 10_000
_LINK_NOFOLLOW = os.link in os.supports_follow_symlinks


# --------------------------------------------------------------------------- settings


class FolderSettings(ConnectorSettings):
    """A folder watched for incoming documents."""

    kind: Literal["folder"] = "folder"
    """Selects the watched-folder source."""
    name: str
    """This source's name: recorded with every document as where it came from."""
    path: Path
    """The folder to watch; created when missing."""
    after: Literal["keep", "move", "delete"] = "move"
    """What happens to a file once it is safely stored: ``move`` it to ``processed_dir``,
    ``delete`` it, or ``keep`` it in place (it is then not offered again while this process runs;
    after a restart the store recognises it)."""
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
    rescan_interval: float = Field(60.0, gt=0)
    """Seconds between full rescans, the fallback for lost events (run by the daemon)."""
    recursive: bool = False
    """Also take files from subfolders (``processed_dir`` and ``failed_dir`` are skipped)."""
    follow_symlinks: bool = False
    """Take symlinked files and folders too, but only when they point inside ``path``."""
    ignore: list[str] = Field(default_factory=list)
    """Extra glob patterns of names to leave alone, added to the built-in ones (``*.part``,
    ``~$*``, ``.*``, ``Thumbs.db``, …)."""
    max_file_bytes: int = Field(100 * MiB, gt=0)
    """Larger files are rejected without being read."""

    @field_validator("name")
    @classmethod
    def _name_not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be empty")
        return value

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


# --------------------------------------------------------------------------- file placement


class FileChangedError(OSError):
    """The file changed between its check and its reading: it is offered again later."""


def _name_max(directory: Path) -> int:
    try:
        return int(os.pathconf(directory, "PC_NAME_MAX"))
    except (OSError, ValueError, AttributeError):
        return 255


def _encoded_len(text: str) -> int:
    return len(os.fsencode(text))


def _candidate_names(name: str, max_bytes: int) -> Iterator[str]:
    """``name``, then ``stem (1).ext``, ``stem (2).ext``, …, each shortened to fit ``max_bytes``."""
    stem, ext = os.path.splitext(name)
    if not stem or _encoded_len(ext) > 32:
        stem, ext = name, ""
    for index in range(_MAX_NAME_CANDIDATES):
        tail = (f" ({index})" if index else "") + ext
        budget = max_bytes - _encoded_len(tail)
        cut = stem
        while cut and _encoded_len(cut) > budget:
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


def _stage_copy(src: Path, dest_dir: Path) -> Path:
    """Copy ``src`` to a hidden temporary name in ``dest_dir`` (for moves across filesystems)."""
    staged = dest_dir / f".docrelay-{uuid.uuid4().hex}.tmp"
    try:
        shutil.copy2(src, staged, follow_symlinks=False)
        if not staged.is_symlink():
            with staged.open("rb") as stream:
                os.fsync(stream.fileno())
    except BaseException:
        staged.unlink(missing_ok=True)
        raise
    return staged


def move_no_clobber(src: Path, dest_dir: Path, *, reserve_bytes: int = 0) -> Path:
    """Move a file into ``dest_dir`` under its own name, or ``name (1).ext`` … on a clash.

    Never overwrites. Names are shortened to fit the filesystem's limit minus ``reserve_bytes``
    (room for a ``.reason.txt`` suffix). Works across filesystems (copy, fsync, then place).
    A symlink is moved as the link itself. Returns the new path.
    """
    dest_dir.mkdir(parents=True, exist_ok=True)
    names = _candidate_names(src.name, _name_max(dest_dir) - reserve_bytes)
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
                source, staged = _stage_copy(src, dest_dir), True
                continue
            break
    finally:
        if staged and os.path.lexists(source):
            source.unlink(missing_ok=True)
    if staged:
        src.unlink()
    return dest


def _write_atomic(path: Path, text: str) -> None:
    temporary = path.parent / f".docrelay-{uuid.uuid4().hex}.tmp"
    try:
        with temporary.open("x", encoding="utf-8") as stream:
            stream.write(text)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def _display(text: str) -> str:
    """A str safe for UTF-8 storage and JSON: undecodable name bytes become ``\\xNN``."""
    return os.fsencode(text).decode("utf-8", "backslashreplace")


def quarantine(path: Path, failed_dir: Path, reason: str) -> Path:
    """Move a rejected file into ``failed_dir`` and write ``<name>.reason.txt`` beside it.

    Never overwrites or deletes anything. The reason file is written atomically; if only that
    write fails the file stays quarantined (the store has the reason too) and a warning is logged.
    Returns the quarantined file's path.
    """
    dest = move_no_clobber(path, failed_dir, reserve_bytes=_encoded_len(REASON_SUFFIX))
    try:
        size = os.lstat(dest).st_size
        text = (
            f"reason: {reason}\n"
            f"file: {_display(path.name)}\n"
            f"original: {_display(str(path))}\n"
            f"size: {size} bytes\n"
            f"time: {datetime.now(UTC).isoformat(timespec='seconds')}\n"
        )
        _write_atomic(dest.with_name(dest.name + REASON_SUFFIX), text)
    except OSError as exc:
        log.warning("could not write the reason file for %s: %s", _display(str(dest)), exc)
    return dest


# --------------------------------------------------------------------------- the source


@dataclass(slots=True)
class _Pending:
    """Stability tracking for one path; only the worker thread changes it."""

    signature: tuple[int, int] | None = None
    """(size, mtime_ns) last seen."""
    since: float = 0.0
    """Clock time ``signature`` was first seen."""
    next_check: float = 0.0
    incomplete_since: float | None = None
    """Clock time the file was first found stable but incomplete."""


class _EventHandler(FileSystemEventHandler):
    """Runs on the observer thread: records paths, never touches the disk or the sink."""

    def __init__(self, source: FolderSource) -> None:
        super().__init__()
        self._source = source

    def dispatch(self, event: FileSystemEvent) -> None:
        try:
            self._source._on_event(event)
        except Exception:
            log.exception("folder %s: error handling %s", self._source.settings.name, event)


class FolderSource(Source):
    """Takes documents from a watched folder; see the module docstring."""

    kind: ClassVar[str] = "folder"
    settings_model: ClassVar[type[ConnectorSettings]] = FolderSettings

    stop_timeout: float = 30.0
    """Seconds ``stop`` waits for the item in flight (a slow sink) before giving up."""

    def __init__(self, settings: ConnectorSettings, context: ConnectorContext) -> None:
        if not isinstance(settings, FolderSettings):
            raise TypeError(f"FolderSource needs FolderSettings, got {type(settings).__name__}")
        super().__init__(settings, context)
        self.settings: FolderSettings = settings
        self._ignore = tuple(p.lower() for p in (*DEFAULT_IGNORE, *settings.ignore))
        self._cond = threading.Condition()
        self._pending: dict[Path, _Pending] = {}
        self._inflight: Path | None = None
        self._inflight_dirty = False
        self._kept: set[tuple[str, int, int]] = set()
        self._unreadable: dict[Path, str] = {}
        """Last read error per path, so a file we may not read is complained about once."""
        self._rescan_requested = False
        self._stopping = False
        self._started = False
        self._sink: IntakeSink | None = None
        self._observer: BaseObserver | None = None
        self._observer_lock = threading.Lock()
        self._worker: threading.Thread | None = None
        self._watch_mode: str | None = None
        self._root = settings.path.absolute()
        self._processed = self._root / settings.processed_dir
        self._failed = self._root / settings.failed_dir
        self._tick = max(0.02, min(0.5, settings.settle_seconds / 4))

    # ------------------------------------------------------------------ lifecycle

    def start(self, sink: IntakeSink) -> None:
        """Create the folders, start the worker and the observer, then run the startup scan."""
        if self._started:
            raise RuntimeError(f"folder source {self.settings.name!r} was already started")
        self._started = True
        self._sink = sink
        self._prepare_dirs()
        self._worker = threading.Thread(
            target=self._run, name=f"folder-{self.settings.name}", daemon=True
        )
        self._worker.start()
        try:
            self._start_observer()
            found = self.scan()
        except BaseException:
            self.stop()
            raise
        log.info(
            "folder %s: watching %s (%s), %d file(s) found at start",
            self.settings.name,
            _display(str(self._root)),
            self._watch_mode,
            found,
        )

    def stop(self) -> None:
        """Stop the observer, let the worker finish the item in flight, and join both."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        with self._observer_lock:
            observer, self._observer = self._observer, None
        if observer is not None:
            observer.stop()
            observer.join(timeout=10)
            if observer.is_alive():
                log.warning("folder %s: the observer did not stop in time", self.settings.name)
        worker = self._worker
        if worker is not None and worker is not threading.current_thread():
            worker.join(timeout=self.stop_timeout)
            if worker.is_alive():
                log.warning(
                    "folder %s: still busy with %s after %.0fs; leaving it to finish",
                    self.settings.name,
                    _display(str(self._inflight)),
                    self.stop_timeout,
                )
        self._watch_mode = None

    def health(self) -> dict[str, Any]:
        with self._cond:
            pending = len(self._pending) + (self._inflight is not None)
        return {
            "watch_mode": self._watch_mode or "stopped",
            "watching": self._watching(),
            "pending": pending,
            "path": str(self._root),
        }

    def _watching(self) -> bool:
        """The observer and its emitter threads are alive (an emitter stops for good when the
        watched folder is deleted, or a poll fails)."""
        observer = self._observer
        if observer is None or not observer.is_alive():
            return False
        emitters = list(observer.emitters)
        return bool(emitters) and all(emitter.is_alive() for emitter in emitters)

    def _ensure_watching(self) -> None:
        """Restart a watch that died, e.g. the folder was deleted and re-created."""
        with self._observer_lock:
            if not self._started or self._stopping or self._watching():
                return
            if not self._root.is_dir():
                return
            log.warning(
                "folder %s: the %s watch on %s stopped; restarting it",
                self.settings.name,
                self._watch_mode,
                _display(str(self._root)),
            )
            old, self._observer = self._observer, None
            try:
                if old is not None:
                    old.stop()
                    old.join(timeout=10)
                self._start_observer()
            except Exception:
                log.exception("folder %s: could not restart the watch", self.settings.name)

    def _resolve_dir(self, setting: str) -> Path:
        directory = Path(setting)
        return directory if directory.is_absolute() else self._root / directory

    def _prepare_dirs(self) -> None:
        self.settings.path.mkdir(parents=True, exist_ok=True)
        self._root = self.settings.path.resolve(strict=True)
        if not self._root.is_dir():
            raise NotADirectoryError(f"folder {self.settings.name}: {self._root} is not a folder")
        dirs = [self._resolve_dir(self.settings.failed_dir)]
        if self.settings.after == "move":
            dirs.append(self._resolve_dir(self.settings.processed_dir))
        for directory in dirs:
            directory.mkdir(parents=True, exist_ok=True)
        self._failed = self._resolve_dir(self.settings.failed_dir).resolve()
        self._processed = self._resolve_dir(self.settings.processed_dir).resolve()
        for label, directory in (("failed_dir", self._failed), ("processed_dir", self._processed)):
            if self._root.is_relative_to(directory):
                raise ValueError(
                    f"folder {self.settings.name}: {label} {directory} must not be the watched"
                    f" folder {self._root} or contain it"
                )
        if self._failed == self._processed:
            raise ValueError(
                f"folder {self.settings.name}: processed_dir and failed_dir are the same folder"
            )

    def _start_observer(self) -> None:
        handler = _EventHandler(self)
        if not self.settings.polling:
            observer = Observer()
            try:
                observer.schedule(handler, str(self._root), recursive=self.settings.recursive)
                observer.start()
            except OSError as exc:
                log.error(
                    "folder %s: cannot watch %s with inotify (%s); polling every %gs instead."
                    " Raise fs.inotify.max_user_watches/max_user_instances, or set"
                    " polling = true for this folder.",
                    self.settings.name,
                    _display(str(self._root)),
                    exc,
                    self.settings.poll_interval,
                )
                observer.unschedule_all()
            else:
                self._observer, self._watch_mode = observer, "inotify"
                return
        # PollingObserverVFS is PollingObserver with our own lstat/listdir: it never descends
        # into ignored or processed/failed folders nor follows symlinks (no loops, no /etc).
        polling = PollingObserverVFS(
            os.lstat, self._poll_listdir, polling_interval=self.settings.poll_interval
        )
        polling.schedule(handler, str(self._root), recursive=self.settings.recursive)
        polling.start()
        self._observer, self._watch_mode = polling, "polling"

    def _poll_listdir(self, path: str | None) -> Iterator[os.DirEntry[str]]:
        with os.scandir(path) as entries:
            kept = [e for e in entries if not self._excluded_entry(e)]
        return iter(kept)

    # ------------------------------------------------------------------ path rules

    def _ignored_name(self, name: str) -> bool:
        lowered = name.lower()
        return any(fnmatch.fnmatchcase(lowered, pattern) for pattern in self._ignore)

    def _excluded_entry(self, entry: os.DirEntry[str]) -> bool:
        if self._ignored_name(entry.name):
            return True
        return Path(entry.path) in (self._processed, self._failed)

    def _in_excluded_dir(self, path: Path) -> bool:
        return path.is_relative_to(self._processed) or path.is_relative_to(self._failed)

    def _inside(self, real: Path) -> bool:
        """A resolved path we may read: inside the root, outside processed/failed."""
        return real.is_relative_to(self._root) and not self._in_excluded_dir(real)

    def _candidate_path(self, path: Path) -> bool:
        """Cheap, I/O-free filter for event paths."""
        try:
            parts = path.relative_to(self._root).parts
        except ValueError:
            return False
        if not parts or (len(parts) > 1 and not self.settings.recursive):
            return False
        if any(self._ignored_name(part) for part in parts):
            return False
        return not self._in_excluded_dir(path)

    def _vetted_stat(self, path: Path) -> os.stat_result | None:
        """The file's stat when it may be taken now; None for symlinks, escapes, non-files.

        FileNotFoundError propagates. The resolved path must stay inside the root, and without
        ``follow_symlinks`` it must equal the path itself (no symlink anywhere on the way).
        """
        st = os.lstat(path)
        real = path.resolve()
        if real != path:
            if not self.settings.follow_symlinks:
                log.debug("folder %s: skipping symlink %s", self.settings.name, path)
                return None
            if not self._inside(real):
                log.info(
                    "folder %s: skipping %s: it points outside the folder",
                    self.settings.name,
                    _display(str(path)),
                )
                return None
            st = os.stat(path)
        if not stat.S_ISREG(st.st_mode):
            return None
        return st

    def _relative(self, path: Path) -> Path:
        return path.relative_to(self._root)

    # ------------------------------------------------------------------ discovery

    def _on_event(self, event: FileSystemEvent) -> None:
        """Observer thread: note the path and wake the worker, nothing else."""
        if event.is_directory:
            if event.event_type in (EVENT_TYPE_CREATED, EVENT_TYPE_MOVED):
                if self.settings.recursive:
                    with self._cond:
                        self._rescan_requested = True
                        self._cond.notify()
            return
        if event.event_type in (EVENT_TYPE_CREATED, EVENT_TYPE_MODIFIED, EVENT_TYPE_CLOSED):
            raw = event.src_path
        elif event.event_type == EVENT_TYPE_MOVED:
            raw = event.dest_path
        else:
            return
        self._offer(Path(os.fsdecode(raw)))

    def _offer(self, path: Path) -> bool:
        if not self._candidate_path(path):
            return False
        with self._cond:
            if path == self._inflight:
                self._inflight_dirty = True
            elif path not in self._pending:
                self._pending[path] = _Pending()
                self._cond.notify()
        return True

    def scan(self) -> int:
        """List the folder and mark every candidate file pending; returns how many were found.

        Files kept in place (``after = "keep"``) and unchanged since are not counted. A watch
        that died is restarted first.
        """
        self._ensure_watching()
        found: list[Path] = []
        seen_kept: set[tuple[str, int, int]] = set()
        with self._cond:
            kept = set(self._kept)
        self._walk(self._root, found, kept, seen_kept, visited={self._root})
        with self._cond:
            self._kept &= seen_kept | (self._kept - kept)  # forget kept files that are gone
            for path in found:
                if path == self._inflight:
                    continue
                self._pending.setdefault(path, _Pending())
            if found:
                self._cond.notify()
        return len(found)

    def _walk(
        self,
        directory: Path,
        found: list[Path],
        kept: set[tuple[str, int, int]],
        seen_kept: set[tuple[str, int, int]],
        visited: set[Path],
    ) -> None:
        try:
            with os.scandir(directory) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as exc:
            level = logging.WARNING if directory == self._root else logging.INFO
            log.log(level, "folder %s: cannot list %s: %s", self.settings.name, directory, exc)
            return
        for entry in entries:
            if self._ignored_name(entry.name):
                continue
            path = Path(entry.path)
            try:
                if entry.is_symlink():
                    if not self.settings.follow_symlinks:
                        log.debug("folder %s: skipping symlink %s", self.settings.name, path)
                        continue
                    st = os.stat(path)
                else:
                    st = entry.stat(follow_symlinks=False)
            except OSError:
                continue  # vanished, dangling link, loop
            if stat.S_ISDIR(st.st_mode):
                if not self.settings.recursive:
                    continue
                real = path.resolve()
                if real in visited or not self._inside(real):
                    continue
                visited.add(real)
                self._walk(path, found, kept, seen_kept, visited)
            elif stat.S_ISREG(st.st_mode):
                if entry.is_symlink() and not self._inside(path.resolve()):
                    log.info(
                        "folder %s: skipping %s: it points outside the folder",
                        self.settings.name,
                        _display(str(path)),
                    )
                    continue
                key = (self._relative(path).as_posix(), st.st_size, st.st_mtime_ns)
                if key in kept:
                    seen_kept.add(key)
                    continue
                found.append(path)

    # ------------------------------------------------------------------ worker

    def _run(self) -> None:
        while True:
            with self._cond:
                if self._stopping:
                    return
                now = self.context.clock()
                due = [p for p, e in self._pending.items() if e.next_check <= now]
                rescan, self._rescan_requested = self._rescan_requested, False
                if not due and not rescan:
                    soonest = min((e.next_check for e in self._pending.values()), default=None)
                    if soonest is None:
                        self._cond.wait()  # idle: events, scans and stop() all notify
                    else:  # in real seconds, capped: the clock may be a test's fake
                        self._cond.wait(max(0.005, min(self._tick, soonest - now)))
                    continue
            if rescan:
                try:
                    self.scan()
                except Exception:
                    log.exception("folder %s: rescan failed", self.settings.name)
            for path in due:
                with self._cond:
                    if self._stopping:
                        return
                try:
                    self._step(path)
                except OSError as exc:
                    complaint = f"{exc.__class__.__name__}: {exc}"
                    level = (
                        logging.DEBUG
                        if self._unreadable.get(path) == complaint
                        else logging.WARNING
                    )
                    self._unreadable[path] = complaint
                    log.log(
                        level,
                        "folder %s: cannot read %s: %s; retried on the next scan",
                        self.settings.name,
                        _display(str(path)),
                        exc,
                    )
                    self._drop(path)
                except Exception:
                    log.exception(
                        "folder %s: error handling %s; it is retried on the next scan",
                        self.settings.name,
                        _display(str(path)),
                    )
                    self._drop(path)

    def _drop(self, path: Path) -> None:
        with self._cond:
            self._pending.pop(path, None)

    def _step(self, path: Path) -> None:
        """Advance one pending file: track stability, check, and take it once settled."""
        settings = self.settings
        with self._cond:
            entry = self._pending.get(path)
        if entry is None:
            return
        now = self.context.clock()
        try:
            st = self._vetted_stat(path)
            if st is None:
                self._drop(path)
                return
            signature = (st.st_size, st.st_mtime_ns)
            if signature != entry.signature:
                entry.signature, entry.since, entry.incomplete_since = signature, now, None
                entry.next_check = now + settings.settle_seconds
                return
            if now - entry.since < settings.settle_seconds:
                entry.next_check = entry.since + settings.settle_seconds
                return
            if entry.incomplete_since is not None:  # unchanged and still in its grace
                deadline = entry.incomplete_since + settings.incomplete_grace_seconds
                if now < deadline:
                    entry.next_check = min(deadline, now + max(settings.settle_seconds, self._tick))
                    return
            rel = self._relative(path)
            with self._cond:
                is_kept = (rel.as_posix(), *signature) in self._kept
            if is_kept:
                self._drop(path)
                return
            mime = sniff_mime(path)
            result = check_file(path, mime, max_bytes=settings.max_file_bytes)
        except FileNotFoundError:
            log.debug("folder %s: %s vanished", settings.name, path)
            self._drop(path)
            return
        if result.wait:
            if entry.incomplete_since is None:
                entry.incomplete_since = now
                log.info(
                    "folder %s: %s: %s; waiting up to %gs",
                    settings.name,
                    _display(rel.as_posix()),
                    result.reason,
                    settings.incomplete_grace_seconds,
                )
            deadline = entry.incomplete_since + settings.incomplete_grace_seconds
            if now < deadline:
                entry.next_check = min(deadline, now + max(settings.settle_seconds, self._tick))
                return
            result = CheckResult(Verdict.REJECT, result.reason)
        with self._cond:
            if self._pending.pop(path, None) is None:
                return
            self._inflight, self._inflight_dirty = path, False
        self._unreadable.pop(path, None)
        try:
            self._take(path, rel, st, mime, result)
        finally:
            with self._cond:
                self._inflight = None
                dirty = self._inflight_dirty
            if dirty and os.path.lexists(path):
                self._offer(path)

    def _opener(self, path: Path, signature: tuple[int, int]) -> Callable[[], IO[bytes]]:
        follow = self.settings.follow_symlinks

        def open_item() -> IO[bytes]:
            stream = open_regular(path, follow_symlinks=follow)
            st = os.fstat(stream.fileno())
            if (st.st_size, st.st_mtime_ns) != signature:
                stream.close()
                raise FileChangedError(f"{_display(path.name)} changed after it was checked")
            return stream

        return open_item

    def _take(
        self, path: Path, rel: Path, st: os.stat_result, mime: str | None, result: CheckResult
    ) -> None:
        """Hand the file to the sink, then release it according to the outcome."""
        settings, sink = self.settings, self._sink
        assert sink is not None
        signature = (st.st_size, st.st_mtime_ns)
        rel_text = _display(rel.as_posix())
        item = IntakeItem(
            source=settings.name,
            source_ref=rel_text,
            filename=_display(path.name),
            open=self._opener(path, signature),
            mime_type=mime,
            metadata={"path": _display(str(path)), "mtime": st.st_mtime, "size": st.st_size},
            rejection=result.reason if result.rejected else None,
        )
        try:
            outcome = sink.ingest(item)
        except Exception:
            if not os.path.lexists(path):
                log.debug("folder %s: %s vanished while being stored", settings.name, rel_text)
            else:
                log.exception(
                    "folder %s: storing %s failed; it stays in place and is retried on the next"
                    " scan",
                    settings.name,
                    rel_text,
                )
            return
        try:
            released = self._release(path, rel, signature, result, outcome)
        except FileNotFoundError:
            log.warning("folder %s: %s vanished before it was released", settings.name, rel_text)
            return
        except OSError as exc:
            log.error(
                "folder %s: %s is stored (%s) but could not be released: %s; retried on the next"
                " scan",
                settings.name,
                rel_text,
                outcome.status,
                exc,
            )
            return
        if released and outcome.document_id is not None:
            try:
                sink.mark_released(outcome.document_id)
            except Exception:
                log.exception(
                    "folder %s: could not record the release of %s", settings.name, rel_text
                )

    def _release(
        self,
        path: Path,
        rel: Path,
        signature: tuple[int, int],
        result: CheckResult,
        outcome: IngestOutcome,
    ) -> bool:
        """Quarantine, move, delete or keep the original; False when it was left alone."""
        settings = self.settings
        rel_text = _display(rel.as_posix())
        if result.rejected or outcome.status is IngestStatus.REJECTED:
            reason = (result.reason if result.rejected else outcome.reason) or "rejected"
            dest = quarantine(path, self._failed / rel.parent, reason)
            log.warning(
                "folder %s: rejected %s: %s (moved to %s)",
                settings.name,
                rel_text,
                reason,
                _display(str(dest)),
            )
            return True
        try:
            now_st = os.lstat(path) if not settings.follow_symlinks else os.stat(path)
        except FileNotFoundError:
            log.warning("folder %s: %s vanished before it was released", settings.name, rel_text)
            return False
        if (now_st.st_size, now_st.st_mtime_ns) != signature:
            log.warning(
                "folder %s: %s changed while it was stored; it is offered again",
                settings.name,
                rel_text,
            )
            with self._cond:
                self._inflight_dirty = True
            return False
        if settings.after == "keep":
            with self._cond:
                self._kept.add((rel.as_posix(), *signature))
        elif settings.after == "delete":
            path.unlink()
        else:
            dest = move_no_clobber(path, self._processed / rel.parent)
            log.debug("folder %s: %s → %s", settings.name, rel_text, dest)
        log.info("folder %s: took %s (%s)", settings.name, rel_text, outcome.status)
        return True
