"""The SQL table destination on SQLite, a real PostgreSQL and a real MariaDB: one row per
document however often it is pushed, later versions update it, older ones never do, amounts
stay exact; and end to end, the real daemon filling a PostgreSQL table from the watched folder.
"""

from __future__ import annotations

import sqlite3
import time
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg.errors as pg_errors
import pymysql.err as mysql_errors
import pytest
from sqlalchemy import MetaData, Table, create_engine, inspect, select, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.types import Date, Numeric

from connectors.base import CanonicalResult, ExportPayload, FieldValue, LineItem
from connectors.destinations.sql import (
    SqlDestination,
    SqlDestinationSettings,
    build_table,
    classify,
)
from connectors.errors import AuthFailed, TerminalError, TransientError
from daemon import config as config_mod
from tests.conformance.harness import context
from tests.daemon_proc import DaemonProcess, free_port, toml_table, wait_until, write_config
from tests.invoices import expected_fields, random_spec, write_invoice


@pytest.fixture(params=["sqlite", "postgresql", "mariadb"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Each test using this runs on SQLite, a real PostgreSQL and a real MariaDB (a fresh
    database each, dropped afterwards)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/erp.db"
    return request.getfixturevalue("pg_url" if request.param == "postgresql" else "mariadb_url")


def payload(
    version: int = 1,
    *,
    document_id: int = 42,
    total: str = "100.00",
    number: str = "INV-42",
    extra: dict[str, str] | None = None,
) -> ExportPayload:
    fields = [
        FieldValue("invoice_number", number),
        FieldValue("total_amount", total, value_number=Decimal(total), currency="EUR"),
        FieldValue("tax_amount", "19.01", value_number=Decimal("19.01")),
        FieldValue("net_amount", "n/a"),  # not normalised: NULL in a typed column
        FieldValue("issue_date", "01.12.2026", value_date=date(2026, 12, 1)),
        FieldValue("currency", "EUR"),
        FieldValue("supplier_name", "Müller & Söhne GmbH"),
    ]
    fields += [FieldValue(f"extra.{k}", v) for k, v in (extra or {}).items()]
    return ExportPayload(
        document_id=document_id,
        sha256=f"{document_id:064x}",
        filename=f"invoice-{document_id}.pdf",
        mime_type="application/pdf",
        source="scans",
        source_ref=f"invoice-{document_id}.pdf",
        received_at=datetime(2026, 12, 1, 8, 30, 0, 123456, tzinfo=UTC),
        vendor="local",
        vendor_kind="local",
        vendor_ref="local:ab",
        submission_id=7,
        extraction_id=9,
        result=CanonicalResult(fields=fields, line_items=[LineItem(1, description="Widgets")]),
        version=version,
        corrected=frozenset({"invoice_number"}) if version > 1 else frozenset(),
    )


def destination(url: str, tmp_path: Path, **settings: Any) -> SqlDestination:
    model = SqlDestinationSettings.model_validate(
        {"kind": "sql", "url": url, "table": "invoices", **settings}
    )
    return SqlDestination(model, context("erp", tmp_path))


def rows(url: str, table: str = "invoices", schema: str | None = None) -> list[dict[str, Any]]:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            reflected = Table(table, MetaData(), schema=schema, autoload_with=conn)
            return [dict(r) for r in conn.execute(select(reflected)).mappings()]
    finally:
        engine.dispose()


# --------------------------------------------------------------------------- the upsert


def test_the_table_is_made_with_exact_types_and_the_document_as_key(db_url, tmp_path):
    dest = destination(db_url, tmp_path)
    receipt = dest.deliver(payload(), "docrelay-42-erp")
    dest.close()
    assert receipt.ref == "42"
    engine = create_engine(db_url)
    with engine.connect() as conn:
        found = inspect(conn)
        types = {c["name"]: c["type"] for c in found.get_columns("invoices")}
        assert found.get_pk_constraint("invoices")["constrained_columns"] == ["document_id"]
    engine.dispose()
    assert isinstance(types["total_amount"], Numeric) and types["total_amount"].scale == 4
    assert isinstance(types["issue_date"], Date)
    (row,) = rows(db_url)
    assert row["document_id"] == 42 and row["version"] == 1
    assert row["total_amount"] == Decimal("100.00") and row["tax_amount"] == Decimal("19.01")
    assert row["net_amount"] is None, "a value that was not normalised is no number"
    assert row["issue_date"] == date(2026, 12, 1)
    assert row["supplier_name"] == "Müller & Söhne GmbH"
    assert row["sha256"] == f"{42:064x}" and row["filename"] == "invoice-42.pdf"
    received = row["received_at"]  # reflected: aware on PostgreSQL, naive UTC elsewhere
    received = received.astimezone(UTC) if received.tzinfo else received.replace(tzinfo=UTC)
    assert received == datetime(2026, 12, 1, 8, 30, 0, 123456, tzinfo=UTC)
    assert row["corrected"] == ""


def test_one_row_per_document_and_only_a_newer_version_overwrites(db_url, tmp_path):
    dest = destination(db_url, tmp_path)
    for _ in range(3):  # a crash after the push repeats the same export
        assert dest.deliver(payload(), "k42").ref == "42"
    dest.deliver(payload(document_id=43, number="INV-43"), "k43")
    assert sorted(r["document_id"] for r in rows(db_url)) == [42, 43]

    dest.deliver(payload(2, total="120.50", number="INV-42b"), "k42")
    by_id = {r["document_id"]: r for r in rows(db_url)}
    assert by_id[42]["version"] == 2 and by_id[42]["total_amount"] == Decimal("120.50")
    assert by_id[42]["invoice_number"] == "INV-42b" and by_id[42]["corrected"] == "invoice_number"
    assert by_id[43]["version"] == 1, "the other document is untouched"

    dest.deliver(payload(1, total="999.00", number="LATE"), "k42")  # a late retry of v1
    dest.deliver(payload(2, total="888.00", number="SAME"), "k42")  # v2 again, other content
    (row,) = [r for r in rows(db_url) if r["document_id"] == 42]
    assert (row["version"], row["total_amount"], row["invoice_number"]) == (
        2,
        Decimal("120.50"),
        "INV-42b",
    ), "an older or equal version never overwrites the row"
    dest.deliver(payload(3, total="130.00"), "k42")
    (row,) = [r for r in rows(db_url) if r["document_id"] == 42]
    assert row["version"] == 3 and row["total_amount"] == Decimal("130.00")
    dest.close()


def test_two_processes_making_the_table_at_once_both_deliver(db_url, tmp_path):
    """Two daemons sharing the database: both find no table, both create it; the loser of
    that race sees the winner's table and goes on."""
    import threading

    dests = [destination(db_url, tmp_path) for _ in range(4)]
    start = threading.Barrier(len(dests))
    errors: list[BaseException] = []

    def push(n: int) -> None:
        start.wait()
        try:
            dests[n].deliver(payload(document_id=100 + n), f"k{n}")
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=push, args=(n,)) for n in range(len(dests))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    for dest in dests:
        dest.close()
    assert errors == []
    assert sorted(r["document_id"] for r in rows(db_url)) == [100, 101, 102, 103]


@pytest.mark.parametrize("amount", ["0.01", "1234567.8912", "99999999.99", "0.10"])
def test_amounts_stay_exact(db_url, tmp_path, amount):
    dest = destination(db_url, tmp_path)
    dest.deliver(payload(total=amount), "k")
    dest.close()
    (row,) = rows(db_url)
    assert row["total_amount"] == Decimal(amount)
    assert isinstance(row["total_amount"], Decimal)


def test_the_column_mapping_and_schema_are_used(db_url, tmp_path):
    schema = None
    if not db_url.startswith("sqlite"):  # a schema of its own (MariaDB: a database)
        schema = "erp_in" if db_url.startswith("postgresql") else db_url.rsplit("/", 1)[1]
        if db_url.startswith("postgresql"):
            engine = create_engine(db_url)
            with engine.begin() as conn:
                conn.execute(text("CREATE SCHEMA erp_in"))
            engine.dispose()
    columns = {
        "doc": "document_id",
        "rev": "version",
        "beleg_nr": "invoice_number",
        "brutto": "total_amount",
        "datum": "issue_date",
        "datei": "filename",
        "po_box": "extra.po_box",
    }
    dest = destination(
        db_url, tmp_path, table="ap_inbox", schema=schema, columns=columns, key="doc"
    )
    dest.deliver(payload(extra={"po_box": "PO 17"}), "k")
    dest.deliver(payload(2, total="5.50"), "k")  # no po_box this time: the column is emptied
    dest.close()
    (row,) = rows(db_url, "ap_inbox", schema)
    assert row == {
        "doc": 42,
        "rev": 2,
        "beleg_nr": "INV-42",
        "brutto": Decimal("5.50"),
        "datum": date(2026, 12, 1),
        "datei": "invoice-42.pdf",
        "po_box": None,
    }


def test_an_existing_table_is_used_as_it_is_and_its_constraints_are_final(db_url, tmp_path):
    engine = create_engine(db_url)
    with engine.begin() as conn:
        conn.execute(
            text(
                "CREATE TABLE invoices (document_id BIGINT PRIMARY KEY, version INTEGER NOT NULL,"
                " invoice_number VARCHAR(40),"
                " CONSTRAINT short_number CHECK (LENGTH(invoice_number) < 10))"
            )
        )
    engine.dispose()
    columns = {
        "document_id": "document_id",
        "version": "version",
        "invoice_number": "invoice_number",
    }
    dest = destination(db_url, tmp_path, create_table=False, columns=columns)
    assert "0 row(s)" in " ".join(dest.probe())
    dest.deliver(payload(number="INV-1"), "k")
    with pytest.raises(TerminalError) as refused:
        dest.deliver(payload(2, number="INV-TOO-LONG-FOR-IT"), "k")
    assert "short_number" in str(refused.value).lower() or "check" in str(refused.value).lower()
    assert [r["invoice_number"] for r in rows(db_url)] == ["INV-1"], "nothing half-written"
    dest.close()

    wider = destination(db_url, tmp_path, create_table=False)  # default mapping: more columns
    with pytest.raises(TerminalError, match=r"has no column .*total_amount"):
        wider.probe()
    with pytest.raises(TerminalError, match=r"has no column .*total_amount"):
        wider.deliver(payload(3), "k")
    wider.close()


def test_a_missing_table_without_create_table_is_refused_and_the_probe_makes_nothing(
    db_url, tmp_path
):
    dest = destination(db_url, tmp_path)
    assert "created at the first delivery" in " ".join(dest.probe())
    dest.close()
    refusing = destination(db_url, tmp_path, create_table=False)
    with pytest.raises(TerminalError, match="does not exist"):
        refusing.deliver(payload(), "k")
    refusing.close()
    if not db_url.startswith("sqlite"):
        engine = create_engine(db_url)
        with engine.connect() as conn:
            assert not inspect(conn).has_table("invoices"), "probe and refusal made no table"
        engine.dispose()
    else:
        assert not (tmp_path / "erp.db").exists() or not rows_table_exists(db_url)


def rows_table_exists(url: str) -> bool:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return inspect(conn).has_table("invoices")
    finally:
        engine.dispose()


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize("backend", ["postgresql", "mariadb"])
def test_refused_credentials_pause_and_a_lost_server_is_retried(backend, tmp_path, request):
    url = request.getfixturevalue("pg_url" if backend == "postgresql" else "mariadb_url")
    scheme, rest = url.split("://", 1)
    host_db = rest.split("@", 1)[1]
    wrong = f"{scheme}://nobody_here:s3cret-pw@{host_db}"
    for attempt in (lambda d: d.deliver(payload(), "k"), lambda d: d.probe()):
        dest = destination(wrong, tmp_path)
        with pytest.raises(AuthFailed) as refused:
            attempt(dest)
        dest.close()
        assert "s3cret-pw" not in str(refused.value)
    port = free_port()  # nothing listens there
    gone = f"{scheme}://nobody_here:s3cret-pw@127.0.0.1:{port}/test"
    dest = destination(gone, tmp_path, connect_timeout=2)
    started = time.monotonic()
    with pytest.raises(TransientError) as lost:
        dest.deliver(payload(), "k")
    assert time.monotonic() - started < 10
    assert "s3cret-pw" not in str(lost.value) and str(port) in str(lost.value)
    dest.close()


def test_a_locked_sqlite_database_is_retried(tmp_path):
    url = f"sqlite:///{tmp_path}/erp.db"
    dest = destination(url, tmp_path, connect_timeout=0.1)
    dest.deliver(payload(), "k")
    holder = sqlite3.connect(tmp_path / "erp.db")
    holder.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(TransientError, match="locked"):
            dest.deliver(payload(2), "k")
    finally:
        holder.rollback()
        holder.close()
    dest.deliver(payload(2), "k")
    assert rows(url)[0]["version"] == 2
    dest.close()


DRIVER_ERRORS = [
    ("postgresql", pg_errors.DeadlockDetected("deadlock detected"), TransientError),
    ("postgresql", pg_errors.SerializationFailure("could not serialize"), TransientError),
    ("postgresql", pg_errors.AdminShutdown("terminating connection"), TransientError),
    ("postgresql", pg_errors.InvalidPassword("password authentication failed"), AuthFailed),
    ("postgresql", pg_errors.InsufficientPrivilege("permission denied"), AuthFailed),
    ("postgresql", pg_errors.CheckViolation("violates check constraint"), TerminalError),
    ("mariadb", mysql_errors.OperationalError(1213, "Deadlock found"), TransientError),
    ("mariadb", mysql_errors.OperationalError(1205, "Lock wait timeout"), TransientError),
    ("mariadb", mysql_errors.OperationalError(2013, "Lost connection"), TransientError),
    ("mariadb", mysql_errors.OperationalError(1045, "Access denied for user"), AuthFailed),
    ("mariadb", mysql_errors.OperationalError(1054, "Unknown column 'x'"), TerminalError),
    ("mariadb", mysql_errors.DataError(1406, "Data too long for column"), TerminalError),
    ("sqlite", sqlite3.OperationalError("database is locked"), TransientError),
    ("sqlite", sqlite3.OperationalError("no such column: x"), TerminalError),
]


@pytest.mark.parametrize(
    ("backend", "orig", "expected"), DRIVER_ERRORS, ids=[str(e[1]) for e in DRIVER_ERRORS]
)
def test_database_errors_get_the_engines_classes(backend, orig, expected):
    """Deadlocks and lost connections are retried, refusals pause, the rest is final; the
    message is the database's, without the password."""
    wrapped = DBAPIError.instance("INSERT …", {}, orig, Exception)
    error = classify(wrapped, backend, ["pw-123"], "cannot write to t")
    assert type(error) is expected, (backend, orig, type(wrapped))
    assert str(error).startswith("cannot write to t: ") and "pw-123" not in str(error)


# --------------------------------------------------------------------------- configuration


def refused(entry: dict[str, Any], tmp_path: Path) -> list[str]:
    raw = {
        "store": {"url": f"sqlite:///{tmp_path}/s.db", "blob_dir": str(tmp_path / "blobs")},
        "vendors": {"local": {"kind": "local"}},
        "destinations": {"erp": {"kind": "sql", "table": "invoices", **entry}},
        "routes": [{"match": {}, "vendor": "local", "destinations": ["erp"]}],
    }
    with pytest.raises(config_mod.ConfigError) as info:
        config_mod.validate(raw, tmp_path / "config.toml")
    return [f"{problem.key}: {problem.message}" for problem in info.value.problems]


@pytest.mark.parametrize(
    ("entry", "key", "says"),
    [
        ({"columns": {"document_id": "document_id", "version": "version", "x": "totl"}},
         "destinations.erp.columns", "'x' → 'totl' is neither"),
        ({"columns": {"document_id": "document_id", "total": "total_amount"}},
         "destinations.erp.columns", "no column holds version"),
        ({"columns": {"document_id": "document_id", "version": "version", "bad name": "vendor"}},
         "destinations.erp.columns", "column name 'bad name'"),
        ({"key": "doc"}, "destinations.erp.key", "'doc' is not one of the columns"),
        ({"key": "invoice_number"}, "destinations.erp.key", "does not name one document"),
        ({"url": "mssql+pyodbc://u@h/db"}, "destinations.erp.url", "has no upsert"),
        ({"url": "not a url"}, "destinations.erp.url", "not an SQLAlchemy URL"),
        ({"table": "drop table;"}, "destinations.erp.table", "table name"),
    ],
)  # fmt: skip
def test_a_bad_setting_is_refused_at_config_time_naming_the_key(entry, key, says, tmp_path):
    problems = refused({"url": "sqlite:///erp.db", **entry}, tmp_path)
    assert any(p.startswith(f"{key}: ") and says in p for p in problems), problems


def test_url_file_holds_the_url_with_its_password_and_it_is_redacted(tmp_path):
    secret = tmp_path / "erp-url"
    secret.write_text("postgresql+psycopg://erp:hunter2@db.example/erp\n")
    raw = {
        "store": {"url": f"sqlite:///{tmp_path}/s.db", "blob_dir": str(tmp_path / "blobs")},
        "vendors": {"local": {"kind": "local"}},
        "destinations": {"erp": {"kind": "sql", "url_file": str(secret), "table": "invoices"}},
        "routes": [{"match": {}, "vendor": "local", "destinations": ["erp"]}],
    }
    loaded = config_mod.validate(raw, tmp_path / "config.toml")
    settings = loaded.destinations["erp"]
    assert settings.url.get_secret_value().endswith("@db.example/erp")
    assert any("hunter2" in s for s in loaded.secrets)
    assert "hunter2" not in repr(settings)
    dest = SqlDestination(settings, context("erp", tmp_path))
    assert "hunter2" not in dest.where and "db.example" in dest.where


def test_the_commented_example_in_config_example_toml_is_valid(tmp_path):
    example = (Path(__file__).resolve().parent.parent / "config.example.toml").read_text()
    block = example.split("# [destinations.erp_table]\n", 1)[1].split("\n\n", 1)[0]
    lines = ["[destinations.erp_table]"] + [line.removeprefix("# ") for line in block.splitlines()]
    (tmp_path / "erp-db-url").write_text("postgresql+psycopg://docrelay:pw@db/erp\n")
    text_ = "\n".join(lines).replace('"erp-db-url"', f'"{tmp_path / "erp-db-url"}"')
    path = tmp_path / "config.toml"
    path.write_text(example + "\n" + text_ + "\n")
    loaded = config_mod.load(path).destinations["erp_table"]
    assert loaded.kind == "sql" and loaded.columns["gross"] == "total_amount"
    assert loaded.db_schema == "docrelay" and loaded.key == "document_id"


# --------------------------------------------------------------------------- shared flattening


def test_the_folder_csv_row_is_the_same_flat_record(tmp_path):
    import csv

    from connectors.destinations.folder import FolderDestination, FolderDestinationSettings

    folder = FolderDestination(
        FolderDestinationSettings(path=tmp_path / "out", format="csv"), context("out", tmp_path)
    )
    folder.deliver(payload(total="120.50"), "k")
    with (tmp_path / "out" / "42.csv").open() as handle:
        (row,) = list(csv.DictReader(handle))
    assert row["document_id"] == "42" and row["invoice_number"] == "INV-42"
    assert row["total_amount"] == "120.5" and row["issue_date"] == "2026-12-01"
    assert row["net_amount"] == "n/a", "the CSV keeps the text where there is no number"


# --------------------------------------------------------------------------- end to end

DOCS = 4


@pytest.mark.e2e
def test_the_daemon_fills_a_postgresql_table_once_per_document(tmp_path, pg_url):
    """Folder intake → local vendor → a table in a PostgreSQL schema made beforehand (with a
    trigger counting every row written), beside the folder export."""
    settings = SqlDestinationSettings.model_validate(
        {"kind": "sql", "url": pg_url, "table": "ap_invoices", "schema": "erp"}
    )
    engine = create_engine(pg_url)
    with engine.begin() as conn:
        conn.execute(text("CREATE SCHEMA erp"))
        build_table(settings).create(conn)
        conn.execute(text("CREATE TABLE erp.writes (document_id BIGINT, version INTEGER)"))
        conn.execute(
            text(
                "CREATE FUNCTION erp.count_write() RETURNS trigger LANGUAGE plpgsql AS $$"
                " BEGIN INSERT INTO erp.writes VALUES (NEW.document_id, NEW.version);"
                " RETURN NEW; END $$"
            )
        )
        conn.execute(
            text(
                "CREATE TRIGGER counted AFTER INSERT OR UPDATE ON erp.ap_invoices"
                " FOR EACH ROW EXECUTE FUNCTION erp.count_write()"
            )
        )
    table = toml_table(
        "[destinations.erp_table]",
        {"kind": "sql", "url": pg_url, "schema": "erp", "table": "ap_invoices",
         "create_table": False},
    )  # fmt: skip
    config = write_config(tmp_path, extra=table)
    config.write_text(
        config.read_text().replace(
            'destinations = ["outbox"]', 'destinations = ["outbox", "erp_table"]'
        )
    )
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    specs = {}
    for seed in range(DOCS):
        spec = random_spec(100 + seed)
        specs[spec.invoice_number] = spec
        part = inbox / f"invoice-{seed}.pdf.part"
        write_invoice(part, spec)
        part.rename(inbox / f"invoice-{seed}.pdf")

    daemon = DaemonProcess(config).start()
    try:

        def table_rows() -> list[dict[str, Any]]:
            with engine.connect() as conn:
                return [
                    dict(r) for r in conn.execute(text("SELECT * FROM erp.ap_invoices")).mappings()
                ]

        wait_until(lambda: len(table_rows()) == DOCS, 60, what=f"{DOCS} rows in erp.ap_invoices")
        time.sleep(1.5)  # room for a second push, which must not come
        assert daemon.stop() == 0
    finally:
        daemon.kill()
    found = table_rows()
    with engine.connect() as conn:
        writes = conn.execute(text("SELECT document_id, version FROM erp.writes")).all()
    store = create_engine(f"sqlite:///{tmp_path}/var/docrelay.db")
    with store.connect() as conn:
        deliveries = conn.execute(
            text(
                "SELECT document_id, state, downstream_ref FROM deliveries"
                " WHERE destination = 'erp_table'"
            )
        ).all()
    store.dispose()
    engine.dispose()
    assert sorted(w.document_id for w in writes) == sorted(r["document_id"] for r in found)
    assert len(writes) == DOCS, "each document written exactly once"
    assert sorted(deliveries) == sorted(
        (r["document_id"], "delivered", str(r["document_id"])) for r in found
    )
    assert {r["invoice_number"] for r in found} == set(specs)
    for row in found:
        want = expected_fields(specs[row["invoice_number"]])
        assert row["version"] == 1 and row["vendor"] == "local"
        for name in ("total_amount", "net_amount", "tax_amount", "issue_date", "currency"):
            assert row[name] == want[name], (name, row[name], want[name])
        assert isinstance(row["total_amount"], Decimal)
