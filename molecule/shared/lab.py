"""Molecule's test hosts: four systemd-booted Debian 13 containers on a private bridge.

Built on the project's nspawn lab (``testhosts/nspawn.py``); this adds what Ansible needs:

* an ssh key baked into a small overlay layer (root logs in with it), apt pointed at a proxy;
* ``apt-cacher-ng`` serving Debian packages **on the lab bridge only** (cache shared across runs
  in ``$DJANGO_RAY_LAB_CACHE/apt-cacher-ng``), so hosts reach no network but the bridge;
* faults for the failover scenario: crash, partition/heal, freeze/thaw, boot again.

Usage (molecule's create/destroy/side_effect playbooks call it)::

    python molecule/shared/lab.py up LAB --key KEY.pub HOST...   # prints JSON
    python molecule/shared/lab.py down LAB
    python molecule/shared/lab.py crash|partition|heal|reboot LAB HOST
    python molecule/shared/lab.py check        # exit 0 if this machine can boot containers
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from testhosts import nspawn  # noqa: E402

ACNG_PORT = 3142


def _acng_pidfile(lab: str) -> Path:
    return nspawn.STATE_DIR / f"{lab}-acng.pid"


def start_apt_cache(lab: nspawn.Lab) -> None:
    """Run apt-cacher-ng bound to the bridge address only (a plain caching proxy)."""
    nspawn.ensure_tools({"apt-cacher-ng": "apt-cacher-ng"})
    stop_apt_cache(lab.name)
    cache = nspawn.CACHE / "apt-cacher-ng"
    conf = nspawn.CACHE / "run" / lab.name / "acng-conf"
    logs = nspawn.CACHE / "run" / lab.name / "acng-log"
    for path in (cache, conf, logs):
        path.mkdir(parents=True, exist_ok=True)
    # Our own config dir: no remapping to mirror lists, requests go to the host apt asked for.
    (conf / "acng.conf").write_text(
        f"CacheDir: {cache}\nLogDir: {logs}\nPort: {ACNG_PORT}\nBindAddress: {lab.gateway}\n"
        "ExThreshold: 30\nPassThroughPattern: .*\nVfilePatternEx: (Release|InRelease|Packages.*)$\n"
    )
    proc = subprocess.Popen(
        ["apt-cacher-ng", "-c", str(conf), "ForeGround=1"],
        stdin=subprocess.DEVNULL,
        stdout=open(logs / "stdout.log", "ab"),  # noqa: SIM115 - handed to the daemon
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    nspawn.STATE_DIR.mkdir(parents=True, exist_ok=True)
    _acng_pidfile(lab.name).write_text(str(proc.pid))
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection((lab.gateway, ACNG_PORT), 1):
            nspawn.log(f"apt-cacher-ng on {lab.gateway}:{ACNG_PORT} (pid {proc.pid})")
            return
        if proc.poll() is not None:
            break
        time.sleep(0.2)
    raise nspawn.LabError(f"apt-cacher-ng did not start; see {logs}/stdout.log")


def stop_apt_cache(lab: str) -> None:
    """Stop the lab's apt-cacher-ng (by the pid we recorded)."""
    pidfile = _acng_pidfile(lab)
    if pidfile.exists():
        with contextlib.suppress(ValueError, ProcessLookupError):
            os.kill(int(pidfile.read_text()), signal.SIGTERM)
        pidfile.unlink(missing_ok=True)


def molecule_layer(lab: nspawn.Lab, pubkey: Path) -> Path:
    """A per-lab overlay layer: root's authorized key, apt via the bridge's proxy, real services."""
    layer = nspawn.CACHE / "run" / f"{lab.name}-layer"
    shutil.rmtree(layer, ignore_errors=True)
    ssh = layer / "root/.ssh"
    ssh.mkdir(parents=True)
    os.chmod(layer / "root", 0o700)
    os.chmod(ssh, 0o700)
    (ssh / "authorized_keys").write_text(pubkey.read_text())
    os.chmod(ssh / "authorized_keys", 0o600)
    apt = layer / "etc/apt/apt.conf.d"
    apt.mkdir(parents=True)
    (apt / "01lab-proxy").write_text(f'Acquire::http::Proxy "http://{lab.gateway}:{ACNG_PORT}/";\n')
    # Packages start their services on install as on a real Debian host.
    sbin = layer / "usr/sbin"
    sbin.mkdir(parents=True)
    (sbin / "policy-rc.d").write_text("#!/bin/sh\nexit 0\n")
    os.chmod(sbin / "policy-rc.d", 0o755)
    sshd = layer / "etc/ssh/sshd_config.d"
    sshd.mkdir(parents=True)
    (sshd / "lab.conf").write_text(
        "PermitRootLogin prohibit-password\nUseDNS no\nMaxStartups 100\n"
    )
    return layer


def wait_ssh(address: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection((address, 22), 1) as conn:
            if conn.recv(4).startswith(b"SSH"):
                return
        time.sleep(0.2)
    raise nspawn.LabError(f"no sshd on {address}:22 after {timeout:.0f} s")


def up(name: str, hosts: list[str], pubkey: Path) -> dict:
    reason = nspawn.unavailable_reason()
    if reason:
        raise nspawn.LabError(f"cannot boot containers here: {reason}")
    with contextlib.suppress(nspawn.LabError):
        down(name)  # leftovers of an interrupted run
    started = time.monotonic()
    base = nspawn.base_root()
    lab = nspawn.Lab(name)
    lab._bridge_up()
    start_apt_cache(lab)
    try:
        lab.up(hosts, [molecule_layer(lab, pubkey), base])
        for host in lab.hosts:
            wait_ssh(host.address)
    except (nspawn.LabError, OSError, subprocess.SubprocessError):
        lab.save()  # so that `down` finds the hosts that did boot
        down(name)
        raise
    nspawn.log(f"{len(hosts)} hosts up in {time.monotonic() - started:.1f} s")
    return {
        "lab": name,
        "bridge": lab.bridge,
        "gateway": lab.gateway,
        "hosts": {h.name: h.address for h in lab.hosts},
    }


def down(name: str) -> None:
    stop_apt_cache(name)
    try:
        lab = nspawn.Lab.load(name)
    except nspawn.LabError:
        lab = None
    if lab is not None:
        # Test hosts hold nothing worth an orderly shutdown (that waits for every unit's stop
        # timeout): power them off hard, then let the library unmount and clean up.
        for host in lab.hosts:
            nspawn.kill_host(host)
        lab.down()
        for host in lab.hosts:
            _wait_veth_gone(host)
    bridge = f"br-{name}"
    if Path(f"/sys/class/net/{bridge}").exists():
        subprocess.run(["ip", "link", "del", bridge], check=False)
    shutil.rmtree(nspawn.CACHE / "run" / f"{name}-layer", ignore_errors=True)


def _wait_veth_gone(host: nspawn.Host, timeout: float = 20) -> None:
    """The kernel frees a dead container's veth asynchronously; a new boot needs the name."""
    path = Path("/sys/class/net") / _veth(host)
    deadline = time.monotonic() + timeout
    while path.exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    if path.exists():
        subprocess.run(["ip", "link", "del", _veth(host)], check=False)


def _veth(host: nspawn.Host) -> str:
    # systemd-nspawn names the machine side "vb-" + machine name, cut to 15 characters.
    return ("vb-" + host.machine)[:15]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    sub = parser.add_subparsers(dest="cmd", required=True)
    sub.add_parser("check", help="exit 0 if containers can boot here, else print why and exit 3")
    p_up = sub.add_parser("up")
    p_up.add_argument("lab")
    p_up.add_argument("hosts", nargs="+")
    p_up.add_argument("--key", type=Path, required=True, help="ssh public key for root")
    p_down = sub.add_parser("down")
    p_down.add_argument("lab")
    for fault in ("crash", "partition", "heal", "reboot", "freeze", "thaw"):
        p = sub.add_parser(fault)
        p.add_argument("lab")
        p.add_argument("host")
    args = parser.parse_args(argv)
    try:
        if args.cmd == "check":
            reason = nspawn.unavailable_reason()
            if reason:
                print(reason)
                return 3
            print("ok")
            return 0
        if args.cmd == "up":
            with nspawn.machine_output() as answer:
                print(json.dumps(up(args.lab, args.hosts, args.key), indent=2), file=answer)
            return 0
        if args.cmd == "down":
            down(args.lab)
            return 0
        lab = nspawn.Lab.load(args.lab)
        host = lab.host(args.host)
        if args.cmd == "crash":
            nspawn.kill_host(host)
            nspawn.stop_host(host)  # unmount and clean up; the upper dir (disk) stays
            host.nspawn_pid = host.leader = 0
            lab.save()
        elif args.cmd == "reboot":
            if host.nspawn_pid:
                nspawn.stop_host(host)
            _wait_veth_gone(host)
            lab._boot(host, fresh=False)
            lab.save()
            host.wait_running(180)
            wait_ssh(host.address)
        elif args.cmd == "partition":
            subprocess.run(["ip", "link", "set", _veth(host), "down"], check=True)
        elif args.cmd == "heal":
            subprocess.run(["ip", "link", "set", _veth(host), "up"], check=True)
        elif args.cmd in ("freeze", "thaw"):
            group = Path("/sys/fs/cgroup/unified") / nspawn.CGROUP_PARENT / host.machine
            if not group.exists():
                group = Path("/sys/fs/cgroup") / nspawn.CGROUP_PARENT / host.machine
            (group / "cgroup.freeze").write_text("1" if args.cmd == "freeze" else "0")
        return 0
    except nspawn.LabError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
