"""Oversized-result storage through the settings-level API, against real local servers.

Filesystem storage uses a temporary directory; S3 runs against moto's server mode and GCS against
a storage emulator, both real HTTP servers started here on free loopback ports and reached through
the real boto3 / google-cloud-storage clients.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from django_ray import results
from django_ray.results import (
    ResultReferenceError,
    ResultStorageError,
    load_result,
    parse_reference,
    store_if_oversized,
    store_result,
)

BIG = {"rows": [{"n": i, "text": "x" * 50} for i in range(200)]}
BIG_JSON = json.dumps(BIG)


@pytest.fixture(autouse=True)
def _fresh_storage_cache() -> Iterator[None]:
    results._cache.clear()
    yield
    results._cache.clear()


def _configure(settings: Any, **values: Any) -> None:
    settings.DJANGO_RAY = {"MAX_RESULT_SIZE_BYTES": 1024, **values}


# --- thresholds and the digest backend ------------------------------------------------------


def test_small_results_stay_inline(settings: Any) -> None:
    _configure(settings)
    assert store_if_oversized(json.dumps({"ok": True})) is None
    assert store_if_oversized("x" * 1024) is None  # exactly at the limit stays inline


def test_digest_backend_references_but_cannot_load(settings: Any) -> None:
    _configure(settings, RESULT_STORAGE_BACKEND="digest")
    reference = store_if_oversized(BIG_JSON)
    assert reference is not None and reference.startswith("oversize://sha256/")
    assert parse_reference(reference).size == len(BIG_JSON.encode())
    with pytest.raises(ResultReferenceError, match="digest-only"):
        load_result(reference)


def test_store_result_rejects_text(settings: Any) -> None:
    _configure(settings)
    with pytest.raises(TypeError, match="takes bytes"):
        store_result("text")  # type: ignore[arg-type]


# --- filesystem -----------------------------------------------------------------------------


def test_filesystem_round_trip_is_content_addressed_and_atomic(
    settings: Any, tmp_path: Path
) -> None:
    _configure(
        settings, RESULT_STORAGE_BACKEND="filesystem", RESULT_STORAGE_FILESYSTEM_PATH=str(tmp_path)
    )
    reference = store_if_oversized(BIG_JSON)
    assert reference is not None and reference.startswith("resultfs://sha256/")
    assert load_result(reference) == BIG
    # Same payload, same reference, one file, no temporary files left behind.
    assert store_if_oversized(BIG_JSON) == reference
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert len(files) == 1
    digest = parse_reference(reference).digest
    assert files[0] == tmp_path / "sha256" / digest[:2] / f"{digest}.json"


def test_filesystem_payloads_are_private_and_deletable(settings: Any, tmp_path: Path) -> None:
    _configure(
        settings, RESULT_STORAGE_BACKEND="filesystem", RESULT_STORAGE_FILESYSTEM_PATH=str(tmp_path)
    )
    old_umask = os.umask(0o022)  # the usual umask: it must not decide what others may read
    try:
        reference = store_result(BIG_JSON.encode())
    finally:
        os.umask(old_umask)
    path = next(tmp_path.rglob("*.json"))
    assert path.stat().st_mode & 0o777 == 0o640
    assert path.parent.stat().st_mode & 0o007 == 0
    assert results.delete_result(reference) is True
    assert not path.exists()
    assert results.delete_result(reference) is False  # idempotent


def test_digest_references_have_nothing_to_delete(settings: Any) -> None:
    _configure(settings, RESULT_STORAGE_BACKEND="digest")
    assert results.delete_result(store_result(BIG_JSON.encode())) is False


def test_filesystem_tampered_file_is_refused(settings: Any, tmp_path: Path) -> None:
    _configure(
        settings, RESULT_STORAGE_BACKEND="filesystem", RESULT_STORAGE_FILESYSTEM_PATH=str(tmp_path)
    )
    reference = store_result(BIG_JSON.encode())
    path = next(p for p in tmp_path.rglob("*.json"))
    original = path.read_bytes()
    path.write_bytes(original.replace(b'"n": 1,', b'"n": 7,'))  # same size, other content
    with pytest.raises(ResultReferenceError, match="was modified"):
        load_result(reference)
    path.write_bytes(original + b" ")
    with pytest.raises(ResultReferenceError, match="truncated or replaced"):
        load_result(reference)
    path.unlink()
    with pytest.raises(ResultReferenceError, match="no file"):
        load_result(reference)


def test_filesystem_tampered_reference_is_refused(settings: Any, tmp_path: Path) -> None:
    _configure(
        settings, RESULT_STORAGE_BACKEND="filesystem", RESULT_STORAGE_FILESYSTEM_PATH=str(tmp_path)
    )
    reference = store_result(BIG_JSON.encode())
    other_size = reference.replace(f"size={len(BIG_JSON)}", f"size={len(BIG_JSON) - 1}")
    with pytest.raises(ResultReferenceError, match="truncated or replaced"):
        load_result(other_size)
    with pytest.raises(ResultReferenceError, match="Malformed"):
        load_result(reference.replace("sha256/", "sha256/../"))


def test_filesystem_without_path_or_writable_dir_says_what_to_fix(
    settings: Any, tmp_path: Path
) -> None:
    _configure(settings, RESULT_STORAGE_BACKEND="filesystem")
    with pytest.raises(ResultStorageError, match="RESULT_STORAGE_FILESYSTEM_PATH"):
        store_result(b"{}")
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    results._cache.clear()
    _configure(
        settings, RESULT_STORAGE_BACKEND="filesystem", RESULT_STORAGE_FILESYSTEM_PATH=str(blocker)
    )
    with pytest.raises(ResultStorageError, match="exists and is writable"):
        store_result(b"{}")


# --- S3 (moto server) -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    pytest.importorskip("boto3")
    from tests.support.objectstores import running_s3

    os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    with running_s3() as server:
        import boto3

        client = boto3.client("s3", endpoint_url=server.endpoint_url, region_name="us-east-1")
        client.create_bucket(Bucket="results")
        client.create_bucket(Bucket="elsewhere")
        yield server.endpoint_url


def _s3(settings: Any, endpoint: str, bucket: str = "results") -> None:
    _configure(
        settings,
        RESULT_STORAGE_BACKEND="s3",
        RESULT_STORAGE_S3={
            "BUCKET": bucket,
            "PREFIX": "django-ray/results",
            "ENDPOINT_URL": endpoint,
            "REGION": "us-east-1",
        },
    )


def test_s3_round_trip(settings: Any, s3_endpoint: str) -> None:
    _s3(settings, s3_endpoint)
    reference = store_if_oversized(BIG_JSON)
    assert reference is not None
    assert reference.startswith("s3://results/django-ray/results/sha256/")
    assert load_result(reference) == BIG
    assert store_if_oversized(BIG_JSON) == reference


def test_s3_tampered_object_and_foreign_bucket_are_refused(settings: Any, s3_endpoint: str) -> None:
    import boto3

    _s3(settings, s3_endpoint)
    payload = json.dumps({"tamper": "me" * 600}).encode()
    reference = store_result(payload)
    key = parse_reference(reference).key
    client = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1")
    client.put_object(Bucket="results", Key=key, Body=payload.replace(b"me", b"ME", 1))
    with pytest.raises(ResultReferenceError, match="was modified"):
        load_result(reference)
    client.put_object(Bucket="results", Key=key, Body=payload + b"trailing")
    with pytest.raises(ResultReferenceError, match="truncated or replaced"):
        load_result(reference)
    client.delete_object(Bucket="results", Key=key)
    with pytest.raises(ResultReferenceError, match="does not exist"):
        load_result(reference)
    with pytest.raises(ResultReferenceError, match="refusing to read another bucket"):
        load_result(reference.replace("s3://results/", "s3://elsewhere/"))


def test_s3_delete_removes_the_object(settings: Any, s3_endpoint: str) -> None:
    _s3(settings, s3_endpoint)
    reference = store_result(json.dumps({"delete": "me" * 600}).encode())
    assert results.delete_result(reference) is True
    with pytest.raises(ResultReferenceError, match="does not exist"):
        load_result(reference)
    assert results.delete_result(reference) is False
    with pytest.raises(ResultReferenceError, match="another bucket"):
        results.delete_result(reference.replace("s3://results/", "s3://elsewhere/"))


def test_s3_missing_bucket_is_a_clear_storage_error(settings: Any, s3_endpoint: str) -> None:
    _s3(settings, s3_endpoint, bucket="no-such-bucket")
    with pytest.raises(ResultStorageError, match=r"Cannot write s3://no-such-bucket/.*BUCKET"):
        store_result(b"{}")


def test_s3_bad_options(settings: Any) -> None:
    pytest.importorskip("boto3")
    _configure(settings, RESULT_STORAGE_BACKEND="s3", RESULT_STORAGE_S3={"BUKET": "x"})
    with pytest.raises(ResultStorageError, match="unknown option"):
        store_result(b"{}")
    results._cache.clear()
    _configure(settings, RESULT_STORAGE_BACKEND="s3", RESULT_STORAGE_S3={})
    with pytest.raises(ResultStorageError, match=r"RESULT_STORAGE_S3\['BUCKET'\] is unset"):
        store_result(b"{}")


# --- GCS (emulator) -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def gcs_endpoint() -> Iterator[str]:
    pytest.importorskip("google.cloud.storage")
    from tests.support.objectstores import running_gcs

    with running_gcs() as server:
        from google.auth.credentials import AnonymousCredentials
        from google.cloud import storage

        client = storage.Client(
            project="test",
            credentials=AnonymousCredentials(),
            client_options={"api_endpoint": server.endpoint_url},
        )
        client.create_bucket("results")
        client.create_bucket("elsewhere")
        yield server.endpoint_url


def _gcs(settings: Any, endpoint: str, bucket: str = "results") -> Any:
    _configure(
        settings,
        RESULT_STORAGE_BACKEND="gcs",
        RESULT_STORAGE_GCS={
            "BUCKET": bucket,
            "PREFIX": "big",
            "ENDPOINT_URL": endpoint,
            "PROJECT": "test",
            "ANONYMOUS": True,
        },
    )


def test_gcs_round_trip(settings: Any, gcs_endpoint: str) -> None:
    _gcs(settings, gcs_endpoint)
    reference = store_if_oversized(BIG_JSON)
    assert reference is not None and reference.startswith("gs://results/big/sha256/")
    assert load_result(reference) == BIG
    assert store_if_oversized(BIG_JSON) == reference  # existing object: same reference


def test_gcs_tampered_object_and_foreign_bucket_are_refused(
    settings: Any, gcs_endpoint: str
) -> None:
    _gcs(settings, gcs_endpoint)
    payload = json.dumps({"tamper": "me" * 600}).encode()
    reference = store_result(payload)
    storage = results.get_storage()
    blob = storage.bucket.blob(parse_reference(reference).key)  # type: ignore[attr-defined]
    blob.upload_from_string(payload.replace(b"me", b"ME", 1))
    with pytest.raises(ResultReferenceError, match="was modified"):
        load_result(reference)
    blob.upload_from_string(payload + b"trailing")
    with pytest.raises(ResultReferenceError, match="truncated or replaced"):
        load_result(reference)
    blob.delete()
    with pytest.raises(ResultReferenceError, match="does not exist"):
        load_result(reference)
    with pytest.raises(ResultReferenceError, match="refusing to read another bucket"):
        load_result(reference.replace("gs://results/", "gs://elsewhere/"))


def test_gcs_delete_removes_the_object(settings: Any, gcs_endpoint: str) -> None:
    _gcs(settings, gcs_endpoint)
    reference = store_result(json.dumps({"delete": "me" * 600}).encode())
    assert results.delete_result(reference) is True
    with pytest.raises(ResultReferenceError, match="does not exist"):
        load_result(reference)
    assert results.delete_result(reference) is False


def test_gcs_missing_bucket_is_a_clear_storage_error(settings: Any, gcs_endpoint: str) -> None:
    _gcs(settings, gcs_endpoint, bucket="no-such-bucket")
    with pytest.raises(ResultStorageError, match="Cannot write gs://no-such-bucket/"):
        store_result(b"{}")
