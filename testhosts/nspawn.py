"""Boot real systemd Debian 13 (trixie) hosts on one machine with ``systemd-nspawn``.

No Docker and no systemd as PID 1 are needed, only root. The pieces, each usable alone:

* :func:`base_root` builds (once, cached) a debootstrapped trixie root directory;
* :func:`layer` stacks a cached overlay layer on top (for example PostgreSQL installed), built by
  running a shell script inside the lower layers with the machine's network;
* :class:`Lab` is a private bridge with static addresses plus any number of :class:`Host` s,
  each an overlay over the base (and layers) booted with
  ``systemd-nspawn --boot --register=no --keep-unit``, every host in every ``/etc/hosts``;
* :meth:`Host.run` runs a command inside a host through ``nsenter``.

Caches live in ``$DJANGO_RAY_LAB_CACHE`` (default ``/var/cache/django-ray-test``) and are shared by
every checkout on the machine; concurrent builders serialise on a lock file. Nothing here leaves
the bridges it creates: containers have no route out.

Use :func:`unavailable_reason` to skip tests on machines that cannot boot containers.
The module is also a command line (``python -m testhosts.nspawn --help``) so shell scripts and
molecule playbooks can boot, run and tear down the same hosts; its state lives in
``/run/django-ray-lab/LAB.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import ipaddress
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TextIO

SUITE = "trixie"
MIRROR = os.environ.get("DJANGO_RAY_LAB_MIRROR", "http://deb.debian.org/debian")
CACHE = Path(os.environ.get("DJANGO_RAY_LAB_CACHE", "/var/cache/django-ray-test"))
STATE_DIR = Path("/run/django-ray-lab")
CGROUP_PARENT = "django-ray-lab"
#: Packages of the shared base root. Ansible needs ssh/sudo/python3-apt; the .deb needs python3.13.
BASE_PACKAGES: tuple[str, ...] = (
    "systemd",
    "systemd-sysv",
    "dbus",
    "python3",
    "openssh-server",
    "iproute2",
    "sudo",
    "python3-apt",
    "python3-venv",
    "python3-pip",
    "python3-packaging",
    "acl",
    "curl",
    "ca-certificates",
    "procps",
    "less",
)
HOST_TOOLS = {
    "debootstrap": "debootstrap",
    "systemd-nspawn": "systemd-container",
    "ip": "iproute2",
    "nsenter": "util-linux",
}
CONTAINER_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class LabError(RuntimeError):
    """A lab host or image could not be built, booted or reached."""


def log(message: str) -> None:
    """Progress line on stderr (tests run long steps; say what is happening)."""
    print(f"[lab {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------
# Capability check and host tools


def unavailable_reason() -> str | None:
    """Why this machine cannot boot nspawn containers, or None if it can (tools get installed)."""
    if sys.platform != "linux":
        return "systemd-nspawn containers need Linux"
    if os.geteuid() != 0:
        return "booting systemd-nspawn containers needs root"
    if not Path("/sys/fs/cgroup").is_dir():
        return "no /sys/fs/cgroup: cgroups are not mounted"
    try:
        filesystems = Path("/proc/filesystems").read_text()
    except OSError:
        return "cannot read /proc/filesystems"
    if "overlay" not in filesystems:
        return "the kernel has no overlay filesystem (needed for container roots)"
    if not shutil.which("apt-get") and any(not shutil.which(tool) for tool in HOST_TOOLS):
        return "missing debootstrap/systemd-nspawn and no apt-get to install them"
    return None


def ensure_host_tools() -> None:
    """Install debootstrap, systemd-nspawn, iproute2 with apt-get when any is missing."""
    ensure_tools(HOST_TOOLS)


def ensure_tools(tools: dict[str, str]) -> None:
    """Install the Debian packages of the ``{command: package}`` tools that are not on PATH.

    ``scripts/test`` installs every tool up front; this is the fallback for a scenario or test
    run on its own. apt's output goes to stderr (never to stdout, which may be a JSON answer) and a
    failure is a :class:`LabError` naming the packages and the command to run by hand.
    """
    missing = sorted({pkg for tool, pkg in tools.items() if not shutil.which(tool)})
    if not missing:
        return
    log(f"installing host tools: {' '.join(missing)}")
    hint = f"install them by hand (apt-get install {' '.join(missing)}) and run again"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for argv in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", *missing]):
        try:
            result = subprocess.run(
                argv, env=env, stdout=sys.stderr, stderr=subprocess.PIPE, text=True
            )
        except OSError as error:
            raise LabError(
                f"cannot run {argv[0]} to install {' '.join(missing)}: {error}; {hint}"
            ) from error
        if result.returncode != 0:
            raise LabError(
                f"{' '.join(argv[:2])} failed (exit {result.returncode}) while installing "
                f"{' '.join(missing)}: {result.stderr.strip()[-1500:]}\n{hint}"
            )
    still = sorted(tool for tool in tools if not shutil.which(tool))
    if still:
        raise LabError(
            f"apt-get installed {' '.join(missing)} but {' '.join(still)} is still "
            f"not on PATH ({os.environ.get('PATH', '')}); {hint}"
        )


@contextlib.contextmanager
def machine_output() -> Iterator[TextIO]:
    """Keep stdout for one machine-readable answer: everything else goes to stderr meanwhile.

    Molecule parses ``lab.py up``'s stdout as JSON. Anything this process or its children print
    while working (apt, debootstrap, a cache build, a stray ``print``) is redirected at the file
    descriptor level to stderr; the answer is written to the yielded stream, the real stdout.
    """
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    answer = os.fdopen(os.dup(saved), "w")
    try:
        yield answer
    finally:
        answer.flush()
        answer.close()
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


@contextlib.contextmanager
def _locked(name: str) -> Iterator[None]:
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / f".{name}.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _key(*parts: object) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:12]


# --------------------------------------------------------------------------------------------
# Images: base root and overlay layers


def base_root(packages: Sequence[str] = BASE_PACKAGES) -> Path:
    """A cached debootstrapped trixie root (minbase + ``packages``). Built once (~1 min)."""
    ensure_host_tools()
    target = CACHE / "roots" / f"base-{SUITE}-{_key(SUITE, sorted(packages))}"
    if (target / ".complete").exists():
        return target
    with _locked("base"):
        if (target / ".complete").exists():
            return target
        tmp = target.with_name(target.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        log(f"debootstrap {SUITE} into {target} (once; about a minute)")
        started = time.monotonic()
        cmd = [
            "debootstrap",
            "--variant=minbase",
            f"--include={','.join(packages)}",
            SUITE,
            str(tmp),
            MIRROR,
        ]
        result = subprocess.run(cmd, capture_output=True, text=True)
        if result.returncode != 0:
            tail = (result.stdout + result.stderr)[-3000:]
            raise LabError(f"debootstrap {SUITE} failed (network to {MIRROR}?):\n{tail}")
        _prepare_root(tmp)
        (tmp / ".complete").write_text(time.strftime("%F %T\n"))
        tmp.rename(target)
        log(f"base root ready in {time.monotonic() - started:.0f} s")
    return target


def _prepare_root(root: Path) -> None:
    """Settings every lab host wants: no services on package install, quiet apt, no DNS waits."""
    (root / "usr/sbin/policy-rc.d").write_text("#!/bin/sh\nexit 101\n")
    (root / "usr/sbin/policy-rc.d").chmod(0o755)
    (root / "etc/apt/apt.conf.d/90django-ray-lab").write_text(
        'APT::Install-Recommends "false";\nAPT::Install-Suggests "false";\n'
        'Acquire::Languages "none";\n'
    )
    # Empty root password is not needed; machine-id gets generated at first boot per host.
    (root / "etc/machine-id").write_text("")
    # Containers resolve nothing: every lab host is in /etc/hosts.
    (root / "etc/resolv.conf").unlink(missing_ok=True)
    (root / "etc/resolv.conf").write_text("")
    # Serial getty on the nspawn console is useless and noisy.
    for unit in ("console-getty.service", "getty@tty1.service"):
        link = root / "etc/systemd/system" / unit
        link.unlink(missing_ok=True)
        link.symlink_to("/dev/null")
    networkd = root / "etc/systemd/system/multi-user.target.wants/systemd-networkd.service"
    networkd.parent.mkdir(parents=True, exist_ok=True)
    if not networkd.exists():
        networkd.unlink(missing_ok=True)
        networkd.symlink_to("/usr/lib/systemd/system/systemd-networkd.service")


def layer(name: str, lowers: Sequence[Path], script: str, *, network: bool = True) -> Path:
    """A cached overlay layer: ``script`` (bash) run inside ``lowers`` (top first).

    The layer is the overlay's upper directory and is stacked as another lower dir later.
    ``network=True`` shares the machine's network (apt to the Debian mirror); the script runs with
    a ``policy-rc.d`` that starts no services. Rebuilt whenever the lowers or the script change.
    """
    target = CACHE / "layers" / f"{name}-{_key(name, [str(p) for p in lowers], script)}"
    if (target / ".complete").exists():
        return target
    with _locked(f"layer-{name}"):
        if (target / ".complete").exists():
            return target
        log(f"building layer {name} (cached afterwards)")
        started = time.monotonic()
        work = target.with_name(target.name + ".tmp")
        if work.exists():
            _umount(work / "merged")
            shutil.rmtree(work)
        with overlay(lowers, work) as merged:
            run_in_root(merged, script, network=network)
        (work / "upper" / ".complete").write_text(time.strftime("%F %T\n"))
        (work / "upper").rename(target)
        shutil.rmtree(work, ignore_errors=True)
        log(f"layer {name} ready in {time.monotonic() - started:.0f} s")
    return target


def run_in_root(
    root: Path,
    script: str,
    *,
    network: bool = True,
    binds: Sequence[tuple[Path, str]] = (),
    binds_ro: Sequence[tuple[Path, str]] = (),
    timeout: float = 1800,
    stream: bool = True,
    on_start: Callable[[subprocess.Popen[str]], None] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run a bash ``script`` in ``root`` with ``systemd-nspawn`` (no boot).

    Output is collected (``.stdout``) and, with ``stream``, echoed to stderr as it comes.
    ``on_start`` receives the nspawn process (e.g. to stop it from another thread).
    ``network=False`` gives the script a private network namespace with only loopback (offline).
    """
    machine = f"lab-run-{os.getpid()}-{time.monotonic_ns() % 100000}"
    cmd = [
        "systemd-nspawn",
        "--quiet",
        "--register=no",
        "--keep-unit",
        "--as-pid2",
        f"--machine={machine}",
        f"--directory={root}",
        "--resolv-conf=copy-host" if network else "--resolv-conf=off",
        "--setenv=DEBIAN_FRONTEND=noninteractive",
        "--setenv=LANG=C.UTF-8",
        f"--setenv=PATH={CONTAINER_PATH}",
    ]
    if not network:
        cmd.append("--private-network")
    cmd += [f"--bind={src}:{dst}" for src, dst in binds]
    cmd += [f"--bind-ro={src}:{dst}" for src, dst in binds_ro]
    cmd += ["/bin/bash", "-euo", "pipefail", "-c", script]
    lines: list[str] = []
    deadline = time.monotonic() + timeout
    proc = subprocess.Popen(
        cmd,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        preexec_fn=_own_cgroup(machine),
        env={**os.environ, "SYSTEMD_NSPAWN_UNIFIED_HIERARCHY": "1"},
    )
    if on_start is not None:
        on_start(proc)
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            # nspawn cannot remove its propagate dir here and says so; _remove_propagate does.
            if "nspawn/propagate" in line:
                continue
            lines.append(line)
            if stream and not line.startswith(("I: ", "N: ")):
                sys.stderr.write(line)
                sys.stderr.flush()
            if time.monotonic() > deadline:
                proc.kill()
                raise LabError(f"script in {root} ran longer than {timeout:.0f} s")
        returncode = proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        _remove_propagate(machine)
        _remove_cgroup(machine)
    result = subprocess.CompletedProcess(cmd, returncode, "".join(lines), None)
    if result.returncode != 0:
        raise LabError(
            f"script failed in {root} (exit {result.returncode}):\n{result.stdout[-4000:]}"
        )
    return result


@contextlib.contextmanager
def overlay(lowers: Sequence[Path], work: Path) -> Iterator[Path]:
    """Mount an overlay of ``lowers`` (top first) with upper/work dirs under ``work``."""
    for sub in ("upper", "work", "merged"):
        (work / sub).mkdir(parents=True, exist_ok=True)
    merged = work / "merged"
    _mount_overlay(lowers, work)
    try:
        yield merged
    finally:
        _umount(merged)


def _mount_overlay(lowers: Sequence[Path], work: Path) -> None:
    lower = ":".join(str(p) for p in lowers)
    options = f"lowerdir={lower},upperdir={work / 'upper'},workdir={work / 'work'}"
    subprocess.run(
        ["mount", "-t", "overlay", "overlay", "-o", options, str(work / "merged")], check=True
    )


def _umount(path: Path) -> None:
    if os.path.ismount(path):
        subprocess.run(["umount", "-l", str(path)], check=False)


def _own_cgroup(name: str) -> Callable[[], None]:
    """preexec_fn: move the child into fresh cgroups so nspawn owns a clean subtree."""

    def move() -> None:
        pid = str(os.getpid())
        for hierarchy in ("unified", "systemd"):
            base = Path("/sys/fs/cgroup") / hierarchy
            if not (base / "cgroup.procs").exists():
                continue
            group = base / CGROUP_PARENT / name
            try:
                group.mkdir(parents=True, exist_ok=True)
                (group / "cgroup.procs").write_text(pid)
            except OSError:
                pass
        os.setsid()

    return move


def _remove_cgroup(name: str) -> None:
    for hierarchy in ("unified", "systemd"):
        group = Path("/sys/fs/cgroup") / hierarchy / CGROUP_PARENT / name
        if not group.exists():
            continue
        # Children first (the container's own tree), deepest first.
        for sub in sorted(group.rglob("*"), key=lambda p: len(p.parts), reverse=True):
            if sub.is_dir():
                with contextlib.suppress(OSError):
                    sub.rmdir()
        with contextlib.suppress(OSError):
            group.rmdir()


# --------------------------------------------------------------------------------------------
# Booted hosts on a private bridge


@dataclass
class Host:
    """One booted container. ``name`` is the hostname; ``machine`` the nspawn machine name."""

    name: str
    address: str
    machine: str
    workdir: str
    lowers: list[str]
    nspawn_pid: int = 0
    leader: int = 0
    log_file: str = ""

    @property
    def root(self) -> Path:
        """The host's root directory as seen from the machine (writes show up inside)."""
        return Path(self.workdir) / "merged"

    @property
    def upper(self) -> Path:
        """Everything the host changed compared to its image (kept for reboots)."""
        return Path(self.workdir) / "upper"

    def run(
        self,
        command: str | Sequence[str],
        *,
        check: bool = True,
        timeout: float = 600,
        env: dict[str, str] | None = None,
        input: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run ``command`` (a shell string or argv) inside the host as root; output captured."""
        if not self.leader:
            raise LabError(f"host {self.name} is not booted")
        argv = ["/bin/bash", "-c", command] if isinstance(command, str) else list(command)
        environment = {"PATH": CONTAINER_PATH, "LANG": "C.UTF-8", "HOME": "/root", "TERM": "dumb"}
        environment.update(env or {})
        cmd = [
            "nsenter",
            "-t",
            str(self.leader),
            "-m",
            "-u",
            "-i",
            "-n",
            "-p",
            "--",
            "env",
            "-i",
            *[f"{k}={v}" for k, v in environment.items()],
            *argv,
        ]
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, input=input)
        if check and result.returncode != 0:
            shown = command if isinstance(command, str) else shlex.join(command)
            raise LabError(
                f"{self.name}: `{shown}` exited {result.returncode}\n"
                f"--- stdout\n{result.stdout[-3000:]}\n--- stderr\n{result.stderr[-3000:]}"
            )
        return result

    def copy_in(self, source: Path, dest: str, mode: int | None = None) -> None:
        """Copy a file from the machine into the host's filesystem."""
        target = self.root / dest.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target)
        if mode is not None:
            target.chmod(mode)

    def alive(self) -> bool:
        """True while the container's init runs."""
        return bool(self.leader) and Path(f"/proc/{self.leader}").exists()

    def wait_running(self, timeout: float = 120) -> str:
        """Wait until systemd inside reports running/degraded; returns that state."""
        deadline = time.monotonic() + timeout
        state = ""
        while time.monotonic() < deadline:
            if not self.alive():
                raise LabError(f"host {self.name} died while booting; see {self.log_file}")
            result = self.run(["systemctl", "is-system-running"], check=False, timeout=30)
            state = result.stdout.strip()
            if state in ("running", "degraded"):
                return state
            time.sleep(0.3)
        raise LabError(f"host {self.name} not up after {timeout:.0f} s (state {state!r})")


@dataclass
class Lab:
    """A private bridge ``br-<name>`` with static addresses and booted hosts on it.

    Host addresses are ``<subnet>.10``, ``.11``, ...; the machine side of the bridge is
    ``<subnet>.1``. Use as a context manager or call :meth:`up` / :meth:`down`.
    """

    name: str
    subnet: str = ""
    hosts: list[Host] = field(default_factory=list)

    def __post_init__(self) -> None:
        if len(self.name) > 8 or not self.name.replace("-", "").isalnum():
            raise LabError(
                f"lab name {self.name!r}: use at most 8 letters/digits (interface names)"
            )
        if not self.subnet:
            self.subnet = _free_subnet(self.name)

    @property
    def bridge(self) -> str:
        """The bridge interface on the machine."""
        return f"br-{self.name}"

    @property
    def gateway(self) -> str:
        """The machine's address on the bridge (serve caches here)."""
        return f"{self.subnet}.1"

    def host(self, name: str) -> Host:
        """The host called ``name``."""
        for host in self.hosts:
            if host.name == name:
                return host
        raise LabError(f"lab {self.name} has no host {name!r} (has {[h.name for h in self.hosts]})")

    def up(self, names: Sequence[str], lowers: Sequence[Path], *, timeout: float = 180) -> None:
        """Create the bridge and boot one host per name over ``lowers`` (top layer first)."""
        if unavailable_reason():
            raise LabError(unavailable_reason() or "")
        ensure_host_tools()
        self._bridge_up()
        for index, hostname in enumerate(names):
            workdir = CACHE / "run" / self.name / hostname
            host = Host(
                name=hostname,
                address=f"{self.subnet}.{10 + index}",
                machine=f"{self.name}-{index}",
                workdir=str(workdir),
                lowers=[str(p) for p in lowers],
            )
            self.hosts.append(host)
        for host in self.hosts:
            self._boot(host, fresh=True)
        self.save()
        for host in self.hosts:
            state = host.wait_running(timeout)
            log(f"host {host.name} ({host.address}) is {state}")

    def _bridge_up(self) -> None:
        if not Path(f"/sys/class/net/{self.bridge}").exists():
            subprocess.run(["ip", "link", "add", self.bridge, "type", "bridge"], check=True)
            subprocess.run(
                ["ip", "addr", "add", f"{self.gateway}/24", "dev", self.bridge], check=True
            )
        subprocess.run(["ip", "link", "set", self.bridge, "up"], check=True)

    def _write_identity(self, host: Host) -> None:
        root = host.root
        (root / "etc/hostname").write_text(host.name + "\n")
        lines = ["127.0.0.1 localhost", "::1 localhost ip6-localhost ip6-loopback"]
        lines += [f"{h.address} {h.name}" for h in self.hosts]
        (root / "etc/hosts").write_text("\n".join(lines) + "\n")
        network = root / "etc/systemd/network/10-lab.network"
        network.parent.mkdir(parents=True, exist_ok=True)
        network.write_text(
            "[Match]\nName=host0\n\n[Network]\n"
            f"Address={host.address}/24\nLinkLocalAddressing=no\nIPv6AcceptRA=no\n"
        )

    def _boot(self, host: Host, *, fresh: bool) -> None:
        workdir = Path(host.workdir)
        if fresh and workdir.exists():
            _umount(host.root)
            shutil.rmtree(workdir)
        for sub in ("upper", "work", "merged"):
            (workdir / sub).mkdir(parents=True, exist_ok=True)
        _mount_overlay([Path(p) for p in host.lowers], workdir)
        self._write_identity(host)
        _remove_propagate(host.machine)
        host.log_file = str(workdir / "console.log")
        cmd = [
            "systemd-nspawn",
            "--boot",
            "--register=no",
            "--keep-unit",
            "--quiet",
            f"--machine={host.machine}",
            f"--hostname={host.name}",
            f"--directory={host.root}",
            f"--network-bridge={self.bridge}",
            "--resolv-conf=off",
            "--timezone=off",
            "--link-journal=no",
            "--console=passive",
        ]
        with open(host.log_file, "ab") as out:
            proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                preexec_fn=_own_cgroup(host.machine),
                env={**os.environ, "SYSTEMD_NSPAWN_UNIFIED_HIERARCHY": "1"},
            )
        host.nspawn_pid = proc.pid
        host.leader = _find_leader(proc.pid, host)
        log(f"booting {host.name}: nspawn pid {proc.pid}, init pid {host.leader}")

    def down(self) -> None:
        """Stop every host, unmount, remove work dirs, the bridge and the state file."""
        for host in self.hosts:
            stop_host(host)
            shutil.rmtree(host.workdir, ignore_errors=True)
        if Path(f"/sys/class/net/{self.bridge}").exists():
            subprocess.run(["ip", "link", "del", self.bridge], check=False)
        (STATE_DIR / f"{self.name}.json").unlink(missing_ok=True)
        shutil.rmtree(CACHE / "run" / self.name, ignore_errors=True)

    def reboot(self, name: str, *, timeout: float = 180) -> None:
        """Stop a host and boot it again keeping its disk (the overlay's upper dir)."""
        host = self.host(name)
        stop_host(host)
        self._boot(host, fresh=False)
        self.save()
        host.wait_running(timeout)

    def save(self) -> None:
        """Write the lab's state so another process (CLI) can run commands or tear down."""
        STATE_DIR.mkdir(parents=True, exist_ok=True)
        data = {"name": self.name, "subnet": self.subnet, "hosts": [asdict(h) for h in self.hosts]}
        (STATE_DIR / f"{self.name}.json").write_text(json.dumps(data, indent=2))

    @classmethod
    def load(cls, name: str) -> Lab:
        """A lab booted by another process, from its state file."""
        path = STATE_DIR / f"{name}.json"
        if not path.exists():
            raise LabError(f"no lab {name!r} is up ({path} missing)")
        data = json.loads(path.read_text())
        return cls(
            name=data["name"], subnet=data["subnet"], hosts=[Host(**h) for h in data["hosts"]]
        )

    def __enter__(self) -> Lab:
        return self

    def __exit__(self, *exc: object) -> None:
        self.down()


def _free_subnet(name: str) -> str:
    """A 10.x.y.0/24 derived from the lab name, avoiding subnets already on the machine."""
    used = set()
    out = subprocess.run(["ip", "-4", "-o", "addr"], capture_output=True, text=True).stdout
    for line in out.splitlines():
        for part in line.split():
            if "/" in part and part[0].isdigit():
                with contextlib.suppress(ValueError):
                    used.add(ipaddress.ip_interface(part).network)
    seed = int(hashlib.sha256(name.encode()).hexdigest(), 16)
    for attempt in range(200):
        value = (seed + attempt * 7919) % 60000
        subnet = f"10.{200 + value // 1000 % 50}.{value % 250 + 1}"
        net = ipaddress.ip_network(f"{subnet}.0/24")
        if not any(net.overlaps(u) for u in used):
            return subnet
    raise LabError("no free 10.x.y.0/24 subnet for the lab bridge")


def _find_leader(nspawn_pid: int, host: Host, timeout: float = 30) -> int:
    """The container's PID 1 seen from the machine: a descendant whose NSpid ends with 1."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not Path(f"/proc/{nspawn_pid}").exists():
            raise LabError(
                f"systemd-nspawn for {host.name} exited at boot; log:\n"
                + Path(host.log_file).read_text()[-3000:]
            )
        for child in _children(nspawn_pid):
            try:
                status = Path(f"/proc/{child}/status").read_text()
            except OSError:
                continue
            for line in status.splitlines():
                if line.startswith("NSpid:"):
                    ids = line.split()[1:]
                    if len(ids) > 1 and ids[-1] == "1":
                        return child
        time.sleep(0.1)
    raise LabError(f"no init process found for {host.name} after {timeout} s")


def _children(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with contextlib.suppress(OSError):
            found += [int(c) for c in (task / "children").read_text().split()]
    return found


def _remove_propagate(machine: str) -> None:
    path = Path("/run/systemd/nspawn/propagate") / machine
    if path.exists():
        with contextlib.suppress(OSError):
            subprocess.run(["umount", "-l", str(path)], capture_output=True)
            shutil.rmtree(path, ignore_errors=True)


def stop_host(host: Host, timeout: float = 30) -> None:
    """Power a host off (SIGKILL after ``timeout``), unmount its root, clean its cgroup."""
    if host.nspawn_pid and Path(f"/proc/{host.nspawn_pid}").exists():
        # nspawn turns SIGTERM into an orderly poweroff of the container.
        with contextlib.suppress(ProcessLookupError):
            os.kill(host.nspawn_pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and _is_running(host.nspawn_pid):
            time.sleep(0.2)
        if _is_running(host.nspawn_pid):
            kill_host(host)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(host.nspawn_pid, os.WNOHANG)
    host.nspawn_pid = 0
    host.leader = 0
    _umount(host.root)
    _remove_cgroup(host.machine)
    _remove_propagate(host.machine)


def kill_host(host: Host) -> None:
    """Crash a host: SIGKILL its nspawn process and init (a power cut)."""
    for pid in (host.leader, host.nspawn_pid):
        if pid:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and _is_running(host.nspawn_pid):
        time.sleep(0.1)


def _is_running(pid: int) -> bool:
    if not pid:
        return False
    try:
        with contextlib.suppress(ChildProcessError):
            done, _ = os.waitpid(pid, os.WNOHANG)
            if done:
                return False
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except OSError:
        return False
    return state != "Z"


# --------------------------------------------------------------------------------------------
# Command line for scripts and molecule


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m testhosts.nspawn {base,up,run,reboot,down,list}``."""
    parser = argparse.ArgumentParser(prog="python -m testhosts.nspawn", description=__doc__)
    sub = parser.add_subparsers(dest="cmd", required=True)
    sub.add_parser("base", help="build (or reuse) the cached trixie base root; print its path")
    p_up = sub.add_parser("up", help="boot hosts on a private bridge; print JSON inventory")
    p_up.add_argument("lab", help="lab name, at most 8 characters (bridge br-LAB)")
    p_up.add_argument("hosts", nargs="+", help="host names, e.g. head worker1 db")
    p_up.add_argument(
        "--layer", action="append", default=[], help="extra lower dir over the base (top first)"
    )
    p_run = sub.add_parser("run", help="run a shell command in a host")
    p_run.add_argument("lab")
    p_run.add_argument("host")
    p_run.add_argument("command")
    p_reboot = sub.add_parser("reboot", help="stop and boot a host again, keeping its disk")
    p_reboot.add_argument("lab")
    p_reboot.add_argument("host")
    p_down = sub.add_parser("down", help="stop all hosts and remove the bridge")
    p_down.add_argument("lab")
    sub.add_parser("list", help="labs that are up")
    args = parser.parse_args(argv)
    try:
        if args.cmd == "base":
            with machine_output() as answer:
                print(base_root(), file=answer)
        elif args.cmd == "up":
            with machine_output() as answer:
                lab = Lab(args.lab)
                lab.up(args.hosts, [Path(p) for p in args.layer] + [base_root()])
                inventory = {
                    "bridge": lab.bridge,
                    "gateway": lab.gateway,
                    "hosts": [asdict(h) for h in lab.hosts],
                }
                print(json.dumps(inventory, indent=2), file=answer)
        elif args.cmd == "run":
            result = Lab.load(args.lab).host(args.host).run(args.command, check=False)
            sys.stdout.write(result.stdout)
            sys.stderr.write(result.stderr)
            return result.returncode
        elif args.cmd == "reboot":
            Lab.load(args.lab).reboot(args.host)
        elif args.cmd == "down":
            Lab.load(args.lab).down()
        elif args.cmd == "list":
            for path in sorted(STATE_DIR.glob("*.json")):
                print(path.stem)
    except LabError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
