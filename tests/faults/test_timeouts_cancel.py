"""Timeouts in every runner mode; cancellation of running tasks, also when their worker died."""

from __future__ import annotations

import time

import pytest

import django_ray
from django_ray.lifecycle import IllegalTransition
from django_ray.models import RayTaskExecution, TaskAttempt, TaskState
from django_ray.ray_dashboard import RayDashboard
from tests import tasks
from tests.conftest import wait_until
from tests.faults.conftest import job_mode_env, report, timed_wait
from tests.models import TaskProbe

pytestmark = pytest.mark.django_db(transaction=True)


def _mode_args(mode: str, ray_head) -> tuple[list[str], dict[str, str] | None]:
    if mode == "sync":
        return ["--sync"], None
    if mode == "ray_core":
        return ["--cluster", ray_head.address], None
    return [], job_mode_env(ray_head)


def _state(result) -> str:
    return RayTaskExecution.objects.get(task_id=result.id).state


@pytest.fixture
def head_if_needed(request, mode):
    return request.getfixturevalue("ray_head") if mode != "sync" else None


@pytest.mark.parametrize("mode", ["sync", "ray_core", "ray_job"])
def test_a_task_that_hangs_past_its_timeout_fails_with_timed_out(
    mode, head_if_needed, start_worker
):
    hung = tasks.sleep_for.using(timeout_seconds=2, max_attempts=1).enqueue(120, marker="hung")
    fine = tasks.add.using(timeout_seconds=30).enqueue(2, 3)
    args, env = _mode_args(mode, head_if_needed)
    worker = start_worker(*args, "--concurrency", "2", env=env)
    wait_until(lambda: _state(hung) == TaskState.RUNNING, 120, explain=worker.log)
    elapsed = timed_wait(lambda: _state(hung) == TaskState.FAILED, 60, explain=worker.log)
    row = RayTaskExecution.objects.get(task_id=hung.id)
    assert "timed out after 2 seconds" in row.error_message, row.error_message
    assert row.error_class_path == "django_ray.TaskTimedOut"
    history = list(TaskAttempt.objects.filter(execution=row).values_list("state", flat=True))
    assert history == [TaskState.FAILED]
    wait_until(lambda: _state(fine) == TaskState.SUCCEEDED, 60, explain=worker.log)
    assert not TaskProbe.objects.filter(name="hung").exists()  # the body was stopped
    assert worker.stop() == 0
    report(f"timeout {mode}", timeout=2, running_to_failed_s=elapsed)


def test_cancel_of_a_running_task_interrupts_its_body_in_ray_core(start_worker, ray_head):
    long = tasks.sleep_for.enqueue(6, marker="cancelled-body-finished")
    worker = start_worker("--cluster", ray_head.address, "--concurrency", "2")
    wait_until(lambda: _state(long) == TaskState.RUNNING, 60, explain=worker.log)
    time.sleep(1.0)  # the body is really running on Ray now
    started = time.monotonic()
    assert django_ray.cancel_task(long.id) == TaskState.CANCELLING
    wait_until(lambda: _state(long) == TaskState.CANCELLED, 30, explain=worker.log)
    elapsed = time.monotonic() - started
    time.sleep(7)  # past the body's natural end: it must not have completed
    assert not TaskProbe.objects.filter(name="cancelled-body-finished").exists()
    row = RayTaskExecution.objects.get(task_id=long.id)
    assert row.state == TaskState.CANCELLED and row.finished_at is not None
    with pytest.raises(IllegalTransition):
        django_ray.cancel_task(long.id)  # terminal rows cannot be cancelled again
    assert worker.stop() == 0
    report("cancel running ray_core", cancel_to_cancelled_s=elapsed)


def test_cancel_of_a_queued_task_is_immediate_and_never_runs(start_worker):
    queued = tasks.record.enqueue("never-runs")
    assert django_ray.cancel_task(queued.id) == TaskState.CANCELLED
    worker = start_worker("--sync", "--idle-exit", "1")
    assert worker.wait(60) == 0, worker.log()
    assert _state(queued) == TaskState.CANCELLED
    assert not TaskProbe.objects.filter(name="never-runs").exists()
    with pytest.raises(RayTaskExecution.DoesNotExist):
        django_ray.cancel_task("no-such-task")


def test_cancel_whose_worker_was_killed_is_finished_by_another_worker(start_worker, ray_head):
    long = tasks.sleep_for.enqueue(8, marker="orphan-cancel-finished")
    victim = start_worker("--cluster", ray_head.address, "--worker-id", "victim-cancel")
    wait_until(lambda: _state(long) == TaskState.RUNNING, 60, explain=victim.log)
    victim.kill()  # kill -9: nobody left to process the cancel
    killed = time.monotonic()
    assert django_ray.cancel_task(long.id) == TaskState.CANCELLING
    rescuer = start_worker("--cluster", ray_head.address, "--worker-id", "rescuer-cancel")
    elapsed = timed_wait(lambda: _state(long) == TaskState.CANCELLED, 60, explain=rescuer.log)
    since_kill = time.monotonic() - killed
    assert not TaskProbe.objects.filter(name="orphan-cancel-finished").exists()
    row = RayTaskExecution.objects.get(task_id=long.id)
    assert list(TaskAttempt.objects.filter(execution=row).values_list("state", flat=True)) == [
        TaskState.CANCELLED
    ]
    assert rescuer.stop() == 0
    report("cancel with killed worker ray_core", kill_to_cancelled_s=since_kill, wait_s=elapsed)


def _job_status(head, job_id: str) -> str:
    # "" until Ray knows the job (ray_job_id is stored before the job is submitted).
    details = RayDashboard(head.dashboard_url).status(job_id)
    return str(details["status"]) if details else ""


def test_cancel_of_a_ray_job_whose_worker_died_is_stopped_by_a_ray_core_worker(
    start_worker, ray_head
):
    long = tasks.announce_and_sleep.enqueue(120, marker="orphan-job-cancel")
    victim = start_worker("--worker-id", "victim-job-cancel", env=job_mode_env(ray_head))
    # The job's body is running (not merely its entrypoint starting up).
    wait_until(
        lambda: TaskProbe.objects.filter(name="orphan-job-cancel-started").exists(),
        120,
        explain=victim.log,
    )
    job_id = RayTaskExecution.objects.get(task_id=long.id).ray_job_id
    assert _job_status(ray_head, job_id) == "RUNNING"
    victim.kill()  # kill -9: the job keeps running, nobody processes the cancel
    killed = time.monotonic()
    assert django_ray.cancel_task(long.id) == TaskState.CANCELLING
    # The survivor runs Ray Core: it cannot adopt the job, but it recovers the row and stops
    # the job through the dashboard of the cluster it joined.
    rescuer = start_worker("--cluster", ray_head.address, "--worker-id", "rescuer-job-cancel")
    timed_wait(lambda: _state(long) == TaskState.CANCELLED, 90, explain=rescuer.log)
    cancelled = time.monotonic() - killed
    timed_wait(lambda: _job_status(ray_head, job_id) == "STOPPED", 60, explain=rescuer.log)
    stopped = time.monotonic() - killed
    assert f"stopped Ray Job {job_id}" in rescuer.log()
    assert not TaskProbe.objects.filter(name="orphan-job-cancel").exists()
    assert rescuer.stop() == 0
    report(
        "cancel of a ray_job whose worker was killed, ray_core survivor",
        kill_to_cancelled_s=cancelled,
        kill_to_job_stopped_s=stopped,
    )
