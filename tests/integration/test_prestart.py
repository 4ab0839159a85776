"""A ``--cluster`` worker starts its Ray worker processes, Django loaded, before its first claim.

A driver joining a cluster has no Ray worker processes of its own until it asks, so without the
warm-up its first tasks after every (re)start wait for processes to start and import Django.
"""

from __future__ import annotations

import re

import pytest

from django_ray.models import RayTaskExecution, TaskState
from tests import tasks
from tests.conftest import wait_until
from tests.models import TaskProbe

pytestmark = pytest.mark.django_db(transaction=True)

READY = re.compile(
    r"(\d+) Ray worker processes ready on (\d+) node\(s\) in [\d.]+s \(pids ([\d, ]+)\)"
)


def test_cluster_worker_warms_a_process_per_cpu_before_claiming(start_worker, ray_head) -> None:  # type: ignore[no-untyped-def]
    # Queued before the worker starts: its very first claim takes them.
    names = [f"warm-{i}" for i in range(6)]
    for name in names:
        tasks.record.enqueue(name)
    worker = start_worker("--cluster", ray_head.address, "--concurrency", "4")
    wait_until(
        lambda: RayTaskExecution.objects.filter(state=TaskState.SUCCEEDED).count() == len(names),
        120,
        explain=worker.log,
    )
    log = worker.log()
    ready = READY.search(log)
    assert ready, log
    # One process per CPU of the one-node, 2-CPU test cluster (concurrency 4 is not the limit).
    assert (ready[1], ready[2]) == ("2", "1"), ready[0]
    warmed = {int(pid) for pid in ready[3].split(", ")}
    assert log.index(ready[0]) < log.index("claimed task_id="), log
    ran_in = set(TaskProbe.objects.filter(name__in=names).values_list("pid", flat=True))
    assert ran_in and ran_in <= warmed, (ran_in, warmed)
    assert worker.stop() == 0, worker.log()
