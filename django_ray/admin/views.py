"""Admin pages beside the changelist: Retry / Cancel of one row (with a confirmation for a
running task), the full value of a long argument or result, and the overview.

Each view factory takes the executions ``ModelAdmin`` and returns a view the admin wraps with
``admin_site.admin_view`` (login, staff); the views check the same permissions as the actions.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import reverse
from django.views.decorators.http import require_POST

from django_ray.admin import actions, display
from django_ray.lifecycle import rules
from django_ray.models import RayTaskExecution, TaskState, TaskWorkerLease

View = Callable[..., HttpResponse]
#: Fields whose whole value the "show all" link serves.
VALUE_FIELDS = ("args", "kwargs", "result_data")


def _row(model_admin: admin.ModelAdmin, request: HttpRequest, object_id: str) -> RayTaskExecution:
    row = model_admin.get_object(request, object_id)
    if row is None:
        raise Http404(f"No task execution with primary key {object_id!r}.")
    if not model_admin.has_view_permission(request, row):
        raise PermissionDenied
    return row


def _change_url(model_admin: admin.ModelAdmin, row: RayTaskExecution) -> str:
    return reverse(
        f"{model_admin.admin_site.name}:django_ray_raytaskexecution_change", args=[row.pk]
    )


def operator_context(
    model_admin: Any, request: HttpRequest, row: RayTaskExecution
) -> dict[str, Any]:
    """What the detail page's buttons need: which actions this user may take on ``row`` now."""
    owner_alive = (
        row.claimed_by_worker is not None
        and TaskWorkerLease.objects.live().filter(worker_id=row.claimed_by_worker).exists()
    )
    return {
        "can_retry": row.state in rules.RETRYABLE_BY_OPERATOR
        and model_admin.has_retry_permission(request),
        "can_cancel": row.state in rules.CANCELLABLE and model_admin.has_cancel_permission(request),
        "cancel_needs_confirmation": row.state == TaskState.RUNNING,
        "cancelling_without_owner": row.state == TaskState.CANCELLING and not owner_alive,
    }


def retry_one(model_admin: Any) -> View:
    """POST ``<pk>/retry/``: requeue one FAILED / LOST / CANCELLED row."""

    @require_POST
    def view(request: HttpRequest, object_id: str) -> HttpResponse:
        row = _row(model_admin, request, object_id)
        if not model_admin.has_retry_permission(request):
            raise PermissionDenied
        actions.report(model_admin, request, "Retry", actions.retry([(row.task_id, row.state)]))
        return HttpResponseRedirect(_change_url(model_admin, row))

    return view


def cancel_one(model_admin: Any) -> View:
    """``<pk>/cancel/``: GET asks for confirmation; POST cancels (a RUNNING row only with
    ``confirm=yes``, because stopping a running task may leave its work half done)."""

    def view(request: HttpRequest, object_id: str) -> HttpResponse:
        row = _row(model_admin, request, object_id)
        if not model_admin.has_cancel_permission(request):
            raise PermissionDenied
        confirmed = request.method == "POST" and (
            row.state != TaskState.RUNNING or request.POST.get("confirm") == "yes"
        )
        if not confirmed:
            context = {
                **model_admin.admin_site.each_context(request),
                "opts": model_admin.opts,
                "row": row,
                "title": f"Cancel task {row.task_id}?",
                "change_url": _change_url(model_admin, row),
            }
            return TemplateResponse(
                request, "admin/django_ray/raytaskexecution/cancel_confirmation.html", context
            )
        actions.report(model_admin, request, "Cancel", actions.cancel([(row.task_id, row.state)]))
        return HttpResponseRedirect(_change_url(model_admin, row))

    return view


def full_value(model_admin: Any) -> View:
    """GET ``<pk>/value/<field>/``: the whole JSON of ``args``, ``kwargs`` or ``result_data``."""

    def view(request: HttpRequest, object_id: str, field: str) -> HttpResponse:
        if field not in VALUE_FIELDS:
            raise Http404(f"Unknown value {field!r}; one of {', '.join(VALUE_FIELDS)}.")
        row = _row(model_admin, request, object_id)
        return HttpResponse(
            display.pretty_json(getattr(row, field)), content_type="text/plain; charset=utf-8"
        )

    return view


def overview(model_admin: Any) -> View:
    """GET ``overview/``: counts by state and queue, oldest due age, orphaned rows and live
    workers, from :func:`django_ray.status.collect_status` (the numbers ``django_ray_status``
    prints, computed from the ``/api/metrics`` collector's one query)."""

    def view(request: HttpRequest) -> HttpResponse:
        from django_ray.status import collect_status

        if not model_admin.has_view_permission(request):
            raise PermissionDenied
        status = collect_status(using=model_admin.get_queryset(request).db, probe=False)
        changelist = reverse(
            f"{model_admin.admin_site.name}:django_ray_raytaskexecution_changelist"
        )
        leases = reverse(f"{model_admin.admin_site.name}:django_ray_taskworkerlease_changelist")
        context = {
            **model_admin.admin_site.each_context(request),
            "opts": model_admin.opts,
            "title": "django-ray overview",
            "status": status,
            "states": [(s, n, display.badge(s)) for s, n in status["states"].items()],
            "orphaned_total": sum(status["running"]["orphaned"].values()),
            "live_workers": [row for row in status["leases"] if row["status"] == "active"],
            "changelist_url": changelist,
            "leases_url": leases,
        }
        return TemplateResponse(request, "admin/django_ray/overview.html", context)

    return view
