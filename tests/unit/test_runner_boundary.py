"""Runners are pure executors: no runner module touches the database (issue 11).

The worker owns every read and write, on the backend's database alias; a runner that imported
the models or opened a connection would quietly use ``default``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

RUNNERS = Path(__file__).resolve().parents[2] / "django_ray" / "runners"
FORBIDDEN_MODULES = ("django_ray.models", "django_ray.lifecycle", "django.db")
FORBIDDEN_NAMES = {"connection", "connections", "cursor", "RayTaskExecution", "TaskAttempt"}


def _runner_modules() -> list[Path]:
    modules = sorted(RUNNERS.glob("*.py"))
    assert {p.name for p in modules} >= {"base.py", "ray_core.py", "ray_job.py", "memory.py"}
    return modules


@pytest.mark.parametrize("path", _runner_modules(), ids=lambda p: p.name)
def test_no_runner_module_imports_the_models_or_uses_a_connection(path: Path) -> None:
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            module = node.module or ""
            assert not module.startswith(FORBIDDEN_MODULES), f"{path.name} imports {module}"
            if module == "django_ray":
                names = {alias.name for alias in node.names}
                assert not names & {"models", "lifecycle"}, f"{path.name}: {names}"
        elif isinstance(node, ast.Import):
            for alias in node.names:
                assert not alias.name.startswith(FORBIDDEN_MODULES), f"{path.name}: {alias.name}"
        elif isinstance(node, ast.Name | ast.Attribute):
            name = node.id if isinstance(node, ast.Name) else node.attr
            assert name not in FORBIDDEN_NAMES, f"{path.name} uses {name} (line {node.lineno})"


def test_importing_every_runner_loads_no_model_module() -> None:
    import subprocess
    import sys

    code = (
        "import sys; import django_ray.runners.base, django_ray.runners.sync, "
        "django_ray.runners.memory, django_ray.runners.ray_job, django_ray.runners.ray_core; "
        "bad = [m for m in ('django_ray.models', 'django_ray.lifecycle', 'django.db.models') "
        "if m in sys.modules]; print(bad); sys.exit(1 if bad else 0)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=RUNNERS.parents[1],
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
