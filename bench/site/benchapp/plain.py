"""The task bodies as plain functions (no Django), for raw Ray and the raw SQL loop."""

from __future__ import annotations

import time


def noop() -> float:
    """Do nothing; return the start time."""
    return time.time()


def sleep10() -> float:
    """Sleep 10 ms; return the start time."""
    started = time.time()
    time.sleep(0.010)
    return started


def spin20() -> float:
    """Busy-loop for 20 ms of this thread's CPU time; return the start time."""
    started = time.time()
    until = time.thread_time() + 0.020
    while time.thread_time() < until:
        pass
    return started


PLAIN = {"noop": noop, "sleep10": sleep10, "spin20": spin20}
