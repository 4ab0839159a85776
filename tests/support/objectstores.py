"""Local object-storage servers for tests: S3 (moto's server mode) and GCS (an emulator).

Both run as real HTTP servers in child processes on free loopback ports, so the code under test
talks to them through the real boto3 and google-cloud-storage clients. They come from the
``test`` extra (``moto[server]``, ``gcp-storage-emulator``).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.support.postgres import free_port


class ObjectStoreUnavailable(RuntimeError):
    """The server's package is not installed or the server did not start."""


@dataclass
class LocalServer:
    """A started server: its endpoint URL and process."""

    endpoint_url: str
    process: subprocess.Popen[bytes]
    log_path: Path


def _script(name: str) -> str:
    """The console script ``name`` from this interpreter's environment."""
    candidate = Path(sys.executable).parent / name
    if candidate.exists():
        return str(candidate)
    found = shutil.which(name)
    if found:
        return found
    raise ObjectStoreUnavailable(
        f"{name} is not installed; install the test extra: pip install -e '.[test]'"
    )


def _wait_http(server: LocalServer, path: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise ObjectStoreUnavailable(
                f"server exited with {server.process.returncode}:\n"
                + server.log_path.read_text(errors="replace")[-2000:]
            )
        try:
            with urllib.request.urlopen(server.endpoint_url + path, timeout=2):
                return
        except urllib.error.HTTPError:
            return  # any HTTP answer means it is up
        except OSError as exc:
            last = exc
            time.sleep(0.1)
    raise ObjectStoreUnavailable(f"server at {server.endpoint_url} did not answer: {last}")


@contextlib.contextmanager
def _serve(argv: list[str], port: int, probe: str, env: dict[str, str]) -> Iterator[LocalServer]:
    log_dir = Path(tempfile.mkdtemp(prefix="django-ray-objstore-"))
    log_path = log_dir / "server.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=log_dir,
            env={**os.environ, **env},
            start_new_session=True,
        )
    server = LocalServer(f"http://127.0.0.1:{port}", process, log_path)
    try:
        _wait_http(server, probe, timeout=60)
        yield server
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        shutil.rmtree(log_dir, ignore_errors=True)


@contextlib.contextmanager
def running_s3() -> Iterator[LocalServer]:
    """moto's S3-compatible server on a free port (credentials: any non-empty strings)."""
    port = free_port()
    with _serve(
        [_script("moto_server"), "-H", "127.0.0.1", "-p", str(port)],
        port,
        "/moto-api/",
        {},
    ) as server:
        yield server


@contextlib.contextmanager
def running_gcs() -> Iterator[LocalServer]:
    """A GCS JSON-API emulator on a free port, in memory (use anonymous credentials)."""
    port = free_port()
    with _serve(
        [
            _script("gcp-storage-emulator"),
            "start",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--in-memory",
        ],
        port,
        "/storage/v1/b",
        {},
    ) as server:
        yield server
