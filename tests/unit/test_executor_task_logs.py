"""Django's per-task INFO lines are quieted where task bodies run, unless asked for."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from django_ray.execution import quiet_django_task_info


@pytest.fixture
def tasks_logger() -> Iterator[logging.Logger]:
    logger = logging.getLogger("django.tasks")
    before = logger.level
    logger.setLevel(logging.NOTSET)
    yield logger
    logger.setLevel(before)


def test_django_task_info_lines_are_quieted_by_default(tasks_logger: logging.Logger) -> None:
    quiet_django_task_info()
    assert tasks_logger.level == logging.WARNING
    assert not tasks_logger.isEnabledFor(logging.INFO)
    assert tasks_logger.isEnabledFor(logging.ERROR)  # a failed task's line and traceback stay


def test_the_setting_keeps_them(settings, tasks_logger: logging.Logger) -> None:  # type: ignore[no-untyped-def]
    settings.DJANGO_RAY = {"EXECUTOR_TASK_INFO_LOGS": True}
    quiet_django_task_info()
    assert tasks_logger.level == logging.NOTSET


def test_a_level_the_project_set_in_logging_is_kept(tasks_logger: logging.Logger) -> None:
    tasks_logger.setLevel(logging.DEBUG)
    quiet_django_task_info()
    assert tasks_logger.level == logging.DEBUG
