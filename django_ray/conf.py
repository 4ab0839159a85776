"""The ``DJANGO_RAY`` settings dict: documented defaults, typed access and system checks.

Every key is listed in :data:`SETTINGS` with its default, type, allowed range and a one-line
description; ``docs/settings.md`` documents the same keys. A wrong type, a value out of range or
an unknown key is a system check error (``django_ray.E0xx``) whose message says what to write.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from django.conf import settings as django_settings
from django.core import checks
from django.core.signals import setting_changed
from django.dispatch import receiver
from django.utils.module_loading import import_string

SETTINGS_NAME = "DJANGO_RAY"


@dataclass(frozen=True)
class Setting:
    """One documented key of ``DJANGO_RAY``."""

    default: Any
    types: tuple[type, ...]
    help: str
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[Any, ...] | None = None
    nullable: bool = False
    validator: Callable[[Any], str | None] | None = None


def _dotted_paths(value: Any) -> str | None:
    """Validate a list of dotted paths to exception classes; return a problem or None."""
    for item in value:
        if not isinstance(item, str) or "." not in item:
            return f"{item!r} is not a dotted path such as 'myapp.errors.PermanentError'"
        try:
            obj = import_string(item)
        except ImportError as exc:
            return f"{item!r} cannot be imported ({exc})"
        if not (isinstance(obj, type) and issubclass(obj, BaseException)):
            return f"{item!r} is not an exception class"
    return None


def _storage_options(value: Any) -> str | None:
    for key in value:
        if not isinstance(key, str):
            return f"option names must be strings, got {key!r}"
    return None


def _entrypoint_resources(value: Any) -> str | None:
    from django_ray import ray_options

    return ray_options.problem(value, ray_options.RESOURCE_KEYS)


def _queue_resources(value: Any) -> str | None:
    from django_ray import ray_options

    for queue, options in value.items():
        if not isinstance(queue, str) or not queue:
            return f"queue names must be non-empty strings, got {queue!r}"
        found = ray_options.problem(options)
        if found:
            return f"queue {queue!r}: {found}"
    return None


def _module_names(value: Any) -> str | None:
    for item in value:
        if not isinstance(item, str) or not all(part.isidentifier() for part in item.split(".")):
            return f"{item!r} is not a dotted module name such as 'myapp.tasks'"
    return None


def _periodic_tasks(value: Any) -> str | None:
    from django_ray import schedules  # croniter is needed only when schedules are checked

    return schedules.problem(value)


def _non_negative(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and value >= 0


def _non_blank_address(value: Any) -> str | None:
    return None if value.strip() else "name an address such as 127.0.0.1 or 10.0.0.5"


#: Shortest METRICS_BEARER_TOKEN accepted: a guessable token is no protection.
MIN_TOKEN_LENGTH = 16


def _long_enough_token(value: Any) -> str | None:
    if len(value.strip()) >= MIN_TOKEN_LENGTH:
        return None
    return (
        f"the token has {len(value.strip())} characters; use at least {MIN_TOKEN_LENGTH}, "
        "e.g. the output of: openssl rand -hex 32"
    )


SETTINGS: dict[str, Setting] = {
    "RAY_ADDRESS": Setting(
        None,
        (str,),
        "Ray cluster address for --cluster and the Ray Jobs API (falls back to $RAY_ADDRESS).",
        nullable=True,
    ),
    "RUNNER": Setting(
        "ray_job",
        (str,),
        "Runner used when the worker gets neither --local, --cluster nor --sync.",
        choices=("ray_job", "ray_core", "sync"),
    ),
    "DEFAULT_CONCURRENCY": Setting(
        4, (int,), "Tasks a worker runs at once when --concurrency is not given.", 1, 10_000
    ),
    "MAX_TASK_ATTEMPTS": Setting(
        3, (int,), "Attempts per task (1 disables retries), including the first.", 1, 1000
    ),
    "RETRY_BACKOFF_SECONDS": Setting(
        1.0,
        (int, float),
        "Base of the exponential retry backoff: base * 2**(attempt-1).",
        0,
        86_400,
    ),
    "RETRY_BACKOFF_MAX_SECONDS": Setting(
        300.0, (int, float), "Cap of one retry delay before jitter.", 0, 7 * 86_400
    ),
    "RETRY_JITTER": Setting(
        0.25, (int, float), "Random extra delay, as a fraction of the backoff (0 disables).", 0, 10
    ),
    "RETRY_EXCEPTION_DENYLIST": Setting(
        [],
        (list, tuple),
        "Dotted paths of exception classes never retried (subclasses included).",
        validator=_dotted_paths,
    ),
    "STUCK_TASK_TIMEOUT_SECONDS": Setting(
        60.0,
        (int, float),
        "A RUNNING row of a dead worker with no heartbeat for this long becomes LOST.",
        1,
        30 * 86_400,
    ),
    "WORKER_LEASE_SECONDS": Setting(
        30.0, (int, float), "A worker lease expires this long after its last heartbeat.", 1, 86_400
    ),
    "WORKER_HEARTBEAT_SECONDS": Setting(
        10.0, (int, float), "How often a worker renews its lease and row heartbeats.", 0.1, 3_600
    ),
    "POLL_INTERVAL_SECONDS": Setting(
        1.0,
        (int, float),
        "Fallback poll when no LISTEN/NOTIFY wake-up arrives (the only path on SQLite).",
        0.01,
        3_600,
    ),
    "SHUTDOWN_GRACE_SECONDS": Setting(
        30.0, (int, float), "After SIGTERM, how long in-flight work may finish.", 0, 86_400
    ),
    "CLAIM_BATCH_SIZE": Setting(
        500,
        (int,),
        "Most rows claimed in one statement; also at most 256 MiB / MAX_ARGS_SIZE_BYTES rows, "
        "so one claim never fetches more than 256 MiB of arguments.",
        1,
        100_000,
    ),
    "MAX_ARGS_SIZE_BYTES": Setting(
        1_048_576,
        (int,),
        "Largest JSON of one task's args and kwargs together accepted at enqueue; pass an id "
        "or a storage reference for bigger data.",
        1,
        1 << 30,
    ),
    "TASK_MODULES": Setting(
        None,
        (list, tuple),
        "If set, only tasks defined in these modules (or their submodules) may be enqueued "
        "and run, e.g. ['myapp.tasks']; None allows every module.",
        nullable=True,
        validator=_module_names,
    ),
    "MAX_CHUNK_SIZE": Setting(
        256,
        (int,),
        "Most short tasks run back to back in one Ray call (1 disables chunking).",
        1,
        10_000,
    ),
    "DEFAULT_TIMEOUT_SECONDS": Setting(
        None,
        (int, float),
        "Timeout of a task that sets none (None: no timeout).",
        0.001,
        30 * 86_400,
        nullable=True,
    ),
    "MAX_RESULT_SIZE_BYTES": Setting(
        1_048_576,
        (int,),
        "Results whose JSON is larger are stored by reference (see RESULT_STORAGE_BACKEND).",
        0,
        1 << 40,
    ),
    "RESULT_STORAGE_BACKEND": Setting(
        "digest",
        (str,),
        "Where oversized results go: digest (metadata only), filesystem, s3 or gcs.",
        choices=("digest", "filesystem", "s3", "gcs"),
    ),
    "RESULT_STORAGE_FILESYSTEM_PATH": Setting(
        None, (str,), "Shared directory for RESULT_STORAGE_BACKEND='filesystem'.", nullable=True
    ),
    "RESULT_STORAGE_S3": Setting(
        {}, (dict,), "S3 options: BUCKET, PREFIX, ENDPOINT_URL, REGION.", validator=_storage_options
    ),
    "RESULT_STORAGE_GCS": Setting(
        {},
        (dict,),
        "GCS options: BUCKET, PREFIX, ENDPOINT_URL, PROJECT.",
        validator=_storage_options,
    ),
    "RAY_NUM_CPUS": Setting(
        None,
        (int,),
        "CPUs of the embedded Ray started by --local (None: all).",
        1,
        4096,
        nullable=True,
    ),
    "RAY_CPUS_PER_CALL": Setting(
        None,
        (int, float),
        "CPUs each Ray Core call asks for (None: Ray's default of 1). Below 1, more task bodies "
        "than CPUs run at once (I/O-bound tasks); --local then keeps one Ray process per slot.",
        0.01,
        64,
        nullable=True,
    ),
    "RAY_THREADS_PER_CALL": Setting(
        8,
        (int,),
        "Most task bodies one Ray Core call runs at once, in threads, for a callable measured "
        "I/O-bound (its body's CPU time under a quarter of its wall time); 1 turns it off.",
        1,
        256,
    ),
    "RAY_INIT_KWARGS": Setting({}, (dict,), "Extra keyword arguments for ray.init()."),
    "RAY_JOB_PYTHON": Setting(
        None,
        (str,),
        "Python that runs a Ray Job's entrypoint on the cluster (None: the worker's own).",
        nullable=True,
    ),
    "RAY_JOB_RUNTIME_ENV": Setting(
        {}, (dict,), "Extra Ray runtime_env of each Ray Job (env_vars are merged)."
    ),
    "RAY_JOB_ENTRYPOINT_RESOURCES": Setting(
        {},
        (dict,),
        "What each Ray Job's entrypoint (the process that runs the task body) reserves: "
        "num_cpus, num_gpus, memory (bytes), resources (custom). {}: nothing, and Ray then runs "
        "every job on the head node; {'num_cpus': 1} spreads jobs over the cluster's nodes.",
        validator=_entrypoint_resources,
    ),
    "QUEUE_RESOURCES": Setting(
        {},
        (dict,),
        "Default Ray options of each queue's tasks: {queue: {'num_cpus': 2, 'num_gpus': 1, "
        "'memory': bytes, 'resources': {'name': 1}, 'runtime_env': {...}}}; a task's own "
        "options win key by key (docs/resources.md).",
        validator=_queue_resources,
    ),
    "UNSCHEDULABLE_TIMEOUT_SECONDS": Setting(
        60.0,
        (int, float),
        "How long a task whose Ray options no alive node offers waits for such a node before "
        "it ends FAILED (django_ray.UnschedulableTask) instead of pending in Ray.",
        0,
        86_400,
    ),
    "WORKER_METRICS_PORT": Setting(
        None,
        (int,),
        "Port of the worker's own Prometheus exporter (None: off, 0: any free port).",
        0,
        65_535,
        nullable=True,
    ),
    "WORKER_METRICS_ADDRESS": Setting(
        "127.0.0.1",
        (str,),
        "Address the worker's exporter binds ($DJANGO_RAY_WORKER_METRICS_ADDRESS wins): loopback "
        "by default; set the node's cluster address for a Prometheus on another host.",
        validator=_non_blank_address,
    ),
    "METRICS_BEARER_TOKEN": Setting(
        None,
        (str,),
        "Token /api/metrics requires as 'Authorization: Bearer <token>' (None: every scrape gets "
        "401 unless METRICS_ALLOW_ANONYMOUS is True).",
        nullable=True,
        validator=_long_enough_token,
    ),
    "EXECUTOR_TASK_INFO_LOGS": Setting(
        False,
        (bool,),
        "Keep Django's own per-task INFO lines (django.tasks 'Task id=... state=RUNNING', "
        "'state=SUCCESSFUL') in the processes that run task bodies (Ray workers, Ray Jobs). Off: "
        "the worker's log already has a line per claim and outcome with the same task id, and "
        "the duplicates cost about 0.1 ms of CPU per task; failures (ERROR, with traceback) and "
        "a django.tasks level set in LOGGING are kept either way.",
    ),
    "METRICS_ALLOW_ANONYMOUS": Setting(
        False,
        (bool,),
        "Serve /api/metrics without a token when METRICS_BEARER_TOKEN is unset (local "
        "development only: the metrics name queues and failing callables).",
    ),
    "PERIODIC_TASKS": Setting(
        {},
        (dict,),
        "Periodic tasks: {name: {'task': dotted path, 'cron': '*/5 * * * *' (6 fields: "
        "seconds first), 'timezone': 'UTC', 'args': [], 'kwargs': {}}} (docs/scheduling.md).",
        validator=_periodic_tasks,
    ),
    "PERIODIC_CATCHUP_SECONDS": Setting(
        3600.0,
        (int, float),
        "How far back a worker fires missed instants of a schedule (after downtime); older "
        "ones are skipped and counted.",
        0,
        30 * 86_400,
    ),
    "METRICS_CACHE_SECONDS": Setting(
        5.0,
        (int, float),
        "How long one /api/metrics database read is reused by later scrapes in the same "
        "process (0: read on every scrape).",
        0,
        3_600,
    ),
}


# Most argument bytes one claim may fetch: a claim takes at most this / MAX_ARGS_SIZE_BYTES rows.
CLAIM_MAX_ARGS_BYTES = 256 * 1024 * 1024


def claim_batch_limit(free_slots: int) -> int:
    """How many rows the next claim may fetch: free slots, ``CLAIM_BATCH_SIZE``, and the
    argument bytes bound (rows x ``MAX_ARGS_SIZE_BYTES`` <= :data:`CLAIM_MAX_ARGS_BYTES`).

    With other live workers on its queues, the claim itself then takes at most this worker's
    share of the outstanding work (:func:`django_ray.lifecycle.claim.claim`)."""
    conf = ray_settings()
    by_bytes = max(1, CLAIM_MAX_ARGS_BYTES // int(conf.MAX_ARGS_SIZE_BYTES))
    return max(0, min(free_slots, int(conf.CLAIM_BATCH_SIZE), by_bytes))


@dataclass(frozen=True)
class RaySettings:
    """Resolved ``DJANGO_RAY`` values (defaults filled in). Read with :func:`ray_settings`."""

    values: Mapping[str, Any]

    def __getattr__(self, name: str) -> Any:
        try:
            return self.values[name]
        except KeyError:
            raise AttributeError(f"DJANGO_RAY has no setting {name!r}") from None

    @property
    def ray_address(self) -> str | None:
        return self.values["RAY_ADDRESS"] or os.environ.get("RAY_ADDRESS") or None


@functools.cache
def ray_settings() -> RaySettings:
    """The current settings with defaults applied. Cached; reset when settings change."""
    user = getattr(django_settings, SETTINGS_NAME, {}) or {}
    values = {key: spec.default for key, spec in SETTINGS.items()}
    if isinstance(user, Mapping):
        values.update({k: v for k, v in user.items() if k in SETTINGS})
    return RaySettings(values)


@receiver(setting_changed)
def _reset_cache(*, setting: str, **kwargs: Any) -> None:
    if setting == SETTINGS_NAME:
        ray_settings.cache_clear()


def _type_names(types: tuple[type, ...]) -> str:
    return " or ".join(t.__name__ for t in types)


def check_settings(**kwargs: Any) -> list[checks.CheckMessage]:
    """System check of ``DJANGO_RAY``: unknown keys, wrong types, ranges and choices."""
    user = getattr(django_settings, SETTINGS_NAME, {})
    errors: list[checks.CheckMessage] = []
    if user is None:
        return errors
    if not isinstance(user, Mapping):
        return [
            checks.Error(
                f"{SETTINGS_NAME} must be a dict, not {type(user).__name__}.",
                hint=f"Write {SETTINGS_NAME} = {{'MAX_TASK_ATTEMPTS': 3, ...}} in your settings.",
                id="django_ray.E001",
            )
        ]
    for key, value in user.items():
        spec = SETTINGS.get(key)
        if spec is None:
            close = [k for k in SETTINGS if k.split("_")[0] == str(key).split("_")[0]]
            errors.append(
                checks.Error(
                    f"{SETTINGS_NAME}[{key!r}] is not a django-ray setting.",
                    hint=(f"Did you mean one of {', '.join(close)}? " if close else "")
                    + "See docs/settings.md for the list of settings.",
                    id="django_ray.E002",
                )
            )
            continue
        if value is None and spec.nullable:
            continue
        # bool is an int subclass: True is never a sensible count or number of seconds.
        if not isinstance(value, spec.types) or (
            isinstance(value, bool) and bool not in spec.types
        ):
            errors.append(
                checks.Error(
                    f"{SETTINGS_NAME}[{key!r}] must be {_type_names(spec.types)}"
                    + (" or None" if spec.nullable else "")
                    + f", not {type(value).__name__} ({value!r}).",
                    hint=f"{spec.help} Default: {spec.default!r}.",
                    id="django_ray.E003",
                )
            )
            continue
        if spec.choices is not None and value not in spec.choices:
            errors.append(
                checks.Error(
                    f"{SETTINGS_NAME}[{key!r}] is {value!r}; it must be one of "
                    f"{', '.join(repr(c) for c in spec.choices)}.",
                    hint=spec.help,
                    id="django_ray.E004",
                )
            )
            continue
        if spec.minimum is not None and value < spec.minimum:
            errors.append(
                checks.Error(
                    f"{SETTINGS_NAME}[{key!r}] is {value!r}; it must be at least {spec.minimum}.",
                    hint=f"{spec.help} Default: {spec.default!r}.",
                    id="django_ray.E005",
                )
            )
            continue
        if spec.maximum is not None and value > spec.maximum:
            errors.append(
                checks.Error(
                    f"{SETTINGS_NAME}[{key!r}] is {value!r}; it must be at most {spec.maximum}.",
                    hint=f"{spec.help} Default: {spec.default!r}.",
                    id="django_ray.E005",
                )
            )
            continue
        if spec.validator is not None:
            problem = spec.validator(value)
            if problem:
                errors.append(
                    checks.Error(
                        f"{SETTINGS_NAME}[{key!r}]: {problem}.",
                        hint=spec.help,
                        id="django_ray.E006",
                    )
                )
    errors.extend(_check_relations(user))
    return errors


def _check_relations(user: Mapping[str, Any]) -> list[checks.CheckMessage]:
    """Checks between settings, run only when each value is individually valid."""
    resolved = {key: spec.default for key, spec in SETTINGS.items()}
    resolved.update({k: v for k, v in user.items() if k in SETTINGS})
    errors: list[checks.CheckMessage] = []
    heartbeat, lease = resolved["WORKER_HEARTBEAT_SECONDS"], resolved["WORKER_LEASE_SECONDS"]
    if (
        isinstance(heartbeat, int | float)
        and isinstance(lease, int | float)
        and not isinstance(heartbeat, bool)
        and heartbeat >= lease
    ):
        errors.append(
            checks.Error(
                f"WORKER_HEARTBEAT_SECONDS ({heartbeat}) must be shorter than "
                f"WORKER_LEASE_SECONDS ({lease}), or every lease expires between heartbeats.",
                hint="Use a heartbeat of at most a third of the lease, e.g. 10 and 30.",
                id="django_ray.E010",
            )
        )
    if (
        resolved["RESULT_STORAGE_BACKEND"] == "filesystem"
        and not resolved["RESULT_STORAGE_FILESYSTEM_PATH"]
    ):
        errors.append(
            checks.Error(
                "RESULT_STORAGE_BACKEND is 'filesystem' but RESULT_STORAGE_FILESYSTEM_PATH is unset.",
                hint="Set RESULT_STORAGE_FILESYSTEM_PATH to a directory shared by every worker.",
                id="django_ray.E011",
            )
        )
    for backend, key in (("s3", "RESULT_STORAGE_S3"), ("gcs", "RESULT_STORAGE_GCS")):
        options = resolved[key]
        if (
            resolved["RESULT_STORAGE_BACKEND"] == backend
            and isinstance(options, Mapping)
            and not options.get("BUCKET")
        ):
            errors.append(
                checks.Error(
                    f"RESULT_STORAGE_BACKEND is {backend!r} but {key}['BUCKET'] is unset.",
                    hint=f"Set {key} = {{'BUCKET': 'my-results', ...}}.",
                    id="django_ray.E012",
                )
            )
    return errors
