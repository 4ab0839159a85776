"""The Ray Core runner's node check must never take the worker down.

Ray's global state accessor (``ray.nodes()``) aborts the whole process with a CHECK failure when
it meets a restarted GCS (a stress run lost a worker that way during a head restart). With a
dashboard, the node table is read over HTTP instead, and a failed read only skips one check.
"""

from __future__ import annotations

from typing import Any

from django_ray.runners.ray_core import RayCoreRunner
from tests.support.postgres import free_port


class NoGlobalStateAccessor:
    """Ray, except that ``ray.nodes()`` fails the test."""

    def __init__(self, ray: Any) -> None:
        self._ray = ray

    def nodes(self) -> list[dict[str, Any]]:
        raise AssertionError("ray.nodes() called although the cluster has a dashboard")

    def __getattr__(self, name: str) -> Any:
        return getattr(self._ray, name)


def test_the_node_table_comes_from_the_state_api(ray_core_runner: RayCoreRunner) -> None:
    runner = ray_core_runner
    assert runner._dashboard_url
    assert runner._dead_nodes == set()  # the baseline, read at start
    runner._ray = NoGlobalStateAccessor(runner._ray)
    assert runner._read_dead_nodes() == set()
    runner._last_node_check = 0.0
    runner._check_nodes()


def test_an_unreachable_dashboard_skips_a_check_instead_of_failing(
    ray_core_runner: RayCoreRunner,
) -> None:
    runner = ray_core_runner
    runner._ray = NoGlobalStateAccessor(runner._ray)
    runner._dashboard_url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    assert runner._read_dead_nodes() is None
    runner._last_node_check = 0.0
    runner._check_nodes()  # no exception: the worker would take it for Ray being gone
    assert runner._dead_nodes == set()
