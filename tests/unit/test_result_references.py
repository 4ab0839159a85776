"""Parsing and verification of oversized-result references (pure logic)."""

from __future__ import annotations

import hashlib

import pytest

from django_ray.results.base import (
    ResultReferenceError,
    ResultStorageError,
    normalise_prefix,
    parse_reference,
    verify_payload,
)
from django_ray.results.digest import DigestStorage

HEX = hashlib.sha256(b"payload").hexdigest()


@pytest.mark.parametrize(
    ("reference", "scheme", "bucket", "key"),
    [
        (f"oversize://sha256/{HEX}?size=7", "oversize", None, None),
        (f"resultfs://sha256/{HEX}?size=7", "resultfs", None, None),
        (f"s3://my-bucket/sha256/{HEX}.json?size=7", "s3", "my-bucket", f"sha256/{HEX}.json"),
        (
            f"gs://my.bucket/a/b=1/sha256/{HEX}.json?size=7",
            "gs",
            "my.bucket",
            f"a/b=1/sha256/{HEX}.json",
        ),
    ],
)
def test_valid_references_parse_and_round_trip(
    reference: str, scheme: str, bucket: str | None, key: str | None
) -> None:
    parsed = parse_reference(reference)
    assert parsed.scheme == scheme
    assert parsed.digest == HEX
    assert parsed.size == 7
    assert parsed.bucket == bucket
    if key is not None:
        assert parsed.key == key
    assert str(parsed) == reference


@pytest.mark.parametrize(
    ("reference", "message"),
    [
        ("", "Unrecognised result reference"),
        ("http://example.com/x", "Unrecognised result reference"),
        (f"file:///etc/passwd?size=1{HEX}", "Unrecognised"),
        (f"resultfs://sha256/{HEX.upper()}?size=7", "Malformed resultfs://"),
        (f"resultfs://sha256/{HEX[:-1]}?size=7", "Malformed resultfs://"),
        (f"resultfs://sha256/{HEX}", "Malformed resultfs://"),
        (f"resultfs://sha256/{HEX}?size=-1", "Malformed resultfs://"),
        (f"resultfs://sha256/{HEX}?size=07", "Malformed resultfs://"),
        (f"resultfs://sha256/../../{HEX}?size=7", "Malformed resultfs://"),
        (f"oversize://sha256/{HEX}?size=7&x=1", "Malformed oversize://"),
        (f"s3://bucket/../sha256/{HEX}.json?size=7", "'..'"),
        (f"s3://Bucket/sha256/{HEX}.json?size=7", "Malformed s3://"),
        (f"s3://bucket/sha256/{HEX}?size=7", "Malformed s3://"),
        (f"gs://bucket/x y/sha256/{HEX}.json?size=7", "Malformed gs://"),
    ],
)
def test_malformed_references_are_refused(reference: str, message: str) -> None:
    with pytest.raises(ResultReferenceError, match=message):
        parse_reference(reference)


def test_non_string_reference_is_refused() -> None:
    with pytest.raises(ResultReferenceError, match="must be a string"):
        parse_reference(123)  # type: ignore[arg-type]


def test_verify_payload_checks_size_then_digest() -> None:
    ref = parse_reference(f"resultfs://sha256/{HEX}?size=7")
    assert verify_payload(ref, b"payload") == b"payload"
    with pytest.raises(ResultReferenceError, match="has 8 bytes, the reference says 7"):
        verify_payload(ref, b"payload!")
    with pytest.raises(ResultReferenceError, match="was modified"):
        verify_payload(ref, b"PAYLOAD")


def test_digest_storage_keeps_metadata_only() -> None:
    storage = DigestStorage()
    ref = storage.store(b"payload")
    assert str(ref) == f"oversize://sha256/{HEX}?size=7"
    with pytest.raises(ResultReferenceError, match="digest-only reference"):
        storage.fetch(ref)


@pytest.mark.parametrize(
    ("prefix", "expected"),
    [(None, ""), ("", ""), ("results", "results/"), ("/a/b/", "a/b/")],
)
def test_prefix_normalisation(prefix: str | None, expected: str) -> None:
    assert normalise_prefix(prefix) == expected


@pytest.mark.parametrize("prefix", ["a/../b", "a b", "x/./y"])
def test_unsafe_prefixes_are_refused(prefix: str) -> None:
    with pytest.raises(ResultStorageError, match="PREFIX"):
        normalise_prefix(prefix)
