"""The benchmark's history filler against the real test PostgreSQL server."""

from __future__ import annotations

import os

import pytest

from bench.harness.db import Databases
from bench.harness.systems import Table


@pytest.fixture
def dbs() -> Databases:
    host, port = os.environ["DJANGO_RAY_TEST_PG"].rsplit(":", 1)
    return Databases(host, int(port))


def test_history_clones_rows_with_fresh_unique_values(dbs: Databases) -> None:
    dbs.create("bench_hist_test")
    try:
        with dbs.connect("bench_hist_test") as conn:
            conn.execute(
                """CREATE TABLE q (id bigserial PRIMARY KEY, uid uuid UNIQUE NOT NULL,
                   task_id varchar(64) UNIQUE NOT NULL, state text NOT NULL,
                   finished_at timestamptz, result jsonb, nullable_ref bigint UNIQUE)"""
            )
            conn.execute(
                """INSERT INTO q (uid, task_id, state, finished_at, result)
                   SELECT gen_random_uuid(), 't' || g, 'SUCCEEDED', now(), '1.5'
                   FROM generate_series(1, 10) g"""
            )
            conn.execute("CREATE INDEX q_live ON q (state) WHERE state = 'QUEUED'")
            conn.execute("CREATE UNIQUE INDEX q_uid_fin ON q (uid, finished_at)")
            indexes = "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'q'"
            before = sorted(conn.execute(indexes).fetchall())
        total = dbs.add_history("bench_hist_test", "q", 250)
        assert total == 250
        with dbs.connect("bench_hist_test") as conn:
            # Indexes dropped for the bulk load are rebuilt exactly as they were.
            assert sorted(conn.execute(indexes).fetchall()) == before
            assert len(before) == 6
        with dbs.connect("bench_hist_test") as conn:
            distinct = conn.execute(
                "SELECT count(DISTINCT uid), count(DISTINCT task_id), count(DISTINCT id),"
                " count(*) FILTER (WHERE state = 'SUCCEEDED') FROM q"
            ).fetchone()
            assert distinct == (250, 250, 250, 250)
            table = Table("q", "state", ("QUEUED",), "SUCCEEDED", "task_id", "result::text")
            assert dbs.live_count(conn, table) == 0
            starts = dbs.start_times(conn, table, ["t1", "t2", "missing"])
            assert starts == {"t1": 1.5, "t2": 1.5}
    finally:
        dbs.drop("bench_hist_test")


def test_history_refuses_an_empty_table(dbs: Databases) -> None:
    dbs.create("bench_hist_empty")
    try:
        with dbs.connect("bench_hist_empty") as conn:
            conn.execute("CREATE TABLE q (id bigserial PRIMARY KEY, state text)")
        with pytest.raises(RuntimeError, match="no rows to clone"):
            dbs.add_history("bench_hist_empty", "q", 100)
    finally:
        dbs.drop("bench_hist_empty")


def test_first_claim_and_first_finish_read_the_earliest_of_each(dbs: Databases) -> None:
    dbs.create("bench_first_marks")
    try:
        with dbs.connect("bench_first_marks") as conn:
            conn.execute(
                "CREATE TABLE q (id bigserial PRIMARY KEY, state text NOT NULL, "
                "started_at timestamptz, done_at timestamptz)"
            )
            table = Table("q", "state", ("QUEUED",), "SUCCEEDED", "id", "id", "done_at")
            assert dbs.first_claim_and_finish(conn, table) == (None, None)
            conn.execute(
                "INSERT INTO q (state, started_at, done_at) VALUES "
                "('SUCCEEDED', to_timestamp(100), to_timestamp(105)), "
                "('SUCCEEDED', to_timestamp(101), to_timestamp(103)), "
                "('RUNNING', to_timestamp(102), NULL)"
            )
            assert dbs.first_claim_and_finish(conn, table) == (100.0, 103.0)
            # A restarted worker's marks: rows its predecessor claimed do not count.
            assert dbs.first_claim_and_finish(conn, table, since=101.0) == (101.0, 103.0)
            assert dbs.first_claim_and_finish(conn, table, since=102.0) == (102.0, None)
            assert dbs.first_claim_and_finish(conn, table, since=103.0) == (None, None)
    finally:
        dbs.drop("bench_first_marks")
