"""The lease heartbeat: a thread that renews the worker's lease and its rows' heartbeats.

It runs apart from the main loop so that a slow Ray start-up or a long batch never costs the
worker its lease. It notices when the lease was taken away (another worker declared this one
dead) and tells the main loop, which must then stop: its rows may already be recovered.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from django.db import DatabaseError, connections

from django_ray.lifecycle import leases

logger = logging.getLogger("django_ray.worker")


class LeaseKeeper(threading.Thread):
    def __init__(
        self,
        worker_id: str,
        lease_seconds: float,
        interval: float,
        monitored_ids: Callable[[], list[int]],
        using: str = "default",
    ) -> None:
        super().__init__(name="django-ray-lease", daemon=True)
        self.worker_id = worker_id
        self.lease_seconds = lease_seconds
        self.interval = interval
        self.monitored_ids = monitored_ids
        self.using = using
        self.lost = threading.Event()
        self._stop = threading.Event()

    def stop(self) -> None:
        self._stop.set()

    def beat(self) -> bool:
        return leases.heartbeat(
            self.worker_id, self.lease_seconds, self.monitored_ids(), self.using
        )

    def run(self) -> None:
        try:
            while not self._stop.wait(self.interval):
                try:
                    if not self.beat():
                        logger.error(
                            "lease lost: worker_id=%s is no longer active in the database",
                            self.worker_id,
                            extra={"worker_id": self.worker_id},
                        )
                        self.lost.set()
                        return
                except DatabaseError as exc:
                    # PostgreSQL restarting: keep trying; the lease has slack for a few beats.
                    logger.warning("lease heartbeat failed (%s); retrying", exc)
                    connections[self.using].close()
        finally:
            connections.close_all()
