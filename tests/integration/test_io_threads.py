"""Through a real worker and Ray: an I/O-bound callable's bodies overlap inside one Ray call.

``--concurrency 1`` keeps one Ray call in flight, so two bodies can only overlap when that call
runs them in threads (``RAY_THREADS_PER_CALL``); with the setting at 1 they never do.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from django_ray.models import RayTaskExecution, TaskState
from tests import tasks
from tests.conftest import wait_until
from tests.models import TaskProbe

pytestmark = pytest.mark.django_db(transaction=True)

TASKS = 24


def _drain(start_worker: Any, threads: int) -> list[dict[str, Any]]:
    worker = start_worker(
        "--local",
        "--concurrency",
        "1",
        env={"DJANGO_RAY_TEST_SETTINGS": json.dumps({"RAY_THREADS_PER_CALL": threads})},
    )
    for i in range(TASKS):
        tasks.io_wait.enqueue(0.05, f"io-{i}")
    wait_until(
        lambda: RayTaskExecution.objects.filter(state=TaskState.SUCCEEDED).count() == TASKS,
        120,
        explain=worker.log,
    )
    assert worker.stop() == 0, worker.log()
    return [{"pid": p.pid, **p.data} for p in TaskProbe.objects.filter(name__startswith="io-")]


def _overlapping_pairs(probes: list[dict[str, Any]]) -> int:
    ordered = sorted(probes, key=lambda p: p["started"])
    return sum(
        1
        for i, a in enumerate(ordered)
        for b in ordered[i + 1 :]
        if a["pid"] == b["pid"] and b["started"] < a["ended"]
    )


def test_io_bound_bodies_run_side_by_side_in_one_call(start_worker: Any) -> None:
    probes = _drain(start_worker, threads=4)
    assert len(probes) == TASKS
    # The first body ran alone (nothing measured yet); the rest shared calls, several at a time.
    assert _overlapping_pairs(probes) > 0, probes
    assert len({p["thread"] for p in probes}) > 1, probes


def test_with_one_thread_per_call_they_run_one_at_a_time(start_worker: Any) -> None:
    probes = _drain(start_worker, threads=1)
    assert len(probes) == TASKS
    assert _overlapping_pairs(probes) == 0, probes
