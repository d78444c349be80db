"""The testkit vendor's own rules for callbacks: the path token and the address allow-list."""

from __future__ import annotations

import json

import pytest

from connectors.base import WebhookRequest
from connectors.errors import WebhookRejected
from tests.conformance.harness import context
from tests.conformance.testkit import vendor as testkit

TOKEN = "a-token-nobody-guesses-0123456789"


def vendor(tmp_path, **keys) -> testkit.TestkitVendor:
    settings = testkit.TestkitSettings(
        base_url="http://127.0.0.1:9/api", password="x", callback_token=TOKEN, **keys
    )
    return testkit.TestkitVendor(settings, context("kit", tmp_path))


def call(tail: str, client: str = "127.0.0.1", **body) -> WebhookRequest:
    return WebhookRequest("POST", {}, json.dumps(body).encode(), tail=tail, client=client)


def test_the_token_in_the_path_is_the_proof(tmp_path):
    made = vendor(tmp_path)
    (hint,) = made.parse_webhook(call(TOKEN, document=3, event_id="e1", review_id="R3"))
    assert (hint.vendor_ref, hint.delivery_id, dict(hint.keys)) == ("3", "e1", {"review_id": "R3"})
    with pytest.raises(WebhookRejected) as wrong:
        made.parse_webhook(call(TOKEN[:-1], document=3))
    assert wrong.value.status_code == 404
    made.close()


def test_an_allow_list_refuses_other_addresses(tmp_path):
    made = vendor(tmp_path, allow_from=["10.0.0.7"])
    assert made.parse_webhook(call(TOKEN, client="10.0.0.7", document=1))
    with pytest.raises(WebhookRejected) as refused:
        made.parse_webhook(call(TOKEN, client="127.0.0.1", document=1))
    assert refused.value.status_code == 403
    made.close()
