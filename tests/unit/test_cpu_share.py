"""Which callables count as I/O-bound, and the CPUs their calls then ask for (pure logic)."""

from __future__ import annotations

import pytest

from django_ray.runners.cpu_share import MIN_SAMPLES, CpuShares


def shares_after(runs: list[tuple[float, float]], path: str = "app.tasks.f") -> CpuShares:
    shares = CpuShares()
    for wall, cpu in runs:
        shares.learn(path, wall, cpu)
    return shares


def test_a_callable_is_judged_only_after_enough_measured_runs() -> None:
    shares = shares_after([(0.05, 0.001)] * (MIN_SAMPLES - 1))
    assert shares.share("app.tasks.f") is None
    assert shares.cpus_per_call("app.tasks.f", cluster_cpus=2, concurrency=8) is None
    shares.learn("app.tasks.f", 0.05, 0.001)
    assert shares.share("app.tasks.f") == pytest.approx(0.02)


def test_a_waiting_callable_gets_the_cpus_divided_among_the_slots() -> None:
    shares = shares_after([(0.05, 0.0005)] * MIN_SAMPLES)
    assert shares.cpus_per_call("app.tasks.f", cluster_cpus=2, concurrency=8) == 0.25


def test_a_callable_that_also_computes_gets_twice_its_share() -> None:
    shares = shares_after([(0.1, 0.03)] * MIN_SAMPLES)  # 30 % on a CPU
    assert shares.cpus_per_call("app.tasks.f", cluster_cpus=2, concurrency=8) == 0.6


def test_cpu_bound_and_unknown_callables_keep_the_default() -> None:
    shares = shares_after([(0.1, 0.09)] * MIN_SAMPLES)
    assert shares.cpus_per_call("app.tasks.f", cluster_cpus=2, concurrency=8) is None
    assert shares.cpus_per_call("app.tasks.other", cluster_cpus=2, concurrency=8) is None


def test_enough_cpus_for_every_slot_needs_no_fraction() -> None:
    shares = shares_after([(0.05, 0.0005)] * MIN_SAMPLES)
    assert shares.cpus_per_call("app.tasks.f", cluster_cpus=16, concurrency=8) is None


def test_a_huge_concurrency_still_asks_for_a_bounded_fraction() -> None:
    shares = shares_after([(0.05, 0.0)] * MIN_SAMPLES)
    assert shares.cpus_per_call("app.tasks.f", cluster_cpus=2, concurrency=10_000) == 0.05


def test_tiny_and_unmeasured_runs_are_not_judged() -> None:
    shares = shares_after([(0.0001, 0.0), (0.05, None), (None, 0.01)] * MIN_SAMPLES)  # type: ignore[list-item]
    assert shares.share("app.tasks.f") is None


def test_the_share_follows_a_callable_that_changes() -> None:
    shares = shares_after([(0.05, 0.0005)] * MIN_SAMPLES + [(0.05, 0.05)] * 8)
    assert shares.cpus_per_call("app.tasks.f", cluster_cpus=2, concurrency=8) is None
