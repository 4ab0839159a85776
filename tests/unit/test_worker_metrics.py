"""The worker exporter's recording functions, port selection and HTTP endpoint."""

from __future__ import annotations

import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from django_ray.metrics import worker as wm


@pytest.fixture
def fresh(monkeypatch: pytest.MonkeyPatch) -> Iterator[wm.WorkerMetrics]:
    metrics = wm.WorkerMetrics()
    monkeypatch.setattr(wm, "_metrics", metrics)
    yield metrics
    wm.stop_exporter()


def _value(metrics: wm.WorkerMetrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels or None)


def test_recording_functions(fresh: wm.WorkerMetrics) -> None:
    wm.set_worker_info("w-1", "sync", "default,slow", 4)
    wm.record_claim_batch()
    wm.record_claimed("default", 3)
    wm.record_claimed("default", 0)
    wm.record_started("default", 2.5)
    wm.record_started("default", -1.0)  # clock skew never observes a negative wait
    wm.record_finished("default", "succeeded", 0.3)
    wm.record_finished("default", "retried", None)
    wm.set_in_flight(2)
    wm.set_ray_connected(False)
    wm.record_ray_reconnect()
    wm.record_lease_lost()
    wm.record_loop_iteration(now=1234.0)
    assert (
        _value(
            fresh, "django_ray_worker_info", worker_id="w-1", runner="sync", queues="default,slow"
        )
        == 1
    )
    assert _value(fresh, "django_ray_worker_concurrency") == 4
    assert _value(fresh, "django_ray_worker_claim_batches_total") == 1
    assert _value(fresh, "django_ray_worker_tasks_claimed_total", queue="default") == 3
    assert _value(fresh, "django_ray_worker_task_queue_wait_seconds_count", queue="default") == 2
    assert _value(fresh, "django_ray_worker_task_queue_wait_seconds_sum", queue="default") == 2.5
    assert (
        _value(fresh, "django_ray_worker_tasks_completed_total", queue="default", outcome="retried")
        == 1
    )
    assert _value(fresh, "django_ray_worker_task_duration_seconds_count", queue="default") == 1
    assert _value(fresh, "django_ray_worker_tasks_in_flight") == 2
    assert _value(fresh, "django_ray_worker_ray_connected") == 1  # reconnect sets it back
    assert _value(fresh, "django_ray_worker_ray_reconnects_total") == 1
    assert _value(fresh, "django_ray_worker_lease_losses_total") == 1
    assert _value(fresh, "django_ray_worker_last_loop_success_timestamp_seconds") == 1234.0
    with pytest.raises(ValueError, match="unknown outcome 'exploded'"):
        wm.record_finished("default", "exploded", 1.0)


def test_port_from_environment_wins_and_is_validated(settings: Any) -> None:
    settings.DJANGO_RAY = {"WORKER_METRICS_PORT": 9100}
    assert wm.configured_port({}) == 9100
    assert wm.configured_port({wm.PORT_ENV: "9811"}) == 9811
    settings.DJANGO_RAY = {}
    assert wm.configured_port({}) is None
    for bad in ("http", "70000", "-1"):
        with pytest.raises(ValueError, match=wm.PORT_ENV):
            wm.configured_port({wm.PORT_ENV: bad})


def test_address_defaults_to_loopback_and_the_environment_wins(settings: Any) -> None:
    settings.DJANGO_RAY = {}
    assert wm.configured_address({}) == "127.0.0.1"
    settings.DJANGO_RAY = {"WORKER_METRICS_ADDRESS": "10.0.0.5"}
    assert wm.configured_address({}) == "10.0.0.5"
    assert wm.configured_address({wm.ADDRESS_ENV: " 10.0.0.9 "}) == "10.0.0.9"
    assert wm.configured_address({wm.ADDRESS_ENV: ""}) == "10.0.0.5"


def test_exporter_binds_loopback_unless_told_otherwise(
    fresh: wm.WorkerMetrics, monkeypatch: pytest.MonkeyPatch, settings: Any
) -> None:
    monkeypatch.delenv(wm.ADDRESS_ENV, raising=False)
    settings.DJANGO_RAY = {}
    assert wm.start_exporter(0)
    assert fresh._server.server_address[0] == "127.0.0.1"


def test_exporter_serves_over_http(
    fresh: wm.WorkerMetrics, monkeypatch: pytest.MonkeyPatch, settings: Any
) -> None:
    monkeypatch.delenv(wm.PORT_ENV, raising=False)
    settings.DJANGO_RAY = {}
    assert wm.start_exporter(None) is None  # no port configured: no server
    monkeypatch.setenv(wm.ADDRESS_ENV, "127.0.0.1")
    port = wm.start_exporter(0)
    assert port
    assert fresh._server.server_address[0] == "127.0.0.1"
    assert wm.start_exporter(0, addr="127.0.0.1") == port  # idempotent
    wm.record_claimed("q", 2)
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        body = response.read().decode()
    assert 'django_ray_worker_tasks_claimed_total{queue="q"} 2.0' in body
    wm.stop_exporter()
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2)
