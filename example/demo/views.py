"""A minimal HTTP API to enqueue demo tasks and read results (used by deployment tests)."""

from __future__ import annotations

import json

from django.http import HttpRequest, JsonResponse
from django.tasks.exceptions import InvalidTask, TaskResultDoesNotExist
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST

from demo import tasks

TASKS = {
    "add": tasks.add,
    "slow_report": tasks.slow_report,
    "failing": tasks.failing,
    "flaky": tasks.flaky,
    "count_primes": tasks.count_primes,
}


@csrf_exempt
@require_POST
def enqueue_view(request: HttpRequest) -> JsonResponse:
    """POST {"task": "add", "args": [1, 2], "kwargs": {}, "count": 1} -> {"ids": [...]}."""
    try:
        body = json.loads(request.body or b"{}")
    except json.JSONDecodeError as exc:
        return JsonResponse({"error": f"request body is not JSON: {exc}"}, status=400)
    name = body.get("task")
    task = TASKS.get(name)
    if task is None:
        return JsonResponse({"error": f"unknown task {name!r}; one of {sorted(TASKS)}"}, status=400)
    count = int(body.get("count", 1))
    if not 1 <= count <= 10_000:
        return JsonResponse({"error": "count must be between 1 and 10000"}, status=400)
    args, kwargs = body.get("args", []), body.get("kwargs", {})
    try:
        if count == 1:
            ids = [task.enqueue(*args, **kwargs).id]
        else:
            backend = task.get_backend()
            ids = [r.id for r in backend.enqueue_many(task, [(args, kwargs)] * count)]
    except (InvalidTask, TypeError) as exc:
        return JsonResponse({"error": str(exc)}, status=400)
    return JsonResponse({"ids": ids}, status=201)


@require_GET
def result_view(request: HttpRequest, task_id: str) -> JsonResponse:
    try:
        result = tasks.add.get_backend().get_result(task_id)
    except TaskResultDoesNotExist:
        return JsonResponse({"error": f"no task {task_id}"}, status=404)
    body = {
        "id": result.id,
        "task": result.task.module_path,
        "status": result.status,
        "attempts": result.attempts,
        "worker_ids": result.worker_ids,
        "errors": [e.exception_class_path for e in result.errors],
    }
    if result.is_finished and result.status == "SUCCESSFUL":
        body["return_value"] = result.return_value
    return JsonResponse(body)
