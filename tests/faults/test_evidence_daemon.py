"""Issue #23 with the real daemon: every row under the chain and the seals (real edits with the
sqlite3 command, as root), the same answers whatever the rotation or a set-aside file, and a
retention default that keeps a small disk from filling while capture goes on."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from conftest import Daemon, Storm, log_events, query_json, run_cli, tmpfs
from faults.test_storm_faults import wait_until
from test_hunt import Follow

pytestmark = pytest.mark.kernel


def sql(path: Path, *statements: str) -> None:
    """An edit with the sqlite3 command on the file itself, as root would make it."""
    os.chmod(path, 0o640)
    p = subprocess.run(["sqlite3", "-cmd", ".timeout 5000", str(path)], input=";\n".join(statements) + ";\n",
                       text=True, capture_output=True)
    assert p.returncode == 0 and not p.stderr, p.stderr


def verify(db: Path, *flags) -> tuple[int, list[str], str]:
    p = run_cli("verify", "--db-dir", db, *flags)
    assert "Traceback" not in p.stderr.decode()
    return p.returncode, p.stdout.decode().splitlines(), p.stderr.decode()


def one(db: Path, sql_text: str, *args):
    con = sqlite3.connect(f"file:{db / 'audit.db'}?mode=ro", uri=True)
    try:
        return con.execute(sql_text, args).fetchone()
    finally:
        con.close()


# --- every row under the chain and the seals --------------------------------------------------

@pytest.fixture(scope="module")
def sealed_dir(tmp_path_factory):
    """What the real daemon wrote, sealed (epochs of an hour: its start seal, its stop seal),
    with this test process among those it found running at start: (db, key text)."""
    root = tmp_path_factory.mktemp("sealed")
    key = run_cli("seal", "setup", "--seal-state", root / "seal", "--interval", "1h", check=0).stdout.decode().strip()
    d = Daemon(root / "db", root / "daemon.log", "--seal-state", root / "seal").start()
    wait_until(lambda: log_events(d.log, "processes_seeded"), 60, "the processes running at start")
    subprocess.run(["/bin/true"])
    d.stop()
    return root / "db", key


def edits(db: Path) -> dict:
    """Issue #23's edits, each (statement, lines verify must print), for the directory ``db``."""
    me = os.getpid()
    mine = one(db, "SELECT id FROM seen_processes WHERE pid = ?", me)[0]
    init, count, batch = one(db, "SELECT (SELECT id FROM seen_processes WHERE pid = 1), count(*), max(batch_id) "
                                 "FROM seen_processes")
    return {
        "seen edited": (f"UPDATE seen_processes SET comm = 'innocent', argv = NULL WHERE pid = {me}",
                        [f"seen_processes row {mine} (pid {me}, run 1) differs from what this batch recorded: edited"]),
        "run edited": ("UPDATE runs SET host = 'elsewhere', lost_kernel = 0, stopped_ns = stopped_ns + 3600e9",
                       ["runs row of run 1: host is 'elsewhere', recorded as ", "runs row of run 1: stopped_ns is "]),
        "seen deleted": ("DELETE FROM seen_processes WHERE pid = 1",
                         [f"seen_processes row {init} (run 1), which this batch recorded, is missing: deleted"]),
        "seen inserted": ("INSERT INTO seen_processes (run_id, time_ns, pid, ppid, uid, comm, start_ns, start_tick_ns, "
                          f"batch_id) VALUES (1, 1, 999999, 1, 0, 'miner', 5, 10000000, {batch})",
                          [f"seen_processes row {count + 1} (pid 999999, run 1) is in no batch's record: put in afterwards"]),
        "stop edited": ("UPDATE runs SET stopped_ns = stopped_ns - 3600e9", ["runs row of run 1: stopped_ns is "]),
    }


@pytest.mark.parametrize("name", ["seen edited", "run edited", "seen deleted", "seen inserted", "stop edited"])
def test_edits_of_what_the_daemon_wrote_are_found_with_and_without_the_key(sealed_dir, tmp_path, name):
    """Each edit of issue #23, made with sqlite3 on what the real daemon wrote: verify fails with
    and without the key, naming the table, the row and the run; the edit forged to match (the
    chain's evidence and hashes recomputed) passes without the key and fails with it."""
    from test_evidence import forge

    src, key = sealed_dir
    db = tmp_path / "db"
    shutil.copytree(src, db)
    statement, wanted = edits(db)[name]
    sql(db / "audit.db", statement)
    for flags in ((), ("--verify-key", key)):
        status, lines, err = verify(db, *flags)
        assert status == 1, (flags, lines, err)
        for want in wanted:
            assert any(want in line for line in lines), (flags, want, lines)
    forge(db)
    assert verify(db)[0] == 0
    status, lines, _ = verify(db, "--verify-key", key)
    assert status == 1 and any("is not what epoch" in line for line in lines), lines


def test_edits_in_the_open_epoch_of_the_running_daemon_are_not_yet_sealed(tmp_path):
    """While the real daemon runs (an hour's epoch, so that all after its start seal is open):
    a seen process edited, one deleted, capture's start moved and a stop time given to the
    running run, with sqlite3. verify finds each, and with the key says each NOT YET SEALED;
    once the daemon has stopped (its stop seal over them) they are still found, but for the stop
    time, which the real stop wrote over."""
    key = run_cli("seal", "setup", "--seal-state", tmp_path / "seal", "--interval", "1h", check=0).stdout.decode().strip()
    d = Daemon(tmp_path / "db", tmp_path / "daemon.log", "--seal-state", tmp_path / "seal").start()
    try:
        wait_until(lambda: log_events(d.log, "processes_seeded"), 60, "the processes running at start")
        me = os.getpid()
        sql(d.db_dir / "audit.db", f"UPDATE seen_processes SET comm = 'innocent' WHERE pid = {me}",
            "DELETE FROM seen_processes WHERE pid = 1",
            "UPDATE runs SET attached_ns = attached_ns - 600e9, stopped_ns = attached_ns + 1e9")
        for flags in ((), ("--verify-key", key)):
            status, lines, err = verify(d.db_dir, *flags)
            found = [line for line in lines if "seen_processes row" in line or "runs row of run 1" in line]
            assert status == 1 and len(found) == 4, "\n".join(lines)
            assert all(line.endswith("; NOT YET SEALED (after the last seal)") == bool(flags) for line in found), lines
    finally:
        d.stop()
    status, lines, _ = verify(d.db_dir, "--verify-key", key)
    found = [line for line in lines if "seen_processes row" in line or "runs row of run 1" in line]
    assert status == 1 and len(found) == 3 and not any("NOT YET SEALED" in line for line in lines), lines
    assert not any("stopped_ns" in line for line in found)


# --- the same answers whatever the rotation, and from a set-aside file -------------------------

@pytest.fixture
def sleeper(tmp_path):
    """A copy of /bin/sleep under a unique name: its path and comm name our process."""
    path = tmp_path / ("s" + uuid.uuid4().hex[:10])
    shutil.copy("/bin/sleep", path)
    path.chmod(0o755)
    tmp_path.chmod(0o755)
    return path


def holders(db: Path, pid: int) -> dict:
    """Which file holds the exec and which the exit of ``pid``."""
    found = {}
    for f in db.iterdir():
        if not (f.name.endswith(".db") or f.name.endswith(".db.damaged")):
            continue
        try:
            con = sqlite3.connect(f"file:{f}?mode=ro", uri=True)
        except sqlite3.OperationalError:
            continue  # the live file, renamed by a rotation between the listing and the open
        try:
            for (event,) in con.execute("SELECT event FROM events WHERE pid = ? AND event IN ('exec', 'exit')",
                                        (pid,)):
                found[event] = f.name
        except sqlite3.OperationalError:
            pass  # a new live file a rotation is making: no tables yet
        finally:
            con.close()
    return found


SLEEPER_RULE = ("title: the sleeper\nid: 55555555-5555-4555-8555-555555555555\nstatus: test\n"
                "author: tests\nlogsource:\n    product: linux\n    category: process_creation\n"
                "detection:\n    s:\n        Image: '{image}'\n    condition: s\nlevel: high\n")


def every_reader_sees_it(db: Path, sleeper: Path, pid: int, tmp_path: Path, set_aside: bool, seconds: str) -> None:
    """query (by the exec's filename, working directory and unit, through to the exit), tree,
    export (SQLite, which verifies, and OCSF lines), gaps and stats all give the process its
    exec and its exit; hunt and hunt --follow --since find its exec; each names a set-aside
    file it read."""
    name = str(sleeper)

    def q(*flags):
        p = run_cli("query", "--db-dir", db, "--format", "json", *flags)
        assert p.returncode == 0, p.stderr.decode()
        return [json.loads(line) for line in p.stdout.decode().splitlines()], p.stderr.decode()

    recs, err = q("--filename", name)
    assert sorted((r["event"], r["pid"]) for r in recs) == [("exec", pid), ("exit", pid)], recs
    exit_rec = next(r for r in recs if r["event"] == "exit")
    assert exit_rec["exec_filename"] == name and exit_rec["exec_argv"] == [name, seconds]
    assert ("set aside" in err) == set_aside, err
    cwd = next(r for r in recs if r["event"] == "exec")["cwd"]
    assert [r["event"] for r in q("--cwd", cwd, "--pid", str(pid))[0]] == ["exit", "exec"]
    assert [r["event"] for r in q("--arg", seconds, "--pid", str(pid), "--event", "exit")[0]] == ["exit"]

    p = run_cli("tree", str(pid), "--db-dir", db, "--format", "json")
    assert p.returncode == 0, p.stderr.decode()
    node = json.loads(p.stdout)["tree"]
    while not node["target"]:
        node = node["children"][0]
    assert [e["filename"] for e in node["execs"]] == [name] and node["exit"] is not None
    assert ("set aside" in p.stderr.decode()) == set_aside

    out = tmp_path / f"case-{uuid.uuid4().hex[:6]}.db"
    p = run_cli("export", "--db-dir", db, "--filename", name, "-o", out)
    assert p.returncode == 0, p.stderr.decode()
    con = sqlite3.connect(out)
    assert sorted(r[0] for r in con.execute("SELECT event FROM events")) == ["exec", "exit"]
    con.close()
    assert run_cli("verify", out).returncode == 0
    lines = tmp_path / f"case-{uuid.uuid4().hex[:6]}.jsonl"
    p = run_cli("export", "--db-dir", db, "--filename", name, "--format", "ocsf", "-o", lines)
    assert p.returncode == 0 and len(lines.read_text().splitlines()) == 2, p.stderr.decode()

    gaps = run_cli("gaps", "--db-dir", db, "--format", "json").stdout.decode().splitlines()
    assert not [g for g in map(json.loads, gaps) if g["kind"] == "missing_records"], gaps
    stats = json.loads(run_cli("stats", "--db-dir", db, "--format", "json").stdout)
    counted = sum(f["events"] for f in stats["files"])
    listed = sum(json.loads(run_cli("sql", "--db-dir", db, "--format", "json",
                                    "SELECT count(*) AS n FROM events").stdout)["n"] for _ in [0])
    assert counted == listed
    assert any(f["set_aside"] for f in stats["files"]) == set_aside

    rule = tmp_path / f"sleeper-{uuid.uuid4().hex[:6]}.yml"
    rule.write_text(SLEEPER_RULE.format(image=name))
    p = run_cli("hunt", "--db-dir", db, "--rules", rule, "--no-bundled", "--format", "json")
    assert p.returncode == 0, p.stderr.decode()
    found = [json.loads(line) for line in p.stdout.decode().splitlines()][:-1]
    assert [f["process"]["pid"] for f in found] == [pid], found
    assert found[0]["record"]["file"].endswith(".db.damaged") == set_aside
    assert ("set aside" in p.stderr.decode()) == set_aside, p.stderr.decode()
    follow = Follow(tmp_path, "--db-dir", db, "--rules", rule, "--no-bundled", "--since", "1h")
    try:
        live = follow.stop()
    finally:
        follow.kill()
    assert [(f["process"]["pid"], f["record"]) for f in live] == [(pid, found[0]["record"])], live


def test_exec_and_exit_on_both_sides_of_a_rotation(tmp_path, sleeper):
    """A process whose exec is in one file and whose exit is in the next (the daemon rotating
    every second): every reading command gives it both."""
    d = Daemon(tmp_path / "db", tmp_path / "daemon.log", "--rotate-interval", "1s").start()
    proc = subprocess.Popen([str(sleeper), "3"])
    wait_until(lambda: "exec" in holders(d.db_dir, proc.pid) and holders(d.db_dir, proc.pid)["exec"] != "audit.db",
               60, "the file holding the exec to rotate")
    proc.wait()
    subprocess.run(["/bin/true"])
    wait_until(lambda: "exit" in holders(d.db_dir, proc.pid), 60, "the exit")
    d.stop()
    where = holders(d.db_dir, proc.pid)
    assert where["exec"] != where["exit"], where
    every_reader_sees_it(d.db_dir, sleeper, proc.pid, tmp_path, set_aside=False, seconds="3")
    assert verify(d.db_dir)[0] == 0


def test_exec_in_a_set_aside_file_exit_in_the_live_one(tmp_path, sleeper):
    """A process whose exec went into a file the next daemon set aside (it refused the run's row:
    a planted trigger) and whose exit is in the new live file: every reading command gives it
    both, and says it read a set-aside file; verify checks the set-aside file with the others."""
    db = tmp_path / "db"
    first = Daemon(db, tmp_path / "a.log").start()
    proc = subprocess.Popen([str(sleeper), "20"])  # until the second daemon runs
    wait_until(lambda: "exec" in holders(db, proc.pid), 60, "the exec")
    first.stop()
    sql(db / "audit.db", "CREATE TRIGGER planted BEFORE INSERT ON runs BEGIN SELECT RAISE(ABORT, 'planted'); END")
    second = Daemon(db, tmp_path / "b.log").start()
    assert log_events(second.log, "live_database_set_aside")
    proc.wait()
    subprocess.run(["/bin/true"])
    wait_until(lambda: "exit" in holders(db, proc.pid), 60, "the exit")
    second.stop()
    where = holders(db, proc.pid)
    assert where["exec"].endswith(".db.damaged") and where["exit"] == "audit.db", where
    every_reader_sees_it(db, sleeper, proc.pid, tmp_path, set_aside=True, seconds="20")
    status, lines, err = verify(db)
    assert status == 0 and "a live file the writer set aside" in err, lines


# --- a default that cannot fill the disk -----------------------------------------------------

@pytest.fixture
def small_disk(tmp_path):
    with tmpfs(tmp_path / "small", "64m") as mnt:
        yield mnt


def dir_bytes(db: Path) -> int:
    total = 0
    for f in db.iterdir():
        if f.name != "audit.lock":
            try:
                total += f.stat().st_size
            except FileNotFoundError:
                pass
    return total


def test_storm_on_a_small_disk_keeps_capturing_under_the_cap(tmp_path, small_disk, marker):
    """The shipped default (no retention flag) on a 64 MiB tmpfs, under a storm that writes more
    than the file system holds: the oldest rotated files go, each logged and recorded; the
    directory never passes the cap (10% of the file system); nothing is lost and every process
    of the storm since the oldest record left is recorded; verify passes, telling the retention
    cut at the chain's start; gaps shows what was removed; a file then removed by hand is found."""
    st = os.statvfs(small_disk)
    cap = min(st.f_blocks * st.f_frsize // 10, 4096 * 1024 * 1024)
    d = Daemon(small_disk / "db", tmp_path / "daemon.log").start()
    samples = []
    with Storm(marker) as storm:
        deadline = time.monotonic() + 600

        def overflowed():
            samples.append(dir_bytes(d.db_dir))
            removed = sum(e["size"] for e in log_events(d.log, "retention_removed"))
            return removed + samples[-1] > st.f_blocks * st.f_frsize

        wait_until(overflowed, deadline - time.monotonic(), "the storm to write more than the disk holds")
    time.sleep(0.3)
    d.stop()
    assert max(samples) <= cap, (max(samples), cap)
    removed = log_events(d.log, "retention_removed")
    assert removed and all(e["reason"] == "max_size" and e["recorded"] for e in removed)
    assert not log_events(d.log, "disk_full") and not log_events(d.log, "events_lost")
    # every child spawned after the oldest record left, with its exec and its exit
    first = min(r["time_ns"] for r in query_json(d.db_dir, "--comm", marker.name[:15], "--event", "exit"))
    spawned = {pid for pid, t0, _ in storm.children if t0 > first}
    execs = {r["pid"] for r in query_json(d.db_dir, "--filename", str(marker), "--event", "exec")}
    exits = {r["pid"] for r in query_json(d.db_dir, "--comm", marker.name[:15], "--event", "exit")}
    assert spawned <= execs and spawned <= exits, (len(spawned - execs), len(spawned - exits))
    status, lines, err = verify(d.db_dir)
    assert status == 0 and "were removed by retention (recorded: " in err, (lines, err)
    gaps = [json.loads(x) for x in run_cli("gaps", "--db-dir", d.db_dir, "--format", "json").stdout.decode().splitlines()]
    assert len([g for g in gaps if g["kind"] == "removed_by_retention"]) == len(removed)
    rotated = sorted(p for p in d.db_dir.glob("audit-*.db"))
    rotated[len(rotated) // 2].unlink()
    status, lines, _ = verify(d.db_dir)
    assert status == 1 and any("removed by someone else" in line for line in lines), lines
