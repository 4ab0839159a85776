"""A small HTTP API: enqueue tasks through the web host, read their outcome."""

from __future__ import annotations

import json

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST

from django_ray.models import RayTaskExecution, TaskAttempt

from . import tasks

TASKS = {"where": tasks.where, "slow": tasks.slow}


@csrf_exempt
@require_POST
def enqueue(request: HttpRequest) -> HttpResponse:
    """POST {"task": "where", "count": 10, "seconds": 0.5, "tag": "x"} -> {"ids": [...]}."""
    try:
        body = json.loads(request.body or b"{}")
        task = TASKS[body.get("task", "where")]
        count = int(body.get("count", 1))
    except (ValueError, KeyError) as error:
        return JsonResponse({"error": f"bad request: {error}"}, status=400)
    kwargs = {"seconds": float(body.get("seconds", 0.0)), "tag": str(body.get("tag", ""))}
    ids = [task.enqueue(**kwargs).id for _ in range(max(0, min(count, 1000)))]
    return JsonResponse({"ids": ids})


@require_GET
def status(request: HttpRequest) -> HttpResponse:
    """GET ?tag=x -> every execution of that tag with its state, result and attempts."""
    tag = request.GET.get("tag", "")
    rows = RayTaskExecution.objects.filter(kwargs__tag=tag).order_by("id")
    attempts: dict[int, list[dict[str, object]]] = {}
    for attempt in TaskAttempt.objects.filter(execution__in=rows).order_by("attempt_number"):
        attempts.setdefault(attempt.execution_id, []).append(
            {"n": attempt.attempt_number, "state": attempt.state, "worker": attempt.worker_id}
        )
    out = [
        {
            "task_id": row.task_id,
            "state": row.state,
            "result": row.result_data,
            "attempt": row.attempt_number,
            "workers": row.worker_ids,
            "claimed_by": row.claimed_by_worker,
            "attempts": attempts.get(row.id, []),
            "lost_attempts": sum(a["state"] == "LOST" for a in attempts.get(row.id, [])),
            "error": row.error_message,
        }
        for row in rows
    ]
    counts: dict[str, int] = {}
    for row in out:
        counts[row["state"]] = counts.get(row["state"], 0) + 1
    return JsonResponse({"tag": tag, "total": len(out), "states": counts, "tasks": out})


@csrf_exempt
@require_POST
def cancel(request: HttpRequest) -> HttpResponse:
    """POST {"tag": "x"} -> request cancellation of that tag's unfinished tasks."""
    from django_ray.lifecycle import operator

    body = json.loads(request.body or b"{}")
    rows = RayTaskExecution.objects.filter(kwargs__tag=body.get("tag", ""))
    done = []
    for row in rows:
        if row.state in ("QUEUED", "RUNNING"):
            operator.request_cancel(row.task_id)
            done.append(row.task_id)
    return JsonResponse({"cancelled": done})
