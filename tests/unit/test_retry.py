"""Retry policy math: exponential backoff, cap, jitter bounds, attempt budget (pure logic)."""

from __future__ import annotations

import random

import pytest
from django.test import override_settings

from django_ray import retry
from tests.settings import DJANGO_RAY as TEST_RAY


def _conf(**values: object) -> dict[str, object]:
    return {**TEST_RAY, **values}


@pytest.mark.parametrize(
    ("attempt", "expected"), [(1, 2.0), (2, 4.0), (3, 8.0), (4, 16.0), (5, 32.0)]
)
def test_backoff_doubles_per_attempt_without_jitter(attempt: int, expected: float) -> None:
    with override_settings(DJANGO_RAY=_conf(RETRY_BACKOFF_SECONDS=2.0, RETRY_JITTER=0)):
        assert retry.backoff_seconds(attempt) == expected


def test_backoff_is_capped_before_jitter() -> None:
    conf = _conf(RETRY_BACKOFF_SECONDS=1.0, RETRY_BACKOFF_MAX_SECONDS=10.0, RETRY_JITTER=0)
    with override_settings(DJANGO_RAY=conf):
        assert [retry.backoff_seconds(n) for n in (1, 2, 3, 4, 5, 6)] == [1, 2, 4, 8, 10, 10]
        # Huge attempt numbers do not overflow: the exponent is clamped, then capped.
        assert retry.backoff_seconds(10_000) == 10.0


def test_backoff_of_attempt_zero_or_negative_is_the_base() -> None:
    with override_settings(DJANGO_RAY=_conf(RETRY_BACKOFF_SECONDS=3.0, RETRY_JITTER=0)):
        assert retry.backoff_seconds(0) == 3.0
        assert retry.backoff_seconds(-5) == 3.0


def test_jitter_stays_within_its_fraction_and_varies() -> None:
    conf = _conf(RETRY_BACKOFF_SECONDS=1.0, RETRY_BACKOFF_MAX_SECONDS=100.0, RETRY_JITTER=0.5)
    rng = random.Random(1234)
    with override_settings(DJANGO_RAY=conf):
        for attempt in (1, 2, 3, 4):
            base = 2.0 ** (attempt - 1)
            delays = [retry.backoff_seconds(attempt, rng) for _ in range(200)]
            assert all(base <= d <= base * 1.5 for d in delays), (attempt, min(delays), max(delays))
            # Jitter spreads a burst of retries: not all the same, and covers most of the range.
            assert len(set(delays)) > 150
            assert max(delays) - min(delays) > base * 0.4


def test_jitter_applies_on_top_of_the_cap() -> None:
    conf = _conf(RETRY_BACKOFF_SECONDS=1.0, RETRY_BACKOFF_MAX_SECONDS=4.0, RETRY_JITTER=0.25)
    rng = random.Random(7)
    with override_settings(DJANGO_RAY=conf):
        delays = [retry.backoff_seconds(20, rng) for _ in range(100)]
    assert all(4.0 <= d <= 5.0 for d in delays)


def test_seeded_jitter_is_reproducible() -> None:
    with override_settings(DJANGO_RAY=_conf(RETRY_BACKOFF_SECONDS=1.0, RETRY_JITTER=1.0)):
        a = [retry.backoff_seconds(3, random.Random(99)) for _ in range(3)]
    assert a[0] == a[1] == a[2]


def test_zero_base_means_immediate_retry() -> None:
    with override_settings(DJANGO_RAY=_conf(RETRY_BACKOFF_SECONDS=0, RETRY_JITTER=0.5)):
        assert retry.backoff_seconds(4) == 0.0


def test_attempt_budget_uses_setting_or_row_override() -> None:
    with override_settings(DJANGO_RAY=_conf(MAX_TASK_ATTEMPTS=3)):
        assert retry.max_attempts(None) == 3
        assert retry.max_attempts(5) == 5
        assert [retry.should_retry(n, None, True) for n in (1, 2, 3, 4)] == [
            True,
            True,
            False,
            False,
        ]
        assert retry.should_retry(3, 5, True)
        assert not retry.should_retry(5, 5, True)
        # Not retryable (denylisted, bad callable, bad result): never retried.
        assert not retry.should_retry(1, 5, False)


def test_one_attempt_disables_retries() -> None:
    with override_settings(DJANGO_RAY=_conf(MAX_TASK_ATTEMPTS=1)):
        assert not retry.should_retry(1, None, True)
