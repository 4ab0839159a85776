"""Where Ray Jobs run, and a Ray Job whose node crashes.

A Ray Job that reserves nothing runs on the head node; ``RAY_JOB_ENTRYPOINT_RESOURCES`` lets
Ray place it on any node that has what it reserves. Once jobs run on worker nodes, a node can
die under one: Ray then fails the job (its supervisor actor died with the node), the job never
recorded its outcome, and the worker sends the attempt through the retry path.
"""

from __future__ import annotations

import pytest

from django_ray.models import RayTaskExecution, TaskAttempt, TaskState
from django_ray.ray_dashboard import RayDashboard
from tests import tasks
from tests.conftest import wait_until
from tests.faults.conftest import (
    all_terminal,
    freeze_node_and_recover,
    job_mode_env,
    report,
    state_counts,
    two_node_cluster_of,
)
from tests.models import TaskProbe
from tests.support.ray import RayHead, nodes

pytestmark = pytest.mark.django_db(transaction=True)


def _head_node_id(head: RayHead) -> str:
    [head_node] = [
        n
        for n in nodes(head)
        if n.get("state") == "ALIVE" and "victim_node" not in (n.get("resources_total") or {})
    ]
    return str(head_node["node_id"])


def _driver_nodes(head: RayHead) -> dict[str, str]:
    """Task id -> the node its (last) Ray Job ran on, as the Jobs API reports it."""
    client = RayDashboard(head.dashboard_url)
    return {
        row.task_id: str(client.status(row.ray_job_id)["driver_node_id"])
        for row in RayTaskExecution.objects.all()
    }


@pytest.mark.timeout(300)
def test_jobs_run_where_their_entrypoint_resources_are(start_worker) -> None:
    with two_node_cluster_of(node_resources={"django_tasks": 4}) as (head, node):
        placed = [tasks.add.enqueue(i, 1) for i in range(3)]
        worker = start_worker(
            "--concurrency",
            "3",
            env=job_mode_env(head, RAY_JOB_ENTRYPOINT_RESOURCES={"resources": {"django_tasks": 1}}),
        )
        wait_until(all_terminal, 180, explain=worker.log)
        assert worker.stop() == 0
        assert set(state_counts()) == {TaskState.SUCCEEDED}
        driver_nodes = _driver_nodes(head)
        victim = node.node_id()
        assert {driver_nodes[r.id] for r in placed} == {victim}, driver_nodes

        # Reserving nothing (the default): Ray runs the jobs on the head node.
        RayTaskExecution.objects.all().delete()
        on_head = [tasks.add.enqueue(i, 2) for i in range(3)]
        worker = start_worker("--concurrency", "3", env=job_mode_env(head))
        wait_until(all_terminal, 180, explain=worker.log)
        assert worker.stop() == 0
        driver_nodes = _driver_nodes(head)
        assert {driver_nodes[r.id] for r in on_head} == {_head_node_id(head)}, driver_nodes


@pytest.mark.timeout(300)
def test_a_ray_job_on_a_crashed_node_goes_through_the_retry_path(start_worker) -> None:
    with two_node_cluster_of() as (head, node):
        victim = node.node_id()
        # One CPU per node, one per job: the two jobs run side by side, one on each node.
        markers = [f"job-node-{i}" for i in range(2)]
        for marker in markers:
            tasks.announce_and_sleep.enqueue(10.0, marker=marker)
        worker = start_worker(
            "--concurrency",
            "2",
            env=job_mode_env(head, RAY_JOB_ENTRYPOINT_RESOURCES={"num_cpus": 1}),
        )
        wait_until(
            lambda: TaskProbe.objects.filter(name__endswith="-started").count() == 2,
            120,
            0.2,
            explain=worker.log,
        )
        assert victim in set(_driver_nodes(head).values())
        figures, detected, finished = freeze_node_and_recover(node, worker, markers, within=120)
        lost = TaskAttempt.objects.get(state=TaskState.LOST)
        assert lost.error_class_path == "django_ray.RayJobLost", lost.error_message
        row = RayTaskExecution.objects.get(pk=lost.execution_id)
        assert row.state == TaskState.SUCCEEDED and row.attempt_number == 2
        assert _driver_nodes(head)[row.task_id] != victim  # the retry ran on the live head
        assert worker.stop() == 0
    report(
        "Ray node crash under a Ray Job (entrypoint_num_cpus=1)",
        freeze_to_lost_s=detected,
        freeze_to_all_done_s=finished,
        **figures,
    )
