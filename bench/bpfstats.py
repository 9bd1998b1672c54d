"""The kernel's own count of a process's BPF programs (kernel.bpf_stats_enabled): each program's
runs and run time, read from the descriptors the process holds (bench/kernel_cost.py,
bench/syscall_tax.py)."""

from __future__ import annotations

import contextlib
import ctypes
import os
from pathlib import Path

STATS = Path("/proc/sys/kernel/bpf_stats_enabled")
# struct bpf_prog_info (include/uapi/linux/bpf.h): its name is at byte 64, 16 bytes
INFO_SIZE, NAME_AT = 256, 64
NAME_LEN = 15  # BPF_OBJ_NAME_LEN (16) less its NUL: what the kernel keeps of a program's name
PROG_TYPE_TRACING = 26  # enum bpf_prog_type: fentry/fexit


@contextlib.contextmanager
def counting():
    """run_cnt and run_time_ns counted while inside; the setting as it was afterwards."""
    was = STATS.read_text().strip()
    STATS.write_text("1\n")
    try:
        yield
    finally:
        STATS.write_text(was + "\n")


def prog_name(prog_id: int) -> str:
    """A program's name (its first 15 characters, as the kernel keeps it), by its id."""
    lib = ctypes.CDLL("libbpf.so.1", use_errno=True)
    fd = lib.bpf_prog_get_fd_by_id(ctypes.c_uint32(prog_id))
    if fd < 0:
        return f"id {prog_id}"
    try:
        info = ctypes.create_string_buffer(INFO_SIZE)
        size = ctypes.c_uint32(INFO_SIZE)
        if lib.bpf_obj_get_info_by_fd(fd, info, ctypes.byref(size)) != 0:
            return f"id {prog_id}"
        return info.raw[NAME_AT:NAME_AT + NAME_LEN + 1].split(b"\0")[0].decode()
    finally:
        os.close(fd)


def programs(pid: int) -> dict[int, dict]:
    """The BPF programs among a process's descriptors: prog id -> name, type, run_time_ns,
    run_cnt (the name asked while the process holds the program: once it exits the id is gone)."""
    out = {}
    for fd in os.listdir(f"/proc/{pid}/fdinfo"):
        try:
            with open(f"/proc/{pid}/fdinfo/{fd}") as f:
                fields = dict(line.rstrip("\n").split(":\t", 1) for line in f if ":\t" in line)
        except OSError:
            continue
        if "prog_id" in fields and "run_cnt" in fields:
            prog_id = int(fields["prog_id"])
            out[prog_id] = {"name": prog_name(prog_id), "type": int(fields["prog_type"]),
                            "ns": int(fields["run_time_ns"]),
                            "runs": int(fields["run_cnt"])}
    return out


def runs_between(before: dict[int, dict], after: dict[int, dict]) -> dict[int, dict]:
    """Per program id, its name and the runs and ns from one reading of programs() to a later
    one (by id: names cut to 15 characters collide, __x64_sys_execve's and execveat's)."""
    per = {}
    for prog_id, a in after.items():
        b = before.get(prog_id, {"ns": 0, "runs": 0})
        per[prog_id] = {"name": a["name"], "type": a["type"], "ns": a["ns"] - b["ns"],
                        "runs": a["runs"] - b["runs"]}
    return per
