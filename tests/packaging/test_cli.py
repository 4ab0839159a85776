"""The ``django-ray`` command's environment handling (pure logic plus a real subprocess)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from django_ray import cli

pytestmark = pytest.mark.packaging


def test_parse_env_file_systemd_syntax() -> None:
    text = """
# comment
; also a comment
DJANGO_SETTINGS_MODULE=example_project.settings
  SPACED = value with spaces
QUOTED="a \\"b\\" c"
SINGLE='x $y'
EMPTY=
LONG=one \\
two
URL=postgres://u:p@h:5432/db?sslmode=require
"""
    assert cli.parse_env_file(text) == {
        "DJANGO_SETTINGS_MODULE": "example_project.settings",
        "SPACED": "value with spaces",
        "QUOTED": 'a "b" c',
        "SINGLE": "x $y",
        "EMPTY": "",
        "LONG": "one two",
        "URL": "postgres://u:p@h:5432/db?sslmode=require",
    }


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("JUST_A_WORD", "expected KEY=VALUE"),
        ("1BAD=x", "not a valid variable name"),
        ("BAD-NAME=x", "not a valid variable name"),
    ],
)
def test_parse_env_file_rejects_bad_lines(text: str, message: str) -> None:
    with pytest.raises(cli.EnvFileError, match=message) as error:
        cli.parse_env_file(text, "/etc/django-ray/django-ray.env")
    assert "/etc/django-ray/django-ray.env:1" in str(error.value)


def test_later_files_override_and_caller_wins(tmp_path: Path) -> None:
    first = tmp_path / "django-ray.env"
    first.write_text("A=1\nB=1\nDJANGO_SETTINGS_MODULE=x.settings\n")
    second = tmp_path / "secrets.env"
    second.write_text("B=2\nC=2\n")
    env, warnings = cli.load_environment([first, second, tmp_path / "missing.env"], {"C": "env"})
    assert (env["A"], env["B"], env["C"]) == ("1", "2", "env")
    assert warnings == []


def test_missing_settings_module_warns(tmp_path: Path) -> None:
    env, warnings = cli.load_environment([tmp_path / "none.env"], {})
    assert "DJANGO_SETTINGS_MODULE" not in env
    assert any("DJANGO_SETTINGS_MODULE is not set" in w for w in warnings)


def test_unreadable_secrets_name_the_fix(tmp_path: Path) -> None:
    """A secrets file the caller may not read is an error naming the fix."""
    secrets = tmp_path / "secrets.env"
    secrets.write_text("DATABASE_URL=x\n")
    secrets.chmod(0o600 if os.geteuid() == 0 else 0)
    if os.geteuid() == 0:  # root reads anything: look at it as nobody, then switch back
        os.seteuid(65534)
    try:
        with pytest.raises(cli.EnvFileError, match="member of group django-ray"):
            cli.load_environment([secrets], {})
    finally:
        if os.getuid() == 0:
            os.seteuid(0)


def run_cli(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if k not in ("DJANGO_SETTINGS_MODULE",)}
    environ.update(env)
    environ["DJANGO_RAY_CLI_USER"] = "root"  # keep the test's user even when run as root
    return subprocess.run(
        [sys.executable, "-c", "from django_ray.cli import main; main()", *args],
        capture_output=True,
        text=True,
        env=environ,
        cwd=tmp_path,
    )


def test_exec_runs_program_with_file_environment(tmp_path: Path) -> None:
    env_file = tmp_path / "django-ray.env"
    project = tmp_path / "proj"
    project.mkdir()
    env_file.write_text(f"DJANGO_SETTINGS_MODULE=x.settings\nPYTHONPATH={project}\nFROM_FILE=yes\n")
    out = run_cli(
        tmp_path,
        "exec",
        "sh",
        "-c",
        'echo "$FROM_FILE $PYTHONPATH $DJANGO_SETTINGS_MODULE"',
        DJANGO_RAY_ENV_FILES=str(env_file),
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == f"yes {project} x.settings"


def test_exec_unknown_program_fails_clearly(tmp_path: Path) -> None:
    out = run_cli(
        tmp_path, "exec", "no-such-program-here", DJANGO_RAY_ENV_FILES=str(tmp_path / "none")
    )
    assert out.returncode == 127
    assert "cannot run 'no-such-program-here'" in out.stderr


def test_bad_env_file_is_reported_with_line(tmp_path: Path) -> None:
    env_file = tmp_path / "django-ray.env"
    env_file.write_text("OK=1\noops\n")
    out = run_cli(tmp_path, "help", DJANGO_RAY_ENV_FILES=str(env_file))
    assert out.returncode == 2
    assert f"{env_file}:2: expected KEY=VALUE" in out.stderr


def test_management_command_uses_project_from_pythonpath(tmp_path: Path) -> None:
    """A settings module found only through PYTHONPATH in the env file runs Django commands."""
    project = tmp_path / "src"
    (project / "mysite").mkdir(parents=True)
    (project / "mysite" / "__init__.py").write_text("")
    (project / "mysite" / "settings.py").write_text(
        "SECRET_KEY = 'test'\nINSTALLED_APPS = []\nDATABASES = {}\nUSE_TZ = True\n"
        "MARKER = 'from-env-file'\n"
    )
    env_file = tmp_path / "django-ray.env"
    env_file.write_text(f"DJANGO_SETTINGS_MODULE=mysite.settings\nPYTHONPATH={project}\n")
    out = run_cli(
        tmp_path, "diffsettings", "--all", DJANGO_RAY_ENV_FILES=str(env_file), PYTHONPATH=""
    )
    assert out.returncode == 0, out.stderr
    assert "MARKER = 'from-env-file'" in out.stdout
