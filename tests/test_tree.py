"""`auditd-lite tree`: ancestry, descendants and pid reuse, over files written by the real BatchWriter."""

from __future__ import annotations

import calendar
import contextlib
import hashlib
import io
import json
import sqlite3
from pathlib import Path

import pytest

from auditd_lite import cli
from auditd_lite.rows import CONTEXT_FIELDS
from auditd_lite.storage.rotation import RotationPolicy
from auditd_lite.storage.batchwriter import BatchWriter

from conftest import cli_in_process
from test_query import DOCKER, DOCKER_ID, SESSION, context

SEC = 10**9
MS = 10**6
BOOT_A_WALL = calendar.timegm((2026, 11, 20, 0, 0, 0)) * SEC  # boot A: monotonic 0 at midnight
BOOT_B_WALL = calendar.timegm((2026, 11, 20, 11, 59, 0)) * SEC


def at(hour, minute, second=0, ms=0):
    return (calendar.timegm((2026, 11, 20, hour, minute, second)) * 1000 + ms) * MS


CRON = dict(cgroup="/system.slice/cron.service", cgroup_status="resolved", unit="cron.service")
ROOT_CGROUP = dict(cgroup="/", cgroup_status="resolved")


def sha(name: str) -> str:
    return hashlib.sha256(name.encode()).hexdigest()


def named(ctx: tuple) -> dict:
    return dict(zip(CONTEXT_FIELDS, ctx))


class Proc:
    """Records of one simulated process, in rows.ROW_FIELDS order, in cgroup ``cgroup``."""

    def __init__(self, pid, ppid, fork_ns, comm, boot_wall=BOOT_A_WALL, uid=1000, cgroup=CRON,
                 parent=None):
        """``parent``: the parent's Proc, whose start the records carry (rows.GATE_FIELDS); else
        the parent is pid 1 of the boot, started at its beginning."""
        self.pid, self.ppid, self.fork, self.comm, self.uid = pid, ppid, fork_ns, comm, uid
        self.start = fork_ns - boot_wall
        self.cgroup = cgroup
        self.parent_start = parent.start if parent is not None else 0

    def exec(self, t, filename, argv, comm=None):
        raw = b"\0".join(a.encode() if isinstance(a, str) else a for a in argv)
        self.comm = comm or self.comm
        return ("exec", t, self.pid, self.pid, self.ppid, self.uid, self.uid, self.comm, self.start,
                self.pid, self.uid, self.uid, 3, 7, filename, raw, len(argv), 0, None,
                None, None, None, None, None) + context(sha256=sha(filename), hash_status="ok", **self.cgroup
                                                        ) + ("x64", self.parent_start)

    def failed(self, t, filename, argv, errno=2):
        raw = b"\0".join(a.encode() for a in argv)
        return ("exec_failed", t, self.pid, self.pid, self.ppid, self.uid, self.uid, self.comm, self.start,
                self.pid, self.uid, self.uid, 3, 7, filename, raw, len(argv), 0, errno,
                None, None, None, None, None) + context(**self.cgroup) + ("x64", self.parent_start)

    def exit(self, t, code=0, sig=0, core=False):
        status = (code << 8) | sig | (0x80 if core else 0)
        return ("exit", t, self.pid, self.pid, self.ppid, self.uid, self.uid, self.comm, self.start,
                None, None, None, None, None, None, None, None, None, None,
                status, code, sig, int(core), t - self.fork) + context() + (None, self.parent_start)


def seed_context(filename, cgroup, unit):
    return {"sha256": sha(filename), "hash_status": "ok", "cgroup": cgroup, "cgroup_status": "resolved",
            "unit": unit, "container_id": None}


def seeds():
    tick = 10 * MS
    return [
        {"pid": 1, "ppid": 0, "uid": 0, "comm": "systemd", "filename": "/usr/lib/systemd/systemd",
         "argv": b"/sbin/init", "start_ns": 100 * MS, "start_tick_ns": tick,
         **seed_context("/usr/lib/systemd/systemd", "/init.scope", "init.scope")},
        {"pid": 700, "ppid": 1, "uid": 0, "comm": "sshd", "filename": "/usr/sbin/sshd",
         "argv": b"sshd: /usr/sbin/sshd -D [listener]", "start_ns": at(9, 0) - BOOT_A_WALL,
         "start_tick_ns": tick, **seed_context("/usr/sbin/sshd", "/system.slice/ssh.service", "ssh.service")},
    ]


def history_rows():
    """Boot A: sshd -> bash 1000 -> {ls 1001, sh 1002 -> subshell 1003, cat 1001 (pid reused)};
    all in the login session's scope but cat, which runs in a docker container's."""
    bash = Proc(1000, 700, at(10, 0), "sshd", cgroup=SESSION)
    ls = Proc(1001, 1000, at(10, 1), "bash", cgroup=SESSION, parent=bash)
    sh = Proc(1002, 1000, at(10, 2), "bash", cgroup=SESSION, parent=bash)
    sub = Proc(1003, 1002, at(10, 3), "sh", cgroup=SESSION, parent=sh)
    cat = Proc(1001, 1000, at(10, 10), "bash", cgroup=DOCKER, parent=bash)
    rows = [
        bash.exec(at(10, 0, 0, 1), "/bin/bash", ["-bash"], comm="bash"),
        ls.failed(at(10, 1, 0, 1), "/usr/local/bin/ls", ["ls", "-la", "my dir"]),
        ls.exec(at(10, 1, 0, 2), "/usr/bin/ls", ["ls", "-la", "my dir"], comm="ls"),
        ls.exit(at(10, 1, 0, 500)),
        sh.exec(at(10, 2, 0, 1), "/bin/sh", ["sh", "-c", "sleep 1000"], comm="sh"),
        sub.exit(at(10, 3, 1), code=3),
        sh.exit(at(10, 5), sig=9),
        cat.exec(at(10, 10, 0, 1), "/usr/bin/cat", ["cat", "\x1b[31mred"], comm="cat"),
        cat.exit(at(10, 10, 2), code=1),
        bash.exit(at(11, 0)),
    ]
    return rows


def write_history(db: Path, rotation=None, one_batch_per_row=False) -> Path:
    """Run 1 (boot A) with the rows above; run 2 (boot B) where pid 1000 is python3, still running."""
    kw = {"rotation": rotation} if rotation is not None else {}
    bw = BatchWriter(db, {"keep": 0}, **kw)
    bw.open()
    bw.write_seeds(seeds())
    rows = history_rows()
    if one_batch_per_row:
        for r in rows:
            bw.write([r])
    else:
        bw.write(rows)
    bw.close(clean=True)
    bw = BatchWriter(db, {"keep": 0}, **kw)
    bw.open()
    py = Proc(1000, 1, at(12, 0), "bash", boot_wall=BOOT_B_WALL, cgroup=ROOT_CGROUP)
    bw.write([py.exec(at(12, 0, 0, 1), "/usr/bin/python3", ["python3"], comm="python3")])
    bw.close(clean=True)
    # the runs' boot ids and times, as the records were written (run records are not hashed):
    # run 1 09:30-11:30 in boot A, run 2 from 11:59:30 in boot B, stopped at 12:30
    for path in db.glob("*.db"):
        path.chmod(0o640)
        conn = sqlite3.connect(path)
        conn.execute("UPDATE runs SET boot_id = CASE id WHEN 1 THEN 'boot-a' ELSE 'boot-b' END, "
                     "started_ns = CASE id WHEN 1 THEN ? ELSE ? END, attached_ns = NULL, "
                     "stopped_ns = CASE WHEN stopped_ns IS NULL THEN NULL WHEN id = 1 THEN ? ELSE ? END",
                     (at(9, 30), at(11, 59, 30), at(11, 30), at(12, 30)))
        conn.commit()
        conn.close()
    return db


@pytest.fixture(scope="module")
def db(tmp_path_factory) -> Path:
    return write_history(tmp_path_factory.mktemp("tree") / "db")


def run_tree(*argv, encoding="utf-8"):
    raw = io.BytesIO()
    out = io.TextIOWrapper(raw, encoding=encoding, errors="strict", newline="")
    err = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = cli.main(["tree", *map(str, argv)])
    out.flush()
    return status, raw.getvalue().decode(encoding), err.getvalue()


def test_tree_draws_ancestry_and_descendants(db):
    """The ancestry from pid 1 (seen at start) down to the target, then its subtree, one line
    each; after the command, the unit it ran in (of the processes seen at start: the unit they
    were found in), none for a process with no exec recorded."""
    status, out, err = run_tree(1002, "--db-dir", db)
    assert status == 0, err
    assert out.splitlines() == [
        "pid 1002, boot boot-a, started 2026-11-20T10:02:00.000Z",
        "1 systemd /sbin/init [running when a daemon started] [init.scope] "
        "[2026-11-20T00:00:00.100Z no exit recorded]",
        "└─ 700 sshd 'sshd: /usr/sbin/sshd -D [listener]' [running when a daemon started] [ssh.service] "
        "[2026-11-20T09:00:00.000Z no exit recorded]",
        "   └─ 1000 bash /bin/bash -bash [session-3.scope] [2026-11-20T10:00:00.000Z +1h00m exit 0]",
        "      └─ 1002 sh /bin/sh sh -c 'sleep 1000' [session-3.scope] [2026-11-20T10:02:00.000Z +3m00s "
        "killed by signal 9 (SIGKILL)]  ◀ target",
        "         └─ 1003 sh (no exec recorded) [2026-11-20T10:03:00.000Z +1.0s exit 3]",
    ]
    assert err == ""


def test_descendants_include_reused_pids_as_separate_processes(db):
    """bash 1000 had two children with pid 1001 (ls, then cat): both are shown, in fork order,
    cat with its container (12 characters of the id) rather than its scope unit."""
    status, out, err = run_tree(1000, "--db-dir", db, "--at", "2026-11-20T10:30Z")
    assert status == 0, err
    lines = out.splitlines()
    assert lines[3] == ("   └─ 1000 bash /bin/bash -bash [session-3.scope] [2026-11-20T10:00:00.000Z +1h00m "
                        "exit 0]  ◀ target")
    assert lines[4:] == [
        "      ├─ 1001 ls /usr/bin/ls ls -la 'my dir' [session-3.scope] (1 failed exec: /usr/local/bin/ls "
        "ENOENT) [2026-11-20T10:01:00.000Z +500ms exit 0]",
        "      ├─ 1002 sh /bin/sh sh -c 'sleep 1000' [session-3.scope] [2026-11-20T10:02:00.000Z +3m00s "
        "killed by signal 9 (SIGKILL)]",
        "      │  └─ 1003 sh (no exec recorded) [2026-11-20T10:03:00.000Z +1.0s exit 3]",
        "      └─ 1001 cat /usr/bin/cat cat $'\\x1b[31mred' [container 3f4e5d6c7b8a] [2026-11-20T10:10:00.000Z "
        "+2.0s exit 1]",
    ]


def test_at_picks_the_process_alive_at_that_time(db):
    """pid 1001 was ls at 10:01 and cat at 10:10; without --at the latest is shown, with a note."""
    status, out, err = run_tree(1001, "--db-dir", db, "--at", "2026-11-20T10:01:00.200Z", "--format", "json")
    assert status == 0
    doc = json.loads(out)
    assert doc["target"] == {"pid": 1001, "boot_id": "boot-a", "start_ns": at(10, 1) - BOOT_A_WALL}
    status, out, err = run_tree(1001, "--db-dir", db, "--format", "json")
    assert json.loads(out)["target"]["start_ns"] == at(10, 10) - BOOT_A_WALL
    assert err == ("auditd-lite: note: pid 1001 was used by 2 processes; showing the latest "
                   "(started 2026-11-20T10:10:00.000Z); use --at to pick another\n")


def test_pid_reused_across_boots(db):
    """pid 1000 in boot B is another process: the latest, with no recorded parent in that boot."""
    status, out, err = run_tree(1000, "--db-dir", db)
    assert status == 0
    assert out.splitlines() == [
        "pid 1000, boot boot-b, started 2026-11-20T12:00:00.001Z",
        "(parent pid 1 of 1000 was not recorded: ancestry starts here)",
        "1000 python3 /usr/bin/python3 python3 [2026-11-20T12:00:00.001Z no exit recorded]  ◀ target",
    ]
    # no exit and no daemon since 12:30: the answer may be incomplete, and says so
    assert err == ("auditd-lite: note: pid 1000 was used by 2 processes; showing the latest (started "
                   "2026-11-20T12:00:00.001Z); use --at to pick another\n"
                   "auditd-lite: warning: coverage gap 2026-11-20T12:30:00.000000Z .. now: no daemon "
                   "running: run 2 stopped, nothing recorded until now\n")


def test_json_is_the_whole_nested_tree(db):
    """--format json: one object with the target, flags and the nested processes with their records."""
    status, out, err = run_tree(1002, "--db-dir", db, "--format", "json")
    assert status == 0 and len(out.splitlines()) == 1
    doc = json.loads(out)
    assert (doc["incarnations"], doc["complete_ancestry"], doc["truncated"], doc["processes"]) == (1, True, False, 5)
    chain, node = [], doc["tree"]
    while True:
        chain.append((node["pid"], node["comm"], node["seen_at_start"], node["target"]))
        if not node["children"]:
            break
        node = node["children"][0]
    assert chain == [(1, "systemd", True, False), (700, "sshd", True, False), (1000, "bash", False, False),
                     (1002, "sh", False, True), (1003, "sh", False, False)]
    sh = doc["tree"]["children"][0]["children"][0]["children"][0]
    assert sh["execs"] == [{"time": "2026-11-20T10:02:00.001000Z", "time_ns": at(10, 2, 0, 1),
                            "filename": "/bin/sh", "argv": ["sh", "-c", "sleep 1000"],
                            **named(context(sha256=sha("/bin/sh"), hash_status="ok", **SESSION))}]
    assert sh["exit"] == {"time": "2026-11-20T10:05:00.000000Z", "time_ns": at(10, 5), "exit_code": 0,
                          "signal": 9, "core_dumped": False, "duration_ns": 180 * SEC}
    assert sh["start"] == "2026-11-20T10:02:00.000000Z" and sh["ppid"] == 1000
    sub = sh["children"][0]
    assert (sub["pid"], sub["execs"], sub["exit"]["exit_code"]) == (1003, [], 3)


def test_failed_execs_are_listed_with_errno(db):
    """The ls process carries its failed PATH lookup with errno and its name."""
    status, out, _ = run_tree(1001, "--db-dir", db, "--at", "2026-11-20T10:01:00.200Z", "--format", "json")
    node = json.loads(out)["tree"]
    while not node["target"]:
        node = node["children"][0]
    assert node["failed_execs"] == [{"time": "2026-11-20T10:01:00.001000Z", "time_ns": at(10, 1, 0, 1),
                                     "filename": "/usr/local/bin/ls", "argv": ["ls", "-la", "my dir"],
                                     "errno": 2, "errno_name": "ENOENT", **named(context(**SESSION))}]


def test_depth_limits_descendants(db):
    """--depth 1 shows children but not grandchildren; --depth 0 only the ancestry."""
    status, out, _ = run_tree(1000, "--db-dir", db, "--at", "2026-11-20T10:30Z", "--depth", "1")
    assert [line.split()[1] for line in out.splitlines()[4:]] == ["1001", "1002", "1001"]
    status, out, _ = run_tree(1000, "--db-dir", db, "--at", "2026-11-20T10:30Z", "--depth", "0")
    assert len(out.splitlines()) == 4


@pytest.mark.parametrize("argv, status, message", [
    ([4242], 1, "auditd-lite: pid 4242 was never recorded\n"),
    ([1001, "--at", "2026-11-20T10:05Z"], 1,
     "auditd-lite: pid 1001 was not running at 2026-11-20T10:05:00.000000Z: recorded for 2 process(es), "
     "started between 2026-11-20T10:01:00.000Z and 2026-11-20T10:10:00.000Z\n"),
    ([1001, "--at", "yesterday-ish"], 2,
     "auditd-lite: bad time 'yesterday-ish': use ISO 8601 (2026-11-20T10:00) or an age like 10m, 2h, 3d\n"),
    (["12x"], 2, "auditd-lite: argument PID: not a whole number: '12x' (see 'auditd-lite tree --help')\n"),
])
def test_not_found_and_bad_input(db, argv, status, message):
    """A pid never seen or not alive then is exit 1; bad numbers and times exit 2; one line each."""
    got, out, err = run_tree(*argv, "--db-dir", db)
    assert (got, out, err) == (status, "", message)


def test_ascii_terminal_gets_ascii_drawing(db):
    """Where stdout cannot encode box drawing, the tree uses |- and `- instead."""
    status, out, _ = run_tree(1002, "--db-dir", db, encoding="ascii")
    assert status == 0
    assert out.splitlines()[3] == ("   `- 1000 bash /bin/bash -bash [session-3.scope] [2026-11-20T10:00:00.000Z "
                                   "+1h00m exit 0]")
    assert out.splitlines()[4].endswith("  <== target")


def test_tree_across_rotated_files(tmp_path):
    """With a rotation after every batch, records of one tree spread over many files still join."""
    db = write_history(tmp_path / "db", rotation=RotationPolicy(size_mb=0.001), one_batch_per_row=True)
    assert len(list(db.glob("audit-*.db"))) >= 8
    status, out, err = run_tree(1000, "--db-dir", db, "--at", "2026-11-20T10:30Z", "--format", "json")
    assert status == 0, err
    kids = json.loads(out)["tree"]["children"][0]["children"][0]["children"]
    assert [(k["pid"], k["comm"], k["exit"]["exit_code"]) for k in kids] == [
        (1001, "ls", 0), (1002, "sh", 0), (1001, "cat", 1)]
    assert kids[1]["children"][0]["pid"] == 1003


def test_tree_on_an_export(db, tmp_path):
    """tree --db works on an export made of the window, on the records it holds."""
    out = tmp_path / "case.db"
    status, _, err = cli_in_process("export", "--db-dir", db, "--since", "2026-11-20T09:00Z", "--until",
                          "2026-11-20T11:30Z", "-o", out)
    assert status == 0, err
    status, text, err = run_tree(1002, "--db", out)
    assert status == 0, err
    assert text.splitlines()[4].startswith("      └─ 1002 sh /bin/sh sh -c 'sleep 1000'")


@pytest.mark.parametrize("seeded_again, found_at_10_50", [(False, False), (True, True)])
def test_process_without_exit_is_bounded_by_the_next_runs_seeds(tmp_path, seeded_again, found_at_10_50):
    """No exit recorded: the process was gone by a later run of the same boot that did not find it
    running at its start; if that run found it, it may still have been running."""
    db = tmp_path / "db"
    daemon = Proc(5000, 1, at(10, 0), "bash")
    first = BatchWriter(db, {})
    first.open()
    first.write_seeds(seeds())
    first.write([daemon.exec(at(10, 0, 0, 1), "/usr/sbin/mydaemon", ["mydaemon"], comm="mydaemon")])
    first.close()
    second = BatchWriter(db, {})
    second.open()
    again = [{"pid": 5000, "ppid": 1, "uid": 1000, "comm": "mydaemon", "filename": "/usr/sbin/mydaemon",
              "argv": b"mydaemon", "start_ns": daemon.start, "start_tick_ns": 10 * MS,
              **seed_context("/usr/sbin/mydaemon", "/system.slice/mydaemon.service", "mydaemon.service")}]
    second.write_seeds(seeds() + (again if seeded_again else []))
    second.close()
    conn = sqlite3.connect(db / "audit.db")
    conn.execute("UPDATE runs SET boot_id = 'boot-a', started_ns = CASE id WHEN 1 THEN ? ELSE ? END, "
                 "attached_ns = NULL, stopped_ns = CASE id WHEN 1 THEN ? ELSE ? END",
                 (at(9, 30), at(10, 40), at(10, 30), at(11, 0)))
    conn.commit()
    conn.close()
    assert run_tree(5000, "--db-dir", db, "--at", "2026-11-20T10:20Z")[0] == 0
    status, out, err = run_tree(5000, "--db-dir", db, "--at", "2026-11-20T10:50Z")
    assert status == (0 if found_at_10_50 else 1)
    if not found_at_10_50:
        assert err.startswith("auditd-lite: pid 5000 was not running at 2026-11-20T10:50:00.000000Z")


# --- the exec context (issue #13) ---------------------------------------------------------

def find_node(node: dict, pid: int, comm: str | None = None) -> dict | None:
    if node["pid"] == pid and (comm is None or node["comm"] == comm):
        return node
    for kid in node["children"]:
        got = find_node(kid, pid, comm)
        if got is not None:
            return got
    return None


def test_json_nodes_carry_the_context_of_what_they_ran(db):
    """Each node has the context keys (rows.CONTEXT_FIELDS) of the program its line shows: its
    last exec's (ls: not its failed exec's, which has a cgroup and no hash), for a process seen
    at start its seen_processes row's, all null for a process with no exec recorded."""
    status, out, err = run_tree(1000, "--db-dir", db, "--at", "2026-11-20T10:30Z", "--format", "json")
    assert status == 0, err
    tree = json.loads(out)["tree"]
    ctx = lambda node: tuple(node[c] for c in CONTEXT_FIELDS)  # noqa: E731
    assert ctx(tree) == context(sha256=sha("/usr/lib/systemd/systemd"), hash_status="ok",
                                cgroup="/init.scope", cgroup_status="resolved", unit="init.scope")
    assert ctx(find_node(tree, 700)) == context(sha256=sha("/usr/sbin/sshd"), hash_status="ok",
                                                cgroup="/system.slice/ssh.service", cgroup_status="resolved",
                                                unit="ssh.service")
    assert ctx(find_node(tree, 1000)) == context(sha256=sha("/bin/bash"), hash_status="ok", **SESSION)
    ls = find_node(tree, 1001, "ls")
    assert ctx(ls) == context(sha256=sha("/usr/bin/ls"), hash_status="ok", **SESSION)
    assert ls["failed_execs"][0]["sha256"] is None and ls["failed_execs"][0]["unit"] == "session-3.scope"
    assert ctx(find_node(tree, 1001, "cat")) == context(sha256=sha("/usr/bin/cat"), hash_status="ok", **DOCKER)
    assert find_node(tree, 1001, "cat")["container_id"] == DOCKER_ID
    assert ctx(find_node(tree, 1003)) == context()


def test_tree_over_a_file_from_before_the_context_columns(tmp_path):
    """A rotated file at revision 0002 (no context columns, in events or seen_processes) holding
    sshd (seen at start) and its child bash, next to a head file holding bash's child: the tree
    spans both without an error; the nodes from the old file carry the keys as null and show no
    unit, the new one its unit and hash."""
    from test_query import second_revision_file, revisions

    db = tmp_path / "db"
    sshd = {"pid": 700, "ppid": 1, "uid": 0, "comm": "sshd", "filename": "/usr/sbin/sshd",
            "argv": b"sshd: /usr/sbin/sshd -D [listener]", "start_ns": at(9, 0) - BOOT_A_WALL,
            "start_tick_ns": 10 * MS}
    bash = Proc(1000, 700, at(10, 0), "sshd", cgroup=SESSION)
    second_revision_file(db, [bash.exec(at(10, 0, 0, 1), "/bin/bash", ["-bash"], comm="bash")], seeds=[sshd])
    vim = Proc(1001, 1000, at(10, 30), "bash", cgroup=SESSION)
    bw = BatchWriter(db, {"keep": 0})
    bw.open()
    bw.write([vim.exec(at(10, 30, 0, 1), "/usr/bin/vim", ["vim"], comm="vim"), vim.exit(at(10, 31))])
    bw.close()
    assert revisions(db)[-1] == "0002"
    status, out, err = run_tree(1001, "--db-dir", db, "--format", "json")
    assert status == 0, err
    tree = json.loads(out)["tree"]
    assert [tree["pid"], tree["children"][0]["pid"]] == [700, 1000] and tree["seen_at_start"]
    for old in (tree, tree["children"][0]):
        assert all(old[c] is None for c in CONTEXT_FIELDS), old
    new = find_node(tree, 1001)
    assert (new["unit"], new["sha256"], new["execs"][0]["hash_status"]) == ("session-3.scope", sha("/usr/bin/vim"), "ok")
    status, out, err = run_tree(1001, "--db-dir", db)
    assert status == 0, err
    lines = out.splitlines()
    assert lines[2].startswith("700 sshd 'sshd: /usr/sbin/sshd -D [listener]' [running when a daemon started] [2026")
    assert lines[3].startswith("└─ 1000 bash /bin/bash -bash [2026")
    assert lines[4].startswith("   └─ 1001 vim /usr/bin/vim vim [session-3.scope] [2026")
