"""Human durations for command-line options: ``90s``, ``15m``, ``2h``, ``7d``, ``1h30m``, ``2w``."""

from __future__ import annotations

import re
from datetime import timedelta

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800}
_PART = re.compile(r"(\d+(?:\.\d+)?)([smhdw])")


def parse_duration(text: str) -> timedelta:
    """Parse ``text`` into a positive :class:`~datetime.timedelta`; ValueError says the format."""
    cleaned = text.strip().lower().replace(" ", "")
    parts = _PART.findall(cleaned)
    if not cleaned or "".join(n + u for n, u in parts) != cleaned:
        raise ValueError(
            f"{text!r} is not a duration: write a number and a unit (s, m, h, d, w), "
            "e.g. 90s, 15m, 2h, 7d or 1h30m."
        )
    seconds = sum(float(n) * _UNITS[u] for n, u in parts)
    if seconds <= 0:
        raise ValueError(f"{text!r} must be longer than zero.")
    return timedelta(seconds=seconds)


def format_duration(seconds: float | None) -> str:
    """``3725`` -> ``1h2m5s``; None -> ``-``."""
    if seconds is None:
        return "-"
    seconds = int(max(seconds, 0))
    if seconds < 60:
        return f"{seconds}s"
    out = []
    for unit, size in (("d", 86_400), ("h", 3600), ("m", 60), ("s", 1)):
        value, seconds = divmod(seconds, size)
        if value:
            out.append(f"{value}{unit}")
    return "".join(out[:2])
