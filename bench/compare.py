#!/usr/bin/env python3
"""Side-by-side: what an audit logger costs and what it loses, under one exec storm.

Configurations, alternated rep by rep (each rep starting with the next one,
after the disk has settled) and compared by the median of pairs:
nothing running; auditd-lite (ring buffer); Debian's auditd with an execve
rule as users configure it; Debian's bpftrace with a one-liner printing every
exec and exit to a file; auditd-lite with --transport perfbuf. Each is
checked record by record against what the storm ran. A longer storm follows,
nothing running against auditd-lite only (the one a daemon's CPU per process
and its steady RSS are read from). Then the writer and query benchmarks are
run and their tables appended.

    sudo .venv/bin/python bench/compare.py --execs 20000 --reps 5 --big-execs 100000 --big-reps 3
    sudo .venv/bin/python bench/compare.py --execs 2000 --reps 1 --big-execs 5000 --big-reps 1 \\
        --writer-records 0 --query-records 0     # a quick look

Writes bench/results/<date>.md and .json beside it.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from exec_storm import REPO, Daemon, count, status_kb, storm, wait_idle  # noqa: E402
from figures import (BPFTRACE_PROGRAM, cell, count_bpftrace, readme_block, replace_block,  # noqa: E402
                     rss_trend, spread)

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
        self.cpu_before = wait_idle(self.pid)

    def stop(self, program: str) -> dict:
        cpu = wait_idle(self.pid) - self.cpu_before
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


class Bpftrace:
    """Debian's bpftrace running the one-liner a user would write for the same job,
    printing every exec and exit to a file."""

    def __init__(self, work: Path, rep: int, ready_limit_s: float = 60.0):
        if not shutil.which("bpftrace"):
            raise SystemExit("compare: no bpftrace; run `bash scripts/dev.sh bench-setup` "
                             "or pass --skip-bpftrace")
        self.out = work / f"bpftrace-{rep}.out"
        self.err = open(work / f"bpftrace-{rep}.err", "w+")
        t0 = time.monotonic()
        self.proc = subprocess.Popen(["bpftrace", "-o", str(self.out), "-e", BPFTRACE_PROGRAM],
                                     stdout=subprocess.DEVNULL, stderr=self.err)
        self.pid = self.proc.pid
        # "Attaching N probes..." is flushed at once; the events are block-buffered
        while not (self.out.exists() and "Attaching" in self.out.read_text(errors="replace")):
            if self.proc.poll() is not None or time.monotonic() - t0 > ready_limit_s:
                self.proc.kill()
                self.err.seek(0)
                raise SystemExit(f"bpftrace did not start: {self.err.read()[-2000:]}")
            time.sleep(0.02)
        self.ready_s = time.monotonic() - t0
        self.cpu_before = wait_idle(self.pid)

    def stop(self, program: str) -> dict:
        cpu = wait_idle(self.pid) - self.cpu_before
        hwm = status_kb(self.pid, "VmHWM")
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise SystemExit("bpftrace did not stop on SIGINT")
        self.err.seek(0)
        got = count_bpftrace(self.out.read_text(errors="replace") + "\n" + self.err.read(), program)
        self.out.unlink()
        return {**got, "cpu_storm_s": cpu, "peak_rss_kb": hwm, "ready_s": self.ready_s}


# auditd-lite configurations beyond the default: their flags
DAEMON_FLAGS = {"auditd-lite": [], "auditd-lite perfbuf": ["--transport", "perfbuf"],
                "auditd-lite no-hash": ["--no-hash"], "auditd-lite baseline": [],
                # --stream: the live stream to a file beside the database, rotated at 10 MiB
                "auditd-lite stream": [], "auditd-lite baseline stream": [],
                # --seal: sealed, with epochs of SEAL_INTERVAL (a state made per run)
                "auditd-lite sealed": []}
SEAL_INTERVAL = "1s"
BASELINE: Path | None = None  # --baseline: the checkout "auditd-lite baseline" runs


def run_config(name: str, program: str, execs: int, work: Path, rep: int) -> dict:
    """One storm under one configuration; the logger's VmRSS is sampled every tenth of
    each worker's share (every 5% of the storm)."""
    samples: list[tuple[int, int]] = []
    if name == "nothing":
        return {"rate": storm(program, execs, on_progress=lambda n: None)}
    if name == "auditd":
        logger = Auditd()
    elif name == "bpftrace":
        logger = Bpftrace(work, rep)
    else:
        db = work / f"{name.replace(' ', '-')}-{rep}"
        flags = list(DAEMON_FLAGS[name])
        if name.endswith(" stream"):
            flags += ["--stream", f"{db}.stream/stream.jsonl"]
        if name == "auditd-lite sealed":
            subprocess.run([sys.executable, "-m", "auditd_lite.cli", "seal", "setup", "--seal-state",
                            f"{db}.seal", "--interval", SEAL_INTERVAL], cwd=REPO, check=True,
                           capture_output=True)
            flags += ["--seal-state", f"{db}.seal"]
        logger = Daemon(db, flags, repo=BASELINE if name.startswith("auditd-lite baseline") else None)
    pid = logger.pid if not isinstance(logger, Daemon) else logger.proc.pid
    rate = storm(program, execs, on_progress=lambda n: samples.append((n, status_kb(pid, "VmRSS"))))
    if isinstance(logger, Daemon):
        r = {"rate": rate, **logger.stop(), **count(db, program)}
        shutil.rmtree(db, ignore_errors=True)
        shutil.rmtree(f"{db}.stream", ignore_errors=True)
        r["seals"] = seal_count(logger)
        shutil.rmtree(f"{db}.seal", ignore_errors=True)
    else:
        r = {"rate": rate, **logger.stop(program)}
    r["rss_samples"] = samples
    return r


def seal_count(daemon: Daemon) -> int:
    """The seals the daemon made (its log's "sealed" lines): read before its directory goes."""
    daemon.err.seek(0)
    n = 0
    for line in daemon.err:
        try:
            n += json.loads(line).get("event") == "sealed"
        except (ValueError, AttributeError):
            pass
    return n


def run_phase(configs: list[str], program: str, execs: int, reps: int, work: Path, label: str) -> dict:
    results: dict[str, list[dict]] = {c: [] for c in configs}
    for rep in range(reps):
        # each rep starts with a different configuration, and each run
        # starts once the previous one's writes are on disk: otherwise
        # the run after a logger pays for its writeback
        for c in configs[rep % len(configs):] + configs[:rep % len(configs)]:
            os.sync()
            time.sleep(1.0)
            r = run_config(c, program, execs, work, rep)
            results[c].append(r)
            extra = "" if c == "nothing" else (
                f", exec {r['exec']} exit {r['exit']} lost {r['lost']}, cpu {r['cpu_storm_s']:.2f} s, "
                f"hwm {r['peak_rss_kb'] / 1024:.1f} MiB, ready {r['ready_s']:.2f} s")
            print(f"{label} rep {rep} {c}: {r['rate']:.0f}/s{extra}", file=sys.stderr)
    return results


def summarize(results: dict[str, list[dict]], execs: int) -> dict:
    """Per configuration, each figure's median and min..max over the reps; ratios are
    taken rep by rep against the same rep's 'nothing running'."""
    base = results["nothing"]
    summary = {}
    for c, rs in results.items():
        entry = {"execs_per_s": spread([r["rate"] for r in rs]),
                 "ratio": spread([r["rate"] / b["rate"] for r, b in zip(rs, base)])}
        if c != "nothing":
            trends = [rss_trend(r["rss_samples"]) for r in rs]
            entry.update(
                captured_exec=spread([r["exec"] / execs for r in rs]),
                captured_exit=spread([None if r["exit"] is None else r["exit"] / execs for r in rs]),
                hashed_inode=spread([r["hashed_inode"] / r["exec"] if r.get("exec") and "hashed_inode" in r
                                     else None for r in rs]),
                lost=sum(r["lost"] for r in rs),
                cpu_s_per_1000=spread([r["cpu_storm_s"] / execs * 1000 for r in rs]),
                records_per_cpu_s=spread([
                    (execs * (1 if r["exit"] is None else 2)) / r["cpu_storm_s"] if r["cpu_storm_s"] else None
                    for r in rs]),
                peak_rss_mb=spread([r["peak_rss_kb"] / 1024 for r in rs]),
                ready_s=spread([r["ready_s"] for r in rs]),
                rss_first_mb=spread([t and t["first_mb"] for t in trends]),
                rss_last_mb=spread([t and t["last_mb"] for t in trends]),
                rss_growth_mb=spread([t and t["growth_mb"] for t in trends]),
                rss_slope_mb_per_10k=spread([t and t["slope_mb_per_10k"] for t in trends]))
            if any("seals" in r for r in rs):
                entry["seals"] = spread([r["seals"] for r in rs])
            if c.endswith(" stream"):
                entry["stream_dropped"] = sum(r.get("stream_dropped", 0) for r in rs)
        summary[c] = entry
    return summary


def bench_table(script: str, *args: str) -> str:
    p = subprocess.run([sys.executable, str(HERE / script), *args], capture_output=True, text=True)
    if p.returncode != 0 and not p.stdout:
        return f"({script} failed: {p.stderr.strip().splitlines()[-1] if p.stderr.strip() else p.returncode})"
    return "\n".join(line for line in p.stdout.splitlines() if line.startswith("|"))


def storm_table(summary: dict, cols: list[str]) -> list[str]:
    heads = {
        "execs_per_s": "execs/s", "ratio": "ratio", "captured_exec": "exec captured",
        "captured_exit": "exit captured", "lost": "lost (own counter)",
        "hashed_inode": "hashed: kernel's inode",
        "cpu_s_per_1000": "daemon CPU s / 1,000 proc", "records_per_cpu_s": "records per daemon CPU-s",
        "peak_rss_mb": "peak RSS MiB (VmHWM)", "rss_first_mb": "RSS MiB at 10%",
        "rss_last_mb": "RSS MiB at 100%", "rss_slope_mb_per_10k": "RSS slope MiB / 10,000 execs",
        "ready_s": "start to ready s", "seals": "seals made"}
    fmts = {"execs_per_s": (".0f", 1, ""), "ratio": (".3f", 1, ""), "captured_exec": (".2f", 100, "%"),
            "captured_exit": (".2f", 100, "%"), "hashed_inode": (".2f", 100, "%"), "cpu_s_per_1000": (".4f", 1, ""),
            "records_per_cpu_s": (".0f", 1, ""), "peak_rss_mb": (".1f", 1, ""), "rss_first_mb": (".1f", 1, ""),
            "rss_last_mb": (".1f", 1, ""), "rss_slope_mb_per_10k": ("+.2f", 1, ""), "ready_s": (".2f", 1, ""), "seals": (".0f", 1, "")}
    lines = ["| configuration | " + " | ".join(heads[k] for k in cols) + " |",
             "|---|" + "---|" * len(cols)]
    for c, e in summary.items():
        row = []
        for k in cols:
            if c == "nothing" and k not in ("execs_per_s", "ratio"):
                row.append("")
            elif k == "lost":
                row.append(str(e["lost"]))
            else:
                row.append(cell(e.get(k), *fmts[k]))
        lines.append(f"| {'nothing running' if c == 'nothing' else c} | " + " | ".join(row) + " |")
    return lines


def goals(small: dict, big: dict | None, execs: int, big_execs: int) -> list[str]:
    """Issues #12 and #21's figures for auditd-lite, each against its goal, from the medians."""
    d = small["auditd-lite"]
    rows = [("throughput ratio at %d execs" % execs, f"{d['ratio']['median']:.3f}", ">= 0.985",
             d["ratio"]["median"] >= 0.985),
            ("every exec and exit captured, every rep", "yes" if d["captured_exec"]["min"] == 1
             and d["captured_exit"]["min"] == 1 else "no", "yes",
             d["captured_exec"]["min"] == 1 and d["captured_exit"]["min"] == 1),
            ("lost", str(d["lost"]), "0", d["lost"] == 0),
            ("execs hashed as the inode the kernel named (hash_status inode; #21)",
             cell(d["hashed_inode"], ".2f", 100, "%"), ">= 99%",
             d["hashed_inode"] is not None and d["hashed_inode"]["median"] >= 0.99),
            ("daemon CPU s / 1,000 proc at %d execs" % execs, f"{d['cpu_s_per_1000']['median']:.4f}",
             "<= 0.012", d["cpu_s_per_1000"]["median"] <= 0.012),
            ("peak RSS MiB (VmHWM)", f"{d['peak_rss_mb']['median']:.1f}", "<= 60",
             d["peak_rss_mb"]["median"] <= 60),
            ("start to ready s", f"{d['ready_s']['median']:.2f}", "<= 1.0 (about 1.0 s before)",
             d["ready_s"]["median"] <= 1.0)]
    for plain, streamed in (("auditd-lite", "auditd-lite stream"),
                            ("auditd-lite baseline", "auditd-lite baseline stream")):
        if streamed in small and plain in small:
            times = small[streamed]["cpu_s_per_1000"]["median"] / small[plain]["cpu_s_per_1000"]["median"]
            rows.append((f"daemon CPU with --stream, times without ({plain})", f"{times:.2f}", "<= 1.25",
                         times <= 1.25))
            dropped = small[streamed]["stream_dropped"]
            rows.append((f"stream lines dropped, every rep ({plain})", str(dropped), "0", dropped == 0))
    if big is not None:
        b = big["auditd-lite"]
        flat = b["cpu_s_per_1000"]["median"] / d["cpu_s_per_1000"]["median"]
        rows += [("daemon CPU s / 1,000 proc at %d execs" % big_execs, f"{b['cpu_s_per_1000']['median']:.4f}",
                  "<= 0.012", b["cpu_s_per_1000"]["median"] <= 0.012),
                 ("CPU per process, %d against %d execs" % (big_execs, execs), f"{flat:.2f}",
                  "flat (about 1)", None),
                 ("throughput ratio at %d execs" % big_execs, f"{b['ratio']['median']:.3f}", ">= 0.985",
                  b["ratio"]["median"] >= 0.985),
                 ("every exec and exit captured at %d execs" % big_execs, "yes" if b["captured_exec"]["min"] == 1
                  and b["captured_exit"]["min"] == 1 and b["lost"] == 0 else "no", "yes, 0 lost",
                  b["captured_exec"]["min"] == 1 and b["captured_exit"]["min"] == 1 and b["lost"] == 0),
                 ("RSS growth MiB, 10% to 100% of the storm", f"{b['rss_growth_mb']['median']:+.1f}",
                  "flat (about 0)", None)]
    out = ["| figure (auditd-lite, medians) | measured | goal | met |", "|---|---|---|---|"]
    for name, value, goal, ok in rows:
        out.append(f"| {name} | {value} | {goal} | {'-' if ok is None else ('yes' if ok else 'no')} |")
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--execs", type=int, default=20000, help="execs per run, every configuration")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--big-execs", type=int, default=100_000,
                    help="execs per run of the long storm (nothing running and auditd-lite only); 0: none")
    ap.add_argument("--big-reps", type=int, default=3)
    ap.add_argument("--skip-auditd", action="store_true")
    ap.add_argument("--skip-bpftrace", action="store_true")
    ap.add_argument("--skip-perfbuf", action="store_true")
    ap.add_argument("--no-hash", action="store_true",
                    help="also run auditd-lite --no-hash (what hashing executables costs)")
    ap.add_argument("--baseline", type=Path, metavar="CHECKOUT",
                    help="also run auditd-lite from this checkout (with its own .venv), "
                         "e.g. the release before a change")
    ap.add_argument("--stream", action="store_true",
                    help="also run auditd-lite with --stream (the live stream to a file)")
    ap.add_argument("--seal", nargs="?", const="1s", metavar="INTERVAL",
                    help="also run auditd-lite sealed, with epochs of INTERVAL (1s: a seal a second, "
                         "far more than the 15m default)")
    ap.add_argument("--tax-reps", type=int, default=5,
                    help="reps of bench/syscall_tax.py (what a program that never execs pays); 0: none")
    ap.add_argument("--tax-calls", type=int, default=3_000_000, help="its getppid() calls per loop")
    ap.add_argument("--tax-blocks", type=int, default=2_000_000, help="its dd blocks")
    ap.add_argument("--writer-records", type=int, default=1_000_000, help="0: no writer bench")
    ap.add_argument("--query-records", type=int, default=1_000_000, help="0: no query bench")
    ap.add_argument("--out", type=Path, default=HERE / "results")
    ap.add_argument("--readme", type=Path, help="also put the tables in this README's make-bench block")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("compare: needs root (BPF, auditd, bpftrace)", file=sys.stderr)
        return 2

    if args.readme:
        try:  # an hour's bench must not end on a README it cannot write
            replace_block(args.readme.read_text(), "")
        except (OSError, ValueError) as e:
            print(f"compare: --readme {args.readme}: {e}", file=sys.stderr)
            return 2
    global BASELINE
    configs = ["nothing", "auditd-lite", "auditd", "bpftrace", "auditd-lite perfbuf"]
    if args.no_hash:
        configs.append("auditd-lite no-hash")
    if args.stream:
        configs.append("auditd-lite stream")
    global SEAL_INTERVAL
    if args.seal:
        SEAL_INTERVAL = args.seal
        configs.append("auditd-lite sealed")
    if args.baseline:
        BASELINE = args.baseline.resolve()
        if not (BASELINE / ".venv/bin/python").exists():
            print(f"compare: --baseline {args.baseline}: no .venv there (bash scripts/dev.sh setup in it)",
                  file=sys.stderr)
            return 2
        configs.append("auditd-lite baseline")
        if args.stream:
            configs.append("auditd-lite baseline stream")
    for flag, name in ((args.skip_auditd, "auditd"), (args.skip_bpftrace, "bpftrace"),
                       (args.skip_perfbuf, "auditd-lite perfbuf")):
        if flag:
            configs.remove(name)
    if "bpftrace" in configs and not shutil.which("bpftrace"):
        print("compare: no bpftrace; run `bash scripts/dev.sh bench-setup` or pass --skip-bpftrace",
              file=sys.stderr)
        return 2
    big_configs = ["nothing", "auditd-lite"]
    work = Path(tempfile.mkdtemp(prefix="auditd-compare-"))
    os.chmod(work, 0o755)
    # a name of this run's own: other storms on the machine exit with a comm too
    program = str(work / f"storm{secrets.token_hex(3)}")
    shutil.copy("/bin/true", program)
    t_start = time.monotonic()
    try:
        storm(program, 2000)
        results = run_phase(configs, program, args.execs, args.reps, work, f"{args.execs}")
        big_results = (run_phase(big_configs, program, args.big_execs, args.big_reps, work, f"{args.big_execs}")
                       if args.big_execs and args.big_reps else None)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    storm_s = time.monotonic() - t_start

    summary = summarize(results, args.execs)
    big_summary = summarize(big_results, args.big_execs) if big_results else None
    kb = 8192
    lines = [
        f"# auditd-lite benchmark, {datetime.date.today().isoformat()}",
        "",
        f"Machine: {os.cpu_count()} cores, Linux {platform.release()}, "
        f"{platform.freedesktop_os_release().get('PRETTY_NAME', '')}. Exec storm: 2 workers "
        f"fork+exec a copy of /bin/true, {args.execs} execs per run, {args.reps} alternated reps; "
        "each cell is the median, with (min..max) over the reps when they differ; ratio = the "
        "per-rep ratio to 'nothing running' in the same rep. Daemon CPU: the logger process's "
        "CPU time (its CPU-time clock, to the ns) from at rest after ready to at rest after the "
        "storm (its backlog drained); peak RSS: its VmHWM just before it is stopped; start to ready: spawn to "
        "sd_notify READY=1 (auditd-lite), to `auditctl` having loaded the rule (auditd), to "
        "bpftrace's \"Attaching\" line (bpftrace).",
        "",
        *storm_table(summary, ["execs_per_s", "ratio", "captured_exec", "captured_exit", "lost",
                               "hashed_inode", "cpu_s_per_1000", "records_per_cpu_s", "peak_rss_mb", "ready_s"]
                    + (["seals"] if args.seal else [])),
        "",
        f"auditd: `auditctl {' '.join(RULE)}`, counted in its log (it records no exits). "
        f"bpftrace: `bpftrace -o FILE -e '{BPFTRACE_PROGRAM}'`, its lines counted, "
        "its \"Lost N events\" lines summed.",
    ]
    if big_summary:
        lines += ["", f"## {args.big_execs}-exec storm", "",
                  f"Nothing running and auditd-lite, alternated, {args.big_reps} reps. VmRSS sampled every 5% of "
                  "the storm; first and last sample from 10% on, and the least-squares slope over them.", "",
                  *storm_table(big_summary, ["execs_per_s", "ratio", "captured_exec", "captured_exit", "lost",
                                             "cpu_s_per_1000", "peak_rss_mb", "rss_first_mb", "rss_last_mb",
                                             "rss_slope_mb_per_10k", "ready_s"])]
    lines += ["", "## Goals (issues #12 and #21)", "", *goals(summary, big_summary, args.execs, args.big_execs)]
    lines += ["", f"Buffer memory at the default --buffer-kb {kb}: ring buffer {kb // 1024} MiB shared "
              f"by all CPUs; perf buffer {kb // 1024} MiB per CPU = {kb * os.cpu_count() // 1024} MiB.",
              f"Storm runs took {storm_s / 60:.1f} min."]
    if args.tax_reps:
        skips = [f for f, on in (("--skip-auditd", args.skip_auditd), ("--skip-bpftrace", args.skip_bpftrace))
                 if on]
        lines += ["", "## What it costs a program that never execs", "",
                  "bench/syscall_tax.py: two processes making getppid() system calls, and "
                  "`dd bs=64` (two system calls a block), with each logger running and not, "
                  f"{args.tax_reps} alternated reps. The hooks column says which mode each row "
                  "ran in: auditd-lite's fentry (the execve functions only) where the kernel "
                  "attaches tracing programs, else raw_syscalls (every system call); speed 1.000 "
                  "is free. BPF runs per getppid(): the logger's programs' runs as the kernel "
                  "counts them (kernel.bpf_stats_enabled), over an untimed pass of the loops.", "",
                  bench_table("syscall_tax.py", "--reps", str(args.tax_reps), "--calls", str(args.tax_calls),
                              "--blocks", str(args.tax_blocks), *skips)]
    if args.writer_records:
        lines += ["", "## Writer", "", bench_table("writer_throughput.py", "--records", str(args.writer_records))]
    if args.query_records and (HERE / "query_latency.py").exists():
        lines += ["", "## Queries", "", bench_table("query_latency.py", "--records", str(args.query_records))]
    text = "\n".join(lines) + "\n"
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / datetime.date.today().isoformat()
    stem.with_suffix(".md").write_text(text)
    if args.readme:
        args.readme.write_text(replace_block(args.readme.read_text(), readme_block(text, stem.name)))
    stem.with_suffix(".json").write_text(json.dumps({
        "execs": args.execs, "reps": args.reps, "big_execs": args.big_execs, "big_reps": args.big_reps,
        "bpftrace_program": BPFTRACE_PROGRAM, "auditd_rule": RULE,
        "configs": summary, "raw": results, "big_configs": big_summary, "big_raw": big_results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
