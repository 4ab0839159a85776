"""The owner's operator runbook (spec) SQL and Django-shell snippet, run unchanged on PostgreSQL.

The query and snippet texts below are copied verbatim from the runbook
(``shared/spec/operator-runbook.txt``); do not "fix" them here: if one stops working, the
schema broke the runbook.
"""

from __future__ import annotations

import datetime
import json
import subprocess
import sys

import pytest
from django.db import connection
from django.utils import timezone

from django_ray.lifecycle import claim, leases, record
from django_ray.models import RayTaskExecution, TaskAttempt, TaskState, TaskWorkerLease
from django_ray.outcomes import Outcome, OutcomeKind
from tests import tasks
from tests.conftest import ROOT, wait_until, worker_env

pytestmark = pytest.mark.django_db(transaction=True)

TASK_COUNTS = """
-- Task counts by state
SELECT state, COUNT(*) AS count
FROM django_ray_raytaskexecution
GROUP BY state
ORDER BY state;
"""

LONG_RUNNING = """
-- Long-running tasks (example threshold: 10 minutes)
SELECT id, task_id, callable_path, queue_name, claimed_by_worker, started_at
FROM django_ray_raytaskexecution
WHERE state = 'RUNNING'
  AND started_at < NOW() - INTERVAL '10 minutes'
ORDER BY started_at ASC;
"""

LEASES = """
-- Worker leases ordered by oldest heartbeat
SELECT worker_id, hostname, pid, queue_name, is_active, last_heartbeat_at
FROM django_ray_taskworkerlease
ORDER BY last_heartbeat_at ASC;
"""

ORPHANS = """
-- Example: inspect orphan candidates first (do not update blindly)
SELECT id, task_id, callable_path, claimed_by_worker, started_at
FROM django_ray_raytaskexecution
WHERE state = 'RUNNING'
ORDER BY started_at ASC;
"""

REQUEUE_SNIPPET = """\
from django_ray.models import RayTaskExecution, TaskState

qs = RayTaskExecution.objects.filter(state=TaskState.FAILED, queue_name="default")[:100]
for task in qs:
    task.state = TaskState.QUEUED
    task.started_at = None
    task.finished_at = None
    task.error_message = None
    task.error_traceback = None
    task.claimed_by_worker = None
    task.ray_job_id = None
    task.save()
"""


def _query(text: str) -> tuple[list[str], list[tuple[object, ...]]]:
    with connection.cursor() as cursor:
        cursor.execute(text)
        return [c.name for c in cursor.description], cursor.fetchall()


def _populate() -> dict[str, str]:
    """Rows in several states: 2 QUEUED, 2 RUNNING (one for 11 minutes), 1 SUCCEEDED, 1 FAILED."""
    ids: dict[str, str] = {}
    ids["done"] = tasks.add.enqueue(1, 1).id
    ids["bad"] = tasks.fail_permanent.enqueue().id
    [done, bad] = sorted(claim.claim("w-old", ["default"], 2), key=lambda t: t.id)
    record.record_outcomes(
        "w-old",
        [
            (done, Outcome(done.id, 1, OutcomeKind.SUCCEEDED, "2")),
            (bad, Outcome(bad.id, 1, OutcomeKind.FAILED, None, "x.E", "E: no", "tb", False)),
        ],
    )
    ids["old"] = tasks.sleep_for.enqueue(1).id
    ids["new"] = tasks.sleep_for.using(queue_name="other").enqueue(1).id
    claim.claim("w-busy", None, 2)
    RayTaskExecution.objects.filter(task_id=ids["old"]).update(
        started_at=timezone.now() - datetime.timedelta(minutes=11)
    )
    ids["q1"] = tasks.add.enqueue(2, 2).id
    ids["q2"] = tasks.add.enqueue(3, 3).id
    for worker, age, active in [("w-busy", 1, True), ("w-old", 600, False)]:
        lease = leases.register_lease(worker, "host-a", 4242, ["default", "other"], "x", 2, 30)
        TaskWorkerLease.objects.filter(pk=lease.pk).update(
            last_heartbeat_at=timezone.now() - datetime.timedelta(seconds=age), is_active=active
        )
    return ids


def test_task_counts_by_state() -> None:
    _populate()
    columns, rows = _query(TASK_COUNTS)
    assert columns == ["state", "count"]
    assert rows == [("FAILED", 1), ("QUEUED", 2), ("RUNNING", 2), ("SUCCEEDED", 1)]


def test_long_running_tasks() -> None:
    ids = _populate()
    columns, rows = _query(LONG_RUNNING)
    assert columns == [
        "id",
        "task_id",
        "callable_path",
        "queue_name",
        "claimed_by_worker",
        "started_at",
    ]
    assert [(r[1], r[2], r[3], r[4]) for r in rows] == [
        (ids["old"], "tests.tasks.sleep_for", "default", "w-busy")
    ]


def test_worker_leases_by_oldest_heartbeat() -> None:
    _populate()
    columns, rows = _query(LEASES)
    assert columns == [
        "worker_id",
        "hostname",
        "pid",
        "queue_name",
        "is_active",
        "last_heartbeat_at",
    ]
    assert [(r[0], r[1], r[2], r[3], r[4]) for r in rows] == [
        ("w-old", "host-a", 4242, "default,other", False),
        ("w-busy", "host-a", 4242, "default,other", True),
    ]


def test_orphan_candidates() -> None:
    ids = _populate()
    columns, rows = _query(ORPHANS)
    assert columns == ["id", "task_id", "callable_path", "claimed_by_worker", "started_at"]
    assert [r[1] for r in rows] == [ids["old"], ids["new"]]  # oldest first


def _run_snippet() -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "django", "shell", "-c", REQUEUE_SNIPPET],
        cwd=ROOT,
        env=worker_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_requeue_snippet_reruns_failed_tasks(start_worker) -> None:  # type: ignore[no-untyped-def]
    # A slow fallback poll: the requeued rows must be found through NOTIFY (the UPDATE trigger).
    worker = start_worker(
        "--sync",
        "--worker-id",
        "runbook-worker",
        env={"DJANGO_RAY_TEST_SETTINGS": json.dumps({"POLL_INTERVAL_SECONDS": 120})},
    )
    exhausted = tasks.flaky.enqueue(succeed_on=4)  # fails 3 times: FAILED at MAX_TASK_ATTEMPTS
    permanent = tasks.fail_permanent.enqueue()
    elsewhere = tasks.fail_permanent.using(queue_name="other").enqueue()
    wait_until(
        lambda: (
            RayTaskExecution.objects.filter(
                task_id__in=[exhausted.id, permanent.id], state=TaskState.FAILED
            ).count()
            == 2
        ),
        60,
        explain=worker.log,
    )
    exhausted.refresh()
    assert exhausted.attempts == 3 and len(exhausted.errors) == 3

    proc = _run_snippet()
    assert proc.returncode == 0, proc.stdout + proc.stderr

    # The worker (idle, polling only every 120 s) runs them again at once.
    wait_until(
        lambda: RayTaskExecution.objects.filter(
            task_id=exhausted.id, state=TaskState.SUCCEEDED
        ).exists(),
        30,
        explain=worker.log,
    )
    exhausted.refresh()
    assert exhausted.return_value == {"attempt": 4, "task_id": exhausted.id}
    assert exhausted.worker_ids == ["runbook-worker"] * 4
    # Every failure stays in the history; the row itself is clean after the success.
    assert [e.exception_class_path for e in exhausted.errors] == ["tests.tasks.FlakyError"] * 3
    row = RayTaskExecution.objects.get(task_id=exhausted.id)
    assert row.error_message is None and row.error_traceback is None

    wait_until(
        lambda: TaskAttempt.objects.filter(execution__task_id=permanent.id).count() == 2,
        30,
        explain=worker.log,
    )
    wait_until(
        lambda: RayTaskExecution.objects.get(task_id=permanent.id).state == TaskState.FAILED,
        30,
        explain=worker.log,
    )
    # The snippet's filter is queue_name="default": the FAILED row of "other" was left alone.
    assert RayTaskExecution.objects.get(task_id=elsewhere.id).state == TaskState.QUEUED
    assert worker.proc.poll() is None
    assert worker.stop() == 0, worker.log()
