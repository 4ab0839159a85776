"""Demo tasks: fast, slow, failing, flaky, CPU-bound. Enqueue them with ``task.enqueue()``."""

from __future__ import annotations

import math
import time

from django.tasks import task
from django.tasks.base import TaskContext


class InvalidInvoice(Exception):
    """A permanent failure: listed in RETRY_EXCEPTION_DENYLIST, never retried."""


class FlakyUpstream(Exception):
    """A transient failure: retried with backoff."""


@task
def add(a: int, b: int) -> int:
    """A fast task."""
    return a + b


@task(queue_name="slow")
def slow_report(seconds: float = 1.0) -> dict[str, float]:
    """A slow task (sleeps), on the ``slow`` queue."""
    time.sleep(seconds)
    return {"slept": seconds}


@task
def failing(invoice_id: int) -> None:
    """Always fails with a denylisted exception: FAILED after one attempt."""
    raise InvalidInvoice(f"invoice {invoice_id} has no customer")


@task(takes_context=True)
def flaky(context: TaskContext, fail_times: int = 1) -> dict[str, int]:
    """Fails ``fail_times`` times, then succeeds: shows retries with backoff."""
    if context.attempt <= fail_times:
        raise FlakyUpstream(f"upstream timeout on attempt {context.attempt}")
    return {"succeeded_on_attempt": context.attempt}


@task(queue_name="cpu")
def count_primes(limit: int) -> int:
    """CPU-bound: counts primes below ``limit``."""
    count = 0
    for n in range(2, limit):
        if all(n % d for d in range(2, math.isqrt(n) + 1)):
            count += 1
    return count
