"""A private Ray head for tests and benchmarks: every port picked free, its own temp dir.

Started with ``ray start --head --block`` as a child process and stopped by its PID (never with
``ray stop``, which would kill every Ray on the machine).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from django_ray.ray_auth import present_token
from django_ray.ray_dashboard import DashboardError, DashboardUnreachable, RayDashboard
from tests.support.postgres import free_ports

# The ports every Ray node listens on besides its worker port range; given explicitly, since
# Ray's defaults (6379, 8265, ...) may be held by other processes on the host.
NODE_PORT_FLAGS = (
    "--node-manager-port",
    "--object-manager-port",
    "--metrics-export-port",
    "--dashboard-agent-listen-port",
    "--dashboard-agent-grpc-port",
    "--runtime-env-agent-port",
)


def worker_port_base(taken: set[int], span: int = 200) -> int:
    """First port of a ``span``-wide Ray worker port range clear of ``taken``.

    Below the kernel's ephemeral range (32768 and up by default), so ports the kernel hands
    out later (to other heads, nodes, servers of the tests) never fall inside it.
    """
    while True:
        base = 10_000 + secrets.randbelow(20_000 - span)
        if not any(base <= port <= base + span for port in taken):
            return base


class RayHeadUnavailable(RuntimeError):
    """The head did not come up; the message carries the end of its log."""


@dataclass
class RayHead:
    temp_dir: Path
    gcs_port: int
    dashboard_port: int
    num_cpus: int
    env: dict[str, str] = field(default_factory=dict)
    process: subprocess.Popen[bytes] | None = None
    # Every port the head listens on (set by start()), so its nodes can keep clear of them.
    ports: set[int] = field(default_factory=set)
    # False starts the head like a Ray Core-only cluster: no dashboard, so no Jobs API and no
    # state API (the Ray Core runner must then manage without them).
    dashboard: bool = True

    @property
    def address(self) -> str:
        """GCS address for ``ray.init(address=...)`` / ``--cluster``."""
        return f"127.0.0.1:{self.gcs_port}"

    @property
    def dashboard_url(self) -> str:
        """Jobs API address for the Ray Job runner."""
        return f"http://127.0.0.1:{self.dashboard_port}"

    def ray_bin(self) -> str:
        return str(Path(sys.executable).with_name("ray"))

    def start(self, timeout: float = 90.0) -> None:
        flags = ("--ray-client-server-port", *NODE_PORT_FLAGS)
        if self.gcs_port == self.dashboard_port:
            raise ValueError(f"gcs_port and dashboard_port are both {self.gcs_port}")
        ports = {
            "--port": self.gcs_port,
            "--dashboard-port": self.dashboard_port,
            **dict(
                zip(
                    flags,
                    free_ports(len(flags), avoid=(self.gcs_port, self.dashboard_port)),
                    strict=True,
                )
            ),
        }
        self.ports = set(ports.values())
        worker_base = worker_port_base(self.ports)
        args = [
            self.ray_bin(),
            "start",
            "--head",
            "--block",
            "--node-ip-address=127.0.0.1",
            "--dashboard-host=127.0.0.1",
            f"--num-cpus={self.num_cpus}",
            f"--temp-dir={self.temp_dir}",
            "--disable-usage-stats",
            f"--min-worker-port={worker_base}",
            f"--max-worker-port={worker_base + 200}",
            *[f"{k}={v}" for k, v in ports.items()],
        ]
        if not self.dashboard:
            args.append("--include-dashboard=false")
        env = {**os.environ, **self.env}
        env.pop("RAY_ADDRESS", None)
        log = open(self.temp_dir.parent / "ray-head.log", "ab")  # noqa: SIM115 - lives with the head
        self.process = subprocess.Popen(
            args, env=env, stdout=log, stderr=log, start_new_session=True
        )
        self.wait_ready(timeout)

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise RayHeadUnavailable(
                    f"ray start exited {self.process.returncode}:\n{self.log_tail()}"
                )
            if not self.dashboard:
                # `ray start --block` prints this once the GCS and the raylet are up.
                if "Ray runtime started" in self.log_tail():
                    return
                time.sleep(0.5)
                continue
            try:
                RayDashboard(self.dashboard_url, timeout=2).version()
                return
            except (DashboardError, DashboardUnreachable):
                pass
            time.sleep(0.5)
        raise RayHeadUnavailable(f"Ray head not ready after {timeout}s:\n{self.log_tail()}")

    def log_tail(self) -> str:
        path = self.temp_dir.parent / "ray-head.log"
        return path.read_text(errors="replace")[-3000:] if path.exists() else ""

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        # SIGTERM to `ray start --block` alone: it then stops the processes it started (about a
        # second). SIGTERM to the whole session instead made it hang for its full timeout. What
        # is left in the session afterwards (dashboard forkserver children) is killed.
        os.kill(self.process.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=30)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()

    def restart(self) -> None:
        self.stop()
        self.start()


# GCS health checks fast enough for tests to see a dead node within seconds (Ray's defaults take
# 15 s or more); passed as a head's ``env``.
FAST_NODE_DEATH_ENV = {
    "RAY_health_check_initial_delay_ms": "1000",
    "RAY_health_check_period_ms": "1000",
    "RAY_health_check_timeout_ms": "1000",
    "RAY_health_check_failure_threshold": "3",
}


@dataclass
class RayNode:
    """A second Ray node joined to a :class:`RayHead` on this host (``ray start --block``)."""

    head: RayHead
    num_cpus: int
    resources: dict[str, float]
    process: subprocess.Popen[bytes] | None = None
    frozen: list[int] = field(default_factory=list)

    def start(self, timeout: float = 60.0) -> None:
        import json

        ports = dict(
            zip(
                NODE_PORT_FLAGS,
                free_ports(len(NODE_PORT_FLAGS), avoid=self.head.ports),
                strict=True,
            )
        )
        worker_base = worker_port_base(self.head.ports | set(ports.values()), span=100)
        args = [
            self.head.ray_bin(),
            "start",
            f"--address={self.head.address}",
            "--block",
            "--node-ip-address=127.0.0.1",
            f"--num-cpus={self.num_cpus}",
            f"--resources={json.dumps(self.resources)}",
            "--disable-usage-stats",
            f"--min-worker-port={worker_base}",
            f"--max-worker-port={worker_base + 100}",
            *[f"{flag}={port}" for flag, port in ports.items()],
        ]
        env = {**os.environ, **self.head.env}
        env.pop("RAY_ADDRESS", None)
        present_token(env)
        log = open(self.head.temp_dir.parent / "ray-node.log", "ab")  # noqa: SIM115
        self.process = subprocess.Popen(
            args, env=env, stdout=log, stderr=log, start_new_session=True
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RayHeadUnavailable(
                    f"ray start (node) exited {self.process.returncode}:\n{self.log_tail()}"
                )
            if self.node_id() is not None:
                return
            time.sleep(0.5)
        raise RayHeadUnavailable(f"Ray node not alive after {timeout}s:\n{self.log_tail()}")

    def log_tail(self) -> str:
        path = self.head.temp_dir.parent / "ray-node.log"
        return path.read_text(errors="replace")[-3000:] if path.exists() else ""

    def node_id(self) -> str | None:
        """This node's id once the head lists it alive (found by its custom resource)."""
        import http.client

        wanted = next(iter(self.resources))
        try:
            listed = nodes(self.head)
        except (OSError, http.client.HTTPException):  # the dashboard is still starting
            return None
        for node in listed:
            if node.get("state") == "ALIVE" and wanted in (node.get("resources_total") or {}):
                return str(node["node_id"])
        return None

    def _processes(self) -> list[int]:
        """The node's process group and every descendant (Ray workers run in their own
        sessions, so the process group alone misses them)."""
        assert self.process is not None
        parents: dict[int, int] = {}
        members: set[int] = set()
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            # pid (comm) state ppid pgrp ...: comm may hold spaces, so split after its ')'.
            fields = stat[stat.rindex(")") + 2 :].split()
            pid, ppid, pgid = int(entry.name), int(fields[1]), int(fields[2])
            parents[pid] = ppid
            if pgid == self.process.pid:
                members.add(pid)
        pids = set(members)
        grew = True
        while grew:
            more = {pid for pid, ppid in parents.items() if ppid in pids and pid not in pids}
            pids |= more
            grew = bool(more)
        return sorted(pids)

    def freeze(self) -> None:
        """SIGSTOP every process of the node: like a host that crashed or lost its network,
        connections stay open and nothing answers (kill -9 would reset them instead)."""
        self.frozen = self._processes()
        for pid in self.frozen:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGSTOP)

    def kill(self) -> None:
        """SIGKILL every process of the node (frozen ones included)."""
        if self.process is None:
            return
        for pid in {*self.frozen, *(self._processes() if self.process.poll() is None else [])}:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()


def _state_api(head: RayHead, path: str) -> list[dict[str, object]]:
    return RayDashboard(head.dashboard_url).request("GET", path)["data"]["result"]["result"]


def nodes(head: RayHead) -> list[dict[str, object]]:
    """The cluster's nodes as Ray's state API lists them (``node_id``, ``state``,
    ``resources_total``). A head without a dashboard has no state API: then the GCS is asked
    through a short-lived driver process, and the answer has the same keys."""
    if head.dashboard:
        return _state_api(head, "/api/v0/nodes?limit=100&detail=true")
    return _gcs_nodes(head)


_GCS_NODES_SCRIPT = """
import json, sys
import ray
ray.init(address=sys.argv[1], log_to_driver=False, configure_logging=False)
print(json.dumps([
    {"node_id": n["NodeID"], "state": "ALIVE" if n["Alive"] else "DEAD",
     "resources_total": n.get("Resources") or {}}
    for n in ray.nodes()
]))
"""


def _gcs_nodes(head: RayHead) -> list[dict[str, object]]:
    import http.client
    import json

    env = {**os.environ, **head.env}
    env.pop("RAY_ADDRESS", None)
    present_token(env)
    done = subprocess.run(
        [sys.executable, "-c", _GCS_NODES_SCRIPT, head.address],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    if done.returncode != 0:
        # Raised as the dashboard path's errors are, so callers poll through a starting GCS.
        raise http.client.HTTPException(f"ray.nodes() failed: {done.stderr[-1000:]}")
    return list(json.loads(done.stdout.strip().splitlines()[-1]))


def tasks_of_job(head: RayHead, job_id: str) -> list[dict[str, object]]:
    """Tasks Ray's state API lists for the Ray job (driver) ``job_id`` (name, state, task_id)."""
    return _state_api(
        head,
        f"/api/v0/tasks?limit=1000&filter_keys=job_id&filter_predicates=%3D&filter_values={job_id}",
    )


def tasks_on_node(head: RayHead, node_id: str) -> list[dict[str, object]]:
    """Tasks Ray's state API places on ``node_id`` (name, state, task_id)."""
    return _state_api(
        head,
        f"/api/v0/tasks?limit=1000&filter_keys=node_id&filter_predicates=%3D&filter_values={node_id}",
    )


def new_head(
    num_cpus: int = 2,
    env: dict[str, str] | None = None,
    dashboard: bool = True,
    base_dir: Path | None = None,
    prefix: str = "django-ray-ray-",
) -> RayHead:
    """A head (not started yet) on free ports with its own temp dir; :func:`destroy_head`
    removes both. Keep ``base_dir`` + ``prefix`` short: Ray's unix socket paths under it must
    stay within 107 bytes."""
    root = Path(tempfile.mkdtemp(prefix=prefix, dir=base_dir or "/tmp"))
    temp_dir = root / "t"
    temp_dir.mkdir()
    gcs_port, dashboard_port = free_ports(2)
    return RayHead(
        temp_dir=temp_dir,
        gcs_port=gcs_port,
        dashboard_port=dashboard_port,
        num_cpus=num_cpus,
        env=dict(env or {}),
        dashboard=dashboard,
    )


def start_head(num_cpus: int = 2, base_dir: Path | None = None) -> RayHead:
    head = new_head(num_cpus, base_dir=base_dir)
    head.start()
    return head


def destroy_head(head: RayHead) -> None:
    head.stop()
    shutil.rmtree(head.temp_dir.parent, ignore_errors=True)


@contextlib.contextmanager
def running_ray_head(num_cpus: int = 2) -> Iterator[RayHead]:
    head = start_head(num_cpus)
    try:
        yield head
    finally:
        destroy_head(head)
