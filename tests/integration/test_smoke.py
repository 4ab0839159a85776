import pytest

from django_ray.models import RayTaskExecution, TaskState
from tests import tasks
from tests.conftest import wait_until

pytestmark = pytest.mark.django_db(transaction=True)


def test_sync_worker_runs_tasks(start_worker):
    results = [tasks.add.enqueue(i, 1) for i in range(5)]
    worker = start_worker("--sync", "--idle-exit", "1")
    assert worker.wait(60) == 0, worker.log()
    for r in results:
        r.refresh()
        assert r.return_value == r.args[0] + 1
    assert set(RayTaskExecution.objects.values_list("state", flat=True)) == {TaskState.SUCCEEDED}


def test_cluster_worker_runs_tasks(start_worker, ray_head):
    results = [tasks.add.enqueue(i, 2) for i in range(50)]
    worker = start_worker("--cluster", ray_head.address, "--concurrency", "2")
    wait_until(
        lambda: RayTaskExecution.objects.filter(state=TaskState.SUCCEEDED).count() == 50,
        60,
        explain=worker.log,
    )
    code = worker.stop()
    assert code == 0, (code, worker.log())
    for r in results:
        r.refresh()
        assert r.return_value == r.args[0] + 2
