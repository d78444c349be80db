"""``docrelay backup`` and ``docrelay restore``, as an operator runs them.

A backup taken while the real daemon processes documents restores into a fresh location with
the same documents, fields and byte-equal blobs; a damaged backup is refused with the reason and
changes nothing; a restore never runs under a daemon or over a store without ``--force``.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.daemon_proc import DaemonProcess, drop_invoices, exported, query, wait_until
from tests.daemon_proc import write_config as daemon_config

pytestmark = pytest.mark.e2e


def docrelay(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "daemon.cli", "--config", str(config), *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def write_config(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    return daemon_config(root)


def rows(root: Path, table: str, order: str) -> list[dict]:
    return [dict(r) for r in query(root, f"SELECT * FROM {table} ORDER BY {order}")]


def blob_bytes(root: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in (root / "var" / "blobs").glob("??/??/*")}


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def status(config: Path) -> dict:
    done = docrelay(config, "status", "--json")
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    return {"documents": data["documents"], "submissions": data["submissions"]}


def test_backup_while_the_daemon_runs_restores_the_same_store(tmp_path):
    live, fresh = tmp_path / "live", tmp_path / "fresh"
    config = write_config(live)
    # Releases of the originals are recorded at the next intake commit or sweep: a short sweep
    # lets the test wait for them (below) instead of racing the default 30 s one.
    daemon = DaemonProcess(config, env={"DOCRELAY_PIPELINE__SWEEP_INTERVAL": "1"}).start()
    drop_invoices(live / "inbox", 3, prefix="a", first_seed=1)
    wait_until(lambda: exported(live) == 3, 60, what="the first exports")

    # Taken while documents are coming in and being worked on: still a consistent copy.
    drop_invoices(live / "inbox", 4, prefix="b", first_seed=10)
    during = docrelay(config, "backup", str(tmp_path / "during"))
    assert during.returncode == 0, during.stderr
    manifest = json.loads((tmp_path / "during" / "manifest.json").read_text())
    assert manifest["schema_revision"]
    assert manifest["database"]["sha256"] == sha256(tmp_path / "during" / "docrelay.db")
    assert manifest["counts"]["documents"] >= 3
    assert manifest["blobs"] == len(list((tmp_path / "during" / "blobs").glob("??/??/*")))

    wait_until(lambda: exported(live) == 7, 60, what="every export")
    wait_until(
        lambda: all(r["state"] == "done" for r in query(live, "SELECT state FROM submissions")),
        30,
        what="every submission done",
    )
    wait_until(
        lambda: all(r["released_at"] for r in query(live, "SELECT released_at FROM documents")),
        30,
        what="every original's release recorded (the store is quiet from here on)",
    )
    quiet = docrelay(config, "backup", str(tmp_path / "quiet"))
    assert quiet.returncode == 0, quiet.stderr
    assert "7 documents" in quiet.stdout

    # Not over a running daemon's store, and not into an existing backup.
    locked = docrelay(config, "restore", str(tmp_path / "quiet"), "--force")
    assert locked.returncode == 1
    assert "another docrelay process" in locked.stderr
    again = docrelay(config, "backup", str(tmp_path / "quiet"))
    assert again.returncode == 1
    assert "exists already" in again.stderr

    fresh_config = write_config(fresh)
    done = docrelay(fresh_config, "restore", str(tmp_path / "quiet"))
    assert done.returncode == 0, done.stderr
    assert rows(fresh, "documents", "id") == rows(live, "documents", "id")
    assert rows(fresh, "fields", "id") == rows(live, "fields", "id")
    assert rows(fresh, "deliveries", "id") == rows(live, "deliveries", "id")
    assert blob_bytes(fresh) == blob_bytes(live)
    assert len(blob_bytes(fresh)) == 7
    assert status(fresh_config) == status(config)
    mode = (fresh / "var" / "docrelay.db").stat().st_mode & 0o777
    assert mode == (live / "var" / "docrelay.db").stat().st_mode & 0o777  # the group may read

    # A store that holds documents is replaced only when asked to.
    refused = docrelay(fresh_config, "restore", str(tmp_path / "during"))
    assert refused.returncode == 1
    assert "give --force" in refused.stderr
    assert rows(fresh, "documents", "id") == rows(live, "documents", "id")
    forced = docrelay(fresh_config, "restore", str(tmp_path / "during"), "--force")
    assert forced.returncode == 0, forced.stderr
    counts = query(fresh, "SELECT COUNT(*) AS n FROM documents")[0]["n"]
    assert counts == manifest["counts"]["documents"]
    assert daemon.stop() == 0

    # The restored store runs: a daemon on it starts (migrating if need be) and says ready.
    restored = DaemonProcess(fresh_config).start()
    assert restored.stop() == 0


def test_a_damaged_backup_is_refused_and_changes_nothing(tmp_path):
    live, target = tmp_path / "live", tmp_path / "target"
    config = write_config(live)
    inbox = live / "inbox"
    drop_invoices(inbox, 2, prefix="x", first_seed=50)
    submitted = docrelay(config, "submit", "--wait", str(inbox))
    assert submitted.returncode == 0, submitted.stderr
    made = docrelay(config, "backup", str(tmp_path / "bk"))
    assert made.returncode == 0, made.stderr
    backup = tmp_path / "bk"

    target_config = write_config(target)
    drop_invoices(target / "inbox", 1, prefix="own", first_seed=60)
    assert docrelay(target_config, "submit", str(target / "inbox")).returncode == 0
    before = sha256(target / "var" / "docrelay.db"), blob_bytes(target)

    blob = next(iter((backup / "blobs").glob("??/??/*")))
    good = blob.read_bytes()
    blob.write_bytes(good[:-1] + bytes([good[-1] ^ 1]))
    damaged = docrelay(target_config, "restore", str(backup), "--force")
    assert damaged.returncode == 1
    assert "does not hash to its name" in damaged.stderr
    assert "nothing changed" in damaged.stderr
    blob.unlink()
    missing = docrelay(target_config, "restore", str(backup), "--force")
    assert missing.returncode == 1
    assert f"blob {blob.name} is missing" in missing.stderr
    blob.write_bytes(good)

    db = backup / "docrelay.db"
    data = db.read_bytes()
    db.write_bytes(data[:-4096])
    torn = docrelay(target_config, "restore", str(backup), "--force")
    assert torn.returncode == 1
    assert "the copy is damaged" in torn.stderr
    db.write_bytes(data)
    (backup / "manifest.json").write_text("{not json")
    unreadable = docrelay(target_config, "restore", str(backup), "--force")
    assert unreadable.returncode == 1
    assert "manifest.json: unreadable" in unreadable.stderr
    assert (sha256(target / "var" / "docrelay.db"), blob_bytes(target)) == before


def test_postgresql_and_mariadb_stores_name_their_own_tools(tmp_path):
    for url, tool in (
        ("postgresql+psycopg://docrelay@127.0.0.1/docrelay", "pg_dump"),
        ("mysql+pymysql://docrelay@127.0.0.1/docrelay", "mariadb-dump"),
    ):
        config = tmp_path / "config.toml"
        config.write_text(f'[store]\nurl = "{url}"\nblob_dir = "{tmp_path}/blobs"\n')
        done = docrelay(config, "backup", str(tmp_path / "bk"))
        assert done.returncode == 1
        assert tool in done.stderr
        assert not (tmp_path / "bk").exists()
