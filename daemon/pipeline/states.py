"""The submission state machine: which moves are legal, and what an outcome leads to.

::

    queued → uploading → processing → fetched → normalized → (review) → done
                     ↘ failed (transient: retried with backoff until max attempts) → dead
       rejected (permanent: bad input or the vendor refused it, with a reason)

``failed`` remembers the state it left (``resume_state``); a retry returns there.
"""

from __future__ import annotations

from connectors.errors import AuthFailed, NotReady, RateLimited, TerminalError, TransientError
from daemon.store.models import DeliveryState, SubmissionState

S = SubmissionState

ACTIVE: frozenset[str] = frozenset(
    {S.QUEUED, S.UPLOADING, S.PROCESSING, S.FETCHED, S.NORMALIZED, S.FAILED}
)
"""States a worker may claim."""

FINAL: frozenset[str] = frozenset({S.DONE, S.DEAD, S.REJECTED})

TRANSITIONS: dict[str, frozenset[str]] = {
    S.QUEUED: frozenset({S.UPLOADING, S.FAILED, S.DEAD, S.REJECTED}),
    S.UPLOADING: frozenset({S.PROCESSING, S.FAILED, S.DEAD, S.REJECTED}),
    S.PROCESSING: frozenset({S.PROCESSING, S.FETCHED, S.FAILED, S.DEAD, S.REJECTED}),
    S.FETCHED: frozenset({S.NORMALIZED, S.FAILED, S.DEAD, S.REJECTED}),
    S.NORMALIZED: frozenset({S.REVIEW, S.DONE, S.FAILED, S.DEAD}),
    S.REVIEW: frozenset({S.DONE, S.REJECTED}),
    S.FAILED: frozenset(
        {S.QUEUED, S.UPLOADING, S.PROCESSING, S.FETCHED, S.NORMALIZED, S.DEAD, S.REJECTED}
    ),
    S.DEAD: frozenset({S.QUEUED, S.UPLOADING, S.PROCESSING, S.FETCHED, S.NORMALIZED}),
    S.REJECTED: frozenset({S.QUEUED}),
    S.DONE: frozenset({S.FETCHED}),
}
"""Legal moves. DONE → FETCHED is a re-fetch after a webhook says the result changed."""

DELIVERY_ACTIVE: frozenset[str] = frozenset({DeliveryState.PENDING, DeliveryState.FAILED})


class IllegalTransition(RuntimeError):
    pass


def check(from_state: str, to_state: str) -> None:
    if to_state not in TRANSITIONS.get(from_state, frozenset()):
        raise IllegalTransition(f"{from_state} → {to_state} is not a legal transition")


def classify(error: BaseException) -> str:
    """The action an error asks for: ``retry``, ``wait``, ``reject`` or ``pause``.

    Anything unclassified is a bug or an unexpected environment problem: retried, so a fix and a
    restart can still save the document, but logged with its traceback.
    """
    if isinstance(error, AuthFailed):
        return "pause"
    if isinstance(error, TerminalError):
        return "reject"
    if isinstance(error, NotReady):
        return "wait"
    return "retry"


def retry_after(error: BaseException) -> float | None:
    if isinstance(error, RateLimited | NotReady):
        return error.retry_after
    return None


def is_expected(error: BaseException) -> bool:
    """Classified errors are logged in one line; others with a traceback."""
    return isinstance(error, TransientError | TerminalError | AuthFailed | NotReady)
