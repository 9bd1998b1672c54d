"""The benchmarks of bench/ run end to end, at a small size: a broken bench must not wait
for someone to type `make bench` to be noticed. The figures themselves are not checked here
(timed tests on a shared machine prove nothing); what is checked is what the benches
themselves check: every record stored, every exec captured."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

import figures  # noqa: E402
from exec_storm import cpu_seconds  # noqa: E402


def run_bench(script: str, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """bench/SCRIPT with ``args`` under this Python; it must exit 0 (its stderr's tail says why not)."""
    p = subprocess.run([sys.executable, str(ROOT / "bench" / script), *map(str, args)],
                       capture_output=True, text=True, timeout=timeout)
    assert p.returncode == 0, p.stderr[-3000:]
    return p


def test_cpu_seconds_is_the_kernels_count_finer_than_a_tick():
    """exec_storm.cpu_seconds of a child that spins, read between two readings of the kernel's
    own count in clock ticks (/proc/PID/stat: user and system time, each cut to a whole tick):
    no less than the first, less than the second and two ticks; and finer than a tick
    (readings that are not whole ticks, where /proc/PID/stat's always are)."""
    child = subprocess.Popen([sys.executable, "-c", "while True: pass"])

    def ticks() -> float:
        with open(f"/proc/{child.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) * tick

    tick = 1 / os.sysconf("SC_CLK_TCK")
    try:
        time.sleep(0.5)
        for _ in range(3):
            before = ticks()
            got = cpu_seconds(child.pid)
            after = ticks()
            assert before <= got < after + 2 * tick, (before, got, after)
            time.sleep(0.2)
        readings = []
        for _ in range(5):
            time.sleep(0.013)
            readings.append(cpu_seconds(child.pid))
        assert any(abs(r / tick - round(r / tick)) > 1e-6 for r in readings), readings
    finally:
        child.kill()
        child.wait()


def test_writer_bench_stores_every_record(tmp_path):
    out = tmp_path / "writer.json"
    p = run_bench("writer_throughput.py", "--records", "6000", "--reps", "2", "--rotate-mb", "0.5",
                  "--json", out)
    result = json.loads(out.read_text())
    assert [r["stored"] for r in result["runs"]] == [6000, 6000]
    assert all(r["files"] >= 2 for r in result["runs"]), "rotation did not happen"
    assert "| every record found in the files, every run | yes |" in p.stdout


def test_sqlite_insert_bench_stores_every_row(tmp_path):
    """sqlite_insert.py at a small size: each configuration's file read back holds exactly the
    rows the writer stored (the bench fails otherwise), and the table has a line for each."""
    out = tmp_path / "insert.json"
    p = run_bench("sqlite_insert.py", "--records", "3000", "--reps", "2", "--batch", "700", "--json", out)
    result = json.loads(out.read_text())
    assert result["rows"] == 3000
    assert {"sqlite3", "sqlite3, no indexes"} <= set(result["cpu_us_per_record"])
    for name, values in result["cpu_us_per_record"].items():
        assert len(values) == 2, name
        assert f"| {name} | " in p.stdout


@pytest.mark.kernel
def test_compare_bench_small(tmp_path):
    """compare.py at a tiny size, without auditd (installing and running it is make bench's
    part, not CI's), with bpftrace where it is installed: the tables are written, every
    logger that records exits captured every exec and exit of the storm, nothing was lost,
    and the long storm's RSS samples gave a trend; the syscall-tax table has the forced fallback
    row, which says the mode it ran in, and the storm's tables say how many execs were hashed
    from the kernel's inode."""
    bpftrace = shutil.which("bpftrace") is not None
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n\n{figures.README_BEGIN}\nold\n{figures.README_END}\n")
    p = run_bench("compare.py", "--execs", "400", "--reps", "2", "--big-execs", "1000", "--big-reps", "1",
                  "--writer-records", "4000", "--query-records", "20000", "--out", tmp_path / "out",
                  "--tax-reps", "1", "--tax-calls", "20000", "--tax-blocks", "20000",
                  "--readme", readme, "--skip-auditd", *([] if bpftrace else ["--skip-bpftrace"]), timeout=900)
    (md,) = (tmp_path / "out").glob("*.md")
    result = json.loads(md.with_suffix(".json").read_text())
    data = result["configs"]
    for name in ("auditd-lite", "auditd-lite perfbuf", *(["bpftrace"] if bpftrace else [])):
        assert data[name]["captured_exec"]["min"] == 1.0 and data[name]["captured_exit"]["min"] == 1.0, data[name]
        assert data[name]["lost"] == 0
        assert data[name]["peak_rss_mb"]["median"] > 1 and data[name]["cpu_s_per_1000"] is not None
    assert [len(r) for r in result["raw"].values()] == [2] * len(data)
    big = result["big_configs"]["auditd-lite"]
    assert big["captured_exec"]["min"] == 1.0 and big["captured_exit"]["min"] == 1.0
    assert big["rss_slope_mb_per_10k"] is not None
    text = md.read_text()
    assert "| auditd-lite |" in text and "## Writer" in text and "## Queries" in text
    assert "## What it costs a program that never execs" in text
    assert "| auditd-lite raw_syscalls | raw_syscalls |" in text
    assert "## 1000-exec storm" in text and "## Goals (issues #12 and #21)" in text
    assert "hashed: kernel's inode" in text
    assert ("| bpftrace |" in text) == bpftrace
    assert "failed" not in text
    assert "\nold\n" not in readme.read_text() and "| auditd-lite |" in readme.read_text()


def test_render_bench_renders_every_record(tmp_path):
    """bench/render.py at a small size renders every record in both formats, times each case
(the JSON line as json_bytes writes it, and json.dumps beside it) once a rep, and prints its
table."""
    out = tmp_path / "render.json"
    p = run_bench("render.py", "--records", "300", "--reps", "2", "--json", out)
    result = json.loads(out.read_text())
    assert result["records"] == result["rendered"] == 300
    assert {k: len(v) for k, v in result["us_per_record"].items()} == {
        "ocsf.event": 2, "ecs.document": 2, "ocsf.event + json_bytes": 2, "ecs.document + json_bytes": 2,
        "ocsf.event + json.dumps": 2}
    assert "| ocsf.event |" in p.stdout and "| ocsf.event + json_bytes |" in p.stdout
