"""An in-memory runner: public test API, the way Django ships a dummy Tasks backend.

:class:`MemoryRunner` executes claimed tasks inside the worker process, with no Ray, and lets a
test script how attempts end. A project's tests (and django-ray's own) drive the real worker
loop with it, on the real database: claims, outcome recording, retries, cancellation and
recovery decide exactly as in production, in milliseconds::

    from django_ray.runners.memory import Fail, Hang, MemoryRunner, Succeed
    from django_ray.worker.loop import Worker

    runner = MemoryRunner()
    runner.script("myapp.tasks.send_mail", Fail("SMTP down"), Succeed())  # 1st, 2nd attempt
    worker = Worker(runner, queues=["default"])
    ...  # enqueue, then call worker.iterate() until the rows are where the test wants them

An attempt with no script left runs the task body in-process (like ``--sync``, without the
timeout alarm). :class:`Hang` keeps an attempt in flight until :meth:`MemoryRunner.stop` (a
cancel: CANCELLED), :meth:`MemoryRunner.interrupt_all` (shutdown: INTERRUPTED) or
:meth:`MemoryRunner.break_connection` (Ray gone: LOST). :meth:`MemoryRunner.forget` drops an
attempt without an outcome, as a runner that lost track of it would; the worker's recovery must
then find the row. ``runner.started`` lists every attempt it was given, in order, so a test can
assert that no task ran twice.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from django_ray.outcomes import ClaimedTask, Outcome, OutcomeKind, lost
from django_ray.runners.base import Capabilities, Finished, Runner


@dataclass(frozen=True)
class Succeed:
    """The attempt succeeds and returns ``value`` (JSON), without running the body."""

    value: Any = None


@dataclass(frozen=True)
class Fail:
    """The attempt fails as if the body raised; ``retryable=False`` as for a denylisted error."""

    message: str = "scripted failure"
    error_class_path: str = "django_ray.runners.memory.ScriptedFailure"
    retryable: bool = True


@dataclass(frozen=True)
class Lose:
    """The attempt's completion is unknown (its process or node died): the retry path."""

    message: str = "scripted loss: the executing process died"


@dataclass(frozen=True)
class Hang:
    """The attempt runs until stopped (cancel), interrupted (shutdown) or Ray goes away."""


Script = Succeed | Fail | Lose | Hang


class ConnectionBroken(ConnectionError):
    """Raised by :meth:`MemoryRunner.poll` after :meth:`MemoryRunner.break_connection`."""


class MemoryRunner(Runner):
    """Runs tasks in-process or as scripted; declares the ``reconnect`` capability."""

    name = "memory"
    capabilities = Capabilities(reconnect=True)

    def __init__(self, concurrency: int = 4) -> None:
        super().__init__(concurrency)
        self._lock = threading.Lock()  # in_flight_ids() runs on the lease thread too
        self._scripts: dict[str, list[Script]] = {}
        self._pending: list[ClaimedTask] = []  # submitted, not run yet
        self._hanging: dict[int, ClaimedTask] = {}
        self._stopping: set[int] = set()
        self._broken = False
        self.started: list[ClaimedTask] = []
        self.connects = 0

    # -- scripting --------------------------------------------------------------------------

    def script(self, key: str, *outcomes: Script) -> None:
        """How the next attempts of ``key`` end, in order: a task id (one enqueued task) or a
        callable path (every task of that callable); after the script, bodies run for real."""
        with self._lock:
            self._scripts.setdefault(key, []).extend(outcomes)

    def break_connection(self) -> None:
        """Make the next :meth:`poll` raise as if Ray went away."""
        self._broken = True

    def forget(self, execution_ids: Iterable[int]) -> None:
        """Drop attempts without any outcome, as a runner that lost track of them would."""
        drop = set(execution_ids)
        with self._lock:
            self._pending = [t for t in self._pending if t.id not in drop]
            for execution_id in drop:
                self._hanging.pop(execution_id, None)

    def hanging_ids(self) -> list[int]:
        """Execution ids of attempts held by :class:`Hang` right now (their body "runs")."""
        with self._lock:
            return list(self._hanging)

    def _next_script(self, task: ClaimedTask) -> Script | None:
        for key in (task.task_id, task.callable_path):
            queued = self._scripts.get(key)
            if queued:
                return queued.pop(0)
        return None

    # -- the runner protocol ----------------------------------------------------------------

    def start(self) -> None:
        self._broken = False
        self.connects += 1

    def close(self) -> None:
        pass

    def free_slots(self) -> int:
        return max(0, self.concurrency - len(self.in_flight_ids()))

    def submit(self, tasks: list[ClaimedTask]) -> None:
        with self._lock:
            self._pending.extend(tasks)
            self.started.extend(tasks)

    def poll(self, timeout: float) -> Finished:
        if self._broken:
            raise ConnectionBroken("scripted: the connection to Ray broke")
        finished: Finished = []
        with self._lock:
            stopped = [t for t in self._hanging.values() if t.id in self._stopping]
            for task in stopped:
                del self._hanging[task.id]
                self._stopping.discard(task.id)
                finished.append(
                    (task, Outcome(task.id, task.attempt_number, OutcomeKind.CANCELLED))
                )
            runnable = [(t, self._next_script(t)) for t in self._pending]
        for task, script in runnable:
            if isinstance(script, Hang) and task.id not in self._stopping:
                with self._lock:
                    self._hanging[task.id] = task
                    self._pending.remove(task)
                continue
            outcome = self._outcome(task, script)
            with self._lock:  # out of the in-flight list only once its outcome exists
                self._pending.remove(task)
                self._stopping.discard(task.id)
            finished.append((task, outcome))
        if not finished and timeout > 0:
            time.sleep(min(timeout, 0.01))
        return finished

    def _outcome(self, task: ClaimedTask, script: Script | None) -> Outcome:
        if task.id in self._stopping:
            return Outcome(task.id, task.attempt_number, OutcomeKind.CANCELLED)
        if script is None:
            from django_ray.execution import run_task

            return run_task(task.payload())
        if isinstance(script, Succeed):
            from django_ray.serialization import check_json, dumps

            return Outcome(
                task.id,
                task.attempt_number,
                OutcomeKind.SUCCEEDED,
                result_json=dumps(check_json(script.value, "return value")),
                duration_seconds=0.0,
            )
        if isinstance(script, Fail):
            return Outcome(
                task.id,
                task.attempt_number,
                OutcomeKind.FAILED,
                error_class_path=script.error_class_path,
                error_message=script.message,
                retryable=script.retryable,
                duration_seconds=0.0,
            )
        return lost(
            task,
            script.message if isinstance(script, Lose) else "",
            "django_ray.runners.memory.ScriptedLoss",
        )

    def stop(self, execution_ids: Iterable[int]) -> None:
        with self._lock:
            self._stopping.update(execution_ids)

    def in_flight_ids(self) -> list[int]:
        with self._lock:
            return [t.id for t in self._pending] + list(self._hanging)

    def _take_all(self) -> list[ClaimedTask]:
        with self._lock:
            tasks = self._pending + list(self._hanging.values())
            self._pending, self._hanging = [], {}
            self._stopping.clear()
        return tasks

    def interrupt_all(self) -> Finished:
        return [
            (t, Outcome(t.id, t.attempt_number, OutcomeKind.INTERRUPTED)) for t in self._take_all()
        ]

    def lose_connection(self) -> Finished:
        return [
            (
                t,
                lost(
                    t,
                    "Lost the connection to Ray; completion of this attempt is unknown.",
                    "django_ray.RayConnectionLost",
                ),
            )
            for t in self._take_all()
        ]
