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


def manage(db: Path, *args: str, timeout: float = 120) -> str:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("DJANGO_RAY_TEST", "DJANGO_SETTINGS_MODULE", "RAY_ADDRESS"))
    }
    env["DATABASE_URL"] = f"sqlite:///{db}"
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
        "from demo.tasks import add, failing\n"
        "[add.enqueue(i, i) for i in range(5)]\n"
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
