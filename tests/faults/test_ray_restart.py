"""The Ray head stopped and started again mid-run: workers reconnect, no row is lost."""

from __future__ import annotations

import time

import pytest

from django_ray.models import RayTaskExecution, TaskState
from tests import tasks
from tests.conftest import wait_until
from tests.faults.conftest import (
    all_terminal,
    check_run,
    job_mode_env,
    report,
    running_ids,
    state_counts,
)

pytestmark = pytest.mark.django_db(transaction=True)


def _succeeded() -> int:
    return RayTaskExecution.objects.filter(state=TaskState.SUCCEEDED).count()


def _restart_mid_run(start_worker, ray_head, args, env, count, seconds, name):
    markers = [f"{name}-{i}" for i in range(count)]
    for marker in markers:
        tasks.sleep_for.enqueue(seconds, marker=marker)
    worker = start_worker(*args, env=env)
    wait_until(lambda: _succeeded() >= count // 5, 240, explain=worker.log)
    in_flight = running_ids()
    stopped = time.monotonic()
    ray_head.stop()
    in_flight |= running_ids()
    down_for = time.monotonic() - stopped
    time.sleep(2)
    ray_head.start()
    back = time.monotonic()
    before = _succeeded()
    wait_until(lambda: _succeeded() > before, 180, explain=worker.log)
    first_success = time.monotonic() - back
    wait_until(all_terminal, 100, explain=lambda: worker.log() + str(state_counts()))
    all_done = time.monotonic() - back
    assert worker.proc.poll() is None, worker.log()[-4000:]  # it never crashed
    figures = check_run(markers, in_flight)
    log = worker.log()
    assert worker.stop() == 0, log[-3000:]
    return log, figures, down_for, first_success, all_done


@pytest.mark.timeout(600)
def test_ray_head_restart_mid_run_ray_core(start_worker, ray_head):
    log, figures, down, first, done = _restart_mid_run(
        start_worker,
        ray_head,
        ["--cluster", ray_head.address, "--concurrency", "2"],
        None,
        count=120,
        seconds=0.05,
        name="core-restart",
    )
    assert "lost the connection to Ray" in log
    assert "reconnected to Ray" in log
    report(
        "ray head restart ray_core (120 tasks)",
        head_stop_s=down,
        head_back_to_first_success_s=first,
        head_back_to_all_done_s=done,
        **figures,
    )


@pytest.mark.timeout(600)
def test_ray_head_restart_mid_run_ray_job(start_worker, ray_head):
    log, figures, down, first, done = _restart_mid_run(
        start_worker,
        ray_head,
        ["--concurrency", "3"],
        job_mode_env(ray_head),
        count=8,
        seconds=1.0,
        name="job-restart",
    )
    assert "lost the connection to the Ray Jobs API" in log
    assert "reconnected to the Ray Jobs API" in log
    report(
        "ray head restart ray_job (8 tasks)",
        head_stop_s=down,
        head_back_to_first_success_s=first,
        head_back_to_all_done_s=done,
        **figures,
    )
