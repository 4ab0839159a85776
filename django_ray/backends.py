"""``RayTaskBackend``: the Django Tasks backend. ``enqueue`` writes a row and never talks to Ray.

Configure it in ``TASKS``::

    TASKS = {
        "default": {
            "BACKEND": "django_ray.backends.RayTaskBackend",
            "QUEUES": ["default", "emails"],
            "OPTIONS": {"timeout_seconds": 600, "max_attempts": 5},
        }
    }
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from asgiref.sync import sync_to_async
from django.core import checks
from django.tasks import Task
from django.tasks.backends.base import BaseTaskBackend
from django.tasks.base import TaskError, TaskResult, TaskResultStatus
from django.tasks.exceptions import InvalidTask, TaskResultDoesNotExist
from django.tasks.signals import task_enqueued
from django.utils import timezone
from django.utils.module_loading import import_string

from django_ray import on_commit, ray_options
from django_ray.conf import ray_settings
from django_ray.errors import (
    ArgumentsTooLarge,
    InvalidTaskArguments,
    ResultNotKept,
    TaskNotEnqueuedYet,
)
from django_ray.lifecycle import insert, unique
from django_ray.models import KEY_MAX_LENGTH, RayTaskExecution, TaskAttempt, TaskState
from django_ray.serialization import NotJSONSerializable, check_json, dumps
from django_ray.task_paths import resolve_task

STATUS_BY_STATE: dict[str, TaskResultStatus] = {
    TaskState.QUEUED: TaskResultStatus.READY,
    TaskState.RUNNING: TaskResultStatus.RUNNING,
    TaskState.CANCELLING: TaskResultStatus.RUNNING,
    TaskState.SUCCEEDED: TaskResultStatus.SUCCESSFUL,
    TaskState.FAILED: TaskResultStatus.FAILED,
    TaskState.CANCELLED: TaskResultStatus.FAILED,
    TaskState.LOST: TaskResultStatus.FAILED,
}


@dataclass(frozen=True, slots=True, kw_only=True)
class RayTask(Task):
    """A Django ``Task`` with django-ray's per-task options.

    ``@task(timeout_seconds=30, max_attempts=5)`` or ``my_task.using(timeout_seconds=30)``.
    ``unique_key`` dedupes enqueues (``unique_while_running``: also while one runs) and
    ``lock_key`` serializes runs; see ``docs/scheduling.md``. ``num_cpus``, ``num_gpus``,
    ``memory`` (bytes), ``resources`` (custom, ``{"name": amount}``) and ``runtime_env`` are
    what Ray gives the task (over its queue's ``QUEUE_RESOURCES``); see ``docs/resources.md``.
    """

    timeout_seconds: float | None = None
    max_attempts: int | None = None
    unique_key: str | None = None
    unique_while_running: bool = False
    lock_key: str | None = None
    num_cpus: float | None = None
    num_gpus: float | None = None
    memory: int | None = None
    resources: dict[str, float] | None = None
    runtime_env: dict[str, Any] | None = None

    def ray_options(self) -> dict[str, Any]:
        """The Ray options this task sets itself (its queue's defaults not included)."""
        return {
            key: getattr(self, key)
            for key in ray_options.OPTION_KEYS
            if getattr(self, key) is not None
        }

    def using(  # type: ignore[override]
        self,
        *,
        priority: int | None = None,
        queue_name: str | None = None,
        run_after: datetime | None = None,
        backend: str | None = None,
        timeout_seconds: float | None = None,
        max_attempts: int | None = None,
        unique_key: str | None = None,
        unique_while_running: bool | None = None,
        lock_key: str | None = None,
        num_cpus: float | None = None,
        num_gpus: float | None = None,
        memory: int | None = None,
        resources: dict[str, float] | None = None,
        runtime_env: dict[str, Any] | None = None,
    ) -> RayTask:
        changed = Task.using(
            self, priority=priority, queue_name=queue_name, run_after=run_after, backend=backend
        )
        options = {
            "timeout_seconds": timeout_seconds,
            "max_attempts": max_attempts,
            "unique_key": unique_key,
            "unique_while_running": unique_while_running,
            "lock_key": lock_key,
            "num_cpus": num_cpus,
            "num_gpus": num_gpus,
            "memory": memory,
            "resources": resources,
            "runtime_env": runtime_env,
        }
        extra = {name: value for name, value in options.items() if value is not None}
        return replace(changed, **extra) if extra else changed  # type: ignore[return-value]

    def enqueue_on_commit(self, *args: Any, **kwargs: Any) -> str:
        """Enqueue when the current transaction of the backend's database commits.

        Checks the task and its arguments now (bad ones raise here), returns the id the row will
        have, and writes nothing if the transaction rolls back. Without an open transaction
        (autocommit) it enqueues at once, like ``enqueue()``. See ``docs/enqueue-on-commit.md``.
        """
        return _on_commit_backend(self).enqueue_on_commit(self, args, kwargs)

    async def aenqueue_on_commit(self, *args: Any, **kwargs: Any) -> str:
        """The async twin of :meth:`enqueue_on_commit` (the transaction of the sync thread)."""
        return await _on_commit_backend(self).aenqueue_on_commit(self, args, kwargs)


def _on_commit_backend(task: Task) -> RayTaskBackend:
    backend = task.get_backend()
    if not isinstance(backend, RayTaskBackend):
        raise InvalidTask(
            f"enqueue_on_commit needs a RayTaskBackend, but {task.module_path} uses backend "
            f"{task.backend!r} ({type(backend).__name__}): use .using(backend=...) with a "
            "django-ray backend, or wrap enqueue() in transaction.on_commit() yourself."
        )
    return backend


@dataclass(frozen=True, slots=True, kw_only=True)
class RayTaskResult(TaskResult):
    """Django's ``TaskResult``; reading the value of a result that was not kept raises."""

    @property
    def return_value(self) -> Any:
        value = TaskResult.return_value.fget(self)  # type: ignore[attr-defined]
        if isinstance(value, _NotKept):
            raise ResultNotKept(
                f"Task {self.id} succeeded, but its return value was larger than "
                "DJANGO_RAY['MAX_RESULT_SIZE_BYTES'] and RESULT_STORAGE_BACKEND is 'digest', "
                f"so only its digest was kept ({value.reference}). Raise MAX_RESULT_SIZE_BYTES "
                "or set RESULT_STORAGE_BACKEND to 'filesystem', 's3' or 'gcs' to keep such "
                "values, or return a reference to data the task stored itself."
            )
        return value


@dataclass(frozen=True, slots=True)
class _NotKept:
    """Stands in for a return value that was not stored (``oversize://`` reference)."""

    reference: str


def _check_key(option: str, key: object) -> None:
    """A dedupe or lock key must be a non-empty string of at most KEY_MAX_LENGTH characters."""
    if key is None:
        return
    if not isinstance(key, str) or not key.strip():
        raise InvalidTask(
            f"{option} must be a non-empty string, not {key!r}: build it from the arguments, "
            f"e.g. .using({option}=f'invoice-{{invoice_id}}')."
        )
    if len(key) > KEY_MAX_LENGTH:
        raise InvalidTask(
            f"{option} is {len(key)} characters long, more than {KEY_MAX_LENGTH}: shorten it, or "
            "hash the long part (e.g. hashlib.sha256(text.encode()).hexdigest())."
        )


@functools.lru_cache(maxsize=1024)
def _task_function(callable_path: str) -> Any:
    task = import_string(callable_path)
    return task.func if isinstance(task, Task) else task


class RayTaskBackend(BaseTaskBackend):
    """Stores each task as a ``RayTaskExecution`` row; ``django_ray_worker`` runs them on Ray."""

    task_class = RayTask
    supports_defer = True
    supports_async_task = True
    supports_get_result = True
    supports_priority = True

    def __init__(self, alias: str, params: dict[str, Any]) -> None:
        super().__init__(alias, params)
        self.default_timeout: float | None = self.options.get("timeout_seconds")
        self.default_max_attempts: int | None = self.options.get("max_attempts")
        self.database: str = self.options.get("database", "default")
        self._queues_setting: Any = params.get("QUEUES")

    # -- validation -------------------------------------------------------------------------

    def validate_task(self, task: Task) -> None:
        super().validate_task(task)
        timeout = getattr(task, "timeout_seconds", None)
        if timeout is not None and (
            isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0
        ):
            raise InvalidTask(
                f"timeout_seconds must be a positive number of seconds, not {timeout!r}."
            )
        attempts = getattr(task, "max_attempts", None)
        if attempts is not None and (
            isinstance(attempts, bool) or not isinstance(attempts, int) or attempts < 1
        ):
            raise InvalidTask(
                f"max_attempts must be a whole number of at least 1, not {attempts!r}."
            )
        for option in ("unique_key", "lock_key"):
            _check_key(option, getattr(task, option, None))
        while_running = getattr(task, "unique_while_running", False)
        if not isinstance(while_running, bool):
            raise InvalidTask(f"unique_while_running must be True or False, not {while_running!r}.")
        if while_running and getattr(task, "unique_key", None) is None:
            raise InvalidTask(
                "unique_while_running=True needs a unique_key: set both, e.g. "
                ".using(unique_key='report-42', unique_while_running=True)."
            )
        if isinstance(task, RayTask):
            found = ray_options.problem(task.ray_options())
            if found:
                raise InvalidTask(
                    f"Bad Ray options on {task.module_path}: {found} (docs/resources.md)."
                )

    def check(self, **kwargs: Any) -> list[checks.CheckMessage]:
        errors: list[checks.CheckMessage] = []
        queues = self._queues_setting
        if queues is not None and (
            isinstance(queues, str | bytes)
            or not isinstance(queues, list | tuple | set | frozenset)
            or not all(isinstance(q, str) and q for q in queues)
        ):
            errors.append(
                checks.Error(
                    f"TASKS[{self.alias!r}]['QUEUES'] must be a list of queue names, not "
                    f"{queues!r}.",
                    hint=f"Write 'QUEUES': [{queues!r}]"
                    if isinstance(queues, str)
                    else "Write e.g. 'QUEUES': ['default', 'emails'].",
                    id="django_ray.E023",
                )
            )
        timeout = self.options.get("timeout_seconds")
        if timeout is not None and (
            isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0
        ):
            errors.append(
                checks.Error(
                    f"TASKS[{self.alias!r}]['OPTIONS']['timeout_seconds'] must be a positive "
                    f"number, not {timeout!r}.",
                    hint="Write e.g. 'timeout_seconds': 600, or remove it for no timeout.",
                    id="django_ray.E020",
                )
            )
        attempts = self.options.get("max_attempts")
        if attempts is not None and (
            isinstance(attempts, bool) or not isinstance(attempts, int) or attempts < 1
        ):
            errors.append(
                checks.Error(
                    f"TASKS[{self.alias!r}]['OPTIONS']['max_attempts'] must be an int >= 1, "
                    f"not {attempts!r}.",
                    hint="Write e.g. 'max_attempts': 3, or remove it to use MAX_TASK_ATTEMPTS.",
                    id="django_ray.E021",
                )
            )
        unknown = set(self.options) - {"timeout_seconds", "max_attempts", "database"}
        if unknown:
            errors.append(
                checks.Error(
                    f"TASKS[{self.alias!r}]['OPTIONS'] has unknown keys: {', '.join(sorted(unknown))}.",
                    hint="RayTaskBackend accepts timeout_seconds, max_attempts and database.",
                    id="django_ray.E022",
                )
            )
        return errors

    # -- enqueue ----------------------------------------------------------------------------

    def _checked_arguments(
        self, task: Task, args: Sequence[Any], kwargs: dict[str, Any]
    ) -> tuple[list[Any], dict[str, Any]]:
        checked_args, checked_kwargs, _, _ = self._checked_json(task, args, kwargs)
        return checked_args, checked_kwargs

    def _checked_json(
        self, task: Task, args: Sequence[Any], kwargs: dict[str, Any]
    ) -> tuple[list[Any], dict[str, Any], str, str]:
        """The checked arguments and their JSON text (checked once, serialized once)."""
        try:
            checked_args = check_json(list(args), "args")
            checked_kwargs = check_json(dict(kwargs), "kwargs")
        except NotJSONSerializable as exc:
            raise InvalidTaskArguments(
                f"Cannot enqueue {task.module_path}: argument {exc.path} {exc.problem}."
            ) from exc
        limit = int(ray_settings().MAX_ARGS_SIZE_BYTES)
        args_json, kwargs_json = dumps(checked_args), dumps(checked_kwargs)
        size = len(args_json.encode()) + len(kwargs_json.encode())
        if size > limit:
            raise ArgumentsTooLarge(
                f"Cannot enqueue {task.module_path}: its arguments are {size} bytes of JSON, "
                f"more than DJANGO_RAY['MAX_ARGS_SIZE_BYTES'] ({limit}). Pass an id or a "
                "storage reference and load the data in the task, or raise the limit."
            )
        return checked_args, checked_kwargs, args_json, kwargs_json

    def _new_row(
        self,
        task: Task,
        args: list[Any],
        kwargs: dict[str, Any],
        now: datetime,
        task_id: str | None = None,
    ) -> RayTaskExecution:
        timeout = (
            getattr(task, "timeout_seconds", None)
            or self.default_timeout
            or ray_settings().DEFAULT_TIMEOUT_SECONDS
        )
        return RayTaskExecution(
            task_id=task_id or uuid.uuid4().hex,
            callable_path=task.module_path,
            backend_alias=self.alias,
            queue_name=task.queue_name,
            state=TaskState.QUEUED,
            priority=task.priority,
            takes_context=task.takes_context,
            args=args,
            kwargs=kwargs,
            max_attempts=getattr(task, "max_attempts", None) or self.default_max_attempts,
            run_after=task.run_after or now,
            requested_run_after=task.run_after,
            created_at=now,
            timeout_seconds=timeout,
            unique_key=getattr(task, "unique_key", None),
            unique_while_running=getattr(task, "unique_while_running", False),
            lock_key=getattr(task, "lock_key", None),
            ray_options=ray_options.merged(
                ray_settings().QUEUE_RESOURCES.get(task.queue_name),
                task.ray_options() if isinstance(task, RayTask) else {},
            ),
        )

    def _checked_call(
        self, task: Task, args: Sequence[Any], kwargs: dict[str, Any]
    ) -> tuple[list[Any], dict[str, Any]]:
        """Every check of one enqueue, before anything is written."""
        self.validate_task(task)
        # Not in validate_task: Django validates at decoration, before the name is bound.
        resolve_task(task.module_path, task.func)
        return self._checked_arguments(task, args, kwargs)

    def enqueue(self, task: Task, args: Sequence[Any], kwargs: dict[str, Any]) -> TaskResult:
        """Write one QUEUED row (committed with the caller's transaction) and return its result."""
        checked_args, checked_kwargs = self._checked_call(task, args, kwargs)
        return self._write(task, self._new_row(task, checked_args, checked_kwargs, timezone.now()))

    def enqueue_on_commit(self, task: Task, args: Sequence[Any], kwargs: dict[str, Any]) -> str:
        """Check now, write the row when this backend's database commits; return its id.

        The row is stamped (``created_at``, due time) at commit. With a ``unique_key`` that
        another row holds at commit nothing is written, as with ``enqueue()``, and the returned
        id names no row (in autocommit the holder's id is returned). See
        ``docs/enqueue-on-commit.md``.
        """
        checked_args, checked_kwargs = self._checked_call(task, args, kwargs)
        task_id = uuid.uuid4().hex

        def write() -> TaskResult:
            row = self._new_row(task, checked_args, checked_kwargs, timezone.now(), task_id)
            return self._write(task, row)

        return on_commit.defer(task_id, write, self.database)

    async def aenqueue_on_commit(
        self, task: Task, args: Sequence[Any], kwargs: dict[str, Any]
    ) -> str:
        """:meth:`enqueue_on_commit` in the sync thread, whose transaction it joins."""
        return await sync_to_async(self.enqueue_on_commit, thread_sensitive=True)(
            task, args, kwargs
        )

    def _write(self, task: Task, row: RayTaskExecution) -> TaskResult:
        """Insert a checked row (or find the holder of its unique key) and announce it."""
        if row.unique_key is None:
            insert.insert(row, self.database)
        else:
            row, created = unique.insert_unique(row, self.database)
            if not created:
                # Nothing was enqueued: the caller gets the row that holds the key.
                return self._result_from_row(row)
        result = self._result_from_row(row, task=task)
        task_enqueued.send(type(self), task_result=result)
        return result

    def enqueue_many(
        self,
        task: Task,
        calls: Iterable[tuple[Sequence[Any], dict[str, Any]]],
        batch_size: int = 1000,
    ) -> list[TaskResult]:
        """Enqueue many calls of one task in few statements (bulk insert), atomically.

        ``calls`` is an iterable of ``(args, kwargs)`` pairs. Every argument is checked first,
        so one bad call rejects the whole batch before anything is written.
        """
        self.validate_task(task)
        if getattr(task, "unique_key", None) is not None:
            # One key for every call: the first call enqueues, the others get its result.
            return [self.enqueue(task, args, kwargs) for args, kwargs in calls]
        resolve_task(task.module_path, task.func)
        checked = [
            (uuid.uuid4().hex, *self._checked_json(task, args, kwargs)) for args, kwargs in calls
        ]
        now = timezone.now()
        template = self._new_row(task, [], {}, now, task_id="")
        insert.insert_many(template, checked, self.database, batch_size)
        results = [
            self._result_from_row(template, task=task, new=(task_id, args, kwargs))
            for task_id, args, kwargs, _, _ in checked
        ]
        for result in results:
            task_enqueued.send(type(self), task_result=result)
        return results

    # -- results ----------------------------------------------------------------------------

    def get_result(self, result_id: str) -> TaskResult:
        try:
            row = RayTaskExecution.objects.using(self.database).get(task_id=result_id)
        except RayTaskExecution.DoesNotExist:
            if on_commit.is_pending(result_id, self.database):
                raise TaskNotEnqueuedYet(
                    f"{result_id} is enqueued on commit: its row is written when the current "
                    f"transaction on database {self.database!r} commits, and it has not yet. "
                    "Read the result after the commit (e.g. from transaction.on_commit)."
                ) from None
            raise TaskResultDoesNotExist(result_id) from None
        errors = [
            TaskError(
                exception_class_path=a.error_class_path or "builtins.Exception",
                traceback=a.error_traceback or a.error_message or "",
            )
            for a in TaskAttempt.objects.using(self.database)
            .filter(execution_id=row.pk)
            .exclude(error_class_path__isnull=True)
            .order_by("attempt_number")
        ]
        return self._result_from_row(row, errors=errors)

    def _task_for_row(self, row: RayTaskExecution) -> Task:
        try:
            func = _task_function(row.callable_path)
        except (ImportError, AttributeError) as exc:
            raise TaskResultDoesNotExist(
                f"{row.task_id}: its callable {row.callable_path!r} cannot be imported ({exc})."
            ) from exc
        return RayTask(
            func=func,
            priority=row.priority,
            backend=row.backend_alias,
            queue_name=row.queue_name,
            run_after=row.requested_run_after,
            takes_context=row.takes_context,
            timeout_seconds=row.timeout_seconds,
            max_attempts=row.max_attempts,
            unique_key=row.unique_key,
            # A requeued row that gave up its key (docs/scheduling.md) keeps the flag alone.
            unique_while_running=row.unique_while_running and row.unique_key is not None,
            lock_key=row.lock_key,
            # Only the known keys: a hand-edited row must not make its result unreadable.
            **{k: v for k, v in (row.ray_options or {}).items() if k in ray_options.OPTION_KEYS},
        )

    def _result_from_row(
        self,
        row: RayTaskExecution,
        task: Task | None = None,
        errors: list[TaskError] | None = None,
        new: tuple[str, list[Any], dict[str, Any]] | None = None,
    ) -> TaskResult:
        """The result of ``row``; ``new``: of the row ``(task_id, args, kwargs)`` inserted
        from the ``row`` template (``enqueue_many`` builds no model per row)."""
        task_id, args, kwargs = new or (row.task_id, row.args, row.kwargs)
        result = RayTaskResult(
            task=task or self._task_for_row(row),
            id=task_id,
            status=STATUS_BY_STATE[row.state],
            enqueued_at=row.created_at,
            started_at=row.started_at,
            finished_at=row.finished_at,
            last_attempted_at=row.last_attempted_at or row.started_at,
            args=args,
            kwargs=kwargs,
            backend=self.alias,
            errors=errors or [],
            worker_ids=list(row.worker_ids),
        )
        if row.state == TaskState.SUCCEEDED:
            value = row.result_data
            if row.result_reference:
                from django_ray.results import load_result

                if row.result_reference.startswith("oversize://"):
                    # Metadata only: the status and errors stay readable; reading the value
                    # raises (RayTaskResult.return_value), so it never reads as a real None.
                    value = _NotKept(row.result_reference)
                else:
                    value = load_result(row.result_reference)
            object.__setattr__(result, "_return_value", value)
        return result
