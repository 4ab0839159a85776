"""The default runner: one Ray Job per attempt, outcomes recorded by the job itself."""

from __future__ import annotations

import time

import pytest

import django_ray
from django_ray import jobs
from django_ray.models import RayTaskExecution, TaskAttempt, TaskState
from django_ray.ray_dashboard import RayDashboard
from tests import tasks
from tests.conftest import wait_until
from tests.faults.conftest import all_terminal, job_mode_env, report, timed_wait
from tests.models import TaskProbe

pytestmark = pytest.mark.django_db(transaction=True)


def test_tasks_run_as_ray_jobs_that_record_their_own_outcomes(start_worker, ray_head):
    started = time.monotonic()
    ok = [tasks.add.enqueue(i, 100) for i in range(6)]
    bad = tasks.fail_permanent.enqueue()
    worker = start_worker("--concurrency", "3", env=job_mode_env(ray_head))
    wait_until(all_terminal, 180, explain=worker.log)
    elapsed = time.monotonic() - started
    for result in ok:
        result.refresh()
        assert result.return_value == result.args[0] + 100
    bad.refresh()
    assert bad.status == "FAILED"
    assert bad.errors[0].exception_class_path == "tests.tasks.PermanentError"
    client = RayDashboard(ray_head.dashboard_url)
    for row in RayTaskExecution.objects.all():
        assert row.ray_job_id == jobs.submission_id(row.task_id, row.attempt_number)
        # The row is written before the job process exits; the job then ends SUCCEEDED.
        wait_until(lambda r=row: client.status(r.ray_job_id)["status"] == "SUCCEEDED", 60)
        details = client.status(row.ray_job_id)
        # The payload never reaches a shell: the entrypoint holds two integers and an alias.
        assert details["entrypoint"].endswith(
            f"-m django_ray.jobs {row.id} {row.attempt_number} default"
        )
    worker.wait_for_log("failed permanently")
    wait_until(lambda: worker.log().count("succeeded task_id=") == 6, 30, explain=worker.log)
    assert worker.stop() == 0
    report("ray_job throughput", tasks=7, seconds=elapsed, per_task=elapsed / 7)


def test_a_retried_submit_never_starts_a_second_job(ray_head):
    client = RayDashboard(ray_head.dashboard_url)
    body = {"entrypoint": "true", "submission_id": "django-ray-idempotence-a1"}
    client.submit(body)
    client.submit(body)  # same attempt again: Ray refuses the duplicate id, no second job
    listed = client.jobs()
    assert [j["submission_id"] for j in listed].count("django-ray-idempotence-a1") == 1
    wait_until(lambda: client.status("django-ray-idempotence-a1")["status"] == "SUCCEEDED", 60)
    assert TaskAttempt.objects.count() == 0
    assert TaskState.SUCCEEDED == "SUCCEEDED"


def _row(result) -> RayTaskExecution:
    return RayTaskExecution.objects.get(task_id=result.id)


def _job_status(client: RayDashboard, result) -> str | None:
    row = _row(result)
    details = client.status(row.ray_job_id) if row.ray_job_id else None
    return details["status"] if details else None


def test_cancel_of_a_running_ray_job_stops_the_job(start_worker, ray_head):
    client = RayDashboard(ray_head.dashboard_url)
    long = tasks.sleep_for.enqueue(60, marker="job-cancel-finished")
    worker = start_worker(env=job_mode_env(ray_head))
    wait_until(lambda: _job_status(client, long) == "RUNNING", 120, explain=worker.log)
    started = time.monotonic()
    assert django_ray.cancel_task(long.id) == TaskState.CANCELLING
    wait_until(lambda: _row(long).state == TaskState.CANCELLED, 60, explain=worker.log)
    elapsed = time.monotonic() - started
    assert _job_status(client, long) == "STOPPED"
    assert not TaskProbe.objects.filter(name="job-cancel-finished").exists()
    assert worker.stop() == 0
    report("cancel running ray_job", cancel_to_cancelled_s=elapsed)


def test_a_ray_job_outlives_its_killed_worker_and_is_adopted(start_worker, ray_head):
    client = RayDashboard(ray_head.dashboard_url)
    long = tasks.sleep_for.enqueue(12, marker="adopted-job-done")
    victim = start_worker("--worker-id", "victim-job", env=job_mode_env(ray_head))
    wait_until(lambda: _job_status(client, long) == "RUNNING", 120, explain=victim.log)
    adopter = start_worker("--worker-id", "adopter-job", env=job_mode_env(ray_head))
    adopter.wait_for_log("worker ready")
    victim.kill()  # kill -9; the job keeps running on Ray
    killed = time.monotonic()
    adopted_after = timed_wait(
        lambda: _row(long).claimed_by_worker == "adopter-job", 60, explain=adopter.log
    )
    assert _job_status(client, long) == "RUNNING"
    assert _row(long).state == TaskState.RUNNING
    wait_until(lambda: _row(long).state == TaskState.SUCCEEDED, 60, explain=adopter.log)
    done_after = time.monotonic() - killed
    long.refresh()
    assert long.return_value == 12  # the result the job recorded is kept
    row = _row(long)
    assert row.attempt_number == 1 and row.worker_ids == ["victim-job"]
    assert TaskProbe.objects.filter(name="adopted-job-done").count() == 1  # ran once
    adopter.wait_for_log("adopted Ray Job")
    adopter.wait_for_log(f"succeeded task_id={long.id}")
    assert adopter.stop() == 0
    report(
        "ray_job adopted after kill -9", kill_to_adopted_s=adopted_after, kill_to_done_s=done_after
    )


def test_sigterm_leaves_ray_jobs_running_for_adoption(start_worker, ray_head):
    client = RayDashboard(ray_head.dashboard_url)
    long = tasks.sleep_for.enqueue(10, marker="handed-over")
    first = start_worker("--worker-id", "leaving-job", env=job_mode_env(ray_head))
    wait_until(lambda: _job_status(client, long) == "RUNNING", 120, explain=first.log)
    second = start_worker("--worker-id", "staying-job", env=job_mode_env(ray_head))
    second.wait_for_log("worker ready")
    assert first.stop() == 0  # graceful: exits at once, the job is left running
    assert "leaving 1 Ray Job(s) running for adoption" in first.log()
    assert _job_status(client, long) == "RUNNING"
    stopped = time.monotonic()
    adopted_after = timed_wait(
        lambda: _row(long).claimed_by_worker == "staying-job", 60, explain=second.log
    )
    wait_until(lambda: _row(long).state == TaskState.SUCCEEDED, 60, explain=second.log)
    assert TaskProbe.objects.filter(name="handed-over").count() == 1
    assert second.stop() == 0
    report(
        "ray_job handed over at SIGTERM",
        stop_to_adopted_s=adopted_after,
        stop_to_done_s=time.monotonic() - stopped,
    )


def test_a_cancel_whose_ray_job_worker_was_killed_stops_the_job(start_worker, ray_head):
    client = RayDashboard(ray_head.dashboard_url)
    long = tasks.announce_and_sleep.enqueue(60, "orphan-job-cancel")
    victim = start_worker("--worker-id", "victim-job-cancel", env=job_mode_env(ray_head))
    wait_until(
        lambda: TaskProbe.objects.filter(name="orphan-job-cancel-started").exists(),
        120,
        explain=victim.log,
    )
    victim.kill()  # kill -9 while the body runs in its Ray Job
    killed = time.monotonic()
    assert django_ray.cancel_task(long.id) == TaskState.CANCELLING
    rescuer = start_worker("--worker-id", "rescuer-job-cancel", env=job_mode_env(ray_head))
    wait_until(lambda: _row(long).state == TaskState.CANCELLED, 60, explain=rescuer.log)
    elapsed = time.monotonic() - killed
    wait_until(lambda: _job_status(client, long) == "STOPPED", 30, explain=rescuer.log)
    assert _row(long).claimed_by_worker == "rescuer-job-cancel"  # adopted, then stopped
    assert not TaskProbe.objects.filter(name="orphan-job-cancel").exists()
    assert rescuer.stop() == 0
    report("cancel with killed worker ray_job", kill_to_cancelled_s=elapsed)


@pytest.mark.parametrize(
    ("address", "needle"),
    [
        ("ray://head:10001", "needs the dashboard's HTTP address"),
        ("http://127.0.0.1:1", "Cannot reach the Ray Jobs API at http://127.0.0.1:1"),
    ],
)
def test_a_wrong_jobs_api_address_is_a_clear_startup_failure(start_worker, address, needle):
    worker = start_worker(
        env={"DJANGO_RAY_TEST_SETTINGS": f'{{"RUNNER": "ray_job", "RAY_ADDRESS": "{address}"}}'}
    )
    assert worker.wait(60) == 1
    assert needle in worker.log(), worker.log()


def test_a_job_ray_cannot_start_goes_through_the_retry_path(start_worker, ray_head):
    result = tasks.add.using(max_attempts=2).enqueue(1, 1)
    env = job_mode_env(ray_head, RAY_JOB_RUNTIME_ENV={"working_dir": "not-a-uri-or-zip"})
    worker = start_worker(env=env)
    wait_until(lambda: _row(result).state == TaskState.LOST, 90, explain=worker.log)
    row = _row(result)
    assert row.attempt_number == 2
    history = list(TaskAttempt.objects.filter(execution=row).values_list("state", flat=True))
    assert history == [TaskState.LOST, TaskState.LOST]
    attempt = TaskAttempt.objects.filter(execution=row).first()
    # Ray accepts the submission, then fails the job while setting up its runtime env: the
    # attempt is LOST with Ray's reason (never RUNNING forever, never a crashed worker).
    assert attempt.error_class_path == "django_ray.RayJobLost", attempt.error_message
    assert "ended FAILED" in attempt.error_message and "working_dir" in attempt.error_message
    assert worker.stop() == 0
