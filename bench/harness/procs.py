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
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

TICKS = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


def _stat(pid: int) -> list[str] | None:
    """Fields of ``/proc/<pid>/stat`` after the command name (field 3 onwards), or None."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return raw[raw.rindex(")") + 2 :].split()


def _children_map() -> dict[int, list[int]]:
    out: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = _stat(int(entry))
            if fields is not None:
                out.setdefault(int(fields[1]), []).append(int(entry))
    return out


def tree(root: int) -> list[int]:
    """``root`` and all its live descendants (empty when ``root`` is gone)."""
    if _stat(root) is None:
        return []
    children = _children_map()
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, []))
    return out


def cpu_seconds_of(pid: int) -> float:
    """Own CPU (utime + stime) plus reaped children's (cutime + cstime) of one process."""
    fields = _stat(pid)
    if fields is None:
        return 0.0
    # After the name: state(0) ppid(1) ... utime(11) stime(12) cutime(13) cstime(14)
    return sum(int(x) for x in fields[11:15]) / TICKS


def rss_bytes_of(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE
    except (OSError, IndexError, ValueError):
        return 0


def tree_cpu_seconds(roots: list[int]) -> float:
    """CPU seconds (user + system, own + reaped children) of every process under ``roots``."""
    pids = {pid for root in roots for pid in tree(root)}
    return sum(cpu_seconds_of(pid) for pid in pids)


def tree_rss_bytes(roots: list[int]) -> int:
    """Summed RSS of every process under ``roots`` (shared pages count once per process)."""
    pids = {pid for root in roots for pid in tree(root)}
    return sum(rss_bytes_of(pid) for pid in pids)


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

    @contextlib.contextmanager
    def joined(self) -> Iterator[None]:
        """Run the body with this process inside the group, so children started meanwhile
        (e.g. by a library that offers no ``preexec_fn``) land in it; then move back."""
        if self.path is None:
            yield
            return
        root = self.path.parent
        home = root
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            _, controllers, rel = line.split(":", 2)
            if (self.kind == "v1" and "cpuacct" in controllers.split(",")) or (
                self.kind == "v2" and controllers == ""
            ):
                home = root / rel.lstrip("/")
                break
        (self.path / "cgroup.procs").write_text(str(os.getpid()))
        try:
            yield
        finally:
            (home / "cgroup.procs").write_text(str(os.getpid()))

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

    def _pids(self) -> set[int]:
        if self.group is not None and self.group.path is not None:
            return set(self.group.pids())
        return {pid for root in self.roots for pid in tree(root)}

    def rss(self) -> int:
        return sum(rss_bytes_of(pid) for pid in self._pids())

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


def alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    fields = _stat(pid)
    return fields is not None and fields[0] != "Z"


def stop_tree(root: int, grace: float = 15.0) -> None:
    """SIGTERM ``root``, wait up to ``grace`` seconds, then SIGKILL it and every descendant.

    Descendants are collected before signalling: Ray's processes outlive a killed driver
    otherwise, and they would eat CPU during the next system's run.
    """
    pids = tree(root)
    if not pids:
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(root, signal.SIGCONT)
        os.kill(root, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and alive(root):
        time.sleep(0.1)
    pids += [pid for pid in tree(root) if pid not in pids]  # late children too
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(alive(pid) for pid in pids):
        time.sleep(0.05)
