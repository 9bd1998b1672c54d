"""The parent of an exec (hunt/parents.py): by its identity where the record has the parent's
start, else the latest process with the pid; its latest exec before the child, or what a daemon
found it running; across files; never from what came after; unknown when it left no record.
The two ways to the answer (what the scan remembers, and the lookup in the files) agree on
every exec, over made-up files and over what the daemon recorded of real processes."""

from __future__ import annotations

import json
import subprocess

import pytest

from auditd_lite.dbfiles import database_files
from auditd_lite.hunt import rules
from auditd_lite.hunt.fields import C_EVENT, C_RUN, EXEC
from auditd_lite.hunt.hunter import Files, Hunter
from auditd_lite.hunt.parents import Parents
from conftest import EXEC_CONTEXT, NO_CONTEXT, cli_in_process
from test_gaps import SEC, History, at

ROTATED = "audit-20261120T100000Z-20261120T104500Z.db"
CHILD_RULE = ("title: child\nid: 55555555-5555-4555-8555-555555555555\nstatus: test\nauthor: tests\n"
              "logsource:\n    product: linux\n    category: process_creation\n"
              "detection:\n    s:\n        Image|endswith: /child\n    condition: s\nlevel: low\n")


def ex(t, pid, ppid, start, filename, argv, parent_start=None):
    """An exec row (rows.ROW_FIELDS) whose parent's start is ``parent_start`` (None: a file's row
    from before revision 0006, or a gate that did not see it)."""
    return ("exec", t, pid, pid, ppid, 0, 0, filename.rsplit("/", 1)[-1][:15], start, pid, 0, 0, 1, 1,
            filename, argv, argv.count(b"\0") + 1, 0, None, None, None, None, None, None) \
        + EXEC_CONTEXT + ("x64", parent_start)


def exit_(t, pid, ppid, start, duration):
    return ("exit", t, pid, pid, ppid, 0, 0, "x", start, None, None, None, None, None, None, None,
            None, None, None, 0, 0, 0, 0, duration) + NO_CONTEXT + (None, None)


def seen(h: History, run_id, t, pid, ppid, start, filename, argv, tick=10_000_000):
    h.conn.execute("INSERT INTO seen_processes (run_id, time_ns, pid, ppid, uid, comm, filename, argv, "
                   "start_ns, start_tick_ns) VALUES (?,?,?,?,0,'x',?,?,?,?)",
                   (run_id, t, pid, ppid, filename, argv, start, tick))


@pytest.fixture
def made(tmp_path):
    """Parents of every kind, over a rotated file and the live one (one boot; monotonic starts
    are the wall times here, which the rule never mixes)."""
    h = History(tmp_path / "db").file(ROTATED)
    h.run(1, at(10, 0), attached=at(10, 0, 1))
    seen(h, 1, at(10, 0, 1), 700, 1, at(9, 0), "/usr/sbin/cron", b"/usr/sbin/cron\0-f")
    h.batch(1, at(10, 1), [
        # a: bash execs, then its child
        ex(at(10, 1), 500, 1, at(10, 0, 30), "/bin/bash", b"bash\0-l"),
        ex(at(10, 1, 1), 501, 500, at(10, 1, 1), "/tmp/child", b"child\0a"),
        # b: a process that execs twice before its child: the later exec
        ex(at(10, 1, 2), 510, 1, at(10, 1, 2), "/bin/sh", b"sh"),
        ex(at(10, 1, 3), 510, 1, at(10, 1, 2), "/usr/bin/python3", b"python3\0job.py"),
        ex(at(10, 1, 4), 511, 510, at(10, 1, 4), "/tmp/child", b"child\0b"),
        # c: pid 600 execs and exits; the next 600 forks without exec and has a child
        ex(at(10, 1, 5), 600, 1, at(10, 1, 5), "/bin/old", b"old"),
        exit_(at(10, 1, 6), 600, 1, at(10, 1, 5), SEC // 2),
        ex(at(10, 1, 8), 601, 600, at(10, 1, 8), "/tmp/child", b"child\0c"),
        # d: cron, running when the daemon started, starts a child
        ex(at(10, 1, 9), 701, 700, at(10, 1, 9), "/tmp/child", b"child\0d"),
        # e: the parent's start recorded: that process exactly, exec'd in this file
        ex(at(10, 2), 800, 1, at(10, 2), "/bin/dash", b"dash\0-c\0x"),
        ex(at(10, 2, 1), 801, 800, at(10, 2, 1), "/tmp/child", b"child\0e", parent_start=at(10, 2)),
    ])
    h.file("audit.db")
    h.run(1, at(10, 0), attached=at(10, 0, 1))
    h.batch(1, at(10, 46), [
        # f: the parent exec'd in the rotated file, its child in this one
        ex(at(10, 46), 502, 500, at(10, 46), "/tmp/child", b"child\0f"),
        # g: the parent execs again after its child: not what it ran then
        ex(at(10, 46, 1), 503, 500, at(10, 46, 1), "/tmp/child", b"child\0g"),
        ex(at(10, 46, 2), 500, 1, at(10, 0, 30), "/usr/bin/vim", b"vim"),
        # h: a parent start that no record has: forked without exec
        ex(at(10, 46, 3), 802, 800, at(10, 46, 3), "/tmp/child", b"child\0h", parent_start=at(10, 40)),
        # i: a pid never recorded at all
        ex(at(10, 46, 4), 901, 900, at(10, 46, 4), "/tmp/child", b"child\0i"),
    ])
    h.close()
    return tmp_path / "db"


def test_each_kind_of_parent(made, tmp_path):
    """Through the command: the parent's image and arguments, and where they came from, for
    each case of the fixture."""
    (tmp_path / "child.yml").write_text(CHILD_RULE)
    status, out, err = cli_in_process("hunt", "--db-dir", made, "--rules", tmp_path / "child.yml",
                                      "--no-bundled", "--format", "json")
    assert status == 0, err
    found = {f["process"]["argv"][1]: f["parent"] for f in map(json.loads, out.splitlines()) if "rule" in f}
    got = {k: (p["image"], p["argv"], p["from"]) for k, p in found.items()}
    assert got == {
        "a": ("/bin/bash", ["bash", "-l"], "exec"),
        "b": ("/usr/bin/python3", ["python3", "job.py"], "exec"),
        "c": (None, None, None),
        "d": ("/usr/sbin/cron", ["/usr/sbin/cron", "-f"], "seen"),
        "e": ("/bin/dash", ["dash", "-c", "x"], "exec"),
        "f": ("/bin/bash", ["bash", "-l"], "exec"),
        "g": ("/bin/bash", ["bash", "-l"], "exec"),
        "h": (None, None, None),
        "i": (None, None, None),
    }
    assert "had ended" in found["c"]["why"] and "forked without exec" in found["h"]["why"]
    assert "left no record" in found["i"]["why"]


def remembered_against_looked_up(db_dir) -> int:
    """Read every record of ``db_dir`` in commit order as a hunt does; for each exec, the parent
    the remembering lookup gives must be the one the files give. The number of execs."""
    paths = list(reversed(database_files(db_dir=db_dir)))
    files = Files(paths)
    hunter = Hunter(rules.load().evaluable(), files)
    plain = Parents(files, memory=False)
    n = 0
    try:
        for i in range(files.count):
            boots = files.boots(i)
            for row in files.conn(i).execute(hunter.rows_sql(i)).fetchall():
                boot = boots.get(row[C_RUN])
                hunter.begin(i, row)
                if row[C_EVENT] == EXEC:
                    a, b = hunter.parents.of(i, row, boot), plain.of(i, row, boot)
                    assert (a.start_ns, a.image, a.argv, a.source) == (b.start_ns, b.image, b.argv, b.source), row
                    n += 1
                hunter.parents.note(i, row, boot)
    finally:
        files.close()
    return n


def test_remembered_parents_are_the_looked_up_ones(made):
    """Over the fixture's files, both ways give every exec the same parent."""
    assert remembered_against_looked_up(made) == 15


@pytest.mark.kernel
def test_remembered_parents_are_the_looked_up_ones_for_real_processes(daemon_factory, tmp_path):
    """Over what the daemon recorded of shells running pipelines, subshells and background
    jobs (parents that exec, fork without exec, and exit before their children), both ways give
    every exec the same parent."""
    d = daemon_factory()
    script = ("for i in 1 2 3 4 5 6 7 8 9 10; do (true; id -u) | cat > /dev/null; "
              "sh -c 'sleep 0.01 & uname; wait' > /dev/null; done")
    for _ in range(5):
        subprocess.run(["/bin/sh", "-c", script], check=True)
    d.stop()
    assert remembered_against_looked_up(d.db_dir) > 200
