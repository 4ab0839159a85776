"""Signal handling: the first SIGTERM/SIGINT asks for a graceful stop, a second exits at once."""

from __future__ import annotations

import logging
import os
import signal
import threading
from types import FrameType

logger = logging.getLogger("django_ray.worker")

EXIT_OK = 0
EXIT_STARTUP_FAILED = 1
EXIT_LEASE_LOST = 3
EXIT_FORCED = 130


class ShutdownFlag:
    """Set by the first signal; a second signal ends the process immediately."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self.signal_name: str | None = None

    @property
    def requested(self) -> bool:
        return self.event.is_set()

    def request(self, reason: str) -> None:
        self.signal_name = reason
        self.event.set()

    def install(self, wake: threading.Event | None = None) -> None:
        def handler(signum: int, frame: FrameType | None) -> None:
            name = signal.Signals(signum).name
            if self.event.is_set():
                logger.warning("second %s: exiting now without waiting for in-flight work", name)
                os._exit(EXIT_FORCED)
            logger.info("%s received: no new claims; finishing in-flight work", name)
            self.request(name)
            if wake is not None:
                wake.set()

        signal.signal(signal.SIGTERM, handler)
        signal.signal(signal.SIGINT, handler)
