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


class Runner(abc.ABC):
    """Executes claimed tasks and hands back their outcomes; owns no database state."""

    name: str = "runner"

    def __init__(self, concurrency: int) -> None:
        self.concurrency = concurrency

    @abc.abstractmethod
    def start(self) -> None:
        """Connect to whatever executes tasks (may be slow: Ray start-up)."""

    @abc.abstractmethod
    def free_slots(self) -> int:
        """How many more tasks the worker should claim now."""

    @abc.abstractmethod
    def submit(self, tasks: list[ClaimedTask]) -> None:
        """Start executing ``tasks`` (already RUNNING rows owned by this worker)."""

    @abc.abstractmethod
    def wait(self, timeout: float) -> Finished:
        """Wait up to ``timeout`` seconds for outcomes; return those that are ready."""

    @abc.abstractmethod
    def cancel(self, execution_ids: Iterable[int]) -> None:
        """Stop the given in-flight tasks; their outcome comes back from :meth:`wait`."""

    @abc.abstractmethod
    def in_flight_ids(self) -> list[int]:
        """Execution ids currently executing (for heartbeats)."""

    @abc.abstractmethod
    def interrupt_all(self) -> Finished:
        """Stop everything in flight now (shutdown after the grace period)."""

    def release(self) -> Finished:
        """Hand back in-flight work at shutdown without stopping it (Ray Jobs keep running)."""
        return []

    def healthy(self) -> bool:
        return True

    def jobs_api_address(self) -> str | None:
        """The Ray Jobs API (dashboard) address this runner can reach, if any: used to stop
        the Ray Jobs of rows recovered from dead Ray Job workers."""
        from django_ray.conf import ray_settings

        address = ray_settings().ray_address
        return address if address and address.startswith(("http://", "https://")) else None

    @abc.abstractmethod
    def stop(self) -> None:
        """Disconnect; stop what this runner started."""
