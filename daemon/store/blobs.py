"""Content-addressed blob store: ``<root>/ab/cd/<sha256>``, written atomically.

Bytes are streamed into a temporary file while hashed, fsynced, then renamed into place, so a
blob either exists whole under its hash or not at all.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import tempfile
import time
from pathlib import Path
from typing import IO

from sqlalchemy import Engine, insert, select
from sqlalchemy.exc import IntegrityError

from connectors.fsutil import fsync_dir
from daemon.store.models import Document, StoreInfo

CHUNK = 1 << 16
SHA256_HEX = re.compile(r"[0-9a-f]{64}")
MARKER = ".docrelay-store"
"""The file naming the store whose blobs a directory holds."""
BLOB_DIR_KEY = "blob_dir_token"
store_info = StoreInfo.__table__
documents = Document.__table__


class NotTheStoresBlobs(RuntimeError):
    """``store.blob_dir`` is not the directory the other processes of this store use."""


class BlobStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.tmp = root / "tmp"

    def prepare(self, *, older_than: float | None = None) -> None:
        """Make the directories and delete temporary files a crash left. With ``older_than``
        (other processes may be writing here now) only files older than that many seconds."""
        self.tmp.mkdir(parents=True, exist_ok=True)
        cutoff = None if older_than is None else time.time() - older_than
        for stale in self.tmp.iterdir():  # left by a crash mid-write
            try:
                if cutoff is None or stale.stat().st_mtime < cutoff:
                    stale.unlink(missing_ok=True)
            except FileNotFoundError:
                continue

    def bind_to_store(self, engine: Engine) -> None:
        """Check that this directory holds this store's blobs, and mark it so.

        Every process of a store reads blobs the others wrote, so they must share one
        directory (one file system, or a network one across hosts). The store keeps a token
        and the directory a marker file with it: a directory with another store's marker, or
        an unmarked one that lacks the store's newest blob, is refused before anything runs.
        """
        marker = self.root / MARKER
        mine = marker.read_text().strip() if marker.is_file() else None
        query = select(store_info.c.value).where(store_info.c.key == BLOB_DIR_KEY)
        with engine.connect() as conn:
            token = conn.execute(query).scalar()
        if token is None:
            try:
                with engine.begin() as conn:
                    token = mine or secrets.token_hex(16)
                    conn.execute(insert(store_info).values(key=BLOB_DIR_KEY, value=token))
            except IntegrityError:  # another process marked it at the same moment
                with engine.connect() as conn:
                    token = conn.execute(query).scalar_one()
        with engine.connect() as conn:
            newest = conn.execute(
                select(documents.c.sha256)
                .where(documents.c.size_bytes >= 0)
                .order_by(documents.c.id.desc())
                .limit(1)
            ).scalar()
        if mine == token:
            return
        if mine is not None:
            raise NotTheStoresBlobs(
                f"store.blob_dir {self.root}: it holds the blobs of another store (its "
                f"{MARKER} says {mine}, this store's blob directory is {token}); every "
                "process of a store must use the store's one blob directory"
            )
        if newest is not None and not self.exists(newest):
            raise NotTheStoresBlobs(
                f"store.blob_dir {self.root}: the store's documents are not in it (the newest, "
                f"{newest[:12]}…, is missing); every process of a store must use the store's one "
                "blob directory (shared, or on a network file system across hosts)"
            )
        tmp = marker.with_name(MARKER + ".tmp")
        tmp.write_text(token + "\n")
        os.replace(tmp, marker)

    def path(self, sha256: str) -> Path:
        if not SHA256_HEX.fullmatch(sha256):
            raise ValueError(f"not a sha256 hex digest: {sha256!r}")
        return self.root / sha256[:2] / sha256[2:4] / sha256

    def exists(self, sha256: str) -> bool:
        return self.path(sha256).is_file()

    def put_stream(self, stream: IO[bytes], *, max_bytes: int | None = None) -> tuple[str, int]:
        """Store a stream; returns (sha256, size). Raises ValueError past ``max_bytes``."""
        digest = hashlib.sha256()
        size = 0
        fd, tmp_name = tempfile.mkstemp(dir=self.tmp, prefix="blob-")
        try:
            with os.fdopen(fd, "wb") as out:
                while chunk := stream.read(CHUNK):
                    size += len(chunk)
                    if max_bytes is not None and size > max_bytes:
                        raise ValueError(f"larger than the limit of {max_bytes} bytes")
                    digest.update(chunk)
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
            sha = digest.hexdigest()
            final = self.path(sha)
            if final.is_file():
                os.unlink(tmp_name)
            else:
                final.parent.mkdir(parents=True, exist_ok=True)
                os.replace(tmp_name, final)
                fsync_dir(final.parent)
            return sha, size
        except BaseException:
            Path(tmp_name).unlink(missing_ok=True)
            raise

    def put_bytes(self, data: bytes) -> str:
        import io

        return self.put_stream(io.BytesIO(data))[0]
