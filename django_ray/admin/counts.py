"""Counts the admin shows, cheap at hundreds of thousands of rows (docs/performance.md).

- :func:`grouped_counts`: one ``GROUP BY`` for every value of a column, instead of Django's
  per-choice ``COUNT(...) FILTER (WHERE pk IN (subquery))`` of a :class:`SimpleListFilter`.
- :func:`recent_rows` and :func:`top_values`: a list filter's choices from the latest rows,
  not from a scan of the whole table.
- :class:`GroupedFacetsMixin`: "Show counts" of every list filter of a page from one
  ``GROUP BY GROUPING SETS`` query per distinct filtered row set: exact up to
  :data:`FACET_EXACT_LIMIT` rows, of the latest :data:`RECENT_ROWS` rows above it, and
  :class:`FacetTitlesChangeList` says so in those filters' titles.
- :class:`BoundedCountPaginator`: the changelist's result count is exact up to
  :data:`EXACT_COUNT_LIMIT` rows and the planner's estimate above, so no page load counts
  200,000 rows.
"""

from __future__ import annotations

import json
from typing import Any, NamedTuple

from django.contrib.admin import ChoicesFieldListFilter
from django.contrib.admin.views.main import ChangeList
from django.core.exceptions import EmptyResultSet
from django.core.paginator import Paginator
from django.db import connections
from django.db.models import Count, QuerySet
from django.http import HttpRequest
from django.utils.functional import cached_property

#: Changelist counts are exact up to this many rows; above it they are the planner's estimate.
EXACT_COUNT_LIMIT = 10_000
#: List filters offer the values found among this many latest rows.
RECENT_ROWS = 10_000
#: "Show counts" counts a filter's row set exactly up to this many rows (planner's estimate);
#: above it, the latest :data:`RECENT_ROWS` of them, and the filter's title says so.
FACET_EXACT_LIMIT = 20_000


def grouped_counts(queryset: QuerySet[Any], field: str) -> dict[Any, int]:
    """``{value: rows}`` of ``field`` over ``queryset``, in one ``GROUP BY`` query."""
    rows = queryset.order_by().values_list(field).annotate(n=Count("pk"))
    return {value: n for value, n in rows}


def recent_rows(queryset: QuerySet[Any]) -> QuerySet[Any]:
    """The latest :data:`RECENT_ROWS` rows of ``queryset`` (by primary key), as a primary key
    range: one index probe finds where the range starts."""
    cutoff = queryset.order_by("-pk").values_list("pk", flat=True)[RECENT_ROWS - 1 : RECENT_ROWS]
    return queryset.filter(pk__gte=cutoff[0]) if cutoff else queryset


def top_values(queryset: QuerySet[Any], field: str, limit: int) -> list[Any]:
    """The ``limit`` most frequent non-null values of ``field`` in ``queryset`` (one GROUP BY).

    List filters call it on :func:`recent_rows`: a bounded range of the primary key index,
    where the top values of the whole table would be a scan of every row on every page load.
    """
    rows = (
        queryset.exclude(**{f"{field}__isnull": True})
        .values_list(field)
        .annotate(n=Count("pk"))
        .order_by("-n", field)[:limit]
    )
    return [value for value, _n in rows]


class GroupedFacetsMixin:
    """A list filter's "Show counts" in one ``GROUP BY`` of :attr:`facet_field`.

    Put it before ``SimpleListFilter`` (or a ``FieldListFilter``) in the bases and set
    ``facet_field`` to the column the filter's choices are values of. Each choice's count is
    then the rows of the changelist (with every other filter applied) holding that value, or of
    the latest :data:`RECENT_ROWS` of them when there are more than :data:`FACET_EXACT_LIMIT`
    (:meth:`facets` tells which).
    """

    facet_field: str = ""

    def facets(self, changelist: Any) -> Facets:
        """Every grouped filter's counts over this filter's row set (the page's rows without
        this filter's own parameters), computed once per distinct row set and request."""
        # The row set differs from the page's only by this filter's own parameters, when given.
        excluded = tuple(
            (name, tuple(changelist.filter_params[name]))
            for name in sorted(self.expected_parameters())  # type: ignore[attr-defined]
            if name in changelist.filter_params
        )
        cache = changelist.__dict__.setdefault("_django_ray_facets", {})
        if excluded not in cache:
            filtered = changelist.get_queryset(
                self.request,  # type: ignore[attr-defined]
                exclude_parameters=self.expected_parameters(),  # type: ignore[attr-defined]
            )
            cache[excluded] = _changelist_facets(changelist, filtered)
        return cache[excluded]

    def get_facet_queryset(self, changelist: Any) -> dict[str, int]:
        counts = self.facets(changelist).counts.get(self.facet_field, {})
        return {
            self.facet_key(i, value): counts.get(value, 0)
            for i, value in enumerate(self.facet_values())
        }

    def facet_values(self) -> list[Any]:
        """The column value behind each choice, in choice order."""
        return [value for value, _title in self.lookup_choices]  # type: ignore[attr-defined]

    def facet_key(self, index: int, value: Any) -> str:
        """The key Django's ``choices()`` reads the count of choice ``index`` from."""
        return f"{index}__c"


class Facets(NamedTuple):
    """``{field: {value: rows}}`` of one row set, and whether only its latest rows were
    counted (``sampled``: more than :data:`FACET_EXACT_LIMIT` rows)."""

    counts: dict[str, dict[Any, int]]
    sampled: bool


def _changelist_facets(changelist: Any, filtered: QuerySet[Any]) -> Facets:
    """Counts of every grouped filter's field over ``filtered``: unfiltered, all filters share
    one query. Above :data:`FACET_EXACT_LIMIT` rows (the planner's estimate: no row read) the
    latest :data:`RECENT_ROWS` are counted, a primary key range instead of a scan of the table."""
    fields = [
        spec.facet_field for spec in changelist.filter_specs if isinstance(spec, GroupedFacetsMixin)
    ]
    sampled = estimated_count(filtered) > FACET_EXACT_LIMIT
    rows = recent_rows(filtered) if sampled else filtered
    try:
        return Facets(multi_grouped_counts(rows, list(dict.fromkeys(fields))), sampled)
    except EmptyResultSet:
        return Facets({}, sampled)


class FacetTitlesChangeList(ChangeList):
    """With "Show counts" on, a filter whose counts are of the latest rows only says so in its
    title ("queue (counts: latest 10,000 rows)"); the counts are computed here, before the
    sidebar renders the titles, and the sidebar's choices read them from the same cache."""

    def get_results(self, request: HttpRequest) -> None:
        super().get_results(request)
        if not self.add_facets:
            return
        specs = self.filter_specs  # each facets() rebuilds changelist.filter_specs: keep ours
        for spec in specs:
            if isinstance(spec, GroupedFacetsMixin) and spec.facets(self).sampled:
                spec.title = f"{spec.title} (counts: latest {RECENT_ROWS:,} rows)"
        self.filter_specs = specs


def multi_grouped_counts(queryset: QuerySet[Any], fields: list[str]) -> dict[str, dict[Any, int]]:
    """``{field: {value: rows}}`` for each of ``fields`` over ``queryset``: on PostgreSQL in
    one ``GROUP BY GROUPING SETS`` query (one scan), elsewhere one ``GROUP BY`` per field."""
    connection = connections[queryset.db]
    if connection.vendor != "postgresql" or len(fields) < 2:
        return {field: grouped_counts(queryset, field) for field in fields}
    inner, params = queryset.order_by().values(*fields).query.sql_with_params()
    qn = connection.ops.quote_name
    cols = [f"s.{qn(queryset.model._meta.get_field(f).column)}" for f in fields]
    sql = (
        f"SELECT {', '.join(cols)}, {', '.join(f'GROUPING({c})' for c in cols)}, COUNT(*) "
        f"FROM ({inner}) s GROUP BY GROUPING SETS ({', '.join(f'({c})' for c in cols)})"
    )
    counts: dict[str, dict[Any, int]] = {field: {} for field in fields}
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        for row in cursor.fetchall():
            values, grouping, n = row[: len(fields)], row[len(fields) : -1], row[-1]
            for field, value, grouped in zip(fields, values, grouping, strict=True):
                if grouped == 0:  # GROUPING() is 0 for the column this row is grouped by
                    counts[field][value] = n
    return counts


class GroupedChoicesFieldListFilter(GroupedFacetsMixin, ChoicesFieldListFilter):
    """A choices field's filter (``("state", GroupedChoicesFieldListFilter)`` in
    ``list_filter``) whose "Show counts" is one ``GROUP BY`` of the field."""

    @property
    def facet_field(self) -> str:  # type: ignore[override]
        return self.field_path

    def facet_values(self) -> list[Any]:
        return [value for value, _title in self.field.flatchoices]


class BoundedCountPaginator(Paginator):
    """Exact counts up to :data:`EXACT_COUNT_LIMIT` rows, the planner's estimate above (the
    estimate decides which: above the limit no row is counted).

    Counting every row of a large changelist costs a full scan on each page load; an operator
    paging through 170,000 SUCCEEDED rows needs the order of magnitude, not the last digit.
    """

    @cached_property
    def count(self) -> int:
        queryset = self.object_list
        if not isinstance(queryset, QuerySet):
            return len(queryset)
        # The estimate first (one EXPLAIN): counting even 10,000 rows of a filter without an
        # index reads the table until that many match.
        estimate = estimated_count(queryset)
        if estimate > EXACT_COUNT_LIMIT:
            return estimate
        bounded = queryset.order_by()[: EXACT_COUNT_LIMIT + 1].count()
        return bounded if bounded <= EXACT_COUNT_LIMIT else max(estimate, bounded)


def estimated_count(queryset: QuerySet[Any]) -> int:
    """The planner's row estimate for ``queryset`` (PostgreSQL), else an exact ``COUNT``."""
    connection = connections[queryset.db]
    if connection.vendor != "postgresql":
        return queryset.count()
    try:
        sql, params = queryset.order_by().values("pk").query.sql_with_params()
    except EmptyResultSet:
        return 0
    with connection.cursor() as cursor:
        cursor.execute("EXPLAIN (FORMAT JSON) " + sql, params)
        plan = cursor.fetchone()[0]
    if isinstance(plan, str):
        plan = json.loads(plan)
    return int(plan[0]["Plan"]["Plan Rows"])
