"""Django admin for task executions, their attempts, and worker leases.

Nothing here changes a state by hand: the retry and cancel actions call
:func:`django_ray.lifecycle.operator.retry_tasks` and
:func:`django_ray.lifecycle.operator.request_cancel`,
which lock the rows and refuse illegal moves. Both actions need their own permission
(``django_ray.retry_raytaskexecution`` / ``django_ray.cancel_raytaskexecution``) and act on at
most :data:`ADMIN_ACTION_MAX_ROWS` rows at once; larger batches belong to
``manage.py django_ray_requeue``.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, timedelta
from typing import Any

from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils import timezone
from django.utils.html import format_html
from django.utils.safestring import mark_safe
from django.utils.translation import gettext as _

from django_ray import admin_search
from django_ray.admin_counts import (
    BoundedCountPaginator,
    GroupedChoicesFieldListFilter,
    GroupedFacetsMixin,
    recent_rows,
    top_values,
)
from django_ray.admin_dates import with_probed_dates
from django_ray.durations import format_duration
from django_ray.lifecycle import operator, rules
from django_ray.models import (
    PeriodicFire,
    RayTaskExecution,
    TaskAttempt,
    TaskState,
    TaskWorkerLease,
)

#: Most rows one admin action may touch.
ADMIN_ACTION_MAX_ROWS = 500
#: Most distinct values listed by the callable-path and worker filters.
FILTER_MAX_CHOICES = 50


class _TopValuesFilter(GroupedFacetsMixin, admin.SimpleListFilter):
    """A filter listing the most frequent values of one column among the latest rows.

    Choices come from the latest rows only (admin_counts.recent_rows: a bounded scan, not a
    GROUP BY of the whole table on every page); "Show counts" counts them in one GROUP BY.
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


class _NoDelete:
    """Rows leave only through django_ray_prune: deleting a live row or lease by hand loses
    work or makes its worker exit, and deleting history hides incidents."""

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class TaskAttemptInline(admin.TabularInline):
    """Every finished attempt of an execution, oldest first: the whole failure history."""

    model = TaskAttempt
    extra = 0
    can_delete = False
    ordering = ("attempt_number",)
    fields = (
        "attempt_number",
        "state",
        "worker_id",
        "started_at",
        "finished_at",
        "error_class_path",
        "error_message",
        "traceback",
    )
    readonly_fields = fields

    @admin.display(description="traceback")
    def traceback(self, obj: TaskAttempt) -> str:
        return _pre(obj.error_traceback)

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


def _pre(text: str | None) -> str:
    if not text:
        return "-"
    return format_html(
        '<pre style="white-space: pre-wrap; max-height: 30em; overflow: auto; '
        'font-size: 0.85em; margin: 0">{}</pre>',
        text,
    )


def _iso(value: Any) -> str:
    """``2026-01-01 12:00:00.123 UTC``: seconds matter when reading an incident."""
    if value is None:
        return "-"
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + " UTC"


def _span(start: Any, end: Any) -> str:
    if start is None or end is None:
        return "-"
    seconds = (end - start).total_seconds()
    return f"{seconds:.3f} s" if seconds < 60 else f"{format_duration(seconds)} ({seconds:.0f} s)"


def _timestamp_display(field: str, description: str) -> Callable[[Any, Any], str]:
    """An admin column showing the ``field`` timestamp in ISO form (empty when unset)."""

    @admin.display(description=description)
    def show(modeladmin: Any, obj: Any) -> str:
        return _iso(getattr(obj, field))

    return show


def _too_many(modeladmin: admin.ModelAdmin, request: HttpRequest, count: int, verb: str) -> bool:
    if count <= ADMIN_ACTION_MAX_ROWS:
        return False
    modeladmin.message_user(
        request,
        f"{count} rows selected; {verb} acts on at most {ADMIN_ACTION_MAX_ROWS} at once. "
        f"Narrow the filters, or use: manage.py django_ray_requeue --limit N --execute.",
        level=messages.ERROR,
    )
    return True


@admin.register(RayTaskExecution)
class RayTaskExecutionAdmin(_NoDelete, admin.ModelAdmin):
    """Executions: filter by state, queue, callable and worker; retry or cancel in batches."""

    # State and error first so they stay on screen; the rest is one click away.
    list_display = (
        "task_id",
        "state",
        "callable_path",
        "error_summary",
        "queue_name",
        "attempt_number",
        "finished_at",
        "claimed_by_worker",
    )
    list_filter = (
        ("state", GroupedChoicesFieldListFilter),
        QueueFilter,
        CallablePathFilter,
        WorkerFilter,
    )
    # Searched by admin_search (index-backed terms), not by Django's scan of these columns;
    # a non-empty search_fields is what shows the search box.
    search_fields = ("task_id", "callable_path")
    search_help_text = admin_search.HELP_TEXT
    # Newest first along the (created_at, id) index of migration 0010, so a date drill-down
    # reads its own range instead of walking the primary key back from the newest row.
    ordering = ("-created_at", "-id")
    # Index-probed (admin_dates + the created_at index of migration 0010), not a DISTINCT scan.
    date_hierarchy = "created_at"
    # 50 rows: rendering is most of a page's CPU (docs/performance.md, the admin at 200,000 rows).
    list_per_page = 50
    show_full_result_count = False
    # Exact counts up to 10,000 rows, the planner's estimate above (admin_counts).
    paginator = BoundedCountPaginator
    actions = ("retry_selected", "cancel_selected")
    inlines = (TaskAttemptInline,)
    # On-call reads the error first; timestamps keep their seconds (UTC, ISO 8601).
    fieldsets = (
        (
            None,
            {
                "fields": (
                    "task_id",
                    "callable_path",
                    "queue_name",
                    "state",
                    "attempt_number",
                    "max_attempts",
                    "priority",
                    "backend_alias",
                )
            },
        ),
        ("Error", {"fields": ("error_class_path", "error_message", "traceback")}),
        (
            "Timing (UTC)",
            {
                "fields": (
                    "created",
                    "due",
                    "started",
                    "finished",
                    "last_heartbeat",
                    "waited",
                    "ran_for",
                    "timeout_seconds",
                )
            },
        ),
        ("Ownership", {"fields": ("claimed_by_worker", "worker_ids", "ray_job_id")}),
        # docs/scheduling.md: the dedupe key and the serialization key, when the task has them.
        ("Keys", {"fields": ("unique_key", "unique_while_running", "lock_key")}),
        ("Arguments", {"fields": ("args", "kwargs")}),
        ("Result", {"fields": ("result_data", "result_reference")}),
    )

    def get_queryset(self, request: HttpRequest) -> QuerySet[RayTaskExecution]:
        return with_probed_dates(super().get_queryset(request), "created_at")

    @admin.display(description=mark_safe('<input type="checkbox" id="action-toggle">'))
    def action_checkbox(self, obj: RayTaskExecution) -> str:
        # Django's markup, without a form widget rendered through the template engine for
        # each row (a fifth of a 100-row changelist's CPU time).
        return format_html(
            '<input type="checkbox" name="{}" value="{}" class="action-select" aria-label="{}">',
            helpers.ACTION_CHECKBOX_NAME,
            obj.pk,
            format_html(_("Select this object for an action - {}"), str(obj)),
        )

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[RayTaskExecution], search_term: str
    ) -> tuple[QuerySet[RayTaskExecution], bool]:
        return admin_search.search(queryset, search_term), False

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        # Every field is read-only: states change only through the actions (transitions).
        return [f.name for f in self.model._meta.fields] + [
            "traceback",
            "created",
            "due",
            "started",
            "finished",
            "last_heartbeat",
            "waited",
            "ran_for",
        ]

    created = _timestamp_display("created_at", "created")
    due = _timestamp_display("run_after", "due (run_after)")
    started = _timestamp_display("started_at", "started")
    finished = _timestamp_display("finished_at", "finished")
    last_heartbeat = _timestamp_display("last_heartbeat_at", "last heartbeat")

    @admin.display(description="waited (due to started)")
    def waited(self, obj: RayTaskExecution) -> str:
        return _span(obj.run_after, obj.started_at)

    @admin.display(description="ran for")
    def ran_for(self, obj: RayTaskExecution) -> str:
        end = obj.finished_at or (timezone.now() if obj.state == TaskState.RUNNING else None)
        return _span(obj.started_at, end)

    @admin.display(description="error")
    def error_summary(self, obj: RayTaskExecution) -> str:
        if not obj.error_message:
            return ""
        first = obj.error_message.strip().splitlines()[0] if obj.error_message.strip() else ""
        cls = (obj.error_class_path or "").rsplit(".", 1)[-1]
        text = f"{cls}: {first}" if cls and not first.startswith(f"{cls}:") else first
        return text if len(text) <= 120 else text[:117] + "..."

    @admin.display(description="traceback")
    def traceback(self, obj: RayTaskExecution) -> str:
        return _pre(obj.error_traceback)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_retry_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("django_ray.retry_raytaskexecution")

    def has_cancel_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("django_ray.cancel_raytaskexecution")

    @admin.action(
        description="Retry selected FAILED / LOST / CANCELLED tasks (keeps attempt history)",
        permissions=("retry",),
    )
    def retry_selected(self, request: HttpRequest, queryset: QuerySet[RayTaskExecution]) -> None:
        if _too_many(self, request, queryset.count(), "retry"):
            return
        rows = list(queryset.values_list("task_id", "state"))
        eligible = [task_id for task_id, state in rows if state in rules.RETRYABLE_BY_OPERATOR]
        skipped = len(rows) - len(eligible)
        moved: list[str] = []
        if eligible:
            try:
                moved = operator.retry_tasks(eligible)
            except operator.IllegalTransition as exc:
                self.message_user(
                    request,
                    f"Nothing retried: {exc} (the row changed state meanwhile; reload and retry).",
                    level=messages.ERROR,
                )
                return
        self.message_user(
            request,
            f"Requeued {len(moved)} task(s)."
            + (f" Skipped {skipped} not in FAILED, LOST or CANCELLED." if skipped else ""),
            level=messages.SUCCESS if moved else messages.WARNING,
        )

    @admin.action(description="Cancel selected QUEUED / RUNNING tasks", permissions=("cancel",))
    def cancel_selected(self, request: HttpRequest, queryset: QuerySet[RayTaskExecution]) -> None:
        if _too_many(self, request, queryset.count(), "cancel"):
            return
        results: dict[str, int] = {}
        refused: list[str] = []
        for task_id, state in queryset.values_list("task_id", "state"):
            if state not in rules.CANCELLABLE:
                refused.append(f"{task_id} ({state})")
                continue
            try:
                new_state = operator.request_cancel(task_id)
            except operator.IllegalTransition:
                refused.append(f"{task_id} (changed state)")
                continue
            results[new_state] = results.get(new_state, 0) + 1
        parts = [f"{n} now {state}" for state, n in sorted(results.items())]
        text = "Cancel requested: " + (", ".join(parts) if parts else "no task cancelled") + "."
        if refused:
            shown = ", ".join(refused[:10]) + (" ..." if len(refused) > 10 else "")
            text += f" Not cancellable ({len(refused)}): {shown}."
        self.message_user(request, text, level=messages.SUCCESS if parts else messages.WARNING)


@admin.register(TaskWorkerLease)
class TaskWorkerLeaseAdmin(_NoDelete, admin.ModelAdmin):
    """Worker leases with heartbeat age and status (active, stale, inactive)."""

    list_display = (
        "worker_id",
        "hostname",
        "pid",
        "queue_name",
        "runner",
        "concurrency",
        "is_active",
        "status",
        "heartbeat_age",
        "last_heartbeat_at",
        "expires_at",
        "started_at",
    )
    list_filter = ("is_active", "hostname", "runner")
    search_fields = ("worker_id", "hostname", "queue_name")
    ordering = ("last_heartbeat_at",)

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        return [f.name for f in self.model._meta.fields]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    @admin.display(description="status")
    def status(self, obj: TaskWorkerLease) -> str:
        return TaskWorkerLease.status_of(obj.is_active, obj.expires_at, timezone.now())

    @admin.display(description="heartbeat age", ordering="last_heartbeat_at")
    def heartbeat_age(self, obj: TaskWorkerLease) -> str:
        age = timezone.now() - obj.last_heartbeat_at
        return str(timedelta(seconds=int(max(age.total_seconds(), 0))))


@admin.register(TaskAttempt)
class TaskAttemptAdmin(_NoDelete, admin.ModelAdmin):
    """Attempts across executions: find every failure of a callable or a worker."""

    list_display = (
        "execution",
        "attempt_number",
        "state",
        "worker_id",
        "started_at",
        "finished_at",
        "error_class_path",
    )
    list_filter = ("state",)
    search_fields = ("execution__task_id", "worker_id", "error_class_path", "error_message")
    list_select_related = ("execution",)
    ordering = ("-id",)
    readonly_fields = (
        "execution",
        "attempt_number",
        "state",
        "worker_id",
        "started_at",
        "finished_at",
        "error_class_path",
        "error_message",
        "traceback",
    )
    exclude = ("error_traceback",)

    @admin.display(description="traceback")
    def traceback(self, obj: TaskAttempt) -> str:
        return _pre(obj.error_traceback)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False


@admin.register(PeriodicFire)
class PeriodicFireAdmin(_NoDelete, admin.ModelAdmin):
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

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False
