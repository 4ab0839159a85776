"""``python -m bench.harness`` (via ``bench/run``): the whole benchmark in one command.

Sets up the peers' virtualenvs and a throwaway PostgreSQL server, then runs every workload
against every system, one system at a time and alternating systems within each workload, and
writes ``bench/results/<mode>.{json,md,png}``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tests.support.postgres import find_pg_bin, running_postgres

from . import report, runner
from .db import Databases
from .systems import BENCH, System, all_systems, package_version, venv_python_version
from .venvs import ensure_peer

PROFILES: dict[str, dict[str, Any]] = {
    "full": {
        "noop": 10_000,
        "sleep10": 2_000,
        "trickle": 500,
        "hist_rows": 1_000_000,
        "enqueue": 2_000,
        "unique": 2_000,
        "serial": 2_000,
        "fair": 5_000,
        "cpu": 600,
        "idle": 20,
        "idle_seconds": 600,
    },
    "quick": {
        "noop": 2_000,
        "sleep10": 400,
        "trickle": 100,
        "hist_rows": 100_000,
        "enqueue": 400,
        "unique": 400,
        "serial": 400,
        "fair": 1_000,
        "cpu": 200,
        "idle": 20,
        "idle_seconds": 60,
    },
}
# unique and serial: django-ray's own features (docs/scheduling.md), ours-local only; fair:
# two --cluster workers sharing one queue (ours-cluster only); cpu: a CPU-bound drain (ours-local
# with and without task bodies in threads, and raw Ray); idle: pickup after the --cluster worker
# sat idle for idle_seconds (ours-cluster only).
WORKLOADS = (
    "enqueue",
    "noop",
    "trickle",
    "sleep10",
    "hist",
    "unique",
    "serial",
    "fair",
    "cpu",
    "idle",
)
# Run only when named in --workloads: idle spends idle_seconds waiting (10 minutes in the full
# profile), more than the whole rest of a run's time budget.
OPT_IN = ("idle",)
# The task body each drain runs (the others: noop).
DRAIN_TASK = {"sleep10": "sleep10", "cpu": "spin20"}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


class Phases:
    """Wall time of each phase of the run, for the summary printed (and written) at the end."""

    def __init__(self) -> None:
        self.items: list[dict[str, Any]] = []

    def add(self, phase: str, seconds: float) -> None:
        self.items.append({"phase": phase, "seconds": round(seconds, 1)})

    def summary(self, total: float) -> str:
        width = max((len(p["phase"]) for p in self.items), default=10)
        rows = [f"  {p['phase']:<{width}}  {p['seconds']:7.1f} s" for p in self.items]
        rows.append(f"  {'total':<{width}}  {total:7.1f} s")
        return "time by phase:\n" + "\n".join(rows)


def machine() -> dict[str, Any]:
    cpu = "unknown"
    with open("/proc/cpuinfo") as fh:
        for line in fh:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo") as fh:
        mem_kb = int(fh.readline().split()[1])
    os_name = platform.platform()
    try:
        with open("/etc/os-release") as fh:
            pretty = dict(line.rstrip().split("=", 1) for line in fh if "=" in line)
            os_name = (
                pretty.get("PRETTY_NAME", os_name).strip('"') + f", kernel {platform.release()}"
            )
    except OSError:
        pass
    return {
        "cpu_model": cpu,
        "cores": os.cpu_count(),
        "memory_gib": mem_kb / 2**20,
        "os": os_name,
        "loadavg_before": " ".join(f"{x:.2f}" for x in os.getloadavg()),
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bench/run", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small counts, under 3 minutes")
    parser.add_argument("--systems", default="", help="comma-separated subset of system keys")
    parser.add_argument(
        "--workloads",
        default="",
        help=f"comma-separated subset of {','.join(WORKLOADS)} (default: all but "
        f"{','.join(OPT_IN)})",
    )
    parser.add_argument("--concurrency", type=int, default=8, help="worker slots (default 8)")
    parser.add_argument(
        "--wait-quiet",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="first wait up to SECONDS for the 1-minute load average to drop below cores/4",
    )
    parser.add_argument("--out", type=Path, default=BENCH / "results", help="output directory")
    parser.add_argument(
        "--json", action="store_true", help="print the results JSON on stdout at the end"
    )
    args = parser.parse_args(argv)
    if args.concurrency < 1:
        parser.error("--concurrency must be at least 1")
    return args


def select(items: list[str], wanted: str, what: str) -> list[str]:
    if not wanted:
        return items
    chosen = [w.strip() for w in wanted.split(",") if w.strip()]
    unknown = [w for w in chosen if w not in items]
    if unknown:
        raise SystemExit(f"unknown {what}: {', '.join(unknown)} (choose from {', '.join(items)})")
    return chosen


def chosen_workloads(wanted: str) -> list[str]:
    """The ``--workloads`` selection; without one, every workload except the opt-in ones."""
    if not wanted:
        return [w for w in WORKLOADS if w not in OPT_IN]
    return select(list(WORKLOADS), wanted, "workloads")


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    # SIGTERM unwinds like Ctrl-C, so workers, Ray heads and the PostgreSQL server are stopped.
    signal.signal(signal.SIGTERM, _interrupt)
    args = parse_args(argv)
    mode = "quick" if args.quick else "full"
    profile = PROFILES[mode]
    systems_all = all_systems(args.concurrency)
    keys = select([s.key for s in systems_all], args.systems, "systems")
    systems = [s for s in systems_all if s.key in keys]
    workloads = chosen_workloads(args.workloads)
    phases = Phases()
    t = time.monotonic()
    for venv in sorted({s.venv for s in systems} - {"ours"}):
        ensure_peer(venv, log)
    phases.add("peer virtualenvs", time.monotonic() - t)

    if args.wait_quiet > 0:
        wait_quiet(args.wait_quiet)
    started = time.time()
    doc: dict[str, Any] = {
        "mode": mode,
        "started_at": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine(),
        "config": {
            **profile,
            "concurrency": args.concurrency,
            "systems": keys,
            "workloads": workloads,
        },
        "labels": {s.key: s.label for s in systems},
        "notes": {s.key: s.note for s in systems},
        "results": {},
        "phases": phases.items,
    }
    doc["versions"] = versions(systems)
    workdir = Path(tempfile.mkdtemp(prefix="django-ray-bench-"))
    log(
        f"{mode} run: systems {', '.join(keys)}; workloads {', '.join(workloads)}; "
        f"logs in {workdir}"
    )
    with running_postgres() as pg:
        assert pg.process is not None
        dbs = Databases(pg.host, pg.port)
        ctx = runner.Context(
            dbs=dbs, workdir=workdir, concurrency=args.concurrency, pg_pid=pg.process.pid, log=log
        )
        ctx.progress = Progress(count_steps(systems, workloads, doc["mode"]))
        t = time.monotonic()
        families = {s.family: s for s in systems if s.family != "none"}
        for family, system in families.items():
            log(f"migrating template database for {family}")
            db = dbs.create(f"base_{family}")
            system.migrate(db)
        phases.add("PostgreSQL + migrations", time.monotonic() - t)
        for workload in workloads:
            run_workload(ctx, doc, systems, workload, profile, phases)
            report.write_all(
                doc | {"duration_s": time.time() - started}, args.out, f"{mode}-partial"
            )
    doc["duration_s"] = time.time() - started
    doc["jobs_overhead"] = report.jobs_overhead(doc)
    paths = report.write_all(doc, args.out, mode)
    for partial in args.out.glob(f"{mode}-partial.*"):
        partial.unlink()
    print()
    print(report.markdown(doc))
    print(phases.summary(doc["duration_s"]))
    log(f"wrote {', '.join(str(p) for p in paths.values())} in {doc['duration_s']:.0f} s")
    if args.json:
        print(json.dumps(doc))
    return 0


def wait_quiet(limit: float) -> None:
    """Wait (at most ``limit`` seconds) until the machine is nearly idle."""
    cores = os.cpu_count() or 1
    deadline = time.monotonic() + limit
    while os.getloadavg()[0] > cores / 4 and time.monotonic() < deadline:
        log(f"waiting for a quiet machine: load average {os.getloadavg()[0]:.2f}")
        time.sleep(15)


def versions(systems: list[System]) -> dict[str, str]:
    out: dict[str, str] = {}
    by_key = {s.key: s for s in systems}
    ours = by_key.get("ours-local") or next((s for s in systems if s.venv == "ours"), None)
    if ours:
        out["python"] = venv_python_version(ours)
        out["django-ray (ours)"] = package_version(ours, "django-ray")
        out["django"] = package_version(ours, "django")
        out["ray"] = package_version(ours, "ray")
        out["psycopg"] = package_version(ours, "psycopg")
    if "djray070" in by_key:
        out["django-ray (PyPI)"] = package_version(by_key["djray070"], "django-ray")
        out["django (0.7.0 venv)"] = package_version(by_key["djray070"], "django")
    if "tasksdb" in by_key:
        out["django-tasks-db"] = package_version(by_key["tasksdb"], "django-tasks-db")
        out["django (tasks-db venv)"] = package_version(by_key["tasksdb"], "django")
    try:
        pg = subprocess.run(
            [str(find_pg_bin() / "postgres"), "--version"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()[-1]
        out["postgresql"] = pg
    except (OSError, subprocess.CalledProcessError):
        out["postgresql"] = "?"
    return out


def run_workload(
    ctx: runner.Context,
    doc: dict[str, Any],
    systems: list[System],
    workload: str,
    profile: dict[str, Any],
    phases: Phases,
) -> None:
    results = doc["results"].setdefault(workload, {})
    if workload == "hist":
        t = time.monotonic()
        prepare_history(
            ctx, [s for s in systems if "hist" in s.workloads(doc["mode"])], profile["hist_rows"]
        )
        phases.add(f"history: {profile['hist_rows']:,} rows per table", time.monotonic() - t)
    for system in systems:
        if not runs(system, workload, doc["mode"], results):
            continue
        template = f"hist_{system.family}" if workload == "hist" else f"base_{system.family}"
        if workload == "hist" and not ctx.dbs.exists(template):
            continue
        db = (
            ctx.dbs.create(f"run_{system.family}", template)
            if system.family != "none"
            else {"name": "postgres", "host": ctx.dbs.host, "port": ctx.dbs.port}
        )
        task = DRAIN_TASK.get(workload, "noop")
        n = n_for(system, workload, profile, doc["mode"])
        log(f"{ctx.progress.next()} {workload:8} {system.key:12} n={n:,} ...")
        t = time.monotonic()
        try:
            if workload == "enqueue":
                res = runner.enqueue_costs(ctx, system, db, profile["enqueue"])
            elif workload == "unique":
                res = runner.unique_costs(ctx, system, db, n)
            elif workload == "serial":
                res = runner.drain(ctx, system, db, "noop", n, workload, "serial")
            elif workload == "fair":
                res = runner.fair(ctx, system, db, n)
            elif workload == "trickle":
                res = runner.trickle(ctx, system, db, n, system.trickle_interval)
            elif workload == "idle":
                log(f"  warm-up, then {profile['idle_seconds']} s idle")
                res = runner.idle(ctx, system, db, n, profile["idle_seconds"])
            else:
                fill = "bulk" if system.has_bulk else "loop"
                trickle_n = 0
                if workload == "noop" and "trickle" in doc["config"]["workloads"]:
                    trickle_n = n_for(system, "trickle", profile, doc["mode"])
                res = runner.drain(ctx, system, db, task, n, workload, fill, trickle_n)
                if "trickle" in res:
                    tr = res.pop("trickle")
                    doc["results"].setdefault("trickle", {})[system.key] = {
                        "system": system.key,
                        "workload": "trickle",
                        "n": trickle_n,
                        **tr,
                    }
                    log("  trickle: " + summary(doc["results"]["trickle"][system.key]))
                if workload == "noop" and system.family != "none" and res.get("done"):
                    keep = f"done_{system.family}"
                    if not ctx.dbs.exists(keep):
                        with ctx.dbs.admin() as conn:
                            conn.execute(f'ALTER DATABASE "run_{system.family}" RENAME TO "{keep}"')
        except Exception as exc:  # one system failing must not lose the others' figures
            res = {
                "system": system.key,
                "workload": workload,
                "n": n,
                "error": str(exc).splitlines()[0][:300],
            }
            log(f"  FAILED: {exc}")
        results[system.key] = res
        elapsed = time.monotonic() - t
        phase = f"{workload} {system.key}"
        if workload == "noop" and system.key in doc["results"].get("trickle", {}):
            phase += " (+ trickle)"
        phases.add(phase, elapsed)
        log("  " + summary(res) + f"  ({elapsed:.0f} s)")


def runs(system: System, workload: str, mode: str, results: dict[str, Any]) -> bool:
    """Whether ``system`` runs ``workload`` as a step of its own."""
    if system.family == "none" and workload in ("enqueue", "hist"):
        return False
    if workload == "trickle" and system.key in results:
        return False  # measured right after the no-op drain, on the same warm worker
    return workload in system.workloads(mode)


def count_steps(systems: list[System], workloads: list[str], mode: str) -> int:
    """Steps of the run (for the ``[i/N]`` progress prefix)."""
    steps = 0
    for workload in workloads:
        for system in systems:
            if workload == "trickle" and "noop" in workloads and not system.raw_ray:
                continue  # runs on the no-op drain's worker
            if runs(system, workload, mode, {}):
                steps += 1
    return steps


class Progress:
    """``[i/N]`` prefix for the step log lines."""

    def __init__(self, total: int) -> None:
        self.total = max(1, total)
        self.done = 0

    def next(self) -> str:
        self.done += 1
        # A failed no-op drain makes its trickle a step of its own: one more than counted.
        self.total = max(self.total, self.done)
        return f"[{self.done}/{self.total}]"


def n_for(system: System, workload: str, profile: dict[str, Any], mode: str) -> int:
    """Task count of ``workload`` for ``system``: slow peers run fewer (a quarter in --quick)."""
    n = profile["noop"] if workload == "hist" else profile[workload]
    if workload in system.caps:
        n = min(n, max(1, system.caps[workload] // (4 if mode == "quick" else 1)))
    return n


def summary(res: dict[str, Any]) -> str:
    parts = []
    if res.get("tasks_per_s"):
        parts.append(f"{res['done']:,} tasks, {res['tasks_per_s']:,.0f}/s")
    if res.get("workers"):
        parts.append(
            ", ".join(f"{w['worker']} {w['tasks']:,} ({w['share']:.1%})" for w in res["workers"])
        )
    if res.get("p50_ms") is not None:
        parts.append(f"p50 {res['p50_ms']:.1f} ms p99 {res['p99_ms']:.1f} ms")
    if res.get("workload") == "idle" and res.get("first_ms") is not None:
        parts.append(f"first task after {res['idle_s']:g} s idle {res['first_ms']:.1f} ms")
    if res.get("cpu_ms_per_task") is not None:
        parts.append(f"CPU {res['cpu_ms_per_task']:.2f} ms/task")
    if res.get("peak_rss_mb"):
        parts.append(f"RSS {res['peak_rss_mb']:,.0f} MB")
    if res.get("loop_calls_per_s"):
        parts.append(
            f"enqueue {res['loop_calls_per_s']:,.0f}/s, ORM {res.get('orm_inserts_per_s') or 0:,.0f}/s"
        )
    if res.get("bulk_tasks_per_s"):
        parts.append(f"bulk {res['bulk_tasks_per_s']:,.0f}/s")
    if res.get("error"):
        parts.append(f"error: {res['error']}")
    return "; ".join(parts) or "no figures"


def prepare_history(ctx: runner.Context, systems: list[System], rows: int) -> None:
    for family in dict.fromkeys(s.family for s in systems if s.family != "none"):
        source = f"done_{family}"
        if not ctx.dbs.exists(source):
            log(f"history: no finished no-op drain for {family}; skipping")
            continue
        table = next(s.table.name for s in systems if s.family == family)
        t = time.monotonic()
        ctx.dbs.create(f"hist_{family}", source)
        total = ctx.dbs.add_history(f"hist_{family}", table, rows)
        log(f"history: {family} table {table} now {total:,} rows ({time.monotonic() - t:.0f} s)")


if __name__ == "__main__":
    sys.exit(main())
