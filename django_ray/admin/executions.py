"""The executions admin: a changelist that shows what is stuck or failing at a glance, and a
detail page that puts the error first and offers Retry and Cancel.

Nothing here changes a state by hand: the actions call the lifecycle's operator functions
(:mod:`django_ray.admin.actions`); no row can be added, edited or deleted through the admin.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.contrib.admin import helpers
from django.contrib.admin.views.main import ChangeList
from django.db.models import Exists, OuterRef, QuerySet
from django.http import HttpRequest
from django.urls import URLPattern, path, reverse
from django.utils import timezone
from django.utils.html import format_html
from django.utils.safestring import SafeString, mark_safe
from django.utils.translation import gettext as _

from django_ray import retry as retry_policy
from django_ray.admin import actions, counts, display, filters, search, views
from django_ray.admin.dates import with_probed_dates
from django_ray.durations import format_duration
from django_ray.lifecycle import rules
from django_ray.models import (
    RayTaskExecution,
    TaskAttempt,
    TaskEffect,
    TaskState,
    TaskWorkerLease,
)

S = TaskState
#: States whose error is the story of the row: the detail page shows it before anything else.
ERROR_FIRST = (S.FAILED, S.LOST)
#: States in which the row's error belongs to an earlier attempt (a retry waiting or running).
ERROR_IS_PREVIOUS = (S.QUEUED, S.RUNNING, S.CANCELLING)


def max_attempts_of(row: RayTaskExecution) -> int:
    """The attempts this row may make (its own override, else ``MAX_TASK_ATTEMPTS``)."""
    return retry_policy.max_attempts(row.max_attempts)


def error_line(row: RayTaskExecution | TaskAttempt) -> str:
    """``PermanentError: do not retry me``: the class named once, the message's first line."""
    message = (row.error_message or "").strip()
    first = message.splitlines()[0] if message else ""
    cls = (row.error_class_path or "").rsplit(".", 1)[-1]
    return f"{cls}: {first}" if cls and not first.startswith(f"{cls}:") else first


class TaskAttemptInline(admin.TabularInline):
    """Every finished attempt of an execution, oldest first: the whole failure history."""

    model = TaskAttempt
    extra = 0
    can_delete = False
    ordering = ("attempt_number",)
    fields = (
        "attempt",
        "outcome",
        "worker_id",
        "started",
        "finished",
        "duration",
        "error_class_path",
        "error_message",
        "traceback",
    )
    readonly_fields = fields
    started = display.timestamp_display("started_at", "started (UTC)")
    finished = display.timestamp_display("finished_at", "finished (UTC)")

    def get_queryset(self, request: HttpRequest) -> QuerySet[TaskAttempt]:
        return super().get_queryset(request).select_related("execution")

    @admin.display(description="attempt")
    def attempt(self, obj: TaskAttempt) -> str:
        return f"attempt {obj.attempt_number} of {max_attempts_of(obj.execution)}"

    @admin.display(description="outcome")
    def outcome(self, obj: TaskAttempt) -> SafeString:
        return display.badge(obj.state)

    @admin.display(description="duration")
    def duration(self, obj: TaskAttempt) -> str:
        return display.span(obj.started_at, obj.finished_at)

    @admin.display(description="traceback")
    def traceback(self, obj: TaskAttempt) -> str:
        return display.pre(obj.error_traceback)

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class TaskEffectInline(admin.TabularInline):
    """Effects the task applied once (``effect_once``): which key, which attempt, when."""

    model = TaskEffect
    extra = 0
    can_delete = False
    fields = ("key", "attempt_number", "applied_at")
    readonly_fields = fields

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class ExecutionChangeList(counts.FacetTitlesChangeList):
    """Adds ``owner_alive`` (the owner holds a live lease) to the listed rows only."""

    def get_queryset(self, request: HttpRequest, exclude_parameters: Any = None) -> QuerySet:
        queryset = super().get_queryset(request, exclude_parameters)
        live = TaskWorkerLease.objects.live().filter(worker_id=OuterRef("claimed_by_worker"))
        return queryset.annotate(owner_alive=Exists(live))


class RayTaskExecutionAdmin(admin.ModelAdmin):
    """Executions: badges, ages, owner health; filters for orphaned, due and stale rows."""

    list_display = (
        "short_id",
        "state_badge",
        "callable_short",
        "attempts",
        "queue",
        "age",
        "worker",
        "error_summary",
    )
    list_display_links = ("short_id",)
    list_filter = (
        ("state", counts.GroupedChoicesFieldListFilter),
        filters.OwnerFilter,
        filters.DueFilter,
        filters.HeartbeatFilter,
        filters.QueueFilter,
        filters.CallablePathFilter,
        filters.WorkerFilter,
    )
    # Searched by admin.search (index-backed terms), not by Django's scan of these columns;
    # a non-empty search_fields is what shows the search box.
    search_fields = ("task_id", "callable_path")
    search_help_text = search.HELP_TEXT
    # Newest first along the (created_at, id) index of migration 0009, so a date drill-down
    # reads its own range instead of walking the primary key back from the newest row.
    ordering = ("-created_at", "-id")
    # Index-probed (admin.dates + the created_at index of migration 0009), not a DISTINCT scan.
    date_hierarchy = "created_at"
    # 50 rows: rendering is most of a page's CPU (docs/performance.md, the admin at 200,000 rows).
    list_per_page = 50
    show_full_result_count = False
    # Exact counts up to 10,000 rows, the planner's estimate above (admin.counts).
    paginator = counts.BoundedCountPaginator
    actions = ("retry_selected", "cancel_selected")
    inlines = (TaskAttemptInline, TaskEffectInline)
    change_form_template = "admin/django_ray/raytaskexecution/change_form.html"
    change_list_template = "admin/django_ray/raytaskexecution/change_list.html"

    identity = (
        "task_id",
        "callable_path",
        "queue_name",
        "state_badge",
        "attempts",
        "owner",
        "priority",
        "backend_alias",
    )
    # Timing shown by the display methods below (ISO timestamps, spans), then a plain field.
    computed_timing = (
        "created",
        "due",
        "started",
        "last_attempted",
        "finished",
        "last_heartbeat",
        "waited",
        "ran_for",
    )
    timing = (*computed_timing, "timeout_seconds")
    # Display methods used on the detail page (read-only fields that are not model fields).
    extra_fields = (
        "state_badge",
        "attempts",
        "owner",
        "traceback",
        *computed_timing,
        "args_pretty",
        "kwargs_pretty",
        "result_pretty",
    )

    # -- detail page -----------------------------------------------------------------------

    def get_fieldsets(self, request: HttpRequest, obj: Any = None) -> list[tuple[Any, Any]]:
        state = getattr(obj, "state", None)
        error_title = (
            "Previous attempt's error (the task is retrying)"
            if state in ERROR_IS_PREVIOUS
            else "Error"
        )
        error = (error_title, {"fields": ("error_class_path", "error_message", "traceback")})
        identity = (None, {"fields": self.identity})
        rest = [
            ("Timing (UTC)", {"fields": self.timing}),
            ("Ownership", {"fields": ("claimed_by_worker", "worker_ids", "ray_job_id")}),
            # docs/scheduling.md: the dedupe key and the serialization key, when set.
            ("Keys", {"fields": ("unique_key", "unique_while_running", "lock_key")}),
            # docs/resources.md: what Ray gives the task (its own options over its queue's).
            ("Ray resources", {"fields": ("ray_options",)}),
            ("Arguments", {"fields": ("args_pretty", "kwargs_pretty")}),
            ("Result", {"fields": ("result_pretty", "result_reference")}),
        ]
        has_error = bool(obj is not None and (obj.error_message or obj.error_class_path))
        if state in ERROR_FIRST:
            return [error, identity, *rest]
        return [identity, *([error] if has_error else []), *rest]

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        # Every field is read-only: states change only through the actions (transitions).
        return [f.name for f in self.model._meta.fields] + list(self.extra_fields)

    def get_urls(self) -> list[URLPattern]:
        wrap = self.admin_site.admin_view
        name = f"{self.opts.app_label}_{self.opts.model_name}"
        return [
            path("overview/", wrap(views.overview(self)), name=f"{name}_overview"),
            path("<path:object_id>/retry/", wrap(views.retry_one(self)), name=f"{name}_retry"),
            path("<path:object_id>/cancel/", wrap(views.cancel_one(self)), name=f"{name}_cancel"),
            path(
                "<path:object_id>/value/<str:field>/",
                wrap(views.full_value(self)),
                name=f"{name}_value",
            ),
            *super().get_urls(),
        ]

    def change_view(
        self,
        request: HttpRequest,
        object_id: str,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> Any:
        row = self.get_object(request, object_id)
        context = dict(extra_context or {})
        if row is not None:
            context.update(views.operator_context(self, request, row))
        return super().change_view(request, object_id, form_url, context)

    created = display.timestamp_display("created_at", "created")
    due = display.timestamp_display("run_after", "due (run_after)")
    started = display.timestamp_display("started_at", "first attempt started")
    last_attempted = display.timestamp_display("last_attempted_at", "latest attempt started")
    finished = display.timestamp_display("finished_at", "finished")
    last_heartbeat = display.timestamp_display("last_heartbeat_at", "last heartbeat")

    @admin.display(description="waited (due to started)")
    def waited(self, obj: RayTaskExecution) -> str:
        return display.span(obj.run_after, obj.started_at)

    @admin.display(description="ran for (latest attempt)")
    def ran_for(self, obj: RayTaskExecution) -> str:
        running = obj.state in (S.RUNNING, S.CANCELLING)
        end = obj.finished_at or (timezone.now() if running else None)
        return display.span(obj.last_attempted_at or obj.started_at, end)

    @admin.display(description="traceback")
    def traceback(self, obj: RayTaskExecution) -> str:
        return display.pre(obj.error_traceback)

    @admin.display(description="owner")
    def owner(self, obj: RayTaskExecution) -> str:
        if obj.state not in (S.RUNNING, S.CANCELLING) or not obj.claimed_by_worker:
            return "-"
        alive = TaskWorkerLease.objects.live().filter(worker_id=obj.claimed_by_worker).exists()
        return self._owner_text(obj, alive)

    def _owner_text(self, obj: RayTaskExecution, alive: bool) -> str:
        if alive:
            return f"{obj.claimed_by_worker} (lease alive)"
        return (
            f"{obj.claimed_by_worker} (lease DEAD: recovery takes the row over once its "
            "heartbeat is older than STUCK_TASK_TIMEOUT_SECONDS)"
        )

    def _value(self, obj: RayTaskExecution, field: str) -> SafeString | str:
        url = reverse(
            f"{self.admin_site.name}:django_ray_raytaskexecution_value", args=[obj.pk, field]
        )
        return display.json_preview(getattr(obj, field), url)

    @admin.display(description="args")
    def args_pretty(self, obj: RayTaskExecution) -> SafeString | str:
        return self._value(obj, "args")

    @admin.display(description="kwargs")
    def kwargs_pretty(self, obj: RayTaskExecution) -> SafeString | str:
        return self._value(obj, "kwargs")

    @admin.display(description="result")
    def result_pretty(self, obj: RayTaskExecution) -> SafeString | str:
        return self._value(obj, "result_data")

    # -- changelist --------------------------------------------------------------------------

    def get_queryset(self, request: HttpRequest) -> QuerySet[RayTaskExecution]:
        return with_probed_dates(super().get_queryset(request), "created_at")

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[RayTaskExecution], search_term: str
    ) -> tuple[QuerySet[RayTaskExecution], bool]:
        return search.search(queryset, search_term), False

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

    def get_changelist(self, request: HttpRequest, **kwargs: Any) -> type[ChangeList]:
        return ExecutionChangeList

    # Only the task (the primary key) and the default order (newest first) sort: a page of
    # 200,000 rows sorted by state, callable, attempts, queue or worker is a sort of the whole
    # table (no index serves it with the primary key as tie-break); the filters pick those rows.
    @admin.display(description="task", ordering="id")
    def short_id(self, obj: RayTaskExecution) -> SafeString | str:
        return display.short(obj.task_id, display.SHORT_ID_CHARS + 1)

    @admin.display(description="state")
    def state_badge(self, obj: RayTaskExecution) -> SafeString:
        return display.badge(obj.state)

    @admin.display(description="callable")
    def callable_short(self, obj: RayTaskExecution) -> SafeString:
        # The module path is long and shared; the function name is what tells rows apart.
        tail = obj.callable_path.rsplit(".", 2)
        shown = ".".join(tail[-2:]) if len(tail) > 1 else obj.callable_path
        return format_html('<span title="{}">{}</span>', obj.callable_path, shown)

    @admin.display(description="attempts")
    def attempts(self, obj: RayTaskExecution) -> str:
        return f"{obj.attempt_number}/{max_attempts_of(obj)}"

    @admin.display(description="queue")
    def queue(self, obj: RayTaskExecution) -> str:
        return obj.queue_name

    @admin.display(description="worker")
    def worker(self, obj: RayTaskExecution) -> SafeString | str:
        return display.short(obj.claimed_by_worker, 16)

    @admin.display(description="age")
    def age(self, obj: RayTaskExecution) -> SafeString | str:
        now = timezone.now()
        if obj.state == S.QUEUED:
            wait = (now - obj.run_after).total_seconds()
            if wait < 0:
                return f"scheduled, due in {format_duration(-wait)}"
            return f"queued for {format_duration(wait)}"
        if obj.state in (S.RUNNING, S.CANCELLING):
            since = obj.last_attempted_at or obj.started_at
            running = (
                f"running for {format_duration((now - since).total_seconds())}"
                if since
                else "running"
            )
            return self._heartbeat(obj, running, now)
        if obj.finished_at is not None:
            return f"finished {format_duration((now - obj.finished_at).total_seconds())} ago"
        return "-"

    def _heartbeat(self, obj: RayTaskExecution, running: str, now: Any) -> SafeString:
        alive = getattr(obj, "owner_alive", True)
        beat = obj.last_heartbeat_at
        stale = beat is None or beat < filters.heartbeat_cutoff(now)
        heard = (
            f"heartbeat {format_duration((now - beat).total_seconds())} ago"
            if beat
            else "no heartbeat"
        )
        warning = ""
        if not alive:
            warning = " \u26a0 owner lease dead"
        elif stale:
            warning = " \u26a0 older than the lease"
        return format_html(
            '{}<br><span class="django-ray-heartbeat{}" style="{}">{}{}</span>',
            running,
            " django-ray-warning" if warning else "",
            "color: #c62828; font-weight: bold" if warning else "color: #666",
            heard,
            warning,
        )

    @admin.display(description="error")
    def error_summary(self, obj: RayTaskExecution) -> SafeString | str:
        text = error_line(obj)
        if not text:
            return ""
        text = text if len(text) <= 100 else text[:97] + "..."
        if obj.state in ERROR_IS_PREVIOUS:
            # A retry waiting or running: the error is history, not the row's state.
            return format_html('<span style="color: #777">previous attempt: {}</span>', text)
        return text

    # -- permissions and actions -------------------------------------------------------------

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        # Rows leave only through django_ray_prune: deleting a live row loses work, deleting
        # history hides incidents.
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
        result = actions.too_many(queryset.count(), "retry") or actions.retry(
            list(queryset.values_list("task_id", "state"))
        )
        actions.report(self, request, "Retry", result)

    @admin.action(description="Cancel selected QUEUED / RUNNING tasks", permissions=("cancel",))
    def cancel_selected(self, request: HttpRequest, queryset: QuerySet[RayTaskExecution]) -> None:
        result = actions.too_many(queryset.count(), "cancel") or actions.cancel(
            list(queryset.values_list("task_id", "state"))
        )
        actions.report(self, request, "Cancel", result)


def retryable(row: RayTaskExecution) -> bool:
    """Whether an operator may requeue ``row`` (the lifecycle's rule)."""
    return row.state in rules.RETRYABLE_BY_OPERATOR
