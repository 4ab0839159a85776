"""The one capped exponential backoff (task retries, reconnects, HTTP retries)."""

from __future__ import annotations

import random


def capped_backoff(
    attempt: int, base: float, cap: float, jitter: float = 0.0, rng: random.Random | None = None
) -> float:
    """Seconds to wait before try ``attempt + 1`` after ``attempt`` (1-based) failed.

    ``base * 2**(attempt - 1)``, at most ``cap``, plus a random extra of up to ``jitter`` times
    that (so that a burst of failures does not retry in lockstep).
    """
    exponent = min(max(attempt - 1, 0), 60)
    delay = min(float(base) * (2**exponent), float(cap))
    if jitter and delay:
        delay += (rng or random).uniform(0, delay * jitter)
    return delay
