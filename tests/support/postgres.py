"""A throwaway PostgreSQL server for tests and benchmarks.

It runs the machine's own PostgreSQL binaries (``initdb``/``postgres``) in a temporary data
directory on a free local port, so it never collides with a server already on 5432. As root,
PostgreSQL refuses to start, so the server runs as the ``postgres`` system user (created with
``useradd`` when missing).
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

PG_BIN_GLOBS = ("/usr/lib/postgresql/*/bin",)


class PostgresUnavailable(RuntimeError):
    """No PostgreSQL binaries on this machine, or the server did not start."""


def find_pg_bin() -> Path:
    """Return the directory holding ``initdb`` and ``postgres``, newest major version first."""
    env = os.environ.get("DJANGO_RAY_PG_BIN")
    if env:
        return Path(env)
    candidates = sorted(
        (Path(p) for pattern in PG_BIN_GLOBS for p in glob.glob(pattern)),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
        reverse=True,
    )
    for candidate in candidates:
        if (candidate / "initdb").exists() and (candidate / "postgres").exists():
            return candidate
    which = shutil.which("initdb")
    if which:
        return Path(os.path.realpath(which)).parent
    raise PostgresUnavailable(
        "PostgreSQL server binaries (initdb, postgres) were not found. "
        "Install them with: apt-get install -y postgresql"
    )


def free_port() -> int:
    """Ask the kernel for a free TCP port on the loopback interface."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def free_ports(count: int, avoid: Iterable[int] = ()) -> list[int]:
    """``count`` distinct free TCP ports, none of them in ``avoid``.

    Separate :func:`free_port` calls can return the same port twice (each socket is closed
    before the next is asked for), which makes a process given several ports refuse to start;
    here every socket stays bound until all ports are chosen.
    """
    avoided = set(avoid)
    held: list[socket.socket] = []
    ports: list[int] = []
    try:
        while len(ports) < count:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            held.append(sock)
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
            if port not in avoided:
                ports.append(port)
    finally:
        for sock in held:
            sock.close()
    return ports


def _server_user() -> str | None:
    """The user to run the server as: ``None`` (ourselves) unless we are root."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", "postgres"],
            check=True,
        )
    return "postgres"


@dataclass
class PostgresServer:
    """A running throwaway server. Use :func:`running_postgres` to get one."""

    data_dir: Path
    port: int
    user: str = "postgres"
    host: str = "127.0.0.1"
    process: subprocess.Popen[bytes] | None = None
    run_as: str | None = None

    @property
    def dsn(self) -> str:
        return f"postgresql://{self.user}@{self.host}:{self.port}/postgres"

    def url(self, database: str) -> str:
        return f"postgresql://{self.user}@{self.host}:{self.port}/{database}"

    def django_database(self, name: str = "django_ray") -> dict[str, object]:
        """A ``DATABASES`` entry pointing at database ``name`` on this server."""
        return {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": name,
            "USER": self.user,
            "HOST": self.host,
            "PORT": str(self.port),
            "TEST": {"NAME": f"test_{name}"},
        }

    def create_database(self, name: str) -> None:
        import psycopg

        with psycopg.connect(self.dsn, autocommit=True) as conn:
            exists = conn.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", (name,)
            ).fetchone()
            if not exists:
                conn.execute(f'CREATE DATABASE "{name}"')

    def _cmd(self, argv: list[str]) -> list[str]:
        if self.run_as:
            return ["runuser", "-u", self.run_as, "--", *argv]
        return argv

    def start(self, timeout: float = 30.0) -> None:
        bin_dir = find_pg_bin()
        args = [
            str(bin_dir / "postgres"),
            "-D",
            str(self.data_dir),
            "-p",
            str(self.port),
            "-c",
            f"listen_addresses={self.host}",
            "-c",
            f"unix_socket_directories={self.data_dir}",
        ]
        log = open(self.data_dir / "server.log", "ab")  # noqa: SIM115 - lives as long as the server
        self.process = subprocess.Popen(
            self._cmd(args), stdout=log, stderr=log, start_new_session=True
        )
        self.wait_ready(timeout)

    def wait_ready(self, timeout: float = 30.0) -> None:
        import psycopg

        deadline = time.monotonic() + timeout
        last_error: Exception | None = None
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise PostgresUnavailable(
                    f"postgres exited with {self.process.returncode}; see {self.data_dir}/server.log:\n"
                    + (self.data_dir / "server.log").read_text(errors="replace")[-2000:]
                )
            try:
                with psycopg.connect(self.dsn, connect_timeout=2):
                    return
            except psycopg.OperationalError as exc:
                last_error = exc
                time.sleep(0.1)
        raise PostgresUnavailable(
            f"postgres did not accept connections in {timeout}s: {last_error}"
        )

    def stop(self, mode: str = "fast") -> None:
        """Stop the server: ``fast`` (SIGINT), ``smart`` (SIGTERM) or ``immediate`` (SIGQUIT)."""
        if self.process is None or self.process.poll() is not None:
            return
        sig = {"smart": signal.SIGTERM, "fast": signal.SIGINT, "immediate": signal.SIGQUIT}[mode]
        os.killpg(self.process.pid, sig)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def restart(self, mode: str = "fast") -> None:
        self.stop(mode)
        self.start()


def create_server(base_dir: Path | None = None) -> PostgresServer:
    """Initialise a data directory and return a started server on a free port."""
    bin_dir = find_pg_bin()
    run_as = _server_user()
    root = Path(tempfile.mkdtemp(prefix="django-ray-pg-", dir=base_dir))
    data_dir = root / "data"
    data_dir.mkdir()
    if run_as:
        shutil.chown(root, run_as)
        shutil.chown(data_dir, run_as)
        root.chmod(0o755)
    server = PostgresServer(data_dir=data_dir, port=free_port(), run_as=run_as)
    subprocess.run(
        server._cmd(
            [
                str(bin_dir / "initdb"),
                "-D",
                str(data_dir),
                "-U",
                "postgres",
                "--auth=trust",
                "--encoding=UTF8",
                "--no-sync",
            ]
        ),
        check=True,
        stdout=subprocess.DEVNULL,
    )
    with open(data_dir / "postgresql.conf", "a") as conf:
        # Throwaway data: durability is not needed, speed is.
        conf.write("\nfsync = off\nsynchronous_commit = off\nfull_page_writes = off\n")
        conf.write("max_connections = 200\nshared_buffers = 256MB\n")
    server.start()
    return server


def destroy_server(server: PostgresServer) -> None:
    server.stop("immediate")
    shutil.rmtree(server.data_dir.parent, ignore_errors=True)


@contextlib.contextmanager
def running_postgres(base_dir: Path | None = None) -> Iterator[PostgresServer]:
    """Context manager: a started throwaway server, removed afterwards."""
    server = create_server(base_dir)
    try:
        yield server
    finally:
        destroy_server(server)
