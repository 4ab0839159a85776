"""``RESULT_STORAGE_BACKEND = "gcs"``: payloads as objects in a Google Cloud Storage bucket.

Options (``DJANGO_RAY["RESULT_STORAGE_GCS"]``): ``BUCKET`` (required), ``PREFIX``, ``PROJECT``,
``ENDPOINT_URL`` (an emulator or private endpoint) and ``ANONYMOUS`` (``True`` to send no
credentials, for emulators; otherwise Application Default Credentials). Needs
``pip install 'django-ray[gcs]'``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from django_ray.results.base import (
    ResultReference,
    ResultReferenceError,
    ResultStorage,
    ResultStorageError,
    check_same_bucket,
    normalise_prefix,
    object_key,
    sha256_hex,
)
from django_ray.results.s3 import check_options

KNOWN_OPTIONS = frozenset({"BUCKET", "PREFIX", "ENDPOINT_URL", "PROJECT", "ANONYMOUS"})


class GCSStorage(ResultStorage):
    """Objects ``gs://<BUCKET>/<PREFIX>sha256/<digest>.json``."""

    scheme = "gs"

    def __init__(self, options: Mapping[str, Any]) -> None:
        check_options(options, "RESULT_STORAGE_GCS", KNOWN_OPTIONS)
        try:
            from google.cloud import storage
        except ImportError as exc:
            raise ResultStorageError(
                "RESULT_STORAGE_BACKEND='gcs' needs google-cloud-storage: "
                "pip install 'django-ray[gcs]'."
            ) from exc
        self.bucket_name: str = options["BUCKET"]
        self.prefix = normalise_prefix(options.get("PREFIX"))
        kwargs: dict[str, Any] = {}
        if options.get("PROJECT"):
            kwargs["project"] = options["PROJECT"]
        if options.get("ENDPOINT_URL"):
            kwargs["client_options"] = {"api_endpoint": options["ENDPOINT_URL"]}
        if options.get("ANONYMOUS"):
            from google.auth.credentials import AnonymousCredentials

            kwargs["credentials"] = AnonymousCredentials()
            kwargs.setdefault("project", "django-ray")
        try:
            self.client = storage.Client(**kwargs)
        except Exception as exc:  # google.auth.exceptions.DefaultCredentialsError and friends
            raise ResultStorageError(
                f"Cannot create the GCS client: {exc}. Configure Application Default "
                "Credentials, or set RESULT_STORAGE_GCS['ANONYMOUS']=True for an emulator."
            ) from exc
        self.bucket = self.client.bucket(self.bucket_name)

    def store(self, payload: bytes) -> ResultReference:
        from google.api_core import exceptions as gexc

        digest = sha256_hex(payload)
        key = object_key(self.prefix, digest)
        blob = self.bucket.blob(key)
        try:
            # if_generation_match=0: create only; an existing object has the same content.
            blob.upload_from_string(payload, content_type="application/json", if_generation_match=0)
        except gexc.PreconditionFailed:
            pass
        except gexc.GoogleAPICallError as exc:
            raise ResultStorageError(
                f"Cannot write gs://{self.bucket_name}/{key}: {exc}. Check RESULT_STORAGE_GCS "
                "(BUCKET, PROJECT, ENDPOINT_URL) and the worker's credentials."
            ) from exc
        return ResultReference(
            scheme=self.scheme,
            digest=digest,
            size=len(payload),
            bucket=self.bucket_name,
            prefix=self.prefix,
        )

    def delete(self, reference: ResultReference) -> bool:
        from google.api_core import exceptions as gexc

        check_same_bucket(reference, self.bucket_name, "RESULT_STORAGE_GCS")
        try:
            self.bucket.blob(reference.key).delete()
        except gexc.NotFound:
            return False
        except gexc.GoogleAPICallError as exc:
            raise ResultStorageError(f"Cannot delete {reference}: {exc}.") from exc
        return True

    def fetch(self, reference: ResultReference) -> bytes:
        from google.api_core import exceptions as gexc

        check_same_bucket(reference, self.bucket_name, "RESULT_STORAGE_GCS")
        blob = self.bucket.blob(reference.key)
        try:
            # end is inclusive: read one byte more than expected so a longer object is caught.
            return blob.download_as_bytes(start=0, end=reference.size, checksum=None)
        except gexc.NotFound:
            raise ResultReferenceError(
                f"{reference}: the object does not exist (deleted, or written elsewhere)."
            ) from None
        except gexc.GoogleAPICallError as exc:
            raise ResultStorageError(f"Cannot read {reference}: {exc}.") from exc
