"""The molecule failure digest that scripts/test-molecule prints at the end of a CI run."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "molecule/shared/failed_tasks.py"

LOG = """\
INFO     [failover > side_effect] Executing

PLAY [Crash a worker host, then cancel its tasks] ******************************

TASK [Wait until the victim's worker runs some] ********************************
FAILED - RETRYING: [localhost]: Wait until the victim's worker runs some (59 retries left).
ok: [localhost]

TASK [Probe that may fail] *****************************************************
fatal: [localhost]: FAILED! =>
    changed: false
    msg: probe failed
...ignoring

INFO     [failover > verify] Executing

PLAY [Another worker finishes the cancellation] ********************************

TASK [All of them got there] ***************************************************
fatal: [localhost]: FAILED! =>
    assertion: lab_status.total | default(0) == expect | int
    msg: 'after 240 s the tasks of cancel are {''CANCELLING'': 3, ''CANCELLED'': 5}'

PLAY RECAP *********************************************************************
CRITICAL Ansible return code was 2, command was: ansible-playbook verify_cancel_dead_host.yml
ERROR    \x1b[31mExecuted: Failed\x1b[0m
ERROR    \x1b[31mExecuted: Failed\x1b[0m
"""


def digest(tmp_path: Path, text: str) -> subprocess.CompletedProcess[str]:
    log = tmp_path / "failover.log"
    log.write_text(text)
    return subprocess.run(
        [sys.executable, str(SCRIPT), str(log)], capture_output=True, text=True, check=False
    )


def test_a_failed_task_is_printed_with_its_step_play_and_message(tmp_path: Path) -> None:
    result = digest(tmp_path, LOG)

    assert result.returncode == 0
    assert result.stdout.splitlines() == [
        "[failover > verify] play: Another worker finishes the cancellation",
        "  task: All of them got there",
        "  fatal: [localhost]: FAILED! =>",
        "    assertion: lab_status.total | default(0) == expect | int",
        "    msg: 'after 240 s the tasks of cancel are {''CANCELLING'': 3, ''CANCELLED'': 5}'",
        "[failover > verify] CRITICAL Ansible return code was 2, command was: "
        "ansible-playbook verify_cancel_dead_host.yml",
        "[failover > verify] ERROR    Executed: Failed",
    ]


def test_retries_and_ignored_failures_are_not_failures(tmp_path: Path) -> None:
    result = digest(tmp_path, LOG.split("INFO     [failover > verify]")[0])

    assert "probe failed" not in result.stdout
    assert "RETRYING" not in result.stdout
    assert "no failed task in the log" in result.stdout


def test_a_missing_log_is_a_clear_error(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(SCRIPT), str(tmp_path / "absent.log")],
        capture_output=True,
        text=True,
        check=False,
    )

    assert result.returncode == 2
    assert "cannot read the molecule log" in result.stderr
