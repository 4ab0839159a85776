"""Ray Core runner (``--local`` and ``--cluster``): tasks run as Ray remote functions.

Short tasks are sent in chunks: one Ray call runs several Django tasks of the same callable back
to back, so Ray's per-call overhead is paid once per chunk. The chunk size of a callable follows
its measured duration (aiming at about :data:`TARGET_CHUNK_SECONDS` per chunk, at most
``MAX_CHUNK_SIZE``). A callable not measured yet, a slow one, and any task with a timeout run
alone, so a long task never holds short ones behind it, and stopping it (cancel, timeout)
stops nothing else. ``concurrency`` is the
number of Ray calls in flight, so at most that many task bodies run at once.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from django_ray import execution
from django_ray.conf import ray_settings
from django_ray.outcomes import ClaimedTask, Outcome, OutcomeKind
from django_ray.runners.base import Finished, ProcessContext, Runner, RunnerUnavailable
from django_ray.runners.sync import timed_out

logger = logging.getLogger("django_ray.runner")

TARGET_CHUNK_SECONDS = 0.05
# Durations are smoothed so one slow call does not flip a callable's chunk size.
DURATION_SMOOTHING = 0.3


class _RayGone(Exception):
    """Ray itself (the local raylet, the cluster) went away while collecting a result."""

    def __init__(self, error: Exception) -> None:
        super().__init__(str(error))
        self.error = error


@dataclass
class _Chunk:
    ref: Any
    tasks: list[ClaimedTask]
    submitted: float
    deadline: float | None
    cancel_requested: set[int] = field(default_factory=set)
    timed_out: bool = False


class RayCoreRunner(Runner):
    """Runs chunks of tasks as Ray remote functions on a local or existing cluster."""

    name = "ray_core"

    def __init__(self, concurrency: int, address: str | None = None, local: bool = True) -> None:
        super().__init__(concurrency)
        self.address = address
        self.local = local
        self.context = ProcessContext.current()
        self._chunks: dict[Any, _Chunk] = {}
        # Mean duration per callable path; None until measured (such tasks run alone).
        self._durations: dict[str, float] = {}
        self._remote: Any = None
        self._ray: Any = None
        self._connected = False
        self._carry: Finished = []  # outcomes collected just before Ray went away

    # -- connection -------------------------------------------------------------------------

    def start(self) -> None:
        if not self.local:
            use_token_auth_if_available()  # before importing ray: it reads the mode at import
        import ray

        self._ray = ray
        conf = ray_settings()
        env_vars = {"PYTHONPATH": os.pathsep.join(self.context.sys_path)}
        if self.context.settings_module:
            env_vars["DJANGO_SETTINGS_MODULE"] = self.context.settings_module
        kwargs: dict[str, Any] = {
            "runtime_env": {"env_vars": env_vars},
            "log_to_driver": False,
            "configure_logging": False,
        }
        kwargs.update(conf.RAY_INIT_KWARGS)
        try:
            if self.local:
                # "local" starts a private cluster even when RAY_ADDRESS is set; no dashboard, so
                # several --local workers on one host never fight over port 8265.
                kwargs.setdefault("include_dashboard", False)
                if conf.RAY_NUM_CPUS:
                    kwargs.setdefault("num_cpus", conf.RAY_NUM_CPUS)
                if conf.RAY_CPUS_PER_CALL is not None and conf.RAY_CPUS_PER_CALL < 1:
                    # Keep one idle Ray worker process per slot: Ray's default keeps only
                    # num_cpus of them and kills the rest after a second idle, so with fractional
                    # CPUs per call processes would be restarted (Python, Ray and Django
                    # re-imported) over and over.
                    system_config = dict(kwargs.pop("_system_config", None) or {})
                    system_config.setdefault("num_workers_soft_limit", self.concurrency)
                    kwargs["_system_config"] = system_config
                ray.init(address="local", **kwargs)
            else:
                ray.init(address=self.address or "auto", **kwargs)
        except Exception as exc:
            raise RunnerUnavailable(
                f"Cannot {'start a local Ray' if self.local else 'connect to Ray at ' + str(self.address)}: "
                f"{type(exc).__name__}: {exc}. Check RAY_ADDRESS, that the head is up, and the "
                "Ray auth token (RAY_AUTH_TOKEN or ~/.ray/auth_token) matches the cluster's."
            ) from exc
        options: dict[str, Any] = {"max_retries": 0}
        if conf.RAY_CPUS_PER_CALL is not None:
            options["num_cpus"] = conf.RAY_CPUS_PER_CALL
        self._remote = ray.remote(**options)(execution.run_chunk)
        if self.local and conf.RAY_CPUS_PER_CALL is not None and conf.RAY_CPUS_PER_CALL < 1:
            self._prestart(ray, conf.RAY_CPUS_PER_CALL)
        self._connected = True

    def _prestart(self, ray: Any, cpus_per_call: float, rounds: int = 3) -> None:
        """Start one Ray worker process per slot, Django loaded, before the first claim.

        Ray starts worker processes lazily; without this the first busy seconds pay for
        starting them (Python, Ray and Django imported in each) while tasks wait.
        """
        warm = ray.remote(max_retries=0, num_cpus=cpus_per_call)(execution.warm_process)
        cpus = float(ray.cluster_resources().get("CPU", 1.0))
        wanted = max(1, min(self.concurrency, int(cpus / cpus_per_call)))
        pids: set[int] = set()
        started = time.monotonic()
        for _ in range(rounds):
            refs = [
                warm.remote(self.context.settings_module, self.context.sys_path, 0.5)
                for _ in range(wanted)
            ]
            try:
                pids.update(ray.get(refs, timeout=120))
            except Exception as exc:  # a slow start is not fatal: tasks start processes too
                logger.warning("could not prestart Ray worker processes: %s", exc)
                return
            if len(pids) >= wanted:
                break
        logger.info("%d Ray worker processes ready in %.1fs", len(pids), time.monotonic() - started)

    def healthy(self) -> bool:
        return self._connected and bool(self._ray and self._ray.is_initialized())

    def stop(self) -> None:
        if self._ray is not None and self._ray.is_initialized():
            self._ray.shutdown()
        self._connected = False

    # -- capacity and submission ------------------------------------------------------------

    def chunk_size(self, callable_path: str | None = None) -> int:
        """Tasks per Ray call: for one callable, or the largest over those measured."""
        limit = ray_settings().MAX_CHUNK_SIZE
        if callable_path is None:
            seconds = min(self._durations.values(), default=None)
        else:
            seconds = self._durations.get(callable_path)
        if seconds is None:
            return 1
        return max(1, min(limit, int(TARGET_CHUNK_SECONDS / max(seconds, 1e-6))))

    def free_slots(self) -> int:
        free_calls = self.concurrency - len(self._chunks)
        return max(0, free_calls) * self.chunk_size()

    def submit(self, tasks: list[ClaimedTask]) -> None:
        if not tasks:
            return
        free_calls = max(1, self.concurrency - len(self._chunks))
        groups: list[list[ClaimedTask]] = []
        by_callable: dict[str, list[ClaimedTask]] = {}
        for task in tasks:
            if task.timeout_seconds or self.chunk_size(task.callable_path) == 1:
                groups.append([task])
            else:
                by_callable.setdefault(task.callable_path, []).append(task)
        for path, same in by_callable.items():
            size = max(1, min(self.chunk_size(path), -(-len(same) // free_calls)))
            groups.extend(same[i : i + size] for i in range(0, len(same), size))
        now = time.monotonic()
        for group in groups:
            ref = self._remote.remote(
                [t.payload() for t in group], self.context.settings_module, self.context.sys_path
            )
            timeout = group[0].timeout_seconds if len(group) == 1 else None
            self._chunks[ref] = _Chunk(ref, group, now, now + timeout if timeout else None)

    # -- outcomes ---------------------------------------------------------------------------

    def wait(self, timeout: float) -> Finished:
        if not self._chunks:
            if timeout > 0:
                time.sleep(timeout)
            return []
        ray = self._ray
        self._enforce_deadlines()
        refs = list(self._chunks)
        wait_for = timeout
        deadlines = [c.deadline for c in self._chunks.values() if c.deadline and not c.timed_out]
        if deadlines:
            wait_for = max(0.0, min(wait_for, min(deadlines) - time.monotonic()))
        ready, _ = ray.wait(refs, num_returns=1, timeout=wait_for)
        if ready:
            rest = [r for r in refs if r not in set(ready)]
            if rest:
                more, _ = ray.wait(rest, num_returns=len(rest), timeout=0)
                ready.extend(more)
        finished: Finished = []
        for ref in ready:
            chunk = self._chunks.pop(ref)
            try:
                finished.extend(self._collect(chunk))
            except _RayGone as gone:
                # Ray itself went away: keep the chunk (mark_connection_lost reports it LOST),
                # keep what was collected, and let the worker reconnect before claiming more.
                self._chunks[ref] = chunk
                self._carry.extend(finished)
                raise gone.error from None
        return finished

    def _collect(self, chunk: _Chunk) -> Finished:
        ray = self._ray
        from ray import exceptions as rex

        try:
            outcomes: list[Outcome] = ray.get(chunk.ref)
        except rex.TaskCancelledError:
            return self._stopped(chunk)
        except (rex.LocalRayletDiedError, rex.RaySystemError) as exc:
            raise _RayGone(exc) from exc
        except Exception as exc:
            # WorkerCrashedError, RayTaskError, RayActorError, NodeDiedError, ...: completion is
            # unknown, so never drop the chunk's tasks.
            if chunk.timed_out or chunk.cancel_requested:
                return self._stopped(chunk)
            return [
                (
                    t,
                    Outcome(
                        t.id,
                        t.attempt_number,
                        OutcomeKind.LOST,
                        error_class_path=f"{type(exc).__module__}.{type(exc).__qualname__}",
                        error_message=f"Ray lost this task (its worker or node died): {exc}"[:4000],
                        retryable=True,
                    ),
                )
                for t in chunk.tasks
            ]
        by_id = {o.execution_id: o for o in outcomes}
        self._learn_durations(chunk.tasks, by_id)
        return [(t, by_id[t.id]) for t in chunk.tasks]

    def _learn_durations(self, tasks: list[ClaimedTask], by_id: dict[int, Outcome]) -> None:
        for task in tasks:
            seconds = by_id[task.id].duration_seconds
            if seconds is None:
                continue
            previous = self._durations.get(task.callable_path)
            self._durations[task.callable_path] = (
                seconds
                if previous is None
                else (1 - DURATION_SMOOTHING) * previous + DURATION_SMOOTHING * seconds
            )

    def _stopped(self, chunk: _Chunk) -> Finished:
        finished: Finished = []
        for t in chunk.tasks:
            if chunk.timed_out:
                finished.append((t, timed_out(t)))
            elif t.id in chunk.cancel_requested:
                finished.append((t, Outcome(t.id, t.attempt_number, OutcomeKind.CANCELLED)))
            else:
                finished.append((t, Outcome(t.id, t.attempt_number, OutcomeKind.INTERRUPTED)))
        return finished

    def _enforce_deadlines(self) -> None:
        now = time.monotonic()
        for chunk in self._chunks.values():
            if chunk.deadline is not None and not chunk.timed_out and now >= chunk.deadline:
                chunk.timed_out = True
                logger.warning(
                    "task timed out after %ss; stopping it",
                    chunk.tasks[0].timeout_seconds,
                    extra={"task_id": chunk.tasks[0].task_id},
                )
                self._ray.cancel(chunk.ref, force=True)

    def cancel(self, execution_ids: Iterable[int]) -> None:
        wanted = set(execution_ids)
        for chunk in self._chunks.values():
            hit = wanted & {t.id for t in chunk.tasks}
            if hit and not chunk.cancel_requested:
                chunk.cancel_requested |= hit
                self._ray.cancel(chunk.ref, force=True)
            elif hit:
                chunk.cancel_requested |= hit

    def in_flight_ids(self) -> list[int]:
        return [t.id for chunk in self._chunks.values() for t in chunk.tasks]

    def interrupt_all(self) -> Finished:
        finished: Finished = []
        for chunk in list(self._chunks.values()):
            try:
                self._ray.cancel(chunk.ref, force=True)
            except Exception:  # Ray already gone: the attempts are interrupted either way.
                logger.debug("cancel at shutdown failed", exc_info=True)
            finished.extend(
                (t, Outcome(t.id, t.attempt_number, OutcomeKind.INTERRUPTED)) for t in chunk.tasks
            )
        self._chunks.clear()
        return finished

    def mark_connection_lost(self) -> Finished:
        """Everything in flight has unknown completion after Ray went away: report it LOST."""
        finished: Finished = self._carry
        self._carry = []
        finished += [
            (
                t,
                Outcome(
                    t.id,
                    t.attempt_number,
                    OutcomeKind.LOST,
                    error_class_path="django_ray.RayConnectionLost",
                    error_message="Lost the connection to Ray; completion of this attempt is unknown.",
                ),
            )
            for chunk in self._chunks.values()
            for t in chunk.tasks
        ]
        self._chunks.clear()
        self._connected = False
        return finished


def use_token_auth_if_available() -> None:
    """Send Ray's auth token when one exists: heads start with token auth on by default, but a
    client only presents its token when ``RAY_AUTH_MODE=token`` is set in its environment."""
    if os.environ.get("RAY_AUTH_MODE"):
        return
    token_path = os.environ.get("RAY_AUTH_TOKEN_PATH") or os.path.expanduser("~/.ray/auth_token")
    if os.environ.get("RAY_AUTH_TOKEN") or os.path.exists(token_path):
        os.environ["RAY_AUTH_MODE"] = "token"
