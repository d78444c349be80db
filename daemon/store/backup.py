"""``docrelay backup`` and ``docrelay restore``: a consistent copy of a SQLite store and its blobs.

A backup is a directory::

    manifest.json       format, docrelay version, schema revision, counts, sha256 of the copy
    docrelay.db         the SQLite database, copied with SQLite's online backup API
    blobs/ab/cd/<sha>   every blob the copied database references

The database is copied first, in one step of the online backup API (a read snapshot: safe while
the daemon runs and writes); then every blob that copy references is copied. Blobs are
content-addressed and never changed or deleted once written (``BlobStore``), so each one the
snapshot names is still there, whole. The directory is written as ``PATH.partial`` and renamed
when complete: a ``PATH`` that exists is a finished backup.

A restore checks everything before it changes anything (manifest, the database's hash and
integrity, every blob's content against its name, every referenced blob present), then writes
the blobs, then the database (so an interrupted restore leaves at worst unused blobs).

PostgreSQL and MariaDB stores are backed up with their own tools (``pg_dump``,
``mariadb-dump``) and the blob directory copied beside them.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
import tempfile
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy.engine import make_url

from connectors.fsutil import fsync_dir
from daemon.store.blobs import CHUNK, SHA256_HEX, BlobStore

FORMAT = 1
MANIFEST = "manifest.json"
DATABASE = "docrelay.db"
UNSTORED_SHA = "0" * 64
"""The ``sha256`` of a document too large to keep (no blob)."""
COUNTED = ("documents", "submissions", "extractions", "deliveries", "feedback", "events")


class BackupError(Exception):
    """Why a backup or restore was not made; nothing was changed."""


@dataclass(frozen=True)
class Manifest:
    revision: str | None
    counts: dict[str, int]
    database_sha256: str
    blobs: int

    def to_json(self) -> dict[str, Any]:
        from daemon import __version__

        return {
            "format": FORMAT,
            "docrelay_version": __version__,
            "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "schema_revision": self.revision,
            "counts": self.counts,
            "blobs": self.blobs,
            "database": {"file": DATABASE, "sha256": self.database_sha256},
        }


def sqlite_path(url: str) -> Path:
    """The database file of a SQLite store URL; BackupError, with the tool to use, otherwise."""
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend == "postgresql":
        raise BackupError(
            "the store is PostgreSQL: back it up with pg_dump (pg_dump -Fc -f docrelay.dump "
            "DBNAME; pg_restore to restore) and copy the blob directory beside it"
        )
    if backend in ("mysql", "mariadb"):
        raise BackupError(
            "the store is MariaDB/MySQL: back it up with mariadb-dump (mariadb-dump "
            "--single-transaction DBNAME > docrelay.sql) and copy the blob directory beside it"
        )
    if backend != "sqlite" or not parsed.database or parsed.database == ":memory:":
        raise BackupError(f"cannot back up a {backend} store of this kind: {parsed.database!r}")
    return Path(parsed.database)


def backup(url: str, blob_dir: Path, target: Path) -> Manifest:
    """Copy the store at ``url`` and the blobs it references into the new directory
    ``target``."""
    database = sqlite_path(url)
    if not database.is_file():
        raise BackupError(f"no store at {database}")
    if target.exists():
        raise BackupError(f"{target} exists already; a backup goes into a new directory")
    partial = target.with_name(target.name + ".partial")
    if partial.exists():
        shutil.rmtree(partial)  # left by an interrupted backup
    partial.mkdir(parents=True)
    try:
        copy = partial / DATABASE
        _online_copy(url, copy)
        shas = referenced_blobs(copy)
        blobs = BlobStore(blob_dir)
        out = BlobStore(partial / "blobs")
        for sha in shas:
            source = blobs.path(sha)
            if not source.is_file():
                raise BackupError(f"blob {sha} of the store is missing from {blob_dir}")
            _copy_file(source, out.path(sha))
        manifest = Manifest(
            revision=_revision(copy),
            counts=_counts(copy),
            database_sha256=_sha256(copy),
            blobs=len(shas),
        )
        _write_json(partial / MANIFEST, manifest.to_json())
        fsync_dir(partial)
        partial.rename(target)
        fsync_dir(target.parent)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return manifest


def _online_copy(url: str, copy: Path) -> None:
    """SQLite's online backup API through the engine's raw DBAPI connection: all pages in one
    step under a read snapshot, so writers meanwhile neither block it nor tear it."""
    from daemon.store import engine as store_engine

    engine = store_engine.make_engine(url, pool_size=1)
    try:
        raw = engine.raw_connection()
        try:
            source: sqlite3.Connection = raw.driver_connection  # type: ignore[assignment]
            with closing(sqlite3.connect(copy)) as target:
                source.backup(target)
                target.execute("PRAGMA journal_mode=DELETE")  # one self-contained file
        finally:
            raw.close()
    finally:
        engine.dispose()
    with copy.open("rb") as handle:
        os.fsync(handle.fileno())


def referenced_blobs(database: Path) -> list[str]:
    """Every blob a store's documents reference (content hash), sorted."""
    with closing(_open_ro(database)) as conn:
        rows = conn.execute("SELECT DISTINCT sha256 FROM documents ORDER BY sha256").fetchall()
    return [sha for (sha,) in rows if sha != UNSTORED_SHA]


def _counts(database: Path) -> dict[str, int]:
    with closing(_open_ro(database)) as conn:
        return {
            table: conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]  # noqa: S608
            for table in COUNTED
        }


def _revision(database: Path) -> str | None:
    with closing(_open_ro(database)) as conn:
        try:
            row = conn.execute("SELECT version_num FROM alembic_version").fetchone()
        except sqlite3.OperationalError:
            return None
    return row[0] if row else None


def _open_ro(database: Path) -> sqlite3.Connection:
    return sqlite3.connect(f"{database.resolve().as_uri()}?mode=ro", uri=True)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _copy_file(source: Path, target: Path, mode: int | None = None) -> None:
    """Copy through a temporary file, fsynced, renamed: ``target`` is whole or absent. Its
    mode is ``mode``, else 0600 (as ``BlobStore`` writes blobs)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=".copy-")
    try:
        if mode is not None:
            os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as out, source.open("rb") as src:
            shutil.copyfileobj(src, out, CHUNK)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp_name, target)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise


def _write_json(path: Path, data: dict[str, Any]) -> None:
    with path.open("w", encoding="utf-8") as out:
        json.dump(data, out, indent=2)
        out.write("\n")
        out.flush()
        os.fsync(out.fileno())


# ---------------------------------------------------------------------- restore


def verify(source: Path) -> dict[str, Any]:
    """Check a backup directory whole; returns its manifest. BackupError names the first
    problem found."""
    try:
        manifest = json.loads((source / MANIFEST).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BackupError(f"{source}: no {MANIFEST}: not a docrelay backup") from None
    except (OSError, ValueError) as exc:
        raise BackupError(f"{source}/{MANIFEST}: unreadable: {exc}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise BackupError(f"{source}/{MANIFEST}: not a backup of format {FORMAT}")
    database = source / DATABASE
    if not database.is_file():
        raise BackupError(f"{source}: {DATABASE} is missing")
    if _sha256(database) != manifest.get("database", {}).get("sha256"):
        raise BackupError(f"{database}: its sha256 is not the manifest's: the copy is damaged")
    try:
        with closing(_open_ro(database)) as conn:
            check = conn.execute("PRAGMA integrity_check").fetchone()[0]
    except sqlite3.DatabaseError as exc:
        raise BackupError(f"{database}: not a SQLite database: {exc}") from None
    if check != "ok":
        raise BackupError(f"{database}: integrity check failed: {check}")
    known = _known_revisions()
    if (revision := manifest.get("schema_revision")) is not None and revision not in known:
        raise BackupError(
            f"{source}: schema revision {revision} is unknown here (a newer docrelay made it)"
        )
    if _counts(database) != manifest.get("counts"):
        raise BackupError(f"{database}: its row counts are not the manifest's")
    wanted = referenced_blobs(database)
    blobs = BlobStore(source / "blobs")
    for sha in wanted:
        path = blobs.path(sha)
        if not path.is_file():
            raise BackupError(f"{source}: blob {sha} is missing")
        if _sha256(path) != sha:
            raise BackupError(f"{path}: its content does not hash to its name: damaged")
    if len(wanted) != manifest.get("blobs"):
        raise BackupError(f"{source}: {len(wanted)} blob(s), the manifest says {manifest['blobs']}")
    return manifest


def _known_revisions() -> set[str]:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    from daemon.store.engine import migrations_dir

    config = Config()
    config.set_main_option("script_location", str(migrations_dir()))
    return {rev.revision for rev in ScriptDirectory.from_config(config).walk_revisions()}


def store_in_use(url: str, blob_dir: Path) -> list[str]:
    """What is in the store already (documents, blobs): a restore replaces it only when
    forced."""
    database = sqlite_path(url)
    found = []
    if database.is_file() and database.stat().st_size > 0:
        try:
            with closing(_open_ro(database)) as conn:
                documents = conn.execute("SELECT COUNT(*) FROM documents").fetchone()[0]
        except sqlite3.DatabaseError:
            found.append(f"{database} exists (not a docrelay store, or damaged)")
        else:
            if documents:
                found.append(f"{database} holds {documents} document(s)")
    if any(_blob_files(blob_dir)):
        found.append(f"{blob_dir} holds blobs")
    return found


def _blob_files(root: Path) -> Iterator[Path]:
    if not root.is_dir():
        return
    for path in root.glob("??/??/*"):
        if SHA256_HEX.fullmatch(path.name) and path.is_file():
            yield path


def restore(
    source: Path, url: str, blob_dir: Path, *, verified: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Put a backup in place of the store at ``url`` (the caller holds the store's lock and
    has decided about overwriting); returns the manifest. The backup is verified first
    unless ``verified`` is the manifest ``verify`` returned for it."""
    manifest = verified if verified is not None else verify(source)
    database = sqlite_path(url)
    blobs = BlobStore(source / "blobs")
    into = BlobStore(blob_dir)
    for sha in referenced_blobs(source / DATABASE):
        target = into.path(sha)
        if not (target.is_file() and _sha256(target) == sha):
            _copy_file(blobs.path(sha), target)
    database.parent.mkdir(parents=True, exist_ok=True)
    # A write-ahead log of the old database would be replayed into the new one: gone first.
    for suffix in ("-wal", "-shm", "-journal"):
        Path(f"{database}{suffix}").unlink(missing_ok=True)
    # The mode the store had (people in its group may query it), else what SQLite would give.
    mode = database.stat().st_mode & 0o777 if database.exists() else 0o666 & ~_umask()
    _copy_file(source / DATABASE, database, mode)
    fsync_dir(database.parent)
    return manifest


def _umask() -> int:
    mask = os.umask(0o077)
    os.umask(mask)
    return mask
