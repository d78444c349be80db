"""The throw-away Dovecot used by the IMAP tests behaves like a real mail server.

Everything here talks to a real Dovecot over real sockets with imaplib/IMAPClient: if these pass,
tests built on the fixture exercise genuine IMAP behaviour (TLS, UIDPLUS, IDLE, UIDVALIDITY,
XOAUTH2 via token introspection), not a stand-in.
"""

from __future__ import annotations

import imaplib
import ssl
import threading
import time
from collections.abc import Callable
from email.message import EmailMessage
from urllib.parse import parse_qs

import pytest
from imapclient import IMAPClient
from imapclient.exceptions import LoginError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from tests.dovecot import Dovecot, DovecotFactory, dovecot, dovecot_factory  # noqa: F401
from tests.servers import serve


def message(subject: str, body: str = "hello\n") -> bytes:
    msg = EmailMessage()
    msg["From"] = "sender@example.com"
    msg["To"] = "alice@example.com"
    msg["Subject"] = subject
    msg.set_content(body)
    return msg.as_bytes().replace(b"\n", b"\r\n")


def strict_context(server: Dovecot) -> ssl.SSLContext:
    """Verify like Python 3.13+ does by default, so the certificate keeps working there."""
    ctx = server.ssl_context()
    ctx.verify_flags |= ssl.VERIFY_X509_STRICT
    return ctx


def test_starts_fast_and_listens_only_on_loopback(dovecot: Dovecot) -> None:
    started = time.monotonic()
    other = Dovecot().start()
    try:
        elapsed = time.monotonic() - started
        print(f"dovecot start-up: {elapsed * 1000:.0f} ms")
        assert elapsed < 3
        assert {other.imap_port, other.imaps_port}.isdisjoint(
            {dovecot.imap_port, dovecot.imaps_port}
        )
    finally:
        other.cleanup()
    assert not other.root.exists()
    config = dovecot.config_path.read_text()
    assert "listen = 127.0.0.1\n" in config
    assert "/etc/dovecot" not in config


def test_password_login_over_plain_starttls_and_implicit_tls(dovecot: Dovecot) -> None:
    with IMAPClient(dovecot.host, dovecot.imap_port, ssl=False, timeout=10) as client:
        capabilities = client.capabilities()
        assert b"STARTTLS" in capabilities and b"AUTH=PLAIN" in capabilities
        assert b"AUTH=XOAUTH2" not in capabilities  # only offered with an introspection URL
        client.login("alice", "secret")
        assert client.folder_exists("INBOX")
        client.logout()

    with IMAPClient(dovecot.host, dovecot.imap_port, ssl=False, timeout=10) as client:
        client.starttls(strict_context(dovecot))
        client.login("alice", "secret")
        assert client.select_folder("INBOX")[b"EXISTS"] == 0
        client.logout()

    with IMAPClient(
        dovecot.host, dovecot.imaps_port, ssl=True, ssl_context=strict_context(dovecot), timeout=10
    ) as client:
        client.login("bob", "secret")
        assert client.folder_exists("INBOX")
        client.logout()

    # imaplib from the standard library, the way a client without IMAPClient would do it.
    with imaplib.IMAP4(dovecot.host, dovecot.imap_port, timeout=10) as conn:
        conn.starttls(dovecot.ssl_context())
        assert conn.login("bob", "secret")[0] == "OK"


def test_certificate_is_really_verified(dovecot: Dovecot) -> None:
    """Without the fixture's cafile the self-signed certificate must be rejected."""
    with pytest.raises(ssl.SSLCertVerificationError):
        IMAPClient(
            dovecot.host,
            dovecot.imaps_port,
            ssl=True,
            ssl_context=ssl.create_default_context(),
            timeout=10,
        )
    # ...and it names localhost as well as 127.0.0.1.
    with IMAPClient("localhost", dovecot.imaps_port, ssl_context=dovecot.ssl_context()) as c:
        c.login("alice", "secret")
        c.logout()


def test_wrong_password_and_unknown_user_are_refused(dovecot: Dovecot) -> None:
    for user, password in (("alice", "wrong"), ("mallory", "secret")):
        with IMAPClient(dovecot.host, dovecot.imap_port, ssl=False, timeout=10) as client:
            with pytest.raises(LoginError):
                client.login(user, password)


def test_custom_users(dovecot_factory: DovecotFactory) -> None:
    server = dovecot_factory(users={"carol": "pa ss w0rd"})
    assert server.append("carol", "INBOX", message("hi")) == 1
    with IMAPClient(server.host, server.imap_port, ssl=False, timeout=10) as client:
        with pytest.raises(LoginError):
            client.login("alice", "secret")  # the defaults are replaced, not added to


def test_append_returns_increasing_uids_found_by_uid_search(dovecot: Dovecot) -> None:
    uids = [dovecot.append("alice", "INBOX", message(f"m{i}")) for i in range(3)]
    assert uids == sorted(uids) and len(set(uids)) == 3
    nested = dovecot.append("alice", "Invoices/2024", message("nested"), flags=[r"\Flagged"])
    assert dovecot.list_folders("alice") == ["INBOX", "Invoices", "Invoices/2024"]
    assert dovecot.flags("alice", "Invoices/2024") == {nested: {r"\Flagged"}}

    with dovecot.session("alice") as client:
        client.select_folder("INBOX")
        assert sorted(client.search("ALL")) == uids
        assert client.search(["SUBJECT", "m1"]) == [uids[1]]
    assert dovecot.uids("alice") == uids
    headers = dovecot.fetch_headers("alice", "INBOX", uids[:1])
    assert b"Subject: m0" in headers[uids[0]]
    assert dovecot.uids("bob") == []  # users are separate mailboxes


def test_peek_does_not_set_seen_but_body_fetch_does(dovecot: Dovecot) -> None:
    raw = message("peek me")
    uid = dovecot.append("alice", "INBOX", raw)
    with dovecot.session("alice") as client:
        client.select_folder("INBOX")
        assert client.fetch([uid], ["BODY.PEEK[]"])[uid][b"BODY[]"] == raw
    assert dovecot.flags("alice") == {uid: set()}
    assert dovecot.fetch_raw("alice", "INBOX", uid) == raw
    assert dovecot.flags("alice") == {uid: set()}

    with dovecot.session("alice") as client:
        client.select_folder("INBOX")
        client.fetch([uid], ["BODY[]"])
    assert dovecot.flags("alice") == {uid: {r"\Seen"}}


def test_idle_client_hears_about_append_from_another_connection(dovecot: Dovecot) -> None:
    with dovecot.session("alice") as client:
        assert b"IDLE" in client.capabilities()
        client.select_folder("INBOX")
        client.idle()
        try:
            started = time.monotonic()
            appender = threading.Thread(
                target=dovecot.append, args=("alice", "INBOX", message("new"))
            )
            appender.start()
            responses: list = []
            while time.monotonic() - started < 2 and not any(
                r[1:2] == (b"EXISTS",) for r in responses
            ):
                responses += client.idle_check(timeout=0.2)
            appender.join(5)
        finally:
            client.idle_done()
        assert (1, b"EXISTS") in responses, responses
        print(f"IDLE notified after {(time.monotonic() - started) * 1000:.0f} ms")


def test_recreating_a_folder_changes_uidvalidity(dovecot: Dovecot) -> None:
    dovecot.create_folder("alice", "Scans")
    before = dovecot.uidvalidity("alice", "Scans")
    dovecot.append("alice", "Scans", message("one"))
    dovecot.delete_folder("alice", "Scans")
    assert "Scans" not in dovecot.list_folders("alice")
    dovecot.create_folder("alice", "Scans")
    after = dovecot.uidvalidity("alice", "Scans")
    assert after != before
    assert dovecot.uids("alice", "Scans") == []
    assert dovecot.append("alice", "Scans", message("two")) == 1


def test_append_many_is_fast(dovecot: Dovecot) -> None:
    messages = [
        f"From: s@example.com\r\nSubject: bulk {i}\r\n\r\nbody {i}\r\n".encode()
        for i in range(2000)
    ]
    started = time.monotonic()
    uids = dovecot.append_many("bob", "Bulk", messages)
    elapsed = time.monotonic() - started
    print(f"append_many: 2000 messages in {elapsed:.2f} s")
    assert uids == list(range(1, 2001))
    assert dovecot.uids("bob", "Bulk") == uids
    assert elapsed < 20
    assert dovecot.append_many("bob", "Bulk", messages[:3], flags=[r"\Seen"]) == [2001, 2002, 2003]
    assert dovecot.flags("bob", "Bulk")[2002] == {r"\Seen"}


# -- OAuth2 ---------------------------------------------------------------------------------


def introspection_app(seen: list[dict[str, list[str]]]) -> Starlette:
    """RFC 7662-style endpoint: one good token for alice, everything else inactive."""

    async def introspect(request: Request) -> JSONResponse:
        form = parse_qs((await request.body()).decode())
        seen.append(form)
        if form.get("token") == ["good-token"]:
            return JSONResponse({"active": True, "username": "alice"})
        if form.get("token") == ["revoked-token"]:  # only "active" tells it apart
            return JSONResponse({"active": False, "username": "alice"})
        return JSONResponse({"active": False})

    return Starlette(routes=[Route("/introspect", introspect, methods=["POST"])])


def xoauth2(user: str, token: str) -> Callable[[bytes], bytes]:
    """imaplib authobject: the token first, then an empty reply to the error challenge."""
    sent = []

    def respond(_challenge: bytes) -> bytes:
        if sent:
            return b""
        sent.append(True)
        return f"user={user}\x01auth=Bearer {token}\x01\x01".encode()

    return respond


def test_xoauth2_with_token_introspection(dovecot_factory: DovecotFactory) -> None:
    seen: list[dict[str, list[str]]] = []
    with serve(introspection_app(seen)) as base:
        server = dovecot_factory(oauth2_introspection_url=f"{base}/introspect")

        with imaplib.IMAP4(server.host, server.imap_port, timeout=10) as conn:
            assert "AUTH=XOAUTH2" in conn.capabilities
            conn.starttls(server.ssl_context())
            typ, _ = conn.authenticate("XOAUTH2", xoauth2("alice", "good-token"))
            assert typ == "OK"
            assert conn.select("INBOX")[0] == "OK"
        assert seen[-1]["token"] == ["good-token"]

        # Refused for good (AUTHENTICATIONFAILED), not a temporary failure: an unknown token,
        # an inactive one, and a valid token presented for somebody else.
        for user, token in (
            ("alice", "bad-token"),
            ("alice", "revoked-token"),
            ("bob", "good-token"),
        ):
            with imaplib.IMAP4(server.host, server.imap_port, timeout=10) as conn:
                with pytest.raises(imaplib.IMAP4.error, match="AUTHENTICATIONFAILED"):
                    conn.authenticate("XOAUTH2", xoauth2(user, token))
        assert [f["token"] for f in seen[1:]] == [["bad-token"], ["revoked-token"], ["good-token"]]

        # OAUTHBEARER goes through the same passdb; IMAPClient speaks it.
        with server.client(security="ssl") as client:
            client.oauthbearer_login("alice", "good-token")
            assert client.folder_exists("INBOX")
            client.logout()

        # Passwords keep working next to tokens, and tokens are not passwords.
        with server.session("bob") as client:
            assert client.folder_exists("INBOX")
        with IMAPClient(server.host, server.imap_port, ssl=False, timeout=10) as client:
            with pytest.raises(LoginError):
                client.login("alice", "good-token")
