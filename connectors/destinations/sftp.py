"""SFTP destination: the folder destination's export files, uploaded to a directory over SSH.

The files and their content are the folder destination's (``connectors.destinations.files``:
``<document_id>.json``, ``.csv`` and ``.lines.csv``, ``.xml``), so a repeat after a crash overwrites
the same files instead of making second ones, and a later version replaces them.

Each file is uploaded under a temporary name in the target directory (``.<name>.tmp-<random>``,
hidden from a reader that skips dot files) and renamed into place, so a reader never sees half a
file. Where the server offers OpenSSH's ``posix-rename@openssh.com`` (OpenSSH and most servers
built on it do) the rename replaces an existing file atomically. Plain SFTP (version 3) refuses to
rename onto an existing file: on a server without the extension the old file is removed first
and the new one renamed after it, so for a moment neither is there (never a partial one). Where
the server offers ``fsync@openssh.com`` the upload is flushed to its disk before the rename. A
connection lost in the middle of an upload can leave a temporary file behind; the retry uploads
under a new one.

The server's host key is always verified, against ``known_hosts`` or ``host_key``; there is no
trust-on-first-use. Errors, by what they need:

* refused key or password, an unknown or changed host key: ``AuthFailed``, the destination
  pauses until a person acts (the message says how to get the key: ``ssh-keyscan``);
* permission denied on the remote directory or files, a remote directory that does not exist
  (without ``create_dirs``) or is no directory: ``AuthFailed`` too. It concerns every export, not
  this document, and only a person can fix it (grant the account the right, create the
  directory); failing the documents one by one (``TerminalError``) would leave each to be
  replayed by hand afterwards;
* connection refused, timeouts, a dropped connection, any other refusal by the server (a full
  disk): ``TransientError``, retried.

The engine delivers from a pool of threads; paramiko's ``SFTPClient`` must not be shared between
threads, so every delivery takes a connection of its own from a small pool (made on demand, handed
back after use, at most ``concurrency`` kept idle). A pooled connection that the server or the
network dropped while it was idle is replaced, and the delivery carried out once more on a fresh
connection within the same call.
"""

from __future__ import annotations

import base64
import binascii
import io
import posixpath
import secrets
import socket
import stat
import struct
import threading
from collections.abc import Callable
from contextlib import suppress
from pathlib import Path
from typing import Any, Literal, Self, TypeVar

import paramiko
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from paramiko.sftp import CMD_EXTENDED, CMD_INIT, CMD_VERSION, SFTPError
from pydantic import ConfigDict, Field, SecretStr, field_validator, model_validator

from connectors.base import (
    ConnectorContext,
    DeliveryReceipt,
    Destination,
    DestinationSettings,
    ExportPayload,
    SettingsConfig,
)
from connectors.destinations.files import EXPORT_SUFFIXES, ExportFormat, UblProfile, export_files
from connectors.errors import AuthFailed, DocrelayError, TerminalError, TransientError

POSIX_RENAME = "posix-rename@openssh.com"
FSYNC = "fsync@openssh.com"
IDLE_SECONDS = 120.0
"""A pooled connection idle longer than this is closed rather than reused: firewalls and NAT
forget quiet connections, and a dead one costs a whole ``timeout`` to notice."""
KEEPALIVE_SECONDS = 30
DEFAULT_POOL = 4
"""Idle connections kept when ``concurrency`` is unset."""

T = TypeVar("T")


# --------------------------------------------------------------------------- keys


def load_private_key(text: str, passphrase: str | None) -> paramiko.PKey:
    """The client key from its OpenSSH or PEM text: Ed25519, ECDSA or RSA.

    Raises ``ValueError`` with a message for a person (wrong or missing passphrase, not a key)."""
    data = text.strip().encode() + b"\n"
    secret = passphrase.encode() if passphrase else None
    try:
        try:
            loaded = serialization.load_ssh_private_key(data, password=secret)
        except ValueError as first:
            if b"OPENSSH PRIVATE KEY" in data:
                raise first
            loaded = serialization.load_pem_private_key(data, password=secret)
    except TypeError as exc:  # cryptography: a passphrase given for a plain key or none for one
        if secret is None:
            raise ValueError(
                "the private key is encrypted: give passphrase (or passphrase_file)"
            ) from None
        raise ValueError(f"passphrase given but {exc}") from None
    except ValueError as exc:
        reason = str(exc).lower()
        if secret is not None and any(w in reason for w in ("password", "decrypt", "checksum")):
            raise ValueError("the passphrase does not decrypt the private key") from None
        raise ValueError(
            "not a private key (OpenSSH `-----BEGIN OPENSSH PRIVATE KEY-----` or PEM text of an "
            "Ed25519, ECDSA or RSA key)"
        ) from None
    classes: list[tuple[type, type[paramiko.PKey]]] = [
        (ed25519.Ed25519PrivateKey, paramiko.Ed25519Key),
        (ec.EllipticCurvePrivateKey, paramiko.ECDSAKey),
        (rsa.RSAPrivateKey, paramiko.RSAKey),
    ]
    for crypto_type, key_class in classes:
        if isinstance(loaded, crypto_type):
            return key_class.from_private_key(io.StringIO(data.decode()), password=passphrase)
    raise ValueError(f"unsupported key type {type(loaded).__name__} (use Ed25519, ECDSA or RSA)")


KEY_TYPES = (
    "ssh-ed25519",
    "ssh-rsa",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
)


def parse_host_key(text: str) -> paramiko.PKey | str:
    """A pinned host key: a public key line (``ssh-ed25519 AAAA… [comment]``, also with the
    host name first as in known_hosts or ``ssh-keyscan``'s output), or its ``SHA256:…``
    fingerprint (as ``ssh`` and ``ssh-keygen -l`` print it). Raises ``ValueError``."""
    value = text.strip()
    if value.startswith("SHA256:"):
        digest = value.removeprefix("SHA256:")
        try:
            raw = base64.b64decode(digest + "=" * (-len(digest) % 4), validate=True)
        except binascii.Error:
            raw = b""
        if len(raw) != 32:
            raise ValueError(f"{value!r} is not a SHA256 fingerprint (SHA256: and 43 base64 chars)")
        return "SHA256:" + digest.rstrip("=")
    words = value.split()
    for index, word in enumerate(words[:-1]):
        if word in KEY_TYPES:
            try:
                blob = base64.b64decode(words[index + 1], validate=True)
                return paramiko.PKey.from_type_string(word, blob)
            except (binascii.Error, paramiko.SSHException, ValueError) as exc:
                raise ValueError(f"the {word} key in it does not decode: {exc}") from None
    raise ValueError(
        "must be the server's public key (`ssh-ed25519 AAAA…`, as in its "
        "/etc/ssh/ssh_host_ed25519_key.pub or from `ssh-keyscan`) or its SHA256:… fingerprint"
    )


def describe(key: paramiko.PKey) -> str:
    """``ssh-ed25519 SHA256:…``: what a person compares with ``ssh-keygen -l``'s output."""
    return f"{key.get_name()} {key.fingerprint}"


# --------------------------------------------------------------------------- settings


class SftpDestinationSettings(DestinationSettings):
    # A validation error must not echo its input: it may be the key or the password.
    model_config = ConfigDict(**SettingsConfig, hide_input_in_errors=True)

    kind: Literal["sftp"] = "sftp"
    """Selects the SFTP destination: export files uploaded to a directory over SSH."""
    host: str
    """The SSH server's name or address."""
    port: int = Field(22, ge=1, le=65535)
    """The SSH server's port."""
    username: str
    """The account to log in as."""
    private_key: SecretStr | None = None
    """The client's private key (OpenSSH or PEM text; Ed25519, ECDSA or RSA), normally given as
    ``private_key_file`` (a path; relative ones are looked up in systemd's
    ``$CREDENTIALS_DIRECTORY`` first). Its public half goes into the account's
    ``authorized_keys`` on the server."""
    passphrase: SecretStr | None = None
    """The passphrase of an encrypted private key; or ``passphrase_file``."""
    password: SecretStr | None = None
    """The account's password, instead of a key (or as a second factor where the server wants
    both); or ``password_file``."""
    known_hosts: Path | None = None
    """A known_hosts file holding the server's host key (make it with
    ``ssh-keyscan -p PORT HOST > FILE`` and compare the fingerprint with the server's
    administrator). This or ``host_key`` is required: an unknown host key is refused."""
    host_key: str | None = None
    """The server's host key itself: its public key line (``ssh-ed25519 AAAA…``) or its
    ``SHA256:…`` fingerprint; instead of, or beside, ``known_hosts``."""
    path: str
    """The remote directory the files go to; a relative path starts at the account's home
    directory."""
    format: ExportFormat = "json"
    """``json``: one ``<document_id>.json``; ``csv``: ``<document_id>.csv`` (one row of fields)
    plus ``<document_id>.lines.csv``; ``ubl``: ``<document_id>.xml`` (a UBL 2.1 XRechnung
    invoice); ``both``: json and csv; or a list of these (``["json", "ubl"]``). The folder
    destination's files."""
    indent: int | None = Field(2, ge=0)
    """JSON and XML indentation; none for one line per file."""
    ubl_profile: UblProfile = "xrechnung"
    """What a UBL invoice claims to follow: ``xrechnung`` (XRechnung 3.0, for German
    receivers) or ``peppol`` (Peppol BIS Billing 3.0); both are EN 16931."""
    create_dirs: bool = False
    """Create ``path`` (and its parents) when missing. Off: a missing directory pauses the
    destination with a message, as a mistyped path should not quietly make a new one."""
    file_mode: int | None = Field(None, ge=0, le=0o777)
    """Permissions of the files written (TOML takes ``0o640``); unset: the server's default
    for new files (0666 less its umask)."""
    connect_timeout: float = Field(10.0, gt=0)
    """Seconds to connect, read the server's greeting and log in before the attempt counts as
    failed (and is retried)."""
    timeout: float = Field(30.0, gt=0)
    """Seconds one SFTP request may wait for the server's answer; longer, and the connection
    counts as lost."""
    concurrency: int | None = Field(None, ge=1)
    """Uploads to this server at the same time (one connection each); unset:
    ``pipeline.delivery_concurrency``."""

    @field_validator("host")
    @classmethod
    def _host(cls, value: str) -> str:
        value = value.strip()
        if not value or any(c.isspace() for c in value) or "/" in value:
            raise ValueError("must be a host name or address (no scheme, path or spaces)")
        return value

    @field_validator("username")
    @classmethod
    def _username(cls, value: str) -> str:
        if not value.strip() or any(c in value for c in "\0\r\n"):
            raise ValueError("must not be empty")
        return value.strip()

    @field_validator("path")
    @classmethod
    def _path(cls, value: str) -> str:
        if not value.strip() or "\0" in value:
            raise ValueError("must name a remote directory")
        return posixpath.normpath(value.strip())

    @field_validator("host_key")
    @classmethod
    def _host_key(cls, value: str | None) -> str | None:
        if value is not None:
            parse_host_key(value)
        return value

    @model_validator(mode="after")
    def _credentials(self) -> Self:
        if self.private_key is None and self.password is None:
            raise ValueError(
                "give private_key_file (or private_key) or password (or password_file) to log in"
            )
        if self.known_hosts is None and self.host_key is None:
            raise ValueError(
                "give known_hosts (a file, e.g. made with `ssh-keyscan -p "
                f"{self.port} {self.host} > known_hosts`) or host_key (the server's public key or "
                "its SHA256: fingerprint): docrelay never trusts an unknown host key"
            )
        if self.private_key is not None:
            phrase = self.passphrase.get_secret_value() if self.passphrase else None
            try:
                load_private_key(self.private_key.get_secret_value(), phrase)
            except ValueError as exc:
                raise ValueError(f"private_key: {exc}") from None
        elif self.passphrase is not None:
            raise ValueError("passphrase is for a private key, and none is given")
        return self


# --------------------------------------------------------------------------- connections


class _SFTPClient(paramiko.SFTPClient):
    """paramiko's client, also keeping the extensions the server announces (paramiko reads
    and drops them), so the destination knows whether ``posix-rename`` is there."""

    extensions: dict[str, bytes]

    def _send_version(self) -> int:
        # As paramiko's BaseSFTP._send_version, plus reading the extension pairs behind the
        # version number (SFTP draft 02, section 4: string name, string data, …).
        message = paramiko.Message()
        message.add_int(3)
        self._send_packet(CMD_INIT, message)
        kind, data = self._read_packet()
        if kind != CMD_VERSION:
            raise SFTPError("Incompatible sftp protocol")
        self.extensions = _extension_pairs(data[4:])
        return struct.unpack(">I", data[:4])[0]


def _extension_pairs(data: bytes) -> dict[str, bytes]:
    found: dict[str, bytes] = {}
    offset = 0
    try:
        while offset < len(data):
            items = []
            for _ in range(2):
                (length,) = struct.unpack_from(">I", data, offset)
                offset += 4
                items.append(data[offset : offset + length])
                offset += length
            found[items[0].decode("utf-8", "replace")] = items[1]
    except struct.error:
        pass  # a malformed tail: keep what was read
    return found


class _Connection:
    """One SSH connection with its SFTP session: used by one thread at a time."""

    def __init__(self, client: paramiko.SSHClient, sftp: _SFTPClient, now: float) -> None:
        self.client = client
        self.sftp = sftp
        self.last_used = now
        self.reused = False
        self.dir_ready = False
        """The remote directory was found (or made) on this connection."""

    def alive(self) -> bool:
        transport = self.client.get_transport()
        channel = self.sftp.get_channel()
        return bool(
            transport and transport.is_active() and channel is not None and not channel.closed
        )

    def close(self) -> None:
        with suppress(Exception):
            self.sftp.close()
        with suppress(Exception):
            self.client.close()


DROPPED = (EOFError, TimeoutError, socket.timeout, paramiko.SSHException, ConnectionError)
"""What a lost connection raises in the middle of an SFTP request."""


class _Verifier(paramiko.MissingHostKeyPolicy):
    """Called for a host key that known_hosts and host_key's public key do not hold: accepts
    only the pinned fingerprint, refuses everything else with what to do about it."""

    def __init__(self, destination: SftpDestination) -> None:
        self.destination = destination

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: Any) -> None:
        pinned = self.destination.pinned
        if isinstance(pinned, str):
            if key.fingerprint == pinned:
                return
            raise AuthFailed(self.destination.changed_key_message(key, pinned))
        raise AuthFailed(self.destination.unknown_key_message(key))


# --------------------------------------------------------------------------- destination


class SftpDestination(Destination):
    kind = "sftp"
    settings_model = SftpDestinationSettings
    settings: SftpDestinationSettings

    def __init__(self, settings: SftpDestinationSettings, context: ConnectorContext) -> None:
        super().__init__(settings, context)
        self.pinned: paramiko.PKey | str | None = (
            parse_host_key(settings.host_key) if settings.host_key else None
        )
        phrase = settings.passphrase.get_secret_value() if settings.passphrase else None
        self._key = (
            load_private_key(settings.private_key.get_secret_value(), phrase)
            if settings.private_key
            else None
        )
        self._where = f"{settings.username}@{settings.host}:{settings.port}"
        self._lock = threading.Lock()
        self._idle: list[_Connection] = []
        self._closed = False
        self._max_idle = settings.concurrency or DEFAULT_POOL

    # -- the contract -----------------------------------------------------------------------

    def deliver(self, payload: ExportPayload, idempotency_key: str) -> DeliveryReceipt:
        """Upload every file of the export (temp name, then rename); the remote paths are the
        downstream reference, the same on every repeat."""
        files = export_files(
            payload,
            idempotency_key,
            self.settings.format,
            indent=self.settings.indent,
            ubl_profile=self.settings.ubl_profile,
        )
        self._run(lambda conn: self._upload(conn, files), "upload")
        paths = [self._remote(name) for name, _ in files]
        return DeliveryReceipt(ref=",".join(paths), data={"host": self.settings.host})

    def probe(self) -> list[str]:
        """Logs in and looks at the directory (stat, list); writes nothing."""
        return self._run(self._look, "look at the directory")

    def close(self) -> None:
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()

    # -- messages -----------------------------------------------------------------------

    def _keyscan(self) -> str:
        known = self.settings.known_hosts or "known_hosts"
        port = f"-p {self.settings.port} " if self.settings.port != 22 else ""
        return f"ssh-keyscan {port}{self.settings.host} >> {known}"

    def unknown_key_message(self, key: paramiko.PKey) -> str:
        """What a person reads when the server's key is not known: where to get and put it."""
        where = f"{self.settings.host}:{self.settings.port}"
        known = f"in {self.settings.known_hosts}" if self.settings.known_hosts else "known"
        return (
            f"the SSH host key of {where} is not {known} (the server offered {describe(key)}); "
            "docrelay never trusts an unknown host key. Check that fingerprint with the "
            f"server's administrator (`ssh-keygen -lf` of its host key), then add the key with "
            f'`{self._keyscan()}` or set host_key = "{key.fingerprint}"'
        )

    def changed_key_message(self, key: paramiko.PKey, expected: paramiko.PKey | str) -> str:
        """What a person reads when the server's key is not the one configured."""
        wanted = expected if isinstance(expected, str) else describe(expected)
        return (
            f"the SSH host key of {self.settings.host}:{self.settings.port} has CHANGED: the "
            f"server offered {describe(key)}, the configuration expects {wanted}. Someone may "
            "be intercepting the connection, or the server was re-installed: ask its "
            "administrator; if the new key is right, replace the old one (known_hosts: "
            f"`ssh-keygen -R` then `{self._keyscan()}`; or host_key)"
        )

    # -- connections --------------------------------------------------------------------

    def _connect(self) -> _Connection:
        s = self.settings
        client = paramiko.SSHClient()
        client.set_missing_host_key_policy(_Verifier(self))
        host_keys = client.get_host_keys()
        if s.known_hosts is not None:
            try:
                host_keys.load(str(s.known_hosts))
            except OSError as exc:
                raise AuthFailed(
                    f"cannot read known_hosts {s.known_hosts}: {exc.strerror or exc} (make it "
                    f"with `{self._keyscan()}`)"
                ) from None
        if isinstance(self.pinned, paramiko.PKey):
            name = s.host if s.port == 22 else f"[{s.host}]:{s.port}"
            host_keys.add(name, self.pinned.get_name(), self.pinned)
        try:
            client.connect(
                s.host,
                s.port,
                username=s.username,
                pkey=self._key,
                password=s.password.get_secret_value() if s.password else None,
                timeout=s.connect_timeout,
                banner_timeout=s.connect_timeout,
                auth_timeout=s.connect_timeout,
                channel_timeout=s.connect_timeout,
                look_for_keys=False,
                allow_agent=False,
            )
            transport = client.get_transport()
            assert transport is not None
            transport.set_keepalive(KEEPALIVE_SECONDS)
            sftp = _SFTPClient.from_transport(transport)
            if sftp is None:
                raise paramiko.SSHException("the server opened no SFTP session")
            sftp.get_channel().settimeout(s.timeout)  # type: ignore[union-attr]
        except BaseException as exc:
            client.close()
            error = self._connect_error(exc)
            if error is exc:
                raise
            raise error from exc
        return _Connection(client, sftp, self.context.clock())

    def _connect_error(self, exc: BaseException) -> BaseException:
        where = self._where
        if isinstance(exc, DocrelayError):
            return exc
        if isinstance(exc, paramiko.BadHostKeyException):
            return AuthFailed(self.changed_key_message(exc.key, exc.expected_key))
        if isinstance(exc, paramiko.BadAuthenticationType):
            allowed = ", ".join(exc.allowed_types) or "none"
            return AuthFailed(f"{where} does not take this way of logging in (it takes: {allowed})")
        if isinstance(exc, paramiko.AuthenticationException):
            how = "the key" if self._key is not None else "the password"
            if self._key is not None and self.settings.password is not None:
                how = "the key and the password"
            return AuthFailed(f"{where} refused {how} ({exc})")
        if isinstance(exc, TimeoutError | socket.timeout):
            return TransientError(f"{where}: timed out after {self.settings.connect_timeout}s")
        if isinstance(exc, OSError):
            return TransientError(f"cannot connect to {where}: {exc.strerror or exc}")
        if isinstance(exc, paramiko.SSHException | EOFError):
            return TransientError(f"{where}: SSH failed: {exc or type(exc).__name__}")
        return exc

    def _take(self) -> _Connection:
        """An idle connection still alive, or a new one; the caller owns it until ``_give``."""
        now = self.context.clock()
        stale: list[_Connection] = []
        found = None
        with self._lock:
            while self._idle:
                conn = self._idle.pop()
                if now - conn.last_used <= IDLE_SECONDS and conn.alive():
                    found = conn
                    break
                stale.append(conn)
        for conn in stale:
            conn.close()
        if found is not None:
            found.reused = True
            return found
        return self._connect()

    def _give(self, conn: _Connection) -> None:
        conn.last_used = self.context.clock()
        with self._lock:
            if not self._closed and len(self._idle) < self._max_idle:
                self._idle.append(conn)
                return
        conn.close()

    def _run(self, work: Callable[[_Connection], T], doing: str) -> T:
        """``work`` on a connection of this thread's own; once more on a fresh connection when
        a pooled one turns out dropped (the work is safe to repeat: uploads go to new temp
        names, renames replace)."""
        for attempt in range(2):
            conn = self._take()
            try:
                result = work(conn)
            except DocrelayError:
                self._give(conn)
                raise
            except Exception as exc:
                dropped = isinstance(exc, DROPPED) or not conn.alive()
                if dropped:
                    conn.close()
                else:
                    self._give(conn)
                if dropped and conn.reused and attempt == 0:
                    continue
                raise self._operation_error(exc, dropped, doing) from exc
            self._give(conn)
            return result
        raise AssertionError("unreachable")

    def _operation_error(self, exc: Exception, dropped: bool, doing: str) -> DocrelayError:
        where = f"{self._where}{self._remote('')}"
        if dropped:
            reason = "timed out" if isinstance(exc, TimeoutError | socket.timeout) else "dropped"
            return TransientError(f"{where}: the connection {reason} during {doing}: {exc}")
        if isinstance(exc, PermissionError):
            return AuthFailed(
                f"{where}: permission denied during {doing} ({exc.filename or exc}): the account "
                "may not write there; grant it, or choose another path"
            )
        if isinstance(exc, FileNotFoundError):
            return TransientError(f"{where}: no such file or directory during {doing}: {exc}")
        return TransientError(f"{where}: the server refused {doing}: {exc}")

    # -- the work -----------------------------------------------------------------------

    def _remote(self, name: str) -> str:
        return posixpath.join(self.settings.path, name) if name else self.settings.path

    def _directory(self, conn: _Connection) -> None:
        """The remote directory is there (made, with ``create_dirs``) or a person must act."""
        if conn.dir_ready:
            return
        path = self.settings.path
        try:
            attrs = conn.sftp.stat(path)
        except FileNotFoundError:
            if not self.settings.create_dirs:
                raise AuthFailed(
                    f"{self._where}: the directory {path} does not exist: create it, or set "
                    "create_dirs = true"
                ) from None
            self._make_dirs(conn, path)
        else:
            if not stat.S_ISDIR(attrs.st_mode or 0):
                raise AuthFailed(f"{self._where}: {path} is not a directory")
        conn.dir_ready = True

    @staticmethod
    def _make_dirs(conn: _Connection, path: str) -> None:
        parts = path.split("/")
        for end in range(1, len(parts) + 1):
            step = "/".join(parts[:end])
            if step in ("", "."):
                continue
            try:
                conn.sftp.stat(step)
            except FileNotFoundError:
                try:
                    conn.sftp.mkdir(step)
                except OSError:
                    conn.sftp.stat(step)  # another thread made it meanwhile, or it fails

    def _upload(self, conn: _Connection, files: list[tuple[str, bytes]]) -> None:
        self._directory(conn)
        for name, data in files:
            target = self._remote(name)
            temp = self._remote(f".{name[:100]}.tmp-{secrets.token_hex(6)}")
            try:
                self._write(conn, temp, data)
                if self.settings.file_mode is not None:
                    conn.sftp.chmod(temp, self.settings.file_mode)
                self._rename(conn, temp, target)
            except BaseException as exc:
                if isinstance(exc, FileNotFoundError):
                    conn.dir_ready = False  # the directory went away: look again next time
                if not isinstance(exc, DROPPED) and conn.alive():
                    with suppress(OSError, EOFError, paramiko.SSHException):
                        conn.sftp.remove(temp)
                raise

    @staticmethod
    def _write(conn: _Connection, temp: str, data: bytes) -> None:
        with conn.sftp.open(temp, "wb") as remote:
            remote.set_pipelined(True)
            remote.write(data)
            remote.flush()
            if FSYNC in conn.sftp.extensions:
                # paramiko has no call for the extension; its request helper sends any.
                conn.sftp._request(CMD_EXTENDED, FSYNC, remote.handle)

    @staticmethod
    def _rename(conn: _Connection, temp: str, target: str) -> None:
        if POSIX_RENAME in conn.sftp.extensions:
            conn.sftp.posix_rename(temp, target)
            return
        try:
            conn.sftp.rename(temp, target)  # SFTP v3: refused when the target exists
        except PermissionError:
            raise
        except OSError:
            if not conn.alive():
                raise
            with suppress(FileNotFoundError):
                conn.sftp.remove(target)
            conn.sftp.rename(temp, target)

    def _look(self, conn: _Connection) -> list[str]:
        s = self.settings
        transport = conn.client.get_transport()
        server_key = transport.get_remote_server_key() if transport else None
        login = "key" if self._key is not None else "password"
        lines = [
            f"logged in as {self._where} with the {login}; host key "
            f"{describe(server_key) if server_key else '?'} verified"
        ]
        try:
            attrs = conn.sftp.stat(s.path)
        except FileNotFoundError:
            if not s.create_dirs:
                raise TerminalError(
                    f"{s.path} does not exist on {s.host}: create it, or set create_dirs = true"
                ) from None
            lines.append(f"{s.path} does not exist yet; it will be made at the first export")
        else:
            if not stat.S_ISDIR(attrs.st_mode or 0):
                raise TerminalError(f"{s.path} on {s.host} is not a directory")
            names = conn.sftp.listdir(s.path)
            count = sum(1 for n in names if n.endswith(EXPORT_SUFFIXES) and not n.startswith("."))
            lines.append(f"{s.path} is a directory; {count} export file(s) in it")
        if POSIX_RENAME in conn.sftp.extensions:
            lines.append("the server renames atomically (posix-rename): a repeat replaces a file")
        else:
            lines.append(
                "the server has no posix-rename: a repeat removes the old file before renaming "
                "the new one into place"
            )
        return lines
