"""The executions admin stays cheap on a large table: mechanisms, not timings.

The figures at 200,000 rows are in bench/results/admin.md (bench/admin/run); these tests pin
what makes them: the admin's queries use indexes (EXPLAIN with sequential scans disabled), a
changelist page runs a bounded number of queries whatever the row count, "Show counts" is one
GROUP BY GROUPING SETS for all filters (of the latest rows above a limit, said in the filter's
title), the row-set filters (owner, queued, heartbeat) join the page's WHERE instead of an
`id IN (subquery)`, only index-backed columns sort, the date hierarchy probes instead of
scanning, and searches mean what django_ray/admin/search.py says.
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
from django_ray.admin.executions import RayTaskExecutionAdmin
from django_ray.models import RayTaskExecution, TaskState, TaskWorkerLease

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
            # No filter narrows or counts by `id IN (subquery)` (a scan per choice or probe).
            assert '"id" IN (SELECT' not in sql, f"a filter by id subquery: {sql}"
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


def _facet(body: str, label: str) -> int:
    """The count "Show counts" prints after a filter choice's label."""
    match = re.search(re.escape(label) + r" \((\d+)\)", body)
    assert match, f"no count for {label!r}"
    return int(match.group(1))


def test_row_set_filters_join_the_where_and_count_their_own_rows() -> None:
    rows = _fill(270)  # 30 RUNNING and 30 QUEUED rows (the 9-state cycle)
    now = datetime.now(UTC)
    running_pks = [r.pk for r in rows if r.state == TaskState.RUNNING]
    RayTaskExecution.objects.filter(pk__in=running_pks[::2]).update(claimed_by_worker="worker-0")
    TaskWorkerLease.objects.create(
        worker_id="worker-0",
        hostname="h",
        pid=1,
        queue_name="q0",
        expires_at=now + timedelta(hours=1),
    )
    running = RayTaskExecution.objects.filter(state=TaskState.RUNNING)
    running.update(last_heartbeat_at=now - timedelta(hours=2))  # stuck: orphaned unless worker-0
    queued = [r.pk for r in rows if r.state == TaskState.QUEUED]
    RayTaskExecution.objects.filter(pk__in=queued[:7]).update(run_after=now + timedelta(hours=1))
    client = _client()
    expected = {
        "owner=orphaned": running.exclude(claimed_by_worker="worker-0"),
        "owner=alive": running.filter(claimed_by_worker="worker-0"),
        "heartbeat=stale": running,
        "queued=due": RayTaskExecution.objects.filter(pk__in=queued[7:]),
        "queued=scheduled": RayTaskExecution.objects.filter(pk__in=queued[:7]),
    }
    for query, rows_expected in expected.items():
        with CaptureQueriesContext(connection) as ctx:
            response = client.get(f"{CHANGELIST}?{query}&queue=q1&created_at__year=2026")
        shown = {r.pk for r in response.context["cl"].result_list}
        assert shown == set(
            rows_expected.filter(queue_name="q1", created_at__year=2026).values_list(
                "pk", flat=True
            )
        ), query
        assert shown, query  # the fill gives every case rows in q1 in 2026
        for sql in (q["sql"] for q in ctx):
            assert '"id" IN (SELECT' not in sql, f"{query} filters by id subquery: {sql}"
    # Show counts: exact, within the page's other filters (queue q1), one COUNT per choice.
    body = client.get(f"{CHANGELIST}?_facets=True&queue=q1").content.decode()
    in_q1 = {name: qs.filter(queue_name="q1").count() for name, qs in expected.items()}
    assert _facet(body, "orphaned (recovery takes over)") == in_q1["owner=orphaned"]
    assert _facet(body, "owner alive") == in_q1["owner=alive"]
    assert _facet(body, "older than the lease") == in_q1["heartbeat=stale"]
    assert _facet(body, "due now") == in_q1["queued=due"]
    assert _facet(body, "scheduled (run_after later)") == in_q1["queued=scheduled"]


def test_show_counts_above_the_limit_count_the_latest_rows_and_say_so(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    _fill(450)  # 50 FAILED
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE django_ray_raytaskexecution")
    monkeypatch.setattr(admin_counts, "FACET_EXACT_LIMIT", 200)
    monkeypatch.setattr(admin_counts, "RECENT_ROWS", 90)
    client = _client()

    def noted(body: str) -> set[str]:
        return set(re.findall(r"By ([\w ]+) \(counts: latest 90 rows\)", body))

    body = client.get(CHANGELIST + "?_facets=True").content.decode()
    # Every column facet counts the latest 90 rows (q0..q4: 18 each) and says so in its title.
    assert noted(body) == {"state", "queue", "callable path", "worker"}
    assert all(_facet(body, f"q{i}") == 18 for i in range(5))
    # A row set under the limit (50 FAILED rows) is counted exactly, without the note.
    body = client.get(CHANGELIST + "?_facets=True&state__exact=FAILED").content.decode()
    assert noted(body) == {"state"}  # the state facet ignores its own filter: 450 rows
    assert sum(_facet(body, f"q{i}") for i in range(5)) == 50


def test_only_index_backed_columns_sort() -> None:
    sortable = {
        name
        for name in RayTaskExecutionAdmin.list_display
        if getattr(getattr(RayTaskExecutionAdmin, name, None), "admin_order_field", None)
    }
    assert sortable == {"short_id"}
    _fill(500)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE django_ray_raytaskexecution")
    plan = _plan(RayTaskExecution.objects.order_by("-id")[:50])
    assert "Seq Scan" not in plan and "Sort" not in plan, plan
