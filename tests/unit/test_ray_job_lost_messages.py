"""A Ray Job runner's lost outcomes keep their whole message for recording to cut, with a note.

The runner used to cut at 4,000 characters itself, which dropped the note that recording's
``sanitize.clean_outcome`` adds when it cuts (how much was left out)."""

from __future__ import annotations

import time

from django_ray.lifecycle import sanitize
from django_ray.runners.ray_job import RayJobRunner, _Job
from tests.support.claimed import claimed_task


def _job(**fields: object) -> _Job:
    values: dict[str, object] = {
        "task": claimed_task(7),
        "submission_id": "django-ray-7-1",
        "submitted": True,
        "since": time.monotonic(),
        "deadline": None,
    }
    values.update(fields)
    return _Job(**values)  # type: ignore[arg-type]


def test_a_long_lost_message_is_cut_once_by_recording_with_a_note() -> None:
    runner = RayJobRunner(1, address="http://127.0.0.1:1")  # never contacted here
    detail = "driver log line\n" * 600  # 9,600 characters
    outcome = runner._ended(_job(), f"Ray Job django-ray-7-1 ended FAILED: {detail}")
    assert outcome.error_class_path == "django_ray.RayJobLost"
    assert outcome.error_message is not None
    assert outcome.error_message.endswith(detail)  # whole: the runner cuts nothing
    recorded = sanitize.clean_outcome(outcome).error_message
    assert recorded is not None
    assert recorded.startswith("Ray Job django-ray-7-1 ended FAILED: driver log line")
    cut = len(outcome.error_message) - sanitize.MAX_MESSAGE_CHARS
    assert recorded.endswith(
        f"[... {cut} characters cut: django-ray keeps {sanitize.MAX_MESSAGE_CHARS} ...]"
    )


def test_a_short_lost_message_is_recorded_as_it_is() -> None:
    runner = RayJobRunner(1, address="http://127.0.0.1:1")
    outcome = runner._ended(_job(), "Ray Job django-ray-7-1 ended STOPPED: stopped by hand")
    assert sanitize.clean_outcome(outcome).error_message == (
        "Ray Job django-ray-7-1 ended STOPPED: stopped by hand"
    )
