"""The Ray Core runner's LOST outcomes, built without a cluster.

The node check and the connection loss only run when a node or Ray dies, so the fault tests are
their only other callers; a slip in how the outcome is built (a name shadowed in a refactor, a
wrong error class) would otherwise surface as a 5-minute fault test that reports something else.
Ray's module is replaced by a recorder of ``cancel`` calls (the one Ray call these paths make)
that lists no node as dead.
"""

from __future__ import annotations

from typing import Any

import pytest

from django_ray.outcomes import ClaimedTask, OutcomeKind
from django_ray.runners.ray_core import RayCoreRunner, _Chunk
from tests.support.claimed import claimed_task


class _CancelRecorder:
    def __init__(self, fail: bool = False) -> None:
        self.cancelled: list[Any] = []
        self.fail = fail

    def cancel(self, ref: Any, force: bool = False) -> None:
        self.cancelled.append(ref)
        if self.fail:
            raise ConnectionError("the node is gone")

    def nodes(self) -> list[dict[str, Any]]:
        return []


def _claimed(execution_id: int) -> ClaimedTask:
    return claimed_task(execution_id, attempt_number=2, max_attempts=3)


def _runner_with(chunks: list[_Chunk], ray: _CancelRecorder) -> RayCoreRunner:
    runner = RayCoreRunner(concurrency=4, local=True)
    runner._ray = ray
    for chunk in chunks:
        runner._chunks[chunk.ref] = chunk
    return runner


@pytest.mark.parametrize("cancel_fails", [False, True], ids=["cancel-ok", "cancel-raises"])
def test_a_call_on_a_dead_node_is_lost_with_the_node_named(cancel_fails: bool) -> None:
    victim = _Chunk("ref-victim", [_claimed(1), _claimed(2)], submitted=0.0, deadline=None)
    survivor = _Chunk("ref-survivor", [_claimed(3)], submitted=0.0, deadline=None)
    ray = _CancelRecorder(fail=cancel_fails)
    runner = _runner_with([victim, survivor], ray)

    runner._lose_on_dead_node(victim, "n" * 56)

    assert ray.cancelled == ["ref-victim"]
    assert sorted(runner.in_flight_ids()) == [1, 2, 3]  # reported by the next poll, not dropped
    finished = runner.poll(0)
    assert [t.id for t, _ in finished] == [1, 2]
    for task, outcome in finished:
        assert outcome.kind is OutcomeKind.LOST
        assert (outcome.execution_id, outcome.attempt_number) == (task.id, 2)
        assert outcome.error_class_path == "ray.exceptions.NodeDiedError"
        assert "n" * 56 in (outcome.error_message or "")
        assert "found by the worker's node check" in (outcome.error_message or "")
        assert outcome.retryable
    assert runner.in_flight_ids() == [3]


def test_a_stopping_call_on_a_dead_node_keeps_its_stop_outcome() -> None:
    cancelled = _Chunk("ref-a", [_claimed(1), _claimed(2)], 0.0, None, cancel_requested={2})
    timed_out = _Chunk("ref-b", [_claimed(3)], 0.0, None, timed_out=True)
    runner = _runner_with([cancelled, timed_out], _CancelRecorder())

    runner._lose_on_dead_node(cancelled, "dead-node")
    runner._lose_on_dead_node(timed_out, "dead-node")

    outcomes = {t.id: o for t, o in runner.poll(0)}
    assert {i: o.kind for i, o in outcomes.items()} == {
        1: OutcomeKind.INTERRUPTED,
        2: OutcomeKind.CANCELLED,
        3: OutcomeKind.FAILED,
    }
    assert outcomes[3].error_class_path == "django_ray.TaskTimedOut"


def test_losing_the_connection_reports_every_call_lost_once() -> None:
    runner = _runner_with(
        [_Chunk("ref-a", [_claimed(1)], 0.0, None), _Chunk("ref-b", [_claimed(2)], 0.0, None)],
        _CancelRecorder(),
    )
    finished = runner.lose_connection()
    assert sorted(t.id for t, _ in finished) == [1, 2]
    assert {o.error_class_path for _, o in finished} == {"django_ray.RayConnectionLost"}
    assert all(o.kind is OutcomeKind.LOST and o.retryable for _, o in finished)
    assert runner.in_flight_ids() == [] and runner.lose_connection() == []


def test_a_call_that_failed_outside_task_bodies_names_that_not_a_dead_node() -> None:
    from ray.exceptions import RayTaskError, WorkerCrashedError

    from django_ray.execution import DjangoSetupFailed
    from django_ray.runners.ray_core import _lost_call_message

    setup = DjangoSetupFailed("Django could not be set up ... Every Ray node must import ...")
    setup_message = _lost_call_message(RayTaskError("run_chunk", "tb", setup))
    assert setup_message == f"The Ray worker could not run this task: {setup}"

    other = _lost_call_message(RayTaskError("run_chunk", "tb", KeyError("x")))
    assert other.startswith("The Ray worker could not run this task: django-ray's call failed")
    assert "every Ray node has the worker host's django-ray version" in other

    crashed = _lost_call_message(WorkerCrashedError())
    assert crashed.startswith("Ray lost this task (its worker or node died): ")
