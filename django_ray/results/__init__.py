"""Storage of results larger than ``MAX_RESULT_SIZE_BYTES`` (see ``docs/results.md``).

The worker calls :func:`store_if_oversized` with a result's JSON text; a reference string
replaces the inline ``result_data``. :func:`load_result` turns a reference back into the value
where the backend keeps the payload.
"""

from __future__ import annotations

import hashlib
from typing import Any

from django_ray.conf import ray_settings

DIGEST_SCHEME = "oversize://sha256/"


class ResultReferenceError(ValueError):
    """A result reference that is malformed, tampered with, or not retrievable here."""


def store_if_oversized(result_json: str) -> str | None:
    """Return a reference for a result too large to keep inline, or None to keep it inline."""
    encoded = result_json.encode()
    if len(encoded) <= ray_settings().MAX_RESULT_SIZE_BYTES:
        return None
    digest = hashlib.sha256(encoded).hexdigest()
    return f"{DIGEST_SCHEME}{digest}?size={len(encoded)}"


def load_result(reference: str) -> Any:
    """The value behind ``reference``; digest references carry no payload and cannot load."""
    if reference.startswith(DIGEST_SCHEME):
        raise ResultReferenceError(
            f"{reference} is a digest-only reference: the result exceeded MAX_RESULT_SIZE_BYTES "
            "and RESULT_STORAGE_BACKEND='digest' keeps no payload. Configure the filesystem, "
            "s3 or gcs backend to retrieve large results."
        )
    raise ResultReferenceError(f"Unrecognised result reference {reference!r}.")
