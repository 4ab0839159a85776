"""The executions admin stays cheap on a large table: mechanisms, not timings.

The figures at 200,000 rows are in bench/results/admin.md (bench/admin/run); these tests pin
what makes them: the admin's queries use indexes (EXPLAIN with sequential scans disabled), a
changelist page runs a bounded number of queries whatever the row count, "Show counts" is one
GROUP BY GROUPING SETS for all filters, the date hierarchy probes instead of scanning, and searches mean what
django_ray/admin/search.py says.
"""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from django_ray.admin import counts as admin_counts
from django_ray.admin import search as admin_search
from django_ray.admin.dates import distinct_periods
from django_ray.models import RayTaskExecution, TaskState

pytestmark = pytest.mark.django_db
CHANGELIST = "/admin/django_ray/raytaskexecution/"
START = datetime(2026, 10, 20, 12, 0, tzinfo=UTC)
STATES = [TaskState.SUCCEEDED] * 6 + [TaskState.FAILED, TaskState.QUEUED, TaskState.RUNNING]


def _fill(count: int) -> list[RayTaskExecution]:
    """``count`` rows over about 80 days (three months), five queues, ten callables."""
    rows = [
        RayTaskExecution(
            task_id=uuid.uuid4().hex,
            callable_path=f"app.tasks.job_{i % 10}",
            queue_name=f"q{i % 5}",
            state=STATES[i % len(STATES)],
            created_at=START + timedelta(minutes=i * 80 * 24 * 60 // count),
            claimed_by_worker=f"worker-{i % 3}",
            error_message=f"ValueError: bad row {i}"
            if STATES[i % len(STATES)] == "FAILED"
            else None,
            unique_key=f"uk-{i}" if i % 100 == 0 else None,
        )
        for i in range(count)
    ]
    return RayTaskExecution.objects.bulk_create(rows, batch_size=1000)


def _client() -> Client:
    client = Client()
    client.force_login(User.objects.create_superuser("root", "root@example.com", "pw"))
    return client


def _plan(queryset: Any) -> str:
    """The plan of ``queryset`` with sequential scans priced out: a Seq Scan means no index."""
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")
        return queryset.explain()


def test_admin_lookups_use_indexes() -> None:
    rows = _fill(2000)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE django_ray_raytaskexecution")
    qs = RayTaskExecution.objects.all()
    plans = {
        "task id exact": admin_search.search(qs, rows[7].task_id),
        "task id prefix": admin_search.search(qs, rows[7].task_id[:6]),
        "callable prefix": admin_search.search(qs, "app.tasks.job_3"),
        "date probe": qs.filter(created_at__gte=START + timedelta(days=30)).order_by("created_at")[
            :1
        ],
    }
    for name, query in plans.items():
        plan = _plan(query)
        assert "Seq Scan" not in plan, f"{name} scans the table:\n{plan}"


def test_changelist_queries_are_bounded_and_scan_free() -> None:
    client = _client()
    _fill(300)
    counts = {}
    for url in (CHANGELIST, CHANGELIST + "?_facets=True"):
        with CaptureQueriesContext(connection) as small:
            assert client.get(url).status_code == 200
        counts[url] = len(small)
    _fill(2700)
    for url in (CHANGELIST, CHANGELIST + "?_facets=True", CHANGELIST + "?q=app.tasks.job_1"):
        with CaptureQueriesContext(connection) as ctx:
            assert client.get(url).status_code == 200
        sqls = [q["sql"] for q in ctx]
        if url in counts:
            # Ten times the rows, the same queries: nothing runs per row or per choice.
            assert len(sqls) == counts[url], sqls
        assert len(sqls) <= 25, sqls
        for sql in sqls:
            assert "DATE_TRUNC" not in sql.upper(), f"date hierarchy scans: {sql}"
            assert "UPPER(" not in sql.upper(), f"search scans: {sql}"
            # The row-set filters (owner, queued, heartbeat) count their few owned or queued
            # rows by subquery; the column filters must not count a subquery per choice.
            assert not re.search(
                r'IN \(SELECT "U0"\."id" FROM \S+ "U0" WHERE "U0"\."(queue_name|callable_path|'
                r'claimed_by_worker|state)" =',
                sql,
            ), f"a count per filter choice: {sql}"


def test_show_counts_are_right_and_one_scan_per_row_set() -> None:
    _fill(900)
    client = _client()
    with CaptureQueriesContext(connection) as ctx:
        body = client.get(CHANGELIST + "?_facets=True&queue=q1").content.decode()
    # 900 rows, 9-state cycle: 100 FAILED; queue q1 = rows i % 5 == 1: 20 of those FAILED.
    assert "Failed (20)" in body
    assert "q1 (180)" in body and "q2 (180)" in body  # the queue facet ignores its own filter
    # The queue facet counts without its own filter, the other three with it: two scans.
    facet_queries = [q["sql"] for q in ctx if "GROUPING SETS" in q["sql"]]
    assert len(facet_queries) == 2, facet_queries
    with CaptureQueriesContext(connection) as ctx:
        client.get(CHANGELIST + "?_facets=True")
    assert len([q for q in ctx if "GROUP BY" in q["sql"]]) == 1 + 3  # facets + 3 filters' choices


def test_bounded_count_is_exact_small_and_estimated_large(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    _fill(600)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE django_ray_raytaskexecution")
    qs = RayTaskExecution.objects.order_by("-id")
    assert admin_counts.BoundedCountPaginator(qs, 100).count == 600
    monkeypatch.setattr(admin_counts, "EXACT_COUNT_LIMIT", 50)
    estimated = admin_counts.BoundedCountPaginator(qs, 100).count
    assert estimated > 50  # the planner's figure, not a count stopped at the limit
    assert abs(estimated - 600) < 300


def test_date_hierarchy_by_probes_matches_django() -> None:
    _fill(500)
    qs = RayTaskExecution.objects.filter(state=TaskState.FAILED)
    for kind in ("year", "month", "day"):
        expected = list(qs.datetimes("created_at", kind))
        assert distinct_periods(qs, "created_at", kind) == expected, kind
    client = _client()
    body = client.get(CHANGELIST).content.decode()  # 2026-10-20 to 2027-01-08: two years
    assert "created_at__year=2026" in body and "created_at__year=2027" in body
    body = client.get(CHANGELIST + "?created_at__year=2026").content.decode()
    assert all(f"created_at__month={m}" in body for m in (10, 11, 12)), body
    body = client.get(CHANGELIST + "?created_at__year=2026&created_at__month=11").content.decode()
    assert "created_at__day=1&" in body or 'created_at__day=1"' in body
    assert "created_at__day=30" in body


def test_search_terms() -> None:
    rows = _fill(100)
    qs = RayTaskExecution.objects.all()

    def ids(term: str) -> set[str]:
        return set(admin_search.search(qs, term).values_list("task_id", flat=True))

    target = rows[42]
    assert ids(target.task_id) == {target.task_id}
    assert ids(str(uuid.UUID(target.task_id)).upper()) == {target.task_id}
    assert target.task_id in ids(target.task_id[:5])
    assert ids("app.tasks.job_4") == {r.task_id for r in rows if r.callable_path.endswith("_4")}
    assert ids("tasks.job_4") == set()  # a callable path is matched from its start
    assert ids("worker:worker-2 app.tasks.job_2") == {
        r.task_id for r in rows if r.claimed_by_worker == "worker-2" and r.callable_path[-1] == "2"
    }
    assert ids("key:uk-0") == {rows[0].task_id}
    assert ids('error:"BAD ROW 6"') == {
        r.task_id for r in rows if r.error_message and "row 6" in r.error_message
    }
    assert ids("nothing-like-this") == set()
