"""Periodic tasks on real PostgreSQL: three real workers fire an every-second schedule while
one of them is killed with SIGKILL; every instant is enqueued once and none twice. Catch-up and
skipping are checked on the firing function itself."""

from __future__ import annotations

import itertools
import json
import signal
import time
from datetime import timedelta

import pytest
from django.utils import timezone

from django_ray.lifecycle import periodic
from django_ray.models import PeriodicFire, RayTaskExecution
from django_ray.schedules import Schedule
from tests.conftest import wait_until

pytestmark = pytest.mark.django_db(transaction=True)

NAME = "every-second"
SETTINGS = {
    "PERIODIC_TASKS": {
        NAME: {"task": "tests.tasks.noop", "cron": "* * * * * *", "timezone": "Europe/Paris"}
    }
}
WINDOW = 60.0  # a minute of firing, as issue 16 asks; one worker is killed a third of the way in


def test_three_workers_one_killed_fire_every_instant_exactly_once(start_worker) -> None:  # type: ignore[no-untyped-def]
    env = {"DJANGO_RAY_TEST_SETTINGS": json.dumps(SETTINGS)}
    workers = [start_worker("--sync", env=env) for _ in range(3)]
    for worker in workers:
        worker.wait_for_log("worker ready", 120)
    fires = PeriodicFire.objects.filter(schedule=NAME)
    wait_until(lambda: fires.exists(), 30, explain=lambda: workers[0].log())
    start = timezone.now()
    time.sleep(WINDOW / 3)
    workers[0].signal(signal.SIGKILL)
    workers[0].wait()
    killed_at = timezone.now()
    time.sleep(WINDOW * 2 / 3)
    for worker in workers[1:]:
        assert worker.stop() == 0, worker.log()
    rows = list(fires.order_by("instant"))
    instants = [f.instant for f in rows if f.task_id]
    gaps = [(a, b) for a, b in itertools.pairwise(instants) if b - a != timedelta(seconds=1)]
    task_ids = [f.task_id for f in rows if f.task_id]
    enqueued = RayTaskExecution.objects.filter(callable_path="tests.tasks.noop")
    by_worker: dict[str, int] = {}
    for f in rows:
        by_worker[f.worker_id] = by_worker.get(f.worker_id, 0) + 1
    misses = sum(f.skipped for f in rows)
    print(
        f"periodic: {len(instants)} fires from {instants[0]} to {instants[-1]}, "
        f"rows enqueued={enqueued.count()}, duplicates={len(task_ids) - len(set(task_ids))}, "
        f"gaps={len(gaps)}, misses={misses}, fires by worker={sorted(by_worker.values())}"
    )
    assert not gaps, gaps
    assert misses == 0
    assert len(set(task_ids)) == len(task_ids) == enqueued.count()
    assert set(enqueued.values_list("task_id", flat=True)) == set(task_ids)
    # Firing went on after the kill, across the whole window.
    assert instants[0] <= start and instants[-1] >= killed_at + timedelta(seconds=WINDOW / 2)


def test_missed_instants_within_the_window_are_caught_up_and_older_ones_counted() -> None:
    schedule = Schedule(NAME, "tests.tasks.noop", "* * * * * *", "UTC")
    now = timezone.now().replace(microsecond=0)
    report = periodic.fire_due(schedule, now, now - timedelta(seconds=100), 10, "w", "default")
    assert len(report.fired) == 11 and report.skipped == 89  # (now-10s .. now], older skipped
    assert RayTaskExecution.objects.count() == 11
    marker = PeriodicFire.objects.get(task_id__isnull=True)
    assert marker.skipped == 89
    again = periodic.fire_due(schedule, now, now - timedelta(seconds=100), 10, "w2", "default")
    assert again.fired == [] and again.skipped == 0
    assert RayTaskExecution.objects.count() == 11


def test_status_and_admin_show_schedules_and_keys(admin_client) -> None:  # type: ignore[no-untyped-def]
    import io

    from django.core.management import call_command
    from django.test import override_settings

    from django_ray.lifecycle import claim, leases
    from tests import tasks

    schedule = Schedule(NAME, "tests.tasks.noop", "* * * * * *", "UTC")
    now = timezone.now()
    periodic.fire_due(schedule, now, now - timedelta(seconds=30), 5, "w", "default")
    tasks.add.using(unique_key="dedupe-me").enqueue(1, 1)
    tasks.add.using(lock_key="lock-me").enqueue(1, 2)
    tasks.add.using(lock_key="lock-me").enqueue(1, 3)
    leases.register_lease("w", "host", 1, None, "sync", 1, 60.0)
    while claim.claim("w", ["default"], 10):
        pass  # takes the plain, the dedupe and one lock-me row; the other waits on its key
    with override_settings(DJANGO_RAY={**SETTINGS}):
        out = io.StringIO()
        call_command("django_ray_status", "--json", "--no-ray-probe", stdout=out)
        text = io.StringIO()
        call_command("django_ray_status", "--no-ray-probe", stdout=text)
    section = json.loads(out.getvalue())["scheduling"]
    [row] = section["schedules"]
    assert row["name"] == NAME and row["misses"] == 25 and row["last_instant"] is not None
    assert section["lock_keys_held"] == 1 and section["waiting_on_lock_keys"] == 1
    assert f"{NAME}" in text.getvalue() and "misses 25" in text.getvalue()
    from django_ray.metrics.db import DatabaseCollector

    scraped = {f.name: f for f in DatabaseCollector().collect()}
    [missed] = scraped["django_ray_periodic_misses"].samples
    assert missed.labels == {"schedule": NAME} and missed.value == 25
    [last] = scraped["django_ray_periodic_last_fire_timestamp_seconds"].samples
    assert abs(last.value - now.timestamp()) < 1.5
    page = admin_client.get("/admin/django_ray/periodicfire/").content.decode()
    assert NAME in page
    queued = RayTaskExecution.objects.get(lock_key="lock-me", state="QUEUED")
    detail = admin_client.get(f"/admin/django_ray/raytaskexecution/{queued.pk}/change/")
    assert "lock-me" in detail.content.decode()


def test_a_task_that_refuses_to_enqueue_is_logged_and_records_nothing(caplog) -> None:  # type: ignore[no-untyped-def]
    from django_ray.worker.periodic import PeriodicScheduler

    # Its path leads to a plain function: enqueue() refuses it (TaskNotRunnable).
    broken = {"task": "tests.tasks.unbound_task", "cron": "* * * * * *", "timezone": "UTC"}
    scheduler = PeriodicScheduler({"broken": broken}, 3600.0, "w")
    assert scheduler.tick(timezone.now() + timedelta(seconds=3)) == 0
    assert not PeriodicFire.objects.exists() and not RayTaskExecution.objects.exists()
    assert "periodic schedule broken: could not enqueue tests.tasks.unbound_task" in caplog.text
