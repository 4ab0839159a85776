"""Worker logging: journald fields under systemd, readable lines on stderr elsewhere."""

from __future__ import annotations

import logging
import os
import sys


def running_under_systemd() -> bool:
    return bool(os.environ.get("JOURNAL_STREAM") or os.environ.get("INVOCATION_ID"))


def configure_worker_logging(verbosity: int = 1) -> None:
    """Attach one handler to the ``django_ray`` logger unless the project configured one."""
    root = logging.getLogger("django_ray")
    if root.handlers:
        return
    level = logging.DEBUG if verbosity >= 3 else logging.INFO if verbosity >= 1 else logging.WARNING
    handler: logging.Handler | None = None
    if running_under_systemd():
        try:
            from django_ray.journald import JournaldHandler

            handler = JournaldHandler(identifier="django-ray-worker")
        except Exception:  # journald socket missing: fall back to stderr (journald reads it)
            handler = None
    if handler is None:
        handler = logging.StreamHandler(sys.stderr)
        fmt = (
            "%(message)s"
            if running_under_systemd()
            else "%(asctime)s %(levelname)s %(name)s: %(message)s"
        )
        handler.setFormatter(logging.Formatter(fmt))
    root.addHandler(handler)
    root.setLevel(level)
    root.propagate = False
