"""The entrypoint of a Ray Job: ``python -m django_ray.jobs <execution_id> <attempt> <database>``.

The Ray Job runner submits one job per task attempt with only two integers and the database
alias of the backend (``OPTIONS["database"]``, default ``default``) on the command line: the
task's arguments never pass through a shell string. The job bootstraps Django (settings and
``PYTHONPATH`` come from the job's runtime environment), reads its row on that database, runs
the task body and records the outcome there itself, through
:func:`django_ray.lifecycle.adopt.record_job_outcome`. So a job's result is kept even when the
worker that submitted it died meanwhile; the worker monitoring the job reads it back.

Exit codes of the job process (visible as the Ray Job's status and message):

* ``0``: the outcome (success, failure, timeout, cancellation) was recorded, or the row had
  already moved on (recovered or a later attempt) and the job did nothing;
* ``2``: bad command line;
* ``4``: the outcome could not be recorded (database unreachable for ``RECORD_RETRY_SECONDS``);
  the monitoring worker then sends the attempt through the retry path as LOST.
"""

from __future__ import annotations

import logging
import sys
import time

from django_ray.outcomes import ClaimedTask, Outcome, OutcomeKind

logger = logging.getLogger("django_ray.jobs")

EXIT_RECORDED = 0
EXIT_USAGE = 2
EXIT_NOT_RECORDED = 4
RECORD_RETRY_SECONDS = 60.0
SUBMISSION_PREFIX = "django-ray"


def submission_id(task_id: str, attempt: int) -> str:
    """The Ray Job submission id of one attempt of a task: the same on every submit retry."""
    return f"{SUBMISSION_PREFIX}-{task_id}-a{attempt}"


def entrypoint(python: str, execution_id: int, attempt: int, database: str = "default") -> str:
    """The job's command line: the interpreter, two integers and the database alias."""
    import shlex

    return (
        f"{shlex.quote(python)} -m django_ray.jobs {int(execution_id)} {int(attempt)} "
        f"{shlex.quote(database)}"
    )


def run_body(task: ClaimedTask) -> Outcome:
    """Run the task body here, stopped by SIGALRM after its ``timeout_seconds``."""
    from django_ray.timeouts import run_with_alarm

    return run_with_alarm(task)


def _record(
    execution_id: int, attempt: int, job_id: str, outcome: Outcome, using: str
) -> str | None:
    """Record with retries: the database may be restarting. Raises after the retry budget."""
    from django.db import DatabaseError, InterfaceError, connections

    from django_ray.backoff import capped_backoff
    from django_ray.lifecycle.adopt import record_job_outcome
    from django_ray.results import store_if_oversized

    deadline = time.monotonic() + RECORD_RETRY_SECONDS
    failures = 0
    while True:
        try:
            return record_job_outcome(
                execution_id, attempt, job_id, outcome, using, store_if_oversized
            )
        except (DatabaseError, InterfaceError) as exc:
            if time.monotonic() >= deadline:
                raise
            print(f"django-ray job: database unavailable ({exc}); retrying", file=sys.stderr)
            connections.close_all()
            failures += 1
            time.sleep(capped_backoff(failures, 0.2, 5.0))


def main(argv: list[str] | None = None) -> int:
    """Run one attempt of one task; see the module docstring for exit codes."""
    args = sys.argv[1:] if argv is None else argv
    try:
        execution_id, attempt = int(args[0]), int(args[1])
        # Jobs submitted before the database alias was passed name no alias: "default".
        using = args[2] if len(args) == 3 else "default"
        if len(args) not in (2, 3):
            raise ValueError
    except (IndexError, ValueError):
        print(
            "usage: python -m django_ray.jobs <execution_id> <attempt> [<database alias>] (the "
            "Ray Job runner submits this, it is not meant to be run by hand)",
            file=sys.stderr,
        )
        return EXIT_USAGE
    from django_ray.execution import ensure_django

    ensure_django(None)
    from django_ray.lifecycle.claim import claimed_task_from_row
    from django_ray.models import OWNED_STATES, RayTaskExecution, TaskState

    row = RayTaskExecution.objects.using(using).filter(pk=execution_id).first()
    job_id = submission_id(row.task_id, attempt) if row is not None else ""
    if (
        row is None
        or row.attempt_number != attempt
        or row.ray_job_id != job_id
        or row.state not in OWNED_STATES
    ):
        state = "missing" if row is None else f"{row.state} at attempt {row.attempt_number}"
        print(
            f"django-ray job: execution {execution_id} attempt {attempt} is no longer this "
            f"job's to run (row {state}); nothing done.",
            file=sys.stderr,
        )
        return EXIT_RECORDED
    task = claimed_task_from_row(row)
    task.database = using
    if row.state == TaskState.CANCELLING:
        outcome = Outcome(execution_id, attempt, OutcomeKind.CANCELLED)
    else:
        outcome = run_body(task)
    try:
        state = _record(execution_id, attempt, job_id, outcome, using)
    except Exception as exc:
        print(
            f"django-ray job: could not record the outcome of {task.task_id} attempt "
            f"{attempt}: {type(exc).__name__}: {exc}",
            file=sys.stderr,
        )
        return EXIT_NOT_RECORDED
    if state is None:
        print(
            f"django-ray job: {task.task_id} attempt {attempt} finished ({outcome.kind}) but "
            "the row had moved on (recovered meanwhile); outcome discarded.",
            file=sys.stderr,
        )
    else:
        print(f"django-ray job: {task.task_id} attempt {attempt} {outcome.kind} -> {state}")
    return EXIT_RECORDED


if __name__ == "__main__":
    sys.exit(main())
