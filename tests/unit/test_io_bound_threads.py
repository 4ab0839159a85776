"""I/O-bound callables run several bodies at once in one Ray Core call (threads).

The runner's judgement is pure logic over measured outcomes, tested here without Ray; the
threaded chunk runs real task bodies in this process; ``tests/integration/test_io_threads.py``
shows it through a real worker and Ray.
"""

from __future__ import annotations

import pytest
from django.test import override_settings

from django_ray.execution import run_chunk
from django_ray.outcomes import Outcome, OutcomeKind
from django_ray.runners.ray_core import RayCoreRunner
from tests.support.claimed import claimed_task

IO = "tests.tasks.io_wait"
CPU = "tests.tasks.add"


def _runner_after(path: str, calls: int, duration: float, cpu: float) -> RayCoreRunner:
    """A runner that has seen ``calls`` outcomes of ``path`` with this wall and CPU time."""
    runner = RayCoreRunner(concurrency=8, local=True)
    for i in range(calls):
        task = claimed_task(i, callable_path=path)
        outcome = Outcome(i, 1, OutcomeKind.SUCCEEDED, duration_seconds=duration, cpu_seconds=cpu)
        runner._learn_durations([task], {i: outcome})
    return runner


def test_an_io_bound_callable_gets_threads_and_bigger_chunks() -> None:
    runner = _runner_after(IO, 5, duration=0.010, cpu=0.0002)
    assert runner.threads_per_call(IO) == 8  # RAY_THREADS_PER_CALL's default
    # 0.05 s / 10 ms = 5 back to back per thread, 8 threads.
    assert runner.chunk_size(IO) == 40


@pytest.mark.parametrize(
    ("duration", "cpu", "chunk", "why"),
    [
        (0.010, 0.009, 5, "CPU-bound: 0.05 s / 10 ms back to back"),
        (0.010, 0.004, 5, "CPU-bound on a busy machine (40% of its wall time on the CPU)"),
        (0.00005, 0.0, 256, "too short: a thread hand-off costs more (MAX_CHUNK_SIZE)"),
        (5.0, 0.0, 1, "too long: stopping one would re-run its neighbours"),
    ],
)
def test_other_callables_run_back_to_back(
    duration: float, cpu: float, chunk: int, why: str
) -> None:
    runner = _runner_after(CPU, 5, duration=duration, cpu=cpu)
    assert runner.threads_per_call(CPU) == 1, why
    assert runner.chunk_size(CPU) == chunk, why


def test_unmeasured_callables_and_a_setting_of_one_get_no_threads() -> None:
    runner = _runner_after(IO, 5, duration=0.010, cpu=0.0)
    assert runner.threads_per_call("tests.tasks.never_seen") == 1
    with override_settings(DJANGO_RAY={"RAY_THREADS_PER_CALL": 1}):
        assert runner.threads_per_call(IO) == 1
        assert runner.chunk_size(IO) == 5


def test_the_judgement_follows_the_callable_when_it_changes() -> None:
    runner = _runner_after(IO, 5, duration=0.010, cpu=0.0)
    assert runner.threads_per_call(IO) == 8
    for i in range(10, 20):  # the same callable now spends its time on the CPU
        task = claimed_task(i, callable_path=IO)
        outcome = Outcome(i, 1, OutcomeKind.SUCCEEDED, duration_seconds=0.01, cpu_seconds=0.01)
        runner._learn_durations([task], {i: outcome})
    assert runner.threads_per_call(IO) == 1


def test_the_largest_chunk_counts_threads_for_claim_capacity() -> None:
    runner = _runner_after(IO, 5, duration=0.010, cpu=0.0)
    for i in range(10, 15):
        task = claimed_task(i, callable_path=CPU)
        outcome = Outcome(i, 1, OutcomeKind.SUCCEEDED, duration_seconds=0.01, cpu_seconds=0.01)
        runner._learn_durations([task], {i: outcome})
    assert runner.chunk_size() == 40
    assert runner.free_slots() == 8 * 40


def _payloads(count: int, path: str, args: list[object]) -> list[dict[str, object]]:
    return [claimed_task(100 + i, callable_path=path, args=args).payload() for i in range(count)]


def test_a_threaded_chunk_runs_its_bodies_side_by_side() -> None:
    # Four bodies that only return once all four wait at the same time.
    outcomes = run_chunk(_payloads(4, "tests.tasks.rendezvous", [4, 10.0]), None, [], 4)
    assert [o.kind for o in outcomes] == [OutcomeKind.SUCCEEDED] * 4, outcomes
    assert [o.execution_id for o in outcomes] == [100, 101, 102, 103]
    # Each body reports its own thread's CPU time, what the runner's judgement reads.
    assert all(o.cpu_seconds is not None and o.cpu_seconds >= 0 for o in outcomes), outcomes


def test_a_chunk_without_threads_runs_them_one_after_another() -> None:
    # The same rendezvous cannot happen one at a time: each body gives up after its timeout.
    outcomes = run_chunk(_payloads(2, "tests.tasks.rendezvous", [2, 0.3]), None, [], 1)
    assert [o.kind for o in outcomes] == [OutcomeKind.FAILED] * 2
    assert {o.error_class_path for o in outcomes} == {"threading.BrokenBarrierError"}
