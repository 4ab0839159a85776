"""``RESULT_STORAGE_BACKEND = "s3"``: payloads as objects in an S3 (or S3-compatible) bucket.

Options (``DJANGO_RAY["RESULT_STORAGE_S3"]``): ``BUCKET`` (required), ``PREFIX``,
``ENDPOINT_URL`` (MinIO, Ceph, a local test server...), ``REGION``, and optionally
``ACCESS_KEY_ID``/``SECRET_ACCESS_KEY`` (otherwise boto3's usual credential chain: environment,
``~/.aws``, instance role). Needs ``pip install 'django-ray[s3]'``.
"""

from __future__ import annotations

import base64
import hashlib
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

KNOWN_OPTIONS = frozenset(
    {"BUCKET", "PREFIX", "ENDPOINT_URL", "REGION", "ACCESS_KEY_ID", "SECRET_ACCESS_KEY"}
)


def check_options(options: Mapping[str, Any], setting: str, known: frozenset[str]) -> None:
    """Refuse unknown option names and a missing bucket with a message naming the fix."""
    unknown = sorted(set(options) - known)
    if unknown:
        raise ResultStorageError(
            f"{setting} has unknown option(s) {', '.join(unknown)}; "
            f"known options are {', '.join(sorted(known))}."
        )
    if not options.get("BUCKET"):
        raise ResultStorageError(f"{setting}['BUCKET'] is unset: name the bucket for results.")


class S3Storage(ResultStorage):
    """Objects ``s3://<BUCKET>/<PREFIX>sha256/<digest>.json``."""

    scheme = "s3"

    def __init__(self, options: Mapping[str, Any]) -> None:
        check_options(options, "RESULT_STORAGE_S3", KNOWN_OPTIONS)
        try:
            import boto3
            from botocore.config import Config
        except ImportError as exc:
            raise ResultStorageError(
                "RESULT_STORAGE_BACKEND='s3' needs boto3: pip install 'django-ray[s3]'."
            ) from exc
        self.bucket: str = options["BUCKET"]
        self.prefix = normalise_prefix(options.get("PREFIX"))
        kwargs: dict[str, Any] = {
            "config": Config(retries={"max_attempts": 3, "mode": "standard"}),
        }
        if options.get("ENDPOINT_URL"):
            kwargs["endpoint_url"] = options["ENDPOINT_URL"]
        if options.get("REGION"):
            kwargs["region_name"] = options["REGION"]
        if options.get("ACCESS_KEY_ID"):
            kwargs["aws_access_key_id"] = options["ACCESS_KEY_ID"]
            kwargs["aws_secret_access_key"] = options.get("SECRET_ACCESS_KEY")
        self.client = boto3.session.Session().client("s3", **kwargs)

    def store(self, payload: bytes) -> ResultReference:
        from botocore.exceptions import BotoCoreError, ClientError

        digest = sha256_hex(payload)
        key = object_key(self.prefix, digest)
        try:
            # One PUT is atomic in S3: readers see the whole object or nothing. Content-MD5 makes
            # the server refuse a body damaged on the way.
            self.client.put_object(
                Bucket=self.bucket,
                Key=key,
                Body=payload,
                ContentType="application/json",
                ContentMD5=base64.b64encode(hashlib.md5(payload).digest()).decode(),
            )
        except (BotoCoreError, ClientError) as exc:
            raise ResultStorageError(
                f"Cannot write s3://{self.bucket}/{key}: {exc}. Check RESULT_STORAGE_S3 "
                "(BUCKET, ENDPOINT_URL, REGION) and the worker's credentials."
            ) from exc
        return ResultReference(
            scheme=self.scheme,
            digest=digest,
            size=len(payload),
            bucket=self.bucket,
            prefix=self.prefix,
        )

    def delete(self, reference: ResultReference) -> bool:
        from botocore.exceptions import BotoCoreError, ClientError

        check_same_bucket(reference, self.bucket, "RESULT_STORAGE_S3")
        try:
            # S3's DELETE succeeds for a missing key too: report what was there before.
            self.client.head_object(Bucket=self.bucket, Key=reference.key)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404", "NotFound"):
                return False
            raise ResultStorageError(f"Cannot delete {reference}: {exc}.") from exc
        except BotoCoreError as exc:
            raise ResultStorageError(f"Cannot delete {reference}: {exc}.") from exc
        try:
            self.client.delete_object(Bucket=self.bucket, Key=reference.key)
        except (BotoCoreError, ClientError) as exc:
            raise ResultStorageError(f"Cannot delete {reference}: {exc}.") from exc
        return True

    def fetch(self, reference: ResultReference) -> bytes:
        from botocore.exceptions import BotoCoreError, ClientError

        check_same_bucket(reference, self.bucket, "RESULT_STORAGE_S3")
        try:
            response = self.client.get_object(Bucket=self.bucket, Key=reference.key)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code")
            if code in ("NoSuchKey", "404"):
                raise ResultReferenceError(
                    f"{reference}: the object does not exist (deleted, or written elsewhere)."
                ) from None
            raise ResultStorageError(f"Cannot read {reference}: {exc}.") from exc
        except BotoCoreError as exc:
            raise ResultStorageError(f"Cannot read {reference}: {exc}.") from exc
        body = response["Body"]
        try:
            return body.read(reference.size + 1)
        finally:
            body.close()
