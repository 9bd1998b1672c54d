#!/usr/bin/env python3
"""What an exec logger costs a program that never execs (issue #20): every system call of the
host pays for a program on the syscall tracepoints, none pays for one on the execve functions.

Two measures, each taken with the logger running and not, configurations alternated rep by
rep in one run (the machine is shared and noisy):
  getppid   two processes (one a core) each making --calls getppid() system calls
            (bench/programs/syscall_loop.c): ns per call, the median of the two
  dd        dd if=/dev/zero of=/dev/null bs=64 count=--blocks: two system calls a block, wall s

Configurations: nothing running; auditd-lite as the kernel gives it (auto: fentry where tracing
programs attach, else the raw_syscalls fallback: the row says which); auditd-lite with
--capture-mode raw_syscalls (the fallback forced); bpftrace on the sched tracepoints (exec
and exit, bench/figures.BPFTRACE_PROGRAM); auditd with an execve rule (b64 and b32). With
--service the only configurations are the installed auditd-lite.service stopped and started
(a VM guest: docs/vm.md).

    sudo .venv/bin/python bench/syscall_tax.py --reps 5
    sudo .venv/bin/python bench/syscall_tax.py --service --reps 5     # inside a VM guest

Prints a Markdown table; --json FILE writes the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bpfstats import counting, programs, runs_between  # noqa: E402
from compare import Auditd, Bpftrace  # noqa: E402
from exec_storm import Daemon  # noqa: E402
from figures import cell, spread  # noqa: E402

LOOP_SOURCE = HERE / "programs" / "syscall_loop.c"
# getppid() calls of the untimed pass that counts the logger's BPF program runs (counting costs
# every run a clock read, so the timed pass runs without it)
COUNTED_CALLS = 100_000
# auditd as a user who knows of the 32-bit gate configures it
AUDIT_RULES = [["-a", "always,exit", "-F", f"arch={arch}", "-S", "execve", "-k", "auditd-lite-tax"]
               for arch in ("b64", "b32")]


def build_loop(work: Path) -> Path:
    out = work / "syscall_loop"
    subprocess.run(["gcc", "-O2", "-o", str(out), str(LOOP_SOURCE)], check=True)
    return out


def getppid_ns(loop: Path, calls: int) -> float:
    """Median ns per call of two loops run at once (one a core on this 2-core machine; sharing
    the one vCPU of an instruction-counted guest)."""
    procs = [subprocess.Popen([str(loop), str(calls)], stdout=subprocess.PIPE, text=True) for _ in range(2)]
    return statistics.median(float(p.communicate()[0]) for p in procs)


def bpf_runs_per_call(logger, loop: Path) -> float | None:
    """The logger's BPF program runs (all of its programs, as the kernel counts them) per
    getppid() call of two loops: 0 where nothing hooks a system call that is not an exec, 2
    for a program on sys_enter and one on sys_exit. None for a logger with no BPF programs."""
    pid = logger.proc.pid if isinstance(logger, Daemon) else logger.pid
    with counting():
        before = programs(pid)
        if not before:
            return None
        getppid_ns(loop, COUNTED_CALLS)
        after = programs(pid)
    return sum(p["runs"] for p in runs_between(before, after).values()) / (2 * COUNTED_CALLS)


def dd_s(blocks: int) -> float:
    t0 = time.monotonic()
    subprocess.run(["dd", "if=/dev/zero", "of=/dev/null", "bs=64", f"count={blocks}"],
                   check=True, capture_output=True)
    return time.monotonic() - t0


class AuditdBoth(Auditd):
    """auditd with the execve rule for both ABIs: the rule that sees the 32-bit gate too."""

    def __init__(self):
        super().__init__()
        subprocess.run(["auditctl", *AUDIT_RULES[1]], check=True)


class Service:
    """The installed unit, started for the measure and stopped after it."""

    def __init__(self):
        # the unit allows 5 starts in 300 s (StartLimitBurst), which a bench's reps pass
        subprocess.run(["systemctl", "reset-failed", "auditd-lite"], capture_output=True)
        subprocess.run(["systemctl", "start", "auditd-lite"], check=True)
        self.pid = int(subprocess.run(["systemctl", "show", "-p", "MainPID", "--value", "auditd-lite"],
                                      capture_output=True, text=True, check=True).stdout)
        journal = subprocess.run(["journalctl", "-u", "auditd-lite", "-o", "cat", "-n", "200"],
                                 capture_output=True, text=True).stdout
        modes = [json.loads(l)["capture_mode"] for l in journal.splitlines()
                 if l.startswith("{") and '"programs_attached"' in l]
        self.mode = modes[-1] if modes else "?"

    def stop(self, _program=None) -> dict:
        subprocess.run(["systemctl", "stop", "auditd-lite"], check=True)
        return {}


def start(name: str, work: Path, rep: int):
    """The logger of a configuration, running; None for nothing."""
    if name == "nothing" or name == "service stopped":
        return None
    if name == "service started":
        return Service()
    if name == "auditd":
        return AuditdBoth()
    if name == "bpftrace":
        return Bpftrace(work, rep)
    flags = ["--capture-mode", "raw_syscalls"] if name == "auditd-lite raw_syscalls" else []
    return Daemon(work / f"db-{rep}-{name.replace(' ', '-')}", flags)


def mode_of(logger) -> str:
    """Which hooks the auditd-lite row ran with, from its log."""
    if isinstance(logger, Service):
        return logger.mode
    if isinstance(logger, Daemon):
        logger.err.seek(0)
        for line in logger.err:
            if '"programs_attached"' in line:
                return json.loads(line)["capture_mode"]
        return "?"
    return {AuditdBoth: "audit syscall rule", Bpftrace: "sched tracepoints"}.get(type(logger), "-")


def stop(logger) -> None:
    if logger is None:
        return
    if isinstance(logger, Daemon):
        logger.stop()
    else:
        logger.stop("/nonexistent")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--calls", type=int, default=3_000_000, help="getppid() calls per loop")
    ap.add_argument("--blocks", type=int, default=2_000_000, help="dd blocks of 64 bytes")
    ap.add_argument("--service", action="store_true",
                    help="compare the installed auditd-lite.service stopped and started only")
    ap.add_argument("--skip-auditd", action="store_true")
    ap.add_argument("--skip-bpftrace", action="store_true")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("syscall_tax: needs root", file=sys.stderr)
        return 2
    if args.service:
        configs = ["service stopped", "service started"]
    else:
        configs = ["nothing", "auditd-lite", "auditd-lite raw_syscalls", "bpftrace", "auditd"]
        for skip, name in ((args.skip_auditd, "auditd"), (args.skip_bpftrace, "bpftrace")):
            if skip:
                configs.remove(name)
        if "bpftrace" in configs and not shutil.which("bpftrace"):
            print("syscall_tax: no bpftrace; run `bash scripts/dev.sh bench-setup` or pass "
                  "--skip-bpftrace", file=sys.stderr)
            return 2
    work = Path(tempfile.mkdtemp(prefix="auditd-tax-"))
    os.chmod(work, 0o755)
    raw: dict[str, list[dict]] = {c: [] for c in configs}
    try:
        loop = build_loop(work)
        if args.service:
            subprocess.run(["systemctl", "stop", "auditd-lite"], check=True)
        for rep in range(args.reps):
            for c in configs[rep % len(configs):] + configs[:rep % len(configs)]:
                logger = start(c, work, rep)
                try:
                    time.sleep(1.0)  # past the start's own work (seeding, hashing)
                    r = {"getppid_ns": getppid_ns(loop, args.calls), "dd_s": dd_s(args.blocks),
                         "mode": mode_of(logger) if logger is not None else "-",
                         "bpf_runs_per_call": bpf_runs_per_call(logger, loop) if logger is not None else None}
                finally:
                    stop(logger)
                raw[c].append(r)
                print(f"rep {rep} {c}: getppid {r['getppid_ns']:.1f} ns, dd {r['dd_s']:.2f} s, "
                      f"mode {r['mode']}, BPF runs per call {r['bpf_runs_per_call']}", file=sys.stderr)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    base = raw[configs[0]]
    summary = {}
    for c, rs in raw.items():
        summary[c] = {
            "mode": sorted({r["mode"] for r in rs}),
            "getppid_ns": spread([r["getppid_ns"] for r in rs]),
            # the speed with the logger, as a fraction of the speed without, rep by rep
            "getppid_speed": spread([b["getppid_ns"] / r["getppid_ns"] for r, b in zip(rs, base)]),
            "dd_s": spread([r["dd_s"] for r in rs]),
            "dd_speed": spread([b["dd_s"] / r["dd_s"] for r, b in zip(rs, base)]),
            "bpf_runs_per_call": spread([r.get("bpf_runs_per_call") for r in rs]),
        }
    lines = [f"{args.reps} alternated reps; getppid: two loops of {args.calls:,} calls at once on "
             f"{os.cpu_count()} CPU{'s' if os.cpu_count() != 1 else ''}; dd: "
             f"{args.blocks:,} blocks of 64 bytes. Speed = time without / time with, rep by rep: "
             f"1.000 is free. BPF runs per getppid(): the logger's programs' runs (kernel.bpf_stats_enabled) "
             f"over an untimed pass of {COUNTED_CALLS:,} calls a loop, whatever else ran meanwhile.", "",
             "| configuration | hooks | ns per getppid() | getppid speed | dd s | dd speed | BPF runs per getppid() |",
             "|---|---|---|---|---|---|---|"]
    for c, e in summary.items():
        lines.append(f"| {c} | {', '.join(e['mode'])} | {cell(e['getppid_ns'], '.1f')} | "
                     f"{cell(e['getppid_speed'])} | {cell(e['dd_s'], '.2f')} | {cell(e['dd_speed'])} | "
                     f"{cell(e['bpf_runs_per_call'], '.4f')} |")
    print("\n".join(lines))
    if args.json:
        args.json.write_text(json.dumps({"configs": summary, "raw": raw, "calls": args.calls,
                                         "blocks": args.blocks, "reps": args.reps}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
