"""Database metrics against real PostgreSQL: values, one query per scrape, the view, promtool."""

from __future__ import annotations

import subprocess
from datetime import timedelta

import pytest
from django.db import connection
from django.test import RequestFactory
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from django_ray.lifecycle import claim, leases
from django_ray.metrics.db import DatabaseCollector
from django_ray.metrics.views import metrics_view
from django_ray.models import RayTaskExecution
from tests import tasks
from tests.support.promtool import find_promtool

pytestmark = pytest.mark.django_db(transaction=True)


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def _scrape() -> str:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(DatabaseCollector())
    return generate_latest(registry).decode()


def _seed(start_worker) -> None:  # type: ignore[no-untyped-def]
    """Real rows: successes and terminal failures through a worker; queued and owned rows."""
    for i in range(3):
        tasks.add.enqueue(i, 1)
    for _ in range(2):
        tasks.fail_permanent.enqueue()
    worker = start_worker("--sync", "--idle-exit", "1", "--queues", "default")
    assert worker.wait(120) == 0, worker.log()
    # Queued work on two queues, one deferred.
    for _ in range(4):
        tasks.noop.enqueue()
    tasks.noop.using(queue_name="other").enqueue()
    tasks.noop.using(queue_name="other", run_after=timezone.now() + timedelta(hours=1)).enqueue()
    # A RUNNING row claimed by a worker whose lease expired: an orphan and a stale lease.
    leases.register_lease("dead-worker", "host-x", 4242, ["slow"], "sync", 1, 1.0)
    tasks.noop.using(queue_name="slow").enqueue()
    claimed = claim.claim("dead-worker", ["slow"], 1)
    assert len(claimed) == 1
    RayTaskExecution.objects.filter(task_id=claimed[0].task_id).update(
        last_heartbeat_at=timezone.now() - timedelta(minutes=5)
    )
    from django_ray.models import TaskWorkerLease

    TaskWorkerLease.objects.filter(worker_id="dead-worker").update(
        expires_at=timezone.now() - timedelta(minutes=4),
        last_heartbeat_at=timezone.now() - timedelta(minutes=5),
    )


def test_collector_reads_real_rows_with_one_query(start_worker) -> None:  # type: ignore[no-untyped-def]
    _seed(start_worker)
    with CaptureQueriesContext(connection) as queries:
        text = _scrape()
    assert len(queries) == 1, [q["sql"][:80] for q in queries]
    s = _samples(text)
    assert s[("django_ray_tasks_total", (("state", "SUCCEEDED"),))] == 3
    assert s[("django_ray_tasks_total", (("state", "FAILED"),))] == 2
    assert s[("django_ray_tasks_total", (("state", "QUEUED"),))] == 6
    assert s[("django_ray_tasks_total", (("state", "RUNNING"),))] == 1
    assert s[("django_ray_tasks_total", (("state", "LOST"),))] == 0
    assert s[("django_ray_tasks_queued", ())] == 6
    assert s[("django_ray_tasks_running", ())] == 1
    assert s[("django_ray_queue_depth", (("queue", "default"),))] == 4
    assert s[("django_ray_queue_depth", (("queue", "other"),))] == 2
    assert s[("django_ray_queue_due_tasks", (("queue", "other"),))] == 1
    assert s[("django_ray_queue_oldest_due_age_seconds", (("queue", "default"),))] >= 0
    assert (
        s[
            (
                "django_ray_callable_failed_tasks",
                (("callable_path", "tests.tasks.fail_permanent"), ("state", "FAILED")),
            )
        ]
        == 2
    )
    assert s[("django_ray_tasks_orphaned", (("state", "RUNNING"),))] == 1
    assert s[("django_ray_tasks_oldest_heartbeat_age_seconds", (("state", "RUNNING"),))] >= 299
    assert s[("django_ray_worker_leases", (("status", "stale"),))] == 1
    assert s[("django_ray_worker_leases", (("status", "inactive"),))] >= 1  # the sync worker
    assert s[("django_ray_tasks_last_finished_timestamp_seconds", ())] > 0
    assert s[("django_ray_metrics_db_up", ())] == 1


TOKEN = "0123456789abcdef-metrics"


def test_view_refuses_every_scrape_when_no_token_is_configured(settings) -> None:  # type: ignore[no-untyped-def]
    settings.DJANGO_RAY = {**settings.DJANGO_RAY, "METRICS_CACHE_SECONDS": 0}
    factory = RequestFactory()
    refused = metrics_view(factory.get("/api/metrics"))
    assert refused.status_code == 401
    assert b"METRICS_BEARER_TOKEN" in refused.content
    assert b"METRICS_ALLOW_ANONYMOUS" in refused.content
    assert refused["WWW-Authenticate"].startswith("Bearer")
    # Any bearer is refused too: there is nothing to compare it with.
    guess = metrics_view(factory.get("/api/metrics", HTTP_AUTHORIZATION="Bearer "))
    assert guess.status_code == 401

    settings.DJANGO_RAY = {**settings.DJANGO_RAY, "METRICS_ALLOW_ANONYMOUS": True}
    assert metrics_view(factory.get("/api/metrics")).status_code == 200


def test_view_serves_metrics_behind_the_bearer_token(settings) -> None:  # type: ignore[no-untyped-def]
    settings.DJANGO_RAY = {
        **settings.DJANGO_RAY,
        "METRICS_BEARER_TOKEN": TOKEN,
        "METRICS_CACHE_SECONDS": 0,
    }
    tasks.noop.enqueue()
    factory = RequestFactory()
    response = metrics_view(factory.get("/api/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}"))
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain")
    body = response.content.decode()
    assert "django_ray_tasks_queued 1.0" in body
    promtool = find_promtool()
    if promtool:
        lint = subprocess.run(
            [promtool, "check", "metrics"], input=body, capture_output=True, text=True
        )
        assert lint.returncode == 0 and not lint.stdout.strip(), lint.stdout + lint.stderr

    assert metrics_view(factory.get("/api/metrics")).status_code == 401
    wrong = factory.get("/api/metrics", HTTP_AUTHORIZATION="Bearer nope")
    denied = metrics_view(wrong)
    assert denied.status_code == 401
    assert denied["WWW-Authenticate"].startswith("Bearer")
    # A token is never served anonymously, whatever METRICS_ALLOW_ANONYMOUS says.
    settings.DJANGO_RAY = {**settings.DJANGO_RAY, "METRICS_ALLOW_ANONYMOUS": True}
    assert metrics_view(factory.get("/api/metrics")).status_code == 401
    assert metrics_view(factory.post("/api/metrics")).status_code == 405


def test_scrapes_within_the_cache_window_share_one_database_read(settings) -> None:  # type: ignore[no-untyped-def]
    settings.DJANGO_RAY = {
        **settings.DJANGO_RAY,
        "METRICS_BEARER_TOKEN": TOKEN,
        "METRICS_CACHE_SECONDS": 3600,
    }
    from django_ray.metrics import views

    views._registries.clear()
    factory = RequestFactory()

    def scrape(accept: str = "") -> str:
        response = metrics_view(
            factory.get("/api/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}", HTTP_ACCEPT=accept)
        )
        assert response.status_code == 200
        return response.content.decode()

    tasks.noop.enqueue()
    with CaptureQueriesContext(connection) as queries:
        first = scrape()
        tasks.noop.enqueue()  # one INSERT, not a metrics read
        second = scrape()
        scrape("application/openmetrics-text; version=1.0.0")
    reads = [q for q in queries if "django_ray_taskworkerlease" in q["sql"]]
    assert len(reads) == 1, [q["sql"][:80] for q in queries]
    assert "django_ray_tasks_queued 1.0" in first and second == first  # the cached read

    settings.DJANGO_RAY = {**settings.DJANGO_RAY, "METRICS_CACHE_SECONDS": 0}
    with CaptureQueriesContext(connection) as queries:
        assert "django_ray_tasks_queued 2.0" in scrape()
        scrape()
    assert len(queries) == 2
    views._registries.clear()


def test_database_down_is_a_metric_not_a_crash() -> None:
    class Broken(DatabaseCollector):
        def query(self, now):  # type: ignore[no-untyped-def]
            with connection.cursor() as cursor:
                cursor.execute("SELECT * FROM django_ray_no_such_table")
            return []

    registry = CollectorRegistry(auto_describe=False)
    registry.register(Broken())
    text = generate_latest(registry).decode()
    assert "django_ray_metrics_db_up 0.0" in text
    assert "django_ray_tasks_total" not in text
