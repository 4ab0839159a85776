"""Test-only fault switches, enabled by ``DJANGO_RAY_ENABLE_FAULTS=1`` and never otherwise.

``kill -USR2 <worker pid>`` makes the main loop hang forever, so that the systemd watchdog can
be shown to kill and restart a hung worker. Lease heartbeats (another thread) keep going, just
as they would in a real deadlock of the loop.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from types import FrameType

logger = logging.getLogger("django_ray.worker")

_hang = threading.Event()


def enabled() -> bool:
    return os.environ.get("DJANGO_RAY_ENABLE_FAULTS") == "1"


def install() -> None:
    if not enabled():
        return

    def on_usr2(signum: int, frame: FrameType | None) -> None:
        _hang.set()

    signal.signal(signal.SIGUSR2, on_usr2)
    logger.warning("fault injection enabled (DJANGO_RAY_ENABLE_FAULTS=1): SIGUSR2 hangs the loop")


def maybe_hang() -> None:
    """Called at the top of each loop iteration; blocks forever once SIGUSR2 arrived."""
    if _hang.is_set():
        logger.error("fault injection: main loop hanging now (watchdog pings stop)")
        while True:
            time.sleep(3600)
