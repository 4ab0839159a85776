"""Producer side of the benchmark, run inside each system's own virtualenv.

``python -m benchapp.agent enqueue --task noop --n 10000 --mode loop`` enqueues through the
system's public Django Tasks API and prints one JSON line with what it measured. Modes:

- ``loop``: ``task.enqueue()`` N times (what a web request does);
- ``bulk``: the system's many-at-once API, when it has one (ours: see :func:`_bulk_enqueue`);
- ``trickle``: one ``enqueue()`` every ``--interval`` seconds, recording for each task the time
  right after ``enqueue()`` returned (its row is committed then: autocommit);
- ``orm``: a bare ORM ``create()`` of the very row ``enqueue()`` writes (same field values, fresh
  unique values), the yardstick for enqueue overhead.
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
    """Enqueue ``n`` calls in one go through the backend's bulk API; return calls made."""
    backend = task.get_backend()
    for name in ("bulk_enqueue", "enqueue_many"):
        method = getattr(backend, name, None) or getattr(task, name, None)
        if method is not None:
            break
    else:
        raise SystemExit(
            f"{type(backend).__module__}: no bulk enqueue API (bulk_enqueue/enqueue_many)"
        )
    chunk = 1000
    done = 0
    while done < n:
        size = min(chunk, n - done)
        if getattr(backend, name, None) is method:
            method(task, [((), {})] * size)
        else:
            method([((), {})] * size)
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


def _orm_inserts(task: Any, n: int) -> float:
    """Time ``n`` bare ORM inserts of the row enqueue() writes; the rows are deleted after."""
    model, id_field = _row_model()
    template_id = task.enqueue().id
    template = model.objects.get(**{id_field: template_id})
    unique = {f.attname for f in model._meta.concrete_fields if f.unique or f.primary_key}
    for constraint in model._meta.constraints:
        for name in getattr(constraint, "fields", ()) or ():
            unique.add(model._meta.get_field(name).attname)
    values = {
        f.attname: getattr(template, f.attname)
        for f in model._meta.concrete_fields
        if f.attname not in unique and not f.auto_created
    }
    auto_pk = model._meta.pk.auto_created or model._meta.pk.get_internal_type() in (
        "AutoField",
        "BigAutoField",
    )
    made: list[Any] = []
    start = time.perf_counter()
    for _ in range(n):
        row = dict(values)
        for name in unique:
            if name == model._meta.pk.attname and auto_pk:
                continue
            kind = next(
                f for f in model._meta.concrete_fields if f.attname == name
            ).get_internal_type()
            if kind == "UUIDField":
                row[name] = uuid.uuid4()
            elif kind in ("CharField", "TextField", "SlugField"):
                row[name] = str(uuid.uuid4())
            else:
                row[name] = values.get(name, getattr(template, name))
        made.append(model.objects.create(**row).pk)
    elapsed = time.perf_counter() - start
    model.objects.filter(pk__in=[*made]).delete()
    model.objects.filter(**{id_field: template_id}).delete()
    return elapsed


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
    elif args.mode == "orm":
        out["seconds"] = _orm_inserts(task, args.n)
    elif args.mode == "trickle":
        committed: list[tuple[str, float]] = []
        next_at = time.monotonic()
        start = time.perf_counter()
        for _ in range(args.n):
            delay = next_at - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            result = task.enqueue()
            committed.append((str(result.id), time.time()))
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
    enq.add_argument("--task", choices=["noop", "sleep10"], default="noop")
    enq.add_argument("--n", type=int, required=True)
    enq.add_argument("--mode", choices=["loop", "bulk", "trickle", "orm"], default="loop")
    enq.add_argument("--interval", type=float, default=0.02)
    args = parser.parse_args(argv)
    _setup()
    result = cmd_enqueue(args)
    sys.stdout.write(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
