#!/usr/bin/env python3
"""The BPF programs' own run time per exec (issue #20), as the kernel counts it
(kernel.bpf_stats_enabled: each program's run_time_ns and run_cnt), per capture mode.

A daemon is started in each mode asked for (alternated rep by rep); an exec storm of --execs
copies of /bin/true runs beside a loop of --calls getppid() system calls (what other programs
do meanwhile). Per program: its runs and its time, read from the daemon's program descriptors
before and after; per mode: kernel ns per exec, all programs together, and the runs of the
execve hooks per exec (1 per call for fentry/fexit; every system call of the host for
raw_syscalls).

    sudo .venv/bin/python bench/kernel_cost.py --modes auto raw_syscalls --reps 3

Run it in a VM guest to compare fentry with raw_syscalls on one kernel (docs/vm.md).
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from exec_storm import Daemon, storm  # noqa: E402
from figures import cell, spread  # noqa: E402
from syscall_tax import build_loop  # noqa: E402

from auditd_lite.capture.compiler import PROBE_PREFIX  # noqa: E402
from auditd_lite.capture.loader import SYSCALL_TRACEPOINTS  # noqa: E402

STATS = Path("/proc/sys/kernel/bpf_stats_enabled")
# the execve hooks by the names the kernel keeps (15 characters): bcc's fentry/fexit prefixes,
# and the fallback's programs on raw_syscalls
NAME_LEN = 15
HOOKS = tuple(h[:NAME_LEN] for h in ("kfunc__", "kretfunc__", *(PROBE_PREFIX + t for t in SYSCALL_TRACEPOINTS)))
# struct bpf_prog_info (include/uapi/linux/bpf.h): its name is at byte 64, 16 bytes
INFO_SIZE, NAME_AT = 256, 64


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
        return info.raw[NAME_AT:NAME_AT + 16].split(b"\0")[0].decode()
    finally:
        os.close(fd)


def programs(pid: int) -> dict[int, dict]:
    """The BPF programs among a process's descriptors: prog id -> name, run_time_ns, run_cnt
    (the name asked while the process holds the program: once it exits the id is gone)."""
    out = {}
    for fd in os.listdir(f"/proc/{pid}/fdinfo"):
        try:
            with open(f"/proc/{pid}/fdinfo/{fd}") as f:
                fields = dict(line.rstrip("\n").split(":\t", 1) for line in f if ":\t" in line)
        except OSError:
            continue
        if "prog_id" in fields and "run_cnt" in fields:
            prog_id = int(fields["prog_id"])
            out[prog_id] = {"name": prog_name(prog_id), "ns": int(fields["run_time_ns"]),
                            "runs": int(fields["run_cnt"])}
    return out


def one_run(mode: str, loop: Path, program: str, execs: int, calls: int, work: Path, rep: int) -> dict:
    flags = [] if mode == "auto" else ["--capture-mode", mode]
    d = Daemon(work / f"db-{mode}-{rep}", flags)
    try:
        d.err.seek(0)
        attached = next(json.loads(l) for l in d.err if '"programs_attached"' in l)
        before = programs(d.proc.pid)
        other = subprocess.Popen([str(loop), str(calls)], stdout=subprocess.DEVNULL)
        storm(program, execs)
        other.wait()
        after = programs(d.proc.pid)
    finally:
        d.stop()
    per = {}
    for pid_, a in after.items():
        b = before.get(pid_, {"ns": 0, "runs": 0})
        per[a["name"]] = {"ns": a["ns"] - b["ns"], "runs": a["runs"] - b["runs"]}
    unnamed = [n for n in per if n.startswith("id ")]
    if unnamed:
        raise SystemExit(f"kernel_cost: no name for programs {', '.join(unnamed)}")
    hooks = [n for n in per if n.startswith(HOOKS)]
    return {"mode": attached["capture_mode"], "programs": per,
            "ns_per_exec": sum(p["ns"] for p in per.values()) / execs,
            "execve_hook_ns_per_exec": sum(per[n]["ns"] for n in hooks) / execs,
            "execve_hook_runs_per_exec": sum(per[n]["runs"] for n in hooks) / execs}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--modes", nargs="+", default=["auto", "raw_syscalls"],
                    choices=["auto", "fentry", "raw_syscalls"])
    ap.add_argument("--execs", type=int, default=5000)
    ap.add_argument("--calls", type=int, default=1_000_000, help="getppid() calls beside the storm")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("kernel_cost: needs root", file=sys.stderr)
        return 2
    was = STATS.read_text().strip()
    STATS.write_text("1\n")
    work = Path(tempfile.mkdtemp(prefix="auditd-kcost-"))
    os.chmod(work, 0o755)
    program = str(work / "kcost-true")
    shutil.copy("/bin/true", program)
    raw: dict[str, list[dict]] = {m: [] for m in args.modes}
    try:
        loop = build_loop(work)
        for rep in range(args.reps):
            for m in args.modes[rep % len(args.modes):] + args.modes[:rep % len(args.modes)]:
                r = one_run(m, loop, program, args.execs, args.calls, work, rep)
                raw[m].append(r)
                print(f"rep {rep} {m} ({r['mode']}): {r['ns_per_exec']:.0f} ns per exec, execve hooks "
                      f"{r['execve_hook_ns_per_exec']:.0f} ns in {r['execve_hook_runs_per_exec']:.1f} runs",
                      file=sys.stderr)
    finally:
        STATS.write_text(was + "\n")
        shutil.rmtree(work, ignore_errors=True)
    lines = [f"{args.reps} alternated reps of {args.execs:,} execs beside {args.calls:,} getppid() "
             "calls; kernel.bpf_stats_enabled run time of the daemon's programs.", "",
             "| mode asked | mode | BPF ns per exec, all programs | execve hooks ns per exec | "
             "execve hook runs per exec |", "|---|---|---|---|---|"]
    for m, rs in raw.items():
        lines.append(f"| {m} | {', '.join(sorted({r['mode'] for r in rs}))} | "
                     f"{cell(spread([r['ns_per_exec'] for r in rs]), '.0f')} | "
                     f"{cell(spread([r['execve_hook_ns_per_exec'] for r in rs]), '.0f')} | "
                     f"{cell(spread([r['execve_hook_runs_per_exec'] for r in rs]), '.1f')} |")
    print("\n".join(lines))
    if args.json:
        args.json.write_text(json.dumps(raw, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
