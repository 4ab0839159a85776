"""The reusable nspawn lab (testhosts): multi-host boot, names, reboot with disk kept, teardown."""

from __future__ import annotations

import os
import subprocess
import uuid
from pathlib import Path

import pytest

from testhosts import nspawn

REASON = nspawn.unavailable_reason()
if REASON and os.environ.get("DJANGO_RAY_REQUIRE_LAB") == "1":
    raise RuntimeError(f"DJANGO_RAY_REQUIRE_LAB=1 but containers cannot boot here: {REASON}")
pytestmark = [
    pytest.mark.packaging,
    pytest.mark.skipif(REASON is not None, reason=f"cannot boot containers: {REASON}"),
]


def test_bad_lab_name_is_refused() -> None:
    with pytest.raises(nspawn.LabError, match="at most 8"):
        nspawn.Lab("much-too-long-name")


def test_two_hosts_on_a_private_bridge(tmp_path: Path) -> None:
    name = "t" + uuid.uuid4().hex[:5]
    base = nspawn.base_root()
    with nspawn.Lab(name) as lab:
        lab.up(["alpha", "beta"], [base])
        alpha, beta = lab.host("alpha"), lab.host("beta")
        assert alpha.run("hostname").stdout.strip() == "alpha"
        assert alpha.run("systemctl is-system-running").stdout.strip() in ("running", "degraded")
        # beta reaches alpha's sshd by name over the bridge (no DNS: /etc/hosts).
        beta.run("timeout 10 bash -c 'until echo > /dev/tcp/alpha/22; do sleep 0.2; done'")
        assert beta.run("getent hosts alpha").stdout.split()[0] == alpha.address
        # A failing command reports its exit status and output.
        with pytest.raises(nspawn.LabError, match="exited 3"):
            alpha.run("echo oops; exit 3")
        # Files written from the machine show up inside, and survive a reboot.
        (alpha.root / "root/marker").write_text("kept\n")
        old_leader = alpha.leader
        lab.reboot("alpha")
        assert alpha.leader != old_leader
        assert alpha.run("cat /root/marker").stdout == "kept\n"
        # The state file lets another process (the CLI) drive the same lab.
        out = subprocess.run(
            ["python3", "-m", "testhosts.nspawn", "run", name, "beta", "hostname"],
            capture_output=True,
            text=True,
            cwd=Path(__file__).resolve().parents[2],
        )
        assert out.stdout.strip() == "beta", out.stderr
        roots = [alpha.root, beta.root]
    assert not Path(f"/sys/class/net/br-{name}").exists()
    assert not any(os.path.ismount(root) for root in roots)
    assert not (nspawn.STATE_DIR / f"{name}.json").exists()
