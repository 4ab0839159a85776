"""The admin benchmark: ``bench/admin/run [--rows 200000] [--repeat 7] [--name admin]``.

Starts a throwaway PostgreSQL server, migrates, fills ``--rows`` executions by SQL, logs in a
superuser with Django's test ``Client`` and requests each admin page ``--repeat`` times after one
warm-up request. Prints median / p95 milliseconds per page against the 300 ms target, the query
count and the slowest query of each page, and writes ``bench/results/<name>.{md,json}``;
``--explain`` adds ``EXPLAIN (ANALYZE, BUFFERS)`` of each page's slowest query to the Markdown.
Not a test: the figures depend on the machine and its load (the load average is recorded).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from datetime import UTC, datetime
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

from tests.support.postgres import running_postgres

TARGET_MS = 300.0
CHANGELIST = "/admin/django_ray/raytaskexecution/"
RESULTS = Path(__file__).resolve().parent.parent / "results"


class _FilterLinks(HTMLParser):
    """Each filter's choice links from the changelist's filter sidebar, by filter title."""

    def __init__(self) -> None:
        super().__init__()
        self.in_filters = 0
        self.container = ""
        self.title: str | None = None
        self.in_title = False
        self.links: dict[str, list[str]] = {}
        self.date_links: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attr = dict(attrs)
        if attr.get("id") == "changelist-filter":  # <nav> before Django 6, <search> since
            self.in_filters, self.container = 1, tag
        elif self.in_filters and tag in ("h3", "summary"):
            self.in_title, self.title = True, ""
        elif tag == "a" and attr.get("href", "") and "__year=" in (attr.get("href") or ""):
            self.date_links.append(attr["href"] or "")
        elif self.in_filters and tag == "a" and self.title:
            self.links.setdefault(self.title, []).append(attr.get("href") or "")

    def handle_endtag(self, tag: str) -> None:
        if tag in ("h3", "summary"):
            self.in_title = False
        elif tag == self.container and self.in_filters:
            self.in_filters = 0

    def handle_data(self, data: str) -> None:
        if self.in_title and self.title is not None:
            self.title = (self.title + data).strip()


def _setup_django(host: str, port: int) -> None:
    # The test suite's settings (the admin, django_ray, its URLs), on the benchmark's server.
    os.environ.update(
        DJANGO_RAY_TEST_PG=f"{host}:{port}",
        DJANGO_RAY_TEST_DB="bench_admin",
        DJANGO_SETTINGS_MODULE="tests.settings",
    )
    import django

    django.setup()


def _pages(client: Any) -> list[tuple[str, str]]:
    """(name, URL) of every page measured; filter URLs come from the rendered sidebar."""
    from django.urls import NoReverseMatch, reverse

    from django_ray.models import RayTaskExecution, TaskAttempt

    first = client.get(CHANGELIST)
    parser = _FilterLinks()
    parser.feed(first.content.decode())
    pages = [
        ("admin index", "/admin/"),
        ("changelist", CHANGELIST),
        ("page 2", CHANGELIST + "?p=2"),
    ]
    from django_ray.admin import RayTaskExecutionAdmin

    # The first column sorting by one of these fields (a field name, or a display function's
    # ordering), in this order of preference.
    display = [
        getattr(getattr(RayTaskExecutionAdmin, item, None), "admin_order_field", item)
        for item in RayTaskExecutionAdmin.list_display
    ]
    for column in ("finished_at", "queue_name", "created_at", "id"):
        if column in display:
            pages.append((f"ordered by -{column}", f"{CHANGELIST}?o=-{display.index(column) + 1}"))
            break
    for title, links in parser.links.items():
        choices = [h for h in links if h not in ("?", "") and "_facets" not in h]
        if choices:
            pages.append((f"filter: {title}"[:40], CHANGELIST + choices[0]))
    if parser.date_links:
        pages.append(("date hierarchy drill-down", CHANGELIST + parser.date_links[0]))
    pages.append(("show counts (_facets)", CHANGELIST + "?_facets=True"))
    # Counts with a filter chosen: the facets of the QUEUED rows (exact: a few thousand rows)
    # and the state facet of every row (its own filter left out).
    pages.append(("show counts, state QUEUED", CHANGELIST + "?_facets=True&state__exact=QUEUED"))
    sample = RayTaskExecution.objects.order_by("id")[RayTaskExecution.objects.count() // 2]
    pages += [
        ("search task id exact", f"{CHANGELIST}?q={sample.task_id}"),
        ("search task id prefix", f"{CHANGELIST}?q={sample.task_id[:8]}"),
        ("search callable", f"{CHANGELIST}?q={sample.callable_path}"),
        ("search no match", f"{CHANGELIST}?q=nothing-matches-this"),
    ]
    failed = TaskAttempt.objects.order_by("-id").values_list("execution_id", flat=True).first()
    pages.append(("detail (FAILED, attempts)", f"{CHANGELIST}{failed}/change/"))
    pages.append(("lease list", "/admin/django_ray/taskworkerlease/"))
    pages.append(("attempt list", "/admin/django_ray/taskattempt/"))
    for name in ("admin:django_ray_overview", "admin:django_ray_raytaskexecution_overview"):
        try:
            pages.append(("overview", reverse(name)))
            break
        except NoReverseMatch:
            continue
    return pages


def _measure(client: Any, url: str, repeat: int) -> dict[str, Any]:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as ctx:
        response = client.get(url)  # warm-up, and the query profile
    # Copied now: the next request's request_started signal empties the connection's log.
    captured = list(ctx.captured_queries)
    if response.status_code != 200:
        return {"url": url, "status": response.status_code}
    times, cpu = [], []
    for _ in range(repeat):
        start, start_cpu = time.perf_counter(), time.process_time()
        client.get(url)
        times.append((time.perf_counter() - start) * 1000)
        cpu.append((time.process_time() - start_cpu) * 1000)
    times.sort()
    slowest = max(captured, key=lambda q: float(q["time"]), default=None)
    return {
        "url": url,
        "status": 200,
        "median_ms": round(statistics.median(times), 1),
        "p95_ms": round(times[min(len(times) - 1, round(0.95 * (len(times) - 1)))], 1),
        "cpu_ms": round(statistics.median(cpu), 1),
        "queries": len(captured),
        "sql_ms": round(sum(float(q["time"]) for q in captured) * 1000, 1),
        "slowest_query_ms": round(float(slowest["time"]) * 1000, 1) if slowest else 0.0,
        "slowest_query": slowest["sql"] if slowest else "",
        "query_ms": [[round(float(q["time"]) * 1000, 1), q["sql"][:300]] for q in captured],
    }


def _explain(sql: str) -> str:
    from django.db import connection

    with connection.cursor() as cursor:
        # No parameters: the captured SQL has its values inlined, and its % signs stay literal.
        cursor.execute("EXPLAIN (ANALYZE, BUFFERS) " + sql)
        return "\n".join(row[0] for row in cursor.fetchall())


def _markdown(doc: dict[str, Any], explains: dict[str, str]) -> str:
    lines = [
        f"# Admin pages at {doc['rows']:,} executions",
        "",
        f"{doc['started']}, {doc['machine']}, load average before/after "
        f"{doc['load_before']} / {doc['load_after']}, git {doc['git']}, "
        f"{doc['repeat']} timed requests per page after one warm-up (Django test Client, "
        f"PostgreSQL {doc['postgres']}). Target: {TARGET_MS:.0f} ms.",
        "",
        "| page | median ms | p95 ms | target | Django CPU ms | queries | SQL ms | slowest query ms |",
        "|---|---:|---:|---|---:|---:|---:|---:|",
    ]
    for name, r in doc["pages"].items():
        if r.get("status") != 200:
            lines.append(f"| {name} | HTTP {r.get('status')} | | missed | | | | |")
            continue
        met = "met" if r["p95_ms"] <= TARGET_MS else "missed"
        lines.append(
            f"| {name} | {r['median_ms']:.0f} | {r['p95_ms']:.0f} | {met} | {r.get('cpu_ms', 0):.0f} "
            f"| {r['queries']} "
            f"| {r['sql_ms']:.0f} | {r['slowest_query_ms']:.0f} |"
        )
    lines += ["", "URLs: " + "; ".join(f"{n}: `{r['url']}`" for n, r in doc["pages"].items())]
    for name, plan in explains.items():
        lines += ["", f"## {name}: slowest query", "", "```", plan, "```"]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench/admin/run", description=__doc__)
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--name", default="admin", help="results file stem (bench/results/)")
    parser.add_argument("--explain", action="store_true", help="EXPLAIN ANALYZE slow queries")
    parser.add_argument("--page", action="append", default=[], help="extra NAME=URL to measure")
    parser.add_argument("--only", default="", help="measure only pages whose name has this")
    args = parser.parse_args(argv)

    import subprocess

    git = subprocess.run(
        ["git", "describe", "--always", "--dirty"], capture_output=True, text=True, check=False
    ).stdout.strip()
    started = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    load_before = os.getloadavg()[0]
    with running_postgres() as server:
        server.create_database("bench_admin")
        _setup_django(server.host, server.port)
        from django.contrib.auth.models import User
        from django.core.management import call_command
        from django.db import connection
        from django.test import Client

        from bench.admin.fill import fill

        call_command("migrate", verbosity=0)
        t0 = time.perf_counter()
        with connection.cursor() as cursor:
            fill(cursor, args.rows)
            cursor.execute("VACUUM ANALYZE")
            cursor.execute("SHOW server_version")
            pg_version = cursor.fetchone()[0]
        print(f"filled {args.rows:,} rows in {time.perf_counter() - t0:.1f} s", flush=True)
        user = User.objects.create_superuser("bench", "bench@example.com", "pw")
        client = Client()
        client.force_login(user)
        pages = _pages(client) + [tuple(p.split("=", 1)) for p in args.page]  # type: ignore[misc]
        results: dict[str, dict[str, Any]] = {}
        print(f"{'page':40} {'median':>8} {'p95':>8}  target  cpu ms  queries  slowest query")
        for name, url in pages:
            if args.only not in name:
                continue
            r = results[name] = _measure(client, url, args.repeat)
            if r["status"] != 200:
                print(f"{name:40} HTTP {r['status']}", flush=True)
                continue
            met = "met" if r["p95_ms"] <= TARGET_MS else "MISSED"
            print(
                f"{name:40} {r['median_ms']:8.0f} {r['p95_ms']:8.0f}  {met:6}  {r['cpu_ms']:6.0f}"
                f"  {r['queries']:7}"
                f"  {r['slowest_query_ms']:.0f} ms",
                flush=True,
            )
        explains = (
            {
                name: f"-- {r['slowest_query']}\n" + _explain(r["slowest_query"])
                for name, r in results.items()
                if r.get("slowest_query_ms", 0) >= 20
            }
            if args.explain
            else {}
        )
        connection.close()
    doc = {
        "rows": args.rows,
        "repeat": args.repeat,
        "started": started,
        "git": git,
        "machine": f"{platform.node()} {os.cpu_count()} CPUs, Python {platform.python_version()}",
        "postgres": pg_version,
        "load_before": round(load_before, 1),
        "load_after": round(os.getloadavg()[0], 1),
        "target_ms": TARGET_MS,
        "pages": results,
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{args.name}.json").write_text(json.dumps(doc, indent=2) + "\n")
    (RESULTS / f"{args.name}.md").write_text(_markdown(doc, explains))
    missed = [n for n, r in results.items() if r.get("status") != 200 or r["p95_ms"] > TARGET_MS]
    print(f"wrote bench/results/{args.name}.md and .json; missed: {', '.join(missed) or 'none'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
