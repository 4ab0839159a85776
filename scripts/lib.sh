# Shared helpers for scripts/*: find a Python >= 3.12 and make the project's virtualenv.
# shellcheck shell=bash

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${DJANGO_RAY_VENV:-$ROOT/.venv}"

find_python() {
  local candidate
  for candidate in python3.13 python3.12 python3; do
    if command -v "$candidate" >/dev/null 2>&1 &&
       "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 12))' 2>/dev/null; then
      command -v "$candidate"; return 0
    fi
  done
  # pyenv installs versions that are not on PATH by their plain name.
  for candidate in "${PYENV_ROOT:-$HOME/.pyenv}"/versions/3.13*/bin/python3 \
                   "${PYENV_ROOT:-$HOME/.pyenv}"/versions/3.12*/bin/python3; do
    if [ -x "$candidate" ]; then echo "$candidate"; return 0; fi
  done
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get update -qq && apt-get install -y -qq python3 python3-venv >/dev/null
    if python3 -c 'import sys; sys.exit(sys.version_info < (3, 12))' 2>/dev/null; then
      command -v python3; return 0
    fi
  fi
  echo "error: django-ray needs Python 3.12 or newer (Django 6). Install python3.12+ and retry." >&2
  return 1
}

# ensure_venv EXTRAS: create .venv and install the project with the given extras (idempotent).
ensure_venv() {
  local extras="$1" py stamp
  stamp="$VENV/.installed-$(echo "$extras" | tr ',' '-')"
  if [ ! -x "$VENV/bin/python" ]; then
    py="$(find_python)" || return 1
    echo "==> creating virtualenv $VENV with $py"
    "$py" -m venv "$VENV"
  fi
  if [ ! -f "$stamp" ] || [ "$ROOT/pyproject.toml" -nt "$stamp" ]; then
    echo "==> installing django-ray[$extras] and its dependencies"
    # (pip's warnings about this machine's extra local indexes are noise: filtered)
    "$VENV/bin/pip" install -q --upgrade pip 2>&1 | grep -v "is ignored" || true
    "$VENV/bin/pip" install -q -e "$ROOT[$extras]" 2> >(grep -v -e "is ignored" -e "BuildBackendWarning" -e "_filter_existing_files" >&2)
    touch "$stamp"
  fi
}

# ensure_postgres_binaries: the test suite and demo start their own throwaway server.
ensure_postgres_binaries() {
  if ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then return 0; fi
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "==> installing PostgreSQL server binaries (apt-get install postgresql)"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
    # The tests run their own servers; the distribution's default cluster is not needed.
    if command -v pg_lsclusters >/dev/null; then
      pg_lsclusters -h | while read -r ver name _; do pg_ctlcluster "$ver" "$name" stop || true; done
    fi
  else
    echo "error: PostgreSQL server binaries are missing; run: sudo apt-get install postgresql" >&2
    return 1
  fi
}
