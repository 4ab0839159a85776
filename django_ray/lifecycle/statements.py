"""The lifecycle's PostgreSQL statements: loaded by name from ``queries.sql`` and run here.

``queries.sql`` holds each statement once under a ``-- name: <name> --`` line with a comment
saying why it is shaped as it is. Two placeholders are rendered from :mod:`.rules` at load time:
``{owned}`` (the owned-states predicate) and ``{settle_cancelling}`` / ``{requeue}`` (a
CANCELLING row that would go back to the queue ends CANCELLED); ``{in_queues}`` (:data:`IN_QUEUES`) is
the worker's queue filter; ``{execution_columns}`` /
``{execution_values}`` are every column of an execution row, from the model, as
:func:`execution_params` binds them (``{execution_values_per_row}``: the same with the
:data:`PER_ROW_FIELDS` taken from ``enqueue_many``'s arrays). Other databases (SQLite, the
demo's default) take the portable ORM path in each lifecycle module instead; one test drives
both through every transition and checks them against :data:`.rules.ALLOWED`.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path
from typing import Any

from django.db import connections
from django.db.models import Field

from django_ray.lifecycle import rules
from django_ray.models import RayTaskExecution

QUERIES = Path(__file__).with_name("queries.sql")
NOTIFY_CHANNEL = "django_ray_queued"
CANCEL_CHANNEL = "django_ray_cancel"
_NAME = re.compile(r"^-- name: (\w+) --$", re.MULTILINE)

#: A row on the worker's queues (``all_queues``, ``queues``). One queue, the usual worker
#: (``django-ray-worker@<queue>``), becomes ``queue_name = '<queue>'``: arguments are bound
#: client-side (Django's default with psycopg 3), so the cardinality tests fold to constants.
#: ``queue_name = ANY('{default}')`` hid from the planner that there is one queue, so the claim
#: could not take rows in the claim index's order: it read and sorted every due row on each claim
#: (8.6 of 18 ms a claim of 256 from a backlog of 10,000). Several queues, or all, keep the sort.
IN_QUEUES = (
    "(%(all_queues)s"
    " OR cardinality(%(queues)s::text[]) = 1 AND queue_name = (%(queues)s::text[])[1]"
    " OR cardinality(%(queues)s::text[]) > 1 AND queue_name = ANY(%(queues)s))"
)


def _render(text: str) -> str:
    settle = rules.cancelling_settles_sql("t.state", "v.state")
    return (
        text.replace("{owned}", rules.owned_sql())
        .replace("{in_queues}", IN_QUEUES)
        .replace("{owned_t}", rules.owned_sql("t.state"))
        .replace("{settle_cancelling}", settle)
        .replace("{requeue}", f"({settle}) = '{rules.S.QUEUED}'")
        .replace("{unique_key_held}", rules.unique_key_held_sql())
        .replace("{unique_key_held_o}", rules.unique_key_held_sql("o"))
        .replace("{lock_key_held_o}", rules.lock_key_held_sql("o"))
        .replace("{execution_columns}", ", ".join(f.column for f in _execution_fields()))
        .replace("{execution_values}", ", ".join(f"%({f.attname})s" for f in _execution_fields()))
        .replace("{execution_values_per_row}", ", ".join(map(_per_row_value, _execution_fields())))
    )


#: The columns ``enqueue_many`` takes per row (from arrays); every other one is bound once.
PER_ROW_FIELDS = ("task_id", "args", "kwargs")


def _per_row_value(field: Field[Any, Any]) -> str:
    return f"r.{field.attname}" if field.attname in PER_ROW_FIELDS else f"%({field.attname})s"


def _execution_fields() -> list[Field[Any, Any]]:
    return [f for f in RayTaskExecution._meta.concrete_fields if not f.primary_key]


def execution_params(row: RayTaskExecution, using: str) -> dict[str, Any]:
    """Bind values for ``{execution_values}``: each field's value as the ORM would save it."""
    connection = connections[using]
    return {
        f.attname: f.get_db_prep_save(f.pre_save(row, add=True), connection)
        for f in _execution_fields()
    }


def _statement(body: str) -> str:
    # The why-comment above a statement is for readers; the statement sent is what follows.
    lines = body.strip().splitlines()
    while lines and lines[0].startswith("--"):
        lines.pop(0)
    return _render("\n".join(lines)).strip().rstrip(";").strip()


@functools.cache
def load() -> dict[str, str]:
    """``{name: statement}`` of every statement in ``queries.sql``, rendered."""
    parts = _NAME.split(QUERIES.read_text())
    return {name: _statement(body) for name, body in zip(parts[1::2], parts[2::2], strict=True)}


def sql(name: str) -> str:
    """The text of statement ``name`` (KeyError names the missing statement)."""
    return load()[name]


def is_postgres(using: str) -> bool:
    """Whether ``using`` takes the PostgreSQL statements (else the portable ORM path)."""
    return connections[using].vendor == "postgresql"


def fetchall(name: str, params: dict[str, Any], using: str) -> list[tuple[Any, ...]]:
    """Run statement ``name`` with ``params`` on ``using``; return every row."""
    with connections[using].cursor() as cursor:
        cursor.execute(sql(name), params)
        return cursor.fetchall() if cursor.description else []


def notify_cancel(execution_id: int, using: str) -> None:
    """Wake the worker that owns ``execution_id`` (it LISTENs on :data:`CANCEL_CHANNEL`)."""
    if is_postgres(using):
        fetchall("notify_cancel", {"id": str(execution_id)}, using)


# Migration 0002 installs and removes the NOTIFY trigger with these (importable by name).
NOTIFY_TRIGGER_SQL = sql("notify_trigger") + ";\n"
DROP_NOTIFY_TRIGGER_SQL = sql("drop_notify_trigger") + ";\n"
# Migration 0006: a requeued row gives up its dedupe key when another row holds it.
UNIQUE_REQUEUE_TRIGGER_SQL = sql("unique_requeue_trigger") + ";\n"
DROP_UNIQUE_REQUEUE_TRIGGER_SQL = sql("drop_unique_requeue_trigger") + ";\n"
