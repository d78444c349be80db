"""The engine's contract through the real daemon, with the test-only testkit vendor and its
emulator on loopback: a synchronous vendor with a person's review after the result, a review
before the result, callbacks that are authenticated by a token in their path (forged, repeated
and stale ones refused), a crash after the vendor answered, lease heartbeats across two
daemons on one PostgreSQL, and feedback the vendor refuses shown and retried."""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, text

from tests.conformance.testkit.emulator import Options, create_app
from tests.daemon_proc import DaemonProcess, toml_table, wait_until, write_config
from tests.invoices import expected_fields, random_spec, render_pdf
from tests.servers import serve

RUN = "tests.conformance.testkit.run"


def kit_config(tmp_path: Path, url: str, *, store_url: str | None = None, **keys: Any) -> Path:
    values = {
        "kind": "testkit",
        "base_url": f"{url}/api",
        "password": "kit-secret",
        "poll_interval": 30,  # slow polls: a quick finish shows a callback woke the daemon
        **keys,
    }
    return write_config(
        tmp_path, store_url=store_url, vendor="kit", extra=toml_table("[vendors.kit]", values)
    )


def query(tmp_path: Path, sql: str, **params: Any) -> list[Any]:
    engine = create_engine(f"sqlite:///{tmp_path}/var/docrelay.db")
    try:
        with engine.connect() as conn:
            return [tuple(r) for r in conn.execute(text(sql), params)]
    finally:
        engine.dispose()


def cli(config: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [sys.executable, "-m", RUN, "--config", str(config), *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=config.parent,
    )
    assert not check or done.returncode == 0, done.stderr
    return done


def drop(tmp_path: Path, name: str, seed: int) -> dict[str, object]:
    spec = random_spec(seed)
    inbox = tmp_path / "inbox"
    inbox.mkdir(exist_ok=True)
    (inbox / f".{name}").write_bytes(render_pdf(spec))
    (inbox / f".{name}").rename(inbox / name)
    return expected_fields(spec)


def exported(tmp_path: Path, document_id: int = 1) -> dict[str, Any] | None:
    path = tmp_path / "outbox" / f"{document_id}.json"
    return json.loads(path.read_text()) if path.exists() else None


def callback(daemon: DaemonProcess, tail: str, **body: Any) -> httpx.Response:
    payload = {"event": "review.completed", "event_id": str(uuid.uuid4()), **body}
    return httpx.post(f"{daemon.url}/webhooks/kit/{tail}", json=payload, timeout=10)


@pytest.mark.e2e
def test_a_synchronous_vendor_with_review_after_the_result_and_callbacks_by_path(tmp_path):
    app = create_app(Options(review="after"))
    state = app.state.emulator
    token = secrets.token_urlsafe(24)
    with serve(app) as url:
        config = kit_config(tmp_path, url, mode="sync", callback_token=token)
        daemon = DaemonProcess(config, module=RUN).start()
        try:
            expected = drop(tmp_path, "hitl.pdf", 21)
            wait_until(
                lambda: query(tmp_path, "SELECT state FROM submissions") == [("review",)],
                20,
                what="waiting for the review",
            )
            assert len(state.documents) == 1
            uploads = state.requests.entries(method="POST", path="/api/documents")
            assert len(uploads) == 1 and uploads[0].attributes["mode"] == "sync"
            assert not state.requests.entries(method="GET"), "a synchronous vendor is not polled"
            (row,) = query(
                tmp_path, "SELECT state, review_reason, extraction_version FROM docrelay_documents"
            )
            assert row[0] == "review" and "confidence thresholds" in row[1] and row[2] == 1
            assert exported(tmp_path) is None, "nothing leaves before the review"
            # Anything but the configured token is refused, and changes nothing.
            assert callback(daemon, "not-the-token", document=1).status_code == 404
            assert httpx.post(f"{daemon.url}/webhooks/kit", json={}).status_code == 404
            stale = callback(daemon, token, document=1, sent_at=time.time() - 600)
            assert stale.status_code == 401
            # A person finishes the review at the vendor, changing the total; its callback
            # (to the URL the daemon gave at upload) wakes the document long before a poll.
            httpx.post(
                f"{url}/_emulator/documents/1/review", json={"set": {"total_amount": "999.99"}}
            ).raise_for_status()
            done = wait_until(lambda: exported(tmp_path), 15, what="the reviewed export")
            assert done["fields"]["total_amount"] == "999.99"
            assert done["fields"]["invoice_number"] == expected["invoice_number"]
            assert done["quality"] == {"all_confidence_thresholds_met": True}
            assert query(tmp_path, "SELECT version, review_reason IS NULL FROM extractions") == [
                (1, 0),
                (2, 1),
            ]
            attempts = state.callbacks.attempts()
            events = [(a.tags["event"], a.status) for a in attempts]
            assert events == [("document.ready", 200), ("review.completed", 200)]
            assert {a.url for a in attempts} == {f"{daemon.url}/webhooks/kit/{token}"}
            # A repeated event id is answered but not acted on again.
            event = str(uuid.uuid4())
            first = callback(daemon, token, document=1, event_id=event, sent_at=time.time())
            again = callback(daemon, token, document=1, event_id=event, sent_at=time.time())
            assert first.json() == {"accepted": 1} and again.json() == {"accepted": 0}
            assert len(state.documents) == 1, "one upload, one extraction paid for"
        finally:
            assert daemon.stop() == 0
    assert token not in daemon.log(), "the callback token is a secret"


@pytest.mark.e2e
def test_a_review_before_the_result_shows_in_status_and_ends_by_callback(tmp_path):
    app = create_app(Options(review="before", delay=0.2))
    state = app.state.emulator
    token = secrets.token_urlsafe(24)
    with serve(app) as url:
        config = kit_config(tmp_path, url, callback_token=token, poll_interval=0.3)
        daemon = DaemonProcess(config, module=RUN).start()
        try:
            drop(tmp_path, "split.pdf", 22)
            wait_until(
                lambda: query(tmp_path, "SELECT state FROM submissions") == [("review",)],
                20,
                what="in review",
            )
            shown = json.loads(cli(config, "status", "--json").stdout)
            (waiting,) = shown["in_review"]
            assert waiting["reason"] == "confirm the split" and waiting["vendor"] == "kit"
            assert "waiting for review at the vendor" in cli(config, "status").stdout
            assert query(tmp_path, "SELECT key, value FROM submission_keys") == [
                ("review_id", "R1")
            ]
            httpx.post(f"{url}/_emulator/documents/1/review", json={}).raise_for_status()
            wait_until(lambda: exported(tmp_path), 15, what="exported after the review")
            assert [a.tags["event"] for a in state.callbacks.attempts()] == ["review.completed"]
            trail = query(
                tmp_path, "SELECT from_state, to_state FROM events WHERE kind = 'transition'"
            )
            assert ("processing", "review") in trail and ("review", "fetched") in trail
        finally:
            assert daemon.stop() == 0


@pytest.mark.e2e
def test_r01_a_crash_after_the_vendor_answered_is_reconciled_not_paid_twice(tmp_path):
    app = create_app(Options())
    state = app.state.emulator
    with serve(app) as url:
        config = kit_config(tmp_path, url, mode="sync")
        crashing = DaemonProcess(
            config, env={"DOCRELAY_CRASH_AT": "after_upload_response"}, module=RUN
        ).start()
        drop(tmp_path, "once.pdf", 23)
        crashing.wait_exit(30)
        assert len(state.documents) == 1, "the vendor extracted it before the crash"
        assert query(tmp_path, "SELECT COUNT(*) FROM extractions") == [(0,)]
        daemon = DaemonProcess(config, module=RUN).start()
        try:
            wait_until(lambda: exported(tmp_path), 20, what="exported after the restart")
        finally:
            assert daemon.stop() == 0
    assert len(state.documents) == 1, "the restart found the first extraction"
    assert len(state.requests.entries(method="POST", path="/api/documents")) == 1
    assert state.requests.entries(method="GET", path="/api/documents"), "it looked it up"
    assert query(tmp_path, "SELECT COUNT(*) FROM extractions") == [(1,)]


@pytest.mark.e2e
@pytest.mark.postgres
def test_a_long_synchronous_call_keeps_its_lease_across_two_daemons(tmp_path, pg_url):
    app = create_app(Options(sync_delay=12))
    state = app.state.emulator
    with serve(app) as url:
        configs = []
        for name in ("one", "two"):
            root = tmp_path / name
            root.mkdir()
            config = kit_config(root, url, store_url=pg_url, mode="sync")
            shared = config.read_text().replace(f"{root}/var/blobs", f"{tmp_path}/blobs")
            config.write_text(shared.replace("lease_seconds = 30", "lease_seconds = 5"))
            configs.append(config)
        document = tmp_path / "slow.pdf"
        document.write_bytes(render_pdf(random_spec(24)))
        cli(configs[0], "submit", str(document))
        daemons = [DaemonProcess(c, module=RUN).start() for c in configs]
        try:
            engine = create_engine(pg_url)
            with engine.connect() as conn:
                wait_until(
                    lambda: conn.execute(text("SELECT state FROM submissions")).scalar() == "done",
                    40,
                    what="done after a 12 s extraction",
                )
                expired = conn.execute(
                    text("SELECT COUNT(*) FROM events WHERE kind = 'lease_expired'")
                ).scalar()
                uploaders = conn.execute(
                    text("SELECT COUNT(DISTINCT actor) FROM events WHERE to_state = 'uploading'")
                ).scalar()
            engine.dispose()
        finally:
            for daemon in daemons:
                assert daemon.stop() == 0
    assert len(state.documents) == 1, "never taken over while the call ran"
    assert expired == 0 and uploaders == 1


@pytest.mark.e2e
def test_feedback_the_vendor_refuses_is_shown_and_retried(tmp_path):
    app = create_app(Options())
    with serve(app) as url:
        config = kit_config(tmp_path, url, poll_interval=0.3)
        daemon = DaemonProcess(
            config, module=RUN, env={"DOCRELAY_PIPELINE__SWEEP_INTERVAL": "2"}
        ).start()
        try:
            drop(tmp_path, "fed-back.pdf", 25)
            wait_until(lambda: exported(tmp_path), 20, what="exported")
            httpx.post(
                f"{url}/_emulator/documents/1/lock", json={"fields": ["invoice_number"]}
            ).raise_for_status()
            lines = cli(config, "correct", "1", "invoice_number=X-77", "total_amount=1.00").stdout
            assert "exported again: outbox v2" in lines
            wait_until(
                lambda: ("refused",) in query(tmp_path, "SELECT state FROM feedback"),
                40,
                what="a refused correction",
            )
            status = cli(config, "status").stdout
            assert "feedback not taken" in status and "the value was posted already" in status
            (doc,) = httpx.get(f"{url}/_emulator/documents").json()["results"]
            assert [f["field"] for f in doc["feedback"]] == ["total_amount"]
            httpx.post(f"{url}/_emulator/documents/1/lock", json={"fields": []})
            assert "1 feedback item(s)" in cli(config, "retry", "1", "--state", "refused").stdout
            wait_until(
                lambda: (
                    query(tmp_path, "SELECT state FROM feedback WHERE field = 'invoice_number'")
                    == [("sent",)]
                ),
                40,
                what="sent after the retry",
            )
            wait_until(lambda: exported(tmp_path)["version"] == 2, 20, what="version 2")
            assert exported(tmp_path)["fields"]["invoice_number"] == "X-77"
        finally:
            assert daemon.stop() == 0


class CuttingProxy:
    """A TCP proxy in front of the emulator that cuts the first upload: it passes the request
    head and half the body on, then closes both connections, as a crash or a network cut
    mid-upload would. Everything else it pipes through unchanged."""

    MARKER = b"POST /api/documents "

    def __init__(self, upstream: str) -> None:
        import socket
        import threading

        host, port = upstream.removeprefix("http://").split(":")
        self.upstream = (host, int(port.split("/")[0]))
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.cut_at: list[float] = []
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        import threading

        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: Any) -> None:
        import socket
        import threading

        server = socket.create_connection(self.upstream)

        def back() -> None:
            try:
                while data := server.recv(65536):
                    client.sendall(data)
            except OSError:
                pass
            finally:
                client.close()

        threading.Thread(target=back, daemon=True).start()
        pending = b""
        try:
            while data := client.recv(65536):
                pending += data
                with self.lock:
                    cutting = not self.cut_at and self.MARKER in pending
                if not cutting:
                    server.sendall(pending)
                    pending = b""
                    continue
                start = pending.index(self.MARKER)
                end = pending.find(b"\r\n\r\n", start)
                if end < 0:
                    continue
                head = pending[start:end].decode("latin-1").lower()
                length = int(head.split("content-length:")[1].split("\r\n")[0])
                if len(pending) - (end + 4) < length // 2:
                    continue
                server.sendall(pending[: end + 4 + length // 2])
                with self.lock:
                    self.cut_at.append(time.monotonic())
                break
        except OSError:
            pass
        finally:
            for sock in (server, client):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                sock.close()

    def close(self) -> None:
        self.listener.close()


@pytest.mark.e2e
def test_r02_an_upload_cut_at_half_its_body_is_retried_and_uploaded_once(tmp_path):
    """RELIABILITY 2: the connection of the first upload is cut when half its body went out.
    The upload is retried within the backoff (0.2 s to 2 s here), the document ends done and
    exported, and the vendor holds it once."""
    app = create_app(Options())
    state = app.state.emulator
    with serve(app) as url:
        proxy = CuttingProxy(url)
        try:
            config = kit_config(tmp_path, proxy.url, mode="sync")
            daemon = DaemonProcess(config, module=RUN).start()
            try:
                drop(tmp_path, "cut.pdf", 25)
                wait_until(lambda: exported(tmp_path), 20, what="exported after the cut")
                done_at = time.monotonic()
            finally:
                assert daemon.stop() == 0, daemon.log()
        finally:
            proxy.close()
    assert len(proxy.cut_at) == 1, "the first upload was cut"
    assert len(state.documents) == 1, "the vendor holds the document once"
    cut, retried = state.requests.entries(method="POST", path="/api/documents")
    assert cut.status >= 500 and retried.status == 200, "the cut upload made nothing"
    assert 0.05 <= retried.at - cut.at <= 2.5, "retried after a backoff, within its maximum"
    assert done_at - proxy.cut_at[0] < 10
    assert query(tmp_path, "SELECT state FROM submissions") == [("done",)]
    assert query(tmp_path, "SELECT COUNT(*) FROM extractions") == [(1,)]
