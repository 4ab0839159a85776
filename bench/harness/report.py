"""Markdown table, JSON file and PNG chart from one run's results."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .stats import fmt, fmt_ratio, ratio

OURS = "ours-local"
WORKLOAD_TITLES = {
    "noop": "No-op drain",
    "sleep10": "10 ms sleep drain",
    "trickle": "Pickup latency (one task every 20 ms, idle worker)",
    "hist": "No-op drain with history rows in the table",
    "enqueue": "Enqueue cost (no worker running)",
    "cpu": "CPU-bound drain (20 ms of CPU per task)",
    "fair": "Two --cluster workers on one queue (fair share)",
    "idle": "Pickup after the --cluster worker sat idle",
}
# The lowest and highest share of a burst either of the two workers may claim (issue 13).
FAIR_SHARE = (0.35, 0.65)


def _rows(results: dict[str, Any], workload: str) -> list[dict[str, Any]]:
    return list(results.get(workload, {}).values())


def _get(results: dict[str, Any], workload: str, system: str, key: str) -> Any:
    return results.get(workload, {}).get(system, {}).get(key)


def targets(doc: dict[str, Any]) -> list[tuple[str, str, bool | None]]:
    """(target, measured, met) for every target of issue 6 that this run measured."""
    r = doc["results"]
    out: list[tuple[str, str, bool | None]] = []

    def rate(workload: str, system: str) -> float | None:
        return _get(r, workload, system, "tasks_per_s")

    ours = rate("noop", OURS)
    for peer, need in (("djray070", 10.0), ("tasksdb", 5.0), ("raw-ray", 0.5)):
        value = ratio(ours, rate("noop", peer))
        verb = f">= {need:g}x" if need >= 1 else f">= {need:.0%} of"
        out.append(
            (
                f"no-op drain {verb} {peer}",
                fmt_ratio(value),
                None if value is None else value >= need,
            )
        )
    cpu = _get(r, "noop", OURS, "cpu_ms_per_task")
    out.append(
        ("worker CPU <= 2 ms per no-op task", fmt(cpu, 2, " ms"), None if cpu is None else cpu <= 2)
    )
    p50 = _get(r, "trickle", OURS, "p50_ms")
    p99 = _get(r, "trickle", OURS, "p99_ms")
    out.append(("pickup p50 <= 10 ms", fmt(p50, 1, " ms"), None if p50 is None else p50 <= 10))
    out.append(("pickup p99 < 50 ms", fmt(p99, 1, " ms"), None if p99 is None else p99 < 50))
    keep = ratio(rate("hist", OURS), ours)
    out.append(
        ("drain with history keeps >= 90%", fmt_ratio(keep), None if keep is None else keep >= 0.9)
    )
    vs_orm = _get(r, "enqueue", OURS, "enqueue_vs_orm")
    out.append(
        (
            "enqueue() <= 1.3x bare ORM insert",
            fmt_ratio(vs_orm),
            None if vs_orm is None else vs_orm <= 1.3,
        )
    )
    bulk = _get(r, "enqueue", OURS, "bulk_speedup")
    out.append(
        ("bulk enqueue >= 5x faster per task", fmt_ratio(bulk), None if bulk is None else bulk >= 5)
    )
    return out


CLUSTER = "ours-cluster"
NO_THREADS = "ours-nothreads"


def deployed_targets(doc: dict[str, Any]) -> list[tuple[str, str, bool | None]]:
    """(target, measured, met) for issue 13's targets: the deployed shape (--cluster), enqueue
    at the database's pace, I/O-bound tasks at Ray's speed. None: not measured in this run."""
    r = doc["results"]

    def rate(workload: str, system: str) -> float | None:
        return _get(r, workload, system, "tasks_per_s")

    raw_sleep = [rate("sleep10", key) for key in ("raw-ray", "raw-ray-cluster")]
    best_raw_sleep = max((v for v in raw_sleep if v), default=None)
    enqueue = _get(r, "enqueue", OURS, "loop_calls_per_s")
    fair = _get(r, "fair", CLUSTER, "workers")
    idle = r.get("idle", {}).get(CLUSTER, {})
    low, high = FAIR_SHARE
    cold_ready = _get(r, "noop", CLUSTER, "cold_ready_s")
    rows: list[tuple[str, Any, Callable[[Any], str], Callable[[Any], bool]]] = [
        (
            "--cluster: worker start to first claim <= 1.5 s (a restart; the Ray node up)",
            _get(r, "noop", CLUSTER, "ready_s"),
            lambda v: (
                fmt(v, 2, " s") + f" (first start, nodes just started: {fmt(cold_ready, 2, ' s')})"
            ),
            lambda v: v <= 1.5,
        ),
        (
            "--cluster: driver RSS <= 250 MB",
            _get(r, "noop", CLUSTER, "worker_process_rss_mb"),
            lambda v: fmt(v, 0, " MB"),
            lambda v: v <= 250,
        ),
        (
            "--cluster: no-op drain >= 2x raw Ray on the same cluster",
            ratio(rate("noop", CLUSTER), rate("noop", "raw-ray-cluster")),
            fmt_ratio,
            lambda v: v >= 2,
        ),
        (
            "--cluster: pickup p99 <= 20 ms (warm, idle worker)",
            _get(r, "trickle", CLUSTER, "p99_ms"),
            lambda v: fmt(v, 1, " ms"),
            lambda v: v <= 20,
        ),
        (
            # p99 of 20 tasks is their slowest (nearest rank), the first one included.
            f"--cluster: pickup p99 <= 20 ms for tasks after {_idle_minutes(doc)} min idle",
            idle.get("p99_ms"),
            lambda v: fmt(v, 1, " ms") + f" (first task {fmt(idle.get('first_ms'), 1, ' ms')})",
            lambda v: v <= 20,
        ),
        (
            "enqueue() >= 0.8x a raw psycopg autocommit INSERT",
            ratio(enqueue, _get(r, "enqueue", "raw-sql", "loop_calls_per_s")),
            fmt_ratio,
            lambda v: v >= 0.8,
        ),
        (
            "bulk enqueue >= 20,000 rows/s",
            _get(r, "enqueue", OURS, "bulk_tasks_per_s"),
            lambda v: fmt(v, 0, " rows/s"),
            lambda v: v >= 20_000,
        ),
        (
            "10 ms sleep drain, default settings, >= 0.9x raw Ray",
            ratio(rate("sleep10", OURS), best_raw_sleep),
            fmt_ratio,
            lambda v: v >= 0.9,
        ),
        (
            f"two --cluster workers on one queue: each claims {low * 100:.0f}-{high:.0%} of N",
            fair or None,
            lambda workers: ", ".join(f"{w['share']:.1%}" for w in workers),
            lambda workers: len(workers) >= 2 and all(low <= w["share"] <= high for w in workers),
        ),
        (
            "CPU-bound drain (20 ms spin), default settings, within 5% of RAY_THREADS_PER_CALL=1",
            ratio(rate("cpu", OURS), rate("cpu", NO_THREADS)),
            fmt_ratio,
            lambda v: v >= 0.95,
        ),
    ]
    return [
        (name, "not measured", None) if value is None else (name, show(value), met(value))
        for name, value, show, met in rows
    ]


def _idle_minutes(doc: dict[str, Any]) -> str:
    """The idle workload's idle time in minutes, as the run measured it (or was configured to:
    a run without the idle workload names the target it would have measured)."""
    seconds = _get(doc["results"], "idle", CLUSTER, "idle_s")
    if seconds is None:
        seconds = doc["config"].get("idle_seconds", 600)
    return f"{seconds / 60:g}"


def _idle_section(doc: dict[str, Any]) -> list[str]:
    """The idle run: the very first task's pickup after the idle time, and the trickle's."""
    row = doc["results"].get("idle", {}).get(CLUSTER)
    if not row:
        return []
    idle_s = row.get("idle_s", doc["config"].get("idle_seconds"))
    interval = row.get("interval_s")
    lines = [
        f"## {WORKLOAD_TITLES['idle']} ({_idle_minutes(doc)} min)",
        "",
        f"The warm worker (a driver on the two-node Ray cluster) ran nothing for {fmt(idle_s)} s, "
        f"then got {row['n']} no-op tasks, one every {fmt(interval, 1)} s, so each met an idle "
        "worker. Pickup: from `enqueue()` returning to the task's first statement."
        + (f" (**{row['error']}**)" if row.get("error") else ""),
        "",
        f"| tasks | first task after {fmt(idle_s)} s idle, ms | p50 ms | p99 ms | max ms |",
        "|---|---|---|---|---|",
        f"| {fmt(row.get('done'))} | {fmt(row.get('first_ms'), 1)} | {fmt(row.get('p50_ms'), 1)} "
        f"| {fmt(row.get('p99_ms'), 1)} | {fmt(row.get('max_ms'), 1)} |",
        "",
    ]
    return lines


def jobs_overhead(doc: dict[str, Any]) -> dict[str, float] | None:
    """Ray Jobs mode against Ray Core mode: what one task costs extra (None: not measured)."""
    r = doc["results"]
    jobs, core = r.get("noop", {}).get("ours-jobs", {}), r.get("noop", {}).get(OURS, {})
    if not jobs.get("tasks_per_s") or not core.get("tasks_per_s"):
        return None
    out = {
        "jobs_tasks_per_s": jobs["tasks_per_s"],
        "core_tasks_per_s": core["tasks_per_s"],
        "wall_ms_per_task_jobs": 1000 / jobs["tasks_per_s"],
        "wall_ms_per_task_core": 1000 / core["tasks_per_s"],
    }
    if jobs.get("cpu_ms_per_task") is not None and core.get("cpu_ms_per_task") is not None:
        out["cpu_ms_per_task_jobs"] = jobs["cpu_ms_per_task"]
        out["cpu_ms_per_task_core"] = core["cpu_ms_per_task"]
        out["extra_cpu_ms_per_task"] = jobs["cpu_ms_per_task"] - core["cpu_ms_per_task"]
    tj = r.get("trickle", {}).get("ours-jobs", {}).get("p50_ms")
    tc = r.get("trickle", {}).get(OURS, {}).get("p50_ms")
    if tj is not None and tc is not None:
        out["pickup_p50_ms_jobs"] = tj
        out["pickup_p50_ms_core"] = tc
        out["extra_pickup_ms"] = tj - tc
    return out


def _jobs_section(doc: dict[str, Any]) -> list[str]:
    o = jobs_overhead(doc)
    if o is None:
        return []
    lines = [
        "## Ray Jobs mode against Ray Core mode (per-task overhead)",
        "",
        "| figure | Ray Core (--local) | Ray Jobs | Jobs - Core per task |",
        "|---|---|---|---|",
        f"| no-op drain tasks/s | {fmt(o['core_tasks_per_s'])} | {fmt(o['jobs_tasks_per_s'])} "
        f"| {fmt_ratio(ratio(o['core_tasks_per_s'], o['jobs_tasks_per_s']))} slower |",
        f"| wall ms per task (1 / rate, concurrency {doc['config']['concurrency']}) "
        f"| {fmt(o['wall_ms_per_task_core'], 2)} | {fmt(o['wall_ms_per_task_jobs'], 1)} "
        f"| +{fmt(o['wall_ms_per_task_jobs'] - o['wall_ms_per_task_core'], 1)} ms |",
    ]
    if "extra_cpu_ms_per_task" in o:
        lines.append(
            f"| CPU ms per task (worker + Ray) | {fmt(o['cpu_ms_per_task_core'], 2)} "
            f"| {fmt(o['cpu_ms_per_task_jobs'], 1)} | +{fmt(o['extra_cpu_ms_per_task'], 1)} ms |"
        )
    if "extra_pickup_ms" in o:
        lines.append(
            f"| pickup p50 ms | {fmt(o['pickup_p50_ms_core'], 1)} "
            f"| {fmt(o['pickup_p50_ms_jobs'], 1)} | +{fmt(o['extra_pickup_ms'], 1)} ms |"
        )
    lines += [
        "",
        "Ray Jobs mode starts one job (a fresh driver process importing Python, Ray and Django) "
        "per task attempt; choose it for long tasks that want process isolation, not for many "
        "short ones (docs/performance.md).",
        "",
    ]
    return lines


def _fair_section(doc: dict[str, Any]) -> list[str]:
    """The fair-share run: each worker's count of one burst, and the drain's rate."""
    row = doc["results"].get("fair", {}).get(CLUSTER)
    if not row:
        return []
    lines = [
        f"## {WORKLOAD_TITLES['fair']}",
        "",
        f"{row['n']:,} no-op tasks enqueued while both workers (drivers on one two-node Ray "
        f"cluster) were paused, then both resumed: {fmt(row.get('done'))} done at "
        f"{fmt(row.get('tasks_per_s'))} tasks/s."
        + (f" (**{row['error']}**)" if row.get("error") else ""),
        "",
    ]
    if row.get("workers"):
        lines += ["| worker | tasks claimed | share of N |", "|---|---|---|"]
        lines += [
            f"| {w['worker']} | {fmt(w['tasks'])} | {w['share']:.1%} |" for w in row["workers"]
        ]
        lines.append("")
    return lines


def _scheduling_section(doc: dict[str, Any]) -> list[str]:
    """django-ray's own features (docs/scheduling.md): unique enqueue and serialized drains."""
    r = doc["results"]
    unique, serial = r.get("unique", {}).get(OURS), r.get("serial", {}).get(OURS)
    if not unique and not serial:
        return []
    lines = ["## Unique enqueue and serialized tasks (django-ray only)", ""]
    if unique:
        lines.append(
            f"- `enqueue()` with a dedupe key ({unique.get('keys', '?')} keys, "
            f"{unique.get('rows_created', '?')} rows created for {unique['n']:,} calls): "
            f"{fmt(unique.get('unique_calls_per_s'))} calls/s against "
            f"{fmt(unique.get('plain_calls_per_s'))} for plain `enqueue()` "
            f"({fmt_ratio(unique.get('unique_vs_plain'))} the wall time)"
            + (f" (**{unique['error']}**)" if unique.get("error") else "")
        )
    if serial:
        noop = _get(r, "noop", OURS, "tasks_per_s")
        lines.append(
            f"- no-op drain of {serial['n']:,} tasks over 16 lock keys: "
            f"{fmt(serial.get('tasks_per_s'))} tasks/s"
            + (
                f" ({fmt_ratio(ratio(serial.get('tasks_per_s'), noop))} the plain no-op drain)"
                if noop and serial.get("tasks_per_s")
                else ""
            )
            + (f" (**{serial['error']}**)" if serial.get("error") else "")
        )
    return [*lines, ""]


def _phases_section(doc: dict[str, Any]) -> list[str]:
    phases = doc.get("phases") or []
    if not phases:
        return []
    lines = ["## Run time by phase", "", "| phase | seconds |", "|---|---|"]
    lines += [f"| {p['phase']} | {p['seconds']:.0f} |" for p in phases]
    lines += [f"| **total** | **{doc.get('duration_s', 0):.0f}** |", ""]
    return lines


def _cold_start_note(r: dict[str, Any], workload: str) -> list[str]:
    """Below a drain table with --cluster rows: those start-up figures are a restart's."""
    row = r.get(workload, {}).get(CLUSTER)
    if not row or row.get("cold_ready_s") is None:
        return []
    return [
        "",
        "--cluster rows: start-up figures of a worker restarted against Ray nodes that are up, "
        "as `systemctl restart django-ray-worker@default` meets the host's node. Its first "
        "start, on nodes started just before it (still spawning their own processes): "
        f"{fmt(row['cold_ready_s'], 2)} s to first claim, "
        f"{fmt(row.get('cold_first_result_s'), 2)} s to first result.",
    ]


def markdown(doc: dict[str, Any]) -> str:
    r = doc["results"]
    labels = doc["labels"]
    m = doc["machine"]
    lines = [
        f"# django-ray benchmark ({doc['mode']} run, {doc['started_at']})",
        "",
        f"Machine: {m['cpu_model']}, {m['cores']} cores, {m['memory_gib']:.0f} GiB RAM, "
        f"{m['os']}; load average before the run {m['loadavg_before']}.",
        "Versions: " + ", ".join(f"{k} {v}" for k, v in doc["versions"].items()) + ".",
        f"Worker concurrency {doc['config']['concurrency']} for every system that has the knob. "
        f"Run took {doc['duration_s']:.0f} s.",
        "",
    ]
    for workload in ("noop", "sleep10", "cpu", "hist"):
        rows = _rows(r, workload)
        if not rows:
            continue
        title = WORKLOAD_TITLES[workload]
        if workload == "hist":
            title += f" ({doc['config']['hist_rows']:,} finished rows)"
        lines += [f"## {title}", ""]
        head = (
            "| system | tasks | tasks/s | ours ÷ this | worker CPU ms/task | DB CPU ms/task "
            "| peak RSS MB | worker process RSS MB | start to first claim s "
            "| start to first result s |"
        )
        if workload == "hist":
            head += " vs empty table |"
        lines += [head, "|" + "---|" * (head.count("|") - 1)]
        ours = _get(r, workload, OURS, "tasks_per_s")
        for row in rows:
            cells = [
                labels.get(row["system"], row["system"]),
                fmt(row.get("done")) + ("" if row.get("complete", True) else f" of {row['n']:,}"),
                fmt(row.get("tasks_per_s")),
                "—" if row["system"] == OURS else fmt_ratio(ratio(ours, row.get("tasks_per_s"))),
                fmt(row.get("cpu_ms_per_task"), 2),
                fmt(row.get("db_cpu_ms_per_task"), 2),
                fmt(row.get("peak_rss_mb")),
                fmt(row.get("worker_process_rss_mb")),
                fmt(row.get("ready_s"), 2),
                fmt(row.get("first_result_s"), 2),
            ]
            if workload == "hist":
                cells.append(
                    fmt_ratio(
                        ratio(row.get("tasks_per_s"), _get(r, "noop", row["system"], "tasks_per_s"))
                    )
                )
            if row.get("error"):
                cells[0] += f" (**{row['error']}**)"
            lines.append("| " + " | ".join(cells) + " |")
        lines += [*_cold_start_note(r, workload), ""]
    rows = _rows(r, "trickle")
    if rows:
        lines += [
            f"## {WORKLOAD_TITLES['trickle']}",
            "",
            "| system | tasks | p50 ms | p99 ms | max ms | ours p50 ÷ this "
            "| worker CPU ms/task (incl. idle) |",
            "|---|---|---|---|---|---|---|",
        ]
        ours = _get(r, "trickle", OURS, "p50_ms")
        for row in rows:
            lines.append(
                "| "
                + " | ".join(
                    [
                        labels.get(row["system"], row["system"])
                        + (f" (**{row['error']}**)" if row.get("error") else ""),
                        fmt(row.get("done")),
                        fmt(row.get("p50_ms"), 1),
                        fmt(row.get("p99_ms"), 1),
                        fmt(row.get("max_ms"), 1),
                        "—" if row["system"] == OURS else fmt_ratio(ratio(ours, row.get("p50_ms"))),
                        fmt(row.get("cpu_ms_per_task"), 2),
                    ]
                )
                + " |"
            )
        lines.append("")
    rows = _rows(r, "enqueue")
    if rows:
        lines += [
            f"## {WORKLOAD_TITLES['enqueue']}",
            "",
            "| system | enqueue() calls/s | bare ORM insert/s | enqueue ÷ ORM (wall) "
            "| enqueue ÷ ORM (client CPU) | bulk tasks/s | bulk ÷ loop (wall) |",
            "|---|---|---|---|---|---|---|",
        ]
        for row in rows:
            cells = [
                labels.get(row["system"], row["system"]),
                fmt(row.get("loop_calls_per_s")),
                fmt(row.get("orm_inserts_per_s")),
                fmt_ratio(row.get("enqueue_vs_orm")),
                fmt_ratio(row.get("enqueue_vs_orm_cpu")),
                fmt(row.get("bulk_tasks_per_s")) if row.get("bulk_tasks_per_s") else "no bulk API",
                fmt_ratio(row.get("bulk_speedup")),
            ]
            if row.get("error"):
                cells[0] += f" (**{row['error']}**)"
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    lines += _idle_section(doc)
    lines += _fair_section(doc)
    lines += _scheduling_section(doc)
    lines += _jobs_section(doc)
    lines += ["## Targets (issue 6)", "", "| target | measured | met |", "|---|---|---|"]
    for name, value, met in targets(doc):
        lines.append(
            f"| {name} | {value} | {'yes' if met else ('—' if met is None else '**no**')} |"
        )
    lines.append("")
    lines += [
        "## Targets (issue 13: the deployed shape, enqueue, I/O-bound tasks)",
        "",
        "| target | measured | met |",
        "|---|---|---|",
    ]
    for name, value, met in deployed_targets(doc):
        lines.append(
            f"| {name} | {value} | {'met' if met else ('—' if met is None else '**missed**')} |"
        )
    lines.append("")
    notes = [f"- {labels.get(k, k)}: {v}" for k, v in doc.get("notes", {}).items() if v]
    if notes:
        lines += ["## Notes", "", *notes, ""]
    lines += _phases_section(doc)
    return "\n".join(lines)


def chart(doc: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    r = doc["results"]
    labels = doc["labels"]
    fig, axes = plt.subplots(2, 2, figsize=(13, 9))
    panels = [
        (axes[0][0], "noop", "tasks_per_s", "No-op drain: tasks/s (log)", True),
        (axes[0][1], "sleep10", "tasks_per_s", "10 ms sleep drain: tasks/s", False),
        (axes[1][0], "noop", "cpu_ms_per_task", "Worker CPU ms per no-op task (log)", True),
    ]
    for ax, workload, key, title, log in panels:
        rows = [row for row in _rows(r, workload) if row.get(key)]
        names = [labels.get(row["system"], row["system"]).replace(" (", "\n(") for row in rows]
        values = [row[key] for row in rows]
        colors = ["tab:green" if row["system"].startswith("ours") else "tab:gray" for row in rows]
        ax.barh(names, values, color=colors)
        ax.set_title(title)
        if log:
            ax.set_xscale("log")
        for i, v in enumerate(values):
            ax.text(v, i, f" {v:,.0f}" if v >= 10 else f" {v:.2f}", va="center", fontsize=8)
        ax.invert_yaxis()
        ax.tick_params(axis="y", labelsize=7)
    ax = axes[1][1]
    rows = [row for row in _rows(r, "trickle") if row.get("p50_ms") is not None]
    names = [labels.get(row["system"], row["system"]).replace(" (", "\n(") for row in rows]
    ys = range(len(rows))
    ax.barh([y - 0.2 for y in ys], [row["p50_ms"] for row in rows], height=0.4, label="p50")
    ax.barh([y + 0.2 for y in ys], [row["p99_ms"] for row in rows], height=0.4, label="p99")
    ax.set_yticks(list(ys), names, fontsize=7)
    ax.set_xscale("log")
    ax.set_title("Pickup latency ms (enqueue commit -> task start, log)")
    ax.invert_yaxis()
    ax.legend()
    fig.suptitle(
        f"django-ray benchmark, {doc['mode']} run {doc['started_at']} "
        f"({doc['machine']['cores']} cores, {doc['machine']['cpu_model']})"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_all(doc: dict[str, Any], out_dir: Path, stem: str) -> dict[str, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {
        "json": out_dir / f"{stem}.json",
        "md": out_dir / f"{stem}.md",
        "png": out_dir / f"{stem}.png",
    }
    paths["json"].write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")
    paths["md"].write_text(markdown(doc))
    chart(doc, paths["png"])
    return paths
