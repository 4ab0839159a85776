"""Running task bodies, in whatever process executes them (a Ray worker, or the worker itself).

Django is bootstrapped once per process (:func:`ensure_django`), not once per task. Each task
runs through :func:`run_task`, which never raises for a task's own failure: it returns an
:class:`~django_ray.outcomes.Outcome` with the exception's exact class path, message and
traceback, and whether a retry could help. Django's ``task_started``/``task_finished`` signals
are sent here, around the body, in the process that runs it.
"""

from __future__ import annotations

import functools
import os
import socket
import sys
import threading
import time
import traceback
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from django_ray import current
from django_ray.current import CurrentTask
from django_ray.outcomes import Outcome, OutcomeKind

_DJANGO_READY = False
# The first failure to set Django up in this process, repeated to every later call: a second
# django.setup() after a failed one only says "populate() isn't reentrant". So a fixed node needs
# its Ray restarted (the message says so).
_SETUP_FAILURE: str | None = None
MAX_ERROR_MESSAGE = 4000


class DjangoSetupFailed(RuntimeError):
    """Django could not be loaded in the process that runs task bodies (a Ray worker on a node
    without the project, its settings or their dependencies): no task of the call ran."""


def ensure_django(settings_module: str | None, extra_sys_path: Sequence[str] = ()) -> None:
    """Configure Django in this process once; later calls are free.

    Raises :class:`DjangoSetupFailed`, naming the host, the settings module and the fix, when
    the settings or the apps cannot be loaded here.
    """
    global _DJANGO_READY, _SETUP_FAILURE
    if _DJANGO_READY:
        return
    if _SETUP_FAILURE is not None:
        raise DjangoSetupFailed(_SETUP_FAILURE)
    for path in reversed(extra_sys_path):
        if path and path not in sys.path:
            sys.path.insert(0, path)
    if settings_module:
        os.environ.setdefault("DJANGO_SETTINGS_MODULE", settings_module)
    try:
        import django
        from django.apps import apps

        if not apps.ready:
            django.setup()
    except Exception as exc:
        _SETUP_FAILURE = _setup_failure(exc)
        raise DjangoSetupFailed(_SETUP_FAILURE) from exc
    quiet_django_task_info()
    _DJANGO_READY = True


def _setup_failure(exc: Exception) -> str:
    return (
        f"Django could not be set up in the process that runs tasks (host "
        f"{socket.gethostname()}, pid {os.getpid()}, "
        f"DJANGO_SETTINGS_MODULE={os.environ.get('DJANGO_SETTINGS_MODULE')!r}): "
        f"{type(exc).__name__}: {exc}"[: MAX_ERROR_MESSAGE - 600]
        + ". Every Ray node must import the project, its settings and their dependencies as "
        "the worker host does: the same virtualenv and code on each node, or the worker's "
        "sys.path reaching them (docs/deployment.md#deploying-your-django-project). Then "
        "restart Ray on that node (ray-worker or ray-head): its worker processes keep this error."
    )


def quiet_django_task_info() -> None:
    """Raise the ``django.tasks`` logger to WARNING in a process that runs task bodies, unless
    ``EXECUTOR_TASK_INFO_LOGS`` is on or the project set that logger's level in ``LOGGING``.

    Django logs two INFO lines per task from its task signals; in a Ray worker they land in
    Ray's worker log files, duplicating the worker's own per-task lines, at about 0.1 ms of CPU
    a task (a quarter of a no-op task's whole cost, docs/performance.md).
    """
    import logging

    from django_ray.conf import ray_settings

    tasks_logger = logging.getLogger("django.tasks")
    if tasks_logger.level == logging.NOTSET and not ray_settings().EXECUTOR_TASK_INFO_LOGS:
        tasks_logger.setLevel(logging.WARNING)


class TaskInterrupted(BaseException):
    """Raised into a task body by whatever runs it (a timeout alarm): never the task's failure.

    :func:`run_task` lets it through so the runner reports the interruption itself.
    """


def class_path(exc_type: type[BaseException]) -> str:
    return f"{exc_type.__module__}.{exc_type.__qualname__}"


@functools.lru_cache(maxsize=64)
def _denylist(paths: tuple[str, ...]) -> tuple[type[BaseException], ...]:
    from django.utils.module_loading import import_string

    classes: list[type[BaseException]] = []
    for path in paths:
        try:
            obj = import_string(path)
        except ImportError:
            continue  # reported by the system check django_ray.E006
        if isinstance(obj, type) and issubclass(obj, BaseException):
            classes.append(obj)
    return tuple(classes)


def is_denylisted(exc: BaseException) -> bool:
    """Whether ``exc`` is an instance of a ``RETRY_EXCEPTION_DENYLIST`` class (or subclass)."""
    from django_ray.conf import ray_settings

    denied = _denylist(tuple(ray_settings().RETRY_EXCEPTION_DENYLIST))
    return bool(denied) and isinstance(exc, denied)


@functools.lru_cache(maxsize=1024)
def _import_task(callable_path: str) -> Any:
    from django_ray.task_paths import resolve_task

    return resolve_task(callable_path)


def _load_task(callable_path: str) -> Any:
    from django_ray.task_paths import module_problem

    problem = module_problem(callable_path)  # not cached: the allow-list is a setting
    if problem:
        from django_ray.errors import TaskNotRunnable

        raise TaskNotRunnable(f"{problem}.")
    return _import_task(callable_path)


def _failure(
    payload: dict[str, Any],
    exc: BaseException,
    retryable: bool,
    started: float,
    cpu_started: float,
    message: str | None = None,
) -> Outcome:
    text = message or f"{type(exc).__name__}: {exc}"
    return Outcome(
        execution_id=payload["id"],
        attempt_number=payload["attempt_number"],
        kind=OutcomeKind.FAILED,
        error_class_path=class_path(type(exc)),
        error_message=text[:MAX_ERROR_MESSAGE],
        error_traceback="".join(traceback.format_exception(exc)),
        retryable=retryable,
        duration_seconds=time.perf_counter() - started,
        cpu_seconds=time.thread_time() - cpu_started,
    )


def _task_result(task: Any, payload: dict[str, Any], status: Any) -> Any:
    from django.tasks.base import TaskResult

    return TaskResult(
        task=task,
        id=payload["task_id"],
        status=status,
        enqueued_at=payload["created_at"],
        started_at=payload["started_at"],
        finished_at=None,
        last_attempted_at=payload["started_at"],
        args=payload["args"],
        kwargs=payload["kwargs"],
        backend=payload["backend_alias"],
        errors=[],
        worker_ids=list(payload["worker_ids"]),
    )


def run_task(payload: dict[str, Any]) -> Outcome:
    """Run one claimed task (see :meth:`ClaimedTask.payload`) and report how it ended."""
    from django.db import close_old_connections
    from django.tasks.base import TaskContext, TaskResultStatus
    from django.tasks.signals import task_finished, task_started

    from django_ray.backends import RayTaskBackend
    from django_ray.serialization import NotJSONSerializable, check_json, dumps

    started = time.perf_counter()
    # This thread's CPU time: with several bodies running in threads (run_chunk), process time
    # would count the neighbours' too.
    cpu_started = time.thread_time()
    path = payload["callable_path"]
    try:
        task = _load_task(path)
    except Exception as exc:
        return _failure(
            payload,
            exc,
            retryable=False,
            started=started,
            cpu_started=cpu_started,
            message=f"Cannot load task {path!r}: {exc}",
        )
    result = _task_result(task, payload, TaskResultStatus.RUNNING)
    task_started.send(RayTaskBackend, task_result=result)
    close_old_connections()
    running = CurrentTask(payload["task_id"], payload["attempt_number"], payload["backend_alias"])
    try:
        with current.running(running):  # what django_ray.effects keys effects by
            if payload["takes_context"]:
                value = task.call(
                    TaskContext(task_result=result), *payload["args"], **payload["kwargs"]
                )
            else:
                value = task.call(*payload["args"], **payload["kwargs"])
    except (KeyboardInterrupt, TaskInterrupted):
        raise  # Ray's cancellation of this process or a timeout: the runner reports it.
    except BaseException as exc:
        outcome = _failure(
            payload,
            exc,
            retryable=not is_denylisted(exc),
            started=started,
            cpu_started=cpu_started,
        )
        object.__setattr__(result, "status", TaskResultStatus.FAILED)
        task_finished.send(RayTaskBackend, task_result=result)
        return outcome
    finally:
        close_old_connections()
    try:
        result_json = dumps(check_json(value, "return value"))
    except (NotJSONSerializable, RecursionError) as exc:
        # RecursionError too (a value whose repr or encoding recurses): it must end this one
        # task, never escape and take the whole chunk down as LOST.
        outcome = _failure(
            payload,
            exc,
            retryable=False,
            started=started,
            cpu_started=cpu_started,
            message=f"Task {path} returned a value that cannot be stored: {exc}.",
        )
        object.__setattr__(result, "status", TaskResultStatus.FAILED)
        task_finished.send(RayTaskBackend, task_result=result)
        return outcome
    object.__setattr__(result, "status", TaskResultStatus.SUCCESSFUL)
    task_finished.send(RayTaskBackend, task_result=result)
    return Outcome(
        execution_id=payload["id"],
        attempt_number=payload["attempt_number"],
        kind=OutcomeKind.SUCCEEDED,
        result_json=result_json,
        duration_seconds=time.perf_counter() - started,
        cpu_seconds=time.thread_time() - cpu_started,
    )


def warm_process(settings_module: str | None, sys_path: Sequence[str], hold: float) -> int:
    """Load Django in this Ray worker process, stay busy ``hold`` seconds, return the pid.

    Ray Core runners call it once per slot at start-up, so the processes that will run tasks are
    started (and Django imported in them) before the first task is claimed.
    """
    ensure_django(settings_module, sys_path)
    time.sleep(hold)
    return os.getpid()


def run_chunk(
    payloads: list[dict[str, Any]],
    settings_module: str | None,
    sys_path: Sequence[str],
    threads: int = 1,
) -> list[Outcome]:
    """Run several tasks of one callable in one call (one Ray round trip for all).

    With ``threads`` above 1 (the runner found the callable I/O-bound), up to that many bodies
    run at once in threads of this process: they wait on I/O, not on the CPU, so the call
    still uses one CPU at most (the GIL) and Ray's CPU accounting stays true.
    """
    ensure_django(settings_module, sys_path)
    if threads <= 1 or len(payloads) == 1:
        return [run_task(payload) for payload in payloads]
    return list(_thread_pool(threads).map(run_task, payloads))


# Kept for the life of this (Ray worker) process: its threads keep their database connections
# between calls, as the process' main thread does. One per size: RAY_THREADS_PER_CALL is one
# value per worker, so a process normally holds a single pool.
_POOLS: dict[int, ThreadPoolExecutor] = {}
_POOLS_LOCK = threading.Lock()


def _thread_pool(threads: int) -> ThreadPoolExecutor:
    with _POOLS_LOCK:
        pool = _POOLS.get(threads)
        if pool is None:
            pool = _POOLS[threads] = ThreadPoolExecutor(threads, thread_name_prefix="django-ray-io")
        return pool
