"""django_ray.journald against a real systemd-journald, in a booted Debian 13 container.

The handler runs as a systemd service (``django-ray-worker@demo``) so it detects systemd by
itself; then ``journalctl`` filters by the runbook's fields, exactly as on-call would.
"""

from __future__ import annotations

import json
import os
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
ROOT = Path(__file__).resolve().parents[2]
UNIT = "django-ray-worker@demo"


def test_journalctl_filters_by_task_fields() -> None:
    with nspawn.Lab("jd" + uuid.uuid4().hex[:5]) as lab:
        lab.up(["alpha"], [nspawn.base_root()])
        host = lab.host("alpha")
        host.copy_in(ROOT / "django_ray" / "journald.py", "/opt/django-ray/django_ray_journald.py")
        host.copy_in(Path(__file__).parent / "journald" / "emit.py", "/opt/django-ray/emit.py")
        run = host.run(
            f"systemd-run --unit={UNIT} --wait --collect -p Type=exec "
            "python3 /opt/django-ray/emit.py"
        )
        assert "status=0/SUCCESS" in run.stdout + run.stderr

        line = host.run(
            f"journalctl -u {UNIT} TASK_ID=7f3c2a9e-demo STATE=FAILED -o short-iso --no-pager"
        ).stdout
        print(line)
        assert "django-ray" in line and "failed permanently task_id=7f3c2a9e-demo" in line
        assert "ValueError: invoice 1 has no customer" in line  # multi-line MESSAGE kept whole

        entries = [
            json.loads(raw)
            for raw in host.run(
                f"journalctl -u {UNIT} CALLABLE=demo.tasks.failing -o json --all --no-pager"
            ).stdout.splitlines()
        ]
        by_task = {entry["TASK_ID"]: entry for entry in entries}
        failed = by_task["7f3c2a9e-demo"]
        assert failed["QUEUE"] == "default"
        assert failed["WORKER_ID"] == "alpha-4242-a1b2c3"
        assert failed["STATE"] == "FAILED"
        assert failed["PRIORITY"] == "3"
        assert failed["EXCEPTION_CLASS"] == "builtins.ValueError"
        assert failed["_SYSTEMD_UNIT"] == f"{UNIT}.service"
        assert failed["_TRANSPORT"] == "journal"  # the native protocol, not stdout
        # The 3 MiB message went through the sealed memfd and arrived whole.
        assert len(by_task["big-demo"]["MESSAGE"]) == len("big ") + (3 << 20)
        succeeded = host.run(
            f"journalctl -u {UNIT} STATE=SUCCEEDED -o cat --no-pager"
        ).stdout.strip()
        assert succeeded == "succeeded task_id=0b1d-demo"
