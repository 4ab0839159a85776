"""RAY_INFER_CPUS_PER_CALL: callables that mostly wait get a fraction of a CPU per call, by default.

A real worker joined to the session's 2-CPU Ray head with 8 slots: once a sleeping callable ran
a few times its calls ask for 2 / 8 = 0.25 CPU (Ray reports what it assigned), while a callable
that computes keeps one CPU. What is checked is the mechanism, never a speed.
"""

from __future__ import annotations

import json

import pytest

from django_ray.models import RayTaskExecution, TaskState
from django_ray.runners.cpu_share import MIN_SAMPLES
from tests import tasks
from tests.conftest import wait_until

pytestmark = pytest.mark.django_db(transaction=True)


def run_all(worker, enqueue, count: int) -> list[float | None]:  # type: ignore[no-untyped-def]
    """Enqueue ``count`` tasks, wait until all succeeded, return their results in order."""
    ids = [enqueue().id for _ in range(count)]
    wait_until(
        lambda: (
            RayTaskExecution.objects.filter(task_id__in=ids, state=TaskState.SUCCEEDED).count()
            == count
        ),
        120,
        explain=worker.log,
    )
    results = dict(
        RayTaskExecution.objects.filter(task_id__in=ids).values_list("task_id", "result_data")
    )
    return [results[i] for i in ids]


def test_a_waiting_callable_gets_a_fraction_of_a_cpu_and_a_computing_one_keeps_one(
    start_worker, ray_head
) -> None:  # type: ignore[no-untyped-def]
    worker = start_worker("--cluster", ray_head.address, "--concurrency", "8")
    waiting = lambda: tasks.assigned_cpus.enqueue(0.05)  # noqa: E731
    computing = lambda: tasks.computing_cpus.enqueue(0.05)  # noqa: E731

    # Not measured yet: Ray's default of one CPU per call.
    assert run_all(worker, waiting, MIN_SAMPLES) == [1.0] * MIN_SAMPLES
    # Measured: CPU time is a few percent of the wall time.
    assert run_all(worker, waiting, 4) == [0.25] * 4
    worker.wait_for_log("tests.tasks.assigned_cpus waits on I/O")
    # A callable that computes for its whole run is judged CPU-bound: one CPU per call, before
    # and after it was measured.
    assert run_all(worker, computing, MIN_SAMPLES + 4) == [1.0] * (MIN_SAMPLES + 4)
    assert "computing_cpus waits on I/O" not in worker.log()
    assert worker.stop() == 0, worker.log()


def waiting_runs_with(start_worker, ray_head, settings: dict[str, object]) -> list[float | None]:  # type: ignore[no-untyped-def]
    """CPUs Ray gave each run of a sleeping callable, with these settings, once it was judged."""
    worker = start_worker(
        "--cluster",
        ray_head.address,
        "--concurrency",
        "8",
        env={"DJANGO_RAY_TEST_SETTINGS": json.dumps(settings)},
    )
    runs = run_all(worker, lambda: tasks.assigned_cpus.enqueue(0.05), MIN_SAMPLES + 4)
    assert "waits on I/O" not in worker.log()
    assert worker.stop() == 0, worker.log()
    return runs


def test_an_explicit_cpus_per_call_wins(start_worker, ray_head) -> None:  # type: ignore[no-untyped-def]
    runs = waiting_runs_with(start_worker, ray_head, {"RAY_CPUS_PER_CALL": 0.5})
    assert runs == [0.5] * (MIN_SAMPLES + 4)


def test_inference_can_be_turned_off(start_worker, ray_head) -> None:  # type: ignore[no-untyped-def]
    runs = waiting_runs_with(start_worker, ray_head, {"RAY_INFER_CPUS_PER_CALL": False})
    assert runs == [1.0] * (MIN_SAMPLES + 4)
