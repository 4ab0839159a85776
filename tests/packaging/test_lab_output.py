"""The lab's machine-readable answers stay valid JSON whatever else runs meanwhile (issue 17).

Molecule's ``create.yml`` parses ``molecule/shared/lab.py up``'s stdout as JSON. On a fresh machine
the lab installs its tools with apt first; apt's output used to reach stdout and broke the parse.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import pytest

from testhosts import nspawn

ROOT = Path(__file__).resolve().parents[2]
LAB = ROOT / "molecule/shared/lab.py"
REASON = nspawn.unavailable_reason()
needs_lab = pytest.mark.skipif(REASON is not None, reason=f"cannot boot containers: {REASON}")

FAKE_APT_GET = """\
#!/bin/sh
# A noisy apt-get, as on a fresh machine: it talks on stdout and on stderr.
echo "Reading package lists... Done"
echo "Setting up $* ..." >&2
case "$1" in
  update) exit 0 ;;
  install) {install} ;;
esac
"""


def fake_path(tmp_path: Path, hidden: str, install: str) -> dict[str, str]:
    """An environment whose PATH hides ``hidden`` and whose apt-get is noisy and fake.

    ``/usr/sbin`` is mirrored by symlinks without ``hidden``; ``install`` is the shell line the
    fake ``apt-get install`` runs (``$MIRROR`` is the mirror directory).
    """
    mirror = tmp_path / "sbin"
    mirror.mkdir()
    for entry in Path("/usr/sbin").iterdir():
        if entry.name != hidden:
            (mirror / entry.name).symlink_to(entry)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    apt_get = bin_dir / "apt-get"
    apt_get.write_text(FAKE_APT_GET.replace("{install}", install))
    apt_get.chmod(0o755)
    dirs = [str(bin_dir)]
    for entry in [*os.environ.get("PATH", "").split(":"), "/usr/bin", "/bin"]:
        resolved = os.path.realpath(entry) if entry else ""
        if resolved == "/usr/sbin":
            entry = str(mirror)
        if entry and entry not in dirs:
            dirs.append(entry)
    if str(mirror) not in dirs:
        dirs.append(str(mirror))
    return {**os.environ, "PATH": ":".join(dirs), "MIRROR": str(mirror)}


def test_machine_output_sends_everything_else_to_stderr() -> None:
    script = textwrap.dedent(
        """
        import json, os, subprocess
        from testhosts import nspawn
        with nspawn.machine_output() as answer:
            subprocess.run(["sh", "-c", "echo apt noise; echo more apt noise"])
            print("a stray print")
            os.write(1, b"a raw write to fd 1\\n")
            print(json.dumps({"hosts": {"db": "10.0.0.10"}}), file=answer)
        print("after the block, stdout is stdout again")
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, check=True
    )
    answer, after = result.stdout.rsplit("\n", 2)[0], result.stdout.splitlines()[-1]
    assert json.loads(answer) == {"hosts": {"db": "10.0.0.10"}}
    assert after == "after the block, stdout is stdout again"
    for noise in ("apt noise", "a stray print", "a raw write to fd 1"):
        assert noise in result.stderr


@needs_lab
def test_failed_tool_install_is_a_clear_error_and_stdout_stays_clean(tmp_path: Path) -> None:
    env = fake_path(tmp_path, hidden="apt-cacher-ng", install="exit 100")
    key = tmp_path / "id.pub"
    key.write_text("ssh-ed25519 AAAA test\n")
    name = "o" + uuid.uuid4().hex[:5]
    result = subprocess.run(
        [sys.executable, str(LAB), "up", name, "--key", str(key), "alpha"],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    subprocess.run([sys.executable, str(LAB), "down", name], capture_output=True, check=False)
    assert result.returncode == 1, result.stderr
    assert result.stdout == ""
    assert "apt-cacher-ng" in result.stderr
    assert "apt-get install apt-cacher-ng" in result.stderr  # the fix, named
    assert "Reading package lists" in result.stderr  # apt's chatter went to stderr


@needs_lab
def test_up_answers_json_while_it_installs_a_tool(tmp_path: Path) -> None:
    """The fresh-machine path for real: apt-cacher-ng is missing, apt talks, hosts boot."""
    if not Path("/usr/sbin/apt-cacher-ng").exists():
        pytest.skip("apt-cacher-ng is not installed (scripts/test installs it first)")
    # "Installing" makes the real apt-cacher-ng visible in the mirror, as apt would.
    env = fake_path(
        tmp_path, hidden="apt-cacher-ng", install='ln -s /usr/sbin/apt-cacher-ng "$MIRROR/"'
    )
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "id")], check=True
    )
    name = "o" + uuid.uuid4().hex[:5]
    try:
        result = subprocess.run(
            [sys.executable, str(LAB), "up", name, "--key", str(tmp_path / "id.pub"), "alpha"],
            env=env,
            capture_output=True,
            text=True,
            timeout=900,
        )
        assert result.returncode == 0, result.stderr[-3000:]
        answer = json.loads(result.stdout)  # the very parse molecule's create.yml does
        assert set(answer["hosts"]) == {"alpha"}
        assert "Reading package lists" in result.stderr
        assert "installing host tools: apt-cacher-ng" in result.stderr
    finally:
        subprocess.run([sys.executable, str(LAB), "down", name], capture_output=True, check=False)
