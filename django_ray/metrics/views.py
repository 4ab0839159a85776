"""A Django view serving django-ray's database gauges in the Prometheus text format.

Mount it in any project::

    from django_ray.metrics.views import metrics_view
    urlpatterns = [path("api/metrics", metrics_view)]

When ``DJANGO_RAY["METRICS_BEARER_TOKEN"]`` is set, requests must send
``Authorization: Bearer <token>``; otherwise they get 401.
"""

from __future__ import annotations

import hmac
import threading

from django.http import HttpRequest, HttpResponse
from django.views.decorators.http import require_GET
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

from django_ray.metrics.db import DatabaseCollector

_registries: dict[str, CollectorRegistry] = {}
_lock = threading.Lock()


def registry_for(using: str = "default") -> CollectorRegistry:
    """A registry holding only the :class:`DatabaseCollector` of database ``using``."""
    with _lock:
        registry = _registries.get(using)
        if registry is None:
            registry = CollectorRegistry(auto_describe=False)
            registry.register(DatabaseCollector(using=using))
            _registries[using] = registry
        return registry


def _authorized(request: HttpRequest, token: str) -> bool:
    header = request.headers.get("Authorization", "")
    scheme, _, given = header.partition(" ")
    if scheme.lower() != "bearer" or not given:
        return False
    return hmac.compare_digest(given.strip().encode(), token.encode())


@require_GET
def metrics_view(request: HttpRequest) -> HttpResponse:
    """Prometheus exposition of the database gauges (text or OpenMetrics, by ``Accept``)."""
    from django_ray.conf import ray_settings

    token = ray_settings().METRICS_BEARER_TOKEN
    if token and not _authorized(request, token):
        response = HttpResponse(
            "401 Unauthorized: send 'Authorization: Bearer <METRICS_BEARER_TOKEN>'.\n",
            status=401,
            content_type="text/plain; charset=utf-8",
        )
        response["WWW-Authenticate"] = 'Bearer realm="django-ray metrics"'
        return response
    encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
    return HttpResponse(encoder(registry_for()), content_type=content_type)
