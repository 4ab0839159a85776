"""Operator actions of the admin (retry, cancel), for a selection or one row, with history.

The writes are :func:`django_ray.lifecycle.operator.retry_tasks` and
:func:`~django_ray.lifecycle.operator.request_cancel`, which lock the rows and refuse illegal
moves. Every row an action moved gets an admin history entry (``LogEntry``) naming the task id
and the move, so "who requeued this at 3 a.m." has an answer.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from django.contrib import admin, messages
from django.contrib.admin.models import CHANGE, LogEntry
from django.contrib.contenttypes.models import ContentType
from django.http import HttpRequest

from django_ray.lifecycle import operator, rules
from django_ray.models import RayTaskExecution

#: Most rows one admin action may touch; larger batches belong to ``django_ray_requeue``.
ADMIN_ACTION_MAX_ROWS = 500


@dataclass
class Result:
    """What an action did: a message for the operator and the rows it moved."""

    text: str
    level: int
    moved: dict[str, tuple[str, str]] = field(default_factory=dict)  # task_id -> (from, to)


def too_many(count: int, verb: str) -> Result | None:
    """A refusal when ``count`` rows exceed :data:`ADMIN_ACTION_MAX_ROWS`."""
    if count <= ADMIN_ACTION_MAX_ROWS:
        return None
    return Result(
        f"{count} rows selected; {verb} acts on at most {ADMIN_ACTION_MAX_ROWS} at once. "
        f"Narrow the filters, or use: manage.py django_ray_requeue --limit N --execute.",
        messages.ERROR,
    )


def retry(rows: list[tuple[str, str]]) -> Result:
    """Requeue the FAILED / LOST / CANCELLED rows of ``rows`` (task id, state); skip the rest."""
    eligible = [task_id for task_id, state in rows if state in rules.RETRYABLE_BY_OPERATOR]
    before = dict(rows)
    skipped = len(rows) - len(eligible)
    moved: list[str] = []
    if eligible:
        try:
            moved = operator.retry_tasks(eligible)
        except operator.IllegalTransition as exc:
            return Result(
                f"Nothing retried: {exc} (the row changed state meanwhile; reload and retry).",
                messages.ERROR,
            )
    return Result(
        f"Requeued {len(moved)} task(s)."
        + (f" Skipped {skipped} not in FAILED, LOST or CANCELLED." if skipped else ""),
        messages.SUCCESS if moved else messages.WARNING,
        {task_id: (before[task_id], str(rules.S.QUEUED)) for task_id in moved},
    )


def cancel(rows: list[tuple[str, str]]) -> Result:
    """Cancel the QUEUED / RUNNING rows of ``rows`` (task id, state); report the rest."""
    counts: dict[str, int] = {}
    refused: list[str] = []
    moved: dict[str, tuple[str, str]] = {}
    for task_id, state in rows:
        if state not in rules.CANCELLABLE:
            refused.append(f"{task_id} ({state})")
            continue
        try:
            new_state = operator.request_cancel(task_id)
        except operator.IllegalTransition:
            refused.append(f"{task_id} (changed state)")
            continue
        counts[new_state] = counts.get(new_state, 0) + 1
        if new_state != state:
            moved[task_id] = (state, new_state)
    parts = [f"{n} now {state}" for state, n in sorted(counts.items())]
    text = "Cancel requested: " + (", ".join(parts) if parts else "no task cancelled") + "."
    if refused:
        shown = ", ".join(refused[:10]) + (" ..." if len(refused) > 10 else "")
        text += f" Not cancellable ({len(refused)}): {shown}."
    return Result(text, messages.SUCCESS if parts else messages.WARNING, moved)


def record(request: HttpRequest, verb: str, result: Result) -> None:
    """One admin history entry per moved row: ``Retry: task <id> FAILED -> QUEUED``."""
    if not result.moved:
        return
    pks = dict(
        RayTaskExecution.objects.filter(task_id__in=list(result.moved)).values_list("task_id", "pk")
    )
    content_type = ContentType.objects.get_for_model(RayTaskExecution)
    LogEntry.objects.bulk_create(
        LogEntry(
            user_id=request.user.pk,
            content_type_id=content_type.pk,
            object_id=str(pks[task_id]),
            object_repr=f"task {task_id}"[:200],
            action_flag=CHANGE,
            change_message=f"{verb}: task {task_id} {old} -> {new} (django-ray admin)",
        )
        for task_id, (old, new) in result.moved.items()
        if task_id in pks
    )


def report(model_admin: admin.ModelAdmin, request: HttpRequest, verb: str, result: Result) -> None:
    """Record ``result`` in the admin history and show its message."""
    record(request, verb, result)
    model_admin.message_user(request, result.text, level=result.level)
