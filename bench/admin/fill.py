"""Fill the benchmark database: executions, attempts and leases made by SQL in a few seconds.

``INSERT ... SELECT generate_series`` writes every row server-side; the mix resembles a busy
deployment's history: mostly SUCCEEDED rows, a few percent FAILED / QUEUED / RUNNING / LOST /
CANCELLED, five queues, twenty callables, ten workers, ``created_at`` spread over ``days`` days
in ``id`` order (as enqueues make it). One attempt row per FAILED or LOST execution.
"""

from __future__ import annotations

from typing import Any

QUEUES = ("default", "emails", "reports", "media", "billing")
CALLABLES = 20
WORKERS = 10

_EXECUTIONS = """
INSERT INTO django_ray_raytaskexecution (
    task_id, callable_path, backend_alias, queue_name, state, priority, takes_context,
    args, kwargs, attempt_number, max_attempts, worker_ids, run_after, requested_run_after,
    created_at, started_at, finished_at, last_heartbeat_at, timeout_seconds,
    claimed_by_worker, ray_job_id, result_data, result_reference, error_class_path,
    error_message, error_traceback, last_attempted_at, unique_key, unique_while_running,
    lock_key)
SELECT
    md5(g.i::text),
    'benchapp.tasks.job_' || lpad(((g.i * 7) %% %(callables)s)::text, 2, '0'),
    'default',
    (%(queues)s::text[])[1 + g.i %% %(nqueues)s],
    s.state,
    0, false,
    jsonb_build_array(g.i, 'x'), '{}'::jsonb,
    CASE WHEN s.state = 'QUEUED' THEN 0 ELSE 1 END, NULL,
    CASE WHEN s.state = 'QUEUED' THEN '[]'::jsonb ELSE jsonb_build_array(w.worker) END,
    t.created + CASE WHEN s.state = 'QUEUED' AND g.i %% 2 = 0
                     THEN interval '2 hours' ELSE interval '0' END,
    NULL,
    t.created,
    CASE WHEN s.state = 'QUEUED' THEN NULL ELSE t.created + interval '1 second' END,
    CASE WHEN s.state IN ('SUCCEEDED', 'FAILED', 'CANCELLED', 'LOST')
         THEN t.created + interval '3 seconds' END,
    CASE WHEN s.state IN ('RUNNING', 'CANCELLING') THEN t.created + interval '2 seconds' END,
    NULL,
    CASE WHEN s.state = 'QUEUED' THEN NULL ELSE w.worker END,
    NULL,
    CASE WHEN s.state = 'SUCCEEDED' THEN jsonb_build_object('value', g.i) END,
    NULL,
    CASE WHEN s.state IN ('FAILED', 'LOST') THEN 'builtins.ValueError' END,
    CASE WHEN s.state IN ('FAILED', 'LOST') THEN 'ValueError: could not parse row ' || g.i END,
    CASE WHEN s.state IN ('FAILED', 'LOST')
         THEN repeat('  File "benchapp/tasks.py", line 12, in job' || chr(10), 12)
              || 'ValueError: could not parse row ' || g.i END,
    CASE WHEN s.state = 'QUEUED' THEN NULL ELSE t.created + interval '1 second' END,
    NULL, false, NULL
FROM generate_series(1, %(rows)s) AS g(i)
CROSS JOIN LATERAL (
    SELECT CASE
        WHEN g.i %% 100 < 85 THEN 'SUCCEEDED'
        WHEN g.i %% 100 < 90 THEN 'FAILED'
        WHEN g.i %% 100 < 95 THEN 'QUEUED'
        WHEN g.i %% 100 < 97 THEN 'RUNNING'
        WHEN g.i %% 100 < 98 THEN 'CANCELLED'
        WHEN g.i %% 100 < 99 THEN 'LOST'
        ELSE 'CANCELLING' END AS state
) AS s
CROSS JOIN LATERAL (
    SELECT now() - (%(rows)s - g.i) * (%(days)s * interval '1 day' / %(rows)s) AS created
) AS t
CROSS JOIN LATERAL (SELECT 'worker-' || (g.i %% %(workers)s) AS worker) AS w
"""

_ATTEMPTS = """
INSERT INTO django_ray_taskattempt (
    execution_id, attempt_number, worker_id, state, started_at, finished_at,
    error_class_path, error_message, error_traceback)
SELECT id, 1, claimed_by_worker, state, started_at, finished_at,
       error_class_path, error_message, error_traceback
FROM django_ray_raytaskexecution WHERE state IN ('FAILED', 'LOST')
"""

_LEASES = """
INSERT INTO django_ray_taskworkerlease (
    worker_id, hostname, pid, queue_name, runner, concurrency, is_active, started_at,
    last_heartbeat_at, expires_at, stopped_at)
SELECT 'worker-' || g.i, 'host-' || (g.i %% 3), 1000 + g.i, 'default,emails', 'ray_core', 8,
       g.i < 6, now() - interval '1 day', now() - g.i * interval '1 minute',
       now() - g.i * interval '1 minute' + interval '90 seconds',
       CASE WHEN g.i >= 6 THEN now() - g.i * interval '1 minute' END
FROM generate_series(0, %(leases)s - 1) AS g(i)
"""


def fill(cursor: Any, rows: int, days: int = 45, leases: int = 30) -> None:
    """Insert ``rows`` executions (and their attempts, and ``leases`` leases), then ANALYZE."""
    params = {
        "rows": rows,
        "days": days,
        "queues": list(QUEUES),
        "nqueues": len(QUEUES),
        "callables": CALLABLES,
        "workers": WORKERS,
        "leases": leases,
    }
    cursor.execute(_EXECUTIONS, params)
    cursor.execute(_ATTEMPTS)
    cursor.execute(_LEASES, params)
