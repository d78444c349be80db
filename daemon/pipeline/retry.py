"""Retry timing of the pipeline's persisted retries: the HTTP kit's backoff policy
(``connectors.retry.Backoff``), so a vendor sees the same spacing whether a request is retried
inside one call or the whole step is retried later; and the growth of polling intervals."""

from __future__ import annotations

import random
from typing import TYPE_CHECKING

from connectors.retry import Backoff

if TYPE_CHECKING:
    from daemon.config import PipelineSettings


def backoff(
    attempt: int, *, initial: float, maximum: float, rng: random.Random | None = None
) -> float:
    """Seconds to wait before retry number ``attempt`` (1-based), with equal jitter."""
    return Backoff(initial=initial, maximum=maximum).delay(attempt, jitter=(rng or random).random)


def retry_delay(
    attempt: int,
    *,
    initial: float,
    maximum: float,
    retry_after: float | None,
    retry_after_max: float,
    rng: random.Random | None = None,
) -> float:
    """Backoff, but never sooner than the vendor's Retry-After (itself capped)."""
    policy = Backoff(initial=initial, maximum=maximum, retry_after_max=retry_after_max)
    return policy.delay(attempt, retry_after, jitter=(rng or random).random)


def poll_delay(polls: int, *, first: float, maximum: float) -> float:
    """Gap before status poll number ``polls + 1``: starts at ``first``, grows by half each time
    (no jitter: webhooks and the vendor's own pace spread polls enough)."""
    return Backoff(initial=first, maximum=maximum, factor=1.5).ceiling(polls + 1)


def delay_after(error: BaseException, attempts: int, settings: PipelineSettings) -> float:
    """The wait before retrying after ``error``, the ``attempts``-th failure, by the pipeline's
    backoff settings and the vendor's Retry-After if it gave one."""
    from daemon.pipeline.states import retry_after

    return retry_delay(
        attempts,
        initial=settings.backoff_initial,
        maximum=settings.backoff_max,
        retry_after=retry_after(error),
        retry_after_max=settings.retry_after_max,
    )
