"""Settings from the environment written by the django_ray role (/etc/django-ray/*.env)."""

from __future__ import annotations

import os
from urllib.parse import parse_qsl, unquote, urlsplit


def _database(url: str) -> dict[str, object]:
    if not url:
        raise RuntimeError("DATABASE_URL is not set (expected in /etc/django-ray/secrets.env)")
    parts = urlsplit(url)
    return {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": parts.path.lstrip("/"),
        "USER": unquote(parts.username or ""),
        "PASSWORD": unquote(parts.password or ""),
        "HOST": parts.hostname or "",
        "PORT": parts.port or 5432,
        "CONN_MAX_AGE": 0,
        # sslmode=verify-full&sslrootcert=... from the role's DATABASE_URL: TLS, server verified.
        "OPTIONS": {"connect_timeout": 5, **dict(parse_qsl(parts.query))},
    }


def _seconds(name: str, default: float) -> float:
    return float(os.environ.get(name, default))


SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "")
DEBUG = False
ALLOWED_HOSTS = [h for h in os.environ.get("DJANGO_ALLOWED_HOSTS", "localhost").split(",") if h]
INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "django_ray",
    "labapp",
]
MIDDLEWARE: list[str] = []
ROOT_URLCONF = "labapp.urls"
WSGI_APPLICATION = "labapp.wsgi.application"
DATABASES = {"default": _database(os.environ.get("DATABASE_URL", ""))}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
USE_TZ = True
TIME_ZONE = "UTC"

TASKS = {
    "default": {
        "BACKEND": "django_ray.backends.RayTaskBackend",
        "QUEUES": ["default", "slow"],
    }
}

_metrics_port = os.environ.get("DJANGO_RAY_WORKER_METRICS_PORT")
DJANGO_RAY = {
    "RAY_ADDRESS": os.environ.get("RAY_ADDRESS") or None,
    "MAX_TASK_ATTEMPTS": 5,
    "RETRY_BACKOFF_SECONDS": 0.5,
    "RETRY_BACKOFF_MAX_SECONDS": 2.0,
    # Fast recovery in the lab: leases expire quickly, orphaned rows become LOST quickly.
    "WORKER_HEARTBEAT_SECONDS": _seconds("LAB_HEARTBEAT_SECONDS", 2.0),
    "WORKER_LEASE_SECONDS": _seconds("LAB_LEASE_SECONDS", 8.0),
    "STUCK_TASK_TIMEOUT_SECONDS": _seconds("LAB_STUCK_SECONDS", 12.0),
    "SHUTDOWN_GRACE_SECONDS": _seconds("DJANGO_RAY_SHUTDOWN_GRACE_SECONDS", 30.0),
    "WORKER_METRICS_PORT": int(_metrics_port) if _metrics_port else None,
    # Written by the django_ray role into secrets.env; Prometheus sends the same token.
    "METRICS_BEARER_TOKEN": os.environ.get("DJANGO_RAY_METRICS_BEARER_TOKEN") or None,
    "DEFAULT_TIMEOUT_SECONDS": float(os.environ.get("DJANGO_RAY_DEFAULT_TIMEOUT_SECONDS") or 0)
    or None,
}
