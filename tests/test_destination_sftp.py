"""The SFTP destination against a real OpenSSH server on loopback (tests/sshd.py): the folder's
files, atomic replacement, host keys always verified, errors by what they need, threads."""

from __future__ import annotations

import csv
import io
import json
import socket
import threading
import time
from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from pydantic import ValidationError

from connectors.base import CanonicalResult, ConnectorContext, ExportPayload, FieldValue, LineItem
from connectors.destinations import sftp as sftp_mod
from connectors.destinations.folder import FolderDestination, FolderDestinationSettings
from connectors.destinations.sftp import SftpDestination, SftpDestinationSettings
from connectors.errors import AuthFailed, TerminalError, TransientError
from tests.sshd import Sshd, keygen, sshd, sshd_factory  # noqa: F401 (fixtures)


def payload(document_id: int = 7, version: int = 1, supplier: str = "ACME GmbH") -> ExportPayload:
    return ExportPayload(
        document_id=document_id,
        sha256="cd" * 32,
        filename="bill.pdf",
        mime_type="application/pdf",
        source="scans",
        source_ref="bill.pdf",
        received_at=datetime(2026, 12, 2, tzinfo=UTC),
        vendor="local",
        vendor_kind="local",
        vendor_ref=None,
        submission_id=1,
        extraction_id=1,
        result=CanonicalResult(
            fields=[
                FieldValue("supplier_name", supplier),
                FieldValue("total_amount", "-12.50", value_number=Decimal("-12.50")),
            ],
            line_items=[LineItem(1, description="@SUM(A1)", total_amount=Decimal("-12.50"))],
        ),
        version=version,
    )


def context(tmp_path: Path) -> ConnectorContext:
    return ConnectorContext(
        name="erp", data_dir=tmp_path / "state", clock=time.monotonic, public_url=None
    )


@pytest.fixture
def made():
    """Destinations made by a test, closed at its end."""
    destinations: list[SftpDestination] = []
    yield destinations
    for destination in destinations:
        destination.close()


@pytest.fixture
def make(made, tmp_path):
    def build(server: Sshd, path: Path | str | None = None, **overrides) -> SftpDestination:
        settings = SftpDestinationSettings.model_validate(
            server.settings(tmp_path / "out" if path is None else path, **overrides)
        )
        destination = SftpDestination(settings, context(tmp_path))
        made.append(destination)
        return destination

    return build


def listing(path: Path) -> list[str]:
    return sorted(p.name for p in path.iterdir())


def without_time(document: dict) -> dict:
    document["provenance"].pop("exported_at")
    return document


def folder_files(tmp_path: Path, format: str, data: ExportPayload) -> Path:
    out = tmp_path / "folder"
    FolderDestination(
        FolderDestinationSettings(path=out, format=format), context(tmp_path)
    ).deliver(data, "k")
    return out


# --------------------------------------------------------------------------- files


def test_json_lands_with_the_folder_destinations_content(sshd, make, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    receipt = make(sshd).deliver(payload(), "k")
    assert listing(out) == ["7.json"], "the file, and no temporary name left"
    assert receipt.ref == f"{out}/7.json"
    body = json.loads((out / "7.json").read_text())
    assert body["document_id"] == 7 and body["version"] == 1
    assert body["fields"]["supplier_name"] == "ACME GmbH"
    folder = folder_files(tmp_path, "json", payload())
    assert without_time(body) == without_time(json.loads((folder / "7.json").read_text()))


def test_csv_is_the_folders_byte_for_byte_with_formulas_neutralised(sshd, make, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    data = payload(supplier='=HYPERLINK("http://x","y")')
    make(sshd, format="csv").deliver(data, "k")
    assert listing(out) == ["7.csv", "7.lines.csv"]
    (row,) = csv.DictReader(io.StringIO((out / "7.csv").read_text()))
    assert row["supplier_name"] == '\'=HYPERLINK("http://x","y")'
    assert row["total_amount"] == "-12.5", "a negative amount is a number, not a formula"
    (line,) = csv.DictReader(io.StringIO((out / "7.lines.csv").read_text()))
    assert line["description"] == "'@SUM(A1)"
    folder = folder_files(tmp_path, "csv", data)
    for name in ("7.csv", "7.lines.csv"):
        assert (out / name).read_bytes() == (folder / name).read_bytes(), name


def test_ubl_is_the_folders_byte_for_byte_beside_json(sshd, make, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    make(sshd, format=["json", "ubl"]).deliver(payload(version=2), "k")
    assert listing(out) == ["7.json", "7.xml"]
    xml = (out / "7.xml").read_bytes()
    assert b"<cbc:DocumentDescription>docrelay document_id=7 version=2" in xml
    folder = folder_files(tmp_path, "ubl", payload(version=2))
    assert xml == (folder / "7.xml").read_bytes()


def test_a_repeat_overwrites_the_one_file_and_a_new_version_replaces_it(sshd, make, tmp_path):
    out = tmp_path / "out"
    destination = make(sshd, create_dirs=True, format="both")
    first = destination.deliver(payload(), "k")
    again = destination.deliver(payload(), "k")
    assert again.ref == first.ref
    assert listing(out) == ["7.csv", "7.json", "7.lines.csv"]
    destination.deliver(payload(version=2, supplier="ACME AG"), "k")
    assert listing(out) == ["7.csv", "7.json", "7.lines.csv"]
    assert json.loads((out / "7.json").read_text())["version"] == 2
    assert "ACME AG" in (out / "7.csv").read_text()


def test_without_posix_rename_the_old_file_is_removed_and_replaced(
    sshd, make, tmp_path, monkeypatch
):
    """A server without OpenSSH's extension: plain SFTP rename refuses an existing target."""
    monkeypatch.setattr(sftp_mod, "POSIX_RENAME", "posix-rename@unsupported.invalid")
    out = tmp_path / "out"
    destination = make(sshd, create_dirs=True)
    destination.deliver(payload(), "k")
    destination.deliver(payload(version=2), "k")
    assert listing(out) == ["7.json"]
    assert json.loads((out / "7.json").read_text())["version"] == 2
    assert any("no posix-rename" in line for line in destination.probe())


def test_a_failed_rename_leaves_no_temporary_file(sshd, make, tmp_path):
    out = tmp_path / "out"
    (out / "7.json").mkdir(parents=True)  # a directory where the file should go
    (out / "7.json" / "keep").write_text("x")
    with pytest.raises(TransientError, match="refused upload"):
        make(sshd).deliver(payload(), "k")
    assert listing(out) == ["7.json"]


def test_create_dirs_makes_the_path_and_file_mode_is_applied(sshd, make, tmp_path):
    out = tmp_path / "a" / "b" / "c"
    make(sshd, out, create_dirs=True, file_mode=0o640).deliver(payload(), "k")
    assert (out / "7.json").stat().st_mode & 0o777 == 0o640


def test_a_missing_directory_pauses_the_destination_unless_create_dirs(sshd, make, tmp_path):
    destination = make(sshd, tmp_path / "nowhere")
    with pytest.raises(AuthFailed, match="does not exist: create it, or set create_dirs"):
        destination.deliver(payload(), "k")
    with pytest.raises(TerminalError, match="does not exist"):
        destination.probe()
    (tmp_path / "file").write_text("x")
    with pytest.raises(AuthFailed, match="is not a directory"):
        make(sshd, tmp_path / "file").deliver(payload(), "k")
    assert not (tmp_path / "nowhere").exists()


def test_permission_denied_pauses_the_destination(sshd_factory, make, tmp_path):
    server = sshd_factory(read_only=True)  # internal-sftp -R: every write refused
    (tmp_path / "out").mkdir()
    with pytest.raises(AuthFailed, match="permission denied"):
        make(server).deliver(payload(), "k")
    assert listing(tmp_path / "out") == []


def test_probe_looks_and_writes_nothing(sshd, make, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    lines = make(sshd).probe()
    assert any(sshd.host_key_fingerprint() in line for line in lines)
    assert any("0 export file(s)" in line for line in lines)
    assert listing(out) == []


# --------------------------------------------------------------------------- host keys


def test_an_unknown_host_key_is_refused_with_how_to_get_it(sshd, make, tmp_path):
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    (tmp_path / "out").mkdir()
    with pytest.raises(AuthFailed) as info:
        make(sshd, known_hosts=str(empty)).deliver(payload(), "k")
    message = str(info.value)
    assert "not in" in message and sshd.host_key_fingerprint() in message
    assert f"ssh-keyscan -p {sshd.port} {sshd.host} >> {empty}" in message
    assert listing(tmp_path / "out") == []


def test_a_changed_host_key_is_refused(sshd, make, tmp_path):
    other = keygen(tmp_path / "other_host_key")
    known = tmp_path / "known_hosts"
    known.write_text(f"[{sshd.host}]:{sshd.port} {other.with_suffix('.pub').read_text()}")
    with pytest.raises(AuthFailed, match="has CHANGED"):
        make(sshd, known_hosts=str(known)).deliver(payload(), "k")
    with pytest.raises(AuthFailed, match="has CHANGED"):
        make(sshd, known_hosts=None, host_key=other.with_suffix(".pub").read_text()).probe()


def test_a_pinned_host_key_or_fingerprint_is_enough(sshd, make, tmp_path):
    out = tmp_path / "out"
    make(sshd, create_dirs=True, known_hosts=None, host_key=sshd.host_key_line()).deliver(
        payload(1), "k"
    )
    fingerprint = sshd.host_key_fingerprint()
    make(sshd, known_hosts=None, host_key=fingerprint).deliver(payload(2), "k")
    assert listing(out) == ["1.json", "2.json"]
    wrong = "SHA256:" + "A" * 43
    with pytest.raises(AuthFailed, match="has CHANGED") as info:
        make(sshd, known_hosts=None, host_key=wrong).deliver(payload(3), "k")
    assert fingerprint in str(info.value)


@pytest.mark.parametrize("hashed", [False, True], ids=["plain", "hashed"])
def test_known_hosts_made_as_the_message_says_is_taken(sshd, make, tmp_path, hashed):
    """The advice in the messages works: ``ssh-keyscan -p PORT HOST >> known_hosts`` (also
    with ``-H``, hashed host names)."""
    import subprocess

    known = tmp_path / "known_hosts"
    scan = ["ssh-keyscan", *(["-H"] if hashed else []), "-p", str(sshd.port), sshd.host]
    known.write_text(subprocess.run(scan, capture_output=True, text=True, check=True).stdout)
    assert known.read_text().strip()
    make(sshd, create_dirs=True, known_hosts=str(known)).deliver(payload(), "k")
    assert listing(tmp_path / "out") == ["7.json"]


def test_a_missing_known_hosts_file_says_how_to_make_it(sshd, make, tmp_path):
    with pytest.raises(AuthFailed, match=r"cannot read known_hosts .*ssh-keyscan"):
        make(sshd, known_hosts=str(tmp_path / "missing")).probe()


# --------------------------------------------------------------------------- credentials


def test_a_wrong_key_or_password_is_refused(sshd, make, tmp_path):
    stranger = keygen(tmp_path / "stranger")
    with pytest.raises(AuthFailed, match="refused the key"):
        make(sshd, private_key=stranger.read_text()).deliver(payload(), "k")
    with pytest.raises(AuthFailed, match="refused the password"):
        make(sshd, private_key=None, password="not-the-password").deliver(payload(), "k")


def test_an_encrypted_key_with_its_passphrase_logs_in(sshd, make, tmp_path):
    locked = keygen(tmp_path / "locked", passphrase="open sesame")
    sshd.authorize(locked.with_suffix(".pub"))
    key = locked.read_text()
    with pytest.raises(ValidationError, match="encrypted: give passphrase"):
        sshd_settings = sshd.settings(tmp_path / "out", private_key=key)
        SftpDestinationSettings.model_validate(sshd_settings)
    with pytest.raises(ValidationError, match="does not decrypt"):
        SftpDestinationSettings.model_validate(
            sshd.settings(tmp_path / "out", private_key=key, passphrase="wrong")
        )
    make(sshd, create_dirs=True, private_key=key, passphrase="open sesame").deliver(payload(), "k")
    assert listing(tmp_path / "out") == ["7.json"]


def test_settings_refuse_what_cannot_work(sshd, tmp_path):
    base = sshd.settings(tmp_path / "out")
    with pytest.raises(ValidationError, match="never trusts an unknown host key") as info:
        SftpDestinationSettings.model_validate({**base, "known_hosts": None})
    assert "ssh-keyscan" in str(info.value)
    with pytest.raises(ValidationError, match="give private_key_file"):
        SftpDestinationSettings.model_validate({**base, "private_key": None})
    with pytest.raises(ValidationError, match="not a private key"):
        SftpDestinationSettings.model_validate({**base, "private_key": "hello"})
    with pytest.raises(ValidationError, match="SHA256:"):
        SftpDestinationSettings.model_validate({**base, "host_key": "nonsense"})
    with pytest.raises(ValidationError, match="host name"):
        SftpDestinationSettings.model_validate({**base, "host": "sftp://x/y"})
    with pytest.raises(ValidationError) as info:
        SftpDestinationSettings.model_validate({**base, "private_key": "hello"})
    assert "hello" not in str(info.value), "no secret echoed in the error"


def test_the_config_file_reads_the_key_from_private_key_file(sshd, tmp_path):
    from daemon import config as config_mod

    path = tmp_path / "config.toml"
    path.write_text(
        f"""
[destinations.erp]
kind = "sftp"
host = "{sshd.host}"
port = {sshd.port}
username = "{sshd.user}"
private_key_file = "{sshd.client_key_path}"
known_hosts = "{sshd.known_hosts_path}"
path = "{tmp_path / "out"}"
"""
    )
    settings = config_mod.load(path).destinations["erp"]
    assert isinstance(settings, SftpDestinationSettings)
    assert settings.private_key is not None
    assert settings.private_key.get_secret_value() == sshd.client_key().rstrip("\n")


# --------------------------------------------------------------------------- connections


def test_a_server_that_is_down_is_a_transient_error(sshd, make, tmp_path):
    destination = make(sshd, create_dirs=True)
    destination.deliver(payload(1), "k")
    sshd.stop()
    with pytest.raises(TransientError, match=r"cannot connect|dropped"):
        destination.deliver(payload(2), "k")
    with pytest.raises(TransientError, match="cannot connect"):
        destination.probe()


def test_a_server_that_never_greets_times_out(sshd, make, tmp_path):
    with socket.create_server(("127.0.0.1", 0)) as silent:
        port = silent.getsockname()[1]
        started = time.monotonic()
        with pytest.raises(TransientError):
            make(sshd, port=port, connect_timeout=0.5).deliver(payload(), "k")
        assert time.monotonic() - started < 5


def test_a_dropped_connection_is_replaced_on_the_next_delivery(sshd, make, tmp_path):
    out = tmp_path / "out"
    destination = make(sshd, create_dirs=True)
    destination.deliver(payload(1), "k")
    assert sshd.drop_connections() > 0, "a pooled connection was open"
    destination.deliver(payload(2), "k")  # the dead one is noticed and replaced
    sshd.restart()  # every connection gone, the server back on the same port
    destination.deliver(payload(3), "k")
    assert listing(out) == ["1.json", "2.json", "3.json"]


def test_a_connection_dropped_unnoticed_is_retried_within_the_call(sshd, make, tmp_path):
    """The pool believes the connection alive (the drop is not seen yet): the upload fails on
    it and is carried out once more on a fresh one."""
    out = tmp_path / "out"
    destination = make(sshd, create_dirs=True)
    destination.deliver(payload(1), "k")
    (conn,) = destination._idle
    sshd.drop_connections()
    real = conn.alive
    deadline = time.monotonic() + 5
    while real() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not real()
    lie = iter([True])  # the pool's check before use says alive, as in the race with a drop
    conn.alive = lambda: next(lie, None) or real()
    destination.deliver(payload(2), "k")
    assert listing(out) == ["1.json", "2.json"]


def test_threads_delivering_at_once_all_land(sshd, make, tmp_path):
    out = tmp_path / "out"
    destination = make(sshd, create_dirs=True, concurrency=4, format="both")
    errors: list[BaseException] = []
    barrier = threading.Barrier(6)

    def push(worker: int) -> None:
        try:
            barrier.wait()
            for n in range(5):
                data = payload(worker * 100 + n)
                destination.deliver(data, f"k-{data.document_id}")
                destination.deliver(replace(data, version=2), f"k-{data.document_id}")
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=push, args=(w,)) for w in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors, errors
    names = listing(out)
    assert len(names) == 6 * 5 * 3 and not [n for n in names if n.startswith(".")]
    for worker in range(6):
        for n in range(5):
            body = json.loads((out / f"{worker * 100 + n}.json").read_text())
            assert body["version"] == 2
    assert len(destination._idle) <= 4, "at most concurrency connections kept"
