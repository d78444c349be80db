"""The fallback chain: a document moves on along its route's profiles for the triggers the
route names, and its history says which trigger moved it. In-process engine, scripted vendors."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select, text

from daemon import config as config_mod
from daemon.config import ConfigError
from daemon.pipeline import ledger
from tests import fakes
from tests.daemon_proc import wait_until
from tests.test_pipeline import make_daemon, offer, sub_state  # noqa: F401 (a fixture)

CHAIN = {
    "vendors": {
        "a": {"kind": "scripted"},
        "b": {"kind": "scripted"},
        "c": {"kind": "scripted"},
        "local": {"kind": "local"},
    }
}


def route(**extra) -> list[dict]:
    return [{"vendor": "a", "fallback": ["b", "c"], "destinations": ["out"], **extra}]


def history(daemon, doc: int) -> list[dict]:
    with daemon.engine.connect() as conn:
        return [
            dict(r)
            for r in conn.execute(
                select(ledger.events)
                .where(ledger.events.c.document_id == doc)
                .order_by(ledger.events.c.id)
            ).mappings()
        ]


def exports(tmp_path: Path) -> list[Path]:
    return sorted((tmp_path / "out").glob("**/*.json"))


def public_row(daemon, doc: int) -> tuple:
    with daemon.engine.connect() as conn:
        return tuple(
            conn.execute(
                text("SELECT state, vendor FROM docrelay_documents WHERE document_id = :d"),
                {"d": doc},
            ).one()
        )


def test_a_document_walks_the_whole_chain_and_each_step_names_its_trigger(make_daemon):
    fakes.SCRIPTS["a"].append("terminal")
    fakes.SCRIPTS["b"].extend(["transient", "transient"])
    daemon = make_daemon(CHAIN, routes=route(), max_attempts=2)
    doc = offer(daemon, "walk.pdf")
    wait_until(lambda: sub_state(daemon, doc, "c").get("state") == "done", 15, what="c done")
    a, b, c = (sub_state(daemon, doc, p) for p in "abc")
    assert (a["state"], a["role"], a["fallback"], a["later_fallbacks"]) == (
        "rejected", "primary", "b", ["c"],
    )  # fmt: skip
    assert (b["state"], b["role"], b["fallback"], b["later_fallbacks"]) == (
        "dead", "fallback", "c", None,
    )  # fmt: skip
    assert (c["state"], c["role"], c["fallback"]) == ("done", "fallback", None)
    moved = [e["message"] for e in history(daemon, doc) if e["from_state"] and e["to_state"]
             in ("rejected", "dead")]  # fmt: skip
    assert moved[0].startswith("moved to fallback b: ") and "unsupported layout" in moved[0]
    assert moved[1].startswith("moved to fallback c: ") and "gave up" in moved[1]
    queued = [e["message"] for e in history(daemon, doc) if e["kind"] == "queued"]
    assert queued[1].startswith("fallback profile b via fallback of a (rejected: ")
    assert queued[2].startswith("fallback profile c via fallback of b (dead: ")
    assert public_row(daemon, doc) == ("done", "c")
    counted = {
        s.labels["trigger"]: s.value
        for m in daemon.metrics.fallback_moves.collect()
        for s in m.samples
        if s.name.endswith("_total")
    }
    assert counted == {"rejected": 1.0, "dead": 1.0}


def test_a_trigger_left_out_of_fallback_on_keeps_the_document_where_it_is(make_daemon):
    fakes.SCRIPTS["a"].append("terminal")
    daemon = make_daemon(CHAIN, routes=route(fallback_on=["dead"]))
    doc = offer(daemon, "kept.pdf")
    wait_until(lambda: sub_state(daemon, doc, "a").get("state") == "rejected", 10, what="a")
    assert sub_state(daemon, doc, "b") == {}
    assert public_row(daemon, doc) == ("rejected", "a")


def test_low_confidence_moves_on_and_the_last_profile_keeps_what_it_read(make_daemon, tmp_path):
    fakes.SCRIPTS["a:fetch"].append("confidence:0.31")
    fakes.SCRIPTS["b:fetch"].append("no_total")
    fakes.SCRIPTS["c:fetch"].append("confidence:0.2")
    rules = {"required": ["total_amount"], "min_confidence": {"total_amount": 0.8}}
    daemon = make_daemon(CHAIN, routes=route(**rules))
    doc = offer(daemon, "weak.pdf")
    wait_until(lambda: sub_state(daemon, doc, "c").get("state") == "done", 15, what="c done")
    wait_until(lambda: len(exports(tmp_path)) == 1, 10, what="one export")
    a, b, c = (sub_state(daemon, doc, p) for p in "abc")
    assert (a["state"], a["error_class"]) == ("done", "low_confidence")
    assert a["error"] == "moved to fallback b: low confidence: total_amount 0.31 < 0.80"
    assert (b["state"], b["error_class"]) == ("done", "low_confidence")
    assert b["error"] == "moved to fallback c: low confidence: total_amount missing"
    assert (c["state"], c["error"]) == ("done", None)  # the end of the chain: it stands
    with daemon.engine.connect() as conn:
        sent = conn.execute(
            select(ledger.deliveries.c.submission_id).where(ledger.deliveries.c.document_id == doc)
        ).scalars()
        assert list(sent) == [c["id"]]
        total = conn.execute(
            text("SELECT total_amount, vendor FROM docrelay_invoices WHERE document_id = :d"),
            {"d": doc},
        ).one()
    assert (float(total[0]), total[1]) == (12.5, "c")
    assert len(exports(tmp_path)) == 1
    with daemon.engine.connect() as conn:  # a's vendor changing its result re-opens nothing
        named = {"refs": [a["vendor_ref"]], "states": ("done",)}
        assert ledger.hinted(conn, "a", **named) == []
        assert [
            r.id for r in ledger.hinted(conn, "c", refs=[c["vendor_ref"]], states=("done",))
        ] == [c["id"]]


def test_a_confident_result_is_not_moved(make_daemon, tmp_path):
    fakes.SCRIPTS["a:fetch"].append("confidence:0.93")
    daemon = make_daemon(CHAIN, routes=route(min_confidence={"*": 0.8}))
    doc = offer(daemon, "sure.pdf")
    wait_until(lambda: len(exports(tmp_path)) == 1, 10, what="exported")
    assert sub_state(daemon, doc, "a")["state"] == "done"
    assert sub_state(daemon, doc, "b") == {}


def test_a_profile_past_the_deadline_hands_the_document_on(make_daemon, tmp_path):
    fakes.SCRIPTS["a"].extend(["ok", *["processing:0.3"] * 100])
    daemon = make_daemon(CHAIN, routes=route(deadline=1))
    doc = offer(daemon, "late.pdf")
    wait_until(lambda: sub_state(daemon, doc, "b").get("state") == "done", 15, what="b done")
    a = sub_state(daemon, doc, "a")
    assert (a["state"], a["error_class"]) == ("dead", "deadline")
    assert a["error"].startswith("moved to fallback b: deadline: a not done ")
    wait_until(lambda: len(exports(tmp_path)) == 1, 10, what="exported once")
    assert public_row(daemon, doc) == ("done", "b")


@pytest.mark.parametrize(
    ("extra", "key", "words"),
    [
        ({"fallback": ["b", "a"]}, "routes[0].fallback", "'a' is in the chain twice"),
        ({"fallback": ["b", "nope"]}, "routes[0].fallback", "no vendor profile named 'nope'"),
        ({"required": ["totl"]}, "routes[0].required", "'totl' is not a canonical field"),
        ({"min_confidence": {"total_amount": 2}}, "routes[0].min_confidence", "between 0 and 1"),
        ({"fallback_on": ["sometimes"]}, "routes[0].fallback_on[0]", "input should be"),
    ],
)
def test_chain_settings_are_checked(extra, key, words, tmp_path, monkeypatch):
    fakes.install(monkeypatch)
    raw = {
        "store": {"url": f"sqlite:///{tmp_path}/d.db"},
        **CHAIN,
        "routes": [{"vendor": "a", **extra}],
    }
    with pytest.raises(ConfigError) as caught:
        config_mod.validate(raw, Path("docrelay.toml"))
    text_ = str(caught.value)
    assert f"docrelay.toml: {key}: " in text_ and words in text_, text_


@pytest.mark.parametrize("shadow_first", [True, False], ids=["shadow-done", "shadow-busy"])
def test_a_shadow_of_the_next_profile_stands_in_without_a_second_upload(
    make_daemon, tmp_path, shadow_first
):
    """The next profile of the chain read the document already as a shadow: its submission is
    promoted, and its result is exported whether it was done (exported at the promotion) or
    still busy (exported when it finishes)."""
    if shadow_first:  # a keeps polling until b is done, then rejects
        fakes.SCRIPTS["a"].extend(["ok", "processing:0.6", "processing:0.6", "rejected"])
    else:  # a rejects at once, b is still processing
        fakes.SCRIPTS["a"].append("terminal")
        fakes.SCRIPTS["b"].extend(["ok", "processing:0.6", "processing:0.6"])
    daemon = make_daemon(CHAIN, routes=route(shadow=["b"]))
    doc = offer(daemon, "stand-in.pdf")
    wait_until(lambda: len(exports(tmp_path)) == 1, 15, what="one export")
    a, b = sub_state(daemon, doc, "a"), sub_state(daemon, doc, "b")
    assert a["state"] == "rejected"
    moved = [e["message"] for e in history(daemon, doc) if e["kind"] == "moved"]
    assert len(moved) == 1 and moved[0].startswith("moved to fallback b: "), moved
    assert (b["state"], b["role"], b["destinations"], b["fallback"]) == (
        "done", "fallback", ["out"], "c",
    )  # fmt: skip
    assert [c for c in fakes.CALLS["b"] if c[0] == "submit"] == [("submit", doc)]
    assert sub_state(daemon, doc, "c") == {}
    promoted = [e for e in history(daemon, doc) if e["kind"] == "promoted"]
    assert len(promoted) == 1 and promoted[0]["submission_id"] == b["id"]
    done = [e["id"] for e in history(daemon, doc)
            if e["submission_id"] == b["id"] and e["to_state"] == "done"]  # fmt: skip
    assert (done[0] < promoted[0]["id"]) is shadow_first  # the case the test means to make
    with daemon.engine.connect() as conn:
        sent = conn.execute(
            select(ledger.deliveries.c.submission_id, ledger.deliveries.c.version).where(
                ledger.deliveries.c.document_id == doc
            )
        ).all()
    assert [tuple(r) for r in sent] == [(b["id"], 1)]
    assert public_row(daemon, doc) == ("done", "b")
