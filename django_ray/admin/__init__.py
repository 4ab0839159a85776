"""Django admin for task executions, their attempts, worker leases and periodic fires.

An operator console: the executions changelist shows what is stuck, failing and why (state
badges, ages, owner health, filters for orphaned, due and stale rows), the detail page puts the
error first and offers Retry and Cancel, and the overview page shows the numbers of
``django_ray_status``. Nothing here changes a state by hand: the actions call
:func:`django_ray.lifecycle.operator.retry_tasks` and
:func:`django_ray.lifecycle.operator.request_cancel`, need their own permission
(``django_ray.retry_raytaskexecution`` / ``django_ray.cancel_raytaskexecution``), act on at
most :data:`~django_ray.admin.actions.ADMIN_ACTION_MAX_ROWS` rows, and leave admin history.

Modules: ``executions`` (the executions admin), ``leases`` (leases, attempts, periodic fires),
``filters``, ``actions`` (retry / cancel with history), ``views`` (detail actions, full values,
overview), ``display`` (formatting).
"""

from __future__ import annotations

from django.contrib import admin

from django_ray.admin import leases
from django_ray.admin.executions import RayTaskExecutionAdmin
from django_ray.models import RayTaskExecution

admin.site.register(RayTaskExecution, RayTaskExecutionAdmin)

__all__ = ["RayTaskExecutionAdmin", "leases"]
