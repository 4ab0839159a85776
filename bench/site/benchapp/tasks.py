"""Task bodies, identical for every system.

Each returns ``time.time()`` taken as its first statement: the moment the task started. Every
system stores the return value in its own result column, so the harness reads start times back
without the task doing any extra I/O (a no-op stays a no-op).
"""

from __future__ import annotations

import time

from django.tasks import task


@task()
def noop() -> float:
    """Do nothing; return the start time."""
    return time.time()


@task()
def sleep10() -> float:
    """Sleep 10 ms; return the start time."""
    started = time.time()
    time.sleep(0.010)
    return started


TASKS = {"noop": noop, "sleep10": sleep10}
