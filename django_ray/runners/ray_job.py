"""Ray Job runner (the default): each task attempt runs as one Ray Job, via the Jobs REST API.

* The submission id is :func:`django_ray.jobs.submission_id` (task id + attempt), so retrying a
  submit can never start a second job for the same attempt (Ray refuses a duplicate id).
* The worker writes ``ray_job_id`` on the row (:meth:`RayJobRunner.job_id`) before it submits,
  so a job can never run without its row pointing at it.
* The entrypoint is ``<python> -m django_ray.jobs <execution_id> <attempt> <database>``: the
  task's arguments never pass through a shell string; the job reads its row on the backend's
  database alias.
* The job records its own outcome in the database. This runner polls job statuses; when a job
  ends it reports a fallback outcome carrying the job id: CANCELLED for a cancel, FAILED "timed
  out after N seconds" for a timeout, LOST (retry path) otherwise. The worker reads the row back
  and keeps what the job recorded, or records the fallback when the job could not (killed,
  stopped, crashed). This module never touches the database.
* Timeouts are enforced inside the job (SIGALRM around the body); the worker stops a job still
  running ``TIMEOUT_STOP_SLACK_SECONDS`` past the deadline (job start-up included). A job still
  PENDING/RUNNING ``STOP_RESEND_SECONDS`` after a stop (cancel or timeout) is stopped again.
* Per-task Ray options (``docs/resources.md``) become the job's ``entrypoint_*`` fields (over
  ``RAY_JOB_ENTRYPOINT_RESOURCES``) and its ``runtime_env`` (over ``RAY_JOB_RUNTIME_ENV``). A job
  with options still PENDING ``UNSCHEDULABLE_TIMEOUT_SECONDS`` after its submit whose request no
  alive node offers whole (the state API's node table) is stopped and its task ends FAILED
  (``django_ray.UnschedulableTask``, not retried) at once instead of waiting out Ray's own start
  timeout (Ray may keep such a job PENDING despite the stop; should it start, it finds its row
  no longer at this attempt and does nothing).
* At shutdown the jobs keep running: :meth:`RayJobRunner.release` hands them over for adoption
  by another worker (which finds them in the database and calls :meth:`RayJobRunner.adopt`).
* If the Jobs API becomes unreachable, the worker stops claiming, keeps monitoring heartbeats
  (the jobs may well still run), retries with capped backoff, and after
  ``STUCK_TASK_TIMEOUT_SECONDS`` without contact sends its in-flight attempts through the
  retry path as LOST (their jobs are stopped once the API answers again).

The worker process never imports Ray: it speaks HTTP to the dashboard (``RAY_ADDRESS``, e.g.
``http://ray-head:8265``) with the cluster's auth token when there is one.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from django_ray import jobs, ray_options
from django_ray.backoff import capped_backoff
from django_ray.conf import ray_settings
from django_ray.outcomes import ClaimedTask, Outcome, OutcomeKind, lost, refused
from django_ray.ray_dashboard import (
    DashboardAddressError,
    DashboardError,
    DashboardUnreachable,
    RayDashboard,
)
from django_ray.runners.base import (
    Capabilities,
    Finished,
    ProcessContext,
    Runner,
    RunnerUnavailable,
)
from django_ray.timeouts import timed_out

logger = logging.getLogger("django_ray.runner")

POLL_SECONDS = 0.5
TIMEOUT_STOP_SLACK_SECONDS = 10.0
# A stop can be lost (it raced the job's start, or the head restarted in between), so a job
# still PENDING/RUNNING this long after its stop is stopped again. Longer than Ray's own
# SIGTERM-to-SIGKILL wait (RAY_JOB_STOP_WAIT_TIME_S, 3 s) so a graceful stop is not cut short.
STOP_RESEND_SECONDS = 10.0
RUNNING_STATUSES = frozenset({"PENDING", "RUNNING"})
FINISHED_STATUSES = frozenset({"SUCCEEDED", "FAILED", "STOPPED"})


@dataclass
class _Job:
    task: ClaimedTask
    submission_id: str
    submitted: bool
    since: float
    deadline: float | None
    cancel_requested: bool = False
    timed_out: bool = False
    # monotonic time the last stop was sent; None while the job should run.
    stop_sent_at: float | None = None
    last_error: str = ""
    # Why no alive node can start the job (set when it was stopped for that), else "".
    unschedulable: str = ""
    # monotonic time the node table was last read for this PENDING job (one read a heartbeat).
    placement_checked_at: float = 0.0


class RayJobRunner(Runner):
    """One Ray Job per task attempt; jobs record their own outcomes (see the module doc)."""

    name = "ray_job"
    capabilities = Capabilities(ray_jobs=True, adoption=True, outlives_worker=True)

    def __init__(self, concurrency: int, address: str | None = None) -> None:
        super().__init__(concurrency)
        if not address:
            raise RunnerUnavailable(
                "The Ray Job runner needs the cluster's Jobs API address: set RAY_ADDRESS or "
                "DJANGO_RAY['RAY_ADDRESS'] (e.g. http://ray-head:8265)."
            )
        self.address = address
        self.context = ProcessContext.current()
        self._config_error: RunnerUnavailable | None = None
        try:
            self.client = RayDashboard(address)
        except DashboardAddressError:  # reported by start(), which the worker handles
            self._config_error = RunnerUnavailable(
                f"The Ray Job runner needs the dashboard's HTTP address (e.g. "
                f"http://ray-head:8265), not {address!r}; set RAY_ADDRESS or "
                "DJANGO_RAY['RAY_ADDRESS'], or use --cluster for a GCS/ray:// address."
            )
            self.client = RayDashboard("http://invalid.invalid")
        self._jobs: dict[int, _Job] = {}
        self._lock = threading.Lock()
        self._last_poll = 0.0
        self._connected = False
        self._unreachable_since: float | None = None
        self._retry_at = 0.0
        self._failures = 0  # failed contacts in a row: the reconnect backoff
        self._to_stop: set[str] = set()

    # -- connection -------------------------------------------------------------------------

    def start(self) -> None:
        if self._config_error is not None:
            raise self._config_error
        try:
            self.client.version()
        except (DashboardError, DashboardUnreachable) as exc:
            raise RunnerUnavailable(
                f"Cannot reach the Ray Jobs API at {self.client.base}: {exc}. Check RAY_ADDRESS "
                "(the dashboard address, e.g. http://ray-head:8265), that the head is up, and "
                "the Ray auth token (RAY_AUTH_TOKEN or ~/.ray/auth_token)."
            ) from exc
        self._connected = True
        self._unreachable_since = None

    def jobs_api_address(self) -> str | None:
        return None if self._config_error else self.client.base

    def close(self) -> None:
        self._connected = False

    def _lost_contact(self, exc: Exception) -> None:
        now = time.monotonic()
        if self._unreachable_since is None:
            self._unreachable_since = now
            self._failures = 0
            logger.warning(
                "lost the connection to the Ray Jobs API at %s (%s); not claiming, %s job(s) "
                "still monitored; retrying with backoff",
                self.client.base,
                exc,
                len(self._jobs),
            )
            try:
                from django_ray.metrics import worker as worker_metrics

                worker_metrics.set_ray_connected(False)
            except Exception:  # metrics are optional
                pass
        self._connected = False
        self._failures += 1
        self._retry_at = now + capped_backoff(self._failures, 0.5, 10.0)

    def _regained_contact(self) -> None:
        if self._unreachable_since is not None:
            logger.warning(
                "reconnected to the Ray Jobs API at %s after %.1fs",
                self.client.base,
                time.monotonic() - self._unreachable_since,
            )
            try:
                from django_ray.metrics import worker as worker_metrics

                worker_metrics.set_ray_connected(True)
                worker_metrics.record_ray_reconnect()
            except Exception:
                pass
        self._unreachable_since = None
        self._connected = True
        for sid in list(self._to_stop):
            try:
                self.client.stop(sid)
                self._to_stop.discard(sid)
            except (DashboardError, DashboardUnreachable):
                break

    # -- capacity and submission ------------------------------------------------------------

    def free_slots(self) -> int:
        if not self._connected:
            # The worker only calls poll() with work in flight; reconnect from here otherwise.
            if not self._jobs and time.monotonic() >= self._retry_at:
                self._probe()
            if not self._connected:
                return 0
        return max(0, self.concurrency - len(self._jobs))

    def _python(self) -> str:
        return ray_settings().RAY_JOB_PYTHON or sys.executable

    def _runtime_env(self, task: ClaimedTask) -> dict[str, Any]:
        """The job's runtime_env: ``RAY_JOB_RUNTIME_ENV``, then the task's own keys."""
        extra = dict(ray_settings().RAY_JOB_RUNTIME_ENV)
        env_vars = {"PYTHONPATH": os.pathsep.join(self.context.sys_path)}
        if self.context.settings_module:
            env_vars["DJANGO_SETTINGS_MODULE"] = self.context.settings_module
        env_vars.update(extra.pop("env_vars", {}) or {})
        return ray_options.job_runtime_env({**extra, "env_vars": env_vars}, task.ray_options)

    def _entrypoint_resources(self, task: ClaimedTask) -> dict[str, Any]:
        """The Jobs API's ``entrypoint_*`` fields: the task's, over ``RAY_JOB_ENTRYPOINT_RESOURCES``."""
        return ray_options.entrypoint_fields(
            task.ray_options, ray_settings().RAY_JOB_ENTRYPOINT_RESOURCES
        )

    def _unschedulable(self, job: _Job) -> str | None:
        """Why no alive node can start this PENDING job, once it waited long enough; else None."""
        now = time.monotonic()
        waited = now - job.since
        conf = ray_settings()
        if (
            not job.task.ray_options
            or waited < float(conf.UNSCHEDULABLE_TIMEOUT_SECONDS)
            or now - job.placement_checked_at < float(conf.WORKER_HEARTBEAT_SECONDS)
        ):
            return None
        job.placement_checked_at = now
        need = ray_options.demand(
            ray_options.entrypoint_request(job.task.ray_options, conf.RAY_JOB_ENTRYPOINT_RESOURCES),
            0.0,
        )
        try:
            listed = self.client.list_state("nodes", [("limit", 10_000), ("detail", "true")], 5)
        except (DashboardError, DashboardUnreachable) as exc:
            logger.debug("cannot read Ray's node table now: %s", exc)
            return None
        reason = ray_options.unschedulable_reason(need, ray_options.alive_nodes(listed))
        return (
            None
            if reason is None
            else f"{reason} Waited {waited:.0f}s (UNSCHEDULABLE_TIMEOUT_SECONDS)."
        )

    def job_id(self, task: ClaimedTask) -> str:
        return jobs.submission_id(task.task_id, task.attempt_number)

    def submit(self, tasks: list[ClaimedTask]) -> None:
        """Submit one Ray Job per task; the worker wrote each :meth:`job_id` on its row."""
        now = time.monotonic()
        for task in tasks:
            deadline = (
                now + task.timeout_seconds + TIMEOUT_STOP_SLACK_SECONDS
                if task.timeout_seconds
                else None
            )
            job = _Job(task, self.job_id(task), submitted=False, since=now, deadline=deadline)
            with self._lock:
                self._jobs[task.id] = job
            self._submit(job)

    def _submit(self, job: _Job) -> None:
        task = job.task
        body = {
            "entrypoint": jobs.entrypoint(
                self._python(), task.id, task.attempt_number, task.database
            ),
            "submission_id": job.submission_id,
            "runtime_env": self._runtime_env(task),
            "metadata": {
                "django_ray_task_id": task.task_id,
                "callable_path": task.callable_path[:200],
                "attempt": str(task.attempt_number),
            },
            **self._entrypoint_resources(task),
        }
        try:
            self.client.submit(body)
        except DashboardUnreachable as exc:
            self._lost_contact(exc)
            return
        except DashboardError as exc:
            job.last_error = str(exc)
            logger.warning(
                "submitting Ray Job %s failed (%s); will retry",
                job.submission_id,
                exc,
                extra={"task_id": task.task_id},
            )
            return
        job.submitted = True

    # -- outcomes ---------------------------------------------------------------------------

    def poll(self, timeout: float) -> Finished:
        now = time.monotonic()
        if not self._jobs:
            if timeout > 0:
                time.sleep(timeout)
            return []
        next_poll = self._last_poll + POLL_SECONDS
        if not self._connected:
            next_poll = max(next_poll, self._retry_at)
        if now < next_poll:
            time.sleep(max(0.0, min(timeout, next_poll - now)))
            if time.monotonic() < next_poll:
                return []
        self._last_poll = time.monotonic()
        finished: Finished = []
        for job in list(self._jobs.values()):
            try:
                result = self._poll(job)
            except (DashboardUnreachable, DashboardError) as exc:
                # 5xx too: the dashboard is up but the head behind it is not (yet).
                self._lost_contact(exc)
                finished.extend(self._give_up_if_unreachable_too_long())
                return finished
            if result is not None:
                with self._lock:
                    self._jobs.pop(job.task.id, None)
                finished.append((job.task, result))
        self._regained_contact()
        return finished

    def _probe(self) -> None:
        try:
            self.client.version()
        except (DashboardError, DashboardUnreachable) as exc:
            self._lost_contact(exc)
            return
        self._regained_contact()

    def _give_up_if_unreachable_too_long(self) -> Finished:
        if self._unreachable_since is None:
            return []
        limit = float(ray_settings().STUCK_TASK_TIMEOUT_SECONDS)
        if time.monotonic() - self._unreachable_since < limit:
            return []
        with self._lock:
            gone = list(self._jobs.values())
            self._jobs.clear()
        if gone:
            logger.warning(
                "Ray Jobs API unreachable for %.0fs: %s in-flight attempt(s) go through the "
                "retry path as LOST (their jobs are stopped once the API answers again)",
                limit,
                len(gone),
            )
        self._to_stop.update(j.submission_id for j in gone if j.submitted)
        return [
            (
                j.task,
                lost(
                    j.task,
                    (
                        f"Lost the connection to the Ray Jobs API for {limit:.0f}s; completion "
                        f"of Ray Job {j.submission_id} is unknown."
                    ),
                    "django_ray.RayConnectionLost",
                ),
            )
            for j in gone
        ]

    def _poll(self, job: _Job) -> Outcome | None:
        """Check one job; return the outcome to report when it ended, else None."""
        if not job.submitted:
            self._submit(job)
            if not job.submitted:
                if not self._connected:
                    raise DashboardUnreachable("submit failed")
                limit = float(ray_settings().STUCK_TASK_TIMEOUT_SECONDS)
                if time.monotonic() - job.since < limit:
                    return None
                # The API answers but refuses this job (e.g. a bad runtime_env): retry path.
                # Not cut here: recording cuts every message at MAX_MESSAGE_CHARS with a note.
                return lost(
                    job.task,
                    f"Ray refused to start Ray Job {job.submission_id} for {limit:.0f}s: "
                    f"{job.last_error}",
                    "django_ray.RayJobNotSubmitted",
                )
        details = self.client.status(job.submission_id)
        if details is None:
            return self._ended(
                job,
                f"Ray Job {job.submission_id} no longer exists (Ray head restarted or job "
                "history dropped); completion unknown.",
            )
        status = str(details.get("status", "")).upper()
        if status in RUNNING_STATUSES:
            now = time.monotonic()
            if job.stop_sent_at is not None:
                if now - job.stop_sent_at >= STOP_RESEND_SECONDS:
                    self._stop(job, "still running after a stop; sending it again")
            elif job.deadline is not None and now >= job.deadline:
                job.timed_out = True
                self._stop(job, "timeout")
            elif job.cancel_requested:
                self._stop(job, "cancel")
            elif status == "PENDING" and (reason := self._unschedulable(job)):
                # Ray leaves a job whose supervisor cannot be placed PENDING even after a stop,
                # so the task ends now; if the job starts later, it finds its row no longer
                # RUNNING at this attempt and does nothing (django_ray.jobs).
                job.unschedulable = reason
                try:
                    self._stop(job, reason)
                except (DashboardError, DashboardUnreachable) as exc:
                    logger.info(
                        "stopping unschedulable Ray Job %s failed: %s", job.submission_id, exc
                    )
                return self._ended(job, reason)
            return None
        if status not in FINISHED_STATUSES:
            return None
        message = str(details.get("message") or "")
        return self._ended(job, f"Ray Job {job.submission_id} ended {status}: {message}")

    def _stop(self, job: _Job, why: str) -> None:
        logger.warning(
            "stopping Ray Job %s (%s)",
            job.submission_id,
            why,
            extra={"task_id": job.task.task_id},
        )
        self.client.stop(job.submission_id)
        job.stop_sent_at = time.monotonic()

    def _ended(self, job: _Job, lost_message: str) -> Outcome:
        """The fallback outcome of an ended job, for the worker to record only if the job did
        not record its own (the worker reads the row back: ``ray_job_id`` says so)."""
        task = job.task
        if job.timed_out:
            outcome = timed_out(task)
        elif job.cancel_requested:
            outcome = Outcome(task.id, task.attempt_number, OutcomeKind.CANCELLED)
        elif job.unschedulable:
            outcome = refused(task, ray_options.UNSCHEDULABLE, job.unschedulable)
        else:
            outcome = lost(task, lost_message, "django_ray.RayJobLost")
        outcome.ray_job_id = job.submission_id
        return outcome

    def stop(self, execution_ids: Iterable[int]) -> None:
        for execution_id in execution_ids:
            job = self._jobs.get(execution_id)
            if job is None or job.cancel_requested:
                continue
            job.cancel_requested = True
            if job.submitted:
                try:
                    self._stop(job, "cancel requested")
                except (DashboardError, DashboardUnreachable) as exc:
                    logger.warning(
                        "stopping Ray Job %s failed (%s); retrying", job.submission_id, exc
                    )

    def in_flight_ids(self) -> list[int]:
        with self._lock:
            return list(self._jobs)

    def interrupt_all(self) -> Finished:
        """Ray Jobs are never interrupted by the worker stopping: they stay for adoption."""
        return self.release()

    def release(self) -> Finished:
        with self._lock:
            left = list(self._jobs.values())
            self._jobs.clear()
        if left:
            logger.warning(
                "leaving %s Ray Job(s) running for adoption by another worker: %s",
                len(left),
                ", ".join(j.submission_id for j in left[:20]),
            )
        return []

    # -- adoption ---------------------------------------------------------------------------

    def job_known(self, job_id: str) -> bool | None:
        """Whether Ray knows the job; None when the Jobs API cannot tell now."""
        if not self._connected:
            return None
        try:
            return self.client.status(job_id) is not None
        except (DashboardError, DashboardUnreachable) as exc:
            logger.info("cannot read Ray Job %s (%s); not adopting", job_id, exc)
            return None

    def adopt(self, task: ClaimedTask, job_id: str) -> None:
        """Monitor the Ray Job of a row the worker adopted; its deadline counts from the
        attempt's start, not from now."""
        now = time.monotonic()
        deadline = None
        if task.timeout_seconds:
            from django.utils import timezone

            elapsed = (timezone.now() - task.started_at).total_seconds()
            remaining = max(0.0, task.timeout_seconds + TIMEOUT_STOP_SLACK_SECONDS - elapsed)
            deadline = now + remaining
        with self._lock:
            self._jobs[task.id] = _Job(task, job_id, submitted=True, since=now, deadline=deadline)
