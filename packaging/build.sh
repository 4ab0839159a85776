#!/bin/bash
# One command for every artefact: wheel + sdist (python -m build, twine check) and the Debian 13
# .deb (built in a cached trixie build root, lintian-checked). Output in dist/.
#   packaging/build.sh            wheel, sdist and .deb
#   packaging/build.sh --no-deb   wheel and sdist only
#   packaging/build.sh --no-lintian   skip lintian (tests/packaging runs it beside the container)
# Caches: $DJANGO_RAY_LAB_CACHE (default /var/cache/django-ray-test): base root, build layer,
# wheelhouse. First run ~5 min, then ~3 min (lintian over ~20 000 files dominates).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=../scripts/lib.sh
source "$ROOT/scripts/lib.sh"
cd "$ROOT"

with_deb=1
deb_args=()
for arg in "$@"; do
  case "$arg" in
    --no-deb) with_deb=0 ;;
    --no-lintian) deb_args+=(--no-lintian) ;;
    -h|--help) sed -n '2,9p' "$0"; exit 0 ;;
    *) echo "error: unknown option $arg (use --no-deb or --help)" >&2; exit 2 ;;
  esac
done

ensure_venv test
if ! "$VENV/bin/python" -c 'import build, twine' 2>/dev/null; then
  echo "==> installing build and twine into $VENV"
  "$VENV/bin/pip" install -q build twine
fi

echo "==> wheel and sdist"
rm -rf "$ROOT/dist" "$ROOT/build"
mkdir -p "$ROOT/dist"
"$VENV/bin/python" -m build --sdist --wheel --outdir "$ROOT/dist" "$ROOT" >"$ROOT/dist/build.log" 2>&1 \
  || { tail -40 "$ROOT/dist/build.log"; exit 1; }
"$VENV/bin/twine" check --strict "$ROOT"/dist/*.whl "$ROOT"/dist/*.tar.gz
ls -l "$ROOT"/dist/*.whl "$ROOT"/dist/*.tar.gz

if [ "$with_deb" = 1 ]; then
  echo "==> Debian 13 package"
  "$VENV/bin/python" "$ROOT/packaging/build_deb.py" --dist "$ROOT/dist" "${deb_args[@]}"
fi
