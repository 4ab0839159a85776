"""Accounting: CPU seconds and peak RSS of a worker and every process it starts.

A worker's cost is more than its own process: Ray's GCS, raylet, dashboard and worker processes
are its children (``--local``) or belong to the Ray head started for the run.

CPU: when the machine lets us create a cgroup (v1 ``cpuacct`` or v2), every process of a run is
started inside a fresh one (``preexec_fn``), children inherit it, and the kernel's counter
(``cpuacct.usage`` / ``cpu.stat usage_usec``) includes processes that already exited, were
reparented or were never reaped. Without cgroups we fall back to walking the process trees:
own CPU plus reaped children's (``cutime``/``cstime``), which loses processes whose parent
ignores ``SIGCHLD``.

Memory: the summed RSS of the live processes, sampled every 0.25 s (shared pages are counted
once per process, so it overstates what Ray's processes really share).
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil


def tree(root: int) -> list[psutil.Process]:
    """``root`` and all its live descendants (empty when ``root`` is gone)."""
    try:
        proc = psutil.Process(root)
        return [proc, *proc.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def _cpu_of(proc: psutil.Process) -> float:
    try:
        t = proc.cpu_times()
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return 0.0
    return t.user + t.system + t.children_user + t.children_system


def _rss_of(proc: psutil.Process) -> int:
    try:
        return int(proc.memory_info().rss)
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return 0


def tree_cpu_seconds(roots: list[int]) -> float:
    """CPU seconds (user + system, own + reaped children) of every process under ``roots``."""
    seen: set[int] = set()
    total = 0.0
    for root in roots:
        for proc in tree(root):
            if proc.pid not in seen:
                seen.add(proc.pid)
                total += _cpu_of(proc)
    return total


def tree_rss_bytes(roots: list[int]) -> int:
    """Summed RSS of every process under ``roots`` (shared pages count once per process)."""
    seen: set[int] = set()
    total = 0
    for root in roots:
        for proc in tree(root):
            if proc.pid not in seen:
                seen.add(proc.pid)
                total += _rss_of(proc)
    return total


class CpuGroup:
    """A cgroup holding every process of one run; ``None``-safe fallback when not permitted."""

    ROOTS = (
        ("v1", Path("/sys/fs/cgroup/cpuacct")),
        ("v2", Path("/sys/fs/cgroup/unified")),
        ("v2", Path("/sys/fs/cgroup")),
    )

    def __init__(self, name: str) -> None:
        self.kind: str | None = None
        self.path: Path | None = None
        for kind, root in self.ROOTS:
            probe = root / ("cpuacct.usage" if kind == "v1" else "cgroup.procs")
            if not probe.exists():
                continue
            path = root / f"django-ray-bench-{os.getpid()}-{name}"
            try:
                path.mkdir(exist_ok=True)
                (path / "cgroup.procs").stat()
            except OSError:
                continue
            if kind == "v2" and not (path / "cpu.stat").exists():
                path.rmdir()
                continue
            self.kind, self.path = kind, path
            break

    def preexec(self) -> None:
        """``preexec_fn`` for :class:`subprocess.Popen`: move the child into the group."""
        if self.path is not None:
            (self.path / "cgroup.procs").write_text(str(os.getpid()))

    def pids(self) -> list[int]:
        if self.path is None:
            return []
        try:
            return [int(x) for x in (self.path / "cgroup.procs").read_text().split()]
        except OSError:
            return []

    def cpu_seconds(self) -> float | None:
        if self.path is None:
            return None
        if self.kind == "v1":
            return int((self.path / "cpuacct.usage").read_text()) / 1e9
        for line in (self.path / "cpu.stat").read_text().splitlines():
            if line.startswith("usage_usec"):
                return int(line.split()[1]) / 1e6
        return None

    def kill_all(self) -> None:
        """SIGKILL whatever is still in the group (orphans included)."""
        for _ in range(20):
            pids = self.pids()
            if not pids:
                return
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.1)

    def close(self) -> None:
        if self.path is None:
            return
        self.kill_all()
        for _ in range(50):
            try:
                self.path.rmdir()
                return
            except OSError:
                time.sleep(0.1)


@dataclass
class TreeMonitor:
    """Samples the summed RSS of process trees in a background thread; reads CPU on demand."""

    roots: list[int]
    interval: float = 0.25
    group: CpuGroup | None = None
    peak_rss: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __post_init__(self) -> None:
        self._thread = threading.Thread(target=self._run, name="tree-monitor", daemon=True)
        self._thread.start()

    def _pids(self) -> list[int]:
        if self.group is not None and self.group.path is not None:
            return self.group.pids()
        return [p.pid for root in self.roots for p in tree(root)]

    def rss(self) -> int:
        total = 0
        for pid in set(self._pids()):
            with contextlib.suppress(psutil.Error):
                total += int(psutil.Process(pid).memory_info().rss)
        return total

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.peak_rss = max(self.peak_rss, self.rss())

    def add_root(self, pid: int) -> None:
        self.roots.append(pid)

    def reset_peak(self) -> None:
        self.peak_rss = self.rss()

    @property
    def method(self) -> str:
        if self.group is not None and self.group.path is not None:
            return f"cgroup {self.group.kind}"
        return "process tree"

    def cpu(self) -> float:
        if self.group is not None:
            value = self.group.cpu_seconds()
            if value is not None:
                return value
        return tree_cpu_seconds(self.roots)

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)


def stop_tree(root: int, grace: float = 15.0) -> None:
    """SIGTERM ``root``, wait up to ``grace`` seconds, then SIGKILL it and every descendant.

    Descendants are collected before signalling: Ray's processes outlive a killed driver
    otherwise, and they would eat CPU during the next system's run.
    """
    procs = tree(root)
    if not procs:
        return
    try:
        os.kill(root, signal.SIGCONT)
        os.kill(root, signal.SIGTERM)
    except ProcessLookupError:
        pass
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and procs[0].is_running():
        try:
            if procs[0].status() == psutil.STATUS_ZOMBIE:
                break
        except psutil.NoSuchProcess:
            break
        time.sleep(0.1)
    # Late children too (started after we looked).
    procs += [p for p in tree(root) if p.pid not in {q.pid for q in procs}]
    for proc in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.kill()
    psutil.wait_procs(procs, timeout=10)
