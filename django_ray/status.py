"""The runbook's quick triage checklist, computed from live data.

:func:`collect_status` reads the database (task states, queues, leases, failures) and probes Ray,
and returns a JSON-serialisable dict; :func:`render_text` prints it for a terminal. The
``django_ray_status`` management command is the front end.

Checklist items (runbook "Quick Triage Checklist"):

1. ``workers``: worker process health as seen through their leases.
2. ``states``: task state distribution (QUEUED, RUNNING, FAILED, LOST, CANCELLING...).
3. ``leases``: active worker leases and heartbeat freshness.
4. ``ray``: Ray connectivity (the configured address answers; which runners workers use).
5. ``failures``: retrying vs terminal failures, and the dominant failing callable.

Plus ``scheduling`` (:mod:`django_ray.scheduling_status`): periodic schedules' last and next
instants and misses, and the dedupe and lock keys held. Plus ``effects``
(:mod:`django_ray.effects_status`): exactly-once effect records. And ``queues``: per-queue depth, due rows, running rows and wait of the oldest due row, with a
warning for queues that have due work but no active worker polling them.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import socket
from typing import Any
from urllib.parse import urlsplit

from django.db.models import Count, Max, Q
from django.utils import timezone

from django_ray.durations import format_duration
from django_ray.metrics.db import STATES, DatabaseCollector

OK, WARN, FAIL, SKIP = "ok", "warn", "fail", "skip"
LONG_RUNNING = dt.timedelta(minutes=10)
RECENT = dt.timedelta(hours=1)
QUEUE_WAIT_WARN_SECONDS = 300.0


def probe_ray(address: str | None, timeout: float = 2.0) -> dict[str, Any]:
    """Check that ``address`` answers: HTTP(S) -> ``GET /api/version``; else a TCP connect."""
    if not address:
        return {"address": None, "reachable": None, "detail": "RAY_ADDRESS is not set"}
    if address == "auto":
        return {
            "address": address,
            "reachable": None,
            "detail": "RAY_ADDRESS=auto names no host to probe; check `ray status` on the node",
        }
    if address.startswith(("http://", "https://")):
        from django_ray.ray_dashboard import DashboardError, DashboardUnreachable, RayDashboard

        dashboard = RayDashboard(address, timeout=timeout)
        url = f"{dashboard.base}/api/version"
        try:
            body = json.dumps(dashboard.version())
            return {"address": address, "reachable": True, "detail": f"GET {url}: {body[:200]}"}
        except DashboardError as exc:
            hint = (
                "; the Ray auth token is missing or wrong (RAY_AUTH_TOKEN or ~/.ray/auth_token)"
                if exc.status in (401, 403)
                else ""
            )
            return {
                "address": address,
                "reachable": False,
                "detail": f"GET {url}: HTTP {exc.status}{hint}",
            }
        except DashboardUnreachable as exc:
            return {"address": address, "reachable": False, "detail": f"GET {url}: {exc}"}
    parts = urlsplit(address if "://" in address else f"tcp://{address}")
    host, port = parts.hostname, parts.port
    if not host or not port:
        return {
            "address": address,
            "reachable": False,
            "detail": "cannot parse host:port from RAY_ADDRESS (expected host:6379, "
            "ray://host:10001 or http://host:8265)",
        }
    try:
        with socket.create_connection((host, port), timeout=timeout):
            pass
        return {"address": address, "reachable": True, "detail": f"TCP {host}:{port} accepted"}
    except OSError as exc:
        return {"address": address, "reachable": False, "detail": f"TCP {host}:{port}: {exc}"}


def _error_line(class_path: str | None, message: str | None) -> str:
    """``module.Error: message`` without repeating the class name the message may start with."""
    text = (message or "").strip()
    if not class_path:
        return text
    short = class_path.rsplit(".", 1)[-1]
    if text.startswith(f"{short}:"):
        text = text[len(short) + 1 :].strip()
    return f"{class_path}: {text}"


def process_state(hostname: str, pid: int) -> str:
    """``alive``/``gone`` for a worker on this host (by pid), ``remote`` for other hosts."""
    if hostname != socket.gethostname():
        return "remote"
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return "gone"
    except PermissionError:
        return "alive"  # exists, owned by another user
    return "alive"


def _polls(lease_queues: str, queue: str) -> bool:
    if lease_queues in ("", "*"):
        return True
    return queue in {q.strip() for q in lease_queues.split(",")}


def collect_status(
    using: str = "default", ray_timeout: float = 2.0, probe: bool = True
) -> dict[str, Any]:
    """Everything the triage checklist needs, as plain data (see the module docstring)."""
    from django_ray import effects_status, resources_status, scheduling_status
    from django_ray.conf import ray_settings
    from django_ray.models import RayTaskExecution, TaskState, TaskWorkerLease

    now = timezone.now()
    collector = DatabaseCollector(using=using, recent_window_seconds=RECENT.total_seconds())
    families = {f.name: f for f in collector.families(collector.query(now), now)}

    def samples(name: str, label: str | None = None) -> dict[str, float]:
        return {(s.labels[label] if label else ""): s.value for s in families[name].samples}

    states = {state: int(v) for state, v in samples("django_ray_tasks_total", "state").items()}
    depth = samples("django_ray_queue_depth", "queue")
    due = samples("django_ray_queue_due_tasks", "queue")
    oldest = samples("django_ray_queue_oldest_due_age_seconds", "queue")
    running_by_queue = dict(
        RayTaskExecution.objects.using(using)
        .filter(state=TaskState.RUNNING)
        .values_list("queue_name")
        .annotate(n=Count("id"))
    )
    leases = list(
        TaskWorkerLease.objects.using(using)
        .filter(Q(is_active=True) | Q(stopped_at__gte=now - RECENT))
        .order_by("last_heartbeat_at")
        .values(
            "worker_id",
            "hostname",
            "pid",
            "queue_name",
            "runner",
            "concurrency",
            "is_active",
            "last_heartbeat_at",
            "expires_at",
        )
    )
    lease_rows = []
    for lease in leases:
        status = TaskWorkerLease.status_of(lease["is_active"], lease["expires_at"], now)
        lease_rows.append(
            {
                "worker_id": lease["worker_id"],
                "hostname": lease["hostname"],
                "pid": lease["pid"],
                "queues": lease["queue_name"],
                "runner": lease["runner"],
                "concurrency": lease["concurrency"],
                "status": status,
                "heartbeat_age_seconds": round(
                    (now - lease["last_heartbeat_at"]).total_seconds(), 1
                ),
                "process": process_state(lease["hostname"], lease["pid"])
                if lease["is_active"]
                else None,
            }
        )
    active = [row for row in lease_rows if row["status"] == "active"]
    stale = [row for row in lease_rows if row["status"] == "stale"]

    queues = []
    for queue in sorted(set(depth) | set(running_by_queue)):
        pollers = [row["worker_id"] for row in active if _polls(row["queues"], queue)]
        queues.append(
            {
                "queue": queue,
                "queued": int(depth.get(queue, 0)),
                "due": int(due.get(queue, 0)),
                "running": int(running_by_queue.get(queue, 0)),
                "oldest_due_age_seconds": round(oldest.get(queue, 0.0), 1),
                "active_workers": len(pollers),
            }
        )

    long_running = (
        RayTaskExecution.objects.using(using)
        .filter(state=TaskState.RUNNING)
        .filter(  # this attempt's start (started_at is the first attempt's)
            Q(last_attempted_at__lt=now - LONG_RUNNING)
            | Q(last_attempted_at__isnull=True, started_at__lt=now - LONG_RUNNING)
        )
        .count()
    )
    orphaned = {k: int(v) for k, v in samples("django_ray_tasks_orphaned", "state").items()}

    # Failures: retrying (QUEUED again after an attempt) vs terminal (FAILED) vs LOST.
    retry_waiting = int(samples("django_ray_tasks_retry_waiting")[""])
    failing = list(
        RayTaskExecution.objects.using(using)
        .filter(state__in=[TaskState.FAILED, TaskState.LOST])
        .values("callable_path")
        .annotate(
            total=Count("id"),
            recent=Count("id", filter=Q(finished_at__gte=now - RECENT)),
            last=Max("finished_at"),
        )
        .order_by("-recent", "-total", "callable_path")[:5]
    )
    dominant = None
    if failing:
        top = failing[0]
        latest = (
            RayTaskExecution.objects.using(using)
            .filter(
                state__in=[TaskState.FAILED, TaskState.LOST], callable_path=top["callable_path"]
            )
            .order_by("-finished_at", "-id")
            .values("task_id", "error_class_path", "error_message")
            .first()
        )
        dominant = {
            "callable_path": top["callable_path"],
            "failed_or_lost": top["total"],
            "last_hour": top["recent"],
            "latest_task_id": latest["task_id"] if latest else None,
            "latest_error": _error_line(latest["error_class_path"], latest["error_message"])
            if latest
            else None,
        }

    settings = ray_settings()
    ray = (
        probe_ray(settings.ray_address, ray_timeout)
        if probe
        else {"address": settings.ray_address, "reachable": None, "detail": "not probed"}
    )
    ray["worker_runners"] = sorted({row["runner"] for row in active if row["runner"]})

    checks = _checks(
        states, queues, active, stale, ray, long_running, orphaned, retry_waiting, dominant
    )
    return {
        "generated_at": now.isoformat(),
        "database": using,
        "checks": checks,
        "states": {state: states.get(state, 0) for state in STATES},
        "queues": queues,
        "leases": lease_rows,
        "running": {"long_running_over_10m": long_running, "orphaned": orphaned},
        "ray": ray,
        "scheduling": scheduling_status.collect(using, now, settings.PERIODIC_TASKS),
        "effects": effects_status.collect(using, now),
        "resources": resources_status.collect(using, now, settings.QUEUE_RESOURCES),
        "failures": {
            "retry_waiting": retry_waiting,
            "failed_terminal": states.get("FAILED", 0),
            "lost": states.get("LOST", 0),
            "by_callable": [
                {
                    "callable_path": row["callable_path"],
                    "failed_or_lost": row["total"],
                    "last_hour": row["recent"],
                }
                for row in failing
            ],
            "dominant": dominant,
        },
    }


def _checks(
    states: dict[str, int],
    queues: list[dict[str, Any]],
    active: list[dict[str, Any]],
    stale: list[dict[str, Any]],
    ray: dict[str, Any],
    long_running: int,
    orphaned: dict[str, int],
    retry_waiting: int,
    dominant: dict[str, Any] | None,
) -> list[dict[str, str]]:
    checks: list[dict[str, str]] = []

    def add(name: str, status: str, detail: str) -> None:
        checks.append({"name": name, "status": status, "detail": detail})

    queued = states.get("QUEUED", 0)
    gone = [row["worker_id"] for row in active + stale if row.get("process") == "gone"]
    if gone:
        add(
            "workers",
            WARN if len(gone) < len(active) else FAIL,
            f"{len(gone)} lease(s) held by a process that no longer runs on this host: "
            + ", ".join(gone[:5])
            + "; its rows are recovered once the lease expires",
        )
    elif not active:
        add(
            "workers",
            FAIL if queued else WARN,
            f"no active worker lease ({queued} task(s) queued); start django-ray-worker@<queue>",
        )
    else:
        add(
            "workers",
            OK,
            f"{len(active)} active worker(s), {sum(a['concurrency'] for a in active)} slots",
        )

    dist = ", ".join(f"{s}={states.get(s, 0)}" for s in STATES)
    state_status = WARN if states.get("LOST", 0) or states.get("CANCELLING", 0) else OK
    add("states", state_status, dist)

    if stale:
        oldest = max(row["heartbeat_age_seconds"] for row in stale)
        add(
            "leases",
            WARN,
            f"{len(stale)} stale lease(s) (active but expired; oldest heartbeat "
            f"{format_duration(oldest)} ago): " + ", ".join(row["worker_id"] for row in stale[:5]),
        )
    elif active:
        freshest = max(row["heartbeat_age_seconds"] for row in active)
        add(
            "leases",
            OK,
            f"all active leases fresh (oldest heartbeat {format_duration(freshest)} ago)",
        )
    else:
        add("leases", WARN, "no active leases")

    if ray["reachable"] is True:
        add(
            "ray",
            OK,
            f"{ray['address']} reachable; worker runners: "
            + (", ".join(ray["worker_runners"]) or "-"),
        )
    elif ray["reachable"] is False:
        add("ray", FAIL, f"{ray['address']} not reachable: {ray['detail']}")
    else:
        add(
            "ray",
            SKIP,
            f"{ray['detail']}; worker runners: {', '.join(ray['worker_runners']) or '-'} "
            "(--local workers start their own Ray)",
        )

    problems = []
    for queue in queues:
        if queue["due"] and not queue["active_workers"]:
            problems.append(
                f"queue {queue['queue']!r} has {queue['due']} due task(s) and no worker polling it"
            )
        elif queue["oldest_due_age_seconds"] > QUEUE_WAIT_WARN_SECONDS:
            problems.append(
                f"queue {queue['queue']!r}: oldest due task waited "
                f"{format_duration(queue['oldest_due_age_seconds'])}"
            )
    owned_orphans = sum(orphaned.values())
    if owned_orphans:
        problems.append(
            f"{owned_orphans} orphaned RUNNING/CANCELLING row(s) (no live worker, no heartbeat "
            "for STUCK_TASK_TIMEOUT_SECONDS): a running worker recovers them"
        )
    if long_running:
        problems.append(f"{long_running} task(s) RUNNING for over 10 minutes")
    add(
        "queues",
        WARN if problems else OK,
        "; ".join(problems)
        or (f"{len(queues)} queue(s) with work, none stuck" if queues else "no backlog"),
    )

    failed, lost = states.get("FAILED", 0), states.get("LOST", 0)
    detail = f"{retry_waiting} waiting for retry, {failed} FAILED (terminal), {lost} LOST"
    if dominant:
        detail += (
            f"; dominant failing callable {dominant['callable_path']} "
            f"({dominant['failed_or_lost']} failed/lost, {dominant['last_hour']} in the last hour)"
        )
    add("failures", WARN if (dominant and dominant["last_hour"]) or lost else OK, detail)
    return checks


def render_text(status: dict[str, Any]) -> str:
    """The status as a readable report (checklist first, then the tables behind it)."""
    marks = {OK: "OK  ", WARN: "WARN", FAIL: "FAIL", SKIP: "SKIP"}
    lines = [f"django-ray status at {status['generated_at']} (database {status['database']!r})", ""]
    lines.append("Triage checklist")
    for check in status["checks"]:
        lines.append(f"  [{marks[check['status']]}] {check['name']:<9} {check['detail']}")
    lines += ["", "Task states"]
    lines.append("  " + "  ".join(f"{s}={n}" for s, n in status["states"].items()))
    lines += ["", "Queues"]
    if status["queues"]:
        lines.append(
            f"  {'queue':<20} {'queued':>7} {'due':>7} {'running':>7} "
            f"{'oldest due':>11} {'workers':>7}"
        )
        for q in status["queues"]:
            lines.append(
                f"  {q['queue']:<20} {q['queued']:>7} {q['due']:>7} {q['running']:>7} "
                f"{format_duration(q['oldest_due_age_seconds']):>11} {q['active_workers']:>7}"
            )
    else:
        lines.append("  (no queued or running tasks)")
    lines += ["", "Worker leases (oldest heartbeat first)"]
    if status["leases"]:
        lines.append(
            f"  {'worker_id':<36} {'status':<8} {'heartbeat':>9}  {'process':<7} "
            f"{'runner':<8} queues"
        )
        for lease in status["leases"]:
            lines.append(
                f"  {lease['worker_id']:<36} {lease['status']:<8} "
                f"{format_duration(lease['heartbeat_age_seconds']):>9}  "
                f"{lease['process'] or '-':<7} {lease['runner']:<8} {lease['queues']}"
            )
    else:
        lines.append("  (no leases)")
    failures = status["failures"]
    lines += ["", "Failures"]
    lines.append(
        f"  waiting for retry: {failures['retry_waiting']}   FAILED (terminal): "
        f"{failures['failed_terminal']}   LOST: {failures['lost']}"
    )
    for row in failures["by_callable"]:
        lines.append(
            f"  {row['failed_or_lost']:>6} failed/lost ({row['last_hour']} last hour)  "
            + row["callable_path"]
        )
    if failures["dominant"] and failures["dominant"]["latest_error"]:
        lines.append(
            f"  latest error of {failures['dominant']['callable_path']}: "
            + failures["dominant"]["latest_error"][:200]
        )
    if "scheduling" in status:
        from django_ray import scheduling_status

        lines += scheduling_status.render(status["scheduling"])
    if "effects" in status:
        from django_ray import effects_status

        lines += effects_status.render(status["effects"])
    if "resources" in status:
        from django_ray import resources_status

        lines += resources_status.render(status["resources"])
    return "\n".join(lines)
