"""Alert rules, their promtool unit tests, the Grafana dashboard, and metric exposition lint."""

from __future__ import annotations

import datetime as dt
import json
import re
import subprocess
from pathlib import Path

import pytest
import yaml
from prometheus_client import CollectorRegistry, generate_latest

from django_ray.metrics import worker as worker_metrics
from django_ray.metrics.db import DatabaseCollector
from tests.support.promtool import INSTALL_HINT, find_promtool

ROOT = Path(__file__).resolve().parents[2]
MONITORING = ROOT / "packaging" / "monitoring"
RULES = MONITORING / "django-ray-alerts.yml"
RULE_TESTS = MONITORING / "tests" / "django-ray-alerts.test.yml"
DASHBOARD = MONITORING / "django-ray-dashboard.json"

NOW = dt.datetime(2026, 1, 1, 12, 0, tzinfo=dt.UTC)
SAMPLE_ROWS = [
    ("state", "QUEUED", "default", 5, 3, 1, NOW - dt.timedelta(seconds=90), None, None),
    ("state", "QUEUED", "slow", 2, 0, 0, None, None, None),
    ("state", "RUNNING", "default", 4, 4, 0, NOW, NOW - dt.timedelta(seconds=30), None),
    ("state", "SUCCEEDED", "default", 100, 100, 3, NOW, None, NOW - dt.timedelta(seconds=5)),
    ("state", "FAILED", "default", 7, 7, 7, NOW, None, NOW - dt.timedelta(seconds=60)),
    ("failed", "example.tasks.flaky", "FAILED", 6, 4, 0, None, None, None),
    ("failed", "example.tasks.boom", "LOST", 1, 0, 0, None, None, None),
    ("orphaned", "RUNNING", None, 1, 0, 0, None, NOW - dt.timedelta(seconds=300), None),
    ("lease", "active", None, 2, 0, 0, None, NOW - dt.timedelta(seconds=8), None),
    ("lease", "stale", None, 1, 0, 0, None, NOW - dt.timedelta(seconds=100), None),
]


@pytest.fixture(scope="module")
def promtool() -> str:
    path = find_promtool()
    if path is None:
        pytest.skip(f"promtool not available; {INSTALL_HINT}")
    return path


class FixedRowsCollector(DatabaseCollector):
    """The real collector with the database answer replaced by fixed rows (pure logic)."""

    def now(self) -> dt.datetime:
        return NOW

    def query(self, now: dt.datetime) -> list[tuple[object, ...]]:
        return SAMPLE_ROWS


def _db_exposition() -> str:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(FixedRowsCollector())
    return generate_latest(registry).decode()


def _worker_exposition() -> str:
    metrics = worker_metrics.WorkerMetrics()
    metrics.info.info({"worker_id": "host-1", "runner": "ray_core", "queues": "default"})
    metrics.claimed.labels(queue="default").inc(3)
    metrics.completed.labels(queue="default", outcome="succeeded").inc()
    metrics.duration.labels(queue="default").observe(0.2)
    metrics.queue_wait.labels(queue="default").observe(0.01)
    metrics.loop_iterations.inc()
    return generate_latest(metrics.registry).decode()


def exported_names() -> set[str]:
    """Every sample name our exporters produce (plus Prometheus' own ``up``)."""
    names = {"up"}
    for text in (_db_exposition(), _worker_exposition()):
        for line in text.splitlines():
            if line and not line.startswith("#"):
                names.add(re.split(r"[{ ]", line, maxsplit=1)[0])
    return names


def _metric_names(expr: str) -> set[str]:
    return set(re.findall(r"\b(django_ray_[a-z0-9_]+|up)\b", expr))


def test_db_exposition_values() -> None:
    text = _db_exposition()
    assert 'django_ray_tasks_total{state="QUEUED"} 7.0' in text
    assert 'django_ray_tasks_total{state="LOST"} 0.0' in text  # every state is always present
    assert "# TYPE django_ray_tasks_total untyped" in text
    assert "django_ray_tasks_queued 7.0" in text
    assert "django_ray_tasks_running 4.0" in text
    assert 'django_ray_queue_depth{queue="slow"} 2.0' in text
    assert 'django_ray_queue_due_tasks{queue="default"} 3.0' in text
    assert 'django_ray_queue_oldest_due_age_seconds{queue="default"} 90.0' in text
    assert 'django_ray_queue_oldest_due_age_seconds{queue="slow"} 0.0' in text
    assert "django_ray_tasks_retry_waiting 1.0" in text
    assert (
        "django_ray_callable_recent_failures"
        '{callable_path="example.tasks.flaky",state="FAILED"} 4.0' in text
    )
    assert 'django_ray_tasks_orphaned{state="RUNNING"} 1.0' in text
    assert 'django_ray_tasks_oldest_heartbeat_age_seconds{state="RUNNING"} 30.0' in text
    assert 'django_ray_worker_leases{status="stale"} 1.0' in text
    assert "django_ray_worker_lease_oldest_heartbeat_age_seconds 8.0" in text
    finished = (NOW - dt.timedelta(seconds=5)).timestamp()
    assert f"django_ray_tasks_last_finished_timestamp_seconds {finished:.9e}" in text or (
        f"django_ray_tasks_last_finished_timestamp_seconds {finished}" in text
    )


def test_callable_labels_are_bounded() -> None:
    rows = [
        ("failed", f"app.tasks.t{i}", "FAILED", i + 1, 0, 0, None, None, None) for i in range(30)
    ]
    rows.append(("failed", "app.tasks.hot", "LOST", 1, 1, 0, None, None, None))
    collector = DatabaseCollector(max_callables=5)
    families = {f.name: f for f in collector.families(rows, NOW)}
    failed = families["django_ray_callable_failed_tasks"]
    labels = {s.labels["callable_path"] for s in failed.samples}
    # The one with recent failures ranks first, then the largest totals, the rest are summed.
    assert labels == {"app.tasks.hot", "app.tasks.t29", "app.tasks.t28", "app.tasks.t27"} | {
        "app.tasks.t26",
        "__other__",
    }
    total = sum(s.value for s in failed.samples)
    assert total == sum(range(1, 31)) + 1
    with pytest.raises(ValueError, match="max_callables"):
        DatabaseCollector(max_callables=0)


def test_exposition_passes_promtool_check_metrics(promtool: str) -> None:
    for text in (_db_exposition(), _worker_exposition()):
        result = subprocess.run(
            [promtool, "check", "metrics"], input=text, capture_output=True, text=True
        )
        assert result.returncode == 0, result.stdout + result.stderr
        assert result.stdout.strip() == "" and result.stderr.strip() == "", result.stderr


def test_alert_rules_are_valid_and_their_unit_tests_pass(promtool: str) -> None:
    check = subprocess.run([promtool, "check", "rules", str(RULES)], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    run = subprocess.run(
        [promtool, "test", "rules", RULE_TESTS.name],
        cwd=RULE_TESTS.parent,
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "SUCCESS" in run.stdout + run.stderr


def test_every_alert_has_a_unit_test_and_uses_real_metrics() -> None:
    rules = yaml.safe_load(RULES.read_text())["groups"][0]["rules"]
    tests = yaml.safe_load(RULE_TESTS.read_text())["tests"]
    tested_firing = {
        case["alertname"]
        for group in tests
        for case in group.get("alert_rule_test", [])
        if case.get("exp_alerts")
    }
    names = exported_names()
    for rule in rules:
        assert rule["alert"] in tested_firing, f"{rule['alert']} has no firing promtool test"
        assert rule["annotations"]["runbook"].startswith("docs/runbook.md#")
        unknown = _metric_names(rule["expr"]) - names
        assert not unknown, f"{rule['alert']} uses metrics no exporter produces: {unknown}"


def test_runbook_anchors_of_alerts_exist() -> None:
    runbook = ROOT / "docs" / "runbook.md"
    if not runbook.exists():
        pytest.skip("docs/runbook.md not written yet")
    anchors = set()
    for line in runbook.read_text().splitlines():
        if line.startswith("#"):
            title = line.lstrip("#").strip().lower()
            anchors.add(re.sub(r"[^a-z0-9 _-]", "", title).replace(" ", "-"))
    for rule in yaml.safe_load(RULES.read_text())["groups"][0]["rules"]:
        anchor = rule["annotations"]["runbook"].split("#", 1)[1]
        assert anchor in anchors, f"{rule['alert']}: docs/runbook.md has no section #{anchor}"


def test_dashboard_is_grafana_json_using_real_metrics() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] == "django-ray"
    assert dashboard["templating"]["list"][0]["type"] == "datasource"
    names = exported_names()
    used: set[str] = set()
    ids = set()
    for panel in dashboard["panels"]:
        assert panel["id"] not in ids
        ids.add(panel["id"])
        if panel["type"] == "row":
            continue
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            found = _metric_names(target["expr"])
            unknown = found - names
            assert not unknown, f"panel {panel['title']!r} uses unknown metrics {unknown}"
            used |= found
    # The runbook's four primary signals are on the dashboard.
    for required in (
        "django_ray_tasks_total",
        "django_ray_tasks_queued",
        "django_ray_tasks_running",
        "django_ray_queue_depth",
    ):
        assert required in used


def test_alert_jobs_are_scraped_by_the_ansible_monitoring_role() -> None:
    template = ROOT / "ansible" / "roles" / "monitoring" / "templates" / "prometheus.yml.j2"
    if not template.exists():
        pytest.skip("the Ansible monitoring role is not in this checkout")
    scraped = set(re.findall(r"job_name:\s*([\w-]+)", template.read_text()))
    rules = yaml.safe_load(RULES.read_text())["groups"][0]["rules"]
    referenced = {job for rule in rules for job in re.findall(r'job="([^"]+)"', rule["expr"])}
    assert referenced, "the rules name the jobs they watch"
    assert referenced <= scraped, f"rules watch jobs the role never scrapes: {referenced - scraped}"
    # And the README's documented job names match too.
    readme = (MONITORING / "README.md").read_text()
    for job in ("django-ray", "django-ray-worker"):
        assert f'job="{job}"' in readme and job in scraped
