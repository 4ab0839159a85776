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

from django_ray.lifecycle import adopt
from django_ray.outcomes import ClaimedTask, Outcome, OutcomeKind
from django_ray.runners.base import Runner

logger = logging.getLogger("django_ray.worker")

# Adopted per recovery pass at most: the pass runs inside the claim/record loop.
ADOPT_LIMIT = 100


def attach(runner: Runner, tasks: list[ClaimedTask], using: str) -> list[ClaimedTask]:
    """Write each task's Ray Job id on its row; return the tasks whose row took it (a row
    recovered by someone else meanwhile is not run)."""
    items = [(t.id, t.attempt_number, runner.job_id(t)) for t in tasks]
    attached = adopt.attach_ray_jobs(items, using)
    return [t for t in tasks if t.id in attached]


def read_back(task: ClaimedTask, fallback: Outcome, using: str) -> Outcome:
    """The outcome of an ended Ray Job: what it recorded itself (``recorded_state`` set), or
    ``fallback`` when the row shows it recorded nothing."""
    row = adopt.read_job_row(task, fallback.ray_job_id or "", using)
    if row.recorded is not None:
        return row.recorded
    if fallback.kind is OutcomeKind.LOST and row.cancelling:
        return Outcome(task.id, task.attempt_number, OutcomeKind.CANCELLED)
    return replace(fallback, ray_job_id=None)


def adopt_orphans(worker_id: str, runner: Runner, using: str) -> int:
    """Adopt Ray Jobs of rows whose owner's lease is gone; return how many were adopted.

    A job Ray still knows (running or finished) is adopted: the row's owner becomes this
    worker, whose runner monitors it (heartbeats) and reports its end. A job Ray does not know,
    or whose status cannot be read, is left alone to age into stuck-task recovery.
    """
    adopted = 0
    in_flight = set(runner.in_flight_ids())
    for orphan in adopt.ray_job_orphans(worker_id, using, ADOPT_LIMIT):
        if orphan.id in in_flight or not runner.job_known(orphan.ray_job_id):
            continue  # unknown to Ray (or unreadable now): ages into stuck-task recovery
        task = adopt.adopt_ray_job(worker_id, orphan, using)
        if task is None:
            continue  # another worker was faster
        task.database = using
        runner.adopt(task, orphan.ray_job_id)
        adopted += 1
    return adopted
