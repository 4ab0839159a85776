"""Operator tools against a real Ray cluster: a --cluster worker's exporter and the status probe."""

from __future__ import annotations

import io
import json
import threading
import urllib.request
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

import pytest
from django.core.management import call_command
from prometheus_client.parser import text_string_to_metric_families

from django_ray.models import RayTaskExecution, TaskState
from django_ray.status import probe_ray
from tests import tasks
from tests.conftest import wait_until
from tests.support.postgres import free_port

pytestmark = pytest.mark.django_db(transaction=True)


def test_cluster_worker_metrics_and_status(start_worker, ray_head, settings: Any) -> None:  # type: ignore[no-untyped-def]
    port = free_port()
    for i in range(10):
        tasks.add.enqueue(i, 1)
    tasks.fail_permanent.enqueue()
    worker = start_worker(
        "--cluster",
        ray_head.address,
        "--concurrency",
        "2",
        "--worker-id",
        "ray-metrics-worker",
        env={"DJANGO_RAY_TEST_SETTINGS": json.dumps({"WORKER_METRICS_PORT": port})},
    )
    wait_until(
        lambda: (
            RayTaskExecution.objects.filter(
                state__in=[TaskState.SUCCEEDED, TaskState.FAILED]
            ).count()
            == 11
        ),
        120,
        explain=worker.log,
    )
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    assert samples[("django_ray_worker_ray_connected", ())] == 1
    assert samples[("django_ray_worker_tasks_claimed_total", (("queue", "default"),))] == 11
    assert (
        samples[
            (
                "django_ray_worker_tasks_completed_total",
                (("outcome", "succeeded"), ("queue", "default")),
            )
        ]
        == 10
    )
    info = next(k for k in samples if k[0] == "django_ray_worker_info")
    assert dict(info[1])["runner"] == "ray_core"

    settings.DJANGO_RAY = {**settings.DJANGO_RAY, "RAY_ADDRESS": ray_head.address}
    out = io.StringIO()
    call_command("django_ray_status", "--json", stdout=out)
    status = json.loads(out.getvalue())
    checks = {c["name"]: c for c in status["checks"]}
    assert checks["ray"]["status"] == "ok", checks["ray"]
    assert status["ray"]["worker_runners"] == ["ray_core"]
    assert checks["workers"]["status"] == "ok"
    assert {lease["worker_id"] for lease in status["leases"]} >= {"ray-metrics-worker"}
    # The Jobs API address (the default ray_job runner's RAY_ADDRESS) answers with the token.
    settings.DJANGO_RAY = {**settings.DJANGO_RAY, "RAY_ADDRESS": ray_head.dashboard_url}
    assert probe_ray(ray_head.dashboard_url)["reachable"] is True
    out = io.StringIO()
    call_command("django_ray_status", "--json", stdout=out)
    assert {c["name"]: c for c in json.loads(out.getvalue())["checks"]}["ray"]["status"] == "ok"
    assert worker.stop() == 0, worker.log()


def test_probe_names_auth_failures() -> None:
    class Unauthorized(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(401)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Unauthorized)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        result = probe_ray(f"http://127.0.0.1:{server.server_address[1]}", timeout=5)
    finally:
        server.shutdown()
        server.server_close()
    assert result["reachable"] is False
    assert "HTTP 401" in result["detail"] and "auth token" in result["detail"]
    closed = probe_ray(f"127.0.0.1:{free_port()}", timeout=2)
    assert closed["reachable"] is False and "TCP" in closed["detail"]
    assert probe_ray("not an address")["reachable"] is False
    assert probe_ray(None)["reachable"] is None
