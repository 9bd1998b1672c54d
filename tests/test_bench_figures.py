"""bench/figures.py: what make bench counts and how it summarises, on made-up input. A
miscounted bpftrace line or a wrong slope would put a wrong figure in the README."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))

import figures  # noqa: E402

PROGRAM = "/tmp/auditd-compare-x1/stormtrue"


def test_count_bpftrace_counts_the_storms_lines_only():
    text = "\n".join([
        "Attaching 2 probes...",
        f"exec 10 9 stormtrue {PROGRAM}",
        f"exec 11 9 stormtrue {PROGRAM}",
        "exec 12 9 true /bin/true",                  # another program
        f"exec 13 9 stormtrue {PROGRAM}x",           # a name that only starts the same
        "exit 10 9 stormtrue 0 0",
        "exit 11 9 stormtrue 1 0",
        "exit 12 9 true 0 0",
        "exit 14 9 Web Content 0 9",                 # a comm with a space
        "exit 15 9 stormtrue 0 0",                   # another storm's process, same name
        "Lost 7 events",
        "Lost 3 events",
    ])
    assert figures.count_bpftrace(text, PROGRAM) == {"exec": 2, "exit": 2, "lost": 10}
    # one exit per exec: a second exit line of the same pid is a thread's, not the process's
    twice = f"exec 14 9 stormtrue {PROGRAM}\nexit 14 9 stormtrue 0 0\nexit 14 9 stormtrue 0 0"
    assert figures.count_bpftrace(twice, PROGRAM) == {"exec": 1, "exit": 1, "lost": 0}


def test_bpftrace_program_prints_what_count_reads():
    p = figures.BPFTRACE_PROGRAM
    assert "tracepoint:sched:sched_process_exec" in p and "tracepoint:sched:sched_process_exit" in p
    assert 'printf("exec %d %d %s %s\\n"' in p and 'printf("exit %d %d %s %d %d\\n"' in p
    assert "kprobe" not in p  # this machine's kernel has none


def test_spread_and_cell():
    s = figures.spread([3.0, 1.0, 2.0, None])
    assert s == {"median": 2.0, "min": 1.0, "max": 3.0}
    assert figures.spread([None, None]) is None
    assert figures.cell(s, ".1f") == "2.0 (1.0..3.0)"
    assert figures.cell(figures.spread([1.0, 1.0]), ".2f", 100, "%") == "100.00%"
    assert figures.cell(None) == "-"


def test_slope():
    assert figures.slope([(0, 1), (1, 3), (2, 5)]) == pytest.approx(2.0)
    assert figures.slope([(1, 1), (1, 2)]) is None


def test_rss_trend_flat_and_growing():
    mib = 1024
    # the first tenth is left out: a jump there is start-up, not growth
    flat = [(5_000, 40 * mib)] + [(n, 50 * mib) for n in range(10_000, 100_001, 5_000)]
    t = figures.rss_trend(flat)
    assert t["first_at"] == 10_000 and t["last_at"] == 100_000
    assert t["growth_mb"] == 0 and t["slope_mb_per_10k"] == pytest.approx(0.0)
    growing = [(n, 50 * mib + n // 10_000 * mib) for n in range(5_000, 100_001, 5_000)]
    t = figures.rss_trend(growing)
    assert t["slope_mb_per_10k"] == pytest.approx(1.0, rel=0.05)
    assert t["growth_mb"] == 9 and t["first_mb"] == 51 and t["last_mb"] == 60
    assert figures.rss_trend([]) is None and figures.rss_trend([(100, 1)]) is None


def test_readme_block_replaced_and_missing_markers_refused():
    md = "# auditd-lite benchmark, 2031-01-02\n\nMachine: x\n\n| a |\n|---|\n\n## Writer\n\n| w |\n"
    block = figures.readme_block(md, "2031-01-02")
    assert block.startswith("Measured 2031-01-02 by `make bench` (`bench/results/2031-01-02.md`")
    assert "\n### Writer\n" in block and "# auditd-lite benchmark" not in block
    readme = f"intro\n{figures.README_BEGIN}\nold table\n{figures.README_END}\n\n## Next\n"
    out = figures.replace_block(readme, block)
    assert "old table" not in out and "| a |" in out
    assert out.startswith("intro\n") and out.endswith(f"{figures.README_END}\n\n## Next\n")
    assert figures.replace_block(out, block) == out  # a second run replaces, not appends
    with pytest.raises(ValueError):
        figures.replace_block("no markers", block)
