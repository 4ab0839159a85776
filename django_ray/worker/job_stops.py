"""Stopping the Ray Jobs of rows this worker recovered.

A recovered row's attempt is over (LOST, or CANCELLING -> CANCELLED), so a Ray Job still
running for it only wastes the cluster: its outcome is discarded. Any runner mode stops them,
through the Jobs API the runner knows (the dashboard of a joined cluster) or the one settings /
``RAY_ADDRESS`` name.

The worker loop is single-threaded, so an unreachable API must not hold it: each pass gives up
at the first unreachable answer, uses a short HTTP timeout, and tries again after a backoff.
Jobs not stopped yet are remembered in memory only (a crash forgets them; the runbook's
*CANCELLING rows* check shows how to find and stop them by hand), and are given up after
:data:`GIVE_UP_SECONDS`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable

from django_ray.backoff import capped_backoff
from django_ray.ray_dashboard import DashboardError, DashboardUnreachable, RayDashboard

logger = logging.getLogger("django_ray.worker")

# Short, unlike a runner's calls: these stops wait in the claim/record loop.
STOP_HTTP_TIMEOUT = 3.0
RETRY_MIN_SECONDS = 2.0
RETRY_MAX_SECONDS = 60.0
GIVE_UP_SECONDS = 600.0


class RecoveredJobStopper:
    """Stops Ray Jobs of recovered rows; retries the ones the Jobs API did not take."""

    def __init__(self, worker_id: str, address: Callable[[], str | None]) -> None:
        self.worker_id = worker_id
        self._address = address
        self._pending: dict[str, float] = {}  # job id -> monotonic time first asked to stop
        self._retry_at = 0.0
        self._failures = 0  # unanswered passes in a row (the backoff's attempt number)
        self._down_since: float | None = None

    @property
    def pending(self) -> list[str]:
        return list(self._pending)

    def add(self, job_ids: Iterable[str]) -> None:
        now = time.monotonic()
        for job_id in job_ids:
            self._pending.setdefault(job_id, now)

    def run(self) -> None:
        """Send the pending stops now unless a backoff is running."""
        now = time.monotonic()
        if not self._pending or now < self._retry_at:
            return
        address = self._address()
        if not address:
            logger.warning(
                "recovered row(s) of Ray Job(s) %s but this worker knows no Ray Jobs API to "
                "stop them (set DJANGO_RAY['RAY_ADDRESS'] or RAY_ADDRESS to the dashboard, "
                "e.g. http://ray-head:8265); stop them with `ray job stop <id>` if they run",
                ", ".join(list(self._pending)[:20]),
                extra={"worker_id": self.worker_id},
            )
            self._pending.clear()
            return
        client = RayDashboard(address, timeout=STOP_HTTP_TIMEOUT)
        for job_id in list(self._pending):
            try:
                client.stop(job_id)
            except DashboardUnreachable as exc:
                self._unreachable(address, exc, now)
                return
            except DashboardError as exc:
                del self._pending[job_id]
                logger.warning(
                    "could not stop Ray Job %s of a recovered row via %s (%s); stop it with "
                    "`ray job stop %s` if it still runs",
                    job_id,
                    address,
                    exc,
                    job_id,
                    extra={"worker_id": self.worker_id},
                )
            else:
                del self._pending[job_id]
                logger.warning(
                    "stopped Ray Job %s of a recovered row (its attempt is over)",
                    job_id,
                    extra={"worker_id": self.worker_id},
                )
        if self._down_since is not None:
            logger.warning(
                "Ray Jobs API at %s answers again after %.0fs",
                address,
                now - self._down_since,
                extra={"worker_id": self.worker_id},
            )
        self._down_since = None
        self._failures = 0
        self._retry_at = 0.0

    def _unreachable(self, address: str, exc: Exception, now: float) -> None:
        expired = [j for j, since in self._pending.items() if now - since >= GIVE_UP_SECONDS]
        for job_id in expired:
            del self._pending[job_id]
        if expired:
            logger.warning(
                "giving up stopping Ray Job(s) %s of recovered rows after %.0fs: the Jobs API "
                "at %s never answered; stop them with `ray job stop <id>` if they still run",
                ", ".join(expired[:20]),
                GIVE_UP_SECONDS,
                address,
                extra={"worker_id": self.worker_id},
            )
        if self._down_since is None and self._pending:
            logger.warning(
                "cannot stop %s Ray Job(s) of recovered rows: the Jobs API at %s does not "
                "answer (%s); retrying with backoff",
                len(self._pending),
                address,
                exc,
                extra={"worker_id": self.worker_id},
            )
        if self._down_since is None:
            self._down_since = now
        self._failures += 1
        self._retry_at = now + capped_backoff(self._failures, RETRY_MIN_SECONDS, RETRY_MAX_SECONDS)
