"""The effects section of ``django_ray_status``: how many exactly-once effects tasks recorded.

:func:`collect` returns plain data (JSON-serialisable) and :func:`render` its text lines;
:mod:`django_ray.status` adds both to its report.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from django.db.models import Count, Q

from django_ray.models import TaskEffect


def collect(using: str, now: datetime) -> dict[str, Any]:
    """Effect records in total and in the last hour, and the tasks that hold them."""
    counts = TaskEffect.objects.using(using).aggregate(
        total=Count("id"),
        last_hour=Count("id", filter=Q(applied_at__gte=now - timedelta(hours=1))),
        tasks=Count("execution", distinct=True),
    )
    return {name: int(value or 0) for name, value in counts.items()}


def render(section: dict[str, Any]) -> list[str]:
    """The section as report lines."""
    return [
        "",
        "Effects (effect_once records)",
        f"  recorded: {section['total']}   last hour: {section['last_hour']}   "
        f"tasks with effects: {section['tasks']}",
    ]
