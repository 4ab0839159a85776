"""Insert one new execution row: on PostgreSQL one statement rendered from the model, else the ORM.

``enqueue()`` is the hot path of every application using django-ray: the ORM's ``save()`` spends
most of an enqueue compiling its INSERT (see ``docs/performance.md``), so PostgreSQL takes the
``enqueue`` statement of ``queries.sql`` with the very values the ORM would save
(:func:`.statements.execution_params`). SQLite and other databases keep ``save()``.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

from django.db import transaction

from django_ray.lifecycle import statements
from django_ray.models import RayTaskExecution


def insert(row: RayTaskExecution, using: str) -> None:
    """Insert the new ``row`` (no dedupe key) on ``using`` and set its primary key."""
    if not statements.is_postgres(using):
        row.save(using=using, force_insert=True)
        return
    # As save() does: a failed statement inside atomic() marks the transaction for rollback.
    with transaction.mark_for_rollback_on_error(using):
        [(pk,)] = statements.fetchall("enqueue", statements.execution_params(row, using), using)
    saved(row, pk, using)


def saved(row: RayTaskExecution, pk: int, using: str) -> None:
    """Mark ``row`` as inserted with primary key ``pk``, as ``save()`` would have."""
    row.pk = pk
    row._state.adding, row._state.db = False, using


def insert_many(
    template: RayTaskExecution,
    calls: Sequence[tuple[str, object, object, str, str]],
    using: str,
    batch_size: int,
) -> None:
    """Insert one row per call, each ``template`` but for its id, args and kwargs, atomically.

    ``calls`` holds ``(task_id, args, kwargs, args_json, kwargs_json)``: the checked values and
    their JSON text (PostgreSQL binds the text, so nothing is serialized twice).
    """
    with transaction.atomic(using=using):
        if not statements.is_postgres(using):
            RayTaskExecution.objects.using(using).bulk_create(
                [_copy(template, task_id, a, k) for task_id, a, k, _, _ in calls],
                batch_size=batch_size,
            )
            return
        params = statements.execution_params(template, using)
        for start in range(0, len(calls), batch_size):
            batch = calls[start : start + batch_size]
            params["task_ids"] = [call[0] for call in batch]
            params["args_texts"] = [call[3] for call in batch]
            params["kwargs_texts"] = [call[4] for call in batch]
            statements.fetchall("enqueue_many", params, using)


def _copy(
    template: RayTaskExecution, task_id: str, args: object, kwargs: object
) -> RayTaskExecution:
    row = copy.copy(template)
    row.task_id, row.args, row.kwargs = task_id, args, kwargs
    return row
