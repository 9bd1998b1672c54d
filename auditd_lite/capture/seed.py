"""Processes already running when capture starts, read from /proc.

Their exits then join to something and process trees have roots. /proc
counts start times in clock ticks of CLOCK_BOOTTIME; records carry the
kernel's task->start_time (CLOCK_MONOTONIC, ns), so a seeded start time is
converted and is exact only to one tick.
"""

from __future__ import annotations

import os
from typing import Iterator

from .. import hostinfo
from . import records
from .records import fs_text, text

PROC = "/proc"


def _stat(pid: str, proc: str) -> tuple[str, int, int] | None:
    """(comm, ppid, start ticks) from /proc/PID/stat; None if the process is gone."""
    try:
        with open(f"{proc}/{pid}/stat", "rb") as f:
            raw = f.read()
    except OSError:
        return None
    # comm may hold spaces and parentheses: it ends at the last ')'
    open_, close = raw.index(b"("), raw.rindex(b")")
    fields = raw[close + 2:].split()
    return text(raw[open_ + 1:close]), int(fields[1]), int(fields[19])


def _uid(pid: str, proc: str) -> int:
    try:
        with open(f"{proc}/{pid}/status", "rb") as f:
            for line in f:
                if line.startswith(b"Uid:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return -1


DELETED = " (deleted)"


def _cwd(pid: str, proc: str, host_ns: int | None) -> tuple[str | None, str]:
    """(cwd, cwd_status) as an exec record has them, from /proc/PID/cwd."""
    try:
        cwd = fs_text(os.readlink(f"{proc}/{pid}/cwd"))
    except OSError:
        return None, "unknown"  # a kernel thread's is /, but readable only with ptrace rights
    flags = 0
    if cwd.endswith(DELETED):
        cwd = cwd[:-len(DELETED)]
        flags |= records.FLAG_CWD_DELETED
    # the status words as an exec record's (records.cwd_status owns them)
    return cwd, records.cwd_status(flags, hostinfo.mount_ns(pid) or 0, host_ns)


def running_processes(proc: str = PROC) -> Iterator[dict]:
    tick = hostinfo.clock_tick_ns()
    suspended = hostinfo.boottime_minus_monotonic_ns()
    host_ns = hostinfo.host_mount_ns()
    for pid in os.listdir(proc):
        if not pid.isdigit():
            continue
        st = _stat(pid, proc)
        if st is None:
            continue
        comm, ppid, ticks = st
        try:
            exe = fs_text(os.readlink(f"{proc}/{pid}/exe"))
        except OSError:
            exe = None  # kernel threads, or gone
        try:
            with open(f"{proc}/{pid}/cmdline", "rb") as f:
                argv = f.read().rstrip(b"\0")
        except OSError:
            argv = b""
        cwd, cwd_status = _cwd(pid, proc, host_ns)
        yield {
            "pid": int(pid), "ppid": ppid, "uid": _uid(pid, proc), "comm": comm,
            "filename": exe, "argv": argv, "cwd": cwd, "cwd_status": cwd_status,
            "start_ns": ticks * tick - suspended, "start_tick_ns": tick,
        }
