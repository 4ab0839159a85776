"""The Ray resources section of ``django_ray_status`` (``docs/resources.md``).

:func:`collect` returns plain data (JSON-serialisable) and :func:`render` its text lines;
:mod:`django_ray.status` adds both to its report: the queues' default Ray options, the options
of queued and running tasks, and tasks that ended FAILED because no node offers what they ask.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

from django.db.models import Count, Q

from django_ray.models import RayTaskExecution
from django_ray.models import TaskState as S
from django_ray.ray_options import UNSCHEDULABLE

#: Most distinct option sets listed (the rest are counted together).
SHOWN = 10


def collect(using: str, now: datetime, queue_resources: dict[str, Any]) -> dict[str, Any]:
    """Queue defaults, open tasks by Ray options, and unschedulable failures of the last hour."""
    rows = RayTaskExecution.objects.using(using)
    open_rows = (
        rows.filter(state__in=[S.QUEUED, S.RUNNING], ray_options__isnull=False)
        .values("ray_options")
        .annotate(
            queued=Count("id", filter=Q(state=S.QUEUED)),
            running=Count("id", filter=Q(state=S.RUNNING)),
        )
        .order_by("-queued", "-running")
    )
    by_options = [
        {"options": row["ray_options"], "queued": row["queued"], "running": row["running"]}
        for row in open_rows[: SHOWN + 1]
    ]
    unschedulable = rows.filter(
        state=S.FAILED, error_class_path=UNSCHEDULABLE, finished_at__gte=now - timedelta(hours=1)
    )
    latest = unschedulable.order_by("-finished_at").values("task_id", "error_message").first()
    return {
        "queue_defaults": dict(queue_resources),
        "open_by_options": by_options[:SHOWN],
        "more_option_sets": len(by_options) > SHOWN,
        "unschedulable_last_hour": unschedulable.count(),
        "latest_unschedulable": latest,
    }


def render(section: dict[str, Any]) -> list[str]:
    """The section as text lines."""
    lines = ["", "Ray resources (docs/resources.md)"]
    for queue, options in sorted(section["queue_defaults"].items()):
        lines.append(f"  queue {queue!r} default: {json.dumps(options, sort_keys=True)}")
    for row in section["open_by_options"]:
        lines.append(
            f"  {row['queued']:>6} queued {row['running']:>6} running  "
            + json.dumps(row["options"], sort_keys=True)[:200]
        )
    if section["more_option_sets"]:
        lines.append(f"  (more than {SHOWN} option sets; the admin lists every row's options)")
    if not section["queue_defaults"] and not section["open_by_options"]:
        lines.append("  (no queue defaults; no queued or running task sets Ray options)")
    count = section["unschedulable_last_hour"]
    lines.append(f"  FAILED as unschedulable in the last hour: {count}")
    latest = section["latest_unschedulable"]
    if latest:
        lines.append(f"  latest ({latest['task_id']}): {(latest['error_message'] or '')[:300]}")
    return lines
