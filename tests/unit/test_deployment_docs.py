"""The documented deployment path agrees with what ships: versions, inventory, queues, commands."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
DOC = (ROOT / "docs" / "deployment.md").read_text()
EXAMPLE = ROOT / "ansible" / "inventory" / "example"


def _requirement(name: str) -> str:
    for line in (ROOT / "ansible" / "requirements-controller.txt").read_text().splitlines():
        if line.startswith(name):
            return line.split("#")[0].strip()
    raise AssertionError(f"{name} missing from ansible/requirements-controller.txt")


def test_ansible_core_versions_agree() -> None:
    requirement = _requirement("ansible-core")  # ansible-core>=2.18,<2.22
    assert f"'{requirement}'" in DOC, f"docs/deployment.md must install {requirement!r}"
    low = re.search(r">=([\d.]+)", requirement)
    assert low
    for meta in (ROOT / "ansible" / "roles").glob("*/meta/main.yml"):
        assert yaml.safe_load(meta.read_text())["galaxy_info"]["min_ansible_version"] == low[1], (
            meta
        )


def test_no_default_inventory() -> None:
    """A forgotten -i must not deploy the example's documentation addresses and secrets."""
    cfg = (ROOT / "ansible" / "ansible.cfg").read_text()
    assert not re.search(r"^\s*inventory\s*=", cfg, re.MULTILINE)


def test_build_script_named_by_the_roles_exists() -> None:
    for path in (ROOT / "ansible").rglob("*.yml"):
        for script in re.findall(r"packaging/[\w.-]+", path.read_text()):
            assert (ROOT / script).exists(), f"{path} names {script}, which does not exist"


def test_remote_commands_of_the_docs_say_where_they_run() -> None:
    """In "Check the cluster", every command that runs on a host is prefixed with ssh."""
    section = DOC.split("## 5. Check the cluster", 1)[1].split("\n## ", 1)[0]
    for line in section.splitlines():
        if re.match(r"(sudo |journalctl|systemctl|django-ray )", line.strip()):
            raise AssertionError(f"no 'ssh HOST' in front of: {line}")


def _example_project_queues() -> set[str]:
    settings = (ROOT / "example" / "example_project" / "settings.py").read_text()
    match = re.search(r'_env_list\("DJANGO_RAY_QUEUES", "([^"]+)"\)', settings)
    assert match, "example settings no longer read DJANGO_RAY_QUEUES"
    return set(match[1].split(","))


def _example_task_queues() -> set[str]:
    tree = ast.parse((ROOT / "example" / "demo" / "tasks.py").read_text())
    queues = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef):
            queue = "default"
            for decorator in node.decorator_list:
                if isinstance(decorator, ast.Call):
                    for keyword in decorator.keywords:
                        if keyword.arg == "queue_name" and isinstance(keyword.value, ast.Constant):
                            queue = str(keyword.value.value)
            if node.decorator_list:
                queues.add(queue)
    return queues


def test_example_inventory_serves_every_example_queue() -> None:
    """Its workers' queues exist in the example project, and every example task has a worker."""
    main = yaml.safe_load((EXAMPLE / "group_vars" / "all" / "main.yml").read_text())
    served = {queue["name"] for queue in main["django_ray_worker_queues"]}
    assert served <= _example_project_queues()
    assert _example_task_queues() <= served
