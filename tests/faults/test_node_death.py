"""A Ray worker node that dies without closing its connections (host crash, power cut).

Ray's GCS marks such a node dead once its health checks fail, but never tells the owner of a
task that ran there: the task's result would never come back and its row would be heartbeated
RUNNING forever. The Ray Core runner's node check must send that attempt through the retry
path (LOST -> QUEUED) and the task must then succeed elsewhere.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

import pytest

from django_ray.models import RayTaskExecution, TaskAttempt, TaskState
from django_ray.testing.postgres import free_port
from django_ray.testing.ray import FAST_NODE_DEATH_ENV, RayHead, RayNode, tasks_on_node
from tests import tasks
from tests.conftest import wait_until
from tests.faults.conftest import all_terminal, check_run, report, running_ids, state_counts

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def two_node_cluster():
    """A private head (1 CPU, fast node-death detection) and a second node (1 CPU)."""
    root = Path(tempfile.mkdtemp(prefix="django-ray-ray-"))
    (root / "t").mkdir()
    head = RayHead(
        temp_dir=root / "t",
        gcs_port=free_port(),
        dashboard_port=free_port(),
        num_cpus=1,
        env=dict(FAST_NODE_DEATH_ENV),
    )
    node = RayNode(head, num_cpus=1, resources={"victim_node": 1})
    try:
        head.start()
        node.start()
        yield head, node
    finally:
        node.kill()
        head.stop()
        shutil.rmtree(root, ignore_errors=True)


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
    in_flight = running_ids()
    assert len(in_flight) == 2, state_counts()
    node.freeze()
    frozen = time.monotonic()

    def lost_attempt() -> bool:
        return TaskAttempt.objects.filter(state=TaskState.LOST).exists()

    wait_until(lost_attempt, 90, 0.1, explain=lambda: worker.log()[-5000:])
    detected = time.monotonic() - frozen
    wait_until(all_terminal, 90, explain=lambda: worker.log()[-5000:] + str(state_counts()))
    finished = time.monotonic() - frozen
    figures = check_run(markers, in_flight)
    lost = TaskAttempt.objects.get(state=TaskState.LOST)
    assert lost.error_class_path == "ray.exceptions.NodeDiedError", lost.error_message
    # Reported by the node check (Ray itself never returns the call), naming the dead node.
    assert "found by the worker's node check" in (lost.error_message or ""), lost.error_message
    assert victim_id in (lost.error_message or "")
    row = RayTaskExecution.objects.get(pk=lost.execution_id)
    assert row.state == TaskState.SUCCEEDED and row.attempt_number == 2
    log = worker.log()
    assert "is dead; looking for in-flight tasks" in log
    assert worker.stop() == 0, log[-3000:]
    report(
        "Ray node crash (frozen, never answers) under a ray_core worker",
        freeze_to_lost_s=detected,
        freeze_to_all_done_s=finished,
        **figures,
    )
