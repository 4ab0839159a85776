"""The wheel ships the library only: test infrastructure stays in the checkout."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def wheel_names(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q",
         "-w", str(out), str(ROOT)],
        check=True,
    )  # fmt: skip
    (wheel,) = out.glob("django_ray-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        return archive.namelist()


def test_wheel_holds_the_library(wheel_names: list[str]) -> None:
    assert "django_ray/backends.py" in wheel_names
    assert "django_ray/lifecycle/queries.sql" in wheel_names  # the lifecycle's statements
    assert any(name.startswith("django_ray/migrations/") for name in wheel_names)
    # The admin console's templates: without them a deployed admin errors on every page.
    templates = ROOT / "django_ray" / "templates"
    wanted = [f"django_ray/{t.relative_to(ROOT / 'django_ray')}" for t in templates.rglob("*.html")]
    assert "django_ray/templates/admin/django_ray/overview.html" in wanted
    assert [name for name in wanted if name not in wheel_names] == []


@pytest.mark.parametrize("prefix", ["django_ray/testing/", "tests/", "testhosts/", "bench/"])
def test_wheel_has_no_test_infrastructure(wheel_names: list[str], prefix: str) -> None:
    leaked = [name for name in wheel_names if name.startswith(prefix)]
    assert not leaked, f"the wheel ships test infrastructure: {leaked[:5]}"
