"""Small pure helpers: percentiles, ratios, formatting."""

from __future__ import annotations

import math


def percentile(values: list[float], pct: float) -> float | None:
    """Nearest-rank percentile (``pct`` in 0..100); ``None`` for no values."""
    if not values:
        return None
    if not 0 <= pct <= 100:
        raise ValueError(f"percentile must be within 0..100, got {pct}")
    ordered = sorted(values)
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[rank - 1]


def ratio(ours: float | None, peer: float | None) -> float | None:
    """``ours / peer``, or ``None`` when either side is missing or the peer is zero."""
    if ours is None or peer is None or peer == 0:
        return None
    return ours / peer


def fmt(value: float | None, digits: int = 0, suffix: str = "") -> str:
    """Human formatting with thousands separators; an em dash for missing values."""
    if value is None:
        return "—"
    if digits == 0:
        return f"{value:,.0f}{suffix}"
    return f"{value:,.{digits}f}{suffix}"


def fmt_ratio(value: float | None) -> str:
    if value is None:
        return "—"
    if value >= 10:
        return f"{value:,.0f}x"
    return f"{value:.2f}x"
