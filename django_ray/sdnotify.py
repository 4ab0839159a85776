"""The systemd notify protocol (``sd_notify(3)``) in pure Python.

A unit with ``Type=notify`` gets ``$NOTIFY_SOCKET``: a datagram socket (a path, or an abstract
name starting with ``@``) to which the service sends newline-separated ``KEY=VALUE`` lines.
Outside systemd the variable is unset and every call here is a cheap no-op, so the worker can
call these unconditionally.
"""

from __future__ import annotations

import os
import socket
import threading

#: Seconds a send may block when systemd is not reading its socket (the queue is full).
#: A dropped ping is better than a worker stuck in ``sendto`` (which the watchdog would kill).
SEND_TIMEOUT = 2.0

_lock = threading.Lock()
_sock: socket.socket | None = None


def _address() -> str | None:
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return None
    if address.startswith("@"):
        # Abstract namespace socket: the leading '@' stands for a NUL byte.
        return "\0" + address[1:]
    return address


def _one_line(text: str) -> str:
    """Status text on one line: a newline would start a new ``KEY=VALUE`` assignment."""
    return " ".join(text.splitlines()).strip()


def notify(*lines: str) -> bool:
    """Send ``lines`` (``"READY=1"``, ``"STATUS=..."``) to systemd. True if a message was sent."""
    global _sock
    address = _address()
    if address is None or not lines:
        return False
    bad = [line for line in lines if "=" not in line or "\n" in line]
    if bad:
        raise ValueError(f"sd_notify lines must be single KEY=VALUE assignments, got {bad!r}")
    payload = "\n".join(lines).encode()
    with _lock:
        try:
            if _sock is None:
                _sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            _sock.settimeout(SEND_TIMEOUT)
            _sock.sendto(payload, address)
        except OSError:  # includes TimeoutError
            # systemd gone, socket closed or not read: notification is best effort by design.
            return False
    return True


def ready(status: str | None = None) -> bool:
    """Tell systemd start-up is complete (``READY=1``), with an optional status line."""
    return notify(
        "READY=1", *([f"STATUS={_one_line(status)}"] if status else []), f"MAINPID={os.getpid()}"
    )


def watchdog() -> bool:
    """Ping the watchdog. Call only from real progress of the main loop."""
    return notify("WATCHDOG=1")


def status(text: str) -> bool:
    """Set the one-line status shown by ``systemctl status``."""
    return notify(f"STATUS={_one_line(text)}")


def stopping(status: str | None = None) -> bool:
    """Tell systemd the service is shutting down (``STOPPING=1``)."""
    return notify("STOPPING=1", *([f"STATUS={_one_line(status)}"] if status else []))


def extend_timeout(seconds: float) -> bool:
    """Ask for ``seconds`` more for the current start-up or stop (``EXTEND_TIMEOUT_USEC=``).

    systemd only ever lengthens its timeout with this (never shortens it), so a worker that
    announces its drain cannot be cut off by a ``TimeoutStopSec=`` shorter than the drain.
    """
    return notify(f"EXTEND_TIMEOUT_USEC={max(0, int(seconds * 1_000_000))}")


def watchdog_interval() -> float | None:
    """Seconds between pings systemd expects (half of ``WatchdogSec=``), or None if disabled."""
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec or (pid and pid != str(os.getpid())):
        return None
    try:
        value = int(usec)
    except ValueError:
        return None
    return value / 1_000_000 / 2 if value > 0 else None
