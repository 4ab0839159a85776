"""Per-task Ray options (docs/resources.md): validation, queue defaults, and the mapping to Ray
Core ``.options()`` and to the Jobs API's ``entrypoint_*`` fields."""

from __future__ import annotations

from typing import Any

import pytest
from django.conf import settings as django_settings
from django.tasks.exceptions import InvalidTask
from django.test import override_settings

from django_ray import ray_options
from django_ray.conf import check_settings
from django_ray.outcomes import ClaimedTask
from django_ray.runners.ray_job import RayJobRunner
from tests import tasks
from tests.support.claimed import claimed_task


@pytest.mark.parametrize(
    ("options", "words"),
    [
        ({"num_cpu": 1}, "unknown key 'num_cpu'; the keys are num_cpus, num_gpus, memory"),
        ({"num_cpus": -1}, "'num_cpus' is -1; it must be a number >= 0"),
        ({"num_gpus": "1"}, "'num_gpus' is '1'; it must be a number >= 0"),
        ({"num_gpus": True}, "'num_gpus' is True"),
        ({"memory": 1.5}, "'memory' is 1.5; it must be a whole number of bytes >= 0"),
        ({"resources": ["special"]}, "'resources' must be a dict of custom resource name"),
        ({"resources": {"special": -1}}, "'resources' entry 'special': -1 must be a number"),
        ({"resources": {"": 1}}, "non-empty string name"),
        ({"resources": {"GPU": 1}}, "'resources' may not name 'GPU'; use num_gpus=1 instead"),
        ({"runtime_env": "numpy"}, "'runtime_env' must be a dict"),
        ({"runtime_env": {"env_vars": {"A": 1}}}, "env_vars must map strings to strings"),
        ({"runtime_env": {"pip": {1, 2}}}, "'runtime_env' must be plain JSON data"),
        ("gpu", "Ray options must be a dict"),
    ],
)
def test_bad_options_name_the_problem(options: Any, words: str) -> None:
    found = ray_options.problem(options)
    assert found is not None and words in found, found


def test_good_options_pass() -> None:
    assert (
        ray_options.problem(
            {
                "num_cpus": 0.5,
                "num_gpus": 1,
                "memory": 2 << 30,
                "resources": {"special": 1},
                "runtime_env": {"env_vars": {"MODE": "fast"}, "pip": ["six"]},
            }
        )
        is None
    )


@pytest.mark.parametrize(
    ("using", "words"),
    [
        ({"num_gpus": -1}, "'num_gpus' is -1"),
        ({"memory": "2G"}, "'memory' is '2G'; it must be a whole number of bytes"),
        ({"resources": {"special": "one"}}, "'resources' entry 'special'"),
    ],
)
def test_enqueue_refuses_bad_options(using: dict[str, Any], words: str) -> None:
    with pytest.raises(InvalidTask) as caught:
        tasks.noop.using(**using).enqueue()
    assert words in str(caught.value) and "docs/resources.md" in str(caught.value)


def _check(queue_resources: Any) -> list[str]:
    with override_settings(
        DJANGO_RAY={**django_settings.DJANGO_RAY, "QUEUE_RESOURCES": queue_resources}
    ):
        return [f"{e.id} {e.msg}" for e in check_settings()]


def test_queue_resources_check_names_the_queue_and_key() -> None:
    assert _check({"gpu": {"num_gpus": 1}, "big": {"memory": 8 << 30}}) == []
    (error,) = _check({"gpu": {"gpus": 1}})
    assert error.startswith("django_ray.E006 DJANGO_RAY['QUEUE_RESOURCES']: queue 'gpu': ")
    assert "unknown key 'gpus'" in error
    (error,) = _check({"gpu": {"num_gpus": -1}})
    assert "queue 'gpu': 'num_gpus' is -1" in error
    (error,) = _check({"gpu": ["num_gpus"]})
    assert "queue 'gpu': Ray options must be a dict" in error


def test_the_task_wins_key_by_key_over_its_queue() -> None:
    queue = {"num_gpus": 1, "resources": {"gpu_node": 1}}
    assert ray_options.merged(queue, {"resources": {"special": 1}}) == {
        "num_gpus": 1,
        "resources": {"special": 1},
    }
    assert ray_options.merged(None, {}) is None
    assert ray_options.merged({}, {"num_cpus": None}) is None


def test_chunks_group_only_equal_options() -> None:
    a = ray_options.group_key({"num_cpus": 1, "resources": {"x": 1}})
    assert a == ray_options.group_key({"resources": {"x": 1}, "num_cpus": 1})
    assert a != ray_options.group_key({"num_cpus": 2, "resources": {"x": 1}})
    assert ray_options.group_key(None) == ray_options.group_key({})


def test_demand_and_the_unschedulable_reason() -> None:
    need = ray_options.demand({"num_gpus": 1, "resources": {"special": 1}}, default_cpus=1)
    assert need == {"CPU": 1.0, "GPU": 1.0, "special": 1.0}
    head = {"CPU": 4.0, "memory": 1e9}
    gpu_node = {"CPU": 2.0, "GPU": 1.0}
    special_node = {"CPU": 1.0, "special": 1.0}
    reason = ray_options.unschedulable_reason(need, [head, gpu_node])
    assert reason is not None and "no alive node has the resource(s) special" in reason
    assert "docs/resources.md" in reason
    # Both exist, but never on one node.
    reason = ray_options.unschedulable_reason(need, [gpu_node, special_node])
    assert reason is not None and "no single alive node has all of" in reason
    assert ray_options.unschedulable_reason(need, [{**gpu_node, "special": 1.0}]) is None
    assert ray_options.unschedulable_reason({"CPU": 1.0}, [head]) is None


def _claimed(options: dict[str, Any] | None) -> ClaimedTask:
    return claimed_task(1, ray_options=options)


def test_ray_job_entrypoint_fields_and_runtime_env() -> None:
    runner = RayJobRunner(1, address="http://127.0.0.1:1")  # never contacted here
    options = {
        "num_cpus": 2,
        "num_gpus": 1,
        "memory": 1 << 30,
        "resources": {"special": 1},
        "runtime_env": {"env_vars": {"MODE": "fast"}, "pip": ["six"]},
    }
    base = {**django_settings.DJANGO_RAY, "RAY_JOB_ENTRYPOINT_RESOURCES": {"num_cpus": 1}}
    with override_settings(DJANGO_RAY=base):
        assert runner._entrypoint_resources(_claimed(options)) == {
            "entrypoint_num_cpus": 2,
            "entrypoint_num_gpus": 1,
            "entrypoint_memory": 1 << 30,
            "entrypoint_resources": {"special": 1},
        }
        # No options: the setting alone.
        assert runner._entrypoint_resources(_claimed(None)) == {"entrypoint_num_cpus": 1}
        env = runner._runtime_env(_claimed(options))
    assert env["pip"] == ["six"]
    # The task's env_vars are added to the ones the job needs to find Django, never replace them.
    assert env["env_vars"]["MODE"] == "fast"
    assert "PYTHONPATH" in env["env_vars"]
