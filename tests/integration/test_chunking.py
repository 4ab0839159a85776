"""Chunking never makes a long task hold short ones behind it, or re-run them when stopped."""

import pytest

from django_ray.lifecycle import operator
from django_ray.models import RayTaskExecution, TaskState
from tests import tasks
from tests.conftest import wait_until
from tests.models import TaskProbe

pytestmark = pytest.mark.django_db(transaction=True)


def test_cancelling_a_long_task_does_not_rerun_or_delay_its_neighbours(start_worker, ray_head):
    before = tasks.record.enqueue("chunk-a")
    long = tasks.sleep_for.enqueue(60, "chunk-long")
    after = tasks.record.enqueue("chunk-c")
    worker = start_worker("--cluster", ray_head.address, "--concurrency", "2")

    def neighbours_done() -> bool:
        return (
            RayTaskExecution.objects.filter(
                task_id__in=[before.id, after.id], state=TaskState.SUCCEEDED
            ).count()
            == 2
        )

    # Both short tasks finish while the long one is still running: not queued behind it.
    wait_until(neighbours_done, 90, explain=worker.log)
    assert RayTaskExecution.objects.get(task_id=long.id).state == TaskState.RUNNING
    operator.request_cancel(long.id)
    wait_until(
        lambda: RayTaskExecution.objects.get(task_id=long.id).state == TaskState.CANCELLED,
        60,
        explain=worker.log,
    )
    assert worker.stop() == 0
    assert TaskProbe.objects.filter(name="chunk-a").count() == 1
    assert TaskProbe.objects.filter(name="chunk-c").count() == 1
    assert not TaskProbe.objects.filter(name="chunk-long").exists()
