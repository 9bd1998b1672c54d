#!/usr/bin/env python3
"""How long `auditd-lite verify` takes over a directory, with the seals checked and without.

    .venv/bin/python bench/populate.py --db-dir /tmp/v/db --records 10000000 --fast --seal-state /tmp/v/seal
    .venv/bin/python bench/verify_time.py --db-dir /tmp/v/db --reps 3

The two configurations alternate rep by rep (each rep starting with the other one), after a
first unmeasured pass that brings the files into the page cache. Each run is the CLI in a
child process, as a user runs it. Its wall time is measured, and so is its CPU time (user +
system, from the child's rusage). The verification key is the one populate.py kept in
DIR/populate.json (a bench's; no real key is kept beside its files). Writes a markdown table
to stdout and the figures to --json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def one(args: list[str]) -> dict:
    before = os.times()
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, "-m", "auditd_lite.cli", "verify", *args], capture_output=True,
                       text=True, cwd=REPO)
    wall = time.perf_counter() - t0
    after = os.times()
    cpu = (after.children_user - before.children_user) + (after.children_system - before.children_system)
    if p.returncode != 0:
        raise SystemExit(f"verify failed ({p.returncode}): {p.stdout[-2000:]}{p.stderr[-2000:]}")
    return {"wall_s": wall, "cpu_s": cpu, "summary": p.stdout.strip().splitlines()[-1]}


def spread(values: list[float]) -> str:
    return f"{statistics.median(values):.1f} ({min(values):.1f}..{max(values):.1f})"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--db-dir", type=Path, required=True)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    info = json.loads((args.db_dir / "populate.json").read_text())
    if not info.get("seal_key"):
        print("verify_time: the directory was not populated with --seal-state", file=sys.stderr)
        return 2
    configs = {"chain only": ["--db-dir", str(args.db_dir)],
               "chain and seals": ["--db-dir", str(args.db_dir), "--verify-key", info["seal_key"]]}
    one(configs["chain only"])  # the page cache, as for every measured run
    runs: dict[str, list[dict]] = {c: [] for c in configs}
    names = list(configs)
    for rep in range(args.reps):
        for c in names[rep % 2:] + names[:rep % 2]:
            r = one(configs[c])
            runs[c].append(r)
            print(f"rep {rep} {c}: {r['wall_s']:.1f} s wall, {r['cpu_s']:.1f} s CPU", file=sys.stderr)
    print(f"| verify of {info['records']:,} records, {info.get('seals')} seals | wall s, median (min..max) "
          "| CPU s, median (min..max) |\n|---|---|---|")
    for c, rs in runs.items():
        print(f"| {c} | {spread([r['wall_s'] for r in rs])} | {spread([r['cpu_s'] for r in rs])} |")
    print(f"\nSummary line with the seals: {runs['chain and seals'][-1]['summary']}")
    if args.json:
        args.json.write_text(json.dumps({"records": info["records"], "seals": info.get("seals"),
                                         "runs": runs}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
