"""System checks of ``DJANGO_RAY`` and the backend's OPTIONS: ids, and messages saying what to write."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from django.core import checks
from django.test import override_settings

from django_ray.conf import SETTINGS, check_settings, ray_settings
from tests.settings import DJANGO_RAY as TEST_RAY

ROOT = Path(__file__).resolve().parent.parent.parent


def _errors(**values: Any) -> list[checks.CheckMessage]:
    with override_settings(DJANGO_RAY={**TEST_RAY, **values}):
        return check_settings()


def _one(**values: Any) -> checks.CheckMessage:
    errors = _errors(**values)
    assert len(errors) == 1, [str(e) for e in errors]
    assert isinstance(errors[0], checks.Error)
    return errors[0]


def test_the_test_settings_and_the_defaults_are_clean() -> None:
    assert _errors() == []
    with override_settings(DJANGO_RAY={}):
        assert check_settings() == []
    with override_settings(DJANGO_RAY=None):
        assert check_settings() == []


def test_not_a_dict() -> None:
    with override_settings(DJANGO_RAY=["MAX_TASK_ATTEMPTS", 3]):
        errors = check_settings()
    assert [e.id for e in errors] == ["django_ray.E001"]
    assert "must be a dict, not list" in errors[0].msg
    assert "DJANGO_RAY = {" in errors[0].hint


@pytest.mark.parametrize(
    ("key", "value", "type_words"),
    [
        ("MAX_TASK_ATTEMPTS", "3", "must be int, not str ('3')"),
        ("MAX_TASK_ATTEMPTS", 2.5, "must be int, not float (2.5)"),
        ("MAX_TASK_ATTEMPTS", True, "must be int, not bool (True)"),
        ("DEFAULT_CONCURRENCY", None, "must be int, not NoneType"),
        ("RETRY_BACKOFF_SECONDS", "1s", "must be int or float, not str"),
        ("RETRY_EXCEPTION_DENYLIST", "tests.tasks.PermanentError", "must be list or tuple"),
        ("WORKER_LEASE_SECONDS", [30], "must be int or float, not list"),
        ("RAY_ADDRESS", 6379, "must be str or None, not int"),
        ("DEFAULT_TIMEOUT_SECONDS", "600", "must be int or float or None, not str"),
    ],
)
def test_wrong_type(key: str, value: Any, type_words: str) -> None:
    error = _one(**{key: value})
    assert error.id == "django_ray.E003"
    assert f"DJANGO_RAY[{key!r}] {type_words}" in error.msg
    # The hint says what the setting is for and what the default is: what to write instead.
    assert f"Default: {SETTINGS[key].default!r}" in error.hint


@pytest.mark.parametrize(
    ("key", "value", "words"),
    [
        ("MAX_TASK_ATTEMPTS", 0, "it must be at least 1"),
        ("MAX_TASK_ATTEMPTS", 1001, "it must be at most 1000"),
        ("DEFAULT_CONCURRENCY", -4, "it must be at least 1"),
        ("RETRY_BACKOFF_SECONDS", -0.5, "it must be at least 0"),
        ("RETRY_JITTER", 11, "it must be at most 10"),
        ("WORKER_HEARTBEAT_SECONDS", 0.0, "it must be at least 0.1"),
        ("MAX_RESULT_SIZE_BYTES", -1, "it must be at least 0"),
        ("WORKER_METRICS_PORT", 70000, "it must be at most 65535"),
    ],
)
def test_out_of_range(key: str, value: Any, words: str) -> None:
    error = _one(**{key: value})
    assert error.id == "django_ray.E005"
    assert error.msg == f"DJANGO_RAY[{key!r}] is {value!r}; {words}."
    assert "Default:" in error.hint


def test_bad_choice() -> None:
    error = _one(RUNNER="ray-jobs")
    assert error.id == "django_ray.E004"
    assert "'ray_job', 'ray_core', 'sync'" in error.msg


def test_unknown_key_suggests_the_close_ones() -> None:
    error = _one(MAX_TASK_ATTEMPT=3)
    assert error.id == "django_ray.E002"
    assert "DJANGO_RAY['MAX_TASK_ATTEMPT'] is not a django-ray setting" in error.msg
    assert "MAX_TASK_ATTEMPTS" in error.hint and "docs/settings.md" in error.hint
    error = _one(COLOUR="blue")
    assert error.id == "django_ray.E002"
    assert "Did you mean" not in error.hint and "docs/settings.md" in error.hint


def test_unknown_keys_are_ignored_by_the_resolved_settings() -> None:
    with override_settings(DJANGO_RAY={**TEST_RAY, "MAX_TASK_ATTEMPT": 9}):
        resolved = ray_settings().MAX_TASK_ATTEMPTS
        assert resolved == TEST_RAY["MAX_TASK_ATTEMPTS"]
        with pytest.raises(AttributeError, match="no setting 'MAX_TASK_ATTEMPT'"):
            _ = ray_settings().MAX_TASK_ATTEMPT


@pytest.mark.parametrize(
    ("entry", "words"),
    [
        ("tests.tasks.NoSuchError", "'tests.tasks.NoSuchError' cannot be imported"),
        ("no_such_module.Error", "'no_such_module.Error' cannot be imported"),
        ("PermanentError", "is not a dotted path such as 'myapp.errors.PermanentError'"),
        ("tests.tasks.add", "'tests.tasks.add' is not an exception class"),
        ("tests.tasks.FlakyError.x", "cannot be imported"),
    ],
)
def test_denylist_entries_must_be_importable_exception_classes(entry: str, words: str) -> None:
    error = _one(RETRY_EXCEPTION_DENYLIST=["tests.tasks.PermanentError", entry])
    assert error.id == "django_ray.E006"
    assert error.msg.startswith("DJANGO_RAY['RETRY_EXCEPTION_DENYLIST']: ")
    assert words in error.msg


def test_denylist_accepts_builtins_and_tuples() -> None:
    assert (
        _errors(RETRY_EXCEPTION_DENYLIST=("builtins.KeyError", "tests.tasks.PermanentError")) == []
    )


def test_heartbeat_must_be_shorter_than_the_lease() -> None:
    error = _one(WORKER_HEARTBEAT_SECONDS=30, WORKER_LEASE_SECONDS=30)
    assert error.id == "django_ray.E010"
    assert (
        "WORKER_HEARTBEAT_SECONDS (30) must be shorter than WORKER_LEASE_SECONDS (30)" in error.msg
    )


def test_result_storage_needs_its_location() -> None:
    error = _one(RESULT_STORAGE_BACKEND="filesystem")
    assert error.id == "django_ray.E011"
    assert "RESULT_STORAGE_FILESYSTEM_PATH" in error.hint
    error = _one(RESULT_STORAGE_BACKEND="s3")
    assert error.id == "django_ray.E012"
    assert "RESULT_STORAGE_S3 = {'BUCKET':" in error.hint


def test_every_problem_is_reported_at_once() -> None:
    errors = _errors(MAX_TASK_ATTEMPTS="x", RETRY_JITTER=-1, NOPE=1)
    assert sorted(e.id for e in errors) == ["django_ray.E002", "django_ray.E003", "django_ray.E005"]


def _backend_errors(options: dict[str, Any]) -> list[checks.CheckMessage]:
    from django.tasks import task_backends

    tasks_setting = {
        "default": {
            "BACKEND": "django_ray.backends.RayTaskBackend",
            "QUEUES": ["default"],
            "OPTIONS": options,
        }
    }
    with override_settings(TASKS=tasks_setting):
        return task_backends["default"].check()


def test_backend_options_are_checked() -> None:
    assert _backend_errors({"timeout_seconds": 60, "max_attempts": 2}) == []
    [error] = _backend_errors({"timeout_seconds": -1})
    assert error.id == "django_ray.E020" and "'timeout_seconds': 600" in error.hint
    [error] = _backend_errors({"max_attempts": 0})
    assert error.id == "django_ray.E021" and "'max_attempts': 3" in error.hint
    [error] = _backend_errors({"max_attempts": True})  # bool is an int, but never a count
    assert error.id == "django_ray.E021"
    [error] = _backend_errors({"timeout_seconds": True})
    assert error.id == "django_ray.E020"
    [error] = _backend_errors({"timeout_seconds": "600"})
    assert error.id == "django_ray.E020" and "not '600'" in error.msg
    [error] = _backend_errors({"timeout": 5})
    assert error.id == "django_ray.E022" and "unknown keys: timeout" in error.msg


def test_manage_py_check_fails_with_the_ids(tmp_path: Path) -> None:
    """The real ``manage.py check`` (and so the worker, which runs checks) refuses bad settings."""
    import os

    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        "PYTHONPATH": str(ROOT),
        "DJANGO_RAY_TEST_SETTINGS": json.dumps(
            {"MAX_TASK_ATTEMPTS": "three", "RETRY_EXCEPTION_DENYLIST": ["nope.Nope"]}
        ),
    }
    proc = subprocess.run(
        [sys.executable, "-m", "django", "check"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode != 0
    assert "django_ray.E003" in proc.stderr and "MAX_TASK_ATTEMPTS" in proc.stderr
    assert "django_ray.E006" in proc.stderr and "'nope.Nope' cannot be imported" in proc.stderr


def test_cpus_per_call_is_a_positive_fraction_or_none() -> None:
    assert _errors(RAY_CPUS_PER_CALL=0.25) == []
    assert _errors(RAY_CPUS_PER_CALL=None) == []
    error = _one(RAY_CPUS_PER_CALL=0)
    assert "RAY_CPUS_PER_CALL" in error.msg
    assert "RAY_CPUS_PER_CALL" in _one(RAY_CPUS_PER_CALL="half").msg


def test_entrypoint_resources_accept_what_the_jobs_api_takes() -> None:
    assert _errors(RAY_JOB_ENTRYPOINT_RESOURCES={}) == []
    assert (
        _errors(
            RAY_JOB_ENTRYPOINT_RESOURCES={
                "num_cpus": 0.5,
                "num_gpus": 1,
                "memory": 2 << 30,
                "resources": {"django_tasks": 1},
            }
        )
        == []
    )


@pytest.mark.parametrize(
    ("value", "words"),
    [
        ({"cpus": 1}, "unknown key 'cpus'; the keys are num_cpus, num_gpus, memory, resources"),
        ({"num_cpus": -1}, "'num_cpus' is -1; it must be a number >= 0"),
        ({"num_cpus": "1"}, "'num_cpus' is '1'; it must be a number >= 0"),
        ({"num_gpus": True}, "'num_gpus' is True; it must be a number >= 0"),
        ({"memory": 1.5}, "'memory' is 1.5; it must be a whole number of bytes >= 0"),
        ({"resources": ["django_tasks"]}, "'resources' must be a dict of custom resource name"),
        ({"resources": {"django_tasks": -2}}, "'resources' entry 'django_tasks': -2 must be"),
    ],
)
def test_bad_entrypoint_resources_name_the_problem(value: dict[str, Any], words: str) -> None:
    error = _one(RAY_JOB_ENTRYPOINT_RESOURCES=value)
    assert error.id == "django_ray.E006"
    assert error.msg.startswith("DJANGO_RAY['RAY_JOB_ENTRYPOINT_RESOURCES']: ")
    assert words in error.msg
    assert "head node" in error.hint


@pytest.mark.parametrize(
    ("value", "check_id", "words"),
    [
        (0, "django_ray.E005", "must be at least 1"),
        (2**31, "django_ray.E005", "must be at most"),
        ("1MB", "django_ray.E003", "must be int, not str"),
        (1.5, "django_ray.E003", "must be int, not float"),
    ],
)
def test_max_args_size_bytes_is_checked(value: object, check_id: str, words: str) -> None:
    error = _one(MAX_ARGS_SIZE_BYTES=value)
    assert error.id == check_id and words in error.msg


@pytest.mark.parametrize(
    ("value", "check_id", "words"),
    [
        ("myapp.tasks", "django_ray.E003", "must be list or tuple or None, not str"),
        (["myapp tasks"], "django_ray.E006", "is not a dotted module name"),
        ([3], "django_ray.E006", "is not a dotted module name"),
    ],
)
def test_task_modules_is_checked(value: object, check_id: str, words: str) -> None:
    error = _one(TASK_MODULES=value)
    assert error.id == check_id and words in error.msg


def test_good_task_modules_and_args_limits_pass() -> None:
    assert _errors(TASK_MODULES=["tests.tasks", "myapp"], MAX_ARGS_SIZE_BYTES=4096) == []
    assert _errors(TASK_MODULES=None) == []


def test_a_claim_fetches_at_most_256_mib_of_arguments() -> None:
    from django_ray.conf import CLAIM_MAX_ARGS_BYTES, claim_batch_limit

    with override_settings(DJANGO_RAY={**TEST_RAY, "CLAIM_BATCH_SIZE": 500}):
        assert claim_batch_limit(1000) == 256  # 256 MiB / 1 MiB (the default limit)
        assert claim_batch_limit(10) == 10
        assert claim_batch_limit(0) == 0
    big = {**TEST_RAY, "CLAIM_BATCH_SIZE": 100_000, "MAX_ARGS_SIZE_BYTES": 1 << 30}
    with override_settings(DJANGO_RAY=big):
        assert claim_batch_limit(10_000) == 1  # one huge row at a time, never none
    small = {**TEST_RAY, "CLAIM_BATCH_SIZE": 500, "MAX_ARGS_SIZE_BYTES": 1024}
    with override_settings(DJANGO_RAY=small):
        assert claim_batch_limit(10_000) == 500
    assert CLAIM_MAX_ARGS_BYTES == 256 * 1024 * 1024


def test_metrics_settings_refuse_short_tokens_and_non_bool_opt_outs() -> None:
    short = _one(METRICS_BEARER_TOKEN="s3cret")
    assert short.id == "django_ray.E006"
    assert "openssl rand -hex 32" in short.msg
    assert _errors(METRICS_BEARER_TOKEN="0123456789abcdef0123") == []
    assert _errors(METRICS_ALLOW_ANONYMOUS=True) == []
    assert _one(METRICS_ALLOW_ANONYMOUS="yes").id == "django_ray.E003"
    assert _one(METRICS_CACHE_SECONDS=True).id == "django_ray.E003"  # bool is no duration
    assert _one(WORKER_METRICS_ADDRESS=" ").id == "django_ray.E006"
