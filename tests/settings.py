"""Settings for the test suite: a real throwaway PostgreSQL server, started once per run.

The pytest process starts the server when this module is first imported and exports its
address in ``DJANGO_RAY_TEST_PG``; worker processes spawned by tests inherit that variable and
connect to the same server instead of starting their own.
"""

from __future__ import annotations

import atexit
import json
import os
import sys
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent

if not os.environ.get("DJANGO_RAY_TEST_PG"):
    from tests.support.postgres import create_server, destroy_server

    _server = create_server()
    os.environ["DJANGO_RAY_TEST_PG"] = f"{_server.host}:{_server.port}"
    atexit.register(destroy_server, _server)

_pg_host, _pg_port = os.environ["DJANGO_RAY_TEST_PG"].rsplit(":", 1)

SECRET_KEY = "django-ray-tests-not-secret"
DEBUG = False
USE_TZ = True
TIME_ZONE = "UTC"
ALLOWED_HOSTS = ["*"]
ROOT_URLCONF = "tests.urls"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",  # the admin's CSS and JS for the live server (tests/browser/)
    "django_ray",
    "tests",
]
STATIC_URL = "static/"
MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    # The browser tests post the admin's forms as a real browser does, CSRF token checked.
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": os.environ.get("DJANGO_RAY_TEST_DB", "test_django_ray"),
        "USER": "postgres",
        "HOST": _pg_host,
        "PORT": _pg_port,
        "TEST": {"NAME": "test_django_ray"},
    },
    # A second database on the same server: a project whose task tables live on another alias
    # (TASKS["elsewhere"]["OPTIONS"]["database"]). Created only for tests that ask for it.
    "tasks": {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": os.environ.get("DJANGO_RAY_TEST_DB_TASKS", "test_django_ray_tasks"),
        "USER": "postgres",
        "HOST": _pg_host,
        "PORT": _pg_port,
        "TEST": {"NAME": "test_django_ray_tasks"},
    },
}

TASKS = {
    "default": {
        "BACKEND": "django_ray.backends.RayTaskBackend",
        "QUEUES": ["default", "other", "slow"],
    },
    "elsewhere": {
        "BACKEND": "django_ray.backends.RayTaskBackend",
        "QUEUES": ["default"],
        "OPTIONS": {"database": "tasks"},
    },
}

DJANGO_RAY = {
    "MAX_TASK_ATTEMPTS": 3,
    "RETRY_BACKOFF_SECONDS": 0.05,
    "RETRY_JITTER": 0.1,
    "RETRY_EXCEPTION_DENYLIST": ["tests.tasks.PermanentError"],
    "WORKER_HEARTBEAT_SECONDS": 1.0,
    "WORKER_LEASE_SECONDS": 5.0,
    "STUCK_TASK_TIMEOUT_SECONDS": 3.0,
    "POLL_INTERVAL_SECONDS": 0.5,
    "SHUTDOWN_GRACE_SECONDS": 10.0,
    "RAY_NUM_CPUS": 2,
    "RUNNER": "ray_core",
}

# Ray Jobs run `python -m django_ray.jobs` on the Ray head: they must reach the same database.
DJANGO_RAY["RAY_JOB_RUNTIME_ENV"] = {
    "env_vars": {
        key: os.environ[key]
        for key in (
            "DJANGO_RAY_TEST_PG",
            "DJANGO_RAY_TEST_DB",
            "DJANGO_RAY_TEST_DB_TASKS",
            "DJANGO_RAY_TEST_SETTINGS",
        )
        if key in os.environ
    }
}

# Subprocess workers of a test can get extra DJANGO_RAY keys (JSON) through the environment.
DJANGO_RAY.update(json.loads(os.environ.get("DJANGO_RAY_TEST_SETTINGS", "{}")))

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"stderr": {"class": "logging.StreamHandler"}},
    "loggers": {"django_ray": {"handlers": ["stderr"], "level": "INFO", "propagate": False}},
}

# A test plays a Ray node that cannot load the project: with this variable set, these settings
# refuse to load in Ray worker processes (whose program is Ray's default_worker.py), while the
# django-ray worker that starts them loads normally.
if os.environ.get("DJANGO_RAY_TEST_REFUSE_RAY_WORKERS") and sys.argv[0].endswith(
    "default_worker.py"
):
    raise ImportError("DJANGO_RAY_TEST_REFUSE_RAY_WORKERS: no project on this Ray node")
