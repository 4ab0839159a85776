"""The exceptions django-ray raises at its public API (enqueue, reading results)."""

from __future__ import annotations

from django.tasks.exceptions import InvalidTask


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
