"""The benchmarks of bench/ run end to end, at a small size: a broken bench must not wait
for someone to type `make bench` to be noticed. The figures themselves are not checked here
(timed tests on a shared machine prove nothing); what is checked is what the benches
themselves check: every record stored, every exec captured."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_writer_bench_stores_every_record(tmp_path):
    out = tmp_path / "writer.json"
    p = subprocess.run([sys.executable, str(ROOT / "bench" / "writer_throughput.py"), "--records", "6000",
                        "--reps", "2", "--rotate-mb", "0.5", "--json", str(out)],
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    result = json.loads(out.read_text())
    assert [r["stored"] for r in result["runs"]] == [6000, 6000]
    assert all(r["files"] >= 2 for r in result["runs"]), "rotation did not happen"
    assert "| every record found in the files, every run | yes |" in p.stdout


@pytest.mark.kernel
def test_compare_bench_small(tmp_path):
    """compare.py at a tiny size, without auditd (installing and running it is make bench's
    part, not CI's): the table is written, auditd-lite captured
    every exec and exit of the storm in both transports, and nothing was lost."""
    p = subprocess.run([sys.executable, str(ROOT / "bench" / "compare.py"), "--execs", "400", "--reps", "2",
                        "--writer-records", "4000", "--query-records", "20000", "--out", str(tmp_path),
                        "--skip-auditd"], capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, p.stderr[-3000:]
    (md,) = tmp_path.glob("*.md")
    data = json.loads(md.with_suffix(".json").read_text())["configs"]
    for name in ("auditd-lite", "auditd-lite perfbuf"):
        assert data[name]["captured_exec"] == 1.0 and data[name]["captured_exit"] == 1.0, data[name]
        assert data[name]["lost"] == 0
    text = md.read_text()
    assert "| auditd-lite |" in text and "## Writer" in text and "## Queries" in text
    assert "failed" not in text
