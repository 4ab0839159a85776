"""Outcomes: RUNNING/CANCELLING -> SUCCEEDED | FAILED | QUEUED (retry) | LOST | CANCELLED.

:func:`plan_outcome` decides each transition from the retry policy (pure). :func:`record_outcomes`
writes a batch in one statement on PostgreSQL. One row's bad data must never cost the others
their outcome: text is cleaned at the boundary (:mod:`.sanitize`), a return value PostgreSQL
cannot store or a result store that refuses the write fails that row alone, and a batch the
database still refuses is split until the row at fault is found; that row ends FAILED with the
reason and every other outcome is recorded.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from datetime import timedelta

from django.db import InterfaceError, OperationalError, transaction
from django.utils import timezone

from django_ray import retry
from django_ray.lifecycle import rules, sanitize, statements
from django_ray.models import RayTaskExecution, TaskAttempt
from django_ray.outcomes import ClaimedTask, Outcome, OutcomeKind

logger = logging.getLogger("django_ray.lifecycle")
S = rules.S

#: Errors that say the database is unreachable, not that a row is bad: the caller keeps the
#: batch and tries again later.
TRANSIENT = (OperationalError, InterfaceError)
#: Class paths of the outcomes django-ray writes when a task's own outcome cannot be stored.
UNSTORABLE_RESULT = "django_ray.UnstorableResult"
RESULT_STORE_FAILED = "django_ray.ResultStoreFailed"
UNRECORDABLE_OUTCOME = "django_ray.UnrecordableOutcome"

StoreResult = Callable[[str], str | None]


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


def failed_instead(plan: PlannedOutcome, error_class_path: str, reason: str) -> PlannedOutcome:
    """``plan`` turned into a final FAILED whose message names why its outcome was not kept."""
    outcome = Outcome(
        plan.task.id,
        plan.task.attempt_number,
        OutcomeKind.FAILED,
        error_class_path=error_class_path,
        error_message=sanitize.clean_text(reason, sanitize.MAX_MESSAGE_CHARS),
        retryable=False,
        duration_seconds=plan.outcome.duration_seconds,
    )
    return PlannedOutcome(plan.task, outcome, S.FAILED, S.FAILED)


def _prepare(plan: PlannedOutcome, store_result: StoreResult | None) -> PlannedOutcome:
    """Clean the text; check and (if oversized) move out the return value. Never raises."""
    plan.outcome = sanitize.clean_outcome(plan.outcome)
    result = plan.outcome.result_json
    if result is None:
        return plan
    attempt = f"attempt {plan.task.attempt_number} of {plan.task.callable_path}"
    problem = sanitize.result_problem(result)
    if problem:
        return failed_instead(plan, UNSTORABLE_RESULT, f"The return value of {attempt} {problem}.")
    if store_result is None:
        return plan
    try:
        plan.result_reference = store_result(result)
    except Exception as exc:  # any storage backend, any failure: this row only
        return failed_instead(
            plan,
            RESULT_STORE_FAILED,
            f"The result store refused the return value of {attempt} "
            f"({type(exc).__name__}: {exc}); the value is not kept. Fix the storage "
            "(RESULT_STORAGE_BACKEND and its settings, e.g. a writable "
            "RESULT_STORAGE_FILESYSTEM_PATH) or raise MAX_RESULT_SIZE_BYTES.",
        )
    return plan


def record_outcomes(
    worker_id: str,
    items: Iterable[tuple[ClaimedTask, Outcome]],
    using: str = "default",
    store_result: StoreResult | None = None,
) -> RecordReport:
    """Record a batch of outcomes for rows ``worker_id`` owns, in one statement on PostgreSQL.

    ``store_result(json_text) -> reference | None`` moves oversized results out of the row.
    Raises only :data:`TRANSIENT` errors (the database is away: keep the batch, try again).
    """
    planned = [_prepare(plan_outcome(task, out), store_result) for task, out in items]
    report = RecordReport(planned=planned)
    if planned:
        report.states = _write_split(worker_id, planned, using)
    report.not_owned = [p.task.id for p in planned if p.task.id not in report.states]
    return report


def _guarded(using: str) -> AbstractContextManager[object]:
    # On PostgreSQL in autocommit the batch is one statement, so a failure leaves nothing to roll
    # back and needs no BEGIN/COMMIT round trips; inside a transaction it gets a savepoint.
    if statements.is_postgres(using) and not transaction.get_connection(using).in_atomic_block:
        return nullcontext()
    return transaction.atomic(using=using)


def _write_split(worker_id: str, planned: list[PlannedOutcome], using: str) -> dict[int, str]:
    try:
        with _guarded(using):
            return _write(worker_id, planned, using)
    except TRANSIENT:
        raise
    except Exception as exc:
        if len(planned) > 1:
            half = len(planned) // 2
            return {
                **_write_split(worker_id, planned[:half], using),
                **_write_split(worker_id, planned[half:], using),
            }
        [plan] = planned
        if plan.outcome.error_class_path == UNRECORDABLE_OUTCOME:
            logger.exception(
                "could not record even the failure of id=%s; recovery will take the row over",
                plan.task.id,
            )
            return {}
        logger.error("the database refused the outcome of id=%s: %s", plan.task.id, exc)
        reason = (
            f"The database refused the outcome of attempt {plan.task.attempt_number} "
            f"({plan.outcome.kind}) of {plan.task.callable_path}: {type(exc).__name__}: {exc}"
        )
        failed = failed_instead(plan, UNRECORDABLE_OUTCOME, reason)
        # In place: the caller's report.planned then shows what was really recorded.
        plan.outcome, plan.state, plan.attempt_state = failed.outcome, failed.state, S.FAILED
        plan.delay, plan.result_reference = 0.0, None
        return _write_split(worker_id, [plan], using)


def _write(worker_id: str, planned: list[PlannedOutcome], using: str) -> dict[int, str]:
    if not statements.is_postgres(using):
        return _write_portable(worker_id, planned, using)
    columns: dict[str, list[object]] = {
        name: []
        for name in ("ids", "attempts", "states", "results", "refs", "err_classes",
                     "err_messages", "err_tracebacks", "delays", "attempt_states", "started")
    }  # fmt: skip
    for plan in planned:
        out = plan.outcome
        for name, value in (
            ("ids", plan.task.id),
            ("attempts", plan.task.attempt_number),
            ("states", str(plan.state)),
            ("results", None if plan.result_reference else out.result_json),
            ("refs", plan.result_reference),
            ("err_classes", out.error_class_path),
            ("err_messages", out.error_message),
            ("err_tracebacks", out.error_traceback),
            ("delays", plan.delay),
            ("attempt_states", str(plan.attempt_state)),
            ("started", plan.task.started_at),
        ):
            columns[name].append(value)
    return dict(statements.fetchall("record_outcomes", {"worker": worker_id, **columns}, using))


def _write_portable(worker_id: str, planned: list[PlannedOutcome], using: str) -> dict[int, str]:
    states: dict[int, str] = {}
    now = timezone.now()
    for plan in planned:
        out = plan.outcome
        row = (
            RayTaskExecution.objects.using(using)
            .owned(worker_id)
            .select_for_update()
            .filter(pk=plan.task.id, attempt_number=plan.task.attempt_number)
            .first()
        )
        if row is None:
            continue
        target = rules.settle(row.state, plan.state)
        kept = out.result_json is not None and not plan.result_reference
        row.state = target
        row.result_data = json.loads(out.result_json) if kept else None  # type: ignore[arg-type]
        row.result_reference = plan.result_reference
        row.error_class_path = out.error_class_path
        row.error_message = out.error_message
        row.error_traceback = out.error_traceback
        row.last_heartbeat_at = now
        if target == S.QUEUED:
            row.finished_at = None
            row.run_after = now + timedelta(seconds=plan.delay)
            row.claimed_by_worker = None
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
