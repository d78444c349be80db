"""The watched-folder source and its file checks, against a real folder and a fake sink."""

from __future__ import annotations

import errno
import hashlib
import io
import json
import logging
import os
import shutil
import tempfile
import threading
import time
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from pydantic import ValidationError
from watchdog.observers.inotify import InotifyEmitter

from connectors import filecheck
from connectors.base import (
    ConnectorContext,
    DocumentRef,
    IngestOutcome,
    IngestStatus,
    IntakeItem,
)
from connectors.filecheck import Verdict, check_file, sniff_mime
from connectors.sources import folder
from connectors.sources.folder import FolderSettings, FolderSource, quarantine

SETTLE = 0.2
MIB = 1024 * 1024


# --------------------------------------------------------------------------- helpers


def moved(inbox: Path, rel: str) -> bool:
    """The release is done: ``rel`` is in processed/ and gone from the inbox (a move links the
    file into processed/ first, then unlinks the original)."""
    return os.path.lexists(inbox / "processed" / rel) and not os.path.lexists(inbox / rel)


def pdf_bytes(text: str = "hello") -> bytes:
    """A tiny PDF as far as the checks care: the header, some body, the end marker."""
    body = f"1 0 obj << /Type /Catalog /Note ({text}) >> endobj\ntrailer << /Root 1 0 R >>\n"
    return b"%PDF-1.4\n" + body.encode() + b"%%EOF\n"


def image_bytes(fmt: str, size: tuple[int, int] = (40, 30)) -> bytes:
    buffer = io.BytesIO()
    Image.effect_noise(size, 50).convert("RGB").save(buffer, fmt)
    return buffer.getvalue()


def docx_bytes() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("[Content_Types].xml", "<Types/>")
        archive.writestr("word/document.xml", "<document/>")
    return buffer.getvalue()


def wait_for(predicate: Callable[[], object], timeout: float = 10.0, what: str = "") -> None:
    """Poll until ``predicate()`` is true; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what or predicate}")
        time.sleep(0.02)


def names(directory: Path) -> set[str]:
    return {p.name for p in directory.iterdir()} if directory.exists() else set()


@dataclass
class Seen:
    item: IntakeItem
    data: bytes
    at: float
    document_id: int = 0


class FakeSink:
    """Records items (reading their bytes), answers like the engine would, counts releases."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.seen: list[Seen] = []
        self.released: list[int] = []
        self.attempts = 0
        self.fail_next = 0
        self.delay = 0.0
        self.ingest_started = threading.Event()
        self.active = 0
        self.most_active = 0
        """Ingests under way at once, and the most there were."""
        self._by_hash: dict[str, int] = {}
        self._next_id = 1

    def hold_lease(self, name: str, seconds: float) -> bool:
        return True  # the only process

    def drop_lease(self, name: str) -> None:
        pass

    def ingest(self, item: IntakeItem) -> IngestOutcome:
        with self.lock:
            self.attempts += 1
            if self.fail_next:
                self.fail_next -= 1
                raise RuntimeError("database is locked")
        self.ingest_started.set()
        with item.open() as stream:
            data = stream.read()
        with self.lock:
            self.active += 1
            self.most_active = max(self.most_active, self.active)
        time.sleep(self.delay)
        with self.lock:
            self.active -= 1
            document_id, self._next_id = self._next_id, self._next_id + 1
            self.seen.append(Seen(item, data, time.monotonic(), document_id))
            if item.rejection:
                return IngestOutcome(IngestStatus.REJECTED, document_id, item.rejection)
            if "reject-me" in item.filename:
                return IngestOutcome(IngestStatus.REJECTED, document_id, "vendor says no")
            digest = hashlib.sha256(data).hexdigest()
            if digest in self._by_hash:
                return IngestOutcome(IngestStatus.DUPLICATE, self._by_hash[digest])
            self._by_hash[digest] = document_id
            return IngestOutcome(IngestStatus.INGESTED, document_id)

    def mark_released(self, document_id: int) -> None:
        with self.lock:
            self.released.append(document_id)

    def refs(self) -> list[str]:
        with self.lock:
            return [s.item.source_ref for s in self.seen]

    def get(self, ref: str) -> Seen:
        with self.lock:
            matches = [s for s in self.seen if s.item.source_ref == ref]
        assert len(matches) == 1, f"{ref}: {len(matches)} items"
        return matches[0]


Factory = Callable[..., tuple[FolderSource, FakeSink, Path]]


@pytest.fixture(params=[1, 3], ids=["one-taker", "three-takers"])
def start_source(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Factory]:
    """Every behaviour holds with one taker thread and with several (``workers``)."""
    sources: list[FolderSource] = []

    def factory(
        sink: FakeSink | None = None, *, create: bool = True, **overrides: object
    ) -> tuple[FolderSource, FakeSink, Path]:
        inbox = tmp_path / "inbox"
        options: dict[str, object] = {
            "settle_seconds": SETTLE, "poll_interval": 0.1, "workers": request.param,
        }  # fmt: skip
        options.update(overrides)
        settings = FolderSettings(name="scans", path=inbox, **options)  # type: ignore[arg-type]
        context = ConnectorContext(name="scans", data_dir=tmp_path / "state", clock=time.monotonic)
        source = FolderSource(settings, context)
        sink = sink or FakeSink()
        sources.append(source)
        if create:
            source.start(sink)
        return source, sink, inbox

    yield factory
    for source in sources:
        source.stop()
        assert source._worker is None or not source._worker.is_alive()


# --------------------------------------------------------------------------- taking files


def test_settled_files_are_taken_by_as_many_takers_as_configured(start_source):
    sink = FakeSink()
    sink.delay = 0.3
    source, sink, inbox = start_source(sink)
    for n in range(6):
        (inbox / f"slow-{n}.pdf").write_bytes(pdf_bytes(f"slow {n}"))
    wait_for(lambda: len(sink.released) == 6, what="all six taken")
    assert sink.most_active == source.settings.workers
    assert sorted(p.name for p in (inbox / "processed").iterdir()) == [
        f"slow-{n}.pdf" for n in range(6)
    ]


def test_file_is_taken_and_moved_to_processed(start_source: Factory) -> None:
    source, sink, inbox = start_source()
    content = pdf_bytes("invoice 1")
    (inbox / "invoice.pdf").write_bytes(content)

    wait_for(lambda: moved(inbox, "invoice.pdf"), what="processed")
    assert not (inbox / "invoice.pdf").exists()
    seen = sink.get("invoice.pdf")
    assert seen.data == content
    item = seen.item
    assert (item.source, item.filename, item.mime_type) == (
        "scans",
        "invoice.pdf",
        "application/pdf",
    )
    assert item.rejection is None
    assert item.metadata["path"] == str(inbox.resolve() / "invoice.pdf")
    assert item.metadata["size"] == len(content)
    assert isinstance(item.metadata["mtime"], float)
    wait_for(lambda: sink.released == [1], what="release")
    assert source.health() == {
        "watch_mode": "inotify",
        "standby": False,
        "watching": True,
        "pending": 0,
        "path": str(inbox.resolve()),
    }


def test_startup_scan_takes_files_already_there(start_source: Factory, tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (inbox / "old.pdf").write_bytes(pdf_bytes("old"))
    (inbox / "note.txt").write_text("Grüße, latin and UTF-8\n", encoding="utf-8")
    _, sink, _ = start_source()
    wait_for(lambda: names(inbox / "processed") == {"old.pdf", "note.txt"}, what="both taken")
    assert sink.get("note.txt").item.mime_type == "text/plain"


def test_keep_leaves_the_file_and_does_not_offer_it_again(start_source: Factory) -> None:
    source, sink, inbox = start_source(after="keep")
    path = inbox / "keep.pdf"
    path.write_bytes(pdf_bytes("keep"))
    wait_for(lambda: sink.released == [1], what="release")
    assert path.exists()
    assert not (inbox / "processed").exists()

    assert source.scan() == 0
    time.sleep(SETTLE * 2)
    assert sink.refs() == ["keep.pdf"]

    path.write_bytes(pdf_bytes("keep, changed"))  # a changed file is a new offer
    wait_for(lambda: len(sink.refs()) == 2, what="changed file offered again")


def test_delete_removes_the_file_after_the_commit(start_source: Factory) -> None:
    _, sink, inbox = start_source(after="delete")
    (inbox / "gone.pdf").write_bytes(pdf_bytes("gone"))
    wait_for(lambda: not (inbox / "gone.pdf").exists(), what="deleted")
    assert sink.refs() == ["gone.pdf"]
    wait_for(lambda: sink.released == [1], what="release")
    assert not (inbox / "processed").exists()


def test_duplicates_are_released_too(start_source: Factory) -> None:
    _, sink, inbox = start_source()
    (inbox / "a.pdf").write_bytes(pdf_bytes("same"))
    wait_for(lambda: sink.released == [1], what="first")
    (inbox / "b.pdf").write_bytes(pdf_bytes("same"))
    wait_for(lambda: names(inbox / "processed") == {"a.pdf", "b.pdf"}, what="both moved")
    wait_for(lambda: sink.released == [1, 1], what="duplicate released under the first id")


def test_r07_file_still_being_written_is_taken_only_when_complete(start_source: Factory) -> None:
    _, sink, inbox = start_source(settle_seconds=0.3)
    chunk = b"line of a slowly written text file\n" * 30
    with (inbox / "slow.txt").open("wb") as stream:
        for _ in range(10):
            stream.write(chunk)
            stream.flush()
            time.sleep(0.1)
        last_write = time.monotonic()

    wait_for(lambda: sink.refs() == ["slow.txt"], what="taken")
    seen = sink.get("slow.txt")
    assert seen.at > last_write
    assert len(seen.data) == len(chunk) * 10
    assert seen.item.metadata["size"] == len(chunk) * 10


def test_ignored_names_are_left_alone(start_source: Factory) -> None:
    source, sink, inbox = start_source(ignore=["*.skip"])
    ignored = ["download.pdf.part", "~$x.pdf", ".DS_Store", ".hidden.pdf", "Thumbs.db", "a.skip"]
    for name in ignored:
        (inbox / name).write_bytes(pdf_bytes(name))
    (inbox / "wanted.pdf").write_bytes(pdf_bytes("wanted"))

    wait_for(  # moved: linked into processed/, then unlinked from the inbox
        lambda: (
            (inbox / "processed" / "wanted.pdf").exists() and not (inbox / "wanted.pdf").exists()
        ),
        what="wanted taken",
    )
    assert source.scan() == 0
    time.sleep(SETTLE * 2)
    assert sink.refs() == ["wanted.pdf"]
    assert all((inbox / name).exists() for name in ignored)


def test_processed_and_failed_are_not_scanned_in_recursive_mode(
    start_source: Factory, tmp_path: Path
) -> None:
    inbox = tmp_path / "inbox"
    (inbox / "processed").mkdir(parents=True)
    (inbox / "failed").mkdir()
    (inbox / "processed" / "done.pdf").write_bytes(pdf_bytes("done"))
    (inbox / "failed" / "bad.pdf").write_bytes(b"")
    (inbox / "sub" / "deeper").mkdir(parents=True)
    (inbox / "sub" / "deeper" / "nested.pdf").write_bytes(pdf_bytes("nested"))

    source, sink, _ = start_source(recursive=True)
    wait_for(lambda: moved(inbox, "sub/deeper/nested.pdf"), what="moved")
    assert sink.refs() == ["sub/deeper/nested.pdf"]

    (inbox / "new" / "dir").mkdir(parents=True)  # a folder created later is watched too
    (inbox / "new" / "dir" / "late.pdf").write_bytes(pdf_bytes("late"))
    wait_for(lambda: moved(inbox, "new/dir/late.pdf"), what="file in new folder")
    assert "new/dir/late.pdf" in sink.refs()
    assert source.scan() == 0
    assert (inbox / "failed" / "bad.pdf").exists()


# --------------------------------------------------------------------------- rejections


def test_unusable_files_are_quarantined_with_a_reason(start_source: Factory) -> None:
    _, sink, inbox = start_source(incomplete_grace_seconds=0.3)
    (inbox / "empty.pdf").write_bytes(b"")
    docx = docx_bytes()
    (inbox / "letter.docx").write_bytes(docx)
    (inbox / "cut.pdf").write_bytes(pdf_bytes("cut")[:-8])
    (inbox / "reject-me.pdf").write_bytes(pdf_bytes("vendor will refuse"))

    failed = inbox / "failed"
    expected = {"empty.pdf", "letter.docx", "cut.pdf", "reject-me.pdf"}
    wait_for(lambda: expected <= names(failed), what="all quarantined")
    wait_for(lambda: len(sink.released) == 4, what="releases")
    reasons = {
        "empty.pdf": "empty file (0 bytes)",
        "letter.docx": "unsupported file type: .docx (application/zip container)",
        "cut.pdf": "incomplete PDF: no %%EOF marker (truncated or still being written)",
    }
    for name, reason in reasons.items():
        assert sink.get(name).item.rejection == reason
        text = (failed / f"{name}.reason.txt").read_text(encoding="utf-8")
        assert f"reason: {reason}\n" in text
        assert f"original: {inbox.resolve() / name}\n" in text
        assert text.endswith(f"document: {sink.get(name).document_id}\n")
    assert sink.get("reject-me.pdf").item.rejection is None
    assert "reason: vendor says no" in (failed / "reject-me.pdf.reason.txt").read_text()
    assert (failed / "letter.docx").read_bytes() == docx
    assert names(inbox) == {"failed", "processed"}
    assert not names(inbox / "processed")


def test_truncated_pdf_is_waited_for_and_taken_when_completed(start_source: Factory) -> None:
    grace = 1.5
    _, sink, inbox = start_source(incomplete_grace_seconds=grace)
    content = pdf_bytes("completed later")
    started = time.monotonic()
    path = inbox / "growing.pdf"
    path.write_bytes(content[:-8])
    time.sleep(SETTLE * 3)
    if time.monotonic() - started < grace:  # a very slow machine cannot judge this part
        assert path.exists()
        assert sink.refs() == []
    with path.open("ab") as stream:
        stream.write(content[-8:])
    wait_for(lambda: moved(inbox, "growing.pdf"), what="taken")
    assert sink.get("growing.pdf").data == content
    assert sink.get("growing.pdf").item.rejection is None


def test_quarantine_never_overwrites(tmp_path: Path) -> None:
    failed = tmp_path / "failed"
    failed.mkdir()
    (failed / "x.pdf").write_bytes(b"older")
    source = tmp_path / "x.pdf"
    source.write_bytes(b"newer")
    dest = quarantine(source, failed, "broken")
    assert dest == failed / "x (1).pdf"
    assert dest.read_bytes() == b"newer"
    assert (failed / "x.pdf").read_bytes() == b"older"
    assert (failed / "x (1).pdf.reason.txt").read_text().startswith("reason: broken\n")
    assert not source.exists()
    assert not [p for p in failed.iterdir() if p.name.startswith(".")]  # no temp files left


def test_move_across_filesystems(tmp_path: Path) -> None:
    shm = Path("/dev/shm")
    if not shm.is_dir() or not os.access(shm, os.W_OK):
        pytest.skip("no /dev/shm")
    with tempfile.TemporaryDirectory(dir=shm) as other:
        if os.stat(other).st_dev == os.stat(tmp_path).st_dev:
            pytest.skip("/dev/shm is on the same filesystem")
        target = Path(other) / "failed"
        target.mkdir()
        (target / "x.pdf").write_bytes(b"older")
        source = tmp_path / "x.pdf"
        source.write_bytes(b"newer")
        dest = quarantine(source, target, "broken")
        assert dest == target / "x (1).pdf"
        assert dest.read_bytes() == b"newer"
        assert not source.exists()
        assert names(target) == {"x.pdf", "x (1).pdf", "x (1).pdf.reason.txt"}


# --------------------------------------------------------------------------- names and paths


def test_name_clash_in_processed_gets_a_suffix(start_source: Factory, tmp_path: Path) -> None:
    processed = tmp_path / "inbox" / "processed"
    processed.mkdir(parents=True)
    (processed / "x.pdf").write_bytes(b"first")
    (processed / "x (1).pdf").write_bytes(b"second")
    _, _sink, inbox = start_source()
    (inbox / "x.pdf").write_bytes(pdf_bytes("third"))
    wait_for(lambda: (processed / "x (2).pdf").exists(), what="suffixed")
    assert (processed / "x.pdf").read_bytes() == b"first"
    assert (processed / "x (1).pdf").read_bytes() == b"second"
    assert (processed / "x (2).pdf").read_bytes() == pdf_bytes("third")


def test_unicode_spaces_dots_and_long_names(start_source: Factory, tmp_path: Path) -> None:
    long_name = "ä" * 125 + ".pdf"  # 254 bytes: no room for a suffix without shortening
    special = [
        "Rechnung Müller \u2013 März 2024 日本.pdf",
        "a..b.pdf",
        "with  spaces .pdf",
        long_name,
    ]
    processed = tmp_path / "inbox" / "processed"
    processed.mkdir(parents=True)
    (processed / long_name).write_bytes(b"clash")
    _, sink, inbox = start_source(incomplete_grace_seconds=0.3)
    for index, name in enumerate(special):
        (inbox / name).write_bytes(pdf_bytes(f"special {index}"))
    (inbox / ("é" * 125 + ".pdf")).write_bytes(b"")  # rejected: the reason file must still fit

    wait_for(lambda: len(sink.released) == 5, what="all released")
    assert sorted(sink.refs()) == sorted([*special, "é" * 125 + ".pdf"])
    for name in special[:3]:
        assert (processed / name).exists()
    suffixed = [n for n in names(processed) if n.endswith(" (1).pdf")]
    assert len(suffixed) == 1
    assert len(os.fsencode(suffixed[0])) <= 255
    failed = names(inbox / "failed")
    assert len(failed) == 2
    assert all(len(os.fsencode(n)) <= 255 for n in failed)
    assert names(inbox) == {"processed", "failed"}


def test_undecodable_name_is_taken_with_a_readable_ref(start_source: Factory) -> None:
    _, sink, inbox = start_source()
    raw = inbox / os.fsdecode(b"caf\xe9 latin-1.pdf")
    raw.write_bytes(pdf_bytes("latin-1 name"))
    wait_for(lambda: sink.released == [1], what="taken")
    item = sink.get("caf\\xe9 latin-1.pdf").item
    assert item.filename == "caf\\xe9 latin-1.pdf"
    item.source_ref.encode("utf-8")  # storable as UTF-8
    assert (inbox / "processed" / raw.name).exists()


def test_r10_symlinks_are_skipped(start_source: Factory, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    (outside / "dir").mkdir(parents=True)
    (outside / "secret.pdf").write_bytes(pdf_bytes("secret"))
    (outside / "dir" / "also-secret.pdf").write_bytes(pdf_bytes("also secret"))
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (inbox / "link.pdf").symlink_to(outside / "secret.pdf")
    (inbox / "dirlink").symlink_to(outside / "dir", target_is_directory=True)
    (inbox / "inner.pdf").write_bytes(pdf_bytes("inner"))
    (inbox / "alias.pdf").symlink_to(inbox / "inner.pdf")

    source, sink, _ = start_source(recursive=True)
    wait_for(lambda: moved(inbox, "inner.pdf"), what="real file taken")
    assert source.scan() == 0
    time.sleep(SETTLE * 2)
    assert sink.refs() == ["inner.pdf"]
    assert (outside / "secret.pdf").exists()
    assert (outside / "dir" / "also-secret.pdf").exists()
    assert (inbox / "link.pdf").is_symlink()


def test_r10_follow_symlinks_still_never_leaves_the_folder(
    start_source: Factory, tmp_path: Path
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.pdf").write_bytes(pdf_bytes("secret"))
    inbox = tmp_path / "inbox"
    (inbox / "store").mkdir(parents=True)
    (inbox / "store" / "real.pdf").write_bytes(pdf_bytes("real"))
    (inbox / "link.pdf").symlink_to(outside / "secret.pdf")
    (inbox / "inside.pdf").symlink_to(inbox / "store" / "real.pdf")

    _, sink, _ = start_source(follow_symlinks=True)
    wait_for(lambda: sink.refs() == ["inside.pdf"], what="inner link taken")
    assert sink.get("inside.pdf").data == pdf_bytes("real")
    wait_for(lambda: (inbox / "processed" / "inside.pdf").is_symlink(), what="link moved")
    assert (inbox / "link.pdf").is_symlink()
    assert (outside / "secret.pdf").exists()


def test_fifo_is_ignored_without_blocking(start_source: Factory, tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    os.mkfifo(inbox / "pipe.pdf")
    _source, sink, _ = start_source()
    (inbox / "after.pdf").write_bytes(pdf_bytes("after"))
    wait_for(lambda: sink.refs() == ["after.pdf"], what="regular file taken")
    assert (inbox / "pipe.pdf").exists()


# --------------------------------------------------------------------------- watching


def test_polling_mode(start_source: Factory) -> None:
    source, sink, inbox = start_source(polling=True, recursive=True)
    assert source.health()["watch_mode"] == "polling"
    (inbox / "polled.pdf").write_bytes(pdf_bytes("polled"))
    (inbox / "sub").mkdir()
    (inbox / "sub" / "deep.pdf").write_bytes(pdf_bytes("deep"))
    wait_for(lambda: moved(inbox, "polled.pdf"), what="taken by polling")
    wait_for(lambda: moved(inbox, "sub/deep.pdf"), what="subfolder")
    assert sorted(sink.refs()) == ["polled.pdf", "sub/deep.pdf"]


def test_r09_inotify_failure_falls_back_to_polling(
    start_source: Factory, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def no_watches(self: InotifyEmitter) -> None:
        raise OSError(errno.ENOSPC, "inotify watch limit reached")

    monkeypatch.setattr(InotifyEmitter, "on_thread_start", no_watches)
    with caplog.at_level(logging.ERROR, logger=folder.__name__):
        source, _sink, inbox = start_source()
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1
    assert "polling" in errors[0].getMessage()
    assert source.health()["watch_mode"] == "polling"
    (inbox / "fallback.pdf").write_bytes(pdf_bytes("fallback"))
    wait_for(lambda: moved(inbox, "fallback.pdf"), what="taken by polling")


def test_r08_scan_finds_files_when_events_are_lost(
    start_source: Factory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(FolderSource, "_on_event", lambda self, event: None)
    source, sink, inbox = start_source()
    (inbox / "missed.pdf").write_bytes(pdf_bytes("missed"))
    time.sleep(SETTLE * 3)
    assert sink.refs() == []
    assert source.scan() == 1
    wait_for(lambda: moved(inbox, "missed.pdf"), what="taken after scan")


def test_scan_restarts_a_watch_that_died(start_source: Factory) -> None:
    source, _sink, inbox = start_source()
    shutil.rmtree(inbox)
    wait_for(lambda: not source.health()["watching"], what="the watch to notice")
    inbox.mkdir()
    assert source.scan() == 0
    assert source.health()["watching"]
    (inbox / "after-restart.pdf").write_bytes(pdf_bytes("after restart"))
    wait_for(lambda: moved(inbox, "after-restart.pdf"), what="taken")


def test_sink_error_leaves_the_file_for_the_next_scan(
    start_source: Factory, caplog: pytest.LogCaptureFixture
) -> None:
    sink = FakeSink()
    sink.fail_next = 1
    source, _, inbox = start_source(sink)
    path = inbox / "retry.pdf"
    path.write_bytes(pdf_bytes("retry"))
    wait_for(lambda: sink.attempts == 1, what="first attempt")
    time.sleep(SETTLE * 2)
    assert path.exists()
    assert sink.attempts == 1
    assert any(r.exc_info and "retried" in r.getMessage() for r in caplog.records)
    assert source.health()["pending"] == 0

    assert source.scan() == 1
    # the release is recorded after the move, so wait for the record, not the file
    wait_for(lambda: sink.released == [1], what="taken and released on rescan")
    assert moved(inbox, "retry.pdf")
    assert sink.refs() == ["retry.pdf"]


def test_stop_finishes_the_item_in_flight(start_source: Factory) -> None:
    sink = FakeSink()
    sink.delay = 0.5
    source, _, inbox = start_source(sink)
    (inbox / "slow-sink.pdf").write_bytes(pdf_bytes("slow sink"))
    assert sink.ingest_started.wait(10)
    source.stop()
    assert (inbox / "processed" / "slow-sink.pdf").exists()
    assert sink.released == [1]
    assert source.health()["watch_mode"] == "stopped"


def test_bad_folder_settings_are_refused(tmp_path: Path) -> None:
    good = {"name": "scans", "path": tmp_path}
    for bad, message in [
        ({"poll_interval": 0}, "greater than 0"),
        ({"settle_seconds": -1}, "greater than or equal to 0"),
        ({"max_file_bytes": 0}, "greater than 0"),
        ({"processed_dir": "same", "failed_dir": "same"}, "must be different"),
        ({"processed_dir": "."}, "other than the watched folder"),
        ({"ignore": ["sub/*.pdf"]}, "single names"),
        ({"name": " "}, "must not be empty"),
        ({"surprise": 1}, "Extra inputs"),
    ]:
        with pytest.raises(ValidationError, match=message):
            FolderSettings(**{**good, **bad})  # type: ignore[arg-type]
    settings = FolderSettings(**good)  # type: ignore[arg-type]
    assert settings.after == "move"
    assert settings.max_file_bytes == 100 * MIB
    assert all(field.description for field in FolderSettings.model_fields.values())


def test_processed_dir_containing_the_folder_is_refused(
    start_source: Factory, tmp_path: Path
) -> None:
    with pytest.raises(ValueError, match="must not be the watched folder"):
        start_source(processed_dir=str(tmp_path))


# --------------------------------------------------------------------------- file checks


def test_sniff_mime(tmp_path: Path) -> None:
    cases = {
        "a.pdf": pdf_bytes(),
        "renamed.bin": pdf_bytes(),
        "b.png": image_bytes("PNG"),
        "c.jpg": image_bytes("JPEG"),
        "d.tif": image_bytes("TIFF"),
        "e.txt": "Grüße\n".encode("latin-1"),
        "f.docx": docx_bytes(),
        "g.txt": b"\x00\x01binary",
        "h.csv": b"a;b\n1;2\n",
    }
    expected = ["application/pdf", "application/pdf", "image/png", "image/jpeg", "image/tiff"]
    expected += ["text/plain", None, None, None]
    for (name, data), mime in zip(cases.items(), expected, strict=True):
        (tmp_path / name).write_bytes(data)
        assert sniff_mime(tmp_path / name) == mime, name
        assert sniff_mime(tmp_path / name, data[:4096]) == mime, name


def check(path: Path, data: bytes, max_bytes: int = MIB) -> filecheck.CheckResult:
    path.write_bytes(data)
    return check_file(path, sniff_mime(path), max_bytes=max_bytes)


def test_check_file_accepts_good_documents(tmp_path: Path) -> None:
    for name, data in [
        ("a.pdf", pdf_bytes()),
        ("b.png", image_bytes("PNG")),
        ("c.jpg", image_bytes("JPEG")),
        ("d.tif", image_bytes("TIFF")),
        ("e.txt", "plain text ✓\n".encode()),
    ]:
        assert check(tmp_path / name, data).verdict is Verdict.OK, name


def test_check_file_rejects_and_waits(tmp_path: Path) -> None:
    assert check(tmp_path / "big.pdf", pdf_bytes(), max_bytes=10).reason == (
        f"file too large: {len(pdf_bytes()):,} bytes (limit 10 bytes)"
    )
    result = check(tmp_path / "x", b"\x7fELF\x02\x01\x01")
    assert result.reason == "unsupported file type: (no extension) (executable)"
    result = check(tmp_path / "fake.pdf", b"<html>not a pdf</html>")
    assert result.reason == "unsupported file type: .pdf (XML/HTML markup)"
    result = check(tmp_path / "bin.txt", b"text\x00with a NUL")
    assert result.verdict is Verdict.REJECT
    result = check_file(tmp_path / "bin.txt", "text/plain", max_bytes=MIB)
    assert result.reason == "not a text file: contains binary data (NUL or control bytes)"

    for name, data in [
        ("cut.pdf", pdf_bytes()[:-8]),
        ("cut.png", image_bytes("PNG", (300, 300))[:-2000]),
        ("cut.jpg", image_bytes("JPEG", (300, 300))[:-2000]),
        ("cut.tif", image_bytes("TIFF", (300, 300))[:-2000]),
    ]:
        result = check(tmp_path / name, data)
        assert result.verdict is Verdict.WAIT, (name, result)
        assert "truncated or still being written" in (result.reason or ""), name

    padded = pdf_bytes() + b"\n" * 200_000 + b"\x00 \r\n" * 1000  # legal after %%EOF
    assert check(tmp_path / "padded.pdf", padded).verdict is Verdict.OK
    too_padded = pdf_bytes() + b"\n" * (filecheck.MAX_PDF_PADDING + 70_000)
    assert check(tmp_path / "padded.pdf", too_padded, 4 * MIB).verdict is Verdict.WAIT
    assert check(tmp_path / "padded.pdf", b"%PDF-1.4\n" + b"\n" * 5000).verdict is Verdict.WAIT

    broken = bytearray(image_bytes("PNG"))
    broken[40:60] = b"\x00" * 20
    result = check(tmp_path / "broken.png", bytes(broken))
    assert result.verdict is Verdict.REJECT
    assert (result.reason or "").startswith("broken PNG image")


def test_decompression_bomb_is_rejected(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    result = check(tmp_path / "bomb.png", image_bytes("PNG", (40, 30)))
    assert result.reason == "image too large (decompression bomb guard)"


def test_check_file_propagates_a_vanished_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        check_file(tmp_path / "nope.pdf", "application/pdf", max_bytes=MIB)


def test_check_file_waits_for_an_empty_file(tmp_path: Path) -> None:
    result = check(tmp_path / "empty.pdf", b"")
    assert (result.verdict, result.reason) == (Verdict.WAIT, "empty file (0 bytes)")


def test_empty_file_is_waited_for_and_taken_once_written(start_source: Factory) -> None:
    _, sink, inbox = start_source(incomplete_grace_seconds=30)
    path = inbox / "late.pdf"
    path.write_bytes(b"")  # copy tools create the file first and write it later
    time.sleep(SETTLE * 3)
    assert path.exists()
    assert sink.refs() == []
    path.write_bytes(pdf_bytes("written late"))
    wait_for(lambda: moved(inbox, "late.pdf"), what="taken")
    assert sink.get("late.pdf").item.rejection is None
    assert not names(inbox / "failed")


# --------------------------------------------------------------------------- keep across restarts


def kept_json(tmp_path: Path) -> dict[str, Any]:
    return json.loads((tmp_path / "state" / "kept.json").read_text())


def test_keep_is_remembered_across_a_restart(start_source: Factory, tmp_path: Path) -> None:
    source, sink, inbox = start_source(after="keep")
    path, other = inbox / "keep.pdf", inbox / "other.txt"
    path.write_bytes(pdf_bytes("keep"))
    other.write_text("other\n")
    wait_for(lambda: len(sink.released) == 2, what="both taken")
    wait_for(
        lambda: (
            (tmp_path / "state" / "kept.json").exists()
            and set(kept_json(tmp_path)["files"]) == {"keep.pdf", "other.txt"}
        ),
        what="saved while running",
    )
    source.stop()
    st = path.stat()
    saved = kept_json(tmp_path)
    assert saved["root"] == str(inbox.resolve())
    assert saved["files"]["keep.pdf"] == [st.st_size, st.st_mtime_ns, None]

    restarted, sink2, _ = start_source(after="keep")
    assert restarted.scan() == 0
    time.sleep(SETTLE * 2)
    assert sink2.refs() == []

    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))  # touched: a re-drop
    assert restarted.scan() == 1
    wait_for(lambda: sink2.refs() == ["keep.pdf"], what="touched file offered again")
    other.write_text("other, changed\n")
    wait_for(lambda: sorted(sink2.refs()) == ["keep.pdf", "other.txt"], what="changed file")
    assert path.exists()
    assert other.exists()
    restarted.stop()
    assert kept_json(tmp_path)["files"]["keep.pdf"][1] == st.st_mtime_ns + 1_000_000_000


def test_kept_entries_of_vanished_files_are_dropped(start_source: Factory, tmp_path: Path) -> None:
    source, sink, inbox = start_source(after="keep")
    (inbox / "a.pdf").write_bytes(pdf_bytes("a"))
    (inbox / "b.pdf").write_bytes(pdf_bytes("b"))
    wait_for(lambda: len(sink.released) == 2, what="both taken")

    away = inbox.with_name("inbox.away")  # an unmounted share: nothing may be concluded
    inbox.rename(away)
    assert source.scan() == 0
    away.rename(inbox)
    assert source.scan() == 0

    (inbox / "a.pdf").unlink()
    assert source.scan() == 0
    source.stop()
    assert set(kept_json(tmp_path)["files"]) == {"b.pdf"}
    assert sorted(sink.refs()) == ["a.pdf", "b.pdf"]  # neither offered twice


def test_unusable_kept_state_means_offering_again(
    start_source: Factory, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    inbox, state = tmp_path / "inbox", tmp_path / "state"
    inbox.mkdir()
    state.mkdir()
    path = inbox / "kept.pdf"
    path.write_bytes(pdf_bytes("kept"))
    st = path.stat()
    entry = {"kept.pdf": [st.st_size, st.st_mtime_ns, None]}
    cases = [
        "{not json",
        json.dumps({"version": 1, "root": str(inbox.resolve()), "files": {"kept.pdf": ["1", 2]}}),
        json.dumps({"version": 1, "root": "/elsewhere", "files": entry}),
    ]
    for case in cases:
        (state / "kept.json").write_text(case)
        with caplog.at_level(logging.INFO, logger=folder.__name__):
            source, sink, _ = start_source(after="keep")
            wait_for(lambda s=sink: s.refs() == ["kept.pdf"], what=f"offered again ({case!r})")
            source.stop()
        assert any("kept.json" in r.getMessage() for r in caplog.records)
        caplog.clear()

    good = {"version": 1, "root": str(inbox.resolve()), "files": entry}
    (state / "kept.json").write_text(json.dumps(good))
    source, sink, _ = start_source(after="keep")
    assert source.scan() == 0


# --------------------------------------------------------------------------- vendor rejections


def stored(
    tmp_path: Path, data: bytes | None, *, id: int, filename: str = "invoice.pdf", **metadata: Any
) -> DocumentRef:
    """A document as the engine hands it over: the bytes in a read-only blob (None: no blob)."""
    digest = hashlib.sha256(data or b"").hexdigest()
    blob = tmp_path / "blobs" / f"{digest}-{id}"
    if data is not None:
        blob.parent.mkdir(exist_ok=True)
        blob.write_bytes(data)
        blob.chmod(0o444)
    return DocumentRef(
        id=id,
        sha256=digest,
        filename=filename,
        mime_type="application/pdf",
        size_bytes=len(data or b""),
        pages=1,
        received_at=datetime.now(UTC),
        metadata=metadata,
        path=blob,
    )


def reasons_by_document(failed: Path) -> dict[int, Path]:
    """document id → the file its reason file explains."""
    found: dict[int, Path] = {}
    for reason in failed.glob("*.reason.txt"):
        for line in reason.read_text().splitlines():
            if line.startswith("document: "):
                document_id = int(line.removeprefix("document: "))
                assert document_id not in found, f"document {document_id} twice"
                found[document_id] = reason.with_name(reason.name.removesuffix(".reason.txt"))
    return found


def test_vendor_rejection_puts_a_copy_in_failed(start_source: Factory, tmp_path: Path) -> None:
    source, _, inbox = start_source()
    failed = inbox / "failed"
    data = pdf_bytes("refused")
    doc = stored(tmp_path, data, id=7, path=str(inbox / "invoice.pdf"))
    source.rejected(doc, "invoice.pdf", "unreadable scan\ndocument: 99")

    assert names(failed) == {"invoice.pdf", "invoice.pdf.reason.txt"}
    copy = failed / "invoice.pdf"
    assert copy.read_bytes() == data
    assert copy.stat().st_mode & 0o200  # not read-only like the blob
    lines = (failed / "invoice.pdf.reason.txt").read_text().splitlines()
    assert lines[0] == "reason: unreadable scan document: 99"
    assert lines[1:4] == [
        "file: invoice.pdf",
        f"original: {inbox / 'invoice.pdf'}",
        f"size: {len(data)} bytes",
    ]
    assert lines[4].startswith("time: ")
    assert lines[5:] == ["document: 7"]

    source.rejected(doc, "invoice.pdf", "said again")  # repeats are no-ops
    assert names(failed) == {"invoice.pdf", "invoice.pdf.reason.txt"}
    other = stored(tmp_path, pdf_bytes("other"), id=8)
    source.rejected(other, "invoice.pdf", "also refused")
    assert reasons_by_document(failed) == {7: copy, 8: failed / "invoice (1).pdf"}
    assert (failed / "invoice (1).pdf").read_bytes() == pdf_bytes("other")

    source.stop()
    restarted, _, _ = start_source()
    restarted.rejected(doc, "invoice.pdf", "after a restart")
    restarted.rejected(other, "invoice.pdf", "after a restart")
    assert len(names(failed)) == 4


def test_vendor_rejection_of_a_quarantined_document_is_a_no_op(
    start_source: Factory, tmp_path: Path
) -> None:
    source, sink, inbox = start_source()
    failed = inbox / "failed"
    source.rejected(stored(tmp_path, pdf_bytes("x"), id=100), "x.pdf", "no")
    (inbox / "reject-me.pdf").write_bytes(pdf_bytes("refused at intake"))
    wait_for(lambda: sink.released == [1], what="quarantined")
    before = names(failed)
    doc = stored(tmp_path, pdf_bytes("refused at intake"), id=1, filename="reject-me.pdf")
    source.rejected(doc, "reject-me.pdf", "vendor says no")
    assert names(failed) == before
    assert set(reasons_by_document(failed)) == {1, 100}


def test_vendor_rejection_never_uses_a_path_from_the_name(
    start_source: Factory, tmp_path: Path
) -> None:
    source, _, inbox = start_source()
    hostile = ["../../escape.pdf", "/etc/passwd", "..", "", "sub/dir/x.pdf", "a\nb.pdf", ".h.pdf"]
    for index, name in enumerate(hostile, start=1):
        source.rejected(stored(tmp_path, pdf_bytes(name), id=index, filename=name), name, "bad")
    failed = inbox / "failed"
    copies = {"escape.pdf", "passwd", "document-3", "document-4", "x.pdf", "a b.pdf", "h.pdf"}
    assert names(failed) == copies | {f"{name}.reason.txt" for name in copies}
    assert names(tmp_path) == {"inbox", "blobs"}
    assert names(inbox) == {"failed", "processed"}
    assert "file: a b.pdf" in (failed / "a b.pdf.reason.txt").read_text()


def test_vendor_rejection_with_a_missing_blob_only_warns(
    start_source: Factory, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    source, _, inbox = start_source()
    failed = inbox / "failed"
    with caplog.at_level(logging.WARNING, logger=folder.__name__):
        source.rejected(stored(tmp_path, None, id=5, filename="gone.pdf"), "gone.pdf", "bad")
    assert names(failed) == set()  # no temporary file left either
    assert any("stored copy is missing" in r.getMessage() for r in caplog.records)

    source.rejected(stored(tmp_path, pdf_bytes("back"), id=5, filename="gone.pdf"), "g", "bad")
    assert names(failed) == {"gone.pdf", "gone.pdf.reason.txt"}


def test_vendor_rejections_from_many_threads(start_source: Factory, tmp_path: Path) -> None:
    source, sink, inbox = start_source()
    failed = inbox / "failed"
    docs = [
        stored(tmp_path, pdf_bytes(f"doc {i}"), id=100 + i, filename="reject-me.pdf")
        for i in range(8)
    ]
    barrier = threading.Barrier(len(docs) * 2 + 1)

    def reject(doc: DocumentRef) -> None:
        barrier.wait()
        source.rejected(doc, "reject-me.pdf", "no")

    threads = [threading.Thread(target=reject, args=(doc,)) for doc in docs * 2]
    for thread in threads:
        thread.start()
    (inbox / "reject-me.pdf").write_bytes(pdf_bytes("quarantined meanwhile"))
    barrier.wait()
    for thread in threads:
        thread.join(10)
    wait_for(lambda: sink.released == [1], what="quarantined")

    placed = reasons_by_document(failed)
    assert set(placed) == {1} | {doc.id for doc in docs}
    for doc in docs:
        assert placed[doc.id].read_bytes() == doc.path.read_bytes()
    assert placed[1].read_bytes() == pdf_bytes("quarantined meanwhile")
    assert len(names(failed)) == 2 * len(placed)
