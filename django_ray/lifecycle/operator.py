"""Operator actions on single rows: cancel, requeue (retry), manual moves; each under the row lock.

The admin actions, ``django_ray_requeue``, :func:`django_ray.cancel_task` and the runbook's shell
snippet all call these, so the rule "an operator requeues only FAILED, LOST or CANCELLED rows"
is checked in one place, after ``SELECT ... FOR UPDATE``: two racing requeues of the same row
yield one QUEUED attempt, and a row a worker claimed meanwhile is refused.
"""

from __future__ import annotations

from collections.abc import Iterable

from django.db import transaction
from django.utils import timezone

from django_ray import retry
from django_ray.lifecycle import rules, statements
from django_ray.lifecycle.rules import IllegalTransition, check_allowed
from django_ray.models import RayTaskExecution

S = rules.S


def _locked(task_id: str, using: str) -> RayTaskExecution:
    return RayTaskExecution.objects.using(using).select_for_update().get(task_id=task_id)


def request_cancel(task_id: str, using: str = "default") -> str:
    """Cancel a task: QUEUED -> CANCELLED now; RUNNING -> CANCELLING (its owner stops it).

    Returns the new state. A finished row raises :class:`IllegalTransition`; a row already
    CANCELLING is left as is.
    """
    with transaction.atomic(using=using):
        row = _locked(task_id, using)
        if row.state == S.CANCELLING:
            return row.state
        if row.state not in rules.CANCELLABLE:
            raise IllegalTransition(
                task_id,
                row.state,
                S.CANCELLED,
                f"Task {task_id} is {row.state}: only QUEUED or RUNNING tasks can be "
                "cancelled (this one is not running, so there is nothing to stop).",
            )
        if row.state == S.QUEUED:
            row.state, row.finished_at = S.CANCELLED, timezone.now()
            row.save(update_fields=["state", "finished_at"])
            return row.state
        check_allowed(task_id, row.state, S.CANCELLING)
        row.state = S.CANCELLING
        row.save(update_fields=["state"])
        statements.notify_cancel(row.pk, using)
        return row.state


def cancelling_rows(worker_id: str, using: str = "default") -> list[int]:
    """Ids of CANCELLING rows owned by ``worker_id`` (for the worker's cancellation step)."""
    return list(
        RayTaskExecution.objects.using(using)
        .owned(worker_id)
        .filter(state=S.CANCELLING)
        .values_list("id", flat=True)
    )


def retry_tasks(
    task_ids: Iterable[str], reset_attempts: bool = False, using: str = "default"
) -> list[str]:
    """Operator retry: FAILED/LOST/CANCELLED -> QUEUED, keeping the attempt history.

    All or nothing: a row in another state (RUNNING, QUEUED, ...), checked under the row lock,
    raises :class:`IllegalTransition` and nothing is requeued. The next attempt number continues
    from the history; ``reset_attempts`` grants a fresh ``MAX_TASK_ATTEMPTS`` budget.
    """
    moved: list[str] = []
    with transaction.atomic(using=using):
        rows = (
            RayTaskExecution.objects.using(using)
            .select_for_update()
            .filter(task_id__in=list(task_ids))
            .order_by("id")
        )
        for row in rows:
            if row.state not in rules.RETRYABLE_BY_OPERATOR:
                allowed = ", ".join(rules.RETRYABLE_BY_OPERATOR)
                raise IllegalTransition(
                    row.task_id,
                    row.state,
                    S.QUEUED,
                    f"Task {row.task_id} is {row.state}: an operator may requeue only {allowed} "
                    "tasks (a RUNNING or CANCELLING attempt may still be executing, and a "
                    "QUEUED one is already waiting); nothing was requeued.",
                )
            check_allowed(row.task_id, row.state, S.QUEUED)
            row.state = S.QUEUED
            row.run_after = timezone.now()
            row.finished_at = None
            row.claimed_by_worker = None
            row.ray_job_id = None
            if reset_attempts:
                row.max_attempts = row.attempt_number + retry.max_attempts(None)
            row.save(
                update_fields=["state", "run_after", "finished_at", "claimed_by_worker",
                               "ray_job_id", "max_attempts"]
            )  # fmt: skip
            moved.append(row.task_id)
    return moved


def transition(task_id: str, target: str, using: str = "default", **fields: object) -> str:
    """Move one row to ``target`` if the lifecycle allows it (row-locked); return the old state."""
    with transaction.atomic(using=using):
        row = _locked(task_id, using)
        old = row.state
        check_allowed(task_id, old, target)
        row.state = target
        for name, value in fields.items():
            setattr(row, name, value)
        row.save(update_fields=["state", *fields])
        return old
