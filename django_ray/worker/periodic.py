"""The worker's side of periodic tasks: notice when a schedule's next instant has come.

Every worker runs this; which one enqueues an instant is settled in the database
(:mod:`django_ray.lifecycle.periodic`). In memory there is only a hint, each schedule's next
instant, so a worker touches the database for a schedule only when something may be due.
"""

from __future__ import annotations

import logging
from datetime import datetime

from django.db import DatabaseError
from django.utils import timezone

from django_ray import schedules
from django_ray.lifecycle import periodic
from django_ray.metrics import worker as worker_metrics

logger = logging.getLogger("django_ray.worker")


class PeriodicScheduler:
    """Fires the due instants of ``DJANGO_RAY["PERIODIC_TASKS"]`` from one worker."""

    def __init__(self, value: dict, catchup_seconds: float, worker_id: str) -> None:
        self.schedules = schedules.configured(value)
        self.catchup = catchup_seconds
        self.worker_id = worker_id
        # A schedule that never fired starts from this worker's start: no back-fill on deploy.
        self.started = timezone.now()
        self._next: dict[str, datetime] = {s.name: self.started for s in self.schedules}
        self._using = {s.name: periodic.database_of(s) for s in self.schedules}

    def tick(self, now: datetime | None = None) -> int:
        """Fire what is due; return the number of instants this worker enqueued."""
        now = now or timezone.now()
        total = 0
        for schedule in self.schedules:
            if now < self._next[schedule.name]:
                continue
            self._next[schedule.name] = schedule.next_after(now)
            try:
                report = periodic.fire_due(
                    schedule,
                    now,
                    self.started,
                    self.catchup,
                    self.worker_id,
                    self._using[schedule.name],
                )
            except DatabaseError:
                raise  # the loop's handling: database down, or a statement refused
            except Exception as exc:
                # The task refused its arguments, say: nothing was recorded, so the instant is
                # tried again next time (while it stays in the catch-up window).
                logger.error(
                    "periodic schedule %s: could not enqueue %s (%s: %s)",
                    schedule.name,
                    schedule.task,
                    type(exc).__name__,
                    exc,
                    extra={"worker_id": self.worker_id},
                )
                continue
            if report.skipped:
                logger.warning(
                    "periodic schedule %s: skipped %s instant(s) older than "
                    "PERIODIC_CATCHUP_SECONDS (%ss)",
                    schedule.name,
                    report.skipped,
                    self.catchup,
                    extra={"worker_id": self.worker_id},
                )
            for instant in report.fired:
                logger.info(
                    "periodic schedule %s: enqueued %s for %s",
                    schedule.name,
                    schedule.task,
                    instant.isoformat(),
                    extra={"worker_id": self.worker_id},
                )
            last = report.fired[-1].timestamp() if report.fired else None
            worker_metrics.record_periodic(schedule.name, len(report.fired), report.skipped, last)
            total += len(report.fired)
        return total

    def seconds_to_next(self, now: datetime | None = None) -> float | None:
        """How long the idle wait may last before a schedule is due (None: no schedules)."""
        if not self.schedules:
            return None
        now = now or timezone.now()
        return max(0.0, (min(self._next.values()) - now).total_seconds())
