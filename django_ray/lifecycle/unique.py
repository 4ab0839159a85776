"""Unique enqueue: insert a row with a dedupe key, or return the row that already holds it.

A key is held by a QUEUED row, and also by a RUNNING/CANCELLING row enqueued with
``unique_while_running`` (:data:`~django_ray.models.UNIQUE_KEY_HELD`). The partial unique index
of migration 0006 makes that one row per key whatever the number of concurrent enqueuers; this
module only turns the index's refusal into "here is the holder".
"""

from __future__ import annotations

from django.db import IntegrityError, transaction

from django_ray.lifecycle import insert, statements
from django_ray.models import UNIQUE_KEY_HELD, RayTaskExecution

# A holder can leave the held states between the refused insert and the read (claimed,
# cancelled); the insert is then tried again. Each retry means the key changed hands, so a few
# suffice; past them the database is not behaving as the index says.
_ATTEMPTS = 20


def insert_unique(row: RayTaskExecution, using: str) -> tuple[RayTaskExecution, bool]:
    """Insert ``row`` (its ``unique_key`` set) or find the row holding its key.

    Returns ``(row, created)``: the new row and True, or the holder and False.
    """
    held = RayTaskExecution.objects.using(using).filter(UNIQUE_KEY_HELD)
    for _ in range(_ATTEMPTS):
        if statements.is_postgres(using):
            inserted = statements.fetchall(
                "enqueue_unique", statements.execution_params(row, using), using
            )
            if inserted:
                insert.saved(row, inserted[0][0], using)
                return row, True
        else:
            try:
                with transaction.atomic(using=using):
                    row.save(using=using, force_insert=True)
                return row, True
            except IntegrityError:
                pass
        holder = held.filter(unique_key=row.unique_key).first()
        if holder is not None:
            return holder, False
        # The holder left the held states (claimed, cancelled) since the conflict: try again.
    raise RuntimeError(
        f"Could not enqueue or find the holder of dedupe key {row.unique_key!r} after "
        f"{_ATTEMPTS} tries: is migration 0006's index django_ray_unique_key_held in place?"
    )
