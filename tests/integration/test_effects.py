"""Exactly-once effects through a real ``--cluster`` worker (bodies run in Ray worker processes)
on PostgreSQL: an effect applied before a failure is not applied again by the retry or by an
operator's re-run, an effect whose own body fails rolls back with its record, bad keys fail
their task clearly; the admin, ``django_ray_status`` and ``django_ray_prune`` see the records."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from io import StringIO

import pytest
from django.contrib.auth.models import User
from django.core.management import call_command
from django.test import Client
from django.utils import timezone

from django_ray.effects import effect_once, idempotency_key
from django_ray.errors import InvalidEffectKey, OutsideTask
from django_ray.lifecycle import operator
from django_ray.models import KEY_MAX_LENGTH, RayTaskExecution, TaskEffect, TaskState
from django_ray.status import collect_status, render_text
from tests import tasks
from tests.conftest import WorkerProcess, wait_until, worker_env
from tests.models import TaskProbe

pytestmark = pytest.mark.django_db
TERMINAL = (TaskState.SUCCEEDED, TaskState.FAILED, TaskState.CANCELLED)


@dataclass
class Scenario:
    ids: dict[str, str] = field(default_factory=dict)
    log: str = ""


def _clean() -> None:
    RayTaskExecution.objects.all().delete()  # attempts and effects go with their rows
    TaskProbe.objects.all().delete()


def _all_finished() -> bool:
    return not RayTaskExecution.objects.exclude(state__in=TERMINAL).exists()


@pytest.fixture(scope="module")
def scenario(django_db_setup, django_db_blocker, ray_head, tmp_path_factory) -> Iterator[Scenario]:  # type: ignore[no-untyped-def]
    with django_db_blocker.unblock():
        _clean()
        s = Scenario()
        s.ids["retried"] = tasks.effect_then_fail.enqueue("fx-retried").id
        s.ids["body_fails"] = tasks.effect_body_fails.enqueue("fx-body-fails").id
        once = tasks.effect_then_fail.using(max_attempts=1)
        s.ids["rerun"] = once.enqueue("fx-rerun").id
        bad = tasks.effect_with_key.using(max_attempts=1)
        s.ids["empty_key"] = bad.enqueue("").id
        s.ids["long_key"] = bad.enqueue("k" * (KEY_MAX_LENGTH + 1)).id
        worker = WorkerProcess(
            ["--cluster", ray_head.address, "--concurrency", "2"],
            worker_env(),
            tmp_path_factory.mktemp("effects") / "worker.log",
        )
        try:
            wait_until(_all_finished, 180, explain=worker.log)
            # The run-once task failed after its effect: an operator re-runs it (same task).
            operator.retry_tasks([s.ids["rerun"]])
            wait_until(
                lambda: (
                    RayTaskExecution.objects.get(task_id=s.ids["rerun"]).state
                    == TaskState.SUCCEEDED
                ),
                120,
                explain=worker.log,
            )
            assert worker.proc.poll() is None, worker.log()  # bad keys never crash it
            worker.stop(60)
        finally:
            if worker.proc.poll() is None:
                worker.kill()
            s.log = worker.log()
        yield s
        _clean()


def _row(task_id: str) -> RayTaskExecution:
    return RayTaskExecution.objects.get(task_id=task_id)


def _effects(task_id: str) -> list[tuple[str, int]]:
    return list(
        TaskEffect.objects.filter(execution_id=task_id).values_list("key", "attempt_number")
    )


def test_effect_before_a_failure_is_applied_once_over_the_retry(scenario: Scenario) -> None:
    task_id = scenario.ids["retried"]
    row = _row(task_id)
    assert (row.state, row.attempt_number, row.result_data) == (TaskState.SUCCEEDED, 2, 2)
    assert _effects(task_id) == [("ledger", 1)]
    applied = TaskProbe.objects.filter(name="fx-retried")
    assert [p.data["attempt"] for p in applied] == [1]
    attempts = TaskProbe.objects.filter(name="fx-retried:attempt").order_by("id")
    assert [p.data["attempt"] for p in attempts] == [1, 2]
    # The idempotency key for an external API is the same in every attempt.
    assert {p.data["key"] for p in attempts} == {f"django-ray:{task_id}:ledger"}
    print(
        f"effects: attempts={row.attempt_number} effect rows={len(_effects(task_id))} "
        f"ledger rows={applied.count()}"
    )


def test_an_operator_rerun_skips_the_effect_already_done(scenario: Scenario) -> None:
    task_id = scenario.ids["rerun"]
    row = _row(task_id)
    assert (row.state, row.attempt_number) == (TaskState.SUCCEEDED, 2)
    assert _effects(task_id) == [("ledger", 1)]
    assert TaskProbe.objects.filter(name="fx-rerun").count() == 1
    assert TaskProbe.objects.filter(name="fx-rerun:attempt").count() == 2


def test_an_effect_whose_own_body_fails_rolls_back_with_its_record(scenario: Scenario) -> None:
    task_id = scenario.ids["body_fails"]
    row = _row(task_id)
    assert (row.state, row.attempt_number) == (TaskState.SUCCEEDED, 2)
    assert _effects(task_id) == [("ledger", 2)]
    assert [p.data["attempt"] for p in TaskProbe.objects.filter(name="fx-body-fails")] == [2]


@pytest.mark.parametrize(
    ("name", "message"),
    [("empty_key", "must be a non-empty string"), ("long_key", f"more than {KEY_MAX_LENGTH}")],
)
def test_a_bad_key_fails_its_task_with_a_clear_error(
    scenario: Scenario, name: str, message: str
) -> None:
    row = _row(scenario.ids[name])
    assert row.state == TaskState.FAILED
    assert row.error_class_path == "django_ray.errors.InvalidEffectKey"
    assert message in (row.error_message or "")
    assert _effects(row.task_id) == [] and not TaskProbe.objects.filter(name="never").exists()


def test_outside_a_task_body_the_helpers_refuse() -> None:
    outside = pytest.raises(OutsideTask, match="only inside the body of a django-ray task")
    with outside, effect_once("charge"):
        pass
    with pytest.raises(OutsideTask):
        idempotency_key("charge")
    with pytest.raises(InvalidEffectKey, match="non-empty string"), effect_once(None):  # type: ignore[arg-type]
        pass


def test_admin_status_and_prune_see_the_records(scenario: Scenario) -> None:
    task_id = scenario.ids["retried"]
    client = Client()
    client.force_login(User.objects.create_superuser("fx-root", "fx@example.com", "pw"))
    row = _row(task_id)
    page = client.get(f"/admin/django_ray/raytaskexecution/{row.pk}/change/")
    assert page.status_code == 200
    assert "ledger" in page.content.decode() and "Task effects" in page.content.decode()

    status = collect_status(probe=False)
    assert status["effects"] == {"total": 3, "last_hour": 3, "tasks": 3}
    assert "recorded: 3" in render_text(status)

    # Pruning a finished task removes its effect records with it.
    RayTaskExecution.objects.filter(task_id=task_id).update(
        finished_at=timezone.now() - timedelta(days=40)
    )
    out = StringIO()
    call_command("django_ray_prune", "--older-than", "30d", "--dry-run", "--json", stdout=out)
    assert json.loads(out.getvalue())["effects"] == 1
    out = StringIO()
    call_command("django_ray_prune", "--older-than", "30d", "--execute", "--json", stdout=out)
    assert json.loads(out.getvalue())["effects"] == 1
    assert not TaskEffect.objects.filter(execution_id=task_id).exists()
    assert TaskEffect.objects.count() == 2
