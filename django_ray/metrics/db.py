"""Database gauges for Prometheus: the runbook's signals, read with one query per scrape.

:class:`DatabaseCollector` is a ``prometheus_client`` custom collector. Each scrape runs a single
SQL statement (a ``UNION ALL`` of small aggregates) over ``django_ray_raytaskexecution`` and
``django_ray_taskworkerlease`` and turns the rows into these families:

- ``django_ray_tasks_total{state}`` (untyped): rows in each state, all seven states listed
- ``django_ray_tasks_queued``, ``django_ray_tasks_running``: QUEUED and RUNNING rows
- ``django_ray_queue_depth{queue}``: QUEUED rows per queue (due and deferred)
- ``django_ray_queue_due_tasks{queue}``: QUEUED rows already due, per queue
- ``django_ray_queue_oldest_due_age_seconds{queue}``: how long the oldest due row has waited
- ``django_ray_tasks_retry_waiting``: QUEUED rows that already had an attempt
- ``django_ray_callable_failed_tasks{callable_path,state}``: FAILED/LOST rows per callable
- ``django_ray_callable_recent_failures{callable_path,state}``: the same, finished recently
- ``django_ray_tasks_oldest_heartbeat_age_seconds{state}``: RUNNING/CANCELLING heartbeat age
- ``django_ray_tasks_orphaned{state}``: the rows recovery takes over at its next pass
  (``RayTaskExecution.objects.orphaned``: no live lease, no heartbeat for
  ``STUCK_TASK_TIMEOUT_SECONDS``, Ray Jobs' adoption grace over), compiled into the scrape
- ``django_ray_tasks_last_finished_timestamp_seconds``: newest ``finished_at``
- ``django_ray_worker_leases{status}``: leases active, stale (active but expired), inactive
- ``django_ray_worker_lease_oldest_heartbeat_age_seconds``: oldest active lease heartbeat
- ``django_ray_periodic_last_fire_timestamp_seconds{schedule}``: the latest instant enqueued
- ``django_ray_periodic_misses{schedule}``: instants skipped (older than the catch-up window)
  in the schedule's kept history (``docs/scheduling.md``)
- ``django_ray_metrics_db_up``, ``django_ray_metrics_query_duration_seconds``: the scrape itself

``django_ray_tasks_total`` keeps the runbook's name. It counts rows, which can go down, so it is
exposed as *untyped* rather than as a counter (Prometheus convention reserves ``_total`` for
counters; untyped metrics are exempt from that lint).

Cost: two sequential scans of the executions table per scrape (state counts; FAILED/LOST by
callable, which uses the ``(state, finished_at)`` index when failures are a small share). Measured
on a busy 2-core machine: ~0.35 s at 300k rows, ~1 s at 1M rows. Keep the table small with
``django_ray_prune`` and scrape every 15-30 s.

``callable_path`` labels are bounded: the ``max_callables`` callables with the most recent
failures (then most failures overall) are named, the rest are summed as ``__other__``.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections import defaultdict
from collections.abc import Iterator
from typing import Any

from prometheus_client.core import GaugeMetricFamily, Metric, UnknownMetricFamily
from prometheus_client.registry import Collector

from django_ray.models import OWNED_STATES as _OWNED
from django_ray.models import TaskState

logger = logging.getLogger("django_ray.metrics")

STATES = tuple(str(s) for s in TaskState)
OWNED_STATES = tuple(str(s) for s in _OWNED)
OTHER_CALLABLES = "__other__"

#: The statement run per scrape, before the orphans' branch (:meth:`DatabaseCollector.orphans`).
#: Parameters: now, now, recent_since, now.
SCRAPE_SQL = """
SELECT 'state' AS kind, state AS a, queue_name AS b,
       COUNT(*) AS n,
       SUM(CASE WHEN run_after <= %s THEN 1 ELSE 0 END) AS due,
       SUM(CASE WHEN attempt_number > 0 THEN 1 ELSE 0 END) AS retried,
       MIN(CASE WHEN run_after <= %s THEN run_after END) AS oldest_due,
       MIN(last_heartbeat_at) AS oldest_heartbeat,
       MAX(finished_at) AS last_finished
FROM django_ray_raytaskexecution
GROUP BY state, queue_name
UNION ALL
SELECT 'failed', callable_path, state,
       COUNT(*),
       SUM(CASE WHEN COALESCE(finished_at, last_heartbeat_at, started_at, created_at) >= %s
           THEN 1 ELSE 0 END),
       0, NULL, NULL, NULL
FROM django_ray_raytaskexecution
WHERE state IN ('FAILED', 'LOST')
GROUP BY callable_path, state
UNION ALL
SELECT 'lease',
       CASE WHEN NOT is_active THEN 'inactive' WHEN expires_at < %s THEN 'stale' ELSE 'active' END,
       NULL, COUNT(*), 0, 0, NULL, MIN(last_heartbeat_at), NULL
FROM django_ray_taskworkerlease
GROUP BY 2
UNION ALL
SELECT 'periodic', schedule, NULL, SUM(skipped), 0, 0, NULL, NULL,
       MAX(CASE WHEN task_id IS NOT NULL THEN instant END)
FROM django_ray_periodicfire
GROUP BY schedule
"""


def _as_datetime(value: Any) -> dt.datetime | None:
    """Timestamps come back as datetimes (PostgreSQL) or strings (SQLite through a raw cursor)."""
    if value is None:
        return None
    if isinstance(value, str):
        from django.utils.dateparse import parse_datetime

        parsed = parse_datetime(value)
        if parsed is None:
            return None
        value = parsed
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return value


def _age(now: dt.datetime, then: dt.datetime | None) -> float:
    return max(0.0, (now - then).total_seconds()) if then is not None else 0.0


class DatabaseCollector(Collector):
    """Collects django-ray's database gauges from database ``using`` at scrape time."""

    def __init__(
        self,
        using: str = "default",
        max_callables: int = 20,
        recent_window_seconds: float = 900.0,
    ) -> None:
        if max_callables < 1:
            raise ValueError("max_callables must be at least 1 (labels are bounded by it)")
        self.using = using
        self.max_callables = max_callables
        self.recent_window_seconds = recent_window_seconds

    def query(self, now: dt.datetime) -> list[tuple[Any, ...]]:
        """Run :data:`SCRAPE_SQL` once and return its rows."""
        from django.db import connections

        recent = now - dt.timedelta(seconds=self.recent_window_seconds)
        orphans, orphan_params = self.orphans(now)
        with connections[self.using].cursor() as cursor:
            cursor.execute(
                f"{SCRAPE_SQL} UNION ALL SELECT 'orphaned', o.state, NULL, o.n, 0, 0, NULL, "
                f"o.oldest, NULL FROM ({orphans}) o",
                [now, now, recent, now, *orphan_params],
            )
            return list(cursor.fetchall())

    def orphans(self, now: dt.datetime) -> tuple[str, tuple[Any, ...]]:
        """SQL of the orphans recovery takes over at ``now``, counted by state: compiled from
        ``RayTaskExecution.objects.orphaned`` so the gauge and recovery cannot disagree."""
        from django.db.models import Count, Min

        from django_ray.conf import ray_settings
        from django_ray.models import RayTaskExecution

        stuck = float(ray_settings().STUCK_TASK_TIMEOUT_SECONDS)
        rows = (
            RayTaskExecution.objects.using(self.using)
            .orphaned(stuck, now)
            .order_by()
            .values("state")
            .annotate(n=Count("id"), oldest=Min("last_heartbeat_at"))
        )
        return rows.query.get_compiler(using=self.using).as_sql()

    def now(self) -> dt.datetime:
        """The scrape's reference time (aware, UTC)."""
        from django.utils import timezone

        return timezone.now()

    def collect(self) -> Iterator[Metric]:
        now = self.now()
        started = time.perf_counter()
        db_up = GaugeMetricFamily(
            "django_ray_metrics_db_up", "1 if the django-ray metrics query succeeded, else 0."
        )
        try:
            rows = self.query(now)
        except Exception as exc:
            # A scrape must not fail: report the database as down and say why in the log.
            logger.warning("django-ray metrics query failed: %s", exc)
            db_up.add_metric([], 0)
            yield db_up
            return
        db_up.add_metric([], 1)
        yield db_up
        yield from self.families(rows, now)
        duration = GaugeMetricFamily(
            "django_ray_metrics_query_duration_seconds",
            "Time the django-ray metrics query took on the last scrape.",
        )
        duration.add_metric([], time.perf_counter() - started)
        yield duration

    def families(self, rows: list[tuple[Any, ...]], now: dt.datetime) -> Iterator[Metric]:
        """Turn the scrape query's rows into metric families (pure; no database access)."""
        by_state: dict[str, float] = dict.fromkeys(STATES, 0.0)
        depth: dict[str, float] = defaultdict(float)
        due: dict[str, float] = defaultdict(float)
        oldest_due: dict[str, dt.datetime | None] = {}
        oldest_heartbeat: dict[str, dt.datetime | None] = dict.fromkeys(OWNED_STATES)
        orphaned: dict[str, float] = dict.fromkeys(OWNED_STATES, 0.0)
        failures: dict[tuple[str, str], tuple[float, float]] = {}
        leases: dict[str, float] = {"active": 0.0, "stale": 0.0, "inactive": 0.0}
        lease_oldest: dt.datetime | None = None
        retry_waiting = 0.0
        last_finished: dt.datetime | None = None
        periodic: dict[str, tuple[float, dt.datetime | None]] = {}

        for kind, a, b, n, n_due, retried, oldest, heartbeat, finished in rows:
            n = float(n or 0)
            if kind == "state":
                by_state[a] = by_state.get(a, 0.0) + n
                finished_at = _as_datetime(finished)
                if finished_at and (last_finished is None or finished_at > last_finished):
                    last_finished = finished_at
                if a == "QUEUED":
                    depth[b] += n
                    due[b] += float(n_due or 0)
                    retry_waiting += float(retried or 0)
                    oldest_at = _as_datetime(oldest)
                    current = oldest_due.get(b)
                    if oldest_at and (current is None or oldest_at < current):
                        oldest_due[b] = oldest_at
                    oldest_due.setdefault(b, None)
                elif a in OWNED_STATES:
                    hb = _as_datetime(heartbeat)
                    current = oldest_heartbeat.get(a)
                    if hb and (current is None or hb < current):
                        oldest_heartbeat[a] = hb
            elif kind == "failed":
                failures[(a, b)] = (n, float(n_due or 0))
            elif kind == "orphaned":
                orphaned[a] = n
            elif kind == "periodic":
                periodic[a] = (n, _as_datetime(finished))
            elif kind == "lease":
                leases[a] = n
                if a == "active":
                    lease_oldest = _as_datetime(heartbeat)

        total = UnknownMetricFamily(
            "django_ray_tasks_total",
            "RayTaskExecution rows in each state (a row count, not a monotonic counter).",
            labels=["state"],
        )
        for state in STATES:
            total.add_metric([state], by_state.get(state, 0.0))
        yield total

        queued = GaugeMetricFamily("django_ray_tasks_queued", "RayTaskExecution rows QUEUED.")
        queued.add_metric([], by_state["QUEUED"])
        yield queued
        running = GaugeMetricFamily("django_ray_tasks_running", "RayTaskExecution rows RUNNING.")
        running.add_metric([], by_state["RUNNING"])
        yield running

        depth_family = GaugeMetricFamily(
            "django_ray_queue_depth", "QUEUED rows per queue (due and deferred).", labels=["queue"]
        )
        due_family = GaugeMetricFamily(
            "django_ray_queue_due_tasks", "QUEUED rows already due, per queue.", labels=["queue"]
        )
        age_family = GaugeMetricFamily(
            "django_ray_queue_oldest_due_age_seconds",
            "Seconds the oldest due QUEUED row of each queue has waited past its run_after.",
            labels=["queue"],
        )
        # Configured queues appear at 0 when empty, so alerts and dashboards see them exist.
        for queue in _configured_queues():
            depth.setdefault(queue, 0.0)
        for queue in sorted(depth):
            depth_family.add_metric([queue], depth[queue])
            due_family.add_metric([queue], due[queue])
            age_family.add_metric([queue], _age(now, oldest_due.get(queue)))
        yield depth_family
        yield due_family
        yield age_family

        retry = GaugeMetricFamily(
            "django_ray_tasks_retry_waiting",
            "QUEUED rows that already had an attempt (waiting for a retry).",
        )
        retry.add_metric([], retry_waiting)
        yield retry

        yield from self._failure_families(failures)

        heartbeat_age = GaugeMetricFamily(
            "django_ray_tasks_oldest_heartbeat_age_seconds",
            "Seconds since the oldest last_heartbeat_at of RUNNING/CANCELLING rows (0 if none).",
            labels=["state"],
        )
        orphan_family = GaugeMetricFamily(
            "django_ray_tasks_orphaned",
            "RUNNING/CANCELLING rows recovery takes over: no live lease, no heartbeat for "
            "STUCK_TASK_TIMEOUT_SECONDS (Ray Job rows: one more after their owner's lease ended).",
            labels=["state"],
        )
        for state in OWNED_STATES:
            heartbeat_age.add_metric([state], _age(now, oldest_heartbeat.get(state)))
            orphan_family.add_metric([state], orphaned[state])
        yield heartbeat_age
        yield orphan_family

        finished_family = GaugeMetricFamily(
            "django_ray_tasks_last_finished_timestamp_seconds",
            "Unix time of the newest finished_at of any row (0 if none finished yet).",
        )
        finished_family.add_metric([], last_finished.timestamp() if last_finished else 0.0)
        yield finished_family

        lease_family = GaugeMetricFamily(
            "django_ray_worker_leases",
            "Worker leases: active (fresh), stale (active but expired), inactive (stopped).",
            labels=["status"],
        )
        for status in ("active", "stale", "inactive"):
            lease_family.add_metric([status], leases.get(status, 0.0))
        yield lease_family
        lease_age = GaugeMetricFamily(
            "django_ray_worker_lease_oldest_heartbeat_age_seconds",
            "Seconds since the oldest heartbeat among active, unexpired leases (0 if none).",
        )
        lease_age.add_metric([], _age(now, lease_oldest))
        yield lease_age
        yield from _periodic_families(periodic)

    def _failure_families(
        self, failures: dict[tuple[str, str], tuple[float, float]]
    ) -> Iterator[Metric]:
        per_callable: dict[str, tuple[float, float]] = defaultdict(lambda: (0.0, 0.0))
        for (callable_path, _state), (count, recent) in failures.items():
            total, recent_total = per_callable[callable_path]
            per_callable[callable_path] = (total + count, recent_total + recent)
        ranked = sorted(per_callable, key=lambda c: (-per_callable[c][1], -per_callable[c][0], c))
        named = set(ranked[: self.max_callables])
        totals: dict[tuple[str, str], float] = defaultdict(float)
        recents: dict[tuple[str, str], float] = defaultdict(float)
        for (callable_path, state), (count, recent) in failures.items():
            label = callable_path if callable_path in named else OTHER_CALLABLES
            totals[(label, state)] += count
            recents[(label, state)] += recent
        failed = GaugeMetricFamily(
            "django_ray_callable_failed_tasks",
            "FAILED and LOST rows per callable_path (top callables; the rest as __other__).",
            labels=["callable_path", "state"],
        )
        recent_family = GaugeMetricFamily(
            "django_ray_callable_recent_failures",
            f"FAILED and LOST rows per callable_path that finished in the last "
            f"{self.recent_window_seconds:g} seconds.",
            labels=["callable_path", "state"],
        )
        for key in sorted(totals):
            failed.add_metric(list(key), totals[key])
            recent_family.add_metric(list(key), recents[key])
        yield failed
        yield recent_family


def _periodic_families(periodic: dict[str, tuple[float, dt.datetime | None]]) -> Iterator[Metric]:
    last = GaugeMetricFamily(
        "django_ray_periodic_last_fire_timestamp_seconds",
        "Unix time of the latest instant of a periodic schedule that was enqueued (0: none).",
        labels=["schedule"],
    )
    misses = GaugeMetricFamily(
        "django_ray_periodic_misses",
        "Instants of a periodic schedule skipped as older than PERIODIC_CATCHUP_SECONDS "
        "(within the kept fire history).",
        labels=["schedule"],
    )
    for schedule, (skipped, fired) in sorted(periodic.items()):
        last.add_metric([schedule], fired.timestamp() if fired else 0.0)
        misses.add_metric([schedule], skipped)
    yield last
    yield misses


def _configured_queues() -> set[str]:
    """Queues named in ``TASKS[...]["QUEUES"]`` of every RayTaskBackend alias."""
    from django.conf import settings

    queues: set[str] = set()
    for params in (getattr(settings, "TASKS", {}) or {}).values():
        if str(params.get("BACKEND", "")).startswith("django_ray."):
            queues.update(params.get("QUEUES") or ["default"])
    return queues
