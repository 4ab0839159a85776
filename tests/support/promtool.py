"""Find ``promtool`` for tests, installing Debian's ``prometheus`` package when allowed.

On a Debian machine where we are root, :func:`find_promtool` installs the package with apt-get
(``DJANGO_RAY_NO_APT=1`` forbids it); otherwise it returns None and tests skip with a message
saying how to get it.
"""

from __future__ import annotations

import os
import shutil
import subprocess

INSTALL_HINT = "install promtool with: apt-get install prometheus (Debian package)"


def find_promtool(install: bool = True) -> str | None:
    """Path of ``promtool``, or None when it is not installed and cannot be."""
    found = shutil.which("promtool")
    if found or not install:
        return found
    if os.environ.get("DJANGO_RAY_NO_APT") or os.geteuid() != 0 or not shutil.which("apt-get"):
        return None
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], env=env, check=False, capture_output=True)
    subprocess.run(
        ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "prometheus"],
        env=env,
        check=False,
        capture_output=True,
    )
    # The package's service is not wanted: tests only need the promtool binary.
    return shutil.which("promtool")
