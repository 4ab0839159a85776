"""``RESULT_STORAGE_BACKEND = "digest"``: keep only the size and SHA-256, no payload."""

from __future__ import annotations

from django_ray.results.base import (
    ResultReference,
    ResultReferenceError,
    ResultStorage,
    sha256_hex,
)


class DigestStorage(ResultStorage):
    """Records that an oversized result existed and what it hashed to; the payload is dropped."""

    scheme = "oversize"

    def store(self, payload: bytes) -> ResultReference:
        return ResultReference(scheme=self.scheme, digest=sha256_hex(payload), size=len(payload))

    def delete(self, reference: ResultReference) -> bool:
        return False  # nothing was stored

    def fetch(self, reference: ResultReference) -> bytes:
        raise ResultReferenceError(
            f"{reference} is a digest-only reference: the result was larger than "
            "MAX_RESULT_SIZE_BYTES and RESULT_STORAGE_BACKEND='digest' keeps no payload. "
            "Set RESULT_STORAGE_BACKEND to 'filesystem', 's3' or 'gcs' to keep future large "
            "results retrievable; this one cannot be recovered."
        )
