"""Django settings shared by every system the benchmark runs (one virtualenv each).

Everything that differs between systems comes from environment variables set by the harness:
``BENCH_SYSTEM`` (``ours``, ``djray070`` or ``tasksdb``), ``BENCH_DB_NAME``, ``BENCH_DB_HOST``
and ``BENCH_DB_PORT``. This directory is the only thing the harness puts on ``PYTHONPATH``, so
django-ray 0.7.0 (same import name as ours) never sees our package and vice versa.
"""

from __future__ import annotations

import os

SYSTEM = os.environ.get("BENCH_SYSTEM", "ours")
SECRET_KEY = "bench-not-secret"
DEBUG = False
USE_TZ = True
TIME_ZONE = "UTC"
ALLOWED_HOSTS: list[str] = []
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": os.environ.get("BENCH_DB_NAME", "bench"),
        "USER": "postgres",
        "HOST": os.environ.get("BENCH_DB_HOST", "127.0.0.1"),
        "PORT": os.environ.get("BENCH_DB_PORT", "5432"),
        # Persistent connections, as any production deployment would use.
        "CONN_MAX_AGE": None,
    }
}

INSTALLED_APPS = ["django.contrib.contenttypes", "benchapp"]

if SYSTEM == "tasksdb":
    INSTALLED_APPS.append("django_tasks_db")
    TASKS = {"default": {"BACKEND": "django_tasks_db.DatabaseBackend", "QUEUES": ["default"]}}
elif SYSTEM == "djray070":
    INSTALLED_APPS.append("django_ray")
    TASKS = {"default": {"BACKEND": "django_ray.backends.RayTaskBackend", "QUEUES": ["default"]}}
    DJANGO_RAY = {
        "RAY_ADDRESS": os.environ.get("BENCH_RAY_ADDRESS", "auto"),
        "RUNNER": "ray_core",
        "DEFAULT_CONCURRENCY": int(os.environ.get("BENCH_CONCURRENCY", "8")),
        "MAX_TASK_ATTEMPTS": 1,
    }
else:
    INSTALLED_APPS.append("django_ray")
    TASKS = {"default": {"BACKEND": "django_ray.backends.RayTaskBackend", "QUEUES": ["default"]}}
    DJANGO_RAY = {
        "DEFAULT_CONCURRENCY": int(os.environ.get("BENCH_CONCURRENCY", "8")),
        "MAX_TASK_ATTEMPTS": 1,
    }
    if os.environ.get("BENCH_CPUS_PER_CALL"):  # the I/O-bound setting (ours-io)
        DJANGO_RAY["RAY_CPUS_PER_CALL"] = float(os.environ["BENCH_CPUS_PER_CALL"])
    if os.environ.get("BENCH_THREADS_PER_CALL"):  # 1: no task bodies in threads (ours-nothreads)
        DJANGO_RAY["RAY_THREADS_PER_CALL"] = int(os.environ["BENCH_THREADS_PER_CALL"])
    if os.environ.get("BENCH_RUNNER"):  # Ray Jobs mode: no --local/--cluster flag
        DJANGO_RAY["RUNNER"] = os.environ["BENCH_RUNNER"]
        DJANGO_RAY["RAY_ADDRESS"] = os.environ["BENCH_RAY_ADDRESS"]

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": os.environ.get("BENCH_LOG_LEVEL", "WARNING")},
}
