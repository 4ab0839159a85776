"""Row transitions on real PostgreSQL: claim order, guarded outcome writes, illegal moves."""

from __future__ import annotations

import datetime

import pytest
from django.utils import timezone

from django_ray.lifecycle import IllegalTransition, claim, leases, operator, record
from django_ray.models import RayTaskExecution, TaskAttempt, TaskState
from django_ray.outcomes import Outcome, OutcomeKind
from tests import tasks

# transaction=True: the claim compares run_after with now(), which inside one long test
# transaction would be the time the test started.
pytestmark = pytest.mark.django_db(transaction=True)

S = TaskState


def _succeed(worker: str = "w1") -> str:
    result = tasks.add.enqueue(1, 2)
    [claimed] = claim.claim(worker, ["default"], 1)
    report = record.record_outcomes(
        worker,
        [(claimed, Outcome(claimed.id, claimed.attempt_number, OutcomeKind.SUCCEEDED, "3"))],
    )
    assert report.states == {claimed.id: S.SUCCEEDED}
    return result.id


def _fail(worker: str = "w1") -> str:
    result = tasks.fail_permanent.enqueue()
    [claimed] = claim.claim(worker, ["default"], 1)
    outcome = Outcome(
        claimed.id,
        claimed.attempt_number,
        OutcomeKind.FAILED,
        error_class_path="tests.tasks.PermanentError",
        error_message="PermanentError: no",
        error_traceback="Traceback...\nPermanentError: no\n",
        retryable=False,
    )
    record.record_outcomes(worker, [(claimed, outcome)])
    assert RayTaskExecution.objects.get(task_id=result.id).state == S.FAILED
    return result.id


def test_claim_takes_priority_then_fifo_and_only_due_rows_of_its_queues() -> None:
    now = timezone.now()
    ids = {}
    for name, prio, queue, delay in [
        ("low", -100, "default", 0),
        ("mid1", 0, "default", 0),
        ("mid2", 0, "default", 0),
        ("high", 100, "default", 0),
        ("mid3", 0, "default", 0),
        ("future", 100, "default", 3600),
        ("elsewhere", 100, "other", 0),
    ]:
        task = tasks.record.using(
            priority=prio, queue_name=queue, run_after=now + datetime.timedelta(seconds=delay)
        )
        ids[task.enqueue(name).id] = name
    claimed = claim.claim("w1", ["default"], 10)
    assert [ids[c.task_id] for c in claimed] == ["high", "mid1", "mid2", "mid3", "low"]
    assert all(c.attempt_number == 1 and c.worker_ids == ["w1"] for c in claimed)
    rows = RayTaskExecution.objects.filter(task_id__in=[c.task_id for c in claimed])
    assert {r.state for r in rows} == {S.RUNNING}
    assert {r.claimed_by_worker for r in rows} == {"w1"}
    assert claim.claim("w2", ["default"], 10) == []  # the future row is not due
    [other] = claim.claim("w2", None, 10)  # all queues
    assert ids[other.task_id] == "elsewhere"


def test_claim_respects_the_limit() -> None:
    for i in range(5):
        tasks.add.enqueue(i, i)
    assert len(claim.claim("w1", ["default"], 2)) == 2
    assert len(claim.claim("w2", ["default"], 10)) == 3
    assert claim.claim("w3", ["default"], 0) == []


def test_a_claim_takes_its_share_of_the_work_when_other_workers_are_live() -> None:
    """The first of two live workers to wake takes half a burst, not the whole (issue 13)."""
    backend = tasks.add.get_backend()
    backend.enqueue_many(tasks.add, [((i, i), {}) for i in range(200)])
    # Alone, a worker takes up to its limit (no share to keep for anyone).
    leases.register_lease("w1", "host", 1, ["default"], "ray_core", 4, 60.0)
    first = claim.claim("w1", ["default"], 150)
    assert len(first) == 150 and first.full
    RayTaskExecution.objects.filter(pk__in=[t.id for t in first]).update(
        state=S.QUEUED, attempt_number=0, worker_ids=[], claimed_by_worker=None
    )
    # Two live workers poll the queue (one on every queue; "elsewhere" polls another queue and
    # "gone" has stopped, so neither counts): a claim takes (due + running) / 2 less its own.
    leases.register_lease("w2", "host", 2, None, "ray_core", 4, 60.0)
    leases.register_lease("elsewhere", "host", 3, ["other"], "ray_core", 4, 60.0)
    leases.register_lease("gone", "host", 4, ["default"], "ray_core", 4, 60.0)
    leases.release_lease("gone")
    a = claim.claim("w1", ["default"], 150)
    assert len(a) == 100 and a.full  # its share is all it was allowed: more may be due
    b = claim.claim("w2", ["default"], 150)
    assert len(b) == 100  # w1's running rows are w1's share: w2 takes the other half
    nothing = claim.claim("w1", ["default"], 150)
    assert nothing == [] and not nothing.full
    # w1 finished its half; w2 stalls on its 100. A new burst of 60: (60 + 100) / 2 = 80
    # allowed, so w1 takes all 60: a stalled peer's running rows do not hold the queue up.
    RayTaskExecution.objects.filter(claimed_by_worker="w1").update(state=S.SUCCEEDED)
    backend.enqueue_many(tasks.add, [((i, i), {}) for i in range(60)])
    assert len(claim.claim("w1", ["default"], 10)) == 10  # the limit binds first
    assert len(claim.claim("w1", ["default"], 150)) == 50
    # A peer that stopped without releasing its lease yet: due / 2 keeps the batches large
    # though w1 runs more than (due + running) / 2.
    backend.enqueue_many(tasks.add, [((i, i), {}) for i in range(40)])
    leases.register_lease("stopped", "host", 5, ["default"], "ray_core", 4, 60.0)
    assert len(claim.claim("w1", ["default"], 150)) == 14  # ceil(40 / 3)


def test_outcome_of_a_row_not_owned_is_refused() -> None:
    tasks.add.enqueue(1, 2)
    [claimed] = claim.claim("owner", ["default"], 1)
    outcome = Outcome(claimed.id, claimed.attempt_number, OutcomeKind.SUCCEEDED, "3")
    report = record.record_outcomes("intruder", [(claimed, outcome)])
    assert report.states == {} and report.not_owned == [claimed.id]
    row = RayTaskExecution.objects.get(pk=claimed.id)
    assert row.state == S.RUNNING and row.result_data is None
    assert not TaskAttempt.objects.exists()


def test_outcome_of_a_stale_attempt_is_refused() -> None:
    tasks.add.enqueue(1, 2)
    [claimed] = claim.claim("owner", ["default"], 1)
    stale = Outcome(claimed.id, claimed.attempt_number + 1, OutcomeKind.SUCCEEDED, "3")
    claimed.attempt_number += 1  # pretend a later attempt: the row is still at attempt 1
    report = record.record_outcomes("owner", [(claimed, stale)])
    assert report.not_owned == [claimed.id]
    assert RayTaskExecution.objects.get(pk=claimed.id).state == S.RUNNING


def test_outcome_twice_is_recorded_once() -> None:
    tasks.add.enqueue(1, 2)
    [claimed] = claim.claim("owner", ["default"], 1)
    outcome = Outcome(claimed.id, claimed.attempt_number, OutcomeKind.SUCCEEDED, "3")
    assert record.record_outcomes("owner", [(claimed, outcome)]).states
    again = record.record_outcomes("owner", [(claimed, outcome)])
    assert again.not_owned == [claimed.id]
    assert TaskAttempt.objects.filter(execution_id=claimed.id).count() == 1


def test_illegal_manual_transition_is_refused_and_explained() -> None:
    result = tasks.add.enqueue(1, 2)
    with pytest.raises(IllegalTransition) as info:
        operator.transition(result.id, S.SUCCEEDED)
    assert str(info.value) == (
        f"Task {result.id}: cannot move from QUEUED to SUCCEEDED; "
        "from QUEUED it may only move to CANCELLED, RUNNING."
    )
    assert (info.value.current, info.value.target) == (S.QUEUED, S.SUCCEEDED)
    assert RayTaskExecution.objects.get(task_id=result.id).state == S.QUEUED


@pytest.mark.parametrize("target", [S.QUEUED, S.FAILED, S.RUNNING, S.CANCELLED, S.LOST])
def test_succeeded_is_terminal(target: str) -> None:
    task_id = _succeed()
    with pytest.raises(IllegalTransition, match="may only move to nothing \\(terminal\\)"):
        operator.transition(task_id, target)
    assert RayTaskExecution.objects.get(task_id=task_id).state == S.SUCCEEDED


def test_operator_retry_of_a_succeeded_task_is_refused_atomically() -> None:
    ok, failed = _succeed(), _fail()
    with pytest.raises(
        IllegalTransition,
        match="is SUCCEEDED: an operator may requeue only FAILED, LOST, CANCELLED",
    ):
        operator.retry_tasks([failed, ok])
    # Nothing moved, not even the FAILED row that could have been retried.
    assert RayTaskExecution.objects.get(task_id=failed).state == S.FAILED
    assert operator.retry_tasks([failed]) == [failed]
    row = RayTaskExecution.objects.get(task_id=failed)
    assert row.state == S.QUEUED and row.claimed_by_worker is None and row.finished_at is None


def test_cancel_of_finished_tasks_is_refused() -> None:
    for task_id in (_succeed(), _fail()):
        with pytest.raises(
            IllegalTransition, match="only QUEUED or RUNNING tasks can be cancelled"
        ):
            operator.request_cancel(task_id)


def test_cancel_moves_queued_and_running_rows() -> None:
    queued = tasks.add.enqueue(1, 1)
    assert operator.request_cancel(queued.id) == S.CANCELLED
    running = tasks.add.enqueue(2, 2)
    claim.claim("w1", ["default"], 1)
    assert operator.request_cancel(running.id) == S.CANCELLING
    assert operator.request_cancel(running.id) == S.CANCELLING  # idempotent
    with pytest.raises(IllegalTransition, match="cannot move from CANCELLED to RUNNING"):
        operator.transition(queued.id, S.RUNNING)


def test_queued_cannot_jump_to_failed_or_lost() -> None:
    result = tasks.add.enqueue(1, 1)
    for target in (S.FAILED, S.LOST, S.CANCELLING):
        with pytest.raises(IllegalTransition):
            operator.transition(result.id, target)


def test_retry_keeps_history_and_continues_attempt_numbers() -> None:
    task_id = _fail()
    operator.retry_tasks([task_id])
    [claimed] = claim.claim("w2", ["default"], 1)
    assert claimed.attempt_number == 2 and claimed.worker_ids == ["w1", "w2"]
    assert list(TaskAttempt.objects.values_list("attempt_number", "state")) == [(1, S.FAILED)]
