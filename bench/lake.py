#!/usr/bin/env python3
"""A fleet's Parquet lake, by simulation: populate, export, query with DuckDB.

    .venv/bin/python bench/lake.py                                   # 20 hosts x 100,000 records
    .venv/bin/python bench/lake.py --hosts 100 --records 1000000     # the issue's size (disk, hours)

1. Each host's history is synthesized by bench/populate.py through the real BatchWriter
   (--days of it ending now, its own seed, boots and host name; every 4th host has someone
   run ``curl URL | sh`` --curl-sh times over the span, every 4th from the third once),
   --jobs hosts at a time.
2. Each host's directory is exported with ``auditd-lite export --format parquet`` into the
   same lake directory, as each host of a fleet would before copying into one bucket.
3. DuckDB (one connection, its default threads) reads the lake as one Hive-partitioned table
   and answers, --reps times after one warm-up, with the median and min..max reported:
   - curl piped into sh last week: the hosts where an exec of curl and an exec of sh are
     siblings (same host, boot and parent pid) started within a second of each other in the
     last 7 days; checked against the incidents populate.py says it made;
   - children of every process whose executable's SHA-256 is X (populate hashes each path's
     name: X is that of --parent, /usr/bin/make by default): each child process (host, boot,
     pid, start) forked while its parent lived (monotonic start within the parent's life).
   Also the count of rows, and the bytes per record of the lake against the SQLite files.

Writes bench/results/<date>-lake.json and .md (--results DIR), prints the Markdown.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
CLI = [sys.executable, "-m", "auditd_lite.cli"]
SQLITE_BYTES_PER_RECORD = 300  # what populate's files took here, to check the disk beforehand
PARQUET_BYTES_PER_RECORD = 100
INCIDENT_EVERY = 4  # every 4th host has curl | sh --curl-sh times over the span; the host two
# after it once, which falls before the last week about half the time (the window must tell)

CURL_SH = """
SELECT DISTINCT c.host
FROM lake c JOIN lake s
  ON s.host = c.host AND s.device.boot_uid = c.device.boot_uid
 AND s.process.parent_process.pid = c.process.parent_process.pid
WHERE c.day >= CAST(now() - INTERVAL 8 DAY AS DATE) AND s.day >= CAST(now() - INTERVAL 8 DAY AS DATE)
  AND c.time_dt >= now() - INTERVAL 7 DAY AND s.time_dt >= now() - INTERVAL 7 DAY
  AND c.unmapped.event = 'exec' AND s.unmapped.event = 'exec'
  AND c.process.name = 'curl' AND s.process.name = 'sh'
  AND abs(s.unmapped.start_ns - c.unmapped.start_ns) < 1000000000
ORDER BY 1
"""

CHILDREN = """
WITH parent AS (
    SELECT DISTINCT host, device.boot_uid AS boot, process.pid AS pid, unmapped.start_ns AS start_ns
    FROM lake WHERE unmapped.event = 'exec' AND process.file.hashes[1].value = $sha),
life AS (
    SELECT host, device.boot_uid AS boot, process.pid AS pid, unmapped.start_ns AS start_ns,
           unmapped.duration_ns AS duration_ns
    FROM lake WHERE unmapped.event = 'exit')
SELECT DISTINCT c.host, c.device.boot_uid, c.process.pid, c.unmapped.start_ns
FROM lake c
JOIN parent p ON c.host = p.host AND c.device.boot_uid = p.boot
 AND c.process.parent_process.pid = p.pid AND c.unmapped.start_ns >= p.start_ns
LEFT JOIN life l ON l.host = p.host AND l.boot = p.boot AND l.pid = p.pid AND l.start_ns = p.start_ns
WHERE l.duration_ns IS NULL OR c.unmapped.start_ns <= p.start_ns + l.duration_ns
"""


def host_name(i: int) -> str:
    return f"host-{i:03d}.fleet.example"


def populate(args, i: int, d: Path) -> dict:
    incidents = args.curl_sh if i % INCIDENT_EVERY == 0 else 1 if i % INCIDENT_EVERY == 2 else 0
    subprocess.run([sys.executable, str(HERE / "populate.py"), "--db-dir", str(d), "--records",
                    str(args.records), "--days", str(args.days), "--fast", "--host", host_name(i),
                    "--seed", str(1000 + i), "--curl-sh", str(incidents), "--rotate-mb", "64"],
                   check=True, capture_output=True, cwd=REPO)
    return json.loads((d / "populate.json").read_text())


def export(d: Path, lake: Path) -> float:
    t0 = time.perf_counter()
    p = subprocess.run([*CLI, "export", "--db-dir", str(d), "--format", "parquet", "-o", str(lake)],
                       capture_output=True, cwd=REPO)
    if p.returncode != 0:
        raise SystemExit(f"export of {d} failed ({p.returncode}): {p.stderr.decode()[-500:]}")
    return time.perf_counter() - t0


def timed(con, sql: str, params, reps: int) -> tuple[list, list[float]]:
    rows = con.execute(sql, params).fetchall()  # warm-up: the page cache, DuckDB's metadata cache
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        rows = con.execute(sql, params).fetchall()
        times.append(time.perf_counter() - t0)
    return rows, times


def spread(times: list[float]) -> dict:
    ms = [t * 1000 for t in times]
    return {"median_ms": round(statistics.median(ms), 1), "min_ms": round(min(ms), 1),
            "max_ms": round(max(ms), 1), "reps": len(ms)}


def du(paths) -> int:
    return sum(p.stat().st_size for p in paths if p.is_file())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--hosts", type=int, default=20)
    ap.add_argument("--records", type=int, default=100_000, help="records per host")
    ap.add_argument("--days", type=float, default=14, help="days of history per host, ending now")
    ap.add_argument("--curl-sh", type=int, default=6, help="curl | sh incidents per 4th host, over the span")
    ap.add_argument("--parent", default="/usr/bin/make", help="X is the SHA-256 populate gives this path")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 2, help="hosts populated and exported at once")
    ap.add_argument("--work", type=Path, help="where the fleet goes (default: a temporary directory, removed)")
    ap.add_argument("--results", type=Path, default=HERE / "results")
    args = ap.parse_args()
    import duckdb

    work = args.work or Path(tempfile.mkdtemp(prefix="auditd-lite-lake-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    total = args.hosts * args.records
    need = total * (SQLITE_BYTES_PER_RECORD + PARQUET_BYTES_PER_RECORD) * 1.5  # the export's SQLite copy too
    free = shutil.disk_usage(work).free
    if need > free:
        raise SystemExit(f"{total:,} records need about {need / 2**30:.1f} GiB in {work}, "
                         f"{free / 2**30:.1f} GiB free: give fewer --hosts or --records")
    dirs = [work / f"db{i:03d}" for i in range(args.hosts)]
    lake = work / "lake"
    try:
        t0 = time.perf_counter()
        with ThreadPoolExecutor(args.jobs) as pool:
            infos = list(pool.map(lambda i: populate(args, i, dirs[i]), range(args.hosts)))
        populate_s = time.perf_counter() - t0
        print(f"populated {total:,} records on {args.hosts} hosts in {populate_s:.0f} s", file=sys.stderr)
        t0 = time.perf_counter()
        with ThreadPoolExecutor(args.jobs) as pool:
            per_host = list(pool.map(lambda d: export(d, lake), dirs))
        export_s = time.perf_counter() - t0
        print(f"exported in {export_s:.0f} s", file=sys.stderr)

        sqlite_bytes = sum(du(d.glob("audit*.db*")) for d in dirs)
        files = sorted(lake.rglob("*.parquet"))
        parquet_bytes = du(files)
        con = duckdb.connect()
        glob = str(lake / "**" / "*.parquet").replace("'", "''")
        con.execute(f"CREATE VIEW lake AS SELECT * FROM read_parquet('{glob}', hive_partitioning = true)")
        (rows,), = con.execute("SELECT count(*) FROM lake").fetchall()
        (partitions,), = con.execute("SELECT count(DISTINCT (host, day)) FROM lake").fetchall()

        now_ns = time.time_ns()
        week = 7 * 86400 * 10**9
        want = sorted(host_name(i) for i, info in enumerate(infos)
                      if any(x["time_ns"] >= now_ns - week for x in info["curl_sh"]))
        hosts, curl_t = timed(con, CURL_SH, {}, args.reps)
        got = [h for (h,) in hosts]
        sha = hashlib.sha256(args.parent.encode()).hexdigest()
        kids, kids_t = timed(con, CHILDREN, {"sha": sha}, args.reps)
        (parents,), = con.execute("SELECT count(DISTINCT (host, device.boot_uid, process.pid, unmapped.start_ns)) "
                                  "FROM lake WHERE unmapped.event = 'exec' AND process.file.hashes[1].value = ?",
                                  [sha]).fetchall()
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)

    result = {
        "date": time.strftime("%Y-%m-%d", time.gmtime()),
        "machine": {"cores": os.cpu_count(), "kernel": os.uname().release},
        "duckdb": duckdb.__version__,
        "pyarrow": __import__("pyarrow").__version__,
        "hosts": args.hosts, "records_per_host": args.records, "days": args.days, "jobs": args.jobs,
        "rows": rows, "records_written": sum(i["records"] for i in infos),
        "parquet_files": len(files), "partitions": partitions,
        "populate_s": round(populate_s, 1), "export_s": round(export_s, 1),
        "export_records_per_s": round(total / export_s),
        "export_s_per_host": {"median": round(statistics.median(per_host), 1), "min": round(min(per_host), 1),
                              "max": round(max(per_host), 1)},
        "sqlite_bytes": sqlite_bytes, "parquet_bytes": parquet_bytes,
        "sqlite_bytes_per_record": round(sqlite_bytes / total, 1),
        "parquet_bytes_per_record": round(parquet_bytes / total, 1),
        "curl_sh": {**spread(curl_t), "hosts_found": got, "hosts_expected": want, "correct": got == want,
                    "hosts_with_older_incidents_only": sorted(
                        host_name(i) for i, info in enumerate(infos)
                        if info["curl_sh"] and host_name(i) not in want)},
        "children": {**spread(kids_t), "sha256": sha, "of": args.parent, "parents": parents,
                     "children": len(kids)},
    }
    md = render(result)
    args.results.mkdir(parents=True, exist_ok=True)
    stem = args.results / f"{result['date']}-lake"
    stem.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    stem.with_suffix(".md").write_text(md)
    print(md)
    return 0 if result["curl_sh"]["correct"] and rows == total else 1


def render(r: dict) -> str:
    c, k = r["curl_sh"], r["children"]
    cell = lambda q: f"{q['median_ms']} ({q['min_ms']}..{q['max_ms']})"  # noqa: E731
    return f"""# auditd-lite benchmark, {r['date']}: a fleet's Parquet lake (bench/lake.py)

Machine: {r['machine']['cores']} cores, Linux {r['machine']['kernel']}; DuckDB {r['duckdb']}, pyarrow {r['pyarrow']}.
Fleet: {r['hosts']} hosts x {r['records_per_host']:,} records over {r['days']:g} days each, synthesized by
bench/populate.py through the real writer, each exported with `auditd-lite export --format parquet`
into one lake ({r['jobs']} at a time). Query times: DuckDB over the whole lake, median (min..max) of
{c['reps']} reps after a warm-up.

| figure | value |
|---|---|
| rows in the lake (DuckDB `count(*)`) | {r['rows']:,} |
| Parquet files / host-day partitions | {r['parquet_files']} / {r['partitions']} |
| SQLite, bytes per record (the hosts' files) | {r['sqlite_bytes_per_record']} ({r['sqlite_bytes'] / 2**20:.0f} MiB) |
| Parquet, bytes per record (zstd) | {r['parquet_bytes_per_record']} ({r['parquet_bytes'] / 2**20:.0f} MiB) |
| populate, all hosts | {r['populate_s']} s |
| export, all hosts | {r['export_s']} s ({r['export_records_per_s']:,} records/s; per host {r['export_s_per_host']['median']} s, {r['export_s_per_host']['min']}..{r['export_s_per_host']['max']}) |
| which hosts ran curl piped into sh last week, ms | {cell(c)}: {len(c['hosts_found'])} hosts, {'as populated' if c['correct'] else 'NOT as populated: ' + str(c['hosts_expected'])} ({len(c['hosts_with_older_incidents_only'])} more hosts had it only before the week) |
| children of every process whose sha256 is X ({k['of']}), ms | {cell(k)}: {k['children']:,} children of {k['parents']:,} processes |
"""


if __name__ == "__main__":
    sys.exit(main())
