#!/bin/bash
# Runs INSIDE the Debian 13 build root (systemd-nspawn, no network): builds the venv with the
# target's /usr/bin/python3.13 from the hashed lock and the local wheelhouse, stages the
# package tree and builds the .deb with the target's dpkg-deb (lintian: build_deb.py).
# Mounts: /src (repo, read-only), /wheelhouse (read-only), /dist (django-ray wheel in, .deb out).
set -euo pipefail
VERSION="$1"          # Debian version, e.g. 0.1.0-1
UPSTREAM="${VERSION%-*}"
PKG=/tmp/pkg
PREFIX=/opt/django-ray

step() { printf '[in-root %s] %s\n' "$(date +%T)" "$*"; }

step "virtualenv with $(/usr/bin/python3.13 --version) at $PREFIX/venv"
/usr/bin/python3.13 -m venv "$PREFIX/venv"
"$PREFIX/venv/bin/python" -m pip install --quiet --no-index --find-links /wheelhouse \
    --require-hashes --only-binary=:all: -r /src/packaging/requirements.lock
"$PREFIX/venv/bin/python" -m pip install --quiet --no-index --no-deps \
    /dist/django_ray-"$UPSTREAM"-py3-none-any.whl
"$PREFIX/venv/bin/python" -m pip check
"$PREFIX/venv/bin/python" -c 'import django, ray, psycopg, gunicorn, prometheus_client, django_ray, sys; print("venv ok:", sys.version.split()[0], "django", django.__version__, "ray", ray.__version__)'
# No caches or build leftovers in the package.
rm -rf "$PREFIX/venv/share/man" /root/.cache "$PREFIX/venv/.gitignore"

step "staging the package tree"
rm -rf "$PKG"
mkdir -p "$PKG/DEBIAN" "$PKG/opt" "$PKG/usr/bin" "$PKG/usr/lib/systemd/system" \
    "$PKG/etc/django-ray" "$PKG/usr/share/doc/django-ray" "$PKG/usr/share/lintian/overrides" \
    "$PKG/usr/share/django-ray"
cp -a "$PREFIX" "$PKG/opt/"
# The example project: the default application (PYTHONPATH in django-ray.env).
mkdir -p "$PKG$PREFIX/example"
(cd /src/example && tar --exclude=__pycache__ --exclude='*.sqlite3' --exclude='*.pyc' -cf - .) \
    | tar -xf - -C "$PKG$PREFIX/example"
# manage.py runs with the package's interpreter (operators normally use `django-ray`).
if [ -f "$PKG$PREFIX/example/manage.py" ]; then
    sed -i "1s|^#!.*python.*|#!$PREFIX/venv/bin/python|" "$PKG$PREFIX/example/manage.py"
fi
"$PREFIX/venv/bin/python" -m compileall -q -d "$PREFIX/example" "$PKG$PREFIX/example" >/dev/null || true
ln -s "$PREFIX/venv/bin/django-ray" "$PKG/usr/bin/django-ray"
mkdir -p "$PKG/usr/share/man/man1"
gzip -9n < /src/packaging/debian/django-ray.1 > "$PKG/usr/share/man/man1/django-ray.1.gz"
install -m 0644 /src/systemd/*.service /src/systemd/*.target "$PKG/usr/lib/systemd/system/"
install -m 0644 /src/packaging/etc/django-ray.env /src/packaging/etc/ray.env "$PKG/etc/django-ray/"
install -m 0644 /src/packaging/supervisor/django-ray.conf "$PKG/usr/share/django-ray/supervisor-django-ray.conf"
install -m 0644 /src/packaging/debian/copyright "$PKG/usr/share/doc/django-ray/copyright"
sed "s/@VERSION@/$VERSION/g; s/@UPSTREAM@/$UPSTREAM/g" /src/packaging/debian/changelog \
    | gzip -9n > "$PKG/usr/share/doc/django-ray/changelog.Debian.gz"
for doc in install-debian.md systemd-units.md; do
    if [ -f "/src/docs/$doc" ]; then install -m 0644 "/src/docs/$doc" "$PKG/usr/share/doc/django-ray/"; fi
done
install -m 0644 /src/packaging/debian/lintian-overrides "$PKG/usr/share/lintian/overrides/django-ray"
install -m 0755 /src/packaging/debian/postinst /src/packaging/debian/prerm \
    /src/packaging/debian/postrm "$PKG/DEBIAN/"
install -m 0644 /src/packaging/debian/conffiles "$PKG/DEBIAN/"
# Reproducible, sane modes: directories 0755, files 0644 unless executable.
find "$PKG" -path "$PKG/DEBIAN" -prune -o -type d -exec chmod 0755 {} +
find "$PKG" -path "$PKG/DEBIAN" -prune -o -type f -perm /111 -exec chmod 0755 {} + \
    -o -type f -exec chmod 0644 {} +
find "$PKG/opt" -type f \( -name '*.so' -o -name '*.so.*' \) -exec chmod 0644 {} +
size="$(du -sk --exclude=DEBIAN "$PKG" | cut -f1)"
sed "s/@VERSION@/$VERSION/; s/@SIZE@/$size/" /src/packaging/debian/control.in > "$PKG/DEBIAN/control"
(cd "$PKG" && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' | LC_ALL=C sort -z \
    | xargs -0 md5sum > DEBIAN/md5sums)
chmod 0644 "$PKG/DEBIAN/md5sums" "$PKG/DEBIAN/control"

step "dpkg-deb (installed size $((size / 1024)) MiB)"
out="/dist/django-ray_${VERSION}_amd64.deb"
# gzip: ~4x faster than xz on this ~450 MiB tree for ~25% more bytes; lintian rejects zstd.
SOURCE_DATE_EPOCH="${SOURCE_DATE_EPOCH:-$(date +%s)}" \
    dpkg-deb --root-owner-group -Zgzip -z6 --build "$PKG" "$out" >/dev/null
step "built $out ($(du -h "$out" | cut -f1))"
