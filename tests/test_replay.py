"""RELIABILITY 22: a repeated webhook id is answered but acted on once; stale or future
timestamps are refused."""

from __future__ import annotations

import pytest

from connectors.base import WebhookHint
from connectors.errors import WebhookRejected
from daemon.replay import ReplayGuard


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def test_r22_an_event_id_is_acted_on_once_within_the_window():
    clock = Clock()
    guard = ReplayGuard(window=600, clock=clock)
    first = WebhookHint("doc-1", delivery_id="evt-1")
    assert guard.admit("p", [first]) == [first]
    assert guard.admit("p", [first]) == []
    assert guard.repeats == 1
    assert guard.admit("other-profile", [first]) == [first], "ids are per profile"
    clock.now += 601
    assert guard.admit("p", [first]) == [first], "remembered for the window only"


def test_hints_of_one_call_may_share_its_id_and_hints_without_id_always_pass():
    guard = ReplayGuard(clock=Clock())
    pair = [WebhookHint("a", delivery_id="evt"), WebhookHint("b", delivery_id="evt")]
    assert guard.admit("p", pair) == pair
    plain = WebhookHint("c")
    assert guard.admit("p", [plain]) == [plain]
    assert guard.admit("p", [plain]) == [plain]


@pytest.mark.parametrize("offset", [-301, 301])
def test_r22_stale_and_future_timestamps_are_refused(offset):
    clock = Clock()
    guard = ReplayGuard(tolerance=300, clock=clock)
    with pytest.raises(WebhookRejected) as refused:
        guard.admit("p", [WebhookHint("x", sent_at=clock.now + offset, delivery_id="e")])
    assert refused.value.status_code == 401
    fresh = WebhookHint("x", sent_at=clock.now - 299, delivery_id="e")
    assert guard.admit("p", [fresh]) == [fresh], "a refused call did not use up its id"


def test_memory_is_bounded():
    guard = ReplayGuard(capacity=3, clock=Clock())
    for n in range(5):
        guard.admit("p", [WebhookHint("x", delivery_id=str(n))])
    assert guard.admit("p", [WebhookHint("x", delivery_id="0")]) != []
    assert guard.admit("p", [WebhookHint("x", delivery_id="4")]) == []
