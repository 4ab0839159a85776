from django.urls import path

from django_ray.metrics.views import metrics_view

from . import views

urlpatterns = [
    path("api/metrics", metrics_view),
    path("api/enqueue", views.enqueue),
    path("api/status", views.status),
    path("api/cancel", views.cancel),
]
