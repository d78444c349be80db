"""Retry timing: exponential backoff with full jitter, and polling intervals."""

from __future__ import annotations

import random
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from daemon.config import PipelineSettings


def backoff(
    attempt: int, *, initial: float, maximum: float, rng: random.Random | None = None
) -> float:
    """Seconds to wait before retry number ``attempt`` (1-based).

    "Equal jitter": half the exponential delay is fixed, half random, so retries of a burst of
    failures spread out but never come back immediately.
    """
    ceiling = min(maximum, initial * 2 ** max(0, attempt - 1))
    return ceiling / 2 + (rng or random).uniform(0, ceiling / 2)


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
    delay = backoff(attempt, initial=initial, maximum=maximum, rng=rng)
    if retry_after is not None:
        delay = max(delay, min(retry_after, retry_after_max))
    return delay


def poll_delay(polls: int, *, first: float, maximum: float) -> float:
    """Gap before status poll number ``polls + 1``: starts at ``first``, grows by half each time."""
    return min(maximum, first * 1.5 ** max(0, polls))


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
