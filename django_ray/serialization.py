"""JSON round-trip checks for task arguments and return values.

Arguments and results are stored in PostgreSQL ``jsonb`` columns, so a value is accepted only if
it comes back equal after a JSON round trip (tuples become lists, as in Django's own
``normalize_json``). The errors name the offending path, e.g. ``kwargs['when']``.

What PostgreSQL cannot store is refused here too: NUL characters and lone UTF-16 surrogates in
strings or keys. Nesting deeper than :data:`MAX_DEPTH` is refused before Python's recursion limit
could be hit (a ``RecursionError`` escaping a check would take down whatever process ran it).
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

JSON_SCALARS = (str, int, float, bool, type(None))
# Deepest nesting of lists/dicts accepted: far more than real data needs, far below Python's
# recursion limit (1000), which the check and ``json`` itself would otherwise hit.
MAX_DEPTH = 100
_SURROGATE = re.compile("[\ud800-\udfff]")


class NotJSONSerializable(TypeError):
    """A value that would not survive a JSON round trip; ``path`` says where it is."""

    def __init__(self, path: str, problem: str) -> None:
        super().__init__(f"{path} {problem}")
        self.path = path
        self.problem = problem


def _string_problem(text: str) -> str | None:
    """Why PostgreSQL cannot store ``text``, or None."""
    if "\x00" in text:
        return "contains a NUL character (\\x00), which PostgreSQL jsonb cannot store"
    match = _SURROGATE.search(text)
    if match:
        return (
            f"contains a lone surrogate ({match.group()!r} at position {match.start()}), which "
            "is not valid Unicode and PostgreSQL cannot store; decode bytes with "
            "errors='replace' or send binary data as base64"
        )
    return None


def check_json(value: Any, path: str, depth: int = 0) -> Any:
    """Return ``value`` normalized to JSON types, or raise :class:`NotJSONSerializable`."""
    if isinstance(value, str):
        problem = _string_problem(value)
        if problem:
            raise NotJSONSerializable(path, problem)
        return value
    if value is None or isinstance(value, bool | int):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise NotJSONSerializable(path, f"is {value!r}, which JSON cannot represent")
        return value
    if isinstance(value, dict | list | tuple) and depth >= MAX_DEPTH:
        raise NotJSONSerializable(
            path,
            f"nests lists/dicts deeper than {MAX_DEPTH} levels (or contains itself); "
            "flatten the value or pass an id to look the data up",
        )
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise NotJSONSerializable(
                    f"{path}[{key!r}]",
                    f"has a {type(key).__name__} key; JSON object keys must be strings",
                )
            problem = _string_problem(key)
            if problem:
                raise NotJSONSerializable(f"{path}[{key!r}]", f"is a key that {problem}")
            out[key] = check_json(item, f"{path}[{key!r}]", depth + 1)
        return out
    if isinstance(value, list | tuple):
        return [check_json(item, f"{path}[{i}]", depth + 1) for i, item in enumerate(value)]
    raise NotJSONSerializable(
        path,
        f"is a {type(value).__module__}.{type(value).__qualname__}, which is not JSON "
        "serializable; pass str, int, float, bool, None, list or dict (for example an id or "
        "an ISO 8601 string instead of an object)",
    )


def dumps(value: Any) -> str:
    """Compact JSON text of an already checked value."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
