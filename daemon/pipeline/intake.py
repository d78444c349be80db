"""Intake: make an offered item durable (blob + rows, one commit) before its source releases it.

Invariant 1 of DESIGN.md lives here: ``ingest`` returns only after the commit, and recognises an
item it committed before a crash (same source, reference and bytes, not yet released) so that
only the release is repeated, never the ingestion.
"""

from __future__ import annotations

import errno
import functools
import logging
import shutil
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, Concatenate, ParamSpec, TypeVar

from sqlalchemy import Engine, bindparam, delete, insert, or_, select, text, update
from sqlalchemy.exc import OperationalError

from connectors.base import IngestOutcome, IngestStatus, IntakeItem
from connectors.errors import StoreUnavailable, TerminalError
from daemon.config import Config
from daemon.pipeline import ledger
from daemon.pipeline.crash import crash_point
from daemon.pipeline.preflight import Inspection, inspect
from daemon.pipeline.routing import Router, route_name
from daemon.store.blobs import BlobStore
from daemon.store.engine import first_in_line, reader
from daemon.store.models import (
    Document,
    SourceLease,
    SourceState,
    SubmissionState,
    utcnow,
)

log = logging.getLogger(__name__)

SAME_BYTES_LOCK = text("SELECT pg_advisory_xact_lock(:key)")
"""PostgreSQL: held until the intake transaction ends, per content (60 bits of its hash)."""

documents = Document.__table__

# Built once: constructing a statement costs more Python than running it (intake is the
# head of the pipeline, and holds the write lock meanwhile).
EARLIER_UNIQUE = (
    select(documents.c.id, documents.c.intake_state)
    .where(
        documents.c.source == bindparam("source"),
        documents.c.source_ref == bindparam("source_ref"),
        documents.c.sha256 == bindparam("sha256"),
    )
    .limit(1)
)
"""The row a unique item (a mail's message id) got before, released or not."""
EARLIER_UNRELEASED = EARLIER_UNIQUE.where(documents.c.released_at.is_(None))
"""The row a re-listable item (a file path) got and its source has not yet released."""
FIRST_WITH_BYTES = (
    select(documents.c.id)
    .where(
        documents.c.sha256 == bindparam("sha256"),
        documents.c.duplicate_of.is_(None),
        documents.c.intake_state == "accepted",
    )
    .order_by(documents.c.id)
    .limit(1)
)
"""The accepted original of these bytes (``duplicates = "skip"``)."""

source_state = SourceState.__table__
source_leases = SourceLease.__table__
UNSTORED_SHA = "0" * 64
"""The sha256 recorded for an item that was never downloaded (too large)."""
INSERT_DOCUMENT = insert(documents).returning(documents.c.id)
INSERT_SUBMISSION = insert(ledger.submissions).returning(ledger.submissions.c.id)
MARK_RELEASED = (
    update(documents)
    .where(documents.c.id == bindparam("doc_id"), documents.c.released_at.is_(None))
    .values(released_at=bindparam("released_at"))
)


@dataclass(frozen=True, slots=True)
class Routed:
    profile: str
    vendor_kind: str
    destinations: list[str]
    fallbacks: list[str]
    """The chain after ``profile``, in order."""
    route: str
    shadows: tuple[tuple[str, str], ...] = ()
    """(profile, vendor kind) of each of the route's ``shadow`` profiles: queued beside the
    primary, with no destinations."""
    shadow_feedback: bool = False
    """The route's ``shadow_feedback``: corrections go to the shadow profiles too."""


P = ParamSpec("P")
R = TypeVar("R")
DISK_FULL = frozenset({errno.ENOSPC, errno.EDQUOT})


def _store_errors(
    method: Callable[Concatenate[Intake, P], R],
) -> Callable[Concatenate[Intake, P], R]:
    """Sources meet a locked, unreachable or full store as StoreUnavailable, an error they know
    how to wait out, not as a database driver's or the file system's exception. A full disk is
    also remembered for /healthz (``Intake.disk_full``)."""

    @functools.wraps(method)
    def wrapper(self: Intake, *args: P.args, **kwargs: P.kwargs) -> R:
        try:
            result = method(self, *args, **kwargs)
        except OperationalError as exc:
            reason = f"the store is unavailable: {exc.orig}"
            if "disk is full" in str(exc.orig):
                database = self.engine.url.database
                self._out_of_space(reason, Path(database).parent if database else None)
            raise StoreUnavailable(reason) from exc
        except OSError as exc:
            if exc.errno not in DISK_FULL:
                raise
            reason = f"no space left for the blob store {self.blobs.root}: {exc.strerror}"
            self._out_of_space(reason, self.blobs.root)
            raise StoreUnavailable(reason) from exc
        return result

    return wrapper


class Intake:
    """The engine's ``IntakeSink``: shared by every source."""

    documents = documents

    def __init__(
        self,
        engine: Engine,
        blobs: BlobStore,
        config: Config,
        *,
        on_queued: Callable[[str], None] = lambda profile: None,
        max_bytes: int = 200 * 1024 * 1024,
        owner: str = "intake",
    ) -> None:
        self.engine = first_in_line(engine)  # the head of the pipeline: see WriterLock
        self.reader = reader(engine)
        self.owner = owner
        self.blobs = blobs
        self._configured = (config, Router(config.routes))
        self.on_queued = on_queued
        self.max_bytes = max_bytes
        self._releases: list[tuple[int, Any]] = []
        self._releases_lock = threading.Lock()
        self.disk_full: str | None = None
        """Why the last write failed for want of space, until an ingest succeeds again or
        the file system has room again (``space_again``)."""
        self._full_dir: Path | None = None

    @property
    def config(self) -> Config:
        return self._configured[0]

    @property
    def router(self) -> Router:
        return self._configured[1]

    def reconfigure(self, config: Config) -> None:
        """A reloaded configuration: new routes and profiles for the next item (one item sees
        either the old pair or the new one, never a mix)."""
        self._configured = (config, Router(config.routes))

    def _out_of_space(self, reason: str, directory: Path | None) -> None:
        self.disk_full, self._full_dir = reason, directory

    def space_again(self) -> bool:
        """Whether the file system that ran full has room again (5 % of it, at most 64 MiB,
        free): clears ``disk_full`` then, so health recovers without waiting for a document."""
        if self.disk_full is None:
            return True
        if self._full_dir is None:
            return False
        try:
            usage = shutil.disk_usage(self._full_dir)
        except OSError:
            return False
        if usage.free < min(64 * 1024 * 1024, usage.total // 20):
            return False
        self.disk_full = None
        return True

    @_store_errors
    def ingest(self, item: IntakeItem) -> IngestOutcome:
        outcome = self._ingest(item)
        self.disk_full = None  # it got in: there was room
        return outcome

    def _ingest(self, item: IntakeItem) -> IngestOutcome:
        with item.open() as stream:
            try:
                sha, size = self.blobs.put_stream(stream, max_bytes=self.max_bytes)
            except ValueError as exc:
                return self.reject_unstored(item, f"file too large: {exc}")
        crash_point("after_blob_write")
        path = self.blobs.path(sha)
        mime = item.mime_type or "application/octet-stream"
        reason = item.rejection
        found = Inspection()
        if reason is None:
            try:
                found = inspect(path, mime)
            except TerminalError as exc:
                reason = str(exc)
        outcome, profiles = self._commit(item, sha, size, mime, found, reason)
        crash_point("after_document_commit")
        for profile in profiles:
            self.on_queued(profile)
        return outcome

    def _commit(
        self,
        item: IntakeItem,
        sha: str,
        size: int,
        mime: str,
        found: Inspection,
        reason: str | None,
    ) -> tuple[IngestOutcome, list[str]]:
        """Returns the outcome and the profiles that got a submission (to wake)."""
        actor = f"intake:{item.source}"
        with ledger.begin(self.engine) as conn:  # its events in one statement
            if conn.dialect.name == "postgresql":
                # The same bytes taken at once (two folders, two takers, two processes):
                # one transaction at a time sees whether they came before (SQLite has its
                # one writer).
                conn.execute(SAME_BYTES_LOCK, {"key": int(sha[:15], 16)})
            self.flush_releases(conn)
            earlier = self._earlier(conn, item, sha)
            if earlier is not None:
                status = (
                    IngestStatus.REJECTED
                    if earlier.intake_state == "rejected"
                    else IngestStatus.ALREADY
                )
                return IngestOutcome(status, earlier.id, reason), []

            row = {
                "sha256": sha,
                "filename": item.filename,
                "mime_type": mime,
                "size_bytes": size,
                "pages": found.pages,
                "page_sizes": found.page_sizes,
                "source": item.source,
                "source_ref": item.source_ref,
                "metadata": dict(item.metadata),
                "received_at": utcnow(),
            }
            if reason is not None:
                doc_id = self._insert(conn, row, "rejected", reason, actor)
                return IngestOutcome(IngestStatus.REJECTED, doc_id, reason), []

            if self.config.core.pipeline.duplicates == "skip":
                first = conn.execute(FIRST_WITH_BYTES, {"sha256": sha}).scalar()
                if first is not None:
                    doc_id = self._insert(
                        conn,
                        {**row, "duplicate_of": first},
                        "duplicate",
                        None,
                        actor,
                        message=f"same bytes as document {first} (sha256 {sha[:12]}…); not sent",
                    )
                    return IngestOutcome(IngestStatus.DUPLICATE, doc_id), []

            routed = self._route(item, mime)
            if routed is None:
                doc_id = self._insert(conn, row, "unrouted", "no route matched", actor)
                return IngestOutcome(IngestStatus.INGESTED, doc_id, "no route matched"), []
            doc_id = self._insert(conn, {**row, "route": routed.route}, "accepted", None, actor)
            queue_submission(conn, doc_id, routed, actor=actor)
            queue_shadows(conn, doc_id, routed, actor=actor)
            return IngestOutcome(IngestStatus.INGESTED, doc_id), [
                routed.profile,
                *(profile for profile, _kind in routed.shadows),
            ]

    @staticmethod
    def _earlier(conn: ledger.Connection, item: IntakeItem, sha: str) -> Any:
        """The row this very item got before (a crash, or a re-listed unique item)."""
        query = EARLIER_UNIQUE if item.unique else EARLIER_UNRELEASED
        return conn.execute(
            query, {"source": item.source, "source_ref": item.source_ref, "sha256": sha}
        ).first()

    def _insert(
        self,
        conn: ledger.Connection,
        row: dict[str, object],
        intake_state: str,
        error: str | None,
        actor: str,
        *,
        message: str | None = None,
    ) -> int:
        doc_id = conn.execute(
            INSERT_DOCUMENT, {**row, "intake_state": intake_state, "error": error}
        ).scalar_one()
        ledger.event(
            conn,
            actor=actor,
            kind="received" if intake_state == "accepted" else intake_state,
            document_id=doc_id,
            to_state=intake_state,
            message=message or error or f"{row['filename']} ({row['size_bytes']} bytes)",
        )
        return doc_id

    def _route(self, item: IntakeItem, mime: str) -> Routed | None:
        config, router = self._configured
        if item.route is not None:
            found = router.named(item.route)
        else:
            found = router.route(
                source=item.source, filename=item.filename, mime_type=mime, metadata=item.metadata
            )
        if found is None:
            return None
        index, route = found
        return Routed(
            profile=route.vendor,
            vendor_kind=config.vendors[route.vendor].kind,
            destinations=list(route.destinations),
            fallbacks=list(route.fallback),
            route=route_name(index, route),
            shadows=tuple(
                (name, config.vendors[name].kind) for name in route.shadow if name in config.vendors
            ),
            shadow_feedback=route.shadow_feedback,
        )

    @_store_errors
    def reject_unstored(self, item: IntakeItem, reason: str) -> IngestOutcome:
        """Too large to keep a copy: the row records it, the source keeps the original."""
        with self.engine.begin() as conn:
            if item.unique and (earlier := self._earlier(conn, item, UNSTORED_SHA)) is not None:
                return IngestOutcome(IngestStatus.REJECTED, earlier.id, reason)
            doc_id = self._insert(
                conn,
                {
                    "sha256": UNSTORED_SHA,
                    "filename": item.filename,
                    "mime_type": item.mime_type or "application/octet-stream",
                    "size_bytes": -1,
                    "source": item.source,
                    "source_ref": item.source_ref,
                    "metadata": dict(item.metadata),
                    "received_at": utcnow(),
                },
                "rejected",
                reason,
                f"intake:{item.source}",
            )
        return IngestOutcome(IngestStatus.REJECTED, doc_id, reason)

    # ------------------------------------------------------------------ what sources keep here

    @_store_errors
    def load_state(self, source: str, key: str) -> dict[str, Any] | None:
        with self.reader.connect() as conn:
            return conn.execute(
                select(source_state.c.value).where(
                    source_state.c.source == source, source_state.c.key == key
                )
            ).scalar()

    @_store_errors
    def save_state(self, source: str, key: str, value: Mapping[str, Any]) -> None:
        where = (source_state.c.source == source, source_state.c.key == key)
        with self.engine.begin() as conn:
            changed = conn.execute(
                update(source_state).where(*where).values(value=dict(value), updated_at=utcnow())
            ).rowcount
            if not changed:
                conn.execute(
                    insert(source_state).values(
                        source=source, key=key, value=dict(value), updated_at=utcnow()
                    )
                )

    @_store_errors
    def hold_lease(self, name: str, seconds: float) -> bool:
        now = utcnow()
        expires = now + timedelta(seconds=seconds)
        with self.engine.begin() as conn:
            row = conn.execute(
                select(source_leases.c.owner, source_leases.c.expires_at)
                .where(source_leases.c.name == name)
                .with_for_update()
            ).first()
            if row is None:
                conn.execute(
                    insert(source_leases).values(name=name, owner=self.owner, expires_at=expires)
                )
                return True
            if row.owner != self.owner and row.expires_at > now:
                return False
            conn.execute(
                update(source_leases)
                .where(
                    source_leases.c.name == name,
                    or_(source_leases.c.owner == self.owner, source_leases.c.expires_at <= now),
                )
                .values(owner=self.owner, expires_at=expires)
            )
            return True

    @_store_errors
    def drop_lease(self, name: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                delete(source_leases).where(
                    source_leases.c.name == name, source_leases.c.owner == self.owner
                )
            )

    @_store_errors
    def report_health(self, name: str, state: str, reason: str | None = None) -> None:
        with self.engine.begin() as conn:
            ledger.set_health(conn, name, state, reason)

    def mark_released(self, document_id: int) -> None:
        """Record a release with the next intake commit (or the next flush) instead of a
        transaction of its own. Losing the mark in a crash is harmless: the original is gone
        or kept, and the mark only tells a re-drop from a re-offer after a crash."""
        with self._releases_lock:
            self._releases.append((document_id, utcnow()))

    def flush_releases(self, conn: ledger.Connection | None = None) -> None:
        with self._releases_lock:
            pending, self._releases = self._releases, []
        if not pending:
            return
        if conn is None:
            with self.engine.begin() as own:
                self._write_releases(own, pending)
        else:
            self._write_releases(conn, pending)

    def _write_releases(self, conn: ledger.Connection, pending: list[tuple[int, Any]]) -> None:
        conn.execute(
            MARK_RELEASED, [{"doc_id": doc_id, "released_at": at} for doc_id, at in pending]
        )


def queue_submission(
    conn: ledger.Connection, document_id: int, routed: Routed, *, actor: str, role: str = "primary"
) -> int:
    now = utcnow()
    sub_id = conn.execute(
        INSERT_SUBMISSION,
        {
            "document_id": document_id,
            "profile": routed.profile,
            "vendor_kind": routed.vendor_kind,
            "role": role,
            "state": SubmissionState.QUEUED,
            "destinations": routed.destinations,
            "fallback": routed.fallbacks[0] if routed.fallbacks else None,
            "later_fallbacks": routed.fallbacks[1:] or None,
            "shadow_feedback": role == "shadow" and routed.shadow_feedback,
            "vendor_data": {},
            "created_at": now,
            "updated_at": now,
            "attempts": 0,
            "polls": 0,
        },
    ).scalar_one()
    ledger.event(
        conn,
        actor=actor,
        kind="queued",
        document_id=document_id,
        submission_id=sub_id,
        to_state=SubmissionState.QUEUED,
        message=f"{role} profile {routed.profile} via {routed.route}",
        at=now,
    )
    return sub_id


def queue_shadows(
    conn: ledger.Connection, document_id: int, routed: Routed, *, actor: str
) -> list[int]:
    """One ``shadow`` submission per shadow profile of the route, in the primary's
    transaction: the same document, for comparison only (no destinations, no fallback)."""
    return [
        queue_submission(
            conn,
            document_id,
            Routed(
                profile=profile,
                vendor_kind=kind,
                destinations=[],
                fallbacks=[],
                route=f"shadow of {routed.profile} via {routed.route}",
                shadow_feedback=routed.shadow_feedback,
            ),
            actor=actor,
            role="shadow",
        )
        for profile, kind in routed.shadows
    ]
