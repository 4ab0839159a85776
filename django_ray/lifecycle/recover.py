"""Recovery: lease expiry, stuck detection, orphaned RUNNING -> LOST (-> QUEUED), CANCELLING ->
CANCELLED.

An orphan is what ``RayTaskExecution.objects.orphaned(stuck_seconds)`` says it is (the same set
the ``django_ray_tasks_orphaned`` gauge and ``django_ray_status`` count). Rows are locked with
SKIP LOCKED, so racing workers never recover the same row twice.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from django_ray import retry
from django_ray.lifecycle import leases, rules, statements
from django_ray.models import RayTaskExecution, TaskAttempt
from django_ray.outcomes import LOST_ATTEMPT

logger = logging.getLogger("django_ray.lifecycle")
S = rules.S

LEASE_EXPIRED_REASON = (
    "Worker {owner} stopped heartbeating (lease expired) while attempt {attempt} was {state}; "
    "completion unknown."
)
UNTRACKED_REASON = (
    "Worker {owner} lost track of attempt {attempt} ({state}; its runner no longer reports it); "
    "completion unknown."
)
_COLUMNS = (
    "id", "state", "attempt_number", "max_attempts", "claimed_by_worker", "started_at",
    "last_attempted_at", "ray_job_id",
)  # fmt: skip


@dataclass
class RecoveryReport:
    """What a recovery pass did; ``ray_jobs`` are the recovered rows' Ray Jobs, which may
    still run and are stopped by the recovering worker (:mod:`django_ray.worker.job_stops`)."""

    expired_leases: list[str] = field(default_factory=list)
    lost: list[int] = field(default_factory=list)
    requeued: list[int] = field(default_factory=list)
    cancelled: list[int] = field(default_factory=list)
    ray_jobs: list[str] = field(default_factory=list)

    def merge(self, other: RecoveryReport) -> RecoveryReport:
        """Both reports in one (every field, so nothing a pass found is dropped)."""
        return RecoveryReport(
            **{
                name: getattr(self, name) + getattr(other, name)
                for name in self.__dataclass_fields__
            }
        )

    @property
    def recovered(self) -> int:
        return len(self.lost) + len(self.cancelled)


def _locked(qs: object, using: str, limit: int) -> list[tuple[object, ...]]:
    qs = qs.order_by("id")  # type: ignore[attr-defined]
    if statements.is_postgres(using):
        qs = qs.select_for_update(skip_locked=True, of=("self",))
    return list(qs.values_list(*_COLUMNS)[:limit])


def _recover_rows(rows: Sequence[tuple[object, ...]], using: str, reason: str) -> RecoveryReport:
    """Recover locked orphan rows (inside the transaction that locked them)."""
    report = RecoveryReport()
    now = timezone.now()
    for row_id, state, attempt, max_attempts, owner, first, started_at, job_id in rows:
        if job_id:
            report.ray_jobs.append(str(job_id))
        target = rules.settle(str(state), S.QUEUED)
        if target == S.CANCELLED:
            report.cancelled.append(row_id)  # type: ignore[arg-type]
        else:
            report.lost.append(row_id)  # type: ignore[arg-type]
            if not retry.should_retry(attempt, max_attempts, retryable=True):  # type: ignore[arg-type]
                target = S.LOST
            else:
                report.requeued.append(row_id)  # type: ignore[arg-type]
        lost = target != S.CANCELLED
        message = reason.format(owner=owner, attempt=attempt, state=state) if lost else None
        updates: dict[str, object] = {
            "state": target,
            "error_class_path": LOST_ATTEMPT if lost else None,
            "error_message": message,
            "last_heartbeat_at": now,
        }
        if target == S.QUEUED:
            updates.update(claimed_by_worker=None, finished_at=None, run_after=now)
        else:
            updates["finished_at"] = now
        RayTaskExecution.objects.using(using).filter(pk=row_id).update(**updates)
        TaskAttempt.objects.using(using).get_or_create(
            execution_id=row_id,
            attempt_number=attempt,
            defaults={
                "worker_id": owner,
                "state": S.LOST if lost else S.CANCELLED,
                "started_at": started_at or first,
                "finished_at": now,
                "error_class_path": updates["error_class_path"],
                "error_message": message,
            },
        )
    return report


def detect_stuck_tasks(
    stuck_timeout: float, limit: int = 500, using: str = "default", alive: str | None = None
) -> RecoveryReport:
    """Expire dead leases and recover the orphaned rows of dead workers, across all workers.

    ``alive`` is the worker running this pass, if any: its own lease and rows are left alone
    even when its heartbeat ran late (a loaded machine), since it is demonstrably running; its
    rows that its runner lost are :func:`recover_untracked`'s. Another worker's pass still
    finds it dead once it really stops beating."""
    with transaction.atomic(using=using):
        expired = leases.expire_leases(using, alive)
        orphans = RayTaskExecution.objects.using(using).orphaned(stuck_timeout)
        if alive is not None:
            orphans = orphans.exclude(claimed_by_worker=alive)
        report = _recover_rows(_locked(orphans, using, limit), using, LEASE_EXPIRED_REASON)
    report.expired_leases = expired
    for row_id in report.lost:
        logger.warning("recovered orphaned row id=%s (LOST)", row_id)
    return report


def recover_untracked(
    worker_id: str, tracked_ids: Sequence[int], stuck_timeout: float, using: str = "default"
) -> RecoveryReport:
    """Recover rows ``worker_id`` owns but its runner no longer reports (it lost track of them).

    The lease thread heartbeats only the rows the runner reports, so a dropped row stops
    heartbeating although its owner is alive; after ``stuck_timeout`` it takes the orphans' path.
    """
    cutoff = timezone.now() - timedelta(seconds=stuck_timeout)
    with transaction.atomic(using=using):
        rows = (
            RayTaskExecution.objects.using(using)
            .owned(worker_id)
            .filter(Q(last_heartbeat_at__lt=cutoff) | Q(last_heartbeat_at__isnull=True))
            .exclude(pk__in=list(tracked_ids))
        )
        report = _recover_rows(_locked(rows, using, 500), using, UNTRACKED_REASON)
    for row_id in report.lost:
        logger.warning("recovered untracked row id=%s of live worker %s (LOST)", row_id, worker_id)
    return report


def recover(
    worker_id: str, tracked_ids: Sequence[int], stuck_timeout: float, using: str
) -> RecoveryReport:
    """One recovery pass of a worker: dead workers' orphans, then its own untracked rows."""
    report = detect_stuck_tasks(stuck_timeout, using=using, alive=worker_id)
    return report.merge(recover_untracked(worker_id, tracked_ids, stuck_timeout, using))
