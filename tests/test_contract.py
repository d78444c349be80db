"""The engine side of the connector contract, with scripted vendors in-process: review before
and after extraction, synchronous submit, vendor keys and re-opened results in webhooks, lease
heartbeats, per-correction feedback outcomes, versions of extractions and deliveries."""

from __future__ import annotations

import json
import time
from datetime import timedelta

import pytest
from sqlalchemy import select, text

from connectors.base import WebhookHint
from daemon import status
from daemon.pipeline import admin, ledger
from daemon.pipeline.feedback import correct
from daemon.store.models import utcnow
from tests import fakes
from tests.daemon_proc import wait_until
from tests.test_pipeline import events, make_daemon, offer, sub_state  # noqa: F401


def calls(profile: str, method: str) -> list:
    return [c for c in fakes.CALLS[profile] if c[0] == method]


def view_row(daemon, doc: int) -> dict:
    with daemon.engine.connect() as conn:
        return dict(
            conn.execute(
                text("SELECT * FROM docrelay_documents WHERE document_id = :d"), {"d": doc}
            )
            .mappings()
            .one()
        )


def extractions(daemon, doc: int) -> list[tuple[int, str | None]]:
    with daemon.engine.connect() as conn:
        return [
            tuple(r)
            for r in conn.execute(
                text(
                    "SELECT version, review_reason FROM extractions WHERE document_id = :d "
                    "ORDER BY id"
                ),
                {"d": doc},
            )
        ]


def deliveries(daemon, doc: int) -> list[tuple[int, str]]:
    with daemon.engine.connect() as conn:
        return [
            tuple(r)
            for r in conn.execute(
                text("SELECT version, state FROM deliveries WHERE document_id = :d ORDER BY id"),
                {"d": doc},
            )
        ]


# --------------------------------------------------------------------------- review


def test_review_before_the_result_waits_with_its_own_deadline_then_finishes(make_daemon, tmp_path):
    fakes.SCRIPTS["a"].extend(["ok", "processing", "review:waiting for splitting confirmation"])
    fakes.SCRIPTS["a"].extend(["review:waiting for splitting confirmation"] * 3)
    daemon = make_daemon(processing_timeout=2.0)
    doc = offer(daemon, "split.pdf")
    wait_until(lambda: sub_state(daemon, doc).get("state") == "review", 10, what="in review")
    row = sub_state(daemon, doc)
    assert row["review_reason"] == "waiting for splitting confirmation"
    # The review deadline is the profile's review_timeout (days), not the processing one.
    assert row["deadline_at"] - row["review_since"] > timedelta(days=13)
    assert view_row(daemon, doc)["state"] == "review"
    assert view_row(daemon, doc)["review_reason"] == "waiting for splitting confirmation"
    (waiting,) = status.summary(daemon.engine)["in_review"]
    assert (waiting["document_id"], waiting["vendor"]) == (doc, "a")
    time.sleep(2.5)  # longer than the processing timeout: review is not processing
    wait_until(lambda: sub_state(daemon, doc).get("state") == "done", 15, what="reviewed")
    assert ("transition", "processing", "review") in events(daemon, doc)
    assert ("transition", "review", "fetched") in events(daemon, doc)
    wait_until((tmp_path / "out" / f"{doc}.json").exists, 10, what="exported")
    assert sub_state(daemon, doc)["review_reason"] is None


def test_review_deadline_gives_up_and_says_why(make_daemon):
    fakes.SCRIPTS["a"].extend(["ok"] + ["review:a person must confirm the queue"] * 200)
    daemon = make_daemon(
        {"vendors": {"a": {"kind": "scripted", "review_timeout": 0.00002}}},  # 1.7 s
        routes=[{"vendor": "a", "destinations": ["out"]}],
    )
    doc = offer(daemon, "never-reviewed.pdf")
    wait_until(lambda: sub_state(daemon, doc).get("state") == "dead", 15, what="dead")
    assert "review at the vendor was not finished within" in sub_state(daemon, doc)["error"]


def test_a_result_that_needs_review_is_not_exported_until_reviewed(make_daemon, tmp_path):
    fakes.SCRIPTS["a:fetch"].extend(["needs_review", "total:15.00"])
    fakes.SCRIPTS["a"].extend(["ok", "ok", "review:HITL pending", "review:HITL pending", "ok"])
    daemon = make_daemon()
    doc = offer(daemon, "hitl.pdf")
    wait_until(lambda: sub_state(daemon, doc).get("state") == "review", 10, what="in review")
    assert extractions(daemon, doc)[0] == (1, "confidence thresholds not met")
    assert deliveries(daemon, doc) == []
    assert not (tmp_path / "out" / f"{doc}.json").exists()
    wait_until(lambda: deliveries(daemon, doc) == [(1, "delivered")], 10, what="reviewed")
    assert extractions(daemon, doc) == [(1, "confidence thresholds not met"), (2, None)]
    exported = json.loads((tmp_path / "out" / f"{doc}.json").read_text())
    assert exported["fields"]["total_amount"] == "15", "the reviewed values are exported"
    assert exported["quality"] == {"all_confidence_thresholds_met": True}
    with daemon.engine.connect() as conn:
        fields = conn.execute(
            text(
                "SELECT field, value_text, extraction_version FROM docrelay_fields "
                "WHERE document_id = :d AND field = 'total_amount'"
            ),
            {"d": doc},
        ).one()
    assert tuple(fields) == ("total_amount", "15.00", 2)


# --------------------------------------------------------------------------- synchronous submit


def test_a_synchronous_vendor_stores_the_answer_of_its_upload_once(make_daemon, tmp_path):
    daemon = make_daemon(
        {"vendors": {"s": {"kind": "scripted", "sync": True}}},
        routes=[{"vendor": "s", "destinations": ["out"]}],
    )
    doc = offer(daemon, "sync.pdf")
    wait_until(lambda: deliveries(daemon, doc) == [(1, "delivered")], 10, what="exported")
    assert [c[0] for c in fakes.CALLS["s"] if c[0] != "report"] == ["submit"]
    assert extractions(daemon, doc) == [(1, None)]
    trail = events(daemon, doc)
    assert ("transition", "uploading", "fetched") in trail
    assert not [e for e in trail if e[2] == "processing"]
    assert json.loads((tmp_path / "out" / f"{doc}.json").read_text())["fields"]["invoice_number"]


def test_a_repeated_upload_to_a_vendor_without_look_up_is_on_record(make_daemon):
    fakes.SCRIPTS["s"].append("transient")
    daemon = make_daemon(
        {"vendors": {"s": {"kind": "scripted", "sync": True}}},
        routes=[{"vendor": "s", "destinations": ["out"]}],
    )
    doc = offer(daemon, "twice.pdf")
    wait_until(lambda: sub_state(daemon, doc).get("state") == "done", 10, what="done")
    doubts = [e for e in admin.history(daemon.engine, doc) if e["kind"] == "in_doubt"]
    assert len(doubts) == 1
    assert "may process (and bill) this document twice" in doubts[0]["message"]


# --------------------------------------------------------------------------- heartbeats


def test_a_long_vendor_call_keeps_its_lease(make_daemon):
    fakes.SCRIPTS["a"].append("hold")
    daemon = make_daemon(lease_seconds=6)
    doc = offer(daemon, "slow-upload.pdf")
    wait_until(lambda: calls("a", "submit"), 5, what="upload started")
    try:
        time.sleep(9)  # one and a half leases
        row = sub_state(daemon, doc)
        assert row["state"] == "uploading"
        assert row["lease_expires_at"] > utcnow(), "the lease keeper renewed it"
        with daemon.engine.begin() as conn:  # another process looks for work
            taken = ledger.claim_submissions(
                conn, profile="a", owner="elsewhere:1:x", limit=10, lease_seconds=6
            )
        assert taken == []
        assert daemon.lease_keeper.renewed >= 1
    finally:
        fakes.GATES["a"].set()
    wait_until(lambda: sub_state(daemon, doc).get("state") == "done", 10, what="done")
    assert len(calls("a", "submit")) == 1


# --------------------------------------------------------------------------- webhooks v2


def test_hints_find_submissions_by_the_vendors_other_names(make_daemon):
    fakes.SCRIPTS["a"].extend(["ok"] + ["processing:60"] * 3)
    daemon = make_daemon()
    doc = offer(daemon, "keyed.pdf")
    wait_until(lambda: sub_state(daemon, doc).get("polls") == 1, 10, what="first poll")
    due = sub_state(daemon, doc)["next_attempt_at"]
    assert due > utcnow() + timedelta(seconds=30)
    assert daemon.poke_submission("a", [WebhookHint(None, keys={"ticket": "nope"})]) == 0
    assert daemon.poke_submission("a", [WebhookHint(None, keys={"ticket": f"T{doc}"})]) == 1
    wait_until(lambda: sub_state(daemon, doc).get("polls") == 2, 10, what="poked poll")
    assert daemon.poke_submission("a", [WebhookHint(None, document_id=doc)]) == 1
    wait_until(lambda: sub_state(daemon, doc).get("polls") == 3, 10, what="poked again")


def test_each_submission_keeps_its_own_names_and_a_name_is_recorded_once(make_daemon):
    daemon = make_daemon()
    docs = []
    for name in ("one.pdf", "two.pdf"):  # one after the other: the script is one queue
        fakes.SCRIPTS["a"].extend(["ok", "processing:60"])
        docs.append(doc := offer(daemon, name, data=f"%PDF-1.4 {name} %%EOF".encode()))
        wait_until(lambda d=doc: sub_state(daemon, d).get("polls") == 1, 10, what="first poll")
    first, second = docs
    ids = {doc: sub_state(daemon, doc)["id"] for doc in (first, second)}
    with daemon.engine.begin() as conn:
        ledger.add_keys(conn, "a", ids[first], {"ticket": f"T{first}"})  # already known
        rows = conn.execute(text("SELECT key, value, submission_id FROM submission_keys"))
        names = sorted(tuple(row) for row in rows)
    assert names == sorted([("ticket", f"T{d}", ids[d]) for d in (first, second)])
    assert daemon.poke_submission("a", [WebhookHint(None, keys={"ticket": f"T{second}"})]) == 1
    wait_until(lambda: sub_state(daemon, second).get("polls") == 2, 10, what="poked poll")
    assert sub_state(daemon, first)["polls"] == 1


def test_a_poll_can_replace_the_vendor_reference(make_daemon):
    fakes.SCRIPTS["a"].extend(["ok", "moved", "processing:60"])
    daemon = make_daemon()
    doc = offer(daemon, "task.pdf")
    wait_until(lambda: sub_state(daemon, doc).get("polls") == 2, 10, what="two polls")
    assert sub_state(daemon, doc)["vendor_ref"] == f"a-{doc}-final"
    assert daemon.poke_submission("a", [WebhookHint(f"a-{doc}-final")]) == 1


def test_a_changed_result_is_fetched_again_and_exported_as_a_new_version(make_daemon, tmp_path):
    daemon = make_daemon()
    doc = offer(daemon, "edited.pdf")
    wait_until(lambda: deliveries(daemon, doc) == [(1, "delivered")], 10, what="exported")
    ref = f"a-{doc}"
    assert daemon.poke_submission("a", [WebhookHint(ref)]) == 0, "a hint alone leaves done be"
    # Unchanged after all: back to done, no new version, no second export.
    assert daemon.poke_submission("a", [WebhookHint(ref, changed=True)]) == 1
    wait_until(
        lambda: ("transition", "processing", "done") in events(daemon, doc), 10, what="closed"
    )
    assert extractions(daemon, doc) == [(1, None)]
    assert deliveries(daemon, doc) == [(1, "delivered")]
    # A person changed the total at the vendor.
    fakes.SCRIPTS["a:fetch"].append("total:99.00")
    assert daemon.poke_submission("a", [WebhookHint(ref, changed=True)]) == 1
    wait_until(lambda: len(deliveries(daemon, doc)) == 2, 10, what="second version")
    wait_until(lambda: deliveries(daemon, doc)[-1] == (2, "delivered"), 10, what="delivered")
    assert extractions(daemon, doc) == [(1, None), (2, None)]
    exported = json.loads((tmp_path / "out" / f"{doc}.json").read_text())
    assert (exported["version"], exported["fields"]["total_amount"]) == (2, "99")


# --------------------------------------------------------------------------- feedback v2


def test_a_correction_the_vendor_refuses_is_shown_and_can_be_retried(make_daemon):
    daemon = make_daemon()
    doc = offer(daemon, "refused.pdf")
    wait_until(lambda: calls("a", "report"), 10, what="exported")
    fakes.SCRIPTS["a:feedback"].append("refuse:invoice_number")
    correct(daemon.engine, doc, {"invoice_number": "X-1", "total_amount": "20"},
            vendors=daemon.vendors)  # fmt: skip
    daemon.wake_all()

    def states() -> dict[str, str]:
        fb = ledger.feedback
        with daemon.engine.connect() as conn:
            rows = conn.execute(
                select(fb.c.field, fb.c.state, fb.c.correction).where(fb.c.kind == "correction")
            ).all()
        return {r.field: (r.state, r.correction) for r in rows}

    wait_until(lambda: "pending" not in str(states()), 10, what="feedback sent")
    assert states() == {
        "invoice_number": ("refused", "correct"),
        "total_amount": ("sent", "correct"),
    }
    (problem,) = status.summary(daemon.engine)["feedback_problems"]
    assert problem["field"] == "invoice_number"
    assert problem["reason"] == "already exported, no corrections"
    sent = calls("a", "feedback")[-1][1]
    assert {(c.field, c.kind, c.old_value) for c in sent} == {
        ("invoice_number", "correct", f"INV-{doc}"),
        ("total_amount", "correct", "12.50"),
    }
    assert {c.vendor_label for c in sent} == {"num", "total"}
    assert admin.retry(daemon.engine, documents=[doc], states=["refused"])["feedback"] == 1
    daemon.wake_all()
    wait_until(lambda: states()["invoice_number"][0] == "sent", 10, what="sent on retry")


def test_kinds_of_correction(make_daemon):
    daemon = make_daemon()
    doc = offer(daemon, "kinds.pdf")
    wait_until(lambda: calls("a", "report"), 10, what="exported")
    lines = correct(
        daemon.engine,
        doc,
        {"total_amount": "12,50", "due_date": "2026-04-30", "invoice_number": ""},
        confirm=[],
        vendors=daemon.vendors,
    )
    assert lines[:3] == [
        "total_amount: 12.50 → 12.50",
        "due_date: ∅ → 2026-04-30",
        f"invoice_number: INV-{doc} → ∅ (not in the document)",
    ]
    with daemon.engine.connect() as conn:
        kinds = dict(
            conn.execute(
                text("SELECT field, correction FROM feedback WHERE kind = 'correction'")
            ).all()
        )
        invoice = conn.execute(
            text("SELECT invoice_number, due_date FROM docrelay_invoices WHERE document_id = :d"),
            {"d": doc},
        ).one()
    assert kinds == {"total_amount": "confirm", "due_date": "add", "invoice_number": "absent"}
    assert invoice[0] is None and str(invoice[1]) == "2026-04-30"


def test_intake_keeps_page_sizes_for_mappings(make_daemon):
    import io
    from contextlib import nullcontext

    from connectors.base import IntakeItem
    from daemon.pipeline.submissions import document_ref
    from tests.invoices import random_spec, render_pdf

    daemon = make_daemon()
    data = render_pdf(random_spec(3))
    outcome = daemon.intake.ingest(
        IntakeItem(
            source="cli",
            source_ref="sized.pdf",
            filename="sized.pdf",
            open=lambda: nullcontext(io.BytesIO(data)),
            mime_type="application/pdf",
        )
    )
    documents = ledger.submissions.metadata.tables["documents"]
    with daemon.engine.connect() as conn:
        stored = (
            conn.execute(select(documents).where(documents.c.id == outcome.document_id))
            .mappings()
            .one()
        )
    assert stored["page_sizes"] == [[595.28, 841.89]]  # A4 in points
    assert document_ref(stored, daemon.blobs).page_sizes == ((595.28, 841.89),)


def test_a_short_wait_for_the_vendor_keeps_the_lease_and_needs_no_second_claim(make_daemon):
    """poll_interval 0.3 s: after the upload the submission stays leased here and this
    process polls it itself; a wait longer than that (processing:3) gives it back."""
    fakes.SCRIPTS["a"].extend(["ok", "processing:0.3", "ok"])
    vendors = {"a": {"kind": "scripted", "poll_interval": 0.3}, "b": {"kind": "scripted"}}
    daemon = make_daemon({"vendors": vendors})
    doc = offer(daemon, "kept.pdf")
    wait_until(lambda: calls("a", "submit"), 5, what="uploaded")
    wait_until(lambda: sub_state(daemon, doc).get("state") == "processing", 5, what="processing")
    row = sub_state(daemon, doc)
    assert row["lease_owner"] == daemon.owner, "kept through the 0.3 s wait"
    assert row["lease_expires_at"] > utcnow()
    wait_until(lambda: sub_state(daemon, doc).get("state") == "done", 10, what="done")
    assert len(calls("a", "poll")) == 2 and len(calls("a", "submit")) == 1
    assert sub_state(daemon, doc)["lease_owner"] is None

    fakes.SCRIPTS["a"].extend(["ok", "processing:3"])
    later = offer(daemon, "given-back.pdf", b"%PDF-1.4 other %%EOF")
    wait_until(lambda: sub_state(daemon, later).get("polls") == 1, 5, what="first poll")
    row = sub_state(daemon, later)
    assert row["state"] == "processing" and row["lease_owner"] is None, "3 s: given back"
    wait_until(lambda: sub_state(daemon, later).get("state") == "done", 10, what="done")


def test_a_kept_upload_of_a_reconciling_vendor_is_recorded_with_its_first_poll(make_daemon):
    """The vendor can find an earlier upload: the move to `processing` waits for the poll's
    outcome and is written in the same transaction as it (uploading … done in one UPDATE)."""
    fakes.SCRIPTS["a"].extend(["ok", "ok"])
    vendors = {
        "a": {"kind": "scripted", "poll_interval": 0.5, "reconcile": True},
        "b": {"kind": "scripted"},
    }
    daemon = make_daemon({"vendors": vendors})
    doc = offer(daemon, "deferred.pdf")
    wait_until(lambda: calls("a", "submit"), 5, what="uploaded")
    row = sub_state(daemon, doc)
    waiting = (row["state"], row["vendor_ref"], row["lease_owner"])
    assert waiting == ("uploading", None, daemon.owner)
    wait_until(lambda: sub_state(daemon, doc).get("state") == "done", 10, what="done")
    row = sub_state(daemon, doc)
    assert row["vendor_ref"] == f"a-{doc}" and row["vendor_data"] == {"n": 1}
    moves = [(a, b) for kind, a, b in events(daemon, doc) if kind == "transition"]
    assert moves == [
        ("queued", "uploading"), ("uploading", "processing"), ("processing", "fetched"),
        ("fetched", "normalized"), ("normalized", "done"),
    ]  # fmt: skip
    assert len(calls("a", "submit")) == 1 and len(calls("a", "poll")) == 1


@pytest.mark.parametrize("reconcile", [True, False])
@pytest.mark.parametrize("hint", ["ref", "key"])
def test_a_hint_polls_a_kept_submission_at_once(make_daemon, reconcile, hint):
    """A submission kept here for its first poll (2 s) is polled as soon as a webhook names
    it, by its reference or another name, even before the store knows either (a reconciling
    vendor's move to `processing` waits for the poll)."""
    vendors = {
        "a": {"kind": "scripted", "poll_interval": 2.0, "reconcile": reconcile},
        "b": {"kind": "scripted"},
    }
    daemon = make_daemon({"vendors": vendors})
    doc = offer(daemon, "hinted.pdf")
    wait_until(lambda: calls("a", "submit"), 5, what="uploaded")
    began = time.monotonic()
    named = (
        WebhookHint(f"a-{doc}") if hint == "ref" else WebhookHint(None, keys={"ticket": f"T{doc}"})
    )
    wait_until(
        lambda: daemon.poke_submission("a", [named]) or calls("a", "poll"), 1, what="hurried"
    )
    wait_until(lambda: sub_state(daemon, doc).get("state") == "done", 5, what="done")
    assert time.monotonic() - began < 1.0, "polled at once, not after the 2 s"
    assert len(calls("a", "poll")) == 1


def test_the_first_poll_counts_the_time_the_upload_spent_after_the_vendor_took_it(make_daemon):
    """An upload that followed the vendor's task for 1.4 s of a 1.5 s poll interval: the first
    poll comes 0.1 s after it, not 1.5 s."""
    vendors = {
        "a": {"kind": "scripted", "poll_interval": 1.5, "waited": 1.4},
        "b": {"kind": "scripted"},
    }
    daemon = make_daemon({"vendors": vendors})
    doc = offer(daemon, "waited.pdf")
    wait_until(lambda: calls("a", "submit"), 5, what="uploaded")
    began = time.monotonic()
    wait_until(lambda: sub_state(daemon, doc).get("state") == "done", 5, what="done")
    assert time.monotonic() - began < 1.0
