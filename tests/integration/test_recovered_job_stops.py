"""The Ray Jobs of recovered rows are stopped, also when the Jobs API answers only later.

The Jobs API here is a small local HTTP server that records the stops it receives. Its port is
bound from the start but only listens when the test says so: until then every stop is refused,
as by a dashboard that is down.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from django.utils import timezone

from django_ray.lifecycle import adopt, claim, leases
from django_ray.models import RayTaskExecution, TaskState, TaskWorkerLease
from django_ray.worker import job_stops
from django_ray.worker.job_stops import RecoveredJobStopper
from tests import tasks
from tests.conftest import wait_until


class JobsApi(ThreadingHTTPServer):
    """Answers ``POST /api/jobs/<id>/stop``; 500 for ids starting with ``broken``."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler, bind_and_activate=False)
        self.server_bind()  # the port is ours, but connections are refused until listen()
        self.stopped: list[str] = []
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def listen(self) -> None:
        self.server_activate()
        self._thread = threading.Thread(target=self.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        if self._thread is not None:
            self.shutdown()
        self.server_close()


class _Handler(BaseHTTPRequestHandler):
    server: JobsApi

    def do_POST(self) -> None:
        parts = self.path.strip("/").split("/")
        if len(parts) != 4 or parts[:2] != ["api", "jobs"] or parts[3] != "stop":
            self._answer(404, {"error": f"no route {self.path}"})
        elif parts[2].startswith("broken"):
            self._answer(500, {"error": "Traceback ...\nRuntimeError: job manager died"})
        else:
            self.server.stopped.append(parts[2])
            self._answer(200, {"stopped": True})

    def _answer(self, status: int, body: dict[str, object]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def jobs_api() -> Iterator[JobsApi]:
    server = JobsApi()
    try:
        yield server
    finally:
        server.close()


def _rows_of_a_dead_ray_job_worker(worker_id: str, count: int) -> list[str]:
    """``count`` RUNNING rows with Ray Jobs, owned by a worker whose lease ended 60 s ago."""
    for i in range(count):
        tasks.record.enqueue(f"{worker_id}-{i}")
    leases.register_lease(worker_id, "host", 1, ["default"], "ray_job", 4, 5.0)
    claimed = claim.claim(worker_id, ["default"], count)
    job_ids = [f"job-{worker_id}-{t.id}" for t in claimed]
    adopt.attach_ray_jobs(
        [(t.id, t.attempt_number, job) for t, job in zip(claimed, job_ids, strict=True)], "default"
    )
    old = timezone.now() - timedelta(seconds=60)
    TaskWorkerLease.objects.filter(worker_id=worker_id).update(
        expires_at=old, last_heartbeat_at=old
    )
    RayTaskExecution.objects.filter(claimed_by_worker=worker_id).update(last_heartbeat_at=old)
    return job_ids


@pytest.mark.django_db(transaction=True)
def test_a_worker_stops_recovered_jobs_once_the_jobs_api_answers(start_worker, jobs_api) -> None:
    job_ids = _rows_of_a_dead_ray_job_worker("dead-job-worker", 3)
    settings = json.dumps({"RAY_ADDRESS": jobs_api.url})
    worker = start_worker("--sync", env={"DJANGO_RAY_TEST_SETTINGS": settings})
    wait_until(lambda: "does not answer" in worker.log(), 60, explain=worker.log)
    assert jobs_api.stopped == []
    # The loop is not held by the unreachable API: it still runs new work.
    later = tasks.add.enqueue(2, 3)
    wait_until(
        lambda: RayTaskExecution.objects.get(task_id=later.id).state == TaskState.SUCCEEDED,
        60,
        explain=worker.log,
    )
    jobs_api.listen()
    wait_until(lambda: sorted(jobs_api.stopped) == sorted(job_ids), 120, explain=worker.log)
    assert worker.stop() == 0
    log = worker.log()
    for job_id in job_ids:
        assert f"stopped Ray Job {job_id} of a recovered row" in log
    assert "answers again" in log
    assert log.count("does not answer") == 1  # one warning per outage, not one per pass


def test_a_job_the_api_refuses_to_stop_is_named_and_not_retried(jobs_api, caplog) -> None:
    jobs_api.listen()
    stopper = RecoveredJobStopper("w", lambda: jobs_api.url)
    stopper.add(["broken-1", "job-2"])
    with caplog.at_level(logging.WARNING, logger="django_ray.worker"):
        stopper.run()
    assert jobs_api.stopped == ["job-2"]
    assert stopper.pending == []
    assert "could not stop Ray Job broken-1" in caplog.text
    assert "`ray job stop broken-1`" in caplog.text
    assert "RuntimeError: job manager died" in caplog.text


def test_without_a_jobs_api_the_jobs_are_named_with_the_fix(caplog) -> None:
    stopper = RecoveredJobStopper("w", lambda: None)
    stopper.add(["job-1"])
    with caplog.at_level(logging.WARNING, logger="django_ray.worker"):
        stopper.run()
    assert stopper.pending == []
    assert "knows no Ray Jobs API" in caplog.text
    assert "RAY_ADDRESS" in caplog.text and "job-1" in caplog.text


def test_jobs_are_given_up_after_the_api_stayed_down(jobs_api, caplog, monkeypatch) -> None:
    monkeypatch.setattr(job_stops, "GIVE_UP_SECONDS", 0.0)
    stopper = RecoveredJobStopper("w", lambda: jobs_api.url)
    stopper.add(["job-1"])
    with caplog.at_level(logging.WARNING, logger="django_ray.worker"):
        stopper.run()
    assert stopper.pending == []
    assert "giving up stopping Ray Job(s) job-1" in caplog.text
    assert jobs_api.stopped == []


def test_a_refused_stop_waits_for_the_backoff(jobs_api) -> None:
    stopper = RecoveredJobStopper("w", lambda: jobs_api.url)
    stopper.add(["job-1"])
    stopper.run()  # refused: backoff starts
    jobs_api.listen()
    stopper.run()  # still inside the backoff: nothing sent
    assert jobs_api.stopped == [] and stopper.pending == ["job-1"]
    stopper._retry_at = 0.0  # the backoff ran out
    stopper.run()
    assert jobs_api.stopped == ["job-1"] and stopper.pending == []


@pytest.mark.django_db(transaction=True)
def test_ray_jobs_of_rows_a_live_worker_lost_track_of_are_stopped(start_worker, jobs_api) -> None:  # type: ignore[no-untyped-def]
    """The worker's recovery pass merges both reports whole: the Ray Jobs of its own untracked
    rows (recover_untracked) are stopped too, not only those of dead workers' rows."""
    jobs_api.listen()
    settings = json.dumps({"RAY_ADDRESS": jobs_api.url})
    worker = start_worker(
        "--sync", "--queue", "default", env={"DJANGO_RAY_TEST_SETTINGS": settings}
    )
    wait_until(
        lambda: TaskWorkerLease.objects.filter(pid=worker.pid).exists(), 60, explain=worker.log
    )
    worker_id = TaskWorkerLease.objects.get(pid=worker.pid).worker_id
    for i in range(2):
        tasks.record.using(queue_name="other").enqueue(f"untracked-{i}")
    # Rows owned by the live worker that its runner never heard of (as after a dropped result).
    claimed = claim.claim(worker_id, ["other"], 2)
    job_ids = [f"job-untracked-{t.id}" for t in claimed]
    adopt.attach_ray_jobs(
        [(t.id, t.attempt_number, job) for t, job in zip(claimed, job_ids, strict=True)], "default"
    )
    old = timezone.now() - timedelta(seconds=60)
    RayTaskExecution.objects.filter(pk__in=[t.id for t in claimed]).update(last_heartbeat_at=old)
    wait_until(lambda: sorted(jobs_api.stopped) == sorted(job_ids), 60, explain=worker.log)
    assert set(
        RayTaskExecution.objects.filter(pk__in=[t.id for t in claimed]).values_list(
            "state", flat=True
        )
    ) == {TaskState.QUEUED}
    assert worker.stop() == 0, worker.log()
