"""Retry policy: how many attempts, and how long to wait before the next one."""

from __future__ import annotations

import random

from django_ray.backoff import capped_backoff
from django_ray.conf import ray_settings


def max_attempts(row_max_attempts: int | None) -> int:
    """Attempts allowed for a task: its own override, else ``MAX_TASK_ATTEMPTS``."""
    return row_max_attempts or ray_settings().MAX_TASK_ATTEMPTS


def backoff_seconds(attempt_number: int, rng: random.Random | None = None) -> float:
    """Delay before the attempt after ``attempt_number`` (1-based): exponential, capped, jittered.

    ``base * 2**(attempt_number - 1)``, capped at ``RETRY_BACKOFF_MAX_SECONDS``, plus a random
    extra of up to ``RETRY_JITTER`` times that, so that a burst of failures does not retry in
    lockstep.
    """
    conf = ray_settings()
    return capped_backoff(
        attempt_number,
        float(conf.RETRY_BACKOFF_SECONDS),
        float(conf.RETRY_BACKOFF_MAX_SECONDS),
        float(conf.RETRY_JITTER),
        rng,
    )


def should_retry(attempt_number: int, row_max_attempts: int | None, retryable: bool) -> bool:
    """Whether a failed attempt goes back to QUEUED."""
    return retryable and attempt_number < max_attempts(row_max_attempts)
