"""The lifecycle's rules, each written once: allowed moves, owned states, operator retries.

Every module that changes a row (the SQL in ``queries.sql`` through :mod:`.statements`, the
portable ORM path for SQLite, the operator actions, metrics and status) reads these tables, so a
rule cannot say one thing in SQL and another in Python.
"""

from __future__ import annotations

from django_ray.models import OWNED_STATES, TaskState

S = TaskState

#: Every state change the lifecycle allows (``docs/state-machine.md``).
ALLOWED: dict[str, frozenset[str]] = {
    S.QUEUED: frozenset({S.RUNNING, S.CANCELLED}),
    # RUNNING -> CANCELLED: the runner reports the attempt cancelled although nobody asked
    # django-ray to (stopped from Ray's side, e.g. `ray job stop` or the dashboard).
    S.RUNNING: frozenset({S.SUCCEEDED, S.FAILED, S.QUEUED, S.LOST, S.CANCELLING, S.CANCELLED}),
    S.CANCELLING: frozenset({S.CANCELLED, S.SUCCEEDED, S.FAILED}),
    S.LOST: frozenset({S.QUEUED, S.FAILED}),
    S.FAILED: frozenset({S.QUEUED}),
    S.CANCELLED: frozenset({S.QUEUED}),
    S.SUCCEEDED: frozenset(),
}

#: States an operator may requeue (admin action, ``django_ray_requeue``, the runbook snippet).
#: RUNNING is allowed to go back to QUEUED only by its own worker (a retry), never by hand:
#: its attempt may still be executing, so requeueing it would run the task twice.
RETRYABLE_BY_OPERATOR = (S.FAILED, S.LOST, S.CANCELLED)

#: States :func:`django_ray.cancel_task` acts on (a CANCELLING row is left as is).
CANCELLABLE = (S.QUEUED, S.RUNNING)

#: A CANCELLING row whose attempt would go back to the queue (a retry, an interruption, a lost
#: attempt) ends CANCELLED instead: the operator asked for it to stop.
CANCELLING_SETTLES = {S.QUEUED: S.CANCELLED, S.LOST: S.CANCELLED}


class IllegalTransition(Exception):
    """A state change the lifecycle does not allow (e.g. SUCCEEDED -> QUEUED)."""

    def __init__(self, task_id: str, current: str, target: str, why: str = "") -> None:
        allowed = ", ".join(sorted(ALLOWED.get(current, ()))) or "nothing (terminal)"
        super().__init__(
            why
            or (
                f"Task {task_id}: cannot move from {current} to {target}; "
                f"from {current} it may only move to {allowed}."
            )
        )
        self.task_id, self.current, self.target = task_id, current, target


def check_allowed(task_id: str, current: str, target: str) -> None:
    """Raise :class:`IllegalTransition` unless ``current -> target`` is in :data:`ALLOWED`."""
    if target not in ALLOWED.get(current, frozenset()):
        raise IllegalTransition(task_id, current, target)


def settle(current: str, planned: str) -> str:
    """The state an outcome really writes, given the row's state when it is recorded."""
    if current == S.CANCELLING:
        return CANCELLING_SETTLES.get(planned, planned)
    return planned


def owned_sql(column: str = "state") -> str:
    """``column IN ('RUNNING', 'CANCELLING')``: the owned-states predicate as SQL."""
    return f"{column} IN ({', '.join(repr(str(s)) for s in OWNED_STATES)})"


def unique_key_held_sql(alias: str = "") -> str:
    """:data:`~django_ray.models.UNIQUE_KEY_HELD` as SQL (the index predicate of migration 0006;
    ``ON CONFLICT`` names it to find that index, so the two must say the same)."""
    p = f"{alias}." if alias else ""
    return (
        f"{p}unique_key IS NOT NULL AND ({p}state = '{S.QUEUED}' "
        f"OR ({p}unique_while_running AND {owned_sql(p + 'state')}))"
    )


def lock_key_held_sql(alias: str = "") -> str:
    """:data:`~django_ray.models.LOCK_KEY_HELD` as SQL: a row holding its lock key."""
    p = f"{alias}." if alias else ""
    return f"{p}lock_key IS NOT NULL AND {owned_sql(p + 'state')}"


def cancelling_settles_sql(current: str, planned: str) -> str:
    """:func:`settle` as a SQL ``CASE`` expression over two column expressions."""
    whens = " ".join(
        f"WHEN {current} = '{S.CANCELLING}' AND {planned} = '{src}' THEN '{dst}'"
        for src, dst in CANCELLING_SETTLES.items()
    )
    return f"CASE {whens} ELSE {planned} END"
