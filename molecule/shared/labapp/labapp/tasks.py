"""Tasks of the scenarios: each reports where it ran (the Ray node's hostname)."""

from __future__ import annotations

import os
import socket
import time

from django.tasks import task


@task()
def where(seconds: float = 0.0, tag: str = "") -> dict[str, object]:
    """Sleep ``seconds`` and return the host and process that ran this attempt."""
    time.sleep(seconds)
    return {"host": socket.gethostname(), "pid": os.getpid(), "tag": tag}


@task(queue_name="slow")
def slow(seconds: float = 30.0, tag: str = "") -> dict[str, object]:
    """A long task on the ``slow`` queue (cancellation and crash tests)."""
    time.sleep(seconds)
    return {"host": socket.gethostname(), "pid": os.getpid(), "tag": tag}
