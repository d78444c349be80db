"""A throw-away OpenSSH server for the SFTP destination's tests, plus the ``sshd`` fixtures.

Each :class:`Sshd` runs ``/usr/sbin/sshd -D -e -f CONFIG`` with a private, complete
configuration in its own temporary directory (``/etc/ssh`` is never read), listening only on
127.0.0.1 on a free port: its own freshly made host key, public-key login for a generated
client key (``AuthorizedKeysFile`` is a file of the server's directory), no PAM, and
``internal-sftp`` as the SFTP subsystem. Password login is on too, but no test user has a
password (a refused password is what a test can check).

Logins are as the user running the tests (root here and in CI): the files a test's export
writes land in the test's own directories, owned by it, so the test reads them directly.

Other test modules use the fixtures with ``from tests.sshd import sshd, sshd_factory``.
"""

from __future__ import annotations

import atexit
import getpass
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Self

import pytest

from tests.conftest import require_service
from tests.daemon_proc import free_port

SSHD_BIN = Path("/usr/sbin/sshd")
PRIVSEP_DIR = Path("/run/sshd")
"""sshd's empty chroot for the unprivileged pre-authentication child: must exist."""
START_TIMEOUT = 10.0

_RUNNING: set[Sshd] = set()  # stopped at interpreter exit if a caller forgot


@atexit.register
def _stop_leftovers() -> None:
    for server in list(_RUNNING):
        server.cleanup()


def sshd_available() -> tuple[bool, str]:
    """Tell whether this machine can run the test server, and if not, what to install."""
    if not (SSHD_BIN.is_file() and os.access(SSHD_BIN, os.X_OK)):
        return False, f"{SSHD_BIN} missing: install the Debian package openssh-server"
    if shutil.which("ssh-keygen") is None:
        return False, "ssh-keygen missing: install the Debian package openssh-client"
    return True, ""


def keygen(path: Path, *, passphrase: str = "", kind: str = "ed25519") -> Path:
    """A new key pair at ``path`` (private) and ``path.pub``; returns the private key's path."""
    subprocess.run(
        ["ssh-keygen", "-q", "-t", kind, "-N", passphrase, "-C", "docrelay-test", "-f", str(path)],
        check=True,
        capture_output=True,
    )
    return path


def _descendants(pid: int) -> list[int]:
    """Every live process below ``pid`` (sshd's per-connection children and theirs)."""
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
        except OSError:
            continue
        state, ppid = stat.rsplit(")", 1)[1].split()[:2]
        if state not in ("Z", "X"):
            children.setdefault(int(ppid), []).append(int(entry.name))
    found: list[int] = []
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


class _PortTaken(RuntimeError):
    """sshd could not bind a port that was free a moment earlier."""


class Sshd:
    """One private sshd; start with :meth:`start` (or ``with``), stop with :meth:`stop`."""

    host = "127.0.0.1"

    def __init__(self, workdir: Path | None = None, *, read_only: bool = False) -> None:
        self.read_only = read_only
        """The SFTP server refuses every write (``internal-sftp -R``): permission denied."""
        self._own_workdir = workdir is None
        self.root = Path(workdir or tempfile.mkdtemp(prefix="docrelay-sshd-"))
        self.port = 0
        self.user = getpass.getuser()
        self.proc: subprocess.Popen[bytes] | None = None

    # -- paths ----------------------------------------------------------------------------

    @property
    def config_path(self) -> Path:
        return self.root / "sshd_config"

    @property
    def log_path(self) -> Path:
        """What sshd printed (``-e``: its log goes to stderr): logins, refusals, errors."""
        return self.root / "sshd.log"

    @property
    def host_key_path(self) -> Path:
        return self.root / "host_ed25519"

    @property
    def client_key_path(self) -> Path:
        """A private key the server accepts (its public half is in the authorized keys)."""
        return self.root / "client_ed25519"

    @property
    def authorized_keys(self) -> Path:
        return self.root / "authorized_keys"

    @property
    def known_hosts_path(self) -> Path:
        """A known_hosts file with this server's host key, as ``ssh-keyscan`` would write it."""
        return self.root / "known_hosts"

    # -- what a client needs ----------------------------------------------------------------

    def host_key_line(self) -> str:
        """The server's public host key, ``ssh-ed25519 AAAA… comment``."""
        return (self.host_key_path.with_suffix(".pub")).read_text().strip()

    def host_key_fingerprint(self) -> str:
        """``SHA256:…`` as ``ssh-keygen -l`` and ``ssh`` print it."""
        out = subprocess.run(
            ["ssh-keygen", "-l", "-f", str(self.host_key_path.with_suffix(".pub"))],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        return out.split()[1]

    def client_key(self) -> str:
        """The accepted private key's text (what ``private_key_file`` would hold)."""
        return self.client_key_path.read_text()

    def authorize(self, public_key_path: Path) -> None:
        """Let another key in too."""
        with self.authorized_keys.open("a") as out:
            out.write(public_key_path.read_text())

    def settings(self, path: Path | str, **overrides: object) -> dict[str, object]:
        """Working SFTP destination settings for this server, writing to ``path``."""
        return {
            "kind": "sftp",
            "host": self.host,
            "port": self.port,
            "username": self.user,
            "private_key": self.client_key(),
            "known_hosts": str(self.known_hosts_path),
            "path": str(path),
            "connect_timeout": 5,
            **overrides,
        }

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> Self:
        """Make the keys (once), write the configuration, start sshd, wait for its banner."""
        if self.proc is not None:
            raise RuntimeError("already started")
        self._prepare()
        for attempt in range(3):
            if attempt or not self.port:
                self.port = free_port()
            self.config_path.write_text(self._config())
            self.known_hosts_path.write_text(f"[{self.host}]:{self.port} {self.host_key_line()}\n")
            with self.log_path.open("ab") as out:
                self.proc = subprocess.Popen(
                    [str(SSHD_BIN), "-D", "-e", "-f", str(self.config_path)],
                    cwd=self.root,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,  # own process group: stop() ends its children too
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
            except BaseException:
                self.stop()
                raise
        raise AssertionError("unreachable")

    def restart(self) -> None:
        """Stop and start again on the same port with the same keys: every connection drops."""
        self.stop()
        self.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop sshd and every connection's process (SIGTERM, then SIGKILL), and reap it."""
        proc, self.proc = self.proc, None
        _RUNNING.discard(self)
        if proc is None:
            return
        children = _descendants(proc.pid)
        try:
            if proc.poll() is None:
                proc.terminate()
                with suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout)
        finally:
            for pid in children:
                with suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
            with suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            with suppress(subprocess.TimeoutExpired):
                proc.wait(timeout)

    def drop_connections(self) -> int:
        """Kill every connection's process (the listener stays): clients see the connection
        drop, as after a network failure or a server-side timeout. Returns how many died."""
        assert self.proc is not None
        pids = _descendants(self.proc.pid)
        for pid in pids:
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 5
        while _descendants(self.proc.pid) and time.monotonic() < deadline:
            time.sleep(0.01)
        return len(pids)

    def connections(self) -> int:
        """Processes serving connections now (sshd has one or two per connection)."""
        return len(_descendants(self.proc.pid)) if self.proc else 0

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
        with suppress(OSError):
            return self.log_path.read_text(errors="replace")
        return ""

    def _prepare(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.root.chmod(0o700)  # it holds private keys
        PRIVSEP_DIR.mkdir(mode=0o755, exist_ok=True)
        if not self.host_key_path.exists():
            keygen(self.host_key_path)
        if not self.client_key_path.exists():
            keygen(self.client_key_path)
            self.authorized_keys.write_text(self.client_key_path.with_suffix(".pub").read_text())

    def _config(self) -> str:
        root = self.root
        return f"""# Private test configuration written by tests/sshd.py: complete on its own.
ListenAddress {self.host}:{self.port}
HostKey {root}/host_ed25519
PidFile {root}/sshd.pid
AuthorizedKeysFile {root}/authorized_keys
UsePAM no
StrictModes no
PermitRootLogin yes
PubkeyAuthentication yes
PasswordAuthentication yes
KbdInteractiveAuthentication no
PermitEmptyPasswords no
AllowTcpForwarding no
X11Forwarding no
PrintMotd no
UseDNS no
LogLevel VERBOSE
MaxStartups 50
MaxAuthTries 6
Subsystem sftp internal-sftp{" -R" if self.read_only else ""}
"""

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        last_error: object = None
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                log = self.log()
                error = _PortTaken if "Address already in use" in log else RuntimeError
                raise error(f"sshd exited with {self.proc.returncode} during start-up:\n{log}")
            try:
                with socket.create_connection((self.host, self.port), timeout=1) as sock:
                    banner = sock.recv(256)
                if banner.startswith(b"SSH-2.0-"):
                    return
                last_error = banner
            except OSError as exc:
                last_error = exc
            time.sleep(0.01)
        raise RuntimeError(
            f"sshd did not answer on {self.host}:{self.port} within {START_TIMEOUT}s "
            f"(last: {last_error!r}); log:\n{self.log()}"
        )


# -- pytest fixtures ------------------------------------------------------------------------


@contextmanager
def sshd_servers(tmp_path: Path) -> Iterator[Callable[..., Sshd]]:
    """Start servers on demand; stop all of them (and keep their logs) however the test ends."""
    ok, reason = sshd_available()
    require_service(ok, reason)
    started: list[Sshd] = []

    def make(*, read_only: bool = False) -> Sshd:
        server = Sshd(read_only=read_only)
        started.append(server)
        return server.start()

    try:
        yield make
    finally:
        for index, server in enumerate(started):
            server.stop()
            with suppress(OSError):
                (tmp_path / f"sshd-{index}.log").write_text(server.log())
            server.cleanup()


@pytest.fixture
def sshd(tmp_path: Path) -> Iterator[Sshd]:
    """A fresh sshd for one test (start-up takes some 50 ms)."""
    with sshd_servers(tmp_path) as make:
        yield make()


@pytest.fixture
def sshd_factory(tmp_path: Path) -> Iterator[Callable[..., Sshd]]:
    """``make(*, read_only=False) -> Sshd``, started; all stopped at the end of the test."""
    with sshd_servers(tmp_path) as make:
        yield make
