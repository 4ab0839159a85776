"""The systems under test: how to start each one's worker, enqueue, and read its table.

Each Django system runs from its own virtualenv under ``bench/.venvs`` with only
``bench/site`` on ``PYTHONPATH`` (python ``-P``, cwd ``bench/site``): django-ray 0.7.0 and ours
share the import name ``django_ray`` and must never see each other.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from .procs import CpuGroup, stop_tree

BENCH = Path(__file__).resolve().parent.parent
SITE = BENCH / "site"
VENVS = BENCH / ".venvs"


@dataclass
class Table:
    """Where a system keeps its tasks, and how to read progress and results with plain SQL."""

    name: str
    state: str
    live: tuple[str, ...]
    succeeded: str
    id_col: str
    result_col: str
    finished_col: str = "finished_at"


RAY_TABLE = Table(
    "django_ray_raytaskexecution",
    "state",
    ("QUEUED", "RUNNING"),
    "SUCCEEDED",
    "task_id",
    "result_data::text",
)
TASKSDB_TABLE = Table(
    "django_tasks_database_dbtaskresult",
    "status",
    ("READY", "RUNNING"),
    "SUCCESSFUL",
    "id::text",
    "return_value::text",
)
RAW_TABLE = Table(
    "bench_queue", "state", ("queued", "running"), "succeeded", "id::text", "result::text"
)


@dataclass
class WorkerRun:
    """A started worker: its processes (each the root of a tree we account for)."""

    procs: list[subprocess.Popen[bytes]]
    log: Path
    group: CpuGroup
    extra_roots: list[int] = field(default_factory=list)
    pausable: list[int] = field(default_factory=list)
    # time.time() right before the worker process was spawned (after any Ray it needs is up)
    spawned_at: float = 0.0
    ready_s: float | None = None  # spawn to first claim, once the warm-up ran
    first_result_s: float | None = None  # spawn to the first finished task (warm-up included)
    # --cluster: the same two marks of the first start, on Ray nodes started just before it.
    cold_ready_s: float | None = None
    cold_first_result_s: float | None = None
    head: Any = None  # tests.support.ray.RayHead started for this run, if any
    node: Any = None  # tests.support.ray.RayNode joined to ``head`` (--cluster systems)
    # What spawn() runs: the worker command and its environment, once per process.
    argv: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    processes: int = 1

    @property
    def roots(self) -> list[int]:
        return [p.pid for p in self.procs] + self.extra_roots

    def alive(self) -> bool:
        return all(p.poll() is None for p in self.procs)

    def pause(self) -> None:
        for pid in self.pausable or [p.pid for p in self.procs]:
            os.kill(pid, signal.SIGSTOP)

    def resume(self) -> None:
        for pid in self.pausable or [p.pid for p in self.procs]:
            os.kill(pid, signal.SIGCONT)

    def spawn(self) -> None:
        """Start the worker's processes; ``spawned_at`` is the moment right before."""
        self.spawned_at = time.time()
        with open(self.log, "ab") as fh:
            for _ in range(self.processes):
                self.procs.append(
                    subprocess.Popen(
                        self.argv,
                        cwd=SITE,
                        env=self.env,
                        stdout=fh,
                        stderr=subprocess.STDOUT,
                        stdin=subprocess.DEVNULL,
                        start_new_session=True,
                        preexec_fn=self.group.preexec,
                    )
                )

    def stop_workers(self) -> None:
        """Stop the worker's processes only; any Ray cluster stays up, as ``systemctl restart
        django-ray-worker@default`` leaves the host's Ray node running. :meth:`spawn` again."""
        for proc in self.procs:
            stop_tree(proc.pid)
        self.procs = []

    def stop(self) -> None:
        self.stop_workers()
        stop_ray(self.head, self.node, self.group)

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


@dataclass
class System:
    """One system under test."""

    key: str
    label: str
    family: str  # schema family: systems of one family share template databases
    venv: str
    table: Table
    worker_argv: list[str]
    settings_system: str = "ours"
    processes: int = 1
    has_bulk: bool = False
    caps: dict[str, int] = field(default_factory=dict)
    note: str = ""
    ray_head: bool = False  # the harness starts a Ray head (in the worker's cgroup) per run
    # The harness starts a two-node Ray cluster (a head and a second node, as the Ansible roles
    # deploy it) in the worker's cgroup per run, and the worker joins it as a driver (--cluster).
    cluster: bool = False
    warm_slots: bool = True  # False: a 4-task warm-up instead of 16 (slow systems)
    quick_skip: tuple[str, ...] = ()  # workloads left out of --quick (time budget)
    only: tuple[str, ...] = ()  # the workloads this system runs, when not all of them
    extras: tuple[str, ...] = ()  # workloads of its own features (no peer has them)
    worker_env: dict[str, str] = field(default_factory=dict)  # extra environment of its worker
    # Seconds between two trickle tasks: 20 ms, or longer than one task takes (Ray Jobs), so
    # that the trickle measures pickup by an idle worker and not a backlog.
    trickle_interval: float = 0.02

    @property
    def raw_ray(self) -> bool:
        """Plain Ray, no Django and no table: the ceiling (``benchapp.rawray``)."""
        return self.family == "none"

    def workloads(self, mode: str) -> tuple[str, ...]:
        """Workloads this system runs (Ray Jobs mode: its per-task overhead only)."""
        if self.ray_head or self.cluster:  # enqueue is the same backend as ours-local
            return ("noop", "trickle", *self.extras)
        if self.only:
            return self.only
        every = ("enqueue", "noop", "trickle", "sleep10", "hist", *self.extras)
        return tuple(w for w in every if not (mode == "quick" and w in self.quick_skip))

    @property
    def python(self) -> Path:
        return VENVS / self.venv / "bin" / "python"

    def env(self, db: dict[str, Any], extra: dict[str, str] | None = None) -> dict[str, str]:
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("RAY_ADDRESS", "VIRTUAL_ENV", "PYTHON", "DJANGO_"))
        }
        env.update(
            PYTHONPATH=str(SITE),
            DJANGO_SETTINGS_MODULE="benchsettings",
            BENCH_SYSTEM=self.settings_system,
            BENCH_DB_NAME=db["name"],
            BENCH_DB_HOST=db["host"],
            BENCH_DB_PORT=str(db["port"]),
            RAY_USAGE_STATS_ENABLED="0",
            PYTHONUNBUFFERED="1",
        )
        env.update(extra or {})
        return env

    def run_py(self, db: dict[str, Any], argv: list[str], timeout: float = 600) -> str:
        """Run ``python -P <argv>`` in this system's venv; return stdout or raise with stderr."""
        proc = subprocess.run(
            [str(self.python), "-P", *argv],
            cwd=SITE,
            env=self.env(db),
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if proc.returncode != 0:
            raise RuntimeError(
                f"{self.key}: {' '.join(argv[:4])} failed ({proc.returncode}):\n"
                + proc.stderr[-3000:]
            )
        return proc.stdout

    def migrate(self, db: dict[str, Any]) -> None:
        if self.family == "raw":
            self.run_py(db, ["-m", "benchapp.rawsql", "setup"])
        else:
            self.run_py(db, ["-m", "django", "migrate", "-v0", "--no-input"])

    def enqueue(
        self, db: dict[str, Any], task: str, n: int, mode: str, interval: float = 0.02
    ) -> dict[str, Any]:
        module = "benchapp.rawsql" if self.family == "raw" else "benchapp.agent"
        argv = ["-m", module, "enqueue", "--task", task, "--n", str(n), "--mode", mode]
        argv += ["--interval", str(interval)]
        out = self.run_py(db, argv)
        return json.loads(out.strip().splitlines()[-1])

    def start_worker(
        self, db: dict[str, Any], workdir: Path, argv: list[str] | None = None
    ) -> WorkerRun:
        log = workdir / f"worker-{self.key}.log"
        group = CpuGroup(self.key)
        head = node = None
        extra: dict[str, str] = dict(self.worker_env)
        argv = list(argv or self.worker_argv)
        if self.ray_head:
            head = start_ray_head(self.env(db), group)
            extra.update(BENCH_RUNNER="ray_job", BENCH_RAY_ADDRESS=head.dashboard_url)
        if self.cluster:
            head, node = start_ray_cluster(self.env(db), group)
            argv += ["--cluster", head.address]
        run = WorkerRun(
            procs=[],
            log=log,
            group=group,
            head=head,
            node=node,
            argv=[str(self.python), "-P", *argv],
            env=self.env(db, extra),
            processes=self.processes,
        )
        run.extra_roots = [r.process.pid for r in (head, node) if r is not None and r.process]
        try:
            run.spawn()
        except BaseException:
            run.stop()  # no Ray head or node outlives a worker that could not start
            raise
        return run


def _ray_env(env: dict[str, str]) -> dict[str, str]:
    """What Ray's processes need of a system's environment to import its Django site."""
    return {k: v for k, v in env.items() if k.startswith(("BENCH_", "DJANGO_", "PYTHON"))}


def start_ray_head(env: dict[str, str], group: CpuGroup) -> Any:
    """A private Ray head on free ports whose processes are accounted to ``group``.

    Its environment carries the benchmark's settings so that Ray Jobs can bootstrap Django.
    """
    from tests.support.ray import new_head

    head = new_head(num_cpus=os.cpu_count() or 2, env=_ray_env(env), prefix="drb-")
    try:
        with group.joined():
            head.start()
    except BaseException:
        stop_ray(head, None, group)
        raise
    return head


def start_ray_cluster(env: dict[str, str], group: CpuGroup) -> tuple[Any, Any]:
    """A Ray head and a second node on this host (``ray start``, as the units run them), their
    processes accounted to ``group``; the machine's CPUs are split between the two nodes.

    Ray's worker processes on both nodes import the benchmark's Django site (``env``)."""
    from tests.support.ray import RayNode, new_head

    cpus = os.cpu_count() or 2
    # As the Ansible roles write into ray.env: idle Ray worker processes kept per node, 4 per CPU
    # and at least 16, so two drivers (the fair run) do not kill each other's warm processes.
    nodes_env = {**_ray_env(env), "RAY_num_workers_soft_limit": str(max(16, 4 * cpus))}
    head = new_head(num_cpus=max(1, cpus // 2), env=nodes_env, prefix="drc-")
    node = RayNode(head, num_cpus=max(1, cpus - cpus // 2), resources={"bench_node": 1.0})
    try:
        with group.joined():
            head.start()
            node.start()
    except BaseException:
        stop_ray(head, node, group)
        raise
    return head, node


def stop_ray(head: Any, node: Any, group: CpuGroup) -> None:
    """Stop what :func:`start_ray_head` or :func:`start_ray_cluster` started (either may be
    None), node before head (the head would wait for it), then close ``group``."""
    from tests.support.ray import destroy_head

    if node is not None:
        node.kill()
    if head is not None:
        if head.process is not None:  # the head's whole tree: Ray workers run in own sessions
            stop_tree(head.process.pid)
        destroy_head(head)
    group.close()


def all_systems(concurrency: int) -> list[System]:
    """Every system, in the order they take turns."""
    c = str(concurrency)
    cpus_per_slot = round(min(1.0, (os.cpu_count() or 1) / concurrency), 3)
    # ours-local, ours-io and djray070 run the same worker command (0.7.0 has the same CLI and
    # import name, in its own venv); they differ in venv, settings and env.
    worker_argv = ["-m", "django", "django_ray_worker", "--queue", "default", "--concurrency", c]
    local_worker_argv = [*worker_argv, "--local"]
    raw_ray = System(
        key="raw-ray",
        label="raw Ray (ceiling: f.remote() per task)",
        family="none",
        venv="ours",
        table=RAW_TABLE,
        worker_argv=[],
        extras=("cpu",),  # the ceiling of the CPU-bound drain
    )
    return [
        System(
            key="ours-local",
            label="django-ray (ours, --local Ray Core)",
            family="ours",
            venv="ours",
            table=RAY_TABLE,
            worker_argv=local_worker_argv,
            has_bulk=True,
            extras=("unique", "serial", "cpu"),
        ),
        System(
            key="ours-io",
            label=f"django-ray (ours, --local, RAY_CPUS_PER_CALL={cpus_per_slot:g})",
            family="ours",
            venv="ours",
            table=RAY_TABLE,
            worker_argv=local_worker_argv,
            has_bulk=True,
            only=("sleep10",),
            worker_env={"BENCH_CPUS_PER_CALL": f"{cpus_per_slot:g}"},
            note=(
                "the --local worker with RAY_CPUS_PER_CALL = CPUs / concurrency, the setting "
                "for I/O-bound tasks: all slots run at once (sleep drain only)"
            ),
        ),
        System(
            key="ours-nothreads",
            label="django-ray (ours, --local, RAY_THREADS_PER_CALL=1: no threads)",
            family="ours",
            venv="ours",
            table=RAY_TABLE,
            worker_argv=local_worker_argv,
            has_bulk=True,
            only=("sleep10", "cpu"),
            worker_env={"BENCH_THREADS_PER_CALL": "1"},
            note=(
                "the --local worker with RAY_THREADS_PER_CALL = 1: one task body at a time per "
                "Ray call, never in threads (the behaviour before that setting); the baseline of "
                "the sleep and CPU-bound drains"
            ),
        ),
        System(
            key="ours-jobs",
            label="django-ray (ours, Ray Jobs)",
            family="ours",
            venv="ours",
            table=RAY_TABLE,
            worker_argv=worker_argv,  # no mode flag: Ray Jobs, the default runner
            has_bulk=True,
            ray_head=True,
            warm_slots=False,
            caps={"noop": 48, "trickle": 8},
            trickle_interval=2.0,
            note=(
                "one Ray Job per task attempt (a driver process each): 48 no-op tasks and an "
                "8-task trickle, one task every 2 s (a quarter in --quick), enough for its "
                "per-task overhead against Ray Core mode"
            ),
        ),
        System(
            key="djray070",
            label="django-ray 0.7.0 (PyPI, --local)",
            family="djray070",
            venv="djray070",
            settings_system="djray070",
            table=RAY_TABLE,
            worker_argv=local_worker_argv,
            caps={"noop": 600, "sleep10": 300, "hist": 600, "trickle": 250},
            quick_skip=("hist",),
            note=(
                "fewer tasks (600 no-op, 300 sleep, 250 trickle; a quarter in --quick): it moves "
                "~25-65 tasks/s at a steady rate, so the ratio holds and 10,000 would take minutes; "
                "no history drain in --quick"
            ),
        ),
        System(
            key="tasksdb",
            label="django-tasks-db (db_worker)",
            family="tasksdb",
            venv="tasksdb",
            settings_system="tasksdb",
            table=TASKSDB_TABLE,
            worker_argv=[
                "-m",
                "django",
                "db_worker",
                "--queue-name",
                "default",
                "--interval",
                "0.1",
                "--no-startup-delay",
            ],
            caps={"noop": 3000, "sleep10": 1000, "hist": 3000, "trickle": 250},
            note=(
                "one db_worker process (runs one task at a time), polling every 0.1 s; 3,000 "
                "no-op and 1,000 sleep tasks (a quarter in --quick): a steady one-at-a-time rate"
            ),
        ),
        raw_ray,
        System(
            key="ours-cluster",
            label="django-ray (ours, --cluster: a driver on a two-node Ray cluster)",
            family="ours",
            venv="ours",
            table=RAY_TABLE,
            worker_argv=worker_argv,  # start_worker adds --cluster HEAD:PORT
            has_bulk=True,
            cluster=True,
            extras=("fair", "idle"),
            note=(
                "the deployed shape: a Ray head and a second Ray node started with `ray start` "
                "(half the CPUs each), the worker a driver joining them (--cluster); "
                "RSS is the driver process's own; the fair-share run starts two such workers "
                "on one cluster; the idle run (on request) lets a warm worker sit idle first"
            ),
        ),
        replace(
            raw_ray,
            key="raw-ray-cluster",
            label="raw Ray on the same two-node cluster (f.remote() per task)",
            cluster=True,
            extras=(),  # the CPU-bound ceiling is raw-ray's
        ),
        System(
            key="raw-sql",
            label="raw SKIP LOCKED loop (DB ceiling)",
            family="raw",
            venv="ours",
            table=RAW_TABLE,
            worker_argv=["-m", "benchapp.rawsql", "work"],
            has_bulk=True,
        ),
    ]


def venv_python_version(system: System) -> str:
    try:
        return subprocess.run(
            [str(system.python), "-c", "import sys; print(sys.version.split()[0])"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "?"


def package_version(system: System, dist: str) -> str:
    code = f"import importlib.metadata as m; print(m.version({dist!r}))"
    proc = subprocess.run(
        [str(system.python), "-P", "-c", code], capture_output=True, text=True, cwd=SITE
    )
    return proc.stdout.strip() or "?"
