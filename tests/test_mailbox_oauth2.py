"""XOAUTH2 against Dovecot's oauth2 passdb, which validates tokens at an emulated identity
provider: refresh before expiry, rotated refresh tokens persisted, refusal → needs re-auth."""

from __future__ import annotations

import json
import time

import pytest
from sqlalchemy import text

from tests.daemon_proc import wait_until
from tests.dovecot import dovecot_factory  # noqa: F401
from tests.idp import IdentityProvider
from tests.servers import serve
from tests.test_mailbox import Harness, mail, pdf_bytes


@pytest.fixture
def idp():
    provider = IdentityProvider()
    with serve(provider.app) as url:
        provider.url = url  # type: ignore[attr-defined]
        yield provider


def oauth_harness(tmp_path, server, idp, refresh_token: str, **settings) -> Harness:
    return Harness(
        tmp_path,
        server,
        password=None,
        oauth2={
            "token_url": f"{idp.url}/token",
            "client_id": idp.client_id,
            "refresh_token": refresh_token,
            "refresh_margin": settings.pop("refresh_margin", 300),
        },
        **settings,
    )


def test_xoauth2_login_takes_mail_and_keeps_the_rotated_refresh_token(
    tmp_path, dovecot_factory, idp
):
    server = dovecot_factory(oauth2_introspection_url=f"{idp.url}/introspect")
    first = idp.issue_refresh_token()
    uid = server.append("alice", "INBOX", mail(40, [("o.pdf", pdf_bytes("O"))]))
    h = oauth_harness(tmp_path, server, idp, first)
    source = h.start()
    wait_until(lambda: h.polled_after("INBOX", uid), 20, what="mail over XOAUTH2")
    assert source.health()["state"] == "ok"
    saved = json.loads((tmp_path / "state" / "oauth2.json").read_text())
    assert saved["refresh_token"] != first and saved["refresh_token"] in idp.refresh_tokens
    assert first not in idp.refresh_tokens, "the provider rotated it"
    assert (tmp_path / "state" / "oauth2.json").stat().st_mode & 0o077 == 0
    # A restart uses the saved, rotated token: the configured one no longer works.
    h.stop()
    later = server.append("alice", "INBOX", mail(41, [("p.pdf", pdf_bytes("P"))]))
    h.start()
    wait_until(lambda: h.polled_after("INBOX", later), 20, what="mail after restart")
    assert idp.refreshes[-1] == saved["refresh_token"]
    h.stop()


def test_the_access_token_is_renewed_before_it_expires(tmp_path, dovecot_factory, idp):
    idp.expires_in = 3.0
    server = dovecot_factory(oauth2_introspection_url=f"{idp.url}/introspect")
    h = oauth_harness(
        tmp_path, server, idp, idp.issue_refresh_token(), refresh_margin=1.5, poll_interval=30
    )
    h.start()
    wait_until(lambda: h.intake.load_state("invoices", "INBOX") is not None, 20, what="login")
    time.sleep(4)  # the first access token has expired meanwhile
    uid = server.append("alice", "INBOX", mail(42, [("q.pdf", pdf_bytes("Q"))]))
    wait_until(lambda: h.polled_after("INBOX", uid), 20, what="mail with a renewed token")
    assert len(idp.refreshes) >= 2
    h.stop()


def test_a_refused_refresh_token_means_needs_reauth_and_others_keep_working(
    tmp_path, dovecot_factory, idp
):
    server = dovecot_factory(oauth2_introspection_url=f"{idp.url}/introspect")
    revoked = oauth_harness(tmp_path / "a", server, idp, "rt-never-issued")
    source = revoked.start()
    wait_until(lambda: source.health()["state"] == "needs_reauth", 20, what="needs re-auth")
    assert "invalid_grant" in source.health()["reason"]
    with revoked.engine.connect() as conn:
        rows = conn.execute(text("SELECT name, state, reason FROM connector_health")).all()
    assert rows[0][:2] == ("invoices", "auth_failed") and "invalid_grant" in rows[0][2]
    # Another account (password) is not held up by it.
    other = Harness(tmp_path / "b", server, username="bob", password="secret")
    uid = server.append("bob", "INBOX", mail(43, [("r.pdf", pdf_bytes("R"))]))
    other.start()
    wait_until(lambda: other.polled_after("INBOX", uid), 20, what="the other account")
    other.stop()
    revoked.stop()


def test_a_newly_configured_refresh_token_wins_over_the_saved_one(tmp_path, dovecot_factory, idp):
    server = dovecot_factory(oauth2_introspection_url=f"{idp.url}/introspect")
    h = oauth_harness(tmp_path, server, idp, idp.issue_refresh_token())
    h.start()
    wait_until(lambda: h.intake.load_state("invoices", "INBOX") is not None, 20, what="login")
    h.stop()
    idp.revoke_everything()  # the account was re-authorised: only the new token is valid
    fresh = idp.issue_refresh_token()
    again = oauth_harness(tmp_path, server, idp, fresh)
    source = again.start()
    uid = server.append("alice", "INBOX", mail(44, [("s.pdf", pdf_bytes("S"))]))
    wait_until(lambda: again.polled_after("INBOX", uid), 20, what="mail with the new token")
    assert source.health()["state"] == "ok"
    assert fresh in idp.refreshes
    again.stop()
