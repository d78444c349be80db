"""SQL table destination: one row per document in a table of any SQLAlchemy database, upserted.

The row is keyed by the document (``document_id`` by default, a primary key), so a repeated
export after a crash writes the same row again instead of a second one, and a later version (a
correction, a changed result) updates it. The upsert itself carries a guard on the ``version``
column: an export whose version is not higher than the row's never overwrites it, so a late
retry of version 1 cannot undo version 2 whatever order the pushes arrive in.

Upserts are dialect-specific: ``INSERT … ON CONFLICT DO UPDATE … WHERE`` on PostgreSQL and
SQLite, ``INSERT … ON DUPLICATE KEY UPDATE`` with a conditional per column on MariaDB/MySQL.
"""

from __future__ import annotations

import math
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime
from decimal import Decimal
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, ValidationInfo, field_validator
from sqlalchemy import (
    BigInteger,
    Column,
    Date,
    DateTime,
    Dialect,
    Engine,
    Integer,
    MetaData,
    Numeric,
    String,
    Table,
    Text,
    TypeDecorator,
    case,
    create_engine,
    func,
    inspect,
    select,
    text,
)
from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects import mysql, postgresql, sqlite
from sqlalchemy.engine import URL, make_url
from sqlalchemy.sql.expression import Insert
from sqlalchemy.types import TypeEngine

from connectors.base import (
    AMOUNT_FIELDS,
    DATE_FIELDS,
    DOCUMENT_FIELDS,
    ConnectorContext,
    DatabaseUrl,
    DeliveryReceipt,
    Destination,
    DestinationSettings,
    ExportPayload,
)
from connectors.destinations.records import RECORD_FIELDS, as_text, flat_record
from connectors.errors import AuthFailed, DocrelayError, TerminalError, TransientError

BACKENDS = frozenset({"postgresql", "mysql", "mariadb", "sqlite"})
"""Dialects with an upsert SQLAlchemy can write."""

KEY_FIELDS = frozenset({"document_id", "sha256"})
"""Fields that name one document for good, so a key column may hold them."""

DEFAULT_COLUMNS: dict[str, str] = {
    name: name
    for name in (
        "document_id",
        "version",
        "filename",
        "sha256",
        "received_at",
        "vendor",
        "corrected",
        "exported_at",
        *DOCUMENT_FIELDS,
    )
}

IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")
"""Names that need no quoting anywhere and fit PostgreSQL's 63 and MySQL's 64 characters."""

INTEGER_FIELDS = frozenset({"document_id", "submission_id", "extraction_id"})
TIME_FIELDS = frozenset({"received_at", "exported_at"})


def _identifier(value: str, what: str) -> str:
    if not IDENTIFIER.fullmatch(value):
        raise ValueError(
            f"{what} {value!r} must be letters, digits and underscores (not starting with a "
            "digit), at most 63 characters"
        )
    return value


class SqlDestinationSettings(DestinationSettings):
    kind: Literal["sql"] = "sql"
    """Selects the SQL table destination: one row per document, upserted."""
    url: Annotated[SecretStr, DatabaseUrl()]
    """SQLAlchemy URL of the database (``postgresql+psycopg://…``, ``mysql+pymysql://…``,
    ``sqlite:///…``, a relative file relative to the configuration file's directory);
    ``url_file`` reads it from a file, for one that holds a password."""
    table: str
    """Name of the table the rows go to."""
    db_schema: str | None = Field(None, alias="schema")
    """Schema (PostgreSQL) or database (MariaDB/MySQL) of the table; unset: the connection's
    default. It is not created."""
    create_table: bool = True
    """Create the table at the first delivery when it is missing (an existing one is used as
    it is, never altered: it must have the mapped columns and a unique key column)."""
    columns: dict[str, str] = Field(default_factory=lambda: dict(DEFAULT_COLUMNS))
    """Column name → what it holds: a canonical field (``invoice_number``, ``total_amount`` …),
    a document attribute (``document_id``, ``version``, ``filename``, ``vendor``, ``sha256``,
    ``received_at``, ``exported_at`` …) or ``extra.<label>``. Must include ``version``."""
    key: str = Field("document_id", validate_default=True)
    """The column the upsert is keyed by (unique); it must hold ``document_id`` or
    ``sha256``."""
    connect_timeout: float = Field(10.0, gt=0)
    """Seconds to wait for a connection before the attempt counts as failed (and is retried)."""

    @field_validator("url")
    @classmethod
    def _url(cls, value: SecretStr) -> SecretStr:
        try:
            url = make_url(value.get_secret_value())
        except sa_exc.ArgumentError:
            raise ValueError("not an SQLAlchemy URL (dialect+driver://user@host/db)") from None
        if url.get_backend_name() not in BACKENDS:
            raise ValueError(
                f"{url.get_backend_name()!r} has no upsert here; use one of "
                f"{', '.join(sorted(BACKENDS))}"
            )
        try:
            url.get_dialect()
        except sa_exc.NoSuchModuleError as exc:
            raise ValueError(f"unknown database driver: {exc}") from None
        return value

    @field_validator("table")
    @classmethod
    def _table(cls, value: str) -> str:
        return _identifier(value, "table name")

    @field_validator("db_schema")
    @classmethod
    def _schema(cls, value: str | None) -> str | None:
        return None if value is None else _identifier(value, "schema name")

    @field_validator("columns")
    @classmethod
    def _columns(cls, value: dict[str, str]) -> dict[str, str]:
        if not value:
            raise ValueError("at least the key and the version column are needed")
        for column, target in value.items():
            _identifier(column, "column name")
            extra = target.startswith("extra.") and len(target) > len("extra.")
            if target not in RECORD_FIELDS and not extra:
                raise ValueError(
                    f"column {column!r} → {target!r} is neither a canonical field, a document "
                    f"attribute ({', '.join(RECORD_FIELDS)}) nor extra.<label>"
                )
        if "version" not in value.values():
            raise ValueError(
                "no column holds version: it guards a newer row against an older export"
            )
        return value

    @field_validator("key")
    @classmethod
    def _key(cls, value: str, info: ValidationInfo) -> str:
        columns = info.data.get("columns")
        if columns is None:  # refused already; that problem is reported
            return value
        if value not in columns:
            raise ValueError(f"{value!r} is not one of the columns ({', '.join(columns)})")
        if columns[value] not in KEY_FIELDS:
            raise ValueError(
                f"column {value!r} holds {columns[value]!r}, which does not name one document; "
                f"the key must hold {' or '.join(sorted(KEY_FIELDS))}"
            )
        return value


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes: ``timestamptz`` on PostgreSQL, naive UTC where there is no zone."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        """Microseconds on MariaDB/MySQL too, whose plain DATETIME drops them."""
        if dialect.name in ("mysql", "mariadb"):
            return dialect.type_descriptor(mysql.DATETIME(fsp=6))
        return dialect.type_descriptor(self.impl)

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        """Bind in UTC; a backend without zones gets the naive UTC time."""
        if value is None:
            return None
        value = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
        return value if dialect.name == "postgresql" else value.replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        """Read back as aware UTC, whatever the backend kept."""
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def column_type(target: str) -> TypeEngine[Any]:
    """The type a created table gives a column: exact decimals for amounts, dates as DATE."""
    if target in AMOUNT_FIELDS:
        return Numeric(18, 4)
    if target in DATE_FIELDS:
        return Date()
    if target in INTEGER_FIELDS:
        return BigInteger()
    if target == "version":
        return Integer()
    if target in TIME_FIELDS:
        return UTCDateTime()
    if target == "sha256":
        return String(64)
    return Text()


def build_table(settings: SqlDestinationSettings) -> Table:
    """The table as the settings describe it (created only when missing)."""
    columns = [
        Column(
            name,
            column_type(target),
            primary_key=name == settings.key,
            autoincrement=False,
            nullable=name != settings.key and target != "version",
        )
        for name, target in settings.columns.items()
    ]
    return Table(settings.table, MetaData(), *columns, schema=settings.db_schema)


def cell(target: str, value: Any) -> Any:
    """A record value as its column takes it: a typed column gets None for a value that was
    not normalised (as the store's ``docrelay_invoices`` view shows it), text columns text."""
    if value is None:
        return None
    if target in AMOUNT_FIELDS:
        return value if isinstance(value, Decimal) else None
    if target in DATE_FIELDS:
        return value if isinstance(value, date) else None
    if target in INTEGER_FIELDS or target in TIME_FIELDS or target == "version":
        return value
    return str(as_text(value))


# --------------------------------------------------------------------------- errors

AUTH_MYSQL = frozenset({1044, 1045, 1142, 1143, 1227, 1370, 1698})
"""Access denied: to the server, the database, the table or a command."""
TRANSIENT_MYSQL = frozenset({1040, 1053, 1159, 1161, 1205, 1213, 1927, 4031})
"""Too many connections, shutdown, network timeouts, lock wait timeout, deadlock, killed."""
AUTH_PG = ("password authentication failed", "no password supplied", "does not exist")
TRANSIENT_SQLITE = ("locked", "busy", "unable to open", "disk i/o", "disk is full")


def classify(exc: sa_exc.DBAPIError, backend: str, scrub: list[str], where: str) -> DocrelayError:
    """The engine's error class for a database error: a refusal of the credentials or of a
    privilege pauses the destination, lost connections and deadlocks are retried, anything
    else (types, constraints, a missing column) is the database's final word."""
    orig = exc.orig
    message = " ".join(str(orig).split()) or type(orig).__name__
    for secret in scrub:
        message = message.replace(secret, "***")
    message = f"{where}: {message}"
    if backend in ("mysql", "mariadb"):
        code = orig.args[0] if orig.args and isinstance(orig.args[0], int) else None
        if code in AUTH_MYSQL:
            return AuthFailed(message)
        client_side = 2000 <= (code or 0) < 3000  # the driver lost or never got a connection
        if exc.connection_invalidated or code in TRANSIENT_MYSQL or client_side:
            return TransientError(message)
        return TerminalError(message)
    if backend == "postgresql":
        state = getattr(orig, "sqlstate", None) or ""
        connecting = isinstance(exc, sa_exc.OperationalError) and not state
        if state.startswith("28") or state == "42501":
            return AuthFailed(message)
        if connecting and any(mark in message for mark in AUTH_PG):
            return AuthFailed(message)
        if (
            exc.connection_invalidated
            or connecting
            or state[:2] in ("08", "40", "53", "57")
            or state == "55P03"
        ):
            return TransientError(message)
        return TerminalError(message)
    transient = isinstance(exc, sa_exc.OperationalError) and any(
        mark in message.lower() for mark in TRANSIENT_SQLITE
    )
    return TransientError(message) if transient else TerminalError(message)


# --------------------------------------------------------------------------- destination


class SqlDestination(Destination):
    kind = "sql"
    settings_model = SqlDestinationSettings
    settings: SqlDestinationSettings

    def __init__(self, settings: SqlDestinationSettings, context: ConnectorContext) -> None:
        super().__init__(settings, context)
        self.url: URL = make_url(settings.url.get_secret_value())
        self.backend = self.url.get_backend_name()
        self.table = build_table(settings)
        self.version_column = next(c for c, t in settings.columns.items() if t == "version")
        self._engine: Engine | None = None
        self._ready = False
        self._lock = threading.Lock()
        self._scrub = [
            s
            for s in (settings.url.get_secret_value(), self.url.password)
            if isinstance(s, str) and s
        ]
        self._scrub.sort(key=len, reverse=True)  # the whole URL before the password inside it

    @property
    def where(self) -> str:
        """The table as people name it, with the database's URL without its password."""
        name = f"{self.settings.db_schema}.{self.table.name}" if self.settings.db_schema else ""
        return f"{name or self.table.name} at {self.url.render_as_string(hide_password=True)}"

    def deliver(self, payload: ExportPayload, idempotency_key: str) -> DeliveryReceipt:
        """Upsert the document's row in one transaction; the receipt is the key value."""
        record = flat_record(payload)
        row = {c: cell(t, record.get(t)) for c, t in self.settings.columns.items()}
        with self._classified(f"cannot write to {self.where}"):
            engine = self._prepared()
            with engine.begin() as conn:
                conn.execute(self.upsert, row)
        return DeliveryReceipt(ref=str(row[self.settings.key]))

    @cached_property
    def upsert(self) -> Insert:
        """The insert of one row (its values are the parameters) that updates the keyed row
        only for a higher version; built once, as building it costs more than running it."""
        table, key, version = self.table, self.settings.key, self.version_column
        updated = [c for c in self.settings.columns if c not in (key, version)]
        if self.backend in ("mysql", "mariadb"):
            stmt = mysql.insert(table)
            newer = stmt.inserted[version] > table.c[version]
            # Assignments apply in order, each seeing the ones before it: version goes last,
            # so every column is compared with the row's old version.
            return stmt.on_duplicate_key_update(
                [
                    (c, case((newer, stmt.inserted[c]), else_=table.c[c]))
                    for c in [*updated, version]
                ]
            )
        dialect_insert = postgresql.insert if self.backend == "postgresql" else sqlite.insert
        stmt = dialect_insert(table)
        return stmt.on_conflict_do_update(
            index_elements=[table.c[key]],
            set_={c: stmt.excluded[c] for c in [*updated, version]},
            where=table.c[version] < stmt.excluded[version],
        )

    def probe(self) -> list[str]:
        """Connect and look at the table (or whether it can be made); writes nothing."""
        database = self.url.database
        if self.backend == "sqlite" and database and database != ":memory:":
            path = Path(database)
            if not path.exists():  # connecting would create the file
                if not path.parent.is_dir():
                    raise TransientError(f"{path.parent} is not a directory")
                return [f"{path} does not exist yet; it is created at the first delivery"]
        with (
            self._classified(f"cannot look at {self.where}"),
            self._connected().connect() as conn,
        ):
            found = inspect(conn)
            if found.has_table(self.table.name, schema=self.settings.db_schema):
                problems = self._problems(conn)
                if problems:
                    raise TerminalError(f"{self.where}: {'; '.join(problems)}")
                rows = conn.execute(select(func.count()).select_from(self.table)).scalar_one()
                return [f"{self.where}: columns and key as configured; {rows} row(s)"]
            if not self.settings.create_table:
                raise TerminalError(f"{self.where} does not exist (create_table = false)")
            schema = self.settings.db_schema
            if schema is not None and schema not in found.get_schema_names():
                raise TerminalError(f"schema {schema!r} does not exist (it is not created)")
            if self.backend == "postgresql":
                allowed = conn.execute(
                    text("SELECT has_schema_privilege(current_user, :s, 'CREATE')"),
                    {"s": schema or conn.execute(text("SELECT current_schema()")).scalar_one()},
                ).scalar_one()
                if not allowed:
                    raise AuthFailed(f"{self.where}: no privilege to create the table")
            return [f"{self.where} does not exist yet; it is created at the first delivery"]

    def close(self) -> None:
        """Release the pooled connections."""
        if self._engine is not None:
            self._engine.dispose()

    # ----------------------------------------------------------------------- internals

    def _connected(self) -> Engine:
        if self._engine is None:
            timeout = math.ceil(self.settings.connect_timeout)
            args: dict[str, Any] = (
                {"timeout": timeout} if self.backend == "sqlite" else {"connect_timeout": timeout}
            )
            self._engine = create_engine(self.url, pool_pre_ping=True, connect_args=args)
        return self._engine

    def _prepared(self) -> Engine:
        """The engine, once the table is there (made if missing and allowed) and fits."""
        with self._lock:
            engine = self._connected()
            if self._ready:
                return engine
            with engine.begin() as conn:
                exists = inspect(conn).has_table(self.table.name, schema=self.settings.db_schema)
            if not exists:
                if not self.settings.create_table:
                    raise TerminalError(f"{self.where} does not exist (create_table = false)")
                try:
                    with engine.begin() as conn:
                        self.table.create(conn, checkfirst=True)
                except sa_exc.DBAPIError:  # another process made it at the same moment?
                    with engine.connect() as conn:
                        if not inspect(conn).has_table(
                            self.table.name, schema=self.settings.db_schema
                        ):
                            raise
            with engine.connect() as conn:
                problems = self._problems(conn)
            if problems:
                raise TerminalError(f"{self.where}: {'; '.join(problems)}")
            self._ready = True
            return engine

    def _problems(self, conn: Any) -> list[str]:
        """What an existing table lacks for these settings (it is never altered)."""
        found = inspect(conn)
        schema, name, key = self.settings.db_schema, self.table.name, self.settings.key
        have = {c["name"].lower() for c in found.get_columns(name, schema=schema)}
        problems = []
        missing = [c for c in self.settings.columns if c.lower() not in have]
        if missing:
            problems.append(f"has no column {', '.join(missing)}")
        unique = [found.get_pk_constraint(name, schema=schema).get("constrained_columns") or []]
        unique += [u["column_names"] for u in found.get_unique_constraints(name, schema=schema)]
        unique += [i["column_names"] for i in found.get_indexes(name, schema=schema) if i["unique"]]
        if not any([c.lower() for c in cols if c] == [key.lower()] for cols in unique):
            problems.append(f"key column {key!r} is neither the primary key nor unique")
        return problems

    @contextmanager
    def _classified(self, where: str) -> Iterator[None]:
        """Database errors as the engine's classes, their messages without the password."""
        try:
            yield
        except DocrelayError:
            raise
        except sa_exc.DBAPIError as exc:
            raise classify(exc, self.backend, self._scrub, where) from exc
        except sa_exc.TimeoutError as exc:  # no pooled connection came free in time
            raise TransientError(f"{where}: {exc}") from exc
        except (ImportError, sa_exc.NoSuchModuleError) as exc:
            raise TerminalError(f"{where}: the database driver is not installed ({exc})") from exc
