"""django-ray: a Django 6 Tasks backend that runs tasks on Ray, with PostgreSQL as the record."""

__version__ = "0.1.0"


def cancel_task(task_id: str, using: str = "default") -> str:
    """Cancel a task by its ``TaskResult.id``; return its new state.

    QUEUED becomes CANCELLED at once; RUNNING becomes CANCELLING and the worker that runs it
    stops the Ray task or Ray Job and records CANCELLED (a CANCELLING row whose worker died is
    finished by another worker). A finished task raises
    :class:`django_ray.lifecycle.IllegalTransition`; an unknown id raises
    ``RayTaskExecution.DoesNotExist``.
    """
    from django_ray.lifecycle.operator import request_cancel

    return request_cancel(task_id, using=using)


class TaskTimedOut(TimeoutError):
    """An attempt ran past its ``timeout_seconds`` (the class path timed-out attempts record).

    Put ``"django_ray.TaskTimedOut"`` in ``RETRY_EXCEPTION_DENYLIST`` to make a timeout final
    instead of retried (``"builtins.TimeoutError"`` there covers it too: it is a subclass).
    """
