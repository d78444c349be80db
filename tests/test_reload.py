"""``systemctl reload`` (SIGHUP): the real daemon process reads its configuration again.

A new folder source, a new destination and a changed route take effect without a restart, with
documents in flight meanwhile neither lost nor sent twice; a broken file is refused, its
problems logged as ``check-config`` prints them, and the daemon goes on with what it ran.
"""

from __future__ import annotations

import signal
from pathlib import Path

import httpx
import pytest
from sqlalchemy import create_engine, text

from tests.daemon_proc import (
    DaemonProcess,
    drop_invoices,
    free_port,
    query,
    toml_table,
    wait_until,
    write_config,
)
from tests.servers import serve
from tests.webhook_receiver import SECRET, Receiver, create_app

pytestmark = pytest.mark.e2e

SECOND = """
[[sources.folder]]
name = "scans2"
path = "{root}/inbox2"
after = "move"
settle_seconds = 0.3
rescan_interval = 5

[destinations.outbox2]
kind = "folder"
path = "{root}/outbox2"

[[routes]]
name = "second"
match = {{ source = "scans2" }}
vendor = "local"
destinations = ["outbox2"]
"""


def exports(folder: Path) -> set[str]:
    return {p.name for p in folder.glob("*.json")} if folder.is_dir() else set()


def hup(daemon: DaemonProcess, marker: str, seen: int) -> str:
    """Send SIGHUP and wait for the ``seen+1``-th line holding ``marker``; returns the log."""
    assert daemon.proc is not None
    daemon.proc.send_signal(signal.SIGHUP)
    return wait_until(lambda: (log := daemon.log()).count(marker) > seen and log, 30, what=marker)


def test_reload_adds_a_source_a_destination_and_changes_a_route(tmp_path):
    config = write_config(tmp_path)
    daemon = DaemonProcess(config).start()
    inbox, outbox, outbox2 = tmp_path / "inbox", tmp_path / "outbox", tmp_path / "outbox2"
    first = drop_invoices(inbox, 2, prefix="before", first_seed=1)
    wait_until(lambda: len(exports(outbox)) == 2, 60, what="the first exports")

    # Documents in flight while the configuration changes under them.
    during = drop_invoices(inbox, 4, prefix="during", first_seed=10)
    text = config.read_text().replace(
        'destinations = ["outbox"]', 'destinations = ["outbox", "outbox2"]'
    )
    config.write_text(text + SECOND.format(root=tmp_path))
    log = hup(daemon, "reloaded:", 0)
    line = next(line for line in log.splitlines() if "reloaded:" in line)
    assert "sources +scans2" in line
    assert "destinations +outbox2" in line
    assert "routes +second ~routes[0]" in line

    (tmp_path / "inbox2").mkdir(exist_ok=True)
    new = drop_invoices(tmp_path / "inbox2", 2, prefix="new", first_seed=20)
    later = drop_invoices(inbox, 1, prefix="later", first_seed=30)
    total = len(first) + len(during) + len(later)
    wait_until(lambda: len(exports(outbox)) == total, 90, what="every scans export")
    # The new folder's documents go to the new destination only; the changed route sends
    # what arrives after the reload to both.
    wait_until(lambda: len(exports(outbox2)) >= len(new) + len(later), 60, what="outbox2 exports")
    sources = {
        r["filename"]: r["source"]
        for r in query(tmp_path, "SELECT filename, source FROM documents")
    }
    assert {sources[name] for name in new} == {"scans2"}
    rows = query(
        tmp_path,
        "SELECT d.filename, l.destination, COUNT(*) AS n FROM deliveries l "
        "JOIN documents d ON d.id = l.document_id GROUP BY d.filename, l.destination",
    )
    by_doc: dict[str, dict[str, int]] = {}
    for row in rows:
        by_doc.setdefault(row["filename"], {})[row["destination"]] = row["n"]
    for name in new:
        assert by_doc[name] == {"outbox2": 1}
    for name in later:
        assert by_doc[name] == {"outbox": 1, "outbox2": 1}
    for name in [*first, *during]:
        assert by_doc[name].get("outbox") == 1, by_doc[name]
    # Nothing uploaded twice across the reload: one submission per document, each done.
    subs = query(tmp_path, "SELECT document_id, state FROM submissions")
    assert len(subs) == total + len(new)
    assert len({s["document_id"] for s in subs}) == len(subs)
    wait_until(
        lambda: all(s["state"] == "done" for s in query(tmp_path, "SELECT state FROM submissions")),
        30,
        what="every submission done",
    )
    assert daemon.stop() == 0


def test_a_broken_config_is_refused_and_the_old_one_keeps_running(tmp_path):
    config = write_config(tmp_path)
    daemon = DaemonProcess(config).start()
    good = config.read_text()
    broken = good.replace("lease_seconds = 30", "lease_seconds = 30\nnonsense = 1")
    config.write_text(broken.replace('kind = "folder"', 'kind = "folder"\ncolour = "red"'))
    log = hup(daemon, "reload refused", 0)
    assert f"{config}: pipeline.nonsense: unknown key" in log
    assert f"{config}: destinations.outbox.colour: unknown key" in log
    assert "reloaded:" not in log
    assert httpx.get(f"{daemon.url}/healthz", timeout=5).status_code == 200

    drop_invoices(tmp_path / "inbox", 1, prefix="still", first_seed=40)
    wait_until(lambda: len(exports(tmp_path / "outbox")) == 1, 60, what="an export")
    assert httpx.get(f"{daemon.url}/healthz", timeout=5).status_code == 200

    # A good file again, also moving the web port: that waits for a restart, the rest applies.
    moved = good.replace(f"127.0.0.1:{daemon.port}", f"127.0.0.1:{free_port()}")
    config.write_text(moved.replace("rescan_interval = 5", "rescan_interval = 6"))
    log = hup(daemon, "reloaded:", 0)
    assert "reloaded: sources ~scans" in log
    assert "[web] changed: takes effect at the next restart" in log
    assert httpx.get(f"{daemon.url}/healthz", timeout=5).status_code == 200
    drop_invoices(tmp_path / "inbox", 1, prefix="after", first_seed=41)
    wait_until(lambda: len(exports(tmp_path / "outbox")) == 2, 60, what="a second export")
    assert daemon.stop() == 0


def test_a_push_in_flight_over_the_reload_is_not_sent_twice(tmp_path, store_url):
    """The reload waits 10 s for a step; a push answered after 14 s stays with its thread (its
    lease kept and renewed, its replaced connector open until it ends) and is not claimed and
    sent again by the new pools."""
    receiver = Receiver()
    receiver.answer(201, {"id": "rec-slow", "version": 1}, delay=14)
    with serve(create_app(receiver)) as url:
        hook = {"kind": "webhook", "url": f"{url}/hook", "secret": SECRET, "timeout": 30}
        config = write_config(
            tmp_path, store_url=store_url, extra=toml_table("[destinations.hook]", hook)
        )
        config.write_text(config.read_text().replace('["outbox"]', '["outbox", "hook"]'))
        daemon = DaemonProcess(config).start()
        drop_invoices(tmp_path / "inbox", 1, prefix="slow", first_seed=70)
        wait_until(receiver.posts, 60, what="the push under way")

        config.write_text(config.read_text().replace("timeout = 30", "timeout = 31"))
        log = hup(daemon, "reloaded:", 0)
        assert "reloaded: destinations ~hook" in log
        assert len(receiver.posts()) == 1  # the answer is still 4 s or more away

        store = create_engine(store_url)

        def pushed() -> bool:
            with store.connect() as conn:
                rows = conn.execute(
                    text("SELECT state FROM deliveries WHERE destination = 'hook'")
                ).all()
            return [r.state for r in rows] == ["delivered"]

        wait_until(pushed, 60, what="the push recorded")
        assert len(receiver.posts()) == 1
        store.dispose()
        assert "closing a connector" not in daemon.log()
        assert daemon.stop() == 0
