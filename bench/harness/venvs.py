"""The peers' virtualenvs under ``bench/.venvs`` (created on first use, then reused)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from .systems import VENVS

# Peers, pinned so that a results file names exactly what it measured.
PEERS: dict[str, list[str]] = {
    "djray070": ["django-ray==0.7.0", "psycopg[binary]>=3.2"],
    "tasksdb": ["django-tasks-db==0.13.0", "django>=6.0,<6.2", "psycopg[binary]>=3.2"],
}


def ensure_peer(name: str, log=print) -> Path:
    """Create ``bench/.venvs/<name>`` with the peer's packages unless it is already there."""
    venv = VENVS / name
    stamp = venv / ".bench-installed"
    wanted = " ".join(PEERS[name])
    if stamp.exists() and stamp.read_text() == wanted:
        return venv
    log(f"==> creating {venv} ({wanted})")
    if not (venv / "bin" / "python").exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run(
        [str(venv / "bin" / "pip"), "install", "-q", "--disable-pip-version-check", *PEERS[name]],
        check=True,
    )
    stamp.write_text(wanted)
    return venv
