"""Every backend capability end to end: ``task.enqueue()`` -> a ``--cluster`` worker -> Ray.

One worker process runs one batch of varied tasks (module-scoped, to pay Ray start-up once);
each test then checks one capability against the rows, the attempt history, the probes the
tasks wrote from inside Ray, and ``get_result``/``aget_result``.
"""

from __future__ import annotations

import asyncio
import datetime
import itertools
import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
from asgiref.sync import sync_to_async
from django.db import connections
from django.tasks.base import TaskResult, TaskResultStatus
from django.tasks.exceptions import TaskResultDoesNotExist
from django.utils import timezone

from django_ray.lifecycle import operator
from django_ray.models import RayTaskExecution, TaskAttempt, TaskState, TaskWorkerLease
from tests import tasks
from tests.conftest import WorkerProcess, wait_until, worker_env
from tests.models import TaskProbe

pytestmark = pytest.mark.django_db

WORKER_ID = "e2e-worker"
BACKOFF = 0.3  # RETRY_BACKOFF_SECONDS of this worker
TERMINAL = (TaskState.SUCCEEDED, TaskState.FAILED, TaskState.CANCELLED)
BOGUS_PATHS = ("tests.tasks.does_not_exist", "no_such_module.task", "tests.tasks.not_a_task")


@dataclass
class Scenario:
    results: dict[str, TaskResult] = field(default_factory=dict)
    bogus: dict[str, str] = field(default_factory=dict)  # callable_path -> task_id
    run_after: datetime.datetime | None = None
    worker_pid: int = 0
    exit_code: int | None = None
    log: str = ""


def _clean() -> None:
    TaskAttempt.objects.all().delete()
    RayTaskExecution.objects.all().delete()
    TaskWorkerLease.objects.all().delete()
    TaskProbe.objects.all().delete()


async def _aenqueue() -> TaskResult:
    try:
        return await tasks.add.aenqueue(40, 2)
    finally:
        await sync_to_async(connections.close_all)()


@pytest.fixture(scope="module")
def scenario(django_db_setup, django_db_blocker, ray_head, tmp_path_factory) -> Iterator[Scenario]:  # type: ignore[no-untyped-def]
    with django_db_blocker.unblock():
        _clean()
        s = Scenario()
        r = s.results
        r["add"] = tasks.add.enqueue(2, 3)
        r["echo"] = tasks.echo.using(queue_name="slow").enqueue(1, "x", k={"n": [1, 2]})
        r["async"] = tasks.async_add.enqueue(20, 22)
        r["aenqueue"] = asyncio.run(_aenqueue())
        r["flaky"] = tasks.flaky.enqueue(succeed_on=3)
        r["fail_always"] = tasks.fail_always.enqueue("boom")
        r["permanent"] = tasks.fail_permanent.enqueue()
        r["subclass"] = tasks.fail_subclass_permanent.enqueue()
        r["object"] = tasks.returns_object.enqueue()
        r["set"] = tasks.returns_set.enqueue()
        r["signalled"] = tasks.signalled.enqueue("ok")
        r["signalled_fail"] = tasks.signalled_fail.enqueue("bad")
        r["max2"] = tasks.fail_always.using(max_attempts=2).enqueue("twice")
        # A timeout runs a task alone in its Ray call: stopping it stops nothing else.
        r["timeout"] = tasks.sleep_for.using(timeout_seconds=1, max_attempts=1).enqueue(60)
        r["cancel"] = tasks.sleep_for.using(timeout_seconds=300).enqueue(60, "never")
        r["other_queue"] = tasks.record.using(queue_name="other").enqueue("other-queue")
        s.run_after = timezone.now() + datetime.timedelta(seconds=3)
        r["deferred"] = tasks.record.using(run_after=s.run_after).enqueue("deferred")
        for path in BOGUS_PATHS:
            row = RayTaskExecution.objects.create(
                task_id=uuid.uuid4().hex, callable_path=path, args=[1], kwargs={}
            )
            s.bogus[path] = row.task_id

        worker = WorkerProcess(
            [
                "--cluster",
                ray_head.address,
                "--queues",
                "default,slow",
                "--concurrency",
                "2",
                "--worker-id",
                WORKER_ID,
            ],
            worker_env(
                {
                    "DJANGO_RAY_TEST_SETTINGS": json.dumps(
                        {"RETRY_BACKOFF_SECONDS": BACKOFF, "RETRY_JITTER": 0.5}
                    )
                }
            ),
            tmp_path_factory.mktemp("e2e") / "worker.log",
        )
        s.worker_pid = worker.pid
        try:
            wait_until(
                lambda: _row(r["cancel"]).state == TaskState.RUNNING, 120, explain=worker.log
            )
            assert operator.request_cancel(r["cancel"].id) == TaskState.CANCELLING
            wait_until(
                lambda: (
                    not RayTaskExecution.objects.filter(queue_name__in=["default", "slow"])
                    .exclude(state__in=TERMINAL)
                    .exists()
                ),
                180,
                explain=worker.log,
            )
            # After bad callables, raising tasks and unstorable results, the worker still works.
            assert worker.proc.poll() is None, worker.log()
            r["after_bad"] = tasks.add.enqueue(1, 1)
            wait_until(
                lambda: (
                    RayTaskExecution.objects.get(task_id=r["after_bad"].id).state
                    == TaskState.SUCCEEDED
                ),
                60,
                explain=worker.log,
            )
            s.exit_code = worker.stop(60)
        finally:
            if worker.proc.poll() is None:
                worker.kill()
            s.log = worker.log()
        yield s
        _clean()


def _row(result: TaskResult) -> RayTaskExecution:
    return RayTaskExecution.objects.get(task_id=result.id)


def _fetched(s: Scenario, name: str) -> TaskResult:
    result = s.results[name]
    return result.task.get_result(result.id)


def test_worker_stopped_cleanly(scenario: Scenario) -> None:
    assert scenario.exit_code == 0, scenario.log
    lease = TaskWorkerLease.objects.get(worker_id=WORKER_ID)
    assert not lease.is_active and lease.stopped_at is not None
    assert lease.pid == scenario.worker_pid and lease.queue_name == "default,slow"


def test_plain_sync_task(scenario: Scenario) -> None:
    result = scenario.results["add"]
    result.refresh()
    assert result.status == TaskResultStatus.SUCCESSFUL
    assert result.return_value == 5
    assert result.attempts == 1 and result.worker_ids == [WORKER_ID] and result.errors == []
    assert result.started_at is not None and result.finished_at >= result.started_at
    row = _row(result)
    assert row.result_data == 5 and row.claimed_by_worker == WORKER_ID


def test_args_kwargs_and_queue(scenario: Scenario) -> None:
    result = _fetched(scenario, "echo")
    assert result.return_value == {"args": [1, "x"], "kwargs": {"k": {"n": [1, 2]}}}
    assert result.task.queue_name == "slow"


def test_async_task_function(scenario: Scenario) -> None:
    assert _fetched(scenario, "async").return_value == 42


def test_aenqueue_and_aget_result(scenario: Scenario) -> None:
    async def fetch() -> TaskResult:
        try:
            return await tasks.add.aget_result(scenario.results["aenqueue"].id)
        finally:
            await sync_to_async(connections.close_all)()

    result = asyncio.run(fetch())
    assert result.status == TaskResultStatus.SUCCESSFUL and result.return_value == 42


def test_unwatched_queue_is_left_alone(scenario: Scenario) -> None:
    row = _row(scenario.results["other_queue"])
    assert row.state == TaskState.QUEUED and row.attempt_number == 0
    assert not TaskProbe.objects.filter(name="other-queue").exists()


def test_run_after_defers_the_task(scenario: Scenario) -> None:
    result = _fetched(scenario, "deferred")
    assert result.return_value == "deferred"
    probe = TaskProbe.objects.get(name="deferred")
    assert scenario.run_after is not None
    assert result.started_at >= scenario.run_after
    assert probe.created_at >= scenario.run_after


def test_takes_context_sees_each_attempt_on_the_ray_side(scenario: Scenario) -> None:
    result = _fetched(scenario, "flaky")
    assert result.status == TaskResultStatus.SUCCESSFUL
    assert result.return_value == {"attempt": 3, "task_id": result.id}
    probes = list(TaskProbe.objects.filter(name="flaky").order_by("id"))
    assert [p.data["attempt"] for p in probes] == [1, 2, 3]
    assert [p.data["worker_ids"] for p in probes] == [[WORKER_ID] * n for n in (1, 2, 3)]
    # The bodies ran in Ray worker processes, not in the django_ray_worker process.
    assert all(p.pid != scenario.worker_pid for p in probes)


def test_result_after_retries(scenario: Scenario) -> None:
    result = _fetched(scenario, "flaky")
    assert result.attempts == 3 and result.worker_ids == [WORKER_ID] * 3
    assert [e.exception_class_path for e in result.errors] == ["tests.tasks.FlakyError"] * 2
    for n, error in enumerate(result.errors, start=1):
        assert error.traceback.startswith("Traceback (most recent call last):")
        assert f"FlakyError: attempt {n} fails" in error.traceback
        assert "in flaky" in error.traceback
        assert error.exception_class is tasks.FlakyError
    history = list(TaskAttempt.objects.filter(execution__task_id=result.id))
    assert [(a.attempt_number, a.state) for a in history] == [
        (1, TaskState.FAILED),
        (2, TaskState.FAILED),
        (3, TaskState.SUCCEEDED),
    ]
    row = _row(scenario.results["flaky"])
    assert row.error_message is None and row.error_class_path is None


def test_app_exception_is_retried_with_backoff_up_to_max_attempts(scenario: Scenario) -> None:
    result = _fetched(scenario, "fail_always")
    assert result.status == TaskResultStatus.FAILED
    with pytest.raises(ValueError, match="Task failed"):
        _ = result.return_value
    assert result.attempts == 3  # MAX_TASK_ATTEMPTS of the test settings
    assert [e.exception_class_path for e in result.errors] == ["builtins.ValueError"] * 3
    assert all("ValueError: boom" in e.traceback for e in result.errors)
    row = _row(scenario.results["fail_always"])
    assert row.state == TaskState.FAILED and row.attempt_number == 3
    assert row.error_class_path == "builtins.ValueError"
    assert row.error_message == "ValueError: boom"
    assert "raise ValueError(message)" in row.error_traceback
    history = list(TaskAttempt.objects.filter(execution=row))
    assert [a.state for a in history] == [TaskState.FAILED] * 3
    # Each retry waited at least its backoff: base * 2**(n-1) (jitter only adds).
    for n, (before, after) in enumerate(itertools.pairwise(history), start=1):
        assert after.started_at - before.finished_at >= datetime.timedelta(
            seconds=BACKOFF * 2 ** (n - 1)
        )
    assert f"failed, will retry task_id={row.task_id}" in scenario.log
    assert "next_run_after=+" in scenario.log
    assert f"failed permanently task_id={row.task_id}" in scenario.log


@pytest.mark.parametrize(
    ("name", "class_path"),
    [
        ("permanent", "tests.tasks.PermanentError"),
        ("subclass", "tests.tasks.VeryPermanentError"),  # subclass of a denylisted class
    ],
)
def test_denylisted_exceptions_are_not_retried(
    scenario: Scenario, name: str, class_path: str
) -> None:
    result = _fetched(scenario, name)
    assert result.status == TaskResultStatus.FAILED
    assert result.attempts == 1
    assert [e.exception_class_path for e in result.errors] == [class_path]
    assert _row(scenario.results[name]).error_message.endswith(
        "do not retry me" if name == "permanent" else "either"
    )


@pytest.mark.parametrize(
    ("name", "type_path"), [("object", "builtins.object"), ("set", "builtins.set")]
)
def test_unstorable_return_value_fails_readably(
    scenario: Scenario, name: str, type_path: str
) -> None:
    row = _row(scenario.results[name])
    assert row.state == TaskState.FAILED and row.attempt_number == 1  # retrying cannot help
    assert row.error_message.startswith(
        f"Task tests.tasks.returns_{name} returned a value that cannot be stored: "
        f"return value is a {type_path}, which is not JSON serializable"
    )
    assert row.result_data is None


@pytest.mark.parametrize("path", BOGUS_PATHS)
def test_unknown_callable_fails_readably(scenario: Scenario, path: str) -> None:
    row = RayTaskExecution.objects.get(task_id=scenario.bogus[path])
    assert row.state == TaskState.FAILED and row.attempt_number == 1
    assert row.error_message.startswith(f"Cannot load task {path!r}: ")
    if path == "tests.tasks.not_a_task":
        assert "not a Task; decorate the function with @django.tasks.task" in row.error_message
    else:
        assert "Check the dotted path" in row.error_message
    from django.tasks import task_backends

    backend = task_backends["default"]
    if path == "tests.tasks.not_a_task":
        # The function exists, so the result can be rebuilt: a failure with its error.
        result = backend.get_result(row.task_id)
        assert result.status == TaskResultStatus.FAILED
        assert [e.exception_class_path for e in result.errors] == [
            "django_ray.errors.TaskNotRunnable"
        ]
    else:
        # No such callable: the result cannot be rebuilt, and the error says why.
        with pytest.raises(TaskResultDoesNotExist, match="cannot be imported"):
            backend.get_result(row.task_id)


def test_worker_survived_bad_input(scenario: Scenario) -> None:
    assert _fetched(scenario, "after_bad").return_value == 2
    # Failures are reported as log lines, never as a crash of the worker's loop.
    assert "Traceback" not in scenario.log, scenario.log


def test_task_started_and_finished_signals_in_ray(scenario: Scenario) -> None:
    ok, bad = scenario.results["signalled"], scenario.results["signalled_fail"]
    probes = {p.name: p for p in TaskProbe.objects.filter(name__startswith="signal:")}
    assert set(probes) == {
        "signal:started:ok",
        "signal:finished:ok",
        "signal:started:bad",
        "signal:finished:bad",
    }
    assert probes["signal:started:ok"].data["status"] == TaskResultStatus.RUNNING
    assert probes["signal:finished:ok"].data["status"] == TaskResultStatus.SUCCESSFUL
    assert probes["signal:finished:bad"].data["status"] == TaskResultStatus.FAILED
    assert probes["signal:started:ok"].data["task_id"] == ok.id
    assert probes["signal:finished:bad"].data["task_id"] == bad.id
    assert {p.data["attempts"] for p in probes.values()} == {1}
    assert {p.data["sender"] for p in probes.values()} == {"django_ray.backends.RayTaskBackend"}
    assert all(p.pid != scenario.worker_pid for p in probes.values())
    assert probes["signal:started:ok"].id < probes["signal:finished:ok"].id


def test_operator_log_lines_carry_the_task_fields(scenario: Scenario) -> None:
    row = _row(scenario.results["add"])
    for event in ("claimed", "succeeded"):
        assert (
            f"{event} task_id={row.task_id} callable=tests.tasks.add queue=default "
            f"worker_id={WORKER_ID} attempt=1"
        ) in scenario.log


def test_per_task_max_attempts(scenario: Scenario) -> None:
    result = _fetched(scenario, "max2")
    assert result.status == TaskResultStatus.FAILED
    assert result.attempts == 2 and len(result.errors) == 2
    assert _row(scenario.results["max2"]).max_attempts == 2


def test_timeout_stops_the_task(scenario: Scenario) -> None:
    row = _row(scenario.results["timeout"])
    assert row.state == TaskState.FAILED and row.attempt_number == 1
    assert row.error_class_path == "django_ray.TaskTimedOut"
    assert row.error_message == "Task tests.tasks.sleep_for timed out after 1 seconds"
    assert row.finished_at - row.started_at < datetime.timedelta(seconds=60)


def test_cancel_of_a_running_task(scenario: Scenario) -> None:
    row = _row(scenario.results["cancel"])
    assert row.state == TaskState.CANCELLED and row.finished_at is not None, scenario.log
    assert not TaskProbe.objects.filter(name="never").exists()
    assert list(TaskAttempt.objects.filter(execution=row).values_list("state", flat=True)) == [
        TaskState.CANCELLED
    ]
    assert _fetched(scenario, "cancel").status == TaskResultStatus.FAILED
    assert f"cancelled task_id={row.task_id}" in scenario.log
