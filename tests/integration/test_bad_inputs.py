"""Bad inputs on the enqueue side, through the public API and a real worker (issue 11).

Each case ends one of two ways: ``enqueue()`` refuses it with an error naming the problem and the
fix (and writes nothing), or its one row ends FAILED with a reason, while the worker stays up,
keeps claiming and runs no task twice. The table of these cases is ``docs/bad-inputs.md``
(section *Enqueue side*); keep both in step.

One case is of the executing side instead: a Ray node that cannot load the project. Its row ends
LOST (completion unknown, retried), and every attempt names the cause and the fix.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from django.tasks import task_backends
from django.tasks.exceptions import InvalidTask
from django.test import override_settings

from django_ray.backends import RayTaskBackend
from django_ray.errors import ArgumentsTooLarge, InvalidTaskArguments, TaskNotRunnable
from django_ray.models import RayTaskExecution, TaskAttempt, TaskState
from django_ray.serialization import MAX_DEPTH
from tests import outside_tasks, tasks
from tests.conftest import wait_until

pytestmark = pytest.mark.django_db(transaction=True)

LIMIT = 1_048_576  # MAX_ARGS_SIZE_BYTES default


def _nested(depth: int) -> Any:
    value: Any = []
    for _ in range(depth):
        value = [value]
    return value


def _self_containing() -> dict[str, Any]:
    value: dict[str, Any] = {}
    value["me"] = value
    return value


# (case id, the enqueue call, error class, words the message must hold: problem and fix)
ENQUEUE_CASES: list[tuple[str, Callable[[], Any], type[Exception], tuple[str, ...]]] = [
    (
        "args over MAX_ARGS_SIZE_BYTES",
        lambda: tasks.echo.enqueue("x" * (LIMIT + 1)),
        ArgumentsTooLarge,
        ("MAX_ARGS_SIZE_BYTES", "Pass an id or a storage reference"),
    ),
    (
        "args and kwargs together over the limit",
        lambda: tasks.echo.enqueue("x" * (LIMIT // 2), y="y" * (LIMIT // 2)),
        ArgumentsTooLarge,
        ("MAX_ARGS_SIZE_BYTES", "raise the limit"),
    ),
    (
        "nesting deeper than the limit",
        lambda: tasks.echo.enqueue(_nested(MAX_DEPTH + 5)),
        InvalidTaskArguments,
        (f"deeper than {MAX_DEPTH} levels", "flatten the value"),
    ),
    (
        "nesting far deeper than Python's recursion limit",
        lambda: tasks.echo.enqueue(_nested(50_000)),
        InvalidTaskArguments,
        (f"deeper than {MAX_DEPTH} levels",),
    ),
    (
        "a value that contains itself",
        lambda: tasks.echo.enqueue(_self_containing()),
        InvalidTaskArguments,
        ("contains itself", "pass an id"),
    ),
    (
        "NUL in a string",
        lambda: tasks.echo.enqueue("a\x00b"),
        InvalidTaskArguments,
        ("args[0]", "NUL character", "cannot store"),
    ),
    (
        "NUL in a key",
        lambda: tasks.echo.enqueue(data={"k\x00": 1}),
        InvalidTaskArguments,
        ("kwargs['data']", "NUL character"),
    ),
    (
        "lone surrogate in a string",
        lambda: tasks.echo.enqueue("bad \udc80 bytes"),
        InvalidTaskArguments,
        ("args[0]", "lone surrogate", "base64"),
    ),
    (
        "lone surrogate in a key",
        lambda: tasks.echo.enqueue(data={"\ud800": 1}),
        InvalidTaskArguments,
        ("lone surrogate", "errors='replace'"),
    ),
    (
        "non-JSON argument (a set)",
        lambda: tasks.echo.enqueue({1, 2}),
        InvalidTaskArguments,
        ("args[0] is a builtins.set", "pass str, int, float, bool, None, list or dict"),
    ),
    (
        "non-JSON argument (an object)",
        lambda: tasks.echo.enqueue(when=object()),
        InvalidTaskArguments,
        ("kwargs['when'] is a builtins.object",),
    ),
    (
        "NaN",
        lambda: tasks.echo.enqueue(float("nan")),
        InvalidTaskArguments,
        ("nan", "JSON cannot represent"),
    ),
    (
        "non-string dict key",
        lambda: tasks.echo.enqueue({1: "one"}),
        InvalidTaskArguments,
        ("keys must be strings",),
    ),
    (
        "unknown callable path",
        lambda: tasks.vanished_task.enqueue(),
        TaskNotRunnable,
        ("tests.tasks._renamed", "cannot be imported", "Check the dotted path"),
    ),
    (
        "a callable that is not a task",
        lambda: tasks.unbound_task.enqueue(),
        TaskNotRunnable,
        ("tests.tasks.not_a_task", "not a Task", "decorate the function with @django.tasks.task"),
    ),
    (
        "enqueue_many with one bad call",
        lambda: task_backends["default"].enqueue_many(tasks.echo, [((1,), {}), (({1},), {})]),
        InvalidTaskArguments,
        ("args[0] is a builtins.set",),
    ),
]


@pytest.mark.parametrize(
    ("call", "error", "words"),
    [case[1:] for case in ENQUEUE_CASES],
    ids=[case[0] for case in ENQUEUE_CASES],
)
def test_enqueue_refuses_bad_input_clearly_and_writes_nothing(
    call: Callable[[], Any], error: type[Exception], words: tuple[str, ...]
) -> None:
    with pytest.raises(error) as info:
        call()
    assert isinstance(info.value, InvalidTask)  # one family of errors for callers to catch
    for word in words:
        assert word in str(info.value), (word, str(info.value))
    assert not RayTaskExecution.objects.exists()


def test_non_json_arguments_are_also_a_type_error_as_djangos_docs_say() -> None:
    with pytest.raises(TypeError):
        tasks.echo.enqueue({1, 2})


def test_a_module_outside_task_modules_is_refused_at_enqueue() -> None:
    with override_settings(DJANGO_RAY={"TASK_MODULES": ["tests.tasks"]}):
        tasks.add.enqueue(1, 2)  # inside the allow-list: accepted
        with pytest.raises(TaskNotRunnable) as info:
            outside_tasks.outside.enqueue(1)
    assert "tests.outside_tasks.outside" in str(info.value)
    assert "DJANGO_RAY['TASK_MODULES']" in str(info.value) and "tests.tasks" in str(info.value)
    assert RayTaskExecution.objects.count() == 1


def test_queues_given_as_a_string_fail_the_system_check() -> None:
    backend = RayTaskBackend("bad", {"QUEUES": "emails", "OPTIONS": {}})
    [error] = backend.check()
    assert error.id == "django_ray.E023" and "must be a list of queue names" in error.msg
    assert "'QUEUES': ['emails']" in error.hint


def _insert_row(callable_path: str) -> str:
    """A row written by other code (an older release, a script): the worker meets it as is."""
    task_id = uuid.uuid4().hex
    RayTaskExecution.objects.create(task_id=task_id, callable_path=callable_path, args=[1])
    return task_id


def _row(task_id: str) -> RayTaskExecution:
    return RayTaskExecution.objects.get(task_id=task_id)


def _assert_ran_once_each() -> None:
    for row in RayTaskExecution.objects.all():
        attempts = TaskAttempt.objects.filter(execution=row).count()
        assert row.attempt_number == 1 and attempts == 1, (row.callable_path, row.state, attempts)


def test_bad_rows_fail_alone_and_the_ray_worker_keeps_claiming(start_worker, ray_head) -> None:  # type: ignore[no-untyped-def]
    before = [tasks.add.enqueue(i, 1) for i in range(4)]
    deep = tasks.deep_return.enqueue(5_000)  # RecursionError territory without the depth limit
    looped = tasks.self_containing_return.enqueue()
    unknown = _insert_row("tests.tasks.does_not_exist")
    not_a_task = _insert_row("tests.tasks.not_a_task")
    worker = start_worker("--cluster", ray_head.address, "--concurrency", "2")
    bad = {
        deep.id: "deeper than 100 levels",
        looped.id: "contains itself",
        unknown: "cannot be imported",
        not_a_task: "not a Task",
    }
    wait_until(
        lambda: (
            all(_row(t).state == TaskState.FAILED for t in bad)
            and all(_row(r.id).state == TaskState.SUCCEEDED for r in before)
        ),
        180,
        explain=worker.log,
    )
    for task_id, words in bad.items():
        row = _row(task_id)
        assert words in (row.error_message or ""), (words, row.error_message)
    assert _row(deep.id).error_class_path == "django_ray.serialization.NotJSONSerializable"
    # The worker stays up and keeps claiming.
    after = [tasks.add.enqueue(i, 2) for i in range(4)]
    wait_until(
        lambda: all(_row(r.id).state == TaskState.SUCCEEDED for r in after), 120, explain=worker.log
    )
    assert worker.proc.poll() is None, worker.log()
    assert not RayTaskExecution.objects.filter(state=TaskState.LOST).exists()
    _assert_ran_once_each()
    assert worker.stop() == 0, worker.log()


def test_a_row_outside_task_modules_fails_at_execution(start_worker) -> None:  # type: ignore[no-untyped-def]
    allowed = tasks.add.enqueue(1, 1)
    forbidden = outside_tasks.outside.enqueue(7)  # enqueued where TASK_MODULES is not set
    worker = start_worker(
        "--sync",
        env={"DJANGO_RAY_TEST_SETTINGS": json.dumps({"TASK_MODULES": ["tests.tasks"]})},
    )
    wait_until(
        lambda: (
            _row(forbidden.id).state == TaskState.FAILED
            and _row(allowed.id).state == TaskState.SUCCEEDED
        ),
        60,
        explain=worker.log,
    )
    row = _row(forbidden.id)
    assert "outside DJANGO_RAY['TASK_MODULES']" in row.error_message
    assert row.error_class_path == "django_ray.errors.TaskNotRunnable"
    later = tasks.add.enqueue(2, 2)
    wait_until(lambda: _row(later.id).state == TaskState.SUCCEEDED, 60, explain=worker.log)
    assert worker.proc.poll() is None
    _assert_ran_once_each()
    assert worker.stop() == 0, worker.log()


def test_a_ray_node_that_cannot_load_django_fails_tasks_with_the_cause_and_the_fix(
    start_worker,  # type: ignore[no-untyped-def]
) -> None:
    # As on a Ray node without the project: the worker loads its settings, Ray's workers cannot.
    env = {"DJANGO_RAY_TEST_REFUSE_RAY_WORKERS": "1"}
    result = tasks.add.enqueue(1, 2)
    worker = start_worker("--local", "--concurrency", "1", env=env)
    # Lost attempts (completion unknown) are retried; the last one leaves the row LOST.
    wait_until(lambda: _row(result.id).state == TaskState.LOST, 180, explain=worker.log)
    row = _row(result.id)
    message = row.error_message or ""
    assert "The Ray worker could not run this task: Django could not be set up" in message, message
    assert "ImportError: DJANGO_RAY_TEST_REFUSE_RAY_WORKERS: no project on this Ray node" in message
    assert "DJANGO_SETTINGS_MODULE='tests.settings'" in message, message
    assert "Every Ray node must import the project" in message, message
    assert "restart Ray on that node" in message, message
    assert "worker or node died" not in message, message
    attempts = TaskAttempt.objects.filter(execution=row).order_by("attempt_number")
    assert [a.attempt_number for a in attempts] == [1, 2, 3]
    assert all("Django could not be set up" in (a.error_message or "") for a in attempts)
    assert worker.proc.poll() is None, worker.log()
    assert worker.stop() == 0, worker.log()
