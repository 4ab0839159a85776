"""The PostgreSQL server restarted mid-run: workers reconnect and continue, no row is lost."""

from __future__ import annotations

import time

import pytest
from django.db import DatabaseError, InterfaceError, connection

from django_ray.models import RayTaskExecution, TaskState
from tests import tasks
from tests.conftest import wait_until
from tests.faults.conftest import all_terminal, check_run, report, running_ids

pytestmark = pytest.mark.django_db(transaction=True)


def _tolerant(predicate):
    """The test's own connection breaks too while the server restarts: retry on errors."""

    def check() -> bool:
        try:
            return bool(predicate())
        except (DatabaseError, InterfaceError):
            connection.close()
            return False

    return check


def _succeeded() -> int:
    return RayTaskExecution.objects.filter(state=TaskState.SUCCEEDED).count()


def test_postgres_restart_mid_run(start_worker, ray_head, pg_server):
    markers = [f"pg-{i}" for i in range(300)]
    for marker in markers:
        tasks.sleep_for.enqueue(0.02, marker=marker)
    first = start_worker("--cluster", ray_head.address, "--concurrency", "2")
    second = start_worker("--sync")

    def logs() -> str:
        return f"--- first\n{first.log()[-3000:]}\n--- second\n{second.log()[-2000:]}"

    wait_until(lambda: _succeeded() >= 60, 120, explain=logs)
    in_flight = running_ids()
    started = time.monotonic()
    pg_server.restart("fast")
    restarted = time.monotonic() - started
    connection.close()
    before = _succeeded()
    wait_until(_tolerant(lambda: _succeeded() > before), 120, explain=logs)
    first_success = time.monotonic() - started
    wait_until(_tolerant(all_terminal), 180, explain=logs)
    all_done = time.monotonic() - started
    assert first.proc.poll() is None and second.proc.poll() is None, logs()
    # Rows in flight during the outage may have run again: every body that failed to write
    # its probe (database down) was retried; those are the only extra attempts.
    figures = check_run(
        markers,
        in_flight
        | set(RayTaskExecution.objects.filter(attempt_number__gt=1).values_list("id", flat=True)),
    )
    assert "database unavailable" in first.log() + second.log()
    assert first.stop() == 0 and second.stop() == 0, logs()
    report(
        "postgres restart (300 tasks, 2 workers)",
        restart_s=restarted,
        restart_to_first_success_s=first_success,
        restart_to_all_done_s=all_done,
        **figures,
    )
