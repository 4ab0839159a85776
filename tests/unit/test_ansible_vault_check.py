"""The role's "vault file is encrypted" check reads enough bytes to see the marker it wants.

It once read 14 bytes and looked for the 15-byte ``$ANSIBLE_VAULT;``, so it refused every
encrypted vault and the documented deploy stopped in its first play (found by molecule's
example-inventory step). The two numbers live in different tasks; this keeps them together.
"""

from __future__ import annotations

from pathlib import Path

import yaml

SECRETS = Path(__file__).resolve().parents[2] / "ansible/roles/django_ray/tasks/secrets.yml"
MARKER = "$ANSIBLE_VAULT;"  # what `ansible-vault encrypt` writes first (format 1.1 and 1.2)


def _task(tasks: list[dict], name: str) -> dict:
    return next(t for t in tasks if t.get("name") == name)


def test_the_vault_check_reads_the_whole_marker_it_looks_for() -> None:
    tasks = yaml.safe_load(SECRETS.read_text())
    argv = _task(tasks, "Read the first bytes of each vault file")["ansible.builtin.command"][
        "argv"
    ]
    assert argv[:2] == ["head", "-c"]
    condition = _task(tasks, "Refuse vault files that are not encrypted")["ansible.builtin.assert"]
    assert f"head.stdout.startswith('{MARKER}')" == condition["that"]
    assert int(argv[2]) >= len(MARKER), f"reads {argv[2]} bytes, the marker has {len(MARKER)}"
