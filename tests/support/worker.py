"""A worker loop driven in the test's own process (with the in-memory runner, or any other)."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from django_ray.lifecycle import leases
from django_ray.runners.base import Runner
from django_ray.worker.loop import Worker


@contextmanager
def in_process_worker(
    runner: Runner, queues: list[str] | None = None, using: str = "default"
) -> Iterator[Worker]:
    """A :class:`Worker` with its lease registered and its heartbeat thread running; the test
    calls :func:`drive` instead of ``Worker.run`` (which owns signals and the process)."""
    worker = Worker(runner, queues, using=using)
    leases.register_lease(
        worker.worker_id,
        socket.gethostname(),
        os.getpid(),
        worker.queues,
        runner.name,
        runner.concurrency,
        float(worker.conf.WORKER_LEASE_SECONDS),
        using,
    )
    runner.start()
    worker.lease.start()
    try:
        yield worker
    finally:
        worker.lease.stop()
        worker.lease.join(10)
        runner.close()
        leases.release_lease(worker.worker_id, using)


def drive(worker: Worker, until: Callable[[], bool], timeout: float = 30.0) -> None:
    """Run loop passes until ``until()`` holds; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not until():
        assert time.monotonic() < deadline, f"condition not met within {timeout}s"
        worker.iterate()
