"""The claim's plan stays linear in the due rows whatever the statistics say: a mechanism test.

On statistics taken before a burst (no RUNNING rows, few QUEUED), PostgreSQL ran the lock-key
anti-join of ``claim_due`` as a rescan of every owned row for each due row: 200-400 ms a claim
once a few hundred rows ran (bench/ hist workload, 0.45x the empty table's drain). The held keys
are now read once. This test reproduces those statistics and checks the plan, not a timing: no
scan of the executions table may run more than once per claim, except primary-key lookups.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from django.db import connection
from django.utils import timezone

from django_ray.lifecycle import claim, statements
from django_ray.models import RayTaskExecution, TaskState

pytestmark = pytest.mark.django_db(transaction=True)
TABLE = RayTaskExecution._meta.db_table


def _rows(count: int, state: TaskState) -> list[RayTaskExecution]:
    now = timezone.now()
    return [
        RayTaskExecution(
            task_id=uuid.uuid4().hex,
            callable_path="tests.tasks.noop",
            state=state,
            run_after=now,
            created_at=now,
            finished_at=now if state == TaskState.SUCCEEDED else None,
        )
        for _ in range(count)
    ]


def _repeated_scans(node: dict[str, Any]) -> list[str]:
    found = []
    if (
        node.get("Relation Name") == TABLE
        and node.get("Actual Loops", 1) > 1
        and not str(node.get("Index Name", "")).endswith("_pkey")
    ):
        found.append(
            f"{node['Node Type']} on {node.get('Index Name', TABLE)} x{node['Actual Loops']}"
        )
    for child in node.get("Plans", []):
        found += _repeated_scans(child)
    return found


def test_a_claim_reads_the_executions_table_once_per_scan_with_many_rows_running() -> None:
    RayTaskExecution.objects.bulk_create(_rows(2_000, TaskState.SUCCEEDED))
    with connection.cursor() as cursor:
        cursor.execute(f"VACUUM ANALYZE {TABLE}")  # statistics from before the burst
    RayTaskExecution.objects.bulk_create(_rows(600, TaskState.QUEUED))
    assert len(claim.claim("busy-worker", None, 300)) == 300  # 300 owned rows, unanalyzed
    params = {
        "worker": "w",
        "all_queues": True,
        "queues": [],
        "limit": 256,
        "lock_space": claim.LOCK_SPACE,
    }
    with connection.cursor() as cursor:
        cursor.execute("BEGIN")
        try:
            cursor.execute("EXPLAIN (ANALYZE, FORMAT JSON) " + statements.sql("claim_due"), params)
            plan = cursor.fetchone()[0]
        finally:
            cursor.execute("ROLLBACK")
    plan = json.loads(plan) if isinstance(plan, str) else plan
    assert _repeated_scans(plan[0]["Plan"]) == []
