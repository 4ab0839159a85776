"""Orphan recovery and Ray Job adoption under races: each row is recovered or adopted once."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from django.db import connections
from django.utils import timezone

from django_ray.lifecycle import adopt, claim, leases, operator, recover
from django_ray.models import RayTaskExecution, TaskAttempt, TaskState, TaskWorkerLease
from tests import tasks

pytestmark = pytest.mark.django_db(transaction=True)

S = TaskState
RACERS = 4


def _dead_worker_rows(worker_id: str, count: int, with_jobs: bool = False) -> list[int]:
    """``count`` RUNNING rows owned by ``worker_id``, whose lease expired 60 s ago."""
    for i in range(count):
        tasks.record.enqueue(f"{worker_id}-{i}")
    leases.register_lease(worker_id, "host", 1, ["default"], "ray_core", 4, 5.0)
    claimed = claim.claim(worker_id, ["default"], count)
    assert len(claimed) == count
    if with_jobs:
        adopt.attach_ray_jobs([(t.id, t.attempt_number, f"job-{t.id}") for t in claimed], "default")
    old = timezone.now() - timedelta(seconds=60)
    TaskWorkerLease.objects.filter(worker_id=worker_id).update(
        expires_at=old, last_heartbeat_at=old
    )
    RayTaskExecution.objects.filter(claimed_by_worker=worker_id).update(last_heartbeat_at=old)
    return [t.id for t in claimed]


def _race(target) -> list[object]:
    barrier = threading.Barrier(RACERS)
    results: list[object] = [None] * RACERS
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            barrier.wait()
            results[i] = target(i)
        except BaseException as exc:  # reported below
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(RACERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    return results


def test_racing_detect_stuck_tasks_recovers_each_orphan_exactly_once():
    ids = _dead_worker_rows("dead-1", 300)
    # A live worker's rows with old heartbeats are not orphans: its lease is live.
    leases.register_lease("alive-1", "host", 2, ["default"], "ray_core", 4, 300.0)
    tasks.record.enqueue("alive-row")
    [alive] = claim.claim("alive-1", ["default"], 1)
    RayTaskExecution.objects.filter(pk=alive.id).update(
        last_heartbeat_at=timezone.now() - timedelta(seconds=60)
    )

    reports = _race(lambda i: recover.detect_stuck_tasks(3.0, limit=100))
    recovered = [row_id for r in reports for row_id in r.lost]  # type: ignore[union-attr]
    # Every orphan exactly once overall (repeat until nobody finds more: limit=100 per call).
    while True:
        more = recover.detect_stuck_tasks(3.0, limit=100).lost
        if not more:
            break
        recovered.extend(more)
    assert sorted(recovered) == sorted(ids)
    assert RayTaskExecution.objects.get(pk=alive.id).state == S.RUNNING
    assert set(RayTaskExecution.objects.filter(pk__in=ids).values_list("state", flat=True)) == {
        S.QUEUED
    }
    history = TaskAttempt.objects.filter(execution_id__in=ids)
    assert history.count() == len(ids)
    assert set(history.values_list("state", flat=True)) == {S.LOST}
    assert set(history.values_list("worker_id", flat=True)) == {"dead-1"}
    row = RayTaskExecution.objects.get(pk=ids[0])
    assert row.claimed_by_worker is None and row.error_class_path == "django_ray.LostAttempt"
    assert "dead-1" in row.error_message
    assert TaskWorkerLease.objects.get(worker_id="dead-1").is_active is False


def test_a_lost_row_out_of_attempts_stays_lost():
    [row_id] = _dead_worker_rows("dead-2", 1)
    RayTaskExecution.objects.filter(pk=row_id).update(max_attempts=1)
    report = recover.detect_stuck_tasks(3.0)
    assert report.lost == [row_id] and report.requeued == []
    assert RayTaskExecution.objects.get(pk=row_id).state == S.LOST


def test_orphaned_cancelling_rows_end_cancelled():
    [row_id] = _dead_worker_rows("dead-3", 1)
    task_id = RayTaskExecution.objects.get(pk=row_id).task_id
    assert operator.request_cancel(task_id) == S.CANCELLING
    report = recover.detect_stuck_tasks(3.0)
    assert report.cancelled == [row_id]
    assert RayTaskExecution.objects.get(pk=row_id).state == S.CANCELLED


def test_ray_job_rows_wait_one_more_stuck_timeout_for_adoption():
    ids = _dead_worker_rows("dead-4", 3, with_jobs=True)
    recent = timezone.now() - timedelta(seconds=1)
    TaskWorkerLease.objects.filter(worker_id="dead-4").update(expires_at=recent)
    # Lease ended 1 s ago: heartbeats are old, but an adopter still has time.
    assert recover.detect_stuck_tasks(3.0).lost == []
    TaskWorkerLease.objects.filter(worker_id="dead-4").update(
        expires_at=timezone.now() - timedelta(seconds=4)
    )
    assert sorted(recover.detect_stuck_tasks(3.0).lost) == sorted(ids)


def test_racing_adopters_adopt_each_job_exactly_once():
    ids = _dead_worker_rows("dead-5", 50, with_jobs=True)
    for i in range(RACERS):
        leases.register_lease(f"adopter-{i}", "host", 10 + i, None, "ray_job", 4, 300.0)

    def adopt_all(i: int) -> list[int]:
        me = f"adopter-{i}"
        adopted = []
        for orphan in adopt.ray_job_orphans(me, "default", limit=1000):
            task = adopt.adopt_ray_job(me, orphan, "default")
            if task is not None:
                assert task.attempt_number == orphan.attempt_number
                adopted.append(task.id)
        return adopted

    results = _race(adopt_all)
    adopted = [row_id for r in results for row_id in r]  # type: ignore[union-attr]
    assert sorted(adopted) == sorted(ids)  # each exactly once
    owners = dict(
        RayTaskExecution.objects.filter(pk__in=ids).values_list("id", "claimed_by_worker")
    )
    for i, r in enumerate(results):
        assert all(owners[row_id] == f"adopter-{i}" for row_id in r)  # type: ignore[union-attr]
    # Adopted rows have live owners now: stuck recovery leaves them alone.
    assert recover.detect_stuck_tasks(3.0).lost == []
    assert adopt.ray_job_orphans("someone-else", "default") == []
    assert set(RayTaskExecution.objects.filter(pk__in=ids).values_list("state", flat=True)) == {
        S.RUNNING
    }


def test_rows_a_live_worker_lost_track_of_are_recovered_after_the_stuck_timeout():
    leases.register_lease("alive-2", "host", 3, ["default"], "ray_core", 4, 300.0)
    for i in range(3):
        tasks.record.enqueue(f"untracked-{i}")
    a, b, c = claim.claim("alive-2", ["default"], 3)
    old = timezone.now() - timedelta(seconds=60)
    RayTaskExecution.objects.filter(pk__in=[a.id, b.id]).update(last_heartbeat_at=old)
    # a: still tracked by the runner; b: dropped and stale; c: dropped but fresh (just claimed).
    report = recover.recover_untracked("alive-2", [a.id], 3.0)
    assert report.lost == [b.id] and report.requeued == [b.id]
    states = dict(RayTaskExecution.objects.values_list("id", "state"))
    assert states == {a.id: S.RUNNING, b.id: S.QUEUED, c.id: S.RUNNING}
    row = RayTaskExecution.objects.get(pk=b.id)
    assert "lost track of attempt 1" in row.error_message
    assert recover.detect_stuck_tasks(3.0).lost == []  # its owner is alive: not an orphan
