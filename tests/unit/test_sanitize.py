"""Outcome text made storable, and return values PostgreSQL cannot store named (pure logic)."""

from __future__ import annotations

import json

from django_ray.lifecycle import sanitize
from django_ray.outcomes import Outcome, OutcomeKind


def _failed(**fields: str) -> Outcome:
    return Outcome(1, 1, OutcomeKind.FAILED, **fields)  # type: ignore[arg-type]


def test_nul_and_lone_surrogates_are_shown_escaped() -> None:
    out = sanitize.clean_outcome(_failed(error_message="a\x00b \ud800", error_traceback="\x00"))
    assert out.error_message == "a\\x00b \\ud800"
    assert out.error_traceback == "\\x00"
    out.error_message.encode("utf-8")


def test_long_text_is_cut_with_a_note_keeping_the_traceback_end() -> None:
    out = sanitize.clean_outcome(
        _failed(error_message="m" * 10**6, error_traceback="head" + "t" * 10**6 + "END")
    )
    assert len(out.error_message) < sanitize.MAX_MESSAGE_CHARS + 100
    assert "characters cut" in out.error_message
    assert out.error_traceback.endswith("END") and "head" not in out.error_traceback


def test_an_over_long_class_path_fits_the_column_and_is_kept_in_the_message() -> None:
    path = "pkg." + "C" * 400
    out = sanitize.clean_outcome(_failed(error_class_path=path, error_message="boom"))
    assert len(out.error_class_path) == sanitize.MAX_CLASS_PATH_CHARS
    assert path in out.error_message and out.error_message.endswith("boom")


def test_clean_outcomes_are_returned_unchanged() -> None:
    outcome = _failed(error_class_path="x.E", error_message="fine", error_traceback="tb")
    assert sanitize.clean_outcome(outcome) is outcome


def test_result_problems_are_named() -> None:
    assert sanitize.result_problem('"ok"') is None
    assert "lone surrogate" in sanitize.result_problem('"\ud800"')
    assert "NUL" in sanitize.result_problem(json.dumps("a\x00b"))
    assert sanitize.result_problem(json.dumps("a\\u0000b")) is None  # an escaped backslash
    deep = "[" * 300 + "]" * 300
    assert sanitize.result_problem(deep) == "nests 300 levels deep; django-ray stores at most 100"
    wide = json.dumps([[1]] * 1000)  # many brackets, shallow
    assert sanitize.result_problem(wide) is None
    brackets_in_strings = json.dumps(["[" * 500])
    assert sanitize.result_problem(brackets_in_strings) is None
