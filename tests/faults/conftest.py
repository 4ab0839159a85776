"""Fixtures and checks shared by the fault-injection tests (real processes, real signals)."""

from __future__ import annotations

import contextlib
import json
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from typing import Any

import pytest
from django.db.models import Q

from django_ray.models import RayTaskExecution, TaskAttempt, TaskState
from tests.models import TaskProbe
from tests.support.ray import FAST_NODE_DEATH_ENV, RayHead, RayNode, destroy_head, new_head

TERMINAL = {TaskState.SUCCEEDED, TaskState.FAILED, TaskState.CANCELLED}


@pytest.fixture
def pg_server():
    """The throwaway PostgreSQL server this pytest process started (it can be restarted)."""
    from tests import settings

    server = getattr(settings, "_server", None)
    if server is None:
        pytest.skip("the PostgreSQL server belongs to another process; cannot restart it")
    return server


def job_mode_env(head, **extra: object) -> dict[str, str]:
    """Worker environment for the default runner (Ray Jobs) against ``head``'s Jobs API."""
    settings = {"RUNNER": "ray_job", "RAY_ADDRESS": head.dashboard_url, **extra}
    return {"DJANGO_RAY_TEST_SETTINGS": json.dumps(settings)}


def state_counts() -> Counter[str]:
    return Counter(RayTaskExecution.objects.values_list("state", flat=True))


def running_ids() -> set[int]:
    return set(
        RayTaskExecution.objects.filter(
            state__in=[TaskState.RUNNING, TaskState.CANCELLING]
        ).values_list("id", flat=True)
    )


def all_terminal() -> bool:
    return not RayTaskExecution.objects.exclude(state__in=TERMINAL).exists()


def check_run(markers: Iterable[str], in_flight_at_fault: set[int]) -> dict[str, int]:
    """The fault-test invariants; returns figures for the report.

    Every task ended SUCCEEDED (none lost, none stuck); every marker's body ran at least once;
    bodies that ran more than once belong to executions that were in flight at the fault and
    whose history shows the recovered attempt.
    """
    markers = list(markers)
    counts = state_counts()
    assert counts == Counter({TaskState.SUCCEEDED: len(markers)}), counts
    runs = Counter(TaskProbe.objects.values_list("name", flat=True))
    missing = [m for m in markers if runs[m] == 0]
    assert not missing, f"{len(missing)} task bodies never ran: {missing[:5]}"
    duplicated = {m for m in markers if runs[m] > 1}
    by_marker = {
        (row.kwargs.get("marker") or row.args[0]): row
        for row in RayTaskExecution.objects.filter(
            Q(kwargs__marker__in=list(duplicated)) | Q(args__0__in=list(duplicated))
        )
    }
    for marker in duplicated:
        row = by_marker[marker]
        assert row.id in in_flight_at_fault, (marker, row.id, "ran twice but was not in flight")
        history = list(TaskAttempt.objects.filter(execution=row).values_list("state", flat=True))
        assert TaskState.LOST in history, (marker, history)
    retried = RayTaskExecution.objects.filter(attempt_number__gt=1).count()
    return {"duplicates": len(duplicated), "retried": retried, "in_flight": len(in_flight_at_fault)}


def report(name: str, **figures: object) -> None:
    """Print figures for the closing note (``pytest -s`` shows them; never asserted)."""
    shown = " ".join(
        f"{k}={v:.2f}" if isinstance(v, float) else f"{k}={v}" for k, v in figures.items()
    )
    print(f"\n[fault] {name}: {shown}", flush=True)


def timed_wait(predicate, timeout: float, explain=None, interval: float = 0.1) -> float:
    """Wait for ``predicate``; return the seconds it took (fails with ``explain()`` on timeout)."""
    from tests.conftest import wait_until

    started = time.monotonic()
    wait_until(predicate, timeout, interval, explain)
    return time.monotonic() - started


@contextlib.contextmanager
def two_node_cluster_of(
    dashboard: bool = True, node_resources: dict[str, float] | None = None
) -> Iterator[tuple[RayHead, RayNode]]:
    """A private head (1 CPU, fast node-death detection) and a second node (1 CPU) that alone
    has the custom resource ``victim_node`` (plus ``node_resources``)."""
    head = new_head(num_cpus=1, env=FAST_NODE_DEATH_ENV, dashboard=dashboard)
    node = RayNode(head, num_cpus=1, resources={"victim_node": 1, **(node_resources or {})})
    try:
        head.start()
        node.start()
        yield head, node
    finally:
        node.kill()
        destroy_head(head)


def freeze_node_and_recover(
    node: RayNode, worker: Any, markers: list[str], within: float = 90.0
) -> tuple[dict[str, int], float, float]:
    """Freeze ``node`` (a crashed host) while ``markers``' tasks run; wait for an attempt to be
    LOST and for every task to end, then check the fault invariants.

    Returns the :func:`check_run` figures and the seconds from the freeze to the LOST attempt
    and to the last task's end.
    """
    from tests.conftest import wait_until

    in_flight = running_ids()
    node.freeze()
    frozen = time.monotonic()
    wait_until(
        lambda: TaskAttempt.objects.filter(state=TaskState.LOST).exists(),
        within,
        0.1,
        explain=lambda: worker.log()[-5000:],
    )
    detected = time.monotonic() - frozen
    wait_until(all_terminal, within * 2, explain=lambda: worker.log()[-5000:] + str(state_counts()))
    return check_run(markers, in_flight), detected, time.monotonic() - frozen
