"""``enqueue`` against real PostgreSQL: rows written, bad input refused, signals, results."""

from __future__ import annotations

import asyncio
import datetime
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.db import connections, transaction
from django.tasks import task_backends
from django.tasks.base import TaskResultStatus
from django.tasks.exceptions import InvalidTask, TaskResultDoesNotExist, TaskResultMismatch
from django.tasks.signals import task_enqueued
from django.utils import timezone

from django_ray.backends import RayTask
from django_ray.models import RayTaskExecution, TaskState
from tests import tasks

pytestmark = pytest.mark.django_db


def test_enqueue_writes_one_queued_row() -> None:
    before = timezone.now()
    result = tasks.echo.using(priority=7, queue_name="other").enqueue(1, "two", x={"y": [3]})
    row = RayTaskExecution.objects.get(task_id=result.id)
    assert row.state == TaskState.QUEUED
    assert row.callable_path == "tests.tasks.echo"
    assert row.queue_name == "other" and row.priority == 7
    assert row.args == [1, "two"] and row.kwargs == {"x": {"y": [3]}}
    assert row.attempt_number == 0 and row.worker_ids == []
    assert before <= row.created_at <= timezone.now()
    assert row.run_after == row.created_at  # due immediately
    assert result.status == TaskResultStatus.READY
    assert result.attempts == 0 and result.errors == [] and result.worker_ids == []
    with pytest.raises(ValueError, match="not finished"):
        _ = result.return_value


def test_run_after_is_stored() -> None:
    when = timezone.now() + datetime.timedelta(hours=1)
    result = tasks.add.using(run_after=when).enqueue(1, 2)
    assert RayTaskExecution.objects.get(task_id=result.id).run_after == when


def test_naive_run_after_is_refused() -> None:
    with pytest.raises(InvalidTask, match="aware datetime"):
        tasks.add.using(run_after=datetime.datetime(2030, 1, 1)).enqueue(1, 2)


@pytest.mark.parametrize("priority", [-100, 0, 100])
def test_priority_bounds_accepted(priority: int) -> None:
    result = tasks.add.using(priority=priority).enqueue(1, 1)
    assert RayTaskExecution.objects.get(task_id=result.id).priority == priority


@pytest.mark.parametrize("priority", [-101, 101])
def test_priority_out_of_range_is_refused(priority: int) -> None:
    with pytest.raises(InvalidTask):
        tasks.add.using(priority=priority).enqueue(1, 1)
    assert not RayTaskExecution.objects.exists()


def test_unknown_queue_is_refused() -> None:
    with pytest.raises(InvalidTask, match="Queue 'nope' is not valid"):
        tasks.add.using(queue_name="nope").enqueue(1, 1)
    assert not RayTaskExecution.objects.exists()


def _refused(*args: Any, **kwargs: Any) -> str:
    with pytest.raises(InvalidTask) as info:
        tasks.echo.enqueue(*args, **kwargs)
    assert not RayTaskExecution.objects.exists()
    return str(info.value)


def test_object_argument_is_refused_by_name() -> None:
    message = _refused(1, object())
    assert message.startswith(
        "Cannot enqueue tests.tasks.echo: argument args[1] is a builtins.object"
    )
    assert "ISO 8601 string instead of an object" in message


def test_set_argument_is_refused_by_name() -> None:
    assert "argument kwargs['tags'] is a builtins.set" in _refused(tags={"a", "b"})


def test_nan_argument_is_refused_by_name() -> None:
    assert "argument kwargs['ratio'] is nan, which JSON cannot represent" in _refused(
        ratio=float("nan")
    )


def test_non_string_dict_key_is_refused_by_name() -> None:
    message = _refused({"ok": {3: "three"}})
    assert "argument args[0]['ok'][3] has a int key; JSON object keys must be strings" in message


def test_nul_character_is_refused_by_name() -> None:
    assert "argument kwargs['name'] contains a NUL character" in _refused(name="a\x00b")
    assert "argument args[0]['k\\x00'] is a key that contains a NUL" in _refused({"k\x00": 1})


def test_datetime_argument_is_refused_by_name() -> None:
    assert "argument kwargs['when'] is a datetime.datetime" in _refused(when=timezone.now())


def test_enqueue_many_is_atomic_and_checks_every_call_first() -> None:
    backend = task_backends["default"]
    calls = [((i, i), {}) for i in range(5)] + [((1, {2}), {})]
    with pytest.raises(InvalidTask, match=r"argument args\[1\] is a builtins.set"):
        backend.enqueue_many(tasks.add, calls)
    assert not RayTaskExecution.objects.exists()
    results = backend.enqueue_many(tasks.add, [((i, i), {}) for i in range(5)])
    assert [r.args for r in results] == [[i, i] for i in range(5)]
    assert RayTaskExecution.objects.filter(state=TaskState.QUEUED).count() == 5


def test_enqueue_many_writes_the_rows_enqueue_writes_in_call_order() -> None:
    """The bulk statement binds every column but id and arguments once; rows match enqueue()'s."""
    task = tasks.echo.using(priority=3, timeout_seconds=9, max_attempts=2, lock_key="k")
    one = task.enqueue("x", n=-1)
    calls = [(("x",), {"n": i, "text": "é\u2028'\""}) for i in range(5)]
    many = task_backends["default"].enqueue_many(task, calls, batch_size=2)
    rows = list(RayTaskExecution.objects.order_by("id"))
    assert [r.task_id for r in rows] == [one.id, *(r.id for r in many)]  # FIFO across batches
    assert [r.kwargs for r in rows][1:] == [kwargs for _, kwargs in calls]
    assert all(r.args == ["x"] for r in rows)
    varying = {"id", "task_id", "kwargs", "created_at", "run_after"}

    def same(row: RayTaskExecution) -> dict[str, Any]:
        fields = RayTaskExecution._meta.concrete_fields
        return {f.attname: getattr(row, f.attname) for f in fields if f.attname not in varying}

    assert all(same(r) == same(rows[0]) for r in rows)
    assert rows[0].lock_key == "k" and rows[0].timeout_seconds == 9
    assert len({r.created_at for r in rows[1:]}) == 1 and rows[1].run_after == rows[1].created_at
    result = tasks.echo.get_result(many[2].id)
    assert result.kwargs == many[2].kwargs == calls[2][1]
    assert many[2].enqueued_at == rows[3].created_at and many[2].status == TaskResultStatus.READY


def test_task_enqueued_signal_carries_the_result() -> None:
    seen: list[Any] = []

    def receiver(sender: Any, task_result: Any, **kwargs: Any) -> None:
        seen.append((sender, task_result))

    task_enqueued.connect(receiver)
    try:
        result = tasks.add.enqueue(2, 3)
        many = task_backends["default"].enqueue_many(tasks.add, [((1, 1), {}), ((2, 2), {})])
    finally:
        task_enqueued.disconnect(receiver)
    assert [r.id for _, r in seen] == [result.id, *(r.id for r in many)]
    assert seen[0][1].args == [2, 3] and seen[0][1].status == TaskResultStatus.READY
    assert seen[0][0] is type(task_backends["default"])


def test_get_result_of_unknown_id() -> None:
    with pytest.raises(TaskResultDoesNotExist):
        tasks.add.get_result("no-such-task")
    with pytest.raises(TaskResultDoesNotExist):
        task_backends["default"].get_result("no-such-task")


def test_get_result_of_another_task_is_a_mismatch() -> None:
    result = tasks.add.enqueue(1, 2)
    with pytest.raises(TaskResultMismatch):
        tasks.echo.get_result(result.id)
    again = tasks.add.get_result(result.id)
    assert again.id == result.id and again.args == [1, 2]


def test_ray_task_options_are_stored_and_validated() -> None:
    timed = RayTask(func=tasks.add.func, backend="default", timeout_seconds=12.5, max_attempts=7)
    result = timed.enqueue(1, 2)
    row = RayTaskExecution.objects.get(task_id=result.id)
    assert row.timeout_seconds == 12.5 and row.max_attempts == 7
    with pytest.raises(InvalidTask, match="timeout_seconds must be a positive number"):
        timed.using(timeout_seconds=-1).enqueue(1, 2)
    with pytest.raises(InvalidTask, match="max_attempts must be a whole number"):
        RayTask(func=tasks.add.func, backend="default", max_attempts=0).enqueue(1, 2)


@pytest.mark.django_db(transaction=True)
def test_aenqueue_and_aget_result() -> None:
    async def scenario() -> tuple[Any, Any]:
        try:
            result = await tasks.add.aenqueue(20, 22)
            fetched = await tasks.add.aget_result(result.id)
        finally:
            # The thread sync_to_async used keeps its own connection: close it.
            await sync_to_async(connections.close_all)()
        return result, fetched

    result, fetched = asyncio.run(scenario())
    assert fetched.id == result.id and fetched.args == [20, 22]
    assert fetched.status == TaskResultStatus.READY
    assert RayTaskExecution.objects.get(task_id=result.id).state == TaskState.QUEUED

    async def bad() -> None:
        try:
            await tasks.add.aenqueue({1}, 2)
        finally:
            await sync_to_async(connections.close_all)()

    with pytest.raises(InvalidTask, match=r"args\[0\] is a builtins.set"):
        asyncio.run(bad())


def test_enqueue_is_part_of_the_callers_transaction() -> None:
    class Abort(Exception):
        pass

    with pytest.raises(Abort), transaction.atomic():
        tasks.add.enqueue(1, 2)
        assert RayTaskExecution.objects.count() == 1
        raise Abort
    assert not RayTaskExecution.objects.exists()


# -- Django Tasks API: what get_result() and errors look like (issue 11, hole 7) -------------


def test_a_task_enqueued_without_run_after_reads_back_without_one() -> None:
    result = tasks.add.enqueue(1, 2)
    fetched = task_backends["default"].get_result(result.id)
    assert fetched.task.run_after is None
    assert fetched.task == result.task


def test_a_requested_run_after_reads_back_unchanged() -> None:
    when = timezone.now() + datetime.timedelta(hours=1)
    result = tasks.add.using(run_after=when).enqueue(1, 2)
    assert task_backends["default"].get_result(result.id).task.run_after == when


def test_non_json_arguments_raise_an_error_that_is_also_a_type_error() -> None:
    with pytest.raises(TypeError, match=r"args\[0\] is a builtins.set"):
        tasks.echo.enqueue({1, 2})
    with pytest.raises(InvalidTask):
        tasks.echo.enqueue(x=object())


def test_a_digest_only_result_never_reads_as_none() -> None:
    from django_ray.errors import ResultNotKept

    result = tasks.big_result.enqueue(10)
    RayTaskExecution.objects.filter(task_id=result.id).update(
        state=TaskState.SUCCEEDED,
        result_data=None,
        result_reference="oversize://sha256/" + "0" * 64 + "?bytes=2000000",
    )
    fetched = task_backends["default"].get_result(result.id)
    assert fetched.status == TaskResultStatus.SUCCESSFUL
    with pytest.raises(ResultNotKept, match="MAX_RESULT_SIZE_BYTES") as info:
        _ = fetched.return_value
    assert isinstance(info.value, ValueError)
    assert "RESULT_STORAGE_BACKEND" in str(info.value)
    result.refresh()  # the enqueue-time result object reads the same way after a refresh
    with pytest.raises(ResultNotKept):
        _ = result.return_value


def test_queues_given_as_a_string_fail_the_system_check() -> None:
    from django_ray.backends import RayTaskBackend

    backend = RayTaskBackend("broken", {"QUEUES": "default", "OPTIONS": {}})
    errors = backend.check()
    assert [e.id for e in errors] == ["django_ray.E023"]
    assert "must be a list of queue names" in errors[0].msg
    assert "['default']" in errors[0].hint
    assert RayTaskBackend("ok", {"QUEUES": ["a", "b"], "OPTIONS": {}}).check() == []
    assert RayTaskBackend("unset", {"OPTIONS": {}}).check() == []
