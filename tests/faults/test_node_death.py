"""A Ray worker node that dies without closing its connections (host crash, power cut).

Ray's GCS marks such a node dead once its health checks fail, but never tells the owner of a
task that ran there: the task's result would never come back and its row would be heartbeated
RUNNING forever. The Ray Core runner's node check must send that attempt through the retry
path (LOST -> QUEUED) and the task must then succeed elsewhere.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from django_ray.models import RayTaskExecution, TaskAttempt, TaskState
from tests import tasks
from tests.conftest import wait_until
from tests.faults.conftest import (
    freeze_node_and_recover,
    report,
    running_ids,
    state_counts,
    two_node_cluster_of,
)
from tests.models import TaskProbe
from tests.support.ray import RayHead, RayNode, tasks_on_node

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def two_node_cluster() -> Iterator[tuple[RayHead, RayNode]]:
    with two_node_cluster_of(dashboard=True) as cluster:
        yield cluster


@pytest.fixture
def two_node_cluster_without_dashboard() -> Iterator[tuple[RayHead, RayNode]]:
    with two_node_cluster_of(dashboard=False) as cluster:
        yield cluster


@pytest.mark.timeout(300)
def test_task_on_a_crashed_node_goes_through_the_retry_path(start_worker, two_node_cluster):
    head, node = two_node_cluster
    victim_id = node.node_id()
    assert victim_id
    markers = [f"node-{i}" for i in range(2)]
    for marker in markers:
        tasks.sleep_for.enqueue(8.0, marker=marker)
    worker = start_worker("--cluster", head.address, "--concurrency", "2")

    def running_on_victim() -> bool:
        return any(
            t.get("state") == "RUNNING" and "run_chunk" in str(t.get("name"))
            for t in tasks_on_node(head, victim_id)
        )

    # One CPU per node and two one-task calls: one of them runs on the victim node.
    wait_until(running_on_victim, 90, 0.2, explain=worker.log)
    assert len(running_ids()) == 2, state_counts()
    figures, detected, finished = freeze_node_and_recover(node, worker, markers)
    lost = TaskAttempt.objects.get(state=TaskState.LOST)
    assert lost.error_class_path == "ray.exceptions.NodeDiedError", lost.error_message
    # Reported by the node check (Ray itself never returns the call), naming the dead node.
    assert "found by the worker's node check" in (lost.error_message or ""), lost.error_message
    assert victim_id in (lost.error_message or "")
    row = RayTaskExecution.objects.get(pk=lost.execution_id)
    assert row.state == TaskState.SUCCEEDED and row.attempt_number == 2
    log = worker.log()
    assert "is dead; looking for in-flight tasks" in log
    # Found through the state API, not by the no-dashboard fallback (which loses every call).
    assert "cannot ask Ray's state API" not in log, log[-3000:]
    assert worker.stop() == 0, log[-3000:]
    report(
        "Ray node crash (frozen, never answers) under a ray_core worker",
        freeze_to_lost_s=detected,
        freeze_to_all_done_s=finished,
        **figures,
    )


@pytest.mark.timeout(300)
def test_without_a_state_api_a_call_on_a_crashed_node_is_lost_after_the_recheck(
    start_worker, two_node_cluster_without_dashboard
):
    """A Ray Core-only cluster (no dashboard): the runner cannot ask which calls ran on the dead
    node, so every call submitted before the death and still unresolved after
    DEAD_NODE_RECHECK_SECONDS goes through the retry path; the call on the live node, which
    ends before that, is collected normally."""
    head, node = two_node_cluster_without_dashboard
    assert node.node_id()
    markers = [f"nodash-{i}" for i in range(2)]
    for marker in markers:
        tasks.announce_and_sleep.enqueue(5.0, marker=marker)
    worker = start_worker("--cluster", head.address, "--concurrency", "2")

    # One CPU per node and two one-task calls: once both bodies run, one runs on the victim.
    wait_until(
        lambda: TaskProbe.objects.filter(name__endswith="-started").count() == 2,
        90,
        0.2,
        explain=worker.log,
    )
    figures, detected, finished = freeze_node_and_recover(node, worker, markers)
    # Exactly the victim's call was lost; the other one finished on the head meanwhile.
    lost = TaskAttempt.objects.get(state=TaskState.LOST)
    assert lost.error_class_path == "ray.exceptions.NodeDiedError", lost.error_message
    assert TaskAttempt.objects.filter(state=TaskState.SUCCEEDED).count() == 2
    log = worker.log()
    assert "cannot ask Ray's state API which tasks ran on dead node" in log, log[-3000:]
    assert worker.stop() == 0, log[-3000:]
    report(
        "Ray node crash under a ray_core worker, cluster without a dashboard",
        freeze_to_lost_s=detected,
        freeze_to_all_done_s=finished,
        **figures,
    )
