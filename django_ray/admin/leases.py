"""Admin pages for worker leases, attempts and periodic fires: read-only history.

A lease says whether its worker is alive, stopped cleanly, or expired (crashed, killed, hung),
and links to the tasks that worker holds.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.db.models import F, Q, QuerySet
from django.http import HttpRequest
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html
from django.utils.http import urlencode
from django.utils.safestring import SafeString

from django_ray.admin import display
from django_ray.durations import format_duration
from django_ray.models import PeriodicFire, TaskAttempt, TaskWorkerLease


class ReadOnly:
    """Rows leave only through django_ray_prune and change only through the lifecycle:
    deleting a live row or lease by hand loses work or makes its worker exit, editing or
    deleting history hides incidents."""

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class LeaseEndingFilter(admin.SimpleListFilter):
    """Leases by :meth:`TaskWorkerLease.ending_of`: alive, stopped, expired (crashed)."""

    title = "worker"
    parameter_name = "ending"

    def lookups(self, request: HttpRequest, model_admin: Any) -> tuple[tuple[str, str], ...]:
        return (("alive", "alive"), ("stopped", "stopped"), ("expired", "expired (crashed)"))

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        live = TaskWorkerLease.objects.live().values("pk")
        stopped = Q(is_active=False, stopped_at__isnull=False, stopped_at__lte=F("expires_at"))
        if self.value() == "alive":
            return queryset.filter(pk__in=live)
        if self.value() == "stopped":
            return queryset.filter(stopped)
        if self.value() == "expired":
            return queryset.exclude(pk__in=live).exclude(stopped)
        return queryset


@admin.register(TaskWorkerLease)
class TaskWorkerLeaseAdmin(ReadOnly, admin.ModelAdmin):
    """Worker leases: alive, stopped or expired (crashed), heartbeat age, and their tasks."""

    # Host and pid are part of the worker id; the full record is on the detail page.
    list_display = (
        "worker_id",
        "ending",
        "tasks",
        "queues",
        "runner",
        "slots",
        "heartbeat_age",
        "stopped",
    )
    list_filter = (LeaseEndingFilter, "hostname", "runner")
    search_fields = ("worker_id", "hostname", "queue_name")
    ordering = ("-last_heartbeat_at",)
    stopped = display.timestamp_display("stopped_at", "stopped")

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        return [f.name for f in self.model._meta.fields]

    @admin.display(description="status")
    def ending(self, obj: TaskWorkerLease) -> SafeString:
        state = TaskWorkerLease.ending_of(
            obj.is_active, obj.expires_at, obj.stopped_at, timezone.now()
        )
        colour = {"alive": "#2e7d32", "stopped": "#757575", "expired": "#c62828"}[state]
        label = "expired (crashed)" if state == "expired" else state
        return format_html(
            '<span class="django-ray-lease" data-ending="{}" style="color: {}; '
            'font-weight: bold">{}</span>',
            state,
            colour,
            label,
        )

    @admin.display(description="tasks")
    def tasks(self, obj: TaskWorkerLease) -> SafeString:
        url = reverse("admin:django_ray_raytaskexecution_changelist")
        return format_html('<a href="{}?{}">tasks</a>', url, urlencode({"worker": obj.worker_id}))

    @admin.display(description="queues", ordering="queue_name")
    def queues(self, obj: TaskWorkerLease) -> SafeString | str:
        return display.short(obj.queue_name, 24)

    @admin.display(description="slots", ordering="concurrency")
    def slots(self, obj: TaskWorkerLease) -> int:
        return obj.concurrency

    @admin.display(description="heartbeat age", ordering="last_heartbeat_at")
    def heartbeat_age(self, obj: TaskWorkerLease) -> str:
        return format_duration((timezone.now() - obj.last_heartbeat_at).total_seconds())


@admin.register(TaskAttempt)
class TaskAttemptAdmin(ReadOnly, admin.ModelAdmin):
    """Attempts across executions: find every failure of a callable or a worker."""

    list_display = (
        "execution",
        "attempt_number",
        "state",
        "worker_id",
        "started",
        "finished",
        "error_class_path",
    )
    list_filter = ("state",)
    search_fields = ("execution__task_id", "worker_id", "error_class_path", "error_message")
    list_select_related = ("execution",)
    ordering = ("-id",)
    readonly_fields = (*list_display, "error_message", "traceback")
    exclude = ("error_traceback", "started_at", "finished_at")
    started = display.timestamp_display("started_at", "started")
    finished = display.timestamp_display("finished_at", "finished")

    @admin.display(description="traceback")
    def traceback(self, obj: TaskAttempt) -> str:
        return display.pre(obj.error_traceback)


@admin.register(PeriodicFire)
class PeriodicFireAdmin(ReadOnly, admin.ModelAdmin):
    """Periodic schedules' history: each instant enqueued once, skipped runs counted."""

    list_display = ("schedule", "instant", "task_id", "skipped", "worker_id", "fired_at")
    list_filter = ("schedule",)
    search_fields = ("schedule", "task_id", "worker_id")
    ordering = ("-instant",)
    date_hierarchy = "instant"
    list_per_page = 100
    show_full_result_count = False

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        return [f.name for f in self.model._meta.fields]
