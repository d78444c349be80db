"""Engine and session set-up, and schema migrations on start.

SQLite runs in WAL mode with a busy timeout, and every transaction starts with ``BEGIN IMMEDIATE``
so concurrent writers queue on the busy timeout instead of failing on a lock upgrade.
"""

from __future__ import annotations

import hashlib
import logging
import os
import sqlite3
import threading
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.exc import DBAPIError

from connectors import jsonio

log = logging.getLogger(__name__)


def migrations_dir() -> Path:
    """Where the Alembic environment is: inside the wheel, or beside the package in a checkout."""
    here = Path(__file__).resolve().parent.parent
    for candidate in (here / "migrations", here.parent / "migrations"):
        if (candidate / "env.py").is_file():
            return candidate
    raise FileNotFoundError("the migrations directory is missing from this installation")


class RawJSON(str):
    """JSON text already serialised (and thereby checked): stored as it is, not encoded again.

    For large vendor results, which are serialised once to check them anyway."""


def dump_json(value: Any) -> str:
    """The engines' JSON serialiser: ``RawJSON`` passes through, anything else is encoded."""
    if isinstance(value, RawJSON):
        return str(value)
    return jsonio.dumps(value)


def sqlite_file(url: str) -> Path | None:
    """The database file a SQLite URL names; None for other databases and in-memory ones."""
    parsed = make_url(url)
    database = parsed.database
    if parsed.get_backend_name() != "sqlite" or not database or database == ":memory:":
        return None
    return None if database.startswith("file:") else Path(database)


def store_identity(url: str) -> str:
    """A short name of one store, alike in every process that opens it and telling nothing
    of it (``/healthz`` shows it to anyone): 16 hex digits of the SHA-256 of the SQLite file's
    real path (however the configuration spelled it), else of the URL without password or
    query."""
    file = sqlite_file(url)
    if file is not None:
        name = f"sqlite:{os.path.realpath(file)}"
    else:
        name = make_url(url).set(password=None, query={}).render_as_string(hide_password=True)
    return hashlib.sha256(name.encode()).hexdigest()[:16]


def make_engine(url: str, *, busy_timeout_ms: int = 10_000, pool_size: int = 8) -> Engine:
    """Create the engine for a store URL with the pragmas and pool this daemon needs."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database
        if database and database != ":memory:" and not database.startswith("file:"):
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            url,
            connect_args={"timeout": busy_timeout_ms / 1000, "check_same_thread": False},
            pool_size=pool_size,
            max_overflow=4,
            # Every transaction ends in its own COMMIT or ROLLBACK; the pool's rollback on
            # return was a second one through SQLAlchemy's machinery, about 5 % of the CPU
            # per document. The check-in listener ends what is still open (never, so far).
            pool_reset_on_return=None,
            json_serializer=dump_json,
            json_deserializer=jsonio.loads,
        )
        _configure_sqlite(engine, busy_timeout_ms)
        return engine
    engine = create_engine(
        url,
        pool_size=pool_size,
        max_overflow=4,
        pool_pre_ping=True,
        json_serializer=dump_json,
        json_deserializer=jsonio.loads,
    )
    if parsed.get_backend_name() == "postgresql":
        _configure_postgresql(engine)
    return engine


def _configure_postgresql(engine: Engine) -> None:
    # ``relaxed`` commits return before the WAL is flushed, as SQLite's skip the fsync: a crash
    # of the server may undo the last of them (never corrupt anything), and the next durable
    # commit flushes them too. Set per transaction, so nothing else changes.
    @event.listens_for(engine, "begin")
    def _on_begin(connection: Connection) -> None:
        if connection.get_execution_options().get(RELAXED):
            driver = connection.connection.dbapi_connection
            assert driver is not None
            cursor = driver.cursor()  # the driver's transaction starts here, with the setting
            try:
                cursor.execute("SET LOCAL synchronous_commit = off")
            finally:
                cursor.close()


class WriterLock:
    """The process's one SQLite writer, re-entrant per thread, with a way to the front.

    Threads of this process queue here instead of in SQLite's busy handler, which sleeps in
    steps of up to 100 ms: under contention that wastes most of the time. A ``first`` waiter
    is served before the others: intake (see ``first_in_line``), whose one thread per source
    is the head of the pipeline. Served in turn with eight vendor workers, it waited about
    half its time for this lock and held every document behind it back.
    """

    def __init__(self) -> None:
        self._mutex = threading.Lock()
        self._first = threading.Condition(self._mutex)
        self._others = threading.Condition(self._mutex)
        self._owner: int | None = None
        self._depth = 0
        self._first_waiting = 0

    def acquire(self, *, first: bool = False) -> None:
        me = threading.get_ident()
        with self._mutex:
            if self._owner == me:
                self._depth += 1
                return
            if first:
                self._first_waiting += 1
                try:
                    while self._owner is not None:
                        self._first.wait()
                finally:
                    self._first_waiting -= 1
            else:
                while self._owner is not None or self._first_waiting:
                    self._others.wait()
            self._owner, self._depth = me, 1

    def release(self) -> None:
        with self._mutex:
            if self._owner != threading.get_ident():
                raise RuntimeError("the writer lock is not held by this thread")
            self._depth -= 1
            if self._depth:
                return
            self._owner = None
            (self._first if self._first_waiting else self._others).notify()


FIRST_IN_LINE = "docrelay_first_in_line"


def first_in_line(engine: Engine) -> Engine:
    """The same engine, whose write transactions go before others waiting for SQLite's
    write lock in this process (no effect on other databases)."""
    return engine.execution_options(**{FIRST_IN_LINE: True})


def _configure_sqlite(engine: Engine, busy_timeout_ms: int) -> None:
    # Other processes (the CLI next to the daemon) still meet the busy timeout.
    writer = WriterLock()

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy's "begin" event below issue BEGIN itself (pysqlite's own is deferred).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        # FULL: a commit is on disk before it returns, even in WAL mode. Sources release what
        # they offered (delete or move a file, move or delete a mail) right after the intake
        # commit; under NORMAL a power cut could undo that commit after the release. The cost
        # is about 5 % in bench_folder (84.7 against 89.3 docs/s, medians of 3 runs). Commits
        # whose loss only repeats safe work skip it (``relaxed``).
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    # BEGIN goes to the driver directly: through SQLAlchemy's execute it cost more Python
    # than the statements of a short transaction (about a tenth of the daemon's CPU).
    @event.listens_for(engine, "begin")
    def _on_begin(connection: Connection) -> None:
        options = connection.get_execution_options()
        if options.get(READ_ONLY):
            _begin(connection, "BEGIN")  # WAL: readers never wait for writers
            return
        writer.acquire(first=bool(options.get(FIRST_IN_LINE)))
        info = connection.info
        info["writer_held"] = info.get("writer_held", 0) + 1
        level = "NORMAL" if options.get(RELAXED) else "FULL"
        if info.get("synchronous", "FULL") != level:  # only between transactions
            _begin(connection, f"PRAGMA synchronous={level}")
            info["synchronous"] = level
        _begin(connection, "BEGIN IMMEDIATE")

    # Released when the connection goes back to the pool, i.e. after COMMIT/ROLLBACK really
    # happened (the "commit" event fires before it, which would let the next thread in early).
    @event.listens_for(engine.pool, "checkin")
    def _on_checkin(dbapi_connection: Any, record: Any) -> None:
        if dbapi_connection is not None and dbapi_connection.in_transaction:
            dbapi_connection.rollback()
        for _ in range(record.info.pop("writer_held", 0)):
            writer.release()


READ_ONLY = "docrelay_read_only"
RELAXED = "docrelay_relaxed"


def relaxed(engine: Engine) -> Engine:
    """The same engine for commits a power cut may undo because what they record is done
    again safely (a result fetched again, a push the destination takes twice): on SQLite they
    skip the fsync (``synchronous=NORMAL``; WAL keeps the database whole), on PostgreSQL the
    wait for the WAL flush (``synchronous_commit = off``). The next durable
    commit — every other one — makes them durable too, so the order of what is on disk never
    changes. Never for a commit that precedes something done outside (a source released, an
    upload, a push marked in doubt) or that records a call that cannot be repeated for free.
    """
    return engine.execution_options(**{RELAXED: True})


def _begin(connection: Connection, sql: str) -> None:
    driver = connection.connection.dbapi_connection
    assert driver is not None
    try:
        driver.execute(sql)
    except sqlite3.Error as exc:  # raised as SQLAlchemy would have (busy, disk I/O …)
        raise DBAPIError.instance(sql, None, exc, sqlite3.Error) from exc


def reader(engine: Engine) -> Engine:
    """The same engine for read-only work: on SQLite its transactions take no write lock.

    Writing through it is a bug (SQLite would refuse the lock upgrade under contention).
    """
    return engine.execution_options(**{READ_ONLY: True})


def alembic_config(engine: Engine) -> Any:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(migrations_dir()))
    config.set_main_option("sqlalchemy.url", engine.url.render_as_string(hide_password=False))
    return config


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Bring the schema to ``revision`` (the daemon does this on every start)."""
    from alembic import command

    config = alembic_config(engine)
    with engine.connect() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, revision)
        connection.commit()


def current_revision(engine: Engine) -> str | None:
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def head_revision(engine: Engine) -> str | None:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config(engine)).get_current_head()


def ensure_schema(engine: Engine) -> None:
    """Upgrade when behind; cheap when already at head (one SELECT, no Alembic command)."""
    if current_revision(engine) != head_revision(engine):
        log.info("upgrading the store schema", extra={"url": engine.url.render_as_string()})
        upgrade(engine)
