"""Enqueue on commit: write a task's row only when the caller's transaction commits.

``RayTask.enqueue_on_commit`` checks the task and its arguments at once, picks the row's id up
front, and hands :func:`defer` a callback that writes the row. Django's
``transaction.on_commit`` runs it when the outermost transaction of the backend's database
commits, drops it on rollback (also the rollback of a savepoint it was registered in), and runs
it at once in autocommit. The pending callbacks live in the connection's own on-commit list, so
:func:`is_pending` can tell "not committed yet" from "never enqueued" without state of its own.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.db import connections, transaction


class _EnqueueAtCommit:
    """One ``enqueue_on_commit`` call waiting for its commit; ``task_id`` names it."""

    __slots__ = ("result", "task_id", "write")

    def __init__(self, task_id: str, write: Callable[[], Any]) -> None:
        self.task_id = task_id
        self.write = write
        self.result: Any = None

    def __call__(self) -> None:
        self.result = self.write()

    def __repr__(self) -> str:  # names the task in Django's on_commit error logs
        return f"enqueue_on_commit({self.task_id})"


def defer(task_id: str, write: Callable[[], Any], using: str) -> str:
    """Run ``write`` (which returns the ``TaskResult``) when ``using``'s transaction commits.

    Returns ``task_id``; in autocommit ``write`` has run already and the id is that of the row
    it returned (the holder of a held ``unique_key``, as ``enqueue()`` would return).
    ``robust=False``: a write that fails at commit raises to the caller, never passes silently.
    """
    callback = _EnqueueAtCommit(task_id, write)
    transaction.on_commit(callback, using=using)
    return callback.result.id if callback.result is not None else task_id


def is_pending(task_id: str, using: str) -> bool:
    """Whether ``task_id`` waits for the commit of this thread's transaction on ``using``."""
    return any(
        isinstance(func, _EnqueueAtCommit) and func.task_id == task_id
        for _savepoints, func, _robust in connections[using].run_on_commit
    )
