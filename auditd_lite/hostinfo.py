"""Facts about this host that records and runs carry."""

from __future__ import annotations

import os
import platform
import socket
import time

BOOT_ID_PATH = "/proc/sys/kernel/random/boot_id"


def boot_id() -> str:
    with open(BOOT_ID_PATH) as f:
        return f.read().strip()


def realtime_offset_ns() -> int:
    """What to add to a CLOCK_MONOTONIC time (bpf_ktime_get_ns) to get UTC ns."""
    return time.clock_gettime_ns(time.CLOCK_REALTIME) - time.clock_gettime_ns(time.CLOCK_MONOTONIC)


def boottime_minus_monotonic_ns(tries: int = 3) -> int:
    """Time spent suspended: /proc start times count it, task->start_time does not. Read between
    two monotonic reads, the narrowest of ``tries``: a thread preempted between two bare reads
    (a loaded machine, a TCG guest) would be off by the preemption, more than a clock tick."""
    best = None
    for _ in range(tries):
        m0 = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
        b = time.clock_gettime_ns(time.CLOCK_BOOTTIME)
        m1 = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
        if best is None or m1 - m0 < best[0]:
            best = (m1 - m0, b - (m0 + m1) // 2)
    return best[1]


def host() -> str:
    return socket.gethostname()


def kernel() -> str:
    return platform.release()


def clock_tick_ns() -> int:
    return 1_000_000_000 // os.sysconf("SC_CLK_TCK")


def mount_ns(pid: int | str = "self") -> int | None:
    """The inode number of a process's mount namespace (what the BPF program records as
    mntns), or None where /proc will not say (init's needs ptrace access)."""
    try:
        return os.stat(f"/proc/{pid}/ns/mnt").st_ino
    except OSError:
        return None


def host_mount_ns() -> int | None:
    """The host's mount namespace: init's, else (init's unreadable) our own."""
    return mount_ns(1) or mount_ns()
