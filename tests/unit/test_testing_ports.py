"""Ports handed to test servers (Ray heads and nodes, PostgreSQL): distinct, and clear of
each other's Ray worker port ranges."""

from __future__ import annotations

from tests.support.postgres import free_ports
from tests.support.ray import worker_port_base


def test_free_ports_are_distinct_and_avoid_what_is_taken() -> None:
    first = free_ports(50)
    assert len(set(first)) == 50
    again = free_ports(50, avoid=first)
    assert len(set(again)) == 50 and not set(again) & set(first)


def test_worker_port_ranges_keep_clear_of_taken_ports_and_ephemeral_ones() -> None:
    taken = set(range(10_000, 29_000, 150))
    for _ in range(200):
        base = worker_port_base(taken, span=100)
        assert not any(base <= port <= base + 100 for port in taken)
        assert base + 100 < 32_768
