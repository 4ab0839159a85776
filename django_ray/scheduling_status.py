"""The scheduling section of ``django_ray_status``: periodic schedules, dedupe and lock keys.

:func:`collect` returns plain data (JSON-serialisable) and :func:`render` its text lines;
:mod:`django_ray.status` adds both to its report.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from django.db.models import Count, Max, Q, Sum

from django_ray.durations import format_duration
from django_ray.models import LOCK_KEY_HELD, UNIQUE_KEY_HELD, PeriodicFire, RayTaskExecution
from django_ray.models import TaskState as S
from django_ray.schedules import configured


def collect(using: str, now: datetime, periodic_tasks: dict[str, Any]) -> dict[str, Any]:
    """Schedules (last and next instant, misses) and key counts, as of ``now``."""
    fires = PeriodicFire.objects.using(using)
    history = {
        row["schedule"]: row
        for row in fires.values("schedule").annotate(
            last=Max("instant", filter=Q(task_id__isnull=False)),
            misses=Sum("skipped"),
            last_hour=Count(
                "id", filter=Q(task_id__isnull=False, fired_at__gte=now - timedelta(hours=1))
            ),
        )
    }
    schedules = []
    for schedule in configured(periodic_tasks):
        row = history.get(schedule.name, {})
        last = row.get("last")
        schedules.append(
            {
                "name": schedule.name,
                "task": schedule.task,
                "cron": schedule.cron,
                "timezone": schedule.timezone,
                "last_instant": last.isoformat() if last else None,
                "last_fire_age_seconds": round((now - last).total_seconds(), 1) if last else None,
                "next_instant": schedule.next_after(now).isoformat(),
                "fires_last_hour": int(row.get("last_hour") or 0),
                "misses": int(row.get("misses") or 0),
            }
        )
    rows = RayTaskExecution.objects.using(using)
    held_locks = rows.filter(LOCK_KEY_HELD).values("lock_key")
    return {
        "schedules": schedules,
        "unique_keys_held": rows.filter(UNIQUE_KEY_HELD).count(),
        "lock_keys_held": held_locks.count(),
        "waiting_on_lock_keys": rows.filter(state=S.QUEUED, lock_key__in=held_locks).count(),
    }


def render(section: dict[str, Any]) -> list[str]:
    """The section as report lines."""
    lines = ["", "Scheduling"]
    lines.append(
        f"  dedupe keys held: {section['unique_keys_held']}   lock keys held: "
        f"{section['lock_keys_held']}   rows waiting on a held lock key: "
        f"{section['waiting_on_lock_keys']}"
    )
    if not section["schedules"]:
        lines.append("  (no PERIODIC_TASKS)")
    for s in section["schedules"]:
        age = s["last_fire_age_seconds"]
        lines.append(
            f"  {s['name']:<24} {s['cron']:<18} {s['timezone']:<16} last "
            f"{format_duration(age) + ' ago' if age is not None else 'never':<12} next "
            f"{s['next_instant']}  fires/h {s['fires_last_hour']}  misses {s['misses']}"
        )
    return lines
