#!/usr/bin/env bash
# Build the Debian packages of one release (packaging/releases.toml) with Debian's own tools:
#   bash packaging/build-deb.sh [RELEASE]     (default: this machine's; as root: installs build deps)
# prints the two files it built, one a line:
#   dist/auditd-lite_<version>+deb<N>_<arch>.deb        the program, its units, its Python deps
#   dist/auditd-lite-lake_<version>+deb<N>_<arch>.deb   pyarrow for export --format parquet
# Each release's packages carry files built for its python3 (the lake's pyarrow; any compiled
# dependency), so a release is built on its own and depends on its own Python. What they
# vendor is resolved from pyproject.toml (packaging/vendor.py): nothing is listed here.
# Layout of auditd-lite:
#   /usr/bin/auditd-lite                    wrapper: Debian's /usr/bin/python3 -I
#   /usr/lib/auditd-lite/                   auditd_lite + vendored wheels (auditd-lite-lake adds pyarrow)
#   /lib/systemd/system/auditd-lite.service the hardened unit
#   /lib/systemd/system/auditd-lite-hunt.service  hunt --follow (installed disabled)
#   /etc/auditd-lite/auditd-lite.toml       default settings (conffile)
#   /usr/share/man/man1/auditd-lite.1.gz    generated from the argparse help
#   /usr/share/doc/<package>/vendored.txt   each vendored wheel: name, version, sha256
#   /var/lib/auditd-lite (0750)             made by postinst, never removed by dpkg
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$here"
py=/usr/bin/python3
release=${1:-$(. /etc/os-release && echo "${VERSION_CODENAME:-}")}
work="$here/build/deb/$release"
wheels="$here/build/wheels/$release"  # download cache: later builds need no network

say() { printf 'build-deb: %s\n' "$*" >&2; }

install_build_deps() {
    local pkgs=() p
    # python3-packaging reads the requirements (vendor.py); python3-markupsafe (Mako's) and
    # python3-cryptography (sealing and signing): run-time dependencies the smoke test imports
    # gcc, python3-dev, libssl-dev and libsqlite3-dev: the compiled hot path (setup.py)
    for p in dpkg python3 python3-pip python3-setuptools python3-wheel python3-packaging \
            python3-markupsafe python3-cryptography gzip gcc python3-dev libssl-dev libsqlite3-dev; do
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
[ -n "$release" ] || { say "cannot tell this machine's release: name one (packaging/releases.toml)"; exit 2; }
upstream=$("$py" -c 'import re,sys; print(re.search(r"__version__ = \"([^\"]+)\"", open("auditd_lite/__init__.py").read())[1])')
arch=$(dpkg --print-architecture)
# reproducible: every timestamp is the last commit's (or now, outside git)
SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || date +%s)}
export SOURCE_DATE_EPOCH
# Debian's pip refuses to touch the system Python (PEP 668); we only ever
# install into the staging tree with --target
export PIP_BREAK_SYSTEM_PACKAGES=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore PYTHONDONTWRITEBYTECODE=1

rm -rf "$work"
mkdir -p "$work" "$wheels" dist
plan="$work/plan.json"
"$py" packaging/vendor.py plan "$release" "$arch" "$wheels" > "$plan"
# q EXPR: a value of the plan (p), printed one item a line when it is a list
q() { "$py" -c 'import json,sys; p=json.load(open(sys.argv[1])); v=eval(sys.argv[2]); print("\n".join(map(str, v)) if isinstance(v, list) else v)' "$plan" "$1"; }
pyver=$(q 'p["python"]')
version="$upstream+deb$(q 'p["number"]')"
mapfile -t install_args < <(q 'p["install_args"]')
say "auditd-lite $version for $arch ($release, Python $pyver)"

# python3 (>= X.Y~); and (<< X.Y+1) when a package carries files built for that Python alone
python_depends() {
    local compiled=$1 next
    next="${pyver%.*}.$(( ${pyver#*.} + 1 ))"
    if [ "$compiled" = True ]; then echo "python3 (>= $pyver~), python3 (<< $next)"; else echo "python3 (>= $pyver~)"; fi
}

# stage PACKAGE: its vendored wheels installed into <stage>/usr/lib/auditd-lite, its copyright
# (the static head, then a stanza per vendored distribution) and vendored.txt
stage_vendored() {
    local pkg=$1 stage="$work/$1" lib="$work/$1/usr/lib/auditd-lite" doc="$work/$1/usr/share/doc/$1"
    mkdir -p "$lib" "$doc"
    mapfile -t files < <(q "[w['wheel'] for w in p['$pkg']['wheels']]")
    mapfile -t names < <(q "[w['name'] for w in p['$pkg']['wheels']]")
    if [ ${#files[@]} -gt 0 ]; then
        "$py" -m pip install -q --no-deps --no-index --no-compile "${install_args[@]}" --target "$lib" "${files[@]}"
    fi
    q "[f\"{w['name']} {w['version']} sha256:{w['sha256']} {w['wheel'].rsplit('/', 1)[-1]}\" for w in p['$pkg']['wheels']]" \
        > "$doc/vendored.txt"
    { cat "packaging/debian/${2}copyright"; echo; "$py" packaging/vendor.py copyright "$lib" "${names[@]}"; } \
        > "$doc/copyright"
}

# build_deb PACKAGE TEMPLATE_DIR DEPENDS: control from TEMPLATE_DIR/control.in, maintainer
# scripts, md5sums, timestamps, dpkg-deb; prints the file
build_deb() {
    local pkg=$1 tdir=$2 depends=$3 stage="$work/$1" size s
    find "$stage" -name __pycache__ -prune -exec rm -rf {} +
    rm -rf "$stage/usr/lib/auditd-lite/bin"  # console scripts point at the build's Python
    rm -f "$stage"/usr/lib/auditd-lite/*.dist-info/direct_url.json  # the build directory
    mkdir -p "$stage/DEBIAN"
    size=$(du -sk --exclude=DEBIAN "$stage" | cut -f1)
    sed -e "s/@VERSION@/$version/g" -e "s/@ARCH@/$arch/g" -e "s/@SIZE@/$size/" \
        -e "s/@DEPENDS@/$depends/" "$tdir/control.in" > "$stage/DEBIAN/control"
    [ -f "$tdir/conffiles" ] && install -m 0644 "$tdir/conffiles" "$stage/DEBIAN/conffiles"
    for s in postinst prerm postrm; do
        [ -f "$tdir/$s" ] && install -m 0755 "$tdir/$s" "$stage/DEBIAN/"
    done
    (cd "$stage" && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' | LC_ALL=C sort -z \
        | xargs -0 md5sum > DEBIAN/md5sums)
    find "$stage" -type d -exec chmod 0755 {} +
    find "$stage" -newermt "@$SOURCE_DATE_EPOCH" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
    local out="dist/${pkg}_${version}_${arch}.deb"
    dpkg-deb --root-owner-group -Zxz --build "$stage" "$out" >/dev/null
    say "built $out ($(du -k "$out" | cut -f1) KiB, installed $size KiB)"
    echo "$out"
}

# ---- auditd-lite
stage="$work/auditd-lite"
lib="$stage/usr/lib/auditd-lite"
stage_vendored auditd-lite ""
# the program itself, laid out by pyproject.toml (bpf/ and migrations/ as
# auditd_lite.bpf and auditd_lite.migrations); built out of tree in $work
src="$work/src"
mkdir -p "$src"
cp -r pyproject.toml setup.py README.md auditd_lite bpf migrations "$src/"
find "$src" -name __pycache__ -prune -exec rm -rf {} +
find "$src" -name '*.so' -delete  # a checkout's in-place build: the package's is built here
(cd "$src" && "$py" -m pip install -q --no-deps --no-build-isolation --no-index --no-compile \
    --target "$lib" .)
install -D -m 0755 packaging/auditd-lite "$stage/usr/bin/auditd-lite"
install -D -m 0644 auditd-lite.service "$stage/lib/systemd/system/auditd-lite.service"
install -D -m 0644 packaging/auditd-lite-hunt.service "$stage/lib/systemd/system/auditd-lite-hunt.service"
install -D -m 0644 packaging/auditd-lite.toml "$stage/etc/auditd-lite/auditd-lite.toml"
install -D -m 0644 README.md "$stage/usr/share/doc/auditd-lite/README.md"
mkdir -p "$stage/usr/share/man/man1"
# generated with the code being shipped (what the CLI imports compiled, orjson, it can do without)
"$py" -I -c 'import sys; sys.path.insert(0, sys.argv[1]); from auditd_lite import manpage; manpage.main()' "$lib" \
    | gzip -9n > "$stage/usr/share/man/man1/auditd-lite.1.gz"
# smoke test of the staged tree where this Python is the release's (tests/release and the VM
# tier run the others' under their own); every bundled Sigma rule parses and is evaluated with
# the vendored pySigma and what it was shipped with
if [ "$("$py" -c 'import sys; print("%d.%d" % sys.version_info[:2])')" = "$pyver" ]; then
    "$py" -I -c 'import sys; sys.path.insert(0, sys.argv[1]); import auditd_lite.cli, auditd_lite.daemon.writer, auditd_lite.storage.batchwriter, auditd_lite.capture.doctor, sqlalchemy, alembic.command, structlog; assert sqlalchemy.__version__.startswith("2.")
from auditd_lite import chain; from auditd_lite.capture import records; from auditd_lite.investigate import output; from auditd_lite.storage import batches
assert (records.DECODER, chain.DIGESTS, batches.INSERTS, output.JSON_LINES) == ("compiled", "compiled", "compiled", "orjson"), (records.DECODER, chain.DIGESTS, batches.INSERTS, output.JSON_LINES)' "$lib"
    "$py" -I -c 'import sys; sys.path.insert(0, sys.argv[1]); from auditd_lite.hunt import rules; rs = rules.load(); n = sum(r.evaluable for r in rs.rules); assert n == len(rs.rules) > 100 and not rs.problems, (n, rs.problems)' "$lib"
fi
# the compiled hot path (setup.py, one module per C file) is built against the stable ABI of
# Python 3.11 (every release's python3 loads it: no per-release Depends of its own), the
# record digests link libcrypto 3, which bookworm's libssl3 and trixie's libssl3t64 carry, and
# the inserts libsqlite3.so.0 (libsqlite3-0 in both, the one Python's sqlite3 module loads)
for c in $(cd "$src" && find auditd_lite -name '*.c'); do
    [ -n "$(find "$lib/${c%.c}".*so 2>/dev/null)" ] \
        || { say "$c was not built (gcc, python3-dev, libssl-dev, libsqlite3-dev?)"; exit 1; }
done
build_deb auditd-lite packaging/debian \
    "$(python_depends "$(q 'p["auditd-lite"]["compiled"]')")$(q '"".join(", " + d for d in p["auditd-lite"]["depends"])'), libssl3t64 | libssl3, libsqlite3-0"

# ---- auditd-lite-lake: what the lake extra needs beyond auditd-lite, into the same directory.
# Compressing its 165 MiB takes a minute: the same wheels, version and recipe give the same
# package, which is then not built again (the key beside it says what it was built from).
# Its timestamps are those of the last commit that changed how it is made, not the tree's.
lake="dist/auditd-lite-lake_${version}_${arch}.deb"
lake_epoch=$(git log -1 --format=%ct -- pyproject.toml packaging 2>/dev/null || true)
lake_epoch=${lake_epoch:-$SOURCE_DATE_EPOCH}
key=$({ q 'p["auditd-lite-lake"]'; echo "$version $arch $lake_epoch"; \
        cat packaging/build-deb.sh packaging/vendor.py packaging/debian/lake/*; } | sha256sum | cut -d' ' -f1)
if [ -f "$lake" ] && [ "$(cat "dist/.$(basename "$lake").key" 2>/dev/null)" = "$key" ]; then
    say "$lake is up to date"
    echo "$lake"
    exit 0
fi
stage_vendored auditd-lite-lake lake/
if [ "$("$py" -c 'import sys; print("%d.%d" % sys.version_info[:2])')" = "$pyver" ]; then
    "$py" -I -c 'import sys; sys.path.insert(0, sys.argv[1]); import pyarrow.parquet, pyarrow.dataset' \
        "$work/auditd-lite-lake/usr/lib/auditd-lite"
fi
SOURCE_DATE_EPOCH=$lake_epoch build_deb auditd-lite-lake packaging/debian/lake \
    "$(python_depends "$(q 'p["auditd-lite-lake"]["compiled"]')")$(q '"".join(", " + d for d in p["auditd-lite-lake"]["depends"])')"
echo "$key" > "dist/.$(basename "$lake").key"
