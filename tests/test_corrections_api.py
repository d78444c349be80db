"""``POST /api/v1/documents/{id}/corrections``: bearer tokens, the answers, and a correction
that reaches the vendor and the export, on the in-process daemon with a real SQLite store."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select, text

from connectors.registry import available
from daemon import config as config_mod
from daemon import web
from daemon.pipeline import ledger
from daemon.runtime import Daemon
from tests import fakes
from tests.daemon_proc import wait_until
from tests.servers import serve
from tests.test_pipeline import offer

TOKEN = "t0ken-for-the-erp-0123456789"
ACTOR = "api:" + hashlib.sha256(TOKEN.encode()).hexdigest()[:8]
"""Who the history names: which token, never the token itself."""
OTHER = "an0ther-token-from-a-file-42"


@pytest.fixture
def make_daemon(tmp_path, monkeypatch):
    fakes.install(monkeypatch)
    started: list[Daemon] = []

    def make(api: dict | None = None) -> Daemon:
        raw = {
            "store": {"url": f"sqlite:///{tmp_path}/d.db", "blob_dir": str(tmp_path / "blobs")},
            "web": {"enabled": False, "api": {"tokens": [TOKEN]} if api is None else api},
            "pipeline": {"backoff_initial": 0.05, "backoff_max": 0.2},
            "vendors": {"a": {"kind": "scripted"}},
            "destinations": {"out": {"kind": "folder", "path": str(tmp_path / "out")}},
            "routes": [{"vendor": "a", "destinations": ["out"]}],
        }
        daemon = Daemon(config_mod.validate(raw, tmp_path / "test.toml"))
        daemon.open()
        daemon.start()
        started.append(daemon)
        return daemon

    yield make
    for daemon in started:
        daemon.stop()
    available.cache_clear()


def exported(daemon: Daemon, tmp_path: Path) -> int:
    """A document routed to the scripted vendor, extracted and exported once."""
    doc = offer(daemon, "inv.pdf")
    export = tmp_path / "out" / f"{doc}.json"
    wait_until(export.exists, 10, what="the first export")
    return doc


@contextmanager
def api(daemon: Daemon) -> Iterator[httpx.Client]:
    """The daemon's web app under real uvicorn on loopback, and a client for it."""
    with serve(web.create_app(daemon)) as url, httpx.Client(base_url=url) as client:
        yield client


@pytest.fixture
def open_api() -> Iterator[Callable[[Daemon], httpx.Client]]:
    with ExitStack() as stack:
        yield lambda daemon: stack.enter_context(api(daemon))


def post(client: httpx.Client, doc: int | str, body: object, token: str | None = TOKEN):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return client.post(f"/api/v1/documents/{doc}/corrections", content=content, headers=headers)


def test_the_history_names_which_token_made_the_correction(make_daemon, open_api, tmp_path):
    daemon = make_daemon({"tokens": [TOKEN, OTHER]})
    doc = exported(daemon, tmp_path)
    client = open_api(daemon)
    assert post(client, doc, {"values": {"invoice_number": "R-9"}}, token=OTHER).status_code == 200
    with daemon.engine.connect() as conn:
        actors = conn.execute(
            select(ledger.events.c.actor).where(
                ledger.events.c.document_id == doc, ledger.events.c.kind == "corrected"
            )
        ).scalars()
        assert list(actors) == ["api:" + hashlib.sha256(OTHER.encode()).hexdigest()[:8]]


def test_a_correction_over_http_reaches_the_vendor_and_a_new_export_version(
    make_daemon, open_api, tmp_path
):
    daemon = make_daemon()
    doc = exported(daemon, tmp_path)
    client = open_api(daemon)
    answer = post(
        client, doc, {"values": {"total_amount": "13,50 EUR"}, "note": "ERP: credit note 77"}
    )
    assert answer.status_code == 200, answer.text
    assert answer.json() == {
        "document_id": doc,
        "changed": ["total_amount: 12.50 → 13.50", "exported again: out v2"],
    }
    export = tmp_path / "out" / f"{doc}.json"
    wait_until(lambda: json.loads(export.read_text())["version"] == 2, 10, what="version 2")
    assert json.loads(export.read_text())["fields"]["total_amount"] == "13.5"
    wait_until(
        lambda: [c for c in fakes.CALLS["a"] if c[0] == "feedback"], 10, what="feedback sent"
    )
    sent = next(c[1] for c in fakes.CALLS["a"] if c[0] == "feedback")
    assert [(c.field, c.value, c.kind) for c in sent] == [("total_amount", "13.50", "correct")]
    with daemon.engine.connect() as conn:
        feedback = conn.execute(
            text("SELECT field, origin FROM feedback WHERE kind = 'correction'")
        )
        assert [tuple(r) for r in feedback] == [("total_amount", ACTOR)]
        history = conn.execute(
            select(ledger.events.c.actor, ledger.events.c.message).where(
                ledger.events.c.document_id == doc, ledger.events.c.kind == "corrected"
            )
        ).one()
    assert history.actor == ACTOR and history.message.endswith("; ERP: credit note 77")
    confirmed = post(client, doc, {"confirm": ["invoice_number"], "values": {"extra.po": None}})
    assert confirmed.status_code == 200
    assert confirmed.json()["changed"] == [
        "extra.po: ∅ → ∅ (not in the document)",
        f"invoice_number: INV-{doc} confirmed",
        "exported again: out v3",
    ]


def test_the_api_is_off_without_a_token(make_daemon, open_api, tmp_path):
    daemon = make_daemon(api={})
    client = open_api(daemon)
    answer = post(client, 1, {"values": {"total_amount": "1"}})
    assert answer.status_code == 404
    assert post(client, 1, {"values": {}}, token=None).status_code == 404


def test_a_missing_or_wrong_token_is_refused_and_compared_in_constant_time(
    make_daemon, open_api, tmp_path, monkeypatch
):
    daemon = make_daemon()
    doc = exported(daemon, tmp_path)
    client = open_api(daemon)
    compared: list[tuple[bytes, bytes]] = []
    real = web.hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        compared.append((a, b))
        return real(a, b)

    monkeypatch.setattr(web.hmac, "compare_digest", spy)
    body = {"values": {"total_amount": "99"}}
    for headers in [
        {},
        {"Authorization": f"Bearer {TOKEN[:-1]}"},
        {"Authorization": f"Basic {TOKEN}"},
        {"Authorization": "Bearer"},
        {"Authorization": TOKEN},
    ]:
        answer = client.post(
            f"/api/v1/documents/{doc}/corrections", content=json.dumps(body), headers=headers
        )
        assert answer.status_code == 401, headers
        assert answer.headers["www-authenticate"].startswith("Bearer")
        assert TOKEN not in answer.text
    assert compared == [(TOKEN[:-1].encode(), TOKEN.encode())]
    with daemon.engine.connect() as conn:
        assert (
            conn.execute(text("SELECT COUNT(*) FROM feedback WHERE kind = 'correction'")).scalar()
            == 0
        )
    assert post(client, doc, body).status_code == 200


def test_tokens_from_a_file_one_per_line(make_daemon, open_api, tmp_path, monkeypatch):
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "api-tokens").write_text(f"# the ERP\n{TOKEN}\n\n  {OTHER}  \n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
    daemon = make_daemon(api={"tokens_file": "api-tokens"})
    assert {TOKEN, OTHER} <= set(daemon.config.secrets), "each token is redacted from logs"
    doc = exported(daemon, tmp_path)
    client = open_api(daemon)
    assert post(client, doc, {"values": {"invoice_number": "A-1"}}, token=OTHER).status_code == 200
    assert post(client, doc, {"values": {"invoice_number": "A-2"}}, token=TOKEN).status_code == 200
    assert (
        post(client, doc, {"values": {"invoice_number": "A-3"}}, token="# the ERP").status_code
        == 401
    )


def test_tokens_are_checked_in_the_config(tmp_path):
    base = {"vendors": {"local": {"kind": "local"}}}
    with pytest.raises(config_mod.ConfigError) as short:
        config_mod.validate({**base, "web": {"api": {"tokens": ["secret"]}}}, Path("c.toml"))
    assert "web.api.tokens: each token must have at least 16" in str(short.value)
    assert "secret" not in str(short.value).replace("secret value", "")
    missing = {**base, "web": {"api": {"tokens_file": str(tmp_path / "nope")}}}
    with pytest.raises(config_mod.ConfigError) as unreadable:
        config_mod.validate(missing, Path("c.toml"))
    assert "web.api.tokens_file: cannot read" in str(unreadable.value)


def test_refused_corrections_say_why_and_change_nothing(make_daemon, open_api, tmp_path):
    daemon = make_daemon()
    doc = exported(daemon, tmp_path)
    client = open_api(daemon)

    def fields() -> list[tuple]:
        with daemon.engine.connect() as conn:
            return [tuple(r) for r in conn.execute(text("SELECT * FROM fields ORDER BY id"))]

    before = fields()
    for body, status, complaint, field in [
        ({"values": {"total_amount": "abc"}}, 422, "'abc' is not an amount", "total_amount"),
        ({"values": {"colour": "blue"}}, 422, "'colour' is not a field", "colour"),
        ({"values": {"invoice_number": "X", "issue_date": "soon"}}, 422, "not a date",
         "issue_date"),
        ({"confirm": ["due_date"]}, 422, "no value to confirm", "due_date"),
        ({"values": {}, "confirm": []}, 422, "say what is right", None),
        ({"values": ["total_amount"]}, 400, '"values" must map', None),
        ({"values": {"total_amount": True}}, 400, '"values" must map', None),
        ({"values": {}, "extra": 1}, 400, "unknown key(s): extra", None),
        ([1, 2], 400, "must be a JSON object", None),
        (b"{not json", 400, "not JSON", None),
        (b"\xff\xfe", 400, "not JSON", None),
    ]:  # fmt: skip
        answer = post(client, doc, body)
        assert answer.status_code == status, (body, answer.text)
        assert complaint in answer.json()["error"], answer.text
        if status == 422 and field is not None:
            assert answer.json()["field"] == field
            assert answer.json()["error"].endswith("nothing changed")
    big = post(client, doc, {"values": {"extra.note": "x" * 70_000}})
    assert big.status_code == 413
    assert fields() == before, "a refused correction changes nothing, not even its valid part"
    with daemon.engine.connect() as conn:
        assert conn.execute(text("SELECT COUNT(*) FROM deliveries")).scalar() == 1


def test_unknown_documents_and_documents_without_a_result(make_daemon, open_api, tmp_path):
    daemon = make_daemon()
    fakes.SCRIPTS["a"].extend(["ok"] + ["processing"] * 400)  # uploaded, never finished
    waiting = offer(daemon, "slow.pdf")
    client = open_api(daemon)
    unknown = post(client, 4242, {"values": {"total_amount": "1"}})
    assert unknown.status_code == 404
    assert unknown.json() == {"document_id": 4242, "error": "document 4242 is not in the store"}
    assert client.post("/api/v1/documents/abc/corrections").status_code == 404
    busy = post(client, waiting, {"values": {"total_amount": "1"}})
    assert busy.status_code == 409
    assert busy.json()["error"] == f"document {waiting} has no extraction to correct yet"
    assert client.get(f"/api/v1/documents/{waiting}/corrections").status_code == 405


def test_the_commented_api_example_in_config_example_toml_is_valid(tmp_path):
    example = (Path(__file__).resolve().parent.parent / "config.example.toml").read_text()
    tokens = tmp_path / "api-tokens"
    tokens.write_text(f"{TOKEN}\n{OTHER}\n")
    enabled = example.replace("# [web.api]\n", "[web.api]\n").replace(
        '# tokens_file = "api-tokens"', f'tokens_file = "{tokens}"'
    )
    assert enabled != example
    path = tmp_path / "config.toml"
    path.write_text(enabled)
    loaded = config_mod.load(path)
    assert [t.get_secret_value() for t in loaded.core.web.api.tokens] == [TOKEN, OTHER]
    assert TOKEN not in repr(loaded.core)
