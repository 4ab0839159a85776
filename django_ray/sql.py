"""SQL that matters for speed, in one place.

Each statement moves a whole batch of rows in one round trip: the claim (``FOR UPDATE SKIP
LOCKED`` on the partial claim index), the outcome write (an ``UPDATE ... FROM unnest(...)`` plus
the attempt-history insert in the same statement), lease heartbeats, and orphan recovery.
Arrays are bound with ``unnest`` so the statement text is constant whatever the batch size.
:mod:`django_ray.transitions` is the only caller; it decides *which* transitions happen.
"""

from __future__ import annotations

from typing import Any

from django.db import connections

EXECUTIONS = "django_ray_raytaskexecution"
ATTEMPTS = "django_ray_taskattempt"
LEASES = "django_ray_taskworkerlease"
NOTIFY_CHANNEL = "django_ray_queued"
CANCEL_CHANNEL = "django_ray_cancel"

CLAIM_COLUMNS = (
    "id, task_id, callable_path, queue_name, priority, takes_context, args, kwargs, "
    "attempt_number, max_attempts, timeout_seconds, backend_alias, created_at, run_after, "
    "started_at, worker_ids"
)


def is_postgres(using: str = "default") -> bool:
    return connections[using].vendor == "postgresql"


def _claim_sql(all_queues: bool, vendor: str) -> str:
    queue_filter = "" if all_queues else "AND queue_name = ANY(%(queues)s)"
    if vendor != "postgresql":
        raise NotImplementedError  # SQLite path lives in transitions (no SKIP LOCKED there)
    return f"""
        WITH due AS (
            SELECT id FROM {EXECUTIONS}
            WHERE state = 'QUEUED' {queue_filter} AND run_after <= now()
            ORDER BY priority DESC, run_after, id
            LIMIT %(limit)s
            FOR UPDATE SKIP LOCKED
        )
        UPDATE {EXECUTIONS} AS t
        SET state = 'RUNNING',
            claimed_by_worker = %(worker)s,
            started_at = now(),
            last_heartbeat_at = now(),
            finished_at = NULL,
            attempt_number = t.attempt_number + 1,
            worker_ids = t.worker_ids || to_jsonb(%(worker)s::text)
        FROM due
        WHERE t.id = due.id
        RETURNING {", ".join("t." + c.strip() for c in CLAIM_COLUMNS.split(","))}
    """


def claim(
    worker_id: str, queues: list[str] | None, limit: int, using: str = "default"
) -> list[tuple[Any, ...]]:
    """Claim up to ``limit`` due QUEUED rows (QUEUED -> RUNNING); return their claim columns."""
    sql = _claim_sql(queues is None, connections[using].vendor)
    with connections[using].cursor() as cursor:
        cursor.execute(sql, {"worker": worker_id, "queues": queues or [], "limit": limit})
        return cursor.fetchall()


# One statement records a batch of outcomes and their attempt history. ``v.state`` is the
# target state decided by transitions; a CANCELLING row that would be retried ends CANCELLED
# instead. Rows the worker no longer owns (recovered by someone else, different attempt) match
# nothing and are reported back as not recorded.
RECORD_SQL = f"""
    WITH v AS (
        SELECT * FROM unnest(
            %(ids)s::bigint[], %(attempts)s::int[], %(states)s::text[], %(results)s::text[],
            %(refs)s::text[], %(err_classes)s::text[], %(err_messages)s::text[],
            %(err_tracebacks)s::text[], %(delays)s::float8[], %(attempt_states)s::text[],
            %(started)s::timestamptz[]
        ) AS v(id, attempt, state, result, ref, err_class, err_message, err_traceback, delay,
               attempt_state, started_at)
    ),
    upd AS (
        UPDATE {EXECUTIONS} AS t
        SET state = CASE WHEN t.state = 'CANCELLING' AND v.state IN ('QUEUED', 'LOST')
                         THEN 'CANCELLED' ELSE v.state END,
            result_data = v.result::jsonb,
            result_reference = v.ref,
            error_class_path = v.err_class,
            error_message = v.err_message,
            error_traceback = v.err_traceback,
            finished_at = CASE WHEN v.state = 'QUEUED' AND t.state <> 'CANCELLING'
                               THEN NULL ELSE now() END,
            run_after = CASE WHEN v.state = 'QUEUED' AND t.state <> 'CANCELLING'
                             THEN now() + make_interval(secs => v.delay) ELSE t.run_after END,
            claimed_by_worker = CASE WHEN v.state = 'QUEUED' AND t.state <> 'CANCELLING'
                                     THEN NULL ELSE t.claimed_by_worker END,
            started_at = CASE WHEN v.state = 'QUEUED' AND t.state <> 'CANCELLING'
                              THEN NULL ELSE t.started_at END,
            last_heartbeat_at = now()
        FROM v
        WHERE t.id = v.id
          AND t.attempt_number = v.attempt
          AND t.claimed_by_worker = %(worker)s
          AND t.state IN ('RUNNING', 'CANCELLING')
        RETURNING t.id, t.state
    ),
    hist AS (
        INSERT INTO {ATTEMPTS} (execution_id, attempt_number, worker_id, state, started_at,
                                finished_at, error_class_path, error_message, error_traceback)
        SELECT v.id, v.attempt, %(worker)s, v.attempt_state, v.started_at, now(), v.err_class,
               v.err_message, v.err_traceback
        FROM v JOIN upd ON upd.id = v.id
        ON CONFLICT (execution_id, attempt_number) DO NOTHING
    )
    SELECT id, state FROM upd
"""


def record_outcomes(
    worker_id: str, columns: dict[str, list[Any]], using: str = "default"
) -> dict[int, str]:
    """Write a batch of outcomes (see :data:`RECORD_SQL`); return ``{id: new_state}`` recorded."""
    with connections[using].cursor() as cursor:
        cursor.execute(RECORD_SQL, {"worker": worker_id, **columns})
        return dict(cursor.fetchall())


HEARTBEAT_SQL = f"""
    WITH lease AS (
        UPDATE {LEASES}
        SET last_heartbeat_at = now(), expires_at = now() + make_interval(secs => %(lease)s)
        WHERE worker_id = %(worker)s AND is_active
        RETURNING worker_id
    ),
    rows AS (
        UPDATE {EXECUTIONS} SET last_heartbeat_at = now()
        WHERE id = ANY(%(ids)s::bigint[]) AND claimed_by_worker = %(worker)s
          AND state IN ('RUNNING', 'CANCELLING')
          AND EXISTS (SELECT 1 FROM lease)
        RETURNING id
    )
    SELECT (SELECT count(*) FROM lease), (SELECT count(*) FROM rows)
"""


def heartbeat(
    worker_id: str, lease_seconds: float, monitored_ids: list[int], using: str = "default"
) -> tuple[bool, int]:
    """Renew the lease and the rows' heartbeats in one statement. Returns (lease_ok, rows)."""
    with connections[using].cursor() as cursor:
        cursor.execute(
            HEARTBEAT_SQL, {"worker": worker_id, "lease": lease_seconds, "ids": monitored_ids}
        )
        leases, rows = cursor.fetchone()
    return bool(leases), int(rows)


EXPIRE_LEASES_SQL = f"""
    UPDATE {LEASES} SET is_active = FALSE, stopped_at = COALESCE(stopped_at, now())
    WHERE is_active AND expires_at < now()
    RETURNING worker_id
"""


def expire_leases(using: str = "default") -> list[str]:
    with connections[using].cursor() as cursor:
        cursor.execute(EXPIRE_LEASES_SQL)
        return [row[0] for row in cursor.fetchall()]


# Orphans: owned rows whose owner has no live lease and whose heartbeat is older than the stuck
# timeout. SKIP LOCKED so that racing workers split the work and each row is recovered once.
ORPHANS_SQL = f"""
    SELECT t.id, t.state, t.attempt_number, t.max_attempts, t.claimed_by_worker, t.started_at,
           t.ray_job_id
    FROM {EXECUTIONS} t
    WHERE t.state IN ('RUNNING', 'CANCELLING')
      AND COALESCE(t.last_heartbeat_at, t.started_at) < now() - make_interval(secs => %(stuck)s)
      AND NOT EXISTS (
          SELECT 1 FROM {LEASES} l
          WHERE l.worker_id = t.claimed_by_worker AND l.is_active AND l.expires_at >= now()
      )
      -- A row with a Ray Job gets one more stuck timeout after its owner's lease ended, so
      -- that a live worker can adopt the (maybe still running) job first.
      AND (t.ray_job_id IS NULL OR NOT EXISTS (
          SELECT 1 FROM {LEASES} l
          WHERE l.worker_id = t.claimed_by_worker
            AND LEAST(l.expires_at, COALESCE(l.stopped_at, l.expires_at))
                > now() - make_interval(secs => %(stuck)s)
      ))
    ORDER BY t.id
    LIMIT %(limit)s
    FOR UPDATE OF t SKIP LOCKED
"""


def notify_queued(queues: list[str], using: str = "default") -> None:
    """Wake workers listening for new work (enqueue does this through a trigger)."""
    with connections[using].cursor() as cursor:
        for queue in queues:
            cursor.execute("SELECT pg_notify(%s, %s)", [NOTIFY_CHANNEL, queue])


def notify_cancel(execution_id: int, using: str = "default") -> None:
    with connections[using].cursor() as cursor:
        cursor.execute("SELECT pg_notify(%s, %s)", [CANCEL_CHANNEL, str(execution_id)])


# Installed by migration 0002: one NOTIFY per statement and queue that makes rows QUEUED, so
# enqueue, bulk enqueue, retries, admin retries and the runbook's shell requeue all wake workers.
NOTIFY_TRIGGER_SQL = f"""
CREATE OR REPLACE FUNCTION django_ray_notify_queued() RETURNS trigger AS $$
BEGIN
    PERFORM pg_notify('{NOTIFY_CHANNEL}', q.queue_name)
    FROM (SELECT DISTINCT queue_name FROM new_rows WHERE state = 'QUEUED') AS q;
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER django_ray_notify_queued_insert
AFTER INSERT ON {EXECUTIONS}
REFERENCING NEW TABLE AS new_rows
FOR EACH STATEMENT EXECUTE FUNCTION django_ray_notify_queued();

CREATE TRIGGER django_ray_notify_queued_update
AFTER UPDATE ON {EXECUTIONS}
REFERENCING NEW TABLE AS new_rows
FOR EACH STATEMENT EXECUTE FUNCTION django_ray_notify_queued();
"""

DROP_NOTIFY_TRIGGER_SQL = f"""
DROP TRIGGER IF EXISTS django_ray_notify_queued_insert ON {EXECUTIONS};
DROP TRIGGER IF EXISTS django_ray_notify_queued_update ON {EXECUTIONS};
DROP FUNCTION IF EXISTS django_ray_notify_queued();
"""
