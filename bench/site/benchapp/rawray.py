"""The Ray ceiling: the same task bodies submitted straight to Ray, one Ray task each.

Protocol with the harness (so that Ray's start-up is not measured): the process starts a local
Ray, warms it up, prints ``READY`` and waits for a line on stdin. It then runs the workload,
prints one JSON line with its figures and waits for stdin to close before shutting Ray down,
so the harness can read the process tree's CPU time before Ray's processes go away.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

import ray

from benchapp.plain import PLAIN


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="benchapp.rawray", description=__doc__)
    parser.add_argument("--workload", choices=["drain", "trickle"], required=True)
    parser.add_argument("--task", choices=sorted(PLAIN), default="noop")
    parser.add_argument("--n", type=int, required=True)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--interval", type=float, default=0.02)
    parser.add_argument(
        "--address", default="", help="join this Ray cluster (GCS address) instead of a local Ray"
    )
    args = parser.parse_args(argv)

    if args.address:
        ray.init(address=args.address, logging_level="WARNING", log_to_driver=False)
    else:
        # "local": always a private instance; with no address Ray would join the cluster named
        # in /tmp/ray/ray_current_cluster, which another process on the host may have started.
        ray.init(
            address="local", include_dashboard=False, logging_level="WARNING", log_to_driver=False
        )
    # As many tasks in flight as the Django workers get slots (fractional CPUs per task).
    cpus = ray.cluster_resources().get("CPU", 1)
    remote = ray.remote(num_cpus=cpus / args.concurrency)(PLAIN[args.task])
    ray.get([remote.remote() for _ in range(args.concurrency * 4)])  # warm the worker pool
    print("READY", flush=True)
    sys.stdin.readline()

    out: dict[str, Any] = {"n": args.n}
    if args.workload == "drain":
        t0 = time.time()
        refs = [remote.remote() for _ in range(args.n)]
        starts = ray.get(refs)
        t1 = time.time()
        out.update(t0=t0, t_end=t1, done=len(starts), first_start=min(starts))
    else:
        pairs: list[tuple[float, Any]] = []
        next_at = time.monotonic()
        for _ in range(args.n):
            delay = next_at - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            submitted = time.time()
            pairs.append((submitted, remote.remote()))
            next_at += args.interval
        starts = ray.get([ref for _, ref in pairs])
        out["latencies_ms"] = [(s - c) * 1000 for (c, _), s in zip(pairs, starts, strict=True)]
        out["done"] = len(starts)
    print(json.dumps(out), flush=True)
    sys.stdin.read()
    ray.shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
