"""Kernel tests of the loader's split: bcc compiles in a child, the daemon holds the programs.

What is mapped into the daemon comes from /proc/<pid>/maps, its children from
/proc, what was captured from the database, and what ran from the processes
this test started and waited for.
"""

from __future__ import annotations

import os
import subprocess

import pytest

from auditd_lite import rows
from conftest import InProcess, query_json

pytestmark = pytest.mark.kernel

# the libraries bcc brings with it: clang and LLVM, and bcc's own
COMPILER_LIBRARIES = ("libLLVM", "libclang", "libbcc")


def children_of(pid: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue  # gone meanwhile
            if ppid == pid:
                out.append(int(entry))
    return out


@pytest.mark.parametrize("transport", ["ringbuf", "perfbuf"])
def test_ready_daemon_maps_no_compiler_and_keeps_capturing(daemon_factory, marker, transport):
    """Once the daemon is ready (it printed its header): no clang, LLVM or bcc library is
    mapped into it, the compiler child is gone (the daemon has no child process), and a
    process run after that is still captured, its exec with its argv and its exit with
    the wait status the test saw."""
    d = daemon_factory("--transport", transport)
    with open(f"/proc/{d.proc.pid}/maps") as f:
        mapped = {line.split()[-1] for line in f if "/" in line}
    assert [p for p in mapped if any(lib in p for lib in COMPILER_LIBRARIES)] == []
    assert any("libbpf.so" in p for p in mapped)  # the maps are this process's: it was read
    assert children_of(d.proc.pid) == []
    p = subprocess.Popen(["sh", "-c", f'"{marker}" after-the-child; exit 7'])
    assert p.wait() == 7
    d.flush()
    execs = query_json(d.db_dir, "--filename", str(marker), "--event", "exec")
    assert [(e["argv"], e["ppid"]) for e in execs] == [([str(marker), "after-the-child"], p.pid)]
    exits = query_json(d.db_dir, "--pid", p.pid, "--event", "exit")
    assert [(e["exit_code"], e["signal"]) for e in exits] == [(7, 0)]


def test_ring_records_that_wrap_are_read_whole(marker):
    """A 16 KiB ring buffer and 400 execs of about 200 bytes each: the records wrap round
    the buffer's end many times; every exec is decoded with its exact argv, none lost, and
    the reader did read records in two pieces."""
    from auditd_lite.capture import loader  # noqa: PLC0415 - only the kernel tests load

    expected = {}
    with InProcess(loader.ProgramSettings(buffer_kb=16), poll_ms=10) as loaded:
        for i in range(400):
            arg = f"{i:04d}-" + "x" * (i % 97)
            p = subprocess.Popen([str(marker), arg])
            p.wait()
            expected[p.pid] = [str(marker), arg]
    assert loaded.lost == 0
    got = {}
    for row in loaded.decoded():
        if row[rows.F_EVENT] == "exec" and row[2] in expected and row[rows.F_FILENAME] == str(marker):
            assert row[2] not in got, "one exec recorded twice"
            got[row[2]] = [a.decode() for a in row[rows.F_ARGV].split(b"\0")]
    assert got == expected
    assert loaded.wrapped > 0
