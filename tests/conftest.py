"""Shared fixtures: real PostgreSQL databases, the daemon as a real process, service gates."""

from __future__ import annotations

import os
import secrets
import sys
from collections.abc import Iterator

import pytest

PG_ADMIN_URL = os.environ.get(
    "DOCRELAY_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
MARIADB_ADMIN_URL = os.environ.get(
    "DOCRELAY_TEST_MARIADB_URL", "mysql+pymysql://root@127.0.0.1:3306/test"
)


def require_service(available: bool, reason: str) -> None:
    """Skip when a real server is missing, or fail when CI says every service must be there."""
    if available:
        return
    if os.environ.get("DOCRELAY_REQUIRE_SERVICES") == "1":
        pytest.fail(f"required service missing: {reason}")
    pytest.skip(reason)


def _pg_admin():
    from sqlalchemy import create_engine

    return create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")


UNGROUPED = pytest.StashKey[str]()


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Under ``--dist loadgroup`` each pytest-xdist worker suffixes the node id of a test marked
    ``xdist_group`` with its group, which is what keeps the group on one worker. Some pytest
    releases silently defeat that (pytest-dev/pytest-xdist#1386): then every worker would set up
    the expensive shared servers (Tryton, ~45 s each) and the module-scoped daemons. Those tests
    fail then (``pytest_runtest_setup``), saying why."""
    if not os.environ.get("PYTEST_XDIST_WORKER") or not config.getoption("loadgroup", False):
        return
    for item in items:
        if item.get_closest_marker("xdist_group") and "@" not in item.nodeid:
            item.stash[UNGROUPED] = (
                f"--dist loadgroup does not group with pytest {pytest.__version__} "
                "(pytest-dev/pytest-xdist#1386): use a pytest the test extra allows"
            )


def pytest_runtest_setup(item: pytest.Item) -> None:
    if problem := item.stash.get(UNGROUPED, None):
        pytest.fail(problem, pytrace=False)


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh, empty PostgreSQL database for one test, dropped afterwards."""
    from sqlalchemy import text
    from sqlalchemy.exc import OperationalError

    try:
        admin = _pg_admin()
        with admin.connect() as conn:
            conn.execute(text("SELECT 1"))
    except (OperationalError, ImportError) as exc:
        require_service(False, f"PostgreSQL not reachable at {PG_ADMIN_URL}: {exc}")
        raise
    name = f"docrelay_t_{secrets.token_hex(4)}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    base = PG_ADMIN_URL.rsplit("/", 1)[0]
    try:
        yield f"{base}/{name}"
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture
def mariadb_url() -> Iterator[str]:
    """A fresh, empty MariaDB database for one test, dropped afterwards."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.exc import OperationalError

    try:
        admin = create_engine(MARIADB_ADMIN_URL, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text("SELECT 1"))
    except (OperationalError, ImportError) as exc:
        require_service(False, f"MariaDB not reachable at {MARIADB_ADMIN_URL}: {exc}")
        raise
    name = f"docrelay_t_{secrets.token_hex(4)}"
    with admin.connect() as conn:
        conn.execute(text(f"CREATE DATABASE `{name}`"))
    base = MARIADB_ADMIN_URL.rsplit("/", 1)[0]
    try:
        yield f"{base}/{name}"
    finally:
        with admin.connect() as conn:
            conn.execute(text(f"DROP DATABASE IF EXISTS `{name}`"))
        admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path) -> str:
    """Each test using this runs on SQLite and on a real PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/docrelay.db"
    return request.getfixturevalue("pg_url")


@pytest.fixture
def engine(store_url: str) -> Iterator[object]:
    """A migrated store (SQLite and PostgreSQL, by ``store_url``) for tests of the engine's
    parts without a daemon."""
    from daemon.store import engine as store_engine

    engine = store_engine.make_engine(store_url)
    store_engine.ensure_schema(engine)
    yield engine
    engine.dispose()


@pytest.fixture(autouse=True)
def _no_daemon_left_behind() -> Iterator[None]:
    """A failing test must not leave a daemon running into the next one."""
    from tests.daemon_proc import RUNNING

    yield
    while RUNNING:
        RUNNING.pop().kill()


@pytest.fixture(scope="session", autouse=True)
def _tryton_servers_stopped() -> Iterator[None]:
    """The Tryton servers a test started (``tests.tryton_server``) live for the session."""
    yield
    started = sys.modules.get("tests.tryton_server")
    if started is not None:
        started.close_all()
