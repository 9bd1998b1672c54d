#!/usr/bin/env bash
# Set up this checkout on Debian 12 (as root) and then run the daemon or the tests.
#   bash scripts/dev.sh run [extra run flags]   daemon in the foreground, --print, database in ./var
#   bash scripts/dev.sh test [pytest args]      the whole test suite
#   bash scripts/dev.sh setup                   set-up only
#   bash scripts/dev.sh vm-setup                what the VM tier (tests/vm, make vmtest) needs
#   bash scripts/dev.sh bench-setup             set-up plus what make bench compares against
# Set-up is idempotent and fast once done.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$here"
venv="$here/.venv"

say() { printf 'setup: %s\n' "$*" >&2; }

need_root() {
    if [ "$(id -u)" -ne 0 ]; then
        echo "setup: run this as root (sudo bash scripts/dev.sh ...): it installs Debian packages" >&2
        exit 2
    fi
}

# install_packages WHAT PKG...: the Debian packages among PKG not yet installed
install_packages() {
    local what=$1 pkgs=() p
    shift
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || pkgs+=("$p")
    done
    if [ ${#pkgs[@]} -gt 0 ]; then
        say "installing Debian packages$what: ${pkgs[*]}"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >/dev/null
    fi
}

# debootstrap: the release tier (tests/vm/test_userland.py) builds the other releases' roots
install_debs() {
    install_packages "" python3-bpfcc libbpf1 python3-venv python3-pip sqlite3 python3-cryptography \
        "linux-headers-$(dpkg --print-architecture)" util-linux gcc libc6-dev strace debootstrap \
        python3-dev libssl-dev libsqlite3-dev
}

# The VM tier boots Debian's kernels under qemu (tests/vm/vm.py): qemu and
# its firmware, a static busybox for the initramfs, depmod for the extracted
# modules, zstd for kernels and modules packed with it, and the archive keys
# (bullseye's too) for its private apt state; Debian's pytest, which a guest
# on this machine's root runs its tests with (the installed package's python3,
# tests/vm/guest.sh). It needs no capture on this host, so no doctor here.
install_vm_debs() {
    install_packages " for the VM tier" qemu-system-x86 busybox-static kmod zstd debian-archive-keyring \
        debootstrap python3-pytest
}

# make bench (bench/compare.py) runs Debian's auditd and bpftrace under the
# same storm as auditd-lite; the storm and its checks need nothing more.
install_bench_debs() {
    install_packages " for the bench" auditd bpftrace
}

# bcc compiles against /lib/modules/$(uname -r)/build. When the running kernel
# ships no headers of its own, point it at the distribution's: their struct
# layouts may differ, which is fine because every field offset the program
# uses comes from the running kernel's BTF.
link_headers() {
    local mod="/lib/modules/$(uname -r)" arch build common
    if [ -e "$mod/build/include" ]; then
        return
    fi
    arch=$(dpkg --print-architecture)
    build=$(ls -d /usr/src/linux-headers-*-"$arch" 2>/dev/null | sort -V | tail -n 1)
    if [ -z "$build" ]; then
        say "no kernel headers under /usr/src; install linux-headers-$arch"
        exit 1
    fi
    common=${build%-"$arch"}-common
    [ -d "$common" ] || common=$build
    say "kernel $(uname -r) has no headers of its own: linking $build"
    mkdir -p "$mod"
    ln -sfn "$build" "$mod/build"
    ln -sfn "$common" "$mod/source"
}

mount_tracefs() {
    if [ ! -d /sys/kernel/tracing/events ]; then
        say "mounting tracefs at /sys/kernel/tracing"
        mount -t tracefs tracefs /sys/kernel/tracing
    fi
}

make_venv() {
    local stamp="$venv/.installed"
    if [ ! -x "$venv/bin/python" ]; then
        say "creating $venv (Debian's python3, with system site-packages for bcc)"
        /usr/bin/python3 -m venv --system-site-packages "$venv"
    fi
    # setup.py and the C files: the compiled hot path is built by this install
    if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ setup.py -nt "$stamp" ] \
            || [ -n "$(find auditd_lite -name '*.c' -newer "$stamp")" ]; then
        say "installing auditd-lite and its Python dependencies into $venv"
        "$venv/bin/pip" install -q --disable-pip-version-check -e '.[test,schema,lake]'
        touch "$stamp"
    fi
}

# the last step: says, one line per check, whether capture can work here
# (on stderr, so `run`'s stdout stays the event stream); a failure stops set-up
run_doctor() {
    say "checking this host: auditd-lite doctor"
    if ! "$venv/bin/auditd-lite" doctor --db-dir "$here/var" >&2; then
        say "auditd-lite doctor found a problem: see the FAIL lines above"
        exit 1
    fi
}

setup() {
    need_root
    install_debs
    link_headers
    mount_tracefs
    make_venv
    run_doctor
}

cmd=${1:-}
[ $# -gt 0 ] && shift
case "$cmd" in
    setup) setup ;;
    vm-setup)
        need_root
        install_debs
        install_vm_debs
        make_venv
        ;;
    bench-setup)
        setup
        install_bench_debs
        ;;
    run)
        setup
        exec "$venv/bin/auditd-lite" run --print --db-dir "$here/var" "$@"
        ;;
    test)
        setup
        # the whole suite includes the VM tier
        install_vm_debs
        exec "$venv/bin/python" -m pytest "$@"
        ;;
    *)
        echo "usage: bash scripts/dev.sh run|test|setup|vm-setup|bench-setup [args]" >&2
        exit 2
        ;;
esac
