"""Kernel tests: the real daemon, real processes, the real database read through `query`.

Every expectation comes from the kernel or /proc (the pid Popen got, our own
pid as the parent, the wait status Popen saw), not from what the code
believes.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import sqlite3
import uuid

import pytest

from auditd_lite.errors import BadInput
from conftest import query_json

pytestmark = pytest.mark.kernel


def one(records, **match):
    found = [r for r in records if all(r.get(k) == v for k, v in match.items())]
    assert len(found) == 1, (match, records)
    return found[0]


class TestExitStatus:
    def test_exit_code_and_parent(self, capture):
        """`sh -c 'exit 3'` is recorded with exit code 3, no signal, and the real parent."""
        d = capture
        tag = uuid.uuid4().hex
        p = subprocess.Popen(["sh", "-c", "exit 3", tag])
        assert p.wait() == 3
        d.flush()
        execs = query_json(d.db_dir, "--arg", tag, "--event", "exec")
        ex = one(execs, pid=p.pid)
        assert ex["ppid"] == os.getpid()
        assert ex["argv"] == ["sh", "-c", "exit 3", tag]
        exit_ = one(query_json(d.db_dir, "--pid", p.pid, "--event", "exit"), pid=p.pid)
        assert (exit_["exit_code"], exit_["signal"], exit_["ppid"]) == (3, 0, os.getpid())

    def test_killed_by_sigkill(self, capture):
        """A shell that SIGKILLs itself: exit code 0 and signal 9, as the kernel's wait status says."""
        d = capture
        p = subprocess.Popen(["sh", "-c", "kill -9 $$"])
        assert p.wait() == -signal.SIGKILL
        d.flush()
        exit_ = one(query_json(d.db_dir, "--pid", p.pid, "--event", "exit"), pid=p.pid)
        assert (exit_["exit_code"], exit_["signal"]) == (0, 9)
        assert one(query_json(d.db_dir, "--signal", 9, "--event", "exit"), pid=p.pid)


class TestExec:
    def test_failed_exec(self, capture, tmp_path):
        """Exec of a path that does not exist is an exec_failed record with ENOENT and its argv."""
        d = capture
        missing = f"/nonexistent/{uuid.uuid4().hex}"
        with pytest.raises(FileNotFoundError):
            subprocess.Popen([missing, "first arg", "-x"])
        d.flush()
        rec = one(query_json(d.db_dir, "--event", "exec_failed", "--filename", missing),
                  filename=missing)
        assert rec["errno"] == 2
        assert rec["argv"] == [missing, "first arg", "-x"]
        assert rec["ppid"] == os.getpid()

    def test_argv_exact(self, capture, marker):
        """Arguments with spaces, 40 arguments and non-UTF-8 bytes come out whole and in order."""
        d = capture
        spaced = [str(marker), "a b", "  lead", "tab\there", ""]
        forty = [str(marker)] + [f"arg{i}" for i in range(39)]
        binary = [os.fsencode(str(marker)), b"caf\xe9", b"\xff\xfe ok"]
        for argv in (spaced, forty, binary):
            subprocess.run(argv, check=True)
        d.flush()
        got = [r["argv"] for r in query_json(d.db_dir, "--filename", str(marker), "--event", "exec")]
        assert len(got) == 3
        assert spaced in got and forty in got
        assert [str(marker), "caf\\xe9", "\\xff\\xfe ok"] in got
        for r in query_json(d.db_dir, "--filename", str(marker), "--event", "exec"):
            assert r["args_truncated"] is False
            assert r["argc"] == len(r["argv"])

    def test_too_many_args_marked_truncated(self, capture, marker):
        """More than 128 arguments, or more than 4 KiB of them, is recorded truncated, never silently."""
        d = capture
        many = [str(marker)] + [f"x{i}" for i in range(199)]
        long = [str(marker), "L" * 6000]
        subprocess.run(many, check=True)
        subprocess.run(long, check=True)
        d.flush()
        recs = query_json(d.db_dir, "--filename", str(marker), "--event", "exec")
        by_len = {r["argc"]: r for r in recs}
        assert set(by_len) == {200, 2}
        assert by_len[200]["args_truncated"] is True
        assert by_len[200]["argv"] == many[:128]
        assert by_len[2]["args_truncated"] is True
        assert by_len[2]["argv"][0] == str(marker)
        assert 0 < len(by_len[2]["argv"][1]) < 6000

    def test_failed_exec_arguments_at_the_byte_bound(self, capture):
        """A failed exec's arguments come from the syscall-entry copy: arguments filling the 4,096
        bytes exactly (their NULs counted) are whole and not truncated; one byte more is cut
        and says so, as is an argument after a full room."""
        missing = f"/nonexistent/{uuid.uuid4().hex}"
        exact = [missing, "E" * (4096 - len(missing) - 1 - 1)]  # two strings, two NULs
        over = [missing, "O" * (4096 - len(missing) - 1)]
        after = exact + ["more"]
        assert len(b"\0".join(a.encode() for a in exact)) + 1 == 4096
        for argv in (exact, over, after):
            with pytest.raises(FileNotFoundError):
                subprocess.Popen(argv)
        capture.flush()
        recs = sorted(query_json(capture.db_dir, "--event", "exec_failed", "--filename", missing),
                      key=lambda r: r["time_ns"])
        assert [(r["argv"], r["args_truncated"]) for r in (recs[0], recs[2])] == [(exact, False), (exact, True)]
        assert recs[1]["args_truncated"] is True and recs[1]["argv"][1] == over[1][:len(recs[1]["argv"][1])]
        assert len(recs[1]["argv"][1]) < len(over[1]) and len(recs) == 3

    def test_exec_from_non_leader_thread(self, capture, marker, tmp_path):
        """exec from a second thread is recorded under the process id, with the thread's id as old_pid."""
        d = capture
        script = tmp_path / "thread_exec.py"
        script.write_text(
            "import os, threading, sys\n"
            "def go():\n"
            "    print(threading.get_native_id(), flush=True)\n"
            f"    os.execv({str(marker)!r}, [{str(marker)!r}, 'from-thread'])\n"
            "t = threading.Thread(target=go); t.start(); t.join()\n")
        p = subprocess.run([sys.executable, str(script)], capture_output=True, check=True)
        tid = int(p.stdout.decode().split()[0])
        d.flush()
        rec = one(query_json(d.db_dir, "--filename", str(marker), "--event", "exec"),
                  argv=[str(marker), "from-thread"])
        assert rec["old_pid"] == tid
        assert rec["pid"] != tid
        assert rec["ppid"] == os.getpid()
        exit_ = one(query_json(d.db_dir, "--pid", rec["pid"], "--event", "exit"), pid=rec["pid"])
        assert exit_["exit_code"] == 0

    def test_execveat(self, capture, marker, tmp_path):
        """exec through a file descriptor (execveat) is recorded, and a failed one with its errno."""
        d = capture
        tag = uuid.uuid4().hex
        code = ("import os, sys\n"
                f"fd = os.open({str(marker)!r}, os.O_RDONLY)\n"
                "if sys.argv[1] == 'bad':\n"
                "    os.close(fd)\n"
                "    try:\n"
                f"        os.execve(fd, ['x', {tag!r}], {{}})\n"
                "    except OSError:\n"
                "        sys.exit(9)\n"
                f"os.execve(fd, ['via-fd', {tag!r}], {{}})\n")
        ok = subprocess.run([sys.executable, "-c", code, "good"])
        bad = subprocess.run([sys.executable, "-c", code, "bad"])
        assert (ok.returncode, bad.returncode) == (0, 9)
        d.flush()
        ex = one(query_json(d.db_dir, "--arg", tag, "--event", "exec"), argv=["via-fd", tag])
        assert ex["comm"] == marker.name[:15] or ex["filename"].startswith("/dev/fd/")
        failed = one(query_json(d.db_dir, "--arg", tag, "--event", "exec_failed"), argv=["x", tag])
        assert failed["errno"] == 9  # EBADF

    def test_other_uid(self, capture):
        """A process run as uid 65534 is recorded with that uid on its exec and exit."""
        d = capture

        def drop():
            os.setgid(65534)
            os.setuid(65534)

        # /bin/true: pytest's temporary directories are closed to other users
        p = subprocess.Popen(["/bin/true", "as-nobody"], preexec_fn=drop)
        assert p.wait() == 0
        d.flush()
        ex = one(query_json(d.db_dir, "--pid", p.pid, "--event", "exec"), pid=p.pid)
        assert (ex["uid"], ex["euid"], ex["gid"]) == (65534, 65534, 65534)
        assert one(query_json(d.db_dir, "--uid", 65534, "--event", "exit"), pid=p.pid)


class TestDuration:
    def test_sleep_one_second(self, capture):
        """A process that sleeps 1 s has a recorded duration of at least 1 s and at most the wall
        time this test saw from before its start to after its reap."""
        d = capture
        t0 = time.monotonic()
        p = subprocess.Popen(["sleep", "1"])
        p.wait()
        wall = time.monotonic() - t0
        d.flush()
        exit_ = one(query_json(d.db_dir, "--pid", p.pid, "--event", "exit"), pid=p.pid)
        # no fixed upper margin: under an emulated CPU exec and exit alone take 100 ms
        assert 1.0e9 <= exit_["duration_ns"] <= wall * 1e9


class TestCounts:
    def test_exactly_23(self, capture, marker):
        """23 runs of a marker program give exactly 23 exec and 23 exit records."""
        d = capture
        pids = []
        for _ in range(23):
            p = subprocess.Popen([str(marker)])
            p.wait()
            pids.append(p.pid)
        d.flush()
        execs = query_json(d.db_dir, "--filename", str(marker), "--event", "exec")
        exits = query_json(d.db_dir, "--comm", marker.name[:15], "--event", "exit")
        assert sorted(r["pid"] for r in execs) == sorted(pids)
        assert sorted(r["pid"] for r in exits) == sorted(pids)

    def test_min_duration(self, daemon_factory, marker):
        """--min-duration-ms 1000: no exec rows, short exits dropped in the kernel, long ones
        kept. Short is what this test's own clock bounds: a process spawned and reaped within
        1 s lived less (under TCG with other guests a /bin/true can take longer, and is then
        not counted as short)."""
        d = daemon_factory("--min-duration-ms", 1000)
        short = []
        for _ in range(5):
            t0 = time.monotonic()
            p = subprocess.Popen([str(marker)])
            p.wait()
            if time.monotonic() - t0 < 1.0:
                short.append(p.pid)
        long_ = subprocess.Popen(["sleep", "1.3"])
        long_.wait()
        d.stop()
        assert short, "no process of the five was reaped within 1 s of its spawn"
        assert query_json(d.db_dir, "--event", "exec") == []
        exits = query_json(d.db_dir, "--event", "exit")
        pids = {r["pid"] for r in exits}
        assert long_.pid in pids
        assert not pids & set(short)
        assert all(r["duration_ns"] >= 1_000_000_000 for r in exits)


class TestLimits:
    def test_largest_accepted_limits_load_and_hold(self, daemon_factory, marker):
        """The largest --max-args and --max-arg-bytes the config accepts (256, 8192) load on
        this kernel, and an exec with 255 arguments comes out whole, one with 300 cut at 256
        and marked truncated."""
        from auditd_lite import config  # noqa: PLC0415

        top_args, top_bytes = config.MAX_ARGS_RANGE[1], config.MAX_ARG_BYTES_RANGE[1]
        assert (top_args, top_bytes) == (256, 8192)
        for key, value in (("max_args", top_args + 1), ("max_arg_bytes", top_bytes + 1)):
            with pytest.raises(BadInput):
                config.RunSettings(**{key: value}).validate()
        d = daemon_factory("--max-args", top_args, "--max-arg-bytes", top_bytes)
        whole = [str(marker)] + [f"{i}" for i in range(254)]
        cut = [str(marker)] + ["y"] * 299
        subprocess.run(whole, check=True)
        subprocess.run(cut, check=True)
        d.stop()
        recs = {r["argc"]: r for r in query_json(d.db_dir, "--filename", str(marker), "--event", "exec")}
        assert recs[255]["argv"] == whole and recs[255]["args_truncated"] is False
        assert recs[300]["argv"] == cut[:256] and recs[300]["args_truncated"] is True


class TestTransportAndPrint:
    def test_perfbuf(self, daemon_factory, marker):
        """--transport perfbuf records the same exec and exit."""
        d = daemon_factory("--transport", "perfbuf")
        p = subprocess.Popen(["sh", "-c", "exit 7"])
        assert p.wait() == 7
        q = subprocess.Popen([str(marker)])
        q.wait()
        d.stop()
        assert one(query_json(d.db_dir, "--pid", p.pid, "--event", "exit"), pid=p.pid)["exit_code"] == 7
        assert one(query_json(d.db_dir, "--pid", q.pid, "--event", "exec"), pid=q.pid)

    def test_print_lines(self, daemon_factory, marker):
        """--print shows each event after the header in the bootstrap's columns."""
        d = daemon_factory()
        p = subprocess.Popen(["sh", "-c", "exit 5"])
        p.wait()
        d.stop()
        lines = [l for l in d.printed if f" {p.pid} " in l]
        assert any(l.split()[1] == "EXEC" for l in lines), d.printed[-20:]
        assert any(l.split()[1] == "EXIT" and "[5]" in l for l in lines), lines


class TestIdentity:
    def test_seeded_and_proc_truth(self, daemon_factory):
        """A process running before start is seeded from /proc; its exit joins it by start time,
        and the recorded ppid and start time agree with /proc."""
        # long enough to outlive a daemon's start under TCG (40 s and more in a 5.10 guest):
        # a 30 s sleep ended before the daemon listed /proc, and was not seeded
        before = subprocess.Popen(["sleep", "600"])
        with open(f"/proc/{before.pid}/stat") as f:
            ticks = int(f.read().rsplit(")", 1)[1].split()[19])
        d = daemon_factory()
        during = subprocess.Popen(["sleep", "600"])
        time.sleep(0.2)
        with open(f"/proc/{during.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        proc_ppid, during_ticks = int(fields[1]), int(fields[19])
        before.kill()
        during.kill()
        before.wait()
        during.wait()
        d.stop()
        ex = one(query_json(d.db_dir, "--pid", during.pid, "--event", "exec"), pid=during.pid)
        assert ex["ppid"] == proc_ppid == os.getpid()
        con = sqlite3.connect(f"file:{d.db_dir / 'audit.db'}?mode=ro", uri=True)
        tick = 1_000_000_000 // os.sysconf("SC_CLK_TCK")
        seed = con.execute("SELECT start_ns, start_tick_ns, ppid FROM seen_processes WHERE pid=?",
                           (before.pid,)).fetchone()
        assert seed is not None and seed[2] == os.getpid()
        exit_start = con.execute("SELECT start_ns, signal FROM events WHERE event='exit' AND pid=?",
                                 (before.pid,)).fetchone()
        assert exit_start[1] == 9
        assert abs(exit_start[0] - seed[0]) <= seed[1]
        # exec and exit of one process carry the same start time, and /proc agrees to a tick
        rows = con.execute("SELECT DISTINCT start_ns FROM events WHERE pid=?", (during.pid,)).fetchall()
        assert len(rows) == 1
        assert abs(rows[0][0] // tick - during_ticks) <= 1
        assert abs(ticks * tick - seed[0]) <= 2 * tick
