"""Unique (deduplicated) enqueue on real PostgreSQL: many processes racing on a few keys, the
running-holder option, a requeued row meeting a newer holder, and bad keys refused."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter

import pytest
from django.tasks.exceptions import InvalidTask

from django_ray.lifecycle import claim, leases, operator, record
from django_ray.models import UNIQUE_KEY_HELD, RayTaskExecution, TaskState
from django_ray.outcomes import Outcome, OutcomeKind
from tests import tasks
from tests.conftest import ROOT, worker_env

pytestmark = pytest.mark.django_db(transaction=True)
S = TaskState

PROCESSES, CALLS, KEYS = 8, 500, 50

# Each process says "ready" once Django is loaded and waits for "go" on stdin, so that all of
# them enqueue at the same time; then it enqueues CALLS times over KEYS keys and prints every
# result id it got, by key.
ENQUEUER = """
import json, sys
import django
django.setup()
from tests import tasks
proc, calls, keys = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
print("ready", flush=True)
sys.stdin.readline()
got = []
for i in range(calls):
    key = f"key-{(i + proc) % keys}"
    got.append([key, tasks.add.using(unique_key=key).enqueue(proc, i).id])
print(json.dumps(got))
"""


def test_concurrent_enqueues_from_many_processes_leave_one_row_per_key() -> None:
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", ENQUEUER, str(p), str(CALLS), str(KEYS)],
            cwd=ROOT,
            env=worker_env(),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for p in range(PROCESSES)
    ]
    for proc in procs:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    results: list[tuple[str, str]] = []
    for proc in procs:  # all are waiting: let them go together
        assert proc.stdin is not None
        proc.stdin.write("go\n")
        proc.stdin.flush()
    for proc in procs:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err[-4000:]
        results.extend((key, rid) for key, rid in json.loads(out))
    assert len(results) == PROCESSES * CALLS and all(rid for _, rid in results)
    rows = RayTaskExecution.objects.all()
    per_key = Counter(rows.values_list("unique_key", flat=True))
    assert len(per_key) == KEYS and set(per_key.values()) == {1}, per_key
    holder = dict(rows.values_list("unique_key", "task_id"))
    wrong = [(key, rid) for key, rid in results if holder[key] != rid]
    assert not wrong, f"{len(wrong)} calls got another row than their key's: {wrong[:5]}"
    print(
        f"unique enqueue: {len(results)} calls from {PROCESSES} processes, {rows.count()} rows, "
        f"{KEYS} keys, duplicates={sum(per_key.values()) - KEYS}"
    )


def test_a_key_is_held_while_queued_and_while_running_only_when_asked(path: str) -> None:
    first = tasks.add.using(unique_key="k").enqueue(1, 2)
    again = tasks.add.using(unique_key="k").enqueue(3, 4)
    assert again.id == first.id and again.args == [1, 2]
    leases.register_lease("w", "host", 1, None, "sync", 2, 60.0)
    claim.claim("w", None, 1)  # now RUNNING: a plain key is free again
    second = tasks.add.using(unique_key="k").enqueue(5, 6)
    assert second.id != first.id
    held = tasks.add.using(unique_key="r", unique_while_running=True).enqueue(7, 8)
    claim.claim("w", None, 5)
    assert RayTaskExecution.objects.get(task_id=held.id).state == S.RUNNING
    assert tasks.add.using(unique_key="r", unique_while_running=True).enqueue(0, 0).id == held.id
    assert RayTaskExecution.objects.filter(UNIQUE_KEY_HELD, unique_key="r").count() == 1


def test_a_unique_enqueue_stores_every_column_a_plain_enqueue_stores() -> None:
    # The unique path inserts with its own statement; its column list comes from the model, so
    # a column added later (and its value) cannot be dropped on that path only.
    options = {
        "priority": 7,
        "queue_name": "default",
        "timeout_seconds": 12.5,
        "max_attempts": 4,
        "num_cpus": 0.5,
        "resources": {"special": 1},
    }
    plain = tasks.echo.using(**options).enqueue("a", {"b": [1, 2]}, c="d")
    unique = tasks.echo.using(**options, unique_key="all-columns", lock_key="L").enqueue(
        "a", {"b": [1, 2]}, c="d"
    )
    ignored = {"id", "task_id", "unique_key", "lock_key", "created_at", "run_after"}
    fields = [f.attname for f in RayTaskExecution._meta.concrete_fields]
    rows = {
        r.task_id: {f: getattr(r, f) for f in fields if f not in ignored}
        for r in RayTaskExecution.objects.filter(task_id__in=[plain.id, unique.id])
    }
    assert rows[unique.id] == rows[plain.id]
    stored = RayTaskExecution.objects.get(task_id=unique.id)
    assert (stored.unique_key, stored.lock_key) == ("all-columns", "L")


def test_a_requeued_row_gives_up_its_key_to_a_newer_holder() -> None:
    first = tasks.add.using(unique_key="k").enqueue(1, 2)
    leases.register_lease("w", "host", 1, None, "sync", 1, 60.0)
    [task] = claim.claim("w", None, 1)
    newer = tasks.add.using(unique_key="k").enqueue(3, 4)
    assert newer.id != first.id
    # The running row fails and is retried: back to QUEUED while `newer` holds the key.
    outcome = Outcome(task.id, task.attempt_number, OutcomeKind.FAILED, error_class_path="x.E")
    report = record.record_outcomes("w", [(task, outcome)])
    assert report.states[task.id] == S.QUEUED
    rows = {r.task_id: r for r in RayTaskExecution.objects.all()}
    assert rows[first.id].state == S.QUEUED and rows[first.id].unique_key is None
    assert rows[newer.id].unique_key == "k"
    # An operator's requeue of a cancelled keyed row does the same.
    operator.request_cancel(newer.id)
    third = tasks.add.using(unique_key="k").enqueue(5, 6)
    operator.retry_tasks([newer.id])
    assert RayTaskExecution.objects.get(task_id=newer.id).unique_key is None
    assert RayTaskExecution.objects.get(task_id=third.id).unique_key == "k"


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"unique_key": 42}, "unique_key must be a non-empty string, not 42"),
        ({"unique_key": ""}, "unique_key must be a non-empty string"),
        ({"unique_key": "x" * 256}, "unique_key is 256 characters long, more than 255"),
        ({"lock_key": ["a"]}, "lock_key must be a non-empty string"),
        ({"lock_key": "y" * 300}, "lock_key is 300 characters long"),
        ({"unique_while_running": True}, "unique_while_running=True needs a unique_key"),
        ({"unique_key": "k", "unique_while_running": "yes"}, "must be True or False"),
    ],
)
def test_bad_keys_are_refused_with_the_fix(options: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidTask, match=message.replace("(", r"\(")):
        tasks.add.using(**options).enqueue(1, 2)  # type: ignore[arg-type]
    assert not RayTaskExecution.objects.exists()
