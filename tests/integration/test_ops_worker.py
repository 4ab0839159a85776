"""The worker process's exporter and oversized results, through real worker processes."""

from __future__ import annotations

import json
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from django_ray import results
from django_ray.errors import ResultNotKept
from django_ray.models import RayTaskExecution, TaskState
from django_ray.results import ResultReferenceError, load_result
from tests import tasks
from tests.conftest import wait_until
from tests.support.postgres import free_port
from tests.support.promtool import find_promtool

pytestmark = pytest.mark.django_db(transaction=True)


def _scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    promtool = find_promtool()
    if promtool:
        lint = subprocess.run(
            [promtool, "check", "metrics"], input=text, capture_output=True, text=True
        )
        assert lint.returncode == 0 and not lint.stdout.strip(), lint.stdout + lint.stderr
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_worker_exports_its_own_metrics(start_worker) -> None:  # type: ignore[no-untyped-def]
    port = free_port()
    for i in range(4):
        tasks.add.enqueue(i, i)
    tasks.fail_permanent.enqueue()
    tasks.fail_always.using(queue_name="other").enqueue("again")  # retried, then FAILED
    worker = start_worker(
        "--sync",
        "--all-queues",
        "--worker-id",
        "metrics-worker",
        env={"DJANGO_RAY_TEST_SETTINGS": json.dumps({"WORKER_METRICS_PORT": port})},
    )
    terminal = (TaskState.SUCCEEDED, TaskState.FAILED)
    wait_until(
        lambda: RayTaskExecution.objects.exclude(state__in=terminal).count() == 0,
        60,
        explain=worker.log,
    )
    worker.wait_for_log("worker metrics on port")
    s = _scrape(port)
    info = [k for k in s if k[0] == "django_ray_worker_info"]
    assert dict(info[0][1])["worker_id"] == "metrics-worker"
    assert s[("django_ray_worker_tasks_claimed_total", (("queue", "default"),))] == 5
    assert s[("django_ray_worker_tasks_claimed_total", (("queue", "other"),))] == 3  # 3 attempts
    completed = {k[1]: v for k, v in s.items() if k[0] == "django_ray_worker_tasks_completed_total"}
    assert completed[(("outcome", "succeeded"), ("queue", "default"))] == 4
    assert completed[(("outcome", "failed"), ("queue", "default"))] == 1
    assert completed[(("outcome", "retried"), ("queue", "other"))] == 2
    assert completed[(("outcome", "failed"), ("queue", "other"))] == 1
    assert s[("django_ray_worker_task_duration_seconds_count", (("queue", "default"),))] == 5
    assert s[("django_ray_worker_task_queue_wait_seconds_count", (("queue", "other"),))] == 3
    assert s[("django_ray_worker_tasks_in_flight", ())] == 0
    assert s[("django_ray_worker_ray_connected", ())] == 1
    assert s[("django_ray_worker_loop_iterations_total", ())] > 0
    assert s[("django_ray_worker_last_loop_success_timestamp_seconds", ())] > 0
    assert worker.stop() == 0, worker.log()


BIG_VALUE = "x" * 5000


@pytest.fixture
def s3_endpoint() -> Iterator[str]:
    pytest.importorskip("boto3")
    from tests.support.objectstores import running_s3

    with running_s3() as server:
        import boto3

        boto3.client(
            "s3",
            endpoint_url=server.endpoint_url,
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        ).create_bucket(Bucket="results")
        yield server.endpoint_url


@pytest.fixture
def gcs_endpoint() -> Iterator[str]:
    pytest.importorskip("google.cloud.storage")
    from tests.support.objectstores import running_gcs

    with running_gcs() as server:
        from google.auth.credentials import AnonymousCredentials
        from google.cloud import storage

        storage.Client(
            project="test",
            credentials=AnonymousCredentials(),
            client_options={"api_endpoint": server.endpoint_url},
        ).create_bucket("results")
        yield server.endpoint_url


def _storage_settings(kind: str, tmp_path: Path, endpoint: str | None) -> dict[str, Any]:
    if kind == "filesystem":
        return {
            "RESULT_STORAGE_BACKEND": "filesystem",
            "RESULT_STORAGE_FILESYSTEM_PATH": str(tmp_path / "results"),
        }
    if kind == "s3":
        return {
            "RESULT_STORAGE_BACKEND": "s3",
            "RESULT_STORAGE_S3": {
                "BUCKET": "results",
                "ENDPOINT_URL": endpoint,
                "REGION": "us-east-1",
                "ACCESS_KEY_ID": "testing",
                "SECRET_ACCESS_KEY": "testing",
            },
        }
    if kind == "gcs":
        return {
            "RESULT_STORAGE_BACKEND": "gcs",
            "RESULT_STORAGE_GCS": {
                "BUCKET": "results",
                "ENDPOINT_URL": endpoint,
                "PROJECT": "test",
                "ANONYMOUS": True,
            },
        }
    return {"RESULT_STORAGE_BACKEND": "digest"}


@pytest.mark.parametrize("kind", ["digest", "filesystem", "s3", "gcs"])
def test_oversized_results_are_stored_by_reference_and_rehydrated(
    kind: str, start_worker, settings, tmp_path: Path, request: pytest.FixtureRequest
) -> None:  # type: ignore[no-untyped-def]
    endpoint = request.getfixturevalue(f"{kind}_endpoint") if kind in ("s3", "gcs") else None
    storage = {"MAX_RESULT_SIZE_BYTES": 1000, **_storage_settings(kind, tmp_path, endpoint)}
    small = tasks.add.enqueue(2, 3)
    big = tasks.echo.enqueue(BIG_VALUE)
    worker = start_worker(
        "--sync", "--idle-exit", "1", env={"DJANGO_RAY_TEST_SETTINGS": json.dumps(storage)}
    )
    assert worker.wait(120) == 0, worker.log()
    settings.DJANGO_RAY = {**settings.DJANGO_RAY, **storage}
    results._cache.clear()

    row = RayTaskExecution.objects.get(task_id=big.id)
    assert row.state == TaskState.SUCCEEDED
    assert row.result_data is None
    scheme = {
        "digest": "oversize://",
        "filesystem": "resultfs://",
        "s3": "s3://results/",
        "gcs": "gs://results/",
    }[kind]
    assert row.result_reference.startswith(scheme)
    small_row = RayTaskExecution.objects.get(task_id=small.id)
    assert small_row.result_data == 5 and small_row.result_reference is None

    backend = tasks.echo.get_backend()
    if kind == "digest":
        # Metadata only: the result stays readable (status, attempts); the value is gone, and
        # reading it (or loading the reference) says why and what to configure.
        result = backend.get_result(big.id)
        assert result.status == "SUCCESSFUL"
        with pytest.raises(ResultNotKept, match="MAX_RESULT_SIZE_BYTES"):
            _ = result.return_value
        with pytest.raises(ResultReferenceError, match="digest-only"):
            load_result(row.result_reference)
        return
    assert backend.get_result(big.id).return_value == {"args": [BIG_VALUE], "kwargs": {}}
    if kind == "filesystem":
        # Tamper with the stored payload: the reader refuses it.
        path = next((tmp_path / "results").rglob("*.json"))
        path.write_bytes(path.read_bytes().replace(b"xxx", b"yyy", 1))
        with pytest.raises(ResultReferenceError, match="was modified"):
            backend.get_result(big.id)
