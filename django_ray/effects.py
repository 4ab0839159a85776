"""Exactly-once side effects inside a task body: the public helpers of ``docs/effects.md``.

django-ray runs a task at least once (retries, recovery of lost attempts, operator requeues).
:func:`effect_once` makes one database side effect of a task happen once in total: it records
"effect ``key`` of this task is done" (a :class:`~django_ray.models.TaskEffect` row) in the same
transaction as the effect's own writes, so both commit or neither does, and a later attempt of
the same task finds the record and skips the effect::

    from django_ray.effects import effect_once

    @task
    def close_order(order_id: int) -> None:
        with effect_once("ledger-entry") as first_time:
            if first_time:
                LedgerEntry.objects.create(order_id=order_id, amount=-10)
        ...  # anything after may fail: a retry will not write the entry again

For external APIs (payments, email, webhooks), which cannot join the transaction, pass
:func:`idempotency_key` to the provider; ``docs/effects.md`` has the patterns.

The record is written by the task body itself (the one exception to "the worker owns every
write"): it has to be, to share the transaction of the effect.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from django.db import IntegrityError, transaction

from django_ray.current import CurrentTask, current_task
from django_ray.errors import InvalidEffectKey, OutsideTask


def _check_key(key: object) -> str:
    from django_ray.models import KEY_MAX_LENGTH

    if not isinstance(key, str) or not key.strip():
        raise InvalidEffectKey(
            f"An effect key must be a non-empty string, not {key!r}: name the effect, e.g. "
            "effect_once('charge') or effect_once(f'email-{user_id}')."
        )
    if len(key) > KEY_MAX_LENGTH:
        raise InvalidEffectKey(
            f"The effect key is {len(key)} characters long, more than {KEY_MAX_LENGTH}: "
            "shorten it, or hash the long part (hashlib.sha256(text.encode()).hexdigest())."
        )
    return key


def _running(what: str) -> CurrentTask:
    task = current_task()
    if task is None:
        raise OutsideTask(
            f"{what} works only inside the body of a django-ray task run by a worker (it keys "
            "the effect by the running task's id), and no task is running here. Call it from "
            "the task function; to test the body, run it through a worker or MemoryRunner."
        )
    return task


def _database(task: CurrentTask, using: str | None) -> str:
    if using is not None:
        return using
    from django.tasks import task_backends

    return str(getattr(task_backends[task.backend_alias], "database", "default"))


@contextmanager
def effect_once(key: str, *, using: str | None = None) -> Iterator[bool]:
    """Apply an effect of the running task once in total, whatever its number of attempts.

    Opens a transaction (a savepoint inside an outer one) on ``using`` (default: the task
    backend's database) and yields True when this attempt is the first to reach ``key``: the
    body then applies the effect, and its writes commit together with the record. It yields
    False when an earlier attempt committed the effect (or a concurrent one is committing it):
    the body must skip it. An exception in the body rolls back both the writes and the record,
    so the next attempt applies the effect again.

    Raises :class:`~django_ray.errors.InvalidEffectKey` for an empty or over-long key and
    :class:`~django_ray.errors.OutsideTask` outside a task body.
    """
    _check_key(key)
    task = _running("effect_once()")
    database = _database(task, using)
    with transaction.atomic(using=database):
        yield _record(task, key, database)


def _record(task: CurrentTask, key: str, database: str) -> bool:
    """Insert the effect row; False when the (task, key) pair is already taken."""
    from django_ray.models import TaskEffect

    try:
        # A savepoint of its own: a refused insert must not spoil the caller's transaction.
        # Against a concurrent attempt the unique index waits for the other transaction: its
        # commit makes this one refused, its rollback lets this one in.
        with transaction.atomic(using=database):
            TaskEffect.objects.using(database).create(
                execution_id=task.task_id, key=key, attempt_number=task.attempt_number
            )
    except IntegrityError:
        return False
    return True


def idempotency_key(key: str) -> str:
    """A key that names effect ``key`` of the running task, the same in every attempt.

    Give it to an external API that deduplicates requests (a payment provider's idempotency
    key, a webhook's event id, an email's Message-ID) so a repeated call is not a second effect.
    """
    _check_key(key)
    return f"django-ray:{_running('idempotency_key()').task_id}:{key}"
