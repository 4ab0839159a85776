"""A Django view serving django-ray's database gauges in the Prometheus text format.

Mount it in any project::

    from django_ray.metrics.views import metrics_view
    urlpatterns = [path("api/metrics", metrics_view)]

Scrapes must send ``Authorization: Bearer <DJANGO_RAY["METRICS_BEARER_TOKEN"]>``. With no token
configured every scrape gets 401, unless ``DJANGO_RAY["METRICS_ALLOW_ANONYMOUS"]`` is True (local
development only): the metrics name queues and failing callables, and each read aggregates the
whole executions table. One database read is reused for ``METRICS_CACHE_SECONDS`` by every scrape
served by the same process, so frequent or concurrent scrapes cost one query per window.
"""

from __future__ import annotations

import hmac
import threading
import time
from collections.abc import Callable, Iterator

from django.http import HttpRequest, HttpResponse
from django.views.decorators.http import require_GET
from prometheus_client import CollectorRegistry
from prometheus_client.core import Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector

from django_ray.metrics.db import DatabaseCollector


class CachedCollector(Collector):
    """Reuses the metric families of ``inner`` for ``max_age()`` seconds.

    Concurrent scrapes wait for the one read in progress instead of each starting their own.
    """

    def __init__(
        self,
        inner: Collector,
        max_age: Callable[[], float],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.inner = inner
        self.max_age = max_age
        self.clock = clock
        self._lock = threading.Lock()
        self._families: list[Metric] | None = None
        self._read_at = 0.0

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            now = self.clock()
            if self._families is None or now - self._read_at >= self.max_age():
                self._families = list(self.inner.collect())
                self._read_at = now
            families = self._families
        return iter(families)


def _cache_seconds() -> float:
    from django_ray.conf import ray_settings

    return float(ray_settings().METRICS_CACHE_SECONDS)


_registries: dict[str, CollectorRegistry] = {}
_lock = threading.Lock()


def registry_for(using: str = "default") -> CollectorRegistry:
    """A registry holding the (cached) :class:`DatabaseCollector` of database ``using``."""
    with _lock:
        registry = _registries.get(using)
        if registry is None:
            registry = CollectorRegistry(auto_describe=False)
            registry.register(CachedCollector(DatabaseCollector(using=using), _cache_seconds))
            _registries[using] = registry
        return registry


def _authorized(request: HttpRequest, token: str) -> bool:
    header = request.headers.get("Authorization", "")
    scheme, _, given = header.partition(" ")
    if scheme.lower() != "bearer" or not given:
        return False
    return hmac.compare_digest(given.strip().encode(), token.encode())


def _unauthorized(reason: str) -> HttpResponse:
    response = HttpResponse(
        f"401 Unauthorized: {reason}\n", status=401, content_type="text/plain; charset=utf-8"
    )
    response["WWW-Authenticate"] = 'Bearer realm="django-ray metrics"'
    return response


@require_GET
def metrics_view(request: HttpRequest) -> HttpResponse:
    """Prometheus exposition of the database gauges (text or OpenMetrics, by ``Accept``)."""
    from django_ray.conf import ray_settings

    settings = ray_settings()
    token = settings.METRICS_BEARER_TOKEN
    if token:
        if not _authorized(request, token):
            return _unauthorized("send 'Authorization: Bearer <METRICS_BEARER_TOKEN>'.")
    elif not settings.METRICS_ALLOW_ANONYMOUS:
        # Closed by default: a project that forgot the token must not publish its metrics.
        return _unauthorized(
            "the server has no DJANGO_RAY['METRICS_BEARER_TOKEN']; set one (e.g. "
            "`openssl rand -hex 32`) and give it to Prometheus, or set "
            "DJANGO_RAY['METRICS_ALLOW_ANONYMOUS'] = True for local development."
        )
    encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
    return HttpResponse(encoder(registry_for()), content_type=content_type)
