"""``--sync``: run tasks in the worker process itself, one at a time. For development."""

from __future__ import annotations

import threading
from collections.abc import Iterable

from django_ray.outcomes import ClaimedTask, Outcome, OutcomeKind
from django_ray.runners.base import Finished, Runner
from django_ray.timeouts import run_with_alarm


class SyncRunner(Runner):
    name = "sync"

    def __init__(self, concurrency: int = 1) -> None:
        super().__init__(1)
        self._pending: list[ClaimedTask] = []
        self._stopping: set[int] = set()
        self._lock = threading.Lock()  # in_flight_ids() runs on the lease thread too

    def start(self) -> None:
        pass

    def close(self) -> None:
        pass

    def free_slots(self) -> int:
        return 0 if self._pending else 1

    def submit(self, tasks: list[ClaimedTask]) -> None:
        with self._lock:
            self._pending.extend(tasks)

    def _run_one(self, task: ClaimedTask) -> Outcome:
        if task.id in self._stopping:
            self._stopping.discard(task.id)
            return Outcome(task.id, task.attempt_number, OutcomeKind.CANCELLED)
        return run_with_alarm(task)

    def poll(self, timeout: float) -> Finished:
        finished: Finished = []
        while self._pending:
            task = self._pending[0]
            finished.append((task, self._run_one(task)))
            with self._lock:
                self._pending.pop(0)
        return finished

    def stop(self, execution_ids: Iterable[int]) -> None:
        self._stopping.update(execution_ids)

    def in_flight_ids(self) -> list[int]:
        with self._lock:
            return [t.id for t in self._pending]

    def interrupt_all(self) -> Finished:
        with self._lock:
            pending, self._pending = self._pending, []
        return [(t, Outcome(t.id, t.attempt_number, OutcomeKind.INTERRUPTED)) for t in pending]
