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


def _nodes(node: dict[str, Any]) -> list[dict[str, Any]]:
    """``node`` and every node below it."""
    return [node, *(n for child in node.get("Plans", []) for n in _nodes(child))]


def _repeated_scans(plan: dict[str, Any]) -> list[str]:
    return [
        f"{n['Node Type']} on {n.get('Index Name', TABLE)} x{n['Actual Loops']}"
        for n in _nodes(plan)
        if n.get("Relation Name") == TABLE
        and n.get("Actual Loops", 1) > 1
        and not str(n.get("Index Name", "")).endswith("_pkey")
    ]


def _claim_plan(queues: list[str] | None, limit: int) -> dict[str, Any]:
    """EXPLAIN ANALYZE of one claim by worker "w" (rolled back): the plan's root node."""
    params = {
        "worker": "w",
        "all_queues": queues is None,
        "queues": queues or [],
        "limit": limit,
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
    return plan[0]["Plan"]


def test_a_claim_reads_the_executions_table_once_per_scan_with_many_rows_running() -> None:
    RayTaskExecution.objects.bulk_create(_rows(2_000, TaskState.SUCCEEDED))
    with connection.cursor() as cursor:
        cursor.execute(f"VACUUM ANALYZE {TABLE}")  # statistics from before the burst
    RayTaskExecution.objects.bulk_create(_rows(600, TaskState.QUEUED))
    assert len(claim.claim("busy-worker", None, 300)) == 300  # 300 owned rows, unanalyzed
    assert _repeated_scans(_claim_plan(None, 256)) == []


def test_a_one_queue_claim_reads_its_batch_in_index_order_not_every_due_row() -> None:
    """With one queue, the claim index gives claim order: no sort of the backlog, and the scan
    reads about one batch. (``queue_name = ANY(array)`` read and sorted all 2,000 due rows.)"""
    RayTaskExecution.objects.bulk_create(_rows(2_000, TaskState.QUEUED))
    with connection.cursor() as cursor:
        cursor.execute(f"ANALYZE {TABLE}")
    nodes = _nodes(_claim_plan(["default"], 100))
    backlog_sorts = [n for n in nodes if n["Node Type"] == "Sort" and n["Actual Rows"] > 100]
    assert backlog_sorts == [], backlog_sorts
    scans = [
        n for n in nodes if n.get("Relation Name") == TABLE and n.get("Alias") == "q"
    ]  # the candidate scan
    assert scans and all(n["Actual Rows"] <= 100 for n in scans), scans


def test_claims_by_one_queue_several_queues_and_all_take_the_right_rows_in_order() -> None:
    now = timezone.now()
    rows = []
    for queue, priority in [("a", 0), ("b", 5), ("c", 0), ("a", 9), ("c", 3), ("d", 1)]:
        row = _rows(1, TaskState.QUEUED)[0]
        row.queue_name, row.priority, row.run_after = queue, priority, now
        rows.append(row)
    RayTaskExecution.objects.bulk_create(rows)

    def claimed(queues: list[str] | None) -> list[tuple[str, int]]:
        return [(t.queue_name, t.priority) for t in claim.claim(f"w-{queues}", queues, 10)]

    assert claimed(["a"]) == [("a", 9), ("a", 0)]
    assert claimed(["b", "c"]) == [("b", 5), ("c", 3), ("c", 0)]
    assert claimed(["zzz"]) == []
    assert claimed(None) == [("d", 1)]
