"""Two attempts of one task inside ``effect_once`` at the same time (a recovered attempt while the
old one still runs), on real PostgreSQL: the second waits for the first's transaction and
applies the effect only if the first rolled back."""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest
from django.db import connection, connections

from django_ray.current import CurrentTask, running
from django_ray.effects import effect_once
from django_ray.models import TaskEffect
from tests import tasks
from tests.conftest import wait_until

pytestmark = pytest.mark.django_db(transaction=True)


class Abort(Exception):
    pass


def _waiting_on_a_lock() -> bool:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE datname = current_database() AND wait_event_type = 'Lock'"
        )
        return cursor.fetchone()[0] > 0


def _race(first_commits: bool) -> tuple[bool, bool]:
    """Attempt 1 enters the effect and holds its transaction until attempt 2 waits on it."""
    task_id = tasks.noop.enqueue().id
    seen: dict[int, bool] = {}
    entered = threading.Event()
    release = threading.Event()

    def attempt(number: int, hold: Callable[[], None]) -> None:
        try:
            with running(CurrentTask(task_id, number, "default")):
                try:
                    with effect_once("ledger") as first_time:
                        seen[number] = first_time
                        hold()
                except Abort:
                    pass
        finally:
            connections.close_all()

    def hold_first() -> None:
        entered.set()
        assert release.wait(60)
        if not first_commits:
            raise Abort

    one = threading.Thread(target=attempt, args=(1, hold_first))
    two = threading.Thread(target=attempt, args=(2, lambda: None))
    one.start()
    assert entered.wait(60)
    two.start()
    wait_until(_waiting_on_a_lock, 30)  # attempt 2 blocks on the unique index
    assert 2 not in seen
    release.set()
    one.join(60)
    two.join(60)
    assert TaskEffect.objects.filter(execution_id=task_id).count() == 1
    return seen[1], seen[2]


def test_the_second_attempt_skips_when_the_first_commits() -> None:
    assert _race(first_commits=True) == (True, False)


def test_the_second_attempt_applies_when_the_first_rolls_back() -> None:
    assert _race(first_commits=False) == (True, True)
