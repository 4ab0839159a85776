"""docs/runbook.md is true: every query, command, snippet, metric, log field and setting it names
runs or exists, checked against real PostgreSQL and real worker processes."""

from __future__ import annotations

import io
import json
import logging
import re
import shlex
import signal
import socket
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from django.core.management import call_command
from django.db import connection
from django.utils import timezone

from django_ray.conf import SETTINGS
from django_ray.journald import JournalHandler, decode_message
from django_ray.lifecycle import claim, leases, operator
from django_ray.models import RayTaskExecution, TaskAttempt, TaskState, TaskWorkerLease
from tests import tasks
from tests.unit.test_monitoring import exported_names

pytestmark = pytest.mark.django_db(transaction=True)

ROOT = Path(__file__).resolve().parents[2]
RUNBOOK = (ROOT / "docs" / "runbook.md").read_text()
TABLES = {"django_ray_raytaskexecution", "django_ray_taskworkerlease", "django_ray_taskattempt"}
COMMANDS = {"django_ray_status", "django_ray_requeue", "django_ray_prune", "django_ray_worker"}


def blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", RUNBOOK, flags=re.S)


def console_lines(prefix: str) -> list[str]:
    lines = []
    for block in blocks("console"):
        for line in block.splitlines():
            if line.startswith("$ ") and prefix in line:
                lines.append(line[2:])
    return lines


@pytest.fixture
def incident(start_worker) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    """A database in which every runbook query has something to find.

    Real worker runs produce FAILED rows with attempt history and an oversized result; then a
    dead worker leaves a stale lease, an orphaned RUNNING row and a CANCELLING row.
    """
    tasks.fail_permanent.enqueue()
    tasks.fail_always.enqueue("storm")
    tasks.echo.enqueue("y" * 3000)
    tasks.add.enqueue(1, 2)
    worker = start_worker(
        "--sync",
        "--idle-exit",
        "1",
        env={"DJANGO_RAY_TEST_SETTINGS": json.dumps({"MAX_RESULT_SIZE_BYTES": 1000})},
    )
    assert worker.wait(120) == 0, worker.log()
    # Demo-callable failures an hour old, for the documented requeue filters.
    for _ in range(2):
        RayTaskExecution.objects.create(
            task_id=f"demo-{timezone.now().timestamp()}-{_}",
            callable_path="demo.tasks.flaky",
            queue_name="default",
            state=TaskState.FAILED,
            attempt_number=1,
            finished_at=timezone.now() - timedelta(hours=1),
            error_message="attempt 1 fails",
        )
    # Backlog: one due, one deferred.
    tasks.noop.enqueue()
    tasks.noop.using(run_after=timezone.now() + timedelta(hours=1)).enqueue()
    # A dead worker with two claimed rows: one stays RUNNING, one is being cancelled.
    leases.register_lease("dead-worker", "host-x", 4242, ["slow"], "ray_core", 2, 1.0)
    tasks.noop.using(queue_name="slow").enqueue()
    tasks.noop.using(queue_name="slow").enqueue()
    running, cancelling = claim.claim("dead-worker", ["slow"], 2)
    assert operator.request_cancel(cancelling.task_id) == TaskState.CANCELLING
    RayTaskExecution.objects.filter(task_id=running.task_id).update(
        started_at=timezone.now() - timedelta(minutes=20),
        last_heartbeat_at=timezone.now() - timedelta(minutes=15),
    )
    TaskWorkerLease.objects.filter(worker_id="dead-worker").update(
        expires_at=timezone.now() - timedelta(minutes=14),
        last_heartbeat_at=timezone.now() - timedelta(minutes=15),
    )
    return {"running": running.task_id, "cancelling": cancelling.task_id}


# Every SQL block of the runbook, by its first comment line, and what it must find here.
EXPECTED_ROWS = {
    "-- Task counts by state": 6,  # QUEUED RUNNING SUCCEEDED FAILED CANCELLING (+ none LOST)
    "-- Long-running tasks (example threshold: 10 minutes)": 1,
    "-- Worker leases ordered by oldest heartbeat": 2,
    "-- Queue backlog: due vs deferred (retry backoff, run_after) per queue": 1,
    "-- Orphan candidates: RUNNING/CANCELLING rows whose owner holds no live lease": 2,
    "-- Dominant failing callables in the last hour": 2,
    "-- Retrying vs terminal: rows waiting for a retry, and final failures": 2,
    "-- Every attempt of the most recently failed task (replace the subquery with": None,
    "-- CANCELLING rows and whether their owner is alive": 1,
    "-- Oversized results stored by reference": 1,
}


def test_every_sql_block_runs_unchanged(incident: dict[str, Any]) -> None:
    sql_blocks = blocks("sql")
    titles = [block.splitlines()[0] for block in sql_blocks]
    assert titles == list(EXPECTED_ROWS), "update EXPECTED_ROWS when the runbook's SQL changes"
    for title, block in zip(titles, sql_blocks, strict=True):
        with connection.cursor() as cursor:
            cursor.execute(block)
            rows = cursor.fetchall()
        expected = EXPECTED_ROWS[title]
        if title.startswith("-- Task counts by state"):
            assert {row[0] for row in rows} == {
                "QUEUED",
                "RUNNING",
                "SUCCEEDED",
                "FAILED",
                "CANCELLING",
            }
        elif title.startswith("-- Every attempt"):
            # The most recently failed task's full history, every attempt with its error.
            assert rows and [r[0] for r in rows] == list(range(1, len(rows) + 1))
            assert all(r[1] == "FAILED" and r[5] for r in rows)
        else:
            assert len(rows) == expected, (title, rows)
    with connection.cursor() as cursor:
        cursor.execute(
            sql_blocks[
                titles.index(
                    "-- Orphan candidates: RUNNING/CANCELLING rows whose owner holds no live lease"
                )
            ]
        )
        assert {row[1] for row in cursor.fetchall()} == set(incident.values())


def _call(line: str) -> str:
    argv = shlex.split(line)
    assert argv[:2] == ["python", "manage.py"], line
    out = io.StringIO()
    call_command(*argv[2:], stdout=out, stderr=io.StringIO())
    return out.getvalue()


def test_every_command_runs_as_written(incident: dict[str, Any]) -> None:
    lines = console_lines("manage.py")
    assert {shlex.split(line)[2] for line in lines} == COMMANDS - {"django_ray_worker"}
    outputs = {}
    for line in lines:
        outputs[line] = _call(line)
    status_text, status_json = (outputs[line] for line in lines if "django_ray_status" in line)
    assert "Triage checklist" in status_text
    assert json.loads(status_json)["states"]["CANCELLING"] == 1
    dry, execute, lost = (outputs[line] for line in lines if "django_ray_requeue" in line)
    assert "2 task(s) match FAILED queue=default callable=demo.tasks.flaky" in dry
    assert "Requeued 2 task(s)" in execute
    assert json.loads(lost)["mode"] == "execute"
    assert set(
        RayTaskExecution.objects.filter(callable_path="demo.tasks.flaky").values_list(
            "state", flat=True
        )
    ) == {TaskState.QUEUED}
    assert any("Would delete" in outputs[line] for line in lines if "django_ray_prune" in line)
    assert any(
        "Deleted" in outputs[line] for line in lines if "--execute" in line and "prune" in line
    )


def test_python_snippet_requeues_through_transitions(incident: dict[str, Any]) -> None:
    (snippet,) = blocks("python")
    failed_default = set(
        RayTaskExecution.objects.filter(state=TaskState.FAILED, queue_name="default").values_list(
            "task_id", flat=True
        )
    )
    attempts = TaskAttempt.objects.count()
    out = io.StringIO()
    exec_globals: dict[str, Any] = {"print": lambda *a: out.write(" ".join(map(str, a)))}
    exec(compile(snippet, "docs/runbook.md", "exec"), exec_globals)
    assert out.getvalue() == f"requeued {len(failed_default)} task(s)"
    assert set(
        RayTaskExecution.objects.filter(task_id__in=failed_default).values_list("state", flat=True)
    ) == {TaskState.QUEUED}
    assert TaskAttempt.objects.count() == attempts  # history kept


def test_every_metric_named_is_exported() -> None:
    named = set(re.findall(r"\b(django_ray_[a-z0-9_]+)", RUNBOOK)) - TABLES - COMMANDS
    assert {"django_ray_tasks_total", "django_ray_queue_depth"} <= named
    exported = exported_names()
    families = {re.sub(r"_(bucket|count|sum|created)$", "", name) for name in exported}
    unknown = {name for name in named if name not in exported and name not in families}
    assert not unknown, f"docs/runbook.md names metrics nobody exports: {sorted(unknown)}"


def test_alerts_named_exist_and_settings_named_exist() -> None:
    rules = yaml.safe_load((ROOT / "packaging/monitoring/django-ray-alerts.yml").read_text())
    alerts = {rule["alert"] for rule in rules["groups"][0]["rules"]}
    named_alerts = set(re.findall(r"`(DjangoRay[A-Za-z]+)`", RUNBOOK))
    assert named_alerts == alerts, "every alert has a playbook; every playbook alert exists"
    table = RUNBOOK.split("## Settings that matter here", 1)[1].split("##", 1)[0]
    settings_named = set(re.findall(r"^\| `([A-Z_]+)`", table, flags=re.M))
    assert len(settings_named) >= 10
    assert settings_named <= set(SETTINGS), settings_named - set(SETTINGS)
    for token in set(re.findall(r"`([A-Z][A-Z_]{6,})`", RUNBOOK)):
        if token.endswith(("_SECONDS", "_BYTES", "_ATTEMPTS", "_DENYLIST", "_TOKEN", "_PORT")):
            assert token in SETTINGS or token == "DJANGO_RAY_WORKER_METRICS_PORT", token


def test_log_messages_named_exist_in_the_worker() -> None:
    section = RUNBOOK.split("Messages to know:", 1)[1].split("##", 1)[0]
    messages = re.findall(r"`([^`]+)`", section)
    assert len(messages) >= 10
    source = "".join(p.read_text() for p in (ROOT / "django_ray").rglob("*.py"))
    for message in messages:
        pattern = re.escape(message).replace("N", "%s")
        assert re.search(pattern, source), f"django_ray never logs {message!r}"


@pytest.fixture
def journal() -> Iterator[tuple[socket.socket, JournalHandler]]:
    import tempfile

    directory = tempfile.mkdtemp(prefix="django-ray-journal-")
    path = str(Path(directory) / "socket")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    handler = JournalHandler(socket_path=path, identifier="django-ray-worker")
    logger = logging.getLogger("django_ray")
    logger.addHandler(handler)
    yield sock, handler
    logger.removeHandler(handler)
    handler.close()
    sock.close()


def test_log_fields_come_from_a_real_worker(journal: tuple[socket.socket, JournalHandler]) -> None:
    """Run a worker in this process with journald logging; filter its records like journalctl."""
    from django_ray.runners.sync import SyncRunner
    from django_ray.worker.loop import Worker

    sock, _handler = journal
    failed = tasks.fail_permanent.enqueue()
    ok = tasks.add.enqueue(2, 2)
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        worker = Worker(SyncRunner(1), ["default"], worker_id="runbook-worker", idle_exit=0.5)
        assert worker.run() == 0
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)
    sock.setblocking(False)
    records = []
    while True:
        try:
            records.append(decode_message(sock.recv(1 << 20)))
        except BlockingIOError:
            break

    def matching(**fields: str) -> list[dict[str, list[bytes]]]:
        return [r for r in records if all(r.get(k) == [v.encode()] for k, v in fields.items())]

    # The runbook's journalctl filters (fields in the Logs table) select the right lines.
    table = RUNBOOK.split("## Logs", 1)[1].split("```console", 1)[0]
    documented = set(re.findall(r"^\| `([A-Z_]+)`", table, flags=re.M))
    assert documented == {"TASK_ID", "QUEUE", "CALLABLE", "WORKER_ID", "STATE"}
    used_in_examples = set()
    for line in console_lines("journalctl"):
        used_in_examples |= set(re.findall(r"\b([A-Z_]+)=", line))
    assert used_in_examples <= documented

    final = matching(TASK_ID=failed.id, STATE="FAILED")
    assert len(final) == 1
    record = final[0]
    assert record["CALLABLE"] == [b"tests.tasks.fail_permanent"]
    assert record["QUEUE"] == [b"default"]
    assert record["WORKER_ID"] == [b"runbook-worker"]
    assert record["MESSAGE"][0].startswith(b"failed permanently")
    assert record["SYSLOG_IDENTIFIER"] == [b"django-ray-worker"]
    assert record["PRIORITY"] == [b"3"]
    assert matching(TASK_ID=ok.id, STATE="SUCCEEDED")[0]["MESSAGE"][0].startswith(b"succeeded")
    assert matching(TASK_ID=ok.id, STATE="RUNNING")[0]["MESSAGE"][0].startswith(b"claimed")
    assert len(matching(WORKER_ID="runbook-worker", CALLABLE="tests.tasks.add")) >= 2
