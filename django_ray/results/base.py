"""References to oversized results and the interface every result storage backend implements.

A reference is a URL-like string naming where the payload lives and what it must hash to::

    oversize://sha256/<64 hex>?size=<bytes>            digest only, no payload kept
    resultfs://sha256/<64 hex>?size=<bytes>            file under RESULT_STORAGE_FILESYSTEM_PATH
    s3://<bucket>/<prefix>sha256/<64 hex>.json?size=<bytes>
    gs://<bucket>/<prefix>sha256/<64 hex>.json?size=<bytes>

Payloads are content-addressed: the key is the SHA-256 of the bytes, so writing the same result
twice is harmless, and a reader verifies both the size and the digest before decoding anything.
"""

from __future__ import annotations

import hashlib
import re
from abc import ABC, abstractmethod
from dataclasses import dataclass

SCHEMES = ("oversize", "resultfs", "s3", "gs")

_HEX = r"(?P<digest>[0-9a-f]{64})"
_SIZE = r"\?size=(?P<size>0|[1-9][0-9]{0,15})"
# S3 and GCS bucket names: lowercase letters, digits, dots, dashes and underscores (GCS).
_BUCKET = r"(?P<bucket>[a-z0-9][a-z0-9._-]{1,220}[a-z0-9])"
# An object prefix: path segments of safe characters, each ending in '/'. No '..' segments.
_PREFIX = r"(?P<prefix>(?:[A-Za-z0-9_.=+-]+/)*)"

_PATTERNS = {
    "oversize": re.compile(rf"oversize://sha256/{_HEX}{_SIZE}"),
    "resultfs": re.compile(rf"resultfs://sha256/{_HEX}{_SIZE}"),
    "s3": re.compile(rf"s3://{_BUCKET}/{_PREFIX}sha256/{_HEX}\.json{_SIZE}"),
    "gs": re.compile(rf"gs://{_BUCKET}/{_PREFIX}sha256/{_HEX}\.json{_SIZE}"),
}


class ResultStorageError(RuntimeError):
    """A result could not be written to or read from its storage (I/O, credentials, config)."""


class ResultReferenceError(ValueError):
    """A result reference that is malformed, tampered with, or not retrievable here."""


@dataclass(frozen=True)
class ResultReference:
    """A parsed reference. ``key`` is the object key (s3/gs) or ``None``."""

    scheme: str
    digest: str
    size: int
    bucket: str | None = None
    prefix: str = ""

    @property
    def key(self) -> str:
        """The object key inside the bucket: ``<prefix>sha256/<digest>.json``."""
        return object_key(self.prefix, self.digest)

    def __str__(self) -> str:
        if self.scheme in ("oversize", "resultfs"):
            return f"{self.scheme}://sha256/{self.digest}?size={self.size}"
        return f"{self.scheme}://{self.bucket}/{self.key}?size={self.size}"


def object_key(prefix: str, digest: str) -> str:
    """The content-addressed key of a payload whose SHA-256 is ``digest``."""
    return f"{prefix}sha256/{digest}.json"


def normalise_prefix(prefix: str | None) -> str:
    """``'results'`` -> ``'results/'``; ``None``/``''`` -> ``''``. Refuses unsafe prefixes."""
    if not prefix:
        return ""
    prefix = prefix.strip("/") + "/"
    if not re.fullmatch(_PREFIX, prefix) or any(part in (".", "..") for part in prefix.split("/")):
        raise ResultStorageError(
            f"Result storage PREFIX {prefix!r} is not usable: use letters, digits and "
            "'_.=+-' separated by '/', e.g. 'django-ray/results'."
        )
    return prefix


def parse_reference(reference: str) -> ResultReference:
    """Parse and validate ``reference``; raise :class:`ResultReferenceError` naming the problem."""
    if not isinstance(reference, str):
        raise ResultReferenceError(
            f"A result reference must be a string, not {type(reference).__name__}."
        )
    scheme = reference.split("://", 1)[0] if "://" in reference else ""
    pattern = _PATTERNS.get(scheme)
    if pattern is None:
        raise ResultReferenceError(
            f"Unrecognised result reference {reference[:200]!r}: it must start with one of "
            + ", ".join(f"{s}://" for s in SCHEMES)
            + "."
        )
    match = pattern.fullmatch(reference)
    if match is None:
        raise ResultReferenceError(
            f"Malformed {scheme}:// result reference {reference[:200]!r}: expected "
            + {
                "oversize": "oversize://sha256/<64 lowercase hex>?size=<bytes>",
                "resultfs": "resultfs://sha256/<64 lowercase hex>?size=<bytes>",
                "s3": "s3://<bucket>/<prefix>sha256/<64 lowercase hex>.json?size=<bytes>",
                "gs": "gs://<bucket>/<prefix>sha256/<64 lowercase hex>.json?size=<bytes>",
            }[scheme]
            + ". The row's result_reference was edited or truncated."
        )
    groups = match.groupdict()
    prefix = groups.get("prefix") or ""
    if any(part in (".", "..") for part in prefix.split("/")):
        raise ResultReferenceError(f"Result reference {reference[:200]!r} has a '..' in its key.")
    return ResultReference(
        scheme=scheme,
        digest=groups["digest"],
        size=int(groups["size"]),
        bucket=groups.get("bucket"),
        prefix=prefix,
    )


def sha256_hex(payload: bytes) -> str:
    """Lowercase hex SHA-256 of ``payload``."""
    return hashlib.sha256(payload).hexdigest()


def verify_payload(reference: ResultReference, payload: bytes) -> bytes:
    """Return ``payload`` if its size and digest match ``reference``; raise otherwise."""
    if len(payload) != reference.size:
        raise ResultReferenceError(
            f"Result payload for {reference} has {len(payload)} bytes, the reference says "
            f"{reference.size}: the stored object was truncated or replaced. Refusing to decode it."
        )
    actual = sha256_hex(payload)
    if actual != reference.digest:
        raise ResultReferenceError(
            f"Result payload for {reference} hashes to sha256:{actual}, not the referenced digest: "
            "the stored object was modified. Refusing to decode it."
        )
    return payload


class ResultStorage(ABC):
    """Where oversized result payloads go. Subclasses are content-addressed and atomic."""

    #: The reference scheme this storage writes and reads.
    scheme: str

    @abstractmethod
    def store(self, payload: bytes) -> ResultReference:
        """Write ``payload`` (idempotently) and return its reference."""

    @abstractmethod
    def fetch(self, reference: ResultReference) -> bytes:
        """Read the raw bytes behind ``reference`` (at most ``reference.size + 1`` bytes).

        Verification happens in the caller; implementations must not read unbounded data.
        """

    @abstractmethod
    def delete(self, reference: ResultReference) -> bool:
        """Remove the payload behind ``reference``; False if there was none. Idempotent.

        Payloads are content-addressed, so the caller must first make sure no other row still
        references the same payload (``django_ray_prune`` does).
        """


def check_same_bucket(reference: ResultReference, configured: str, setting: str) -> None:
    """Refuse a reference naming a bucket other than the one this reader is configured for."""
    if reference.bucket != configured:
        raise ResultReferenceError(
            f"{reference} names bucket {reference.bucket!r}, but this reader is configured "
            f"for {configured!r} ({setting}['BUCKET']); refusing to read another bucket."
        )
