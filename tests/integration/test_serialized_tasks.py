"""Serialized tasks (``lock_key``) on real PostgreSQL: the claim passes over held keys, takes
one row per key in a batch, and two real workers never overlap two rows of one key while rows
of other keys run meanwhile."""

from __future__ import annotations

import itertools

import pytest
from django.db import IntegrityError, transaction

from django_ray.lifecycle import claim, leases
from django_ray.models import RayTaskExecution, TaskState
from tests import tasks
from tests.conftest import wait_until
from tests.models import TaskProbe

pytestmark = pytest.mark.django_db(transaction=True)
S = TaskState


def test_a_claim_takes_one_row_per_key_and_passes_over_held_keys(path: str) -> None:
    for i in range(3):
        tasks.add.using(lock_key="a").enqueue(i, 0)
    tasks.add.using(lock_key="b").enqueue(9, 0)
    tasks.add.enqueue(10, 0)
    leases.register_lease("w1", "host", 1, None, "sync", 10, 60.0)
    first = claim.claim("w1", None, 10)
    assert sorted((t.lock_key or "", t.args[0]) for t in first) == [("", 10), ("a", 0), ("b", 9)]
    # Registered after the first claim: with two live workers a claim would take only its
    # share of the 5 due rows (3 candidates, a0 a1 a2, of which one per key is claimed).
    leases.register_lease("w2", "host", 2, None, "sync", 10, 60.0)
    assert claim.claim("w2", None, 10) == []  # a and b are held; the rest wait
    RayTaskExecution.objects.filter(lock_key="a", state=S.RUNNING).update(state=S.SUCCEEDED)
    [next_a] = claim.claim("w2", None, 10)
    assert (next_a.lock_key, next_a.args[0]) == ("a", 1)


def test_the_database_refuses_two_running_rows_of_one_key() -> None:
    tasks.add.using(lock_key="k").enqueue(1, 0)
    tasks.add.using(lock_key="k").enqueue(2, 0)
    with pytest.raises(IntegrityError), transaction.atomic():
        RayTaskExecution.objects.update(state=S.RUNNING)


def test_two_workers_never_overlap_one_key_and_run_other_keys_meanwhile(start_worker) -> None:  # type: ignore[no-untyped-def]
    keys, per_key = ["a", "b", "c"], 4
    # Interleaved: a0 b0 c0 a1 b1 c1 ... so both workers always find rows of a held key first.
    for index, key in itertools.product(range(per_key), keys):
        tasks.serialized_mark.using(lock_key=key).enqueue(key, index, 0.3)
    workers = [start_worker("--sync") for _ in range(2)]
    total = len(keys) * per_key

    def explain() -> str:
        return "\n".join(w.log()[-3000:] for w in workers)

    wait_until(
        lambda: RayTaskExecution.objects.filter(state=S.SUCCEEDED).count() == total,
        120,
        explain=explain,
    )
    for worker in workers:
        assert worker.stop() == 0, worker.log()
    marks = [p.data for p in TaskProbe.objects.filter(name__startswith="serialized:")]
    assert len(marks) == total
    overlaps = [
        (m, n)
        for m, n in itertools.combinations(marks, 2)
        if m["key"] == n["key"] and m["start"] < n["end"] and n["start"] < m["end"]
    ]
    across = [
        (m, n)
        for m, n in itertools.combinations(marks, 2)
        if m["key"] != n["key"] and m["start"] < n["end"] and n["start"] < m["end"]
    ]
    ran_on = set(TaskProbe.objects.values_list("pid", flat=True))
    print(
        f"serialized: {total} tasks, {len(keys)} keys, 2 workers ({len(ran_on)} ran tasks), "
        f"same-key overlaps={len(overlaps)}, other-key overlaps={len(across)}"
    )
    assert not overlaps, overlaps
    assert across, "rows of different keys never ran at the same time: keys block each other"
    assert len(ran_on) == 2
