"""JSON round-trip checks for task arguments and return values.

Arguments and results are stored in PostgreSQL ``jsonb`` columns, so a value is accepted only if
it comes back equal after a JSON round trip (tuples become lists, as in Django's own
``normalize_json``). The errors name the offending path, e.g. ``kwargs['when']``.
"""

from __future__ import annotations

import json
import math
from typing import Any

JSON_SCALARS = (str, int, float, bool, type(None))


class NotJSONSerializable(TypeError):
    """A value that would not survive a JSON round trip; ``path`` says where it is."""

    def __init__(self, path: str, problem: str) -> None:
        super().__init__(f"{path} {problem}")
        self.path = path
        self.problem = problem


def check_json(value: Any, path: str) -> Any:
    """Return ``value`` normalized to JSON types, or raise :class:`NotJSONSerializable`."""
    if isinstance(value, str):
        if "\x00" in value:
            raise NotJSONSerializable(
                path, "contains a NUL character (\\x00), which PostgreSQL jsonb cannot store"
            )
        return value
    if value is None or isinstance(value, bool | int):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise NotJSONSerializable(path, f"is {value!r}, which JSON cannot represent")
        return value
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise NotJSONSerializable(
                    f"{path}[{key!r}]",
                    f"has a {type(key).__name__} key; JSON object keys must be strings",
                )
            if "\x00" in key:
                raise NotJSONSerializable(
                    f"{path}[{key!r}]",
                    "is a key containing a NUL character (\\x00), which PostgreSQL jsonb "
                    "cannot store",
                )
            out[key] = check_json(item, f"{path}[{key!r}]")
        return out
    if isinstance(value, list | tuple):
        return [check_json(item, f"{path}[{i}]") for i, item in enumerate(value)]
    raise NotJSONSerializable(
        path,
        f"is a {type(value).__module__}.{type(value).__qualname__}, which is not JSON "
        "serializable; pass str, int, float, bool, None, list or dict (for example an id or "
        "an ISO 8601 string instead of an object)",
    )


def dumps(value: Any) -> str:
    """Compact JSON text of an already checked value."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
