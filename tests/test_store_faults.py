"""The store under faults from outside the daemon (RELIABILITY 24 and 25)."""

from __future__ import annotations

import errno
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import require_service
from tests.daemon_proc import DaemonProcess, wait_until, write_config
from tests.invoices import random_spec, render_pdf

pytestmark = pytest.mark.e2e


def test_r24_an_external_exclusive_lock_delays_work_but_loses_nothing(tmp_path):
    """Another process holds `BEGIN EXCLUSIVE` on the SQLite store for 10 s, three times the
    busy timeout, while documents are at every stage: writers wait, retry, and every document
    still ends exported once; the log says so in warnings, not tracebacks."""
    config = write_config(tmp_path)
    config.write_text(config.read_text().replace("[store]\n", "[store]\nbusy_timeout = 3\n", 1))
    inbox, outbox = tmp_path / "inbox", tmp_path / "outbox"
    daemon = DaemonProcess(config).start()
    try:
        for seed in range(3):
            (inbox / f"before-{seed}.pdf").write_bytes(render_pdf(random_spec(seed)))
        wait_until(lambda: len(list(outbox.glob("*.json"))) == 3, 30, what="the first exports")
        db = tmp_path / "var" / "docrelay.db"
        for seed in range(3, 13):
            (inbox / f"during-{seed}.pdf").write_bytes(render_pdf(random_spec(seed)))
        locker = sqlite3.connect(db, isolation_level=None)

        def documents() -> int:
            return locker.execute("SELECT COUNT(*) FROM documents").fetchone()[0]

        wait_until(lambda: documents() > 3, 30, interval=0.01, what="the next document row")
        locker.execute("BEGIN EXCLUSIVE")
        try:
            time.sleep(10)
            assert documents() < 13, "the lock came too late to meet work in progress"
        finally:
            locker.execute("ROLLBACK")
            locker.close()
        wait_until(lambda: len(list(outbox.glob("*.json"))) == 13, 60, what="every export")
        assert sorted(p.name for p in (inbox / "processed").iterdir()) == sorted(
            [f"before-{s}.pdf" for s in range(3)] + [f"during-{s}.pdf" for s in range(3, 13)]
        )
        assert httpx.get(f"{daemon.url}/healthz").status_code == 200
        with sqlite3.connect(tmp_path / "var" / "docrelay.db") as conn:
            states = conn.execute(
                "SELECT state, COUNT(*) FROM deliveries GROUP BY state"
            ).fetchall()
        assert states == [("delivered", 13)]
    finally:
        assert daemon.stop() == 0
    log = (tmp_path / "daemon.log").read_text()
    tracebacks = log.count("Traceback (most recent call last)")
    assert tracebacks <= 1, log[-5000:]


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 20 MB file system of its own (tmpfs; needs root, as in CI)."""
    mount = tmp_path / "small"
    mount.mkdir()
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=20m", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
    )
    require_service(result.returncode == 0, f"cannot mount a tmpfs: {result.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def _fill(path: Path) -> None:
    """Write until the file system is full."""
    chunk = b"\0" * (1 << 20)
    with open(path, "wb", buffering=0) as ballast:
        try:
            while True:
                ballast.write(chunk)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
        try:
            while True:
                ballast.write(b"\0" * 4096)
        except OSError:
            pass


def test_r25_a_full_disk_keeps_files_in_place_and_work_resumes_with_space(tmp_path, small_disk):
    """RELIABILITY 25: the store's file system fills up. The file dropped meanwhile stays in
    the inbox, no temporary blob is left, /healthz says disk_full (still 200: a restart would
    not make room) until there is room again, and then the file is taken and exported once."""
    config = write_config(tmp_path, store_url=f"sqlite:///{small_disk}/docrelay.db")
    config.write_text(
        config.read_text().replace(f'"{tmp_path}/var/blobs"', f'"{small_disk}/blobs"')
    )
    inbox, outbox = tmp_path / "inbox", tmp_path / "outbox"
    daemon = DaemonProcess(config).start()
    try:
        (inbox / "first.pdf").write_bytes(render_pdf(random_spec(1)))
        wait_until(lambda: len(list(outbox.glob("*.json"))) == 1, 30, what="the first export")
        _fill(small_disk / "ballast")
        (inbox / "second.pdf").write_bytes(render_pdf(random_spec(2)))

        def storage() -> dict:
            response = httpx.get(f"{daemon.url}/healthz")
            assert response.status_code == 200
            return response.json()["storage"]

        wait_until(lambda: storage()["state"] == "disk_full", 30, what="disk_full")
        assert "no space" in storage()["reason"].lower() or "full" in storage()["reason"]
        assert (inbox / "second.pdf").exists()
        assert list((small_disk / "blobs" / "tmp").iterdir()) == []
        # Someone takes the file away and makes room: health recovers without a new document.
        (inbox / "second.pdf").rename(tmp_path / "aside.pdf")
        (small_disk / "ballast").unlink()
        wait_until(lambda: storage()["state"] == "ok", 10, what="storage ok again")
        (tmp_path / "aside.pdf").rename(inbox / "second.pdf")
        wait_until(lambda: len(list(outbox.glob("*.json"))) == 2, 30, what="the second export")
        assert not (inbox / "second.pdf").exists()
    finally:
        assert daemon.stop() == 0
    with sqlite3.connect(small_disk / "docrelay.db") as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        assert conn.execute("SELECT state, COUNT(*) FROM deliveries GROUP BY state").fetchall() == [
            ("delivered", 2)
        ]
