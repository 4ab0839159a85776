"""A project whose task tables live on another database alias (``OPTIONS["database"]``).

The worker owns every database call, always on its backend's alias; runners never touch the
database. Before this was so, the Ray Job runner attached job ids and read outcomes back on
``default``, and the Ray Job itself read its row there: a task on another alias stayed RUNNING.
"""

from __future__ import annotations

import json

import pytest
from django.tasks import task_backends

from django_ray.models import RayTaskExecution, TaskAttempt, TaskState
from django_ray.runners.memory import Fail, MemoryRunner
from tests import tasks
from tests.conftest import wait_until
from tests.support.worker import drive, in_process_worker

pytestmark = pytest.mark.django_db(transaction=True, databases=["default", "tasks"])

ELSEWHERE = "tasks"  # TASKS["elsewhere"]["OPTIONS"]["database"] in tests/settings.py


def _states(results: list) -> list[str]:  # type: ignore[type-arg]
    rows = RayTaskExecution.objects.using(ELSEWHERE).filter(task_id__in=[r.id for r in results])
    return sorted(rows.values_list("state", flat=True))


def test_the_ray_job_runner_runs_tasks_of_another_database_alias(start_worker, ray_head) -> None:  # type: ignore[no-untyped-def]
    ok = [tasks.add.using(backend="elsewhere").enqueue(i, 10) for i in range(3)]
    bad = tasks.fail_permanent.using(backend="elsewhere").enqueue()
    assert not RayTaskExecution.objects.using("default").exists()
    env = {
        "DJANGO_RAY_TEST_SETTINGS": json.dumps(
            {"RUNNER": "ray_job", "RAY_ADDRESS": ray_head.dashboard_url}
        )
    }
    worker = start_worker("--backend", "elsewhere", "--concurrency", "2", env=env)
    wait_until(
        lambda: _states([*ok, bad]) == [TaskState.FAILED] + [TaskState.SUCCEEDED] * 3,
        180,
        explain=worker.log,
    )
    backend = task_backends["elsewhere"]
    assert [backend.get_result(r.id).return_value for r in ok] == [10, 11, 12]
    rows = RayTaskExecution.objects.using(ELSEWHERE).filter(task_id__in=[r.id for r in ok])
    assert all(row.ray_job_id for row in rows)  # attached on the right database
    # Each Ray Job recorded its own attempt there; the worker only read it back.
    assert TaskAttempt.objects.using(ELSEWHERE).count() == 4
    # The worker reads each job's outcome back (from the right database) once the job ended.
    wait_until(lambda: worker.log().count("succeeded task_id=") == 3, 60, explain=worker.log)
    assert not RayTaskExecution.objects.using("default").exists()
    assert worker.stop() == 0, worker.log()


def test_the_worker_loop_records_on_its_backends_alias() -> None:
    runner = MemoryRunner()
    result = tasks.add.using(backend="elsewhere").enqueue(2, 3)
    runner.script(result.id, Fail("once"))
    with in_process_worker(runner, ["default"], using=ELSEWHERE) as worker:
        drive(
            worker,
            lambda: _states([result]) == [TaskState.SUCCEEDED],
        )
    assert task_backends["elsewhere"].get_result(result.id).return_value == 5
    assert [t.database for t in runner.started] == [ELSEWHERE, ELSEWHERE]
