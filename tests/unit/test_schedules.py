"""Schedules: the PERIODIC_TASKS check names the bad entry and the fix; instants are right."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from django_ray.schedules import Schedule, problem

GOOD = {"task": "tests.tasks.noop", "cron": "*/5 * * * *", "timezone": "UTC"}


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({**GOOD, "cron": "61 * * * *"}, "is not a valid cron expression"),
        ({**GOOD, "cron": "* * *"}, "must have 5 fields"),
        ({k: v for k, v in GOOD.items() if k != "timezone"}, "lacks timezone"),
        ({**GOOD, "timezone": "Mars/Olympus"}, "is not an IANA time zone"),
        ({**GOOD, "task": "noop"}, "dotted path"),
        ({**GOOD, "task": "tests.tasks.nothing_here"}, "cannot be imported"),
        ({**GOOD, "task": "tests.tasks.not_a_task"}, "is not a task: decorate it with @task"),
        ({**GOOD, "every": 5}, "unknown keys every"),
        ({**GOOD, "args": [object()]}, "must be JSON"),
        ("*/5 * * * *", "must be a dict"),
    ],
)
def test_bad_entries_are_named_with_the_fix(entry: object, message: str) -> None:
    found = problem({"report": entry})
    assert found is not None and "'report'" in found and message in found


def test_good_entries_pass() -> None:
    assert problem({"a": GOOD, "b": {**GOOD, "cron": "*/10 * * * * *", "args": [1]}}) is None


def test_seconds_come_first_and_time_zones_are_explicit() -> None:
    every_ten = Schedule("s", "x.y", "*/10 * * * * *", "UTC")
    start = datetime(2026, 1, 1, 0, 0, 0, tzinfo=UTC)
    got = list(every_ten.instants(start, datetime(2026, 1, 1, 0, 0, 30, tzinfo=UTC)))
    assert [i.second for i in got] == [10, 20, 30]
    paris = Schedule("p", "x.y", "30 2 * * *", "Europe/Paris")  # 02:30 Paris is 01:30 UTC
    assert paris.next_after(start) == datetime(2026, 1, 1, 1, 30, tzinfo=UTC)


def test_a_bad_cron_expression_is_a_system_check_error() -> None:
    from django.test import override_settings

    from django_ray.conf import check_settings

    bad = {"nightly": {**GOOD, "cron": "0 25 * * *"}}
    with override_settings(DJANGO_RAY={"PERIODIC_TASKS": bad}):
        [error] = check_settings()
    assert error.id == "django_ray.E006"
    assert "'nightly'" in error.msg and "'0 25 * * *' is not a valid cron expression" in error.msg
