"""The watched-folder source: watching, scanning, settling, taking and releasing files.

Files dropped into a folder (by a scanner, a person, an SMB share) are taken once their size and
mtime have stopped changing, checked cheaply (``connectors.filecheck``), committed by the engine
(``sink.ingest``) and only then moved to ``processed/``, deleted or kept. Unusable files go to
``failed/`` with a ``<name>.reason.txt`` beside them (``failed``); a rejected file is never
deleted. Only paths inside the folder are taken (``paths``), and files are placed without ever
replacing another (``placement``).

Watchdog events only make intake faster. ``scan()`` finds everything on its own, so lost events
(NFS/SMB mounts, an exhausted inotify limit, a queue overflow) delay files but never lose them.

Threads: the observer thread only records paths and wakes the worker; the worker thread stats
and checks the files, and hands each settled one to one of ``workers`` taker threads, which
call the sink (which may be slow) and release it — a file is in the hands of one taker at a
time. ``rejected`` runs on an engine worker thread and shares only the failed folder (under a
lock) with them.

One process at a time: on a store shared by several processes the folder is worked by the
holder of the lease ``folder:<path>`` (taken at each scan, renewed while working, given back
at a stop, freed by the others when the holder's heartbeat stops); the others stand by and
take it over at a scan.

State: with ``after = "keep"`` the files already taken are remembered in ``kept.json`` in the
source's private ``data_dir`` (``kept``), so a restart does not offer them again.
"""

from __future__ import annotations

import logging
import os
import stat
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, ClassVar

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
    DocumentRef,
    IngestOutcome,
    IngestStatus,
    IntakeItem,
    IntakeSink,
    Source,
)
from connectors.errors import StoreUnavailable, TransientError
from connectors.filecheck import CheckResult, Verdict, check_file, open_regular, sniff_mime
from connectors.filenames import display, safe_filename
from connectors.sources.folder.failed import (
    add_copy,
    document_ids_in,
    one_line,
    quarantine,
    reason_text,
)
from connectors.sources.folder.kept import KEPT_FILE, KeptFiles
from connectors.sources.folder.paths import FolderPaths
from connectors.sources.folder.placement import move_no_clobber
from connectors.sources.folder.settings import FolderSettings

log = logging.getLogger(__name__)

STORE_RETRY_SECONDS = 2.0
"""How long files wait before the next try when the store refused a write."""
MIN_LEASE_SECONDS = 30.0
"""The folder's lease lasts three rescan intervals, and at least this long."""


class FileChangedError(OSError):
    """The file changed between its check and its reading: it is offered again later."""


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


@dataclass(slots=True)
class _Walk:
    """What one full scan collects."""

    kept: dict[str, tuple[int, int]]
    """Snapshot of the kept files (relative path → (size, mtime_ns)) when the scan began."""
    found: list[Path] = field(default_factory=list)
    """Files to offer."""
    present: set[str] = field(default_factory=set)
    """Kept paths that still exist (changed or not)."""
    visited: set[Path] = field(default_factory=set)
    """Resolved folders walked, against symlink loops."""
    complete: bool = True
    """False when a folder could not be listed: then nothing may be concluded from absence."""


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
        self._cond = threading.Condition()
        self._pending: dict[Path, _Pending] = {}
        self._inflight: dict[Path, bool] = {}
        """Files a taker holds → whether an event came for them meanwhile (offer again)."""
        self._takers: ThreadPoolExecutor | None = None
        self._slots = threading.BoundedSemaphore(settings.workers)
        """One per taker: the worker waits for a free one instead of queueing files."""
        self._failed_lock = threading.Lock()
        """Held while placing files in the failed folder: ``rejected`` runs on other threads."""
        self._rejected_ids: set[int] | None = None
        """Documents with a reason file in the failed folder; read from there on first use."""
        self._unreadable: dict[Path, str] = {}
        """Last read error per path, so a file we may not read is complained about once."""
        self._store_down = False
        """The last attempt found the store unavailable (warned once per outage)."""
        self._rescan_requested = False
        self._stopping = False
        self._started = False
        self._sink: IntakeSink | None = None
        self._observer: BaseObserver | None = None
        self._observer_lock = threading.Lock()
        self._worker: threading.Thread | None = None
        self._watch_mode: str | None = None
        self._paths = FolderPaths.configured(settings)
        """Resolved by ``start``."""
        self._tick = max(0.02, min(0.5, settings.settle_seconds / 4))
        self._kept = self._new_kept()
        """``after = "keep"``: the files taken and left in place."""
        self._lease_seconds = max(MIN_LEASE_SECONDS, 3 * settings.rescan_interval)
        self._held_until: float | None = None
        """While this process holds the folder's lease: when to renew it (context clock)."""
        self._lease_tried = False

    # ------------------------------------------------------------------ lifecycle

    def start(self, sink: IntakeSink) -> None:
        """Create the folders, start the worker and the observer, then run the startup scan."""
        if self._started:
            raise RuntimeError(f"folder source {self.settings.name!r} was already started")
        self._started = True
        self._sink = sink
        self._paths = FolderPaths.resolved(self.settings)
        self.lease = f"folder:{self._paths.root}"
        self._holding(renew=True)  # before any event: the worker must know who works it
        self._kept = self._new_kept()  # for the resolved root
        if self.settings.after == "keep":
            self._kept.load()
        if self.settings.workers > 1:
            self._takers = ThreadPoolExecutor(
                self.settings.workers, thread_name_prefix=f"folder-{self.settings.name}-take"
            )
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
            display(str(self._paths.root)),
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
                    ", ".join(display(str(p)) for p in self._inflight) or "nothing",
                    self.stop_timeout,
                )
        if self._takers is not None:
            self._takers.shutdown(wait=True)  # the files in their hands are finished
        self._kept.save()
        self._watch_mode = None
        if self._held_until is not None and self._sink is not None:
            self._held_until = None
            try:
                self._sink.drop_lease(self.lease)
            except Exception as exc:  # it runs out on its own
                log.warning("folder %s: could not give back its lease: %s", self.settings.name, exc)

    def health(self) -> dict[str, Any]:
        with self._cond:
            pending = len(self._pending) + len(self._inflight)
        return {
            "watch_mode": self._watch_mode or "stopped",
            "standby": self._started and self._held_until is None,
            "watching": self._watching(),
            "pending": pending,
            "path": str(self._paths.root),
        }

    def probe(self) -> list[str]:
        """The folders are there (or can be made) with the rights the source needs, and how
        many files wait; creates and moves nothing."""
        paths = FolderPaths.configured(self.settings)
        writable = os.W_OK | os.X_OK
        folders = [
            (
                "watched",
                paths.root,
                os.R_OK | (os.X_OK if self.settings.after == "keep" else writable),
            ),
            ("failed", paths.failed, writable),
        ]
        if self.settings.after == "move":
            folders.append(("processed", paths.processed, writable))
        lines = []
        for label, directory, rights in folders:
            existing = directory
            while not existing.exists() and existing != existing.parent:
                existing = existing.parent
            if not existing.is_dir():
                raise TransientError(f"{label} folder {directory}: {existing} is not a folder")
            if existing != directory:
                if not os.access(existing, writable):
                    raise TransientError(f"{label} folder {directory} cannot be made in {existing}")
                lines.append(f"{label} folder {directory} will be made at start")
            elif not os.access(directory, rights):
                raise TransientError(f"no permission for the {label} folder {directory}")
            else:
                lines.append(f"{label} folder {directory}: ok")
        if paths.root.is_dir():
            waiting = sum(
                1
                for entry in os.scandir(paths.root)
                if entry.is_file(follow_symlinks=False) and not paths.ignored_name(entry.name)
            )
            lines.append(f"{waiting} file(s) waiting in {paths.root}")
        polling = f"polling every {self.settings.poll_interval:g}s"
        lines.append(f"watch mode: {polling if self.settings.polling else 'inotify'}")
        return lines

    def rejected(self, document: DocumentRef, source_ref: str, reason: str) -> None:
        """A vendor rejected a document from this folder: show it where operators look.

        The original has left the folder (moved, deleted, or kept and remembered), so a copy of
        the stored bytes goes into the failed folder under the document's file name (reduced to
        a plain name, never a path; clashes get `` (1)`` suffixes), with a reason file carrying a
        ``document: <id>`` line. That line makes a repeat a no-op, also after a restart. Runs on
        an engine worker thread; placing is serialised with this source's own quarantines. Never
        raises for I/O trouble (a missing blob, a full disk): the store has the rejection anyway.
        """
        name = safe_filename(document.filename, fallback=f"document-{document.id}")
        original = document.metadata.get("path")
        original = original if isinstance(original, str) else source_ref
        failed = self._paths.failed
        with self._failed_lock:
            if self._rejected_ids is None:
                self._rejected_ids = document_ids_in(failed) if failed.is_dir() else set()
            if document.id in self._rejected_ids:
                log.debug(
                    "folder %s: document %d is in the failed folder already",
                    self.settings.name,
                    document.id,
                )
                return
            text = reason_text(
                reason, document.filename, original, document.size_bytes, document.id
            )
            try:
                dest = add_copy(document.path, failed, name, text)
            except OSError as exc:
                missing = not document.path.exists()
                log.log(
                    logging.WARNING if missing else logging.ERROR,
                    "folder %s: cannot put rejected document %d (%s) into %s: %s",
                    self.settings.name,
                    document.id,
                    one_line(name),
                    display(str(failed)),
                    "its stored copy is missing" if missing else exc,
                )
                return
            self._rejected_ids.add(document.id)
        log.warning(
            "folder %s: %s was rejected: %s (copied to %s)",
            self.settings.name,
            one_line(source_ref or name),
            one_line(reason),
            display(str(dest)),
        )

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
            if not self._paths.root.is_dir():
                return
            log.warning(
                "folder %s: the %s watch on %s stopped; restarting it",
                self.settings.name,
                self._watch_mode,
                display(str(self._paths.root)),
            )
            old, self._observer = self._observer, None
            try:
                if old is not None:
                    old.stop()
                    old.join(timeout=10)
                self._start_observer()
            except Exception:
                log.exception("folder %s: could not restart the watch", self.settings.name)

    def _start_observer(self) -> None:
        handler = _EventHandler(self)
        if not self.settings.polling:
            observer = Observer()
            try:
                observer.schedule(handler, str(self._paths.root), recursive=self.settings.recursive)
                observer.start()
            except OSError as exc:
                log.error(
                    "folder %s: cannot watch %s with inotify (%s); polling every %gs instead."
                    " Raise fs.inotify.max_user_watches/max_user_instances, or set"
                    " polling = true for this folder.",
                    self.settings.name,
                    display(str(self._paths.root)),
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
        polling.schedule(handler, str(self._paths.root), recursive=self.settings.recursive)
        polling.start()
        self._observer, self._watch_mode = polling, "polling"

    def _poll_listdir(self, path: str | None) -> Iterator[os.DirEntry[str]]:
        with os.scandir(path) as entries:
            kept = [e for e in entries if not self._paths.excluded_entry(e)]
        return iter(kept)

    # ------------------------------------------------------------------ kept files

    def _new_kept(self) -> KeptFiles:
        return KeptFiles(
            self.context.data_dir / KEPT_FILE,
            self._paths.root,
            clock=self.context.clock,
            label=self.settings.name,
        )

    # ------------------------------------------------------------------ path rules

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
            if not self._paths.inside(real):
                log.info(
                    "folder %s: skipping %s: it points outside the folder",
                    self.settings.name,
                    display(str(path)),
                )
                return None
            st = os.stat(path)
        if not stat.S_ISREG(st.st_mode):
            return None
        return st

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
        if not self._paths.candidate(path):
            return False
        with self._cond:
            if path in self._inflight:
                self._inflight[path] = True
            elif path not in self._pending:
                self._pending[path] = _Pending()
                self._cond.notify()
        return True

    def scan(self) -> int:
        """List the folder and mark every candidate file pending; returns how many were found.

        Files kept in place (``after = "keep"``) and unchanged since are not counted. A watch
        that died is restarted first. A process standing by (another one holds the folder)
        finds nothing.
        """
        if not self._holding(renew=True):
            return 0
        self._ensure_watching()
        with self._cond:
            walk = _Walk(kept=self._kept.snapshot(), visited={self._paths.root})
        self._walk(self._paths.root, walk)
        with self._cond:
            if walk.complete:  # forget kept files that are gone (unless re-kept meanwhile)
                self._kept.forget_gone(walk.kept, walk.present)
            for path in walk.found:
                if path in self._inflight:
                    continue
                self._pending.setdefault(path, _Pending())
            if walk.found or self._kept.dirty:
                self._cond.notify()
        return len(walk.found)

    def _holding(self, *, renew: bool = False) -> bool:
        """Whether this process works the folder now: takes or renews the lease when due (or
        with ``renew``). Standing by, the files the events announce are left to the holder."""
        now = self.context.clock()
        if not renew and self._held_until is not None and now < self._held_until:
            return True
        if not renew and self._held_until is None:
            return False  # a standby tries again at the next scan
        assert self._sink is not None
        was = self._held_until is not None
        try:
            held = self._sink.hold_lease(self.lease, self._lease_seconds)
        except StoreUnavailable:
            return was  # the store is down: nobody takes the folder over meanwhile
        self._held_until = now + self._lease_seconds / 3 if held else None
        first, self._lease_tried = not self._lease_tried, True
        if held != was and not (first and held):
            log.info(
                "folder %s: %s",
                self.settings.name,
                "this process works the folder now"
                if held
                else "another docrelay process works the folder; standing by",
            )
        if not held:
            with self._cond:
                self._pending.clear()
        return held

    def _walk(self, directory: Path, walk: _Walk) -> None:
        try:
            with os.scandir(directory) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as exc:
            walk.complete = False
            level = logging.WARNING if directory == self._paths.root else logging.INFO
            log.log(level, "folder %s: cannot list %s: %s", self.settings.name, directory, exc)
            return
        for entry in entries:
            if self._paths.ignored_name(entry.name):
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
            except FileNotFoundError:
                continue  # vanished, dangling link
            except OSError:  # a loop, or no permission: it may still exist, so stay kept
                walk.present.add(self._paths.relative(path).as_posix())
                continue
            if stat.S_ISDIR(st.st_mode):
                if not self.settings.recursive:
                    continue
                real = path.resolve()
                if real in walk.visited or not self._paths.inside(real):
                    continue
                walk.visited.add(real)
                self._walk(path, walk)
            elif stat.S_ISREG(st.st_mode):
                if entry.is_symlink() and not self._paths.inside(path.resolve()):
                    log.info(
                        "folder %s: skipping %s: it points outside the folder",
                        self.settings.name,
                        display(str(path)),
                    )
                    continue
                rel = self._paths.relative(path).as_posix()
                if rel in walk.kept:
                    walk.present.add(rel)
                    if walk.kept[rel] == (st.st_size, st.st_mtime_ns):
                        continue
                walk.found.append(path)

    # ------------------------------------------------------------------ worker

    def _run(self) -> None:
        try:
            self._work()
        finally:
            try:
                self._kept.save()
            except Exception:
                log.exception("folder %s: saving the kept files failed", self.settings.name)

    def _work(self) -> None:
        while True:
            with self._cond:
                if self._stopping:
                    return
                now = self.context.clock()
                due = [p for p, e in self._pending.items() if e.next_check <= now]
                rescan, self._rescan_requested = self._rescan_requested, False
                save_due = self._kept.save_due()
                save = save_due is not None and save_due <= now
                if not due and not rescan and not save:
                    times = [e.next_check for e in self._pending.values()]
                    if save_due is not None:
                        times.append(save_due)
                    soonest = min(times, default=None)
                    if soonest is None:
                        self._cond.wait()  # idle: events, scans and stop() all notify
                    else:  # in real seconds, capped: the clock may be a test's fake
                        self._cond.wait(max(0.005, min(self._tick, soonest - now)))
                    continue
            if save:
                self._kept.save()
            if due and not self._holding():
                with self._cond:
                    self._pending.clear()
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
                except StoreUnavailable as exc:
                    self._wait_for_store(exc, due)
                    break
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
                        display(str(path)),
                        exc,
                    )
                    self._drop(path)
                except Exception:
                    log.exception(
                        "folder %s: error handling %s; it is retried on the next scan",
                        self.settings.name,
                        display(str(path)),
                    )
                    self._drop(path)

    def _wait_for_store(self, exc: StoreUnavailable, due: list[Path]) -> None:
        """The store refuses writes for now (locked by another process, or its disk is full):
        the due files stay where they are and are looked at again in a few seconds, instead of
        each waiting out the busy timeout in turn. One warning per outage."""
        if not self._store_down:
            log.warning(
                "folder %s: %s; files wait in place and are tried again every %g s",
                self.settings.name,
                exc,
                STORE_RETRY_SECONDS,
            )
        self._store_down = True
        later = self.context.clock() + STORE_RETRY_SECONDS
        with self._cond:
            for path in due:
                if (entry := self._pending.get(path)) is not None:
                    entry.next_check = max(entry.next_check, later)

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
            rel = self._paths.relative(path)
            if self._kept.get(rel.as_posix()) == signature:
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
                    display(rel.as_posix()),
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
            self._inflight[path] = False
        self._unreadable.pop(path, None)
        if self._takers is None:
            self._take_held(path, rel, st, mime, result)
            return
        self._slots.acquire()
        try:
            self._takers.submit(self._take_async, path, rel, st, mime, result)
        except BaseException:  # shut down meanwhile: the file stays for the next start
            self._slots.release()
            with self._cond:
                self._inflight.pop(path, None)
            raise

    def _take_held(
        self, path: Path, rel: Path, st: os.stat_result, mime: str | None, result: CheckResult
    ) -> None:
        try:
            self._take(path, rel, st, mime, result)
        finally:
            with self._cond:
                dirty = self._inflight.pop(path, False)
            if dirty and os.path.lexists(path):
                self._offer(path)

    def _take_async(
        self, path: Path, rel: Path, st: os.stat_result, mime: str | None, result: CheckResult
    ) -> None:
        """A taker thread: ``_take_held``, with the worker loop's handling of what it raises."""
        try:
            self._take_held(path, rel, st, mime, result)
        except StoreUnavailable as exc:
            self._wait_for_store(exc, [path])
        except Exception:
            log.exception(
                "folder %s: error handling %s; it is retried on the next scan",
                self.settings.name,
                display(str(path)),
            )
            self._drop(path)
        finally:
            self._slots.release()
            with self._cond:  # the worker may be idle with a kept-files save now due
                self._cond.notify()

    def _opener(self, path: Path, signature: tuple[int, int]) -> Callable[[], IO[bytes]]:
        follow = self.settings.follow_symlinks

        def open_item() -> IO[bytes]:
            stream = open_regular(path, follow_symlinks=follow)
            st = os.fstat(stream.fileno())
            if (st.st_size, st.st_mtime_ns) != signature:
                stream.close()
                raise FileChangedError(f"{display(path.name)} changed after it was checked")
            return stream

        return open_item

    def _take(
        self, path: Path, rel: Path, st: os.stat_result, mime: str | None, result: CheckResult
    ) -> None:
        """Hand the file to the sink, then release it according to the outcome."""
        settings, sink = self.settings, self._sink
        assert sink is not None
        signature = (st.st_size, st.st_mtime_ns)
        rel_text = display(rel.as_posix())
        item = IntakeItem(
            source=settings.name,
            source_ref=rel_text,
            filename=display(path.name),
            open=self._opener(path, signature),
            mime_type=mime,
            metadata={"path": display(str(path)), "mtime": st.st_mtime, "size": st.st_size},
            rejection=result.reason if result.rejected else None,
        )
        try:
            outcome = sink.ingest(item)
        except StoreUnavailable:
            self._offer(path)  # pending again once this step ends
            raise  # and the whole pass waits (_wait_for_store)
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
        if self._store_down:
            self._store_down = False
            log.info("folder %s: the store takes files again", settings.name)
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
        rel_text = display(rel.as_posix())
        if result.rejected or outcome.status is IngestStatus.REJECTED:
            reason = (result.reason if result.rejected else outcome.reason) or "rejected"
            document_id = outcome.document_id
            with self._failed_lock:
                dest = quarantine(
                    path, self._paths.failed / rel.parent, reason, document_id=document_id
                )
                if document_id is not None and self._rejected_ids is not None:
                    self._rejected_ids.add(document_id)
            log.warning(
                "folder %s: rejected %s: %s (moved to %s)",
                settings.name,
                rel_text,
                reason,
                display(str(dest)),
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
                self._inflight[path] = True
            return False
        if settings.after == "keep":
            self._kept.add(rel.as_posix(), signature)
        elif settings.after == "delete":
            path.unlink()
        else:
            dest = move_no_clobber(path, self._paths.processed / rel.parent)
            log.debug("folder %s: %s → %s", settings.name, rel_text, dest)
        log.info("folder %s: took %s (%s)", settings.name, rel_text, outcome.status)
        return True
