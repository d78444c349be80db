"""The IMAP mailbox intake source.

Exactly-once, in this order, per batch of new messages of one folder:

1. ``UID SEARCH UID <highest seen + 1>:*`` — only new messages, never the whole mailbox;
2. ``UID FETCH`` of size and envelope first: rules are matched on the envelope, messages over
   ``max_message_bytes`` are recorded as rejected without being downloaded (a server that
   gives no ``RFC822.SIZE`` is asked for at most one byte over the limit,
   ``BODY.PEEK[]<0.limit+1>``: a message that fills it is too large, the others are whole);
3. ``UID FETCH BODY.PEEK[]`` (reading never marks a mail seen), parts chosen by the rule
   (``mailparts``), each committed by the engine (``sink.ingest``) under a ``unique`` reference:
   the message key (Message-ID, else a hash of the bytes) plus the part's position;
4. the rule's post-action (seen, keyword, move, delete) for the committed messages;
5. the new highest UID saved with the folder's UIDVALIDITY.

A crash after 3 repeats 3 and 4 on restart: the engine recognises every committed part, so only
the post-action is repeated, never the ingestion. A UIDVALIDITY change re-lists the folder and
the same recognition keeps anything already taken from being taken again.

Only UID commands are used (imapclient's default), one process works an account at a time (a
lease in the store), IDLE is used where the server has it with the poll as the fallback.
"""

from __future__ import annotations

import fnmatch
import hashlib
import io
import logging
import ssl
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, Field, SecretStr, field_validator, model_validator

from connectors.auth import OAuth2
from connectors.base import (
    ConnectorContext,
    ConnectorSettings,
    IngestStatus,
    IntakeItem,
    IntakeSink,
    SettingsConfig,
    Source,
    SourceSettings,
)
from connectors.errors import AuthFailed, StoreUnavailable, TransientError
from connectors.filenames import safe_filename
from connectors.sources.mailparts import (
    MailPart,
    Take,
    extract_parts,
    message_key,
)
from connectors.sources.oauth2 import PROVIDERS, token_source

log = logging.getLogger(__name__)

MiB = 1024 * 1024
STORE_RETRY_SECONDS = 5.0
"""How long a mailbox waits before trying again when the store refused a write."""
PostAction = Literal["none", "seen", "flag", "move", "delete"]


class MailRule(BaseModel):
    """Which messages to take, what of them, where they go and what happens to them after."""

    model_config = SettingsConfig

    name: str = ""
    """Shown in logs and recorded with every document (``metadata.rule``)."""
    sender: list[str] = Field(default_factory=list)
    """Glob patterns on the From address (``*@supplier.example``); empty: any."""
    recipient: list[str] = Field(default_factory=list)
    """Glob patterns on To/Cc addresses (``invoices+acme@*``); empty: any."""
    subject: list[str] = Field(default_factory=list)
    """Glob patterns on the subject, case-insensitive (``*invoice*``); empty: any."""
    filename: list[str] = Field(default_factory=list)
    """Glob patterns on attachment names (``*.pdf``); empty: any."""
    mime_types: list[str] = Field(default_factory=list)
    """Glob patterns on attachment types (``application/pdf``, ``image/*``); empty: any."""
    take: Take = "attachments"
    """``attachments``, the whole ``message`` as ``.eml``, or ``both``."""
    include_inline: bool = False
    """Also take inline images (signature logos are inline images: off by default)."""
    route: str | None = None
    """The name of the route (``[[routes]]`` with that ``name``) the documents go to; unset:
    the routes decide as for any document."""
    post_action: PostAction = "flag"
    """After every taken part of a message is stored: ``seen``, add ``flag``, ``move`` to
    ``move_to``, ``delete``, or ``none``."""
    flag: str = "$DocrelayTaken"
    """The keyword ``post_action = "flag"`` adds."""
    move_to: str = "Processed"
    """The folder ``post_action = "move"`` moves to (created when missing)."""

    @field_validator("flag")
    @classmethod
    def _atom(cls, value: str) -> str:
        if not value or any(c in value for c in ' (){%*"]\\') or not value.isprintable():
            raise ValueError(f"{value!r} is not a valid IMAP keyword")
        return value

    def matches(self, sender: str | None, recipients: Sequence[str], subject: str) -> bool:
        if self.sender and not _glob_any(self.sender, [sender] if sender else []):
            return False
        if self.recipient and not _glob_any(self.recipient, recipients):
            return False
        return not self.subject or _glob_any(self.subject, [subject])


def _glob_any(patterns: Sequence[str], values: Sequence[str]) -> bool:
    return any(
        fnmatch.fnmatchcase(value.lower(), pattern.lower())
        for pattern in patterns
        for value in values
    )


class OAuth2Settings(BaseModel):
    """XOAUTH2 with a refresh token (Microsoft 365, Google, or any OAuth2 token endpoint)."""

    model_config = SettingsConfig

    provider: Literal["microsoft", "google", "custom"] = "custom"
    """Whose token endpoint and scope to use by default; ``custom`` names them itself."""
    tenant: str = "common"
    """Microsoft: the directory (tenant) id or domain in the token URL."""
    token_url: str | None = None
    """Defaults by provider; required for ``custom``."""
    client_id: str
    """The application (client) id registered with the provider."""
    client_secret: SecretStr | None = None
    """The application's secret (``client_secret_file``); none for a public client."""
    refresh_token: SecretStr
    """The first refresh token (``refresh_token_file`` for a secret file). Rotated tokens are
    kept in the source's state directory; a changed configured token replaces them."""
    scope: str | None = None
    """Defaults by provider."""
    refresh_margin: float = Field(300.0, ge=0)
    """Seconds before expiry at which the access token is renewed (and the session reopened)."""

    @model_validator(mode="after")
    def _endpoint(self) -> OAuth2Settings:
        if self.provider == "custom" and not self.token_url:
            raise ValueError('token_url is required with provider = "custom"')
        return self

    def endpoint(self) -> tuple[str, str | None]:
        """(token URL, scope) with the provider's defaults filled in."""
        if self.provider == "custom":
            assert self.token_url is not None
            return self.token_url, self.scope
        url, scope = PROVIDERS[self.provider]
        return self.token_url or url.format(tenant=self.tenant), self.scope or scope


class MailboxSettings(SourceSettings):
    """An IMAP account watched for incoming documents."""

    kind: Literal["mailbox"] = "mailbox"
    """Selects the IMAP mailbox source."""
    host: str
    """The IMAP server's host name."""
    port: int | None = None
    """Defaults to 993 for implicit TLS, 143 otherwise."""
    tls: Literal["implicit", "starttls", "plain"] = "implicit"
    """``implicit`` (IMAPS), ``starttls``, or ``plain`` (only with ``allow_plain = true``)."""
    allow_plain: bool = False
    """Permit ``tls = "plain"``: passwords in clear text, for a loopback test server only."""
    ca_file: Path | None = None
    """Certificates to trust instead of the system's (a private CA, a test server); a
    relative path is relative to the configuration file's directory."""
    username: str
    """The account's user name (often its e-mail address)."""
    password: SecretStr | None = None
    """The account's password (give it as ``password_file``); or ``oauth2``."""
    oauth2: OAuth2Settings | None = None
    """XOAUTH2 sign-in (Microsoft 365, Google) instead of a password."""
    folders: list[str] = Field(default_factory=lambda: ["INBOX"])
    """The IMAP folders watched; IDLE runs on the first."""
    poll_interval: float = Field(60.0, gt=0)
    """Seconds between polls; with IDLE, the longest wait before a poll anyway."""
    idle: bool = True
    """Use IMAP IDLE where the server supports it (first folder), so new mail is seen at once."""
    batch_size: int = Field(50, ge=1, le=1000)
    """Messages fetched per round trip."""
    max_message_bytes: int = Field(25 * MiB, gt=0)
    """Larger messages are not downloaded; they are recorded as rejected with the reason."""
    timeout: float = Field(60.0, gt=0)
    """Seconds for a network operation before the connection is considered dead."""
    rules: list[MailRule] = Field(default_factory=lambda: [MailRule(name="default")])
    """Tried in order; the first that matches a message decides. A message no rule matches is
    left alone. Without rules: take every attachment, flag the message."""

    @field_validator("folders")
    @classmethod
    def _folders(cls, value: list[str]) -> list[str]:
        if not value or any(not f.strip() for f in value):
            raise ValueError("list at least one folder, none empty")
        return value

    @model_validator(mode="after")
    def _credentials(self) -> MailboxSettings:
        if self.tls == "plain" and not self.allow_plain:
            raise ValueError(
                'tls = "plain" sends the password in clear text; set allow_plain = true to '
                "permit it (loopback test servers only)"
            )
        if (self.password is None) == (self.oauth2 is None):
            raise ValueError("give exactly one of password (or password_file) and [oauth2]")
        return self

    @property
    def effective_port(self) -> int:
        return self.port or (993 if self.tls == "implicit" else 143)

    def routes_named(self) -> list[tuple[tuple[str, ...], str]]:
        return [
            (("rules", str(number), "route"), rule.route)
            for number, rule in enumerate(self.rules)
            if rule.route is not None
        ]

    @property
    def account(self) -> str:
        """What identifies the account for the lease: two sources on one account share it."""
        return f"{self.username}@{self.host}:{self.effective_port}"


class MailboxError(RuntimeError):
    """The server or the connection failed; the source reconnects after a pause."""


class MailboxAuthError(MailboxError):
    """Credentials refused: the source waits for new ones (``needs re-auth``)."""


@dataclass
class _Taken:
    """One message of a batch, after its parts were committed: what to do with it now."""

    uid: int
    rule: MailRule | None
    outcome: str
    message_id: str | None = None


@dataclass
class FolderReport:
    """What ``docrelay mailbox test`` prints per folder."""

    folder: str
    messages: int
    uidvalidity: int
    matched: int = 0
    parts: int = 0
    too_large: int = 0
    examined: int = 0
    rules: dict[str, int] = field(default_factory=dict)


def connect(settings: MailboxSettings, tokens: OAuth2 | None = None) -> Any:
    """Open an authenticated IMAP connection (imapclient, UID commands only)."""
    from imapclient import IMAPClient

    context = ssl.create_default_context(cafile=str(settings.ca_file) if settings.ca_file else None)
    port = settings.effective_port
    try:
        client = IMAPClient(
            settings.host,
            port=port,
            ssl=settings.tls == "implicit",
            ssl_context=context,
            timeout=settings.timeout,
            use_uid=True,
        )
        if settings.tls == "starttls":
            client.starttls(context)
    except (OSError, ssl.SSLError) as exc:
        raise MailboxError(f"cannot connect to {settings.host}:{port}: {exc}") from exc
    try:
        _login(client, settings, tokens)
    except BaseException:
        _quietly(client.logout)
        raise
    return client


def _login(client: Any, settings: MailboxSettings, tokens: OAuth2 | None) -> None:
    from imapclient.exceptions import LoginError

    who = f"{settings.username} at {settings.host}"
    if tokens is None:
        assert settings.password is not None
        try:
            client.login(settings.username, settings.password.get_secret_value())
        except LoginError as exc:
            raise MailboxAuthError(
                f"{who}: password refused: {_text(exc.args[0] if exc.args else exc)}"
            ) from exc
        return
    for attempt in (1, 2):  # a cached token may have been revoked early: refresh once
        try:
            token = tokens.access_token()
        except AuthFailed as exc:
            raise MailboxAuthError(f"{who}: {exc}") from exc
        except TransientError as exc:
            raise MailboxError(f"{who}: {exc}") from exc
        try:
            client.oauth2_login(settings.username, token, mech="XOAUTH2")
            return
        except LoginError as exc:
            if attempt == 2:
                raise MailboxAuthError(f"{who}: access token refused: {exc}") from exc
            tokens.invalidate()


def _quietly(call: Callable[[], Any]) -> None:
    """Close a connection that may be dead already."""
    with suppress(Exception):
        call()


class MailboxSource(Source):
    kind: ClassVar[str] = "mailbox"
    settings_model: ClassVar[type[ConnectorSettings]] = MailboxSettings

    def __init__(self, settings: ConnectorSettings, context: ConnectorContext) -> None:
        super().__init__(settings, context)
        assert isinstance(settings, MailboxSettings)
        self.cfg = settings
        self.name = settings.name
        self.lease = f"mailbox:{settings.account}"
        self.tokens: OAuth2 | None = None
        if settings.oauth2 is not None:
            self.tokens = token_source(
                settings.oauth2, context.data_dir / "oauth2.json", timeout=settings.timeout
            )
        self._sink: IntakeSink | None = None
        self._stopping = threading.Event()
        self._poke = threading.Event()
        self._thread: threading.Thread | None = None
        self._state = "starting"
        self._reason: str | None = None
        self.last_poll: float | None = None

    # ------------------------------------------------------------------ Source interface

    def start(self, sink: IntakeSink) -> None:
        self._sink = sink
        self._thread = threading.Thread(target=self._run, name=f"mailbox-{self.name}", daemon=True)
        self._thread.start()

    def scan(self) -> int:
        """A poll now (the scheduler's periodic call, also a nudge while idling)."""
        self._poke.set()
        return 0

    def stop(self) -> None:
        self._stopping.set()
        self._poke.set()
        if self._thread is not None:
            self._thread.join(self.cfg.timeout + 5)
        if self.tokens is not None:
            self.tokens.close()
        if self._sink is not None:
            sink = self._sink
            _quietly(lambda: sink.drop_lease(self.lease))

    def health(self) -> dict[str, Any]:
        return {"state": self._state, "reason": self._reason, "account": self.cfg.account}

    # ------------------------------------------------------------------ the loop

    def _run(self) -> None:
        pause = 1.0
        while not self._stopping.is_set():
            try:
                assert self._sink is not None
                if not self._sink.hold_lease(self.lease, self._lease_seconds):
                    self._set_state("standby", "another docrelay process works this account")
                    self._wait(self.cfg.poll_interval)
                    continue
                self._session()
                pause = 1.0
            except MailboxAuthError as exc:
                self._set_state("needs_reauth", str(exc))
                log.error("mailbox %s needs re-authentication: %s", self.name, exc)
                if self._sink is not None:
                    self._sink.report_health(self.name, "auth_failed", str(exc))
                self._wait(max(self.cfg.poll_interval, 300.0))
            except StoreUnavailable as exc:  # locked or full: mail waits on the server
                if self._state != "store_unavailable":
                    log.warning("mailbox %s: %s; mail stays on the server", self.name, exc)
                self._set_state("store_unavailable", str(exc))
                self._wait(STORE_RETRY_SECONDS)
            except Exception as exc:
                self._set_state("reconnecting", f"{type(exc).__name__}: {exc}")
                log.warning("mailbox %s: %s; reconnecting in %.0f s", self.name, exc, pause)
                self._wait(pause)
                pause = min(pause * 2, 300.0)

    @property
    def _lease_seconds(self) -> float:
        return max(3 * self.cfg.poll_interval, 120.0)

    def _wait(self, seconds: float) -> None:
        self._poke.wait(seconds)
        self._poke.clear()

    def _set_state(self, state: str, reason: str | None = None) -> None:
        was = self._state
        self._state, self._reason = state, reason
        if was == "needs_reauth" and state == "ok" and self._sink is not None:
            self._sink.report_health(self.name, "ok")
            log.info("mailbox %s: credentials accepted again", self.name)

    def _session(self) -> None:
        """One connection: sync every folder, then wait (IDLE or sleep), until stopped."""
        client = connect(self.cfg, self.tokens)
        try:
            self._set_state("ok")
            idle = self.cfg.idle and client.has_capability("IDLE")
            while not self._stopping.is_set():
                for folder in self.cfg.folders:
                    if self._stopping.is_set():
                        return
                    self._sync(client, folder)
                self.last_poll = time.time()
                assert self._sink is not None
                if not self._sink.hold_lease(self.lease, self._lease_seconds):
                    return
                if self._token_expiring():
                    return  # reconnect with a fresh token before the server drops us
                if idle:
                    self._idle(client)
                else:
                    self._wait(self.cfg.poll_interval)
        finally:
            _quietly(client.logout)

    def _token_expiring(self) -> bool:
        return self.tokens is not None and self.tokens.renew_in() <= 0

    def _idle(self, client: Any) -> None:
        """Wait on IDLE in the first folder until mail arrives, the poll is due or we stop."""
        client.select_folder(self.cfg.folders[0])
        client.idle()
        try:
            wait = self.cfg.poll_interval
            if self.tokens is not None:
                wait = max(1.0, min(wait, self.tokens.renew_in()))
            deadline = time.monotonic() + wait
            while not self._stopping.is_set() and not self._poke.is_set():
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                responses = client.idle_check(timeout=min(1.0, left))
                if any(_is_new_mail(r) for r in responses):
                    break
        finally:
            client.idle_done()
        self._poke.clear()

    # ------------------------------------------------------------------ one folder

    def _sync(self, client: Any, folder: str) -> int:
        """Take the folder's new messages; returns how many were looked at."""
        sink = self._sink
        assert sink is not None
        selected = client.select_folder(folder)
        uidvalidity = int(selected[b"UIDVALIDITY"])
        state = sink.load_state(self.name, folder) or {}
        last = int(state.get("last_uid", 0))
        if state and state.get("uidvalidity") != uidvalidity:
            log.warning(
                "mailbox %s: UIDVALIDITY of %s changed (%s → %s); re-listing the folder, "
                "messages already taken are recognised and not taken again",
                self.name, folder, state.get("uidvalidity"), uidvalidity,
            )  # fmt: skip
            last = 0
        uids = sorted(u for u in client.search(["UID", f"{last + 1}:*"]) if u > last)
        for start in range(0, len(uids), self.cfg.batch_size):
            batch = uids[start : start + self.cfg.batch_size]
            if self._stopping.is_set() or not sink.hold_lease(self.lease, self._lease_seconds):
                break
            taken = self._take_batch(client, folder, uidvalidity, batch)
            self._post_actions(client, folder, taken)
            sink.save_state(self.name, folder, {"uidvalidity": uidvalidity, "last_uid": batch[-1]})
        if not uids and state.get("uidvalidity") != uidvalidity:
            sink.save_state(self.name, folder, {"uidvalidity": uidvalidity, "last_uid": last})
        return len(uids)

    def _take_batch(
        self, client: Any, folder: str, uidvalidity: int, batch: list[int]
    ) -> list[_Taken]:
        heads = client.fetch(batch, ["RFC822.SIZE", "ENVELOPE"])
        taken: list[_Taken] = []
        wanted: list[tuple[int, MailRule]] = []
        for uid in batch:
            head = heads.get(uid)
            if head is None:  # expunged between SEARCH and FETCH
                continue
            envelope = _Envelope.of(head.get(b"ENVELOPE"))
            rule = self._rule_for(envelope)
            if rule is None:
                taken.append(_Taken(uid, None, "no rule matched"))
                continue
            size = declared_size(head)
            if size is None:  # the server did not say: read no more than the limit allows
                raw = self._fetch_bounded(client, uid)
                if raw is None:  # expunged meanwhile
                    continue
                if len(raw) > self.cfg.max_message_bytes:
                    self._reject_too_large(folder, uidvalidity, uid, envelope, None, rule)
                    taken.append(_Taken(uid, None, "too large"))
                    continue
                outcome, message_id = self._take_message(folder, uidvalidity, uid, raw, rule)
                taken.append(_Taken(uid, rule, outcome, message_id))
                continue
            if size > self.cfg.max_message_bytes:
                self._reject_too_large(folder, uidvalidity, uid, envelope, size, rule)
                taken.append(_Taken(uid, None, "too large"))
                continue
            wanted.append((uid, rule))
        for chunk in _chunks_by_size(wanted, heads, 32 * MiB):
            bodies = client.fetch([uid for uid, _ in chunk], ["BODY.PEEK[]"])
            for uid, rule in chunk:
                raw = bodies.get(uid, {}).get(b"BODY[]")
                if raw is None:  # expunged meanwhile
                    continue
                outcome, message_id = self._take_message(folder, uidvalidity, uid, bytes(raw), rule)
                taken.append(_Taken(uid, rule, outcome, message_id))
        return taken

    def _fetch_bounded(self, client: Any, uid: int) -> bytes | None:
        """The message, or its first ``max_message_bytes + 1`` bytes when it is longer (then
        it is too large): what a mail of unknown size may cost. None when it is gone."""
        limit = self.cfg.max_message_bytes + 1
        item = f"BODY.PEEK[]<0.{limit}>"
        answer = client.fetch([uid], [item]).get(uid, {})
        for key, value in answer.items():  # b"BODY[]<0>", as the server names it
            if isinstance(key, bytes) and key.upper().startswith(b"BODY[]") and value is not None:
                return bytes(value)[:limit]
        return None

    def _rule_for(self, envelope: _Envelope) -> MailRule | None:
        for rule in self.cfg.rules:
            if rule.matches(envelope.sender, envelope.recipients, envelope.subject):
                return rule
        return None

    def _metadata(self, folder: str, uidvalidity: int, uid: int, **more: Any) -> dict[str, Any]:
        return {
            "mailbox": self.name,
            "account": self.cfg.account,
            "folder": folder,
            "uidvalidity": uidvalidity,
            "uid": uid,
            **more,
        }

    def _take_message(
        self, folder: str, uidvalidity: int, uid: int, raw: bytes, rule: MailRule
    ) -> tuple[str, str | None]:
        """Commit every part the rule takes; returns a word for the log and the Message-ID."""
        sink = self._sink
        assert sink is not None
        info, parts, notes = extract_parts(
            raw,
            take=rule.take,
            filename_patterns=rule.filename,
            mime_types=rule.mime_types,
            include_inline=rule.include_inline,
        )
        key = message_key(info, raw)
        metadata = self._metadata(
            folder,
            uidvalidity,
            uid,
            message_id=info.message_id,
            sender=info.sender,
            recipients=info.recipients,
            subject=info.subject,
            date=info.date.isoformat() if info.date else None,
            rule=rule.name or None,
        )
        if notes:
            metadata["notes"] = notes[:20]
        if not parts:
            reason = f"the message has no attachment that rule {rule.name or '#'} takes"
            if notes:
                reason += f" ({'; '.join(notes[:3])})"
            part = MailPart(0, _eml_name(info.subject), "message/rfc822", raw)
            status = self._ingest(part, key, metadata, rule, rejection=reason)
            return status.value, info.message_id
        outcomes = [self._ingest(p, key, metadata, rule, rejection=p.unsupported) for p in parts]
        return ",".join(sorted({o.value for o in outcomes})), info.message_id

    def _ingest(
        self,
        part: MailPart,
        key: str,
        metadata: dict[str, Any],
        rule: MailRule,
        *,
        rejection: str | None,
    ) -> IngestStatus:
        assert self._sink is not None
        data = part.data

        @contextmanager
        def opener() -> Iterator[io.BytesIO]:
            yield io.BytesIO(data)

        outcome = self._sink.ingest(
            IntakeItem(
                source=self.name,
                source_ref=f"{key}/{part.index or 'message'}",
                filename=part.filename,
                open=opener,
                mime_type=part.mime_type,
                metadata={**metadata, "part": part.index or None},
                rejection=rejection,
                unique=True,
                route=rule.route,
            )
        )
        return outcome.status

    def _reject_too_large(
        self,
        folder: str,
        uidvalidity: int,
        uid: int,
        envelope: _Envelope,
        size: int | None,
        rule: MailRule,
    ) -> None:
        """``size`` None: the server gave none, and the first bytes over the limit showed."""
        assert self._sink is not None
        key = envelope.key(size or 0)
        limit = self.cfg.max_message_bytes
        if size is None:
            reason = (
                f"too large: the message has more than max_message_bytes ({limit:,}) bytes "
                "(the server gave no size); not downloaded beyond the limit, left in the mailbox"
            )
        else:
            reason = (
                f"too large: the message has {size:,} bytes, over max_message_bytes "
                f"({limit:,}); not downloaded, left in the mailbox"
            )
        self._sink.reject_unstored(
            IntakeItem(
                source=self.name,
                source_ref=f"{key}/message",
                filename=_eml_name(envelope.subject),
                open=lambda: io.BytesIO(b""),  # never opened
                mime_type="message/rfc822",
                metadata=self._metadata(
                    folder,
                    uidvalidity,
                    uid,
                    message_id=envelope.message_id,
                    sender=envelope.sender,
                    subject=envelope.subject,
                    size_bytes=size,
                    rule=rule.name or None,
                ),
                unique=True,
            ),
            reason,
        )
        log.warning("mailbox %s: %s UID %s %s", self.name, folder, uid, reason)

    # ------------------------------------------------------------------ post-actions

    def _post_actions(self, client: Any, folder: str, taken: list[_Taken]) -> None:
        """Once every part of these messages is committed; grouped into one command each."""
        groups: dict[tuple[str, str], list[_Taken]] = {}
        for item in taken:
            if item.rule is None or item.rule.post_action == "none":
                continue
            rule = item.rule
            target = {"flag": rule.flag, "move": rule.move_to}.get(rule.post_action, "")
            groups.setdefault((rule.post_action, target), []).append(item)
        expunge: list[int] = []
        for (action, target), items in groups.items():
            uids = [item.uid for item in items]
            if action == "seen":
                client.add_flags(uids, [b"\\Seen"], silent=True)
            elif action == "flag":
                client.add_flags(uids, [target.encode()], silent=True)
            elif action == "move":
                if not client.folder_exists(target):
                    client.create_folder(target)
                if client.has_capability("MOVE"):
                    client.move(uids, target)
                else:  # COPY, then delete: a crash in between must not copy twice
                    copied = self._copied_before(client, folder, target, items)
                    if to_copy := [uid for uid in uids if uid not in copied]:
                        client.copy(to_copy, target)
                    client.delete_messages(uids, silent=True)
                    expunge.extend(uids)
            elif action == "delete":
                client.delete_messages(uids, silent=True)
                expunge.extend(uids)
        if expunge:
            if client.has_capability("UIDPLUS"):
                client.uid_expunge(expunge)
            else:
                client.expunge()

    def _copied_before(
        self, client: Any, folder: str, target: str, items: list[_Taken]
    ) -> set[int]:
        """Of messages taken before a crash (their parts were committed already), those whose
        copy is in ``target`` already, found by Message-ID: a server without MOVE gets COPY and
        delete, and a crash between the two leaves the copy behind."""
        again = [item for item in items if "already" in item.outcome and item.message_id]
        if not again:
            return set()
        client.select_folder(target, readonly=True)
        try:
            return {
                item.uid
                for item in again
                if client.search(["HEADER", "Message-ID", f"<{item.message_id}>"])
            }
        finally:
            client.select_folder(folder)

    # ------------------------------------------------------------------ mailbox test

    probe_limit: int = 200
    """Newest messages per folder that ``probe`` looks at."""

    def probe(self) -> list[str]:
        """Log in, list the folders and count what the rules would take; changes nothing."""
        try:
            folders, reports = self.survey(limit=self.probe_limit)
        except MailboxAuthError as exc:
            raise AuthFailed(f"login refused: {exc}") from None
        except MailboxError as exc:
            raise TransientError(str(exc)) from None
        return [
            f"logged in as {self.cfg.username} at {self.cfg.account}",
            f"folders: {', '.join(folders)}",
            *describe(reports).splitlines(),
        ]

    def survey(self, *, limit: int = 200) -> tuple[list[str], list[FolderReport]]:
        """Log in, list folders and count what the rules would take from the newest ``limit``
        messages of each watched folder, read-only (EXAMINE, BODY.PEEK): nothing changes."""
        from imapclient.exceptions import IMAPClientError

        client = connect(self.cfg, self.tokens)
        try:
            names = [str(f[2]) for f in client.list_folders()]
            reports = []
            for folder in self.cfg.folders:
                selected = client.select_folder(folder, readonly=True)
                uids = sorted(client.search(["ALL"]))
                report = FolderReport(folder, len(uids), int(selected[b"UIDVALIDITY"]))
                recent = uids[-limit:]
                report.examined = len(recent)
                heads = client.fetch(recent, ["RFC822.SIZE", "ENVELOPE"]) if recent else {}
                for uid in recent:
                    head = heads.get(uid)
                    if head is None:
                        continue
                    rule = self._rule_for(_Envelope.of(head.get(b"ENVELOPE")))
                    if rule is None:
                        continue
                    report.matched += 1
                    label = rule.name or "#"
                    report.rules[label] = report.rules.get(label, 0) + 1
                    size = declared_size(head)
                    if size is not None and size > self.cfg.max_message_bytes:
                        report.too_large += 1
                        continue
                    if size is None:
                        body = self._fetch_bounded(client, uid)
                        if body is not None and len(body) > self.cfg.max_message_bytes:
                            report.too_large += 1
                            continue
                    else:
                        body = client.fetch([uid], ["BODY.PEEK[]"]).get(uid, {}).get(b"BODY[]")
                    if body is None:
                        continue
                    _, parts, _ = extract_parts(
                        bytes(body),
                        take=rule.take,
                        filename_patterns=rule.filename,
                        mime_types=rule.mime_types,
                        include_inline=rule.include_inline,
                    )
                    report.parts += len(parts)
                reports.append(report)
            return names, reports
        except IMAPClientError as exc:
            raise MailboxError(f"{self.cfg.account}: {_text(str(exc))}") from exc
        finally:
            _quietly(client.logout)


@dataclass(frozen=True)
class _Envelope:
    """The few envelope facts rules and rejections need, decoded leniently."""

    message_id: str | None
    sender: str | None
    recipients: list[str]
    subject: str
    date: str = ""

    @classmethod
    def of(cls, envelope: Any) -> _Envelope:
        if envelope is None:
            return cls(None, None, [], "")
        from email.header import decode_header, make_header

        def address(a: Any) -> str | None:
            if a is None or a.mailbox is None:
                return None
            host = _text(a.host) if a.host else ""
            return f"{_text(a.mailbox)}@{host}".lower() if host else _text(a.mailbox).lower()

        senders = [address(a) for a in (envelope.from_ or ())]
        recipients = [address(a) for a in (*(envelope.to or ()), *(envelope.cc or ()))]
        subject = _text(envelope.subject) if envelope.subject else ""
        with suppress(Exception):  # a broken encoded-word stays as it came
            subject = str(make_header(decode_header(subject)))
        message_id = _text(envelope.message_id).strip().strip("<>").strip() or None
        return cls(
            message_id=message_id,
            sender=next((s for s in senders if s), None),
            recipients=[r for r in recipients if r],
            subject=subject,
            date=str(envelope.date or ""),
        )

    def key(self, size: int) -> str:
        """The message's identity without its body: the Message-ID, else a hash of what the
        envelope says (stable across UIDVALIDITY resets, unlike a UID)."""
        if self.message_id:
            return self.message_id
        facts = "\x1f".join([self.date, self.sender or "", self.subject, *self.recipients])
        return "envelope:" + hashlib.sha256(f"{facts}\x1f{size}".encode()).hexdigest()


def _text(value: bytes | str | None) -> str:
    if value is None:
        return ""
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return value


def _eml_name(subject: str) -> str:
    """The display name of a whole message kept as ``.eml`` (never a path)."""
    return (safe_filename(subject, keep_separators=True)[:196].rstrip(". ") or "message") + ".eml"


def _is_new_mail(response: Any) -> bool:
    return isinstance(response, tuple) and len(response) >= 2 and response[1] == b"EXISTS"


def declared_size(head: Mapping[bytes, Any]) -> int | None:
    """The message's ``RFC822.SIZE`` from a FETCH answer, or None when the server gave none
    (or nothing that reads as a size): the caller must not trust it to bound a download."""
    value = head.get(b"RFC822.SIZE")
    try:
        size = int(value) if value is not None else None
    except (TypeError, ValueError):
        return None
    return size if size is not None and size >= 0 else None


def _chunks_by_size(
    wanted: list[tuple[int, MailRule]], heads: dict[int, Any], limit: int
) -> Iterator[list[tuple[int, MailRule]]]:
    """Bodies fetched in round trips of at most ``limit`` bytes (one message may exceed it)."""
    chunk: list[tuple[int, MailRule]] = []
    total = 0
    for uid, rule in wanted:
        size = int(heads[uid].get(b"RFC822.SIZE", 0))
        if chunk and total + size > limit:
            yield chunk
            chunk, total = [], 0
        chunk.append((uid, rule))
        total += size
    if chunk:
        yield chunk


def describe(reports: Sequence[FolderReport]) -> str:
    lines = []
    for r in reports:
        rules = ", ".join(f"{k}: {v}" for k, v in sorted(r.rules.items())) or "none"
        lines.append(
            f"{r.folder}: {r.messages} messages (UIDVALIDITY {r.uidvalidity}); of the newest "
            f"{r.examined}, {r.matched} match a rule ({rules}) with {r.parts} parts to take"
            + (f", {r.too_large} too large" if r.too_large else "")
        )
    return "\n".join(lines)
