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


@task()
def spin20() -> float:
    """Busy-loop for 20 ms of this thread's CPU time (a CPU-bound body); return the start time.

    Thread CPU time, not wall time: on a busy machine the body still does 20 ms of work, so the
    drain measures how the CPU is shared and not how long a sleep-like wait is.
    """
    started = time.time()
    until = time.thread_time() + 0.020
    while time.thread_time() < until:
        pass
    return started


TASKS = {"noop": noop, "sleep10": sleep10, "spin20": spin20}
