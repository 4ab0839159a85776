"""Worker leases: register, heartbeat (lease and monitored rows together), release."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta

from django.db import transaction
from django.utils import timezone

from django_ray.lifecycle import statements
from django_ray.models import RayTaskExecution, TaskWorkerLease


def register_lease(
    worker_id: str,
    hostname: str,
    pid: int,
    queues: Sequence[str] | None,
    runner: str,
    concurrency: int,
    lease_seconds: float,
    using: str = "default",
) -> TaskWorkerLease:
    """Create the lease row of a starting worker (active, expiring in ``lease_seconds``)."""
    now = timezone.now()
    return TaskWorkerLease.objects.using(using).create(
        worker_id=worker_id,
        hostname=hostname,
        pid=pid,
        queue_name=",".join(queues) if queues is not None else "*",
        runner=runner,
        concurrency=concurrency,
        is_active=True,
        started_at=now,
        last_heartbeat_at=now,
        expires_at=now + timedelta(seconds=lease_seconds),
    )


def heartbeat(
    worker_id: str, lease_seconds: float, monitored_ids: Sequence[int], using: str = "default"
) -> bool:
    """Renew the lease and the monitored rows' ``last_heartbeat_at``. False if the lease is gone."""
    if statements.is_postgres(using):
        params = {"worker": worker_id, "lease": lease_seconds, "ids": list(monitored_ids)}
        [(leases, _rows)] = statements.fetchall("heartbeat", params, using)
        return bool(leases)
    now = timezone.now()
    with transaction.atomic(using=using):
        ok = bool(
            TaskWorkerLease.objects.using(using)
            .filter(worker_id=worker_id, is_active=True)
            .update(last_heartbeat_at=now, expires_at=now + timedelta(seconds=lease_seconds))
        )
        if ok and monitored_ids:
            RayTaskExecution.objects.using(using).owned(worker_id).filter(
                pk__in=list(monitored_ids)
            ).update(last_heartbeat_at=now)
    return ok


def release_lease(worker_id: str, using: str = "default") -> None:
    """Mark the lease of a stopping worker inactive (its rows are recorded or requeued)."""
    TaskWorkerLease.objects.using(using).filter(worker_id=worker_id).update(
        is_active=False, stopped_at=timezone.now()
    )


def expire_leases(using: str, alive: str | None = None) -> list[str]:
    """Deactivate leases past their expiry, except ``alive``'s; return their worker ids.

    ``alive`` is the worker running the pass: it is alive by definition, so it never expires its
    own lease (its heartbeat thread ran late; the next beat renews the lease)."""
    if statements.is_postgres(using):
        params = {"alive": alive}
        return [row[0] for row in statements.fetchall("expire_leases", params, using)]
    now = timezone.now()
    expired = TaskWorkerLease.objects.using(using).filter(is_active=True, expires_at__lt=now)
    if alive is not None:
        expired = expired.exclude(worker_id=alive)
    ids = list(expired.values_list("worker_id", flat=True))
    expired.update(is_active=False, stopped_at=now)
    return ids
