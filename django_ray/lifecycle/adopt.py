"""Ray Jobs on rows: attach job ids, read back outcomes jobs recorded, adopt orphaned jobs.

A Ray Job records its own outcome (:func:`record_job_outcome`, called by ``django_ray.jobs``),
so a job outlives the worker that submitted it; a live worker adopts the orphaned job instead
of re-running the task. Every function takes the database alias explicitly: the caller is the
worker (or the job) and knows the backend's ``OPTIONS["database"]``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

from django.db import transaction
from django.utils import timezone

from django_ray.lifecycle import rules
from django_ray.lifecycle.claim import claimed_task_from_row
from django_ray.lifecycle.record import StoreResult, record_outcomes
from django_ray.models import RayTaskExecution, TaskAttempt, TaskWorkerLease
from django_ray.outcomes import ClaimedTask, Outcome, OutcomeKind

logger = logging.getLogger("django_ray.lifecycle")
S = rules.S
_KIND = {
    S.SUCCEEDED: OutcomeKind.SUCCEEDED,
    S.CANCELLED: OutcomeKind.CANCELLED,
    S.LOST: OutcomeKind.LOST,
}


def attach_ray_jobs(items: Sequence[tuple[int, int, str]], using: str) -> set[int]:
    """Store each ``(execution_id, attempt, ray_job_id)`` on its row before the job is submitted.

    Only rows still owned at that attempt get it; returns the ids that did.
    """
    attached: set[int] = set()
    owned = RayTaskExecution.objects.using(using).owned()
    with transaction.atomic(using=using):
        for row_id, attempt, job_id in items:
            if owned.filter(pk=row_id, attempt_number=attempt).update(ray_job_id=job_id):
                attached.add(row_id)
    return attached


@dataclass(frozen=True)
class JobRow:
    """The row of an ended Ray Job: ``recorded`` is the outcome the job wrote itself (with the
    row's new state), or None if the row still waits for this attempt's outcome."""

    recorded: Outcome | None
    cancelling: bool = False


def read_job_row(task: ClaimedTask, job_id: str, using: str) -> JobRow:
    """What the row of ``task``'s Ray Job ``job_id`` says now that the job ended."""
    row = (
        RayTaskExecution.objects.using(using)
        .filter(pk=task.id)
        .values("state", "attempt_number", "ray_job_id")
        .first()
    )
    current = row is not None and row["attempt_number"] == task.attempt_number
    if current and row["ray_job_id"] == job_id and row["state"] in rules.OWNED_STATES:  # type: ignore[index]
        return JobRow(None, cancelling=row["state"] == S.CANCELLING)  # type: ignore[index]
    attempt = (
        TaskAttempt.objects.using(using)
        .filter(execution_id=task.id, attempt_number=task.attempt_number)
        .values("state", "error_class_path", "error_message")
        .first()
    )
    attempt_state = attempt["state"] if attempt else (row["state"] if row else "")
    outcome = Outcome(
        task.id,
        task.attempt_number,
        _KIND.get(attempt_state, OutcomeKind.FAILED),
        error_class_path=attempt["error_class_path"] if attempt else None,
        error_message=attempt["error_message"] if attempt else None,
        recorded_state=str(row["state"] if current else S.QUEUED),  # type: ignore[index]
    )
    return JobRow(outcome)


def record_job_outcome(
    execution_id: int,
    attempt: int,
    job_id: str,
    outcome: Outcome,
    using: str,
    store_result: StoreResult | None = None,
) -> str | None:
    """Record the outcome of a Ray Job's attempt, written by the job process itself.

    The guard is the row's attempt and ``ray_job_id``, not the owning worker: the outcome counts
    whoever monitors the job now. Returns the new state, or None if the row moved on.
    """
    with transaction.atomic(using=using):
        row = (
            RayTaskExecution.objects.using(using)
            .owned()
            .select_for_update()
            .filter(pk=execution_id, attempt_number=attempt, ray_job_id=job_id)
            .first()
        )
        if row is None or not row.claimed_by_worker:
            return None
        task = claimed_task_from_row(row)
        report = record_outcomes(row.claimed_by_worker, [(task, outcome)], using, store_result)
        return report.states.get(execution_id)


@dataclass
class JobOrphan:
    """A Ray Job persisted on an owned row whose owner's lease is no longer live."""

    id: int
    attempt_number: int
    owner: str | None
    ray_job_id: str
    state: str


def ray_job_orphans(worker_id: str, using: str, limit: int = 100) -> list[JobOrphan]:
    """Owned rows with a ``ray_job_id`` whose owner (not ``worker_id``) has no live lease."""
    live = TaskWorkerLease.objects.using(using).live()
    rows = (
        RayTaskExecution.objects.using(using)
        .owned()
        .filter(ray_job_id__isnull=False)
        .exclude(claimed_by_worker=worker_id)
        .exclude(claimed_by_worker__in=live.values("worker_id"))
        .order_by("id")
        .values_list("id", "attempt_number", "claimed_by_worker", "ray_job_id", "state")[:limit]
    )
    return [JobOrphan(*row) for row in rows]


def adopt_ray_job(worker_id: str, orphan: JobOrphan, using: str) -> ClaimedTask | None:
    """Move an orphaned row's ownership to ``worker_id`` (its job goes on running).

    One guarded statement: it matches only while the row is still at the same attempt, job and
    (dead) owner, so when several workers race exactly one adopts. Returns the adopted task.
    """
    now = timezone.now()
    live = TaskWorkerLease.objects.using(using).live(now)
    with transaction.atomic(using=using):
        adopted = (
            RayTaskExecution.objects.using(using)
            .owned()
            .filter(pk=orphan.id, attempt_number=orphan.attempt_number)
            .filter(ray_job_id=orphan.ray_job_id, claimed_by_worker=orphan.owner)
            .exclude(claimed_by_worker__in=live.values("worker_id"))
            .update(claimed_by_worker=worker_id, last_heartbeat_at=now)
        )
        if not adopted:
            return None
        row = RayTaskExecution.objects.using(using).get(pk=orphan.id)
    logger.warning(
        "adopted Ray Job %s of task_id=%s (attempt %s) from worker %s",
        orphan.ray_job_id,
        row.task_id,
        orphan.attempt_number,
        orphan.owner,
        extra={"worker_id": worker_id, "task_id": row.task_id},
    )
    return claimed_task_from_row(row)
