"""The journald handler against a real AF_UNIX datagram socket (journald's wire protocol)."""

from __future__ import annotations

import array
import logging
import os
import socket
import struct
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from django_ray.journald import (
    JournalHandler,
    ReadableFormatter,
    decode_message,
    encode_field,
    encode_message,
    make_handler,
    syslog_priority,
    under_systemd,
)


@pytest.fixture
def journal_socket(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    path = str(tmp_path / "journal.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(5)
    yield sock, path
    sock.close()


def _receive(sock: socket.socket) -> dict[str, list[bytes]]:
    """One message as journald would read it: a datagram, or a passed memfd."""
    fds = array.array("i")
    data, ancdata, _flags, _addr = sock.recvmsg(8 << 20, socket.CMSG_SPACE(fds.itemsize))
    for level, kind, payload in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(payload[: len(payload) - len(payload) % fds.itemsize])
    if fds:
        fd = fds[0]
        try:
            size = os.fstat(fd).st_size
            data = os.pread(fd, size, 0)
        finally:
            os.close(fd)
    return decode_message(data)


def _logger(handler: logging.Handler) -> logging.Logger:
    logger = logging.getLogger(f"django_ray.test.{id(handler)}")
    logger.handlers[:] = [handler]
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    return logger


def test_encoding_simple_and_length_prefixed_fields() -> None:
    assert encode_field("MESSAGE", "hello") == b"MESSAGE=hello\n"
    multi = encode_field("MESSAGE", "line 1\nline 2")
    assert multi == b"MESSAGE\n" + struct.pack("<Q", 13) + b"line 1\nline 2\n"
    binary = encode_field("BLOB", b"a\0b")
    assert binary == b"BLOB\n" + struct.pack("<Q", 3) + b"a\0b\n"
    message = encode_message([("A", "1"), ("B", "x\ny"), ("A", "2")])
    assert decode_message(message) == {"A": [b"1", b"2"], "B": [b"x\ny"]}


@pytest.mark.parametrize("name", ["message", "_PRIVATE", "1ABC", "A-B", "A" * 65, ""])
def test_invalid_field_names_are_refused(name: str) -> None:
    with pytest.raises(ValueError, match="journal field name"):
        encode_field(name, "x")


def test_priorities_follow_syslog() -> None:
    assert [syslog_priority(lvl) for lvl in (10, 20, 30, 40, 50)] == [7, 6, 4, 3, 2]


def test_handler_sends_structured_fields(journal_socket: tuple[socket.socket, str]) -> None:
    sock, path = journal_socket
    logger = _logger(JournalHandler(socket_path=path, identifier="django-ray"))
    logger.info(
        "succeeded task_id=%s",
        "abc123",
        extra={
            "task_id": "abc123",
            "callable_path": "example.tasks.add",
            "queue": "default",
            "worker_id": "host-1-42",
            "state": "SUCCEEDED",
            "attempt": 2,
        },
    )
    fields = _receive(sock)
    assert fields["MESSAGE"] == [b"succeeded task_id=abc123"]
    assert fields["PRIORITY"] == [b"6"]
    assert fields["SYSLOG_IDENTIFIER"] == [b"django-ray"]
    assert fields["TASK_ID"] == [b"abc123"]
    assert fields["CALLABLE"] == [b"example.tasks.add"]
    assert fields["QUEUE"] == [b"default"]
    assert fields["WORKER_ID"] == [b"host-1-42"]
    assert fields["STATE"] == [b"SUCCEEDED"]
    assert fields["ATTEMPT"] == [b"2"]
    assert fields["CODE_FUNC"] == [b"test_handler_sends_structured_fields"]


def test_exception_traceback_is_one_multiline_field(
    journal_socket: tuple[socket.socket, str],
) -> None:
    sock, path = journal_socket
    logger = _logger(JournalHandler(socket_path=path))
    try:
        raise KeyError("missing")
    except KeyError:
        logger.exception("failed permanently", extra={"task_id": "t1", "state": "FAILED"})
    fields = _receive(sock)
    message = fields["MESSAGE"][0].decode()
    assert message.startswith("failed permanently\nTraceback (most recent call last):")
    assert "KeyError: 'missing'" in message
    assert fields["PRIORITY"] == [b"3"]
    assert fields["EXCEPTION_CLASS"] == [b"builtins.KeyError"]
    assert fields["STATE"] == [b"FAILED"]


def test_oversized_message_goes_through_a_sealed_memfd(
    journal_socket: tuple[socket.socket, str],
) -> None:
    sock, path = journal_socket
    logger = _logger(JournalHandler(socket_path=path))
    big = "x" * (6 << 20)  # larger than any AF_UNIX datagram the kernel accepts here
    logger.warning("big %s", big, extra={"task_id": "huge"})
    fields = _receive(sock)
    assert fields["MESSAGE"] == [f"big {big}".encode()]
    assert fields["TASK_ID"] == [b"huge"]


def test_missing_socket_is_refused_then_reported_not_raised(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "journal.sock"
    with pytest.raises(FileNotFoundError, match="journald is not running"):
        JournalHandler(socket_path=str(path))
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    handler = JournalHandler(socket_path=str(path))
    sock.close()
    path.unlink()  # journald went away after the handler was made
    logger = _logger(handler)
    logger.info("nobody listens")  # must not raise into the caller
    assert "--- Logging error ---" in capsys.readouterr().err  # logging's own error report
    with pytest.raises(FileNotFoundError):
        handler.send(b"MESSAGE=x\n")


def test_detection_of_systemd(tmp_path: Path) -> None:
    st = os.fstat(sys.stderr.fileno())
    assert under_systemd({"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"})
    assert not under_systemd({"JOURNAL_STREAM": "1:1"})
    assert under_systemd({"INVOCATION_ID": "0123abcd"})
    assert not under_systemd({})

    socket_path = tmp_path / "journal.sock"
    assert isinstance(make_handler({"INVOCATION_ID": "x"}, str(socket_path)), logging.StreamHandler)
    socket_path.touch()
    assert isinstance(make_handler({"INVOCATION_ID": "x"}, str(socket_path)), JournalHandler)
    assert isinstance(make_handler({}, str(socket_path)), logging.StreamHandler)
    forced = make_handler(
        {"DJANGO_RAY_LOG_TARGET": "stderr", "INVOCATION_ID": "x"}, str(socket_path)
    )
    assert not isinstance(forced, JournalHandler)
    with pytest.raises(ValueError, match="DJANGO_RAY_LOG_TARGET"):
        make_handler({"DJANGO_RAY_LOG_TARGET": "syslog"}, str(socket_path))


def test_readable_stderr_lines_carry_the_fields() -> None:
    formatter = ReadableFormatter()
    record = logging.LogRecord(
        "django_ray.worker", logging.INFO, __file__, 1, "lease lost", (), None
    )
    record.worker_id = "w1"
    record.state = "RUNNING"
    line = formatter.format(record)
    assert line.endswith("INFO django_ray.worker: lease lost worker_id=w1 state=RUNNING")
    record = logging.LogRecord(
        "django_ray.worker", logging.INFO, __file__, 1, "claimed worker_id=w1", (), None
    )
    record.worker_id = "w1"
    assert formatter.format(record).endswith("claimed worker_id=w1")
