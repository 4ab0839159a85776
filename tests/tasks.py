"""Tasks the test suite enqueues. They record what they saw in ``TaskProbe`` rows."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from typing import Any

from django.tasks import task
from django.tasks.base import TaskContext


class PermanentError(Exception):
    """Listed in RETRY_EXCEPTION_DENYLIST: never retried."""


class VeryPermanentError(PermanentError):
    """A subclass of a denylisted exception: also never retried."""


class FlakyError(Exception):
    pass


def _probe(name: str, **data: Any) -> None:
    from tests.models import TaskProbe

    TaskProbe.objects.create(name=name, pid=os.getpid(), data=data)


@task
def noop() -> None:
    return None


@task
def add(a: int, b: int) -> int:
    return a + b


@task
def record(marker: str) -> str:
    _probe(marker)
    return marker


@task(priority=10)
def record_high(marker: str) -> str:
    _probe(marker)
    return marker


@task
def echo(*args: Any, **kwargs: Any) -> dict[str, Any]:
    return {"args": list(args), "kwargs": kwargs}


@task
def fail_always(message: str = "boom") -> None:
    raise ValueError(message)


@task
def fail_permanent() -> None:
    raise PermanentError("do not retry me")


@task
def fail_subclass_permanent() -> None:
    raise VeryPermanentError("do not retry me either")


@task(takes_context=True)
def flaky(context: TaskContext, succeed_on: int) -> dict[str, Any]:
    """Fails until attempt ``succeed_on``, then returns what the context said."""
    attempt = context.attempt
    _probe("flaky", attempt=attempt, worker_ids=context.task_result.worker_ids)
    if attempt < succeed_on:
        raise FlakyError(f"attempt {attempt} fails")
    return {"attempt": attempt, "task_id": context.task_result.id}


@task
async def async_add(a: int, b: int) -> int:
    await asyncio.sleep(0.01)
    return a + b


@task
def returns_object() -> Any:
    return object()


@task
def returns_set() -> Any:
    return {1, 2, 3}


@task
def sleep_for(seconds: float, marker: str = "") -> float:
    started = time.time()
    while time.time() - started < seconds:
        time.sleep(0.02)
    if marker:
        _probe(marker)
    return seconds


@task
def big_result(size: int) -> str:
    return "x" * size


def not_a_task() -> None:
    """A plain function: enqueueing its path directly must fail clearly."""


# A Task whose path leads to the plain function (decorated without rebinding the name): a worker
# importing tests.tasks.not_a_task would not find a task, so enqueue refuses it.
unbound_task = task(not_a_task)


def _renamed() -> None:
    """Bound under another name below and then deleted: its path cannot be imported."""


vanished_task = task(_renamed)
del _renamed


@task
def deep_return(depth: int) -> Any:
    value: Any = []
    for _ in range(depth):
        value = [value]
    return value


@task
def self_containing_return() -> Any:
    value: dict[str, Any] = {}
    value["self"] = value
    return value


# -- Django's task_started / task_finished signals, observed where tasks run (a Ray worker) ----

SIGNAL_TASKS = frozenset({"tests.tasks.signalled", "tests.tasks.signalled_fail"})


@task
def signalled(marker: str) -> str:
    return marker


@task
def signalled_fail(marker: str) -> None:
    raise PermanentError(marker)


def _signal_probe(event: str) -> Any:
    def receiver(sender: Any, task_result: Any, **kwargs: Any) -> None:
        if task_result.task.module_path in SIGNAL_TASKS:
            _probe(
                f"signal:{event}:{task_result.args[0]}",
                task_id=task_result.id,
                status=str(task_result.status),
                attempts=task_result.attempts,
                sender=f"{sender.__module__}.{sender.__qualname__}",
            )

    return receiver


def _connect_signal_probes() -> None:
    from django.tasks.signals import task_finished, task_started

    task_started.connect(_signal_probe("started"), weak=False, dispatch_uid="tests-started")
    task_finished.connect(_signal_probe("finished"), weak=False, dispatch_uid="tests-finished")


_connect_signal_probes()


@task
def announce_and_sleep(seconds: float, marker: str) -> float:
    """Writes ``<marker>-started`` when the body starts and ``marker`` if it runs to the end."""
    _probe(f"{marker}-started")
    started = time.time()
    while time.time() - started < seconds:
        time.sleep(0.02)
    _probe(marker)
    return seconds


@task
def serialized_mark(key: str, index: int, seconds: float) -> None:
    """Records when its body started and ended (wall clock), for the serialized-task test."""
    started = time.time()
    time.sleep(seconds)
    _probe(f"serialized:{key}:{index}", key=key, start=started, end=time.time())


@task(takes_context=True)
def effect_then_fail(context: TaskContext, marker: str, fail_on: int = 1) -> int:
    """Applies effect ``ledger`` (a ``marker`` probe), then fails on attempt ``fail_on``.

    Every attempt also writes ``<marker>:attempt`` with the idempotency key it saw.
    """
    from django_ray.effects import effect_once, idempotency_key

    with effect_once("ledger") as first_time:
        if first_time:
            _probe(marker, attempt=context.attempt)
    _probe(f"{marker}:attempt", attempt=context.attempt, key=idempotency_key("ledger"))
    if context.attempt == fail_on:
        raise FlakyError(f"attempt {context.attempt} fails after its effect")
    return context.attempt


@task(takes_context=True)
def effect_body_fails(context: TaskContext, marker: str) -> int:
    """Fails inside its effect on attempt 1: the effect's write and its record roll back."""
    from django_ray.effects import effect_once

    with effect_once("ledger") as first_time:
        if first_time:
            _probe(marker, attempt=context.attempt)
            if context.attempt == 1:
                raise FlakyError("the effect itself fails on attempt 1")
    return context.attempt


@task
def effect_with_key(key: Any) -> None:
    """Uses ``key`` as an effect key (bad keys must fail the task with a clear error)."""
    from django_ray.effects import effect_once

    with effect_once(key) as first_time:
        if first_time:
            _probe("never")


@task
def node_id() -> dict[str, Any]:
    """The Ray node running this body and the resources Ray assigned to it (per-task resources)."""
    import ray

    context = ray.get_runtime_context()
    return {"node": str(context.get_node_id()), "assigned": context.get_assigned_resources()}


# One barrier per party count, shared by the threads of one process.
_RENDEZVOUS: dict[int, threading.Barrier] = {}


@task
def rendezvous(parties: int, timeout: float) -> int:
    """Return once ``parties`` bodies wait here at the same time in this process; raise
    ``BrokenBarrierError`` after ``timeout`` seconds otherwise (they never ran side by side)."""
    barrier = _RENDEZVOUS.setdefault(parties, threading.Barrier(parties, timeout=timeout))
    try:
        barrier.wait()
    except threading.BrokenBarrierError:
        # A broken barrier stays broken: the next test gets a new one.
        _RENDEZVOUS.pop(parties, None)
        raise
    return parties


@task
def io_wait(seconds: float, marker: str) -> float:
    """Wait ``seconds`` without using the CPU; probe the process, thread and the interval."""
    started = time.time()
    time.sleep(seconds)
    _probe(marker, thread=threading.get_ident(), started=started, ended=time.time())
    return seconds
