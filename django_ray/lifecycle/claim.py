"""The claim: QUEUED -> RUNNING for a batch of due rows, and the ClaimedTask view of a row."""

from __future__ import annotations

import json
import logging
import zlib
from collections.abc import Sequence
from contextlib import nullcontext

from django.db import IntegrityError, connections, transaction
from django.db.models import F
from django.utils import timezone

from django_ray.lifecycle import statements
from django_ray.models import LOCK_KEY_HELD, RayTaskExecution, TaskState
from django_ray.outcomes import ClaimedTask

logger = logging.getLogger("django_ray.worker")

#: First half of the advisory lock a claim takes on a lock key (the second is the key's hash),
#: so django-ray's locks do not collide with an application's own one-argument advisory locks.
LOCK_SPACE = zlib.crc32(b"django_ray.lock_key") - 2**31


class ClaimBatch(list[ClaimedTask]):
    """The tasks of one claim; ``full`` when it took all it was allowed, so more may be due."""

    full: bool = False


def claim(
    worker_id: str, queues: Sequence[str] | None, limit: int, using: str = "default"
) -> ClaimBatch:
    """Claim up to ``limit`` due rows in priority order, FIFO among equals.

    With other live workers on these queues (PostgreSQL), a claim takes at most its fair share
    of the work: the larger of due / live workers and (due + running rows) / live workers less
    the rows it already runs (see ``claim_due``), so two workers woken by one burst split it instead of the first
    taking it all. Each claimed task's
    ``started_at`` is the start of this attempt (the row's ``started_at`` stays the first
    attempt's).
    """
    batch = ClaimBatch()
    if limit <= 0:
        return batch
    if statements.is_postgres(using):
        params = {
            "worker": worker_id,
            "all_queues": queues is None,
            "queues": list(queues or []),
            "limit": limit,
            "lock_space": LOCK_SPACE,
        }
        # One statement: in autocommit it is its own transaction (no BEGIN/COMMIT round trips);
        # inside a caller's transaction a savepoint keeps a refused claim from breaking it.
        in_transaction = connections[using].in_atomic_block
        try:
            with transaction.atomic(using=using) if in_transaction else nullcontext():
                rows = statements.fetchall("claim_due", params, using)
        except IntegrityError as exc:
            # Two claims raced for one lock key and the unique index refused the second: nothing
            # of this batch changed; the next pass sees the key held and passes it over.
            logger.info("claim lost a race for a lock key (%s); claiming again", exc)
            return batch
        batch.extend(_from_row(row[:-1]) for row in rows)
        batch.full = bool(rows) and len(rows) == rows[0][-1]
    else:
        batch.extend(_claim_portable(worker_id, queues, limit, using))
        batch.full = len(batch) == limit
    batch.sort(key=lambda t: (-t.priority, t.run_after, t.id))
    return batch


def _json(value: object) -> object:
    # Django's PostgreSQL backend loads jsonb as text (it parses JSON in the field).
    return json.loads(value) if isinstance(value, str | bytes) else value


def _from_row(row: tuple[object, ...]) -> ClaimedTask:
    *fields, lock_key, options = row
    task = ClaimedTask(*fields, lock_key=lock_key, ray_options=_json(options))  # type: ignore[arg-type]
    task.args = _json(task.args)  # type: ignore[assignment]
    task.kwargs = _json(task.kwargs)  # type: ignore[assignment]
    task.worker_ids = _json(task.worker_ids)  # type: ignore[assignment]
    return task


def _claim_portable(
    worker_id: str, queues: Sequence[str] | None, limit: int, using: str
) -> list[ClaimedTask]:
    now = timezone.now()
    rows = RayTaskExecution.objects.using(using)
    with transaction.atomic(using=using):
        due = list(rows.due(list(queues) if queues is not None else None, now)
                   .order_by("-priority", "run_after", "id")[:limit])  # fmt: skip
        held = set(
            rows.filter(
                LOCK_KEY_HELD, lock_key__in={r.lock_key for r in due if r.lock_key}
            ).values_list("lock_key", flat=True)
        )
        claimed: list[ClaimedTask] = []
        for row in due:
            if row.lock_key is not None:
                if row.lock_key in held:
                    continue
                held.add(row.lock_key)
            worker_ids = [*row.worker_ids, worker_id]
            started = row.started_at or now
            if not rows.filter(pk=row.pk, state=TaskState.QUEUED).update(
                state=TaskState.RUNNING,
                claimed_by_worker=worker_id,
                started_at=started,
                last_attempted_at=now,
                last_heartbeat_at=now,
                finished_at=None,
                attempt_number=F("attempt_number") + 1,
                worker_ids=worker_ids,
            ):
                continue
            # Mirror the UPDATE on the loaded row instead of reading it back.
            row.state, row.claimed_by_worker, row.worker_ids = (
                TaskState.RUNNING,
                worker_id,
                worker_ids,
            )
            row.started_at, row.last_attempted_at = started, now
            row.attempt_number += 1
            claimed.append(claimed_task_from_row(row))
    return claimed


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
        started_at=row.last_attempted_at or row.started_at or timezone.now(),
        worker_ids=list(row.worker_ids),
        lock_key=row.lock_key,
        ray_options=row.ray_options,
    )
