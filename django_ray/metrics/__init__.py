"""Prometheus metrics for django-ray.

- :mod:`django_ray.metrics.db`: database gauges (task states, queues, failures by callable,
  lease health) as a custom collector, one query per scrape.
- :mod:`django_ray.metrics.views`: :func:`~django_ray.metrics.views.metrics_view`, a Django view
  serving those gauges (optionally behind ``METRICS_BEARER_TOKEN``). Mount it with
  ``path("api/metrics", metrics_view)``.
- :mod:`django_ray.metrics.worker`: the worker process's own exporter on ``WORKER_METRICS_PORT``.
"""
