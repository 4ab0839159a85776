"""Settings of the example project, read from the environment (12-factor style).

The packaged deployment sets these in ``/etc/django-ray/django-ray.env``:

- ``DATABASE_URL``: ``postgresql://user:password@host:5432/name`` or ``sqlite:///path`` (default:
  ``example/db.sqlite3``);
- ``DJANGO_SECRET_KEY``, ``DJANGO_DEBUG``, ``DJANGO_ALLOWED_HOSTS`` (comma-separated);
- ``RAY_ADDRESS``: the Ray cluster (GCS ``host:6379`` for ``--cluster``, ``http://host:8265`` for
  the Ray Jobs runner);
- ``DJANGO_RAY_QUEUES`` (comma-separated, default ``default,slow,cpu``);
- ``DJANGO_RAY_RUNNER``, ``DJANGO_RAY_WORKER_METRICS_PORT``,
  ``DJANGO_RAY_WORKER_METRICS_ADDRESS``, ``DJANGO_RAY_METRICS_BEARER_TOKEN`` (``/api/metrics``
  answers 401 without it unless ``DJANGO_RAY_METRICS_ALLOW_ANONYMOUS=1``),
  ``DJANGO_RAY_DEFAULT_TIMEOUT_SECONDS``, ``DJANGO_RAY_RESULT_STORAGE_BACKEND``,
  ``DJANGO_RAY_RESULT_STORAGE_FILESYSTEM_PATH``.
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import parse_qsl, unquote, urlsplit

BASE_DIR = Path(__file__).resolve().parent.parent


def database_from_url(url: str) -> dict[str, object]:
    """A ``DATABASES`` entry from a ``postgresql://`` or ``sqlite:///`` URL."""
    parts = urlsplit(url)
    if parts.scheme == "sqlite":
        path = unquote(parts.path)
        if path.startswith("//"):
            path = path[1:]  # sqlite:////abs/path
        elif path.startswith("/"):
            path = path[1:] if not Path(path).is_absolute() else path
        return {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": path or str(BASE_DIR / "db.sqlite3"),
            "OPTIONS": {
                "timeout": 30,
                "transaction_mode": "IMMEDIATE",
                "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
            },
        }
    if parts.scheme in {"postgres", "postgresql", "pgsql"}:
        return {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": unquote(parts.path.lstrip("/")),
            "USER": unquote(parts.username or ""),
            "PASSWORD": unquote(parts.password or ""),
            "HOST": parts.hostname or "",
            "PORT": str(parts.port or ""),
            "CONN_MAX_AGE": int(os.environ.get("DJANGO_CONN_MAX_AGE", "60")),
            # libpq parameters from the query, e.g. ?sslmode=verify-full&sslrootcert=/path/ca.crt
            "OPTIONS": dict(parse_qsl(parts.query)),
        }
    raise ValueError(
        f"DATABASE_URL scheme {parts.scheme!r} is not supported; use postgresql://user:pass@host/db "
        "or sqlite:///path/to/db.sqlite3"
    )


def _env_list(name: str, default: str) -> list[str]:
    return [item.strip() for item in os.environ.get(name, default).split(",") if item.strip()]


SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "example-only-insecure-key-change-me")
DEBUG = os.environ.get("DJANGO_DEBUG", "0") == "1"
ALLOWED_HOSTS = _env_list("DJANGO_ALLOWED_HOSTS", "localhost,127.0.0.1,[::1]")
USE_TZ = True
TIME_ZONE = "UTC"
ROOT_URLCONF = "example_project.urls"
WSGI_APPLICATION = "example_project.wsgi.application"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
STATIC_URL = "/static/"
STATIC_ROOT = os.environ.get("DJANGO_STATIC_ROOT", str(BASE_DIR / "static"))

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_ray",
    "demo",
]
MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
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
    "default": database_from_url(
        os.environ.get("DATABASE_URL") or f"sqlite:///{BASE_DIR / 'db.sqlite3'}"
    )
}

QUEUES = _env_list("DJANGO_RAY_QUEUES", "default,slow,cpu")
TASKS = {
    "default": {
        "BACKEND": "django_ray.backends.RayTaskBackend",
        "QUEUES": QUEUES,
        "OPTIONS": {},
    }
}

DJANGO_RAY: dict[str, object] = {
    "RUNNER": os.environ.get("DJANGO_RAY_RUNNER", "ray_job"),
    "MAX_TASK_ATTEMPTS": int(os.environ.get("DJANGO_RAY_MAX_TASK_ATTEMPTS", "3")),
    "RETRY_BACKOFF_SECONDS": float(os.environ.get("DJANGO_RAY_RETRY_BACKOFF_SECONDS", "1")),
    "RETRY_EXCEPTION_DENYLIST": ["demo.tasks.InvalidInvoice"],
}
for _key, _cast in (
    ("WORKER_METRICS_PORT", int),
    ("WORKER_METRICS_ADDRESS", str),
    ("METRICS_BEARER_TOKEN", str),
    ("DEFAULT_TIMEOUT_SECONDS", float),
    ("RESULT_STORAGE_BACKEND", str),
    ("RESULT_STORAGE_FILESYSTEM_PATH", str),
    ("SHUTDOWN_GRACE_SECONDS", float),
    ("WORKER_LEASE_SECONDS", float),
    ("WORKER_HEARTBEAT_SECONDS", float),
    ("STUCK_TASK_TIMEOUT_SECONDS", float),
    ("RAY_NUM_CPUS", int),
):
    _value = os.environ.get(f"DJANGO_RAY_{_key}")
    if _value:
        DJANGO_RAY[_key] = _cast(_value)
# The explicit opt-out of the metrics token, for local runs (scripts/demo, tests) only.
DJANGO_RAY["METRICS_ALLOW_ANONYMOUS"] = os.environ.get("DJANGO_RAY_METRICS_ALLOW_ANONYMOUS") == "1"
# The Ray address is read from RAY_ADDRESS by django-ray itself.

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["stderr"], "level": os.environ.get("DJANGO_LOG_LEVEL", "WARNING")},
}
