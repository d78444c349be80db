"""One function maps an error to the next state of a submission, a delivery or a feedback row."""

from __future__ import annotations

import pytest

from connectors.errors import AuthFailed, NotReady, RateLimited, TerminalError, TransientError
from daemon.config import PipelineSettings
from daemon.pipeline import states
from daemon.pipeline.states import (
    DELIVERY_LANE,
    FEEDBACK_LANE,
    SUBMISSION_LANE,
    Outcome,
    classify,
    verdict,
)

SETTINGS = PipelineSettings(max_attempts=3, backoff_initial=2.0, backoff_max=60.0)


@pytest.mark.parametrize(
    ("error", "outcome"),
    [
        (TransientError("503"), Outcome.RETRY),
        (RateLimited("429", retry_after=3), Outcome.RETRY),
        (TerminalError("not an invoice"), Outcome.REJECT),
        (AuthFailed("401"), Outcome.PAUSE),
        (NotReady("importing"), Outcome.WAIT),
        (KeyError("bug"), Outcome.RETRY),
    ],
)
def test_errors_are_classified_by_the_action_they_need(error, outcome):
    assert classify(error) is outcome


@pytest.mark.parametrize(
    ("lane", "rejected"),
    [(SUBMISSION_LANE, "rejected"), (DELIVERY_LANE, "dead"), (FEEDBACK_LANE, "refused")],
)
def test_a_rejection_ends_the_row_in_its_lane(lane, rejected):
    v = verdict(TerminalError("refused: already exported"), 0, SETTINGS, lane)
    assert (v.state, v.final, v.attempts, v.reason) == (
        rejected,
        True,
        1,
        "refused: already exported",
    )


@pytest.mark.parametrize("lane", [SUBMISSION_LANE, DELIVERY_LANE, FEEDBACK_LANE])
def test_transient_errors_back_off_then_give_up(lane):
    first = verdict(TransientError("503"), 0, SETTINGS, lane)
    assert (first.state, first.attempts) == ("failed", 1)
    assert 1.0 <= first.delay <= 2.0  # equal jitter: half fixed, half random
    second = verdict(TransientError("503"), 1, SETTINGS, lane)
    assert 2.0 <= second.delay <= 4.0
    last = verdict(TransientError("503"), 2, SETTINGS, lane)
    assert (last.state, last.final, last.attempts) == ("dead", True, 3)
    assert last.reason == "gave up after 3 attempts: TransientError: 503"


def test_retry_after_is_honoured_but_capped():
    v = verdict(RateLimited("429", retry_after=40), 0, SETTINGS, DELIVERY_LANE)
    assert v.delay == 40
    capped = verdict(RateLimited("429", retry_after=999_999), 0, SETTINGS, DELIVERY_LANE)
    assert capped.delay == SETTINGS.retry_after_max


@pytest.mark.parametrize(
    ("lane", "held"),
    [(SUBMISSION_LANE, None), (DELIVERY_LANE, "failed"), (FEEDBACK_LANE, "failed")],
)
def test_pause_and_wait_hold_the_row_without_burning_an_attempt(lane, held):
    paused = verdict(AuthFailed("401"), 2, SETTINGS, lane)
    assert (paused.outcome, paused.state, paused.attempts) == (Outcome.PAUSE, held, 2)
    assert paused.delay == states.PAUSE_DELAY
    waiting = verdict(NotReady("importing", retry_after=7), 2, SETTINGS, lane)
    assert (waiting.outcome, waiting.state, waiting.attempts, waiting.delay) == (
        Outcome.WAIT,
        held,
        2,
        7,
    )
    assert verdict(NotReady("importing"), 0, SETTINGS, lane).delay == states.WAIT_DELAY
