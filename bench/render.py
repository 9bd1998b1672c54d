#!/usr/bin/env python3
"""The cost of rendering one record as OCSF (formats.ocsf.event) and ECS (formats.ecs.document),
and of the JSON line after it (output.json_bytes; json.dumps, what it was before, beside it):
what a daemon that streams events pays per record.

    .venv/bin/python bench/render.py [--records 30000] [--reps 5] [--json OUT]

Records are the daemon's own rows (query.row_to_record), a third each exec (with its context),
exec_failed and exit, rendered with one Source as the daemon would; each figure is the median of
--reps runs (min..max), in microseconds per record of one thread. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from auditd_lite.formats import Source, ecs, ocsf  # noqa: E402
from auditd_lite.investigate.output import json_bytes  # noqa: E402
from auditd_lite.investigate.query import row_to_record  # noqa: E402

T0 = 1_795_000_000 * 10**9
CONTEXT = ("/home/user/src", "ok", "5e" * 32, "ok", "/user.slice/session-3.scope", "resolved",
           "session-3.scope", None)


def rows(n: int) -> list[tuple]:
    """n rows in rows.ROW_FIELDS order: exec, exec_failed, exit, over and over."""
    out = []
    for i in range(n):
        t, pid = T0 + i * 1000, 1000 + i // 3
        argv = b"cc\0-O2\0-c\0file %d.c" % i
        if i % 3 == 0:
            out.append(("exec", t, pid, pid, 1, 1000, 1000, "cc", t - 5, pid, 1000, 1000, 3, 77,
                        "/usr/bin/cc", argv, 4, 0, None, None, None, None, None, None) + CONTEXT + ("x64", 10**9))
        elif i % 3 == 1:
            out.append(("exec_failed", t, pid, pid, 1, 1000, 1000, "cc", t - 5, pid, 1000, 1000, 3,
                        77, "/usr/bin/nope", argv, 4, 0, -2, None, None, None, None, None) + CONTEXT + ("x64", 10**9))
        else:
            out.append(("exit", t, pid, pid, 1, 1000, 1000, "cc", t - 5, None, None, None, None,
                        None, None, None, None, None, None, 256, 1, 0, 0, 10**6) + (None,) * 8 + (None, 10**9))
    return out


def per_record_us(fn, records, source) -> float:
    t0 = time.perf_counter()
    for record in records:
        fn(record, source)
    return (time.perf_counter() - t0) / len(records) * 1e6


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--records", type=int, default=30000)
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    records = [row_to_record(r) for r in rows(args.records)]
    source = Source(host="host1", boot_id="0f" * 16, kernel="6.1.0-57-amd64", version="0.1.0",
                    revision="0003", run_id=1, lost_kernel=0, lost_user=0)
    cases = {
        "ocsf.event": ocsf.event,
        "ecs.document": ecs.document,
        # the line as the daemon's stream and query write it
        "ocsf.event + json_bytes": lambda r, s: json_bytes(ocsf.event(r, s)),
        "ecs.document + json_bytes": lambda r, s: json_bytes(ecs.document(r, s)),
        # the serialization before orjson (2026-12-07), for comparison
        "ocsf.event + json.dumps": lambda r, s: json.dumps(ocsf.event(r, s), ensure_ascii=False),
    }
    rendered = sum(1 for r in records if ocsf.event(r, source)["metadata"]["uid"])
    if rendered != len(records):
        raise SystemExit(f"rendered {rendered} of {len(records)} records")
    results = {name: [] for name in cases}
    for _ in range(args.reps):  # the cases alternate rep by rep: a noisy machine's drift hits all
        for name, fn in cases.items():
            results[name].append(per_record_us(fn, records, source))
    print(f"Rendering {len(records)} records, {args.reps} reps: microseconds per record, "
          "median (min..max)\n")
    print("| rendering | us per record |\n|---|---|")
    for name, runs in results.items():
        print(f"| {name} | {statistics.median(runs):.1f} ({min(runs):.1f}..{max(runs):.1f}) |")
    if args.json:
        args.json.write_text(json.dumps({"records": len(records), "rendered": rendered,
                                         "us_per_record": results}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
