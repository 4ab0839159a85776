"""The one capped exponential backoff (pure logic)."""

from __future__ import annotations

import random

from django_ray.backoff import capped_backoff


def test_doubles_from_the_base_up_to_the_cap() -> None:
    assert [capped_backoff(n, 0.5, 10.0) for n in range(1, 8)] == [0.5, 1, 2, 4, 8, 10, 10]


def test_attempt_zero_or_negative_is_the_base_and_huge_attempts_do_not_overflow() -> None:
    assert capped_backoff(0, 3.0, 60.0) == capped_backoff(-4, 3.0, 60.0) == 3.0
    assert capped_backoff(10_000, 1.0, 60.0) == 60.0


def test_jitter_adds_at_most_its_fraction() -> None:
    rng = random.Random(7)
    delays = [capped_backoff(3, 1.0, 60.0, jitter=0.5, rng=rng) for _ in range(200)]
    assert all(4.0 <= d <= 6.0 for d in delays)
    assert len(set(delays)) > 100
