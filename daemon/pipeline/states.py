"""The submission state machine: which moves are legal, and what an outcome leads to.

::

    queued → uploading → processing → fetched → normalized → (review) → done
                     ↘ failed (transient: retried with backoff until max attempts) → dead
       rejected (permanent: bad input or the vendor refused it, with a reason)

``failed`` remembers the state it left (``resume_state``); a retry returns there. ``review``
comes before a result (the vendor waits for a person: processing → review → processing or
fetched) or after one (the result needs a person's check: normalized → review → fetched, the
reviewed result being a new extraction version).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import TYPE_CHECKING

from connectors.errors import AuthFailed, NotReady, RateLimited, TerminalError, TransientError
from daemon.pipeline.retry import delay_after
from daemon.store.models import DeliveryState, FeedbackState, SubmissionState

if TYPE_CHECKING:
    from daemon.config import PipelineSettings

S = SubmissionState

ACTIVE: frozenset[str] = frozenset(
    {S.QUEUED, S.UPLOADING, S.PROCESSING, S.FETCHED, S.NORMALIZED, S.REVIEW, S.FAILED}
)
"""States a worker may claim."""

FINAL: frozenset[str] = frozenset({S.DONE, S.DEAD, S.REJECTED})

TRANSITIONS: dict[str, frozenset[str]] = {
    S.QUEUED: frozenset({S.UPLOADING, S.FAILED, S.DEAD, S.REJECTED}),
    S.UPLOADING: frozenset({S.QUEUED, S.PROCESSING, S.FETCHED, S.FAILED, S.DEAD, S.REJECTED}),
    S.PROCESSING: frozenset(
        {S.PROCESSING, S.REVIEW, S.FETCHED, S.DONE, S.FAILED, S.DEAD, S.REJECTED}
    ),
    S.FETCHED: frozenset({S.NORMALIZED, S.FAILED, S.DEAD, S.REJECTED}),
    S.NORMALIZED: frozenset({S.REVIEW, S.DONE, S.FAILED, S.DEAD}),
    S.REVIEW: frozenset({S.REVIEW, S.PROCESSING, S.FETCHED, S.FAILED, S.DEAD, S.REJECTED}),
    S.FAILED: frozenset(
        {
            S.QUEUED,
            S.UPLOADING,
            S.PROCESSING,
            S.FETCHED,
            S.NORMALIZED,
            S.REVIEW,
            S.DEAD,
            S.REJECTED,
        }
    ),
    S.DEAD: frozenset({S.QUEUED, S.UPLOADING, S.PROCESSING, S.FETCHED, S.NORMALIZED, S.REVIEW}),
    S.REJECTED: frozenset({S.QUEUED}),
    S.DONE: frozenset({S.PROCESSING}),
}
"""Legal moves. UPLOADING → FETCHED is a synchronous vendor's upload that answered with the
result; DONE → PROCESSING re-opens a finished submission whose result the vendor says changed,
and PROCESSING → DONE closes it again when the result turned out unchanged. UPLOADING →
QUEUED is a document held by its profile's budget before anything was sent (see
``pipeline.budgets``)."""

DELIVERY_ACTIVE: frozenset[str] = frozenset({DeliveryState.PENDING, DeliveryState.FAILED})


class IllegalTransition(RuntimeError):
    pass


def check(from_state: str, to_state: str) -> None:
    if to_state not in TRANSITIONS.get(from_state, frozenset()):
        raise IllegalTransition(f"{from_state} → {to_state} is not a legal transition")


class Outcome(enum.StrEnum):
    """What an error asks of the engine, whichever row (submission, delivery, feedback) met it."""

    RETRY = "retry"
    """Transient: back off and try again, counting an attempt, until max_attempts."""
    REJECT = "reject"
    """Permanent: retrying cannot help; the row ends with the reason."""
    PAUSE = "pause"
    """Credentials refused: hold the connector until a person fixes them; no attempt counted."""
    WAIT = "wait"
    """The other side is not ready yet: ask again later; no attempt counted."""


def classify(error: BaseException) -> Outcome:
    """The outcome an error asks for.

    Anything unclassified is a bug or an unexpected environment problem: retried, so a fix and a
    restart can still save the document, but logged with its traceback.
    """
    if isinstance(error, AuthFailed):
        return Outcome.PAUSE
    if isinstance(error, TerminalError):
        return Outcome.REJECT
    if isinstance(error, NotReady):
        return Outcome.WAIT
    return Outcome.RETRY


@dataclass(frozen=True, slots=True)
class Lane:
    """The states one kind of row ends in, by outcome."""

    retry: str
    """Waiting for the next attempt (``failed``)."""
    give_up: str
    """Attempts exhausted (``dead``)."""
    reject: str
    """Refused for good (``rejected`` for submissions, ``dead`` or ``refused`` for others)."""
    hold: str | None
    """For PAUSE and WAIT: the state to wait in, or None to stay in the current one."""


SUBMISSION_LANE = Lane(retry=S.FAILED, give_up=S.DEAD, reject=S.REJECTED, hold=None)
DELIVERY_LANE = Lane(
    retry=DeliveryState.FAILED,
    give_up=DeliveryState.DEAD,
    reject=DeliveryState.DEAD,
    hold=DeliveryState.FAILED,
)
FEEDBACK_LANE = Lane(
    retry=FeedbackState.FAILED,
    give_up=FeedbackState.DEAD,
    reject=FeedbackState.REFUSED,
    hold=FeedbackState.FAILED,
)


@dataclass(frozen=True, slots=True)
class Verdict:
    """Where a row goes after an error: the one answer every runner applies."""

    outcome: Outcome
    state: str | None
    """The next state (None: stay in the current state, released for later)."""
    attempts: int
    """The row's attempt count after this error."""
    delay: float | None
    """Seconds until the row is due again; None when it ended."""
    reason: str
    """What to record as the row's error and in the event."""

    @property
    def final(self) -> bool:
        return self.delay is None


PAUSE_DELAY = 60.0
"""Seconds a row held for re-authentication waits before it is looked at again."""
WAIT_DELAY = 5.0
"""Seconds a not-ready row waits when the other side did not say how long."""


def verdict(error: BaseException, attempts: int, settings: PipelineSettings, lane: Lane) -> Verdict:
    """Map an error met on a row with ``attempts`` failures so far to the row's next state."""
    outcome = classify(error)
    message = f"{type(error).__name__}: {error}"
    if outcome is Outcome.REJECT:
        return Verdict(outcome, lane.reject, attempts + 1, None, str(error))
    if outcome is Outcome.PAUSE:
        return Verdict(outcome, lane.hold, attempts, PAUSE_DELAY, str(error))
    if outcome is Outcome.WAIT:
        delay = retry_after(error) or WAIT_DELAY
        return Verdict(outcome, lane.hold, attempts, delay, message)
    attempts += 1
    if attempts >= settings.max_attempts:
        reason = f"gave up after {attempts} attempts: {message}"
        return Verdict(outcome, lane.give_up, attempts, None, reason)
    delay = delay_after(error, attempts, settings)
    return Verdict(outcome, lane.retry, attempts, delay, message)


def retry_after(error: BaseException) -> float | None:
    if isinstance(error, RateLimited | NotReady):
        return error.retry_after
    return None


def is_expected(error: BaseException) -> bool:
    """Classified errors are logged in one line; others with a traceback."""
    return isinstance(error, TransientError | TerminalError | AuthFailed | NotReady)
