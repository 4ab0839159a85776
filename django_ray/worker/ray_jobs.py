"""The worker's database side of Ray Jobs: job ids on rows, outcomes read back, adoption.

A runner with the ``ray_jobs`` capability runs each attempt as a Ray Job that records its own
outcome; the runner itself never touches the database. The worker does, here, always on the
backend's database alias:

* :func:`attach`: write each attempt's Ray Job id on its row before the job is submitted, so a
  job can never run without its row pointing at it;
* :func:`read_back`: when a job ended, keep what it recorded, or record the runner's fallback
  when it recorded nothing (killed, stopped, crashed);
* :func:`adopt_orphans`: take over the Ray Jobs of rows whose worker's lease is gone.
"""

from __future__ import annotations

import logging
from dataclasses import replace

from django_ray import transitions
from django_ray.models import RayTaskExecution, TaskAttempt, TaskState
from django_ray.outcomes import ClaimedTask, Outcome, OutcomeKind
from django_ray.runners.base import Runner

logger = logging.getLogger("django_ray.worker")

# Adopted per recovery pass at most: the pass runs inside the claim/record loop.
ADOPT_LIMIT = 100


def attach(runner: Runner, tasks: list[ClaimedTask], using: str) -> list[ClaimedTask]:
    """Write each task's Ray Job id on its row; return the tasks whose row took it (a row
    recovered by someone else meanwhile is not run)."""
    items = [(t.id, t.attempt_number, runner.job_id(t)) for t in tasks]
    attached = transitions.attach_ray_jobs(items, using)
    return [t for t in tasks if t.id in attached]


def read_back(task: ClaimedTask, fallback: Outcome, using: str) -> Outcome:
    """The outcome of an ended Ray Job: what it recorded itself (``recorded_state`` set), or
    ``fallback`` when the row shows it recorded nothing."""
    row = (
        RayTaskExecution.objects.using(using)
        .filter(pk=task.id)
        .values("state", "attempt_number", "ray_job_id")
        .first()
    )
    unrecorded = (
        row is not None
        and row["attempt_number"] == task.attempt_number
        and row["ray_job_id"] == fallback.ray_job_id
        and row["state"] in (TaskState.RUNNING, TaskState.CANCELLING)
    )
    if unrecorded:
        if fallback.kind is OutcomeKind.LOST and row["state"] == TaskState.CANCELLING:  # type: ignore[index]
            return Outcome(task.id, task.attempt_number, OutcomeKind.CANCELLED)
        return replace(fallback, ray_job_id=None)
    attempt = (
        TaskAttempt.objects.using(using)
        .filter(execution_id=task.id, attempt_number=task.attempt_number)
        .values("state", "error_class_path", "error_message")
        .first()
    )
    attempt_state = attempt["state"] if attempt else (row["state"] if row else "")
    kind = {
        TaskState.SUCCEEDED: OutcomeKind.SUCCEEDED,
        TaskState.CANCELLED: OutcomeKind.CANCELLED,
        TaskState.LOST: OutcomeKind.LOST,
    }.get(attempt_state, OutcomeKind.FAILED)
    if row is None or row["attempt_number"] != task.attempt_number:
        new_state = TaskState.QUEUED
    else:
        new_state = row["state"]
    return Outcome(
        task.id,
        task.attempt_number,
        kind,
        error_class_path=attempt["error_class_path"] if attempt else None,
        error_message=attempt["error_message"] if attempt else None,
        recorded_state=str(new_state),
    )


def adopt_orphans(worker_id: str, runner: Runner, using: str) -> int:
    """Adopt Ray Jobs of rows whose owner's lease is gone; return how many were adopted.

    A job Ray still knows (running or finished) is adopted: the row's owner becomes this
    worker, whose runner monitors it (heartbeats) and reports its end. A job Ray does not know,
    or whose status cannot be read, is left alone to age into stuck-task recovery.
    """
    adopted = 0
    in_flight = set(runner.in_flight_ids())
    for orphan in transitions.ray_job_orphans(worker_id, ADOPT_LIMIT, using):
        if orphan.id in in_flight or not runner.job_known(orphan.ray_job_id):
            continue  # unknown to Ray (or unreadable now): ages into stuck-task recovery
        task = transitions.adopt_ray_job(worker_id, orphan, using)
        if task is None:
            continue  # another worker was faster
        task.database = using
        runner.adopt(task, orphan.ray_job_id)
        adopted += 1
    return adopted
