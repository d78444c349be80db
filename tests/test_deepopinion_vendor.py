"""The DeepOpinion vendor against the in-memory DeepOpinion of ``test_deepopinion_client``:
pre-flight refusals, the synchronous submit, the profile's HITL found or created, webhooks
(token and allow-list), polling and fetching a document in review, probe and capabilities."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from pydantic import ValidationError

from connectors.base import PollStatus, WebhookRequest
from connectors.errors import TerminalError, TransientError, WebhookRejected
from connectors.vendors.deepopinion.vendor import DeepOpinionVendor
from tests.test_deepopinion_client import (
    EXTRACT,
    MODEL,
    PROJECT_PATH,
    PUBLIC,
    USER_ID,
    WEBHOOK_TOKEN,
    _fresh_limiters,  # noqa: F401  (the autouse fixture)
    clock,  # noqa: F401
    fake,  # noqa: F401
    make_document,
    make_settings,
    make_vendor,
)

HITLS = f"{PROJECT_PATH}/hitls"


def hitl_vendor(fake, clock, tmp_path, **overrides: Any):
    return make_vendor(fake, clock, tmp_path, hitl=True, webhook_token=WEBHOOK_TOKEN, **overrides)


def webhook(tail: str, body: bytes = b'{"document_name": "a.pdf"}', client: str = "10.1.2.3"):
    return WebhookRequest(
        method="POST",
        headers={"content-type": "application/json"},
        body=body,
        tail=tail,
        client=client,
    )


# --------------------------------------------------------------------------- settings


def test_settings_require_the_account_and_the_model() -> None:
    with pytest.raises(ValidationError) as caught:
        make_settings(model_id=None)
    assert "model_id" in str(caught.value)
    with pytest.raises(ValidationError, match="24 to 128"):
        make_settings(webhook_token="short")
    with pytest.raises(ValidationError, match="hitl_id is set but hitl is off"):
        make_settings(hitl_id=4)
    with pytest.raises(ValidationError, match="allow_from"):
        make_settings(allow_from=["not-an-address"])
    settings = make_settings()
    assert settings.extract_timeout == 600 and settings.max_upload_bytes == 50 * 1024 * 1024
    assert settings.return_annotated_pages is False and settings.hitl is False


def test_capabilities(fake, clock, tmp_path) -> None:
    plain = make_vendor(fake, clock, tmp_path)
    assert plain.capabilities.reconcile_uploads is False
    assert plain.capabilities.feedback is False
    assert plain.capabilities.webhooks is False
    assert make_vendor(fake, clock, tmp_path, hitl=True).capabilities.webhooks is False
    assert make_vendor(fake, clock, tmp_path, webhook_token=WEBHOOK_TOKEN).capabilities.webhooks \
        is False  # fmt: skip
    assert hitl_vendor(fake, clock, tmp_path).capabilities.webhooks is True


# --------------------------------------------------------------------------- pre-flight


@pytest.mark.parametrize(
    ("mime", "reason"),
    [
        ("text/plain", "does not take text/plain"),
        ("image/gif", "does not take image/gif"),
        ("application/zip", "does not take application/zip"),
        ("", "documents of unknown type"),
    ],
)
def test_other_formats_are_refused_before_any_request(fake, clock, tmp_path, mime, reason) -> None:
    vendor = make_vendor(fake, clock, tmp_path)
    with pytest.raises(TerminalError, match=reason):
        vendor.submit(make_document(tmp_path, mime=mime))
    assert fake.requests == []


def test_the_size_limit_is_refused_before_any_request(fake, clock, tmp_path) -> None:
    vendor = make_vendor(fake, clock, tmp_path, max_upload_bytes=1000)
    with pytest.raises(TerminalError, match="less than 1000 bytes"):
        vendor.submit(make_document(tmp_path, data=b"%PDF-" + b"x" * 995))
    assert fake.requests == []
    default = make_vendor(fake, clock, tmp_path)
    with pytest.raises(TerminalError, match=r"\(50 MiB\)"):
        default.submit(make_document(tmp_path, size=50 * 1024 * 1024))
    assert fake.requests == []


@pytest.mark.parametrize(
    ("mime", "filename", "sent"),
    [
        ("application/pdf", "Rechnung 03.pdf", "Rechnung 03.docrelay-7-{h}.pdf"),
        ("application/pdf", "scan.jpg", "scan.docrelay-7-{h}.pdf"),
        ("image/jpeg", "photo.JPEG", "photo.docrelay-7-{h}.JPEG"),
        ("image/tiff", "fax", "fax.docrelay-7-{h}.tif"),
        ("image/webp", "shot.webp", "shot.docrelay-7-{h}.webp"),
        ("image/png", "../../etc/x.png", "x.docrelay-7-{h}.png"),
    ],
)
def test_the_upload_name_is_tagged_with_the_types_extension(
    fake, clock, tmp_path, mime, filename, sent
) -> None:
    vendor = make_vendor(fake, clock, tmp_path)
    document = make_document(tmp_path, filename=filename, mime=mime)
    vendor.submit(document)
    assert fake.extractions[0]["name"] == sent.format(h=document.sha256[:8])
    assert fake.extractions[0]["content_type"] == mime


# --------------------------------------------------------------------------- submit


def test_submit_answers_with_the_result(fake, clock, tmp_path) -> None:
    vendor = make_vendor(fake, clock, tmp_path)
    document = make_document(tmp_path)
    result = vendor.submit(document, first_attempt=True)
    name = f"invoice-7.docrelay-7-{document.sha256[:8]}.pdf"
    assert result.vendor_ref == name
    assert result.keys == {"document_name": name}
    assert result.data == {"docrelay_document": 7, "document_name": name}
    assert result.raw["document_name"] == name
    assert result.raw["page_sizes"] == [[595.28, 841.89], [595.28, 841.89]]
    assert result.raw["answer"]["documents"][0]["name"] == name
    canonical = vendor.normalize(result.raw)
    assert canonical.get("total_amount").value_number == Decimal("1469.13")
    assert canonical.get("total_amount").bbox is not None
    assert canonical.review is None, "no HITL on this profile: taken as extracted"
    assert fake.hitls == {} and fake.count("GET", HITLS) == 0


# --------------------------------------------------------------------------- HITL


def test_the_hitl_is_created_once_for_the_model_with_the_webhook(fake, clock, tmp_path) -> None:
    vendor = hitl_vendor(fake, clock, tmp_path)
    vendor.submit(make_document(tmp_path, 7))
    vendor.submit(make_document(tmp_path, 8))
    (hitl,) = fake.hitls.values()
    assert hitl["name"] == "docrelay-do-main"
    assert hitl["model_id"] == MODEL and hitl["is_live"] is True
    assert hitl["assigned_user_id"] == USER_ID
    assert hitl["webhook_url"] == f"{PUBLIC}/webhooks/do-main/{WEBHOOK_TOKEN}"
    assert len(hitl["description"]) <= 255
    assert fake.writes().count(("POST", HITLS)) == 1
    assert fake.count("GET", HITLS) == 1, "found once per process"
    post = fake.requests.index(next(r for r in fake.requests if r[:2] == ("POST", HITLS)))
    first_extract = fake.requests.index(next(r for r in fake.requests if r[1] == EXTRACT))
    assert post < first_extract, "the HITL exists before the first extraction"


def test_an_existing_hitl_is_found_by_name_and_set_to_this_profile(fake, clock, tmp_path) -> None:
    fake.hitls[9] = {
        "id": 9,
        "name": "docrelay-do-main",
        "description": "ours, by hand",
        "assigned_user_id": 77,
        "model_id": MODEL,
        "is_live": False,
        "webhook_url": "https://old.example/hook",
        "project_id": 11,
        "labels": {},
    }
    fake.hitls[10] = {"id": 10, "name": "someone else's", "model_id": MODEL, "is_live": True,
                      "webhook_url": "", "assigned_user_id": 1}  # fmt: skip
    vendor = hitl_vendor(fake, clock, tmp_path)
    result = vendor.submit(make_document(tmp_path))
    assert result.data["hitl_id"] == 9
    assert fake.writes().count(("PUT", f"{HITLS}/9")) == 1
    assert ("POST", HITLS) not in fake.writes()
    assert fake.hitls[9]["is_live"] is True
    assert fake.hitls[9]["webhook_url"] == f"{PUBLIC}/webhooks/do-main/{WEBHOOK_TOKEN}"
    assert fake.hitls[9]["description"] == "ours, by hand", "a person's text is kept"
    assert fake.hitls[9]["assigned_user_id"] == 77


def test_a_hitl_that_is_already_right_is_not_written(fake, clock, tmp_path) -> None:
    fake.hitls[9] = {"id": 9, "name": "docrelay-do-main", "description": "x",
                     "assigned_user_id": 77, "model_id": MODEL, "is_live": True,
                     "webhook_url": f"{PUBLIC}/webhooks/do-main/{WEBHOOK_TOKEN}"}  # fmt: skip
    hitl_vendor(fake, clock, tmp_path).submit(make_document(tmp_path))
    assert fake.writes() == [("POST", EXTRACT)]


def test_a_configured_hitl_id_is_used_and_a_missing_one_is_said(fake, clock, tmp_path) -> None:
    fake.hitls[4] = {"id": 4, "name": "AP review", "description": "", "assigned_user_id": 2,
                     "model_id": MODEL, "is_live": True, "webhook_url": ""}  # fmt: skip
    vendor = make_vendor(fake, clock, tmp_path, hitl=True, hitl_id=4)
    result = vendor.submit(make_document(tmp_path))
    assert result.data["hitl_id"] == 4
    assert fake.count("GET", HITLS) == 0
    assert fake.writes() == [("POST", EXTRACT)], "no webhook_token: its URL is left alone"
    missing = make_vendor(fake, clock, tmp_path, hitl=True, hitl_id=99)
    with pytest.raises(TransientError, match="no HITL 99"):
        missing.submit(make_document(tmp_path))


def test_a_configured_hitl_of_another_model_is_not_moved(fake, clock, tmp_path) -> None:
    fake.hitls[4] = {"id": 4, "name": "AP review", "description": "", "assigned_user_id": 2,
                     "model_id": 77, "is_live": False, "webhook_url": ""}  # fmt: skip
    vendor = make_vendor(fake, clock, tmp_path, hitl=True, hitl_id=4, webhook_token=WEBHOOK_TOKEN)
    vendor.submit(make_document(tmp_path))
    assert fake.hitls[4]["model_id"] == 77, "someone's HITL: left on its model"
    assert fake.hitls[4]["is_live"] is True
    assert fake.hitls[4]["webhook_url"] == f"{PUBLIC}/webhooks/do-main/{WEBHOOK_TOKEN}"


def test_a_webhook_url_longer_than_deepopinion_takes_is_not_given(fake, clock, tmp_path) -> None:
    long_public = "https://relay.acme.example/" + "p" * 240
    vendor = hitl_vendor(fake, clock, tmp_path, public_url=long_public)
    vendor.submit(make_document(tmp_path))
    (hitl,) = fake.hitls.values()
    assert hitl["webhook_url"] == "", "polled only, rather than a URL DeepOpinion refuses"


# --------------------------------------------------------------------------- review


def test_a_low_confidence_document_waits_for_review_and_comes_back_reviewed(
    fake, clock, tmp_path
) -> None:
    vendor = hitl_vendor(fake, clock, tmp_path)
    document = make_document(tmp_path)
    result = vendor.submit(document)
    canonical = vendor.normalize(result.raw)
    assert canonical.review == (
        "waiting for DeepOpinion's human-in-the-loop review: Total amount 62 % < 90 %"
    )
    answer = result.data["answer"]
    assert answer["documents"][0]["hitl"]["status"] == "pending"
    assert "annotated_pages" not in answer["documents"][0], "page images stay out of the data"

    polled = vendor.poll(result.vendor_ref, result.data)
    assert polled.status == PollStatus.REVIEW
    assert polled.reason == (
        "waiting for DeepOpinion's human-in-the-loop review: 1 of 1 value(s) to review (HITL 1)"
    )
    (call,) = [r for r in fake.requests if r[1] == f"{HITLS}/1/reviews"]
    assert call[2] == {"with_full_data": "true", "document_name": result.vendor_ref}

    fake.complete(result.vendor_ref, {"Total amount": "1.496,13"})
    assert vendor.poll(result.vendor_ref, result.data).status == PollStatus.READY
    writes = fake.writes()
    raw = vendor.fetch(result.vendor_ref, result.data, document)
    assert fake.writes() == writes, "fetch is read-only"
    reviewed = vendor.normalize(raw)
    assert reviewed.review is None
    assert reviewed.get("total_amount").value_number == Decimal("1496.13")
    assert reviewed.get("invoice_number").value_text == "RE-2024-0117"
    assert reviewed.quality["reviewed"] is True


def test_with_annotated_pages_the_stored_result_keeps_them_and_the_data_does_not(
    fake, clock, tmp_path
) -> None:
    vendor = hitl_vendor(fake, clock, tmp_path, return_annotated_pages=True)
    result = vendor.submit(make_document(tmp_path))
    assert result.raw["answer"]["documents"][0]["annotated_pages"], "verbatim in the result"
    assert "annotated_pages" not in result.data["answer"]["documents"][0]


def test_a_confident_document_needs_no_review_and_keeps_no_answer(fake, clock, tmp_path) -> None:
    fake.low_confidence = False
    vendor = hitl_vendor(fake, clock, tmp_path)
    result = vendor.submit(make_document(tmp_path))
    assert vendor.normalize(result.raw).review is None
    assert "answer" not in result.data
    assert fake.reviews == []


def test_fetch_without_the_answer_is_a_clear_error(fake, clock, tmp_path) -> None:
    vendor = hitl_vendor(fake, clock, tmp_path)
    with pytest.raises(TerminalError, match="no DeepOpinion answer"):
        vendor.fetch("a.pdf", {"document_name": "a.pdf", "hitl_id": 1}, make_document(tmp_path))


# --------------------------------------------------------------------------- webhooks


def test_a_webhook_with_the_token_is_a_hint_by_document_name(fake, clock, tmp_path) -> None:
    vendor = hitl_vendor(fake, clock, tmp_path)
    body = (
        b'{"event": "review.completed", "hitl_id": 1, "document_id": 3, "document_name": '
        b'"x.docrelay-7-ab.pdf", "review_ids": [4], "status": "COMPLETED"}'
    )
    (hint,) = vendor.parse_webhook(webhook(f"{WEBHOOK_TOKEN}", body))
    assert hint.keys == {"document_name": "x.docrelay-7-ab.pdf"}
    assert hint.vendor_ref == "x.docrelay-7-ab.pdf"
    assert hint.event == "review.completed"
    assert fake.requests == [], "a hint only: nothing is read here"


@pytest.mark.parametrize("tail", ["", "wrong-token-0123456789abcdefgh", f"{WEBHOOK_TOKEN}x",
                                  f"{WEBHOOK_TOKEN}/more"])  # fmt: skip
def test_a_webhook_without_the_token_is_refused_as_not_found(fake, clock, tmp_path, tail) -> None:
    vendor = hitl_vendor(fake, clock, tmp_path)
    with pytest.raises(WebhookRejected) as caught:
        vendor.parse_webhook(webhook(tail))
    assert caught.value.status_code == 404
    assert WEBHOOK_TOKEN not in str(caught.value)


def test_the_allow_list_refuses_other_callers(fake, clock, tmp_path) -> None:
    vendor = hitl_vendor(fake, clock, tmp_path, allow_from=["192.0.2.0/24"])
    assert vendor.parse_webhook(webhook(WEBHOOK_TOKEN, client="192.0.2.8"))
    assert vendor.parse_webhook(webhook(WEBHOOK_TOKEN, client="::ffff:192.0.2.9"))
    for caller in ("198.51.100.1", None, "garbage"):
        with pytest.raises(WebhookRejected) as caught:
            vendor.parse_webhook(webhook(WEBHOOK_TOKEN, client=caller))
        assert caught.value.status_code == 403


def test_webhooks_are_refused_when_off_and_without_a_name(fake, clock, tmp_path) -> None:
    off = make_vendor(fake, clock, tmp_path, hitl=True)
    with pytest.raises(WebhookRejected) as caught:
        off.parse_webhook(webhook(WEBHOOK_TOKEN))
    assert caught.value.status_code == 404
    vendor = hitl_vendor(fake, clock, tmp_path)
    for body in (b"", b"not json", b"[]", b'{"document_name": ""}'):
        with pytest.raises(WebhookRejected) as caught:
            vendor.parse_webhook(webhook(WEBHOOK_TOKEN, body))
        assert caught.value.status_code == 400


# --------------------------------------------------------------------------- probe


def test_probe_logs_in_and_finds_the_model_without_writing(fake, clock, tmp_path) -> None:
    lines = hitl_vendor(fake, clock, tmp_path).probe()
    assert fake.logins == 1 and fake.writes() == []
    assert "model 5: Invoice Extraction v1 (PUBLISHED)" in lines
    assert "HITL docrelay-do-main does not exist yet; the first submit creates it" in lines
    assert DeepOpinionVendor.feedback_elsewhere in lines
    with pytest.raises(TerminalError, match="has no model 6"):
        make_vendor(fake, clock, tmp_path, model_id=6).probe()


# --------------------------------------------------------------------------- docrelay correct


def test_docrelay_correct_says_deepopinion_takes_no_feedback_outside_its_hitl(
    tmp_path, monkeypatch
) -> None:
    """The engine's own message for a vendor without feedback, with DeepOpinion's pointer to
    its HITL (the document went through a scripted vendor; the profile's class decides)."""
    import io
    from contextlib import nullcontext
    from pathlib import Path

    from sqlalchemy import text

    from connectors.base import IntakeItem
    from connectors.registry import available
    from daemon import config as config_mod
    from daemon.pipeline.feedback import correct
    from daemon.runtime import Daemon
    from tests import fakes
    from tests.daemon_proc import wait_until

    fakes.install(monkeypatch)
    raw = {
        "store": {"url": f"sqlite:///{tmp_path}/d.db", "blob_dir": str(tmp_path / "blobs")},
        "web": {"enabled": False},
        "vendors": {"do": {"kind": "scripted"}},
        "destinations": {"out": {"kind": "folder", "path": str(tmp_path / "out")}},
        "routes": [{"match": {"filename": "*.pdf"}, "vendor": "do", "destinations": ["out"]}],
    }
    daemon = Daemon(config_mod.validate(raw, Path("test.toml")))
    daemon.open()
    daemon.start()
    try:
        outcome = daemon.intake.ingest(
            IntakeItem(source="cli", source_ref="x.pdf", filename="x.pdf",
                       open=lambda: nullcontext(io.BytesIO(b"%PDF-1.4 fake %%EOF")),
                       mime_type="text/plain")
        )  # fmt: skip
        doc = outcome.document_id
        assert doc is not None
        wait_until(lambda: (tmp_path / "out" / f"{doc}.json").exists(), 10, what="exported")
        lines = correct(
            daemon.engine, doc, {"invoice_number": "INV-9"}, vendors={"do": DeepOpinionVendor}
        )
        assert lines[-1] == (
            "do takes no feedback: the correction is kept here only; DeepOpinion takes no "
            "feedback outside its human-in-the-loop review: correct the value there (a profile "
            "with hitl = true takes the reviewed values as a new version)"
        )
        with daemon.engine.connect() as conn:
            kinds = [r[0] for r in conn.execute(text("SELECT kind FROM feedback"))]
        assert "correction" not in kinds, "nothing queued for the vendor"
    finally:
        daemon.stop()
        available.cache_clear()
