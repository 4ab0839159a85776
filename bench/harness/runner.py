"""The workloads, run against one system at a time.

Drains use the same protocol for every Django system: start the worker, warm it up (Ray
started, its worker processes spawned, Django loaded), pause it with SIGSTOP, enqueue the whole
batch, read the process tree's CPU, resume it with SIGCONT and wait until the table has no live
rows. The rate is ``tasks / (last finished_at - resume time)``; CPU is the tree's CPU between
resume and completion. Ray's start-up and the enqueue are therefore not part of the drain.
"""

from __future__ import annotations

import json
import subprocess
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from django_ray.ray_auth import present_token

from .db import Databases
from .procs import CpuGroup, TreeMonitor, stop_tree
from .stats import percentile
from .systems import SITE, System, WorkerRun, start_ray_cluster, stop_ray

WARMUP = 16
# Worker processes of the fair-share run: two, each a driver on the same Ray cluster.
FAIR_WORKERS = 2
# Longest wait for the warm-up tasks: a system that cannot run 16 tasks in this time (Ray
# busy elsewhere, Jobs API unreachable) is reported as failed instead of eating the budget.
WARMUP_TIMEOUT = 120.0
# Seconds between two tasks of the idle workload: long enough that each meets an idle worker.
IDLE_INTERVAL = 0.5


@dataclass
class Context:
    dbs: Databases
    workdir: Path
    concurrency: int
    pg_pid: int
    log: Any
    timeout: float = 240.0
    templates: dict[str, str] = field(default_factory=dict)
    progress: Any = None


def _result(system: System, workload: str, n: int) -> dict[str, Any]:
    return {"system": system.key, "workload": workload, "n": n}


def _wait_drained(
    ctx: Context, conn: Any, system: System, run: WorkerRun | None, timeout: float
) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ctx.dbs.live_count(conn, system.table) == 0:
            return True
        if run is not None and not run.alive():
            raise RuntimeError(f"{system.key} worker exited:\n{run.tail()}")
        time.sleep(0.1)
    return False


def _start_warm(
    ctx: Context, system: System, db: dict[str, Any], task: str, restart: bool = False
) -> WorkerRun:
    """Start the worker and run a few tasks through it so everything is loaded.

    With ``restart`` (a ``--cluster`` drain) the worker is then restarted once, its Ray nodes
    left up, and its start-up marks are the restart's: in the deployed shape the host's Ray node
    runs for weeks and the worker unit restarts against it (a deploy, ``systemctl restart``).
    The first start, on nodes just started and still spawning their own processes, is kept as
    ``cold_ready_s``.
    """
    argv = None
    if system.key == "raw-sql":  # in-line execution for no-ops, a thread pool for sleeps
        slots = ctx.concurrency if task == "sleep10" else 1
        argv = [*system.worker_argv, "--concurrency", str(slots)]
    warmup = WARMUP if system.warm_slots else 4
    # The workload's own task: a warm-up with other tasks would skew adaptive chunking. Queued
    # before the worker starts, so that its first claim times the worker's start-up.
    system.enqueue(db, task, warmup, "loop")
    run = system.start_worker(db, ctx.workdir, argv)
    try:
        _mark_start(ctx, system, db, run)
        if restart:
            run.cold_ready_s, run.cold_first_result_s = run.ready_s, run.first_result_s
            run.stop_workers()  # before the enqueue: the restart's first claim times its start
            system.enqueue(db, task, warmup, "loop")
            run.spawn()
            _mark_start(ctx, system, db, run)
    except BaseException:
        run.stop()
        raise
    return run


def _mark_start(ctx: Context, system: System, db: dict[str, Any], run: WorkerRun) -> None:
    """Wait for the queued warm-up tasks; set the run's start to first claim and first result."""
    with ctx.dbs.connect(db["name"]) as conn:
        if not _wait_drained(ctx, conn, system, run, WARMUP_TIMEOUT):
            raise RuntimeError(
                f"{system.key}: warm-up tasks not done in {WARMUP_TIMEOUT:.0f} s:\n{run.tail()}"
            )
        first_claim, first_finish = ctx.dbs.first_claim_and_finish(
            conn, system.table, since=run.spawned_at
        )
    run.ready_s = None if first_claim is None else first_claim - run.spawned_at
    run.first_result_s = None if first_finish is None else first_finish - run.spawned_at


def drain(
    ctx: Context,
    system: System,
    db: dict[str, Any],
    task: str,
    n: int,
    workload: str,
    fill_mode: str,
    trickle_n: int = 0,
) -> dict[str, Any]:
    """Enqueue ``n`` tasks up front (worker paused), then time the drain.

    With ``trickle_n``, the same (now warm and idle) worker then gets the trickle workload; its
    result is returned under the ``"trickle"`` key. That saves one start-up per system.
    """
    out = _result(system, workload, n)
    if system.raw_ray:
        return raw_ray(ctx, system, db, "drain", task, n, out)
    run = _start_warm(ctx, system, db, task, restart=system.cluster)
    out["ready_s"] = run.ready_s
    out["first_result_s"] = run.first_result_s
    if system.cluster:
        out["cold_ready_s"] = run.cold_ready_s
        out["cold_first_result_s"] = run.cold_first_result_s
    monitor = TreeMonitor(list(run.roots), group=run.group)
    # The worker process alone (with --cluster, Ray's processes belong to the nodes).
    driver = TreeMonitor([p.pid for p in run.procs])
    pg = TreeMonitor([ctx.pg_pid], interval=1.0)
    try:
        run.pause()
        enq = system.enqueue(db, task, n, fill_mode)
        out["fill_mode"] = fill_mode
        out["fill_calls_per_s"] = enq["calls_per_s"]
        with ctx.dbs.connect(db["name"]) as conn:
            cpu0, pg0 = monitor.cpu(), pg.cpu()
            monitor.reset_peak()
            driver.reset_peak()
            t0 = time.time()
            run.resume()
            drained = _wait_drained(ctx, conn, system, run, ctx.timeout)
            cpu1, pg1 = monitor.cpu(), pg.cpu()
            ok, failed, last = ctx.dbs.finished_since(conn, system.table, t0)
        out.update(done=ok, failed=failed, complete=drained and ok == n)
        if last:
            out["seconds"] = last - t0
            out["tasks_per_s"] = ok / out["seconds"] if out["seconds"] > 0 else None
        out["cpu_s"] = cpu1 - cpu0
        out["cpu_ms_per_task"] = 1000 * (cpu1 - cpu0) / ok if ok else None
        out["db_cpu_ms_per_task"] = 1000 * (pg1 - pg0) / ok if ok else None
        out["peak_rss_mb"] = max(monitor.peak_rss, 1) / 2**20
        out["worker_process_rss_mb"] = max(driver.peak_rss, 1) / 2**20
        out["cpu_accounting"] = monitor.method
        if not drained:
            out["error"] = f"not drained within {ctx.timeout:.0f} s ({ok}/{n} done)"
        monitor.close()
        if trickle_n and drained:
            try:
                out["trickle"] = trickle(
                    ctx, system, db, trickle_n, system.trickle_interval, run=run
                )
            except Exception as exc:  # keep the drain's figures
                out["trickle"] = {"error": str(exc).splitlines()[0][:300]}
    finally:
        monitor.close()
        driver.close()
        pg.close()
        run.stop()
    return out


def fair(ctx: Context, system: System, db: dict[str, Any], n: int) -> dict[str, Any]:
    """Two workers of ``system`` on one queue (``--cluster``: drivers on one Ray cluster) and a
    burst of ``n`` no-op tasks: how many does each claim?

    The drain protocol with both workers in one run: warmed up until each has claimed tasks of
    its own, paused, the burst enqueued, both resumed back to back (two ``SIGCONT`` in a row).
    Each one's count is read from the rows it claimed (``claimed_by_worker``).
    """
    out = _result(system, "fair", n)
    pair = replace(system, processes=FAIR_WORKERS)
    run = _start_warm(ctx, pair, db, "noop")
    try:
        workers = _warm_each(ctx, pair, db, run)
        run.pause()
        enq = pair.enqueue(db, "noop", n, "bulk" if pair.has_bulk else "loop")
        out["fill_calls_per_s"] = enq["calls_per_s"]
        with ctx.dbs.connect(db["name"]) as conn:
            t0 = time.time()
            run.resume()
            drained = _wait_drained(ctx, conn, pair, run, ctx.timeout)
            ok, failed, last = ctx.dbs.finished_since(conn, pair.table, t0)
            claims = ctx.dbs.claims_by_worker(conn, pair.table, t0)
    finally:
        run.stop()
    out.update(done=ok, failed=failed, complete=drained and ok == n)
    if last:
        out["seconds"] = last - t0
        out["tasks_per_s"] = ok / out["seconds"] if out["seconds"] > 0 else None
    # A worker that claimed nothing of the burst is listed too, with 0.
    counts = {**dict.fromkeys(workers, 0), **claims}
    out["workers"] = [{"worker": w, "tasks": c, "share": c / n} for w, c in counts.items()]
    if not drained:
        out["error"] = f"not drained within {ctx.timeout:.0f} s ({ok}/{n} done)"
    return out


def _warm_each(ctx: Context, system: System, db: dict[str, Any], run: WorkerRun) -> list[str]:
    """Worker ids of ``run``'s processes, once each has claimed warm-up tasks of its own.

    Started together, one process may claim the whole first warm-up before the other's lease is
    live; rounds of warm-up tasks follow until every process has run some (Ray connected, its
    Ray worker processes up), as :func:`_start_warm` makes sure for a lone worker.
    """
    deadline = time.monotonic() + WARMUP_TIMEOUT
    with ctx.dbs.connect(db["name"]) as conn:
        while True:
            claimed = ctx.dbs.claims_by_worker(conn, system.table, 0.0)
            if len(claimed) >= len(run.procs):
                return sorted(claimed)
            left = deadline - time.monotonic()
            if left <= 0:
                raise RuntimeError(
                    f"{system.key}: {len(claimed)} of {len(run.procs)} workers claimed warm-up "
                    f"tasks in {WARMUP_TIMEOUT:.0f} s:\n{run.tail()}"
                )
            system.enqueue(db, "noop", WARMUP, "loop")
            _wait_drained(ctx, conn, system, run, left)


def trickle(
    ctx: Context,
    system: System,
    db: dict[str, Any],
    n: int,
    interval: float,
    run: WorkerRun | None = None,
    idle_before: float = 1.0,
    workload: str = "trickle",
) -> dict[str, Any]:
    """One task every ``interval`` seconds to an idle, warm worker: pickup latency.

    The worker first sits idle for ``idle_before`` seconds (whatever it does when there is
    nothing to do: the ``idle`` workload makes that minutes, to catch what idleness undoes).
    ``first_ms`` is the first task's pickup: the one that meets the worker right after that.
    """
    out = _result(system, workload, n)
    if system.raw_ray:
        return raw_ray(ctx, system, db, "trickle", "noop", n, out, interval)
    own = run is None
    if run is None:
        run = _start_warm(ctx, system, db, "noop")
    monitor = TreeMonitor(list(run.roots), group=run.group)
    try:
        time.sleep(idle_before)
        cpu0 = monitor.cpu()
        monitor.reset_peak()
        enq = system.enqueue(db, "noop", n, "trickle", interval)
        with ctx.dbs.connect(db["name"]) as conn:
            drained = _wait_drained(ctx, conn, system, run, ctx.timeout)
            cpu1 = monitor.cpu()
            committed = {key: (after, before) for key, after, before in enq["committed"]}
            starts = ctx.dbs.start_times(conn, system.table, list(committed))
        # From enqueue() returning (the row is committed by then) to the task's first line.
        lat = [(starts[k] - committed[k][0]) * 1000 for k in committed if k in starts]
        # Upper bound: from enqueue() being called (includes the INSERT and COMMIT round trip).
        upper = [(starts[k] - committed[k][1]) * 1000 for k in committed if k in starts]
        out.update(_latency(lat), done=len(lat), complete=drained and len(lat) == n)
        first = enq["committed"][0][0] if enq["committed"] else None
        out["first_ms"] = (starts[first] - committed[first][0]) * 1000 if first in starts else None
        out["p50_ms_from_call"] = percentile(upper, 50)
        out["p99_ms_from_call"] = percentile(upper, 99)
        out["enqueue_calls_per_s"] = enq["calls_per_s"]
        out["cpu_ms_per_task"] = 1000 * (cpu1 - cpu0) / max(1, len(lat))
        out["peak_rss_mb"] = monitor.peak_rss / 2**20
    finally:
        monitor.close()
        if own:
            run.stop()
    return out


def idle(
    ctx: Context,
    system: System,
    db: dict[str, Any],
    n: int,
    idle_s: float,
    interval: float = IDLE_INTERVAL,
) -> dict[str, Any]:
    """Pickup after the warm worker sat idle for ``idle_s`` seconds (issue 13: "also for the
    first task after 10 minutes idle"), then ``n`` tasks ``interval`` apart.

    The trickle's code path with a long idle first and a wide interval: each task finds the
    worker idle again, so timers, pools or connections that lapse while idle show up here and
    not in the 20 ms trickle, whose worker never rests longer than a second.
    """
    out = trickle(ctx, system, db, n, interval, idle_before=idle_s, workload="idle")
    out.update(idle_s=idle_s, interval_s=interval)
    return out


def _latency(lat: list[float]) -> dict[str, Any]:
    return {
        "p50_ms": percentile(lat, 50),
        "p99_ms": percentile(lat, 99),
        "max_ms": max(lat) if lat else None,
        # Negative values would mean clock trouble; report them instead of hiding them.
        "min_ms": min(lat) if lat else None,
    }


def enqueue_costs(ctx: Context, system: System, db: dict[str, Any], n: int) -> dict[str, Any]:
    """enqueue() vs a bare ORM insert of the same row vs bulk enqueue (no worker running)."""
    out = _result(system, "enqueue", n)
    out.update(system.enqueue(db, "noop", n, "compare"))
    return out


def unique_costs(ctx: Context, system: System, db: dict[str, Any], n: int) -> dict[str, Any]:
    """enqueue() with a dedupe key (50 keys: mostly returning the holder) vs plain enqueue()."""
    out = _result(system, "unique", n)
    out.update(system.enqueue(db, "noop", n, "unique"))
    return out


def raw_ray(
    ctx: Context,
    system: System,
    db: dict[str, Any],
    workload: str,
    task: str,
    n: int,
    out: dict[str, Any],
    interval: float = 0.02,
) -> dict[str, Any]:
    """Raw Ray: the driver itself is the 'worker'; READY/GO handshake keeps start-up out."""
    argv = [
        str(system.python),
        "-P",
        "-m",
        "benchapp.rawray",
        "--workload",
        workload,
        "--task",
        task,
        "--n",
        str(n),
        "--concurrency",
        str(ctx.concurrency),
        "--interval",
        str(interval),
    ]
    log = open(ctx.workdir / f"worker-{system.key}.log", "ab")  # noqa: SIM115
    group = CpuGroup(system.key)
    head = node = None
    env = system.env(db)
    if system.cluster:  # the same two-node cluster as ours-cluster gets, in this group
        head, node = start_ray_cluster(env, group)
        argv += ["--address", head.address]
        present_token(env)
    try:
        proc = subprocess.Popen(
            argv,
            cwd=SITE,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
            start_new_session=True,
            preexec_fn=group.preexec,
        )
    except BaseException:
        log.close()
        stop_ray(head, node, group)
        raise
    roots = [proc.pid] + [r.process.pid for r in (head, node) if r is not None and r.process]
    monitor = TreeMonitor(roots, group=group)
    driver = TreeMonitor([proc.pid])
    try:
        assert proc.stdout is not None and proc.stdin is not None
        line = proc.stdout.readline()
        if line.strip() != "READY":
            raise RuntimeError(f"raw-ray did not start: {line!r}")
        cpu0 = monitor.cpu()
        monitor.reset_peak()
        driver.reset_peak()
        proc.stdin.write("GO\n")
        proc.stdin.flush()
        result = json.loads(proc.stdout.readline())
        cpu1 = monitor.cpu()
        done = result["done"]
        out.update(
            done=done,
            failed=0,
            complete=done == n,
            cpu_s=cpu1 - cpu0,
            cpu_ms_per_task=1000 * (cpu1 - cpu0) / max(1, done),
            peak_rss_mb=monitor.peak_rss / 2**20,
            worker_process_rss_mb=driver.peak_rss / 2**20,
        )
        if workload == "drain":
            out["seconds"] = result["t_end"] - result["t0"]
            out["tasks_per_s"] = done / out["seconds"]
        else:
            out.update(_latency(result["latencies_ms"]))
        proc.stdin.close()
        proc.wait(timeout=30)
    finally:
        monitor.close()
        driver.close()
        log.close()
        stop_tree(proc.pid, grace=5)
        stop_ray(head, node, group)
    return out
