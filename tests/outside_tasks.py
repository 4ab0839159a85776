"""A task outside ``tests.tasks``: for the ``TASK_MODULES`` allow-list tests."""

from __future__ import annotations

from django.tasks import task


@task
def outside(value: int) -> int:
    return value
