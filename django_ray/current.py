"""Which task body runs in this context: set by :func:`django_ray.execution.run_task`.

A context variable, so it follows the body into threads and event loops that copy the context
(``async_to_sync``, ``asyncio``) and never leaks into the next task of the same process. No
database access here: the runners import :mod:`django_ray.execution`, which imports this.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class CurrentTask:
    """The running attempt: its ``TaskResult.id``, attempt number and backend alias."""

    task_id: str
    attempt_number: int
    backend_alias: str


_current: ContextVar[CurrentTask | None] = ContextVar("django_ray_current_task", default=None)


def current_task() -> CurrentTask | None:
    """The task whose body runs in this context, or None outside a task body."""
    return _current.get()


@contextmanager
def running(task: CurrentTask) -> Iterator[None]:
    """Mark ``task`` as the running one for the duration of its body."""
    token = _current.set(task)
    try:
        yield
    finally:
        _current.reset(token)
