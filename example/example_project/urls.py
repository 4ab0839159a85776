from demo import views
from django.contrib import admin
from django.urls import path

from django_ray.metrics.views import metrics_view

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/metrics", metrics_view, name="metrics"),
    path("api/tasks", views.enqueue_view, name="enqueue"),
    path("api/tasks/<str:task_id>", views.result_view, name="result"),
]
