"""The ``django-ray`` command: Django management commands with the packaged environment.

``django-ray migrate``, ``django-ray django_ray_status``, ``django-ray django_ray_worker ...``
behave like ``manage.py`` of the configured project. Before Django starts, the command:

1. reads the environment files (default ``/etc/django-ray/django-ray.env`` then
   ``/etc/django-ray/secrets.env``; override with ``DJANGO_RAY_ENV_FILES``, a ``:``-separated
   list) with systemd ``EnvironmentFile=`` syntax. Variables already set in the caller's
   environment (non-empty) win, so ``DATABASE_URL=... django-ray migrate`` works;
2. puts ``PYTHONPATH`` entries from those files on ``sys.path`` (the project's source tree);
3. when started as root, switches to the ``django-ray`` system user (files it creates then
   belong to the services' user). ``DJANGO_RAY_CLI_USER=root`` keeps root.

``django-ray exec PROGRAM [ARGS...]`` runs any program with that same environment (used by the
supervisor configuration for gunicorn and Ray). ``django-ray --help`` lists Django's commands.
"""

from __future__ import annotations

import os
import pwd
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

DEFAULT_ENV_FILES = ("/etc/django-ray/django-ray.env", "/etc/django-ray/secrets.env")
SERVICE_USER = "django-ray"


class EnvFileError(ValueError):
    """An environment file line that systemd would not accept either."""


def parse_env_file(text: str, source: str = "<env>") -> dict[str, str]:
    """Parse ``KEY=VALUE`` lines like systemd's ``EnvironmentFile=``.

    Blank lines and lines starting with ``#`` or ``;`` are ignored; values may be wrapped in
    single or double quotes (double quotes honour backslash escapes); a trailing backslash
    continues a line.
    """
    result: dict[str, str] = {}
    lines = text.splitlines()
    index = 0
    while index < len(lines):
        number = index + 1
        line = lines[index]
        while line.endswith("\\") and index + 1 < len(lines):
            index += 1
            line = line[:-1] + lines[index]
        index += 1
        stripped = line.strip()
        if not stripped or stripped[0] in "#;":
            continue
        if "=" not in stripped:
            raise EnvFileError(
                f"{source}:{number}: expected KEY=VALUE, got {stripped!r} "
                "(comment it out with '#' or add '=')"
            )
        key, value = stripped.split("=", 1)
        key = key.strip()
        if not key.replace("_", "a").isalnum() or key[0].isdigit():
            raise EnvFileError(f"{source}:{number}: {key!r} is not a valid variable name")
        result[key] = _unquote(value.strip())
    return result


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
        inner = value[1:-1]
        if value[0] == '"':
            out, escaped = [], False
            for char in inner:
                if escaped:
                    out.append({"n": "\n", "t": "\t"}.get(char, char))
                    escaped = False
                elif char == "\\":
                    escaped = True
                else:
                    out.append(char)
            return "".join(out)
        return inner
    return value


def env_files() -> list[Path]:
    """The environment files to read, in order (later files override earlier ones)."""
    configured = os.environ.get("DJANGO_RAY_ENV_FILES")
    names: Iterable[str] = configured.split(":") if configured else DEFAULT_ENV_FILES
    return [Path(name) for name in names if name]


def load_environment(
    files: Sequence[Path], environ: Mapping[str, str]
) -> tuple[dict[str, str], list[str]]:
    """Merge ``files`` under ``environ`` (the caller's variables win). Returns (env, warnings).

    A file that does not exist is skipped; one that exists but cannot be read is an error
    naming the fix, because running without its secrets would fail later and less clearly.
    """
    merged: dict[str, str] = {}
    warnings: list[str] = []
    for path in files:
        try:
            text = path.read_text()
        except FileNotFoundError:
            continue
        except PermissionError as error:
            raise EnvFileError(
                f"cannot read {path}: permission denied. Run as root (the command then "
                f"switches to the {SERVICE_USER} user) or as a member of group {SERVICE_USER}."
            ) from error
        merged.update(parse_env_file(text, str(path)))
    env = dict(environ)
    for key, value in merged.items():
        if not env.get(key):  # unset or empty in the caller's environment
            env[key] = value
    if "DJANGO_SETTINGS_MODULE" not in env:
        warnings.append(
            "DJANGO_SETTINGS_MODULE is not set: put it in /etc/django-ray/django-ray.env "
            "(or DJANGO_RAY_ENV_FILES) or the environment."
        )
    return env, warnings


def _drop_privileges(env: dict[str, str]) -> None:
    """As root, become the service user (unless DJANGO_RAY_CLI_USER=root)."""
    if os.geteuid() != 0:
        return
    wanted = env.get("DJANGO_RAY_CLI_USER", SERVICE_USER)
    if wanted == "root":
        return
    try:
        user = pwd.getpwnam(wanted)
    except KeyError:
        if "DJANGO_RAY_CLI_USER" in env:
            raise EnvFileError(
                f"DJANGO_RAY_CLI_USER={wanted}: no such user. Create it or unset the variable."
            ) from None
        return  # not a packaged install: stay root
    os.initgroups(user.pw_name, user.pw_gid)
    os.setgid(user.pw_gid)
    os.setuid(user.pw_uid)
    env["HOME"] = user.pw_dir
    env["USER"] = env["LOGNAME"] = user.pw_name
    try:
        os.getcwd()
        os.listdir(".")
    except OSError:
        os.chdir(user.pw_dir if os.path.isdir(user.pw_dir) else "/")


def prepare(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """Load the environment files, apply PYTHONPATH and privileges; returns the environment."""
    env, warnings = load_environment(env_files(), os.environ if environ is None else environ)
    for warning in warnings:
        print(f"django-ray: warning: {warning}", file=sys.stderr)
    _drop_privileges(env)
    for entry in reversed(env.get("PYTHONPATH", "").split(":")):
        if entry and entry not in sys.path:
            sys.path.insert(0, entry)
    os.environ.clear()
    os.environ.update(env)
    return env


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of the ``django-ray`` console script."""
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        prepare()
    except (EnvFileError, PermissionError) as error:
        print(f"django-ray: error: {error}", file=sys.stderr)
        raise SystemExit(2) from error
    if args[:1] == ["exec"]:
        if len(args) < 2:
            print("usage: django-ray exec PROGRAM [ARGS...]", file=sys.stderr)
            raise SystemExit(2)
        # The virtualenv's programs (gunicorn, ray) come first on PATH.
        bindir = os.path.dirname(sys.executable)
        os.environ["PATH"] = f"{bindir}:{os.environ.get('PATH', '/usr/bin:/bin')}"
        try:
            os.execvp(args[1], args[1:])
        except OSError as error:
            print(f"django-ray: error: cannot run {args[1]!r}: {error}", file=sys.stderr)
            raise SystemExit(127) from error
    from django.core.management import execute_from_command_line

    execute_from_command_line(["django-ray", *args])


if __name__ == "__main__":
    main()
