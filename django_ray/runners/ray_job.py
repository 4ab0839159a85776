"""Ray Job runner (the default): each task attempt runs as one Ray Job, via the Jobs REST API.

* The submission id is :func:`django_ray.jobs.submission_id` (task id + attempt), so retrying a
  submit can never start a second job for the same attempt (Ray refuses a duplicate id).
* ``ray_job_id`` is written on the row (:func:`~django_ray.lifecycle.adopt.attach_ray_jobs`) before
  the job is submitted, so a job can never run without its row pointing at it.
* The entrypoint is ``<python> -m django_ray.jobs <execution_id> <attempt>``: the task's arguments
  never pass through a shell string; the job reads its row.
* The job records its own outcome in the database. The worker polls job statuses; when a job
  ends, it only logs what the job recorded, or, if the job could not record (killed, stopped,
  crashed), it records the outcome itself: CANCELLED for a cancel, FAILED "timed out after N
  seconds" for a timeout, LOST (retry path) otherwise.
* Timeouts are enforced inside the job (SIGALRM around the body); the worker stops a job still
  running ``TIMEOUT_STOP_SLACK_SECONDS`` past the deadline (job start-up included). A job still
  PENDING/RUNNING ``STOP_RESEND_SECONDS`` after a stop (cancel or timeout) is stopped again.
* At shutdown the jobs keep running: :meth:`RayJobRunner.release` hands them over for adoption
  by another worker (:meth:`RayJobRunner.reconcile`).
* If the Jobs API becomes unreachable, the worker stops claiming, keeps monitoring heartbeats
  (the jobs may well still run), retries with capped backoff, and after
  ``STUCK_TASK_TIMEOUT_SECONDS`` without contact sends its in-flight attempts through the
  retry path as LOST (their jobs are stopped once the API answers again).

The worker process never imports Ray: it speaks HTTP to the dashboard (``RAY_ADDRESS``, e.g.
``http://ray-head:8265``) with the cluster's auth token when there is one.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from django_ray import jobs
from django_ray.conf import ray_settings
from django_ray.lifecycle import adopt
from django_ray.outcomes import ClaimedTask, Outcome, OutcomeKind, lost
from django_ray.ray_auth import auth_headers
from django_ray.runners.base import Finished, ProcessContext, Runner, RunnerUnavailable
from django_ray.timeouts import timed_out

logger = logging.getLogger("django_ray.runner")

POLL_SECONDS = 0.5
HTTP_TIMEOUT = 10.0
TIMEOUT_STOP_SLACK_SECONDS = 10.0
# A stop can be lost (it raced the job's start, or the head restarted in between), so a job
# still PENDING/RUNNING this long after its stop is stopped again. Longer than Ray's own
# SIGTERM-to-SIGKILL wait (RAY_JOB_STOP_WAIT_TIME_S, 3 s) so a graceful stop is not cut short.
STOP_RESEND_SECONDS = 10.0
RUNNING_STATUSES = frozenset({"PENDING", "RUNNING"})
FINISHED_STATUSES = frozenset({"SUCCEEDED", "FAILED", "STOPPED"})


class JobsApiError(RuntimeError):
    """The Jobs API answered with an error status."""

    def __init__(self, status: int, text: str) -> None:
        lines = [line for line in text.strip().splitlines() if line.strip()]
        super().__init__(f"HTTP {status}: {(lines[-1] if lines else '')[:500]}")
        self.status = status
        self.text = text


class JobsApiUnreachable(RuntimeError):
    """The Jobs API did not answer (head down, network)."""


class JobsClient:
    """The four calls of Ray's Job Submission REST API this runner needs."""

    def __init__(self, address: str, timeout: float = HTTP_TIMEOUT) -> None:
        if "://" not in address:
            address = f"http://{address}"
        parsed = urllib.parse.urlparse(address)
        if parsed.scheme not in ("http", "https"):
            raise RunnerUnavailable(
                f"The Ray Job runner needs the dashboard's HTTP address (e.g. "
                f"http://ray-head:8265), not {address!r}; set RAY_ADDRESS or "
                "DJANGO_RAY['RAY_ADDRESS'], or use --cluster for a GCS/ray:// address."
            )
        self.base = address.rstrip("/")
        self.headers = auth_headers()
        self.timeout = timeout

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        headers = {**self.headers, "Accept": "application/json"}
        if data is not None:
            headers["Content-Type"] = "application/json"
        request = urllib.request.Request(
            self.base + path, data=data, method=method, headers=headers
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                text = response.read().decode(errors="replace")
        except urllib.error.HTTPError as exc:
            raise JobsApiError(exc.code, exc.read().decode(errors="replace")) from exc
        except (OSError, urllib.error.URLError) as exc:
            raise JobsApiUnreachable(f"{type(exc).__name__}: {exc}") from exc
        return json.loads(text) if text.strip() else None

    def version(self) -> Any:
        return self._call("GET", "/api/version")

    def submit(self, body: dict[str, Any]) -> None:
        try:
            self._call("POST", "/api/jobs/", body)
        except JobsApiError as exc:
            if "already exists" in exc.text:
                return  # a retried submit of the same attempt: the job is there already
            raise

    def status(self, submission_id: str) -> dict[str, Any] | None:
        """The job's details, or None when Ray does not know the job."""
        try:
            return self._call("GET", f"/api/jobs/{urllib.parse.quote(submission_id)}")
        except JobsApiError as exc:
            if exc.status == 404:
                return None
            raise

    def stop(self, submission_id: str) -> None:
        try:
            self._call("POST", f"/api/jobs/{urllib.parse.quote(submission_id)}/stop")
        except JobsApiError as exc:
            if exc.status != 404:
                raise


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


class RayJobRunner(Runner):
    """One Ray Job per task attempt; jobs record their own outcomes (see the module doc)."""

    name = "ray_job"

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
            self.client = JobsClient(address)
        except RunnerUnavailable as exc:  # reported by start(), which the worker handles
            self._config_error = exc
            self.client = JobsClient("http://invalid.invalid")
        self._jobs: dict[int, _Job] = {}
        self._lock = threading.Lock()
        self._last_poll = 0.0
        self._connected = False
        self._unreachable_since: float | None = None
        self._retry_at = 0.0
        self._backoff = 0.5
        self._to_stop: set[str] = set()

    # -- connection -------------------------------------------------------------------------

    def start(self) -> None:
        if self._config_error is not None:
            raise self._config_error
        try:
            self.client.version()
        except (JobsApiError, JobsApiUnreachable) as exc:
            raise RunnerUnavailable(
                f"Cannot reach the Ray Jobs API at {self.client.base}: {exc}. Check RAY_ADDRESS "
                "(the dashboard address, e.g. http://ray-head:8265), that the head is up, and "
                "the Ray auth token (RAY_AUTH_TOKEN or ~/.ray/auth_token)."
            ) from exc
        self._connected = True
        self._unreachable_since = None

    def healthy(self) -> bool:
        return self._connected

    def jobs_api_address(self) -> str | None:
        return None if self._config_error else self.client.base

    def stop(self) -> None:
        self._connected = False

    def _lost_contact(self, exc: Exception) -> None:
        now = time.monotonic()
        if self._unreachable_since is None:
            self._unreachable_since = now
            self._backoff = 0.5
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
        self._retry_at = now + self._backoff
        self._backoff = min(self._backoff * 2, 10.0)

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
            except (JobsApiError, JobsApiUnreachable):
                break

    # -- capacity and submission ------------------------------------------------------------

    def free_slots(self) -> int:
        if not self._connected:
            # The worker only calls wait() with work in flight; reconnect from here otherwise.
            if not self._jobs and time.monotonic() >= self._retry_at:
                self._probe()
            if not self._connected:
                return 0
        return max(0, self.concurrency - len(self._jobs))

    def _python(self) -> str:
        return ray_settings().RAY_JOB_PYTHON or sys.executable

    def _runtime_env(self) -> dict[str, Any]:
        extra = dict(ray_settings().RAY_JOB_RUNTIME_ENV)
        env_vars = {"PYTHONPATH": os.pathsep.join(self.context.sys_path)}
        if self.context.settings_module:
            env_vars["DJANGO_SETTINGS_MODULE"] = self.context.settings_module
        env_vars.update(extra.pop("env_vars", {}) or {})
        return {**extra, "env_vars": env_vars}

    def _entrypoint_resources(self) -> dict[str, Any]:
        """The Jobs API's ``entrypoint_*`` fields from ``RAY_JOB_ENTRYPOINT_RESOURCES``."""
        wanted = ray_settings().RAY_JOB_ENTRYPOINT_RESOURCES
        return {f"entrypoint_{key}": value for key, value in wanted.items() if value}

    def submit(self, tasks: list[ClaimedTask]) -> None:
        if not tasks:
            return
        ids = {t.id: jobs.submission_id(t.task_id, t.attempt_number) for t in tasks}
        attached = adopt.attach_ray_jobs(
            [(t.id, t.attempt_number, ids[t.id]) for t in tasks], "default"
        )
        now = time.monotonic()
        for task in tasks:
            if task.id not in attached:
                continue  # recovered by someone else meanwhile: nothing to run
            deadline = (
                now + task.timeout_seconds + TIMEOUT_STOP_SLACK_SECONDS
                if task.timeout_seconds
                else None
            )
            job = _Job(task, ids[task.id], submitted=False, since=now, deadline=deadline)
            with self._lock:
                self._jobs[task.id] = job
            self._submit(job)

    def _submit(self, job: _Job) -> None:
        task = job.task
        body = {
            "entrypoint": jobs.entrypoint(self._python(), task.id, task.attempt_number),
            "submission_id": job.submission_id,
            "runtime_env": self._runtime_env(),
            "metadata": {
                "django_ray_task_id": task.task_id,
                "callable_path": task.callable_path[:200],
                "attempt": str(task.attempt_number),
            },
            **self._entrypoint_resources(),
        }
        try:
            self.client.submit(body)
        except JobsApiUnreachable as exc:
            self._lost_contact(exc)
            return
        except JobsApiError as exc:
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

    def wait(self, timeout: float) -> Finished:
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
        from django.db import DatabaseError

        finished: Finished = []
        for job in list(self._jobs.values()):
            try:
                result = self._poll(job)
            except (JobsApiUnreachable, JobsApiError) as exc:
                # 5xx too: the dashboard is up but the head behind it is not (yet).
                self._lost_contact(exc)
                finished.extend(self._give_up_if_unreachable_too_long())
                return finished
            except DatabaseError as exc:
                logger.warning("reading job outcomes failed (%s); retrying", exc)
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
        except (JobsApiError, JobsApiUnreachable) as exc:
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
                Outcome(
                    j.task.id,
                    j.task.attempt_number,
                    OutcomeKind.LOST,
                    error_class_path="django_ray.RayConnectionLost",
                    error_message=(
                        f"Lost the connection to the Ray Jobs API for {limit:.0f}s; completion "
                        f"of Ray Job {j.submission_id} is unknown."
                    ),
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
                    raise JobsApiUnreachable("submit failed")
                limit = float(ray_settings().STUCK_TASK_TIMEOUT_SECONDS)
                if time.monotonic() - job.since < limit:
                    return None
                # The API answers but refuses this job (e.g. a bad runtime_env): retry path.
                return Outcome(
                    job.task.id,
                    job.task.attempt_number,
                    OutcomeKind.LOST,
                    error_class_path="django_ray.RayJobNotSubmitted",
                    error_message=(
                        f"Ray refused to start Ray Job {job.submission_id} for {limit:.0f}s: "
                        f"{job.last_error}"
                    )[:4000],
                )
        details = self.client.status(job.submission_id)
        if details is None:
            return self._row_outcome(
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
            return None
        if status not in FINISHED_STATUSES:
            return None
        message = str(details.get("message") or "")
        return self._row_outcome(job, f"Ray Job {job.submission_id} ended {status}: {message}")

    def _stop(self, job: _Job, why: str) -> None:
        logger.warning(
            "stopping Ray Job %s (%s)",
            job.submission_id,
            why,
            extra={"task_id": job.task.task_id},
        )
        self.client.stop(job.submission_id)
        job.stop_sent_at = time.monotonic()

    def _row_outcome(self, job: _Job, lost_message: str) -> Outcome:
        """The outcome of an ended job: what it recorded itself, or what the worker records."""
        task = job.task
        row = adopt.read_job_row(task, job.submission_id, "default")
        if row.recorded is not None:
            return row.recorded
        if job.timed_out:
            return timed_out(task)
        if job.cancel_requested or row.cancelling:
            return Outcome(task.id, task.attempt_number, OutcomeKind.CANCELLED)
        return lost(task, lost_message[:4000], "django_ray.RayJobLost")

    def cancel(self, execution_ids: Iterable[int]) -> None:
        for execution_id in execution_ids:
            job = self._jobs.get(execution_id)
            if job is None or job.cancel_requested:
                continue
            job.cancel_requested = True
            if job.submitted:
                try:
                    self._stop(job, "cancel requested")
                except (JobsApiError, JobsApiUnreachable) as exc:
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

    def reconcile(self, worker_id: str, using: str = "default") -> int:
        """Adopt Ray Jobs of rows whose owner's lease is gone; return how many were adopted.

        A job Ray still knows (running or finished) is adopted: the row's owner becomes this
        worker, which monitors it (heartbeats) and reports its end. A job Ray does not know, or
        whose status cannot be read, is left alone to age into stuck-task recovery.
        """
        if not self._connected:
            return 0
        adopted = 0
        for orphan in adopt.ray_job_orphans(worker_id, using):
            if orphan.id in self._jobs:
                continue
            try:
                details = self.client.status(orphan.ray_job_id)
            except (JobsApiError, JobsApiUnreachable) as exc:
                logger.info("cannot read Ray Job %s (%s); not adopting", orphan.ray_job_id, exc)
                continue
            if details is None:
                continue  # unknown to Ray: ages into stuck-task recovery
            task = adopt.adopt_ray_job(worker_id, orphan, using)
            if task is None:
                continue  # another worker was faster
            now = time.monotonic()
            remaining = None
            if task.timeout_seconds:
                from django.utils import timezone

                elapsed = (timezone.now() - task.started_at).total_seconds()
                remaining = max(0.0, task.timeout_seconds + TIMEOUT_STOP_SLACK_SECONDS - elapsed)
            with self._lock:
                self._jobs[task.id] = _Job(
                    task,
                    orphan.ray_job_id,
                    submitted=True,
                    since=now,
                    deadline=now + remaining if remaining is not None else None,
                )
            adopted += 1
        return adopted
