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
from bpfstats import NAME_LEN, PROG_TYPE_TRACING, counting, programs, runs_between  # noqa: E402

from auditd_lite.capture.compiler import PROBE_PREFIX  # noqa: E402
from auditd_lite.capture.loader import SYSCALL_TRACEPOINTS  # noqa: E402

# the execve hooks: every tracing program (fentry/fexit on the execve functions), and the
# fallback's programs on raw_syscalls, by the names the kernel keeps
SYSCALL_HOOKS = tuple((PROBE_PREFIX + t)[:NAME_LEN] for t in SYSCALL_TRACEPOINTS)


def is_execve_hook(prog: dict) -> bool:
    return prog["type"] == PROG_TYPE_TRACING or prog["name"].startswith(SYSCALL_HOOKS)


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
    per = runs_between(before, after)
    unnamed = [p["name"] for p in per.values() if p["name"].startswith("id ")]
    if unnamed:
        raise SystemExit(f"kernel_cost: no name for programs {', '.join(unnamed)}")
    hooks = [p for p in per.values() if is_execve_hook(p)]
    return {"mode": attached["capture_mode"], "programs": list(per.values()),
            "ns_per_exec": sum(p["ns"] for p in per.values()) / execs,
            "execve_hook_ns_per_exec": sum(p["ns"] for p in hooks) / execs,
            "execve_hook_runs_per_exec": sum(p["runs"] for p in hooks) / execs}


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
    work = Path(tempfile.mkdtemp(prefix="auditd-kcost-"))
    os.chmod(work, 0o755)
    program = str(work / "kcost-true")
    shutil.copy("/bin/true", program)
    raw: dict[str, list[dict]] = {m: [] for m in args.modes}
    try:
        with counting():
            loop = build_loop(work)
            for rep in range(args.reps):
                for m in args.modes[rep % len(args.modes):] + args.modes[:rep % len(args.modes)]:
                    r = one_run(m, loop, program, args.execs, args.calls, work, rep)
                    raw[m].append(r)
                    print(f"rep {rep} {m} ({r['mode']}): {r['ns_per_exec']:.0f} ns per exec, execve hooks "
                          f"{r['execve_hook_ns_per_exec']:.0f} ns in {r['execve_hook_runs_per_exec']:.1f} runs; "
                          + ", ".join(f"{p['name']} (type {p['type']}) {p['runs']} runs {p['ns']} ns"
                                      for p in r["programs"]), file=sys.stderr)
    finally:
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
