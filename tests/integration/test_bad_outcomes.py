"""Bad outcomes and operator slips, through real workers on the real PostgreSQL (docs/bad-inputs.md).

Each case asserts: the bad row ends FAILED with a reason naming the problem (or the operator gets
a clear error); the worker stays up and keeps claiming (a good task enqueued afterwards
succeeds); every other outcome recorded beside it is recorded; no task runs twice (each body
writes a ``TaskProbe`` mark, and the marks are counted).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from django.core.management import CommandError, call_command
from django.db import connection, connections

from django_ray import cancel_task
from django_ray.lifecycle import IllegalTransition, claim, leases, operator, record
from django_ray.lifecycle.record import RESULT_STORE_FAILED, UNRECORDABLE_OUTCOME, UNSTORABLE_RESULT
from django_ray.models import RayTaskExecution, TaskAttempt, TaskState
from django_ray.outcomes import Outcome, OutcomeKind
from tests import bad_outcome_tasks as bad
from tests import tasks
from tests.conftest import WorkerProcess, wait_until
from tests.models import TaskProbe

pytestmark = pytest.mark.django_db(transaction=True)
S = TaskState
FINISHED = (S.SUCCEEDED, S.FAILED, S.CANCELLED, S.LOST)


def _row(task_id: str) -> RayTaskExecution:
    return RayTaskExecution.objects.get(task_id=task_id)


def _marks(name: str) -> int:
    return TaskProbe.objects.filter(name=name).count()


def _settled(*task_ids: str) -> Callable[[], bool]:
    return lambda: all(_row(t).state in FINISHED for t in task_ids)


def _still_claims(worker: WorkerProcess, marker: str) -> None:
    """The worker is alive and claims: a good task enqueued now succeeds, once."""
    after = tasks.record.enqueue(marker)
    wait_until(lambda: _row(after.id).state == S.SUCCEEDED, 60, explain=worker.log)
    assert worker.proc.poll() is None, worker.log()
    assert _marks(marker) == 1


def _stop_cleanly(worker: WorkerProcess) -> None:
    assert worker.stop() == 0, worker.log()
    assert "Traceback" not in worker.log(), worker.log()


@contextmanager
def refusing_trigger(needle: str) -> Iterator[None]:
    """A real database error in the middle of recording: a trigger refuses one row's update."""
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            CREATE FUNCTION test_refuse_poison() RETURNS trigger AS $$
            BEGIN
                IF NEW.result_data::text LIKE '%{needle}%' THEN
                    RAISE EXCEPTION 'test trigger refuses rows holding {needle}';
                END IF;
                RETURN NEW;
            END $$ LANGUAGE plpgsql;
            CREATE TRIGGER test_refuse_poison BEFORE UPDATE ON django_ray_raytaskexecution
            FOR EACH ROW EXECUTE FUNCTION test_refuse_poison();
            """
        )
    try:
        yield
    finally:
        with connection.cursor() as cursor:
            cursor.execute(
                "DROP TRIGGER IF EXISTS test_refuse_poison ON django_ray_raytaskexecution;"
                "DROP FUNCTION IF EXISTS test_refuse_poison();"
            )


# -- outcome side, one bad outcome per worker run (--sync) ---------------------------------------

# (case id, enqueue(marker) -> result, expected class path, text the reason must contain)
CASES: list[tuple[str, Callable[[str], Any], str, str]] = [
    ("message-nul", lambda m: bad.raise_text.enqueue(m, "nul"), "PermanentError", "before\\x00after"),
    ("message-surrogate", lambda m: bad.raise_text.enqueue(m, "surrogate"), "PermanentError", "lone \\ud800 surrogate"),
    ("message-megabytes", lambda m: bad.raise_text.enqueue(m, "megabytes"), "PermanentError", "characters cut: django-ray keeps 262144"),
    ("class-path-too-long", lambda m: bad.raise_long_class.enqueue(m), "tests.bad_outcome_tasks.Loooo", "is longer than 255 characters"),
    # The executing process refuses these before they reach the record path (serialization's
    # check); the record path's own guard (UnstorableResult) is tested without a worker below.
    ("result-surrogate", lambda m: bad.return_bad.enqueue(m, "surrogate"), "NotJSONSerializable", "lone surrogate"),
    ("result-surrogate-key", lambda m: bad.return_bad.enqueue(m, "surrogate-key"), "NotJSONSerializable", "lone surrogate"),
    ("result-nul", lambda m: bad.return_bad.enqueue(m, "nul"), "NotJSONSerializable", "NUL character"),
    ("result-too-deep", lambda m: bad.return_bad.enqueue(m, "deep"), "NotJSONSerializable", "deeper than 100 levels"),
    ("result-not-json", lambda m: bad.return_bad.enqueue(m, "object"), "NotJSONSerializable", "not JSON serializable"),
    ("result-set", lambda m: bad.return_bad.enqueue(m, "set"), "NotJSONSerializable", "builtins.set"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("case", "enqueue", "class_path", "reason"), CASES, ids=[c[0] for c in CASES]
)
def test_a_bad_outcome_fails_its_row_alone_and_the_worker_keeps_claiming(  # type: ignore[no-untyped-def]
    start_worker, case: str, enqueue: Callable[[str], Any], class_path: str, reason: str
) -> None:
    before = tasks.record.enqueue(f"{case}-before")
    poison = enqueue(case)
    worker = start_worker("--sync")
    wait_until(_settled(before.id, poison.id), 90, explain=worker.log)
    row = _row(poison.id)
    assert row.state == S.FAILED, (row.state, row.error_message)
    assert class_path in (row.error_class_path or ""), row.error_class_path
    assert len(row.error_class_path or "") <= 255
    text = f"{row.error_message}\n{row.error_traceback}"
    assert reason in text, text[:500]
    assert len(row.error_message or "") < 5_000  # capped, never megabytes
    assert len(row.error_traceback or "") < 300_000
    assert _row(before.id).state == S.SUCCEEDED
    assert _marks(case) == 1 and _marks(f"{case}-before") == 1  # nothing ran twice
    assert TaskAttempt.objects.filter(execution__task_id=poison.id).count() == 1
    _still_claims(worker, f"{case}-after")
    _stop_cleanly(worker)


def test_a_result_store_that_refuses_the_write_fails_that_row(  # type: ignore[no-untyped-def]
    start_worker, tmp_path: Path
) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("a file where the result directory should be")
    settings = {
        "MAX_RESULT_SIZE_BYTES": 1024,
        "RESULT_STORAGE_BACKEND": "filesystem",
        "RESULT_STORAGE_FILESYSTEM_PATH": str(blocker / "results"),
    }
    small = bad.return_value.enqueue("store-small", "fits inline")
    big = bad.return_value.enqueue("store-big", "x" * 5000)
    worker = start_worker("--sync", env={"DJANGO_RAY_TEST_SETTINGS": json.dumps(settings)})
    wait_until(_settled(small.id, big.id), 90, explain=worker.log)
    row = _row(big.id)
    assert row.state == S.FAILED and row.error_class_path == RESULT_STORE_FAILED
    assert "result store refused" in row.error_message and "RESULT_STORAGE_FILESYSTEM_PATH" in (
        row.error_message
    )
    assert row.result_data is None and row.result_reference is None
    assert _row(small.id).state == S.SUCCEEDED and _row(small.id).result_data == "fits inline"
    assert _marks("store-big") == _marks("store-small") == 1
    _still_claims(worker, "store-after")
    _stop_cleanly(worker)


def test_a_database_error_while_recording_fails_that_row_only(start_worker) -> None:  # type: ignore[no-untyped-def]
    with refusing_trigger("poison-row"):
        poison = bad.return_value.enqueue("db-poison", "poison-row")
        good = bad.return_value.enqueue("db-good", "fine")
        worker = start_worker("--sync")
        wait_until(_settled(poison.id, good.id), 90, explain=worker.log)
        row = _row(poison.id)
        assert row.state == S.FAILED and row.error_class_path == UNRECORDABLE_OUTCOME
        assert "database refused the outcome" in row.error_message
        assert "test trigger refuses rows holding poison-row" in row.error_message
        assert _row(good.id).state == S.SUCCEEDED
        assert _marks("db-poison") == _marks("db-good") == 1
        _still_claims(worker, "db-after")
        _stop_cleanly(worker)


def test_a_timeout_honours_the_retry_denylist(start_worker) -> None:  # type: ignore[no-untyped-def]
    settings = {
        "RETRY_EXCEPTION_DENYLIST": ["tests.tasks.PermanentError", "django_ray.TaskTimedOut"]
    }
    slow = bad.sleep_then.enqueue("timeout-denied", 30)
    RayTaskExecution.objects.filter(task_id=slow.id).update(timeout_seconds=1, max_attempts=3)
    worker = start_worker("--sync", env={"DJANGO_RAY_TEST_SETTINGS": json.dumps(settings)})
    wait_until(_settled(slow.id), 90, explain=worker.log)
    row = _row(slow.id)
    assert row.state == S.FAILED and row.error_class_path == "django_ray.TaskTimedOut"
    assert row.attempt_number == 1, "a deny-listed timeout must not be retried"
    assert _marks("timeout-denied") == 1
    _still_claims(worker, "timeout-after")
    _stop_cleanly(worker)


# -- outcome side, one batch holding every kind of poison ----------------------------------------


def test_one_batch_with_every_poison_records_every_other_outcome(tmp_path: Path) -> None:
    """The record path itself: one call, one batch; bad rows fail alone, good rows are kept."""
    names = ["good-1", "nul-msg", "surrogate-result", "deep-result", "store-fails", "trigger",
             "good-2", "long-class", "mb-msg", "good-3"]  # fmt: skip
    for name in names:
        tasks.record.enqueue(name)
    leases.register_lease("batcher", "host", 1, None, "sync", 9, 60.0)
    claimed = {t.args[0]: t for t in claim.claim("batcher", None, len(names))}
    deep = "[" * 400 + "]" * 400

    def outcome(name: str) -> Outcome:
        task = claimed[name]
        ok = Outcome(
            task.id, task.attempt_number, OutcomeKind.SUCCEEDED, result_json=json.dumps(name)
        )
        return {
            "nul-msg": Outcome(task.id, task.attempt_number, OutcomeKind.FAILED, error_class_path="x.E",
                               error_message="a\x00b", error_traceback="t\x00", retryable=False),
            "surrogate-result": Outcome(task.id, task.attempt_number, OutcomeKind.SUCCEEDED,
                                        result_json='"\ud800"'),
            "deep-result": Outcome(task.id, task.attempt_number, OutcomeKind.SUCCEEDED, result_json=deep),
            "store-fails": Outcome(task.id, task.attempt_number, OutcomeKind.SUCCEEDED,
                                   result_json='"store-me"'),
            "trigger": Outcome(task.id, task.attempt_number, OutcomeKind.SUCCEEDED,
                               result_json='"poison-row"'),
            "long-class": Outcome(task.id, task.attempt_number, OutcomeKind.FAILED,
                                  error_class_path="m." + "C" * 400, error_message="long", retryable=False),
            "mb-msg": Outcome(task.id, task.attempt_number, OutcomeKind.FAILED, error_class_path="x.E",
                              error_message="m" * 3_000_000, error_traceback="t" * 3_000_000,
                              retryable=False),
        }.get(name, ok)  # fmt: skip

    def store(result_json: str) -> str | None:
        if "store-me" in result_json:
            raise OSError(30, "Read-only file system")
        return None

    with refusing_trigger("poison-row"):
        report = record.record_outcomes(
            "batcher", [(claimed[n], outcome(n)) for n in names], store_result=store
        )
    states = {name: _row(claimed[name].task_id) for name in names}
    assert {n: r.state for n, r in states.items()} == {
        "good-1": S.SUCCEEDED, "nul-msg": S.FAILED, "surrogate-result": S.FAILED,
        "deep-result": S.FAILED, "store-fails": S.FAILED, "trigger": S.FAILED,
        "good-2": S.SUCCEEDED, "long-class": S.FAILED, "mb-msg": S.FAILED, "good-3": S.SUCCEEDED,
    }  # fmt: skip
    assert report.not_owned == []
    assert [states[f"good-{i}"].result_data for i in (1, 2, 3)] == ["good-1", "good-2", "good-3"]
    assert states["nul-msg"].error_message == "a\\x00b"
    assert states["surrogate-result"].error_class_path == UNSTORABLE_RESULT
    assert "nests 400 levels deep" in states["deep-result"].error_message
    assert "Read-only file system" in states["store-fails"].error_message
    assert states["trigger"].error_class_path == UNRECORDABLE_OUTCOME
    assert len(states["long-class"].error_class_path) == 255
    assert "characters cut" in states["mb-msg"].error_message
    assert len(states["mb-msg"].error_message) < 5_000
    assert len(states["mb-msg"].error_traceback) < 300_000
    # The worker sees what was really recorded (the fallback FAILED, not the SUCCEEDED it sent).
    planned = {p.task.id: p for p in report.planned}
    assert planned[claimed["trigger"].id].state == S.FAILED
    assert TaskAttempt.objects.count() == len(names)


# -- operator side --------------------------------------------------------------------------------


def _failed_row(start_worker: Callable[..., WorkerProcess], marker: str) -> str:  # type: ignore[type-arg]
    result = bad.raise_text.enqueue(marker, "nul")
    worker = start_worker("--sync", "--idle-exit", "1")
    assert worker.wait(90) == 0, worker.log()
    assert _row(result.id).state == S.FAILED
    return result.id


def test_requeue_of_a_running_row_is_refused_with_a_clear_message(start_worker) -> None:  # type: ignore[no-untyped-def]
    running = bad.sleep_then.enqueue("requeue-running", 3)
    worker = start_worker("--sync")
    wait_until(lambda: _row(running.id).state == S.RUNNING, 60, explain=worker.log)
    with pytest.raises(IllegalTransition, match="is RUNNING: an operator may requeue only"):
        operator.retry_tasks([running.id])
    with pytest.raises(
        CommandError, match=r"invalid choice: 'RUNNING'.*'FAILED', 'LOST', 'CANCELLED'"
    ):
        call_command("django_ray_requeue", "--state", "RUNNING", "--execute")
    wait_until(lambda: _row(running.id).state == S.SUCCEEDED, 60, explain=worker.log)
    assert _marks("requeue-running") == 1  # ran once: the requeue did not start a second copy
    _still_claims(worker, "requeue-running-after")
    _stop_cleanly(worker)


@pytest.mark.parametrize("state", [S.QUEUED, S.CANCELLING, S.SUCCEEDED])
def test_requeue_of_a_row_not_failed_lost_or_cancelled_is_refused(state: str) -> None:
    result = tasks.record.enqueue(f"requeue-{state}")
    RayTaskExecution.objects.filter(task_id=result.id).update(state=state)
    with pytest.raises(IllegalTransition, match=f"is {state}: an operator may requeue only"):
        operator.retry_tasks([result.id])
    assert _row(result.id).state == state


def test_two_racing_requeues_of_a_failed_row_yield_one_queued_attempt(start_worker) -> None:  # type: ignore[no-untyped-def]
    task_id = _failed_row(start_worker, "raced")
    barrier = threading.Barrier(2)
    outcomes: list[object] = []

    def requeue() -> None:
        barrier.wait()
        try:
            outcomes.append(operator.retry_tasks([task_id]))
        except IllegalTransition as exc:
            outcomes.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=requeue) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sorted(type(o).__name__ for o in outcomes) == ["IllegalTransition", "list"], outcomes
    worker = start_worker("--sync")
    wait_until(_settled(task_id), 60, explain=worker.log)
    assert _marks("raced") == 2  # the first attempt and exactly one requeued attempt
    assert _row(task_id).attempt_number == 2
    _still_claims(worker, "raced-after")
    _stop_cleanly(worker)


def test_cancel_of_a_finished_row_is_refused_with_a_clear_message(start_worker) -> None:  # type: ignore[no-untyped-def]
    task_id = _failed_row(start_worker, "cancel-finished")
    done = tasks.record.enqueue("cancel-succeeded")
    worker = start_worker("--sync", "--idle-exit", "1")
    assert worker.wait(90) == 0, worker.log()
    for finished in (task_id, done.id):
        state = _row(finished).state
        with pytest.raises(
            IllegalTransition, match="only QUEUED or RUNNING tasks can be cancelled"
        ):
            cancel_task(finished)
        assert _row(finished).state == state
    with pytest.raises(RayTaskExecution.DoesNotExist):
        cancel_task("no-such-task")
    assert _marks("cancel-finished") == _marks("cancel-succeeded") == 1
