"""A stop (cancel, timeout) that Ray loses is sent again until the Ray call or job ends.

``ray.cancel`` can be lost when it races the call's dispatch to a Ray worker: the call was
waiting for a lease and is being pushed at that moment. CI saw it once: a cancelled 60 s task
ran to the end and SUCCEEDED. A Ray Job stop can likewise race the job's start. The races
cannot be forced on demand, so these tests run a runner in this process against the real Ray
head and drop its first stop, exactly what the race does; everything else (submit, the running
body, the kill, the database rows) is real.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from django_ray.lifecycle import claim, operator
from django_ray.models import TaskState
from django_ray.outcomes import ClaimedTask, OutcomeKind
from django_ray.runners.base import Finished, Runner
from django_ray.runners.ray_core import RayCoreRunner
from django_ray.runners.ray_job import RayJobRunner
from django_ray.worker import ray_jobs
from tests import tasks
from tests.conftest import wait_until
from tests.models import TaskProbe
from tests.support.claimed import claimed_task
from tests.support.ray import RayHead, tasks_of_job

# The body sleeps this long; the runner must report the call stopped well before, or the stop
# was never re-sent.
BODY_SECONDS = 300
STOP_WITHIN_SECONDS = 90


class FirstCancelLost:
    """Ray, except that the first ``ray.cancel`` never arrives."""

    def __init__(self, ray: Any) -> None:
        self._ray = ray
        self.cancels = 0

    def cancel(self, ref: Any, force: bool = False) -> None:
        self.cancels += 1
        if self.cancels > 1:
            self._ray.cancel(ref, force=force)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._ray, name)


def _claimed(execution_id: int, timeout_seconds: float | None) -> ClaimedTask:
    return claimed_task(
        execution_id,
        task_id=f"lost-cancel-{execution_id}",
        args=[BODY_SECONDS],
        timeout_seconds=timeout_seconds,
    )


def _wait_for_outcome(runner: Runner, within: float) -> Finished:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        finished = runner.poll(1.0)
        if finished:
            return finished
    raise AssertionError(f"the Ray call was still running {within}s after it was told to stop")


def _wait_until_the_body_runs(runner: RayCoreRunner, head: RayHead) -> None:
    deadline = time.monotonic() + 120
    job_id = runner._ray.get_runtime_context().get_job_id()
    while time.monotonic() < deadline:
        if any(t.get("state") == "RUNNING" for t in tasks_of_job(head, job_id)):
            return
        assert not runner.poll(0.5), "the sleeping call ended by itself"
    raise AssertionError("the Ray call never started running")


def _submit_losing_the_first_cancel(
    runner: RayCoreRunner, execution_id: int, timeout_seconds: float | None
) -> tuple[FirstCancelLost, ClaimedTask]:
    lossy = FirstCancelLost(runner._ray)
    runner._ray = lossy
    task = _claimed(execution_id, timeout_seconds)
    runner.submit([task])
    return lossy, task


def test_a_cancel_that_ray_lost_is_sent_again(
    ray_core_runner: RayCoreRunner, ray_head: RayHead
) -> None:
    runner = ray_core_runner
    lossy, task = _submit_losing_the_first_cancel(runner, 1, timeout_seconds=None)
    _wait_until_the_body_runs(runner, ray_head)
    runner.stop([task.id])
    finished = _wait_for_outcome(runner, STOP_WITHIN_SECONDS)
    assert [(t.id, o.kind) for t, o in finished] == [(task.id, OutcomeKind.CANCELLED)]
    assert lossy.cancels >= 2
    # The worker asks again on every cancel check; that never counts as a new stop.
    assert runner.in_flight_ids() == []


def test_a_timeout_stop_that_ray_lost_is_sent_again(ray_core_runner: RayCoreRunner) -> None:
    runner = ray_core_runner
    lossy, task = _submit_losing_the_first_cancel(runner, 2, timeout_seconds=2)
    finished = _wait_for_outcome(runner, STOP_WITHIN_SECONDS)
    [(returned, outcome)] = finished
    assert returned.id == task.id
    assert outcome.kind is OutcomeKind.FAILED
    assert "timed out after 2 seconds" in (outcome.error_message or "")
    assert lossy.cancels >= 2


def test_a_cancel_is_not_repeated_before_the_resend_interval(
    ray_core_runner: RayCoreRunner,
) -> None:
    runner = ray_core_runner
    lossy, task = _submit_losing_the_first_cancel(runner, 3, timeout_seconds=None)
    # The worker's cancel check hands the same ids over again and again.
    for _ in range(5):
        runner.stop([task.id])
    assert lossy.cancels == 1
    finished = _wait_for_outcome(runner, STOP_WITHIN_SECONDS)
    assert [(t.id, o.kind) for t, o in finished] == [(task.id, OutcomeKind.CANCELLED)]


class FirstJobStopLost:
    """The Jobs API client, except that the first stop never arrives."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self.stops = 0

    def stop(self, submission_id: str) -> None:
        self.stops += 1
        if self.stops > 1:
            self._client.stop(submission_id)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)


@pytest.mark.django_db(transaction=True)
def test_a_ray_job_stop_that_was_lost_is_sent_again(ray_head) -> None:
    result = tasks.announce_and_sleep.enqueue(BODY_SECONDS, marker="lost-job-stop")
    runner = RayJobRunner(concurrency=1, address=ray_head.dashboard_url)
    runner.start()
    real_client = runner.client
    lossy = FirstJobStopLost(real_client)
    runner.client = lossy
    [claimed] = claim.claim("lost-stop-worker", None, 1)
    # The worker's part: the job id goes on the row before the job is submitted.
    assert ray_jobs.attach(runner, [claimed], "default") == [claimed]
    runner.submit([claimed])
    submission_id = runner._jobs[claimed.id].submission_id
    try:
        # The job's body runs (not merely its entrypoint starting up).
        wait_until(lambda: TaskProbe.objects.filter(name="lost-job-stop-started").exists(), 120)
        assert operator.request_cancel(result.id) == TaskState.CANCELLING
        runner.stop([claimed.id])
        finished = _wait_for_outcome(runner, STOP_WITHIN_SECONDS)
    finally:
        runner.release()
        real_client.stop(submission_id)  # never leave a 300 s job on the shared head
    assert [(t.id, o.kind) for t, o in finished] == [(claimed.id, OutcomeKind.CANCELLED)]
    assert lossy.stops >= 2
    assert real_client.status(submission_id)["status"] == "STOPPED"
    assert not TaskProbe.objects.filter(name="lost-job-stop").exists()
