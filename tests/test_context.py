"""Kernel tests of an exec's context (issue #13): the executable's SHA-256 and what its cgroup
names, recorded by the real daemon (or, in a VM guest, the service) for real processes.

What is expected comes from outside the code: hashlib over the file's bytes (what sha256sum
prints), the cgroup directory the test made and moved the process into, /proc.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from auditd_lite import rows as rows_fields
from auditd_lite.capture import cgroups, records
from conftest import InProcess, log_events, query_json, run_cli

pytestmark = pytest.mark.kernel


def sql(db_dir: Path, query: str) -> list[dict]:
    """Rows of a read-only query over every file of ``db_dir``, through `auditd-lite sql`."""
    p = run_cli("sql", query, "--db-dir", db_dir, "--format", "json")
    # 1: no rows
    assert p.returncode in (0, 1) and "Traceback" not in p.stderr.decode(), p.stderr.decode()
    return [json.loads(line) for line in p.stdout.decode().splitlines() if line.strip()]


def execs_of(db_dir: Path, path: Path) -> list[dict]:
    # the test's paths are made of uuid hex: nothing to quote
    return sql(db_dir, f"SELECT * FROM events WHERE event = 'exec' AND filename = '{path}' ORDER BY id")


def wait_for_execs(db_dir: Path, path: Path, n: int, timeout: float = 60.0) -> None:
    """Until ``n`` exec records of ``path`` are in the database (the capture keeps running)."""
    deadline = time.monotonic() + timeout
    while len(execs_of(db_dir, path)) < n:
        assert time.monotonic() < deadline, f"fewer than {n} execs of {path} written in {timeout} s"
        time.sleep(0.2)


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def copy_of(program: str, where: Path) -> Path:
    path = where / ("c" + uuid.uuid4().hex[:12])
    shutil.copy(program, path)
    path.chmod(0o755)
    where.chmod(0o755)
    return path


class TestHash:
    def test_hash_is_the_sha256_of_the_file_that_ran(self, capture, tmp_path):
        """An exec of a program that lives for 2 s and one that exits at once are both hashed
        from the inode the kernel named at the exec (status inode: through /proc/PID/exe, the
        path or the cache, held to that identity): each hash equals hashlib's SHA-256 of the
        file's bytes, as sha256sum gives it."""
        sleeper, quick = copy_of("/bin/sleep", tmp_path), copy_of("/bin/true", tmp_path)
        assert subprocess.run([sleeper, "2"]).returncode == 0
        assert subprocess.run([quick]).returncode == 0
        capture.flush()
        want = subprocess.run(["sha256sum", sleeper], capture_output=True, text=True).stdout.split()[0]
        assert sha256_of(sleeper) == want
        [slow] = execs_of(capture.db_dir, sleeper)
        assert (slow["sha256"], slow["hash_status"]) == (want, "inode")
        [fast] = execs_of(capture.db_dir, quick)
        assert (fast["sha256"], fast["hash_status"]) == (sha256_of(quick), "inode")

    def test_replacing_the_binary_gives_two_hashes(self, capture, tmp_path):
        """One path run twice, its file replaced (renamed over, as a package upgrade does) in
        between: two exec records whose hashes are those of the two contents."""
        path = copy_of("/bin/true", tmp_path)
        first = sha256_of(path)
        subprocess.run([path], check=True)
        wait_for_execs(capture.db_dir, path, 1)  # hashed before the file changes
        new = path.with_name(path.name + ".new")
        shutil.copy("/bin/false", new)
        new.chmod(0o755)
        new.rename(path)
        second = sha256_of(path)
        assert first != second
        assert subprocess.run([path]).returncode == 1
        capture.flush()
        got = [(r["sha256"], r["hash_status"]) for r in execs_of(capture.db_dir, path)]
        assert got == [(first, "inode"), (second, "inode")]

    def test_a_deleted_binary_is_never_hashed_wrongly(self, capture, tmp_path):
        """A program that deletes its own file and lives on is hashed from the inode it runs
        (/proc/PID/exe), not from whatever the path names later: a file put in its place
        with other bytes is not what is recorded."""
        path = copy_of("/bin/sleep", tmp_path)
        want = sha256_of(path)
        p = subprocess.Popen([path, "2"])
        time.sleep(0.05)
        path.unlink()
        shutil.copy("/bin/true", path)
        assert p.wait() == 0
        capture.flush()
        [rec] = execs_of(capture.db_dir, path)
        assert rec["hash_status"] in ("inode", "changed", "gone"), rec
        if rec["hash_status"] == "inode":
            assert rec["sha256"] == want
        else:
            assert rec["sha256"] is None

    def test_renamed_over_while_running_keeps_the_hash_of_what_ran(self, capture, tmp_path):
        """A program whose path is renamed over (another file put in its place, as an upgrade
        does) while it runs, and still runs when its exec is written: its exec is hashed as the
        inode that ran, never the new file. (Once the process is gone too, nothing names that
        inode and the answer is `changed`: under TCG with three guests a 2 s run ended before
        the writer came to it.)"""
        path = copy_of("/bin/sleep", tmp_path)
        want = sha256_of(path)
        p = subprocess.Popen([path, "120"])
        try:
            new = path.with_name(path.name + ".new")
            shutil.copy("/bin/true", new)
            new.rename(path)
            capture.flush()
            [rec] = execs_of(capture.db_dir, path)
            assert p.poll() is None, "the program ended before its exec was read back"
        finally:
            p.kill()
            p.wait()
        assert (rec["sha256"], rec["hash_status"]) == (want, "inode")

    def test_deleted_before_it_ran_is_hashed_while_it_runs(self, capture, tmp_path):
        """A program exec'd through a descriptor on a file already deleted (no path names it):
        hashed from the very inode through /proc/PID/exe while it runs (status inode): it still
        runs when its exec is written."""
        path = copy_of("/bin/sleep", tmp_path)
        want = sha256_of(path)
        tag = f"0.0000{uuid.uuid4().int % 10**12}"  # a second argument sleep accepts: a few ps more
        code = ("import os, sys\n"
                "fd = os.open(sys.argv[1], os.O_RDONLY)\n"
                "os.unlink(sys.argv[1])\n"
                "os.execve(fd, ['deleted-sleep', '120', sys.argv[2]], {})\n")
        p = subprocess.Popen([sys.executable, "-c", code, str(path), tag])
        try:
            deadline = time.monotonic() + 60
            while not Path(f"/proc/{p.pid}/cmdline").read_bytes().startswith(b"deleted-sleep\0"):
                assert time.monotonic() < deadline and p.poll() is None, "the exec did not happen"
                time.sleep(0.05)
            capture.flush()
            recs = query_json(capture.db_dir, "--arg", tag, "--event", "exec")
            assert p.poll() is None, "the program ended before its exec was read back"
        finally:
            p.kill()
            p.wait()
        recs = [r for r in recs if r["argv"][0] == "deleted-sleep"]
        assert [(r["sha256"], r["hash_status"]) for r in recs] == [(want, "inode")]

    def test_the_kernel_names_the_file_that_ran(self, tmp_path):
        """The identity an exec record carries (device, inode, size, mtime, ctime of the file the
        kernel ran: for a #! script, its interpreter) is what stat says of that file; the
        device too, unless the file system is one whose stat reports another device than its
        superblock's (overlayfs: a VM guest's root; btrfs), which exehash.same_file leaves out."""
        from auditd_lite.capture import exehash, loader

        quick = copy_of("/bin/true", tmp_path)
        script = tmp_path / "script.sh"
        script.write_text(f"#!{quick}\n")
        script.chmod(0o755)
        with InProcess(loader.ProgramSettings()) as loaded:
            time.sleep(0.2)
            subprocess.run([quick, "direct"], check=True)
            subprocess.run([script, "via-script"], check=True)
            time.sleep(0.3)
        named: list = []
        rows = records.Decoder(128).decode_all(list(loaded.raw), named)
        by_argv = {rows[i][rows_fields.F_ARGV]: ident for i, ident in named}
        want = exehash.identity(os.stat(quick))
        fs = subprocess.run(["stat", "-f", "-c", "%T", str(quick)], capture_output=True, text=True,
                            check=True).stdout.strip()
        for argv in (f"{quick}\0direct", f"{quick}\0{script}\0via-script"):
            got = by_argv[argv.encode()]
            assert got[1:] == want[1:], argv
            assert got[0] == want[0] or fs in ("overlayfs", "btrfs"), (argv, fs, got[0], want[0])


def test_ten_thousand_execs_of_one_binary_cost_one_hash(daemon_factory, tmp_path):
    """10,000 execs of one binary, one after another, each process gone a moment later: each
    record carries its SHA-256 as the hash of the inode the kernel named (status inode, issue
    #21's >= 99%: here all of them), and the daemon read and hashed that file once (its debug
    log names each file it hashed by device and inode)."""
    path = copy_of("/bin/true", tmp_path)
    st = path.stat()
    d = daemon_factory("--log-level", "debug")
    for _ in range(10_000):
        pid = os.posix_spawn(str(path), [str(path)], os.environ)
        os.waitpid(pid, 0)
    d.stop()
    recs = sql(d.db_dir, f"SELECT sha256, hash_status, count(*) AS n FROM events WHERE event = 'exec' "
                         f"AND filename = '{path}' GROUP BY 1, 2")
    assert sum(r["n"] for r in recs) == 10_000, recs
    assert {r["sha256"] for r in recs} == {sha256_of(path)}, recs
    assert {r["hash_status"] for r in recs} == {"inode"}, recs
    hashed = [e for e in log_events(d.log, "executable_hashed") if (e["dev"], e["ino"]) == (st.st_dev, st.st_ino)]
    assert len(hashed) == 1, hashed
    [stopped] = log_events(d.log, "context_stopped")
    assert stopped["hash_cache_hits"] >= 9_999


def test_no_hash_records_status_off(daemon_factory, tmp_path):
    """With --no-hash no executable is read: hash_status off, no sha256, the cgroup still
    resolved."""
    path = copy_of("/bin/true", tmp_path)
    d = daemon_factory("--no-hash")
    subprocess.run([path], check=True)
    d.stop()
    [rec] = execs_of(d.db_dir, path)
    assert (rec["sha256"], rec["hash_status"]) == (None, "off")
    assert rec["cgroup_status"] == "resolved" and rec["cgroup"] is not None


@pytest.fixture
def v2_root() -> Path:
    mount = cgroups.cgroup2_mount()
    if mount is None:
        pytest.fail("no cgroup v2 hierarchy is mounted (every kernel we run has one)")
    return Path(mount.path)


@pytest.fixture
def made_cgroups(v2_root):
    """Makes cgroup directories under the v2 root; removes them (children first) after."""
    made: list[Path] = []

    def make(rel: str) -> Path:
        path = v2_root / rel
        path.mkdir(parents=True)
        made.append(path)
        return path

    yield make
    for path in sorted(made, key=lambda p: len(p.parts), reverse=True):
        for p in [path, *path.parents]:
            if p == v2_root or not p.exists():
                break
            try:
                p.rmdir()
            except OSError:
                break


def run_in(cg: Path, program: Path, *args: str) -> int:
    """``program`` exec'd by a shell that first moved itself into ``cg``: the exec happens in
    the cgroup. Returns the shell's pid (the exec keeps it)."""
    p = subprocess.Popen(["sh", "-c", 'echo $$ > "$0/cgroup.procs" && exec "$@"', str(cg), str(program), *args])
    assert p.wait() == 0
    return p.pid


class TestCgroup:
    def test_hand_made_cgroup_gives_its_path_and_unit(self, capture, tmp_path, made_cgroups, v2_root):
        """A process moved into <v2 root>/auditd-test-X.slice/run-X.scope before its exec is
        recorded with that cgroup path (relative to the v2 root, as /proc/PID/cgroup writes
        it), resolved, and unit run-X.scope; a short-lived one and one that lives 1 s."""
        tag = uuid.uuid4().hex[:10]
        cg = made_cgroups(f"auditd-test-{tag}.slice/run-{tag}.scope")
        quick, sleeper = copy_of("/bin/true", tmp_path), copy_of("/bin/sleep", tmp_path)
        run_in(cg, quick)
        run_in(cg, sleeper, "1")
        capture.flush()
        for program in (quick, sleeper):
            [rec] = execs_of(capture.db_dir, program)
            assert (rec["cgroup"], rec["cgroup_status"], rec["unit"], rec["container_id"]) == (
                f"/auditd-test-{tag}.slice/run-{tag}.scope", "resolved", f"run-{tag}.scope", None), rec
            assert rec["cgroup_id"] == cg.stat().st_ino

    def test_container_style_cgroup_gives_the_container_id(self, capture, tmp_path, made_cgroups):
        """A process in a cgroup named as Docker's systemd driver names one
        (docker-<64 hex>.scope) is recorded with that container id."""
        cid = uuid.uuid4().hex + uuid.uuid4().hex
        tag = uuid.uuid4().hex[:10]
        cg = made_cgroups(f"auditd-test-{tag}.slice/docker-{cid}.scope")
        program = copy_of("/bin/true", tmp_path)
        run_in(cg, program)
        capture.flush()
        [rec] = execs_of(capture.db_dir, program)
        assert (rec["container_id"], rec["unit"], rec["cgroup_status"]) == (cid, f"docker-{cid}.scope", "resolved")

    def test_failed_exec_has_the_cgroup_but_no_hash(self, capture, tmp_path, made_cgroups):
        """An exec that fails (ENOENT) ran no image: no hash, no hash status, but its cgroup."""
        tag = uuid.uuid4().hex[:10]
        cg = made_cgroups(f"auditd-test-{tag}.slice/fail-{tag}.scope")
        missing = tmp_path / ("missing-" + tag)
        p = subprocess.Popen(["sh", "-c", 'echo $$ > "$0/cgroup.procs"; exec "$1"', str(cg), str(missing)])
        assert p.wait() == 127
        capture.flush()
        [rec] = sql(capture.db_dir, f"SELECT * FROM events WHERE event = 'exec_failed' AND filename = '{missing}'")
        assert (rec["sha256"], rec["hash_status"]) == (None, None)
        assert (rec["cgroup"], rec["unit"]) == (f"/auditd-test-{tag}.slice/fail-{tag}.scope", f"fail-{tag}.scope")


def sleeping_in(cg: Path, sleeper: Path) -> subprocess.Popen:
    """``sleeper 600`` exec'd in ``cg`` by a shell that moved itself there, once its exec is done."""
    p = subprocess.Popen(["sh", "-c", 'echo $$ > "$0/cgroup.procs" && exec "$1" 600', str(cg), str(sleeper)])
    deadline = time.monotonic() + 10
    while os.readlink(f"/proc/{p.pid}/exe") != str(sleeper):
        assert time.monotonic() < deadline
        time.sleep(0.01)
    return p


def test_seen_at_start_has_the_same_context(daemon_factory, tmp_path, made_cgroups):
    """A process already running in a hand-made cgroup when the daemon starts is seeded with
    its executable's hash (from /proc/PID/exe: ok) and that cgroup's path and unit."""
    tag = uuid.uuid4().hex[:10]
    cg = made_cgroups(f"auditd-test-{tag}.slice/seen-{tag}.scope")
    sleeper = copy_of("/bin/sleep", tmp_path)
    p = sleeping_in(cg, sleeper)
    d = daemon_factory()
    d.stop()
    p.kill()
    p.wait()
    [seed] = sql(d.db_dir, f"SELECT * FROM seen_processes WHERE pid = {p.pid}")
    assert (seed["filename"], seed["sha256"], seed["hash_status"]) == (str(sleeper), sha256_of(sleeper), "ok")
    assert (seed["cgroup"], seed["cgroup_status"], seed["unit"]) == (
        f"/auditd-test-{tag}.slice/seen-{tag}.scope", "resolved", f"seen-{tag}.scope")


def test_a_cgroup_name_that_is_not_utf8_loses_nothing(daemon_factory, tmp_path, made_cgroups):
    """A process running in a cgroup whose directory name is not UTF-8 when the daemon starts,
    one exec'd in it after, and one exec'd elsewhere: all stored, none lost, no file set aside
    (a user with a delegated subtree names their own cgroups; SQLite cannot store the lone
    surrogates Python reads such a name as, and every record of the batch was lost), the
    path's bytes written as the records write text (\\xNN), as /proc/PID/cgroup names it."""
    tag = uuid.uuid4().hex[:10]
    rel = f"auditd-test-{tag}.slice/x\udcff{tag}.scope"  # the byte 0xff, os.fsdecode's way
    cg = made_cgroups(rel)
    sleeper, quick, elsewhere = (copy_of(p, tmp_path) for p in ("/bin/sleep", "/bin/true", "/bin/true"))
    seen = sleeping_in(cg, sleeper)
    d = daemon_factory()
    run_in(cg, quick)
    assert subprocess.run([str(elsewhere)]).returncode == 0
    d.stop()
    with open(f"/proc/{seen.pid}/cgroup", "rb") as f:  # the kernel's bytes for the path
        named = f.read().split(b"0::", 1)[1].split(b"\n", 1)[0]
    seen.kill()
    seen.wait()
    written = records.text(named)
    assert written == f"/auditd-test-{tag}.slice/x\\xff{tag}.scope"
    [rec] = execs_of(d.db_dir, quick)
    assert (rec["cgroup"], rec["cgroup_status"]) == (written, "resolved")
    assert len(execs_of(d.db_dir, elsewhere)) == 1
    [row] = sql(d.db_dir, f"SELECT * FROM seen_processes WHERE pid = {seen.pid}")
    assert (row["cgroup"], row["cgroup_status"]) == (written, "resolved")
    assert not log_events(d.log, "events_lost") and not log_events(d.log, "batch_not_written")
    assert len(list(d.db_dir.glob("*.damaged"))) == 0


def proc_cwd(pid: int) -> str:
    """/proc/PID/cwd as the records write text (bytes that are not UTF-8 escaped)."""
    return records.text(os.fsencode(os.readlink(f"/proc/{pid}/cwd")))


def run_from(cwd: Path | str | None, program: Path, setup: str = "") -> tuple[int, str]:
    """``program 1`` exec'd by a shell that ran ``setup`` and cd'ed to ``cwd`` (None: stays
    where ``setup`` left it); returns its pid
    and its /proc/PID/cwd read while it ran."""
    cd = 'cd "$0" && ' if cwd is not None else ""
    p = subprocess.Popen(["sh", "-c", f'{setup}{cd}exec "$1" 1', str(cwd), str(program)])
    deadline = time.monotonic() + 10
    while os.readlink(f"/proc/{p.pid}/exe") != str(program):
        assert time.monotonic() < deadline and p.poll() is None
        time.sleep(0.005)
    seen = proc_cwd(p.pid)
    assert p.wait() == 0
    return p.pid, seen


class TestCwd:
    def test_cwd_is_what_proc_said(self, capture, tmp_path):
        """Processes started from a directory with spaces and non-UTF-8 bytes in its name, one
        40 levels deep, and one deleted after `cd`: each exec record's cwd is what
        /proc/PID/cwd said while it ran (its " (deleted)" suffix as the status "deleted")."""
        sleeper = copy_of("/bin/sleep", tmp_path)
        odd = Path(os.fsdecode(bytes(tmp_path) + b"/with space \xff\xfe end"))
        odd.mkdir()
        deep = tmp_path.joinpath(*[f"d{i}" for i in range(40)])
        deep.mkdir(parents=True)
        gone = tmp_path / "gone"
        gone.mkdir()
        runs = [(run_from(odd, sleeper), "ok"), (run_from(deep, sleeper), "ok"),
                (run_from(None, sleeper, f'cd "{gone}" && rmdir "{gone}" && '), "deleted")]
        capture.flush()
        got = {r["pid"]: r for r in execs_of(capture.db_dir, sleeper)}
        for (pid, seen), status in runs:
            want = seen.removesuffix(" (deleted)")
            assert (got[pid]["cwd"], got[pid]["cwd_status"]) == (want, status), (seen, got[pid])
        assert got[runs[0][0][0]]["cwd"].endswith("/with space \\xff\\xfe end")
        assert runs[2][0][1].endswith(" (deleted)")

    def test_cwd_through_a_bind_mount(self, capture, tmp_path):
        """A process in a directory reached through a bind mount: the path through the mount
        point, as /proc/PID/cwd says, not the bound directory's own."""
        src, dst = tmp_path / "src", tmp_path / "dst"
        (src / "sub").mkdir(parents=True)
        dst.mkdir()
        subprocess.run(["mount", "--bind", str(src), str(dst)], check=True)
        try:
            pid, seen = run_from(dst / "sub", copy_of("/bin/sleep", tmp_path))
        finally:
            subprocess.run(["umount", str(dst)], check=True)
        assert seen == str(dst / "sub")
        capture.flush()
        [rec] = [r for r in sql(capture.db_dir, f"SELECT * FROM events WHERE event = 'exec' AND pid = {pid}")
                 if r["filename"].startswith(str(tmp_path))]
        assert (rec["cwd"], rec["cwd_status"]) == (seen, "ok")

    def test_cwd_too_deep_is_truncated_not_wrong(self, capture, tmp_path):
        """A directory 100 levels deep (more names than the walk takes): the innermost names
        that fitted, marked truncated, and a true suffix of the real path."""
        deep = tmp_path.joinpath(*[f"n{i}" for i in range(100)])
        deep.mkdir(parents=True)
        pid, seen = run_from(deep, copy_of("/bin/sleep", tmp_path))
        capture.flush()
        [rec] = sql(capture.db_dir, f"SELECT * FROM events WHERE event = 'exec' AND pid = {pid} "
                                    "AND cwd_status IS NOT NULL ORDER BY id DESC LIMIT 1")
        assert rec["cwd_status"] == "truncated"
        assert rec["cwd"].startswith(".../") and seen.endswith(rec["cwd"][3:]), (rec["cwd"], seen)
        assert rec["cwd"].endswith("/n98/n99")

    def test_chroot_and_other_mount_namespace_say_so(self, capture, tmp_path):
        """A process chroot'ed into a directory has the cwd it sees there, marked chroot; one in
        a mount namespace of its own (unshare -m) is marked other_ns."""
        root = tmp_path / "jail"
        (root / "work").mkdir(parents=True)
        program = Path("/bin") / ("j" + uuid.uuid4().hex[:10])
        jailed = root / program.relative_to("/")
        jailed.parent.mkdir(parents=True)
        shutil.copy("/bin/sleep", jailed)
        libs = re.findall(r"(/\S+) \(0x", subprocess.run(["ldd", "/bin/sleep"], capture_output=True,
                                                          text=True, check=True).stdout)
        for lib in libs:
            (root / lib.lstrip("/")).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(lib, root / lib.lstrip("/"))
        subprocess.run(["chroot", str(root), "sh", "-c", f"cd /work && exec {program} 0.2"]
                           if (root / "bin/sh").exists() else
                           ["chroot", "--userspec=0:0", str(root), str(program), "0.2"], check=True)
        sleeper = copy_of("/bin/sleep", tmp_path)
        u = subprocess.Popen(["unshare", "-m", "sh", "-c", f'cd "{tmp_path}" && exec "{sleeper}" 0.2'])
        assert u.wait() == 0
        capture.flush()
        [jail] = execs_of(capture.db_dir, program)
        assert (jail["cwd"], jail["cwd_status"]) == ("/", "chroot"), jail
        [other] = execs_of(capture.db_dir, sleeper)
        assert (other["cwd"], other["cwd_status"]) == (str(tmp_path), "other_ns"), other
