"""A throw-away Dovecot IMAP server for tests, plus the ``dovecot`` / ``dovecot_factory`` fixtures.

Each :class:`Dovecot` runs ``/usr/sbin/dovecot -F`` with a private, complete configuration in its
own temporary directory (``/etc/dovecot`` is never read), listening only on 127.0.0.1: one plain
IMAP port (STARTTLS offered) and one implicit-TLS IMAPS port, with a freshly generated
self-signed certificate whose path is :attr:`Dovecot.cafile`. Users log in with passwords from a
passwd-file; optionally XOAUTH2/OAUTHBEARER tokens are checked against an introspection URL.

The directory is not a pytest ``tmp_path``: pytest keeps those under a 0700 root-owned directory,
which the unprivileged ``dovecot`` user that owns the mail processes cannot traverse. The fixtures
copy the Dovecot log into the test's ``tmp_path`` on teardown so it survives for post-mortems.

Other test modules use the fixtures with ``from tests.dovecot import dovecot, dovecot_factory``.
"""

from __future__ import annotations

import atexit
import os
import pwd
import re
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Literal, Protocol, Self

import pytest
from imapclient import IMAPClient
from imapclient.exceptions import IMAPClientError

from tests.conftest import require_service
from tests.daemon_proc import free_port, toml_table

DOVECOT_BIN = Path("/usr/sbin/dovecot")
MAIL_USER = "dovecot"  # owns the mail store and runs the imap processes
LOGIN_USER = "dovenull"  # runs imap-login (Dovecot refuses root there)
DEFAULT_USERS: Mapping[str, str] = {"alice": "secret", "bob": "secret"}
START_TIMEOUT = 10.0

Security = Literal["plain", "starttls", "ssl"]

_APPENDUID = re.compile(rb"\[APPENDUID (\d+) ([0-9:,]+)\]", re.IGNORECASE)
_RUNNING: set[Dovecot] = set()  # stopped at interpreter exit if a caller forgot


@atexit.register
def _stop_leftovers() -> None:
    for server in list(_RUNNING):
        server.cleanup()


def dovecot_available() -> tuple[bool, str]:
    """Tell whether this machine can run the test server, and if not, what to install."""
    if not (DOVECOT_BIN.is_file() and os.access(DOVECOT_BIN, os.X_OK)):
        return False, f"{DOVECOT_BIN} missing: install the Debian package dovecot-imapd"
    for user in (MAIL_USER, LOGIN_USER):
        try:
            pwd.getpwnam(user)
        except KeyError:
            return False, f"system user {user!r} missing: (re)install dovecot-core"
    if shutil.which("openssl") is None:
        return False, "openssl CLI missing (needed for the test certificate): install openssl"
    return True, ""


def _uid_set(text: bytes) -> list[int]:
    """Expand an IMAP uid-set such as ``4:6,9`` into ``[4, 5, 6, 9]``."""
    uids: list[int] = []
    for part in text.split(b","):
        lo, _, hi = part.partition(b":")
        first, last = int(lo), int(hi or lo)
        uids.extend(range(min(first, last), max(first, last) + 1))
    return uids


def _appenduids(response: object) -> list[int]:
    """The UIDs from an APPEND response's ``[APPENDUID validity uids]`` code (UIDPLUS)."""
    if isinstance(response, tuple):  # IMAPClient.multiappend gives imaplib's (typ, data)
        if response[0] != "OK":
            raise AssertionError(f"APPEND failed: {response!r}")
        response = b" ".join(x for x in response[1] if isinstance(x, bytes))
    raw = response.encode() if isinstance(response, str) else response
    if not isinstance(raw, bytes):
        raise AssertionError(f"unexpected APPEND response: {response!r}")
    match = _APPENDUID.search(raw)
    if not match:
        raise AssertionError(f"no APPENDUID in APPEND response: {response!r}")
    return _uid_set(match.group(2))


class _PortTaken(RuntimeError):
    """Dovecot could not bind a port that was free a moment earlier."""


def _busy_children(pgid: int) -> list[int]:
    """Live PIDs in process group ``pgid`` other than its leader and Dovecot's log process."""
    pids = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or int(entry.name) == pgid:
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
            title = Path(entry.path, "cmdline").read_bytes().split(b"\0")[0]
        except OSError:
            continue
        state, _ppid, pgrp = stat.rsplit(")", 1)[1].split()[:3]
        if int(pgrp) == pgid and state not in ("Z", "X") and not title.endswith(b"/log"):
            pids.append(int(entry.name))
    return pids


class Dovecot:
    """One private Dovecot process; start with :meth:`start` (or ``with``), stop with :meth:`stop`.

    The convenience methods (``append``, ``uids``, ...) open a short IMAP session as the given
    user, so tests can arrange and inspect mailboxes without going through the code under test.
    """

    host = "127.0.0.1"

    def __init__(
        self,
        users: Mapping[str, str] | None = None,
        *,
        oauth2_introspection_url: str | None = None,
        imap_capability: str | None = None,
        workdir: Path | None = None,
    ) -> None:
        self.users: dict[str, str] = dict(DEFAULT_USERS if users is None else users)
        for name, password in self.users.items():
            if not name or any(c in name + password for c in ":\n\r"):
                raise ValueError(f"user {name!r}: names and passwords must not contain ':' or EOL")
        self.oauth2_introspection_url = oauth2_introspection_url
        self.imap_capability = imap_capability
        """Replaces the CAPABILITY list after login, e.g. to play a server without MOVE."""
        self._own_workdir = workdir is None
        self.root = Path(workdir or tempfile.mkdtemp(prefix="docrelay-dovecot-"))
        self.imap_port = 0
        self.imaps_port = 0
        self.proc: subprocess.Popen[bytes] | None = None

    # -- paths ----------------------------------------------------------------------------

    @property
    def config_path(self) -> Path:
        """The private dovecot.conf, complete on its own (read it when a test needs to know)."""
        return self.root / "dovecot.conf"

    @property
    def log_path(self) -> Path:
        """Where every Dovecot process logs (logins, auth failures, errors)."""
        return self.root / "dovecot.log"

    @property
    def cafile(self) -> str:
        """The server's self-signed certificate: pass it as ``cafile`` to verify TLS."""
        return str(self.root / "tls" / "cert.pem")

    def home(self, user: str) -> Path:
        """The user's home directory; the Maildir is ``home / "Maildir"``."""
        return self.root / "home" / user

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> Self:
        """Write the private configuration, start Dovecot and wait until it greets on IMAP."""
        if self.proc is not None:
            raise RuntimeError("already started")
        self._prepare()
        for attempt in range(3):
            # A free port can be taken by someone else before Dovecot binds it: retry then.
            self._configure()
            with (self.root / "stdout.log").open("wb") as out:
                self.proc = subprocess.Popen(
                    [str(DOVECOT_BIN), "-F", "-c", str(self.config_path)],
                    cwd=self.root,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,  # own process group: stop() can kill all children
                    env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"},
                )
            _RUNNING.add(self)
            try:
                self._wait_ready()
                return self
            except _PortTaken:
                self.stop()
                if attempt == 2:
                    raise
                self.log_path.unlink(missing_ok=True)
            except BaseException:
                self.stop()
                raise
        raise AssertionError("unreachable")

    def stop(self, timeout: float = 5.0) -> None:
        """Stop Dovecot and every process it started (SIGTERM, then SIGKILL), and reap it.

        SIGTERM goes to the master first so it can shut down cleanly and log it; clients still
        connected keep their processes alive for about a second, so after a short grace the
        whole process group gets SIGTERM. The master then sleeps a fixed second for its log
        process: once only those two are left nothing more can happen, so SIGKILL ends it
        rather than costing every test that second.
        """
        proc, self.proc = self.proc, None
        _RUNNING.discard(self)
        if proc is None:
            return
        try:
            if proc.poll() is None:
                proc.terminate()
                if not self._wait_children(proc, 0.2):
                    with suppress(ProcessLookupError, PermissionError):
                        os.killpg(proc.pid, signal.SIGTERM)
                    self._wait_children(proc, timeout)
        finally:
            with suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            with suppress(subprocess.TimeoutExpired):
                proc.wait(timeout)

    @staticmethod
    def _wait_children(proc: subprocess.Popen[bytes], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while proc.poll() is None:
            if not _busy_children(proc.pid):
                time.sleep(0.02)  # let the log process drain what the others wrote
                return True
            if time.monotonic() > deadline:
                return False
            time.sleep(0.005)
        return True

    def cleanup(self) -> None:
        """Stop the server and delete its directory (only if this object created it)."""
        self.stop()
        if self._own_workdir:
            shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.cleanup()

    def log(self) -> str:
        """Dovecot's own log (and anything it printed), for assertion messages."""
        parts = []
        for path in (self.log_path, self.root / "stdout.log"):
            with suppress(OSError):
                parts.append(path.read_text(errors="replace"))
        return "".join(parts)

    def _prepare(self) -> None:
        mail = pwd.getpwnam(MAIL_USER)
        self.root.mkdir(parents=True, exist_ok=True)
        for parent in self.root.resolve().parents:
            if not parent.stat().st_mode & 0o001:
                raise ValueError(
                    f"{parent} is not traversable by the {MAIL_USER!r} user; Dovecot's mail "
                    "processes could not reach their homes (pytest's tmp_path is such a place)"
                )
        self.root.chmod(0o755)  # the mail user must traverse it to reach its homes
        for sub in ("run", "state", "tls", "home"):
            (self.root / sub).mkdir(exist_ok=True)
        (self.root / "tls").chmod(0o700)
        home = self.root / "home"
        os.chown(home, mail.pw_uid, mail.pw_gid)
        for user in self.users:
            self.home(user).mkdir(exist_ok=True)
            os.chown(self.home(user), mail.pw_uid, mail.pw_gid)
        self._make_certificate()
        # The auth process runs as the internal user (dovecot) and reads these files.
        passwd = self.root / "users.passwd"
        passwd.write_text("".join(f"{u}:{{PLAIN}}{p}::::::\n" for u, p in self.users.items()))
        os.chown(passwd, 0, mail.pw_gid)
        passwd.chmod(0o640)
        if self.oauth2_introspection_url:
            # No tokeninfo_url: with it empty, Dovecot 2.3 POSTs token=... straight to the
            # introspection URL and checks username (must equal the login name) and active.
            oauth2 = self.root / "oauth2.conf.ext"
            oauth2.write_text(
                "introspection_mode = post\n"
                f"introspection_url = {self.oauth2_introspection_url}\n"
                "username_attribute = username\n"
                "active_attribute = active\n"
                "active_value = true\n"
                "timeout_msecs = 5000\n"
            )
            os.chown(oauth2, 0, mail.pw_gid)
            oauth2.chmod(0o640)

    def _configure(self) -> None:
        self.imap_port = free_port()
        self.imaps_port = free_port()
        while self.imaps_port == self.imap_port:
            self.imaps_port = free_port()
        self.config_path.write_text(self._config(pwd.getpwnam(MAIL_USER).pw_uid))

    def _make_certificate(self) -> None:
        """A fresh self-signed EC certificate for localhost/127.0.0.1 (EC keys take ~10 ms)."""
        tls = self.root / "tls"
        subprocess.run(
            [
                "openssl",
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-keyout",
                str(tls / "key.pem"),
                "-out",
                str(tls / "cert.pem"),
                "-days",
                "7",
                "-subj",
                "/CN=localhost",
                "-addext",
                "subjectAltName=DNS:localhost,IP:127.0.0.1",
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,digitalSignature,keyCertSign",
                "-addext",
                "extendedKeyUsage=serverAuth",
            ],
            check=True,
            capture_output=True,
        )

    def _config(self, mail_uid: int) -> str:
        root = self.root
        oauth2_passdb = ""
        # Token mechanisms are offered only when a passdb can check tokens: otherwise Dovecot
        # answers XOAUTH2 with a *temporary* failure ("all password databases were skipped").
        mechanisms = "plain login"
        if self.oauth2_introspection_url:
            mechanisms += " xoauth2 oauthbearer"
            oauth2_passdb = f"""
# Bearer tokens go to the introspection endpoint, never to the passwd-file.
passdb {{
  driver = oauth2
  mechanisms = xoauth2 oauthbearer
  args = {root}/oauth2.conf.ext
}}
"""
        capability = f"imap_capability = {self.imap_capability}" if self.imap_capability else ""
        return f"""# Private test configuration written by tests/dovecot.py: complete on its own.
base_dir = {root}/run
state_dir = {root}/state
log_path = {root}/dovecot.log
instance_name = docrelay-test-{self.imap_port}
protocols = imap
listen = {self.host}
shutdown_clients = yes

# Dovecot refuses to run imap-login as root; mail processes run as the dovecot user.
default_login_user = {LOGIN_USER}
default_internal_user = {MAIL_USER}
first_valid_uid = {mail_uid}

ssl = yes
ssl_cert = <{root}/tls/cert.pem
ssl_key = <{root}/tls/key.pem
disable_plaintext_auth = no
auth_mechanisms = {mechanisms}
auth_verbose = yes
# Failed logins answer within 0.5 s (the auth process flushes failures on a 0.5 s timer)
# instead of 2 s, and repeated failures from 127.0.0.1 get no growing anvil penalty.
auth_failure_delay = 0
auth_cache_size = 0
{capability}

mail_location = maildir:~/Maildir:LAYOUT=fs
mail_fsync = never
namespace inbox {{
  inbox = yes
  separator = /
}}
{oauth2_passdb}
passdb {{
  driver = passwd-file
  mechanisms = plain login
  args = scheme=PLAIN username_format=%u {root}/users.passwd
}}
userdb {{
  driver = static
  args = uid={MAIL_USER} gid={MAIL_USER} home={root}/home/%u
}}

service anvil {{
  unix_listener anvil-auth-penalty {{
    mode = 0
  }}
}}

service imap-login {{
  inet_listener imap {{
    address = {self.host}
    port = {self.imap_port}
  }}
  inet_listener imaps {{
    address = {self.host}
    port = {self.imaps_port}
    ssl = yes
  }}
}}
"""

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        last_error: object = None
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                log = self.log()
                error = _PortTaken if "Address already in use" in log else RuntimeError
                raise error(f"dovecot exited with {self.proc.returncode} during start-up:\n{log}")
            try:
                with socket.create_connection((self.host, self.imap_port), timeout=1) as sock:
                    greeting = sock.recv(1024)
                if greeting.startswith(b"* OK"):
                    return
                last_error = greeting
            except OSError as exc:
                last_error = exc
            time.sleep(0.01)
        raise RuntimeError(
            f"dovecot did not greet on {self.host}:{self.imap_port} within {START_TIMEOUT}s "
            f"(last: {last_error!r}); log:\n{self.log()}"
        )

    # -- clients --------------------------------------------------------------------------

    def ssl_context(self) -> ssl.SSLContext:
        """A client context that trusts exactly this server's certificate."""
        return ssl.create_default_context(cafile=self.cafile)

    def client(self, user: str | None = None, *, security: Security = "starttls") -> IMAPClient:
        """An IMAPClient on the chosen transport, logged in as ``user`` if given; caller closes."""
        if security == "ssl":
            client = IMAPClient(
                self.host, self.imaps_port, ssl=True, ssl_context=self.ssl_context(), timeout=10
            )
        else:
            client = IMAPClient(self.host, self.imap_port, ssl=False, timeout=10)
            if security == "starttls":
                client.starttls(self.ssl_context())
        if user is not None:
            try:
                client.login(user, self.users[user])
            except BaseException:
                client.shutdown()
                raise
        return client

    @contextmanager
    def session(self, user: str) -> Iterator[IMAPClient]:
        """A logged-in session over plain loopback IMAP (fast), logged out afterwards."""
        client = self.client(user, security="plain")
        try:
            yield client
        finally:
            with suppress(IMAPClientError, OSError):
                client.logout()
            with suppress(OSError):
                client.shutdown()

    # -- mailbox helpers ------------------------------------------------------------------

    @staticmethod
    def _ensure_folder(client: IMAPClient, folder: str) -> None:
        if folder.upper() != "INBOX" and not client.folder_exists(folder):
            client.create_folder(folder)

    def append(
        self,
        user: str,
        folder: str,
        raw: bytes,
        flags: Iterable[str] = (),
        create: bool = True,
    ) -> int:
        """Store one message and return its UID, so a test can refer to exactly that message."""
        with self.session(user) as client:
            if create:
                self._ensure_folder(client, folder)
            response = client.append(folder, raw, flags=tuple(flags))
        return _appenduids(response)[0]

    def append_many(
        self,
        user: str,
        folder: str,
        messages: list[bytes],
        flags: Iterable[str] = (),
        create: bool = True,
        batch: int = 500,
    ) -> list[int]:
        """Store many messages over one connection (MULTIAPPEND batches); return their UIDs."""
        flag_list = tuple(flags)
        uids: list[int] = []
        with self.session(user) as client:
            if create:
                self._ensure_folder(client, folder)
            for start in range(0, len(messages), batch):
                chunk = messages[start : start + batch]
                items = [{"msg": m, "flags": flag_list} if flag_list else m for m in chunk]
                uids.extend(_appenduids(client.multiappend(folder, items)))
        if len(uids) != len(messages):
            raise AssertionError(f"stored {len(messages)} messages but got {len(uids)} UIDs")
        return uids

    def create_folder(self, user: str, folder: str) -> None:
        """Create a mailbox (parents are created as needed by Dovecot)."""
        with self.session(user) as client:
            client.create_folder(folder)

    def delete_folder(self, user: str, folder: str) -> None:
        """Delete a mailbox with everything in it."""
        with self.session(user) as client:
            client.delete_folder(folder)

    def list_folders(self, user: str) -> list[str]:
        """Names of all the user's mailboxes, INBOX included."""
        with self.session(user) as client:
            return sorted(name for _flags, _sep, name in client.list_folders())

    def uids(self, user: str, folder: str = "INBOX") -> list[int]:
        """All UIDs in a folder, ascending (expunged messages are gone)."""
        with self.session(user) as client:
            client.select_folder(folder, readonly=True)
            return sorted(client.search("ALL"))

    def flags(self, user: str, folder: str = "INBOX") -> dict[int, set[str]]:
        """UID -> flags as str (e.g. ``\\Seen``), read-only; session-only ``\\Recent`` left out."""
        with self.session(user) as client:
            client.select_folder(folder, readonly=True)
            fetched = client.get_flags(client.search("ALL"))
        return {
            uid: {f.decode() if isinstance(f, bytes) else f for f in flags} - {"\\Recent"}
            for uid, flags in fetched.items()
        }

    def fetch_headers(
        self, user: str, folder: str = "INBOX", uids: Iterable[int] | None = None
    ) -> dict[int, bytes]:
        """UID -> raw header block, fetched with PEEK so ``\\Seen`` is left alone."""
        with self.session(user) as client:
            client.select_folder(folder, readonly=True)
            wanted = list(uids) if uids is not None else client.search("ALL")
            if not wanted:
                return {}
            fetched = client.fetch(wanted, ["BODY.PEEK[HEADER]"])
        return {uid: data[b"BODY[HEADER]"] for uid, data in fetched.items()}

    def source_toml(self, name: str = "mail", user: str = "alice", **keys: object) -> str:
        """A ``[[sources.mailbox]]`` block for the daemon's config: STARTTLS to this server,
        verified with its certificate, logged in with the user's password; ``keys`` add to or
        override it (numbers and strings; None leaves a key out)."""
        values: dict[str, object] = {
            "name": name,
            "host": self.host,
            "port": self.imap_port,
            "tls": "starttls",
            "ca_file": self.cafile,
            "username": user,
            "password": self.users[user],
            "poll_interval": 1,
            **keys,
        }
        return toml_table("[[sources.mailbox]]", values)

    def fetch_raw(self, user: str, folder: str, uid: int) -> bytes:
        """The full message as stored, fetched with PEEK."""
        with self.session(user) as client:
            client.select_folder(folder, readonly=True)
            fetched = client.fetch([uid], ["BODY.PEEK[]"])
        return fetched[uid][b"BODY[]"]

    def uidvalidity(self, user: str, folder: str = "INBOX") -> int:
        """The folder's UIDVALIDITY; it changes when a folder is deleted and re-created."""
        with self.session(user) as client:
            return int(client.folder_status(folder, [b"UIDVALIDITY"])[b"UIDVALIDITY"])


# -- pytest fixtures ------------------------------------------------------------------------


class DovecotFactory(Protocol):
    """What ``dovecot_factory`` yields: call it to get another started server."""

    def __call__(
        self,
        users: Mapping[str, str] | None = None,
        *,
        oauth2_introspection_url: str | None = None,
        imap_capability: str | None = None,
    ) -> Dovecot: ...


@contextmanager
def _servers(tmp_path: Path) -> Iterator[DovecotFactory]:
    """Start servers on demand; stop all of them (and keep their logs) however the test ends."""
    ok, reason = dovecot_available()
    require_service(ok, reason)
    started: list[Dovecot] = []

    def make(
        users: Mapping[str, str] | None = None,
        *,
        oauth2_introspection_url: str | None = None,
        imap_capability: str | None = None,
    ) -> Dovecot:
        server = Dovecot(
            users,
            oauth2_introspection_url=oauth2_introspection_url,
            imap_capability=imap_capability,
        )
        started.append(server)
        return server.start()

    try:
        yield make
    finally:
        for index, server in enumerate(started):
            server.stop()
            with suppress(OSError):
                (tmp_path / f"dovecot-{index}.log").write_text(server.log())
            server.cleanup()


@pytest.fixture
def dovecot(tmp_path: Path) -> Iterator[Dovecot]:
    """A fresh Dovecot with the default users (alice, bob; password ``secret``) for one test."""
    with _servers(tmp_path) as make:
        yield make()


@pytest.fixture
def dovecot_factory(tmp_path: Path) -> Iterator[DovecotFactory]:
    """``make(users=None, *, oauth2_introspection_url=None, imap_capability=None) -> Dovecot``,
    started; all stopped."""
    with _servers(tmp_path) as make:
        yield make
