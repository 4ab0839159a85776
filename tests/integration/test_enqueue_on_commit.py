"""``enqueue_on_commit`` on real PostgreSQL: a row only after commit, none after a rollback (also
of a savepoint), the returned id is the row's, bad arguments raise at the call, unique keys hold,
and a real worker runs what was committed."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from asgiref.sync import async_to_sync, sync_to_async
from django.db import connections, transaction
from django.tasks.base import TaskResultStatus
from django.tasks.exceptions import InvalidTask, TaskResultDoesNotExist
from django.tasks.signals import task_enqueued

from django_ray.errors import InvalidTaskArguments, TaskNotEnqueuedYet
from django_ray.models import RayTaskExecution
from tests import tasks
from tests.models import TaskProbe

pytestmark = pytest.mark.django_db(transaction=True)


class Boom(Exception):
    pass


def _ids() -> list[str]:
    return list(RayTaskExecution.objects.order_by("id").values_list("task_id", flat=True))


def test_commit_writes_the_row_with_the_returned_id_and_a_worker_runs_it(start_worker) -> None:  # type: ignore[no-untyped-def]
    announced: list[str] = []

    def receiver(sender: Any, task_result: Any, **kwargs: Any) -> None:
        announced.append(task_result.id)

    task_enqueued.connect(receiver, weak=False, dispatch_uid="test-on-commit")
    try:
        with transaction.atomic():
            TaskProbe.objects.create(name="order-saved", pid=0)  # the caller's own write
            task_id = tasks.record.enqueue_on_commit("committed")
            assert isinstance(task_id, str) and task_id
            in_transaction = RayTaskExecution.objects.count()
            with pytest.raises(TaskNotEnqueuedYet, match=r"enqueued on commit.*has not yet"):
                tasks.record.get_result(task_id)
            assert announced == []
    finally:
        task_enqueued.disconnect(dispatch_uid="test-on-commit")
    assert in_transaction == 0
    assert _ids() == [task_id] and announced == [task_id]
    print(f"enqueue_on_commit: rows before commit={in_transaction}, after commit={len(_ids())}")

    worker = start_worker("--sync", "--idle-exit", "1")
    assert worker.wait(120) == 0, worker.log()
    result = tasks.record.get_result(task_id)
    assert result.status == TaskResultStatus.SUCCESSFUL and result.return_value == "committed"
    assert TaskProbe.objects.filter(name="committed").count() == 1


def test_rollback_enqueues_nothing_and_the_id_names_no_result() -> None:
    with pytest.raises(Boom), transaction.atomic():
        task_id = tasks.record.enqueue_on_commit("rolled-back")
        raise Boom
    assert _ids() == []
    with pytest.raises(TaskResultDoesNotExist) as info:
        tasks.record.get_result(task_id)
    assert not isinstance(info.value, TaskNotEnqueuedYet)
    print("enqueue_on_commit: rows after rollback=0")


def test_a_rolled_back_savepoint_drops_only_its_own_enqueue() -> None:
    with transaction.atomic():
        kept = tasks.record.enqueue_on_commit("outer")
        with pytest.raises(Boom), transaction.atomic():
            dropped = tasks.record.enqueue_on_commit("inner")
            raise Boom
        with pytest.raises(TaskNotEnqueuedYet):
            tasks.record.get_result(kept)
        with pytest.raises(TaskResultDoesNotExist) as info:
            tasks.record.get_result(dropped)
        assert not isinstance(info.value, TaskNotEnqueuedYet)
    assert _ids() == [kept]
    print("enqueue_on_commit: nested savepoint rolled back: rows=1 (the outer call's)")


def test_using_options_apply_and_autocommit_enqueues_at_once() -> None:
    with transaction.atomic():
        task_id = tasks.record.using(priority=5, queue_name="other").enqueue_on_commit("opts")
    row = RayTaskExecution.objects.get(task_id=task_id)
    assert (row.priority, row.queue_name, row.args) == (5, "other", ["opts"])
    # No atomic block: it behaves like enqueue() and the row is there when the call returns.
    now_id = tasks.record.enqueue_on_commit("autocommit")
    assert RayTaskExecution.objects.filter(task_id=now_id).exists()


def test_bad_calls_raise_at_the_call_not_at_commit() -> None:
    with transaction.atomic():
        with pytest.raises(InvalidTaskArguments, match=r"Cannot enqueue tests\.tasks\.echo"):
            tasks.echo.enqueue_on_commit(object())
        with pytest.raises(InvalidTask, match="unique_key must be a non-empty string"):
            tasks.record.using(unique_key=" ").enqueue_on_commit("x")
        good = tasks.record.enqueue_on_commit("still-fine")  # the transaction is unharmed
    assert _ids() == [good]


def test_unique_key_holds_at_commit() -> None:
    unique = tasks.record.using(unique_key="report-7")
    with transaction.atomic():
        first = unique.enqueue_on_commit("a")
        second = unique.enqueue_on_commit("b")
    assert first != second
    assert _ids() == [first]  # the second found the first holding the key: nothing written
    with pytest.raises(TaskResultDoesNotExist):
        tasks.record.get_result(second)
    # In autocommit the call returns the holder's id, as enqueue() returns the holder.
    assert unique.enqueue_on_commit("c") == first
    assert _ids() == [first]


def test_async_twin_joins_the_sync_threads_transaction() -> None:
    with transaction.atomic():
        task_id = async_to_sync(tasks.record.aenqueue_on_commit)("async-in-transaction")
        assert not RayTaskExecution.objects.filter(task_id=task_id).exists()
    assert _ids() == [task_id]

    async def autocommit() -> str:
        try:
            return await tasks.record.aenqueue_on_commit("async-autocommit")
        finally:
            await sync_to_async(connections.close_all)()

    assert asyncio.run(autocommit()) in _ids()
