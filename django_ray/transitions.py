"""Every state change of a :class:`~django_ray.models.RayTaskExecution`, in one module.

Batch transitions (claim, outcome recording, heartbeats, orphan recovery) are single SQL
statements from :mod:`django_ray.sql` whose ``WHERE`` clauses are the guards: a row changes only
if it is still in the expected state, owned by the expected worker, at the expected attempt.
Single-row transitions (cancel, retry, manual moves) lock the row with ``SELECT ... FOR UPDATE``
and consult :data:`ALLOWED`; anything else raises :class:`IllegalTransition`.

On databases without ``SKIP LOCKED`` (SQLite, for development) the same transitions run through
the ORM inside a transaction, which SQLite serialises.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta

from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from django_ray import retry, sql
from django_ray.models import RayTaskExecution, TaskAttempt, TaskState, TaskWorkerLease
from django_ray.outcomes import ClaimedTask, Outcome, OutcomeKind

logger = logging.getLogger("django_ray.transitions")

S = TaskState
ALLOWED: dict[str, frozenset[str]] = {
    S.QUEUED: frozenset({S.RUNNING, S.CANCELLED}),
    S.RUNNING: frozenset({S.SUCCEEDED, S.FAILED, S.QUEUED, S.LOST, S.CANCELLING}),
    S.CANCELLING: frozenset({S.CANCELLED, S.SUCCEEDED, S.FAILED}),
    S.LOST: frozenset({S.QUEUED, S.FAILED}),
    S.FAILED: frozenset({S.QUEUED}),
    S.CANCELLED: frozenset({S.QUEUED}),
    S.SUCCEEDED: frozenset(),
}
RETRYABLE_BY_OPERATOR = (S.FAILED, S.LOST, S.CANCELLED)


class IllegalTransition(Exception):
    """A state change the lifecycle does not allow (e.g. SUCCEEDED -> QUEUED)."""

    def __init__(self, task_id: str, current: str, target: str) -> None:
        allowed = ", ".join(sorted(ALLOWED.get(current, ()))) or "nothing (terminal)"
        super().__init__(
            f"Task {task_id}: cannot move from {current} to {target}; "
            f"from {current} it may only move to {allowed}."
        )
        self.task_id, self.current, self.target = task_id, current, target


def check_allowed(task_id: str, current: str, target: str) -> None:
    if target not in ALLOWED.get(current, frozenset()):
        raise IllegalTransition(task_id, current, target)


# ---------------------------------------------------------------------------------------------
# Claim: QUEUED -> RUNNING


def claim(
    worker_id: str, queues: Sequence[str] | None, limit: int, using: str = "default"
) -> list[ClaimedTask]:
    """Claim up to ``limit`` due rows in priority order, FIFO among equals."""
    if limit <= 0:
        return []
    if sql.is_postgres(using):
        rows = sql.claim(worker_id, list(queues) if queues is not None else None, limit, using)
        claimed = [_from_claim_row(row) for row in rows]
    else:
        claimed = _claim_portable(worker_id, queues, limit, using)
    claimed.sort(key=lambda t: (-t.priority, t.run_after, t.id))
    return claimed


def _json(value: object) -> object:
    # Django's PostgreSQL backend loads jsonb as text (it parses JSON in the field).
    return json.loads(value) if isinstance(value, str | bytes) else value


def _from_claim_row(row: tuple[object, ...]) -> ClaimedTask:
    task = ClaimedTask(*row)  # type: ignore[arg-type]
    task.args = _json(task.args)  # type: ignore[assignment]
    task.kwargs = _json(task.kwargs)  # type: ignore[assignment]
    task.worker_ids = _json(task.worker_ids)  # type: ignore[assignment]
    return task


def _claim_portable(
    worker_id: str, queues: Sequence[str] | None, limit: int, using: str
) -> list[ClaimedTask]:
    now = timezone.now()
    with transaction.atomic(using=using):
        qs = RayTaskExecution.objects.using(using).filter(state=S.QUEUED, run_after__lte=now)
        if queues is not None:
            qs = qs.filter(queue_name__in=list(queues))
        rows = list(qs.order_by("-priority", "run_after", "id")[:limit])
        claimed: list[ClaimedTask] = []
        for row in rows:
            updated = (
                RayTaskExecution.objects.using(using)
                .filter(pk=row.pk, state=S.QUEUED)
                .update(
                    state=S.RUNNING,
                    claimed_by_worker=worker_id,
                    started_at=now,
                    last_heartbeat_at=now,
                    finished_at=None,
                    attempt_number=F("attempt_number") + 1,
                    worker_ids=[*row.worker_ids, worker_id],
                )
            )
            if not updated:
                continue
            # Mirror the UPDATE on the loaded row instead of reading it back.
            row.state, row.claimed_by_worker, row.started_at = S.RUNNING, worker_id, now
            row.attempt_number += 1
            row.worker_ids = [*row.worker_ids, worker_id]
            claimed.append(claimed_task_from_row(row))
    return claimed


# ---------------------------------------------------------------------------------------------
# Outcomes: RUNNING/CANCELLING -> SUCCEEDED | FAILED | QUEUED (retry) | LOST | CANCELLED


@dataclass
class PlannedOutcome:
    """An outcome with the transition decided: target state, attempt state, retry delay."""

    task: ClaimedTask
    outcome: Outcome
    state: str
    attempt_state: str
    delay: float = 0.0
    result_reference: str | None = None


@dataclass
class RecordReport:
    """What :func:`record_outcomes` wrote: new state by execution id, and what it refused."""

    states: dict[int, str] = field(default_factory=dict)
    not_owned: list[int] = field(default_factory=list)
    planned: list[PlannedOutcome] = field(default_factory=list)


def plan_outcome(task: ClaimedTask, outcome: Outcome) -> PlannedOutcome:
    """Decide the transition for one outcome from the retry policy (pure, no database)."""
    kind = outcome.kind
    if kind is OutcomeKind.SUCCEEDED:
        return PlannedOutcome(task, outcome, S.SUCCEEDED, S.SUCCEEDED)
    if kind is OutcomeKind.CANCELLED:
        return PlannedOutcome(task, outcome, S.CANCELLED, S.CANCELLED)
    if kind is OutcomeKind.INTERRUPTED:
        # The worker stopped it (shutdown): not the task's fault, so it never counts as final.
        return PlannedOutcome(task, outcome, S.QUEUED, S.LOST, delay=0.0)
    attempt_state = S.LOST if kind is OutcomeKind.LOST else S.FAILED
    if retry.should_retry(task.attempt_number, task.max_attempts, outcome.retryable):
        delay = 0.0 if kind is OutcomeKind.LOST else retry.backoff_seconds(task.attempt_number)
        return PlannedOutcome(task, outcome, S.QUEUED, attempt_state, delay=delay)
    return PlannedOutcome(task, outcome, attempt_state, attempt_state)


def record_outcomes(
    worker_id: str,
    items: Iterable[tuple[ClaimedTask, Outcome]],
    using: str = "default",
    store_result: object | None = None,
) -> RecordReport:
    """Record a batch of outcomes for rows ``worker_id`` owns, in one statement on PostgreSQL.

    ``store_result(json_text) -> reference | None`` moves oversized results out of the row.
    """
    report = RecordReport()
    planned = [plan_outcome(task, outcome) for task, outcome in items]
    if not planned:
        return report
    if store_result is not None:
        for plan in planned:
            if plan.outcome.result_json is not None:
                reference = store_result(plan.outcome.result_json)  # type: ignore[operator]
                if reference is not None:
                    plan.result_reference = reference
    report.planned = planned
    if sql.is_postgres(using):
        columns: dict[str, list[object]] = {
            "ids": [],
            "attempts": [],
            "states": [],
            "results": [],
            "refs": [],
            "err_classes": [],
            "err_messages": [],
            "err_tracebacks": [],
            "delays": [],
            "attempt_states": [],
            "started": [],
        }
        for plan in planned:
            out = plan.outcome
            columns["ids"].append(plan.task.id)
            columns["attempts"].append(plan.task.attempt_number)
            columns["states"].append(str(plan.state))
            columns["results"].append(None if plan.result_reference else out.result_json)
            columns["refs"].append(plan.result_reference)
            columns["err_classes"].append(out.error_class_path)
            columns["err_messages"].append(out.error_message)
            columns["err_tracebacks"].append(out.error_traceback)
            columns["delays"].append(plan.delay)
            columns["attempt_states"].append(str(plan.attempt_state))
            columns["started"].append(plan.task.started_at)
        report.states = sql.record_outcomes(worker_id, columns, using)
    else:
        report.states = _record_portable(worker_id, planned, using)
    report.not_owned = [p.task.id for p in planned if p.task.id not in report.states]
    return report


def _record_portable(worker_id: str, planned: list[PlannedOutcome], using: str) -> dict[int, str]:
    states: dict[int, str] = {}
    now = timezone.now()
    with transaction.atomic(using=using):
        for plan in planned:
            out = plan.outcome
            row = (
                RayTaskExecution.objects.using(using)
                .select_for_update()
                .filter(
                    pk=plan.task.id,
                    attempt_number=plan.task.attempt_number,
                    claimed_by_worker=worker_id,
                    state__in=[S.RUNNING, S.CANCELLING],
                )
                .first()
            )
            if row is None:
                continue
            target = plan.state
            requeue = target == S.QUEUED and row.state != S.CANCELLING
            if row.state == S.CANCELLING and target in (S.QUEUED, S.LOST):
                target = S.CANCELLED
            row.state = target
            row.result_data = (
                json.loads(out.result_json)
                if out.result_json is not None and not plan.result_reference
                else None
            )
            row.result_reference = plan.result_reference
            row.error_class_path = out.error_class_path
            row.error_message = out.error_message
            row.error_traceback = out.error_traceback
            row.last_heartbeat_at = now
            if requeue:
                row.finished_at = None
                row.run_after = now + timedelta(seconds=plan.delay)
                row.claimed_by_worker = None
                row.started_at = None
            else:
                row.finished_at = now
            row.save()
            TaskAttempt.objects.using(using).get_or_create(
                execution_id=row.pk,
                attempt_number=plan.task.attempt_number,
                defaults={
                    "worker_id": worker_id,
                    "state": plan.attempt_state,
                    "started_at": plan.task.started_at,
                    "finished_at": now,
                    "error_class_path": out.error_class_path,
                    "error_message": out.error_message,
                    "error_traceback": out.error_traceback,
                },
            )
            states[row.pk] = target
    return states


# ---------------------------------------------------------------------------------------------
# Leases and heartbeats


def register_lease(
    worker_id: str,
    hostname: str,
    pid: int,
    queues: Sequence[str] | None,
    runner: str,
    concurrency: int,
    lease_seconds: float,
    using: str = "default",
) -> TaskWorkerLease:
    now = timezone.now()
    return TaskWorkerLease.objects.using(using).create(
        worker_id=worker_id,
        hostname=hostname,
        pid=pid,
        queue_name=",".join(queues) if queues is not None else "*",
        runner=runner,
        concurrency=concurrency,
        is_active=True,
        started_at=now,
        last_heartbeat_at=now,
        expires_at=now + timedelta(seconds=lease_seconds),
    )


def heartbeat(
    worker_id: str, lease_seconds: float, monitored_ids: Sequence[int], using: str = "default"
) -> bool:
    """Renew the lease and the monitored rows' ``last_heartbeat_at``. False if the lease is gone."""
    if sql.is_postgres(using):
        ok, _ = sql.heartbeat(worker_id, lease_seconds, list(monitored_ids), using)
        return ok
    now = timezone.now()
    with transaction.atomic(using=using):
        ok = bool(
            TaskWorkerLease.objects.using(using)
            .filter(worker_id=worker_id, is_active=True)
            .update(last_heartbeat_at=now, expires_at=now + timedelta(seconds=lease_seconds))
        )
        if ok and monitored_ids:
            RayTaskExecution.objects.using(using).filter(
                pk__in=list(monitored_ids),
                claimed_by_worker=worker_id,
                state__in=[S.RUNNING, S.CANCELLING],
            ).update(last_heartbeat_at=now)
    return ok


def release_lease(worker_id: str, using: str = "default") -> None:
    TaskWorkerLease.objects.using(using).filter(worker_id=worker_id).update(
        is_active=False, stopped_at=timezone.now()
    )


# ---------------------------------------------------------------------------------------------
# Recovery: orphaned RUNNING -> LOST (-> QUEUED); orphaned CANCELLING -> CANCELLED


@dataclass
class RecoveryReport:
    expired_leases: list[str] = field(default_factory=list)
    lost: list[int] = field(default_factory=list)
    requeued: list[int] = field(default_factory=list)
    cancelled: list[int] = field(default_factory=list)
    # Ray Job submission ids of the recovered rows: their jobs may still run and are stopped
    # by the recovering worker (see django_ray.worker.job_stops).
    ray_jobs: list[str] = field(default_factory=list)


LEASE_EXPIRED_REASON = (
    "Worker {owner} stopped heartbeating (lease expired) while attempt {attempt} was {state}; "
    "completion unknown."
)
UNTRACKED_REASON = (
    "Worker {owner} lost track of attempt {attempt} ({state}; its runner no longer reports it); "
    "completion unknown."
)


def _recover_rows(
    orphans: Sequence[tuple[object, ...]],
    report: RecoveryReport,
    using: str,
    reason: str | None = None,
) -> None:
    """Recover locked orphan rows: RUNNING -> LOST (-> QUEUED by the retry policy); CANCELLING
    -> CANCELLED. Called inside the transaction that locked them."""
    now = timezone.now()
    for row_id, state, attempt, max_attempts, owner, started_at, job_id in orphans:
        if job_id:
            report.ray_jobs.append(str(job_id))
        if state == S.CANCELLING:
            target = S.CANCELLED
            report.cancelled.append(row_id)
        elif retry.should_retry(attempt, max_attempts, retryable=True):
            target = S.QUEUED
            report.lost.append(row_id)
            report.requeued.append(row_id)
        else:
            target = S.LOST
            report.lost.append(row_id)
        message = (reason or LEASE_EXPIRED_REASON).format(owner=owner, attempt=attempt, state=state)
        updates: dict[str, object] = {
            "state": target,
            "error_class_path": None if target == S.CANCELLED else "django_ray.LostAttempt",
            "error_message": None if target == S.CANCELLED else message,
            "last_heartbeat_at": now,
        }
        if target == S.QUEUED:
            updates.update(claimed_by_worker=None, started_at=None, finished_at=None)
            updates["run_after"] = now
        else:
            updates["finished_at"] = now
        RayTaskExecution.objects.using(using).filter(pk=row_id).update(**updates)
        TaskAttempt.objects.using(using).get_or_create(
            execution_id=row_id,
            attempt_number=attempt,
            defaults={
                "worker_id": owner,
                "state": S.CANCELLED if target == S.CANCELLED else S.LOST,
                "started_at": started_at,
                "finished_at": now,
                "error_class_path": None if target == S.CANCELLED else "django_ray.LostAttempt",
                "error_message": None if target == S.CANCELLED else message,
            },
        )


def detect_stuck_tasks(
    stuck_timeout: float, limit: int = 500, using: str = "default"
) -> RecoveryReport:
    """Recover rows of dead workers, across all workers; safe to run from many at once.

    A RUNNING/CANCELLING row whose owner has no live lease and whose heartbeat is older than
    ``stuck_timeout`` is orphaned. RUNNING orphans become LOST (attempt history records it) and
    go back to QUEUED when the retry policy allows; CANCELLING orphans become CANCELLED.
    Rows are locked with SKIP LOCKED, so racing workers never recover the same row twice.
    """
    report = RecoveryReport()
    with transaction.atomic(using=using):
        if sql.is_postgres(using):
            report.expired_leases = sql.expire_leases(using)
            from django.db import connections

            with connections[using].cursor() as cursor:
                cursor.execute(sql.ORPHANS_SQL, {"stuck": stuck_timeout, "limit": limit})
                orphans = cursor.fetchall()
        else:
            now = timezone.now()
            expired = TaskWorkerLease.objects.using(using).filter(
                is_active=True, expires_at__lt=now
            )
            report.expired_leases = list(expired.values_list("worker_id", flat=True))
            expired.update(is_active=False, stopped_at=now)
            live = TaskWorkerLease.objects.using(using).filter(is_active=True, expires_at__gte=now)
            cutoff = now - timedelta(seconds=stuck_timeout)
            # As in sql.ORPHANS_SQL: a row with a Ray Job gets one more stuck timeout after its
            # owner's lease ended (expired or released), so that a live worker can adopt it.
            recently_ended = (
                TaskWorkerLease.objects.using(using)
                .filter(expires_at__gt=cutoff)
                .filter(Q(stopped_at__isnull=True) | Q(stopped_at__gt=cutoff))
            )
            orphans = list(
                RayTaskExecution.objects.using(using)
                .filter(state__in=[S.RUNNING, S.CANCELLING])
                .filter(
                    Q(last_heartbeat_at__lt=cutoff)
                    | Q(last_heartbeat_at__isnull=True, started_at__lt=cutoff)
                )
                .exclude(claimed_by_worker__in=live.values("worker_id"))
                .exclude(
                    ray_job_id__isnull=False,
                    claimed_by_worker__in=recently_ended.values("worker_id"),
                )
                .order_by("id")
                .values_list(
                    "id",
                    "state",
                    "attempt_number",
                    "max_attempts",
                    "claimed_by_worker",
                    "started_at",
                    "ray_job_id",
                )[:limit]
            )
        _recover_rows(orphans, report, using)
    for row_id in report.lost:
        logger.warning("recovered orphaned row id=%s (LOST)", row_id)
    return report


def recover_untracked(
    worker_id: str, tracked_ids: Sequence[int], stuck_timeout: float, using: str = "default"
) -> RecoveryReport:
    """Recover rows ``worker_id`` owns but no longer runs (its runner lost track of them).

    The lease thread heartbeats only the rows the runner reports, so a row the runner dropped
    (e.g. an error while collecting a result as Ray went down) stops heartbeating even though
    its owner is alive; after ``stuck_timeout`` it goes through the same LOST/retry path as an
    orphan of a dead worker. Rows are locked with SKIP LOCKED, like :func:`detect_stuck_tasks`.
    """
    report = RecoveryReport()
    cutoff = timezone.now() - timedelta(seconds=stuck_timeout)
    with transaction.atomic(using=using):
        qs = (
            RayTaskExecution.objects.using(using)
            .filter(claimed_by_worker=worker_id, state__in=[S.RUNNING, S.CANCELLING])
            .filter(Q(last_heartbeat_at__lt=cutoff) | Q(last_heartbeat_at__isnull=True))
            .exclude(pk__in=list(tracked_ids))
            .order_by("id")
        )
        if sql.is_postgres(using):
            qs = qs.select_for_update(skip_locked=True)
        rows = list(
            qs.values_list(
                "id",
                "state",
                "attempt_number",
                "max_attempts",
                "claimed_by_worker",
                "started_at",
                "ray_job_id",
            )[:500]
        )
        _recover_rows(rows, report, using, reason=UNTRACKED_REASON)
    for row_id in report.lost:
        logger.warning("recovered untracked row id=%s of live worker %s (LOST)", row_id, worker_id)
    return report


# ---------------------------------------------------------------------------------------------
# Single-row transitions: cancel, retry, manual moves


def _locked(task_id: str, using: str) -> RayTaskExecution:
    return RayTaskExecution.objects.using(using).select_for_update().get(task_id=task_id)


def request_cancel(task_id: str, using: str = "default") -> str:
    """Cancel a task: QUEUED -> CANCELLED now; RUNNING -> CANCELLING (the owner stops it).

    Returns the new state. Terminal rows raise :class:`IllegalTransition`; a row already
    CANCELLING is left as is.
    """
    with transaction.atomic(using=using):
        row = _locked(task_id, using)
        if row.state == S.CANCELLING:
            return row.state
        if row.state == S.QUEUED:
            check_allowed(task_id, row.state, S.CANCELLED)
            row.state = S.CANCELLED
            row.finished_at = timezone.now()
            row.save(update_fields=["state", "finished_at"])
            return row.state
        check_allowed(task_id, row.state, S.CANCELLING)
        row.state = S.CANCELLING
        row.save(update_fields=["state"])
        if sql.is_postgres(using):
            sql.notify_cancel(row.pk, using)
        return row.state


def cancelling_rows(worker_id: str, using: str = "default") -> list[int]:
    """Ids of CANCELLING rows owned by ``worker_id`` (for the worker's cancellation step)."""
    return list(
        RayTaskExecution.objects.using(using)
        .filter(state=S.CANCELLING, claimed_by_worker=worker_id)
        .values_list("id", flat=True)
    )


def retry_tasks(
    task_ids: Iterable[str], reset_attempts: bool = False, using: str = "default"
) -> list[str]:
    """Operator retry: FAILED/LOST/CANCELLED -> QUEUED, keeping the attempt history.

    The next attempt number continues from the history unless ``reset_attempts`` (which grants
    the task a fresh ``MAX_TASK_ATTEMPTS`` budget by raising its ``max_attempts``).
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
            check_allowed(row.task_id, row.state, S.QUEUED)
            row.state = S.QUEUED
            row.run_after = timezone.now()
            row.started_at = None
            row.finished_at = None
            row.claimed_by_worker = None
            row.ray_job_id = None
            if reset_attempts:
                row.max_attempts = row.attempt_number + retry.max_attempts(None)
            row.save(
                update_fields=[
                    "state",
                    "run_after",
                    "started_at",
                    "finished_at",
                    "claimed_by_worker",
                    "ray_job_id",
                    "max_attempts",
                ]
            )
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


# ---------------------------------------------------------------------------------------------
# Ray Jobs: job ids on rows, outcomes written by the job itself, adoption of orphaned jobs


def claimed_task_from_row(row: RayTaskExecution) -> ClaimedTask:
    """The :class:`ClaimedTask` view of an owned row (for a Ray Job or an adopter)."""
    return ClaimedTask(
        id=row.pk,
        task_id=row.task_id,
        callable_path=row.callable_path,
        queue_name=row.queue_name,
        priority=row.priority,
        takes_context=row.takes_context,
        args=row.args,
        kwargs=row.kwargs,
        attempt_number=row.attempt_number,
        max_attempts=row.max_attempts,
        timeout_seconds=row.timeout_seconds,
        backend_alias=row.backend_alias,
        created_at=row.created_at,
        run_after=row.run_after,
        started_at=row.started_at or timezone.now(),
        worker_ids=list(row.worker_ids),
    )


def attach_ray_jobs(items: Sequence[tuple[int, int, str]], using: str = "default") -> set[int]:
    """Store each ``(execution_id, attempt, ray_job_id)`` on its row before the job is submitted.

    Only rows still owned at that attempt get it; returns the ids that did.
    """
    attached: set[int] = set()
    with transaction.atomic(using=using):
        for row_id, attempt, job_id in items:
            if (
                RayTaskExecution.objects.using(using)
                .filter(pk=row_id, attempt_number=attempt, state__in=[S.RUNNING, S.CANCELLING])
                .update(ray_job_id=job_id)
            ):
                attached.add(row_id)
    return attached


def record_job_outcome(
    execution_id: int,
    attempt: int,
    job_id: str,
    outcome: Outcome,
    using: str = "default",
    store_result: object | None = None,
) -> str | None:
    """Record the outcome of a Ray Job's attempt, written by the job process itself.

    The guard is the row's attempt and ``ray_job_id``, not the owning worker: the job's outcome
    counts whoever monitors it now (its submitter, an adopter, or nobody after a crash). Returns
    the row's new state, or None when the row moved on (recovered, or a later attempt).
    """
    with transaction.atomic(using=using):
        row = (
            RayTaskExecution.objects.using(using)
            .select_for_update()
            .filter(
                pk=execution_id,
                attempt_number=attempt,
                ray_job_id=job_id,
                state__in=[S.RUNNING, S.CANCELLING],
            )
            .first()
        )
        if row is None or not row.claimed_by_worker:
            return None
        task = claimed_task_from_row(row)
        report = record_outcomes(
            row.claimed_by_worker, [(task, outcome)], using, store_result=store_result
        )
        return report.states.get(execution_id)


@dataclass
class JobOrphan:
    """A Ray Job persisted on an owned row whose owner's lease is no longer live."""

    id: int
    attempt_number: int
    owner: str | None
    ray_job_id: str
    state: str


def ray_job_orphans(worker_id: str, limit: int = 100, using: str = "default") -> list[JobOrphan]:
    """Owned rows with a ``ray_job_id`` whose owner (not ``worker_id``) has no live lease."""
    now = timezone.now()
    live = TaskWorkerLease.objects.using(using).filter(is_active=True, expires_at__gte=now)
    rows = (
        RayTaskExecution.objects.using(using)
        .filter(state__in=[S.RUNNING, S.CANCELLING], ray_job_id__isnull=False)
        .exclude(claimed_by_worker=worker_id)
        .exclude(claimed_by_worker__in=live.values("worker_id"))
        .order_by("id")
        .values_list("id", "attempt_number", "claimed_by_worker", "ray_job_id", "state")[:limit]
    )
    return [JobOrphan(*row) for row in rows]


def adopt_ray_job(worker_id: str, orphan: JobOrphan, using: str = "default") -> ClaimedTask | None:
    """Move an orphaned row's ownership to ``worker_id`` (its job goes on running).

    One guarded statement: it matches only while the row is still at the same attempt, job and
    (dead) owner, so when several workers race exactly one adopts. Returns the adopted task.
    """
    now = timezone.now()
    live = TaskWorkerLease.objects.using(using).filter(is_active=True, expires_at__gte=now)
    with transaction.atomic(using=using):
        adopted = (
            RayTaskExecution.objects.using(using)
            .filter(
                pk=orphan.id,
                attempt_number=orphan.attempt_number,
                ray_job_id=orphan.ray_job_id,
                claimed_by_worker=orphan.owner,
                state__in=[S.RUNNING, S.CANCELLING],
            )
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
