-- Every PostgreSQL statement of the lifecycle, once, by name (loaded by statements.py).
-- {owned} ({owned_t} on alias t) is the owned-states predicate and {settle_cancelling} the CANCELLING rule, both
-- rendered from lifecycle/rules.py so that SQL and Python cannot disagree.

-- name: claim_due --
-- Claim a batch of due rows in one round trip. SKIP LOCKED on the partial claim index lets
-- many workers claim at once without waiting for each other; the claim index covers the
-- ORDER BY, so the finished history never slows it down. started_at keeps the first attempt's
-- start (Django: "began execution, on its first attempt"); last_attempted_at is this one's.
-- Serialized rows (lock_key): a row whose key a running row holds is passed over; `nth` keeps
-- one row per key in a batch, and the transaction-scoped advisory lock makes a concurrent
-- claim pass over the key too instead of waiting. The advisory lock is taken on the batch, not
-- in the scan: a function in the scan's filter makes the planner cost every due row (and pay
-- for JIT compilation on each claim); for the same reason NOT EXISTS stands alone, an
-- anti-join with the few held keys that a row without a key never matches, not behind an OR.
-- The held keys are read once (`held`, from the partial index of held keys), not per due row:
-- on statistics taken before a burst (few QUEUED, no RUNNING rows) the planner otherwise ran
-- the anti-join as a rescan of every owned row for each due row, 200-400 ms a claim once a
-- few hundred rows were running (bench/ hist workload).
-- The partial unique index on held lock keys (migration 0006) is the guarantee behind all
-- this: a claim that still loses a race fails whole and claims again (claim.py).
-- Fair share: with other live workers on these queues, a claim takes at most this worker's
-- share: the larger of due / live workers and (due + running rows) / live workers less the rows
-- it already runs (at least 1). Counting the running rows is what makes two workers split a
-- burst evenly when one always claims first (half of the rest each time would give it two
-- thirds); due / workers keeps batches large when a peer has stopped without releasing its
-- lease yet. Alone, a worker takes the full limit without counting (the lateral join is
-- empty); counts stop at limit x workers rows.
-- `{in_queues}` (statements.IN_QUEUES) is the worker's queue filter: for a one-queue worker it
-- folds to `queue_name = '<queue>'`, so the claim index returns the candidates in claim order
-- and the scan stops after the batch instead of sorting every due row.
WITH peers AS (
    SELECT greatest(1, count(*)) AS n FROM django_ray_taskworkerlease
    WHERE is_active AND expires_at >= now()
      AND (%(all_queues)s OR queue_name = '*'
           OR string_to_array(queue_name, ',') && %(queues)s::text[])
),
share AS (
    SELECT CASE WHEN p.n = 1 THEN %(limit)s ELSE least(%(limit)s, greatest(
        1, ceil(c.due::numeric / p.n)::int, ceil((c.due + c.running)::numeric / p.n)::int - c.mine
    )) END AS n
    FROM peers AS p LEFT JOIN LATERAL (
        SELECT (SELECT count(*) FROM (
                    SELECT 1 FROM django_ray_raytaskexecution
                    WHERE state = 'QUEUED' AND {in_queues}
                      AND run_after <= now()
                    LIMIT %(limit)s * (SELECT n FROM peers)) AS d) AS due,
               (SELECT count(*) FROM (
                    SELECT 1 FROM django_ray_raytaskexecution
                    WHERE {owned} AND {in_queues}
                    LIMIT %(limit)s * (SELECT n FROM peers)) AS r) AS running,
               (SELECT count(*) FROM django_ray_raytaskexecution
                WHERE claimed_by_worker = %(worker)s AND {owned})::int AS mine
        WHERE p.n > 1
    ) AS c ON true
),
held AS MATERIALIZED (
    SELECT o.lock_key FROM django_ray_raytaskexecution AS o WHERE {lock_key_held_o}
),
candidate AS (
    SELECT id, lock_key, priority, run_after FROM django_ray_raytaskexecution AS q
    WHERE state = 'QUEUED' AND {in_queues}
      AND run_after <= now()
      AND NOT EXISTS (SELECT 1 FROM held WHERE held.lock_key = q.lock_key)
    ORDER BY priority DESC, run_after, id
    LIMIT (SELECT n FROM share)
    FOR UPDATE OF q SKIP LOCKED
),
due AS (
    SELECT id FROM (
        SELECT id, lock_key,
               row_number() OVER (PARTITION BY lock_key ORDER BY priority DESC, run_after, id)
                   AS nth
        FROM candidate
    ) AS c
    WHERE lock_key IS NULL
       OR (nth = 1 AND pg_try_advisory_xact_lock(%(lock_space)s::int, hashtext(lock_key)))
)
UPDATE django_ray_raytaskexecution AS t
SET state = 'RUNNING',
    claimed_by_worker = %(worker)s,
    started_at = COALESCE(t.started_at, now()),
    last_attempted_at = now(),
    last_heartbeat_at = now(),
    finished_at = NULL,
    attempt_number = t.attempt_number + 1,
    worker_ids = t.worker_ids || to_jsonb(%(worker)s::text)
FROM due
WHERE t.id = due.id
RETURNING t.id, t.task_id, t.callable_path, t.queue_name, t.priority, t.takes_context, t.args,
          t.kwargs, t.attempt_number, t.max_attempts, t.timeout_seconds, t.backend_alias,
          t.created_at, t.run_after, t.last_attempted_at, t.worker_ids, t.lock_key,
          t.ray_options, (SELECT n FROM share) AS allowed;

-- name: enqueue --
-- Enqueue one row (no dedupe key): the ORM's save() spends about 1 ms of client CPU compiling
-- a 30-column INSERT per call, this statement a fraction of that. The column list is rendered
-- from the model's fields, so a new column can never be left out. The NOTIFY trigger wakes the
-- workers as for any insert.
INSERT INTO django_ray_raytaskexecution ({execution_columns})
VALUES ({execution_values})
RETURNING id;

-- name: enqueue_many --
-- Bulk enqueue: one statement per batch. Only the id, arguments and keyword arguments differ
-- between the rows of one call, so they come as three arrays and every other column is bound
-- once ({execution_values_per_row} renders those three as r.<column>). bulk_create built a
-- model per row and cost about 250 us of client CPU per row; this costs the JSON check.
INSERT INTO django_ray_raytaskexecution ({execution_columns})
SELECT {execution_values_per_row}
FROM unnest(%(task_ids)s::text[], %(args_texts)s::jsonb[], %(kwargs_texts)s::jsonb[])
    WITH ORDINALITY AS r(task_id, args, kwargs, n)
ORDER BY r.n;

-- name: enqueue_unique --
-- Enqueue a row with a dedupe key. ON CONFLICT names the partial unique index of held keys
-- (migration 0006), so of many concurrent enqueues of one key exactly one inserts; the others
-- get no row back and read the holder (lifecycle/unique.py, through the ORM). DO NOTHING, not DO UPDATE: the
-- holder is neither locked (a worker may be claiming it) nor rewritten. The column list is
-- rendered from the model's fields, so a new column can never be left out of unique enqueues.
INSERT INTO django_ray_raytaskexecution ({execution_columns})
VALUES ({execution_values})
ON CONFLICT (unique_key) WHERE {unique_key_held} DO NOTHING
RETURNING id;

-- name: record_outcomes --
-- Record a batch of outcomes and their attempt history in one statement. Arrays are bound
-- with unnest so the text is constant whatever the batch size. v.state is the target decided
-- by lifecycle.record; rows the worker no longer owns (recovered elsewhere, another attempt)
-- match nothing and are reported back as not recorded.
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
    UPDATE django_ray_raytaskexecution AS t
    SET state = {settle_cancelling},
        result_data = v.result::jsonb,
        result_reference = v.ref,
        error_class_path = v.err_class,
        error_message = v.err_message,
        error_traceback = v.err_traceback,
        finished_at = CASE WHEN {requeue} THEN NULL ELSE now() END,
        run_after = CASE WHEN {requeue} THEN now() + make_interval(secs => v.delay)
                         ELSE t.run_after END,
        claimed_by_worker = CASE WHEN {requeue} THEN NULL ELSE t.claimed_by_worker END,
        last_heartbeat_at = now()
    FROM v
    WHERE t.id = v.id
      AND t.attempt_number = v.attempt
      AND t.claimed_by_worker = %(worker)s
      AND {owned_t}
    RETURNING t.id, t.state
),
hist AS (
    INSERT INTO django_ray_taskattempt (execution_id, attempt_number, worker_id, state,
                                        started_at, finished_at, error_class_path,
                                        error_message, error_traceback)
    SELECT v.id, v.attempt, %(worker)s, v.attempt_state, v.started_at, now(), v.err_class,
           v.err_message, v.err_traceback
    FROM v JOIN upd ON upd.id = v.id
    ON CONFLICT (execution_id, attempt_number) DO NOTHING
)
SELECT id, state FROM upd;

-- name: heartbeat --
-- Renew the lease and the monitored rows' heartbeats in one statement; rows are touched only
-- while the lease is still ours (a worker declared dead must not look alive again).
WITH lease AS (
    UPDATE django_ray_taskworkerlease
    SET last_heartbeat_at = now(), expires_at = now() + make_interval(secs => %(lease)s)
    WHERE worker_id = %(worker)s AND is_active
    RETURNING worker_id
),
rows AS (
    UPDATE django_ray_raytaskexecution SET last_heartbeat_at = now()
    WHERE id = ANY(%(ids)s::bigint[]) AND claimed_by_worker = %(worker)s
      AND {owned}
      AND EXISTS (SELECT 1 FROM lease)
    RETURNING id
)
SELECT (SELECT count(*) FROM lease), (SELECT count(*) FROM rows);

-- name: expire_leases --
-- Deactivate leases whose worker stopped heartbeating, so their rows become recoverable. A
-- worker's own pass passes its id as `alive`: it never declares itself dead (its late heartbeat,
-- under load, renews the lease at the next beat); another worker's pass still expires it.
UPDATE django_ray_taskworkerlease SET is_active = FALSE, stopped_at = COALESCE(stopped_at, now())
WHERE is_active AND expires_at < now() AND worker_id IS DISTINCT FROM %(alive)s
RETURNING worker_id;

-- name: notify_cancel --
-- Wake the owner of a row that just became CANCELLING (its worker LISTENs on this channel).
SELECT pg_notify('django_ray_cancel', %(id)s);

-- name: notify_trigger --
-- Installed by migration 0002: one NOTIFY per statement and queue that makes rows QUEUED, so
-- enqueue, bulk enqueue, retries, admin retries and the runbook's shell requeue all wake workers.
CREATE OR REPLACE FUNCTION django_ray_notify_queued() RETURNS trigger AS $$
BEGIN
    PERFORM pg_notify('django_ray_queued', q.queue_name)
    FROM (SELECT DISTINCT queue_name FROM new_rows WHERE state = 'QUEUED') AS q;
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER django_ray_notify_queued_insert
AFTER INSERT ON django_ray_raytaskexecution
REFERENCING NEW TABLE AS new_rows
FOR EACH STATEMENT EXECUTE FUNCTION django_ray_notify_queued();

CREATE TRIGGER django_ray_notify_queued_update
AFTER UPDATE ON django_ray_raytaskexecution
REFERENCING NEW TABLE AS new_rows
FOR EACH STATEMENT EXECUTE FUNCTION django_ray_notify_queued();

-- name: drop_notify_trigger --
-- Reverse of notify_trigger (migration 0002 backwards).
DROP TRIGGER IF EXISTS django_ray_notify_queued_insert ON django_ray_raytaskexecution;
DROP TRIGGER IF EXISTS django_ray_notify_queued_update ON django_ray_raytaskexecution;
DROP FUNCTION IF EXISTS django_ray_notify_queued();

-- name: unique_requeue_trigger --
-- Installed by migration 0006. A row going back to QUEUED (a retry, recovery, an operator's
-- requeue, the runbook's shell) would break the one-holder-per-dedupe-key index if a newer row
-- took the key meanwhile: it gives up its key instead and both run. The WHEN clause keeps the
-- trigger off every update that is not such a move of a keyed row.
CREATE OR REPLACE FUNCTION django_ray_unique_requeue() RETURNS trigger AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM django_ray_raytaskexecution AS o
               WHERE o.unique_key = NEW.unique_key AND o.id <> NEW.id AND {unique_key_held_o})
    THEN
        NEW.unique_key := NULL;
    END IF;
    RETURN NEW;
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER django_ray_unique_requeue
BEFORE UPDATE OF state ON django_ray_raytaskexecution
FOR EACH ROW
WHEN (NEW.unique_key IS NOT NULL AND NEW.state = 'QUEUED' AND OLD.state <> 'QUEUED')
EXECUTE FUNCTION django_ray_unique_requeue();

-- name: drop_unique_requeue_trigger --
-- Reverse of unique_requeue_trigger (migration 0006 backwards).
DROP TRIGGER IF EXISTS django_ray_unique_requeue ON django_ray_raytaskexecution;
DROP FUNCTION IF EXISTS django_ray_unique_requeue();

-- name: periodic_lock --
-- Taken in the transaction that fires a schedule's due instants: one worker at a time decides
-- what is due and what is skipped (so a skipped run is counted once); the others pass this
-- round instead of waiting. Exactly-once itself rests on the unique (schedule, instant) row.
SELECT pg_try_advisory_xact_lock(%(space)s::int, hashtext(%(schedule)s));
