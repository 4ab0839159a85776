"""Tasks whose outcomes are hard to store (``tests/integration/test_bad_outcomes.py``).

Each writes a ``TaskProbe`` mark when its body runs, so a test can count executions.
"""

from __future__ import annotations

import os
import time
from typing import Any

from django.tasks import task

from tests.tasks import PermanentError

# An exception class whose path is longer than the error_class_path column (255 characters).
LongNamed = type("L" + "o" * 300 + "ngError", (PermanentError,), {"__module__": __name__})


def _mark(name: str) -> None:
    from tests.models import TaskProbe

    TaskProbe.objects.create(name=name, pid=os.getpid(), data={})


def _nested(depth: int) -> Any:
    value: Any = "bottom"
    for _ in range(depth):
        value = [value]
    return value


@task
def raise_text(marker: str, kind: str) -> None:
    """Raise a denylisted (final) error whose message is bad in the way ``kind`` says."""
    _mark(marker)
    text = {
        "nul": "before\x00after",
        "surrogate": "lone \ud800 surrogate",
        "megabytes": "m" * (3 * 1024 * 1024),
    }[kind]
    raise PermanentError(text)


@task
def raise_long_class(marker: str) -> None:
    _mark(marker)
    raise LongNamed("a class path longer than the column")


@task
def return_bad(marker: str, kind: str) -> Any:
    """Return a value that is bad in the way ``kind`` says."""
    _mark(marker)
    return {
        "surrogate": {"text": "lone \udc80 surrogate"},
        "surrogate-key": {"k\ud83d": 1},
        "nul": "nul \x00 inside",
        "deep": _nested(300),
        "object": object(),
        "set": {1, 2},
    }[kind]


@task
def return_value(marker: str, value: Any = None) -> Any:
    _mark(marker)
    return value if value is not None else marker


@task
def sleep_then(marker: str, seconds: float) -> None:
    _mark(marker)
    time.sleep(seconds)
