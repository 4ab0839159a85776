"""``RESULT_STORAGE_BACKEND = "filesystem"``: content-addressed files in a shared directory.

Layout: ``<root>/sha256/<first 2 hex>/<digest>.json``. A write goes to a temporary file in the
same directory, is fsynced, then renamed into place, so a reader never sees a partial file; the
same payload written twice lands on the same name. Files are written :data:`FILE_MODE` (owner
read-write, group read, nothing for others) in directories of :data:`DIR_MODE`: results may hold
personal data, and the web reads them as the workers' user or group.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

from django_ray.results.base import (
    ResultReference,
    ResultReferenceError,
    ResultStorage,
    ResultStorageError,
    sha256_hex,
)

#: Mode of every result file: readable by the owner and its group only.
FILE_MODE = 0o640
#: Mode of the directories created under the root.
DIR_MODE = 0o750


class FilesystemStorage(ResultStorage):
    """Payloads as files under ``root`` (``RESULT_STORAGE_FILESYSTEM_PATH``)."""

    scheme = "resultfs"

    def __init__(self, root: str | os.PathLike[str]) -> None:
        if not root:
            raise ResultStorageError(
                "RESULT_STORAGE_BACKEND='filesystem' needs RESULT_STORAGE_FILESYSTEM_PATH: "
                "set it to a directory every worker and reader can reach."
            )
        self.root = Path(root)

    def path_for(self, digest: str) -> Path:
        """Where the payload with SHA-256 ``digest`` lives."""
        return self.root / "sha256" / digest[:2] / f"{digest}.json"

    def store(self, payload: bytes) -> ResultReference:
        digest = sha256_hex(payload)
        target = self.path_for(digest)
        reference = ResultReference(scheme=self.scheme, digest=digest, size=len(payload))
        try:
            if target.is_file() and target.stat().st_size == len(payload):
                return reference  # content-addressed: already there
            self._make_dirs(target.parent)
            fd, tmp = tempfile.mkstemp(prefix=f".{digest[:16]}.", suffix=".tmp", dir=target.parent)
            try:
                with os.fdopen(fd, "wb") as handle:
                    handle.write(payload)
                    handle.flush()
                    os.fsync(handle.fileno())
                os.chmod(tmp, FILE_MODE)
                os.replace(tmp, target)
            except BaseException:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp)
                raise
            dir_fd = os.open(target.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        except OSError as exc:
            raise ResultStorageError(
                f"Cannot write result file {target}: {exc}. Check that "
                f"RESULT_STORAGE_FILESYSTEM_PATH={str(self.root)!r} exists and is writable by "
                "the worker's user."
            ) from exc
        return reference

    def _make_dirs(self, directory: Path) -> None:
        """Create the root if missing, then ``sha256/<xx>`` below it with :data:`DIR_MODE`."""
        self.root.mkdir(parents=True, exist_ok=True)
        directory.parent.mkdir(mode=DIR_MODE, exist_ok=True)
        directory.mkdir(mode=DIR_MODE, exist_ok=True)

    def delete(self, reference: ResultReference) -> bool:
        path = self.path_for(reference.digest)
        try:
            path.unlink()
        except FileNotFoundError:
            return False
        except OSError as exc:
            raise ResultStorageError(f"Cannot delete result file {path}: {exc}.") from exc
        return True

    def fetch(self, reference: ResultReference) -> bytes:
        path = self.path_for(reference.digest)
        try:
            with open(path, "rb") as handle:
                return handle.read(reference.size + 1)
        except FileNotFoundError:
            raise ResultReferenceError(
                f"{reference}: no file {path}. Either RESULT_STORAGE_FILESYSTEM_PATH differs "
                "from the workers' (it must be the same shared directory) or the file was deleted."
            ) from None
        except OSError as exc:
            raise ResultStorageError(f"Cannot read result file {path}: {exc}.") from exc
