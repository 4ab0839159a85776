"""The default runner: one Ray Job per attempt, outcomes recorded by the job itself."""

from __future__ import annotations

import time

import pytest

from django_ray import jobs
from django_ray.models import RayTaskExecution, TaskAttempt, TaskState
from django_ray.runners.ray_job import JobsClient
from tests import tasks
from tests.conftest import wait_until
from tests.faults.conftest import all_terminal, job_mode_env, report

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
    client = JobsClient(ray_head.dashboard_url)
    for row in RayTaskExecution.objects.all():
        assert row.ray_job_id == jobs.submission_id(row.task_id, row.attempt_number)
        # The row is written before the job process exits; the job then ends SUCCEEDED.
        wait_until(lambda r=row: client.status(r.ray_job_id)["status"] == "SUCCEEDED", 60)
        details = client.status(row.ray_job_id)
        # The payload never reaches a shell: the entrypoint holds two integers.
        assert details["entrypoint"].endswith(f"-m django_ray.jobs {row.id} {row.attempt_number}")
    worker.wait_for_log("failed permanently")
    wait_until(lambda: worker.log().count("succeeded task_id=") == 6, 30, explain=worker.log)
    assert worker.stop() == 0
    report("ray_job throughput", tasks=7, seconds=elapsed, per_task=elapsed / 7)


def test_a_retried_submit_never_starts_a_second_job(ray_head):
    client = JobsClient(ray_head.dashboard_url)
    body = {"entrypoint": "true", "submission_id": "django-ray-idempotence-a1"}
    client.submit(body)
    client.submit(body)  # same attempt again: Ray refuses the duplicate id, no second job
    listed = client._call("GET", "/api/jobs/")
    assert [j["submission_id"] for j in listed].count("django-ray-idempotence-a1") == 1
    wait_until(lambda: client.status("django-ray-idempotence-a1")["status"] == "SUCCEEDED", 60)
    assert TaskAttempt.objects.count() == 0
    assert TaskState.SUCCEEDED == "SUCCEEDED"
