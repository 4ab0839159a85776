"""Storage of results larger than ``MAX_RESULT_SIZE_BYTES``.

The worker calls :func:`store_if_oversized` with a result's JSON text: small results stay inline
in ``result_data``; larger ones are written by the ``RESULT_STORAGE_BACKEND`` and the row keeps
only a reference in ``result_reference`` (see :mod:`django_ray.results.base` for the formats).
:func:`load_result` turns a reference back into the value, verifying size and digest first;
``RayTaskBackend.get_result()`` uses it.

=============  ==========================  =============================================
backend        reference                   payload
=============  ==========================  =============================================
``digest``     ``oversize://sha256/...``   none (size and digest only)
``filesystem`` ``resultfs://sha256/...``   ``RESULT_STORAGE_FILESYSTEM_PATH/sha256/..``
``s3``         ``s3://bucket/key``         ``RESULT_STORAGE_S3`` (boto3)
``gcs``        ``gs://bucket/key``         ``RESULT_STORAGE_GCS`` (google-cloud-storage)
=============  ==========================  =============================================
"""

from __future__ import annotations

import json
import threading
from typing import Any

from django_ray.results.base import (
    ResultReference,
    ResultReferenceError,
    ResultStorage,
    ResultStorageError,
    parse_reference,
    verify_payload,
)

__all__ = [
    "ResultReference",
    "ResultReferenceError",
    "ResultStorage",
    "ResultStorageError",
    "delete_result",
    "get_storage",
    "load_result",
    "load_result_bytes",
    "parse_reference",
    "store_if_oversized",
    "store_result",
]

_BACKEND_BY_SCHEME = {"oversize": "digest", "resultfs": "filesystem", "s3": "s3", "gs": "gcs"}
_cache: dict[str, ResultStorage] = {}
_cache_lock = threading.Lock()


def _build(backend: str) -> ResultStorage:
    from django_ray.conf import ray_settings

    settings = ray_settings()
    if backend == "digest":
        from django_ray.results.digest import DigestStorage

        return DigestStorage()
    if backend == "filesystem":
        from django_ray.results.filesystem import FilesystemStorage

        return FilesystemStorage(settings.RESULT_STORAGE_FILESYSTEM_PATH)
    if backend == "s3":
        from django_ray.results.s3 import S3Storage

        return S3Storage(settings.RESULT_STORAGE_S3 or {})
    if backend == "gcs":
        from django_ray.results.gcs import GCSStorage

        return GCSStorage(settings.RESULT_STORAGE_GCS or {})
    raise ResultStorageError(
        f"RESULT_STORAGE_BACKEND={backend!r} is not a result storage backend; "
        "use 'digest', 'filesystem', 's3' or 'gcs'."
    )


def get_storage(backend: str | None = None) -> ResultStorage:
    """The storage for ``backend`` (default: ``RESULT_STORAGE_BACKEND``), built from settings.

    Instances are cached per backend and configuration, so clients are created once per process.
    """
    from django_ray.conf import ray_settings

    settings = ray_settings()
    name = backend or settings.RESULT_STORAGE_BACKEND
    key = repr(
        (
            name,
            settings.RESULT_STORAGE_FILESYSTEM_PATH,
            sorted((settings.RESULT_STORAGE_S3 or {}).items()),
            sorted((settings.RESULT_STORAGE_GCS or {}).items()),
        )
    )
    with _cache_lock:
        storage = _cache.get(key)
        if storage is None:
            storage = _cache[key] = _build(name)
    return storage


def store_result(payload: bytes, backend: str | None = None) -> str:
    """Store ``payload`` (a result's JSON bytes) and return its reference string."""
    if not isinstance(payload, bytes | bytearray | memoryview):
        raise TypeError(f"store_result() takes bytes, not {type(payload).__name__}.")
    return str(get_storage(backend).store(bytes(payload)))


def store_if_oversized(result_json: str) -> str | None:
    """A reference for a result whose JSON exceeds ``MAX_RESULT_SIZE_BYTES``, else None."""
    from django_ray.conf import ray_settings

    encoded = result_json.encode()
    if len(encoded) <= ray_settings().MAX_RESULT_SIZE_BYTES:
        return None
    return store_result(encoded)


def load_result_bytes(reference: str) -> bytes:
    """The verified payload bytes behind ``reference`` (size and SHA-256 checked)."""
    parsed = parse_reference(reference)
    storage = get_storage(_BACKEND_BY_SCHEME[parsed.scheme])
    return verify_payload(parsed, storage.fetch(parsed))


def delete_result(reference: str) -> bool:
    """Delete the payload behind ``reference`` from the storage that wrote it.

    Returns False when nothing was stored (digest-only references, already deleted). The caller
    makes sure no remaining row references the same (content-addressed) payload.
    """
    parsed = parse_reference(reference)
    return get_storage(_BACKEND_BY_SCHEME[parsed.scheme]).delete(parsed)


def load_result(reference: str) -> Any:
    """The result value behind ``reference``; raise :class:`ResultReferenceError` if unusable.

    Digest-only references (``oversize://``) carry no payload and always raise.
    """
    payload = load_result_bytes(reference)
    try:
        return json.loads(payload)
    except ValueError as exc:
        raise ResultReferenceError(
            f"Result payload for {reference} matches its digest but is not JSON: {exc}."
        ) from exc
