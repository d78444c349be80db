"""Configuration: every problem named by file and key path, env overrides, *_file secrets."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from daemon import config as config_mod

EXAMPLE = Path(__file__).resolve().parent.parent / "config.example.toml"


def run_cli(*args: str, cwd: Path, env: dict[str, str] | None = None):
    import os

    return subprocess.run(
        [sys.executable, "-m", "daemon.cli", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**os.environ, **(env or {})},
        timeout=60,
    )


def test_example_config_is_valid():
    config = config_mod.load(EXAMPLE)
    assert [s.name for s in config.sources] == ["scans"]
    assert config.vendors["local"].kind == "local"
    assert config.destinations["outbox"].kind == "folder"
    assert config.routes[0].vendor == "local"


def problems_of(tmp_path: Path, text: str) -> list[str]:
    path = tmp_path / "config.toml"
    path.write_text(text)
    with pytest.raises(config_mod.ConfigError) as info:
        config_mod.load(path)
    rendered = info.value.render().splitlines()
    assert all(line.startswith(f"{path}: ") for line in rendered)
    return [line.removeprefix(f"{path}: ") for line in rendered]


def test_r29_every_problem_is_reported_with_its_key_path(tmp_path):
    found = problems_of(
        tmp_path,
        """
[store]
url = "sqlite:///x.db"
colour = "blue"

[web]
listen = "nonsense"

[pipeline]
max_attempts = "many"

[vendors.local]
kind = "local"
ocr = "sometimes"

[vendors.acme]
kind = "acme"

[destinations.outbox]
kind = "folder"

[[routes]]
vendor = "nope"
destinations = ["missing"]
""",
    )
    assert "store.colour: unknown key" in found
    assert any(p.startswith("web.listen: ") and "host:port" in p for p in found)
    assert any(p.startswith("pipeline.max_attempts: ") for p in found)
    # Connector sections are checked in the same run, so one pass lists everything.
    assert any(p.startswith("vendors.local.ocr: ") for p in found), found
    assert any(p.startswith("vendors.acme.kind: unknown vendor kind 'acme'") for p in found)
    assert "destinations.outbox.path: field required" in found
    # Cross-references are checked once the sections themselves are valid.
    found = problems_of(
        tmp_path,
        """
[vendors.local]
kind = "local"

[destinations.outbox]
kind = "folder"
path = "out"

[[routes]]
vendor = "nope"
destinations = ["missing"]
""",
    )
    assert found == [
        "routes[0].vendor: no vendor profile named 'nope'",
        "routes[0].destinations: no destination named 'missing'",
    ]


def test_syntax_error_and_missing_file(tmp_path):
    assert problems_of(tmp_path, "[store\nurl=1")[0].startswith("invalid TOML: ")
    with pytest.raises(config_mod.ConfigError, match="file not found"):
        config_mod.load(tmp_path / "absent.toml")


def test_secret_file_and_env_override(tmp_path, monkeypatch):
    secret = tmp_path / "db-url"
    secret.write_text("sqlite:///from-secret.db\n")
    path = tmp_path / "config.toml"
    path.write_text(f'[store]\nurl_file = "{secret}"\n[logging]\nlevel = "info"\n')
    config = config_mod.load(path)
    assert config.core.store.url == f"sqlite:///{tmp_path}/from-secret.db"  # beside the file
    assert "sqlite:///from-secret.db" in config.secrets
    monkeypatch.setenv("DOCRELAY_LOGGING__LEVEL", "debug")
    assert config_mod.load(path).core.logging.level == "debug"


def test_missing_secret_file_names_the_key(tmp_path):
    found = problems_of(tmp_path, '[store]\nurl_file = "/nonexistent/secret"\n')
    assert found == ["store.url_file: cannot read /nonexistent/secret: No such file or directory"]


def test_a_validators_message_reads_as_written(tmp_path):
    found = problems_of(tmp_path, '[vendors.local]\nkind = "local"\ntemplates = "/nonexistent"\n')
    assert found == [
        "vendors.local.templates: /nonexistent is not a folder of invoice2data templates"
    ]


def test_secret_file_from_credentials_directory(tmp_path, monkeypatch):
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "dburl").write_text("sqlite:///creds.db")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
    path = tmp_path / "config.toml"
    path.write_text('[store]\nurl_file = "dburl"\n')
    assert config_mod.load(path).core.store.url == f"sqlite:///{tmp_path}/creds.db"


def test_r29_check_config_cli_exit_codes(tmp_path):
    ok = run_cli("--config", str(EXAMPLE), "check-config", cwd=tmp_path)
    assert ok.returncode == 0, ok.stderr
    assert "OK" in ok.stdout
    bad = tmp_path / "bad.toml"
    bad.write_text('[vendors.x]\nkind = "local"\nspeed = 3\n')
    result = run_cli("--config", str(bad), "check-config", cwd=tmp_path)
    assert result.returncode == 2
    assert f"{bad}: vendors.x.speed: unknown key" in result.stderr


def test_run_refuses_a_bad_config(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[store]\nurl = 5\n")
    result = run_cli("--config", str(bad), "run", cwd=tmp_path)
    assert result.returncode == 2
    assert f"{bad}: store.url: " in result.stderr
    assert not (tmp_path / "var").exists()


MAILBOX_BASE = """
[store]
url = "sqlite:///x.db"
[vendors.local]
kind = "local"
[[routes]]
name = "mail"
match = {}
vendor = "local"
"""


def test_mailbox_problems_are_named_by_key_path(tmp_path):
    found = problems_of(
        tmp_path,
        MAILBOX_BASE
        + """
[[sources.mailbox]]
name = "m"
host = "imap.example.com"
tls = "plain"
username = "u"
password = "p"
[[sources.mailbox]]
name = "n"
host = "imap.example.com"
username = "u"
[[sources.mailbox.rules]]
route = "nowhere"
post_action = "archive"
flag = "two words"
""",
    )
    text = "\n".join(found)
    assert "sources.mailbox[0]: " in text and "allow_plain" in text
    assert "sources.mailbox[1].rules[0].post_action" in text
    assert "sources.mailbox[1].rules[0].flag" in text and "IMAP keyword" in text
    no_credentials = problems_of(
        tmp_path,
        MAILBOX_BASE + '[[sources.mailbox]]\nname = "m"\nhost = "h"\nusername = "u"\n',
    )
    assert any(
        p.startswith("sources.mailbox[0]: ") and "give exactly one of password" in p
        for p in no_credentials
    )


def test_mailbox_rule_route_must_exist_and_oauth2_secrets_come_from_files(tmp_path):
    found = problems_of(
        tmp_path,
        MAILBOX_BASE
        + """
[[sources.mailbox]]
name = "m"
host = "imap.example.com"
username = "u"
password = "p"
[[sources.mailbox.rules]]
route = "nowhere"
""",
    )
    assert any("sources.mailbox[0].rules[0].route" in p and "nowhere" in p for p in found)
    (tmp_path / "refresh").write_text("rt-from-file\n")
    path = tmp_path / "ok.toml"
    path.write_text(
        MAILBOX_BASE
        + f"""
[[sources.mailbox]]
name = "m"
host = "outlook.office365.com"
username = "invoices@contoso.example"
[sources.mailbox.oauth2]
provider = "microsoft"
tenant = "contoso.example"
client_id = "app"
refresh_token_file = "{tmp_path / "refresh"}"
[[sources.mailbox.rules]]
route = "mail"
"""
    )
    config = config_mod.load(path)
    oauth = config.sources[0].oauth2
    assert oauth.refresh_token.get_secret_value() == "rt-from-file"
    assert oauth.endpoint() == (
        "https://login.microsoftonline.com/contoso.example/oauth2/v2.0/token",
        "https://outlook.office.com/IMAP.AccessAsUser.All offline_access",
    )
    assert "rt-from-file" in config.secrets


BAD_CONFIGS = {
    "unknown key": ('[store]\nurl = "sqlite:///x.db"\ncolour = "blue"\n', "store.colour: "),
    "wrong type": ("[pipeline]\nmax_attempts = 'many'\n", "pipeline.max_attempts: "),
    "missing secret": ('[store]\nurl_file = "/nonexistent/secret"\n', "store.url_file: "),
}


@pytest.mark.parametrize("case", sorted(BAD_CONFIGS))
def test_r29_a_bad_config_fails_check_and_run_and_never_sends_ready(tmp_path, case):
    """RELIABILITY 29: ``check-config`` and ``run`` exit non-zero naming the exact key path,
    and ``run`` under systemd sends nothing at all to NOTIFY_SOCKET (so never READY=1)."""
    import socket

    body, key_path = BAD_CONFIGS[case]
    bad = tmp_path / "bad.toml"
    bad.write_text(body)
    checked = run_cli("--config", str(bad), "check-config", cwd=tmp_path)
    assert checked.returncode == 2 and f"{bad}: {key_path}" in checked.stderr, checked.stderr
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(tmp_path / "notify.sock"))
    notify.setblocking(False)
    try:
        env = {"NOTIFY_SOCKET": str(tmp_path / "notify.sock"), "WATCHDOG_USEC": "1000000"}
        ran = run_cli("--config", str(bad), "run", cwd=tmp_path, env=env)
        assert ran.returncode == 2 and f"{bad}: {key_path}" in ran.stderr, ran.stderr
        with pytest.raises(BlockingIOError):
            notify.recv(4096)
    finally:
        notify.close()


def test_r29_an_unreachable_vendor_fails_its_check_by_name(tmp_path):
    """RELIABILITY 29, the unreachable vendor: ``check <profile>`` exits non-zero naming it."""
    from tests.daemon_proc import free_port, toml_table, write_config

    vendor = toml_table(
        "[vendors.rossum_main]",
        {
            "kind": "rossum",
            "base_url": f"http://127.0.0.1:{free_port()}/api/v1",
            "username": "user@example.com",
            "password": "secret",
            "queue": 1,
        },
    )
    config = write_config(tmp_path, extra=vendor)
    result = run_cli("--config", str(config), "check", "rossum_main", cwd=tmp_path)
    assert result.returncode == 3, (result.returncode, result.stdout, result.stderr)
    assert "rossum_main (vendor rossum): cannot be reached" in result.stderr, result.stderr
