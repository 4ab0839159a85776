"""The admin's date hierarchy without a scan: distinct years, months or days by index probes.

Django's ``date_hierarchy`` asks ``queryset.datetimes(field, kind)``, a ``SELECT DISTINCT
date_trunc(...)`` over every row of the changelist (1.3 s at 200,000 rows). Here each distinct
period costs one ``MIN(field) WHERE field >= <start of the next period>`` (an index probe on
``field``: migration 0009 indexes ``created_at``), so a month's days take at most 31 probes
whatever the row count. Filters, searches and drill-downs of the changelist still apply.
"""

from __future__ import annotations

import functools
from datetime import datetime, timedelta, tzinfo
from typing import Any

from django.db.models import Min, QuerySet
from django.utils import timezone

#: Most periods one hierarchy level lists (a guard; a month has 31 days, a year 12 months).
MAX_PERIODS = 400


def _start(value: datetime, kind: str, tz: tzinfo) -> datetime:
    local = value.astimezone(tz)
    if kind == "year":
        return datetime(local.year, 1, 1, tzinfo=tz)
    if kind == "month":
        return datetime(local.year, local.month, 1, tzinfo=tz)
    return datetime(local.year, local.month, local.day, tzinfo=tz)


def _next(start: datetime, kind: str, tz: tzinfo) -> datetime:
    if kind == "year":
        return datetime(start.year + 1, 1, 1, tzinfo=tz)
    if kind == "month":
        year, month = divmod(start.month, 12)
        return datetime(start.year + year, month + 1, 1, tzinfo=tz)
    day = start.date() + timedelta(days=1)
    return datetime(day.year, day.month, day.day, tzinfo=tz)


def distinct_periods(
    queryset: QuerySet[Any], field: str, kind: str, tz: tzinfo | None = None
) -> list[datetime]:
    """Start of each ``kind`` (year, month, day) holding a row of ``queryset``, ascending."""
    tz = tz or timezone.get_current_timezone()
    queryset = queryset.order_by()
    periods: list[datetime] = []
    lower: datetime | None = None
    while len(periods) < MAX_PERIODS:
        rows = queryset if lower is None else queryset.filter(**{f"{field}__gte": lower})
        first = rows.aggregate(first=Min(field))["first"]
        if first is None:
            break
        periods.append(_start(first, kind, tz))
        lower = _next(periods[-1], kind, tz)
    return periods


class _ProbedDatetimes:
    """QuerySet mixin: ``datetimes()`` of :attr:`probed_fields` by :func:`distinct_periods`."""

    probed_fields: frozenset[str] = frozenset()

    def datetimes(
        self, field_name: str, kind: str, order: str = "ASC", tzinfo: tzinfo | None = None
    ) -> Any:
        if field_name in self.probed_fields and kind in ("year", "month", "day"):
            periods = distinct_periods(self, field_name, kind, tzinfo)  # type: ignore[arg-type]
            return periods if order == "ASC" else periods[::-1]
        return super().datetimes(field_name, kind, order, tzinfo)  # type: ignore[misc]


@functools.cache
def _probed_class(base: type, fields: frozenset[str]) -> type:
    return type(f"Probed{base.__name__}", (_ProbedDatetimes, base), {"probed_fields": fields})


def with_probed_dates(queryset: QuerySet[Any], *fields: str) -> QuerySet[Any]:
    """``queryset`` (and every queryset chained from it) with index-probed ``datetimes()``."""
    clone = queryset.all()
    clone.__class__ = _probed_class(type(queryset), frozenset(fields))
    return clone
