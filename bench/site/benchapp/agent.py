"""Producer side of the benchmark, run inside each system's own virtualenv.

``python -m benchapp.agent enqueue --task noop --n 10000 --mode loop`` enqueues through the
system's public Django Tasks API and prints one JSON line with what it measured. Modes:

- ``loop``: ``task.enqueue()`` N times (what a web request does);
- ``bulk``: the system's many-at-once API, when it has one (ours: see :func:`_bulk_enqueue`);
- ``trickle``: one ``enqueue()`` every ``--interval`` seconds, recording for each task the time
  right after ``enqueue()`` returned (its row is committed then: autocommit);
- ``compare``: ``enqueue()`` against a bare ORM ``create()`` of the very row it writes (same
  field values, fresh unique values) in interleaved blocks, then the bulk API; the yardstick
  for enqueue overhead.
- ``unique`` (django-ray only): ``enqueue()`` with a dedupe key over :data:`UNIQUE_KEYS` keys
  against plain ``enqueue()``, in interleaved blocks;
- ``serial`` (django-ray only): the bulk API with a lock key, :data:`LOCK_KEYS` keys round-robin,
  for the serialized drain.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import uuid
from typing import Any

import django


def _setup() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "benchsettings")
    django.setup()


def _bulk_enqueue(task: Any, n: int) -> int:
    """Enqueue ``n`` calls through the backend's many-at-once API; return calls made."""
    backend = task.get_backend()
    method = getattr(backend, "enqueue_many", None)
    if method is None:
        raise SystemExit(f"{type(backend).__module__}: no bulk enqueue API (enqueue_many)")
    done = 0
    while done < n:
        size = min(1000, n - done)
        method(task, [((), {})] * size)
        done += size
    return done


def _row_model() -> tuple[type, str]:
    """The model one enqueue() writes and the field holding TaskResult.id."""
    system = os.environ.get("BENCH_SYSTEM", "ours")
    if system == "tasksdb":
        from django_tasks_db.models import DBTaskResult

        return DBTaskResult, "id"
    from django_ray.models import RayTaskExecution

    return RayTaskExecution, "task_id"


class _OrmRows:
    """Bare ORM ``create()`` of the very row ``enqueue()`` writes (fresh unique values)."""

    def __init__(self, task: Any) -> None:
        self.model, id_field = _row_model()
        template_id = task.enqueue().id
        template = self.model.objects.get(**{id_field: template_id})
        meta = self.model._meta
        unique = {f.attname for f in meta.concrete_fields if f.unique or f.primary_key}
        for constraint in meta.constraints:
            for name in getattr(constraint, "fields", ()) or ():
                unique.add(meta.get_field(name).attname)
        self.values = {
            f.attname: getattr(template, f.attname)
            for f in meta.concrete_fields
            if f.attname not in unique
        }
        self.fresh: dict[str, Any] = {}
        for f in meta.concrete_fields:
            if f.attname not in unique or (
                f.primary_key and f.get_internal_type().endswith("AutoField")
            ):
                continue
            kind = f.get_internal_type()
            if kind == "UUIDField":
                self.fresh[f.attname] = uuid.uuid4
            elif kind in ("CharField", "TextField", "SlugField"):
                self.fresh[f.attname] = lambda: uuid.uuid4().hex
            else:
                self.values[f.attname] = getattr(template, f.attname)

    def create(self) -> None:
        row = dict(self.values)
        for name, make in self.fresh.items():
            row[name] = make()
        self.model.objects.create(**row)


BULK_ROUNDS = 5
UNIQUE_KEYS = 50
LOCK_KEYS = 16


def _unique(task: Any, n: int, block: int = 50) -> dict[str, Any]:
    """enqueue() with a dedupe key vs plain enqueue(), interleaved in blocks (warm process)."""
    for i in range(20):
        task.using(unique_key=f"warm-{i}").enqueue()
        task.enqueue()
    wall = {"unique": 0.0, "plain": 0.0}
    ids: set[str] = set()
    done = 0
    while done < n:
        size = min(block, n - done)
        w = time.perf_counter()
        for i in range(done, done + size):
            ids.add(task.using(unique_key=f"key-{i % UNIQUE_KEYS}").enqueue().id)
        wall["unique"] += time.perf_counter() - w
        w = time.perf_counter()
        for _ in range(size):
            task.enqueue()
        wall["plain"] += time.perf_counter() - w
        done += size
    return {
        "n": n,
        "keys": UNIQUE_KEYS,
        "rows_created": len(ids),
        "unique_calls_per_s": n / wall["unique"],
        "plain_calls_per_s": n / wall["plain"],
        "unique_vs_plain": wall["unique"] / wall["plain"],
    }


def _serial_fill(task: Any, n: int) -> None:
    """n tasks over LOCK_KEYS lock keys, interleaved (one bulk call per key and round)."""
    backend = task.get_backend()
    per_key = [n // LOCK_KEYS + (1 if k < n % LOCK_KEYS else 0) for k in range(LOCK_KEYS)]
    for k, count in enumerate(per_key):
        backend.enqueue_many(task.using(lock_key=f"lock-{k}"), [((), {})] * count)


def _compare(task: Any, n: int, block: int = 50) -> dict[str, Any]:
    """enqueue() vs bare ORM insert vs bulk, in one warm process, interleaved in blocks.

    Interleaving small blocks makes machine noise hit both sides alike; wall time and this
    process' CPU time are both reported.
    """
    orm = _OrmRows(task)
    for _ in range(20):  # warm: connection, compiled SQL, caches
        task.enqueue()
        orm.create()
    wall = {"loop": 0.0, "orm": 0.0}
    cpu = {"loop": 0.0, "orm": 0.0}
    done = 0
    while done < n:
        size = min(block, n - done)
        for kind in ("loop", "orm"):
            w, c = time.perf_counter(), time.process_time()
            if kind == "loop":
                for _ in range(size):
                    task.enqueue()
            else:
                for _ in range(size):
                    orm.create()
            wall[kind] += time.perf_counter() - w
            cpu[kind] += time.process_time() - c
        done += size
    out: dict[str, Any] = {
        "n": n,
        "loop_calls_per_s": n / wall["loop"],
        "orm_inserts_per_s": n / wall["orm"],
        "enqueue_vs_orm": wall["loop"] / wall["orm"],
        "enqueue_vs_orm_cpu": cpu["loop"] / cpu["orm"] if cpu["orm"] else None,
        "loop_cpu_ms_per_call": 1000 * cpu["loop"] / n,
        "orm_cpu_ms_per_insert": 1000 * cpu["orm"] / n,
    }
    if hasattr(task.get_backend(), "enqueue_many"):
        _bulk_enqueue(task, min(n, 1000))  # warm: the full-size statement
        # A bulk call of n tasks lasts a fraction of a second, so one scheduling hiccup would
        # swing it: the median of a few rounds is the figure.
        rounds = []
        c = time.process_time()
        for _ in range(BULK_ROUNDS):
            w = time.perf_counter()
            _bulk_enqueue(task, n)
            rounds.append(time.perf_counter() - w)
        bulk_wall = sorted(rounds)[len(rounds) // 2]
        out["bulk_rounds_s"] = rounds
        out["bulk_tasks_per_s"] = n / bulk_wall
        out["bulk_speedup"] = wall["loop"] / bulk_wall
        out["bulk_cpu_ms_per_task"] = 1000 * (time.process_time() - c) / (n * BULK_ROUNDS)
    return out


def cmd_enqueue(args: argparse.Namespace) -> dict[str, Any]:
    from benchapp.tasks import TASKS

    task = TASKS[args.task]
    out: dict[str, Any] = {"mode": args.mode, "n": args.n}
    if args.mode == "loop":
        start = time.perf_counter()
        for _ in range(args.n):
            task.enqueue()
        out["seconds"] = time.perf_counter() - start
    elif args.mode == "bulk":
        start = time.perf_counter()
        _bulk_enqueue(task, args.n)
        out["seconds"] = time.perf_counter() - start
    elif args.mode == "compare":
        return _compare(task, args.n)
    elif args.mode == "unique":
        return _unique(task, args.n)
    elif args.mode == "serial":
        start = time.perf_counter()
        _serial_fill(task, args.n)
        out["seconds"] = time.perf_counter() - start
    elif args.mode == "trickle":
        committed: list[tuple[str, float, float]] = []
        next_at = time.monotonic()
        start = time.perf_counter()
        for _ in range(args.n):
            delay = next_at - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            before = time.time()
            result = task.enqueue()
            committed.append((str(result.id), time.time(), before))
            next_at += args.interval
        out["seconds"] = time.perf_counter() - start
        out["committed"] = committed
    else:  # pragma: no cover - argparse restricts choices
        raise SystemExit(f"unknown mode {args.mode}")
    out["calls_per_s"] = args.n / out["seconds"] if out["seconds"] else None
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="benchapp.agent", description=__doc__)
    sub = parser.add_subparsers(dest="cmd", required=True)
    enq = sub.add_parser("enqueue", help="enqueue tasks through the system's API")
    enq.add_argument("--task", choices=["noop", "sleep10", "spin20"], default="noop")
    enq.add_argument("--n", type=int, required=True)
    enq.add_argument(
        "--mode", choices=["loop", "bulk", "trickle", "compare", "unique", "serial"], default="loop"
    )
    enq.add_argument("--interval", type=float, default=0.02)
    args = parser.parse_args(argv)
    _setup()
    result = cmd_enqueue(args)
    sys.stdout.write(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
