#!/usr/bin/env python3
"""Side-by-side: what an audit logger costs and what it loses, under one exec storm.

Configurations, alternated rep by rep (each rep starting with the next one,
after the disk has settled) and compared by the median of pairs:
nothing running; auditd-lite (ring buffer); Debian's auditd with an execve
rule as users configure it; auditd-lite with --transport perfbuf. Each is
checked record by record against what the storm ran. Then the writer and
query benchmarks are run and their tables appended.

    sudo .venv/bin/python bench/compare.py --execs 20000 --reps 5

Writes bench/results/<date>.md and .json beside it.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from exec_storm import Daemon, count, cpu_seconds, status_kb, storm  # noqa: E402

AUDIT_LOG = Path("/var/log/audit/audit.log")
RULE = ["-a", "always,exit", "-F", "arch=b64", "-S", "execve", "-k", "auditd-lite-bench"]


def auditctl_status() -> dict:
    out = subprocess.run(["auditctl", "-s"], capture_output=True, text=True, check=True).stdout
    return {k: int(v) for k, v in re.findall(r"^(\w+) (\d+)$", out, flags=re.M)}


class Auditd:
    """Debian's auditd with an execve rule, started and stopped around one storm."""

    def __init__(self):
        if not shutil.which("auditd"):
            subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", "auditd"],
                           check=True, env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"))
        subprocess.run(["pkill", "-x", "auditd"], check=False)
        time.sleep(0.3)
        AUDIT_LOG.parent.mkdir(parents=True, exist_ok=True)
        # auditd rotates its log at 8 MiB by default: start from nothing
        for old in AUDIT_LOG.parent.glob(AUDIT_LOG.name + ".*"):
            old.unlink()
        AUDIT_LOG.write_text("")
        t0 = time.monotonic()
        subprocess.run(["auditd"], check=True)  # daemonizes once its socket is ready
        subprocess.run(["auditctl", "-D"], check=True, capture_output=True)
        subprocess.run(["auditctl", "-e", "1"], check=True, capture_output=True)
        subprocess.run(["auditctl", *RULE], check=True)
        self.ready_s = time.monotonic() - t0
        self.lost_before = auditctl_status().get("lost", 0)
        self.pid = int(subprocess.run(["pgrep", "-o", "-x", "auditd"], capture_output=True,
                                      text=True, check=True).stdout)
        self.cpu_before = cpu_seconds(self.pid)

    def stop(self, program: str) -> dict:
        cpu = cpu_seconds(self.pid) - self.cpu_before
        rss = status_kb(self.pid, "VmHWM")
        lost = auditctl_status().get("lost", 0) - self.lost_before
        subprocess.run(["auditctl", "-D"], check=True, capture_output=True)
        subprocess.run(["auditctl", "-e", "0"], check=True, capture_output=True)
        subprocess.run(["pkill", "-x", "auditd"], check=False)
        time.sleep(0.5)
        needle = f'exe="{program}"'
        execs = 0
        for log in AUDIT_LOG.parent.glob(AUDIT_LOG.name + "*"):
            with open(log, errors="replace") as f:
                execs += sum(1 for line in f if line.startswith("type=SYSCALL") and needle in line)
        return {"exec": execs, "exit": None, "lost": lost, "cpu_storm_s": cpu, "peak_rss_kb": rss,
                "ready_s": self.ready_s}


def run_config(name: str, program: str, execs: int, work: Path, rep: int) -> dict:
    if name == "nothing":
        return {"rate": storm(program, execs)}
    if name == "auditd":
        a = Auditd()
        rate = storm(program, execs)
        return {"rate": rate, **a.stop(program)}
    flags = ["--transport", "perfbuf"] if name == "auditd-lite perfbuf" else []
    db = work / f"{name.replace(' ', '-')}-{rep}"
    d = Daemon(db, flags)
    rate = storm(program, execs)
    cost = d.stop()
    got = count(db, program)
    return {"rate": rate, **cost, **got}


def bench_table(script: str, *args: str) -> str:
    p = subprocess.run([sys.executable, str(HERE / script), *args], capture_output=True, text=True)
    if p.returncode != 0 and not p.stdout:
        return f"({script} failed: {p.stderr.strip().splitlines()[-1] if p.stderr.strip() else p.returncode})"
    return "\n".join(line for line in p.stdout.splitlines() if line.startswith("|"))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--execs", type=int, default=20000)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--skip-auditd", action="store_true")
    ap.add_argument("--writer-records", type=int, default=1_000_000)
    ap.add_argument("--query-records", type=int, default=1_000_000)
    ap.add_argument("--out", type=Path, default=HERE / "results")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("compare: needs root (BPF, auditd)", file=sys.stderr)
        return 2

    configs = ["nothing", "auditd-lite", "auditd", "auditd-lite perfbuf"]
    if args.skip_auditd:
        configs.remove("auditd")
    work = Path(tempfile.mkdtemp(prefix="auditd-compare-"))
    os.chmod(work, 0o755)
    program = str(work / "stormtrue")
    shutil.copy("/bin/true", program)
    results: dict[str, list[dict]] = {c: [] for c in configs}
    try:
        storm(program, 2000)
        for rep in range(args.reps):
            # each rep starts with a different configuration, and each run
            # starts once the previous one's writes are on disk: otherwise
            # the run after a logger pays for its writeback
            for c in configs[rep % len(configs):] + configs[:rep % len(configs)]:
                os.sync()
                time.sleep(1.0)
                r = run_config(c, program, args.execs, work, rep)
                results[c].append(r)
                print(f"rep {rep} {c}: {r['rate']:.0f}/s", file=sys.stderr)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    base = results["nothing"]
    summary = {}
    for c in configs:
        rs = results[c]
        ratio = statistics.median(r["rate"] / b["rate"] for r, b in zip(rs, base))
        entry = {"execs_per_s": statistics.median(r["rate"] for r in rs), "ratio": ratio}
        if c != "nothing":
            execs_got = statistics.median(r["exec"] for r in rs)
            exits = [r["exit"] for r in rs if r["exit"] is not None]
            entry.update(
                captured_exec=execs_got / args.execs,
                captured_exit=(statistics.median(exits) / args.execs) if exits else None,
                lost=sum(r["lost"] for r in rs),
                cpu_s_per_1000=statistics.median(r["cpu_storm_s"] for r in rs) / args.execs * 1000,
                peak_rss_mb=statistics.median(r["peak_rss_kb"] for r in rs) / 1024,
                ready_s=statistics.median(r["ready_s"] for r in rs))
            cpu = statistics.median(r["cpu_storm_s"] for r in rs)
            records = 2 * args.execs if exits else args.execs
            entry["records_per_cpu_s"] = records / cpu if cpu else None
        summary[c] = entry

    def pct(x):
        return "-" if x is None else f"{100 * x:.2f}%"

    lines = [
        f"# auditd-lite benchmark, {datetime.date.today().isoformat()}",
        "",
        f"Machine: {os.cpu_count()} cores, Linux {platform.release()}, "
        f"{platform.freedesktop_os_release().get('PRETTY_NAME', '')}. Exec storm: 2 workers "
        f"fork+exec a copy of /bin/true, {args.execs} execs per run, {args.reps} alternated reps, "
        "medians; ratio = median of per-rep ratios to 'nothing running'.",
        "",
        "| configuration | execs/s | ratio | exec captured | exit captured | lost (own counter) "
        "| daemon CPU s / 1,000 proc | records per daemon CPU-s | peak RSS MiB | start to ready s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for c in configs:
        e = summary[c]
        if c == "nothing":
            lines.append(f"| nothing running | {e['execs_per_s']:.0f} | 1.000 | | | | | | | |")
            continue
        rpc = f"{e['records_per_cpu_s']:.0f}" if e.get("records_per_cpu_s") else "-"
        lines.append(
            f"| {c} | {e['execs_per_s']:.0f} | {e['ratio']:.3f} | {pct(e['captured_exec'])} | "
            f"{pct(e['captured_exit'])} | {e['lost']} | {e['cpu_s_per_1000']:.3f} | {rpc} | "
            f"{e['peak_rss_mb']:.1f} | {e['ready_s']:.2f} |")
    kb = 8192
    lines += ["", f"Buffer memory at the default --buffer-kb {kb}: ring buffer {kb // 1024} MiB shared "
              f"by all CPUs; perf buffer {kb // 1024} MiB per CPU = {kb * os.cpu_count() // 1024} MiB.",
              "", "## Writer", "", bench_table("writer_throughput.py", "--records", str(args.writer_records))]
    if (HERE / "query_latency.py").exists():
        lines += ["", "## Queries", "", bench_table("query_latency.py", "--records", str(args.query_records))]
    text = "\n".join(lines) + "\n"
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / datetime.date.today().isoformat()
    stem.with_suffix(".md").write_text(text)
    stem.with_suffix(".json").write_text(json.dumps({"configs": summary, "raw": results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
