#!/usr/bin/env bash
# Build dist/auditd-lite_<version>_<arch>.deb with Debian's own tools (dpkg-deb).
#   bash packaging/build-deb.sh          (as root: installs its build dependencies)
# Layout of the package:
#   /usr/bin/auditd-lite                    wrapper: Debian's /usr/bin/python3 -I
#   /usr/lib/auditd-lite/                   auditd_lite + vendored pure-Python wheels
#   /lib/systemd/system/auditd-lite.service the hardened unit
#   /lib/systemd/system/auditd-lite-hunt.service  hunt --follow (installed disabled)
#   /etc/auditd-lite/auditd-lite.toml       default settings (conffile)
#   /usr/share/man/man1/auditd-lite.1.gz    generated from the argparse help
#   /var/lib/auditd-lite (0750)             made by postinst, never removed by dpkg
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$here"
pkg=auditd-lite
work="$here/build/deb"
wheels="$here/build/wheels"  # download cache: later builds need no network
stage="$work/root"

say() { printf 'build-deb: %s\n' "$*" >&2; }

install_build_deps() {
    local pkgs=() p
    # python3-markupsafe (Mako's), python3-cryptography (sealing and signing), python3-yaml and
    # python3-pyparsing (pySigma's, for hunt): run-time dependencies, needed by the smoke test
    for p in dpkg python3 python3-pip python3-setuptools python3-wheel python3-markupsafe \
            python3-cryptography python3-yaml python3-pyparsing gzip; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || pkgs+=("$p")
    done
    [ ${#pkgs[@]} -eq 0 ] && return
    if [ "$(id -u)" -ne 0 ]; then
        say "missing build dependencies: ${pkgs[*]} (run as root, or apt-get install them)"
        exit 1
    fi
    say "installing build dependencies: ${pkgs[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >/dev/null
}

install_build_deps
py=/usr/bin/python3
version=$("$py" -c 'import re,sys; print(re.search(r"__version__ = \"([^\"]+)\"", open("auditd_lite/__init__.py").read())[1])')
arch=$(dpkg --print-architecture)
# reproducible: every timestamp is the last commit's (or now, outside git)
SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || date +%s)}
export SOURCE_DATE_EPOCH
# Debian's pip refuses to touch the system Python (PEP 668); we only ever
# install into the staging tree with --target
export PIP_BREAK_SYSTEM_PACKAGES=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore PYTHONDONTWRITEBYTECODE=1

say "auditd-lite $version for $arch"
rm -rf "$work"
mkdir -p "$stage" "$wheels" dist
lib="$stage/usr/lib/$pkg"

# vendored dependencies: pinned, hash-checked, pure-Python wheels only
"$py" -m pip download -q --require-hashes --no-deps --only-binary=:all: \
    --platform any --python-version 3.11 --implementation py \
    -d "$wheels" -r packaging/vendor-requirements.txt
"$py" -m pip install -q --require-hashes --no-deps --no-index --find-links "$wheels" \
    --no-compile --target "$lib" -r packaging/vendor-requirements.txt

# the program itself, laid out by pyproject.toml (bpf/ and migrations/ as
# auditd_lite.bpf and auditd_lite.migrations); built out of tree in $work
cp -r pyproject.toml README.md auditd_lite bpf migrations "$work/"
find "$work/auditd_lite" "$work/bpf" "$work/migrations" -name __pycache__ -prune -exec rm -rf {} +
(cd "$work" && "$py" -m pip install -q --no-deps --no-build-isolation --no-index --no-compile \
    --target "$lib" .)
rm -rf "$lib/bin"  # console scripts point at the build's Python: ours is the wrapper
rm -f "$lib"/*.dist-info/direct_url.json  # the build directory: not reproducible, not useful

install -D -m 0755 packaging/auditd-lite "$stage/usr/bin/auditd-lite"
install -D -m 0644 auditd-lite.service "$stage/lib/systemd/system/auditd-lite.service"
install -D -m 0644 packaging/auditd-lite-hunt.service "$stage/lib/systemd/system/auditd-lite-hunt.service"
install -D -m 0644 packaging/auditd-lite.toml "$stage/etc/auditd-lite/auditd-lite.toml"
install -D -m 0644 packaging/debian/copyright "$stage/usr/share/doc/$pkg/copyright"
install -D -m 0644 README.md "$stage/usr/share/doc/$pkg/README.md"
mkdir -p "$stage/usr/share/man/man1"
# generated with the code being shipped, under Debian's python3
PYTHONPATH="$lib" "$py" -I -c 'import sys; sys.path.insert(0, sys.argv[1]); from auditd_lite import manpage; manpage.main()' "$lib" \
    | gzip -9n > "$stage/usr/share/man/man1/$pkg.1.gz"

# smoke test of the staged tree before packaging it; every bundled Sigma rule parses and is
# evaluated with the vendored pySigma and Debian's PyYAML and pyparsing
"$py" -I -c 'import sys; sys.path.insert(0, sys.argv[1]); import auditd_lite.cli, auditd_lite.daemon.writer, auditd_lite.storage.batchwriter, auditd_lite.capture.doctor, sqlalchemy, alembic.command, structlog; assert sqlalchemy.__version__.startswith("2.")' "$lib"
"$py" -I -c 'import sys; sys.path.insert(0, sys.argv[1]); from auditd_lite.hunt import rules; rs = rules.load(); n = sum(r.evaluable for r in rs.rules); assert n == len(rs.rules) > 100 and not rs.problems, (n, rs.problems)' "$lib"
find "$stage" -name __pycache__ -prune -exec rm -rf {} +

mkdir -p "$stage/DEBIAN"
size=$(du -sk --exclude=DEBIAN "$stage" | cut -f1)
sed -e "s/@VERSION@/$version/" -e "s/@ARCH@/$arch/g" -e "s/@SIZE@/$size/" \
    packaging/debian/control.in > "$stage/DEBIAN/control"
install -m 0644 packaging/debian/conffiles "$stage/DEBIAN/conffiles"
install -m 0755 packaging/debian/postinst packaging/debian/prerm packaging/debian/postrm "$stage/DEBIAN/"
(cd "$stage" && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' | LC_ALL=C sort -z \
    | xargs -0 md5sum > DEBIAN/md5sums)

find "$stage" -type d -exec chmod 0755 {} +
find "$stage" -newermt "@$SOURCE_DATE_EPOCH" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
out="dist/${pkg}_${version}_${arch}.deb"
dpkg-deb --root-owner-group -Zxz --build "$stage" "$out" >/dev/null
say "built $out"
echo "$out"
