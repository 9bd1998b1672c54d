#!/usr/bin/env python3
"""What `auditd-lite hunt` costs, over the history and live (issue #22's figures).

History: every bundled rule over a populated database (bench/populate.py) against one
full-scan `query --arg X` over the same files (X in no record, so every record is read), the
two alternated rep by rep as fresh processes, each from its start to its exit; the ratio is
taken pair by pair. Live: the real daemon under an exec storm with `hunt --follow` running (its
findings read as they come, each stamped on arrival): the latency from an exec to its finding,
for a probe run out of /tmp every 50 ms during the storm (SigmaHQ's tmp-folder rule fires on
each); hunt --follow's own CPU per 1,000 execs; and the daemon's CPU per process with and
without --follow, alternated.

    .venv/bin/python bench/hunt.py --db-dir /tmp/audit-1m --reps 5          # history only
    sudo .venv/bin/python bench/hunt.py --db-dir /tmp/audit-1m --live-execs 20000 --live-reps 3

Prints a Markdown table; --json FILE writes the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from exec_storm import REPO, Daemon, cpu_seconds, storm, wait_idle  # noqa: E402
from figures import cell, spread  # noqa: E402

CLI = [sys.executable, "-m", "auditd_lite.cli"]
ABSENT = "zq-no-record-has-this-9f2c"  # query --arg X: in no record, so no row stops the scan
TMP_RULE = "312b42b1-bded-4441-8b58-163a3af58775"  # Potentially Suspicious Execution From Tmp Folder


def timed(argv: list[str], ok=(0, 1), last_line: bool = False) -> dict:
    """One command as a fresh process, its output thrown away: wall and CPU seconds; with
    ``last_line``, its output goes to a file instead, whose last line is kept (a warm-up run's:
    the timed runs write to /dev/null)."""
    with tempfile.TemporaryFile() if last_line else open(os.devnull, "wb") as out:
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        p = subprocess.run([*CLI, *argv], stdout=out, stderr=subprocess.PIPE, cwd=REPO)
        wall = time.perf_counter() - t0
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        if p.returncode not in ok:
            raise SystemExit(f"{' '.join(argv)} failed ({p.returncode}): {p.stderr.decode()[-800:]}")
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        res = {"wall_s": wall, "cpu_s": cpu, "maxrss_kb": after.ru_maxrss}
        if last_line:
            size, chunk = out.seek(0, os.SEEK_END), 65536
            while True:  # read back until the last line's start is in what was read
                start = max(0, size - chunk)
                out.seek(start)
                tail = out.read().rstrip(b"\n")
                if b"\n" in tail or start == 0:
                    break
                chunk *= 4
            res["last_line"] = tail.rsplit(b"\n", 1)[-1].decode()
    return res


def count(db_dir: Path) -> dict:
    p = subprocess.run([*CLI, "sql", "--db-dir", str(db_dir), "--format", "json",
                        "SELECT count(*) AS records, sum(event = 'exec') AS execs FROM events"],
                       capture_output=True, text=True, cwd=REPO, check=True)
    return json.loads(p.stdout.splitlines()[0])


def history(db_dir: Path, reps: int) -> dict:
    """hunt (all bundled rules, JSON) and query --arg, alternated, a warm-up of each first."""
    hunt = ["hunt", "--db-dir", str(db_dir), "--format", "json"]
    query = ["query", "--db-dir", str(db_dir), "--arg", ABSENT]
    # the page cache warm, as a second question finds it; the warm-up's summary is the findings'
    warm = timed(hunt, last_line=True)
    timed(query)
    runs: dict[str, list] = {"hunt": [], "query": []}
    for rep in range(reps):
        order = (("hunt", hunt), ("query", query)) if rep % 2 == 0 else (("query", query), ("hunt", hunt))
        for name, argv in order:
            runs[name].append(timed(argv))
            print(f"rep {rep} {name}: {runs[name][-1]['wall_s']:.2f} s wall, "
                  f"{runs[name][-1]['cpu_s']:.2f} s CPU", file=sys.stderr)
    summary = json.loads(warm["last_line"])["summary"]
    n = count(db_dir)
    pairs = list(zip(runs["hunt"], runs["query"]))
    return {
        "records": n["records"], "execs": n["execs"], "findings": summary["findings"],
        "rules": summary["rules"]["evaluated"],
        "hunt_wall_s": spread([r["wall_s"] for r in runs["hunt"]]),
        "hunt_cpu_s": spread([r["cpu_s"] for r in runs["hunt"]]),
        "query_wall_s": spread([r["wall_s"] for r in runs["query"]]),
        "query_cpu_s": spread([r["cpu_s"] for r in runs["query"]]),
        "ratio_wall": spread([h["wall_s"] / q["wall_s"] for h, q in pairs]),
        "ratio_cpu": spread([h["cpu_s"] / q["cpu_s"] for h, q in pairs]),
        "records_per_s": spread([n["records"] / h["wall_s"] for h in runs["hunt"]]),
        "hunt_maxrss_mb": spread([r["maxrss_kb"] / 1024 for r in runs["hunt"]]),
        "runs": runs,
    }


class Follow:
    """`hunt --follow` on a daemon's directory; each finding line stamped as it arrives."""

    def __init__(self, db_dir: Path):
        self.proc = subprocess.Popen([*CLI, "hunt", "--follow", "--db-dir", str(db_dir), "--poll-ms", "250"],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO)
        for line in self.proc.stderr:
            if b"hunt_following" in line:
                break
        else:
            raise SystemExit("hunt --follow did not start")
        self.arrived: list[tuple[int, dict]] = []
        self.log: list[bytes] = []
        self._out = threading.Thread(target=self._read, daemon=True)
        self._out.start()
        self._err = threading.Thread(target=lambda: self.log.extend(self.proc.stderr), daemon=True)
        self._err.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.arrived.append((time.time_ns(), json.loads(line)))

    def stop(self) -> dict:
        cpu = cpu_seconds(self.proc.pid)
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=120)
        self._out.join(timeout=60)
        self._err.join(timeout=60)
        stopped = next((json.loads(x) for x in self.log if b"hunt_stopped" in x), {})
        return {"cpu_s": cpu, "execs": stopped.get("execs"), "findings": stopped.get("findings")}


def probes(program: Path, stop: threading.Event, every_s: float = 0.05) -> list[int]:
    """Run ``program`` (in /tmp) every ``every_s`` until ``stop``; the pids."""
    pids = []
    while not stop.is_set():
        p = subprocess.Popen([str(program), "hunt-latency-probe"])
        p.wait()
        pids.append(p.pid)
        time.sleep(every_s)
    return pids


def live(execs: int, reps: int, work: Path) -> dict:
    """Storms with and without --follow, alternated; under the storm with it, probes whose
    findings' latency is measured."""
    storm_prog = work / "storm-true"  # not under /tmp's rules: /bin/true's copy in the work dir
    shutil.copy("/bin/true", storm_prog)
    probe = Path(tempfile.mkdtemp(prefix="hunt-probe-", dir="/tmp")) / "probe"
    shutil.copy("/bin/true", probe)
    probe.chmod(0o755)
    results: dict[str, list] = {"follow": [], "alone": []}
    for rep in range(reps):
        for name in (("follow", "alone") if rep % 2 == 0 else ("alone", "follow")):
            os.sync()
            time.sleep(1.0)
            db = work / f"{name}-{rep}"
            daemon = Daemon(db, [])
            follow = Follow(db) if name == "follow" else None
            if follow is not None:
                follow_cpu0 = wait_idle(follow.proc.pid)
            stop = threading.Event()
            got: list[int] = []
            prober = threading.Thread(target=lambda: got.extend(probes(probe, stop)))
            prober.start()
            rate = storm(str(storm_prog), execs)
            stop.set()
            prober.join()
            d = daemon.stop()
            r = {"rate": rate, "daemon_cpu_s_per_1000": d["cpu_storm_s"] / execs * 1000}
            if follow is not None:
                time.sleep(1.0)  # the last polls
                f = follow.stop()
                mine = {pid for pid in got}
                lat = [(t - doc["time_ns"]) / 1e9 for t, doc in follow.arrived
                       if doc["rule"]["id"] == TMP_RULE and doc["process"]["pid"] in mine]
                r.update(follow_cpu_s=f["cpu_s"] - follow_cpu0, follow_execs=f["execs"],
                         follow_cpu_s_per_1000=(f["cpu_s"] - follow_cpu0) / execs * 1000,
                         probes=len(got), probe_findings=len(lat),
                         latency_median_s=spread(lat)["median"] if lat else None,
                         latency_p95_s=sorted(lat)[int(len(lat) * 0.95)] if lat else None,
                         latency_max_s=max(lat) if lat else None)
            results[name].append(r)
            print(f"live rep {rep} {name}: {json.dumps({k: v for k, v in r.items()})}", file=sys.stderr)
            shutil.rmtree(db, ignore_errors=True)
    shutil.rmtree(probe.parent, ignore_errors=True)
    fo, al = results["follow"], results["alone"]
    return {
        "execs": execs,
        "latency_median_s": spread([r["latency_median_s"] for r in fo]),
        "latency_p95_s": spread([r["latency_p95_s"] for r in fo]),
        "latency_max_s": spread([r["latency_max_s"] for r in fo]),
        "probes_found": f"{sum(r['probe_findings'] for r in fo)} of {sum(r['probes'] for r in fo)}",
        "follow_cpu_s_per_1000": spread([r["follow_cpu_s_per_1000"] for r in fo]),
        "daemon_cpu_s_per_1000_with_follow": spread([r["daemon_cpu_s_per_1000"] for r in fo]),
        "daemon_cpu_s_per_1000_alone": spread([r["daemon_cpu_s_per_1000"] for r in al]),
        "daemon_cpu_ratio": spread([f["daemon_cpu_s_per_1000"] / a["daemon_cpu_s_per_1000"]
                                    for f, a in zip(fo, al)]),
        "execs_per_s_with_follow": spread([r["rate"] for r in fo]),
        "execs_per_s_alone": spread([r["rate"] for r in al]),
        "runs": results,
    }


def table(h: dict | None, lv: dict | None) -> str:
    out = []
    if h:
        out += [f"### hunt over the history ({h['records']} records, {h['execs']} execs, {h['rules']} rules, "
                f"{h['findings']} findings)", "",
                "| figure | hunt (all bundled rules) | query --arg X (full scan) | hunt / query |",
                "|---|---|---|---|",
                f"| wall s | {cell(h['hunt_wall_s'], '.2f')} | {cell(h['query_wall_s'], '.2f')} | "
                f"{cell(h['ratio_wall'], '.2f')} |",
                f"| CPU s | {cell(h['hunt_cpu_s'], '.2f')} | {cell(h['query_cpu_s'], '.2f')} | "
                f"{cell(h['ratio_cpu'], '.2f')} |",
                f"| records/s | {cell(h['records_per_s'], '.0f')} | | |",
                f"| peak RSS MiB | {cell(h['hunt_maxrss_mb'], '.0f')} | | |", ""]
    if lv:
        out += [f"### hunt --follow under a storm of {lv['execs']} execs", "",
                "| figure | value |", "|---|---|",
                f"| exec to finding, median s | {cell(lv['latency_median_s'], '.3f')} |",
                f"| exec to finding, 95th percentile s | {cell(lv['latency_p95_s'], '.3f')} |",
                f"| exec to finding, max s | {cell(lv['latency_max_s'], '.3f')} |",
                f"| probes found | {lv['probes_found']} |",
                f"| hunt --follow CPU s / 1,000 execs | {cell(lv['follow_cpu_s_per_1000'], '.4f')} |",
                f"| daemon CPU s / 1,000 execs, with --follow | {cell(lv['daemon_cpu_s_per_1000_with_follow'], '.4f')} |",
                f"| daemon CPU s / 1,000 execs, alone | {cell(lv['daemon_cpu_s_per_1000_alone'], '.4f')} |",
                f"| daemon CPU with / alone | {cell(lv['daemon_cpu_ratio'], '.3f')} |",
                f"| execs/s with --follow, alone | {cell(lv['execs_per_s_with_follow'], '.0f')}, "
                f"{cell(lv['execs_per_s_alone'], '.0f')} |", ""]
    return "\n".join(out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--db-dir", type=Path, help="a database directory made by bench/populate.py")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--live-execs", type=int, default=0, help="the storm's execs (0: no live figures)")
    ap.add_argument("--live-reps", type=int, default=3)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    h = history(args.db_dir, args.reps) if args.db_dir else None
    lv = None
    if args.live_execs:
        if os.geteuid() != 0:
            print("bench/hunt.py: the live figures need root (the daemon)", file=sys.stderr)
            return 2
        with tempfile.TemporaryDirectory(prefix="hunt-bench-", dir="/var/tmp") as work:
            lv = live(args.live_execs, args.live_reps, Path(work))
    print(table(h, lv))
    if args.json:
        args.json.write_text(json.dumps({"history": h, "live": lv}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
