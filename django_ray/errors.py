"""The exceptions django-ray raises at its public API (enqueue, reading results, effects)."""

from __future__ import annotations

from django.tasks.exceptions import InvalidTask, TaskResultDoesNotExist


class InvalidTaskArguments(InvalidTask, TypeError):
    """Arguments that cannot be stored: not JSON, too deep, NUL, lone surrogates.

    Both an ``InvalidTask`` (django-ray's own contract) and a ``TypeError`` (what Django's
    documentation tells callers to catch for arguments that are not JSON serializable).
    """


class ArgumentsTooLarge(InvalidTask, ValueError):
    """The arguments' JSON exceeds ``DJANGO_RAY['MAX_ARGS_SIZE_BYTES']``."""


class TaskNotRunnable(InvalidTask):
    """The dotted path does not name a task a worker may run (unknown, not a task, or outside
    ``DJANGO_RAY['TASK_MODULES']``)."""


class ResultNotKept(ValueError):
    """The task succeeded but its return value was not stored (over ``MAX_RESULT_SIZE_BYTES``
    with ``RESULT_STORAGE_BACKEND = "digest"``); a ``ValueError`` like Django's other "no
    return value" cases, never a silent ``None``."""


class TaskNotEnqueuedYet(TaskResultDoesNotExist):
    """``get_result`` of an id from ``enqueue_on_commit`` whose transaction has not committed:
    the row is written at commit. A ``TaskResultDoesNotExist``, so callers that handle a missing
    result keep working."""


class InvalidEffectKey(ValueError):
    """An ``effect_once`` key that is not a non-empty string of at most ``KEY_MAX_LENGTH``."""


class OutsideTask(RuntimeError):
    """``effect_once``/``idempotency_key`` called where no django-ray task body is running."""
