#!/usr/bin/env python3
"""Writer throughput: a synthetic stream of raw kernel records straight into the batch writer.

No kernel: records are packed in the layout of bpf/auditd_lite.h, decoded by
the daemon's Decoder and written by the real BatchWriter (hash chain,
indexes, WAL, rotation every --rotate-mb MiB), exactly as the writer thread
does with what the ring buffer hands it.

    .venv/bin/python bench/writer_throughput.py --records 1000000 --rotate-mb 64
    .venv/bin/python bench/writer_throughput.py --seal 1   # also sealed (epochs of 1 s), alternated
    .venv/bin/python bench/writer_throughput.py --baseline ../before   # this checkout against another,
                                                   # alternated, each run a process of its own
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from auditd_lite.daemon import logsetup  # noqa: E402
from auditd_lite.capture import records as R  # noqa: E402
from auditd_lite.storage.rotation import RotationPolicy  # noqa: E402
from auditd_lite.storage.batchwriter import DEFAULT_BATCH, BatchWriter  # noqa: E402
from auditd_lite.daemon.writer import settle_gc  # noqa: E402
from auditd_lite.capture.context import Context  # noqa: E402

PROGRAMS = [("/usr/bin/sh", [b"sh", b"-c", b"test -f /etc/motd && cat /etc/motd"]),
            ("/usr/bin/ls", [b"ls", b"-la", b"/var/log"]),
            ("/usr/bin/git", [b"git", b"status", b"--porcelain"]),
            ("/usr/bin/python3", [b"python3", b"-m", b"pip", b"list"]),
            ("/usr/bin/true", [b"true"])]


# working directories as the program walks them: names leaf first, each NUL-terminated
CWDS = [b"", b"root\0", b"src\0alice\0home\0", b"log\0var\0"]


# every synthetic process is a child of pid 1, started at boot
PARENT_START = 1_000_000


def exe_fields(path: str) -> tuple:
    """The record's exe_* fields for the file at ``path``, as the kernel fills them (its dev_t
    is major << 20 | minor), and the flag saying they are there."""
    st = os.stat(path)
    kdev = os.major(st.st_dev) << 20 | os.minor(st.st_dev)
    return (kdev, 0, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def synthetic(n: int, seed: int = 1) -> list[bytes]:
    """n raw records: exec then exit per process, ~10% failures and signals. An exec names its
    executable (FLAG_EXE_ID) as the kernel does, so it is hashed as in the daemon."""
    rnd = random.Random(seed)
    exe = {path: exe_fields(os.path.realpath(path)) for path, _ in PROGRAMS}
    out = []
    ts = 10**12
    pid = 1000
    while len(out) < n:
        path, argv = rnd.choice(PROGRAMS)
        comm = path.rsplit("/", 1)[1].encode()[:15] + b"\0"
        pid += 1
        start = ts
        args = b"\0".join(argv) + b"\0"
        fname = path.encode() + b"\0"
        cwd = rnd.choice(CWDS)
        if rnd.random() < 0.05:
            hdr = R.EXEC_EVENT.pack(R.EV_EXEC_FAILED, pid, pid, 1, ts, start, PARENT_START, 1000, 1000,
                                    comm, 42, 1000, 1000, 3, pid, 2, len(argv), 0, len(fname),
                                    len(args), len(cwd), R.ABI_X64, 4026531841, 0, 0, 0, 0, 0, 0)
            out.append(hdr + fname + args + cwd)
        hdr = R.EXEC_EVENT.pack(R.EV_EXEC, pid, pid, 1, ts, start, PARENT_START, 1000, 1000, comm, 42,
                                1000, 1000, 3, pid, 0, len(argv), R.FLAG_EXE_ID, len(fname), len(args),
                                len(cwd), R.ABI_X64, 4026531841, *exe[path])
        out.append(hdr + fname + args + cwd)
        ts += 150_000
        status = rnd.choice([0, 0, 0, 0, 0, 0, 0, 256, 9, 15 << 0, 2 << 8])
        out.append(R.EXIT_EVENT.pack(R.EV_EXIT, pid, pid, 1, ts, start, PARENT_START, 1000, 1000,
                                     comm, ts - start, status, 0))
        ts += 50_000
    return out[:n]


def one_run(raw: list[bytes], db_dir: Path, batch: int, rotate_mb: float, seal_s: int = 0) -> dict:
    decoder = R.Decoder(128, realtime_offset_ns=1_795_000_000 * 10**9)
    # the daemon's context: a real resolver and hash worker; the synthetic pids are not
    # running, so hashes go by path (the binaries above, hashed once) and the cgroup id
    # resolves to unknown after one walk, as for a storm of short-lived processes
    context = Context.for_run()
    sealer = None
    if seal_s:  # the daemon's sealer, its state made beside the directory
        from auditd_lite import seal
        from auditd_lite.storage.sealer import Sealer

        seal.setup(db_dir.parent / "seal", seal_s)
        sealer = Sealer(db_dir.parent / "seal")
    bw = BatchWriter(db_dir, {"bench": True}, batch_size=batch,
                     rotation=RotationPolicy(size_mb=rotate_mb), sealer=sealer)
    bw.open()
    settle_gc()  # as the daemon does once it is ready
    t0 = time.perf_counter()
    # the writer thread hands over what one 100 ms poll returned; at this
    # rate that is a few thousand records at a time
    step = 5000
    for i in range(0, len(raw), step):
        named: list = []
        pending = context.begin(decoder.decode_all(raw[i:i + step], named), named)
        bw.write(context.finish([pending], time.monotonic()))
    bw.close()
    context.close()
    elapsed = time.perf_counter() - t0
    files = sorted(db_dir.glob("*.db"))
    stored = 0
    for f in files:
        con = sqlite3.connect(f"file:{f}?mode=ro", uri=True)
        stored += con.execute("SELECT count(*) FROM events").fetchone()[0]
        con.close()
    seals = sealer.state.epoch if sealer else 0
    return {"seconds": elapsed, "records_per_s": len(raw) / elapsed, "files": len(files), "stored": stored,
            "seals": seals, "sealed": bool(seal_s)}


# one run in a process of its own, from the checkout argv[1] (its writer_throughput and package):
# records per second of the writing and the process's CPU seconds over it (every thread's)
_ONE = """
import json, shutil, sys, tempfile, time
from pathlib import Path
tree = Path(sys.argv[1])
sys.path[:0] = [str(tree), str(tree / "bench")]
import writer_throughput as W
W.logsetup.configure("warning")
raw = W.synthetic(int(sys.argv[2]))
work = Path(tempfile.mkdtemp(prefix="auditd-writer-"))
cpu = time.process_time()
r = W.one_run(raw, work / "db", int(sys.argv[3]), float(sys.argv[4]))
r["cpu_s"] = time.process_time() - cpu
shutil.rmtree(work, ignore_errors=True)
print(json.dumps(r))
"""


def against(baseline: Path, records: int, reps: int, batch: int, rotate_mb: float) -> int:
    """This checkout and ``baseline`` (its own .venv), alternated rep by rep, each run a process
    of its own: records per second and CPU microseconds per record, medians (min..max), and the
    per-rep ratios this / baseline."""
    trees = {"this": Path(__file__).resolve().parent.parent, "baseline": baseline.resolve()}
    got: dict[str, list[dict]] = {"this": [], "baseline": []}
    for k in range(reps):
        for name in (["this", "baseline"] if k % 2 == 0 else ["baseline", "this"]):
            tree = trees[name]
            out = subprocess.run([str(tree / ".venv/bin/python"), "-c", _ONE, str(tree), str(records), str(batch),
                                  str(rotate_mb)], capture_output=True, text=True, check=True).stdout
            got[name].append(json.loads(out.splitlines()[-1]))

    def cell(values: list[float], fmt: str) -> str:
        v = sorted(values)
        return f"{statistics.median(v):{fmt}} ({v[0]:{fmt}}..{v[-1]:{fmt}})"

    print("| checkout | records/s | CPU µs per record | every record stored |\n|---|---|---|---|")
    for name, runs in got.items():
        print(f"| {name} ({trees[name]}) | {cell([r['records_per_s'] for r in runs], '.0f')} | "
              f"{cell([r['cpu_s'] / records * 1e6 for r in runs], '.2f')} | "
              f"{'yes' if all(r['stored'] == records for r in runs) else 'NO'} |")
    rate = [a["records_per_s"] / b["records_per_s"] for a, b in zip(got["this"], got["baseline"])]
    cpu = [a["cpu_s"] / b["cpu_s"] for a, b in zip(got["this"], got["baseline"])]
    print(f"| this / baseline, per rep | {cell(rate, '.3f')} | {cell(cpu, '.3f')} | |")
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--records", type=int, default=1_000_000)
    ap.add_argument("--rotate-mb", type=float, default=64)
    ap.add_argument("--batch", type=int, default=DEFAULT_BATCH)
    ap.add_argument("--reps", type=int, default=3, help="runs, each into a fresh directory (median quoted)")
    ap.add_argument("--dir", type=Path, help="where to write (default: a temporary directory)")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--seal", type=int, default=0, metavar="SECONDS",
                    help="also run sealed with epochs of SECONDS, alternating with unsealed rep by rep")
    ap.add_argument("--baseline", type=Path, metavar="CHECKOUT",
                    help="run against another checkout (with its .venv), alternated rep by rep")
    args = ap.parse_args()
    if args.baseline:
        return against(args.baseline, args.records, args.reps, args.batch, args.rotate_mb)

    logsetup.configure("info")
    raw = synthetic(args.records)
    work = args.dir or Path(tempfile.mkdtemp(prefix="auditd-writer-"))
    configs = [0, args.seal] if args.seal else [0]
    runs = []
    for k in range(args.reps):
        for seal_s in configs[k % len(configs):] + configs[:k % len(configs)]:
            runs.append(one_run(raw, work / f"run-{k}-{seal_s}" / "db", args.batch, args.rotate_mb, seal_s))
    complete = all(r["stored"] == args.records for r in runs)
    sealed = sorted(r["records_per_s"] for r in runs if r["sealed"])
    runs_plain = [r for r in runs if not r["sealed"]]
    rates = sorted(r["records_per_s"] for r in runs_plain)
    result = {"records": args.records, "rotate_mb": args.rotate_mb, "batch": args.batch,
              "records_per_s_median": statistics.median(rates), "runs": runs}
    print("| figure | value |\n|---|---|")
    print(f"| records per run | {args.records} |")
    print(f"| records per second, median of {args.reps} runs (decode + chain + insert + rotation) "
          f"| {result['records_per_s_median']:.0f} |")
    print(f"| slowest and fastest run | {rates[0]:.0f} and {rates[-1]:.0f} |")
    print(f"| database files per run (rotation every {args.rotate_mb:g} MiB) | {runs[0]['files']} |")
    if sealed:
        seals = statistics.median(r["seals"] for r in runs if r["sealed"])
        result["sealed_records_per_s_median"] = statistics.median(sealed)
        print(f"| sealed, epochs of {args.seal} s ({seals:.0f} seals a run): records per second, median "
              f"(slowest, fastest) | {statistics.median(sealed):.0f} ({sealed[0]:.0f}, {sealed[-1]:.0f}) |")
        print(f"| sealed / unsealed, medians | {statistics.median(sealed) / result['records_per_s_median']:.3f} |")
    print(f"| every record found in the files, every run | {'yes' if complete else 'NO'} |")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    if args.dir is None:
        shutil.rmtree(work, ignore_errors=True)
    return 0 if complete else 1


if __name__ == "__main__":
    sys.exit(main())
