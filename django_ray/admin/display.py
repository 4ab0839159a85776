"""How the admin shows values: ISO timestamps, ages, durations, state badges, bounded JSON.

Pure formatting (no database access), shared by every admin page of django-ray so that a
timestamp or an age reads the same on the changelist, the detail page and the overview.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from django.contrib import admin
from django.utils.html import format_html
from django.utils.safestring import SafeString

from django_ray.durations import format_duration

#: Characters of a JSON value (arguments, result) shown inline before "show all".
VALUE_PREVIEW_CHARS = 2_000
#: Characters of the task id shown in the changelist (the whole id is in the hover title).
SHORT_ID_CHARS = 8

#: Badge colours per state: red needs a look, amber is in flight, green is done, grey is idle.
STATE_COLOURS = {
    "QUEUED": "#5b6770",
    "RUNNING": "#1f6fb2",
    "SUCCEEDED": "#2e7d32",
    "FAILED": "#c62828",
    "LOST": "#ad1457",
    "CANCELLING": "#ef6c00",
    "CANCELLED": "#757575",
}


def pre(text: str | None) -> str:
    """``text`` in a scrollable, wrapped ``<pre>`` (tracebacks, JSON); ``-`` when empty."""
    if not text:
        return "-"
    return format_html(
        '<pre style="white-space: pre-wrap; max-height: 30em; overflow: auto; '
        'font-size: 0.85em; margin: 0">{}</pre>',
        text,
    )


def iso(value: datetime | None) -> str:
    """``2026-01-01 12:00:00.123 UTC``: seconds and the zone matter when reading an incident."""
    if value is None:
        return "-"
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + " UTC"


def span(start: datetime | None, end: datetime | None) -> str:
    """The time from ``start`` to ``end``, ``-`` if either is unknown."""
    if start is None or end is None:
        return "-"
    seconds = (end - start).total_seconds()
    return f"{seconds:.3f} s" if seconds < 60 else f"{format_duration(seconds)} ({seconds:.0f} s)"


def timestamp_display(field: str, description: str) -> Callable[[Any, Any], str]:
    """An admin column showing the ``field`` timestamp in ISO form (``-`` when unset)."""

    @admin.display(description=description, ordering=field)
    def show(modeladmin: Any, obj: Any) -> str:
        return iso(getattr(obj, field))

    return show


def badge(state: str) -> SafeString:
    """A coloured state badge (colour plus the word, so it also reads without colour)."""
    return format_html(
        '<span class="django-ray-badge" data-state="{}" style="background: {}; color: #fff; '
        'padding: 1px 6px; border-radius: 8px; font-size: 0.85em; white-space: nowrap">{}</span>',
        state,
        STATE_COLOURS.get(state, "#5b6770"),
        state,
    )


def short(text: str | None, chars: int) -> SafeString | str:
    """``text`` cut to ``chars`` characters, the whole of it in the hover title."""
    if not text:
        return "-"
    shown = text if len(text) <= chars else text[: chars - 1] + "\u2026"
    return format_html('<span title="{}">{}</span>', text, shown)


def pretty_json(value: Any) -> str:
    """``value`` as indented JSON (non-ASCII kept readable)."""
    return json.dumps(value, indent=2, ensure_ascii=False, sort_keys=False, default=str)


def json_preview(value: Any, full_url: str) -> SafeString | str:
    """Indented JSON of ``value``, cut to :data:`VALUE_PREVIEW_CHARS` with a link to all of it:
    a large result must not turn the detail page into a 20,000-pixel blob."""
    if value is None:
        return "-"
    text = pretty_json(value)
    if len(text) <= VALUE_PREVIEW_CHARS:
        return pre(text)
    return format_html(
        '{}<p><a href="{}" class="django-ray-full-value">show all {} characters</a></p>',
        pre(text[:VALUE_PREVIEW_CHARS] + "\n\u2026"),
        full_url,
        f"{len(text):,}",
    )
