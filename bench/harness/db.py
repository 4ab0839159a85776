"""Databases on the benchmark's throwaway PostgreSQL server: templates, fresh copies, history."""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import sql

from .systems import Table


class Databases:
    """Per-run databases, copied from migrated templates (``CREATE DATABASE ... TEMPLATE``)."""

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port

    def info(self, name: str) -> dict[str, Any]:
        return {"name": name, "host": self.host, "port": self.port}

    def admin(self) -> psycopg.Connection[Any]:
        return psycopg.connect(
            host=self.host, port=self.port, user="postgres", dbname="postgres", autocommit=True
        )

    def connect(self, name: str) -> psycopg.Connection[Any]:
        return psycopg.connect(
            host=self.host, port=self.port, user="postgres", dbname=name, autocommit=True
        )

    def create(self, name: str, template: str | None = None) -> dict[str, Any]:
        with self.admin() as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )
            if template:
                conn.execute(
                    sql.SQL("CREATE DATABASE {} TEMPLATE {} STRATEGY FILE_COPY").format(
                        sql.Identifier(name), sql.Identifier(template)
                    )
                )
            else:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return self.info(name)

    def drop(self, name: str) -> None:
        with self.admin() as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )

    def exists(self, name: str) -> bool:
        with self.admin() as conn:
            return (
                conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
                is not None
            )

    # -- progress and results ---------------------------------------------------------------

    @staticmethod
    def live_count(conn: psycopg.Connection[Any], table: Table) -> int:
        q = sql.SQL("SELECT count(*) FROM {} WHERE {} = ANY(%s)").format(
            sql.Identifier(table.name), sql.Identifier(table.state)
        )
        return int(conn.execute(q, (list(table.live),)).fetchone()[0])

    @staticmethod
    def finished_since(
        conn: psycopg.Connection[Any], table: Table, since: float
    ) -> tuple[int, int, float | None]:
        """(succeeded, other finished, last finish epoch) for rows finished at/after ``since``."""
        q = sql.SQL(
            "SELECT count(*) FILTER (WHERE {st} = %s), count(*) FILTER (WHERE {st} <> %s), "
            "extract(epoch FROM max({fin}))::float8 FROM {t} WHERE {fin} >= to_timestamp(%s)"
        ).format(
            st=sql.Identifier(table.state),
            fin=sql.Identifier(table.finished_col),
            t=sql.Identifier(table.name),
        )
        ok, other, last = conn.execute(q, (table.succeeded, table.succeeded, since)).fetchone()
        return int(ok), int(other), last

    @staticmethod
    def first_claim_and_finish(
        conn: psycopg.Connection[Any], table: Table, since: float | None = None
    ) -> tuple[float | None, float | None]:
        """Epochs of the earliest claim (``started_at``) and the earliest finish in ``table``
        (None before any); with ``since``, of the rows claimed at or after that epoch only (a
        restarted worker's, not its predecessor's)."""
        q = sql.SQL(
            "SELECT extract(epoch FROM min(started_at))::float8, "
            "extract(epoch FROM min({fin}))::float8 FROM {t} "
            "WHERE %(since)s::float8 IS NULL OR started_at >= to_timestamp(%(since)s::float8)"
        ).format(t=sql.Identifier(table.name), fin=sql.Identifier(table.finished_col))
        first_claim, first_finish = conn.execute(q, {"since": since}).fetchone()
        return first_claim, first_finish

    @staticmethod
    def claims_by_worker(
        conn: psycopg.Connection[Any], table: Table, since: float
    ) -> dict[str, int]:
        """Rows finished at/after ``since`` by the worker that claimed them (django-ray's table:
        ``claimed_by_worker`` is set by the claim and kept when the outcome is recorded)."""
        q = sql.SQL(
            "SELECT claimed_by_worker, count(*) FROM {t} "
            "WHERE {fin} >= to_timestamp(%s) GROUP BY claimed_by_worker"
        ).format(t=sql.Identifier(table.name), fin=sql.Identifier(table.finished_col))
        return {str(worker): int(count) for worker, count in conn.execute(q, (since,)).fetchall()}

    @staticmethod
    def start_times(
        conn: psycopg.Connection[Any], table: Table, ids: list[str]
    ) -> dict[str, float]:
        """Task start times (the task's own return value) by task id."""
        q = sql.SQL("SELECT {id}, {res} FROM {t} WHERE {id} = ANY(%s)").format(
            id=sql.SQL(table.id_col), res=sql.SQL(table.result_col), t=sql.Identifier(table.name)
        )
        out: dict[str, float] = {}
        for key, raw in conn.execute(q, (ids,)).fetchall():
            value = _json_float(raw)
            if value is not None:
                out[str(key)] = value
        return out

    # -- history ----------------------------------------------------------------------------

    def add_history(self, name: str, table: str, target_rows: int) -> int:
        """Clone the finished rows of ``table`` until it holds ``target_rows`` rows.

        Columns that are the primary key or part of a unique index get fresh values (sequence
        default, ``gen_random_uuid()``, or the old text plus a suffix); every other column is
        copied. Ends with ``VACUUM ANALYZE`` so the planner knows the table's new size.
        """
        with self.connect(name) as conn:
            have = int(
                conn.execute(
                    sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table))
                ).fetchone()[0]
            )
            if have == 0:
                raise RuntimeError(f"{name}.{table}: no rows to clone into history")
            columns = conn.execute(
                """SELECT column_name, data_type, column_default, is_identity
                   FROM information_schema.columns WHERE table_name = %s
                   ORDER BY ordinal_position""",
                (table,),
            ).fetchall()
            unique = {
                row[0]
                for row in conn.execute(
                    """SELECT a.attname FROM pg_index i
                       JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)
                       WHERE i.indrelid = %s::regclass AND (i.indisunique OR i.indisprimary)""",
                    (table,),
                ).fetchall()
            }
            names: list[sql.Composable] = []
            exprs: list[sql.Composable] = []
            for col, dtype, default, identity in columns:
                ident = sql.Identifier(col)
                if col in unique:
                    if (default or "").startswith("nextval(") or identity == "YES":
                        continue
                    names.append(ident)
                    if dtype == "uuid":
                        exprs.append(sql.SQL("gen_random_uuid()"))
                    elif dtype in ("character varying", "text"):
                        exprs.append(sql.SQL("left(md5(random()::text || g::text), 32)"))
                    else:  # e.g. a nullable id: NULLs never collide; a real value fails loudly
                        exprs.append(sql.SQL("src.{}").format(ident))
                else:
                    names.append(ident)
                    exprs.append(sql.SQL("src.{}").format(ident))
            copies = max(0, -(-(target_rows - have) // have))
            insert = sql.SQL(
                "INSERT INTO {t} ({names}) SELECT {exprs} "
                "FROM {t} AS src, generate_series(1, %s) AS g"
            ).format(
                t=sql.Identifier(table),
                names=sql.SQL(", ").join(names),
                exprs=sql.SQL(", ").join(exprs),
            )
            if copies:
                # Bulk-load speed: indexes that back no constraint are dropped and rebuilt after
                # the INSERT (one sorted build each instead of a million insertions each).
                secondary = conn.execute(
                    """SELECT c.relname, pg_get_indexdef(i.indexrelid)
                       FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
                       WHERE i.indrelid = %s::regclass AND NOT i.indisprimary
                         AND NOT EXISTS (
                           SELECT 1 FROM pg_constraint k WHERE k.conindid = i.indexrelid)""",
                    (table,),
                ).fetchall()
                dropped = [name for name, _ in secondary]
                rebuild = [definition for _, definition in secondary]
                conn.execute("SET maintenance_work_mem = '512MB'")
                with conn.transaction():
                    for index in dropped:
                        conn.execute(sql.SQL("DROP INDEX {}").format(sql.Identifier(index)))
                    conn.execute(insert, (copies,))
                    for definition in rebuild:
                        conn.execute(definition)
            conn.execute(sql.SQL("VACUUM ANALYZE {}").format(sql.Identifier(table)))
            return int(
                conn.execute(
                    sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table))
                ).fetchone()[0]
            )


def _json_float(raw: object) -> float | None:
    if raw is None:
        return None
    if isinstance(raw, int | float):
        return float(raw)
    text = str(raw).strip().strip('"')
    try:
        return float(text)
    except ValueError:
        return None
