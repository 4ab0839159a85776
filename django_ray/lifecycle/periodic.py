"""Periodic tasks: enqueue each due instant of a schedule exactly once across all workers.

A worker calls :func:`fire_due` for a schedule whose next instant has come. In one transaction
it reads the schedule's latest recorded instant, inserts one :class:`PeriodicFire` row per due
instant and enqueues the task for each; the unique (schedule, instant) pair refuses a second
fire of an instant, and the task row commits with its fire row or not at all (a worker killed
mid-way leaves nothing, and the next worker fires the instant). Instants older than
``PERIODIC_CATCHUP_SECONDS`` are not enqueued: one marker row counts them.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.db import IntegrityError, transaction
from django.db.models import Max
from django.tasks import task_backends
from django.utils.module_loading import import_string

from django_ray.lifecycle import statements
from django_ray.models import PeriodicFire
from django_ray.schedules import Schedule

#: Fire rows are kept at least this long (and twice the catch-up window): the admin's and
#: django_ray_status's history of a schedule.
HISTORY_SECONDS = 86_400.0

#: First half of the per-schedule advisory lock (the second is the schedule name's hash).
LOCK_SPACE = zlib.crc32(b"django_ray.periodic") - 2**31


@dataclass
class FireReport:
    """What one :func:`fire_due` call did for a schedule."""

    fired: list[datetime] = field(default_factory=list)
    skipped: int = 0
    busy: bool = False  # another worker was firing this schedule


def database_of(schedule: Schedule) -> str:
    """The database alias of the schedule's task backend (fire rows live beside its rows)."""
    task = import_string(schedule.task)
    return getattr(task_backends[task.backend], "database", "default")


def fire_due(
    schedule: Schedule,
    now: datetime,
    since: datetime,
    catchup_seconds: float,
    worker_id: str,
    using: str,
) -> FireReport:
    """Fire the instants of ``schedule`` due at ``now``; ``since`` bounds the first ever fire."""
    report = FireReport()
    task = import_string(schedule.task)
    with transaction.atomic(using=using):
        if statements.is_postgres(using):
            [(locked,)] = statements.fetchall(
                "periodic_lock", {"space": LOCK_SPACE, "schedule": schedule.name}, using
            )
            if not locked:
                report.busy = True
                return report
        fires = PeriodicFire.objects.using(using)
        last = fires.filter(schedule=schedule.name).aggregate(m=Max("instant"))["m"] or since
        window = now - timedelta(seconds=catchup_seconds)
        skipped: datetime | None = None
        for instant in schedule.instants(last, now):
            if instant < window:
                report.skipped += 1
                skipped = instant
                continue
            if _insert(schedule, instant, worker_id, using):
                result = task.enqueue(*schedule.args, **schedule.kwargs)
                fires.filter(schedule=schedule.name, instant=instant).update(task_id=result.id)
                report.fired.append(instant)
        if skipped is not None:
            _insert(schedule, skipped, worker_id, using, report.skipped)
        if report.fired:
            # History beyond the retention goes; the latest row stays (it is where firing resumes).
            cutoff = now - timedelta(seconds=max(2 * catchup_seconds, HISTORY_SECONDS))
            fires.filter(schedule=schedule.name, instant__lt=cutoff).exclude(
                instant=report.fired[-1]
            ).delete()
    return report


def _insert(
    schedule: Schedule, instant: datetime, worker_id: str, using: str, skipped: int = 0
) -> bool:
    # A savepoint, so a refused duplicate leaves the rest of the transaction usable.
    try:
        with transaction.atomic(using=using):
            PeriodicFire.objects.using(using).create(
                schedule=schedule.name, instant=instant, worker_id=worker_id, skipped=skipped
            )
        return True
    except IntegrityError:
        return False
