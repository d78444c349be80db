"""``KeptFiles`` on its own, with a fake clock: when ``kept.json`` is written, what a scan may
forget, and that a failed write is retried. (The source's use of it across restarts is tested in
``test_folder_source.py``.)"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from connectors.sources.folder.kept import KEPT_FILE, KEPT_SAVE_INTERVAL, KeptFiles


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make(tmp_path: Path, clock: Clock, root: Path | None = None) -> KeptFiles:
    return KeptFiles(tmp_path / "state" / KEPT_FILE, root or tmp_path, clock=clock, label="t")


def test_saves_are_paced_and_only_when_changed(tmp_path: Path) -> None:
    clock = Clock()
    kept = make(tmp_path, clock)
    assert kept.save_due() is None
    kept.add("a.pdf", (1, 2))
    assert kept.save_due() == float("-inf")  # the first save is due at once
    kept.save()
    assert json.loads(kept.path.read_text()) == {
        "version": 1,
        "root": str(tmp_path),
        "files": {"a.pdf": [1, 2, None]},
    }
    assert kept.save_due() is None and not kept.dirty
    kept.add("b.pdf", (3, 4))
    assert kept.save_due() == clock.now + KEPT_SAVE_INTERVAL

    reloaded = make(tmp_path, clock)
    reloaded.load()
    assert reloaded.snapshot() == {"a.pdf": (1, 2)}  # b.pdf was not saved yet


def test_forget_gone_keeps_files_kept_again_since_the_snapshot(tmp_path: Path) -> None:
    kept = make(tmp_path, Clock())
    kept.add("gone.pdf", (1, 1))
    kept.add("rekept.pdf", (2, 2))
    kept.add("here.pdf", (3, 3))
    snapshot = kept.snapshot()
    kept.add("rekept.pdf", (2, 99))  # taken again, changed, while the scan ran
    kept.forget_gone(snapshot, present={"here.pdf"})
    assert kept.snapshot() == {"rekept.pdf": (2, 99), "here.pdf": (3, 3)}


def test_a_record_for_another_folder_is_ignored(tmp_path: Path) -> None:
    clock = Clock()
    kept = make(tmp_path, clock, root=tmp_path / "one")
    kept.add("a.pdf", (1, 2))
    kept.save()
    other = make(tmp_path, clock, root=tmp_path / "two")
    other.load()
    assert other.snapshot() == {}


def test_a_failed_save_is_retried_and_warned_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "state").write_text("a file where the folder should be")
    kept = make(tmp_path, Clock())
    kept.add("a.pdf", (1, 2))
    with caplog.at_level(logging.DEBUG, logger="connectors.sources.folder.kept"):
        kept.save()
        kept.save()
    assert kept.dirty
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "cannot save the kept files" in warnings[0].getMessage()

    (tmp_path / "state").unlink()
    kept.save()
    assert not kept.dirty
    assert json.loads(kept.path.read_text())["files"] == {"a.pdf": [1, 2, None]}
