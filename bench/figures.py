"""The bench's arithmetic and parsing, apart from anything that needs root or a kernel,
so that tests can check them on made-up input."""

from __future__ import annotations

import re
import statistics
from pathlib import Path

# The bpftrace configuration: what a user would type to log every exec and exit.
# Exits are the thread group leader's only (pid == tid): a process ends once, however
# many threads it had. curtask->exit_code is set before the tracepoint fires (do_exit);
# it is the wait status, so the code is bits 8..15 and a killing signal bits 0..6.
BPFTRACE_PROGRAM = (
    'tracepoint:sched:sched_process_exec { printf("exec %d %d %s %s\\n", pid, '
    'curtask->real_parent->tgid, comm, str(args->filename)); } '
    'tracepoint:sched:sched_process_exit /pid == tid/ { printf("exit %d %d %s %d %d\\n", pid, '
    'curtask->real_parent->tgid, comm, (curtask->exit_code >> 8) & 0xff, curtask->exit_code & 0x7f); }'
)

_LOST = re.compile(r"^Lost (\d+) events", re.M)


def count_bpftrace(text: str, program: str) -> dict:
    """Exec lines of `program`, exit lines of the processes those execs were (same pid,
    the program's comm), and the events bpftrace said it lost."""
    comm = Path(program).name[:15]
    got = {"exec": 0, "exit": 0, "lost": sum(int(n) for n in _LOST.findall(text))}
    execed: set[str] = set()
    for line in text.splitlines():
        f = line.split(" ")
        # exec pid ppid comm filename / exit pid ppid comm code signal; a comm may hold
        # spaces, so the fields are taken from both ends
        if f[0] == "exec" and len(f) >= 5 and f[-1] == program:
            got["exec"] += 1
            execed.add(f[1])
        elif f[0] == "exit" and len(f) >= 6 and f[1] in execed and " ".join(f[3:-2]) == comm:
            got["exit"] += 1
            execed.discard(f[1])
    return got


def spread(values: list[float]) -> dict | None:
    """Median, min and max; None when there is nothing to summarise."""
    vs = [v for v in values if v is not None]
    if not vs:
        return None
    return {"median": statistics.median(vs), "min": min(vs), "max": max(vs)}


def cell(s: dict | None, fmt: str = ".3f", scale: float = 1.0, suffix: str = "") -> str:
    """'median (min..max)', or the median alone when every rep gave the same figure."""
    if s is None:
        return "-"
    m, lo, hi = (format(s[k] * scale, fmt) for k in ("median", "min", "max"))
    return f"{m}{suffix}" if lo == hi else f"{m}{suffix} ({lo}..{hi})"


def slope(points: list[tuple[float, float]]) -> float | None:
    """Least-squares slope of y over x; None below two distinct x."""
    if len({x for x, _ in points}) < 2:
        return None
    mx = statistics.fmean(x for x, _ in points)
    my = statistics.fmean(y for _, y in points)
    return (sum((x - mx) * (y - my) for x, y in points)
            / sum((x - mx) ** 2 for x, _ in points))


def rss_trend(samples: list[tuple[int, int]]) -> dict | None:
    """From (execs done, VmRSS kB) samples taken during one storm: RSS at the first and
    last sample from a tenth of the storm on, in MiB, the growth between them and the
    least-squares slope in MiB per 10,000 execs. What the first batches allocate once
    (SQLite's page cache filling, a batch's buffers) is not growth, hence the first tenth
    left out."""
    if not samples:
        return None
    total = max(n for n, _ in samples)
    pts = sorted(p for p in samples if p[0] >= total / 10)
    if len(pts) < 2:
        return None
    first, last = pts[0], pts[-1]
    k = slope([(n / 10_000, kb / 1024) for n, kb in pts])
    return {"first_mb": first[1] / 1024, "last_mb": last[1] / 1024,
            "growth_mb": (last[1] - first[1]) / 1024, "slope_mb_per_10k": k,
            "first_at": first[0], "last_at": last[0], "samples": len(pts)}


README_BEGIN = "<!-- make bench writes from here: bench/compare.py --readme -->"
README_END = "<!-- make bench writes up to here -->"


def readme_block(md: str, stem: str) -> str:
    """The results file as the README shows it: its title made a pointer to the file,
    its sections one level down under the README's Performance section."""
    lines = md.rstrip("\n").split("\n")
    title, body = lines[0], lines[1:]
    date = title.rsplit(",", 1)[-1].strip()
    out = [f"Measured {date} by `make bench` (`bench/results/{stem}.md`, the JSON beside it)."]
    for line in body:
        out.append("#" + line if line.startswith("## ") else line)
    return "\n".join(out)


def replace_block(text: str, block: str) -> str:
    """text with what lies between the README markers replaced by block."""
    try:
        a = text.index(README_BEGIN) + len(README_BEGIN)
        b = text.index(README_END, a)
    except ValueError:
        raise ValueError(f"README has no '{README_BEGIN}' ... '{README_END}' block") from None
    return text[:a] + "\n" + block.strip("\n") + "\n" + text[b:]
