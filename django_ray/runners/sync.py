"""``--sync``: run tasks in the worker process itself, one at a time. For development."""

from __future__ import annotations

from collections.abc import Iterable

from django_ray.outcomes import ClaimedTask, Outcome, OutcomeKind
from django_ray.runners.base import Finished, Runner
from django_ray.timeouts import run_with_alarm


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
        return run_with_alarm(task)

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
