"""Build ``dist/django-ray_<version>-1_amd64.deb`` inside a cached Debian 13 build root.

The build root is the shared trixie base (testhosts) plus a cached layer with lintian. The
virtualenv is created by the root's own ``/usr/bin/python3.13`` from ``requirements.lock``
(hash-checked) and a local wheelhouse, with no network inside the build. Run through
``packaging/build.sh``, which builds the django-ray wheel first.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "packaging"))

import pyplatform  # noqa: E402

from testhosts import nspawn  # noqa: E402

BUILD_LAYER_SCRIPT = """
apt-get update -qq
apt-get install -y -qq lintian >/dev/null
apt-get clean
rm -rf /var/lib/apt/lists/*
"""


def upstream_version() -> str:
    """``__version__`` from django_ray/__init__.py (the one place it lives)."""
    text = (ROOT / "django_ray" / "__init__.py").read_text()
    match = re.search(r'^__version__ = "([^"]+)"', text, re.M)
    if not match:
        raise SystemExit("error: no __version__ in django_ray/__init__.py")
    return match.group(1)


def build_root() -> list[Path]:
    """Lower dirs of the Debian 13 build root (cached): the lintian layer over the base."""
    base = nspawn.base_root()
    return [nspawn.layer("debbuild", [base], BUILD_LAYER_SCRIPT), base]


def lintian(
    deb: Path,
    *,
    stream: bool = True,
    on_start: Callable[[subprocess.Popen[str]], None] | None = None,
) -> str:
    """Run trixie's lintian on ``deb`` in the build root; its output. Raises on any E:/W: tag.

    Overrides (each justified) are in packaging/debian/lintian-overrides, shipped in the .deb.
    """
    work = nspawn.CACHE / "run" / f"lintian-{os.getpid()}-{int(time.time())}"
    started = time.monotonic()
    try:
        with nspawn.overlay(build_root(), work) as root:
            result = nspawn.run_in_root(
                root,
                f"lintian --fail-on error,warning --display-info /deb/{deb.name}",
                network=False,
                binds_ro=[(deb.resolve().parent, "/deb")],
                stream=stream,
                on_start=on_start,
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    nspawn.log(f"lintian clean on {deb.name} in {time.monotonic() - started:.0f} s")
    return result.stdout


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dist", type=Path, default=ROOT / "dist")
    parser.add_argument("--revision", default="1", help="Debian revision (default 1)")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    parser.add_argument(
        "--no-lintian", action="store_true", help="skip lintian (the tests run it separately)"
    )
    args = parser.parse_args()
    reason = nspawn.unavailable_reason()
    if reason:
        print(f"error: cannot build the .deb here: {reason}", file=sys.stderr)
        return 2
    upstream = upstream_version()
    version = f"{upstream}-{args.revision}"
    wheel = args.dist / f"django_ray-{upstream}-py3-none-any.whl"
    if not wheel.exists():
        print(f"error: {wheel} missing: run packaging/build.sh (builds it first)", file=sys.stderr)
        return 2
    started = time.monotonic()
    wheelhouse = nspawn.CACHE / "wheelhouse"
    pyplatform.wheelhouse(sys.executable, wheelhouse)
    lowers = build_root()
    work = nspawn.CACHE / "run" / f"debbuild-{os.getpid()}-{int(time.time())}"
    deb = args.dist / f"django-ray_{version}_amd64.deb"
    deb.unlink(missing_ok=True)
    nspawn.log(f"building {deb.name} in the Debian 13 build root (offline)")
    try:
        with nspawn.overlay(lowers, work) as root:
            nspawn.run_in_root(
                root,
                f"bash /src/packaging/debian/build-in-root.sh {version}",
                network=False,
                binds_ro=[(ROOT, "/src"), (wheelhouse, "/wheelhouse")],
                binds=[(args.dist.resolve(), "/dist")],
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if not args.no_lintian:
        lintian(deb)
    summary = {
        "deb": str(deb),
        "version": version,
        "size_bytes": deb.stat().st_size,
        "build_seconds": round(time.monotonic() - started, 1),
    }
    if args.json:
        print(json.dumps(summary))
    else:
        print(
            f"==> {deb} ({summary['size_bytes'] / 2**20:.1f} MiB) "
            f"built in {summary['build_seconds']} s"
        )
    (args.dist / "deb-summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
