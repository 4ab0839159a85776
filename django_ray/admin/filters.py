"""Changelist filters of the executions admin: top values, orphaned rows, due versus scheduled,
stale heartbeats.

Row sets come from the model querysets (``RayTaskExecution.objects.orphaned``, ``.due``,
``.owned``; ``TaskWorkerLease.objects.live``) so the admin counts the rows recovery, metrics and
``django_ray_status`` count.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from django.contrib import admin
from django.contrib.admin.options import ShowFacets
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils import timezone

from django_ray.admin.counts import GroupedFacetsMixin, recent_rows, top_values
from django_ray.conf import ray_settings
from django_ray.models import RayTaskExecution, TaskState, TaskWorkerLease, due_condition

#: Most distinct values listed by the callable-path, queue and worker filters.
FILTER_MAX_CHOICES = 50


def facets_shown(request: HttpRequest, model_admin: Any) -> bool:
    """Whether Django adds its own counts to filter choices ("Show counts"); a filter that
    counts by itself then leaves its count out, or each choice reads "default (27) (27)"."""
    return model_admin.show_facets is ShowFacets.ALWAYS or (
        model_admin.show_facets is ShowFacets.ALLOW and "_facets" in request.GET
    )


class _TopValuesFilter(GroupedFacetsMixin, admin.SimpleListFilter):
    """A filter listing the most frequent values of one column among the latest rows.

    Choices come from the latest rows only (counts.recent_rows: a bounded range of the primary
    key, not a GROUP BY of the whole table on every page) and carry no count of their own;
    "Show counts" counts every filter in one GROUP BY GROUPING SETS (counts.GroupedFacetsMixin).
    """

    field: str = ""

    @property
    def facet_field(self) -> str:  # type: ignore[override]
        return self.field

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        # Django builds the filters again for each filter's "Show counts": ask once per request.
        cache = request.__dict__.setdefault("_django_ray_filter_values", {})
        if self.field not in cache:
            if "" not in cache:
                cache[""] = recent_rows(model_admin.get_queryset(request))
            cache[self.field] = top_values(cache[""], self.field, FILTER_MAX_CHOICES)
        values = list(cache[self.field])
        if self.value() and self.value() not in values:
            values.append(self.value())  # chosen from an older row: keep it on screen
        return [(value, value) for value in values]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        value = self.value()
        return queryset.filter(**{self.field: value}) if value else queryset


class CallablePathFilter(_TopValuesFilter):
    title = "callable path"
    parameter_name = "callable_path"
    field = "callable_path"


class WorkerFilter(_TopValuesFilter):
    title = "worker"
    parameter_name = "worker"
    field = "claimed_by_worker"


class QueueFilter(_TopValuesFilter):
    title = "queue"
    parameter_name = "queue"
    field = "queue_name"


class _ChoicesFilter(admin.SimpleListFilter):
    """A filter whose choices each name a row set (``rows(value)``), intersected with the list.

    The row set's conditions join the page's own ``WHERE`` (``queryset & rows``), not an
    ``id IN (subquery)``: PostgreSQL can then use the owned / queued partial indexes, and the
    date hierarchy's probes do not re-run a subquery each. "Show counts" counts each choice
    within its own rows (:meth:`get_facet_queryset`), never by a scan of the whole list.
    """

    choices_: tuple[tuple[str, str], ...] = ()

    def lookups(self, request: HttpRequest, model_admin: Any) -> tuple[tuple[str, str], ...]:
        return self.choices_

    def rows(self, value: str) -> QuerySet[RayTaskExecution]:
        raise NotImplementedError

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        value = self.value()
        if value not in dict(self.choices_):
            return queryset
        return queryset & self.rows(value)

    def get_facet_queryset(self, changelist: Any) -> dict[str, int]:
        filtered = changelist.get_queryset(
            self.request, exclude_parameters=self.expected_parameters()
        )
        # One exact COUNT per choice over the list's rows that are also the choice's rows:
        # a few owned or queued rows through their partial indexes.
        return {
            f"{i}__c": (filtered & self.rows(value)).order_by().count()
            for i, (value, _title) in enumerate(self.choices_)
        }


class OwnerFilter(_ChoicesFilter):
    """Running rows whose owner is gone: ``orphaned`` is exactly what recovery takes over next
    (no live lease and no heartbeat for ``STUCK_TASK_TIMEOUT_SECONDS``); ``owner lease dead``
    includes rows still inside that grace."""

    title = "owner"
    parameter_name = "owner"
    choices_ = (
        ("orphaned", "orphaned (recovery takes over)"),
        ("dead", "owner lease dead"),
        ("alive", "owner alive"),
    )

    def rows(self, value: str) -> QuerySet[RayTaskExecution]:
        if value == "orphaned":
            stuck = float(ray_settings().STUCK_TASK_TIMEOUT_SECONDS)
            return RayTaskExecution.objects.orphaned(stuck)
        live = TaskWorkerLease.objects.live().values("worker_id")
        owned = RayTaskExecution.objects.owned()
        if value == "alive":
            return owned.filter(claimed_by_worker__in=live)
        return owned.exclude(claimed_by_worker__in=live)


class DueFilter(_ChoicesFilter):
    """QUEUED rows that may run now (``due``) versus those waiting for their ``run_after``
    (a retry's backoff or a deferred enqueue)."""

    title = "queued"
    parameter_name = "queued"
    choices_ = (("due", "due now"), ("scheduled", "scheduled (run_after later)"))

    def rows(self, value: str) -> QuerySet[RayTaskExecution]:
        if value == "due":
            return RayTaskExecution.objects.due(None)
        return RayTaskExecution.objects.filter(state=TaskState.QUEUED).exclude(due_condition())


class HeartbeatFilter(_ChoicesFilter):
    """Running rows whose last heartbeat is older than ``WORKER_LEASE_SECONDS``: a live
    worker heartbeats its rows more often than that, so such a row's owner is stuck or dead."""

    title = "heartbeat"
    parameter_name = "heartbeat"
    choices_ = (("stale", "older than the lease"),)

    def rows(self, value: str) -> QuerySet[RayTaskExecution]:
        return RayTaskExecution.objects.owned().filter(last_heartbeat_at__lt=heartbeat_cutoff())


def heartbeat_cutoff(now: datetime | None = None) -> datetime:
    """Heartbeats before this are older than the lease (``WORKER_LEASE_SECONDS``)."""
    lease = float(ray_settings().WORKER_LEASE_SECONDS)
    return (now or timezone.now()) - timedelta(seconds=lease)
