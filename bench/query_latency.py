#!/usr/bin/env python3
"""Investigation commands as a user runs them: whole processes, start to exit.

    .venv/bin/python bench/query_latency.py --db-dir /tmp/audit-bench        # made by populate.py
    .venv/bin/python bench/query_latency.py --records 1000000                 # populates a temp dir

Each command runs --reps times as a fresh `python -m auditd_lite.cli` process (so interpreter
start-up and imports count) after one warm-up run; the median wall time is reported, with the
goal of 300 ms. The export of one day is reported in MB/s of the exported file (goal 50).
Prints a Markdown table (bench/compare.py picks up its lines).
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
REPO = HERE.parent
CLI = [sys.executable, "-m", "auditd_lite.cli"]
GOAL_MS = 300
GOAL_MBS = 50


def timed(args: list[str], ok=(0, 1)) -> tuple[float, subprocess.CompletedProcess]:
    t0 = time.perf_counter()
    p = subprocess.run([*CLI, *args], capture_output=True, cwd=REPO)
    elapsed = time.perf_counter() - t0
    if p.returncode not in ok:
        raise SystemExit(f"{' '.join(args)} failed ({p.returncode}): {p.stderr.decode()[-500:]}")
    return elapsed, p


def median_ms(args: list[str], reps: int) -> tuple[float, subprocess.CompletedProcess]:
    _, p = timed(args)  # warm the page cache, as a second question would find it
    times = []
    for _ in range(reps):
        t, p = timed(args)
        times.append(t)
    return statistics.median(times) * 1000, p


def tree_pid(db_dir: Path) -> str:
    info = db_dir / "populate.json"
    if info.exists():
        tree = json.loads(info.read_text()).get("tree")
        if tree and tree.get("pids"):
            return str(tree["pids"][len(tree["pids"]) // 3])
    # any process with children: the parent of the newest exec
    _, p = timed(["sql", "--db-dir", str(db_dir), "SELECT ppid FROM events WHERE event = 'exec' "
                  "AND ppid > 1 ORDER BY id DESC LIMIT 1", "--format", "csv"])
    return p.stdout.decode().splitlines()[1]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--db-dir", type=Path, help="a directory made by bench/populate.py")
    ap.add_argument("--records", type=int, default=1_000_000,
                    help="without --db-dir: populate a temporary directory with this many")
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--json", type=Path, help="also write the figures here")
    args = ap.parse_args()

    tmp = None
    db_dir = args.db_dir
    if db_dir is None:
        tmp = Path(tempfile.mkdtemp(prefix="auditd-lite-bench-"))
        db_dir = tmp / "db"
        subprocess.run([sys.executable, str(HERE / "populate.py"), "--db-dir", str(db_dir),
                        "--records", str(args.records), "--fast"], check=True, cwd=REPO,
                       stdout=subprocess.DEVNULL)
    try:
        d = str(db_dir)
        files = sorted(db_dir.glob("*.db"))
        size = sum(p.stat().st_size for p in files)
        _, p = timed(["sql", "--db-dir", d, "SELECT count(*) FROM events", "--format", "csv"])
        records = int(p.stdout.decode().splitlines()[1])
        pid = tree_pid(db_dir)
        rows = []
        for label, cmd in [
            ("query --comm sh --exit-code 1 --limit 100", ["query", "--db-dir", d, "--comm", "sh",
                                                           "--exit-code", "1", "--limit", "100"]),
            ("query --since 1h --limit 100", ["query", "--db-dir", d, "--since", "1h", "--limit", "100"]),
            (f"tree {pid}", ["tree", pid, "--db-dir", d]),
            ('sql "SELECT count(*) FROM events"', ["sql", "--db-dir", d, "SELECT count(*) FROM events"]),
        ]:
            ms, p = median_ms(cmd, args.reps)
            lines = len(p.stdout.decode().splitlines())
            rows.append({"command": label, "median_ms": round(ms, 1), "output_lines": lines,
                         "goal_met": ms < GOAL_MS})

        out_dir = Path(tempfile.mkdtemp(prefix="auditd-lite-export-"))
        try:
            rates = []
            for i in range(3):
                out = out_dir / f"day{i}.db"
                t, p = timed(["export", "--db-dir", d, "--since", "1d", "-o", str(out)], ok=(0,))
                mb = out.stat().st_size / 1e6
                rates.append((mb / t, mb, t))
                out.unlink()
                Path(str(out) + ".sha256").unlink()
            rate, mb, t = sorted(rates)[len(rates) // 2]
        finally:
            shutil.rmtree(out_dir, ignore_errors=True)
        export_row = {"command": "export --since 1d", "mb": round(mb, 1), "seconds": round(t, 2),
                      "mb_per_s": round(rate, 1), "goal_met": rate >= GOAL_MBS}

        print(f"{records:,} records in {len(files)} files ({size / 2**20:.0f} MiB), "
              f"median of {args.reps} runs after a warm-up, {os.cpu_count()} CPUs\n")
        print("| command | median | goal |")
        print("|---|---|---|")
        for r in rows:
            print(f"| `{r['command']}` | {r['median_ms']:.0f} ms | {'yes' if r['goal_met'] else 'NO'} (< {GOAL_MS} ms) |")
        print(f"| `export --since 1d` ({export_row['mb']:.0f} MB in {export_row['seconds']:.1f} s) | "
              f"{export_row['mb_per_s']:.0f} MB/s | {'yes' if export_row['goal_met'] else 'NO'} "
              f"(>= {GOAL_MBS} MB/s) |")
        if args.json:
            args.json.write_text(json.dumps({"records": records, "files": len(files), "bytes": size,
                                             "commands": rows, "export": export_row}, indent=2) + "\n")
        return 0
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
