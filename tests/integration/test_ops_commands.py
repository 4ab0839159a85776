"""django_ray_status, django_ray_requeue and django_ray_prune against real PostgreSQL."""

from __future__ import annotations

import io
import json
import os
import socket
from datetime import timedelta

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from django_ray.lifecycle import leases
from django_ray.models import RayTaskExecution, TaskAttempt, TaskState, TaskWorkerLease
from tests import tasks

pytestmark = pytest.mark.django_db(transaction=True)


def run(*args: str) -> str:
    out = io.StringIO()
    call_command(*args, stdout=out, stderr=io.StringIO())
    return out.getvalue()


def _work(start_worker) -> None:  # type: ignore[no-untyped-def]
    worker = start_worker("--sync", "--idle-exit", "1", "--all-queues")
    assert worker.wait(120) == 0, worker.log()


@pytest.fixture
def history(start_worker):  # type: ignore[no-untyped-def]
    """Real outcomes: 3 FAILED (2 callables), 2 SUCCEEDED; then 2 QUEUED and a stale lease."""
    tasks.fail_permanent.enqueue()
    tasks.fail_permanent.enqueue()
    tasks.fail_always.using(queue_name="other").enqueue("kaput")
    tasks.add.enqueue(1, 1)
    tasks.add.enqueue(2, 2)
    _work(start_worker)
    tasks.noop.enqueue()
    tasks.noop.using(queue_name="slow").enqueue()
    leases.register_lease("ghost-1", "host-x", 99, ["slow"], "ray_core", 2, 1.0)
    TaskWorkerLease.objects.filter(worker_id="ghost-1").update(
        expires_at=timezone.now() - timedelta(minutes=2),
        last_heartbeat_at=timezone.now() - timedelta(minutes=3),
    )


# --- django_ray_status ----------------------------------------------------------------------


def test_status_json_reflects_live_data(history, settings) -> None:  # type: ignore[no-untyped-def]
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        settings.DJANGO_RAY = {**settings.DJANGO_RAY, "RAY_ADDRESS": f"127.0.0.1:{port}"}
        status = json.loads(run("django_ray_status", "--json"))
    assert status["states"]["FAILED"] == 3
    assert status["states"]["SUCCEEDED"] == 2
    assert status["states"]["QUEUED"] == 2
    queues = {q["queue"]: q for q in status["queues"]}
    assert queues["default"]["queued"] == 1 and queues["slow"]["queued"] == 1
    assert queues["default"]["active_workers"] == 0
    by_worker = {lease["worker_id"]: lease for lease in status["leases"]}
    assert by_worker["ghost-1"]["status"] == "stale"
    assert by_worker["ghost-1"]["heartbeat_age_seconds"] >= 179
    assert status["ray"]["reachable"] is True
    failures = status["failures"]
    assert failures["failed_terminal"] == 3
    assert failures["dominant"]["callable_path"] == "tests.tasks.fail_permanent"
    assert failures["dominant"]["failed_or_lost"] == 2
    assert "do not retry me" in failures["dominant"]["latest_error"]
    checks = {c["name"]: c for c in status["checks"]}
    assert checks["workers"]["status"] == "fail"  # work queued, no active lease
    assert checks["leases"]["status"] == "warn" and "ghost-1" in checks["leases"]["detail"]
    assert checks["ray"]["status"] == "ok"
    assert "no worker polling" in checks["queues"]["detail"]


def test_status_spots_a_dead_local_worker_process(history) -> None:  # type: ignore[no-untyped-def]
    import subprocess
    import sys

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # reaped: its pid no longer runs
    leases.register_lease("crashed-1", socket.gethostname(), dead.pid, ["default"], "sync", 1, 60.0)
    leases.register_lease(
        "alive-1", socket.gethostname(), os.getpid(), ["default"], "sync", 1, 60.0
    )
    status = json.loads(run("django_ray_status", "--json", "--no-ray-probe"))
    by_worker = {lease["worker_id"]: lease for lease in status["leases"]}
    assert by_worker["crashed-1"]["process"] == "gone"
    assert by_worker["alive-1"]["process"] == "alive"
    assert by_worker["ghost-1"]["process"] == "remote"  # host-x is not this machine
    workers = next(c for c in status["checks"] if c["name"] == "workers")
    assert workers["status"] == "warn" and "crashed-1" in workers["detail"]
    text = run("django_ray_status", "--no-ray-probe")
    assert "gone" in text and "alive" in text


def test_status_text_and_strict_exit_codes(history, settings) -> None:  # type: ignore[no-untyped-def]
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    settings.DJANGO_RAY = {**settings.DJANGO_RAY, "RAY_ADDRESS": f"127.0.0.1:{closed_port}"}
    text = run("django_ray_status", "--ray-timeout", "1")
    assert "Triage checklist" in text
    assert "[FAIL] ray" in text and "not reachable" in text
    assert "tests.tasks.fail_permanent" in text
    with pytest.raises(SystemExit) as exit_info:
        run("django_ray_status", "--strict", "--ray-timeout", "1")
    assert exit_info.value.code == 1
    with pytest.raises(CommandError, match="--ray-timeout"):
        run("django_ray_status", "--ray-timeout", "0")


# --- django_ray_requeue ---------------------------------------------------------------------


def test_requeue_is_a_dry_run_by_default(history) -> None:  # type: ignore[no-untyped-def]
    out = run("django_ray_requeue")
    assert "3 task(s) match FAILED" in out and "Dry run: nothing changed" in out
    assert out.count("would requeue") == 3
    assert RayTaskExecution.objects.filter(state=TaskState.FAILED).count() == 3


def test_requeue_narrow_filters_limit_and_batches(history, start_worker) -> None:  # type: ignore[no-untyped-def]
    summary = json.loads(
        run(
            "django_ray_requeue",
            "--callable",
            "tests.tasks.fail_permanent",
            "--limit",
            "1",
            "--execute",
            "--json",
        )
    )
    assert summary["matching"] == 2 and summary["selected"] == 1 and summary["requeued"] == 1
    requeued = RayTaskExecution.objects.get(task_id=summary["task_ids"][0])
    assert requeued.state == TaskState.QUEUED
    attempts_before = TaskAttempt.objects.filter(execution=requeued).count()

    out = run("django_ray_requeue", "--queue", "other", "--execute", "--batch-size", "1")
    assert "requeued 1/1" in out
    assert RayTaskExecution.objects.filter(state=TaskState.FAILED).count() == 1

    # The requeued rows run again; their attempt history grows, it is not reset.
    _work(start_worker)
    requeued.refresh_from_db()
    assert requeued.state == TaskState.FAILED
    assert TaskAttempt.objects.filter(execution=requeued).count() == attempts_before + 1


def test_requeue_older_than_and_bad_input(history) -> None:  # type: ignore[no-untyped-def]
    old = RayTaskExecution.objects.filter(state=TaskState.FAILED).order_by("id").first()
    assert old is not None
    RayTaskExecution.objects.filter(pk=old.pk).update(
        finished_at=timezone.now() - timedelta(hours=3)
    )
    summary = json.loads(run("django_ray_requeue", "--older-than", "2h", "--json"))
    assert summary["mode"] == "dry-run" and summary["task_ids"] == [old.task_id]
    with pytest.raises(CommandError, match="not a duration"):
        run("django_ray_requeue", "--older-than", "yesterday")
    with pytest.raises(CommandError, match="--limit"):
        run("django_ray_requeue", "--limit", "0")
    with pytest.raises(CommandError):
        run("django_ray_requeue", "--state", "SUCCEEDED")


# --- django_ray_prune -----------------------------------------------------------------------


def test_prune_deletes_only_old_terminal_rows(history) -> None:  # type: ignore[no-untyped-def]
    long_ago = timezone.now() - timedelta(days=40)
    old_ids = list(
        RayTaskExecution.objects.filter(
            state__in=[TaskState.SUCCEEDED, TaskState.FAILED]
        ).values_list("id", flat=True)[:3]
    )
    RayTaskExecution.objects.filter(id__in=old_ids).update(finished_at=long_ago)
    # Non-terminal rows are never pruned, however old.
    RayTaskExecution.objects.filter(state=TaskState.QUEUED).update(created_at=long_ago)
    old_attempts = TaskAttempt.objects.filter(execution_id__in=old_ids).count()

    dry = json.loads(run("django_ray_prune", "--older-than", "30d", "--dry-run", "--json"))
    assert dry["executions"] == 3 and dry["attempts"] == old_attempts
    # Without --execute nothing is deleted: a dry run is the default, as for django_ray_requeue.
    default = run("django_ray_prune", "--older-than", "30d", "--leases")
    assert "Would delete 3 execution(s)" in default and "--execute" in default
    assert RayTaskExecution.objects.filter(id__in=old_ids).count() == 3

    out = run(
        "django_ray_prune", "--older-than", "30d", "--batch-size", "2", "--leases", "--execute"
    )
    assert "Deleted 3 execution(s)" in out
    assert not RayTaskExecution.objects.filter(id__in=old_ids).exists()
    assert not TaskAttempt.objects.filter(execution_id__in=old_ids).exists()
    assert RayTaskExecution.objects.filter(state=TaskState.QUEUED).count() == 2
    assert RayTaskExecution.objects.count() == 4
    with pytest.raises(CommandError, match="not a duration"):
        run("django_ray_prune", "--older-than", "forever")


def test_prune_deletes_the_stored_payloads_no_remaining_row_uses(settings, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from django_ray import results

    settings.DJANGO_RAY = {
        **settings.DJANGO_RAY,
        "RESULT_STORAGE_BACKEND": "filesystem",
        "RESULT_STORAGE_FILESYSTEM_PATH": str(tmp_path),
    }
    results._cache.clear()
    own = results.store_result(b'{"big": "own"}')
    shared = results.store_result(b'{"big": "shared"}')
    long_ago = timezone.now() - timedelta(days=40)
    for reference, finished in ((own, long_ago), (shared, long_ago), (shared, timezone.now())):
        result = tasks.noop.enqueue()
        RayTaskExecution.objects.filter(task_id=result.id).update(
            state=TaskState.SUCCEEDED, finished_at=finished, result_reference=reference
        )
    files = {
        ref: results.get_storage().path_for(results.parse_reference(ref).digest)
        for ref in (own, shared)
    }  # type: ignore[attr-defined]
    assert all(path.exists() for path in files.values())

    dry = json.loads(run("django_ray_prune", "--older-than", "30d", "--json"))
    assert dry["mode"] == "dry-run" and dry["executions"] == 2 and dry["payloads"] == 2
    assert all(path.exists() for path in files.values())

    done = json.loads(run("django_ray_prune", "--older-than", "30d", "--yes", "--json"))
    assert done["executions"] == 2 and done["payloads"] == 1 and done["payload_errors"] == []
    assert not files[own].exists()
    assert files[shared].exists()  # the recent row still references it
    assert results.load_result(shared) == {"big": "shared"}
    results._cache.clear()
