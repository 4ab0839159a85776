"""Logging to journald through its native protocol, in pure Python (no libsystemd).

journald reads datagrams on ``/run/systemd/journal/socket``. Each datagram is a list of fields:
``NAME=value\\n`` for a value without newlines, or ``NAME\\n`` + 64-bit little-endian length +
raw bytes + ``\\n`` for any value (multi-line text, binary). A datagram too large for the socket
is written to a sealed ``memfd`` whose descriptor is passed instead (``SCM_RIGHTS``), exactly
as ``sd_journal_send(3)`` does.

:class:`JournalHandler` adds django-ray's structured fields from a ``LogRecord``'s ``extra``:
``TASK_ID``, ``QUEUE``, ``CALLABLE``, ``WORKER_ID``, ``STATE`` (and ``ATTEMPT``), so on-call can
run ``journalctl -u django-ray-worker@default TASK_ID=<id>``. :func:`configure_logging` picks
journald when the process runs under systemd and readable stderr lines otherwise.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import re
import socket
import struct
import sys
import threading
import traceback
from collections.abc import Iterable, Mapping

JOURNAL_SOCKET = "/run/systemd/journal/socket"

#: ``LogRecord`` attributes (set through ``extra=``) -> journal field names.
RECORD_FIELDS: Mapping[str, str] = {
    "task_id": "TASK_ID",
    "queue": "QUEUE",
    "queue_name": "QUEUE",
    "callable_path": "CALLABLE",
    "callable": "CALLABLE",
    "worker_id": "WORKER_ID",
    "state": "STATE",
    "attempt": "ATTEMPT",
}

#: The fields the runbook tells on-call to filter by.
STRUCTURED_FIELDS = ("TASK_ID", "QUEUE", "CALLABLE", "WORKER_ID", "STATE")

_FIELD_NAME = re.compile(r"[A-Z][A-Z0-9_]{0,63}")

# logging level -> syslog priority (journalctl -p).
_PRIORITY = ((logging.CRITICAL, 2), (logging.ERROR, 3), (logging.WARNING, 4), (logging.INFO, 6))


def syslog_priority(levelno: int) -> int:
    """The syslog priority (0 emerg .. 7 debug) for a ``logging`` level."""
    for level, priority in _PRIORITY:
        if levelno >= level:
            return priority
    return 7


def encode_field(name: str, value: str | bytes | int | float) -> bytes:
    """One field in journald's native encoding (the length-prefixed form when needed)."""
    if not _FIELD_NAME.fullmatch(name):
        raise ValueError(
            f"journal field name {name!r} is invalid: use up to 64 of A-Z, 0-9 and '_', "
            "starting with a letter"
        )
    data = value if isinstance(value, bytes) else str(value).encode("utf-8", "replace")
    key = name.encode("ascii")
    if b"\n" in data or b"\0" in data:
        return key + b"\n" + struct.pack("<Q", len(data)) + data + b"\n"
    return key + b"=" + data + b"\n"


def encode_message(fields: Iterable[tuple[str, str | bytes | int | float]]) -> bytes:
    """A whole datagram from ``(name, value)`` pairs (names may repeat)."""
    return b"".join(encode_field(name, value) for name, value in fields)


def decode_message(datagram: bytes) -> dict[str, list[bytes]]:
    """Parse a native-protocol datagram into ``{name: [values...]}`` (for tests and tooling)."""
    fields: dict[str, list[bytes]] = {}
    pos = 0
    while pos < len(datagram):
        newline = datagram.index(b"\n", pos)
        line = datagram[pos:newline]
        if b"=" in line:
            name, value = line.split(b"=", 1)
            pos = newline + 1
        else:
            name = line
            (length,) = struct.unpack("<Q", datagram[newline + 1 : newline + 9])
            start = newline + 9
            value = datagram[start : start + length]
            if datagram[start + length : start + length + 1] != b"\n":
                raise ValueError(f"field {name!r}: length-prefixed value not followed by newline")
            pos = start + length + 1
        fields.setdefault(name.decode("ascii"), []).append(value)
    return fields


class JournalHandler(logging.Handler):
    """A ``logging.Handler`` that sends each record to journald with structured fields."""

    def __init__(
        self,
        level: int = logging.NOTSET,
        socket_path: str = JOURNAL_SOCKET,
        identifier: str | None = None,
        extra_fields: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(level)
        if not os.path.exists(socket_path):
            raise FileNotFoundError(
                f"journald socket {socket_path} does not exist: journald is not running here. "
                "Log to stderr instead (django_ray.journald.make_handler() chooses for you)."
            )
        self.socket_path = socket_path
        self.identifier = identifier or os.path.basename(sys.argv[0] or "python") or "python"
        self.extra_fields = dict(extra_fields or {})
        self._sock: socket.socket | None = None
        self._sock_lock = threading.Lock()

    def record_fields(self, record: logging.LogRecord) -> list[tuple[str, str | bytes | int]]:
        """The journal fields for ``record``: MESSAGE, PRIORITY, code location, django-ray's."""
        message = record.getMessage()
        if record.exc_info:
            message += "\n" + "".join(traceback.format_exception(*record.exc_info)).rstrip()
        elif record.exc_text:
            message += "\n" + record.exc_text
        if record.stack_info:
            message += "\n" + record.stack_info
        fields: list[tuple[str, str | bytes | int]] = [
            ("MESSAGE", message),
            ("PRIORITY", syslog_priority(record.levelno)),
            ("SYSLOG_IDENTIFIER", self.identifier),
            ("LOGGER", record.name),
            ("LOG_LEVEL", record.levelname),
            ("CODE_FILE", record.pathname),
            ("CODE_LINE", record.lineno),
            ("CODE_FUNC", record.funcName),
            ("THREAD_NAME", record.threadName or ""),
            ("PROCESS_NAME", record.processName or ""),
        ]
        if record.exc_info and record.exc_info[0] is not None:
            exc_type = record.exc_info[0]
            fields.append(("EXCEPTION_CLASS", f"{exc_type.__module__}.{exc_type.__qualname__}"))
        seen: set[str] = set()
        for attr, name in RECORD_FIELDS.items():
            value = record.__dict__.get(attr)
            if value is None or name in seen:
                continue
            seen.add(name)
            fields.append((name, value if isinstance(value, bytes | int) else str(value)))
        fields.extend(self.extra_fields.items())
        return fields

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.send(encode_message(self.record_fields(record)))
        except Exception:
            self.handleError(record)

    def send(self, datagram: bytes) -> None:
        """Send one datagram; fall back to a sealed memfd when it is too large."""
        with self._sock_lock:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            try:
                self._sock.sendto(datagram, self.socket_path)
            except OSError as exc:
                if exc.errno not in (errno.EMSGSIZE, errno.ENOBUFS):
                    raise
                self._send_memfd(datagram)

    def _send_memfd(self, datagram: bytes) -> None:
        assert self._sock is not None
        fd = os.memfd_create("journal-message", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
        try:
            os.write(fd, datagram)
            # journald accepts only sealed memfds: it must not change while being read.
            seals = fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE | fcntl.F_SEAL_SEAL
            fcntl.fcntl(fd, fcntl.F_ADD_SEALS, seals)
            self._sock.sendmsg(
                [],
                [(socket.SOL_SOCKET, socket.SCM_RIGHTS, struct.pack("i", fd))],
                0,
                self.socket_path,
            )
        finally:
            os.close(fd)

    def close(self) -> None:
        with self._sock_lock:
            if self._sock is not None:
                self._sock.close()
                self._sock = None
        super().close()


#: Alias kept for callers that use systemd-python's spelling.
JournaldHandler = JournalHandler


class ReadableFormatter(logging.Formatter):
    """``2026-01-01 12:00:00,000 INFO django_ray.worker: message key=value...``.

    django-ray's structured ``extra`` fields are appended as ``key=value`` unless the message
    already names them, so grep works the same as ``journalctl FIELD=value``.
    """

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        first_line = text.split("\n", 1)[0]
        extras = []
        for attr in ("task_id", "callable_path", "queue", "worker_id", "state"):
            value = record.__dict__.get(attr)
            label = "callable" if attr == "callable_path" else attr
            if value is not None and f"{label}=" not in first_line:
                extras.append(f"{label}={value}")
        if not extras:
            return text
        head, sep, rest = text.partition("\n")
        return f"{head} {' '.join(extras)}{sep}{rest}"


def under_systemd(environ: Mapping[str, str] | None = None) -> bool:
    """True when systemd started us: ``$JOURNAL_STREAM`` matches stderr, or ``$INVOCATION_ID``."""
    env = os.environ if environ is None else environ
    stream = env.get("JOURNAL_STREAM", "")
    if stream:
        try:
            dev, ino = (int(part) for part in stream.split(":", 1))
            st = os.fstat(sys.stderr.fileno())
            if (st.st_dev, st.st_ino) == (dev, ino):
                return True
        except (ValueError, OSError, AttributeError):
            pass
    return bool(env.get("INVOCATION_ID"))


def make_handler(
    environ: Mapping[str, str] | None = None, socket_path: str = JOURNAL_SOCKET
) -> logging.Handler:
    """The handler for this process: journald under systemd (socket present), else stderr.

    ``$DJANGO_RAY_LOG_TARGET`` (``journald`` or ``stderr``) overrides the detection.
    """
    env = os.environ if environ is None else environ
    target = env.get("DJANGO_RAY_LOG_TARGET", "").lower()
    if target not in ("", "journald", "stderr"):
        raise ValueError(
            f"DJANGO_RAY_LOG_TARGET={target!r} is not understood: use 'journald' or 'stderr'."
        )
    use_journal = target == "journald" or (
        target == "" and under_systemd(env) and os.path.exists(socket_path)
    )
    if use_journal:
        return JournalHandler(socket_path=socket_path, identifier="django-ray")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(ReadableFormatter())
    return handler


def configure_logging(
    level: int = logging.INFO, logger_name: str = "django_ray"
) -> logging.Handler:
    """Attach the right handler to the ``django_ray`` logger (idempotent); return it."""
    logger = logging.getLogger(logger_name)
    for existing in list(logger.handlers):
        if getattr(existing, "_django_ray_managed", False):
            logger.removeHandler(existing)
            existing.close()
    handler = make_handler()
    handler._django_ray_managed = True  # type: ignore[attr-defined]
    logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False
    return handler
