"""The mailbox source against a real Dovecot: exactly-once intake, post-actions, UIDVALIDITY
resets, oversized messages, and `docrelay mailbox test`."""

from __future__ import annotations

import json
import logging
import re
import subprocess
import sys
from email.message import EmailMessage
from pathlib import Path

import pytest
from sqlalchemy import text

from connectors.base import ConnectorContext
from connectors.sources.mailbox import MailboxSettings, MailboxSource
from daemon import config as config_mod
from daemon.pipeline.intake import Intake
from daemon.store.blobs import BlobStore
from daemon.store.engine import ensure_schema, make_engine
from tests.daemon_proc import wait_until
from tests.dovecot import Dovecot, dovecot, dovecot_factory  # noqa: F401
from tests.invoices import one_page_pdf


def pdf_bytes(label: str) -> bytes:
    return one_page_pdf(f"Invoice {label}")


def mail(
    number: int,
    attachments: list[tuple[str, bytes]],
    *,
    sender: str = "billing@supplier.example",
    subject: str | None = None,
    size_padding: int = 0,
    message_id: bool = True,
) -> bytes:
    msg = EmailMessage()
    msg["From"] = f"Supplier <{sender}>"
    msg["To"] = "invoices@example.com"
    msg["Subject"] = subject or f"Invoice {number}"
    if message_id:
        msg["Message-ID"] = f"<mail-{number}@supplier.example>"
    msg["Date"] = "Mon, 23 Nov 2026 10:00:00 +0000"
    msg.set_content("Please find the invoice attached.\n" + "x" * size_padding)
    for name, data in attachments:
        msg.add_attachment(data, maintype="application", subtype="pdf", filename=name)
    return msg.as_bytes()


class Harness:
    """A mailbox source with a real intake on SQLite, pointed at one Dovecot user."""

    def __init__(
        self, tmp_path: Path, server: Dovecot, *, busy_timeout_ms: int = 10_000, **settings
    ) -> None:
        raw = {
            "store": {"url": f"sqlite:///{tmp_path}/d.db", "blob_dir": str(tmp_path / "blobs")},
            "web": {"enabled": False},
            "vendors": {"local": {"kind": "local"}},
            "routes": [{"name": "all", "match": {}, "vendor": "local"}],
        }
        self.config = config_mod.validate(raw, Path("test.toml"))
        self.engine = make_engine(raw["store"]["url"], busy_timeout_ms=busy_timeout_ms)
        ensure_schema(self.engine)
        blobs = BlobStore(tmp_path / "blobs")
        blobs.prepare()
        self.intake = Intake(self.engine, blobs, self.config, owner="test:1:a")
        self.settings = MailboxSettings.model_validate(
            {
                "name": "invoices",
                "host": server.host,
                "port": server.imap_port,
                "tls": "starttls",
                "ca_file": server.cafile,
                "username": "alice",
                "password": "secret",
                "poll_interval": 0.5,
                **settings,
            }
        )
        self.tmp_path = tmp_path
        self.source: MailboxSource | None = None

    def start(self) -> MailboxSource:
        context = ConnectorContext("invoices", self.tmp_path / "state", clock=lambda: 0.0)
        self.source = MailboxSource(self.settings, context)
        self.source.start(self.intake)
        return self.source

    def stop(self) -> None:
        if self.source is not None:
            self.source.stop()
            self.source = None

    def rows(self, sql: str, **params) -> list:
        with self.engine.connect() as conn:
            return list(conn.execute(text(sql), params))

    def polled_after(self, folder: str, uid: int) -> bool:
        state = self.intake.load_state("invoices", folder)
        return bool(state) and state["last_uid"] >= uid


@pytest.fixture
def harness(tmp_path, dovecot):
    made: list[Harness] = []

    def make(**settings) -> Harness:
        made.append(Harness(tmp_path, dovecot, **settings))
        return made[-1]

    yield make
    for h in made:
        h.stop()
        h.engine.dispose()


def test_attachments_are_taken_once_and_each_message_post_processed_once(
    harness,
    dovecot,
):
    a, b = pdf_bytes("A"), pdf_bytes("B")
    first = mail(1, [("a.pdf", a), ("b.pdf", b)])
    uids = [
        dovecot.append("alice", "INBOX", first),
        dovecot.append("alice", "INBOX", first),  # the same mail delivered twice
        dovecot.append("alice", "INBOX", mail(2, [("again.pdf", a)])),  # same file, new mail
        dovecot.append("alice", "INBOX", mail(3, [])),  # nothing to take
    ]
    h = harness()
    h.start()
    wait_until(lambda: h.polled_after("INBOX", uids[-1]), 20, what="all messages polled")
    docs = h.rows(
        "SELECT filename, state, source_ref, metadata FROM docrelay_documents ORDER BY document_id"
    )
    states = [(d.filename, d.state) for d in docs]
    assert states[:3] == [("a.pdf", "queued"), ("b.pdf", "queued"), ("again.pdf", "duplicate")]
    assert states[3][1] == "rejected" and states[3][0] == "Invoice 3.eml"
    assert len(docs) == 4, "the duplicate delivery of mail 1 was recognised, not taken again"
    assert docs[0].source_ref == "mail-1@supplier.example/1"
    meta = json.loads(h.rows("SELECT metadata FROM documents WHERE id = 1")[0][0])
    assert meta["uid"] == uids[0] and meta["subject"] == "Invoice 1"
    assert meta["sender"] == "billing@supplier.example" and meta["folder"] == "INBOX"
    flags = dovecot.flags("alice", "INBOX")
    assert all("$DocrelayTaken" in flags[uid] for uid in uids), flags
    assert not any("\\Seen" in flags[uid] for uid in uids), "BODY.PEEK never marks seen"
    # A restart takes nothing again: only new UIDs are looked at.
    h.stop()
    later = dovecot.append("alice", "INBOX", mail(4, [("c.pdf", pdf_bytes("C"))]))
    h.start()
    wait_until(lambda: h.polled_after("INBOX", later), 20, what="the new message")
    assert [r.filename for r in h.rows("SELECT filename FROM documents WHERE id > 4")] == ["c.pdf"]


def test_idle_sees_new_mail_within_seconds(harness, dovecot):
    import time

    h = harness(poll_interval=60)
    h.start()
    wait_until(lambda: h.intake.load_state("invoices", "INBOX") is not None, 20, what="first poll")
    time.sleep(0.5)  # in IDLE now
    began = time.monotonic()
    uid = dovecot.append("alice", "INBOX", mail(5, [("idle.pdf", pdf_bytes("I"))]))
    wait_until(lambda: h.polled_after("INBOX", uid), 10, what="IDLE wake-up")
    assert time.monotonic() - began < 5


def test_rules_route_and_move_with_folder_created(harness, dovecot):
    keep = dovecot.append("alice", "INBOX", mail(6, [("x.pdf", pdf_bytes("X"))], sender="me@x"))
    take = dovecot.append("alice", "INBOX", mail(7, [("y.pdf", pdf_bytes("Y"))]))
    h = harness(
        rules=[
            {
                "name": "suppliers",
                "sender": ["*@supplier.example"],
                "filename": ["*.pdf"],
                "post_action": "move",
                "move_to": "Processed/Invoices",
            }
        ]
    )
    h.start()
    wait_until(lambda: h.polled_after("INBOX", take), 20, what="poll")
    assert [r.filename for r in h.rows("SELECT filename FROM documents")] == ["y.pdf"]
    assert dovecot.uids("alice", "INBOX") == [keep], "the unmatched mail is left alone"
    assert len(dovecot.uids("alice", "Processed/Invoices")) == 1


def test_r11_a_uidvalidity_reset_re_lists_but_takes_nothing_again(harness, dovecot, caplog):
    raws = [mail(n, [(f"r{n}.pdf", pdf_bytes(f"R{n}"))]) for n in range(10, 13)]
    dovecot.append_many("alice", "Scans", raws)
    h = harness(folders=["Scans"])
    h.start()
    wait_until(lambda: h.polled_after("Scans", 3), 20, what="first pass")
    before = h.intake.load_state("invoices", "Scans")
    h.stop()
    dovecot.delete_folder("alice", "Scans")
    dovecot.append_many("alice", "Scans", raws)  # same messages, new folder, new UIDVALIDITY
    assert dovecot.uidvalidity("alice", "Scans") != before["uidvalidity"]
    with caplog.at_level(logging.WARNING, logger="connectors.sources.mailbox"):
        h.start()
        wait_until(
            lambda: (
                (h.intake.load_state("invoices", "Scans") or {}).get("uidvalidity")
                != before["uidvalidity"]
            ),
            20,
            what="second pass",
        )
    assert h.rows("SELECT COUNT(*) FROM documents")[0][0] == 3
    assert "UIDVALIDITY of Scans changed" in caplog.text


def test_r14_an_oversized_message_is_rejected_without_download_and_kept(harness, dovecot):
    big = dovecot.append("alice", "INBOX", mail(20, [("big.pdf", pdf_bytes("B") * 200)]))
    small = dovecot.append("alice", "INBOX", mail(21, [("small.pdf", pdf_bytes("S"))]))
    h = harness(max_message_bytes=64 * 1024)
    h.start()
    wait_until(lambda: h.polled_after("INBOX", small), 20, what="poll")
    rows = h.rows("SELECT filename, state, error, size_bytes FROM docrelay_documents ORDER BY 1")
    assert [(r.filename, r.state) for r in rows] == [
        ("Invoice 20.eml", "rejected"),
        ("small.pdf", "queued"),
    ]
    assert "too large" in rows[0].error and "not downloaded" in rows[0].error
    assert rows[0].size_bytes == -1
    assert big in dovecot.uids("alice", "INBOX"), "the original stays in the mailbox"
    assert "$DocrelayTaken" not in dovecot.flags("alice", "INBOX")[big]


def test_refused_credentials_mean_needs_reauth(harness, dovecot):
    h = harness(password="wrong")
    source = h.start()
    wait_until(lambda: source.health()["state"] == "needs_reauth", 20, what="needs re-auth")
    rows = h.rows("SELECT name, state FROM connector_health")
    assert [tuple(r) for r in rows] == [("invoices", "auth_failed")]
    config = h.tmp_path / "status.toml"
    config.write_text(
        f'[store]\nurl = "sqlite:///{h.tmp_path}/d.db"\nblob_dir = "{h.tmp_path}/blobs"\n'
        '[vendors.local]\nkind = "local"\n[[routes]]\nmatch = {}\nvendor = "local"\n'
    )
    status = subprocess.run(
        [sys.executable, "-m", "daemon.cli", "--config", str(config), "status"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "invoices: needs re-authentication" in status.stdout, status.stdout + status.stderr
    assert "password refused" in status.stdout


def mailbox_test(config: Path) -> subprocess.CompletedProcess[str]:
    command = ["mailbox", "test", "invoices"]
    return subprocess.run(
        [sys.executable, "-m", "daemon.cli", "--config", str(config), *command],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_mailbox_test_command_counts_without_changing_anything(tmp_path, dovecot):
    uid = dovecot.append("alice", "INBOX", mail(30, [("t.pdf", pdf_bytes("T"))]))
    dovecot.append("alice", "INBOX", mail(31, []))
    config = tmp_path / "config.toml"
    config.write_text(
        f"""
[store]
url = "sqlite:///{tmp_path}/d.db"
blob_dir = "{tmp_path}/blobs"
[web]
enabled = false
[[sources.mailbox]]
name = "invoices"
host = "{dovecot.host}"
port = {dovecot.imaps_port}
tls = "implicit"
ca_file = "{dovecot.cafile}"
username = "alice"
password = "secret"
[vendors.local]
kind = "local"
[[routes]]
match = {{}}
vendor = "local"
"""
    )
    before = dovecot.flags("alice", "INBOX")
    run = mailbox_test(config)
    assert run.returncode == 0, run.stderr
    assert "INBOX: 2 messages" in run.stdout
    assert "2 match a rule (default: 2) with 1 parts to take" in run.stdout
    assert dovecot.flags("alice", "INBOX") == before and uid in before
    config.write_text(config.read_text().replace('password = "secret"', 'password = "nope"'))
    refused = mailbox_test(config)
    assert refused.returncode == 4 and "login refused" in refused.stderr


def test_plain_imap_needs_explicit_permission():
    with pytest.raises(ValueError, match="allow_plain"):
        MailboxSettings.model_validate(
            {"name": "m", "host": "h", "tls": "plain", "username": "u", "password": "p"}
        )


def test_invoices_by_mail_flow_through_the_daemon_to_sql_and_exports(tmp_path, store_url, dovecot):
    """The real daemon: Dovecot → mailbox source → local extractor → SQL views → JSON export."""
    from tests.daemon_proc import DaemonProcess, write_config
    from tests.invoices import expected_fields, random_spec, write_invoice

    specs = [random_spec(seed) for seed in (101, 102)]
    for number, spec in enumerate(specs, 50):
        pdf = write_invoice(tmp_path / f"invoice-{number}.pdf", spec).read_bytes()
        dovecot.append("alice", "INBOX", mail(number, [(f"invoice-{number}.pdf", pdf)]))
    (tmp_path / "imap-password").write_text("secret\n")
    mailbox = dovecot.source_toml(password=None, password_file=tmp_path / "imap-password")
    mailbox += """
[[sources.mailbox.rules]]
name = "pdfs"
filename = ["*.pdf"]
route = "mail-to-local"
post_action = "seen"

[[routes]]
name = "mail-to-local"
match = { source = ["mail"] }
vendor = "local"
destinations = ["outbox"]
"""
    config = write_config(tmp_path, store_url=store_url, extra=mailbox)
    daemon = DaemonProcess(config).start()
    from sqlalchemy import create_engine

    engine = create_engine(store_url)
    try:
        with engine.connect() as conn:

            def exported() -> bool:
                query = "SELECT COUNT(*) FROM docrelay_documents WHERE exported_at IS NOT NULL"
                return conn.execute(text(query)).scalar() == 2

            wait_until(exported, 60, what="both mailed invoices exported")
            rows = conn.execute(
                text(
                    "SELECT d.filename, d.source, d.route, d.metadata, i.invoice_number "
                    "FROM docrelay_documents d JOIN docrelay_invoices i USING (document_id) "
                    "ORDER BY d.document_id"
                )
            ).all()
    finally:
        assert daemon.stop() == 0
        engine.dispose()
    assert [(r.filename, r.source, r.route) for r in rows] == [
        ("invoice-50.pdf", "mail", "mail-to-local"),
        ("invoice-51.pdf", "mail", "mail-to-local"),
    ]
    for row, spec in zip(rows, specs, strict=True):
        assert row.invoice_number == expected_fields(spec)["invoice_number"]
        meta = row.metadata if isinstance(row.metadata, dict) else json.loads(row.metadata)
        assert meta["mailbox"] == "mail" and meta["folder"] == "INBOX"
        assert meta["sender"] == "billing@supplier.example" and meta["rule"] == "pdfs"
        assert meta["message_id"].endswith("@supplier.example") and meta["uidvalidity"] > 0
    assert len(list((tmp_path / "outbox").glob("*.json"))) == 2
    flags = dovecot.flags("alice", "INBOX")
    assert all("\\Seen" in f for f in flags.values())


def test_r13_the_mime_corpus_ends_ingested_or_rejected_and_the_daemon_keeps_running(
    tmp_path, dovecot
):
    """Every edge case of the corpus, a 30 MB message over a 10 MB limit among them, through the
    real daemon: each message ends with its parts stored (or rejected with a reason) within
    seconds, and the daemon stays healthy."""
    import time

    import httpx

    from connectors.sources.mailparts import message_info, message_key
    from tests.daemon_proc import DaemonProcess, free_port, write_config
    from tests.mime_corpus import CORPUS, EXPECTED

    raws = {name: build() for name, build in CORPUS.items()}
    keys = {name: message_key(message_info(raw), raw) for name, raw in raws.items()}
    port = free_port()
    mailbox = (
        dovecot.source_toml(max_message_bytes=10 * 1024 * 1024)
        + """
[[routes]]
match = { source = ["mail"] }
vendor = "local"
destinations = ["outbox"]
"""
    )
    config = write_config(tmp_path, port=port, extra=mailbox)
    daemon = DaemonProcess(config).start()
    began = time.monotonic()
    dovecot.append_many("alice", "INBOX", list(raws.values()))
    from sqlalchemy import create_engine

    engine = create_engine(f"sqlite:///{tmp_path}/var/docrelay.db")
    try:
        state = dovecot.uids("alice", "INBOX")
        with engine.connect() as conn:

            def polled() -> bool:
                value = conn.execute(
                    text("SELECT value FROM source_state WHERE source = 'mail'")
                ).scalar()
                return value is not None and json.loads(value)["last_uid"] >= max(state)

            wait_until(polled, 30, what="every corpus message handled")
            elapsed = time.monotonic() - began
            docs = conn.execute(
                text("SELECT source_ref, filename, state, error FROM docrelay_documents")
            ).all()
        assert httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200
    finally:
        assert daemon.stop() == 0
        engine.dispose()
    assert elapsed < 20, f"the corpus took {elapsed:.1f}s"
    by_key: dict[str, list] = {}
    for doc in docs:
        by_key.setdefault(doc.source_ref.rsplit("/", 1)[0], []).append(doc)
    for name, expected in EXPECTED.items():
        found = by_key.get(keys[name], [])
        if name == "big_base64":
            assert [(d.state, "too large" in d.error) for d in found] == [("rejected", True)]
        elif expected.parts == 0:
            assert [d.state for d in found] == ["rejected"], name
            assert "no attachment" in found[0].error
        else:
            assert sorted(d.filename for d in found) == sorted(expected.filenames), name
            for doc, unsupported in zip(
                sorted(found, key=lambda d: d.source_ref),
                expected.unsupported or (False,) * expected.parts,
                strict=True,
            ):
                if unsupported:
                    assert doc.state == "rejected" and doc.error, (name, doc)
    assert len(by_key) == len(set(keys.values())), "one entry per distinct message"
    # Names are display names only: nothing was written outside the blob store's hash names.
    assert not list(tmp_path.rglob("passwd")) and not list(tmp_path.rglob("*evil*"))


def test_one_process_per_account_and_a_standby_takes_over(tmp_path, dovecot):
    """Two daemons (two owners on one store) on one account: one works it, the other waits,
    and takes over once the first lets go."""
    one = Harness(tmp_path, dovecot)
    two = Harness(tmp_path, dovecot)
    two.intake.owner = "test:2:b"
    first = one.start()
    wait_until(lambda: first.health()["state"] == "ok", 20, what="the first holds the account")
    second = two.start()
    wait_until(lambda: second.health()["state"] == "standby", 20, what="the second waits")
    uid = dovecot.append("alice", "INBOX", mail(60, [("l.pdf", pdf_bytes("L"))]))
    wait_until(lambda: one.polled_after("INBOX", uid), 20, what="taken by the first")
    one.stop()  # drops the lease
    later = dovecot.append("alice", "INBOX", mail(61, [("m.pdf", pdf_bytes("M"))]))
    wait_until(lambda: second.health()["state"] == "ok", 20, what="the standby took over")
    wait_until(lambda: two.polled_after("INBOX", later), 20, what="taken by the second")
    two.stop()
    refs = [r[0] for r in one.rows("SELECT source_ref FROM documents ORDER BY id")]
    assert refs == ["mail-60@supplier.example/1", "mail-61@supplier.example/1"]
    one.engine.dispose()
    two.engine.dispose()


def test_r12_a_message_expunged_between_search_and_fetch_is_skipped(
    harness, dovecot, monkeypatch, caplog
):
    from connectors.sources import mailbox as mailbox_mod

    uids = [
        dovecot.append("alice", "INBOX", mail(n, [(f"e{n}.pdf", pdf_bytes(f"E{n}"))]))
        for n in (70, 71, 72)
    ]
    real_connect = mailbox_mod.connect

    def connect(*args, **kwargs):
        client = real_connect(*args, **kwargs)
        client._imap.debug = 4  # imaplib logs every command line it sends
        real_search = client.search

        def search(criteria):
            found = real_search(criteria)
            if uids[1] in found:  # another client deletes the middle one meanwhile
                with dovecot.session("alice") as other:
                    other.select_folder("INBOX")
                    other.delete_messages([uids[1]])
                    other.uid_expunge([uids[1]])
            return found

        client.search = search
        return client

    monkeypatch.setattr(mailbox_mod, "connect", connect)
    h = harness()
    with caplog.at_level(logging.DEBUG, logger="imapclient"):
        source = h.start()
        wait_until(lambda: h.polled_after("INBOX", uids[2]), 20, what="the pass")
        h.stop()
    names = [r[0] for r in h.rows("SELECT filename FROM documents ORDER BY id")]
    assert names == ["e70.pdf", "e72.pdf"]
    assert source.health()["state"] == "ok"
    # Only UID commands touch messages: a sequence number could name another message.
    sent = [r.getMessage() for r in caplog.records if r.getMessage().startswith("> b'")]
    touching = [m for m in sent if re.search(r"\b(FETCH|SEARCH|STORE|COPY|MOVE|EXPUNGE)\b", m)]
    assert touching and all(
        re.search(r"\bUID (FETCH|SEARCH|STORE|COPY|MOVE|EXPUNGE)\b", m) for m in touching
    ), touching


def test_delete_post_action_expunges_only_what_was_stored(harness, dovecot):
    keep = dovecot.append("alice", "INBOX", mail(80, [("k.pdf", pdf_bytes("K"))], sender="x@y"))
    gone = dovecot.append("alice", "INBOX", mail(81, [("d.pdf", pdf_bytes("D"))]))
    h = harness(rules=[{"sender": ["*@supplier.example"], "post_action": "delete"}])
    h.start()
    wait_until(lambda: h.polled_after("INBOX", gone), 20, what="poll")
    assert dovecot.uids("alice", "INBOX") == [keep]
    rows = h.rows("SELECT filename, sha256 FROM documents")
    assert [r.filename for r in rows] == ["d.pdf"]
    # the original is safe in the blob store, by hash
    assert (h.tmp_path / "blobs").exists()
    assert any(rows[0].sha256 in str(p) for p in (h.tmp_path / "blobs").rglob("*"))


def test_an_oversized_message_without_message_id_is_rejected_once_across_a_reset(harness, dovecot):
    big = mail(90, [("big.pdf", pdf_bytes("B") * 200)], message_id=False)
    dovecot.append("alice", "Big", big)
    h = harness(folders=["Big"], max_message_bytes=64 * 1024)
    h.start()
    wait_until(lambda: h.polled_after("Big", 1), 20, what="first pass")
    first = h.intake.load_state("invoices", "Big")
    h.stop()
    dovecot.delete_folder("alice", "Big")
    dovecot.append("alice", "Big", big)
    h.start()
    wait_until(
        lambda: h.intake.load_state("invoices", "Big")["uidvalidity"] != first["uidvalidity"],
        20,
        what="second pass",
    )
    rows = h.rows("SELECT state, source_ref FROM docrelay_documents")
    assert len(rows) == 1 and rows[0].state == "rejected"
    assert rows[0].source_ref.startswith("envelope:")


NO_MOVE = "IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE UIDPLUS NAMESPACE UNSELECT LITERAL+"
"""Dovecot's capabilities after login, less MOVE: a server where a move is COPY and delete."""


def test_without_move_a_crash_between_copy_and_delete_copies_nothing_twice(
    tmp_path, dovecot_factory
):
    server = dovecot_factory(imap_capability=NO_MOVE)
    uids = [
        server.append("alice", "INBOX", mail(n, [(f"m{n}.pdf", pdf_bytes(f"M{n}"))]))
        for n in (21, 22)
    ]
    first = Harness(tmp_path, server, rules=[{"post_action": "none"}])
    first.start()
    wait_until(lambda: first.polled_after("INBOX", uids[-1]), 20, what="both taken")
    first.stop()
    # The crash: the first message was copied to Done, then the process died before deleting
    # it and before the folder's progress was saved.
    first.intake.save_state("invoices", "INBOX", {})
    with server.session("alice") as client:
        client.create_folder("Done")
        client.select_folder("INBOX")
        assert not client.has_capability("MOVE")
        client.copy([uids[0]], "Done")
    again = Harness(tmp_path, server, rules=[{"post_action": "move", "move_to": "Done"}])
    again.start()
    try:
        wait_until(lambda: server.uids("alice", "INBOX") == [], 20, what="the move")
    finally:
        again.stop()
        again.engine.dispose()
        first.engine.dispose()
    assert len(server.uids("alice", "Done")) == 2, "each message in Done once"
    assert first.rows("SELECT COUNT(*) FROM documents")[0][0] == 2


def test_a_locked_store_leaves_mail_on_the_server_until_it_is_back(harness, dovecot, caplog):
    """RELIABILITY 24 for mail: another process locks the store; the message waits on the
    server (one warning, no traceback) and is taken once the lock is gone."""
    import sqlite3

    h = harness(busy_timeout_ms=300)
    source = h.start()
    wait_until(lambda: source.health()["state"] == "ok", 20, what="connected")
    locker = sqlite3.connect(h.tmp_path / "d.db", isolation_level=None)
    with caplog.at_level(logging.WARNING, logger="connectors.sources.mailbox"):
        locker.execute("BEGIN EXCLUSIVE")
        try:
            uid = dovecot.append("alice", "INBOX", mail(31, [("late.pdf", pdf_bytes("L"))]))
            wait_until(lambda: source.health()["state"] == "store_unavailable", 20, what="the wait")
            assert "database is locked" in source.health()["reason"]
        finally:
            locker.execute("ROLLBACK")
            locker.close()
        wait_until(lambda: h.polled_after("INBOX", uid), 20, what="taken after the lock")
    assert [r.filename for r in h.rows("SELECT filename FROM documents")] == ["late.pdf"]
    assert source.health()["state"] == "ok"
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and warnings[0].exc_info is None, caplog.text


def test_r14_a_server_that_gives_no_size_cannot_make_a_big_mail_download_unbounded(
    harness, dovecot, monkeypatch
):
    """RELIABILITY 14 without RFC822.SIZE: the FETCH answers lose their sizes on the way (as
    from a server that omits them); a message is then read with a partial fetch of one byte
    over the limit, and one that fills it is rejected as too large."""
    from connectors.sources import mailbox as mailbox_mod

    limit = 64 * 1024
    big = dovecot.append("alice", "INBOX", mail(40, [("big.pdf", pdf_bytes("B") * 200)]))
    small = dovecot.append("alice", "INBOX", mail(41, [("small.pdf", pdf_bytes("S"))]))
    assert len(mail(40, [("big.pdf", pdf_bytes("B") * 200)])) > 4 * limit
    asked: list[tuple[list[int], list[str]]] = []
    received: dict[int, int] = {}
    real_connect = mailbox_mod.connect

    def connect(*args, **kwargs):
        client = real_connect(*args, **kwargs)
        real_fetch = client.fetch

        def fetch(uids, items):
            asked.append((list(uids), list(items)))
            answer = real_fetch(uids, items)
            for uid, data in answer.items():
                data.pop(b"RFC822.SIZE", None)
                for key, value in data.items():
                    if key.startswith(b"BODY[") and value is not None:
                        received[uid] = received.get(uid, 0) + len(value)
            return answer

        client.fetch = fetch
        return client

    monkeypatch.setattr(mailbox_mod, "connect", connect)
    h = harness(max_message_bytes=limit)
    h.start()
    wait_until(lambda: h.polled_after("INBOX", small), 20, what="poll")
    h.stop()
    rows = h.rows("SELECT filename, state, error FROM docrelay_documents ORDER BY 1")
    assert [(r.filename, r.state) for r in rows] == [
        ("Invoice 40.eml", "rejected"),
        ("small.pdf", "queued"),
    ]
    assert "too large" in rows[0].error and "gave no size" in rows[0].error, rows[0].error
    assert received[big] <= limit + 1, "read no more than one byte over the limit"
    bodies = [(uids, items) for uids, items in asked if any("BODY" in i for i in items)]
    assert bodies and all(items == [f"BODY.PEEK[]<0.{limit + 1}>"] for _, items in bodies)
    assert big in dovecot.uids("alice", "INBOX"), "the original stays in the mailbox"
    assert "$DocrelayTaken" not in dovecot.flags("alice", "INBOX")[big]
