"""The small interface every runner implements, and how the worker picks one."""

from __future__ import annotations

import abc
import os
import sys
from collections.abc import Iterable
from dataclasses import dataclass

from django_ray.outcomes import ClaimedTask, Outcome

Finished = list[tuple[ClaimedTask, Outcome]]


class RunnerUnavailable(RuntimeError):
    """The runner cannot execute tasks right now (e.g. Ray is unreachable)."""


@dataclass(frozen=True)
class ProcessContext:
    """What an executing process needs to bootstrap Django the way the worker did."""

    settings_module: str | None
    sys_path: tuple[str, ...]

    @classmethod
    def current(cls) -> ProcessContext:
        settings_module = os.environ.get("DJANGO_SETTINGS_MODULE")
        paths: list[str] = []
        if settings_module:
            top = sys.modules.get(settings_module.split(".")[0])
            top_file = getattr(top, "__file__", None)
            if top_file:
                # The directory holding the settings package, as manage.py would put on sys.path.
                paths.append(os.path.dirname(os.path.dirname(os.path.abspath(top_file))))
        cwd = os.getcwd()
        if cwd not in paths:
            paths.append(cwd)
        return cls(settings_module, tuple(paths))


@dataclass(frozen=True)
class Capabilities:
    """What a runner can do beyond the basic protocol; the worker reads these, never probes.

    * ``ray_jobs``: each attempt runs as a Ray Job whose id (:meth:`Runner.job_id`) the worker
      writes on the row before :meth:`Runner.submit`; the job records its own outcome, so an
      outcome from :meth:`Runner.poll` that carries ``ray_job_id`` is a fallback the worker
      uses only when the row shows the job did not record one.
    * ``adoption``: :meth:`Runner.job_known` and :meth:`Runner.adopt` let the worker take over
      the Ray Jobs of dead workers.
    * ``reconnect``: when :meth:`Runner.poll` raises because Ray went away,
      :meth:`Runner.lose_connection` reports what was in flight and :meth:`Runner.start`
      reconnects (the worker retries it with backoff).
    * ``outlives_worker``: work keeps running after the worker exits (:meth:`Runner.release`).
    """

    ray_jobs: bool = False
    adoption: bool = False
    reconnect: bool = False
    outlives_worker: bool = False


class Runner(abc.ABC):
    """Executes claimed tasks and hands back their outcomes: a pure executor.

    A runner never touches the database (no runner module imports ``django_ray.models`` or opens
    a connection): the worker owns every read and write, on the backend's database alias.
    Methods are called from the worker loop's thread, except :meth:`in_flight_ids`, which the
    lease thread calls too and must be thread-safe.
    """

    name: str = "runner"
    capabilities: Capabilities = Capabilities()

    def __init__(self, concurrency: int) -> None:
        self.concurrency = concurrency

    @abc.abstractmethod
    def start(self) -> None:
        """Connect to whatever executes tasks (may be slow: Ray start-up)."""

    @abc.abstractmethod
    def close(self) -> None:
        """Disconnect; stop what this runner started."""

    @abc.abstractmethod
    def free_slots(self) -> int:
        """How many more tasks the worker should claim now."""

    @abc.abstractmethod
    def submit(self, tasks: list[ClaimedTask]) -> None:
        """Start executing ``tasks`` (already RUNNING rows owned by this worker)."""

    @abc.abstractmethod
    def poll(self, timeout: float) -> Finished:
        """Wait up to ``timeout`` seconds; return the outcomes ready: finished, lost, stopped."""

    @abc.abstractmethod
    def stop(self, execution_ids: Iterable[int]) -> None:
        """Stop the given in-flight tasks (cancellation); their outcome comes from :meth:`poll`."""

    @abc.abstractmethod
    def in_flight_ids(self) -> list[int]:
        """Execution ids currently executing (heartbeats). Thread-safe."""

    @abc.abstractmethod
    def interrupt_all(self) -> Finished:
        """Stop everything in flight now (shutdown after the grace period)."""

    def release(self) -> Finished:
        """Hand back in-flight work at shutdown without stopping it (``outlives_worker``)."""
        return []

    def jobs_api_address(self) -> str | None:
        """The Ray Jobs API (dashboard) address this runner can reach, if any: used to stop
        the Ray Jobs of rows recovered from dead Ray Job workers."""
        from django_ray.conf import ray_settings

        address = ray_settings().ray_address
        return address if address and address.startswith(("http://", "https://")) else None

    # -- capability ``reconnect`` -----------------------------------------------------------

    def lose_connection(self) -> Finished:
        """Ray went away: report every in-flight attempt (completion unknown) and forget it."""
        raise NotImplementedError(f"the {self.name} runner cannot reconnect")

    # -- capabilities ``ray_jobs`` and ``adoption`` -----------------------------------------

    def job_id(self, task: ClaimedTask) -> str:
        """The Ray Job id of this attempt, written on its row before :meth:`submit`."""
        raise NotImplementedError(f"the {self.name} runner runs no Ray Jobs")

    def job_known(self, job_id: str) -> bool | None:
        """Whether Ray knows the job (running or ended); None when that cannot be told now."""
        raise NotImplementedError(f"the {self.name} runner cannot adopt")

    def adopt(self, task: ClaimedTask, job_id: str) -> None:
        """Monitor a Ray Job whose row the worker just adopted, as if this runner started it."""
        raise NotImplementedError(f"the {self.name} runner cannot adopt")
