"""The database ceiling: a bare ``FOR UPDATE SKIP LOCKED`` claim loop over one table.

No Django, no Ray: psycopg straight to PostgreSQL. It shows how fast a queue on this server can
move at all, so the other systems' figures can be read as a fraction of it.

``python -m benchapp.rawsql setup|enqueue|work`` (connection from ``BENCH_DB_*``).
"""

from __future__ import annotations

import argparse
import json
import os
import select
import signal
import sys
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Any

import psycopg

from benchapp.plain import PLAIN

TABLE = "bench_queue"
CHANNEL = "bench_queue"
SETUP_SQL = f"""
CREATE TABLE IF NOT EXISTS {TABLE} (
    id bigserial PRIMARY KEY,
    task text NOT NULL,
    state text NOT NULL DEFAULT 'queued',
    priority smallint NOT NULL DEFAULT 0,
    created_at timestamptz NOT NULL DEFAULT now(),
    started_at timestamptz,
    finished_at timestamptz,
    result jsonb
);
CREATE INDEX IF NOT EXISTS bench_queue_claim ON {TABLE} (priority DESC, id)
    WHERE state = 'queued';
CREATE OR REPLACE FUNCTION bench_queue_notify() RETURNS trigger AS $$
BEGIN PERFORM pg_notify('{CHANNEL}', ''); RETURN NULL; END $$ LANGUAGE plpgsql;
DROP TRIGGER IF EXISTS bench_queue_notify ON {TABLE};
CREATE TRIGGER bench_queue_notify AFTER INSERT ON {TABLE}
    FOR EACH STATEMENT EXECUTE FUNCTION bench_queue_notify();
"""
CLAIM_SQL = f"""
WITH due AS (
    SELECT id FROM {TABLE} WHERE state = 'queued' ORDER BY priority DESC, id
    LIMIT %s FOR UPDATE SKIP LOCKED
)
UPDATE {TABLE} t SET state = 'running', started_at = now() FROM due WHERE t.id = due.id
RETURNING t.id, t.task
"""
FINISH_SQL = f"""
UPDATE {TABLE} t SET state = 'succeeded', finished_at = now(), result = v.result
FROM unnest(%s::bigint[], %s::jsonb[]) AS v(id, result) WHERE t.id = v.id
"""


def dsn() -> str:
    return (
        f"host={os.environ.get('BENCH_DB_HOST', '127.0.0.1')} "
        f"port={os.environ.get('BENCH_DB_PORT', '5432')} "
        f"dbname={os.environ.get('BENCH_DB_NAME', 'bench')} user=postgres"
    )


def setup() -> dict[str, Any]:
    with psycopg.connect(dsn(), autocommit=True) as conn:
        conn.execute(SETUP_SQL)
    return {"ok": True}


def enqueue(task: str, n: int, mode: str, interval: float) -> dict[str, Any]:
    out: dict[str, Any] = {"mode": mode, "n": n}
    with psycopg.connect(dsn(), autocommit=True) as conn:
        insert = f"INSERT INTO {TABLE} (task) VALUES (%s) RETURNING id"
        start = time.perf_counter()
        if mode == "loop":
            for _ in range(n):
                conn.execute(insert, (task,))
        elif mode == "compare":  # what the Django agents report, minus the ORM (there is none)
            for _ in range(n):
                conn.execute(insert, (task,))
            loop = time.perf_counter() - start
            bulk_start = time.perf_counter()
            conn.execute(
                f"INSERT INTO {TABLE} (task) SELECT %s FROM generate_series(1, %s)", (task, n)
            )
            bulk = time.perf_counter() - bulk_start
            out.update(
                loop_calls_per_s=n / loop, bulk_tasks_per_s=n / bulk, bulk_speedup=loop / bulk
            )
        elif mode == "bulk":
            conn.execute(
                f"INSERT INTO {TABLE} (task) SELECT %s FROM generate_series(1, %s)", (task, n)
            )
        elif mode == "trickle":
            committed = []
            next_at = time.monotonic()
            for _ in range(n):
                delay = next_at - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                before = time.time()
                (row_id,) = conn.execute(insert, (task,)).fetchone()
                committed.append((str(row_id), time.time(), before))
                next_at += interval
            out["committed"] = committed
        out["seconds"] = time.perf_counter() - start
    out["calls_per_s"] = n / out["seconds"]
    return out


def work(concurrency: int, batch: int) -> None:
    """Claim, run, record; sleep on LISTEN when the queue is empty. Runs until SIGTERM."""
    stop = False

    def on_term(*_: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_term)
    conn = psycopg.connect(dsn(), autocommit=True)
    listen = psycopg.connect(dsn(), autocommit=True)
    listen.execute(f"LISTEN {CHANNEL}")
    pool = ThreadPoolExecutor(concurrency) if concurrency > 1 else None
    running: dict[Future[float], int] = {}
    done_ids: list[int] = []
    done_results: list[str] = []

    def flush() -> None:
        if done_ids:
            conn.execute(FINISH_SQL, (done_ids, done_results))
            done_ids.clear()
            done_results.clear()

    while not stop:
        free = concurrency - len(running) if pool else batch
        rows = conn.execute(CLAIM_SQL, (free,)).fetchall() if free > 0 else []
        for row_id, task in rows:
            if pool is None:
                done_ids.append(row_id)
                done_results.append(json.dumps(PLAIN[task]()))
            else:
                running[pool.submit(PLAIN[task])] = row_id
        if pool is not None and running:
            finished, _ = wait(list(running), timeout=1.0, return_when=FIRST_COMPLETED)
            for fut in finished:
                done_ids.append(running.pop(fut))
                done_results.append(json.dumps(fut.result()))
        flush()
        if not rows and not running:
            # Idle: drain stale notifications, then wait for the next one (1 s fallback poll).
            gen = listen.notifies(timeout=0)
            for _ in gen:
                pass
            select.select([listen.fileno()], [], [], 1.0)
            for _ in listen.notifies(timeout=0):
                pass
    if pool is not None:
        pool.shutdown(wait=True)
    conn.close()
    listen.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="benchapp.rawsql", description=__doc__)
    sub = parser.add_subparsers(dest="cmd", required=True)
    sub.add_parser("setup")
    enq = sub.add_parser("enqueue")
    enq.add_argument("--task", choices=sorted(PLAIN), default="noop")
    enq.add_argument("--n", type=int, required=True)
    enq.add_argument("--mode", choices=["loop", "bulk", "trickle", "compare"], default="loop")
    enq.add_argument("--interval", type=float, default=0.02)
    wrk = sub.add_parser("work")
    wrk.add_argument("--concurrency", type=int, default=1)
    wrk.add_argument("--batch", type=int, default=100)
    args = parser.parse_args(argv)
    if args.cmd == "setup":
        result = setup()
    elif args.cmd == "enqueue":
        result = enqueue(args.task, args.n, args.mode, args.interval)
    else:
        work(args.concurrency, args.batch)
        return 0
    sys.stdout.write(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
