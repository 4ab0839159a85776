"""The two records that cross the worker/runner boundary: a claimed task and its outcome."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


@dataclass(slots=True)
class ClaimedTask:
    """A row the worker claimed (now RUNNING and owned by it), ready to hand to a runner."""

    id: int
    task_id: str
    callable_path: str
    queue_name: str
    priority: int
    takes_context: bool
    args: list[Any]
    kwargs: dict[str, Any]
    attempt_number: int
    max_attempts: int | None
    timeout_seconds: float | None
    backend_alias: str
    created_at: datetime
    run_after: datetime
    started_at: datetime
    worker_ids: list[str] = field(default_factory=list)
    # The database alias holding the row (the backend's OPTIONS["database"]); set by the worker.
    # A Ray Job gets it on its command line, to read its row and record its outcome there.
    database: str = "default"
    # The serialization key the row holds while it runs (None: not serialized).
    lock_key: str | None = None
    # Ray resources and runtime_env of the task (django_ray.ray_options; None: the runner's
    # defaults). Plain data, read from the row at claim time.
    ray_options: dict[str, Any] | None = None

    def payload(self) -> dict[str, Any]:
        """What the executing process needs; plain data so it pickles cheaply for Ray."""
        return {
            "id": self.id,
            "task_id": self.task_id,
            "callable_path": self.callable_path,
            "queue_name": self.queue_name,
            "priority": self.priority,
            "takes_context": self.takes_context,
            "args": self.args,
            "kwargs": self.kwargs,
            "attempt_number": self.attempt_number,
            "backend_alias": self.backend_alias,
            "created_at": self.created_at,
            "run_after": self.run_after,
            "started_at": self.started_at,
            "worker_ids": self.worker_ids,
        }


class OutcomeKind(enum.StrEnum):
    SUCCEEDED = "succeeded"
    # The task body raised (or its result could not be stored).
    FAILED = "failed"
    # Completion is unknown: the executing process or its connection died.
    LOST = "lost"
    # The runner stopped the attempt because cancellation was requested.
    CANCELLED = "cancelled"
    # The attempt was interrupted by the worker itself (shutdown): requeue, no failure counted.
    INTERRUPTED = "interrupted"


@dataclass(slots=True)
class Outcome:
    """How one attempt ended, as reported by a runner."""

    execution_id: int
    attempt_number: int
    kind: OutcomeKind
    result_json: str | None = None
    error_class_path: str | None = None
    error_message: str | None = None
    error_traceback: str | None = None
    # False for failures that would fail again (denylisted exception, bad callable, bad result).
    retryable: bool = True
    duration_seconds: float | None = None
    # CPU time of the body's own thread: with duration_seconds it tells the runner whether a
    # callable waits on I/O (django_ray.runners.ray_core runs such bodies in threads).
    cpu_seconds: float | None = None
    # Set when the executing process already wrote this outcome to the row itself (a Ray Job
    # does): the row's new state. The worker then only logs and counts it.
    recorded_state: str | None = None
    # Set by a runner whose Ray Job records its own outcome: this outcome is only the fallback
    # for a job that ended without recording (killed, stopped, crashed). The worker reads the
    # row back and keeps what the job wrote, if it did.
    ray_job_id: str | None = None


#: The class path of an attempt whose completion is unknown because its worker or runner lost it.
LOST_ATTEMPT = "django_ray.LostAttempt"


def lost(task: ClaimedTask, message: str, error_class_path: str = LOST_ATTEMPT) -> Outcome:
    """The outcome of an attempt whose completion is unknown (retry path, never final by itself).

    Every runner and the recovery build LOST outcomes here, so they all carry a class path an
    operator can search for and a message that says what was lost.
    """
    return Outcome(
        task.id,
        task.attempt_number,
        OutcomeKind.LOST,
        error_class_path=error_class_path,
        error_message=message,
        retryable=True,
    )


def refused(task: ClaimedTask, error_class_path: str, message: str) -> Outcome:
    """A FAILED outcome that a retry would only repeat (no node offers the task's resources,
    its runtime_env cannot be set up): not retried."""
    return Outcome(
        task.id,
        task.attempt_number,
        OutcomeKind.FAILED,
        error_class_path=error_class_path,
        error_message=message,
        retryable=False,
    )
