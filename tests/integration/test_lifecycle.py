"""The lifecycle package on real PostgreSQL: both write paths against the transition table, the
first attempt's ``started_at`` through a real worker, and the shared row-set vocabulary."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import pytest
from django.utils import timezone

from django_ray.lifecycle import claim, leases, operator, record, recover, rules
from django_ray.models import RayTaskExecution, TaskAttempt, TaskState, TaskWorkerLease
from django_ray.outcomes import ClaimedTask, Outcome, OutcomeKind
from tests import tasks
from tests.conftest import wait_until

pytestmark = pytest.mark.django_db(transaction=True)
S = TaskState


def _claimed(worker: str = "w") -> ClaimedTask:
    tasks.record.enqueue("x")
    leases.register_lease(worker, "host", 1, None, "sync", 1, 60.0)
    [task] = claim.claim(worker, None, 1)
    return task


def _state(task: ClaimedTask) -> str:
    return RayTaskExecution.objects.get(pk=task.id).state


def _outcome(task: ClaimedTask, kind: OutcomeKind, retryable: bool = True) -> Outcome:
    return Outcome(task.id, task.attempt_number, kind, error_class_path="x.E", retryable=retryable)


def _cancelling(task: ClaimedTask) -> None:
    operator.request_cancel(task.task_id)


def _final_attempt(task: ClaimedTask) -> None:
    RayTaskExecution.objects.filter(pk=task.id).update(max_attempts=1)
    task.max_attempts = 1


# (name, prepare the owned row, outcome kind, retryable, expected state)
RECORDS: list[tuple[str, Callable[[ClaimedTask], None] | None, OutcomeKind, bool, str]] = [
    ("succeeded", None, OutcomeKind.SUCCEEDED, True, S.SUCCEEDED),
    ("failed-retry", None, OutcomeKind.FAILED, True, S.QUEUED),
    ("failed-denied", None, OutcomeKind.FAILED, False, S.FAILED),
    ("failed-last", _final_attempt, OutcomeKind.FAILED, True, S.FAILED),
    ("lost-retry", None, OutcomeKind.LOST, True, S.QUEUED),
    ("lost-last", _final_attempt, OutcomeKind.LOST, True, S.LOST),
    ("cancelled", None, OutcomeKind.CANCELLED, True, S.CANCELLED),
    ("interrupted", None, OutcomeKind.INTERRUPTED, True, S.QUEUED),
    ("cancelling-succeeded", _cancelling, OutcomeKind.SUCCEEDED, True, S.SUCCEEDED),
    ("cancelling-failed", _cancelling, OutcomeKind.FAILED, False, S.FAILED),
    ("cancelling-retry", _cancelling, OutcomeKind.FAILED, True, S.CANCELLED),
    ("cancelling-lost", _cancelling, OutcomeKind.LOST, True, S.CANCELLED),
    ("cancelling-interrupted", _cancelling, OutcomeKind.INTERRUPTED, True, S.CANCELLED),
]


@pytest.mark.parametrize(
    ("case", "prepare", "kind", "retryable", "expected"), RECORDS, ids=[r[0] for r in RECORDS]
)
def test_every_recorded_outcome_is_an_allowed_transition(
    path: str,
    case: str,
    prepare: Callable[[ClaimedTask], None] | None,
    kind: OutcomeKind,
    retryable: bool,
    expected: str,
) -> None:
    task = _claimed()
    if prepare is not None:
        prepare(task)
    before = _state(task)
    report = record.record_outcomes("w", [(task, _outcome(task, kind, retryable))])
    row = RayTaskExecution.objects.get(pk=task.id)
    assert row.state == expected == report.states[task.id]
    assert row.state in rules.ALLOWED[before], f"{before} -> {row.state} is not allowed"
    requeued = row.state == S.QUEUED
    assert (row.claimed_by_worker is None) is requeued
    assert (row.finished_at is None) is requeued
    attempt = TaskAttempt.objects.get(execution_id=task.id)
    assert attempt.attempt_number == 1 and attempt.started_at == task.started_at
    # The row keeps the first attempt's start, whatever happened to the attempt.
    assert row.started_at == task.started_at == row.last_attempted_at


def test_claim_and_heartbeat_and_lease_expiry_follow_the_table(path: str) -> None:
    tasks.record.enqueue("a")
    tasks.record.using(queue_name="other").enqueue("b")
    leases.register_lease("w", "host", 1, None, "sync", 1, 60.0)
    [task] = claim.claim("w", ["default"], 5)
    assert task.args == ["a"] and _state(task) == S.RUNNING
    assert S.RUNNING in rules.ALLOWED[S.QUEUED]
    assert RayTaskExecution.objects.due(["other"]).count() == 1
    assert list(RayTaskExecution.objects.owned("w").values_list("id", flat=True)) == [task.id]
    old = timezone.now() - timedelta(minutes=5)
    RayTaskExecution.objects.filter(pk=task.id).update(last_heartbeat_at=old)
    assert leases.heartbeat("w", 60.0, [task.id])
    assert RayTaskExecution.objects.get(pk=task.id).last_heartbeat_at > old
    TaskWorkerLease.objects.filter(worker_id="w").update(expires_at=old)
    assert leases.expire_leases("default") == ["w"]
    assert not leases.heartbeat("w", 60.0, [task.id])  # a dead lease does not come back


def test_recovery_follows_the_table_and_the_orphan_definition(path: str) -> None:
    tasks.record.enqueue("r")
    tasks.record.enqueue("c")
    leases.register_lease("dead", "host", 1, None, "sync", 2, 60.0)
    running, cancelling = claim.claim("dead", None, 2)
    operator.request_cancel(cancelling.task_id)
    old = timezone.now() - timedelta(minutes=5)
    RayTaskExecution.objects.update(last_heartbeat_at=old)
    TaskWorkerLease.objects.update(expires_at=old)
    orphans = set(RayTaskExecution.objects.orphaned(3.0).values_list("id", flat=True))
    assert orphans == {running.id, cancelling.id}
    report = recover.detect_stuck_tasks(3.0)
    assert report.lost == [running.id] and report.requeued == [running.id]
    assert report.cancelled == [cancelling.id] and report.expired_leases == ["dead"]
    assert _state(running) == S.QUEUED and S.QUEUED in rules.ALLOWED[S.RUNNING]
    assert _state(cancelling) == S.CANCELLED and S.CANCELLED in rules.ALLOWED[S.CANCELLING]
    assert not RayTaskExecution.objects.orphaned(3.0).exists()


def test_a_recovery_report_merges_every_field() -> None:
    a = recover.RecoveryReport(["w1"], [1], [1], [], ["job-1"])
    b = recover.RecoveryReport([], [2], [], [3], ["job-2", "job-3"])
    merged = a.merge(b)
    assert merged == recover.RecoveryReport(["w1"], [1, 2], [1], [3], ["job-1", "job-2", "job-3"])
    assert merged.recovered == 3


def test_after_retries_started_at_is_the_first_attempt_and_last_attempted_at_the_latest(  # type: ignore[no-untyped-def]
    start_worker,
) -> None:
    result = tasks.flaky.enqueue(3)
    worker = start_worker("--sync")
    wait_until(
        lambda: RayTaskExecution.objects.get(task_id=result.id).state == S.SUCCEEDED,
        90,
        explain=worker.log,
    )
    assert worker.stop() == 0, worker.log()
    row = RayTaskExecution.objects.get(task_id=result.id)
    attempts = list(TaskAttempt.objects.filter(execution=row).order_by("attempt_number"))
    assert [a.attempt_number for a in attempts] == [1, 2, 3]
    assert row.started_at == attempts[0].started_at
    assert row.last_attempted_at == attempts[-1].started_at > attempts[0].started_at
    fetched = tasks.flaky.get_result(result.id)
    assert fetched.started_at == attempts[0].started_at
    assert fetched.last_attempted_at == attempts[-1].started_at


def test_a_worker_whose_heartbeat_ran_late_does_not_declare_itself_dead(path: str) -> None:
    """Under load the lease thread can miss its lease; the worker's own recovery pass must not
    then expire its lease and take its running rows (the survivor of the Ray Job kill test did
    that at load 8-10, stopping its own jobs). Another worker's pass still finds it dead."""
    tasks.record.enqueue("a")
    tasks.record.enqueue("b")
    leases.register_lease("late", "host", 1, None, "sync", 2, 60.0)
    mine = claim.claim("late", None, 2)
    old = timezone.now() - timedelta(minutes=5)
    RayTaskExecution.objects.update(last_heartbeat_at=old)
    TaskWorkerLease.objects.filter(worker_id="late").update(expires_at=old)
    ids = [t.id for t in mine]

    report = recover.recover("late", ids, 3.0, "default")
    assert report.expired_leases == [] and report.recovered == 0
    assert {_state(t) for t in mine} == {S.RUNNING}
    assert leases.heartbeat("late", 60.0, ids)  # the late beat renews the lease

    RayTaskExecution.objects.update(last_heartbeat_at=old)
    TaskWorkerLease.objects.filter(worker_id="late").update(expires_at=old)
    report = recover.recover("peer", [], 3.0, "default")
    assert report.expired_leases == ["late"] and sorted(report.lost) == sorted(ids)
    assert {_state(t) for t in mine} == {S.QUEUED}
