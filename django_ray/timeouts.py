"""Task timeouts: the alarm that stops a body in its own process, and the outcome it records.

The Ray Core runner stops a timed-out call from outside (``ray.cancel``); ``--sync`` and each
Ray Job run the body in a process they own, so there a ``SIGALRM`` raises into the body.
"""

from __future__ import annotations

import signal
from types import FrameType

from django_ray import execution
from django_ray.outcomes import ClaimedTask, Outcome, OutcomeKind


class _TimedOut(execution.TaskInterrupted):
    """Raised inside the task body by SIGALRM when ``timeout_seconds`` passes."""


def timed_out(task: ClaimedTask) -> Outcome:
    """The outcome of an attempt stopped because it ran past ``timeout_seconds``.

    Its class path is ``django_ray.TaskTimedOut`` (a ``TimeoutError``), and it honours
    ``RETRY_EXCEPTION_DENYLIST`` like a raised exception: deny-list that path (or
    ``builtins.TimeoutError``) to make timeouts final.
    """
    from django_ray import TaskTimedOut

    seconds = task.timeout_seconds or 0
    shown = f"{seconds:g}"
    message = f"Task {task.callable_path} timed out after {shown} seconds"
    return Outcome(
        task.id,
        task.attempt_number,
        OutcomeKind.FAILED,
        error_class_path=execution.class_path(TaskTimedOut),
        error_message=message,
        error_traceback=f"django_ray.TaskTimedOut: {message}\n",
        retryable=not execution.is_denylisted(TaskTimedOut(message)),
    )


def run_with_alarm(task: ClaimedTask) -> Outcome:
    """Run the body in this (main) thread, stopped by SIGALRM after ``timeout_seconds``.

    The previous SIGALRM handler is put back afterwards, so a worker running ``--sync`` keeps
    whatever handler it had.
    """
    timeout = task.timeout_seconds
    if not timeout:
        return execution.run_task(task.payload())

    def on_alarm(signum: int, frame: FrameType | None) -> None:
        raise _TimedOut

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, timeout)
    try:
        return execution.run_task(task.payload())
    except _TimedOut:
        return timed_out(task)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
