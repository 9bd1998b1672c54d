#!/bin/bash
# The issue #20 figures inside a VM guest (Debian's own kernel under systemd, docs/vm.md):
# the package built from this tree installed as a user would, then what a program that never
# execs pays with the service stopped and started (bench/syscall_tax.py --service), and the BPF
# programs' run time per exec in each capture mode (bench/kernel_cost.py). Results land in
# $VMTEST_RESULTS. Booted by hand, e.g.:
#   make deb && /usr/bin/python3 tests/vm/vm.py 6.1 --timeout 3000 \
#       "VMTEST_DEB=$PWD/dist/auditd-lite_0.1.0_amd64.deb bash bench/guest_bench.sh"
set -u
cd "$VMTEST_REPO"
R=$VMTEST_RESULTS
rm -rf /var/lib/auditd-lite
rm -f /var/lib/man-db/auto-update
DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$VMTEST_DEB" > "$R/apt.log" 2>&1 || exit 10
# SERVICE_MODE=raw_syscalls: the service in the fallback, for the figure before issue #20
if [ -n "${SERVICE_MODE:-}" ]; then
    sed -i "s/^#capture_mode = .*/capture_mode = \"$SERVICE_MODE\"/" /etc/auditd-lite/auditd-lite.toml
    grep -q "^capture_mode = \"$SERVICE_MODE\"" /etc/auditd-lite/auditd-lite.toml || exit 11
fi
# TAX_REPS=0: the kernel cost alone; COST_REPS=0: the tax alone
[ "${TAX_REPS:-5}" = 0 ] || .venv/bin/python bench/syscall_tax.py --service --reps "${TAX_REPS:-5}" \
    --calls "${TAX_CALLS:-300000}" --blocks "${TAX_BLOCKS:-200000}" --json "$R/syscall_tax.json" \
    > "$R/syscall_tax.md" 2> "$R/syscall_tax.log"
systemctl stop auditd-lite
[ "${COST_REPS:-3}" = 0 ] || .venv/bin/python bench/kernel_cost.py --modes auto raw_syscalls --reps "${COST_REPS:-3}" \
    --execs "${COST_EXECS:-1000}" --calls "${COST_CALLS:-100000}" --json "$R/kernel_cost.json" \
    > "$R/kernel_cost.md" 2> "$R/kernel_cost.log"
cat "$R"/*.md
