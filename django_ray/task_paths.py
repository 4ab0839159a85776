"""Which dotted paths name a task a worker may run: one rule for enqueue and execution.

``enqueue()`` refuses a path that cannot be imported, that does not name a ``Task`` (a function
decorated without binding the task to its name), or whose module is outside the optional
``DJANGO_RAY['TASK_MODULES']`` allow-list. A worker applies the same rule again before running a
row (rows can be written by other code, and settings differ between hosts): the row then ends
FAILED with the same message.
"""

from __future__ import annotations

from typing import Any

from django_ray.errors import TaskNotRunnable


def module_problem(callable_path: str) -> str | None:
    """Why ``callable_path`` is outside ``TASK_MODULES``, or None when it is allowed."""
    from django_ray.conf import ray_settings

    allowed = ray_settings().TASK_MODULES
    if allowed is None:
        return None
    module = callable_path.rsplit(".", 1)[0]
    if any(module == name or module.startswith(f"{name}.") for name in allowed):
        return None
    return (
        f"task {callable_path!r} is outside DJANGO_RAY['TASK_MODULES'] "
        f"({', '.join(allowed) or 'empty'}); add its module there or move the task into an "
        "allowed module"
    )


def resolve_task(callable_path: str, func: Any = None) -> Any:
    """The ``Task`` at ``callable_path``; raises :class:`TaskNotRunnable` saying why not.

    ``func``, when given, must be the function the task at that path wraps (enqueue checks that
    the path a worker will import leads back to the same task).
    """
    from django.tasks import Task
    from django.utils.module_loading import import_string

    problem = module_problem(callable_path)
    if problem:
        raise TaskNotRunnable(f"{problem}.")
    try:
        obj = import_string(callable_path)
    except ImportError as exc:
        raise TaskNotRunnable(
            f"task {callable_path!r} cannot be imported ({exc}). Check the dotted path, that "
            "the task is bound to that module-level name, and that the module is installed on "
            "every worker and Ray node."
        ) from exc
    if not isinstance(obj, Task) or (func is not None and obj.func is not func):
        raise TaskNotRunnable(
            f"{callable_path!r} is a {type(obj).__name__}, not a Task; decorate the function "
            "with @django.tasks.task and keep the decorated name (my_task = task(f) under "
            "another name leaves the plain function at that path)."
        )
    return obj
