"""A stand-in for systemd's notify socket: what a worker subprocess sends with ``sd_notify``."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path
from types import TracebackType


class NotifySocket:
    """A bound ``AF_UNIX`` datagram socket, read all the time by a thread as systemd does (an
    unread socket fills up and slows the sender down); :meth:`env` sets ``$NOTIFY_SOCKET``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.2)
        self.received: list[tuple[float, str]] = []
        self._closed = threading.Event()
        self._reader = threading.Thread(target=self._read, name="notify-socket", daemon=True)
        self._reader.start()

    def env(self, **extra: str) -> dict[str, str]:
        return {"NOTIFY_SOCKET": str(self.path), **extra}

    def _read(self) -> None:
        while not self._closed.is_set():
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            now = time.monotonic()
            self.received += [(now, line) for line in data.decode().split("\n") if line]

    def timed_lines(self, settle: float = 0.5) -> list[tuple[float, str]]:
        """Every line so far with its arrival time, after ``settle`` s for the last ones."""
        time.sleep(settle)
        return list(self.received)

    def lines(self, settle: float = 0.5) -> list[str]:
        return [line for _, line in self.timed_lines(settle)]

    def __enter__(self) -> NotifySocket:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._closed.set()
        self._reader.join(timeout=2)
        self.sock.close()
