"""The notify protocol against a real AF_UNIX datagram socket (what systemd listens on)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from django_ray import sdnotify

pytestmark = pytest.mark.packaging


@pytest.fixture
def listener(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[socket.socket]:
    """A datagram socket bound to a path, exported as ``$NOTIFY_SOCKET``."""
    path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(5)
    monkeypatch.setenv("NOTIFY_SOCKET", str(path))
    yield sock
    sock.close()


def receive(sock: socket.socket) -> list[str]:
    return sock.recv(4096).decode().split("\n")


def test_ready_sends_ready_status_and_mainpid(listener: socket.socket) -> None:
    assert sdnotify.ready("lease held, ray connected") is True
    assert receive(listener) == [
        "READY=1",
        "STATUS=lease held, ray connected",
        f"MAINPID={os.getpid()}",
    ]


def test_ready_without_status(listener: socket.socket) -> None:
    assert sdnotify.ready()
    assert receive(listener) == ["READY=1", f"MAINPID={os.getpid()}"]


def test_watchdog_status_stopping(listener: socket.socket) -> None:
    assert sdnotify.watchdog()
    assert receive(listener) == ["WATCHDOG=1"]
    assert sdnotify.status("queued=3 running=1")
    assert receive(listener) == ["STATUS=queued=3 running=1"]
    assert sdnotify.stopping("draining 2 tasks")
    assert receive(listener) == ["STOPPING=1", "STATUS=draining 2 tasks"]
    assert sdnotify.stopping()
    assert receive(listener) == ["STOPPING=1"]


def test_extend_timeout_in_microseconds(listener: socket.socket) -> None:
    assert sdnotify.extend_timeout(45.5)
    assert receive(listener) == ["EXTEND_TIMEOUT_USEC=45500000"]
    assert sdnotify.extend_timeout(-1)
    assert receive(listener) == ["EXTEND_TIMEOUT_USEC=0"]


def test_status_newlines_cannot_inject_assignments(listener: socket.socket) -> None:
    """A multi-line status must not turn into e.g. a second WATCHDOG=1 or READY=1 line."""
    assert sdnotify.status("error:\nREADY=1\n")
    assert receive(listener) == ["STATUS=error: READY=1"]


def test_raw_notify_rejects_malformed_lines(listener: socket.socket) -> None:
    with pytest.raises(ValueError, match="single KEY=VALUE"):
        sdnotify.notify("READY")
    with pytest.raises(ValueError, match="single KEY=VALUE"):
        sdnotify.notify("STATUS=a\nWATCHDOG=1")


def test_abstract_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    """systemd may hand out an abstract socket, written with a leading '@'."""
    name = f"django-ray-test-{uuid.uuid4().hex}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name)
    sock.settimeout(5)
    monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
    try:
        assert sdnotify.watchdog()
        assert receive(sock) == ["WATCHDOG=1"]
    finally:
        sock.close()


def test_no_socket_is_a_no_op(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert sdnotify.ready() is False
    assert sdnotify.watchdog() is False
    assert sdnotify.status("x") is False
    assert sdnotify.stopping() is False


def test_vanished_socket_is_best_effort(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """systemd gone (socket path missing): no exception, just False."""
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "gone.sock"))
    assert sdnotify.watchdog() is False


def test_many_messages_in_a_row(listener: socket.socket) -> None:
    for index in range(200):
        assert sdnotify.status(f"tick {index}")
        assert receive(listener) == [f"STATUS=tick {index}"]


def test_full_queue_does_not_hang_the_caller(
    listener: socket.socket, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Nobody reads the socket: sends beyond the kernel queue fail fast instead of blocking."""
    monkeypatch.setattr(sdnotify, "SEND_TIMEOUT", 0.05)
    sent = 0
    while sdnotify.watchdog():
        sent += 1
        assert sent < 100_000, "sends never failed although nobody reads the socket"
    assert sent > 0
    assert sdnotify.watchdog() is False
    # The queued ones are real messages, in order.
    assert receive(listener) == ["WATCHDOG=1"]


def test_child_process_reports_its_own_pid(listener: socket.socket) -> None:
    """A separate process (as systemd would start it) sends READY=1 with its own MAINPID."""
    code = "import os; from django_ray import sdnotify; print(os.getpid()); sdnotify.ready('up')"
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ},
    )
    assert receive(listener) == ["READY=1", "STATUS=up", f"MAINPID={out.stdout.strip()}"]


@pytest.mark.parametrize(
    ("usec", "pid", "expected"),
    [
        ("20000000", None, 10.0),
        ("20000000", "self", 10.0),
        ("20000000", "other", None),
        ("0", None, None),
        ("abc", None, None),
        (None, None, None),
    ],
)
def test_watchdog_interval(
    monkeypatch: pytest.MonkeyPatch, usec: str | None, pid: str | None, expected: float | None
) -> None:
    for name in ("WATCHDOG_USEC", "WATCHDOG_PID"):
        monkeypatch.delenv(name, raising=False)
    if usec is not None:
        monkeypatch.setenv("WATCHDOG_USEC", usec)
    if pid == "self":
        monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    elif pid == "other":
        monkeypatch.setenv("WATCHDOG_PID", str(os.getpid() + 1))
    assert sdnotify.watchdog_interval() == expected
