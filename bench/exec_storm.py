#!/usr/bin/env python3
"""Exec storm: what auditd-lite costs and whether it loses anything.

Two workers fork+exec a copy of /bin/true as fast as the machine allows.
Runs without and with the daemon alternate (the machines are shared and
noisy); each daemon run is checked record by record against the database:
every exec and every exit of the storm must be there.

    sudo .venv/bin/python bench/exec_storm.py --execs 20000 --reps 5

Prints a Markdown table and, with --json FILE, writes the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def storm(program: str, execs: int, workers: int = 2) -> float:
    """Run the storm; returns execs per second."""
    per = execs // workers
    code = (
        "import os,sys\n"
        "p=sys.argv[1]; n=int(sys.argv[2]); argv=[p]\n"
        "for _ in range(n):\n"
        "    pid=os.posix_spawn(p, argv, {})\n"
        "    os.waitpid(pid, 0)\n"
    )
    t0 = time.monotonic()
    procs = [subprocess.Popen([sys.executable, "-c", code, program, str(per)]) for _ in range(workers)]
    for p in procs:
        if p.wait() != 0:
            raise SystemExit("storm worker failed")
    return per * workers / (time.monotonic() - t0)


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def status_kb(pid: int, key: str) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


class Daemon:
    def __init__(self, db_dir: Path, flags: list[str]):
        self.db_dir = db_dir
        self.err = open(db_dir.parent / f"{db_dir.name}.log", "w+")
        t0 = time.monotonic()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "auditd_lite.cli", "run", "--db-dir", str(db_dir), *flags],
            stdout=subprocess.DEVNULL, stderr=self.err, cwd=REPO)
        while True:
            if self.proc.poll() is not None:
                self.err.seek(0)
                raise SystemExit(f"daemon exited: {self.err.read()[-2000:]}")
            self.err.seek(0)
            if '"programs_attached"' in self.err.read():
                break
            time.sleep(0.05)
        self.ready_s = time.monotonic() - t0
        # the seeding of running processes follows attach; let it finish
        time.sleep(0.5)
        self.cpu_at_ready = cpu_seconds(self.proc.pid)

    def stop(self) -> dict:
        cpu_storm = cpu_seconds(self.proc.pid) - self.cpu_at_ready
        rss_kb = status_kb(self.proc.pid, "VmRSS")
        anon_kb = status_kb(self.proc.pid, "RssAnon")
        self.proc.send_signal(signal.SIGTERM)
        _, status, usage = os.wait4(self.proc.pid, 0)
        self.proc.returncode = os.waitstatus_to_exitcode(status)
        if self.proc.returncode != 0:
            self.err.seek(0)
            raise SystemExit(f"daemon failed: {self.err.read()[-2000:]}")
        return {"cpu_storm_s": cpu_storm, "rss_kb": rss_kb, "anon_kb": anon_kb, "peak_rss_kb": usage.ru_maxrss,
                "ready_s": self.ready_s}


def count(db_dir: Path, program: str) -> dict:
    name = Path(program).name[:15]
    got = {"exec": 0, "exit": 0, "lost": 0}
    for db in sorted(db_dir.glob("*.db")):
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        got["exec"] += con.execute(
            "SELECT count(*) FROM events WHERE event='exec' AND filename=?", (program,)).fetchone()[0]
        got["exit"] += con.execute(
            "SELECT count(*) FROM events WHERE event='exit' AND comm=?", (name,)).fetchone()[0]
        got["lost"] += con.execute("SELECT coalesce(sum(lost_kernel),0) FROM runs").fetchone()[0]
        con.close()
    return got


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--execs", type=int, default=20000)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--json", type=Path)
    ap.add_argument("daemon_flags", nargs="*", help="extra flags for auditd-lite run (after --)")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("exec_storm: needs root to load the BPF programs", file=sys.stderr)
        return 2

    work = Path(tempfile.mkdtemp(prefix="auditd-storm-"))
    os.chmod(work, 0o755)
    program = str(work / "stormtrue")
    shutil.copy("/bin/true", program)
    base, with_d, checks, costs = [], [], [], []
    try:
        storm(program, 2000)  # warm caches
        for rep in range(args.reps):
            base.append(storm(program, args.execs))
            db_dir = work / f"db{rep}"
            d = Daemon(db_dir, args.daemon_flags)
            with_d.append(storm(program, args.execs))
            costs.append(d.stop())
            got = count(db_dir, program)
            checks.append(got)
            print(f"rep {rep}: baseline {base[-1]:.0f}/s, with daemon {with_d[-1]:.0f}/s, "
                  f"captured exec {got['exec']}/{args.execs} exit {got['exit']}/{args.execs}, "
                  f"lost {got['lost']}", file=sys.stderr)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    ratios = [w / b for w, b in zip(with_d, base)]
    complete = all(c["exec"] == args.execs and c["exit"] == args.execs for c in checks)
    result = {
        "execs": args.execs, "reps": args.reps, "daemon_flags": args.daemon_flags,
        "baseline_per_s": statistics.median(base), "with_daemon_per_s": statistics.median(with_d),
        "ratio_median": statistics.median(ratios), "ratios": ratios,
        "captured_all": complete, "captured": checks,
        "lost_events": sum(c["lost"] for c in checks),
        "daemon_cpu_s_per_1000": statistics.median(c["cpu_storm_s"] for c in costs) / args.execs * 1000,
        "daemon_rss_mb": statistics.median(c["rss_kb"] for c in costs) / 1024,
        "daemon_anon_rss_mb": statistics.median(c["anon_kb"] for c in costs) / 1024,
        "daemon_peak_rss_mb": statistics.median(c["peak_rss_kb"] for c in costs) / 1024,
        "ready_s": statistics.median(c["ready_s"] for c in costs),
    }
    print("| figure | value |\n|---|---|")
    print(f"| execs per run | {args.execs} (2 workers, {args.reps} alternated reps) |")
    print(f"| baseline execs/s (median) | {result['baseline_per_s']:.0f} |")
    print(f"| with auditd-lite execs/s (median) | {result['with_daemon_per_s']:.0f} |")
    print(f"| throughput ratio (median of pairs) | {result['ratio_median']:.3f} |")
    print(f"| every exec and exit captured | {'yes' if complete else 'NO'} |")
    print(f"| lost events (kernel counter) | {result['lost_events']} |")
    print(f"| daemon CPU s per 1,000 processes | {result['daemon_cpu_s_per_1000']:.3f} |")
    print(f"| daemon RSS after storm (MiB) | {result['daemon_rss_mb']:.1f} |")
    print(f"| of which anonymous, not shared library pages (MiB) | {result['daemon_anon_rss_mb']:.1f} |")
    print(f"| daemon peak RSS incl. compile (MiB) | {result['daemon_peak_rss_mb']:.1f} |")
    print(f"| start to attached (s) | {result['ready_s']:.2f} |")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0 if complete else 1


if __name__ == "__main__":
    sys.exit(main())
