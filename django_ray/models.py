"""Rows that are the system of record: executions, their attempts, and worker leases.

States change only through :mod:`django_ray.lifecycle`; these models describe the data and name
the row sets every part of django-ray asks about (due, owned, orphaned rows; live leases), so
recovery, metrics, status and the admin count the same rows.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from django.db import models
from django.db.models import Q
from django.utils import timezone


class TaskState(models.TextChoices):
    """Lifecycle of a :class:`RayTaskExecution` (see ``docs/state-machine.md``)."""

    QUEUED = "QUEUED", "Queued"
    RUNNING = "RUNNING", "Running"
    SUCCEEDED = "SUCCEEDED", "Succeeded"
    FAILED = "FAILED", "Failed"
    CANCELLING = "CANCELLING", "Cancelling"
    CANCELLED = "CANCELLED", "Cancelled"
    LOST = "LOST", "Lost"


TERMINAL_STATES = frozenset({TaskState.SUCCEEDED, TaskState.FAILED, TaskState.CANCELLED})
# Rows a worker owns while it (or an adopter) monitors them. A tuple: its order is part of the
# owned-rows index condition in migration 0001 and of the SQL fragment built from it.
OWNED_STATES = (TaskState.RUNNING, TaskState.CANCELLING)

#: Longest dedupe key (``unique_key``) or lock key (``lock_key``) a task may carry.
KEY_MAX_LENGTH = 255

#: Rows that hold their dedupe key (docs/scheduling.md): QUEUED rows, and owned rows enqueued
#: with ``unique_while_running``. The partial unique index of migration 0006 is built from this;
#: lifecycle.rules.unique_live_sql() is the same predicate as SQL (ON CONFLICT must match it).
UNIQUE_KEY_HELD = Q(unique_key__isnull=False) & (
    Q(state=TaskState.QUEUED)
    | Q(unique_while_running=True, state__in=[str(s) for s in OWNED_STATES])
)
#: Rows that hold their lock key: owned rows. At most one per key (migration 0006).
LOCK_KEY_HELD = Q(lock_key__isnull=False, state__in=[str(s) for s in OWNED_STATES])


class LeaseQuerySet(models.QuerySet["TaskWorkerLease"]):
    def live(self, now: datetime | None = None) -> LeaseQuerySet:
        """Leases of workers alive at ``now``: active and not expired."""
        return self.filter(is_active=True, expires_at__gte=now or timezone.now())

    def ended_since(self, cutoff: datetime) -> LeaseQuerySet:
        """Leases that were still alive after ``cutoff`` (expired or released later)."""
        return self.filter(expires_at__gt=cutoff).filter(
            Q(stopped_at__isnull=True) | Q(stopped_at__gt=cutoff)
        )


def due_condition(now: datetime | None = None) -> Q:
    """The condition of :meth:`ExecutionQuerySet.due` (every queue) as a ``Q``, for callers
    that negate it or put it into a larger ``WHERE`` (the admin's due / scheduled filter)."""
    return Q(state=TaskState.QUEUED, run_after__lte=now or timezone.now())


class ExecutionQuerySet(models.QuerySet["RayTaskExecution"]):
    def due(self, queues: list[str] | None, now: datetime | None = None) -> ExecutionQuerySet:
        """QUEUED rows whose ``run_after`` has come, of ``queues`` (None: every queue)."""
        qs = self.filter(due_condition(now))
        return qs if queues is None else qs.filter(queue_name__in=list(queues))

    def owned(self, worker_id: str | None = None) -> ExecutionQuerySet:
        """Rows a worker owns (RUNNING or CANCELLING), optionally of one worker."""
        qs = self.filter(state__in=OWNED_STATES)
        return qs if worker_id is None else qs.filter(claimed_by_worker=worker_id)

    def orphaned(self, stuck_seconds: float, now: datetime | None = None) -> ExecutionQuerySet:
        """Owned rows recovery takes over: no live lease, no heartbeat for ``stuck_seconds``.

        A row with a Ray Job gets one more stuck timeout after its owner's lease ended, so that
        a live worker can adopt the (maybe still running) job first.
        """
        now = now or timezone.now()
        cutoff = now - timedelta(seconds=stuck_seconds)
        leases = TaskWorkerLease.objects.using(self.db)
        return (
            self.owned()
            .filter(
                Q(last_heartbeat_at__lt=cutoff)
                | Q(last_heartbeat_at__isnull=True, started_at__lt=cutoff)
            )
            .exclude(claimed_by_worker__in=leases.live(now).values("worker_id"))
            .exclude(
                ray_job_id__isnull=False,
                claimed_by_worker__in=leases.ended_since(cutoff).values("worker_id"),
            )
        )


class RayTaskExecution(models.Model):
    """One enqueued task: its arguments, where it stands, and its latest outcome."""

    task_id = models.CharField(max_length=64, unique=True, help_text="Django TaskResult.id")
    callable_path = models.CharField(max_length=255, db_index=True)
    backend_alias = models.CharField(max_length=64, default="default")
    queue_name = models.CharField(max_length=128, default="default")
    state = models.CharField(max_length=16, choices=TaskState.choices, default=TaskState.QUEUED)
    priority = models.SmallIntegerField(default=0)
    takes_context = models.BooleanField(default=False)
    args = models.JSONField(default=list)
    kwargs = models.JSONField(default=dict)
    attempt_number = models.PositiveIntegerField(
        default=0, help_text="Attempts started so far (the current attempt while RUNNING)."
    )
    max_attempts = models.PositiveIntegerField(
        null=True, blank=True, help_text="Overrides MAX_TASK_ATTEMPTS for this task."
    )
    worker_ids = models.JSONField(default=list, help_text="Worker of each attempt, in order.")
    run_after = models.DateTimeField(
        default=timezone.now, help_text="When the row is due (retries move it later)."
    )
    requested_run_after = models.DateTimeField(
        null=True,
        blank=True,
        help_text="The run_after the task was enqueued with (None: as soon as possible); "
        "run_after itself moves with retries.",
    )
    created_at = models.DateTimeField(default=timezone.now)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    last_heartbeat_at = models.DateTimeField(null=True, blank=True)
    timeout_seconds = models.FloatField(null=True, blank=True)
    claimed_by_worker = models.CharField(max_length=128, null=True, blank=True)
    ray_job_id = models.CharField(max_length=128, null=True, blank=True)
    result_data = models.JSONField(null=True, blank=True)
    result_reference = models.CharField(max_length=1024, null=True, blank=True)
    error_class_path = models.CharField(max_length=255, null=True, blank=True)
    error_message = models.TextField(null=True, blank=True)
    error_traceback = models.TextField(null=True, blank=True)
    last_attempted_at = models.DateTimeField(
        null=True, blank=True, help_text="When the latest attempt started (started_at: the first)."
    )
    unique_key = models.CharField(
        max_length=KEY_MAX_LENGTH,
        null=True,
        blank=True,
        help_text="Dedupe key: while this row is QUEUED (or running, with unique_while_running) "
        "enqueueing the same key returns this row.",
    )
    unique_while_running = models.BooleanField(
        default=False, help_text="The dedupe key is also held while the row runs."
    )
    lock_key = models.CharField(
        max_length=KEY_MAX_LENGTH,
        null=True,
        blank=True,
        help_text="Serialization key: no two rows with this key run at the same time.",
    )
    ray_options = models.JSONField(
        null=True,
        blank=True,
        help_text="Ray resources and runtime_env of this task (its own over its queue's "
        "default; docs/resources.md); null: the worker's defaults.",
    )

    objects = ExecutionQuerySet.as_manager()

    class Meta:
        db_table = "django_ray_raytaskexecution"
        permissions = [
            ("retry_raytaskexecution", "Can retry failed, lost or cancelled task executions"),
            ("cancel_raytaskexecution", "Can cancel queued or running task executions"),
        ]
        indexes = [
            # The claim: due QUEUED rows of a queue in priority then due-time order. Partial, so
            # the size of the finished history never slows it down.
            models.Index(
                "queue_name",
                models.F("priority").desc(),
                "run_after",
                "id",
                name="django_ray_claim_idx",
                condition=Q(state="QUEUED"),
            ),
            # Recovery and heartbeats: owned rows by owner.
            models.Index(
                "claimed_by_worker",
                "last_heartbeat_at",
                name="django_ray_owned_idx",
                condition=Q(state__in=[str(s) for s in OWNED_STATES]),
            ),
            models.Index("state", "finished_at", name="django_ray_state_finished_idx"),
            # The admin: its order (newest first), date hierarchy and drill-downs (migration 0010).
            models.Index(fields=["created_at", "id"], name="django_ray_created_idx"),
        ]
        constraints = [
            # One live row per dedupe key: enqueue's ON CONFLICT returns the holder instead.
            models.UniqueConstraint(
                fields=["unique_key"], condition=UNIQUE_KEY_HELD, name="django_ray_unique_key_held"
            ),
            # Never two running rows of one lock key, whatever races the claim loses.
            models.UniqueConstraint(
                fields=["lock_key"], condition=LOCK_KEY_HELD, name="django_ray_lock_key_held"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.callable_path} [{self.state}] {self.task_id}"


class TaskAttempt(models.Model):
    """The outcome of one finished attempt of an execution: history for on-call."""

    execution = models.ForeignKey(
        RayTaskExecution, on_delete=models.CASCADE, related_name="attempts"
    )
    attempt_number = models.PositiveIntegerField()
    worker_id = models.CharField(max_length=128, null=True, blank=True)
    state = models.CharField(max_length=16, choices=TaskState.choices)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(default=timezone.now)
    error_class_path = models.CharField(max_length=255, null=True, blank=True)
    error_message = models.TextField(null=True, blank=True)
    error_traceback = models.TextField(null=True, blank=True)

    class Meta:
        db_table = "django_ray_taskattempt"
        ordering = ["execution_id", "attempt_number"]
        constraints = [
            models.UniqueConstraint(
                fields=["execution", "attempt_number"], name="django_ray_one_row_per_attempt"
            )
        ]

    def __str__(self) -> str:
        # Not "attempt 1 of 25": 25 would read as the attempt budget, it is the execution's id.
        return f"attempt {self.attempt_number} [{self.state}] of execution #{self.execution_id}"


class TaskWorkerLease(models.Model):
    """A live ``django_ray_worker`` process: who it is, what it polls, and its heartbeat."""

    worker_id = models.CharField(max_length=128, unique=True)
    hostname = models.CharField(max_length=255)
    pid = models.PositiveIntegerField()
    queue_name = models.CharField(max_length=1024, help_text="Queues polled, comma-separated.")
    runner = models.CharField(max_length=32, default="")
    concurrency = models.PositiveIntegerField(default=1)
    is_active = models.BooleanField(default=True)
    started_at = models.DateTimeField(default=timezone.now)
    last_heartbeat_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField()
    stopped_at = models.DateTimeField(null=True, blank=True)

    objects = LeaseQuerySet.as_manager()

    class Meta:
        db_table = "django_ray_taskworkerlease"
        indexes = [
            models.Index(
                "expires_at", name="django_ray_active_lease_idx", condition=Q(is_active=True)
            )
        ]

    def __str__(self) -> str:
        return f"{self.worker_id} ({'active' if self.is_active else 'inactive'})"

    @staticmethod
    def status_of(is_active: bool, expires_at: datetime, now: datetime) -> str:
        """``active`` (live: see :meth:`LeaseQuerySet.live`), ``stale`` (active but expired: the
        worker stopped heartbeating, recovery expires it) or ``inactive``."""
        if not is_active:
            return "inactive"
        return "stale" if expires_at < now else "active"

    @staticmethod
    def ending_of(
        is_active: bool, expires_at: datetime, stopped_at: datetime | None, now: datetime
    ) -> str:
        """``alive`` (live), ``stopped`` (released by its worker before it expired: a clean
        stop) or ``expired`` (the worker stopped heartbeating: crashed, killed or hung; recovery
        deactivates such a lease with ``stopped_at`` after ``expires_at``)."""
        if is_active:
            return "alive" if expires_at >= now else "expired"
        return "stopped" if stopped_at is not None and stopped_at <= expires_at else "expired"


class PeriodicFire(models.Model):
    """One instant of a periodic schedule, enqueued (or a run of instants skipped) once.

    The unique (schedule, instant) pair is what makes a fire happen exactly once however many
    workers see the instant due: the insert of this row and the task's row commit together.
    """

    schedule = models.CharField(max_length=200)
    instant = models.DateTimeField(help_text="The scheduled instant (UTC).")
    task_id = models.CharField(
        max_length=64, null=True, blank=True, help_text="The enqueued task (none: a skip marker)."
    )
    skipped = models.PositiveIntegerField(
        default=0, help_text="Instants skipped up to this one (older than the catch-up window)."
    )
    fired_at = models.DateTimeField(default=timezone.now)
    worker_id = models.CharField(max_length=128)

    class Meta:
        db_table = "django_ray_periodicfire"
        constraints = [
            models.UniqueConstraint(fields=["schedule", "instant"], name="django_ray_one_fire")
        ]

    def __str__(self) -> str:
        return f"{self.schedule} @ {self.instant.isoformat()}"


class TaskEffect(models.Model):
    """A side effect a task body applied (``django_ray.effects.effect_once``).

    Inserted in the same transaction as the effect's own writes, so "the effect happened" and
    "it is recorded" commit together or not at all; the unique (task, key) pair is what makes
    a retried or re-run attempt skip it. Deleted with its execution (``django_ray_prune``).
    """

    execution = models.ForeignKey(
        RayTaskExecution,
        to_field="task_id",
        db_column="task_id",
        on_delete=models.CASCADE,
        related_name="effects",
        # The unique (task_id, key) index below serves lookups by task: no second index.
        db_index=False,
        help_text="The task (its TaskResult.id) that applied the effect.",
    )
    key = models.CharField(max_length=KEY_MAX_LENGTH, help_text="The caller's effect key.")
    attempt_number = models.PositiveIntegerField(help_text="The attempt that applied it.")
    applied_at = models.DateTimeField(default=timezone.now)

    class Meta:
        db_table = "django_ray_taskeffect"
        ordering = ["applied_at", "id"]
        constraints = [
            models.UniqueConstraint(fields=["execution", "key"], name="django_ray_one_effect")
        ]

    def __str__(self) -> str:
        return f"effect {self.key!r} of {self.execution_id} (attempt {self.attempt_number})"
