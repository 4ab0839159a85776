"""URLs of the example project: the admin and the token-protected ``/api/metrics``.

The demo's anonymous task API (``POST /api/tasks``) is mounted only when
``DJANGO_RAY_EXAMPLE_DEMO_API=1``: it lets anyone who reaches the web enqueue work, so a
packaged install never serves it unless the operator opts in for a trial.
"""

import os

from django.contrib import admin
from django.urls import URLPattern, URLResolver, path

from django_ray.metrics.views import metrics_view

urlpatterns: list[URLPattern | URLResolver] = [
    path("admin/", admin.site.urls),
    path("api/metrics", metrics_view, name="metrics"),
]

if os.environ.get("DJANGO_RAY_EXAMPLE_DEMO_API") == "1":
    from demo import views

    urlpatterns += [
        path("api/tasks", views.enqueue_view, name="enqueue"),
        path("api/tasks/<str:task_id>", views.result_view, name="result"),
    ]
