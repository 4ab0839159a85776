"""``--sync``: run tasks in the worker process itself, one at a time. For development."""

from __future__ import annotations

import signal
from collections.abc import Iterable
from types import FrameType

from django_ray import execution
from django_ray.outcomes import ClaimedTask, Outcome, OutcomeKind
from django_ray.runners.base import Finished, Runner


class _TimedOut(execution.TaskInterrupted):
    """Raised inside the task body by SIGALRM when its timeout passes."""


class SyncRunner(Runner):
    name = "sync"

    def __init__(self, concurrency: int = 1) -> None:
        super().__init__(1)
        self._pending: list[ClaimedTask] = []
        self._cancelled: set[int] = set()

    def start(self) -> None:
        pass

    def free_slots(self) -> int:
        return 0 if self._pending else 1

    def submit(self, tasks: list[ClaimedTask]) -> None:
        self._pending.extend(tasks)

    def _run_one(self, task: ClaimedTask) -> Outcome:
        if task.id in self._cancelled:
            self._cancelled.discard(task.id)
            return Outcome(task.id, task.attempt_number, OutcomeKind.CANCELLED)
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

    def wait(self, timeout: float) -> Finished:
        finished: Finished = []
        while self._pending:
            task = self._pending.pop(0)
            finished.append((task, self._run_one(task)))
        return finished

    def cancel(self, execution_ids: Iterable[int]) -> None:
        self._cancelled.update(execution_ids)

    def in_flight_ids(self) -> list[int]:
        return [t.id for t in self._pending]

    def interrupt_all(self) -> Finished:
        finished = [
            (t, Outcome(t.id, t.attempt_number, OutcomeKind.INTERRUPTED)) for t in self._pending
        ]
        self._pending.clear()
        return finished

    def stop(self) -> None:
        pass


def timed_out(task: ClaimedTask) -> Outcome:
    """The outcome of an attempt stopped because it ran past ``timeout_seconds``."""
    seconds = task.timeout_seconds or 0
    shown = f"{seconds:g}"
    return Outcome(
        task.id,
        task.attempt_number,
        OutcomeKind.FAILED,
        error_class_path="builtins.TimeoutError",
        error_message=f"Task {task.callable_path} timed out after {shown} seconds",
        error_traceback=f"TimeoutError: timed out after {shown} seconds\n",
        retryable=True,
    )
