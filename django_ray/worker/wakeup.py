"""LISTEN/NOTIFY wake-ups: a thread that sets an event when work or a cancellation arrives.

It holds its own autocommit psycopg connection (Django's connections are per thread) and
reconnects with capped backoff if PostgreSQL restarts. On other databases it does nothing and
the worker falls back to polling.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence

from django.db import connections

from django_ray.backoff import capped_backoff
from django_ray.lifecycle.statements import CANCEL_CHANNEL, NOTIFY_CHANNEL

logger = logging.getLogger("django_ray.worker")


class WakeupListener(threading.Thread):
    """Sets :attr:`work` on ``django_ray_queued`` for our queues, :attr:`cancel` on cancels."""

    def __init__(
        self,
        queues: Sequence[str] | None,
        using: str = "default",
        wake: threading.Event | None = None,
    ) -> None:
        super().__init__(name="django-ray-listen", daemon=True)
        self.queues = set(queues) if queues is not None else None
        self.using = using
        self.work = wake or threading.Event()
        self.cancel = threading.Event()
        self.connected = threading.Event()
        self._stop = threading.Event()

    @property
    def supported(self) -> bool:
        return connections[self.using].vendor == "postgresql"

    def stop(self) -> None:
        self._stop.set()

    def run(self) -> None:
        import psycopg

        params = connections[self.using].get_connection_params()
        params.pop("cursor_factory", None)
        params.pop("context", None)
        failures = 0
        while not self._stop.is_set():
            try:
                with psycopg.connect(**params, autocommit=True) as conn:
                    conn.execute(f"LISTEN {NOTIFY_CHANNEL}")
                    conn.execute(f"LISTEN {CANCEL_CHANNEL}")
                    self.connected.set()
                    # Anything enqueued while we were not listening must not wait for a poll.
                    self.work.set()
                    failures = 0
                    while not self._stop.is_set():
                        for note in conn.notifies(timeout=0.5):
                            if note.channel == CANCEL_CHANNEL:
                                self.cancel.set()
                                self.work.set()
                            elif self.queues is None or note.payload in self.queues:
                                self.work.set()
            except psycopg.Error as exc:
                self.connected.clear()
                if self._stop.is_set():
                    return
                failures += 1
                delay = capped_backoff(failures, 0.2, 5.0)
                logger.warning("LISTEN connection lost (%s); reconnecting in %.1fs", exc, delay)
                time.sleep(delay)
