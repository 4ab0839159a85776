"""The worker process: claim due rows, hand them to a runner, record outcomes, recover orphans.

One thread runs this loop; :class:`~django_ray.worker.lease.LeaseKeeper` heartbeats and
:class:`~django_ray.worker.wakeup.WakeupListener` turns NOTIFY into wake-ups. The loop keeps no
state that matters beyond a crash: every decision is a transition of a row in PostgreSQL.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from django.db import DatabaseError, connections

from django_ray import sdnotify
from django_ray.backoff import capped_backoff
from django_ray.conf import claim_batch_limit, ray_settings
from django_ray.lifecycle import claim, leases, operator, record, recover
from django_ray.metrics import worker as worker_metrics
from django_ray.outcomes import ClaimedTask, Outcome, OutcomeKind
from django_ray.results import store_if_oversized
from django_ray.runners.base import Finished, Runner, RunnerUnavailable
from django_ray.worker import faults, ray_jobs
from django_ray.worker.job_stops import RecoveredJobStopper
from django_ray.worker.lease import LeaseKeeper
from django_ray.worker.periodic import PeriodicScheduler
from django_ray.worker.shutdown import (
    EXIT_LEASE_LOST,
    EXIT_OK,
    EXIT_STARTUP_FAILED,
    ShutdownFlag,
    StopKeepalive,
)
from django_ray.worker.wakeup import WakeupListener

logger = logging.getLogger("django_ray.worker")

# Longest wait between two reconnect attempts to Ray: bounds how long a worker stays idle after
# Ray is back.
RECONNECT_BACKOFF_CAP = 10.0


def new_worker_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"


@dataclass
class WorkerStats:
    claimed: int = 0
    succeeded: int = 0
    failed: int = 0
    retried: int = 0
    lost: int = 0
    cancelled: int = 0
    recovered: int = 0
    started: float = field(default_factory=time.monotonic)


class Worker:
    """A ``django_ray_worker`` process. :meth:`run` returns the process exit code."""

    def __init__(
        self,
        runner: Runner,
        queues: Sequence[str] | None,
        using: str = "default",
        worker_id: str | None = None,
        max_tasks: int | None = None,
        idle_exit: float | None = None,
    ) -> None:
        self.runner = runner
        self.queues = list(queues) if queues is not None else None
        self.using = using
        self.worker_id = worker_id or new_worker_id()
        self.conf = ray_settings()
        self.stats = WorkerStats()
        self.shutdown = ShutdownFlag()
        self.wake = threading.Event()
        self.max_tasks = max_tasks
        self.idle_exit = idle_exit
        self._unrecorded: Finished = []
        self._last_recovery = 0.0
        self._last_cancel_check = 0.0
        # Rows whose cancel was already handed to the runner: logged once, not every check.
        self._cancels_announced: set[int] = set()
        self._last_poll = 0.0
        self._more_work = True
        # Monotonic times at which retries this worker scheduled become due: the idle wait ends
        # then, so a backoff is not stretched to the (possibly long) fallback poll interval.
        self._retry_due: list[float] = []
        self._db_ok = True
        self.scheduler = (
            PeriodicScheduler(
                self.conf.PERIODIC_TASKS,
                float(self.conf.PERIODIC_CATCHUP_SECONDS),
                self.worker_id,
            )
            if self.conf.PERIODIC_TASKS
            else None
        )
        self.listener = WakeupListener(self.queues, using, wake=self.wake)
        self.job_stopper = RecoveredJobStopper(self.worker_id, self.runner.jobs_api_address)
        self.lease = LeaseKeeper(
            self.worker_id,
            float(self.conf.WORKER_LEASE_SECONDS),
            float(self.conf.WORKER_HEARTBEAT_SECONDS),
            self.runner.in_flight_ids,
            using,
        )

    # -- logging helpers --------------------------------------------------------------------

    def _extra(self, task: ClaimedTask, state: str) -> dict[str, object]:
        return {
            "task_id": task.task_id,
            "callable_path": task.callable_path,
            "queue": task.queue_name,
            "worker_id": self.worker_id,
            "state": state,
            "attempt": task.attempt_number,
        }

    def _log(self, level: int, event: str, task: ClaimedTask, state: str, detail: str = "") -> None:
        if not logger.isEnabledFor(level):
            return
        logger.log(
            level,
            "%s task_id=%s callable=%s queue=%s worker_id=%s attempt=%s%s",
            event,
            task.task_id,
            task.callable_path,
            task.queue_name,
            self.worker_id,
            task.attempt_number,
            f" {detail}" if detail else "",
            extra=self._extra(task, state),
        )

    # -- lifecycle --------------------------------------------------------------------------

    def run(self) -> int:
        self.shutdown.install(self.wake)
        faults.install()
        queues = ",".join(self.queues) if self.queues is not None else "*"
        leases.register_lease(
            self.worker_id,
            socket.gethostname(),
            os.getpid(),
            self.queues,
            self.runner.name,
            self.runner.concurrency,
            float(self.conf.WORKER_LEASE_SECONDS),
            self.using,
        )
        self.lease.start()
        if self.listener.supported:
            self.listener.start()
        worker_metrics.set_worker_info(
            self.worker_id, self.runner.name, queues, self.runner.concurrency
        )
        try:
            port = worker_metrics.start_exporter()
            if port is not None:
                logger.info("worker metrics on port %s", port, extra={"worker_id": self.worker_id})
        except (OSError, ValueError) as exc:
            logger.error("%s", exc, extra={"worker_id": self.worker_id})
        logger.info(
            "worker starting worker_id=%s queues=%s runner=%s concurrency=%s",
            self.worker_id,
            queues,
            self.runner.name,
            self.runner.concurrency,
            extra={"worker_id": self.worker_id, "queue": queues},
        )
        sdnotify.status(f"starting {self.runner.name} runner")
        try:
            self.runner.start()
        except RunnerUnavailable as exc:
            worker_metrics.set_ray_connected(False)
            logger.error("%s", exc, extra={"worker_id": self.worker_id})
            self._stop_threads()
            leases.release_lease(self.worker_id, self.using)
            return EXIT_STARTUP_FAILED
        # ray.init() installs its own SIGTERM handler (it exits at once); ours must win.
        self.shutdown.install(self.wake)
        worker_metrics.set_ray_connected(True)
        sdnotify.ready(self._status_line())
        logger.info(
            "worker ready worker_id=%s queues=%s",
            self.worker_id,
            queues,
            extra={"worker_id": self.worker_id, "queue": queues},
        )
        code = self._main_loop()
        return self._finish(code)

    def _status_line(self) -> str:
        s = self.stats
        return (
            f"{self.runner.name}: {len(self.runner.in_flight_ids())} in flight, "
            f"{s.succeeded} ok, {s.failed} failed, {s.retried} retried, {s.lost} lost"
        )

    def _main_loop(self) -> int:
        last_status = 0.0
        idle_since = time.monotonic()
        while not self.shutdown.requested:
            faults.maybe_hang()
            if self.lease.lost.is_set():
                worker_metrics.record_lease_lost()
                logger.error(
                    "stopping: lease lost, rows may have been recovered by another worker",
                    extra={"worker_id": self.worker_id},
                )
                self.runner.interrupt_all()
                return EXIT_LEASE_LOST
            progressed = self.iterate()
            now = time.monotonic()
            if progressed:
                sdnotify.watchdog()
            if now - last_status > 2.0:
                sdnotify.status(self._status_line())
                last_status = now
            if self.max_tasks is not None and self._done_count() >= self.max_tasks:
                logger.info("processed %s tasks (--max-tasks); stopping", self._done_count())
                self.shutdown.request("max-tasks")
            if self.runner.in_flight_ids() or self._more_work:
                idle_since = now
            elif self.idle_exit is not None and now - idle_since >= self.idle_exit:
                logger.info("idle for %.1fs (--idle-exit); stopping", self.idle_exit)
                self.shutdown.request("idle-exit")
        return EXIT_OK

    def _done_count(self) -> int:
        s = self.stats
        return (
            s.succeeded + s.failed + s.cancelled + (s.lost - s.retried if s.lost > s.retried else 0)
        )

    def iterate(self) -> bool:
        """One pass: outcomes, cancellations, recovery, claims, then wait. True if it completed."""
        try:
            if self._unrecorded:
                self._record([])
            if self.runner.in_flight_ids():
                timeout = 0.0 if self._more_work and self.runner.free_slots() else 0.05
                self._record(self._wait_runner(timeout))
            now = time.monotonic()
            if self.listener.cancel.is_set() or now - self._last_cancel_check > 1.0:
                self.listener.cancel.clear()
                self._process_cancellations()
                self._last_cancel_check = now
            if now - self._last_recovery > float(self.conf.WORKER_HEARTBEAT_SECONDS):
                self._recover()
                self._last_recovery = now
            if self.scheduler is not None:
                self.scheduler.tick()
            self._claim()
            in_flight = len(self.runner.in_flight_ids())
            worker_metrics.set_in_flight(in_flight)
            if not in_flight and not self._more_work:
                # Idle: sleep until NOTIFY (or the fallback poll) wakes us.
                self.wake.wait(self._idle_wait())
            self._db_ok = True
            worker_metrics.record_loop_iteration()
            return True
        except record.TRANSIENT as exc:
            if self._db_ok:
                logger.warning(
                    "database unavailable (%s); outcomes kept in memory, retrying",
                    exc,
                    extra={"worker_id": self.worker_id},
                )
            self._db_ok = False
            connections[self.using].close()
            time.sleep(0.5)
            return False
        except DatabaseError as exc:
            # Not "database down" (recording splits a batch on one row's bad data, so this is
            # not an outcome): log it and go on; the next pass starts from the rows again.
            logger.exception(
                "database error in the worker loop (%s: %s); continuing",
                type(exc).__name__,
                exc,
                extra={"worker_id": self.worker_id},
            )
            time.sleep(0.5)
            return False

    def _idle_wait(self) -> float:
        # With LISTEN, wake-ups are pushed; the poll is a slow safety net (and catches the
        # run_after of deferred enqueues). Our own retries wake us when they become due.
        poll = float(self.conf.POLL_INTERVAL_SECONDS)
        next_instant = self.scheduler.seconds_to_next() if self.scheduler is not None else None
        if next_instant is not None:
            # Wake for the next scheduled instant (a little after, so that it is due). None
            # means no schedule: it must not become a 10 ms busy poll.
            poll = min(poll, next_instant + 0.01)
        if self._retry_due:
            return max(0.0, min(poll, min(self._retry_due) - time.monotonic()))
        return poll

    def _wait_runner(self, timeout: float) -> Finished:
        try:
            return self.runner.poll(timeout)
        except RunnerUnavailable:
            raise
        except Exception as exc:
            if not self.runner.capabilities.reconnect:
                raise
            return self._ray_connection_lost(exc)

    def _ray_connection_lost(self, exc: Exception) -> Finished:
        # With the traceback: a bug in a runner's poll() lands here too, and must be findable.
        logger.warning(
            "lost the connection to Ray (%s: %s); in-flight attempts go through the retry path",
            type(exc).__name__,
            exc,
            exc_info=exc,
            extra={"worker_id": self.worker_id},
        )
        worker_metrics.set_ray_connected(False)
        lost = self.runner.lose_connection()
        self._reconnect_runner()
        return lost

    def _reconnect_runner(self) -> None:
        failures = 0
        while not self.shutdown.requested and not self.lease.lost.is_set():
            try:
                self.runner.close()
            except Exception:
                logger.debug("runner close failed during reconnect", exc_info=True)
            try:
                self.runner.start()
                self.shutdown.install(self.wake)
                worker_metrics.record_ray_reconnect()
                logger.warning("reconnected to Ray", extra={"worker_id": self.worker_id})
                return
            except RunnerUnavailable as exc:
                failures += 1
                delay = capped_backoff(failures, 0.5, RECONNECT_BACKOFF_CAP)
                logger.warning("Ray still unavailable (%s); retrying in %.1fs", exc, delay)
                sdnotify.watchdog()  # the loop is alive; it is Ray that is down
                self.shutdown.event.wait(delay)

    # -- steps ------------------------------------------------------------------------------

    def _claim(self) -> None:
        free = self.runner.free_slots()
        now = time.monotonic()
        woken = self.wake.is_set()
        if free <= 0 or self.shutdown.requested:
            return
        retry_due = any(due <= now for due in self._retry_due)
        if not (
            woken
            or self._more_work
            or retry_due
            or now - self._last_poll >= self.conf.POLL_INTERVAL_SECONDS
        ):
            return
        self._retry_due = [due for due in self._retry_due if due > now]
        self.wake.clear()
        self._last_poll = now
        limit = claim_batch_limit(free)
        tasks = claim.claim(self.worker_id, self.queues, limit, self.using)
        self._more_work = tasks.full
        for task in tasks:
            task.database = self.using
        if tasks and self.runner.capabilities.ray_jobs:
            tasks = ray_jobs.attach(self.runner, tasks, self.using)
        if not tasks:
            return
        self.stats.claimed += len(tasks)
        worker_metrics.record_claim_batch()
        for task in tasks:
            worker_metrics.record_claimed(task.queue_name)
            worker_metrics.record_started(
                task.queue_name, (task.started_at - task.run_after).total_seconds()
            )
            self._log(logging.INFO, "claimed", task, "RUNNING")
        self.runner.submit(tasks)

    def _record(self, finished: Finished) -> None:
        pending = self._unrecorded + finished
        if not pending:
            return
        self._unrecorded = pending  # kept until the write succeeds (the database may be down)
        # A Ray Job records its own outcome: read back what it wrote, or take the fallback.
        resolved = [
            (task, ray_jobs.read_back(task, outcome, self.using) if outcome.ray_job_id else outcome)
            for task, outcome in pending
        ]
        batch = [item for item in resolved if not item[1].recorded_state]
        if any(task.lock_key for task, _ in pending):
            # A lock key was released: rows waiting on it are due now, not at the next poll.
            self._more_work = True
        if batch:
            report = record.record_outcomes(
                self.worker_id, batch, self.using, store_result=store_if_oversized
            )
        self._unrecorded = []
        # Outcomes the executing process already wrote (Ray Jobs): only log and count them.
        for task, outcome in resolved:
            if outcome.recorded_state:
                self._log_outcome(task, outcome, str(outcome.recorded_state), 0.0)
        if not batch:
            return
        for plan in report.planned:
            task, outcome = plan.task, plan.outcome
            new_state = report.states.get(task.id)
            if new_state is None:
                self._log(
                    logging.WARNING,
                    "outcome discarded (row no longer owned by this worker; lease lost or "
                    "recovered elsewhere)",
                    task,
                    str(plan.state),
                )
                continue
            if new_state == "QUEUED" and plan.delay > 0:
                self._retry_due.append(time.monotonic() + plan.delay)
            self._log_outcome(task, outcome, new_state, plan.delay)

    def _log_outcome(self, task: ClaimedTask, outcome: Outcome, state: str, delay: float) -> None:
        worker_metrics.record_finished(
            task.queue_name, _metric_outcome(outcome, state), outcome.duration_seconds
        )
        duration = f" duration={outcome.duration_seconds:.3f}s" if outcome.duration_seconds else ""
        if state == "SUCCEEDED":
            self.stats.succeeded += 1
            self._log(logging.INFO, "succeeded", task, state, duration.strip())
            return
        if state == "CANCELLED":
            self.stats.cancelled += 1
            self._log(logging.INFO, "cancelled", task, state)
            return
        error = f"error={outcome.error_class_path}: {outcome.error_message}"
        if outcome.kind is OutcomeKind.INTERRUPTED:
            self.stats.retried += 1
            self._log(logging.WARNING, "interrupted, requeued", task, state)
            return
        if outcome.kind is OutcomeKind.LOST:
            self.stats.lost += 1
        else:
            self.stats.failed += 1
        if state == "QUEUED":
            self.stats.retried += 1
            self._log(
                logging.WARNING,
                "failed, will retry",
                task,
                state,
                f"next_run_after=+{delay:.1f}s {error}",
            )
        else:
            self._log(logging.ERROR, "failed permanently", task, state, error)

    def _process_cancellations(self) -> None:
        wanted = operator.cancelling_rows(self.worker_id, self.using)
        if not wanted:
            self._cancels_announced.clear()
            return
        in_flight = set(self.runner.in_flight_ids())
        running = [i for i in wanted if i in in_flight]
        self._cancels_announced &= set(running)
        if not running:
            return
        new = [i for i in running if i not in self._cancels_announced]
        if new:
            logger.info(
                "cancelling %s running task(s): ids=%s",
                len(new),
                new,
                extra={"worker_id": self.worker_id},
            )
            self._cancels_announced.update(new)
        # Every check, not only for new rows: a runner that was not told yet (the call was just
        # submitted) is told now. Re-sending a stop that did not take effect is the runner's job.
        self.runner.stop(running)

    def _recover(self) -> None:
        if self.runner.capabilities.adoption and not self.shutdown.requested:
            ray_jobs.adopt_orphans(self.worker_id, self.runner, self.using)  # before recovery
        # Dead workers' orphans, then rows this worker owns but its runner no longer reports
        # (dropped by an error): one report, so every recovered row's Ray Job gets stopped.
        report = recover.recover(
            self.worker_id,
            self.runner.in_flight_ids(),
            float(self.conf.STUCK_TASK_TIMEOUT_SECONDS),
            self.using,
        )
        for worker_id in report.expired_leases:
            logger.warning(
                "lease of worker_id=%s expired; its rows are now recoverable",
                worker_id,
                extra={"worker_id": worker_id},
            )
        self.job_stopper.add(report.ray_jobs)
        self.job_stopper.run()
        recovered = report.recovered
        if recovered:
            self.stats.recovered += recovered
            logger.warning(
                "recovered %s orphaned row(s): %s lost (%s requeued), %s cancelled",
                recovered,
                len(report.lost),
                len(report.requeued),
                len(report.cancelled),
                extra={"worker_id": self.worker_id},
            )

    def _finish(self, code: int) -> int:
        grace = float(self.conf.SHUTDOWN_GRACE_SECONDS)
        keepalive = StopKeepalive(grace, f"stopping: {self.shutdown.signal_name or 'exit'}")
        keepalive.start()
        deadline = time.monotonic() + grace
        if code == EXIT_OK:
            released = self.runner.release()
            if released:
                self._safe_record(released)
            while self.runner.in_flight_ids() and time.monotonic() < deadline:
                try:
                    self._record(self._wait_runner(min(0.2, max(0.0, deadline - time.monotonic()))))
                except record.TRANSIENT:
                    time.sleep(0.2)
            leftover = self.runner.interrupt_all()
            if leftover:
                logger.warning(
                    "grace period (%ss) over: requeueing %s in-flight task(s)",
                    grace,
                    len(leftover),
                    extra={"worker_id": self.worker_id},
                )
            self._safe_record(leftover)
        self._stop_threads()
        # Released before leaving Ray (which can be slow): nothing of this worker runs any more.
        try:
            leases.release_lease(self.worker_id, self.using)
        except DatabaseError as exc:
            logger.warning("could not release the lease (%s); it will expire", exc)
        try:
            self.runner.close()
        except Exception:
            logger.debug("runner close failed", exc_info=True)
        keepalive.stop()
        logger.info(
            "worker stopped worker_id=%s exit=%s %s",
            self.worker_id,
            code,
            self._status_line(),
            extra={"worker_id": self.worker_id},
        )
        return code

    def _safe_record(self, finished: Finished) -> None:
        for _ in range(10):
            try:
                self._record(finished)
                return
            except record.TRANSIENT as exc:
                logger.warning("recording outcomes at shutdown failed (%s); retrying", exc)
                connections[self.using].close()
                finished = []
                time.sleep(0.5)

    def _stop_threads(self) -> None:
        self.lease.stop()
        self.listener.stop()
        worker_metrics.stop_exporter()


def _metric_outcome(outcome: Outcome, state: str) -> str:
    """The ``outcome`` label of ``django_ray_worker_tasks_completed_total`` for a recorded row."""
    if state == "SUCCEEDED":
        return "succeeded"
    if state == "CANCELLED":
        return "cancelled"
    if outcome.kind is OutcomeKind.INTERRUPTED:
        return "interrupted"
    if outcome.kind is OutcomeKind.LOST:
        return "lost"
    return "retried" if state == "QUEUED" else "failed"
