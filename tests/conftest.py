"""Fixtures: worker processes against the real test database, and a private Ray head."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from django.db import connection, connections

ROOT = Path(__file__).resolve().parent.parent


def worker_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "DJANGO_SETTINGS_MODULE": "tests.settings",
            "DJANGO_RAY_TEST_DB": connection.settings_dict["NAME"],
            "DJANGO_RAY_TEST_DB_TASKS": connections["tasks"].settings_dict["NAME"],
            "PYTHONPATH": str(ROOT),
            "PYTHONUNBUFFERED": "1",
        }
    )
    env.pop("RAY_ADDRESS", None)
    env.update(extra or {})
    return env


class WorkerProcess:
    """A real ``django_ray_worker`` subprocess; its log is kept for assertions and failures."""

    def __init__(self, args: list[str], env: dict[str, str], log_path: Path) -> None:
        self.args = args
        self.log_path = log_path
        self._log = open(log_path, "wb")  # noqa: SIM115 - closed in wait()/kill()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "django", "django_ray_worker", *args],
            cwd=ROOT,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")

    def wait_for_log(self, needle: str, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if needle in self.log():
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.1)
        raise AssertionError(
            f"{needle!r} not in worker log after {timeout}s:\n{self.log()[-4000:]}"
        )

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def wait(self, timeout: float = 60.0) -> int:
        try:
            return self.proc.wait(timeout=timeout)
        finally:
            self._log.close()

    def stop(self, timeout: float = 60.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.wait(timeout)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self._log.close()


@pytest.fixture
def start_worker(tmp_path: Path) -> Iterator[Callable[..., WorkerProcess]]:
    """Start worker subprocesses; each is stopped (then killed) at the end of the test."""
    started: list[WorkerProcess] = []

    def start(*args: str, env: dict[str, str] | None = None) -> WorkerProcess:
        worker = WorkerProcess(list(args), worker_env(env), tmp_path / f"worker-{len(started)}.log")
        started.append(worker)
        return worker

    yield start
    for worker in started:
        if worker.proc.poll() is None:
            worker.proc.send_signal(signal.SIGTERM)
            try:
                worker.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                worker.proc.kill()
                worker.proc.wait()


@pytest.fixture(scope="session")
def ray_head() -> Iterator[object]:
    """One private Ray head (free ports) shared by the session's --cluster tests."""
    from tests.support.ray import running_ray_head

    with running_ray_head(num_cpus=2) as head:
        yield head


@pytest.fixture
def ray_core_runner(ray_head: Any) -> Iterator[Any]:
    """A Ray Core runner in this process, joined to the session's head (one call at a time);
    for tests that reach into the runner, e.g. to drop a message as a race would."""
    from django_ray.runners.ray_core import RayCoreRunner

    runner = RayCoreRunner(concurrency=1, address=ray_head.address, local=False)
    runner.start()
    try:
        yield runner
    finally:
        runner.close()


@pytest.fixture(params=["postgresql", "portable"])
def path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Run a lifecycle test once through the named statements and once through the portable ORM
    path (the one SQLite takes), on the same PostgreSQL, so the two cannot drift apart."""
    if request.param == "portable":
        from django_ray.lifecycle import statements

        monkeypatch.setattr(statements, "is_postgres", lambda using: False)
    yield request.param


def wait_until(
    predicate: Callable[[], bool],
    timeout: float = 60.0,
    interval: float = 0.1,
    explain: Callable[[], str] | None = None,
) -> None:
    """Poll ``predicate`` until true; on timeout fail with ``explain()`` (e.g. worker logs)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    detail = explain() if explain else ""
    raise AssertionError(f"condition not met within {timeout}s\n{detail[-6000:]}")
