"""Per-task Ray resources on a real two-node cluster (docs/resources.md).

The second node alone offers the custom resource ``special``. Tasks that ask for it (by
``.using(resources=...)`` or by their queue's ``QUEUE_RESOURCES``) must run only there; tasks
without options run anywhere; a task asking for a resource no node has must end FAILED with the
reason after ``UNSCHEDULABLE_TIMEOUT_SECONDS`` instead of pending in Ray.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Iterator

import pytest
from django.conf import settings as django_settings
from django.tasks import task_backends
from django.test import override_settings

from django_ray.models import RayTaskExecution, TaskAttempt, TaskState
from django_ray.ray_options import UNSCHEDULABLE
from tests import tasks
from tests.conftest import wait_until
from tests.faults.conftest import job_mode_env, two_node_cluster_of
from tests.support.ray import RayHead, RayNode

pytestmark = pytest.mark.django_db(transaction=True)

UNSCHEDULABLE_WAIT = 3.0
TERMINAL = {TaskState.SUCCEEDED, TaskState.FAILED, TaskState.CANCELLED}


@pytest.fixture(scope="module")
def special_cluster() -> Iterator[tuple[RayHead, RayNode]]:
    """A head and a second node that alone offers the resource ``special`` (1 CPU each)."""
    with two_node_cluster_of(node_resources={"special": 2}) as cluster:
        yield cluster


@pytest.mark.timeout(240)
def test_tasks_run_where_their_resources_are(start_worker, special_cluster) -> None:
    head, node = special_cluster
    special_node = node.node_id()
    assert special_node
    queue_default = {"other": {"resources": {"special": 1}}}
    with override_settings(
        DJANGO_RAY={**django_settings.DJANGO_RAY, "QUEUE_RESOURCES": queue_default}
    ):
        pinned = [tasks.node_id.using(resources={"special": 1}).enqueue() for _ in range(3)]
        by_queue = [tasks.node_id.using(queue_name="other").enqueue() for _ in range(2)]
        anywhere = [tasks.node_id.enqueue() for _ in range(4)]
        nowhere = tasks.node_id.using(resources={"nowhere": 1}, num_cpus=0.5).enqueue()
    stored = RayTaskExecution.objects.get(task_id=by_queue[0].id).ray_options
    assert stored == {"resources": {"special": 1}}
    assert RayTaskExecution.objects.get(task_id=anywhere[0].id).ray_options is None
    settings = {"UNSCHEDULABLE_TIMEOUT_SECONDS": UNSCHEDULABLE_WAIT}
    started = time.monotonic()
    worker = start_worker(
        "--cluster",
        head.address,
        "--all-queues",
        "--concurrency",
        "4",
        env={"DJANGO_RAY_TEST_SETTINGS": json.dumps(settings)},
    )
    wait_until(
        lambda: not RayTaskExecution.objects.exclude(state__in=TERMINAL).exists(),
        150,
        0.2,
        explain=lambda: worker.log()[-4000:],
    )
    elapsed = time.monotonic() - started

    def placed(results) -> list[dict]:
        rows = RayTaskExecution.objects.filter(task_id__in=[r.id for r in results])
        assert {r.state for r in rows} == {TaskState.SUCCEEDED}, [
            (r.state, r.error_message) for r in rows
        ]
        return [r.result_data for r in rows]

    # Ray assigned the resource to the call (not only placed it by chance) and ran it there.
    for ran in placed(pinned) + placed(by_queue):
        assert ran["node"] == special_node and ran["assigned"].get("special") == 1, ran
    anywhere_ran = placed(anywhere)
    assert not any("special" in ran["assigned"] for ran in anywhere_ran), anywhere_ran
    anywhere_nodes = Counter(ran["node"] for ran in anywhere_ran)

    row = RayTaskExecution.objects.get(task_id=nowhere.id)
    assert row.state == TaskState.FAILED, (row.state, worker.log()[-3000:])
    assert row.error_class_path == UNSCHEDULABLE
    assert "nowhere" in row.error_message and "docs/resources.md" in row.error_message
    assert "UNSCHEDULABLE_TIMEOUT_SECONDS" in row.error_message
    # Not retried: a retry would wait for the same missing node.
    assert row.attempt_number == 1
    assert TaskAttempt.objects.filter(execution=row).count() == 1
    to_failed = (row.finished_at - row.last_attempted_at).total_seconds()
    assert to_failed >= UNSCHEDULABLE_WAIT
    assert worker.stop() == 0, worker.log()[-3000:]
    print(
        f"\n[resources] special node {special_node[:12]}: pinned {len(pinned)}/{len(pinned)} and "
        f"by queue {len(by_queue)}/{len(by_queue)} ran there; no-option tasks per node "
        f"{ {k[:12]: v for k, v in anywhere_nodes.items()} }; unschedulable task FAILED "
        f"{to_failed:.1f}s after its claim (wait {UNSCHEDULABLE_WAIT}s); all done in {elapsed:.1f}s",
        flush=True,
    )


@pytest.mark.timeout(240)
def test_ray_jobs_get_the_options_as_entrypoint_resources(start_worker, special_cluster) -> None:
    """Ray Jobs mode: the task's resources become the job's entrypoint resources (the job runs
    on the special node); a job no node can start is stopped and its task ends FAILED."""
    from django_ray.ray_dashboard import RayDashboard

    head, node = special_cluster
    special_node = node.node_id()
    pinned = [tasks.add.using(resources={"special": 1}).enqueue(i, 1) for i in range(2)]
    nowhere = tasks.add.using(resources={"nowhere": 1}).enqueue(0, 0)
    worker = start_worker(
        "--concurrency",
        "3",
        env=job_mode_env(head, UNSCHEDULABLE_TIMEOUT_SECONDS=UNSCHEDULABLE_WAIT),
    )
    wait_until(
        lambda: not RayTaskExecution.objects.exclude(state__in=TERMINAL).exists(),
        120,
        0.2,
        explain=lambda: worker.log()[-4000:],
    )
    client = RayDashboard(head.dashboard_url)
    for result in pinned:
        row = RayTaskExecution.objects.get(task_id=result.id)
        assert row.state == TaskState.SUCCEEDED, (row.state, row.error_message)
        assert client.status(row.ray_job_id)["driver_node_id"] == special_node
    row = RayTaskExecution.objects.get(task_id=nowhere.id)
    assert row.state == TaskState.FAILED, (row.state, row.error_message, worker.log()[-3000:])
    assert row.error_class_path == UNSCHEDULABLE and "nowhere" in row.error_message
    assert row.attempt_number == 1
    # The body never ran: Ray keeps the job PENDING (it ignores a stop then) or stopped it.
    assert client.status(row.ray_job_id)["status"] in {"PENDING", "STOPPED"}
    assert row.result_data is None
    to_failed = (row.finished_at - row.last_attempted_at).total_seconds()
    assert worker.stop() == 0, worker.log()[-3000:]
    print(
        f"\n[resources] Ray Jobs: {len(pinned)}/{len(pinned)} jobs with resources special ran "
        f"on the special node; unschedulable job FAILED {to_failed:.1f}s after its claim",
        flush=True,
    )


def test_options_are_stored_through_every_enqueue_path() -> None:
    options = {"num_gpus": 1, "resources": {"special": 1}}
    single = tasks.add.using(**options).enqueue(1, 2)
    many = task_backends["default"].enqueue_many(
        tasks.add.using(**options), [((1, 1), {}), ((2, 2), {})]
    )
    unique = tasks.add.using(unique_key="resources-1", **options).enqueue(3, 4)
    for result in [single, *many, unique]:
        assert RayTaskExecution.objects.get(task_id=result.id).ray_options == options
    # Read back as a task with the same options.
    again = task_backends["default"].get_result(unique.id)
    assert again.task.resources == {"special": 1} and again.task.num_gpus == 1


def test_admin_and_status_show_the_options(admin_client) -> None:
    from django_ray.status import collect_status, render_text

    queue_default = {"gpu": {"num_gpus": 1}}
    result = tasks.add.using(resources={"special": 1}, memory=1 << 30).enqueue(1, 2)
    row = RayTaskExecution.objects.get(task_id=result.id)
    page = admin_client.get(f"/admin/django_ray/raytaskexecution/{row.pk}/change/")
    assert page.status_code == 200
    text = page.content.decode()
    assert "Ray resources" in text and "special" in text and str(1 << 30) in text
    with override_settings(
        DJANGO_RAY={**django_settings.DJANGO_RAY, "QUEUE_RESOURCES": queue_default}
    ):
        status = collect_status(probe=False)
    section = status["resources"]
    assert section["queue_defaults"] == queue_default
    assert section["open_by_options"] == [
        {"options": {"memory": 1 << 30, "resources": {"special": 1}}, "queued": 1, "running": 0}
    ]
    report = render_text(status)
    assert "Ray resources" in report and "queue 'gpu' default" in report


def test_options_ray_refuses_fail_their_tasks_not_the_worker(ray_core_runner) -> None:
    """A runtime_env Ray cannot use (a working_dir that does not exist) ends the task FAILED,
    not retried, naming the option; the runner goes on running other tasks."""
    from django_ray.outcomes import OutcomeKind
    from tests.support.claimed import claimed_task

    bad = claimed_task(1, ray_options={"runtime_env": {"working_dir": "/nonexistent/django-ray"}})
    good = claimed_task(2, args=[0.0], ray_options={"num_cpus": 0.5})
    ray_core_runner.submit([bad, good])
    outcomes = {}
    deadline = time.monotonic() + 60
    while len(outcomes) < 2 and time.monotonic() < deadline:
        outcomes.update({task.id: outcome for task, outcome in ray_core_runner.poll(1.0)})
    failed = outcomes[1]
    assert failed.kind == OutcomeKind.FAILED and not failed.retryable, failed
    assert "working_dir" in (failed.error_message or ""), failed.error_message
    assert "docs/resources.md" in (failed.error_message or "")
    assert outcomes[2].kind == OutcomeKind.SUCCEEDED, outcomes[2]
    print(f"\n[resources] refused options: {failed.error_class_path}: {failed.error_message[:200]}")
