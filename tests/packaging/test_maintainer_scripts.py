"""The .deb's maintainer scripts run against a scratch root (``DPKG_ROOT``), no container needed."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
POSTRM = ROOT / "packaging" / "debian" / "postrm"


def _link(root: Path, name: str, target: str) -> Path:
    path = root / "etc" / "systemd" / "system" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.symlink_to(target)
    return path


def test_purge_removes_only_the_links_the_package_owns(tmp_path: Path) -> None:
    ours = [
        _link(
            tmp_path,
            "multi-user.target.wants/django-ray.target",
            "/usr/lib/systemd/system/django-ray.target",
        ),
        _link(
            tmp_path,
            "django-ray.target.wants/django-ray-web.service",
            "/usr/lib/systemd/system/django-ray-web.service",
        ),
        _link(
            tmp_path,
            "django-ray.target.wants/django-ray-worker@default.service",
            "/usr/lib/systemd/system/django-ray-worker@.service",
        ),
        _link(
            tmp_path,
            "multi-user.target.wants/ray-head.service",
            "/lib/systemd/system/ray-head.service",
        ),
    ]
    theirs = [
        # Another package's unit whose name merely starts the same way, an operator's own unit
        # and override, and a mask: none of them belong to django-ray.
        _link(
            tmp_path,
            "multi-user.target.wants/django-ray-backup.service",
            "/usr/lib/systemd/system/django-ray-backup.service",
        ),
        _link(
            tmp_path,
            "multi-user.target.wants/my-ray-worker.service",
            "/etc/systemd/my/ray-worker.service",
        ),
        _link(
            tmp_path,
            "django-ray-web.service.d/override.conf",
            "/srv/config/django-ray-web.override.conf",
        ),
        _link(tmp_path, "ray-worker.service", "/dev/null"),
    ]
    etc = tmp_path / "etc" / "django-ray"
    etc.mkdir(parents=True)
    (etc / "secrets.env").write_text("DATABASE_URL=x\n")
    (etc / "ray-auth-token").write_text("t\n")
    (tmp_path / "var" / "lib" / "django-ray").mkdir(parents=True)

    env = {**os.environ, "DPKG_ROOT": str(tmp_path)}
    result = subprocess.run(["sh", str(POSTRM), "purge"], env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr

    assert [p for p in ours if p.is_symlink()] == []
    assert [p for p in theirs if not p.is_symlink()] == []
    assert not etc.exists()
    assert not (tmp_path / "var" / "lib" / "django-ray").exists()
