"""Periodic task schedules: ``DJANGO_RAY["PERIODIC_TASKS"]`` parsed, checked and iterated.

Each entry names a task, a cron expression (five fields, or six with seconds first) and an
explicit IANA time zone::

    DJANGO_RAY = {
        "PERIODIC_TASKS": {
            "nightly-report": {
                "task": "myapp.tasks.nightly_report",
                "cron": "30 2 * * *",  # 02:30 every day
                "timezone": "Europe/Paris",
                "kwargs": {"full": True},
            },
            "heartbeat": {"task": "myapp.tasks.ping", "cron": "*/10 * * * * *", "timezone": "UTC"},
        }
    }

This module is pure: which instants are due. Firing them exactly once across workers is
:mod:`django_ray.lifecycle.periodic`'s job (a unique row per schedule and instant).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter
from django.tasks import Task
from django.utils.module_loading import import_string

#: Keys an entry may have; the first three are required.
REQUIRED = ("task", "cron", "timezone")
OPTIONAL = ("args", "kwargs")
#: Longest schedule name (the ``schedule`` column of ``PeriodicFire``).
NAME_MAX_LENGTH = 200


@dataclass(frozen=True)
class Schedule:
    """One entry of ``PERIODIC_TASKS``."""

    name: str
    task: str
    cron: str
    timezone: str
    args: list[Any] = field(default_factory=list)
    kwargs: dict[str, Any] = field(default_factory=dict)

    @property
    def has_seconds(self) -> bool:
        return len(self.cron.split()) == 6

    def _iter(self, start: datetime) -> croniter:
        local = start.astimezone(ZoneInfo(self.timezone))
        return croniter(self.cron, local, second_at_beginning=self.has_seconds)

    def instants(self, after: datetime, until: datetime) -> Iterator[datetime]:
        """The schedule's instants in ``(after, until]``, oldest first, in UTC."""
        it = self._iter(after)
        while True:
            instant = it.get_next(datetime).astimezone(UTC)
            if instant > until:
                return
            yield instant

    def next_after(self, moment: datetime) -> datetime:
        """The first instant strictly after ``moment``, in UTC."""
        return self._iter(moment).get_next(datetime).astimezone(UTC)


def problem(value: Any) -> str | None:
    """Why ``PERIODIC_TASKS`` is not valid (None if it is): names the entry and the fix."""
    for name, entry in value.items():
        where = f"entry {name!r}"
        if not isinstance(name, str) or not name or len(name) > NAME_MAX_LENGTH:
            return f"{where}: a schedule name must be a non-empty string of at most {NAME_MAX_LENGTH} characters"
        if not isinstance(entry, Mapping):
            return f"{where} must be a dict with the keys {', '.join(REQUIRED)}"
        missing = [key for key in REQUIRED if key not in entry]
        if missing:
            return f"{where} lacks {', '.join(missing)} (a time zone is never implied: write e.g. 'timezone': 'UTC')"
        unknown = set(entry) - set(REQUIRED) - set(OPTIONAL)
        if unknown:
            return f"{where} has unknown keys {', '.join(sorted(map(str, unknown)))}; allowed: {', '.join(REQUIRED + OPTIONAL)}"
        cron = entry["cron"]
        if not isinstance(cron, str) or len(cron.split()) not in (5, 6):
            return f"{where}: cron {cron!r} must have 5 fields (minute hour day month weekday) or 6 (seconds first)"
        if not croniter.is_valid(cron, second_at_beginning=len(cron.split()) == 6):
            return f"{where}: cron {cron!r} is not a valid cron expression (e.g. '*/5 * * * *')"
        try:
            ZoneInfo(str(entry["timezone"]))
        except (ZoneInfoNotFoundError, ValueError):
            return f"{where}: timezone {entry['timezone']!r} is not an IANA time zone such as 'UTC' or 'Europe/Paris'"
        if not isinstance(entry["task"], str) or "." not in entry["task"]:
            return f"{where}: task {entry['task']!r} must be the dotted path of a @task function"
        try:
            task = import_string(entry["task"])
        except ImportError as exc:
            return f"{where}: task {entry['task']!r} cannot be imported ({exc})"
        if not isinstance(task, Task):
            return f"{where}: {entry['task']!r} is not a task: decorate it with @task"
        args, kwargs = entry.get("args", []), entry.get("kwargs", {})
        if not isinstance(args, list | tuple) or not isinstance(kwargs, Mapping):
            return f"{where}: args must be a list and kwargs a dict"
        try:
            json.dumps([args, kwargs])
        except (TypeError, ValueError) as exc:
            return f"{where}: args and kwargs must be JSON ({exc})"
    return None


def configured(value: Mapping[str, Any]) -> list[Schedule]:
    """The schedules of a (checked) ``PERIODIC_TASKS`` value."""
    return [
        Schedule(
            name=name,
            task=entry["task"],
            cron=entry["cron"],
            timezone=entry["timezone"],
            args=list(entry.get("args", [])),
            kwargs=dict(entry.get("kwargs", {})),
        )
        for name, entry in value.items()
    ]
