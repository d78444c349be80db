"""A real Tryton server for tests and benchmarks: ``trytond`` with ``account_invoice`` on SQLite
or PostgreSQL, initialised once per backend and process (about 20 s each) and reused.

``shared(backend)`` starts (or returns) the server of a backend; ``close_all()`` stops them and
drops what they made (the session fixture ``tryton_servers`` in ``tests/conftest.py`` calls
it). The database gets a company (currency EUR), the English chart of accounts, a fiscal year
around today with invoice sequences, and three supplier taxes: ``VAT 19%``, ``VAT 7%`` and
``VAT 0%``. The setup runs in a child process with proteus' in-process backend (the module test
tools of ``company``, ``account`` and ``account_invoice``), so the test process never imports
the server's configuration.

Run ``python -m tests.tryton_server sqlite`` to start one by hand (Ctrl-C stops it).
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import xmlrpc.client
from pathlib import Path
from typing import Any

import pytest

from tests.daemon_proc import free_port

PASSWORD = "tryton-admin-secret"
LINE_ACCOUNT = "2.2.1"
"""The English chart's first account of an expense type (what the module test tools use)."""
TAXES = {"19": "VAT 19%", "7": "VAT 7%", "0": "VAT 0%"}
BACKENDS = ("sqlite", "postgresql")
PG_ADMIN_URL = os.environ.get(
    "DOCRELAY_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
BIN = Path(sys.executable).parent
ON_ONE_WORKER = pytest.mark.xdist_group("tryton")
"""For the ``pytestmark`` of every module using these servers: setting one up takes about 45 s,
so under pytest-xdist (``--dist loadgroup``) all their tests run on one worker, which starts
each backend's server once."""


@dataclasses.dataclass
class TrytonServer:
    backend: str
    database: str
    port: int
    workdir: Path
    process: subprocess.Popen[bytes] | None = None
    pg_admin: Any = None

    @property
    def url(self) -> str:
        """What the destination's ``url`` setting takes: the web listener."""
        return f"http://127.0.0.1:{self.port}/"

    def settings(self, **overrides: Any) -> dict[str, Any]:
        """A working ``[destinations.<name>]`` table for this server."""
        return {
            "kind": "tryton",
            "url": self.url,
            "database": self.database,
            "username": "admin",
            "password": PASSWORD,
            "line_account": LINE_ACCOUNT,
            **overrides,
        }

    def rpc(self) -> Any:
        """A proteus configuration for reading back (basic auth, this thread only)."""
        from proteus import config

        return config.XmlrpcConfig(
            f"http://admin:{PASSWORD}@127.0.0.1:{self.port}/{self.database}/rpc/"
        )

    def stop(self) -> None:
        """Stop the server and drop its database."""
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
            self.process = None
        if self.pg_admin is not None:
            from sqlalchemy import text

            with self.pg_admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{self.database}" WITH (FORCE)'))
            self.pg_admin.dispose()
            self.pg_admin = None
        shutil.rmtree(self.workdir, ignore_errors=True)


class Unavailable(RuntimeError):
    """The backend's database server is not there (PostgreSQL not running)."""


def write_config(workdir: Path, backend: str, port: int) -> Path:
    if backend == "sqlite":
        database = f"[database]\nuri = sqlite://\npath = {workdir}\n"
    else:
        base = PG_ADMIN_URL.replace("+psycopg", "").rsplit("/", 1)[0]
        database = f"[database]\nuri = {base}/\n"
    conf = workdir / "trytond.conf"
    conf.write_text(
        f"{database}\n[web]\nlisten = 127.0.0.1:{port}\n\n[session]\nmax_attempt = 1000\n"
    )
    return conf


def start(backend: str, workers: int = 1) -> TrytonServer:
    """Initialise a fresh database on ``backend`` and serve it on a free loopback port: with
    ``trytond`` itself (one process, a thread per request), or with ``workers`` processes
    serving trytond's WSGI app on one socket (as uWSGI or gunicorn would in production; one
    Python process uses one core)."""
    workdir = Path(tempfile.mkdtemp(prefix=f"docrelay-tryton-{backend}-"))
    database = f"docrelay_tryton_{secrets.token_hex(4)}"
    server = TrytonServer(backend, database, free_port(), workdir)
    try:
        if backend == "postgresql":
            server.pg_admin = _create_pg_database(database)
        else:
            (workdir / f"{database}.sqlite").touch()  # trytond-admin opens, never creates it
        conf = write_config(workdir, backend, server.port)
        env = {**os.environ, "TRYTONPASSFILE": str(workdir / "password")}
        (workdir / "password").write_text(PASSWORD)
        with (workdir / "admin.log").open("wb") as log:
            admin = [str(BIN / "trytond-admin"), "-c", str(conf), "-d", database]
            for args in (
                ["--all", "--email", "admin@example.com"],
                ["-u", "account_invoice", "--activate-dependencies"],
            ):
                done = subprocess.run([*admin, *args], env=env, stdout=log, stderr=log, check=False)
                if done.returncode:
                    raise RuntimeError(f"trytond-admin failed: {_read(workdir / 'admin.log')}")
            setup = [sys.executable, "-m", "tests.tryton_server", "--setup", str(conf), database]
            root = Path(__file__).resolve().parent.parent
            done = subprocess.run(setup, cwd=root, env=env, stdout=log, stderr=log, check=False)
            if done.returncode:
                raise RuntimeError(f"Tryton setup failed: {_read(workdir / 'admin.log')}")
        with (workdir / "server.log").open("wb") as log:
            command = [str(BIN / "trytond"), "-c", str(conf), "-d", database]
            if workers > 1:
                command = [sys.executable, "-m", "tests.tryton_server", "--serve", str(conf)]
                command += [database, str(server.port), str(workers)]
            server.process = subprocess.Popen(
                command,
                cwd=Path(__file__).resolve().parent.parent,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        _wait_until_serving(server)
    except BaseException:
        server.stop()
        raise
    return server


def _read(path: Path) -> str:
    return path.read_text(errors="replace")[-4000:]


def _create_pg_database(name: str) -> Any:
    from sqlalchemy import create_engine, text
    from sqlalchemy.exc import OperationalError

    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except (OperationalError, ImportError) as exc:
        admin.dispose()
        raise Unavailable(f"PostgreSQL not reachable at {PG_ADMIN_URL}: {exc}") from exc
    return admin


def _wait_until_serving(server: TrytonServer, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    proxy = xmlrpc.client.ServerProxy(f"{server.url}{server.database}/rpc/", allow_none=True)
    while True:
        assert server.process is not None
        if server.process.poll() is not None:
            raise RuntimeError(f"trytond exited: {(server.workdir / 'server.log').read_text()}")
        try:
            proxy.common.server.version()
            return
        except xmlrpc.client.ProtocolError as exc:
            if exc.errcode == 401:  # the database is served: it wants a login
                return
            error: Exception = exc
        except OSError as exc:
            error = exc
        if time.monotonic() > deadline:
            log = (server.workdir / "server.log").read_text()
            raise RuntimeError(f"trytond did not answer in time ({error}): {log}")
        time.sleep(0.2)


# --------------------------------------------------------------------------- shared servers

_servers: dict[str, TrytonServer | BaseException] = {}
_lock = threading.Lock()


def shared(backend: str) -> TrytonServer:
    """The process' server of ``backend``, started at the first call. A backend that failed to
    start fails again at once (``Unavailable`` for a missing PostgreSQL) instead of retrying."""
    with _lock:
        found = _servers.get(backend)
        if found is None:
            try:
                found = start(backend)
            except Exception as exc:
                found = exc
            _servers[backend] = found
        if isinstance(found, BaseException):
            raise found
        return found


def close_all() -> None:
    with _lock:
        for found in _servers.values():
            if isinstance(found, TrytonServer):
                found.stop()
        _servers.clear()


atexit.register(close_all)


def server_or_skip(backend: str) -> TrytonServer:
    """``shared``, but a missing PostgreSQL skips (or fails under
    ``DOCRELAY_REQUIRE_SERVICES=1``) like every other test that needs a server."""
    from tests.conftest import require_service

    try:
        return shared(backend)
    except Unavailable as exc:
        require_service(False, str(exc))
        raise


@pytest.fixture(scope="session", params=BACKENDS)
def tryton(request: pytest.FixtureRequest) -> TrytonServer:
    """A Tryton server on each backend, initialised once per session and shared."""
    return server_or_skip(request.param)


# --------------------------------------------------------------------------- database setup


def _setup(conf: str, database: str) -> None:
    """Company, chart, fiscal year, taxes; run in a child process (``--setup``)."""
    import datetime
    from decimal import Decimal

    from proteus import Model, config

    cfg = config.set_trytond(database=database, config_file=conf)
    from trytond.modules.account.tests.tools import create_chart, create_fiscalyear, get_accounts
    from trytond.modules.account_invoice.tests.tools import set_fiscalyear_invoice_sequences
    from trytond.modules.company.tests.tools import create_company, get_company
    from trytond.modules.currency.tests.tools import get_currency

    create_company(currency=get_currency("EUR"))
    get_currency("USD")
    company = get_company()
    create_chart(company)
    today = datetime.date.today()
    fiscalyear = set_fiscalyear_invoice_sequences(
        create_fiscalyear(company, (today.replace(month=1, day=1), today.replace(month=12, day=31)))
    )
    fiscalyear.click("create_period")
    accounts = get_accounts(company)
    assert accounts["expense"].code == LINE_ACCOUNT, accounts["expense"].code
    Tax = Model.get("account.tax")
    TaxGroup = Model.get("account.tax.group")
    group = TaxGroup(name="Purchase VAT", code="PVAT", kind="purchase")
    group.save()
    for rate, name in TAXES.items():
        tax = Tax(
            name=name,
            description=name,
            type="percentage",
            rate=Decimal(rate) / 100,
            group=group,
            invoice_account=accounts["tax"],
            credit_note_account=accounts["tax"],
        )
        tax.save()
    del cfg


def _serve(conf: str, database: str, port: int, workers: int) -> None:
    """Pre-forked workers serving trytond's WSGI app on one listening socket (``--serve``)."""
    import signal

    os.environ["TRYTOND_CONFIG"] = conf
    os.environ["TRYTOND_DATABASE_NAMES"] = database
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", port))
    listener.listen(128)
    children = []
    for _ in range(workers):
        pid = os.fork()
        if pid == 0:
            from trytond.application import app
            from werkzeug.serving import make_server

            make_server("127.0.0.1", port, app, threaded=True, fd=listener.fileno()).serve_forever()
            os._exit(0)
        children.append(pid)

    def stop(*_: Any) -> None:
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        for pid in children:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)
        os._exit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    os.wait()  # a worker that dies takes the others down: the test sees the server go
    stop()


def main() -> None:
    if sys.argv[1:2] == ["--setup"]:
        _setup(sys.argv[2], sys.argv[3])
        return
    if sys.argv[1:2] == ["--serve"]:
        _serve(sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]))
        return
    import signal

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # atexit stops the server
    server = shared(sys.argv[1] if len(sys.argv) > 1 else "sqlite")
    print(server.settings(), flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        while True:
            time.sleep(3600)


if __name__ == "__main__":
    main()
