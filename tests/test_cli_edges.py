"""Rough edges an operator trips over: --config after the command, relative paths from another
directory, commands that must not make an empty store, a port already in use, which daemon
`docrelay status` reached, and retry and submit saying what they did not do."""

from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from PIL import Image

from daemon import config as config_mod
from tests.daemon_proc import DaemonProcess, free_port, write_config
from tests.invoices import random_spec, render_pdf

pytestmark = pytest.mark.e2e


def cli(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "daemon.cli", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent),
             **(env or {})},
        timeout=120,
    )  # fmt: skip


RELATIVE = """
[store]
url = "sqlite:///var/docrelay.db"
blob_dir = "var/blobs"

[web]
listen = "127.0.0.1:{port}"

[web.api]
tokens_file = "api-tokens"

[[sources.folder]]
name = "scans"
path = "inbox"

[vendors.local]
kind = "local"
ocr = "off"

[vendors.einvoice]
kind = "einvoice"

[destinations.outbox]
kind = "folder"
path = "outbox"

[[routes]]
match = {{ source = ["scans", "cli"] }}
vendor = "einvoice"
fallback = "local"
destinations = ["outbox"]
"""


@pytest.fixture
def relative(tmp_path: Path) -> tuple[Path, Path]:
    """A configuration written with relative paths in ``conf/``, and another directory to run
    the commands from."""
    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "api-tokens").write_text("a-token-of-sixteen-or-more\n")
    path = conf / "config.toml"
    path.write_text(RELATIVE.format(port=free_port()))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    return path, elsewhere


def png_scan() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (200, 100), "white").save(out, "PNG")
    return out.getvalue()


def test_relative_paths_are_relative_to_the_config_file(relative, monkeypatch):
    path, elsewhere = relative
    monkeypatch.chdir(elsewhere)
    config = config_mod.load(path)
    conf = path.parent
    assert config.core.store.url == f"sqlite:///{conf}/var/docrelay.db"
    assert config.core.store.blob_dir == conf / "var" / "blobs"
    assert config.sources[0].path == conf / "inbox"
    assert config.destinations["outbox"].path == conf / "outbox"
    tokens = config.core.web.api.tokens
    assert [t.get_secret_value() for t in tokens] == ["a-token-of-sixteen-or-more"]

    # Settings typed as paths in connectors: checked after they were made absolute.
    (conf / "templates").mkdir()
    (conf / "known_hosts").write_text("")
    path.write_text(
        path.read_text().replace('ocr = "off"', 'ocr = "off"\ntemplates = "templates"')
        + '\n[destinations.sftp]\nkind = "sftp"\nhost = "h"\nusername = "u"\npassword = "p"\n'
        'known_hosts = "known_hosts"\npath = "inbound"\n'
        '\n[destinations.table]\nkind = "sql"\nurl = "sqlite:///report.db"\ntable = "t"\n'
    )
    config = config_mod.load(path)
    assert config.vendors["local"].templates == conf / "templates"
    sftp = config.destinations["sftp"]
    assert sftp.known_hosts == conf / "known_hosts"
    assert sftp.path == "inbound", "a remote path is not a local one"
    assert config.destinations["table"].url.get_secret_value() == f"sqlite:///{conf}/report.db"

    # Environment overrides and defaults are not in the file: the current directory.
    monkeypatch.setenv("DOCRELAY_STORE__URL", "sqlite:///env.db")
    assert config_mod.load(path).core.store.url == "sqlite:///env.db"
    assert config_mod.validate({}, path).core.store.blob_dir == Path("var/blobs")


def test_commands_from_another_directory_use_the_config_files_store(relative):
    path, elsewhere = relative
    conf = path.parent
    invoice = elsewhere / "invoice.pdf"
    invoice.write_bytes(render_pdf(random_spec(3)))

    # A read-only command on a store that does not exist says so and makes none.
    for args in (["status"], ["history", "1"], ["retry", "1"], ["db", "current"]):
        result = cli(*args, "--config", str(path), cwd=elsewhere)
        assert result.returncode == 1, (args, result.stdout, result.stderr)
        assert f"no store at {conf}/var/docrelay.db" in result.stderr, result.stderr
        assert "Traceback" not in result.stderr
    assert not (conf / "var").exists()
    assert not (elsewhere / "var").exists()

    submitted = cli("submit", "--config", str(path), str(invoice), "--wait", cwd=elsewhere)
    assert submitted.returncode == 0, submitted.stderr
    assert list((conf / "outbox").glob("*.json")), "exported beside the config file"
    assert (conf / "var" / "docrelay.db").is_file()
    assert not (elsewhere / "var").exists() and not (elsewhere / "outbox").exists()

    # --config after the command, from yet another directory, finds the same store; given
    # twice, the one after the command wins.
    status = cli(
        "--config", str(elsewhere / "absent.toml"), "status", "--json", "--config", str(path),
        cwd=conf.parent,
    )  # fmt: skip
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["documents"] == {"accepted": 1}
    history = cli("history", "1", "--config", str(path), cwd=elsewhere)
    assert history.returncode == 0 and "normalized→done" in history.stdout, history.stdout
    checked = cli("check-config", "--config", str(path), cwd=elsewhere)
    assert checked.returncode == 0 and "OK" in checked.stdout, checked.stderr
    current = cli("db", "current", "--config", str(path), cwd=elsewhere)
    assert current.returncode == 0, current.stderr


def test_submit_and_retry_say_what_they_did_not_do(relative):
    path, elsewhere = relative
    good, scan, empty = elsewhere / "good.pdf", elsewhere / "scan.png", elsewhere / "empty.pdf"
    good.write_bytes(render_pdf(random_spec(5)))
    scan.write_bytes(png_scan())  # a scan with OCR off: the vendor rejects it
    empty.write_bytes(b"")  # rejected at intake
    # Not an e-invoice: rejected by the route's first vendor, read by its fallback; --wait
    # waits for the fallback and the file did not end rejected.
    ok = cli("submit", str(good), "--wait", "--config", str(path), cwd=elsewhere)
    assert ok.returncode == 0, ok.stderr
    assert list((path.parent / "outbox").glob("*.json"))

    refused = cli("submit", str(empty), "--config", str(path), cwd=elsewhere)
    assert refused.returncode == 1, refused.stdout
    assert "empty.pdf: rejected:" in refused.stderr

    rejected = cli("submit", str(scan), "--wait", "--config", str(path), cwd=elsewhere)
    assert rejected.returncode == 1, (rejected.stdout, rejected.stderr)
    assert "document 3: rejected at einvoice:" in rejected.stderr, rejected.stderr
    assert "document 3: rejected at local: image/png needs OCR" in rejected.stderr

    status = json.loads(cli("status", "--json", "--config", str(path), cwd=elsewhere).stdout)
    errors = {(e["document_id"], e["state"]) for e in status["last_errors"]}
    assert {(2, "rejected"), (3, "rejected")} <= errors, status["last_errors"]
    assert all(e["error"] for e in status["last_errors"])
    text = cli("status", "--config", str(path), cwd=elsewhere).stdout
    assert "document 2 (intake, rejected):" in text, text

    retried = cli("retry", "1", "2", "3", "99", "--config", str(path), cwd=elsewhere)
    assert retried.returncode == 1
    assert "requeued 0 submission(s)" in retried.stdout
    why = dict(line.split(": not retried: ", 1) for line in retried.stderr.splitlines())
    assert why["document 1"].startswith("local: done"), why  # einvoice's rejection is past
    assert why["document 2"].startswith("rejected at intake ("), why
    assert (
        why["document 3"].startswith("einvoice: rejected (")
        and "; local: rejected (" in why["document 3"]
        and "--state rejected" in why["document 3"]
    ), why
    assert why["document 99"] == "no such document"
    again = cli("retry", "3", "--state", "rejected", "--config", str(path), cwd=elsewhere)
    assert again.returncode == 0, again.stderr
    assert "requeued 2 submission(s)" in again.stdout and not again.stderr


def test_a_web_port_in_use_is_one_line_before_anything_starts(tmp_path):
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        config = write_config(tmp_path, port=port)
        (tmp_path / "inbox").mkdir()
        (tmp_path / "inbox" / "a.pdf").write_bytes(render_pdf(random_spec(1)))
        result = cli("--config", str(config), "run", cwd=tmp_path)
    assert result.returncode == 1
    lines = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
    assert len(lines) == 1, lines
    assert f"web.listen 127.0.0.1:{port}: " in lines[0] and "in use" in lines[0], lines
    assert (tmp_path / "inbox" / "a.pdf").is_file(), "no source ran"
    assert not (tmp_path / "inbox" / "processed").exists()


def test_status_tells_its_own_daemon_from_another_on_the_port(tmp_path):
    ours = tmp_path / "ours"
    ours.mkdir()
    config = write_config(ours)
    daemon = DaemonProcess(config).start()
    try:
        health = httpx.get(f"{daemon.url}/healthz", timeout=10).json()
        instance = health["instance"]
        assert instance["pid"] == daemon.proc.pid and len(instance["id"]) == 16

        mine = cli("status", "--json", "--config", str(config), cwd=tmp_path)
        assert mine.returncode == 0, mine.stderr
        live = json.loads(mine.stdout)["daemon"]
        assert live["running"] is True and live["instance"] == instance
        assert f"instance {instance['id']}" in cli("status", "--config", str(config),
                                                   cwd=tmp_path).stdout  # fmt: skip

        # Another configuration whose web.listen is the same port, on another store.
        other = tmp_path / "other"
        other.mkdir()
        other_config = write_config(other, port=daemon.port)
        made = cli("db", "upgrade", "--config", str(other_config), cwd=tmp_path)
        assert made.returncode == 0, made.stderr
        theirs = cli("status", "--json", "--config", str(other_config), cwd=tmp_path)
        live = json.loads(theirs.stdout)["daemon"]
        assert live["running"] is False, live
        assert f"another docrelay (pid {daemon.proc.pid})" in live["reason"]
        assert "paused_vendors" not in live, "its health is not reported as this one's"
        text = cli("status", "--config", str(other_config), cwd=tmp_path).stdout
        assert text.startswith("daemon: not running: another docrelay"), text
    finally:
        assert daemon.stop() == 0


def test_docs_name_the_grace_period_and_the_license_matches():
    root = Path(__file__).resolve().parent.parent
    example = (root / "config.example.toml").read_text()
    block = example.split("[[sources.folder]]", 1)[1].split("\n\n", 1)[0]
    uncommented = "\n".join(
        line[2:] if line.startswith("# ") and " = " in line.split("#")[1] else line
        for line in block.splitlines()
    )
    assert "incomplete_grace_seconds" in uncommented
    raw = {**config_mod.tomllib.loads(example), "sources": {}}
    raw["sources"]["folder"] = [config_mod.tomllib.loads(uncommented)]
    config = config_mod.validate(raw, root / "config.example.toml")
    assert config.sources[0].incomplete_grace_seconds == 300.0
    assert config.sources[0].polling is True, "the commented keys were taken"
    readme = (root / "README.md").read_text()
    assert "incomplete_grace_seconds" in readme
    assert "(and, soon," not in readme and "catch-all" not in readme
    license_text = (root / "LICENSE").read_text()
    assert "Apache License" in license_text and "Version 2.0, January 2004" in license_text
    assert "END OF TERMS AND CONDITIONS" in license_text, "the full text"
    pyproject = config_mod.tomllib.loads((root / "pyproject.toml").read_text())
    assert pyproject["project"]["license"] == "Apache-2.0"


def test_status_against_a_program_that_is_not_docrelay(tmp_path):
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    from tests.servers import serve

    async def healthz(request):
        return JSONResponse({"status": "ok"})

    with serve(Starlette(routes=[Route("/healthz", healthz)])) as base_url:
        config = write_config(tmp_path, port=int(base_url.rsplit(":", 1)[1]))
        assert cli("db", "upgrade", "--config", str(config), cwd=tmp_path).returncode == 0
        result = cli("status", "--json", "--config", str(config), cwd=tmp_path)
    live = json.loads(result.stdout)["daemon"]
    assert live["running"] is None, live
    assert "does not say which docrelay it is" in live["reason"]


def test_no_store_in_an_empty_postgresql_database(pg_url, tmp_path):
    from sqlalchemy import create_engine, inspect

    config = write_config(tmp_path, store_url=pg_url)
    result = cli("status", "--config", str(config), cwd=tmp_path)
    assert result.returncode == 1
    assert "no store at postgresql+psycopg://" in result.stderr, result.stderr
    engine = create_engine(pg_url)
    try:
        assert inspect(engine).get_table_names() == [], "status made no tables"
    finally:
        engine.dispose()
    assert cli("db", "upgrade", "--config", str(config), cwd=tmp_path).returncode == 0
    assert cli("status", "--config", str(config), cwd=tmp_path).returncode == 0


def test_output_into_a_closed_pipe_ends_quietly(tmp_path: Path) -> None:
    """`docrelay connectors | head -0`: the reader is gone before the first line; no
    traceback, the exit status of a command killed by SIGPIPE (128 + 13)."""
    reader, writer = os.pipe()
    os.close(reader)  # nobody will read: the first write fails with EPIPE
    try:
        result = subprocess.run(
            [sys.executable, "-m", "daemon.cli", "connectors"],
            stdout=writer,
            stderr=subprocess.PIPE,
            text=True,
            cwd=tmp_path,
            env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)},
            timeout=120,
        )
    finally:
        os.close(writer)
    assert result.returncode == 141, result.stderr
    assert "Traceback" not in result.stderr and "BrokenPipe" not in result.stderr, result.stderr
