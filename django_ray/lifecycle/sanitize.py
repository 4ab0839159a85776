"""Outcome text made storable: the boundary between what a task produced and a PostgreSQL row.

A task's exception can carry anything: NUL bytes (PostgreSQL ``text`` refuses them), lone
surrogates (not encodable as UTF-8), megabytes of message, a class path longer than the
column. :func:`clean_outcome` turns those into text that always stores, and says so in the text;
:func:`result_problem` names what makes a return value unstorable (the row then ends FAILED
with that reason instead of poisoning the batch it is recorded with).
"""

from __future__ import annotations

import re
from dataclasses import replace

from django_ray.execution import MAX_ERROR_MESSAGE
from django_ray.outcomes import Outcome
from django_ray.serialization import MAX_DEPTH

#: Longest error message kept (characters); the rest is cut with a note saying how much. The
#: process running the body cuts there already; this holds for every other source of outcomes.
MAX_MESSAGE_CHARS = MAX_ERROR_MESSAGE
#: Longest traceback kept (characters); its end (where the error was raised) is kept.
MAX_TRACEBACK_CHARS = 256 * 1024
#: ``error_class_path`` column size (models.RayTaskExecution / TaskAttempt).
MAX_CLASS_PATH_CHARS = 255
#: Deepest nesting of a return value kept: the one limit of serialization (PostgreSQL's jsonb
#: parser is recursive, and a much deeper value fails there with "stack depth limit exceeded").
MAX_RESULT_DEPTH = MAX_DEPTH

_NUL_ESCAPE = re.compile(r"(?<!\\)(?:\\\\)*\\u0000")


def clean_text(text: str | None, limit: int, keep_end: bool = False) -> str | None:
    """``text`` without NUL bytes or lone surrogates (shown escaped), at most ``limit`` chars."""
    if text is None:
        return None
    if "\x00" in text:
        text = text.replace("\x00", "\\x00")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    if len(text) > limit:
        cut = len(text) - limit
        note = f"[... {cut} characters cut: django-ray keeps {limit} ...]"
        text = note + text[-limit:] if keep_end else text[:limit] + note
    return text


def clean_outcome(outcome: Outcome) -> Outcome:
    """``outcome`` with its error text storable (the return value is checked separately)."""
    message = clean_text(outcome.error_message, MAX_MESSAGE_CHARS)
    path = clean_text(outcome.error_class_path, 10 * MAX_CLASS_PATH_CHARS)
    if path is not None and len(path) > MAX_CLASS_PATH_CHARS:
        message = f"(exception class path {path!r} is longer than {MAX_CLASS_PATH_CHARS} characters)\n{message or ''}"
        path = path[: MAX_CLASS_PATH_CHARS - 3] + "..."
    traceback = clean_text(outcome.error_traceback, MAX_TRACEBACK_CHARS, keep_end=True)
    if (message, path, traceback) == (
        outcome.error_message,
        outcome.error_class_path,
        outcome.error_traceback,
    ):
        return outcome
    return replace(outcome, error_message=message, error_class_path=path, error_traceback=traceback)


def result_problem(result_json: str) -> str | None:
    """Why PostgreSQL could not store the return value ``result_json``, or None if it can."""
    try:
        result_json.encode("utf-8")
    except UnicodeEncodeError as exc:
        return (
            f"contains a lone surrogate ({result_json[exc.start]!r} at character {exc.start}), "
            "which is not valid UTF-8 and cannot be stored"
        )
    if "\x00" in result_json or ("\\u0000" in result_json and _NUL_ESCAPE.search(result_json)):
        return "contains a NUL character (\\x00), which PostgreSQL jsonb cannot store"
    if result_json.count("[") + result_json.count("{") > MAX_RESULT_DEPTH:
        depth = deepest = 0
        in_string = escaped = False
        for char in result_json:
            if in_string:
                escaped, in_string = (not escaped and char == "\\"), (escaped or char != '"')
            elif char == '"':
                in_string = True
            elif char in "[{":
                depth += 1
                deepest = max(deepest, depth)
            elif char in "]}":
                depth -= 1
        if deepest > MAX_RESULT_DEPTH:
            return f"nests {deepest} levels deep; django-ray stores at most {MAX_RESULT_DEPTH}"
    return None
