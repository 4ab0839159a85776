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

# apt_install PURPOSE PACKAGE...: install Debian packages in one visible step, or fail naming them.
# Services they ship are not started (policy-rc.d): tests run their own servers on free ports.
apt_install() {
  local purpose="$1" policy=/usr/sbin/policy-rc.d added_policy=0 log
  shift
  if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
    echo "error: $purpose needs these Debian packages: $*" >&2
    echo "       install them with: sudo apt-get install $*" >&2
    return 1
  fi
  echo "==> installing $purpose: $* (apt-get)"
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' > "$policy" && chmod 755 "$policy" && added_policy=1
  fi
  log="$(mktemp)"
  if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
           --no-install-recommends "$@"; } >"$log" 2>&1; then
    [ "$added_policy" = 1 ] && rm -f "$policy"
    tail -n 20 "$log" >&2; rm -f "$log"
    echo "error: apt-get could not install: $* (see the lines above); install them by hand and retry" >&2
    return 1
  fi
  rm -f "$log"
  [ "$added_policy" = 1 ] && rm -f "$policy"
  # The distribution's default PostgreSQL cluster is not needed (and would hold a port).
  if command -v pg_lsclusters >/dev/null; then
    pg_lsclusters -h | while read -r ver name _; do pg_ctlcluster "$ver" "$name" stop >/dev/null 2>&1 || true; done
  fi
  return 0
}

# ensure_postgres_binaries: the test suite and the benchmark start their own throwaway server.
ensure_postgres_binaries() {
  ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || apt_install "PostgreSQL server binaries" postgresql
}

# ensure_test_tools: every machine tool scripts/test needs, checked and installed in one step at
# its start, so a fresh machine fails early with the package names or not at all: PostgreSQL
# (throwaway servers), promtool (alert rules), chromium and chromium-driver (the admin's browser
# tests, tests/browser/), and the lab's debootstrap, systemd-nspawn, ip and apt-cacher-ng (Debian
# 13 test hosts for the .deb and molecule).
ensure_test_tools() {
  local missing=() tool pkg
  ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing+=(postgresql)
  for pair in debootstrap:debootstrap systemd-nspawn:systemd-container ip:iproute2 \
              nsenter:util-linux apt-cacher-ng:apt-cacher-ng promtool:prometheus \
              chromium:chromium chromedriver:chromium-driver; do
    tool="${pair%%:*}" pkg="${pair#*:}"
    command -v "$tool" >/dev/null 2>&1 || PATH="$PATH:/usr/sbin:/sbin" command -v "$tool" >/dev/null 2>&1 ||
      missing+=("$pkg")
  done
  if [ ${#missing[@]} -eq 0 ]; then
    echo "==> test tools present (PostgreSQL, promtool, chromium, debootstrap, systemd-nspawn, apt-cacher-ng)"
    return 0
  fi
  apt_install "the test tools" "${missing[@]}"
}

# remove_lab_tools: the cold path (scripts/test --cold, CI) removes the lab's tools so that the
# install step above runs as on a fresh machine. Only packages that are installed are touched.
remove_lab_tools() {
  local installed=() pkg
  for pkg in apt-cacher-ng debootstrap systemd-container prometheus; do
    dpkg -s "$pkg" >/dev/null 2>&1 && installed+=("$pkg")
  done
  [ ${#installed[@]} -eq 0 ] && return 0
  [ "$(id -u)" = 0 ] || { echo "    (not root: the lab's tools stay installed)"; return 0; }
  echo "    removing: ${installed[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get remove -y -qq "${installed[@]}" >/dev/null 2>&1 ||
    echo "    warning: apt-get remove ${installed[*]} failed; the tools stay installed" >&2
}

# umount_lab_leftovers DIR: lazily unmount anything still mounted below DIR (an interrupted run).
umount_lab_leftovers() {
  local dir="$1" mount
  [ -n "$dir" ] && [ -d "$dir" ] || return 0
  awk -v d="$dir/" 'index($2, d) == 1 {print $2}' /proc/mounts | sort -r | while read -r mount; do
    umount -l "$mount" 2>/dev/null || true
  done
}
