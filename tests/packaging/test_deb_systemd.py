"""The .deb in a booted Debian 13 container: offline install, units, restart, watchdog, purge.

One container (systemd 257, python3.13, PostgreSQL from a cached layer) boots on a private
bridge with no route out; the .deb built by ``packaging/build.sh`` is installed with apt and
exercised the way an operator would: ``systemctl``, ``journalctl``, ``django-ray``.

The tests run in file order and share the host. Figures (install time, watchdog restart
time, ``systemd-analyze security`` exposure) are printed and written to
``dist/packaging-figures.json``.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from testhosts import nspawn

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "packaging"))
import build_deb  # noqa: E402

DIST = ROOT / "dist"
REASON = nspawn.unavailable_reason()
if REASON and os.environ.get("DJANGO_RAY_REQUIRE_LAB") == "1":
    raise RuntimeError(f"DJANGO_RAY_REQUIRE_LAB=1 but containers cannot boot here: {REASON}")
pytestmark = [
    pytest.mark.packaging,
    pytest.mark.slow,
    # The first test builds the .deb (several minutes on a cold machine) and boots the host.
    pytest.mark.timeout(1500),
    pytest.mark.skipif(REASON is not None, reason=f"cannot boot containers: {REASON}"),
]

UNITS = [
    "django-ray-worker@.service",
    "django-ray-web.service",
    "ray-head.service",
    "ray-worker.service",
    "django-ray.target",
]
#: PostgreSQL from Debian in a cached layer. No cluster is created at install time (that would
#: pick a port on the machine's network); the test creates it inside the booted host.
PG_LAYER_SCRIPT = """
mkdir -p /etc/postgresql-common
echo 'create_main_cluster = false' > /etc/postgresql-common/createcluster.conf
apt-get update -qq
apt-get install -y -qq postgresql supervisor >/dev/null
systemctl disable supervisor.service
apt-get clean
rm -rf /var/lib/apt/lists/*
"""
FIGURES: dict[str, object] = {}


def _inputs_mtime() -> float:
    paths = [ROOT / "pyproject.toml"]
    for folder in ("django_ray", "packaging", "systemd", "example", "docs"):
        paths += [
            p for p in (ROOT / folder).rglob("*") if p.is_file() and "__pycache__" not in p.parts
        ]
    return max(p.stat().st_mtime for p in paths if p.exists())


def built_deb() -> Path:
    """The .deb of this checkout: $DJANGO_RAY_DEB, an up-to-date dist/ one, or a fresh build."""
    if os.environ.get("DJANGO_RAY_DEB"):
        deb = Path(os.environ["DJANGO_RAY_DEB"])
        if not deb.exists():
            raise FileNotFoundError(f"DJANGO_RAY_DEB={deb} does not exist")
        return deb
    debs = sorted(DIST.glob("django-ray_*_amd64.deb"))
    if debs and debs[-1].stat().st_mtime > _inputs_mtime():
        return debs[-1]
    nspawn.log("building the .deb with packaging/build.sh (inputs changed or none built)")
    subprocess.run(
        ["bash", str(ROOT / "packaging" / "build.sh"), "--no-lintian"], check=True, cwd=ROOT
    )
    debs = sorted(DIST.glob("django-ray_*_amd64.deb"))
    assert debs, "packaging/build.sh built no .deb"
    return debs[-1]


@pytest.fixture(scope="module")
def deb() -> Path:
    return built_deb()


class Lintian(threading.Thread):
    """lintian on the .deb in the build root, beside the container tests (it takes minutes)."""

    def __init__(self, deb: Path) -> None:
        super().__init__(daemon=True)
        self.deb = deb
        self.output = ""
        self.error: BaseException | None = None
        self.seconds = 0.0
        self.proc: subprocess.Popen[str] | None = None

    def run(self) -> None:
        started = time.monotonic()
        try:
            self.output = build_deb.lintian(self.deb, stream=False, on_start=self._remember)
        except BaseException as error:  # reported by test_lintian_clean
            self.error = error
        self.seconds = time.monotonic() - started

    def _remember(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc

    def stop(self) -> None:
        """Stop lintian if the tests ended before it (its container and mounts go too)."""
        if self.is_alive() and self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
        self.join(timeout=60)


@pytest.fixture(scope="module")
def lintian_run(deb: Path) -> Iterator[Lintian]:
    run = Lintian(deb)
    run.start()
    yield run
    run.stop()


@pytest.fixture(scope="module")
def host(deb: Path, lintian_run: Lintian) -> Iterator[nspawn.Host]:
    base = nspawn.base_root()
    pg = nspawn.layer("postgres", [base], PG_LAYER_SCRIPT)
    lab = nspawn.Lab("dp" + uuid.uuid4().hex[:5])
    try:
        lab.up(["app"], [pg, base])
        app = lab.host("app")
        app.copy_in(deb, f"/root/{deb.name}")
        yield app
    finally:
        if FIGURES:
            DIST.mkdir(exist_ok=True)
            (DIST / "packaging-figures.json").write_text(json.dumps(FIGURES, indent=2) + "\n")
            print(f"\npackaging figures: {json.dumps(FIGURES)}")
        lab.down()


def sh(host: nspawn.Host, command: str, timeout: float = 300) -> str:
    return host.run(command, timeout=timeout).stdout


def wait_for(host: nspawn.Host, command: str, timeout: float, what: str) -> str:
    """Poll ``command`` until it exits 0; its stdout. Fails naming ``what`` with the journal."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = host.run(command, check=False, timeout=60)
        if result.returncode == 0:
            return result.stdout
        time.sleep(0.5)
    journal = host.run("journalctl -n 80 --no-pager", check=False).stdout
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}\n{journal}")


def django(host: nspawn.Host, code: str, timeout: float = 120) -> str:
    """Python in the packaged project's Django shell (as the django-ray user)."""
    return sh(host, f"django-ray shell -v 0 -c {shlex.quote(code)}", timeout=timeout)


def marked(out: str, marker: str) -> str:
    """The text after ``marker`` on the line printed by a shell snippet (ignores other output)."""
    for line in out.splitlines():
        if line.startswith(marker):
            return line[len(marker) :]
    raise AssertionError(f"no {marker!r} line in:\n{out}")


def enqueue(host: nspawn.Host, count: int, offset: int) -> list[str]:
    out = django(
        host,
        "from demo.tasks import add\n"
        f"print('IDS:' + ' '.join(str(add.enqueue({offset} + i, 1000).id) for i in range({count})))",
    )
    ids = marked(out, "IDS:").split()
    assert len(ids) == count, out
    return ids


def states(host: nspawn.Host, ids: list[str]) -> dict[str, str]:
    out = django(
        host,
        "import json\nfrom django_ray.models import RayTaskExecution as R\n"
        f"ids = {ids!r}\n"
        "print('STATES:' + json.dumps("
        "{str(r.task_id): r.state for r in R.objects.filter(task_id__in=ids)}))",
    )
    return json.loads(marked(out, "STATES:"))


def wait_tasks_done(host: nspawn.Host, ids: list[str], timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    seen: dict[str, str] = {}
    while time.monotonic() < deadline:
        seen = states(host, ids)
        if len(seen) == len(ids) and set(seen.values()) == {"SUCCEEDED"}:
            return
        if any(s in ("FAILED", "LOST", "CANCELLED") for s in seen.values()):
            break
        time.sleep(1)
    journal = host.run("journalctl -u 'django-ray-worker@*' -n 60 --no-pager", check=False)
    raise AssertionError(f"tasks not all SUCCEEDED: {seen}\n{journal.stdout}")


def main_pid(host: nspawn.Host, unit: str) -> int:
    return int(sh(host, f"systemctl show -p MainPID --value {unit}").strip())


def test_install_offline(host: nspawn.Host, deb: Path) -> None:
    # No route out of the container: apt can only use what is on the host already.
    assert host.run("curl -sS -m 3 http://deb.debian.org/ >/dev/null", check=False).returncode != 0
    started = time.monotonic()
    sh(host, f"DEBIAN_FRONTEND=noninteractive apt-get install -y /root/{deb.name}")
    FIGURES["install_seconds"] = round(time.monotonic() - started, 1)
    FIGURES["deb_bytes"] = deb.stat().st_size
    assert sh(host, "dpkg-query -W -f '${Status}' django-ray") == "install ok installed"
    # The venv runs the target's interpreter, not a copy of the build machine's.
    assert "home = /usr/bin" in sh(host, "cat /opt/django-ray/venv/pyvenv.cfg")
    assert sh(host, "readlink -f /opt/django-ray/venv/bin/python").strip() == "/usr/bin/python3.13"
    assert sh(host, "command -v django-ray").strip() == "/usr/bin/django-ray"
    # System user, conffiles and generated secrets with the documented modes.
    assert sh(host, "getent passwd django-ray").split(":")[5] == "/var/lib/django-ray"
    modes = sh(
        host,
        "stat -c '%n %a %U:%G' /etc/django-ray/django-ray.env /etc/django-ray/ray.env "
        "/etc/django-ray/secrets.env /etc/django-ray/ray-auth-token /var/lib/django-ray",
    ).splitlines()
    assert modes == [
        "/etc/django-ray/django-ray.env 644 root:root",
        "/etc/django-ray/ray.env 644 root:root",
        "/etc/django-ray/secrets.env 640 root:django-ray",
        "/etc/django-ray/ray-auth-token 640 root:django-ray",
        "/var/lib/django-ray 750 django-ray:django-ray",
    ]
    conffiles = sh(host, "dpkg-query -W -f '${Conffiles}' django-ray")
    assert "/etc/django-ray/django-ray.env" in conffiles
    assert "/etc/django-ray/secrets.env" not in conffiles
    # The command runs Django's management commands as the service user.
    out = sh(host, "django-ray help")
    assert "django_ray_worker" in out
    assert sh(host, "django-ray exec id -un").strip() == "django-ray"


def test_maintainer_scripts_are_idempotent(host: nspawn.Host, deb: Path) -> None:
    secret_before = sh(host, "sha256sum /etc/django-ray/secrets.env /etc/django-ray/ray-auth-token")
    sh(host, f"DEBIAN_FRONTEND=noninteractive apt-get install -y --reinstall /root/{deb.name}")
    sh(host, "dpkg-reconfigure django-ray 2>/dev/null || dpkg --configure -a")
    assert sh(host, "sha256sum /etc/django-ray/secrets.env /etc/django-ray/ray-auth-token") == (
        secret_before
    )
    assert sh(host, "getent passwd django-ray | wc -l").strip() == "1"


def test_units_verify_and_security(host: nspawn.Host) -> None:
    for unit in UNITS:
        name = unit.replace("@.", "@default.")
        result = host.run(["systemd-analyze", "verify", name], check=False)
        assert result.returncode == 0, f"{unit}:\n{result.stdout}{result.stderr}"
        assert result.stderr.strip() == "", f"{unit}: {result.stderr}"
    out = sh(host, "systemd-analyze security --no-pager django-ray-worker@default.service")
    match = re.search(r"Overall exposure level for \S+: ([0-9.]+)", out)
    assert match, out[-2000:]
    FIGURES["worker_security_exposure"] = float(match.group(1))
    # Hardening must not regress: both units were at 1.4 when issue #12 was written.
    assert float(match.group(1)) <= 1.4, out
    web = sh(host, "systemd-analyze security --no-pager django-ray-web.service")
    FIGURES["web_security_exposure"] = float(
        re.search(r"Overall exposure level for \S+: ([0-9.]+)", web).group(1)  # type: ignore[union-attr]
    )
    assert FIGURES["web_security_exposure"] <= 1.4, web


def test_services_start(host: nspawn.Host) -> None:
    # PostgreSQL (cluster created here, see PG_LAYER_SCRIPT) and the application database.
    sh(host, "pg_createcluster 17 main >/dev/null && systemctl start postgresql@17-main")
    sh(
        host,
        'su postgres -c "psql -q -c \\"CREATE ROLE django_ray LOGIN PASSWORD \'pw\'\\"" && '
        "su postgres -c 'createdb -O django_ray django_ray'",
    )
    sh(
        host,
        "sed -i 's#^DATABASE_URL=.*#DATABASE_URL=postgresql://django_ray:pw@127.0.0.1:5432/"
        "django_ray#' /etc/django-ray/secrets.env",
    )
    # Small Ray: nothing limits a container's memory, so say what Ray may take.
    sh(
        host,
        "sed -i 's#^RAY_START_ARGS=.*#RAY_START_ARGS=--num-cpus=2 --memory=2000000000 "
        "--object-store-memory=200000000 --include-dashboard=false#' /etc/django-ray/ray.env",
    )
    sh(
        host,
        "sed -i 's#^DJANGO_RAY_CONCURRENCY=.*#DJANGO_RAY_CONCURRENCY=2#' "
        "/etc/django-ray/django-ray.env",
    )
    sh(host, "django-ray migrate --noinput", timeout=300)
    started = time.monotonic()
    sh(host, "systemctl start ray-head.service")
    wait_for(host, "ss -ltn | grep -q ':6379 '", 120, "Ray GCS port 6379")
    FIGURES["ray_head_start_seconds"] = round(time.monotonic() - started, 1)
    started = time.monotonic()
    # Type=notify: start returns once the worker sent READY=1 (lease and Ray connection up).
    sh(host, "systemctl start django-ray-worker@default.service", timeout=200)
    FIGURES["worker_ready_seconds"] = round(time.monotonic() - started, 1)
    assert sh(host, "systemctl is-active django-ray-worker@default").strip() == "active"
    status = sh(host, "systemctl show -p StatusText --value django-ray-worker@default").strip()
    assert status, "worker sent no STATUS="
    # Journald carries the queue of every worker line.
    assert sh(host, "journalctl QUEUE=default -o cat --no-pager | wc -l").strip() != "0"


def test_restart_keeps_tasks_flowing(host: nspawn.Host) -> None:
    before = enqueue(host, 5, 0)
    wait_tasks_done(host, before)
    queued_then_restart = enqueue(host, 5, 100)
    old_pid = main_pid(host, "django-ray-worker@default")
    started = time.monotonic()
    sh(host, "systemctl restart django-ray-worker@default", timeout=200)
    FIGURES["worker_restart_seconds"] = round(time.monotonic() - started, 1)
    assert main_pid(host, "django-ray-worker@default") not in (0, old_pid)
    after = enqueue(host, 5, 200)
    wait_tasks_done(host, queued_then_restart + after)
    # The old worker was stopped by SIGTERM and exited cleanly (no kill after the grace period).
    journal = sh(host, "journalctl -u django-ray-worker@default --no-pager -o cat")
    assert "Failed with result" not in journal, journal[-3000:]


METRICS = "http://127.0.0.1:8000/api/metrics"
#: curl arguments sending the bearer token the postinst generated into secrets.env.
AUTHORIZED = (
    "-H \"Authorization: Bearer $(sed -n 's/^DJANGO_RAY_METRICS_BEARER_TOKEN=//p' "
    '/etc/django-ray/secrets.env)"'
)


def test_web_serves_metrics(host: nspawn.Host) -> None:
    """gunicorn (Type=notify) serves the project; /api/metrics has the runbook's series."""
    sh(host, "systemctl start django-ray-web.service", timeout=120)
    body = wait_for(host, f"curl -fsS -m 5 {AUTHORIZED} {METRICS}", 60, "gunicorn to answer")
    # Without the package's generated token: 401. The demo's anonymous task API is off.
    assert sh(host, f"curl -sS -o /dev/null -w '%{{http_code}}' -m 5 {METRICS}") == "401"
    tasks_api = "http://127.0.0.1:8000/api/tasks"
    assert sh(host, f"curl -sS -o /dev/null -w '%{{http_code}}' -m 5 -X POST {tasks_api}") == "404"
    for series in ("django_ray_tasks_queued", "django_ray_tasks_running", "django_ray_tasks_total"):
        assert series in body, body[:2000]
    assert re.search(r'django_ray_tasks_total\{state="SUCCEEDED"\} [1-9]', body), body[:3000]


def test_watchdog_kills_hung_worker(host: nspawn.Host) -> None:
    """SIGUSR2 (test-only fault switch) hangs the loop: pings stop, systemd kills + restarts."""
    sh(
        host,
        "mkdir -p /etc/systemd/system/django-ray-worker@.service.d && printf '%s\\n' "
        "'[Service]' 'WatchdogSec=8' 'Environment=DJANGO_RAY_ENABLE_FAULTS=1' "
        "> /etc/systemd/system/django-ray-worker@.service.d/50-test-faults.conf && "
        "systemctl daemon-reload && systemctl restart django-ray-worker@default",
        timeout=200,
    )
    hung_pid = main_pid(host, "django-ray-worker@default")
    since = sh(host, "date '+%Y-%m-%d %H:%M:%S'").strip()
    started = time.monotonic()
    sh(host, f"kill -USR2 {hung_pid}")
    wait_for(
        host,
        f'test "$(systemctl show -p MainPID --value django-ray-worker@default)" != {hung_pid} '
        "&& systemctl is-active -q django-ray-worker@default",
        120,
        "systemd to kill the hung worker and start a new one",
    )
    FIGURES["watchdog_restart_seconds"] = round(time.monotonic() - started, 1)
    FIGURES["watchdog_sec"] = 8
    journal = sh(host, f"journalctl -u django-ray-worker@default --since '{since}' --no-pager")
    assert "Watchdog timeout" in journal, journal[-3000:]
    restarts = sh(host, "systemctl show -p NRestarts --value django-ray-worker@default").strip()
    assert int(restarts) >= 1
    # The new worker runs tasks.
    wait_tasks_done(host, enqueue(host, 3, 300))
    sh(
        host,
        "rm /etc/systemd/system/django-ray-worker@.service.d/50-test-faults.conf && "
        "systemctl daemon-reload",
    )


def test_graceful_stop_exits_zero(host: nspawn.Host) -> None:
    sh(host, "systemctl restart django-ray-worker@default", timeout=200)
    sh(host, "systemctl stop django-ray-worker@default", timeout=120)
    show = sh(host, "systemctl show -p Result -p ExecMainStatus django-ray-worker@default")
    assert "Result=success" in show and "ExecMainStatus=0" in show, show


def test_supervisor_runs_the_same_processes(host: nspawn.Host) -> None:
    """Hosts without systemd: the shipped supervisor config runs Ray, web and a worker."""
    sh(host, "systemctl stop django-ray-web 'django-ray-worker@*' ray-head", timeout=120)
    sh(
        host,
        "cp /usr/share/django-ray/supervisor-django-ray.conf /etc/supervisor/conf.d/django-ray.conf"
        " && systemctl start supervisor.service",
    )
    wait_for(
        host,
        "supervisorctl status django-ray:* | grep -c RUNNING | grep -qx 3",
        120,
        "the three supervisor programs to be RUNNING",
    )
    wait_tasks_done(host, enqueue(host, 3, 400))
    body = wait_for(host, f"curl -fsS -m 5 {AUTHORIZED} {METRICS}", 60, "gunicorn under supervisor")
    assert "django_ray_tasks_queued" in body
    sh(host, "supervisorctl stop django-ray:*", timeout=120)
    sh(host, "systemctl stop supervisor.service && rm /etc/supervisor/conf.d/django-ray.conf")


def test_purge(host: nspawn.Host, deb: Path) -> None:
    sh(host, "systemctl enable ray-head.service django-ray-worker@default.service")
    sh(host, "DEBIAN_FRONTEND=noninteractive apt-get purge -y django-ray", timeout=300)
    assert host.run("dpkg-query -W -f '${Status}' django-ray", check=False).stdout in (
        "",
        "unknown ok not-installed",
    )
    leftovers = sh(
        host,
        "for p in /opt/django-ray /etc/django-ray /var/lib/django-ray /usr/bin/django-ray "
        "/usr/lib/systemd/system/django-ray-worker@.service "
        "/usr/lib/systemd/system/ray-head.service; "
        "do [ -e $p ] && echo $p; done; "
        "find /etc/systemd/system -lname '*django-ray*' -o -lname '*ray-head*'; true",
    )
    assert leftovers.strip() == ""
    assert host.run("pgrep -u django-ray", check=False).stdout.strip() == ""
    # The system user stays (Debian practice; documented in docs/install-debian.md).
    assert host.run("getent passwd django-ray", check=False).returncode == 0


def test_lintian_clean(lintian_run: Lintian) -> None:
    """trixie's lintian: no error or warning; every override is justified in the file."""
    lintian_run.join(timeout=1200)
    assert not lintian_run.is_alive(), "lintian still running after 20 min"
    assert lintian_run.error is None, str(lintian_run.error)
    FIGURES["lintian_seconds"] = round(lintian_run.seconds, 1)
    assert not re.search(r"^[EW]: ", lintian_run.output, re.M), lintian_run.output[-3000:]
