"""Pure pieces of the admin console: lease endings, bounded JSON, facet-aware filter labels."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from django.contrib.admin.options import ShowFacets
from django.test import RequestFactory

from django_ray.admin import display, filters
from django_ray.models import TaskWorkerLease

NOW = datetime(2026, 12, 7, 3, 0, tzinfo=UTC)
LATER, EARLIER = NOW + timedelta(seconds=5), NOW - timedelta(seconds=5)


@pytest.mark.parametrize(
    ("is_active", "expires_at", "stopped_at", "ending"),
    [
        (True, LATER, None, "alive"),
        (True, EARLIER, None, "expired"),  # stopped heartbeating, not yet reaped
        (False, LATER, EARLIER, "stopped"),  # released before its lease ran out
        (False, EARLIER, NOW, "expired"),  # reaped by recovery after it expired
        (False, EARLIER, None, "expired"),
    ],
)
def test_lease_endings(is_active: bool, expires_at: datetime, stopped_at, ending: str) -> None:  # type: ignore[no-untyped-def]
    assert TaskWorkerLease.ending_of(is_active, expires_at, stopped_at, NOW) == ending


def test_json_preview_is_bounded_and_links_to_the_whole() -> None:
    small = display.json_preview({"a": 1}, "/full/")
    assert "/full/" not in small and "&quot;a&quot;: 1" in small
    big = display.json_preview({"blob": "x" * 10_000}, "/full/")
    assert 'href="/full/"' in big and f"show all {10_016:,} characters" in big
    assert big.count("x") < display.VALUE_PREVIEW_CHARS + 10
    assert display.json_preview(None, "/full/") == "-"


def test_iso_keeps_seconds_and_zone() -> None:
    assert display.iso(NOW + timedelta(milliseconds=5)) == "2026-12-07 03:00:00.005 UTC"


@pytest.mark.parametrize(
    ("show_facets", "query", "shown"),
    [
        (ShowFacets.ALLOW, {}, False),
        (ShowFacets.ALLOW, {"_facets": "1"}, True),
        (ShowFacets.ALWAYS, {}, True),
        (ShowFacets.NEVER, {"_facets": "1"}, False),
    ],
)
def test_own_counts_only_without_django_facets(show_facets, query, shown) -> None:  # type: ignore[no-untyped-def]
    class Admin:
        pass

    model_admin = Admin()
    model_admin.show_facets = show_facets  # type: ignore[attr-defined]
    request = RequestFactory().get("/", query)
    assert filters.facets_shown(request, model_admin) is shown
