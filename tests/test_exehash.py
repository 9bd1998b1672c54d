"""capture/exehash: real files, real processes, compared with sha256sum; no root needed."""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import time

import pytest

from auditd_lite.capture import exehash
from auditd_lite.capture.exehash import Hasher, HashWorker, Request


def sha256sum(path) -> str:
    out = subprocess.run(["sha256sum", str(path)], capture_output=True, text=True, check=True).stdout
    return out.split()[0]


def settle():
    """Let a file just written become old enough to be cached (see exehash.RACY_NS)."""
    time.sleep(exehash.RACY_NS / 1e9 * 2)


def install(src, dst):
    """Put a copy of ``src`` at ``dst`` the way package managers do: a new file renamed over."""
    tmp = dst.with_name(dst.name + ".new")
    shutil.copy(src, tmp)
    tmp.chmod(0o755)
    os.replace(tmp, dst)


def spawn(path, *args) -> tuple[subprocess.Popen, int]:
    """Start ``path`` (Popen returns once the exec succeeded): (process, UTC ns before the exec)."""
    t = time.time_ns()
    return subprocess.Popen([str(path), *args]), t


def run_to_end(path, *args) -> tuple[int, int]:
    """Run ``path`` and reap it: (its pid, now gone; UTC ns before the exec)."""
    p, t = spawn(path, *args)
    p.wait()
    return p.pid, t


def run_by_path(path) -> tuple[int, str, int]:
    """Run ``path`` to its end: what its exec record knows once it is gone (pid, filename, time)."""
    pid, t = run_to_end(path)
    return pid, str(path), t


@pytest.fixture
def running():
    started: list[subprocess.Popen] = []

    def start(path, *args):
        p, t = spawn(path, *args)
        started.append(p)
        return p, t

    yield start
    for p in started:
        p.kill()
        p.wait()


def test_hash_equals_sha256sum_live_and_by_path(tmp_path, running):
    """A live process is hashed from /proc/PID/exe (ok), a finished one from its path (by_path);
    both equal sha256sum's output for the binary."""
    prog = tmp_path / "prog"
    install("/bin/sleep", prog)
    settle()
    h = Hasher()
    p, t = running(prog, "30")
    assert h.lookup(p.pid, str(prog), t, comm="prog") == (sha256sum(prog), "ok")
    pid, t = run_to_end(prog, "0")
    assert h.lookup(pid, str(prog), t) == (sha256sum(prog), "by_path")


def test_replaced_binary_two_hashes_two_cache_entries(tmp_path):
    """A binary replaced between two runs gives each run its own hash and the cache two entries
    (two real hashes)."""
    prog = tmp_path / "prog"
    install("/bin/true", prog)
    settle()
    h = Hasher()
    first = h.lookup(*run_by_path(prog))
    install("/bin/false", prog)
    settle()
    second = h.lookup(*run_by_path(prog))
    assert first == (sha256sum("/bin/true"), "by_path")
    assert second == (sha256sum("/bin/false"), "by_path")
    assert first.sha256 != second.sha256
    assert len(h) == 2 and h.hashes == 2


def test_ten_thousand_lookups_one_hash(tmp_path, running):
    """100 real processes of one binary and 10,000 requests through the worker for one of them
    cost one hash computation; every answer is the same hash."""
    prog = tmp_path / "prog"
    install("/bin/true", prog)
    settle()
    h = Hasher()
    answers = {h.lookup(*run_by_path(prog)) for _ in range(100)}
    assert answers == {(sha256sum(prog), "by_path")}
    sleeper = tmp_path / "sleeper"
    install("/bin/sleep", sleeper)
    settle()
    p, t = running(sleeper, "30")
    worker = HashWorker(h, max_pending=10_000).start()
    try:
        results = worker.submit([Request(p.pid, str(sleeper), t, comm="sleeper")] * 10_000).wait(60)
    finally:
        worker.close(10)
    assert set(results) == {(sha256sum(sleeper), "ok")}
    assert h.hashes == 2  # one per binary
    assert h.hits == 99 + 9_999


def test_replaced_or_deleted_while_running_hashed_as_it_ran(tmp_path, running):
    """A process whose binary was replaced, or deleted, while it runs is hashed from
    /proc/PID/exe with the content that ran; once it is gone, the replaced path is `changed`
    (its ctime is after the exec: not the file that ran) and the deleted one `gone`."""
    original = sha256sum("/bin/sleep")
    replaced, deleted = tmp_path / "replaced", tmp_path / "deleted"
    install("/bin/sleep", replaced)
    install("/bin/sleep", deleted)
    settle()
    h = Hasher()
    p1, t1 = running(replaced, "30")
    p2, t2 = running(deleted, "30")
    install("/bin/true", replaced)
    deleted.unlink()
    assert os.readlink(f"/proc/{p2.pid}/exe").endswith(" (deleted)")
    assert h.lookup(p1.pid, str(replaced), t1, comm="replaced") == (original, "ok")
    assert h.lookup(p2.pid, str(deleted), t2, comm="deleted") == (original, "ok")
    for p in (p1, p2):
        p.kill()
        p.wait()
    assert h.lookup(p1.pid, str(replaced), t1) == (None, "changed")
    assert h.lookup(p2.pid, str(deleted), t2) == (None, "gone")
    # without the exec's time nothing tells the new file from the one that ran: by_path says so
    assert h.lookup(p1.pid, str(replaced)) == (sha256sum("/bin/true"), "by_path")


def test_proc_exe_trusted_only_for_the_same_process(tmp_path, running):
    """/proc/PID/exe is used only while start time and comm match the record's; otherwise the
    path is (here gone, so `gone`, never the hash of what the pid runs now)."""
    prog = tmp_path / "prog"
    install("/bin/sleep", prog)
    settle()
    h = Hasher()
    p, t = running(prog, "30")
    with open(f"/proc/{p.pid}/stat", "rb") as f:
        raw = f.read()
    ticks = int(raw[raw.rindex(b")") + 2:].split()[19])
    start_ns = ticks * (10**9 // os.sysconf("SC_CLK_TCK")) - (
        time.clock_gettime_ns(time.CLOCK_BOOTTIME) - time.clock_gettime_ns(time.CLOCK_MONOTONIC))
    prog.unlink()
    want = (sha256sum("/bin/sleep"), "ok")
    assert h.lookup(p.pid, str(prog), t, start_ns=start_ns, comm="prog") == want
    assert h.lookup(p.pid, str(prog), t, start_ns=start_ns + 10**9, comm="prog") == (None, "gone")
    assert h.lookup(p.pid, str(prog), t, start_ns=start_ns, comm="other") == (None, "gone")


def test_script_is_hashed_as_its_interpreter(tmp_path, running):
    """A #! script, live (/proc/PID/exe) or gone (path followed through its #! line as the kernel
    does), is hashed as the interpreter that ran, so both agree with a `seen at start` row."""
    script = tmp_path / "job.sh"
    script.write_text("#!/bin/sh -e\nsleep 30\n")
    script.chmod(0o755)
    settle()
    dash = sha256sum(os.path.realpath("/bin/sh"))
    h = Hasher()
    p, t = running(script)
    assert h.lookup(p.pid, str(script), t, comm="job.sh") == (dash, "ok")
    p.kill()
    p.wait()
    assert h.lookup(p.pid, str(script), t) == (dash, "by_path")


def test_too_large_is_not_read(tmp_path):
    """A file over the limit (the default 256 MiB, a sparse file) is `too_large` and not read;
    one of exactly the limit is hashed."""
    big = tmp_path / "big"
    with open(big, "wb") as f:
        f.truncate(exehash.DEFAULT_LIMIT + 1)
    reads = []
    h = Hasher(during_read=reads.append)
    assert h.lookup(2**22 + 1, str(big)) == (None, "too_large")
    assert reads == [] and h.hashes == 0
    small = tmp_path / "small"
    small.write_bytes(b"x" * 4096)
    assert Hasher(limit=4096).lookup(2**22 + 1, str(small)) == (sha256sum(small), "by_path")
    assert Hasher(limit=4095).lookup(2**22 + 1, str(small)) == (None, "too_large")


@pytest.mark.parametrize("how", ["overwrite", "append"])
def test_modified_during_hashing_is_changed(tmp_path, how):
    """A file written while it is being hashed (overwritten in place at the same size, or appended
    to; the hook runs after the first chunk) is `changed`, no hash, nothing cached; hashed again
    untouched, it is `by_path` with sha256sum's hash."""
    f = tmp_path / "prog"
    f.write_bytes(os.urandom(3 * exehash.CHUNK))
    settle()

    def write(_fd):
        with open(f, "r+b") as w:
            if how == "append":
                w.seek(0, 2)
            w.write(b"tampered")

    h = Hasher(during_read=write)
    assert h.lookup(2**22 + 1, str(f)) == (None, "changed")
    assert len(h) == 0
    settle()
    assert Hasher().lookup(2**22 + 1, str(f)) == (sha256sum(f), "by_path")


def test_modified_after_exec_is_changed(tmp_path):
    """A file whose ctime is after the exec's time (written since) is `changed` by path."""
    f = tmp_path / "prog"
    install("/bin/true", f)
    settle()
    t = time.time_ns()
    settle()
    f.chmod(0o700)  # metadata only, still a ctime after the exec: not trusted by path
    assert Hasher().lookup(2**22 + 1, str(f), t) == (None, "changed")


def test_fresh_file_is_not_cached(tmp_path):
    """A file changed within RACY_NS of its hash is hashed each time; once older, it is cached."""
    f = tmp_path / "prog"
    h = Hasher()
    shutil.copy("/bin/true", f)
    h.lookup(2**22 + 1, str(f))
    h.lookup(2**22 + 1, str(f))
    assert (h.hashes, len(h)) == (2, 0)
    settle()
    h.lookup(2**22 + 1, str(f))
    h.lookup(2**22 + 1, str(f))
    assert (h.hashes, h.hits, len(h)) == (3, 1, 1)


def test_cache_is_lru_bounded(tmp_path):
    """The cache keeps at most cache_size entries, dropping the least recently used."""
    files = []
    for i in range(3):
        files.append(tmp_path / f"f{i}")
        files[-1].write_bytes(b"%d" % i)
    settle()
    h = Hasher(cache_size=2)
    for f in (files[0], files[1], files[0], files[2]):  # f1 is the least recently used
        h.lookup(2**22 + 1, str(f))
    assert (h.hashes, len(h)) == (3, 2)
    h.lookup(2**22 + 1, str(files[0]))
    assert h.hashes == 3
    h.lookup(2**22 + 1, str(files[1]))
    assert h.hashes == 4


def test_gone_unreadable_and_relative(tmp_path):
    """A missing path is `gone`, as is a relative one without a working directory; with one it is
    resolved there; a directory or a FIFO is `unreadable` (the FIFO is not waited on)."""
    h = Hasher()
    assert h.lookup(2**22 + 1, str(tmp_path / "nothing")) == (None, "gone")
    assert h.lookup(2**22 + 1, None) == (None, "gone")
    prog = tmp_path / "prog"
    install("/bin/true", prog)
    assert h.lookup(2**22 + 1, "./prog") == (None, "gone")
    assert h.lookup(2**22 + 1, "./prog", cwd=str(tmp_path)) == (sha256sum(prog), "by_path")
    os.mkfifo(tmp_path / "fifo")
    assert h.lookup(2**22 + 1, str(tmp_path / "fifo")) == (None, "unreadable")
    assert h.lookup(2**22 + 1, str(tmp_path)) == (None, "unreadable")


def test_off(tmp_path):
    """--no-hash: every lookup and every submitted request is `off`, nothing is opened."""
    h = Hasher(enabled=False)
    assert h.lookup(os.getpid(), "/bin/true") == (None, "off")
    ticket = HashWorker(h).submit([Request(os.getpid(), "/bin/true")] * 3)
    assert ticket.ready() and ticket.wait(0) == [exehash.OFF] * 3
    assert h.hashes == 0


def test_worker_busy_and_late(tmp_path):
    """The writer never blocks: requests beyond the queue's bound are `busy` at once, and a ticket
    whose answer is not in by the writer's timeout is `late`; the worker still finishes it, so
    the next exec of that file is a cache hit."""
    f = tmp_path / "prog"
    install("/bin/true", f)
    settle()
    gate = threading.Event()
    h = Hasher(during_read=lambda fd: gate.wait(30))
    worker = HashWorker(h, max_pending=3).start()
    try:
        req = Request(2**22 + 1, str(f))
        slow = worker.submit([req])
        t0 = time.monotonic()
        assert slow.wait(0.05) == [exehash.LATE]
        assert time.monotonic() - t0 < 5
        assert worker.submit([req, req]) is not None  # fills the queue to its bound
        over = worker.submit([req])
        assert over.ready() and over.wait(0) == [exehash.BUSY]
        assert worker.busy == 1
        gate.set()
        assert slow.wait(30) == [(sha256sum(f), "by_path")]
    finally:
        gate.set()
        worker.close(30)
    assert h.hashes == 1 and h.hits == 2


# the kernel's word for the file an exec ran (issue #21): records since then carry it

def named_by_kernel(path) -> tuple:
    """The identity an exec record of ``path`` carries now (records.Decoder gives it)."""
    return exehash.identity(os.stat(path))


def test_the_named_file_is_hashed_and_then_answered_from_the_cache_alone(tmp_path):
    """A process gone, its file found by path with the identity the kernel named: hashed,
    status inode; asked again for that identity, the cache answers without opening anything
    (the file has been deleted meanwhile)."""
    f = tmp_path / "prog"
    install("/bin/true", f)
    settle()
    named = named_by_kernel(f)
    pid, t = run_to_end(f)
    h = Hasher()
    want = (sha256sum(f), "inode")
    assert h.request(Request(pid, str(f), t, inode=named)) == want
    assert h.hashes == 1
    f.unlink()
    assert h.cached(named) == want
    assert h.request(Request(pid, str(f), t, inode=named)) == want and h.hashes == 1
    assert h.cached(named[:4] + (named[4] + 1,)) is None  # another identity: not known


def test_another_file_at_the_path_is_changed_not_hashed(tmp_path):
    """The process gone and its path now naming another file (renamed over) or the same file
    written since (a new mtime): changed, no hash; where the process still runs, the inode it
    runs is hashed (status inode) whatever the path names."""
    f = tmp_path / "prog"
    install("/bin/sleep", f)
    settle()
    named = named_by_kernel(f)
    pid, t = run_to_end(f, "0")
    install("/bin/true", f)
    assert Hasher().request(Request(pid, str(f), t, inode=named)) == (None, "changed")
    g = tmp_path / "other"
    install("/bin/true", g)
    settle()
    named_g = named_by_kernel(g)
    pid, t = run_to_end(g)
    os.utime(g, ns=(time.time_ns(), time.time_ns()))  # after the exec; a write moves mtime too
    assert Hasher().request(Request(pid, str(g), t, inode=named_g)) == (None, "changed")


def running_copy(tmp_path, running, how: str):
    """A copy of /bin/sleep at prog-HOW, running: (its path, the identity the kernel names,
    sha256sum's hash of it, the process, UTC ns before its exec)."""
    f = tmp_path / f"prog-{how}"
    install("/bin/sleep", f)
    settle()
    named, ran = named_by_kernel(f), sha256sum(f)
    p, t = running(f, "30")
    return f, named, ran, p, t


def take_away(f, how: str) -> None:
    """Another file renamed over f (how == "rename"), or f deleted."""
    if how == "rename":
        install("/bin/true", f)
    else:
        f.unlink()


def test_running_inode_is_hashed_after_rename_and_delete(tmp_path, running):
    """A running program whose file was renamed over, or deleted (both move its ctime: its link
    count changes), is hashed from /proc/PID/exe as the inode the kernel named (status inode)."""
    for how in ("rename", "delete"):
        f, named, ran, p, t = running_copy(tmp_path, running, how)
        take_away(f, how)
        assert Hasher().request(Request(p.pid, str(f), t, start_ns=None, comm=f.name[:15],
                                        inode=named)) == (ran, "inode")


def test_renamed_over_or_deleted_while_being_read_is_read_again(tmp_path, running):
    """A running program's file renamed over, or deleted, while the hasher is reading it (the
    hook acts once, after the first chunk): only its ctime moved, so it is read again and
    hashed as the inode the kernel named (status inode, sha256sum's hash of what ran); the
    content being unchanged, the answer is the one a look begun a moment later gives."""
    for how in ("rename", "delete"):
        f, named, ran, p, t = running_copy(tmp_path, running, how)
        acted = []

        def act(_fd, f=f, how=how, acted=acted):
            if not acted:
                acted.append(how)
                take_away(f, how)

        h = Hasher(during_read=act)
        assert h.request(Request(p.pid, str(f), t, comm=f.name[:15], inode=named)) == (ran, "inode")
        assert acted and h.hashes == 1, (how, acted)


def test_chmod_while_read_by_path_after_the_exec_is_changed(tmp_path):
    """A process gone, its file found by path: a chmod while it is read (once, after the first
    chunk) moves its ctime past the exec, so it is `changed` (not read again into a hash): by path, a ctime after the exec is
    never trusted. The same read with no chmod is `by_path` with sha256sum's hash."""
    f = tmp_path / "prog"
    install("/bin/true", f)
    settle()
    pid, t = run_to_end(f)
    settle()
    chmods = []

    def chmod_once(_fd):
        if not chmods:
            chmods.append(f.chmod(0o700))

    h = Hasher(during_read=chmod_once)
    assert h.lookup(pid, str(f), t) == (None, "changed")
    assert chmods
    assert Hasher().lookup(pid, str(f), t) == (None, "changed")  # its ctime is after the exec now
    g = tmp_path / "other"
    install("/bin/true", g)
    settle()
    pid, t = run_to_end(g)
    assert Hasher().lookup(pid, str(g), t) == (sha256sum(g), "by_path")
