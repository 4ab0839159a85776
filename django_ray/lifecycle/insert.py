"""Insert one new execution row: on PostgreSQL one statement rendered from the model, else the ORM.

``enqueue()`` is the hot path of every application using django-ray: the ORM's ``save()`` spends
most of an enqueue compiling its INSERT (see ``docs/performance.md``), so PostgreSQL takes the
``enqueue`` statement of ``queries.sql`` with the very values the ORM would save
(:func:`.statements.execution_params`). SQLite and other databases keep ``save()``.
"""

from __future__ import annotations

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
