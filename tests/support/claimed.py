"""ClaimedTask values for tests that drive a runner directly, without a worker claiming rows."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from django_ray.outcomes import ClaimedTask


def claimed_task(execution_id: int, **fields: Any) -> ClaimedTask:
    """A claimed attempt of ``tests.tasks.sleep_for`` (1 s); ``fields`` override any attribute."""
    now = datetime.now(UTC)
    values: dict[str, Any] = {
        "id": execution_id,
        "task_id": f"claimed-{execution_id}",
        "callable_path": "tests.tasks.sleep_for",
        "queue_name": "default",
        "priority": 0,
        "takes_context": False,
        "args": [1.0],
        "kwargs": {},
        "attempt_number": 1,
        "max_attempts": 1,
        "timeout_seconds": None,
        "backend_alias": "default",
        "created_at": now,
        "run_after": now,
        "started_at": now,
    }
    values.update(fields)
    return ClaimedTask(**values)
