"""The worker process's own Prometheus exporter (``WORKER_METRICS_PORT``).

The worker loop calls the module-level functions below (``record_claimed``, ``record_started``,
``record_finished``, ``set_in_flight``, ``set_ray_connected``, ``record_loop_iteration`` ...);
they update a process-wide :class:`WorkerMetrics` whose registry :func:`start_exporter` serves
over HTTP. Recording is cheap and always on; the HTTP server runs only when a port is set.

=========================================================  =========  ==========================
metric                                                     type       labels
=========================================================  =========  ==========================
``django_ray_worker_info``                                 gauge (1)  worker_id, runner, queues
``django_ray_worker_concurrency``                          gauge
``django_ray_worker_tasks_claimed_total``                  counter    queue
``django_ray_worker_claim_batches_total``                  counter
``django_ray_worker_tasks_completed_total``                counter    queue, outcome
``django_ray_worker_task_duration_seconds``                histogram  queue
``django_ray_worker_task_queue_wait_seconds``              histogram  queue
``django_ray_worker_tasks_in_flight``                      gauge
``django_ray_worker_ray_connected``                        gauge      (1 connected, 0 not)
``django_ray_worker_ray_reconnects_total``                 counter
``django_ray_worker_lease_losses_total``                   counter
``django_ray_worker_loop_iterations_total``                counter
``django_ray_worker_last_loop_success_timestamp_seconds``  gauge
``django_ray_worker_periodic_fires_total``                 counter    schedule
``django_ray_worker_periodic_misses_total``                counter    schedule
``django_ray_worker_periodic_last_fire_timestamp_seconds`` gauge      schedule
=========================================================  =========  ==========================

``outcome`` is one of :data:`OUTCOMES`, so label sets stay bounded.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info
from prometheus_client.exposition import start_http_server

#: Outcomes of one attempt as the worker records them.
OUTCOMES = ("succeeded", "failed", "retried", "lost", "cancelled", "interrupted")

DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)
WAIT_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)


class WorkerMetrics:
    """All metrics of one worker process, in their own registry."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.info = Info("django_ray_worker", "Identity of this django_ray_worker.", registry=r)
        self.concurrency = Gauge(
            "django_ray_worker_concurrency", "Tasks this worker runs at once.", registry=r
        )
        self.claimed = Counter(
            "django_ray_worker_tasks_claimed",
            "Rows this worker claimed (QUEUED -> RUNNING).",
            ["queue"],
            registry=r,
        )
        self.claim_batches = Counter(
            "django_ray_worker_claim_batches",
            "Claim statements that returned at least one row.",
            registry=r,
        )
        self.completed = Counter(
            "django_ray_worker_tasks_completed",
            "Attempts this worker finished, by outcome.",
            ["queue", "outcome"],
            registry=r,
        )
        self.duration = Histogram(
            "django_ray_worker_task_duration_seconds",
            "Run time of finished attempts (start to outcome).",
            ["queue"],
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self.queue_wait = Histogram(
            "django_ray_worker_task_queue_wait_seconds",
            "Time from a row becoming due (run_after) to this worker starting it.",
            ["queue"],
            buckets=WAIT_BUCKETS,
            registry=r,
        )
        self.in_flight = Gauge(
            "django_ray_worker_tasks_in_flight", "Attempts running on this worker now.", registry=r
        )
        self.ray_connected = Gauge(
            "django_ray_worker_ray_connected",
            "1 while the worker's runner is connected to Ray (or needs no Ray), else 0.",
            registry=r,
        )
        self.ray_reconnects = Counter(
            "django_ray_worker_ray_reconnects", "Reconnections to Ray after a loss.", registry=r
        )
        self.lease_losses = Counter(
            "django_ray_worker_lease_losses",
            "Times this worker found its lease taken over or expired.",
            registry=r,
        )
        self.loop_iterations = Counter(
            "django_ray_worker_loop_iterations",
            "Completed iterations of the claim/run/record loop.",
            registry=r,
        )
        self.last_loop_success = Gauge(
            "django_ray_worker_last_loop_success_timestamp_seconds",
            "Unix time of the last loop iteration that completed without error.",
            registry=r,
        )
        self.periodic_fires = Counter(
            "django_ray_worker_periodic_fires",
            "Instants of a periodic schedule this worker enqueued.",
            ["schedule"],
            registry=r,
        )
        self.periodic_misses = Counter(
            "django_ray_worker_periodic_misses",
            "Instants of a schedule this worker skipped (older than PERIODIC_CATCHUP_SECONDS).",
            ["schedule"],
            registry=r,
        )
        self.periodic_last_fire = Gauge(
            "django_ray_worker_periodic_last_fire_timestamp_seconds",
            "Unix time of the latest instant of a schedule this worker enqueued.",
            ["schedule"],
            registry=r,
        )
        self._server: Any = None
        self.port: int | None = None


_metrics = WorkerMetrics()
_lock = threading.Lock()


def metrics() -> WorkerMetrics:
    """The process-wide :class:`WorkerMetrics`."""
    return _metrics


PORT_ENV = "DJANGO_RAY_WORKER_METRICS_PORT"


def configured_port(environ: Mapping[str, str] | None = None) -> int | None:
    """The exporter port: ``$DJANGO_RAY_WORKER_METRICS_PORT`` if set, else the setting.

    The environment wins so that one systemd template (``django-ray-worker@<queue>``) can give
    each queue's worker its own port while all share one settings module.
    """
    env = os.environ if environ is None else environ
    raw = env.get(PORT_ENV, "").strip()
    if raw:
        if not raw.isdigit() or int(raw) > 65_535:
            raise ValueError(
                f"{PORT_ENV}={raw!r} is not a port: use a number from 0 (any free port) "
                "to 65535, or unset it to use DJANGO_RAY['WORKER_METRICS_PORT']."
            )
        return int(raw)
    from django_ray.conf import ray_settings

    port: int | None = ray_settings().WORKER_METRICS_PORT
    return port


ADDRESS_ENV = "DJANGO_RAY_WORKER_METRICS_ADDRESS"


def configured_address(environ: Mapping[str, str] | None = None) -> str:
    """The exporter's bind address: ``$DJANGO_RAY_WORKER_METRICS_ADDRESS`` if set, else the
    ``WORKER_METRICS_ADDRESS`` setting (loopback by default).

    Never all interfaces by default: the deployment names the node's cluster address, which
    its firewall opens to the monitoring host only.
    """
    env = os.environ if environ is None else environ
    raw = env.get(ADDRESS_ENV, "").strip()
    if raw:
        return raw
    from django_ray.conf import ray_settings

    address: str = ray_settings().WORKER_METRICS_ADDRESS.strip()
    return address


def start_exporter(port: int | None = None, addr: str | None = None) -> int | None:
    """Serve the worker's metrics on ``port`` (default: :func:`configured_port`).

    ``None`` (the default setting) serves nothing; ``0`` picks a free port. The address is
    ``addr``, else :func:`configured_address`. Returns the bound port, or None. Starting twice
    returns the port already bound.
    """
    addr = addr or configured_address()
    if port is None:
        port = configured_port()
    if port is None:
        return None
    with _lock:
        if _metrics._server is not None:
            return _metrics.port
        try:
            server, _thread = start_http_server(port, addr=addr, registry=_metrics.registry)
        except OSError as exc:
            raise OSError(
                exc.errno,
                f"cannot serve worker metrics on {addr}:{port}: {exc.strerror}. Set "
                "DJANGO_RAY['WORKER_METRICS_PORT'] to a free port (or 0 for any, None for off).",
            ) from exc
        _metrics._server = server
        _metrics.port = int(server.server_address[1])
        return _metrics.port


def stop_exporter() -> None:
    """Stop the HTTP server started by :func:`start_exporter` (if any)."""
    with _lock:
        if _metrics._server is not None:
            _metrics._server.shutdown()
            _metrics._server.server_close()
            _metrics._server = None
            _metrics.port = None


def set_worker_info(worker_id: str, runner: str, queues: str, concurrency: int) -> None:
    """Record who this worker is (``django_ray_worker_info``) and its concurrency."""
    _metrics.info.info({"worker_id": worker_id, "runner": runner, "queues": queues})
    _metrics.concurrency.set(concurrency)


def record_claimed(queue: str, count: int = 1) -> None:
    """``count`` rows of ``queue`` were claimed."""
    if count > 0:
        _metrics.claimed.labels(queue=queue).inc(count)


def record_claim_batch() -> None:
    """One claim statement returned rows."""
    _metrics.claim_batches.inc()


def record_started(queue: str, wait_seconds: float) -> None:
    """An attempt started ``wait_seconds`` after its row became due."""
    _metrics.queue_wait.labels(queue=queue).observe(max(0.0, wait_seconds))


def record_finished(queue: str, outcome: str, duration_seconds: float | None) -> None:
    """An attempt finished with ``outcome`` (one of :data:`OUTCOMES`) after ``duration``."""
    if outcome not in OUTCOMES:
        raise ValueError(f"unknown outcome {outcome!r}; use one of {', '.join(OUTCOMES)}")
    _metrics.completed.labels(queue=queue, outcome=outcome).inc()
    if duration_seconds is not None:
        _metrics.duration.labels(queue=queue).observe(max(0.0, duration_seconds))


def set_in_flight(count: int) -> None:
    """Attempts running on this worker right now."""
    _metrics.in_flight.set(count)


def set_ray_connected(connected: bool) -> None:
    """Whether the runner currently reaches Ray."""
    _metrics.ray_connected.set(1 if connected else 0)


def record_ray_reconnect() -> None:
    """The runner reconnected to Ray after losing it."""
    _metrics.ray_reconnects.inc()
    _metrics.ray_connected.set(1)


def record_lease_lost() -> None:
    """The worker's lease was lost."""
    _metrics.lease_losses.inc()


def record_loop_iteration(now: float | None = None) -> None:
    """One loop iteration completed without error."""
    _metrics.loop_iterations.inc()
    _metrics.last_loop_success.set(time.time() if now is None else now)


def record_periodic(schedule: str, fired: int, skipped: int, last_instant: float | None) -> None:
    """This worker enqueued ``fired`` instants of ``schedule`` and skipped ``skipped``."""
    if fired:
        _metrics.periodic_fires.labels(schedule=schedule).inc(fired)
    if skipped:
        _metrics.periodic_misses.labels(schedule=schedule).inc(skipped)
    if last_instant is not None:
        _metrics.periodic_last_fire.labels(schedule=schedule).set(last_instant)
