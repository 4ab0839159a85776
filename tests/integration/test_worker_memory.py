"""The worker loop's decisions, driven fast with the in-memory runner on the real PostgreSQL.

No Ray: :class:`~django_ray.runners.memory.MemoryRunner` runs bodies in-process or ends attempts
as scripted, so claim, record, retry, cancel and recovery are checked in milliseconds (the
Ray-backed integration tests check the same paths end to end).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from django.tasks import task_backends
from django.tasks.base import TaskResult

from django_ray.lifecycle import operator
from django_ray.models import RayTaskExecution, TaskAttempt, TaskState
from django_ray.runners.memory import Fail, Hang, Lose, MemoryRunner, Succeed
from django_ray.worker.loop import Worker
from tests import tasks
from tests.support.worker import drive, in_process_worker

pytestmark = pytest.mark.django_db(transaction=True)


def _state(result_id: str) -> str:
    return RayTaskExecution.objects.get(task_id=result_id).state


def _attempts(result_id: str) -> list[tuple[int, str]]:
    return list(
        TaskAttempt.objects.filter(execution__task_id=result_id)
        .order_by("attempt_number")
        .values_list("attempt_number", "state")
    )


def test_claimed_tasks_run_in_process_and_their_results_are_recorded() -> None:
    runner = MemoryRunner()
    results = [tasks.add.enqueue(i, i) for i in range(5)]
    with in_process_worker(runner, ["default"]) as worker:
        drive(worker, lambda: all(_state(r.id) == TaskState.SUCCEEDED for r in results))
    backend = task_backends["default"]
    assert [backend.get_result(r.id).return_value for r in results] == [0, 2, 4, 6, 8]
    assert sorted(t.task_id for t in runner.started) == sorted(r.id for r in results)
    assert worker.stats.succeeded == 5 and worker.stats.claimed == 5


def test_a_retryable_failure_is_retried_and_a_permanent_one_is_not() -> None:
    runner = MemoryRunner()
    flaky = tasks.add.enqueue(1, 1)
    permanent = tasks.add.enqueue(2, 2)
    runner.script(flaky.id, Fail("first attempt fails"), Succeed(42))
    runner.script(permanent.id, Fail("never again", retryable=False))
    with in_process_worker(runner, ["default"]) as worker:
        drive(
            worker,
            lambda: (
                _state(flaky.id) == TaskState.SUCCEEDED and _state(permanent.id) == TaskState.FAILED
            ),
        )
    assert _attempts(flaky.id) == [(1, TaskState.FAILED), (2, TaskState.SUCCEEDED)]
    assert task_backends["default"].get_result(flaky.id).return_value == 42
    assert _attempts(permanent.id) == [(1, TaskState.FAILED)]
    assert RayTaskExecution.objects.get(task_id=permanent.id).error_message == "never again"


def test_attempts_stop_at_max_attempts() -> None:
    runner = MemoryRunner()
    result = tasks.add.enqueue(1, 1)
    runner.script(result.id, Fail(), Fail(), Fail(), Succeed())  # MAX_TASK_ATTEMPTS is 3
    with in_process_worker(runner, ["default"]) as worker:
        drive(worker, lambda: _state(result.id) == TaskState.FAILED)
    assert [n for n, _ in _attempts(result.id)] == [1, 2, 3]
    assert len(runner.started) == 3


def test_a_lost_attempt_takes_the_retry_path() -> None:
    runner = MemoryRunner()
    result = tasks.add.enqueue(3, 4)
    runner.script(result.id, Lose())
    with in_process_worker(runner, ["default"]) as worker:
        drive(worker, lambda: _state(result.id) == TaskState.SUCCEEDED)
    assert _attempts(result.id) == [(1, TaskState.LOST), (2, TaskState.SUCCEEDED)]


@contextmanager
def _one_hanging_task(runner: MemoryRunner) -> Iterator[tuple[Worker, TaskResult]]:
    """A worker whose runner holds one claimed task "running" (scripted :class:`Hang`)."""
    result = tasks.add.enqueue(1, 2)
    runner.script(result.id, Hang())
    with in_process_worker(runner, ["default"]) as worker:
        drive(worker, runner.hanging_ids)
        yield worker, result


def test_cancelling_a_running_task_stops_it_and_it_ends_cancelled() -> None:
    runner = MemoryRunner()
    with _one_hanging_task(runner) as (worker, result):
        row_id = RayTaskExecution.objects.get(task_id=result.id).pk
        assert runner.in_flight_ids() == [row_id]
        assert operator.request_cancel(result.id) == TaskState.CANCELLING
        drive(worker, lambda: _state(result.id) == TaskState.CANCELLED)
    assert runner.in_flight_ids() == []
    assert len(runner.started) == 1  # never run again


def test_losing_ray_reports_in_flight_attempts_lost_and_reconnects() -> None:
    runner = MemoryRunner()
    with _one_hanging_task(runner) as (worker, result):
        runner.break_connection()
        drive(worker, lambda: _state(result.id) == TaskState.SUCCEEDED)
    assert runner.connects == 2  # started, then reconnected by the worker
    assert _attempts(result.id) == [(1, TaskState.LOST), (2, TaskState.SUCCEEDED)]


def test_an_attempt_the_runner_lost_track_of_is_recovered() -> None:
    runner = MemoryRunner()
    with _one_hanging_task(runner) as (worker, result):
        runner.forget(runner.in_flight_ids())
        # No outcome will ever come: once its heartbeats are STUCK_TASK_TIMEOUT_SECONDS old,
        # the worker's own recovery sends the row through the retry path.
        drive(worker, lambda: _state(result.id) == TaskState.SUCCEEDED, timeout=60)
    assert _attempts(result.id) == [(1, TaskState.LOST), (2, TaskState.SUCCEEDED)]


def test_interrupted_attempts_at_shutdown_are_requeued_without_counting_a_failure() -> None:
    runner = MemoryRunner()
    with _one_hanging_task(runner) as (worker, result):
        worker._record(runner.interrupt_all())
    row = RayTaskExecution.objects.get(task_id=result.id)
    assert row.state == TaskState.QUEUED and row.claimed_by_worker is None


def test_the_runner_declares_its_capabilities() -> None:
    runner = MemoryRunner()
    assert runner.capabilities.reconnect
    assert not runner.capabilities.ray_jobs and not runner.capabilities.adoption
