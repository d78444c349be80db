"""The webhook destination against a real receiver under uvicorn that verifies every signature
with ``standardwebhooks`` and upserts by ``Idempotency-Key`` (``tests/webhook_receiver.py``).
"""

from __future__ import annotations

import base64
import dataclasses
import time
from collections import Counter
from datetime import date
from decimal import Decimal
from pathlib import Path

import pytest
from pydantic import ValidationError
from sqlalchemy import create_engine, text
from standardwebhooks import Webhook

from connectors.destinations.webhook import (
    WebhookDestination,
    WebhookDestinationSettings,
    message_id,
)
from connectors.errors import AuthFailed, TerminalError, TransientError
from daemon import config as config_mod
from tests.conformance.harness import context
from tests.conformance.test_sources_and_destinations import payload
from tests.daemon_proc import DaemonProcess, free_port, toml_table, wait_until, write_config
from tests.invoices import expected_fields, random_spec, write_invoice
from tests.servers import serve
from tests.webhook_receiver import SECRET, Receiver, create_app

KEY = "docrelay-42-hook"
TOKEN = "receiver-api-token-0123456789"
"""An extra header's value: a credential the receiver wants, hidden like the secret."""
OTHER_SECRET = "whsec_" + base64.b64encode(b"another-secret-of-32-bytes-long!").decode()


@pytest.fixture
def receiver():
    app = create_app()
    with serve(app) as url:
        state: Receiver = app.state.receiver
        state.url = f"{url}/hook"
        yield state


@pytest.fixture
def make(receiver, tmp_path):
    made: list[WebhookDestination] = []

    def build(**overrides) -> WebhookDestination:
        values = {"kind": "webhook", "url": receiver.url, "secret": SECRET, **overrides}
        destination = WebhookDestination(
            WebhookDestinationSettings.model_validate(values), context("hook", tmp_path)
        )
        made.append(destination)
        return destination

    yield build
    for destination in made:
        destination.close()


def test_many_threads_share_one_destination_without_a_failed_request(make, receiver):
    """Eight delivery threads (the pipeline's, the destination naming no concurrency) push
    at once through one client: none may fail for want of a pooled connection."""
    from concurrent.futures import ThreadPoolExecutor

    destination = make(max_retries=0)
    with ThreadPoolExecutor(8) as pool:
        refs = list(
            pool.map(lambda n: destination.deliver(payload(), f"{KEY}-{n}").ref, range(400))
        )
    assert len(set(refs)) == 400 and len(receiver.records) == 400


def test_a_delivery_is_signed_the_standard_way_and_carries_the_document(receiver, make):
    receipt = make().deliver(payload(), KEY)
    (post,) = receiver.posts()
    assert post.verified is True and post.answered == 201
    document = Webhook(SECRET).verify(post.body, post.headers)  # raises on a bad signature
    assert post.headers["idempotency-key"] == KEY
    assert post.headers["webhook-id"] == "docrelay-42-hook-v1" == message_id(KEY, 1)
    assert post.headers["docrelay-version"] == "1"
    assert post.headers["content-type"] == "application/json"
    assert post.headers["webhook-signature"].startswith("v1,")
    assert abs(int(post.headers["webhook-timestamp"]) - time.time()) < 5
    assert document["document_id"] == 42 and document["version"] == 1
    assert document["fields"] == {"invoice_number": "INV-42", "total_amount": "100"}
    assert document["corrected"] == []
    assert document["provenance"]["vendor"] == "local"
    assert document["provenance"]["idempotency_key"] == KEY
    assert document["line_items"][0]["quantity"] == "2"
    assert receipt.ref == "rec-1", "the receiver's id is the downstream reference"


def test_a_repeat_is_recognisable_and_a_new_version_updates_the_record(receiver, make):
    destination = make()
    first = destination.deliver(payload(), KEY)
    again = destination.deliver(payload(), KEY)  # after a crash: the same export again
    corrected = dataclasses.replace(payload(2, "120.00"), corrected=frozenset({"total_amount"}))
    update = destination.deliver(corrected, KEY)
    one, two, three = receiver.posts()
    assert one.headers["idempotency-key"] == two.headers["idempotency-key"] == KEY
    assert one.headers["webhook-id"] == two.headers["webhook-id"], "the same message"
    assert three.headers["idempotency-key"] == KEY, "the same record"
    assert three.headers["webhook-id"] == "docrelay-42-hook-v2" != one.headers["webhook-id"]
    assert three.headers["docrelay-version"] == "2"
    assert first.ref == again.ref == update.ref == "rec-1"
    (record,) = receiver.records.values()
    assert record["pushes"] == 3 and record["version"] == 2
    assert record["body"]["fields"]["total_amount"] == "120"
    assert record["body"]["corrected"] == ["total_amount"]
    assert all(post.verified for post in receiver.posts())


def test_a_503_is_retried_within_the_push_and_delivered(receiver, make):
    receiver.answer(503, {"error": "maintenance"})
    receipt = make().deliver(payload(), KEY)
    failed, delivered = receiver.posts()
    assert (failed.answered, delivered.answered) == (503, 201)
    assert failed.headers["webhook-id"] == delivered.headers["webhook-id"]
    assert delivered.verified and receipt.ref == "rec-1"
    assert len(receiver.records) == 1


def test_a_429_waits_for_retry_after_and_a_409_is_tried_again(receiver, make):
    receiver.answer(429, {"error": "slow down"}, {"Retry-After": "1"})
    receiver.answer(409, {"error": "a request with this key is in progress"})
    started = time.monotonic()
    make().deliver(payload(), KEY)
    assert time.monotonic() - started >= 1.0, "Retry-After honoured"
    throttled, conflict, delivered = receiver.posts()
    assert [p.answered for p in (throttled, conflict, delivered)] == [429, 409, 201]
    assert len({p.headers["webhook-id"] for p in receiver.posts()}) == 1
    # Signed per attempt: the retry after the wait carries a later timestamp of its own.
    assert int(conflict.headers["webhook-timestamp"]) > int(throttled.headers["webhook-timestamp"])
    assert conflict.headers["webhook-signature"] != throttled.headers["webhook-signature"]
    assert delivered.verified


def test_a_timeout_is_retried(receiver, make):
    receiver.answer(200, {"id": "too-late"}, delay=3.0)  # answers after our deadline
    receipt = make(timeout=0.5).deliver(payload(), KEY)
    assert receipt.ref == "rec-1"
    assert len(receiver.posts()) == 2


def test_retries_used_up_leave_a_transient_error_for_the_outbox(receiver, make):
    for _ in range(2):
        receiver.answer(502, "bad gateway")
    with pytest.raises(TransientError, match="502"):
        make(max_retries=1).deliver(payload(), KEY)
    assert len(receiver.posts()) == 2 and receiver.records == {}


def test_a_400_is_a_final_refusal_with_the_receivers_message(receiver, make):
    receiver.answer(400, {"error": "supplier VAT id unknown to the ERP"})
    with pytest.raises(TerminalError, match="supplier VAT id unknown to the ERP") as info:
        make().deliver(payload(), KEY)
    assert "400" in str(info.value)
    assert len(receiver.posts()) == 1, "a refusal is not retried"


def test_a_refused_signature_is_auth_failed(receiver, make):
    with pytest.raises(AuthFailed, match="401"):
        make(secret=OTHER_SECRET).deliver(payload(), KEY)
    (post,) = receiver.posts()
    assert post.verified is False, "the receiver checked the signature and refused it"
    receiver.answer(403, {"error": "this client may not post invoices"})
    with pytest.raises(AuthFailed, match="403"):
        make().deliver(payload(), KEY)
    assert receiver.records == {}


def test_secrets_never_appear_in_errors(receiver, make):
    destination = make(headers={"X-Api-Key": TOKEN})
    receiver.answer(400, f"rejected: secret={SECRET} key={TOKEN} raw={SECRET[6:]}")
    with pytest.raises(TerminalError) as refused:
        destination.deliver(payload(), KEY)
    receiver.answer(401, {"error": f"unknown key {TOKEN}"})
    with pytest.raises(AuthFailed) as denied:
        destination.deliver(payload(), KEY)
    assert receiver.posts()[0].headers["x-api-key"] == TOKEN, "the extra header was sent"
    for error in (refused.value, denied.value):
        shown = f"{error} {error.detail or ''} {error!r}"
        assert "***" in shown
        for secret in (SECRET, SECRET[6:], TOKEN):
            assert secret not in shown
    with pytest.raises(ValidationError) as bad:
        WebhookDestinationSettings.model_validate(
            {"url": receiver.url, "secret": "whsec_c2hvcnQ="}  # valid base64, 5 bytes
        )
    assert "c2hvcnQ" not in str(bad.value)


def test_the_reference_is_the_location_or_else_the_message_id(receiver, make):
    destination = make()
    receiver.answer(202, "queued", {"Location": "https://erp.example/invoices/7"})
    assert destination.deliver(payload(), KEY).ref == "https://erp.example/invoices/7"
    receiver.answer(204)
    assert destination.deliver(payload(3), KEY).ref == "docrelay-42-hook-v3"
    receiver.answer(200, "not json", {"Content-Type": "application/json"})
    assert destination.deliver(payload(4), KEY).ref == "docrelay-42-hook-v4"


def test_the_probe_creates_nothing_and_an_unreachable_receiver_is_transient(receiver, make):
    lines = make().probe()
    assert any("answered OPTIONS with 204" in line for line in lines)
    assert [s.method for s in receiver.seen] == ["OPTIONS"] and receiver.records == {}
    with_login = receiver.url.replace("http://", "http://user:url-password-1@")
    shown = " ".join(make(url=with_login + "?token=query-token-2").probe())
    assert "url-password-1" not in shown and "query-token-2" not in shown
    closed = f"http://127.0.0.1:{free_port()}/hook"
    with pytest.raises(TransientError, match="ConnectError"):
        make(url=closed).probe()
    with pytest.raises(TransientError):
        make(url=closed, max_retries=0).deliver(payload(), KEY)


def test_config_errors_name_the_key(tmp_path):
    path = tmp_path / "config.toml"
    path.write_text(
        "[destinations.hook]\n"
        'kind = "webhook"\n'
        'url = "ftp://example.com/in"\n'
        'secret = "whsec_not base64!"\n'
        'headers = { "webhook-id" = "mine", "Bad Name" = "x" }\n'
        "timeout = 0\n"
        "max_retries = -1\n"
        'speed = "fast"\n'
    )
    with pytest.raises(config_mod.ConfigError) as info:
        config_mod.load(path)
    shown = info.value.render()
    found = {line.split(": ", 2)[1] for line in shown.splitlines() if "destinations.hook" in line}
    assert found == {
        f"destinations.hook.{key}"
        for key in ("url", "secret", "headers", "timeout", "max_retries", "speed")
    }
    assert "not base64!" not in shown
    secret = tmp_path / "hook-secret"
    secret.write_text(SECRET + "\n")
    ok = tmp_path / "ok.toml"
    ok.write_text(
        f'[destinations.hook]\nkind = "webhook"\nurl = "https://erp.example/in"\n'
        f'secret_file = "{secret}"\nconcurrency = 4\n'
        'headers = { "X-Api-Key" = "erp-key-0123456789", "X-Team" = "ap" }\n'
    )
    loaded = config_mod.load(ok).destinations["hook"]
    assert loaded.secret.get_secret_value() == SECRET and loaded.concurrency == 4
    hidden = config_mod.load(ok).secrets
    assert SECRET in hidden, "kept out of the logs"
    assert "erp-key-0123456789" in hidden and "ap" not in hidden, "an API key in headers too"


# --------------------------------------------------------------------------- end to end


def drop(inbox: Path, name: str, spec) -> None:
    tmp = inbox / f"{name}.part"
    write_invoice(tmp, spec)
    tmp.rename(inbox / name)


@pytest.mark.e2e
def test_the_daemon_delivers_each_document_to_the_webhook_exactly_once(tmp_path):
    app = create_app()
    receiver: Receiver = app.state.receiver
    receiver.answer(503, "busy")  # failures the kit and the outbox must ride out
    receiver.answer(429, {"error": "slow down"}, {"Retry-After": "0.2"})
    receiver.answer(502, "bad gateway")
    with serve(app) as url:
        hook = toml_table(
            "[destinations.hook]",
            {"kind": "webhook", "url": f"{url}/hook", "secret": SECRET, "timeout": 5},
        )
        config = write_config(tmp_path, port=free_port(), extra=hook)
        config.write_text(
            config.read_text().replace(
                'destinations = ["outbox"]', 'destinations = ["outbox", "hook"]'
            )
        )
        inbox = tmp_path / "inbox"
        inbox.mkdir()
        specs = {f"invoice-{seed}.pdf": random_spec(seed) for seed in range(4)}
        for name, spec in specs.items():
            drop(inbox, name, spec)
        daemon = DaemonProcess(config).start()
        try:
            wait_until(
                lambda: len(receiver.records) == len(specs), 60, what="every document received"
            )
            time.sleep(1.5)  # anything pushed twice would arrive now
            engine = create_engine(f"sqlite:///{tmp_path}/var/docrelay.db")
            with engine.connect() as conn:
                refs = wait_until(
                    lambda: dict(
                        conn.execute(
                            text(
                                "SELECT idempotency_key, downstream_ref FROM deliveries "
                                "WHERE destination = 'hook' AND state = 'delivered'"
                            )
                        ).all()
                    )
                    if conn.execute(
                        text("SELECT COUNT(*) FROM deliveries WHERE destination = 'hook' "
                             "AND state = 'delivered'")
                    ).scalar() == len(specs)
                    else None,
                    30,
                    what="deliveries recorded",
                )  # fmt: skip
                filenames = dict(conn.execute(text("SELECT id, filename FROM documents")).all())
                hashes = dict(conn.execute(text("SELECT id, sha256 FROM documents")).all())
            engine.dispose()
        finally:
            daemon.stop()
    accepted = Counter(p.headers["idempotency-key"] for p in receiver.posts() if p.verified)
    assert set(accepted) == set(receiver.records) and set(accepted.values()) == {1}, accepted
    assert [p.answered for p in receiver.posts()].count(503) == 1
    for key, record in receiver.records.items():
        body = record["body"]
        assert refs[key] == record["id"], "the receiver's id recorded as the reference"
        doc = body["document_id"]
        assert key == f"docrelay-{doc}-{hashes[doc][:8]}-hook" and body["version"] == 1
        spec = specs[filenames[body["document_id"]]]
        for field, want in expected_fields(spec).items():
            got = body["fields"].get(field)
            if isinstance(want, Decimal):
                got = Decimal(got)
            elif isinstance(want, date):
                got = date.fromisoformat(got)
            assert got == want, (field, got, want)
    assert len(list((tmp_path / "outbox").glob("*.json"))) == len(specs), "the folder too"


def test_the_destinations_concurrency_sizes_its_pool(tmp_path, receiver):
    """A webhook with `concurrency` gets that many delivery threads; the others keep theirs."""
    from daemon.runtime import Daemon

    raw = {
        "store": {"url": f"sqlite:///{tmp_path}/d.db", "blob_dir": str(tmp_path / "blobs")},
        "web": {"enabled": False},
        "pipeline": {"delivery_concurrency": 2},
        "vendors": {"local": {"kind": "local"}},
        "destinations": {
            "out": {"kind": "folder", "path": str(tmp_path / "out")},
            "hook": {"kind": "webhook", "url": receiver.url, "secret": SECRET, "concurrency": 5},
        },
        "routes": [{"match": {}, "vendor": "local", "destinations": ["out", "hook"]}],
    }
    daemon = Daemon(config_mod.validate(raw, Path("test.toml")))
    daemon.open()
    daemon.start()
    try:
        assert daemon.delivery_pools["hook"].size == 5
        assert daemon.delivery_pools["out"].size == 2, "the others keep the pipeline's"
    finally:
        daemon.stop()
