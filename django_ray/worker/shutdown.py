"""Stopping the worker: signals, exit codes, and what systemd is told while the worker drains.

The first SIGTERM/SIGINT asks for a graceful stop, a second exits at once. During the graceful
stop :class:`StopKeepalive` announces the time the drain needs and keeps the watchdog fed, so
``systemctl restart`` never ends in a watchdog abort or a stop timeout.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from types import FrameType

from django_ray import sdnotify

logger = logging.getLogger("django_ray.worker")

EXIT_OK = 0
EXIT_STARTUP_FAILED = 1
EXIT_LEASE_LOST = 3
#: The configuration can never work (unknown queue, bad settings, bad arguments): ``EX_CONFIG``
#: of sysexits.h. The unit's ``RestartPreventExitStatus=78`` stops restarting such a worker.
EXIT_CONFIG = 78
EXIT_FORCED = 130

#: Seconds a stop may take beyond the drain grace: requeueing what is left, leaving Ray,
#: releasing the lease. Added to the grace in the ``EXTEND_TIMEOUT_USEC=`` sent to systemd.
STOP_MARGIN_SECONDS = 15.0


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


class StopKeepalive:
    """Tell systemd a stop is under way and keep it from killing the worker while it drains.

    :meth:`start` sends ``STOPPING=1``, the status, and ``EXTEND_TIMEOUT_USEC=`` of the grace
    plus :data:`STOP_MARGIN_SECONDS` (systemd then waits at least that long whatever
    ``TimeoutStopSec=`` says), and pings the watchdog from a thread until :meth:`stop`: the main
    loop no longer runs, and a watchdog abort in the middle of a drain would leave the lease
    active and the in-flight rows to orphan recovery. The stop stays bounded: systemd's stop
    timeout, not the watchdog, is what ends a drain that hangs.
    """

    def __init__(self, grace: float, status: str) -> None:
        self.grace = grace
        self.status = status
        self._done = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        sdnotify.stopping(self.status)
        sdnotify.extend_timeout(self.grace + STOP_MARGIN_SECONDS)
        interval = sdnotify.watchdog_interval()
        if interval is None:
            return
        sdnotify.watchdog()
        self._thread = threading.Thread(
            target=self._ping, args=(interval,), name="django-ray-stop-keepalive", daemon=True
        )
        self._thread.start()

    def _ping(self, interval: float) -> None:
        while not self._done.wait(interval):
            sdnotify.watchdog()

    def stop(self) -> None:
        self._done.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
