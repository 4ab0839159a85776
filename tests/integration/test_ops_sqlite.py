"""The operator tools on the example project's default SQLite database (the demo's setup).

The metrics query and the status checklist must run on SQLite too; this drives the example
project's ``manage.py`` in subprocesses against a fresh SQLite file with a real sync worker.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def manage(
    db: Path, *args: str, timeout: float = 120, extra_env: dict[str, str] | None = None
) -> str:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("DJANGO_RAY_TEST", "DJANGO_SETTINGS_MODULE", "RAY_ADDRESS"))
    }
    env["DATABASE_URL"] = f"sqlite:///{db}"
    env["DJANGO_RAY_METRICS_ALLOW_ANONYMOUS"] = "1"  # as scripts/demo runs it
    env.update(extra_env or {})
    result = subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT / "example",
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_status_and_metrics_on_sqlite(tmp_path: Path) -> None:
    db = tmp_path / "demo.sqlite3"
    manage(db, "migrate", "-v0")
    manage(
        db,
        "shell",
        "-c",
        "from django.tasks import task_backends\n"
        "from demo.tasks import add, failing\n"
        "[add.enqueue(i, i) for i in range(2)]\n"
        # The bulk path on SQLite (the ORM's bulk_create), over two batches.
        "task_backends['default'].enqueue_many(add, [((i, i), {}) for i in range(2, 5)], "
        "batch_size=2)\n"
        "failing.enqueue(7)\n",
    )
    manage(db, "django_ray_worker", "--sync", "--all-queues", "--idle-exit", "1")
    manage(db, "shell", "-c", "from demo.tasks import add\nadd.enqueue(1, 1)\n")

    status = json.loads(manage(db, "django_ray_status", "--json", "--no-ray-probe"))
    assert status["states"]["SUCCEEDED"] == 5
    assert status["states"]["FAILED"] == 1
    assert status["states"]["QUEUED"] == 1
    assert status["failures"]["dominant"]["callable_path"] == "demo.tasks.failing"
    assert status["leases"][0]["status"] == "inactive"
    checks = {c["name"]: c["status"] for c in status["checks"]}
    assert checks["workers"] == "fail"  # one task queued, no worker running

    metrics = manage(
        db,
        "shell",
        "-c",
        "from django.test import Client\n"
        "print(Client(HTTP_HOST='localhost').get('/api/metrics').content.decode())\n",
    )
    assert 'django_ray_tasks_total{state="SUCCEEDED"} 5.0' in metrics
    assert 'django_ray_queue_depth{queue="default"} 1.0' in metrics
    assert "django_ray_metrics_db_up 1.0" in metrics
    assert 'django_ray_worker_leases{status="inactive"} 1.0' in metrics


ORPHAN_SCENARIO = """
import json
from datetime import timedelta
from django.utils import timezone
from django_ray.lifecycle import adopt, claim, leases, recover
from django_ray.models import RayTaskExecution, TaskWorkerLease
from demo.tasks import add

def dead_rows(worker, count, with_jobs):
    for i in range(count):
        add.enqueue(i, i)
    leases.register_lease(worker, "host", 1, ["default"], "ray_job", 4, 5.0)
    claimed = claim.claim(worker, ["default"], count)
    if with_jobs:
        adopt.attach_ray_jobs([(t.id, t.attempt_number, f"job-{t.id}") for t in claimed], "default")
    old = timezone.now() - timedelta(seconds=60)
    RayTaskExecution.objects.filter(claimed_by_worker=worker).update(last_heartbeat_at=old)
    return sorted(t.id for t in claimed)

jobs = dead_rows("dead-jobs", 2, True)
plain = dead_rows("dead-plain", 2, False)
recent = timezone.now() - timedelta(seconds=1)
TaskWorkerLease.objects.update(expires_at=recent, last_heartbeat_at=recent)
first = sorted(recover.detect_stuck_tasks(3.0).lost)
TaskWorkerLease.objects.update(expires_at=timezone.now() - timedelta(seconds=4), stopped_at=None)
second = sorted(recover.detect_stuck_tasks(3.0).lost)
print(json.dumps({"jobs": jobs, "plain": plain, "first": first, "second": second}))
"""


def test_sqlite_orphan_recovery_gives_ray_job_rows_the_adoption_wait(tmp_path: Path) -> None:
    """Same rule as the PostgreSQL query (sql.ORPHANS_SQL): rows without a Ray Job are
    recovered once their owner's lease expired; rows with one wait one more stuck timeout."""
    db = tmp_path / "orphans.sqlite3"
    manage(db, "migrate", "-v0")
    out = json.loads(manage(db, "shell", "-c", ORPHAN_SCENARIO).strip().splitlines()[-1])
    assert out["first"] == out["plain"]  # lease ended 1 s ago: only plain rows
    assert out["second"] == out["jobs"]  # lease ended 4 s ago (> 3 s stuck timeout): the jobs


def test_example_serves_no_demo_api_unless_opted_in(tmp_path: Path) -> None:
    db = tmp_path / "demo.sqlite3"
    manage(db, "migrate", "-v0")
    probe = (
        "from django.test import Client\n"
        "from django_ray.conf import ray_settings\n"
        "c = Client(HTTP_HOST='localhost')\n"
        "print('STATUS', c.post('/api/tasks', '{}', content_type='application/json').status_code,"
        " ray_settings().DEFAULT_TIMEOUT_SECONDS)\n"
    )
    assert "STATUS 404 None" in manage(db, "shell", "-c", probe)
    opted_in = manage(
        db,
        "shell",
        "-c",
        probe,
        extra_env={"DJANGO_RAY_EXAMPLE_DEMO_API": "1", "DJANGO_RAY_DEFAULT_TIMEOUT_SECONDS": "600"},
    )
    assert "STATUS 400 600.0" in opted_in  # mounted: the empty body names no task


def test_example_database_url_passes_tls_parameters_to_libpq(tmp_path: Path) -> None:
    out = manage(
        tmp_path / "unused.sqlite3",
        "shell",
        "-c",
        "from example_project.settings import database_from_url\n"
        "url = 'postgresql://u:p@10.0.0.5:5432/d?sslmode=verify-full&sslrootcert=/etc/ca.crt'\n"
        "print('OPTIONS', sorted(database_from_url(url)['OPTIONS'].items()))\n",
    )
    assert "OPTIONS [('sslmode', 'verify-full'), ('sslrootcert', '/etc/ca.crt')]" in out
