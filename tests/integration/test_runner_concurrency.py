"""``--concurrency`` means that many task bodies at once, even above the node's CPU count."""

from __future__ import annotations

import pytest

from django_ray.models import RayTaskExecution, TaskState
from tests import tasks
from tests.conftest import wait_until
from tests.models import TaskProbe

pytestmark = pytest.mark.django_db(transaction=True)


def test_concurrency_above_cpu_count_runs_calls_side_by_side(start_worker, ray_head):
    # The head has 2 CPUs. With Ray's default of one CPU per call only 2 of these 4 long
    # tasks could run at once and Ray would reuse 2 worker processes; each call asks for
    # CPUs / concurrency instead, so all 4 run together, each in its own Ray worker process.
    for i in range(4):
        tasks.sleep_for.enqueue(5.0, marker=f"conc-{i}")
    worker = start_worker("--cluster", ray_head.address, "--concurrency", "4")
    wait_until(
        lambda: RayTaskExecution.objects.filter(state=TaskState.SUCCEEDED).count() == 4,
        120,
        explain=worker.log,
    )
    assert worker.stop() == 0, worker.log()
    pids = set(TaskProbe.objects.filter(name__startswith="conc-").values_list("pid", flat=True))
    assert len(pids) == 4, (pids, worker.log())
