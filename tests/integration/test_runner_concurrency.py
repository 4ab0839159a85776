"""``RAY_CPUS_PER_CALL`` below 1: ``--concurrency`` task bodies at once, above the CPU count."""

from __future__ import annotations

import json

import pytest

from django_ray.models import RayTaskExecution, TaskState
from tests import tasks
from tests.conftest import wait_until
from tests.models import TaskProbe

pytestmark = pytest.mark.django_db(transaction=True)


def test_local_concurrency_above_cpu_count_runs_calls_side_by_side(start_worker) -> None:  # type: ignore[no-untyped-def]
    # The embedded Ray has 2 CPUs (tests/settings.py). With Ray's default of one CPU per call
    # only 2 of these 4 tasks could run at once; each call asks for half a CPU here, and the
    # runner starts one Ray worker process per slot before claiming, so all 4 run together,
    # each in its own process.
    worker = start_worker(
        "--local",
        "--concurrency",
        "4",
        env={"DJANGO_RAY_TEST_SETTINGS": json.dumps({"RAY_CPUS_PER_CALL": 0.5})},
    )
    worker.wait_for_log("4 Ray worker processes ready")
    results = [tasks.sleep_for.enqueue(4.0, marker=f"conc-{i}") for i in range(4)]
    wait_until(
        lambda: RayTaskExecution.objects.filter(state=TaskState.SUCCEEDED).count() == 4,
        120,
        explain=worker.log,
    )
    rows = RayTaskExecution.objects.filter(task_id__in=[r.id for r in results])
    starts = sorted(row.started_at for row in rows)
    ends = sorted(row.finished_at for row in rows)
    # Side by side: the last one started before the first one finished (one at a time, or two
    # at a time, would start the last ones only after 4 s).
    assert starts[-1] < ends[0], (starts, ends, worker.log())
    pids = set(TaskProbe.objects.filter(name__startswith="conc-").values_list("pid", flat=True))
    assert len(pids) == 4, (pids, worker.log())
    assert worker.stop() == 0, worker.log()
