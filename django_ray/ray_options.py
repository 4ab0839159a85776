"""Per-task Ray resources (``docs/resources.md``): one rule for what a task may ask Ray for.

A task (``@task(num_gpus=1)``, ``.using(resources={"special": 1})``) or a queue
(``DJANGO_RAY["QUEUE_RESOURCES"]``) names any of :data:`OPTION_KEYS`. The merged options are
stored on the row at enqueue (``ray_options``) and travel to the runner on the
:class:`~django_ray.outcomes.ClaimedTask`; this module is pure (no Django models, no Ray):
validation, merging, the mapping to Ray Core ``.options()`` and to the Jobs API's
``entrypoint_*`` fields, and the check "does any alive node offer the whole request".
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

#: What Ray reserves for a call or a job's entrypoint.
RESOURCE_KEYS = ("num_cpus", "num_gpus", "memory", "resources")
#: Every per-task Ray option.
OPTION_KEYS = (*RESOURCE_KEYS, "runtime_env")

#: Ray's names of the resources behind ``num_cpus``, ``num_gpus`` and ``memory``.
RAY_RESOURCE_NAMES = {"num_cpus": "CPU", "num_gpus": "GPU", "memory": "memory"}

#: The error class path of a task no alive node can run (the resource is missing everywhere).
UNSCHEDULABLE = "django_ray.UnschedulableTask"
#: The error class path of a task whose options Ray refused at submit (e.g. a bad runtime_env).
REFUSED = "django_ray.RayOptionsRefused"


def _amount(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and value >= 0


def problem(options: Any, keys: tuple[str, ...] = OPTION_KEYS) -> str | None:
    """What is wrong with ``options`` (a dict of :data:`OPTION_KEYS`), or None.

    The message names the key, the value and what to write instead.
    """
    if not isinstance(options, Mapping):
        return f"Ray options must be a dict such as {{'num_gpus': 1}}, not {options!r}"
    for key, value in options.items():
        if key not in keys:
            return f"unknown key {key!r}; the keys are {', '.join(keys)}"
        if key == "resources":
            if not isinstance(value, Mapping):
                return (
                    f"'resources' must be a dict of custom resource name to amount, e.g. "
                    f"{{'special': 1}}, not {value!r}"
                )
            for name, need in value.items():
                if not isinstance(name, str) or not name or not _amount(need):
                    return (
                        f"'resources' entry {name!r}: {need!r} must be a number >= 0 under a "
                        "non-empty string name"
                    )
                if name in RAY_RESOURCE_NAMES.values():
                    option = next(k for k, v in RAY_RESOURCE_NAMES.items() if v == name)
                    return f"'resources' may not name {name!r}; use {option}={need!r} instead"
        elif key == "runtime_env":
            if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
                return f"'runtime_env' must be a dict such as {{'pip': ['numpy']}}, not {value!r}"
            env_vars = value.get("env_vars", {})
            if not isinstance(env_vars, Mapping) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in env_vars.items()
            ):
                return f"'runtime_env' env_vars must map strings to strings, not {env_vars!r}"
            try:
                json.dumps(value)
            except (TypeError, ValueError) as exc:
                return f"'runtime_env' must be plain JSON data ({exc})"
        elif not _amount(value) or (key == "memory" and not isinstance(value, int)):
            kind = "a whole number of bytes" if key == "memory" else "a number"
            return f"{key!r} is {value!r}; it must be {kind} >= 0"
    return None


def merged(
    queue_default: Mapping[str, Any] | None, task: Mapping[str, Any]
) -> dict[str, Any] | None:
    """The options a row stores: the queue's default, each key overridden by the task's.

    None when neither sets anything (the row's ``ray_options`` stays NULL).
    """
    options = {**(queue_default or {}), **{k: v for k, v in task.items() if v is not None}}
    return options or None


def group_key(options: Mapping[str, Any] | None) -> str:
    """Equal for equal options: a Ray call only runs tasks of one key together."""
    # No JSON for the common case: tasks without options must chunk as cheaply as before.
    return json.dumps(options, sort_keys=True) if options else ""


def core_options(options: Mapping[str, Any] | None) -> dict[str, Any]:
    """Keyword arguments of a Ray Core ``remote_function.options(...)`` call."""
    return dict(options or {})


def entrypoint_fields(
    options: Mapping[str, Any] | None, defaults: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The Jobs API's ``entrypoint_num_cpus/_num_gpus/_memory/_resources`` of one job.

    ``defaults`` (``RAY_JOB_ENTRYPOINT_RESOURCES``) apply per key where the task sets none;
    zero amounts and empty dicts are left out, as the Jobs API treats them as unset anyway.
    """
    wanted = entrypoint_request(options, defaults)
    return {f"entrypoint_{key}": value for key, value in wanted.items() if value}


def entrypoint_request(
    options: Mapping[str, Any] | None, defaults: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """What a job's entrypoint reserves: the task's resource keys over ``defaults``."""
    return {
        **(defaults or {}),
        **{k: v for k, v in (options or {}).items() if k in RESOURCE_KEYS},
    }


def alive_nodes(listed: Iterable[Mapping[str, Any]]) -> list[dict[str, float]]:
    """Total resources of each alive node, from Ray's state API node listing (``detail``)."""
    return [
        {str(k): float(v) for k, v in (node.get("resources_total") or {}).items()}
        for node in listed
        if node.get("state") == "ALIVE"
    ]


def job_runtime_env(base: Mapping[str, Any], options: Mapping[str, Any] | None) -> dict[str, Any]:
    """A job's ``runtime_env``: the worker's (``base``), with the task's keys over it;
    ``env_vars`` are merged (the task's win), so ``PYTHONPATH`` and the settings stay set."""
    task_env = dict((options or {}).get("runtime_env") or {})
    env_vars = {**(base.get("env_vars") or {}), **(task_env.pop("env_vars", None) or {})}
    return {**base, **task_env, "env_vars": env_vars}


def demand(options: Mapping[str, Any] | None, default_cpus: float) -> dict[str, float]:
    """What one call needs of a single node, by Ray's resource names (zero amounts left out)."""
    options = options or {}
    need: dict[str, float] = {"CPU": float(options.get("num_cpus", default_cpus))}
    for key in ("num_gpus", "memory"):
        if key in options:
            need[RAY_RESOURCE_NAMES[key]] = float(options[key])
    need.update({name: float(amount) for name, amount in (options.get("resources") or {}).items()})
    return {name: amount for name, amount in need.items() if amount > 0}


def unschedulable_reason(
    need: Mapping[str, float], nodes: Iterable[Mapping[str, float]]
) -> str | None:
    """Why no node in ``nodes`` (each alive node's total resources) can run a call needing
    ``need``, or None when one can. Names the resources and the fix."""
    nodes = list(nodes)
    if any(all(node.get(name, 0.0) >= amount for name, amount in need.items()) for node in nodes):
        return None
    absent = sorted(n for n in need if not any(n in node for node in nodes))
    short = sorted(
        f"{n}={need[n]:g} (the most one node has: {max(node.get(n, 0.0) for node in nodes):g})"
        for n in need
        if n not in absent
    )
    parts = []
    if absent:
        parts.append(f"no alive node has the resource(s) {', '.join(absent)}")
    if short and not absent:
        parts.append(f"no single alive node has all of {', '.join(short)}")
    wanted = ", ".join(f"{n}={a:g}" for n, a in sorted(need.items()))
    return (
        f"Unschedulable on this Ray cluster ({len(nodes)} alive node(s)): "
        f"{'; '.join(parts)}. The task asked for {wanted}. Start a node that offers it "
        "(e.g. ray start --resources='{\"name\": 1}' or a GPU node), or change the task's or "
        "queue's Ray options (docs/resources.md)."
    )
