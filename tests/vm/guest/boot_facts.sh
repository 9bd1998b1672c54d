#!/bin/bash
# Guest side of tests/vm/facts.py (guest.sh runs it first): write what the host asserts to
# $VMTEST_RESULTS/facts, one key=value a line. Every check is recorded, none
# aborts the script, so the host reports each failure by name.
out="$VMTEST_RESULTS/facts"
: > "$out"
fact() { printf '%s=%s\n' "$1" "$2" >> "$out"; }

fact uname "$(uname -r)"
fact os "$(. /etc/os-release && echo "$PRETTY_NAME")"
fact pid1 "$(cat /proc/1/comm)"
# the script's own unit is Type=exec, so the boot job is done and --wait returns
fact state "$(timeout 120 systemctl is-system-running --wait)"
fact failed "$(systemctl list-units --state=failed --plain --no-legend | awk '{print $1}' | tr '\n' ' ')"
fact btf "$(test -e /sys/kernel/btf/vmlinux && echo yes || echo no)"
fact build_include "$(test -d "/lib/modules/$(uname -r)/build/include" && echo yes || echo no)"
fact build "$(readlink -f "/lib/modules/$(uname -r)/build")"
fact perf_event_paranoid "$(cat /proc/sys/kernel/perf_event_paranoid)"
fact policy_rc_d "$(test -e /usr/sbin/policy-rc.d && echo present || echo absent)"
fact write "$(touch /var/lib/x && test -f /var/lib/x && echo ok || echo failed)"
fact repo "$(test -f "$VMTEST_REPO/pyproject.toml" && echo yes || echo no)"
fact cgroup "$(stat -fc %T /sys/fs/cgroup)"
fact root_fs "$(findmnt -no FSTYPE /)"
fact tracefs "$(findmnt -no FSTYPE /sys/kernel/tracing)"
fact bpffs "$(findmnt -no FSTYPE /sys/fs/bpf)"
fact startup "$(systemd-analyze time 2>/dev/null | head -1)"
cat "$out"
